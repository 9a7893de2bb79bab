//! The policy scheduler: who runs passes and when. A pass itself is
//! [`super::policy::run_due`], the one function both the mount daemon (every
//! [`PERIOD`], on a thread of its own started with [`spawn`]) and `cbrfs
//! policy run-due` (once, for cron or a systemd timer) call; this module owns
//! the daemon's loop and which daemon of a store schedules.
//!
//! Passes are serialised by `STORE/scheduler.lock` inside `run_due`, so no
//! time point runs twice even when passes race; [`OWNER_LOCK`] only keeps a
//! second mount of the same store from scheduling at all.

use crate::catalog::Store;
use crate::fsutil::Flock;
use std::time::Duration;

/// How often the mount daemon runs a scheduler pass.
pub const PERIOD: Duration = Duration::from_secs(30);

/// Held for its whole life by the one mount daemon that runs the store's
/// policy scheduler (see docs/FORMAT.md).
pub const OWNER_LOCK: &str = "scheduler-daemon.lock";

/// Start the policy scheduler of a mount daemon: one pass every [`PERIOD`],
/// on its own thread, so a backup it starts never holds up the mount. It
/// ends with the process. Only the daemon holding [`OWNER_LOCK`] schedules;
/// another one serves files, says so in its log, and takes over if the
/// first goes away.
pub fn spawn(store: Store) {
    let spawned = std::thread::Builder::new()
        .name("cbrfs-scheduler".into())
        .spawn(move || {
            let mut owner = Owner::default();
            loop {
                if owner.claim(&store) {
                    pass(&store);
                }
                std::thread::sleep(PERIOD);
            }
        });
    if let Err(e) = spawned {
        // The mount still serves files; without this thread no policy runs
        // from it, which the log must say.
        log::error!("cannot start the policy scheduler thread: {e}");
    }
}

/// Whether this daemon is the store's scheduler: it holds [`OWNER_LOCK`]
/// once it got it, and tries again every pass until then.
#[derive(Default)]
struct Owner {
    lock: Option<Flock>,
    /// The log said another mount schedules (said once, not every pass).
    told: bool,
}

impl Owner {
    /// True if this daemon holds the owner lock (taking it if it is free).
    fn claim(&mut self, store: &Store) -> bool {
        if self.lock.is_none() {
            match Flock::try_lock(&store.root().join(OWNER_LOCK), true) {
                Ok(Some(l)) => {
                    if self.told {
                        log::info!("the other mount's scheduler stopped: this mount runs the policy scheduler now");
                    }
                    self.lock = Some(l);
                }
                Ok(None) if !self.told => {
                    log::info!("another cbrfs mount of this store runs the policy scheduler: this mount serves files and does not schedule");
                    self.told = true;
                }
                Ok(None) => {}
                Err(e) => log::warn!("scheduler: {e}"),
            }
        }
        self.lock.is_some()
    }
}

/// One pass of the daemon, at the clock's time, its outcomes logged (the
/// daemon has no terminal; `policy run-due` prints the same reports).
fn pass(store: &Store) {
    match super::policy::run_due(store, crate::catalog::now_ns()) {
        Ok(reports) => {
            for r in reports {
                log::info!(
                    "policy {} on vault {} at {}: {}",
                    r.policy,
                    r.vault,
                    r.point,
                    r.outcome
                );
            }
        }
        Err(e) => log::warn!("scheduler: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One daemon of a store schedules; a second one does not while the
    /// first holds the owner lock, and takes over once it is gone.
    #[test]
    fn one_daemon_of_a_store_schedules_and_another_takes_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("s")).unwrap();
        let mut first = Owner::default();
        let mut second = Owner::default();
        assert!(first.claim(&store));
        assert!(!second.claim(&store));
        assert!(second.told);
        // Still the first's on its next pass.
        assert!(first.claim(&store));
        assert!(!second.claim(&store));
        drop(first);
        assert!(second.claim(&store));
    }
}
