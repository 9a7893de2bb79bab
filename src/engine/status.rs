//! Status files of running backups: `vaults/<vault>/running/<backup>.json`,
//! written by the process running the backup (CLI or mount daemon) every
//! half second, removed when the backup is committed, kept with the reason
//! when it fails. `cbrfs backup wait` and the mount read them; a status
//! whose process is gone means the backup died with it.

use crate::catalog::Store;
use crate::error::{Error, Result};
use crate::fsutil;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

crate::names::words! {
    /// Where a backup that has a status file is: `protecting` while it
    /// runs, `error` when it failed (the file is removed when it is
    /// committed). The word is the status file's and the mount's attribute's.
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum RunStatus("run status") {
        /// Running.
        Protecting = "protecting",
        /// Failed; the status says why.
        Error = "error",
    }
}

/// What a running (or failed) backup reports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Backup name.
    pub backup: String,
    /// Running or failed.
    pub status: RunStatus,
    /// 0–100.
    pub progress: u8,
    /// Bytes read so far.
    pub bytes_read: u64,
    /// Files handled so far.
    pub files: u64,
    /// Process running it.
    pub pid: u32,
    /// Start, RFC 3339.
    pub started: String,
    /// Why it failed.
    pub error: Option<String>,
}

fn path(store: &Store, vault: &str, backup: &str) -> PathBuf {
    store
        .vault_dir(vault)
        .join("running")
        .join(format!("{backup}.json"))
}

/// Write a status atomically.
pub fn write(store: &Store, vault: &str, s: &Status) -> Result<()> {
    let p = path(store, vault, &s.backup);
    if let Some(dir) = p.parent() {
        fsutil::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec(s).map_err(|e| {
        Error::failed(format!(
            "vault {vault}: encode the status of backup {}: {e}",
            s.backup
        ))
    })?;
    fsutil::write_atomic(&p, &json)
}

/// Read a status, if any.
pub fn read(store: &Store, vault: &str, backup: &str) -> Option<Status> {
    let data = crate::fsutil::read_store_file(&path(store, vault, backup)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Remove a status; one already gone is removed.
pub fn remove(store: &Store, vault: &str, backup: &str) -> Result<()> {
    let p = path(store, vault, backup);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("remove {}", p.display()), e))
        }
        _ => Ok(()),
    }
}

/// The status file of one running backup, as the backup writes it. The
/// status shows the backup to `backup wait` and the mount; it is not the
/// backup (the record is): a write that fails (a full disk) must not fail
/// a backup that succeeds, but must not vanish either. It is logged, once
/// while the failures last, since the file is rewritten every half second.
pub struct Writer {
    store: Store,
    vault: String,
    failing: AtomicBool,
}

impl Writer {
    /// The status files of backups of `vault`.
    pub fn new(store: &Store, vault: &str) -> Self {
        Writer {
            store: store.clone(),
            vault: vault.to_string(),
            failing: AtomicBool::new(false),
        }
    }

    /// Write `s`; a failure is logged.
    pub fn write(&self, s: &Status) {
        match write(&self.store, &self.vault, s) {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    log::info!(
                        "vault {}: the status file of backup {} is written again",
                        self.vault,
                        s.backup
                    );
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "vault {}: the status file of backup {} is not written ('backup wait' and the mount may show an older status): {e}",
                        self.vault,
                        s.backup
                    );
                }
            }
        }
    }

    /// Remove the status of `backup` (committed); a failure is logged.
    pub fn remove(&self, backup: &str) {
        if let Err(e) = remove(&self.store, &self.vault, backup) {
            log::warn!(
                "vault {}: the status file of committed backup {backup} is not removed: {e}",
                self.vault
            );
        }
    }
}
