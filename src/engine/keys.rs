//! `vault key add|list|remove`: the key slots of an encrypted vault
//! (docs/FORMAT.md §16.4), over the vault's storage. Adding and removing
//! need the master key (unlocked with the current password) and the
//! vault's writer lock; listing needs neither.

use crate::catalog::Store;
use crate::crypto::password::{self, Sources};
use crate::crypto::slot::{self, KdfParams, SlotInfo};
use crate::error::{Error, Result};
use crate::store::keyring::{self, Slots};
use std::fmt::Write as _;
use std::path::Path;

/// The vault's settings, refused unless it is encrypted. Its sealed
/// settings are not opened: listing slots needs no password, and adding
/// or removing one unlocks the master key itself.
fn encrypted_vault(store: &Store, vault: &str) -> Result<()> {
    let cfg = store.vault_settings(vault)?;
    if !cfg.encrypted {
        return Err(Error::invalid(format!(
            "vault {vault} is not encrypted: it has no key slots (encryption is chosen when a \
             vault is created)"
        )));
    }
    Ok(())
}

/// The master key of `vault`, unlocked with the password given, and
/// remembered for this process before the writer lock is taken: the lease
/// of a vault in a bucket seals its holder with the vault's key
/// (store/lease_seal.rs), and would otherwise unlock it a second time (a
/// second argon2id run, or a second prompt).
fn unlock_then_remember(
    storage: &dyn crate::store::Storage,
    vault: &str,
) -> Result<crate::crypto::MasterKey> {
    let master = keyring::unlock_master(storage, vault)?;
    keyring::remember(storage, Ok(&master));
    Ok(master)
}

/// What a new key slot is opened by: a password (from a file, or the
/// terminal when `None`) or a key file.
#[derive(Debug, Clone, Copy)]
pub enum NewSecret<'a> {
    /// `--new-password-file FILE`, or the terminal.
    Password(Option<&'a Path>),
    /// `--new-key-file FILE`: a key-file slot, opened without argon2id.
    KeyFile(&'a Path),
}

/// Add a key slot opened by `new`: a password from `--new-password-file`
/// (or the terminal, asked twice; never `CBRFS_PASSWORD`, which opens the
/// vault) or the bytes of a key file. Returns the new slot's number.
pub fn add(store: &Store, vault: &str, new: NewSecret<'_>) -> Result<u32> {
    encrypted_vault(store, vault)?;
    let storage = store.vault_storage(vault)?;
    let master = unlock_then_remember(&*storage, vault)?;
    let _lock = store.try_backup_lock(vault)?;
    let given = match new {
        NewSecret::KeyFile(path) => {
            password::Given::KeyFile(password::read_key_file(path, "--new-key-file")?)
        }
        NewSecret::Password(file) => {
            let src = Sources {
                file,
                option: "--new-password-file",
                env: None,
                confirm: true,
            };
            password::Given::Password(password::read_password(vault, &src)?)
        }
    };
    slot::add_slot(
        &Slots(&*storage),
        vault,
        &master,
        given.secret(),
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
    let storage = store.vault_storage(vault)?;
    let master = unlock_then_remember(&*storage, vault)?;
    let _lock = store.try_backup_lock(vault)?;
    slot::remove_slot(&Slots(&*storage), vault, number, &master)
}

/// Before a mount with a terminal and no password given (neither
/// `--password-file` nor `CBRFS_PASSWORD`): ask once for the password of
/// each encrypted vault, as restic asks for a repository's ("enter password
/// for vault V:", no echo). A vault whose prompt is left empty, or answered
/// wrongly, stays locked in the mount (said on stderr); the others open.
/// Returns, by vault, the master key unlocked or why the vault stays
/// locked, for the mount daemon; both are also remembered by this process
/// (a mount in the foreground). With no terminal, or a password given,
/// nothing is asked: the daemon unlocks with the file or variable, or
/// shows the vaults locked.
pub fn ask_for_mount(store: &Store) -> Result<Vec<(String, MountKey)>> {
    use std::io::IsTerminal;
    let mut out = Vec::new();
    if keyring::password_given() || !std::io::stdin().is_terminal() {
        return Ok(out);
    }
    for name in store.vault_names()? {
        // A damaged or unreachable vault is reported by the mount itself.
        let Ok(cfg) = store.vault_settings(&name) else {
            continue;
        };
        if !cfg.encrypted {
            continue;
        }
        let storage = store.vault_storage(&name)?;
        let src = Sources {
            file: None,
            option: "--password-file",
            env: None,
            confirm: false,
        };
        let unlocked = password::read_password(&name, &src)
            .and_then(|pw| slot::unlock_vault(&Slots(&*storage), &name, pw.secret()));
        match unlocked {
            Ok((_, master)) => {
                keyring::remember(&*storage, Ok(&master));
                out.push((name, Ok(master)));
            }
            Err(e) if e.kind() == crate::error::Kind::Invalid => {
                eprintln!(
                    "cbrfs: vault {name} stays locked in the mount: {}",
                    crate::quote::quote(&e.to_string())
                );
                keyring::remember(&*storage, Err(&e));
                out.push((name, Err(e.to_string())));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// What the terminal gave for one vault before a mount: its master key,
/// or why it stays locked.
pub type MountKey = std::result::Result<crate::crypto::MasterKey, String>;

/// In the mount daemon: remember the keys its parent unlocked
/// ([`ask_for_mount`]), sent as `VAULT key HEX` or `VAULT locked WHY`
/// lines on a pipe, so that the daemon shows the same vaults open and
/// locked, for the same reasons. A line that does not decode, or names no
/// vault, is skipped: that vault then shows locked.
pub fn remember_for_mount(store: &Store, text: &str) {
    for line in text.lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(name), Some(what), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if what == "locked" {
            if let Ok(storage) = store.vault_storage(name) {
                keyring::remember(&*storage, Err(&crate::error::Error::invalid(rest)));
            }
            continue;
        }
        let hex = rest;
        let mut bytes = [0u8; 32];
        if hex.len() != 64
            || !(0..32).all(|i| {
                u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("x"), 16)
                    .map(|b| bytes[i] = b)
                    .is_ok()
            })
        {
            continue;
        }
        let master = crate::crypto::MasterKey::from_bytes(bytes);
        bytes.fill(0);
        if let Ok(storage) = store.vault_storage(name) {
            keyring::remember(&*storage, Ok(&master));
        }
    }
}

/// The lines [`remember_for_mount`] reads.
pub fn keys_for_mount(keys: &[(String, MountKey)]) -> zeroize::Zeroizing<String> {
    let mut s = zeroize::Zeroizing::new(String::new());
    for (name, k) in keys {
        s.push_str(name);
        match k {
            Ok(k) => {
                s.push_str(" key ");
                for b in k.bytes() {
                    // Straight into the wiped buffer: no copy of the key.
                    let _ = write!(s, "{b:02x}");
                }
            }
            Err(why) => {
                s.push_str(" locked ");
                s.push_str(&why.replace('\n', " "));
            }
        }
        s.push('\n');
    }
    s
}

/// In a mount daemon, before it mounts: unlock every encrypted vault whose
/// password was given (`--password-file` or `CBRFS_PASSWORD`) on a thread
/// of its own, one vault after another, so that argon2id (about 0.13 s of
/// CPU per vault) runs while the daemon sets up its FUSE session and the
/// kernel answers INIT, not after the first `ls` of the vault has asked for
/// it. Nothing changes in what is unlocked or how: the key lands in
/// `store::keyring`'s cache exactly as the first access would have put it
/// there, and that access waits on the cache's lock for the unlock under
/// way instead of starting a second one. A failure is remembered as it
/// would have been (the vault shows locked) or, for I/O, tried again at
/// first access. Keys handed over from a prompt ([`remember_for_mount`])
/// are already in the cache; with no password given there is nothing to
/// unlock without asking.
pub fn unlock_ahead_for_mount(store: &Store) {
    if !keyring::password_given() {
        return;
    }
    let store = store.clone();
    let spawned = std::thread::Builder::new()
        .name("unlock-ahead".into())
        .spawn(move || {
            let Ok(names) = store.vault_names() else {
                return;
            };
            for name in names {
                // The mount reports a damaged or locked vault itself, at
                // its first use; here only the unlock's side effect counts.
                if let Ok(cfg) = store.vault_settings(&name) {
                    if cfg.encrypted && cfg.locked.is_none() {
                        log::info!("vault {name}: unlocked ahead of its first use");
                    }
                }
            }
        });
    if let Err(e) = spawned {
        // Not fatal: each vault is then unlocked at its first use.
        log::debug!("unlock ahead: no thread: {e}");
    }
}
