//! The writer lease of a vault kept in an object store (issue 14): one
//! writer per vault at a time across hosts, where a local `flock` cannot
//! reach. restic's stale-lock idea on one object, `lease`, at the vault's
//! root (docs/FORMAT.md, "The writer lease"):
//!
//! - **Taking it.** Read `lease`. A live lease of another writer is the
//!   vault-busy error (`BackupService.6125`) naming the holder (host, pid,
//!   since). Absent, expired, damaged, or left by a process of this host
//!   that has ended: write our own (a fresh random token), wait the settle
//!   time, read it back. Our token read back wins; another token means
//!   another writer won, and that is the busy error naming it.
//! - **No conditional write is relied on** (Garage ignores
//!   `If-None-Match`). The race this leaves: a contender B that read "free"
//!   before our write and writes after our read-back would overwrite a lease
//!   we hold. For that, B's own write had to land more than the settle time
//!   after its read (our read-back comes a settle time after our write,
//!   which came after B's read). So each contender times its own read and
//!   write (from sending the read to the write's answer) and trusts its
//!   attempt only if that took less than the settle time; otherwise it
//!   removes its lease and fails with the busy error ("try again"): the
//!   writer it may have overwritten notices at its next read-back. Two
//!   writers can then both win only
//!   if the bucket is not read-after-write consistent for one key (S3,
//!   SeaweedFS and Garage are) or the settle times differ between hosts.
//!   A holder also reads the lease before each renewal and before
//!   publishing a backup record (and at most every [`VERIFY_EVERY`] while
//!   deleting), so a lease lost any other way stops it there.
//! - **Renewal.** A thread renews the lease every `renew` (reading it
//!   first), moving its expiry to now + `ttl`. If renewals fail, the
//!   holder stops writing `margin` before its last written expiry (by this
//!   host's boot-time clock, which counts a suspend): every write through
//!   [`Fenced`] fails from then on, naming the vault and why, so the
//!   operation fails cleanly; the store's write order (packs, indexes, the
//!   record last) leaves nothing half-visible. Another host calls the lease
//!   expired by its own wall clock: hosts' clocks must agree within the
//!   margin (NTP).
//! - **Release.** Dropping the [`Lease`] stops the thread and deletes the
//!   lease if it still holds our token.
//!
//! Readers (mount, list, restore, check) take no lease.
//!
//! Timings default to a 300 s lease renewed every 60 s, a 150 s margin
//! (half the lease) and a 500 ms settle time; `CBRFS_LEASE_TTL_S`,
//! `CBRFS_LEASE_RENEW_S` (seconds, decimals allowed) and
//! `CBRFS_LEASE_SETTLE_MS` override them (tests use short leases).

use super::storage::{object_label, Storage};
use crate::crypto::SealKey;
use crate::error::{Error, Kind, Result};
use crate::fsutil::Flock;
use crate::quote::quote;
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The lease's object name at the vault's root.
pub const LEASE_OBJECT: &str = "lease";

/// The storage wrapper the fence stops (store/fenced.rs).
pub use super::fenced::Fenced;

/// The lease record's format.
pub const LEASE_FORMAT: u32 = 1;

/// A lease object larger than this is damage (ours are ~400 bytes): it is
/// never decoded.
const LEASE_MAX_BYTES: usize = 4096;

/// A holder deleting objects re-reads its lease at most this often.
pub const VERIFY_EVERY: Duration = Duration::from_secs(10);

/// Attempts to take a free lease while contenders that withdrew remove
/// what we wrote.
const ATTEMPTS: u32 = 3;

/// How long a lease lives and how it is kept alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A lease not renewed for this long is expired and may be taken over.
    pub ttl: Duration,
    /// The holder renews this often.
    pub renew: Duration,
    /// Wait between writing a lease and reading it back; also the longest
    /// a contender's read and write may take for its attempt to count.
    pub settle: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            ttl: Duration::from_secs(300),
            renew: Duration::from_secs(60),
            settle: Duration::from_millis(500),
        }
    }
}

impl Timing {
    /// The holder stops writing this long before its lease would expire:
    /// room for a write already under way and for clocks that differ.
    pub fn margin(&self) -> Duration {
        self.ttl / 2
    }

    /// The defaults, with `CBRFS_LEASE_TTL_S`, `CBRFS_LEASE_RENEW_S` and
    /// `CBRFS_LEASE_SETTLE_MS` where set.
    pub fn from_env() -> Result<Timing> {
        let get = |k: &str| std::env::var(k).ok();
        Timing::from_values(
            get("CBRFS_LEASE_TTL_S").as_deref(),
            get("CBRFS_LEASE_RENEW_S").as_deref(),
            get("CBRFS_LEASE_SETTLE_MS").as_deref(),
        )
    }

    /// [`Timing::from_env`] on given values. A value that is not a
    /// positive number, or timings that cannot work (a renewal less often
    /// than three times per lease, a settle time not under a tenth of the
    /// lease), are exit 2 naming the variable and the rule.
    pub fn from_values(
        ttl: Option<&str>,
        renew: Option<&str>,
        settle_ms: Option<&str>,
    ) -> Result<Timing> {
        let num = |var: &str, v: &str, scale: f64| -> Result<Duration> {
            let bad = || Error::invalid(format!("{var}={}: expected a positive number", quote(v)));
            let x: f64 = v.trim().parse().map_err(|_| bad())?;
            if !x.is_finite() || x <= 0.0 || x * scale > 1e9 {
                return Err(bad());
            }
            Ok(Duration::from_secs_f64(x * scale))
        };
        let mut t = Timing::default();
        if let Some(v) = ttl {
            t.ttl = num("CBRFS_LEASE_TTL_S", v, 1.0)?;
        }
        if let Some(v) = renew {
            t.renew = num("CBRFS_LEASE_RENEW_S", v, 1.0)?;
        }
        if let Some(v) = settle_ms {
            t.settle = num("CBRFS_LEASE_SETTLE_MS", v, 0.001)?;
        }
        if t.renew * 3 > t.ttl {
            return Err(Error::invalid(format!(
                "CBRFS_LEASE_RENEW_S ({:?}) must be at most a third of CBRFS_LEASE_TTL_S ({:?}): the lease must survive two failed renewals",
                t.renew, t.ttl
            )));
        }
        if t.settle * 10 > t.ttl {
            return Err(Error::invalid(format!(
                "CBRFS_LEASE_SETTLE_MS ({:?}) must be at most a tenth of CBRFS_LEASE_TTL_S ({:?})",
                t.settle, t.ttl
            )));
        }
        Ok(t)
    }
}

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
    fn current() -> Option<ProcessId> {
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
fn start_ticks(pid: u32) -> Option<u64> {
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
enum Seen {
    /// No lease object.
    Free,
    /// A lease, and whether it is stale (why it may be taken over).
    Held(LeaseRecord, Option<String>),
    /// An object that is no lease record (why): it is taken over, as a
    /// stale one.
    Damaged(String),
}

/// Decode and check a lease object; the error says which rule it broke.
fn decode(bytes: &[u8]) -> std::result::Result<LeaseRecord, String> {
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
fn stale_reason(r: &LeaseRecord, now_ns: i64, me: Option<&ProcessId>) -> Option<String> {
    if now_ns > r.expires_ns {
        return Some(format!(
            "it expired at {}",
            crate::catalog::ns_to_rfc3339(r.expires_ns)
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
fn read(storage: &dyn Storage, me: Option<&ProcessId>, seal: Option<&SealKey>) -> Result<Seen> {
    // Never more than a lease's bytes are read: anyone who can write to
    // the bucket may put gigabytes here. An oversized one is damaged, and
    // taken over as such.
    let bytes = match storage.get_at_most(LEASE_OBJECT, LEASE_MAX_BYTES as u64) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(Seen::Free),
        Err(e) if e.kind() == Kind::Corrupt => return Ok(Seen::Damaged(e.to_string())),
        Err(e) => return Err(e),
    };
    let bytes = match super::lease_seal::decode(&bytes, seal) {
        Ok(b) => b,
        Err(why) => return Ok(Seen::Damaged(why)),
    };
    Ok(match decode(&bytes) {
        Ok(r) => {
            let why = stale_reason(&r, crate::catalog::now_ns(), me);
            Seen::Held(r, why)
        }
        Err(why) => Seen::Damaged(why),
    })
}

fn write(storage: &dyn Storage, r: &LeaseRecord, seal: Option<&SealKey>) -> Result<()> {
    storage.put(LEASE_OBJECT, &super::lease_seal::encode(r, seal)?)
}

/// The vault-busy error: another writer holds `r`.
fn busy(vault: &str, r: &LeaseRecord) -> Error {
    Error::new(
        Kind::Busy,
        format!(
            "vault {vault}: a backup task is in progress on host {} (pid {}, since {}; its writer lease expires at {} unless renewed)",
            quote(&r.host),
            r.pid,
            crate::catalog::ns_to_rfc3339(r.acquired_ns),
            crate::catalog::ns_to_rfc3339(r.expires_ns),
        ),
    )
    .code("BackupService.6125")
}

/// Now on the boot-time clock: monotonic, and counting time suspended (a
/// lease runs out while its host sleeps).
fn boottime() -> Duration {
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
fn host_name() -> String {
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

/// A held lease's state, shared by the guard, its renewal thread and the
/// vault's [`Fence`].
struct Held {
    vault: String,
    storage: Arc<dyn Storage>,
    /// The vault's key if it is encrypted: the holder is sealed.
    seal: Option<SealKey>,
    timing: Timing,
    record: Mutex<LeaseRecord>,
    state: Mutex<State>,
    /// Serialises renewals with the release: no renewal lands after it.
    ops: Mutex<()>,
    stop: Mutex<bool>,
    wake: Condvar,
}

struct State {
    /// Writes stop at this boot-time instant unless a renewal moves it.
    deadline: Duration,
    /// Why the lease is lost for good.
    lost: Option<String>,
    /// The last renewal's failure.
    last_error: Option<String>,
    /// When the lease was last read back as ours (boot time).
    verified: Duration,
}

impl Held {
    /// Whether a write of `name` (a delete if `delete`) may go on.
    fn check(&self, name: &str, delete: bool) -> Result<()> {
        let must_verify = {
            let st = self.state.lock();
            if let Some(why) = &st.lost {
                return Err(Error::failed(format!(
                    "vault {}: the writer lease was lost ({why}): stopped before writing {name}",
                    self.vault
                )));
            }
            let now = boottime();
            if now >= st.deadline {
                let renewed = self.record.lock().renewed_ns;
                return Err(Error::failed(format!(
                    "vault {}: the writer lease could not be renewed since {} ({}): stopped before writing {name}, before the lease could expire",
                    self.vault,
                    crate::catalog::ns_to_rfc3339(renewed),
                    st.last_error.as_deref().unwrap_or("no answer"),
                )));
            }
            // A backup record publishes a backup; deletes remove what
            // others may need: the lease is read back first.
            name.starts_with("backups/") || (delete && now >= st.verified + VERIFY_EVERY)
        };
        if must_verify {
            self.verify()
                .map_err(|e| e.context(format!("before writing {name}")))?;
        }
        Ok(())
    }

    /// Read the lease back: ours, or lost (and then every later write is
    /// refused).
    fn verify(&self) -> Result<()> {
        let t = boottime();
        let token = self.record.lock().token.clone();
        match read(&*self.storage, None, self.seal.as_ref())? {
            Seen::Held(r, _) if r.token == token => {
                self.state.lock().verified = t;
                Ok(())
            }
            seen => {
                let why = match seen {
                    Seen::Held(r, _) => format!(
                        "it now names host {} (pid {}, since {})",
                        quote(&r.host),
                        r.pid,
                        crate::catalog::ns_to_rfc3339(r.acquired_ns)
                    ),
                    Seen::Free => "the lease object was removed".into(),
                    Seen::Damaged(why) => format!("the lease object is damaged: {why}"),
                };
                log::error!("vault {}: the writer lease was lost: {why}", self.vault);
                self.state.lock().lost = Some(why.clone());
                Err(Error::failed(format!(
                    "vault {}: the writer lease was lost ({why})",
                    self.vault
                )))
            }
        }
    }

    /// One renewal: read back, then write the new expiry.
    fn renew(&self) -> Result<()> {
        let sent = boottime();
        self.verify()?;
        let mut r = self.record.lock().clone();
        let now = crate::catalog::now_ns();
        r.renewed_ns = now;
        r.expires_ns = now.saturating_add(self.timing.ttl.as_nanos() as i64);
        write(&*self.storage, &r, self.seal.as_ref())?;
        *self.record.lock() = r;
        let mut st = self.state.lock();
        st.deadline = sent + self.timing.ttl - self.timing.margin();
        st.last_error = None;
        Ok(())
    }

    /// The renewal thread's loop: renew every `renew` (a quarter of that
    /// after a failure), until stopped or the lease is lost.
    fn renew_loop(&self) {
        let mut wait = self.timing.renew;
        loop {
            {
                let mut stop = self.stop.lock();
                if !*stop {
                    self.wake.wait_for(&mut stop, wait);
                }
                if *stop {
                    return;
                }
            }
            let _op = self.ops.lock();
            if *self.stop.lock() {
                return;
            }
            match self.renew() {
                Ok(()) => wait = self.timing.renew,
                Err(e) => {
                    if self.state.lock().lost.is_some() {
                        return;
                    }
                    log::warn!("vault {}: renew the writer lease: {e}", self.vault);
                    self.state.lock().last_error = Some(e.to_string());
                    wait = self.timing.renew / 4;
                }
            }
        }
    }

    /// Stop renewing and delete the lease if it is still ours.
    fn release(&self) {
        let _op = self.ops.lock();
        *self.stop.lock() = true;
        self.wake.notify_all();
        let token = self.record.lock().token.clone();
        match read(&*self.storage, None, self.seal.as_ref()) {
            Ok(Seen::Held(r, _)) if r.token == token => {
                if let Err(e) = self.storage.delete(LEASE_OBJECT) {
                    log::warn!(
                        "vault {}: remove the writer lease: {e} (it expires by itself)",
                        self.vault
                    );
                }
            }
            Ok(_) => {}
            Err(e) => log::warn!(
                "vault {}: read the writer lease to remove it: {e} (it expires by itself)",
                self.vault
            ),
        }
    }
}

/// Where a vault's storage learns whether this process holds the vault's
/// lease: one per vault and process, shared by every [`Fenced`] of it.
#[derive(Default)]
pub struct Fence {
    held: Mutex<Option<Arc<Held>>>,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("held", &self.held.lock().is_some())
            .finish()
    }
}

impl Fence {
    /// Refuse a write of `name` once this process's lease is lost or about
    /// to expire. Without a lease held here, every write goes on (the
    /// settings written by `vault associate`, the vault's creation); the
    /// lease object itself always does.
    pub(super) fn check(&self, name: &str, delete: bool) -> Result<()> {
        if name == LEASE_OBJECT {
            return Ok(());
        }
        let held = self.held.lock().clone();
        match held {
            Some(h) => h.check(name, delete),
            None => Ok(()),
        }
    }
}

/// A vault's writer lease, held until dropped: a thread renews it, and
/// the vault's [`Fence`] stops writes if it is lost. Dropping it stops the
/// thread and removes the lease.
pub struct Lease {
    held: Arc<Held>,
    fence: Arc<Fence>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("vault", &self.held.vault)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Take vault `vault`'s lease in `storage` (which must be the vault's
    /// storage seen through `fence`), or fail with the vault-busy error
    /// naming the holder. See the module docs for the protocol.
    pub fn acquire(
        storage: Arc<dyn Storage>,
        vault: &str,
        timing: Timing,
        fence: Arc<Fence>,
    ) -> Result<Lease> {
        let me = ProcessId::current();
        let host = host_name();
        let label = object_label(&*storage, LEASE_OBJECT);
        let seal = super::lease_seal::key_of(&*storage, vault)?;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                // Apart from another contender's next try.
                let jitter = u64::from(crate::fsutil::random_bytes(1)[0]);
                std::thread::sleep(timing.settle + timing.settle * jitter as u32 / 256);
            }
            let t0 = boottime();
            match read(&*storage, me.as_ref(), seal.as_ref())? {
                Seen::Held(r, None) => return Err(busy(vault, &r)),
                Seen::Held(r, Some(why)) => log::warn!(
                    "vault {vault}: taking over the writer lease of host {} (pid {}, since {}): {why}",
                    quote(&r.host),
                    r.pid,
                    crate::catalog::ns_to_rfc3339(r.acquired_ns)
                ),
                Seen::Damaged(why) => {
                    log::warn!("vault {vault}: {label} is no lease ({why}): taking it over")
                }
                Seen::Free => {}
            }
            let now = crate::catalog::now_ns();
            let record = LeaseRecord {
                format: LEASE_FORMAT,
                host: host.clone(),
                pid: std::process::id(),
                token: crate::fsutil::hex(&crate::fsutil::random_bytes(16)),
                acquired_ns: now,
                renewed_ns: now,
                expires_ns: now.saturating_add(timing.ttl.as_nanos() as i64),
                process: me.clone(),
            };
            write(&*storage, &record, seal.as_ref())?;
            let took = boottime() - t0;
            std::thread::sleep(timing.settle);
            match read(&*storage, me.as_ref(), seal.as_ref())? {
                Seen::Held(r, _) if r.token == record.token => {
                    if took < timing.settle {
                        return Ok(Lease::start(
                            storage, seal, vault, timing, fence, record, t0,
                        ));
                    }
                    // Too slow to know we did not overwrite a lease that
                    // someone else had just confirmed: withdraw, and do not
                    // try again at once (that writer notices the loss at
                    // its next read-back; a retry now could overlap it).
                    log::warn!(
                        "vault {vault}: reading and writing the writer lease took {took:?}, over the settle time {:?}: withdrawing",
                        timing.settle
                    );
                    storage.delete(LEASE_OBJECT)?;
                    return Err(Error::new(
                        Kind::Busy,
                        format!(
                            "vault {vault}: could not take the writer lease {label}: the bucket answered too slowly (reading and writing it took {took:?}, over the settle time {:?}; CBRFS_LEASE_SETTLE_MS sets it, the same on every host); try again",
                            timing.settle
                        ),
                    )
                    .code("BackupService.6125"));
                }
                Seen::Held(r, _) => return Err(busy(vault, &r)),
                // A slow contender withdrew (removing ours with its own)
                // or wrote garbage: try again.
                Seen::Free | Seen::Damaged(_) => {}
            }
        }
        Err(Error::new(
            Kind::Busy,
            format!(
                "vault {vault}: could not take the writer lease {label}: other writers contended for it; try again"
            ),
        )
        .code("BackupService.6125"))
    }

    /// The lease is ours since boot-time instant `sent` (when the read
    /// before our write was sent): start renewing and fence the vault.
    fn start(
        storage: Arc<dyn Storage>,
        seal: Option<SealKey>,
        vault: &str,
        timing: Timing,
        fence: Arc<Fence>,
        record: LeaseRecord,
        sent: Duration,
    ) -> Lease {
        let held = Arc::new(Held {
            vault: vault.to_string(),
            storage,
            seal,
            timing,
            record: Mutex::new(record),
            state: Mutex::new(State {
                deadline: sent + timing.ttl - timing.margin(),
                lost: None,
                last_error: None,
                // Never: the first delete reads the lease back.
                verified: Duration::ZERO,
            }),
            ops: Mutex::new(()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        *fence.held.lock() = Some(held.clone());
        let h = held.clone();
        let thread = std::thread::Builder::new()
            .name(format!("lease {vault}"))
            .spawn(move || h.renew_loop());
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                // Without renewals the fence stops writes before expiry.
                log::warn!("vault {vault}: cannot start the lease renewal thread: {e}");
                None
            }
        };
        Lease {
            held,
            fence,
            thread,
        }
    }

    /// Why writes would be refused now, if they would be (for tests and
    /// status).
    pub fn check(&self) -> Result<()> {
        self.held.check("(check)", false)
    }

    /// The record as last written.
    pub fn record(&self) -> LeaseRecord {
        self.held.record.lock().clone()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut f = self.fence.held.lock();
            if f.as_ref().is_some_and(|h| Arc::ptr_eq(h, &self.held)) {
                *f = None;
            }
        }
        self.held.release();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A vault's writer lock, as [`crate::catalog::Store::try_backup_lock`]
/// gives it: the store's local lock, and for a remote vault its lease
/// (released first, while the local lock still keeps this host's other
/// writers out).
pub struct WriterLock {
    lease: Option<Lease>,
    _flock: Flock,
}

impl std::fmt::Debug for WriterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterLock")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl WriterLock {
    /// The local lock and, for a remote vault, its lease.
    pub fn new(flock: Flock, lease: Option<Lease>) -> WriterLock {
        WriterLock {
            lease,
            _flock: flock,
        }
    }
    /// The lease, for a remote vault.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalDir;
    use crate::store::ObjectInfo;
    use std::fs::File;

    /// Short timings for tests; the settle time leaves room for a loaded
    /// machine (an attempt slower than it is withdrawn).
    fn fast() -> Timing {
        Timing::from_values(Some("6"), Some("0.2"), Some("300")).unwrap()
    }

    /// A bucket in memory: one lock, so every read sees every write that
    /// returned (read-after-write for a key, as S3 gives).
    #[derive(Debug, Default)]
    struct Mem {
        objects: Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
        /// Writes of the lease fail while set (a network outage).
        lease_down: std::sync::atomic::AtomicBool,
        /// Reads with a bound ([`Storage::get_at_most`]).
        bounded: std::sync::atomic::AtomicUsize,
    }

    impl Storage for Mem {
        fn describe(&self) -> String {
            "s3://mem/vault".into()
        }
        fn put(&self, name: &str, data: &[u8]) -> Result<()> {
            if name == LEASE_OBJECT && self.lease_down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::failed(
                    "s3://mem/vault/lease: 503 Slow Down (8 attempts)",
                ));
            }
            self.objects.lock().insert(name.into(), data.to_vec());
            Ok(())
        }
        fn put_file(&self, name: &str, file: &File, len: u64) -> Result<()> {
            let mut v = vec![0u8; len as usize];
            std::os::unix::fs::FileExt::read_exact_at(file, &mut v, 0).unwrap();
            self.put(name, &v)
        }
        fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
            Ok(self.objects.lock().get(name).cloned())
        }
        fn get_at_most(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>> {
            self.bounded
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match self.objects.lock().get(name) {
                Some(v) if v.len() as u64 > limit => Err(super::super::storage::too_big(
                    "s3://mem/vault",
                    name,
                    limit,
                )),
                v => Ok(v.cloned()),
            }
        }
        fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
            let o = self.objects.lock();
            let v = o.get(name).ok_or_else(|| Error::failed("absent"))?;
            Ok(v[offset as usize..(offset + len) as usize].to_vec())
        }
        fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
            Ok(self
                .objects
                .lock()
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| ObjectInfo {
                    name: k.clone(),
                    size: v.len() as u64,
                })
                .collect())
        }
        fn delete(&self, name: &str) -> Result<()> {
            self.objects.lock().remove(name);
            Ok(())
        }
    }

    /// A bucket, seen through a fence as one host's store sees it.
    fn bucket() -> (Arc<Mem>, Arc<dyn Storage>, Arc<Fence>) {
        let mem = Arc::new(Mem::default());
        let (s, f) = other_host(&mem);
        (mem, s, f)
    }

    /// The same bucket as another host (process) sees it: its own fence.
    fn other_host(mem: &Arc<Mem>) -> (Arc<dyn Storage>, Arc<Fence>) {
        let fence = Arc::new(Fence::default());
        let s: Arc<dyn Storage> = Arc::new(Fenced::new(mem.clone(), fence.clone()));
        (s, fence)
    }

    fn stored(s: &dyn Storage) -> Option<LeaseRecord> {
        s.get(LEASE_OBJECT).unwrap().map(|b| decode(&b).unwrap())
    }

    #[test]
    fn timings_come_from_the_environment_and_are_checked() {
        assert_eq!(
            Timing::from_values(None, None, None).unwrap(),
            Timing::default()
        );
        let t = Timing::from_values(Some("6"), Some("1.5"), Some("100")).unwrap();
        assert_eq!(t.ttl, Duration::from_secs(6));
        assert_eq!(t.renew, Duration::from_millis(1500));
        assert_eq!(t.settle, Duration::from_millis(100));
        assert_eq!(t.margin(), Duration::from_secs(3));
        for (ttl, renew, settle, what) in [
            (Some("x"), None, None, "CBRFS_LEASE_TTL_S"),
            (Some("-3"), None, None, "CBRFS_LEASE_TTL_S"),
            (None, Some("0"), None, "CBRFS_LEASE_RENEW_S"),
            (None, None, Some("inf"), "CBRFS_LEASE_SETTLE_MS"),
            (Some("60"), Some("30"), None, "at most a third"),
            (Some("10"), Some("1"), Some("2000"), "at most a tenth"),
        ] {
            let e = Timing::from_values(ttl, renew, settle).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(e.to_string().contains(what), "{e}");
        }
    }

    /// The first writer takes the lease; a second (another host) gets the
    /// vault-busy error naming the vault and the holder; once the first
    /// lets go the lease object is gone and the second takes it.
    #[test]
    fn one_writer_at_a_time_and_the_second_is_told_who_holds_it() {
        let (t, s, fence) = bucket();
        let a = Lease::acquire(s.clone(), "home", fast(), fence).unwrap();
        let rec = stored(&*s).unwrap();
        assert_eq!(rec.token, a.record().token);
        assert_eq!(rec.pid, std::process::id());
        assert_eq!(rec.host, host_name());
        let (s2, f2) = other_host(&t);
        let e = Lease::acquire(s2.clone(), "home", fast(), f2.clone()).unwrap_err();
        assert_eq!(e.cbr_code(), Some("BackupService.6125"));
        assert_eq!(e.kind(), Kind::Busy);
        let msg = e.to_string();
        assert!(
            msg.contains("vault home: a backup task is in progress on host"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("since "), "{msg}");
        // The lease is this process's and it lives: no same-host takeover.
        drop(a);
        assert!(stored(&*s).is_none(), "the lease is removed on release");
        let b = Lease::acquire(s2, "home", fast(), f2).unwrap();
        b.check().unwrap();
    }

    /// A lease past its expiry (its holder died) is taken over, and so is
    /// one whose process on this host has ended (kill -9) before expiry,
    /// and a damaged one; a live one of another process is not.
    #[test]
    fn stale_leases_are_taken_over() {
        let (mem, s, fence) = bucket();
        let me = ProcessId::current();
        assert!(me.is_some(), "/proc tells this process");
        let now = crate::catalog::now_ns();
        let old = LeaseRecord {
            format: LEASE_FORMAT,
            host: "gone-host".into(),
            pid: 1,
            token: "0".repeat(32),
            acquired_ns: now - 3_600_000_000_000,
            renewed_ns: now - 600_000_000_000,
            expires_ns: now - 300_000_000_000,
            process: None,
        };
        write(&*s, &old, None).unwrap();
        let a = Lease::acquire(s.clone(), "home", fast(), fence.clone()).unwrap();
        assert_ne!(stored(&*s).unwrap().token, old.token);
        drop(a);

        // Same host, a process that ended: a pid that is not running (or
        // is, but started at another time).
        let mut dead = old.clone();
        dead.expires_ns = now + 3_600_000_000_000;
        dead.pid = std::process::id();
        dead.process = me.clone().map(|mut p| {
            p.start_ticks += 1;
            p
        });
        write(&*s, &dead, None).unwrap();
        assert!(stale_reason(&dead, now, me.as_ref())
            .unwrap()
            .contains("has ended"));
        let a = Lease::acquire(s.clone(), "home", fast(), fence.clone()).unwrap();
        drop(a);

        // The same, but alive (this very process) on another host's
        // boot: live, refused.
        let mut live = dead.clone();
        live.process = me.clone().map(|mut p| {
            p.boot_id = "another-boot".into();
            p
        });
        write(&*s, &live, None).unwrap();
        let e = Lease::acquire(s.clone(), "home", fast(), fence.clone()).unwrap_err();
        assert!(e.to_string().contains("on host gone-host (pid"), "{e}");
        // And this process itself, here: alive, so live.
        live.process = me.clone();
        assert_eq!(stale_reason(&live, now, me.as_ref()), None);

        // Damaged: taken over.
        s.put(LEASE_OBJECT, b"{not json").unwrap();
        Lease::acquire(s.clone(), "home", fast(), fence.clone()).unwrap();
        s.put(LEASE_OBJECT, &vec![b' '; LEASE_MAX_BYTES + 1])
            .unwrap();
        // Read with its bound (anyone may put gigabytes there), never whole.
        let before = mem.bounded.load(std::sync::atomic::Ordering::SeqCst);
        Lease::acquire(s, "home", fast(), fence).unwrap();
        assert!(mem.bounded.load(std::sync::atomic::Ordering::SeqCst) > before);
    }

    #[test]
    fn damaged_lease_objects_are_told_apart() {
        let good = LeaseRecord {
            format: LEASE_FORMAT,
            host: "h".into(),
            pid: 7,
            token: "ab".repeat(16),
            acquired_ns: 1,
            renewed_ns: 2,
            expires_ns: 3,
            process: None,
        };
        let j = serde_json::to_vec(&good).unwrap();
        assert_eq!(decode(&j).unwrap(), good);
        let mut bad = good.clone();
        bad.format = 2;
        assert!(decode(&serde_json::to_vec(&bad).unwrap())
            .unwrap_err()
            .contains("format 2"));
        bad = good.clone();
        bad.token = "zz".repeat(16);
        assert!(decode(&serde_json::to_vec(&bad).unwrap())
            .unwrap_err()
            .contains("token"));
        bad = good.clone();
        bad.host = "h".repeat(300);
        assert!(decode(&serde_json::to_vec(&bad).unwrap())
            .unwrap_err()
            .contains("host name"));
        assert!(decode(b"[]").unwrap_err().contains("not a lease"));
    }

    /// The holder renews: the expiry moves on while it works.
    #[test]
    fn the_holder_renews_its_lease() {
        let (_t, s, fence) = bucket();
        let a = Lease::acquire(s.clone(), "home", fast(), fence).unwrap();
        let first = stored(&*s).unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = stored(&*s).unwrap();
            if now.expires_ns > first.expires_ns {
                assert_eq!(now.token, first.token);
                assert_eq!(now.acquired_ns, first.acquired_ns);
                break;
            }
            assert!(std::time::Instant::now() < end, "never renewed");
            std::thread::sleep(Duration::from_millis(50));
        }
        a.check().unwrap();
    }

    /// The race without conditional writes: contender B reads "free",
    /// then its write is slow; meanwhile A takes and confirms the lease;
    /// B's write lands over A's. B timed its read and write over the settle
    /// time, so it withdraws and fails; A finds its lease gone before it
    /// publishes a record. Never two writers that both go on.
    #[test]
    fn a_slow_contender_withdraws_and_never_shares_the_lease() {
        #[derive(Debug)]
        struct SlowPut(Arc<Mem>);
        impl Storage for SlowPut {
            fn describe(&self) -> String {
                self.0.describe()
            }
            fn put(&self, name: &str, data: &[u8]) -> Result<()> {
                std::thread::sleep(Duration::from_millis(900));
                self.0.put(name, data)
            }
            fn put_file(&self, name: &str, file: &File, len: u64) -> Result<()> {
                self.0.put_file(name, file, len)
            }
            fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
                self.0.get(name)
            }
            fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
                self.0.get_range(name, offset, len)
            }
            fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
                self.0.list(prefix)
            }
            fn delete(&self, name: &str) -> Result<()> {
                self.0.delete(name)
            }
        }
        let (mem, s, fence) = bucket();
        let bf = Arc::new(Fence::default());
        let bs: Arc<dyn Storage> =
            Arc::new(Fenced::new(Arc::new(SlowPut(mem.clone())), bf.clone()));
        let timing = Timing::from_values(Some("300"), Some("60"), Some("300")).unwrap();
        let b = std::thread::spawn(move || Lease::acquire(bs, "home", timing, bf));
        // B has read "free" and is writing; A takes the lease meanwhile.
        std::thread::sleep(Duration::from_millis(100));
        let a = Lease::acquire(s.clone(), "home", timing, fence).unwrap();
        let e = b.join().unwrap().unwrap_err();
        assert_eq!(e.cbr_code(), Some("BackupService.6125"), "{e}");
        assert!(e.to_string().contains("answered too slowly"), "{e}");
        // A's lease was overwritten, then withdrawn: A must not publish.
        let e = s.put("backups/a.bk", b"record").unwrap_err();
        assert!(e.to_string().contains("the writer lease was lost"), "{e}");
        assert!(mem.get("backups/a.bk").unwrap().is_none());
        drop(a);
    }

    /// Every method reaches the vault's storage through the fence,
    /// including those the trait gives a default.
    #[test]
    fn fenced_forwards_every_method() {
        #[derive(Debug, Default)]
        struct Calls(Mutex<Vec<&'static str>>, Mem);
        impl Storage for Calls {
            fn describe(&self) -> String {
                "s3://calls".into()
            }
            fn put(&self, n: &str, d: &[u8]) -> Result<()> {
                self.1.put(n, d)
            }
            fn put_file(&self, n: &str, f: &File, l: u64) -> Result<()> {
                self.1.put_file(n, f, l)
            }
            fn get(&self, n: &str) -> Result<Option<Vec<u8>>> {
                self.1.get(n)
            }
            fn get_range(&self, n: &str, o: u64, l: u64) -> Result<Vec<u8>> {
                self.1.get_range(n, o, l)
            }
            fn list(&self, p: &str) -> Result<Vec<ObjectInfo>> {
                self.1.list(p)
            }
            fn delete(&self, n: &str) -> Result<()> {
                self.1.delete(n)
            }
            fn map(&self, _: &str) -> Result<Option<memmap2::Mmap>> {
                self.0.lock().push("map");
                Ok(None)
            }
            fn remove_stale_temps(&self) -> Result<usize> {
                self.0.lock().push("remove_stale_temps");
                Ok(0)
            }
            fn keep_whole(&self, _: &str) -> Result<()> {
                self.0.lock().push("keep_whole");
                Ok(())
            }
            fn forget_cached(&self, _: &str) -> bool {
                self.0.lock().push("forget_cached");
                true
            }
            fn requests(&self) -> Option<crate::store::s3::S3Counters> {
                self.0.lock().push("requests");
                Some(Default::default())
            }
            fn publish(&self) -> Result<()> {
                self.0.lock().push("publish");
                Ok(())
            }
            fn will_read(&self, _: &str, _: u64) {
                self.0.lock().push("will_read");
            }
            fn get_at_most(&self, _: &str, _: u64) -> Result<Option<Vec<u8>>> {
                self.0.lock().push("get_at_most");
                Ok(None)
            }
            fn distrust_kept_listings(&self) {
                self.0.lock().push("distrust_kept_listings");
            }
        }
        let inner = Arc::new(Calls::default());
        let f = Fenced::new(inner.clone(), Arc::new(Fence::default()));
        assert_eq!(f.describe(), "s3://calls");
        f.map("packs/ab/x.pack").unwrap();
        f.remove_stale_temps().unwrap();
        f.keep_whole("packs/ab/x.pack").unwrap();
        assert!(f.forget_cached("packs/ab/x.pack"));
        assert!(f.requests().is_some());
        f.publish().unwrap();
        f.will_read("packs/ab/x.pack", 5);
        assert_eq!(f.get_at_most("head", 10).unwrap(), None);
        f.distrust_kept_listings();
        assert_eq!(
            *inner.0.lock(),
            [
                "map",
                "remove_stale_temps",
                "keep_whole",
                "forget_cached",
                "requests",
                "publish",
                "will_read",
                "get_at_most",
                "distrust_kept_listings"
            ]
        );
    }

    /// The example of docs/FORMAT.md §19.5 is a lease this cbrfs reads.
    #[test]
    fn the_documented_lease_decodes() {
        let doc = include_str!("../../docs/FORMAT.md");
        let at = doc.find("### 19.5").unwrap();
        let start = at + doc[at..].find("```json\n").unwrap() + 8;
        let end = start + doc[start..].find("```").unwrap();
        let r = decode(&doc.as_bytes()[start..end]).unwrap();
        assert_eq!(r.host, "host1");
        assert_eq!(r.pid, 4242);
        assert_eq!(r.expires_ns - r.renewed_ns, 300_000_000_000);
        assert_eq!(r.process.unwrap().pid_ns, 4026531836);
    }

    /// A lease taken by another writer (here: overwritten) is lost: the
    /// next backup record, delete, or any write after the renewal noticed
    /// it, is refused naming the vault and the new holder; other hosts'
    /// writes are not this fence's business.
    #[test]
    fn a_lost_lease_stops_the_writer() {
        let (t, s, fence) = bucket();
        let timing = Timing::from_values(Some("300"), Some("60"), Some("300")).unwrap();
        let a = Lease::acquire(s.clone(), "home", timing, fence).unwrap();
        s.put("packs/ab/x.pack", b"pack").unwrap();
        let mut thief = a.record();
        thief.host = "host-b".into();
        thief.token = "cd".repeat(16);
        let (s2, _f2) = other_host(&t);
        write(&*s2, &thief, None).unwrap();
        // A pack may still go (harmless, unreferenced); the record may not.
        s.put("packs/ab/y.pack", b"pack").unwrap();
        let e = s.put("backups/b1.bk", b"record").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("vault home: the writer lease was lost"),
            "{msg}"
        );
        assert!(msg.contains("it now names host host-b"), "{msg}");
        assert!(s.get("backups/b1.bk").unwrap().is_none());
        // From now on nothing is written.
        assert!(s.put("index/x.idx", b"i").is_err());
        assert!(s.delete("packs/ab/x.pack").is_err());
        // Release leaves the other writer's lease alone.
        drop(a);
        assert_eq!(stored(&*s).unwrap().token, thief.token);
        // Without a lease held, the fence lets writes through.
        s.put("vault.json", b"{}").unwrap();
    }

    /// Renewals that fail: the writer stops at `ttl - margin` after its
    /// last good renewal, before the lease (as others see it) expires.
    #[test]
    fn a_writer_that_cannot_renew_stops_before_its_lease_expires() {
        let (mem, s, fence) = bucket();
        let timing = Timing::from_values(Some("3"), Some("0.2"), Some("300")).unwrap();
        let a = Lease::acquire(s.clone(), "home", timing, fence).unwrap();
        mem.lease_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let started = boottime();
        let last = stored(&*s).unwrap();
        // Writes go on while the margin lasts...
        s.put("packs/ab/x.pack", b"pack").unwrap();
        // ...and stop before the stored expiry.
        let end = std::time::Instant::now() + Duration::from_secs(10);
        let e = loop {
            match s.put("packs/ab/y.pack", b"pack") {
                Err(e) => break e,
                Ok(()) => {
                    assert!(std::time::Instant::now() < end, "never stopped");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        assert!(
            crate::catalog::now_ns() < last.expires_ns,
            "stopped only after the lease expired"
        );
        assert!(boottime() - started < timing.ttl);
        let msg = e.to_string();
        assert!(
            msg.contains("vault home: the writer lease could not be renewed since"),
            "{msg}"
        );
        assert!(msg.contains("503 Slow Down"), "{msg}");
        assert!(msg.contains("before the lease could expire"), "{msg}");
        assert!(s.put("backups/b.bk", b"r").is_err());
        assert!(s.get("backups/b.bk").unwrap().is_none());
        drop(a);
    }

    /// Contenders at once: at most one wins, the others get the busy error
    /// (or the "try again" of a slow attempt), never two holders.
    #[test]
    fn contenders_racing_for_a_free_lease_never_both_win() {
        let t = Arc::new(Mem::default());
        let mut won = 0;
        for _round in 0..5 {
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (s, f) = other_host(&t);
                    let b = barrier.clone();
                    std::thread::spawn(move || {
                        b.wait();
                        Lease::acquire(s, "home", fast(), f)
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let winners: Vec<&Lease> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert!(winners.len() <= 1, "{} winners", winners.len());
            won += winners.len();
            for r in &results {
                if let Err(e) = r {
                    assert_eq!(e.cbr_code(), Some("BackupService.6125"), "{e}");
                }
            }
            // The winner's lease is the one stored, and it still checks.
            if let Some(w) = winners.first() {
                let (s, _) = other_host(&t);
                assert_eq!(stored(&*s).unwrap().token, w.record().token);
                w.check().unwrap();
            }
            drop(results);
        }
        assert!(won > 0, "no round had a winner");
    }

    /// A lease lost by another host's takeover is noticed at the next
    /// renewal even without a write.
    #[test]
    fn the_renewal_notices_a_lost_lease() {
        let (t, s, fence) = bucket();
        let a = Lease::acquire(s, "home", fast(), fence).unwrap();
        let (s2, _) = other_host(&t);
        s2.delete(LEASE_OBJECT).unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while a.check().is_ok() {
            assert!(std::time::Instant::now() < end, "never noticed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(a.check().unwrap_err().to_string().contains("removed"));
    }

    /// The lease is read from the bucket itself, never from the vault's
    /// cache: another host's lease written after ours was read is seen.
    #[test]
    fn the_cache_never_serves_a_lease() {
        let t = tempfile::tempdir().unwrap();
        let remote = Arc::new(LocalDir::new(t.path().join("bucket")));
        let cached = Arc::new(crate::store::CachedStorage::new(
            remote.clone(),
            &t.path().join("home"),
            crate::store::cached::DEFAULT_CACHE_BYTES,
        ));
        let fence = Arc::new(Fence::default());
        let s: Arc<dyn Storage> = Arc::new(Fenced::new(cached, fence.clone()));
        // A local directory's writes fsync: room for a loaded disk.
        let slow = Timing::from_values(Some("30"), Some("1"), Some("2000")).unwrap();
        let a = Lease::acquire(s.clone(), "home", slow, fence.clone()).unwrap();
        drop(a);
        let mut other = LeaseRecord {
            format: LEASE_FORMAT,
            host: "host-b".into(),
            pid: 4242,
            token: "ef".repeat(16),
            acquired_ns: crate::catalog::now_ns(),
            renewed_ns: crate::catalog::now_ns(),
            expires_ns: crate::catalog::now_ns() + 600_000_000_000,
            process: None,
        };
        write(&*remote, &other, None).unwrap();
        let e = Lease::acquire(s.clone(), "home", slow, fence.clone()).unwrap_err();
        assert!(e.to_string().contains("on host host-b (pid 4242"), "{e}");
        other.expires_ns = 0;
        write(&*remote, &other, None).unwrap();
        Lease::acquire(s, "home", slow, fence).unwrap();
    }
}
