//! The engine: backup, restore, check and vault operations. No FUSE and no
//! clap here; the CLI and the mount call into it.

pub mod backup;
pub mod backup_records;
pub mod browse;
pub mod check;
pub mod keys;
pub mod luks;
pub mod metrics;
pub mod policy;
pub mod progress;
pub mod prune;
pub mod reader;
pub mod restore;
pub mod scheduler;
pub mod servers;
pub mod sizes;
pub mod status;
pub mod vaults;
pub mod visit;

use crate::catalog::Store;
use crate::error::Result;

/// The vaults a store-wide verb (check, repair, prune) works on: the one
/// named, which must exist, or every vault.
pub fn vault_targets(store: &Store, vault: Option<&str>) -> Result<Vec<String>> {
    match vault {
        Some(v) => {
            store.vault(v)?;
            Ok(vec![v.to_string()])
        }
        None => store.vault_names(),
    }
}
