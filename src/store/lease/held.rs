//! A held lease (store/lease.rs): its renewal thread, its read-backs, and
//! the vault's [`Fence`] through which every write of the vault asks
//! whether it may go on.

use super::super::storage::Storage;
use super::record::{boottime, read, write, LeaseRecord, Seen};
use super::{Timing, LEASE_OBJECT, VERIFY_EVERY};
use crate::error::{Error, Result};
use crate::quote::quote;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::Duration;

/// A held lease's state, shared by the guard, its renewal thread and the
/// vault's [`Fence`].
pub(super) struct Held {
    pub(super) vault: String,
    pub(super) storage: Arc<dyn Storage>,
    /// The vault's key if it is encrypted: the holder is sealed.
    pub(super) seal: Option<crate::crypto::SealKey>,
    pub(super) timing: Timing,
    pub(super) record: Mutex<LeaseRecord>,
    pub(super) state: Mutex<State>,
    /// Serialises renewals with the release: no renewal lands after it.
    pub(super) ops: Mutex<()>,
    pub(super) stop: Mutex<bool>,
    pub(super) wake: Condvar,
}

pub(super) struct State {
    /// Writes stop at this boot-time instant unless a renewal moves it.
    pub(super) deadline: Duration,
    /// Why the lease is lost for good.
    pub(super) lost: Option<String>,
    /// The last renewal's failure.
    pub(super) last_error: Option<String>,
    /// When the lease was last read back as ours (boot time).
    pub(super) verified: Duration,
}

impl Held {
    /// Whether a write of `name` (a delete if `delete`) may go on.
    pub(super) fn check(&self, name: &str, delete: bool) -> Result<()> {
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
                    crate::clock::ns_to_rfc3339(renewed),
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
                        crate::clock::ns_to_rfc3339(r.acquired_ns)
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
        let now = crate::clock::now_ns();
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
    pub(super) fn renew_loop(&self) {
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
    pub(super) fn release(&self) {
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

/// Packs may go up while the lease is being confirmed (store/lease.rs,
/// [`super::Lease::begin`]): they are content-addressed and no index names
/// them yet, so a pack that a refused writer put is harmless and prune
/// reclaims it. Nothing else may: indexes, records, the head, settings and
/// every delete wait for the answer, except the removal of temporaries
/// ([`TEMPORARIES`]): a bucket holds none (an S3 upload is whole or
/// invisible), so it deletes nothing, and a backup asks for it first.
pub(super) fn may_precede_lease(name: &str, delete: bool) -> bool {
    (!delete && name.starts_with("packs/") && name.ends_with(".pack")) || name == TEMPORARIES
}

/// The name a fence check of [`crate::store::Storage::remove_stale_temps`]
/// goes by.
pub const TEMPORARIES: &str = "temporary objects";

/// A lease being confirmed on a thread: whether it was granted, once
/// known. Writes that must not precede the lease wait here.
#[derive(Default)]
pub(super) struct Pending {
    outcome: Mutex<Option<Result<()>>>,
    done: Condvar,
}

impl Pending {
    /// The answer: granted (`Ok`) or refused (the error every later write
    /// of the vault gets).
    pub(super) fn resolve(&self, outcome: Result<()>) {
        *self.outcome.lock() = Some(outcome);
        self.done.notify_all();
    }

    /// May a write go on: at once if `early` and no answer yet, else once
    /// the answer is there and it granted the lease.
    fn wait(&self, early: bool) -> Result<()> {
        let mut o = self.outcome.lock();
        loop {
            match &*o {
                Some(Ok(())) => return Ok(()),
                Some(Err(e)) => return Err(e.duplicate()),
                None if early => return Ok(()),
                None => self.done.wait(&mut o),
            }
        }
    }

    /// Resolve as refused with `why` unless already answered (a thread
    /// that ended without an answer must not leave writers waiting).
    pub(super) fn resolve_if_open(&self, why: &str) {
        let mut o = self.outcome.lock();
        if o.is_none() {
            *o = Some(Err(Error::failed(why.to_string())));
            self.done.notify_all();
        }
    }

    /// The error that refused the lease (waiting for the answer).
    pub(super) fn refusal(&self) -> Error {
        match self.wait(false) {
            Err(e) => e,
            Ok(()) => Error::failed("the writer lease was granted but is not held"),
        }
    }
}

/// Where a vault's storage learns whether this process holds the vault's
/// lease: one per vault and process, shared by every [`super::Fenced`] of it.
#[derive(Default)]
pub struct Fence {
    pub(super) held: Mutex<Option<Arc<Held>>>,
    /// A lease being confirmed, if any: see [`Pending`].
    pub(super) pending: Mutex<Option<Arc<Pending>>>,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("held", &self.held.lock().is_some())
            .field("pending", &self.pending.lock().is_some())
            .finish()
    }
}

impl Fence {
    /// Refuse a write of `name` once this process's lease is lost or about
    /// to expire. Without a lease held here, every write goes on (the
    /// settings written by `vault associate`, the vault's creation); the
    /// lease object itself always does. While the lease is being
    /// confirmed, packs go on and every other write waits for the answer
    /// ([`may_precede_lease`]); once it is refused, nothing goes on.
    pub(in crate::store) fn check(&self, name: &str, delete: bool) -> Result<()> {
        if name == LEASE_OBJECT {
            return Ok(());
        }
        let pending = self.pending.lock().clone();
        if let Some(p) = pending {
            p.wait(may_precede_lease(name, delete))?;
        }
        let held = self.held.lock().clone();
        match held {
            Some(h) => h.check(name, delete),
            None => Ok(()),
        }
    }
}
