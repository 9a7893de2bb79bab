//! Where a vault's objects are kept, and who may write them: the storage
//! of a vault (this store's directory, or a bucket behind this store's
//! cache), its registration, `vault attach` (a remote vault registered from
//! the bucket alone), and the writer lock, which for a vault in a bucket is
//! also its writer lease there (store/lease.rs).

use super::{Store, VaultConfig};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, Flock};
use crate::rules;
use crate::store::lease::{self, WriterLock};
use crate::store::{LocalDir, RemoteConfig, Repo, Storage};
use serde::Deserialize;
use std::fs;

impl Store {
    /// Take vault `name`'s writer lock, or fail with "a backup task is in
    /// progress" (BackupService.6125) if another writer holds it: this
    /// store's lock file, and for a vault kept in a bucket its writer lease
    /// there too (store/lease.rs), which keeps out writers on other hosts
    /// and is renewed until the lock is dropped.
    pub fn try_backup_lock(&self, name: &str) -> Result<WriterLock> {
        let flock = self.try_local_backup_lock(name)?;
        let lease = match self.registration(name)? {
            None => None,
            Some(_) => Some(lease::Lease::acquire(
                self.vault_storage(name)?,
                name,
                lease::Timing::from_env()?,
                self.fence(name),
            )?),
        };
        Ok(WriterLock::new(flock, lease))
    }

    /// [`Store::try_backup_lock`] for a backup: a live lease of another
    /// writer is refused here as there, but the lease's settle time and
    /// read-back go on on a thread while the backup starts (its packs may
    /// go up meanwhile; its indexes, head and record wait for the lease,
    /// and a lease refused then fails them with the busy error:
    /// store/lease.rs, `Lease::begin`).
    pub fn try_backup_lock_early(&self, name: &str) -> Result<WriterLock> {
        let flock = self.try_local_backup_lock(name)?;
        if self.registration(name)?.is_none() {
            return Ok(WriterLock::new(flock, None));
        }
        let confirming = lease::Lease::begin(
            self.vault_storage(name)?,
            name,
            lease::Timing::from_env()?,
            self.fence(name),
        )?;
        Ok(WriterLock::confirming(flock, confirming))
    }

    /// This store's writer lock of vault `name` alone (`backup.lock`).
    pub(super) fn try_local_backup_lock(&self, name: &str) -> Result<Flock> {
        let path = self.vault_dir(name).join("backup.lock");
        Flock::try_lock(&path, true)?.ok_or_else(|| {
            Error::new(
                crate::error::Kind::Busy,
                format!("vault {name}: a backup task is in progress"),
            )
            .code("BackupService.6125")
        })
    }

    /// The writer-lease fence of remote vault `name` in this process.
    fn fence(&self, name: &str) -> std::sync::Arc<lease::Fence> {
        self.fences
            .lock()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Where vault `name`'s objects are kept: its packs, indexes, backup
    /// records, settings and key, reached only through this interface. A
    /// vault registered with a remote (`storage` in its `vault.json`) is
    /// its bucket behind this store's cache.
    pub fn vault_storage(&self, name: &str) -> Result<std::sync::Arc<dyn Storage>> {
        let reg = self.registration(name)?;
        self.storage_of(name, reg.as_ref())
    }

    /// The remote vault `name` is registered with, if any. A `vault.json`
    /// that cannot be decoded counts as local: reading it through the
    /// local directory then reports the damage.
    pub fn registration(&self, name: &str) -> Result<Option<RemoteConfig>> {
        #[derive(Deserialize)]
        struct Registration {
            #[serde(default)]
            storage: Option<RemoteConfig>,
        }
        let Some(text) = LocalDir::new(self.vault_dir(name)).get("vault.json")? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice::<Registration>(&text)
            .ok()
            .and_then(|r| r.storage))
    }

    /// The storage of vault `name` given its registration.
    pub(super) fn storage_of(
        &self,
        name: &str,
        reg: Option<&RemoteConfig>,
    ) -> Result<std::sync::Arc<dyn Storage>> {
        let Some(r) = reg else {
            return Ok(std::sync::Arc::new(LocalDir::new(self.vault_dir(name))));
        };
        let mut open = self.remotes.lock();
        if let Some((was, s)) = open.get(name) {
            if was == r {
                return Ok(s.clone());
            }
        }
        let s: std::sync::Arc<dyn Storage> = std::sync::Arc::new(lease::Fenced::new(
            r.open(&self.vault_dir(name))?,
            self.fence(name),
        ));
        // The mount tells a vault's identity by its local `key` file: keep
        // a copy whenever the cache lost it (one GET).
        let dir = self.vault_dir(name);
        if dir.join("vault.json").exists() && fs::symlink_metadata(dir.join("key")).is_err() {
            s.get("key")?;
        }
        open.insert(name.to_string(), (r.clone(), s.clone()));
        Ok(s)
    }

    /// Register the vault kept at remote `r` in this store, as `name` (by
    /// default the name it has there), and build its cache from the bucket
    /// alone: the key, every index, every backup record and the metadata
    /// packs. The disaster-recovery path: nothing of the old host is
    /// needed. The vault's policy is not carried over (policies are this
    /// store's); its resources are, as records of what was protected.
    pub fn attach_vault(&self, r: &RemoteConfig, name: Option<&str>) -> Result<VaultConfig> {
        let _lock = self.lock()?;
        let remote = r.open_remote()?;
        let Some(text) = remote.get("vault.json")? else {
            return Err(Error::not_found(format!(
                "{}: no cbrfs vault there (it has no vault.json)",
                r.url()
            )));
        };
        let mut cfg: VaultConfig = serde_json::from_slice(&text)
            .map_err(|e| Error::corrupt(format!("{}: vault.json cannot be read: {e}", r.url())))?;
        if !cfg.encrypted {
            if let Some(sign) = crate::store::keyring::encryption_sign(&*remote)? {
                return Err(Error::corrupt(format!(
                    "{}: vault.json says the vault is not encrypted, but {sign}: its settings were replaced (a downgrade, or damage); not attached",
                    r.url()
                )));
            }
        }
        let origin = cfg.name.clone();
        let name = name.unwrap_or(&origin).to_string();
        rules::check_name("vault name", &name)?;
        let dir = self.vault_dir(&name);
        if dir.join("vault.json").exists() {
            return Err(Error::conflict(format!(
                "vault {name:?} already exists in this store: attach under another name with --name"
            ))
            .code("BackupService.6106"));
        }
        if dir.exists() {
            // Left by a crash during an earlier create or attach.
            fs::remove_dir_all(&dir).ctx(|| format!("remove leftover {}", dir.display()))?;
        }
        let mut reg = r.clone();
        reg.aliases = cfg
            .storage
            .as_ref()
            .map(|s| s.aliases.clone())
            .unwrap_or_default();
        if origin != name && !reg.aliases.contains(&origin) {
            reg.aliases.push(origin.clone());
        }
        reg.aliases.retain(|a| *a != name);
        cfg.name = name.clone();
        cfg.storage = Some(reg.clone());
        cfg.policy = None;
        fsutil::create_dir_all(&dir.join("backups"))?;
        let storage = self.storage_of(&name, Some(&reg))?;
        let repo = Repo::open_in(storage.clone(), &name)?;
        repo.warm_metadata()?;
        // Listing the records fetches them into the cache.
        storage.list("backups/")?;
        // The registration last: until it is written no vault is visible.
        let json = serde_json::to_vec_pretty(&cfg)
            .map_err(|e| Error::failed(format!("encode vault {name}: {e}")))?;
        LocalDir::new(&dir).put("vault.json", &json)?;
        fsutil::sync_dir(&self.root.join("vaults"))?;
        Ok(cfg)
    }
}
