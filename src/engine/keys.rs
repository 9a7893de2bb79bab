//! `vault key add|list|remove`: the key slots of an encrypted vault
//! (docs/FORMAT.md §16.4), over the vault's storage. Adding and removing
//! need the master key (unlocked with the current password) and the
//! vault's writer lock; listing needs neither.

use crate::catalog::Store;
use crate::crypto::password::{self, Sources};
use crate::crypto::slot::{self, KdfParams, SlotInfo};
use crate::error::{Error, Result};
use crate::store::keyring::{self, Slots};
use std::path::Path;

/// The vault's settings, refused unless it is encrypted.
fn encrypted_vault(store: &Store, vault: &str) -> Result<()> {
    let cfg = store.vault(vault)?;
    if !cfg.encrypted {
        return Err(Error::invalid(format!(
            "vault {vault} is not encrypted: it has no key slots (encryption is chosen when a \
             vault is created)"
        )));
    }
    Ok(())
}

/// Add a key slot opened by the password from `new_password_file` (or the
/// terminal, asked twice; never `CBRFS_PASSWORD`, which opens the vault).
/// Returns the new slot's number.
pub fn add(store: &Store, vault: &str, new_password_file: Option<&Path>) -> Result<u32> {
    encrypted_vault(store, vault)?;
    let _lock = store.try_backup_lock(vault)?;
    let storage = store.vault_storage(vault)?;
    let master = keyring::unlock_master(&*storage, vault)?;
    let src = Sources {
        file: new_password_file,
        option: "--new-password-file",
        env: None,
        confirm: true,
    };
    let pw = password::read_password(vault, &src)?;
    slot::add_slot(
        &Slots(&*storage),
        vault,
        &master,
        pw.secret(),
        KdfParams::for_new_slot()?,
    )
}

/// Every key slot of the vault, with its header or why it is unreadable.
pub fn list(store: &Store, vault: &str) -> Result<Vec<SlotInfo>> {
    encrypted_vault(store, vault)?;
    let storage = store.vault_storage(vault)?;
    slot::list_slots(&Slots(&*storage), vault)
}

/// Remove key slot `number`; refused when no other working slot holds the
/// key (the last one is never removed).
pub fn remove(store: &Store, vault: &str, number: u32) -> Result<()> {
    encrypted_vault(store, vault)?;
    let _lock = store.try_backup_lock(vault)?;
    let storage = store.vault_storage(vault)?;
    let master = keyring::unlock_master(&*storage, vault)?;
    slot::remove_slot(&Slots(&*storage), vault, number, &master)
}
