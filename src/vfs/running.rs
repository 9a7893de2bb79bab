//! Backups started by `mkdir`: accepted at once, run on their own thread,
//! and the requests inside them parked until they end or their wait bound
//! passes (answered by the reaper thread, which also trims memory).

use super::backup_dir::BackupDir;
use super::vault::VaultDir;
use super::{err_errno, Attr, Entry, VResult, Vfs};
use crate::catalog;
use crate::engine::backup::{self, BackupOptions};
use crate::engine::progress::Progress;
use crate::model::Origin;
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The state of a backup started by `mkdir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Running.
    Protecting,
    /// Done and committed.
    Available,
    /// Failed, with why.
    Failed(String),
}

/// A backup started in this mount.
pub struct Running {
    pub(super) progress: Arc<Progress>,
    pub(super) state: Mutex<RunState>,
    pub(super) started_ns: i64,
}

/// A request parked inside a running backup, answered once it ends.
pub(super) struct Waiter {
    pub(super) key: (String, String),
    pub(super) deadline: Instant,
    pub(super) then: Box<dyn FnOnce(VResult<()>) + Send>,
}

impl Vfs {
    /// The mkdir backup `vault/name` while it is protecting or failed.
    /// Once its record exists it is available, whatever the backup thread
    /// has still to do after the commit (the record is the commit point,
    /// and `cbrfs backup wait` goes by it).
    pub(super) fn running(&self, vault: &str, name: &str) -> Option<Arc<Running>> {
        let r = self
            .running
            .lock()
            .get(&(vault.to_string(), name.to_string()))
            .cloned()?;
        if *r.state.lock() == RunState::Protecting && self.store.backup_path(vault, name).exists() {
            return None;
        }
        Some(r)
    }

    /// True if entries inside `ino` must wait for a running backup; gives
    /// the backup's key.
    pub fn pending(&self, ino: u64) -> Option<(String, String)> {
        let (e, _) = self.entry(ino).ok()?;
        if let Entry::Backup(b) = e {
            let r = self.running(b.vault(), b.name())?;
            if *r.state.lock() == RunState::Protecting {
                return Some((b.vault().to_string(), b.name().to_string()));
            }
        }
        None
    }

    /// Call `then` once backup `key` is no longer running: `Ok` if it is
    /// available, EIO if it failed, EAGAIN if the wait bound passes first.
    pub fn wait(&self, key: (String, String), then: Box<dyn FnOnce(VResult<()>) + Send>) {
        let state = self.running(&key.0, &key.1).map(|r| r.state.lock().clone());
        match state {
            Some(RunState::Protecting) => {
                self.waiters.lock().push(Waiter {
                    key,
                    deadline: Instant::now() + self.opts.wait,
                    then,
                });
                self.wake.notify_all();
            }
            Some(RunState::Failed(_)) => then(Err(libc::EIO)),
            _ => then(Ok(())),
        }
    }

    pub(super) fn check_available(&self, vault: &str, backup: &str) -> VResult<()> {
        match self.running(vault, backup).map(|r| r.state.lock().clone()) {
            Some(RunState::Protecting) => Err(libc::EAGAIN),
            Some(RunState::Failed(_)) => Err(libc::EIO),
            _ => Ok(()),
        }
    }

    /// `mkdir` in a vault: accept a backup named `name` and run it on its
    /// own thread. Returns the new directory's attributes at once.
    pub fn mkdir(self: &Arc<Self>, parent: u64, name: &[u8]) -> VResult<Attr> {
        let (pe, _) = self.entry(parent)?;
        let vault = match pe {
            Entry::Root(_) => return Err(libc::EPERM),
            Entry::Vault(VaultDir(v)) => v,
            _ => return Err(libc::EROFS),
        };
        let sname = match std::str::from_utf8(name) {
            Ok(s) => s.to_string(),
            Err(_) => return Err(libc::EINVAL),
        };
        let key = (vault.clone(), sname.clone());
        if let Some(r) = self.running(&vault, &sname) {
            if !matches!(*r.state.lock(), RunState::Failed(_)) {
                log::warn!("mkdir {vault}/{sname}: a backup of that name exists");
                return Err(libc::EEXIST);
            }
        }
        let prepared = backup::prepare(
            &self.store,
            &vault,
            BackupOptions {
                name: Some(sname.clone()),
                origin: Some(Origin::Mount),
                ..Default::default()
            },
        )
        .map_err(|e| {
            // The engine recorded the refusal in the task log.
            log::warn!("mkdir {vault}/{sname}: backup refused: {e}");
            err_errno(&e)
        })?;
        let run = Arc::new(Running {
            progress: prepared.progress.clone(),
            state: Mutex::new(RunState::Protecting),
            started_ns: catalog::now_ns(),
        });
        self.running.lock().insert(key.clone(), run.clone());
        log::info!("mkdir {vault}/{sname}: backup accepted");
        let me = Arc::clone(self);
        let spawned = prepared.start(move |result| {
            let state = match &result {
                Ok(_) => {
                    log::info!("backup {}/{} is available", key.0, key.1);
                    RunState::Available
                }
                Err(e) => {
                    log::error!("backup {}/{} failed: {e}", key.0, key.1);
                    RunState::Failed(e.to_string())
                }
            };
            *run.state.lock() = state.clone();
            if state == RunState::Available {
                me.running.lock().remove(&key);
            }
            me.finish_waiters(
                &key,
                if state == RunState::Available {
                    Ok(())
                } else {
                    Err(libc::EIO)
                },
            );
        });
        if let Err(e) = spawned {
            log::error!("mkdir {vault}/{sname}: {e}");
            self.running.lock().remove(&(vault.clone(), sname.clone()));
            return Err(libc::EAGAIN);
        }
        let entry = Entry::Backup(BackupDir::new(&vault, &sname));
        let ino = self.intern(parent, entry, None, true);
        Ok(Attr {
            ino,
            ..self.dir_attr(0o555, catalog::now_ns())
        })
    }

    pub(super) fn finish_waiters(&self, key: &(String, String), result: VResult<()>) {
        let ready: Vec<Waiter> = {
            let mut w = self.waiters.lock();
            let (ready, rest): (Vec<_>, Vec<_>) = w.drain(..).partition(|x| &x.key == key);
            *w = rest;
            ready
        };
        for w in ready {
            (w.then)(result);
        }
    }

    /// Backups running in this mount, for a clean shutdown.
    pub fn running_count(&self) -> usize {
        self.running
            .lock()
            .values()
            .filter(|r| *r.state.lock() == RunState::Protecting)
            .count()
    }
}

/// Answers parked requests whose wait bound passed.
pub(super) fn reaper(vfs: std::sync::Weak<Vfs>) {
    loop {
        let Some(v) = vfs.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<Waiter> = {
            let mut w = v.waiters.lock();
            let (expired, rest): (Vec<_>, Vec<_>) = w.drain(..).partition(|x| x.deadline <= now);
            *w = rest;
            expired
        };
        for w in expired {
            log::info!(
                "backup {}/{} still running: a request got EAGAIN",
                w.key.0,
                w.key.1
            );
            (w.then)(Err(libc::EAGAIN));
        }
        // Give memory freed by a burst of reads back to the system once the
        // mount is quiet: glibc keeps freed chunks in per-thread arenas, so
        // an idle mount would otherwise keep its peak size.
        let reads = v.reads.swap(0, Ordering::Relaxed);
        if reads == 0 && !v.trimmed.swap(true, Ordering::Relaxed) {
            // The read state of files read without an OPEN goes too.
            v.release_implicit();
            // SAFETY: malloc_trim only releases free memory.
            unsafe { libc::malloc_trim(0) };
        } else if reads > 0 {
            v.trimmed.store(false, Ordering::Relaxed);
        }
        // And the read path's cache and buffer pool, later (file.rs).
        v.release_idle_reads(now);
        // Wait without holding the tree: a tree its owner dropped goes at
        // once, not up to a wait later on this thread (with read-ahead
        // still reading its store meanwhile).
        let (waiters, wake) = (v.waiters.clone(), v.wake.clone());
        let mut guard = waiters.lock();
        let timeout = guard
            .iter()
            .map(|w| w.deadline)
            .min()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(500))
            .min(Duration::from_millis(500));
        drop(v);
        wake.wait_for(&mut guard, timeout);
        drop(guard);
    }
}
