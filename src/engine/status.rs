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

crate::names::words! {
    /// Where a backup that has a status file is: `protecting` while it
    /// runs, `error` when it failed (the file is removed when it is
    /// committed). The word is the status file's and the mount's attribute's.
    #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
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

/// Remove a status.
pub fn remove(store: &Store, vault: &str, backup: &str) {
    let _ = std::fs::remove_file(path(store, vault, backup));
}
