//! The catalog: the store root, vaults and their resources. Small JSON
//! records (their types in `records.rs`), each rewritten atomically under
//! the store's catalog lock.
//!
//! ```text
//! STORE/
//!   cbrfs-store.json          marker: {"format": 1}
//!   catalog.lock              flock: serialises catalog changes
//!   vaults/<vault>/
//!     vault.json              the vault's settings and resources
//!     backup.lock             flock: one backup (writer) at a time
//!     backups/<backup>.bk     backup records (see model.rs)
//!     key, packs/, index/     the vault's store (see store/)
//! ```

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, Flock};
use crate::model::{self, BackupRecord, ResourceKind};
use crate::rules;
use crate::store::lease;
use crate::store::{LocalDir, RemoteConfig, Repo, Storage};
use std::fs;
use std::path::{Path, PathBuf};

mod backups;
mod definitions;
mod records;
mod remote;
mod sealed;

pub use records::*;

pub use crate::clock::{now_ns, now_rfc3339, ns_to_rfc3339};

/// A store: a directory holding the catalog and every vault.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    /// The remote vaults opened by this process, with the registration
    /// each was opened with: one client (and one set of request counters)
    /// per vault and process.
    remotes: std::sync::Arc<parking_lot::Mutex<RemoteMap>>,
    /// Per remote vault, whether this process holds its writer lease:
    /// the vault's storage refuses writes once a held lease is lost or
    /// could not be renewed in time (store/lease.rs).
    fences: std::sync::Arc<parking_lot::Mutex<FenceMap>>,
    /// Where this process's tasks start counting requests
    /// ([`Store::task_requests_mark`]).
    task_marks: std::sync::Arc<parking_lot::Mutex<TaskMarks>>,
}

/// Which remote vaults a task of this process has counted from their open,
/// and whether the process serves many operations (a mount daemon), whose
/// tasks each count from their own start.
#[derive(Debug, Default)]
struct TaskMarks {
    serving: bool,
    claimed: std::collections::HashSet<String>,
}

/// The writer-lease fence of each remote vault, by name.
type FenceMap = std::collections::HashMap<String, std::sync::Arc<lease::Fence>>;

/// Opened remote vaults by name.
type RemoteMap = std::collections::HashMap<String, (RemoteConfig, std::sync::Arc<dyn Storage>)>;

impl Store {
    /// Open the existing store at `root`. A missing store is an error
    /// naming the path, never created: a mistyped `--store` or a read-only
    /// command must not leave a new store behind (issue #16). Only
    /// [`Store::init`] creates one.
    pub fn open(root: &Path) -> Result<Store> {
        // symlink_metadata: a store path that is a dangling link is "no
        // store" as well, and nothing here follows it to create a target.
        let marker = root.join("cbrfs-store.json");
        match fs::symlink_metadata(&marker) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::invalid(format!(
                    "no cbrfs store at {} (create one with `cbrfs init` or `cbrfs vault create`)",
                    root.display()
                )));
            }
            // Permission denied and the like: say that, not "no store".
            Err(e) => return Err(Error::io(format!("read {}", marker.display()), e)),
        }
        Self::init(root)
    }

    /// Open the store at `root`, creating it (and the directory) when it
    /// does not exist yet: for `cbrfs init` and the commands that create
    /// something (`vault create`). An existing non-empty directory that is
    /// not a store is refused.
    pub fn init(root: &Path) -> Result<Store> {
        let marker = root.join("cbrfs-store.json");
        if !marker.exists() {
            if root.exists() {
                let non_empty = fs::read_dir(root)
                    .ctx(|| format!("read store directory {}", root.display()))?
                    .next()
                    .is_some();
                if non_empty {
                    return Err(Error::invalid(format!(
                        "{} is not a cbrfs store (no cbrfs-store.json) and is not empty: refusing to use it",
                        root.display()
                    )));
                }
            }
            fsutil::create_dir_all(root)?;
            fsutil::create_dir_all(&root.join("vaults"))?;
            fsutil::write_atomic(
                &marker,
                format!("{{\"format\": {CATALOG_FORMAT}}}\n").as_bytes(),
            )?;
        } else {
            let text =
                fsutil::read_store_text(&marker).ctx(|| format!("read {}", marker.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::corrupt(format!("{}: {e}", marker.display())))?;
            let f = v.get("format").and_then(|f| f.as_u64());
            if f != Some(CATALOG_FORMAT as u64) {
                return Err(Error::corrupt(format!(
                    "{}: unsupported store format {:?} (this cbrfs reads {CATALOG_FORMAT})",
                    marker.display(),
                    f
                )));
            }
        }
        let root = fs::canonicalize(root).ctx(|| format!("resolve {}", root.display()))?;
        let store = Store {
            root,
            remotes: Default::default(),
            fences: Default::default(),
            task_marks: Default::default(),
        };
        store.finish_deletions();
        Ok(store)
    }

    /// Finish the vault deletions a killed `vault delete` left: it renames
    /// the vault to `vaults/.deleting-*` before removing its files, and a
    /// kill between the two would keep the space forever (issue #12,
    /// finding 12). Runs on every open; costs one listing of `vaults/`.
    /// Best effort: a failure is logged, the command goes on.
    fn finish_deletions(&self) {
        let dir = self.root.join("vaults");
        let Ok(rd) = fs::read_dir(&dir) else {
            return;
        };
        let trash: Vec<PathBuf> = rd
            .flatten()
            .filter(|e| e.file_name().as_encoded_bytes().starts_with(b".deleting-"))
            .map(|e| e.path())
            .collect();
        if trash.is_empty() {
            return;
        }
        // Under the catalog lock, so that a `vault delete` still removing
        // its own trash is not raced; if it is busy, a later command does it.
        let lock = match Flock::try_lock(&self.root.join("catalog.lock"), true) {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                log::warn!("finish an interrupted vault deletion: {e}");
                return;
            }
        };
        for t in trash {
            // remove_dir_all never follows symlinks (std >= 1.58): a link
            // named `.deleting-*` is removed itself, not what it names.
            match fs::remove_dir_all(&t) {
                Ok(()) => log::info!(
                    "finished an interrupted vault deletion: removed {}",
                    t.display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                    let _ = fs::remove_file(&t);
                }
                Err(e) => log::warn!(
                    "finish an interrupted vault deletion: remove {}: {e}",
                    t.display()
                ),
            }
        }
        let _ = fsutil::sync_dir(&dir);
        drop(lock);
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Directory of vault `name`.
    pub fn vault_dir(&self, name: &str) -> PathBuf {
        self.root.join("vaults").join(name)
    }
    /// Take the catalog lock (serialises changes to vault.json files).
    pub fn lock(&self) -> Result<Flock> {
        Flock::lock(&self.root.join("catalog.lock"), true)
    }

    /// Every vault, sorted by name. A vault whose record cannot be read is
    /// reported as an error naming it.
    pub fn vaults(&self) -> Result<Vec<VaultConfig>> {
        let (good, damaged) = self.vaults_and_damage()?;
        match damaged.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(good),
        }
    }

    /// Every readable vault, and an error for each vault whose record is
    /// damaged: one bad `vault.json` must not hide the others.
    pub fn vaults_and_damage(&self) -> Result<(Vec<VaultConfig>, Vec<Error>)> {
        let mut good = Vec::new();
        let mut damaged = Vec::new();
        for name in self.vault_names()? {
            // Listings never ask for a password: an encrypted vault whose
            // key is not at hand is listed locked (`VaultConfig::locked`).
            match self.vault_settings(&name) {
                Ok(v) => good.push(v),
                Err(e) => damaged.push(e),
            }
        }
        Ok((good, damaged))
    }

    /// Names of the vault directories, sorted.
    pub fn vault_names(&self) -> Result<Vec<String>> {
        let dir = self.root.join("vaults");
        let mut names = Vec::new();
        for ent in fs::read_dir(&dir).ctx(|| format!("list {}", dir.display()))? {
            let ent = ent.ctx(|| format!("list {}", dir.display()))?;
            let name = ent.file_name().to_string_lossy().to_string();
            if !name.starts_with('.') && ent.path().join("vault.json").exists() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The vault named `name`, whole: an encrypted vault is unlocked (with
    /// `--password-file`, `CBRFS_PASSWORD` or a prompt) to open its sealed
    /// settings, and a vault that cannot be unlocked is an error naming it.
    pub fn vault(&self, name: &str) -> Result<VaultConfig> {
        let cfg = self.vault_clear(name)?;
        if cfg.sealed.is_none() {
            return Ok(cfg);
        }
        let storage = self.storage_of(name, cfg.storage.as_ref())?;
        let key = crate::store::keyring::encrypted_vault_key(&*storage, name)?;
        sealed::open(cfg, &key, &self.vault_label(name))
    }

    /// The vault named `name` for a listing or an existence check: as
    /// [`Store::vault`], but an encrypted vault whose key is not at hand
    /// (no password given, a wrong one, its storage unreachable) is
    /// returned with its clear settings only and `locked` saying why,
    /// without asking for a password.
    pub fn vault_settings(&self, name: &str) -> Result<VaultConfig> {
        let mut cfg = self.vault_clear(name)?;
        if cfg.sealed.is_none() {
            return Ok(cfg);
        }
        let at_hand = self
            .storage_of(name, cfg.storage.as_ref())
            .and_then(|s| crate::store::keyring::key_at_hand(&*s, name));
        match at_hand {
            Ok(Ok(key)) => sealed::open(cfg, &key, &self.vault_label(name)),
            Ok(Err(why)) | Err(why) => {
                cfg.locked = Some(why.to_string());
                Ok(cfg)
            }
        }
    }

    /// The local `vault.json` of vault `name`, as messages name it.
    fn vault_label(&self, name: &str) -> String {
        self.vault_dir(name)
            .join("vault.json")
            .display()
            .to_string()
    }

    /// The vault named `name` as its `vault.json` says, sealed settings
    /// not opened.
    fn vault_clear(&self, name: &str) -> Result<VaultConfig> {
        rules::check_name("vault name", name)?;
        let dir = self.vault_dir(name);
        match fsutil::ensure_real_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(format!("vault {name}: {}", dir.display()), e))
            }
            _ => {}
        }
        // The local copy, also for a remote vault (its registration): no
        // request, and no credentials needed to list vaults.
        let text = LocalDir::new(self.vault_dir(name)).get("vault.json")?;
        let label = self.vault_dir(name).join("vault.json");
        decode_record(text, &label, "vault", name, "BackupService.6105")
    }

    /// Write a vault's settings atomically. Caller holds the catalog lock.
    /// An encrypted vault's description, tags and resources are sealed
    /// with its key (catalog/sealed.rs); a vault read locked keeps its
    /// sealed settings as they were, and only its clear ones (a policy)
    /// may change.
    pub fn save_vault(&self, cfg: &VaultConfig) -> Result<()> {
        let storage = self.storage_of(&cfg.name, cfg.storage.as_ref())?;
        let stored = match &cfg.locked {
            Some(why) => {
                if !cfg.description.is_empty() || !cfg.tags.is_empty() || !cfg.resources.is_empty()
                {
                    // Never reached by the commands (they unlock before
                    // they change sealed settings); refused, not dropped.
                    return Err(Error::invalid(format!(
                        "vault {}: its sealed settings cannot change while it is locked: {why}",
                        cfg.name
                    )));
                }
                cfg.clone()
            }
            None if cfg.encrypted => sealed::seal(
                cfg,
                &crate::store::keyring::encrypted_vault_key(&*storage, &cfg.name)?,
            )?,
            None => cfg.clone(),
        };
        let json = serde_json::to_vec_pretty(&stored)
            .map_err(|e| Error::failed(format!("encode vault {}: {e}", cfg.name)))?;
        storage.put("vault.json", &json)
    }

    /// Create a vault: its directory, key and settings. The settings file is
    /// written last, so a crash leaves no half-made vault visible.
    pub fn create_vault(&self, cfg: &VaultConfig) -> Result<()> {
        let _lock = self.lock()?;
        let dir = self.vault_dir(&cfg.name);
        if dir.join("vault.json").exists() {
            return Err(
                Error::conflict(format!("vault {:?} already exists", cfg.name))
                    .code("BackupService.6106"),
            );
        }
        if dir.exists() {
            // Left by a crash during an earlier create: nothing in it is visible.
            fs::remove_dir_all(&dir).ctx(|| format!("remove leftover {}", dir.display()))?;
        }
        fsutil::create_dir_all(&dir.join("backups"))?;
        match &cfg.storage {
            None if cfg.encrypted => Repo::create_encrypted(&dir, &cfg.name)?,
            None => Repo::create(&dir)?,
            Some(r) => {
                // One bucket prefix holds one vault: never two vaults'
                // keys and records mixed.
                if r.open_remote()?.get("vault.json")?.is_some() {
                    return Err(Error::conflict(format!(
                        "{} already holds a vault: register it here with `cbrfs vault attach {}`",
                        r.url(),
                        r.url()
                    ))
                    .code("BackupService.6106"));
                }
                let storage = self.storage_of(&cfg.name, Some(r))?;
                if cfg.encrypted {
                    // The key slots go to the bucket with the rest: a host
                    // that attaches the vault unlocks it with the password.
                    crate::store::keyring::create_encrypted(&*storage, &cfg.name)?;
                } else {
                    Repo::create_in(&*storage)?;
                }
            }
        }
        self.save_vault(cfg)?;
        // The vault's own entry in vaults/ must be durable too.
        fsutil::sync_dir(&self.root.join("vaults"))
    }

    /// Delete a vault and everything in it: first rename it away (atomic, so
    /// it disappears whole), then remove the files.
    pub fn delete_vault(&self, name: &str) -> Result<()> {
        let _lock = self.lock()?;
        // Deleting needs no password: it reads no sealed object.
        self.vault_clear(name)?;
        let dir = self.vault_dir(name);
        // The local lock only: this removes this host's registration, not
        // the bucket, so another host's writer is no obstacle, and an
        // unreachable bucket must not keep it.
        let _busy = self.try_local_backup_lock(name)?;
        let trash = self
            .root
            .join("vaults")
            .join(format!(".deleting-{name}-{}", fsutil::random_suffix(6)));
        fs::rename(&dir, &trash).ctx(|| format!("delete vault {name}"))?;
        fsutil::sync_dir(&self.root.join("vaults"))?;
        fs::remove_dir_all(&trash).ctx(|| format!("remove {}", trash.display()))
    }

    /// Bytes vault `name`'s store takes (packs and indexes), without its
    /// key: an encrypted vault is not unlocked for this.
    pub fn used_bytes(&self, name: &str) -> Result<u64> {
        Repo::used_bytes_in(&*self.vault_storage(name)?)
    }

    /// Open the vault's store for reading.
    pub fn repo(&self, name: &str) -> Result<Repo> {
        Repo::open_in(self.vault_storage(name)?, name)
    }

    /// The vault holding a resource of `kind` whose path (or server name)
    /// is `path`, if any.
    pub fn vault_of_path(
        &self,
        kind: ResourceKind,
        path: &str,
    ) -> Result<Option<(String, String)>> {
        // A vault whose record is damaged cannot be asked; it must not
        // stop resources going into the others (check reports it).
        let (vaults, damaged) = self.vaults_and_damage()?;
        for e in damaged {
            log::warn!("{e}");
        }
        for v in vaults {
            if let Some(why) = &v.locked {
                // Its resources are sealed: the rule "one vault per
                // resource" cannot be checked against it.
                log::warn!(
                    "vault {} is locked, its resources were not compared: {why}",
                    v.name
                );
            }
            if let Some(r) = v
                .resources
                .iter()
                .find(|r| r.kind == kind && r.path == path)
            {
                return Ok(Some((v.name.clone(), r.name.clone())));
            }
        }
        Ok(None)
    }
}

/// A catalog record: JSON with a format and the name it is filed under.
trait Record: serde::de::DeserializeOwned {
    fn format(&self) -> u32;
    fn name(&self) -> &str;
    /// The formats this record may have.
    fn format_ok(&self) -> bool {
        self.format() == CATALOG_FORMAT
    }
}

macro_rules! record {
    ($($t:ty),*) => {$(
        impl Record for $t {
            fn format(&self) -> u32 {
                self.format
            }
            fn name(&self) -> &str {
                &self.name
            }
        }
    )*};
}
record!(ServerConfig, PolicyConfig);

impl Record for VaultConfig {
    fn format(&self) -> u32 {
        self.format
    }
    fn name(&self) -> &str {
        &self.name
    }
    // Format 2 or 4 exactly when encrypted (4: with LZ4), 1 or 3 when
    // not: neither a clear vault claiming an encrypted format nor an
    // encrypted one claiming a clear format is read.
    fn format_ok(&self) -> bool {
        if self.encrypted {
            matches!(
                self.format,
                VAULT_FORMAT_ENCRYPTED | VAULT_FORMAT_ENCRYPTED_LZ4
            )
        } else {
            matches!(self.format, CATALOG_FORMAT | VAULT_FORMAT_LZ4)
        }
    }
}

/// The object name of backup `backup`'s record in its vault.
fn record_name(backup: &str) -> String {
    format!("backups/{backup}.bk")
}

/// Read the `what` record `name` from `path`: missing is "does not exist"
/// with CBR's `code`; undecodable, another format or another name is
/// damage naming the file.
fn read_record<T: Record>(path: &Path, what: &str, name: &str, code: &'static str) -> Result<T> {
    let bytes = match fsutil::read_store_file(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    decode_record(bytes, path, what, name, code)
}

/// Decode the `what` record `name` read from `path` (`None`: it is
/// missing, "does not exist" with CBR's `code`).
fn decode_record<T: Record>(
    bytes: Option<Vec<u8>>,
    path: &Path,
    what: &str,
    name: &str,
    code: &'static str,
) -> Result<T> {
    let Some(bytes) = bytes else {
        return Err(Error::not_found(format!("{what} {name:?} does not exist")).code(code));
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::corrupt(format!("{what} {name}: {} is damaged: {e}", path.display()))
    })?;
    let r: T = serde_json::from_str(&text).map_err(|e| {
        Error::corrupt(format!("{what} {name}: {} is damaged: {e}", path.display()))
    })?;
    if !r.format_ok() || r.name() != name {
        return Err(Error::corrupt(format!(
            "{what} {name}: {} has format {} and name {:?}",
            path.display(),
            r.format(),
            r.name()
        )));
    }
    Ok(r)
}

/// Names of the files in `dir` ending in `suffix`, without it, sorted;
/// hidden (temporary) files are skipped and a missing `dir` is empty.
fn names_in(dir: &Path, suffix: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    // A symlink in place of `backups/` (or `policies/`, `servers/`) would
    // list and read another directory's records.
    match fsutil::ensure_real_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(format!("list {}", dir.display()), e))
        }
        _ => {}
    }
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
    };
    for ent in rd {
        let ent = ent.ctx(|| format!("list {}", dir.display()))?;
        let n = ent.file_name().to_string_lossy().to_string();
        if let Some(b) = n.strip_suffix(suffix) {
            if !b.starts_with('.') {
                out.push(b.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The default store: `$CBRFS_STORE`, else `/var/lib/cbrfs` for root, else
/// `$XDG_DATA_HOME/cbrfs` (or `~/.local/share/cbrfs`).
pub fn default_store_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CBRFS_STORE") {
        return PathBuf::from(p);
    }
    if crate::sys::euid() == 0 {
        return PathBuf::from("/var/lib/cbrfs");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("cbrfs");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/share/cbrfs")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vault.json and servers/*.json keep their strings.
    #[test]
    fn compression_and_member_kind_keep_their_names() {
        for c in [Compression::Zstd, Compression::None] {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{c}\""));
            assert_eq!(Compression::parse(c.as_str()).unwrap(), c);
        }
        let e = Compression::parse("lz4").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("\"lz4\" is invalid"), "{e}");
        for k in [MemberKind::Directory, MemberKind::Disk] {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
        assert!(serde_json::from_str::<MemberKind>("\"server\"").is_err());
    }
    use crate::testkit;
    use proptest::prelude::*;

    /// `open` never creates a store: a missing one is an error naming the
    /// path (exit 2), and nothing is left behind; `init` creates it, and
    /// `open` then finds it (issue #16).
    #[test]
    fn open_does_not_create_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("typo");
        let e = Store::open(&root).unwrap_err();
        assert!(e.to_string().contains("no cbrfs store at"), "{e}");
        assert_eq!(e.exit_code(), 2);
        assert!(!root.exists());
        Store::init(&root).unwrap();
        assert!(root.join("cbrfs-store.json").exists());
        Store::open(&root).unwrap();
    }

    fn sample_vault() -> VaultConfig {
        VaultConfig {
            format: CATALOG_FORMAT,
            name: "v".into(),
            vault_type: VaultType::Server,
            capacity_gb: 100,
            description: "a vault".into(),
            tags: vec![("env".into(), "prod".into())],
            compression: Compression::Zstd,
            created: "2026-11-24T04:25:16Z".into(),
            resources: vec![Resource {
                name: "web".into(),
                kind: ResourceKind::Server,
                path: "s".into(),
                excludes: vec!["vdb".into()],
                size: 12345,
                added: "2026-11-24T04:25:16Z".into(),
                one_file_system: false,
                exclude_caches: false,
                exclude_if_present: Vec::new(),
            }],
            policy: Some("p".into()),
            policy_applied_ns: 1_700_000_000_000_000_000,
            auto_expand: true,
            threshold: 90,
            storage: None,
            encrypted: false,
            sealed: None,
            locked: None,
        }
    }

    fn sample_policy() -> PolicyConfig {
        PolicyConfig {
            format: CATALOG_FORMAT,
            name: "p".into(),
            schedules: vec![
                "FREQ=DAILY;INTERVAL=2;BYHOUR=3,15;BYMINUTE=30".into(),
                "FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=22;BYMINUTE=0".into(),
            ],
            retention: crate::policy::retention::RetentionArgs {
                keep_last: Some(7),
                keep_weekly: Some(4),
                keep_monthly: Some(6),
                timezone: Some("UTC+08:00".into()),
                ..Default::default()
            },
            full_every: 30,
            enabled: true,
            created: "2026-11-24T04:25:16Z".into(),
            created_ns: 1_700_000_000_000_000_000,
        }
    }

    fn sample_server() -> ServerConfig {
        ServerConfig {
            format: CATALOG_FORMAT,
            name: "s".into(),
            members: vec![
                Member {
                    name: "etc".into(),
                    kind: MemberKind::Directory,
                    path: "/etc".into(),
                },
                Member {
                    name: "vdb".into(),
                    kind: MemberKind::Disk,
                    path: "/dev/vdb".into(),
                },
            ],
            pre_hook: Some("true".into()),
            post_hook: None,
            hook_timeout_s: 600,
            created: "2026-11-24T04:25:16Z".into(),
        }
    }

    /// A record read back must be one that writes and reads back to
    /// itself, filed under its name, in format 1 (JSON has no checksum: a
    /// damaged value that is still valid JSON of the right shape is read).
    fn round_trips<T>(r: &T, name: &str, format: u32, got_name: &str) -> Result<(), TestCaseError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        prop_assert_eq!(format, CATALOG_FORMAT);
        prop_assert_eq!(got_name, name);
        let again: T = serde_json::from_slice(&serde_json::to_vec_pretty(r).unwrap()).unwrap();
        prop_assert_eq!(&again, r);
        Ok(())
    }

    /// vault.json, policies/*.json, servers/*.json and cbrfs-store.json,
    /// damaged or arbitrary, read through the store: never a panic or a
    /// large allocation; what is read round-trips, and a policy that reads
    /// is validated and its schedule and retention run.
    #[test]
    fn fuzz_catalog_files() {
        let config = testkit::config(384);
        let secs = testkit::deadline(config.cases, 40);
        testkit::within(secs, move || {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::init(&dir.path().join("s")).unwrap();
            fsutil::create_dir_all(&store.vault_dir("v")).unwrap();
            store.save_vault(&sample_vault()).unwrap();
            store.save_policy(&sample_policy()).unwrap();
            store.save_server(&sample_server()).unwrap();
            let files = [
                store.vault_dir("v").join("vault.json"),
                store.policy_path("p"),
                store.server_path("s"),
                store.root().join("cbrfs-store.json"),
            ];
            let good: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
            let input = (
                0..files.len(),
                prop_oneof![
                    3 => testkit::damages().prop_map(Ok),
                    1 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Err),
                ],
            );
            let mut runner = proptest::test_runner::TestRunner::new(config);
            runner
                .run(&input, |(which, how)| {
                    let bytes = match how {
                        Ok(d) => testkit::apply(&good[which], &d),
                        Err(raw) => raw,
                    };
                    fs::write(&files[which], &bytes).unwrap();
                    let (r, largest) = testkit::largest_alloc(|| read_all(&store, dir.path()));
                    for (f, g) in files.iter().zip(&good) {
                        fs::write(f, g).unwrap();
                    }
                    prop_assert!(
                        largest <= 16 * bytes.len() + (64 << 10),
                        "{} bytes allocated {} at once",
                        bytes.len(),
                        largest
                    );
                    r
                })
                .unwrap();
        });
    }

    fn read_all(store: &Store, root: &Path) -> Result<(), TestCaseError> {
        if let Ok(v) = store.vault("v") {
            round_trips(&v, "v", v.format, &v.name)?;
            let _ = (v.capacity_bytes(), v.compress(), v.resource("web").is_ok());
        }
        let _ = store.vaults_and_damage().unwrap();
        let _ = store
            .vault_of_path(ResourceKind::Directory, "/etc")
            .unwrap();
        if let Ok(s) = store.server("s") {
            round_trips(&s, "s", s.format, &s.name)?;
        }
        let _ = store.servers();
        if let Ok(p) = store.policy("p") {
            round_trips(&p, "p", p.format, &p.name)?;
            if let Ok((sched, retention)) = crate::engine::policy::validate(&p) {
                let t = jiff::Timestamp::from_second(1_800_000_000).unwrap();
                let _ = sched.next_after(t);
                let week = jiff::SignedDuration::from_hours(24 * 7);
                prop_assert!(sched.points_between(t, t + week).len() <= 24 * 7);
                let candidates: Vec<crate::policy::retention::Candidate> = (0..20)
                    .map(|i| crate::policy::retention::Candidate {
                        name: format!("b{i}"),
                        created: t - jiff::SignedDuration::from_hours(i * 13),
                        automatic: i % 3 != 0,
                    })
                    .collect();
                let sel = retention.select(&candidates, t, false);
                prop_assert_eq!(sel.keep.len() + sel.delete.len(), candidates.len());
            }
        }
        let _ = store.policies();
        let _ = Store::init(&root.join("s"));
        Ok(())
    }
}
