//! The lease object itself (docs/FORMAT.md §19.5): its record, how it is
//! read (bounded), decoded and judged stale, and the clocks and names the
//! protocol (store/lease.rs) uses.

use super::super::storage::Storage;
use super::{LEASE_FORMAT, LEASE_OBJECT};
use crate::crypto::SealKey;
use crate::error::{Error, Kind, Result};
use crate::quote::quote;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A lease object larger than this is damage (ours are ~400 bytes): it is
/// never decoded.
pub(super) const LEASE_MAX_BYTES: usize = 4096;

/// Which process holds a lease, told apart from any other process on any
/// host: the kernel's boot, its pid namespace, the pid and the process's
/// start time (so a reused pid is another process).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ProcessId {
    /// `/proc/sys/kernel/random/boot_id`: this kernel's boot.
    pub boot_id: String,
    /// The inode of `/proc/self/ns/pid`: the pid namespace.
    pub pid_ns: u64,
    /// Start time of the process, clock ticks after boot (`/proc/PID/stat`).
    pub start_ticks: u64,
}

impl ProcessId {
    /// This process, if `/proc` tells.
    pub(super) fn current() -> Option<ProcessId> {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
        let pid_ns = ns
            .to_str()?
            .strip_prefix("pid:[")?
            .strip_suffix(']')?
            .parse()
            .ok()?;
        Some(ProcessId {
            boot_id: boot_id.trim().to_string(),
            pid_ns,
            start_ticks: start_ticks(std::process::id())?,
        })
    }
}

/// Field 22 of `/proc/PID/stat` (after the command name, which may hold
/// spaces and parentheses: parsed from the last `)`).
pub(super) fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")": state is field 3, so starttime (22) is the 20th here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The lease object: who holds the vault's writer lease, until when. JSON
/// (docs/FORMAT.md); in an encrypted vault the holder (host, pid, process)
/// is sealed and the rest stays clear (store/lease_seal.rs).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// [`LEASE_FORMAT`].
    pub format: u32,
    /// The holder's host name, for messages.
    pub host: String,
    /// The holder's process id, for messages and the same-host check.
    pub pid: u32,
    /// 32 hex digits, random per attempt: whose lease this is.
    pub token: String,
    /// When the holder took it, ns since the epoch.
    pub acquired_ns: i64,
    /// When the holder last renewed it.
    pub renewed_ns: i64,
    /// After this the lease is expired and may be taken over.
    pub expires_ns: i64,
    /// The holding process exactly, when its host's `/proc` told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessId>,
}

/// What reading the lease found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Seen {
    /// No lease object.
    Free,
    /// A lease, and whether it is stale (why it may be taken over).
    Held(LeaseRecord, Option<String>),
    /// An object that is no lease record (why): it is taken over, as a
    /// stale one.
    Damaged(String),
}

/// Decode and check a lease object; the error says which rule it broke.
pub(super) fn decode(bytes: &[u8]) -> std::result::Result<LeaseRecord, String> {
    if bytes.len() > LEASE_MAX_BYTES {
        return Err(format!(
            "it has {} bytes, more than {LEASE_MAX_BYTES}",
            bytes.len()
        ));
    }
    let r: LeaseRecord = serde_json::from_slice(bytes).map_err(|e| format!("not a lease: {e}"))?;
    if r.format != LEASE_FORMAT {
        return Err(format!(
            "format {} (this cbrfs reads {LEASE_FORMAT})",
            r.format
        ));
    }
    if r.token.len() != 32 || !r.token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("its token is not 32 hex digits".into());
    }
    if r.host.len() > 255 {
        return Err("its host name is longer than 255 bytes".into());
    }
    Ok(r)
}

/// Why lease `r` may be taken over at `now_ns` by process `me`, or `None`
/// while it is live: it expired, or its holder ran on this host (same boot
/// and pid namespace) and has ended.
pub(super) fn stale_reason(r: &LeaseRecord, now_ns: i64, me: Option<&ProcessId>) -> Option<String> {
    if now_ns > r.expires_ns {
        return Some(format!(
            "it expired at {}",
            crate::clock::ns_to_rfc3339(r.expires_ns)
        ));
    }
    let (Some(p), Some(me)) = (&r.process, me) else {
        return None;
    };
    if p.boot_id == me.boot_id && p.pid_ns == me.pid_ns && start_ticks(r.pid) != Some(p.start_ticks)
    {
        return Some(format!("its process {} on this host has ended", r.pid));
    }
    None
}

/// Read the lease of `storage`; `seal`: the vault's key, which opens the
/// holder's identity in an encrypted vault's lease (store/lease_seal.rs).
pub(super) fn read(
    storage: &dyn Storage,
    me: Option<&ProcessId>,
    seal: Option<&SealKey>,
) -> Result<Seen> {
    // Never more than a lease's bytes are read: anyone who can write to
    // the bucket may put gigabytes here. An oversized one is damaged, and
    // taken over as such.
    let bytes = match storage.get_at_most(LEASE_OBJECT, LEASE_MAX_BYTES as u64) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(Seen::Free),
        Err(e) if e.kind() == Kind::Corrupt => return Ok(Seen::Damaged(e.to_string())),
        Err(e) => return Err(e),
    };
    let bytes = match super::super::lease_seal::decode(&bytes, seal) {
        Ok(b) => b,
        Err(why) => return Ok(Seen::Damaged(why)),
    };
    Ok(match decode(&bytes) {
        Ok(r) => {
            let why = stale_reason(&r, crate::clock::now_ns(), me);
            Seen::Held(r, why)
        }
        Err(why) => Seen::Damaged(why),
    })
}

/// Write lease `r` to `storage`, its holder sealed with `seal` (an
/// encrypted vault's key; store/lease_seal.rs).
pub(super) fn write(storage: &dyn Storage, r: &LeaseRecord, seal: Option<&SealKey>) -> Result<()> {
    storage.put(LEASE_OBJECT, &super::super::lease_seal::encode(r, seal)?)
}

/// The vault-busy error: another writer holds `r`.
pub(super) fn busy(vault: &str, r: &LeaseRecord) -> Error {
    Error::new(
        Kind::Busy,
        format!(
            "vault {vault}: a backup task is in progress on host {} (pid {}, since {}; its writer lease expires at {} unless renewed)",
            quote(&r.host),
            r.pid,
            crate::clock::ns_to_rfc3339(r.acquired_ns),
            crate::clock::ns_to_rfc3339(r.expires_ns),
        ),
    )
    .code("BackupService.6125")
}

/// Now on the boot-time clock: monotonic, and counting time suspended (a
/// lease runs out while its host sleeps).
pub(super) fn boottime() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        // Never on Linux ≥ 2.6.39; the monotonic clock is the next best.
        return std::time::Instant::now().elapsed();
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// This host's name, for the holder's record.
pub(super) fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    if ok && end > 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".into()
    }
}
