//! The key of a vault, found once per process: the `key` object of a
//! version-1 vault, or the master key of an encrypted vault (docs/FORMAT.md
//! §16) unlocked from its key slots with the key file of `--key-file`, else
//! the password from `--password-file`, `CBRFS_PASSWORD` or the terminal.
//! Every command
//! reaches a vault's store through [`super::Repo::open_in`] and its records
//! through the catalog, both of which ask [`vault_key`]: the unlock lives
//! here alone, so no command can forget it, and a mount asks once per
//! vault, not once per read.

use super::storage::{self, Storage};
use super::Key;
use crate::crypto::password::{self, Sources};
use crate::crypto::slot::{self, KdfParams, SlotStorage};
use crate::error::{Error, Kind, Result};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;

/// The vault settings object, read to learn whether a vault is encrypted.
const SETTINGS: &str = "vault.json";

/// `--password-file`, given once to the process (the CLI sets it before
/// any command opens a vault).
static PASSWORD_FILE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// `--key-file`, given once to the process like `--password-file`.
static KEY_FILE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// What an unlock gave, by storage (its `describe()`): the key, or why it
/// is not available. A failure for want of a password is kept too, so that
/// a mount asks once and then shows the vault locked instead of asking at
/// every read.
type Unlocked = HashMap<String, std::result::Result<Key, (Kind, String)>>;
static UNLOCKED: Mutex<Option<Unlocked>> = Mutex::new(None);

/// Set the `--key-file` of this process: encrypted vaults are then opened
/// by their key-file slots, without argon2id.
pub fn set_key_file(path: Option<PathBuf>) {
    *KEY_FILE.lock() = path;
}

/// The `--key-file` of this process, if given.
pub fn key_file() -> Option<PathBuf> {
    KEY_FILE.lock().clone()
}

/// The secret given to this process for vault `vault`: the key file, else
/// the password (file, variable, terminal; asked twice when `confirm`).
fn given_secret(vault: &str, confirm: bool) -> Result<password::Given> {
    let (kf, pf) = (key_file(), password_file());
    let mut src = Sources::unlock(pf.as_deref());
    src.confirm = confirm;
    password::read_secret(vault, kf.as_deref(), &src)
}

/// Set the `--password-file` of this process.
pub fn set_password_file(path: Option<PathBuf>) {
    *PASSWORD_FILE.lock() = path;
}

/// The `--password-file` of this process, if given.
pub fn password_file() -> Option<PathBuf> {
    PASSWORD_FILE.lock().clone()
}

/// A vault's [`Storage`] as the key slots' storage (src/crypto/slot.rs).
pub struct Slots<'a>(pub &'a dyn Storage);

impl SlotStorage for Slots<'_> {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.0.put(name, data)
    }
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.0.get(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.0.list(prefix)?.into_iter().map(|o| o.name).collect())
    }
    fn delete(&self, name: &str) -> Result<()> {
        self.0.delete(name)
    }
}

/// True if the settings in `storage` say the vault is encrypted (format 2
/// with `"encrypted": true`). Absent or undecodable settings say no: the
/// catalog reports them when it reads them.
pub fn settings_say_encrypted(storage: &dyn Storage) -> Result<bool> {
    let Some(bytes) = storage.get(SETTINGS)? else {
        return Ok(false);
    };
    let v: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Ok(false),
    };
    Ok(v.get("encrypted").and_then(|e| e.as_bool()) == Some(true))
}

/// The key of vault `vault` kept in `storage`: unlocked once per process
/// for an encrypted vault, read from the `key` object otherwise.
pub fn vault_key(storage: &dyn Storage, vault: &str) -> Result<Key> {
    let encrypted = settings_say_encrypted(storage)?;
    if !encrypted {
        return match storage.get("key")? {
            Some(secret) => {
                Key::from_secret(secret).map_err(|e| e.context(format!("vault {vault}")))
            }
            None => Err(storage::absent(storage, "key")),
        };
    }
    encrypted_vault_key(storage, vault)
}

/// The key of encrypted vault `vault` kept in `storage`, unlocked once per
/// process, without reading its settings first: also for a vault being
/// created, whose settings are written with it (sealed, §16.5).
pub fn encrypted_vault_key(storage: &dyn Storage, vault: &str) -> Result<Key> {
    // A clear `key` object beside the slots would be a v1 key planted in an
    // encrypted vault: never used, and said at every open (not only the
    // first of a process).
    if storage.get("key")?.is_some() {
        return Err(Error::corrupt(format!(
            "vault {vault} is encrypted but {} holds a clear `key` object: the vault is damaged \
             or was tampered with",
            storage.describe()
        )));
    }
    let id = storage.describe();
    // Held while asking: two threads of a mount that open the same vault
    // at once must not both prompt.
    let mut guard = UNLOCKED.lock();
    let cache = guard.get_or_insert_with(HashMap::new);
    if let Some(r) = cache.get(&id) {
        return r.clone().map_err(|(k, m)| Error::new(k, m));
    }
    let unlocked =
        given_secret(vault, false).and_then(|given| unlock_slots(storage, vault, given.secret()));
    match unlocked {
        Ok((_, master)) => {
            let key = Key::from_master(&master);
            cache.insert(id, Ok(key.clone()));
            Ok(key)
        }
        Err(e) => {
            // Wanting or wrong passwords are remembered (a mount shows the
            // vault locked); I/O errors are not (the next try may work).
            if e.kind() == Kind::Invalid {
                cache.insert(id, Err((e.kind(), e.to_string())));
            }
            Err(e)
        }
    }
}

/// [`slot::unlock_vault`] over the slots of `storage`; when no slot opens
/// and a cache held copies of them (a remote vault keeps its slots on the
/// host, docs/FORMAT.md §19), those copies are dropped and the slots read
/// again from the bucket, once: a slot changed there since it was cached,
/// or a damaged copy, must not lock the vault. Nothing in a cached slot is
/// trusted unless it opens: the slot is authenticated by its key.
pub(crate) fn unlock_slots(
    storage: &dyn Storage,
    vault: &str,
    secret: slot::Secret<'_>,
) -> Result<(u32, crate::crypto::MasterKey)> {
    match slot::unlock_vault(&Slots(storage), vault, secret) {
        Err(e)
            if matches!(e.kind(), Kind::Invalid | Kind::Corrupt)
                && forget_cached_slots(storage) =>
        {
            slot::unlock_vault(&Slots(storage), vault, secret)
        }
        r => r,
    }
}

/// Drop the cached copies of every key slot of `storage`; true if there
/// were any.
fn forget_cached_slots(storage: &dyn Storage) -> bool {
    let Ok(listed) = storage.list(slot::PREFIX) else {
        return false;
    };
    let mut any = false;
    for o in listed {
        any |= storage.forget_cached(&o.name);
    }
    any
}

/// True when a password or key file was given without a terminal:
/// `--key-file`, `--password-file` or `CBRFS_PASSWORD`.
pub fn password_given() -> bool {
    key_file().is_some()
        || password_file().is_some()
        || std::env::var_os(password::PASSWORD_ENV).is_some()
}

/// The key of encrypted vault `vault` if it can be had without asking
/// anyone: unlocked before in this process, or with the password given by
/// `--password-file` or `CBRFS_PASSWORD`. `Ok(Err(why))` when it cannot
/// (no password given, a wrong one): listings show such a vault locked
/// instead of failing or prompting once per vault. I/O errors are errors.
pub fn key_at_hand(storage: &dyn Storage, vault: &str) -> Result<std::result::Result<Key, Error>> {
    let known = UNLOCKED
        .lock()
        .as_ref()
        .and_then(|c| c.get(&storage.describe()).cloned());
    if let Some(r) = known {
        return Ok(r.map_err(|(k, m)| Error::new(k, m)));
    }
    if !password_given() {
        return Ok(Err(Error::invalid(format!(
            "vault {vault} is encrypted and no password was given for it: set {} or give \
             --password-file FILE or --key-file FILE (or name the vault on a terminal to be \
             asked)",
            password::PASSWORD_ENV
        ))));
    }
    match encrypted_vault_key(storage, vault) {
        Ok(k) => Ok(Ok(k)),
        Err(e) if e.kind() == Kind::Invalid => Ok(Err(e)),
        Err(e) => Err(e),
    }
}

/// Remember for this process that vault `vault` in `storage` opens with
/// `master` (a mount that asked for the password before it started), or
/// stays locked for `why` (a prompt left empty or answered wrongly): no
/// later access asks again.
pub fn remember(
    storage: &dyn Storage,
    master: std::result::Result<&crate::crypto::MasterKey, &Error>,
) {
    let entry = match master {
        Ok(m) => Ok(Key::from_master(m)),
        Err(e) => Err((e.kind(), e.to_string())),
    };
    UNLOCKED
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(storage.describe(), entry);
}

/// Give a new encrypted vault in `storage` its master key, held by slot 0:
/// a key-file slot when `--key-file` is given, else opened by the password
/// from `--password-file`, `CBRFS_PASSWORD` or the terminal (asked twice).
/// Call before the vault's settings are written.
pub fn create_encrypted(storage: &dyn Storage, vault: &str) -> Result<Key> {
    let given = given_secret(vault, true)?;
    create_encrypted_with(storage, vault, given.secret(), KdfParams::for_new_slot()?)
}

/// [`create_encrypted`] with the secret and parameters given (tests, and
/// callers that read the password themselves). The key is remembered for
/// this process, so the vault opens without asking again.
pub fn create_encrypted_with(
    storage: &dyn Storage,
    vault: &str,
    secret: slot::Secret<'_>,
    params: KdfParams,
) -> Result<Key> {
    let master = slot::create_vault_key(&Slots(storage), vault, secret, params)?;
    let key = Key::from_master(&master);
    UNLOCKED
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(storage.describe(), Ok(key.clone()));
    Ok(key)
}

/// The master key of encrypted vault `vault`, unlocked afresh with the
/// key file or password given (for `key add` and `key remove`, which need
/// the master key itself, not the keys derived from it).
pub fn unlock_master(storage: &dyn Storage, vault: &str) -> Result<crate::crypto::MasterKey> {
    let given = given_secret(vault, false)?;
    unlock_slots(storage, vault, given.secret()).map(|(_, m)| m)
}

/// Forget the key unlocked for `storage` (tests of unlocking, and a
/// mount's retry of a locked vault).
pub fn forget(storage: &dyn Storage) {
    if let Some(c) = UNLOCKED.lock().as_mut() {
        c.remove(&storage.describe());
    }
}

/// The key of vault `vault` if it is encrypted, else `None` (a version-1
/// vault's records are not sealed, and reading its key is not needed).
pub fn sealing_key(storage: &dyn Storage, vault: &str) -> Result<Option<Key>> {
    if settings_say_encrypted(storage)? {
        vault_key(storage, vault).map(Some)
    } else {
        Ok(None)
    }
}

/// Magic of a backup record file, clear (version 1) or sealed (version 2).
pub const RECORD_MAGIC: &[u8; 8] = b"CBRBKUP1";

/// Version of a sealed backup record (the record's magic is v1's).
pub const RECORD_VERSION_SEALED: u32 = 2;

/// A backup record of an encrypted vault: `CBRBKUP1`, version 2 (u32 LE),
/// the sealed length (u32 LE), then one sealed object (kind 4, bound to the
/// backup's name) whose plaintext is the version-1 record file. A v1
/// reader stops at the version.
pub fn seal_record(key: &Key, backup: &str, plain: &[u8]) -> Result<Vec<u8>> {
    let Some(k) = key.seal_key() else {
        return Ok(plain.to_vec());
    };
    let sealed = k.seal(crate::crypto::Object::Record(backup), plain)?;
    let sealed_len = u32::try_from(sealed.len()).map_err(|_| {
        Error::invalid(format!(
            "backup {backup}: the record is {} bytes, more than a record may hold",
            sealed.len()
        ))
    })?;
    let mut out = Vec::with_capacity(16 + sealed.len());
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&RECORD_VERSION_SEALED.to_le_bytes());
    out.extend_from_slice(&sealed_len.to_le_bytes());
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The version-1 record inside a sealed record of backup `backup`, checked
/// (length, tag bound to the name). A clear record in an encrypted vault is
/// refused: it was not written by the vault.
pub fn open_record(key: Option<&Key>, backup: &str, data: &[u8]) -> Result<Vec<u8>> {
    let version = (data.len() >= 16 && &data[..8] == RECORD_MAGIC)
        .then(|| u32::from_le_bytes([data[8], data[9], data[10], data[11]]));
    let seal = key.and_then(Key::seal_key);
    match (seal, version) {
        (None, Some(RECORD_VERSION_SEALED)) => Err(Error::corrupt(
            "an encrypted (version 2) backup record in a vault that is not encrypted",
        )),
        (None, _) => Ok(data.to_vec()),
        (Some(_), Some(v)) if v != RECORD_VERSION_SEALED => Err(Error::corrupt(format!(
            "backup record of version {v} in an encrypted vault (its records are version 2)"
        ))),
        (Some(_), None) => Err(Error::corrupt(
            "backup record has a bad magic or is too short",
        )),
        (Some(k), Some(_)) => {
            let len = u32::from_le_bytes([data[12], data[13], data[14], data[15]]) as usize;
            if data.len() - 16 != len {
                return Err(Error::corrupt(format!(
                    "backup record of {} bytes says its sealed part has {len}",
                    data.len()
                )));
            }
            k.open(crate::crypto::Object::Record(backup), &data[16..])
        }
    }
}

/// A sign in bucket `remote` that the vault kept there is encrypted, as
/// words for a message: a key slot (`keys/<n>.slot`), or a sealed index
/// (version 2 in its clear header). Settings that say "not encrypted" beside
/// either were replaced: someone with write access to the bucket swapped in
/// a clear vault's `vault.json` (and a clear `key`) so that a new host
/// would attach the vault as clear and add plaintext to it.
pub fn encryption_sign(remote: &dyn Storage) -> Result<Option<String>> {
    if let Some(slot) = remote
        .list(crate::crypto::slot::PREFIX)?
        .into_iter()
        .find(|o| o.name.ends_with(".slot"))
    {
        return Ok(Some(format!(
            "the bucket holds key slot {} (only encrypted vaults have key slots)",
            crate::quote::quote(&slot.name)
        )));
    }
    let Some(idx) = remote
        .list("index/")?
        .into_iter()
        .find(|o| o.name.ends_with(".idx") && o.size >= 12)
    else {
        return Ok(None);
    };
    // The clear header: magic (8 bytes), version (u32 LE).
    let head = remote.get_range(&idx.name, 0, 12)?;
    if head.len() == 12
        && head[..8] == super::INDEX_MAGIC[..]
        && u32::from_le_bytes([head[8], head[9], head[10], head[11]]) == super::INDEX_VERSION_SEALED
    {
        return Ok(Some(format!(
            "index {} is sealed (version {}: only encrypted vaults have sealed indexes)",
            crate::quote::quote(&idx.name),
            super::INDEX_VERSION_SEALED
        )));
    }
    Ok(None)
}
