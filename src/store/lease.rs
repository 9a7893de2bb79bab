//! The writer lease of a vault kept in an object store (issue 14): one
//! writer per vault at a time across hosts, where a local `flock` cannot
//! reach. restic's stale-lock idea on one object, `lease`, at the vault's
//! root (docs/FORMAT.md §19.5):
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
//!   write (from sending the read to the write's answer, or to its failure:
//!   a write whose answer was lost may have landed) and trusts its attempt
//!   only if that took less than the settle time. Two writers can then both
//!   win only if the bucket is not read-after-write consistent for one key
//!   (S3, SeaweedFS and Garage are) or the settle times differ between
//!   hosts. A holder also reads the lease before each renewal and before
//!   publishing a backup record (and at most every [`VERIFY_EVERY`] while
//!   deleting), so a lease lost any other way stops it there.
//! - **Faults** (one 503, a dropped connection, a slow answer) do not end
//!   the attempt to take the lease: it starts again from the read, a whole
//!   fresh attempt with a fresh token, up to [`ATTEMPTS`] times with
//!   backoff. Tokens this process wrote (or may have: a write whose answer
//!   was lost) are its own when read back, never "busy". An attempt slower
//!   than the settle time may have overwritten a lease that another writer
//!   had just confirmed; that writer stops at its next read-back, which
//!   comes within [`VERIFY_EVERY`] for deletes and within its margin for
//!   anything (its renewals read back, or it stops writing). So the next
//!   attempt waits that long after the slow write: the two are never both
//!   writing.
//! - **Confirmed behind the work** ([`Lease::begin`], for a backup): the
//!   first read (the busy check) and our write happen at once; the settle
//!   time and read-back go on on a thread while the backup walks its
//!   sources and uploads packs. Packs are content-addressed and no index
//!   names them until one is published, and prune reclaims unreferenced
//!   ones; so the vault's [`Fence`] lets packs go while the lease is being
//!   confirmed, and holds every other write (index, head, record, settings,
//!   any delete) until it is. A lease refused then fails every later write
//!   with the busy error: nothing is published. Since the backup reads the
//!   indexes once it started, its later attempts (after a failed read-back,
//!   or a slow write) go on only while the lease still holds one of our
//!   tokens: one removed or taken meanwhile (another writer may have held
//!   it and pruned) ends them with the busy error.
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
//!
//! Files: `lease/record.rs` (the object: read, decoded, judged stale),
//! `lease/held.rs` (a held lease, its renewals, the [`Fence`]), here the
//! protocol that takes it.

mod held;
mod record;

pub use self::held::{Fence, TEMPORARIES};
use self::held::{Held, Pending, State};
use self::record::{boottime, busy, host_name, read, write, Seen};
pub use self::record::{LeaseRecord, ProcessId};
use super::storage::{object_label, Storage};
use crate::crypto::SealKey;
use crate::error::{Error, Kind, Result};
use crate::fsutil::Flock;
use crate::quote::quote;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::Duration;

/// The lease's object name at the vault's root.
pub const LEASE_OBJECT: &str = "lease";

/// The storage wrapper the fence stops (store/fenced.rs).
pub use super::fenced::Fenced;

/// The lease record's format.
pub const LEASE_FORMAT: u32 = 1;

/// A holder deleting objects re-reads its lease at most this often.
pub const VERIFY_EVERY: Duration = Duration::from_secs(10);

/// Attempts to take the lease: each a read, a write and a read-back,
/// started again after a failed request, a slow answer, or contenders that
/// withdrew.
pub const ATTEMPTS: u32 = 6;

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

/// Why the last attempt to take the lease did not win, for the error if
/// none does.
enum Why {
    /// A request failed.
    Failed(Error),
    /// Reading and writing took this long, over the settle time.
    Slow(Duration),
    /// The read-back found no lease or garbage: a contender withdrew.
    Contended,
}

/// One process's way to a vault's lease: the attempts so far.
struct Taking {
    storage: Arc<dyn Storage>,
    /// The vault's key if it is encrypted: the holder is sealed
    /// (store/lease_seal.rs).
    seal: Option<SealKey>,
    vault: String,
    timing: Timing,
    me: Option<ProcessId>,
    host: String,
    label: String,
    /// Tokens this call wrote, or may have written (a write that failed
    /// may have landed): found in the bucket they are ours, not busy.
    mine: Vec<String>,
    attempts: u32,
    /// Set once work may depend on the lease being ours since our first
    /// write (a backup that started behind it, [`Lease::begin`]): a later
    /// attempt then goes on only if the lease still holds one of our
    /// tokens (so no one else held it meanwhile, and no prune ran under
    /// the backup's view of the indexes); anything else ends the attempts.
    continuous: bool,
    /// No attempt starts before this boot-time instant (see the module
    /// docs: after a slow write, and backoff).
    not_before: Duration,
    why: Option<Why>,
}

/// An attempt's first half done: our record written.
struct Written {
    record: LeaseRecord,
    /// When the read before our write was sent (boot time).
    sent: Duration,
    /// From then to the write's answer.
    took: Duration,
}

impl Taking {
    fn new(
        storage: Arc<dyn Storage>,
        vault: &str,
        timing: Timing,
        seal: Option<SealKey>,
    ) -> Taking {
        let label = object_label(&*storage, LEASE_OBJECT);
        Taking {
            storage,
            seal,
            vault: vault.to_string(),
            timing,
            me: ProcessId::current(),
            host: host_name(),
            label,
            mine: Vec::new(),
            attempts: 0,
            continuous: false,
            not_before: Duration::ZERO,
            why: None,
        }
    }

    /// Wait out `not_before`, or fail once the attempts are spent.
    fn pause(&mut self) -> Result<()> {
        if self.attempts >= ATTEMPTS {
            return Err(self.exhausted());
        }
        let now = boottime();
        if now < self.not_before {
            std::thread::sleep(self.not_before - now);
        }
        self.attempts += 1;
        Ok(())
    }

    /// The next attempt no sooner than `wait` from now, plus up to one
    /// settle time of jitter (apart from another contender's next try).
    fn back_off(&mut self, wait: Duration) {
        let jitter = u32::from(crate::fsutil::random_bytes(1)[0]);
        let at = boottime() + wait + self.timing.settle * jitter / 256;
        self.not_before = self.not_before.max(at);
    }

    /// A request failed: try again after a backoff that grows with the
    /// attempts.
    fn failed(&mut self, e: Error) {
        log::warn!(
            "vault {}: writer lease, attempt {} of {ATTEMPTS}: {e}",
            self.vault,
            self.attempts
        );
        self.back_off(self.timing.settle * self.attempts);
        self.why = Some(Why::Failed(e));
    }

    /// Our write may have overwritten a lease someone had just confirmed:
    /// the next attempt waits until that holder has surely stopped.
    fn slow(&mut self, took: Duration) {
        log::warn!(
            "vault {}: reading and writing the writer lease took {took:?}, over the settle time {:?}: trying again in {:?}",
            self.vault,
            self.timing.settle,
            self.overlap()
        );
        self.back_off(self.overlap());
        self.why = Some(Why::Slow(took));
    }

    /// How long a holder whose lease we overwrote may go on writing before
    /// it notices: [`VERIFY_EVERY`] for deletes, its margin for anything.
    fn overlap(&self) -> Duration {
        VERIFY_EVERY.min(self.timing.margin())
    }

    /// The error when no attempt won.
    fn exhausted(&mut self) -> Error {
        let (vault, label, n) = (&self.vault, &self.label, self.attempts);
        match self.why.take() {
            Some(Why::Failed(e)) => e.context(format!(
                "vault {vault}: could not take the writer lease {label} in {n} attempts"
            )),
            Some(Why::Slow(took)) => Error::new(
                Kind::Busy,
                format!(
                    "vault {vault}: could not take the writer lease {label}: the bucket answered too slowly ({n} attempts; the last read and write took {took:?}, over the settle time {:?}; CBRFS_LEASE_SETTLE_MS sets it, the same on every host); try again",
                    self.timing.settle
                ),
            )
            .code("BackupService.6125"),
            Some(Why::Contended) | None => Error::new(
                Kind::Busy,
                format!(
                    "vault {vault}: could not take the writer lease {label}: other writers contended for it; try again"
                ),
            )
            .code("BackupService.6125"),
        }
    }

    /// Read, and write our lease where we may: a live lease of another
    /// writer is the busy error. Failed requests start again.
    fn write_half(&mut self) -> Result<Written> {
        loop {
            self.pause()?;
            let sent = boottime();
            let seen = match read(&*self.storage, self.me.as_ref(), self.seal.as_ref()) {
                Ok(s) => s,
                Err(e) => {
                    self.failed(e);
                    continue;
                }
            };
            let vault = &self.vault;
            if self.continuous {
                let ours = matches!(&seen, Seen::Held(r, _) if self.mine.contains(&r.token));
                if !ours {
                    return Err(changed_hands(vault, &seen));
                }
            }
            match seen {
                Seen::Held(r, _) if self.mine.contains(&r.token) => {}
                Seen::Held(r, None) => return Err(busy(vault, &r)),
                Seen::Held(r, Some(why)) => log::warn!(
                    "vault {vault}: taking over the writer lease of host {} (pid {}, since {}): {why}",
                    quote(&r.host),
                    r.pid,
                    crate::clock::ns_to_rfc3339(r.acquired_ns)
                ),
                Seen::Damaged(why) => log::warn!(
                    "vault {vault}: {} is no lease ({why}): taking it over",
                    self.label
                ),
                Seen::Free => {}
            }
            let now = crate::clock::now_ns();
            let record = LeaseRecord {
                format: LEASE_FORMAT,
                host: self.host.clone(),
                pid: std::process::id(),
                token: crate::fsutil::hex(&crate::fsutil::random_bytes(16)),
                acquired_ns: now,
                renewed_ns: now,
                expires_ns: now.saturating_add(self.timing.ttl.as_nanos() as i64),
                process: self.me.clone(),
            };
            self.mine.push(record.token.clone());
            let written = write(&*self.storage, &record, self.seal.as_ref());
            // Until the answer (or the failure: the write may have landed).
            let took = boottime() - sent;
            if took >= self.timing.settle {
                self.slow(took);
            }
            match written {
                Ok(()) => return Ok(Written { record, sent, took }),
                Err(e) => self.failed(e),
            }
        }
    }

    /// Wait the settle time and read the lease back: true if ours and
    /// trusted, false to try again, the busy error if another writer won.
    fn confirm_half(&mut self, w: &Written) -> Result<bool> {
        std::thread::sleep(self.timing.settle);
        match read(&*self.storage, self.me.as_ref(), self.seal.as_ref()) {
            Err(e) => self.failed(e),
            // Trusted only if our read and write were quick (else `slow`
            // already set the wait before the next attempt).
            Ok(Seen::Held(r, _)) if r.token == w.record.token => {
                if w.took < self.timing.settle {
                    return Ok(true);
                }
            }
            // An earlier write of ours landed late: that one was slow.
            Ok(Seen::Held(r, _)) if self.mine.contains(&r.token) => {
                self.back_off(self.overlap());
                self.why = Some(Why::Slow(self.timing.settle));
            }
            Ok(Seen::Held(r, _)) => return Err(busy(&self.vault, &r)),
            // A contender withdrew (removing ours with its own) or wrote
            // garbage: try again.
            Ok(Seen::Free | Seen::Damaged(_)) => {
                self.back_off(self.timing.settle);
                self.why = Some(Why::Contended);
            }
        }
        Ok(false)
    }

    /// The first attempt's first half; no lease of ours is left behind on
    /// error.
    fn first_half(&mut self) -> Result<Written> {
        self.write_half().inspect_err(|_| self.withdraw())
    }

    /// From a first half written to the lease, or an error; no lease of
    /// ours is left behind on error.
    fn finish(&mut self, mut w: Written) -> Result<Written> {
        let r = loop {
            match self.confirm_half(&w) {
                Ok(true) => break Ok(w),
                Ok(false) => {}
                Err(e) => break Err(e),
            }
            match self.write_half() {
                Ok(next) => w = next,
                Err(e) => break Err(e),
            }
        };
        if r.is_err() {
            self.withdraw();
        }
        r
    }

    /// Remove our lease if the bucket still holds one of our tokens (best
    /// effort: an expired lease is taken over anyway).
    fn withdraw(&self) {
        if self.mine.is_empty() {
            return;
        }
        if let Ok(Seen::Held(r, _)) = read(&*self.storage, None, self.seal.as_ref()) {
            if self.mine.contains(&r.token) {
                if let Err(e) = self.storage.delete(LEASE_OBJECT) {
                    log::warn!(
                        "vault {}: remove the writer lease: {e} (it expires by itself)",
                        self.vault
                    );
                }
            }
        }
    }
}

/// The error of a backup whose lease, written before it started, was not
/// ours throughout: `seen` is what the lease is now.
fn changed_hands(vault: &str, seen: &Seen) -> Error {
    let now = match seen {
        Seen::Free => "it was removed".to_string(),
        Seen::Damaged(why) => format!("it is damaged: {why}"),
        Seen::Held(r, _) => format!(
            "it now names host {} (pid {}, since {})",
            quote(&r.host),
            r.pid,
            crate::clock::ns_to_rfc3339(r.acquired_ns)
        ),
    };
    Error::new(
        Kind::Busy,
        format!(
            "vault {vault}: the writer lease was lost before it was confirmed ({now}): another writer may have changed the vault since this backup started; try again"
        ),
    )
    .code("BackupService.6125")
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
        let seal = super::lease_seal::key_of(&*storage, vault)?;
        let mut taking = Taking::new(storage.clone(), vault, timing, seal.clone());
        let first = taking.first_half()?;
        let w = taking.finish(first)?;
        Ok(Lease::start(
            storage, seal, vault, timing, fence, w.record, w.sent,
        ))
    }

    /// [`Lease::acquire`] with the settle time and read-back on a thread:
    /// returns once the busy check is done and our lease is written.
    /// Until the lease is confirmed, `fence` lets packs through and holds
    /// every other write of the vault; if it is refused, every later write
    /// fails with its error (the busy error). See the module docs.
    pub fn begin(
        storage: Arc<dyn Storage>,
        vault: &str,
        timing: Timing,
        fence: Arc<Fence>,
    ) -> Result<Confirming> {
        let seal = super::lease_seal::key_of(&*storage, vault)?;
        let mut taking = Taking::new(storage.clone(), vault, timing, seal.clone());
        let first = taking.first_half()?;
        // From here the backup starts, reading the indexes: the lease must
        // stay ours from this write on.
        taking.continuous = true;
        let pending = Arc::new(Pending::default());
        *fence.pending.lock() = Some(pending.clone());
        let (f, p, v) = (fence.clone(), pending.clone(), vault.to_string());
        let confirm = move || {
            // Whatever happens on this thread, writers waiting for the
            // answer get one.
            struct Answer(Arc<Pending>);
            impl Drop for Answer {
                fn drop(&mut self) {
                    self.0
                        .resolve_if_open("the thread confirming the writer lease ended early");
                }
            }
            let answer = Answer(p);
            match taking.finish(first) {
                Ok(w) => {
                    let lease = Lease::start(storage, seal, &v, timing, f, w.record, w.sent);
                    answer.0.resolve(Ok(()));
                    Some(lease)
                }
                Err(e) => {
                    log::warn!("vault {v}: {e}");
                    answer.0.resolve(Err(e));
                    None
                }
            }
        };
        let thread = std::thread::Builder::new()
            .name(format!("lease {vault}"))
            .spawn(confirm);
        match thread {
            Ok(t) => Ok(Confirming {
                fence,
                pending,
                thread: Some(t),
                lease: None,
            }),
            Err(e) => {
                // The write stays (the thread's closure is gone with it);
                // it expires by itself. Fail as a busy vault would not:
                // the system is out of threads.
                *fence.pending.lock() = None;
                Err(Error::failed(format!(
                    "vault {vault}: cannot start a thread to confirm the writer lease: {e}"
                )))
            }
        }
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

/// A lease being confirmed on a thread ([`Lease::begin`]), then held
/// until dropped like a [`Lease`].
pub struct Confirming {
    fence: Arc<Fence>,
    pending: Arc<Pending>,
    thread: Option<std::thread::JoinHandle<Option<Lease>>>,
    lease: Option<Lease>,
}

impl std::fmt::Debug for Confirming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirming")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Confirming {
    /// Wait for the answer: the lease, or the error that refused it.
    pub fn wait(&mut self) -> Result<&Lease> {
        if let Some(t) = self.thread.take() {
            self.lease = t.join().unwrap_or_else(|_| {
                log::error!("the writer lease's thread panicked");
                None
            });
        }
        match &self.lease {
            Some(l) => Ok(l),
            None => Err(self.pending.refusal()),
        }
    }
}

impl Drop for Confirming {
    fn drop(&mut self) {
        // The answer first, so that the lease (if granted) is released
        // and not left to expire.
        let _ = self.wait();
        {
            let mut p = self.fence.pending.lock();
            if p.as_ref().is_some_and(|x| Arc::ptr_eq(x, &self.pending)) {
                *p = None;
            }
        }
        self.lease.take();
    }
}

/// A vault's writer lock, as [`crate::catalog::Store::try_backup_lock`]
/// gives it: the store's local lock, and for a remote vault its lease
/// (released first, while the local lock still keeps this host's other
/// writers out).
pub struct WriterLock {
    lease: Option<Lease>,
    confirming: Option<Confirming>,
    _flock: Flock,
}

impl std::fmt::Debug for WriterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterLock")
            .field("lease", &self.lease)
            .field("confirming", &self.confirming)
            .finish_non_exhaustive()
    }
}

impl WriterLock {
    /// The local lock and, for a remote vault, its lease.
    pub fn new(flock: Flock, lease: Option<Lease>) -> WriterLock {
        WriterLock {
            lease,
            confirming: None,
            _flock: flock,
        }
    }
    /// The local lock and a remote vault's lease being confirmed.
    pub fn confirming(flock: Flock, confirming: Confirming) -> WriterLock {
        WriterLock {
            lease: None,
            confirming: Some(confirming),
            _flock: flock,
        }
    }
    /// The lease, for a remote vault (waiting for it if it is being
    /// confirmed).
    pub fn lease(&mut self) -> Result<Option<&Lease>> {
        if let Some(c) = &mut self.confirming {
            return c.wait().map(Some);
        }
        Ok(self.lease.as_ref())
    }
}

#[cfg(test)]
mod tests;
