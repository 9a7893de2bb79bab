//! Backup records of a vault (`backups/<backup>.bk`), read and written
//! through the vault's storage (sealed in an encrypted vault).

use super::*;

impl Store {
    /// Requests and bytes this process has spent on vault `vault`'s
    /// bucket so far; None for a local vault (nothing billed).
    pub fn vault_requests(&self, vault: &str) -> Option<model::Requests> {
        self.vault_storage(vault).ok()?.requests()
    }

    /// Where a task on vault `vault` starts counting the requests it asks
    /// of the vault's bucket (None for a local vault: nothing billed). A
    /// command's first task of a vault counts from the vault's open in its
    /// process (zero: the storage's counters start there), so that what
    /// the command asked before the task was recorded is its own: the head
    /// and the `key` check of the open, the key slots fetched on a cold
    /// cache, a backup's writer lease. Later tasks of the process, and
    /// every task of a process serving many operations
    /// ([`Store::serve_many`]: a mount, which opened its vaults to browse
    /// them), count from their own start: the counters then.
    pub fn task_requests_mark(&self, vault: &str) -> Option<model::Requests> {
        if !matches!(self.registration(vault), Ok(Some(_))) {
            return None;
        }
        let first = {
            let mut m = self.task_marks.lock();
            !m.serving && m.claimed.insert(vault.to_string())
        };
        if first {
            return Some(model::Requests::default());
        }
        self.vault_requests(vault)
    }

    /// This process serves many operations (a mount daemon: browsing,
    /// `mkdir` backups, policy passes): each task counts its vault's
    /// requests from its own start ([`Store::task_requests_mark`]), not
    /// the browsing before it.
    pub fn serve_many(&self) {
        self.task_marks.lock().serving = true;
    }

    /// Path of backup `backup`'s record in vault `vault`.
    pub fn backup_path(&self, vault: &str, backup: &str) -> PathBuf {
        self.vault_dir(vault)
            .join("backups")
            .join(format!("{backup}.bk"))
    }

    /// Names of vault `vault`'s backups (from the file names only).
    pub fn backup_names(&self, vault: &str) -> Result<Vec<String>> {
        Ok(self
            .vault_storage(vault)?
            .list("backups/")?
            .into_iter()
            .filter_map(|o| {
                let b = o.name.strip_prefix("backups/")?.strip_suffix(".bk")?;
                (!b.contains('/')).then(|| b.to_string())
            })
            .collect())
    }

    /// Backup `backup` of vault `vault`.
    pub fn backup(&self, vault: &str, backup: &str) -> Result<BackupRecord> {
        self.backup_with_requests(vault, backup).map(|(r, _)| r)
    }

    /// Backup `backup` of vault `vault`, with the requests it made of its
    /// bucket when its record keeps them (a backup of a remote vault).
    pub fn backup_with_requests(
        &self,
        vault: &str,
        backup: &str,
    ) -> Result<(BackupRecord, Option<model::Requests>)> {
        rules::check_name("backup name", backup)?;
        let Some(data) = self.vault_storage(vault)?.get(&record_name(backup))? else {
            return Err(Error::not_found(format!(
                "backup {backup:?} does not exist in vault {vault}"
            ))
            .code("BackupService.6200"));
        };
        let storage = self.vault_storage(vault)?;
        let key = crate::store::keyring::sealing_key(&*storage, vault)?;
        let (rec, requests) = crate::store::keyring::open_record(key.as_ref(), backup, &data)
            .and_then(|plain| model::decode_record_with(&plain))
            .map_err(|e| e.context(format!("vault {vault}, backup {backup}")))?;
        // Commands name a backup by its file and show the record's own
        // names: a record copied or crafted under another name is damage.
        let alias = || -> Result<bool> {
            Ok(self
                .registration(vault)?
                .is_some_and(|r| r.aliases.contains(&rec.vault)))
        };
        if rec.name != backup || (rec.vault != vault && !alias()?) {
            return Err(Error::corrupt(format!(
                "vault {vault}, backup {backup}: the record says it is backup {:?} of vault {:?}",
                rec.name, rec.vault
            )));
        }
        Ok((rec, requests))
    }

    /// Every backup of a vault, oldest first. Damaged records are returned
    /// as errors beside the good ones so one bad record hides nothing else.
    pub fn backups(&self, vault: &str) -> Result<Vec<Result<BackupRecord>>> {
        // An encrypted vault is unlocked first: without its key no record
        // reads, and that is the user's error to fix (exit 2), not damage
        // of each record.
        crate::store::keyring::sealing_key(&*self.vault_storage(vault)?, vault)?;
        let mut out: Vec<Result<BackupRecord>> = self
            .backup_names(vault)?
            .iter()
            .map(|b| self.backup(vault, b))
            .collect();
        out.sort_by_key(|r| match r {
            Ok(b) => (b.started_ns, b.name.clone()),
            Err(_) => (i64::MAX, String::new()),
        });
        Ok(out)
    }

    /// Every readable backup of a vault, oldest first: what a backup
    /// builds on, what a policy counts and what retention chooses from. A
    /// damaged record is left out with a warning naming it (one bad record
    /// stops nothing; `check` reports it); backups that cannot be listed
    /// are an error, not an empty vault, which would make the next backup
    /// a full one and hide every backup from retention.
    pub fn readable_backups(&self, vault: &str) -> Result<Vec<BackupRecord>> {
        let mut out = Vec::new();
        for r in self.backups(vault)? {
            match r {
                Ok(b) => out.push(b),
                Err(e) => log::warn!("{e}"),
            }
        }
        Ok(out)
    }

    /// Write a backup record: the last step of a backup, atomic.
    pub fn save_backup(&self, rec: &BackupRecord) -> Result<()> {
        self.save_backup_with(rec, None)
    }

    /// [`Store::save_backup`], keeping the requests the backup made of its
    /// vault's bucket since `before` (the vault's counters when it
    /// started, None for a local vault): up to this record, whose own
    /// upload the task log counts.
    pub fn save_backup_with(
        &self,
        rec: &BackupRecord,
        before: Option<model::Requests>,
    ) -> Result<()> {
        let storage = self.vault_storage(&rec.vault)?;
        let requests = before.zip(storage.requests()).map(|(b, now)| now.since(&b));
        let plain = model::encode_record_with(rec, requests.as_ref())?;
        let bytes = match crate::store::keyring::sealing_key(&*storage, &rec.vault)? {
            Some(key) => crate::store::keyring::seal_record(&key, &rec.name, &plain)?,
            None => plain,
        };
        storage.put(&record_name(&rec.name), &bytes)
    }

    /// Remove a backup record (its data goes with prune). A damaged record
    /// may be deleted; a missing one is an error.
    pub fn delete_backup(&self, vault: &str, backup: &str) -> Result<()> {
        rules::check_name("backup name", backup)?;
        let storage = self.vault_storage(vault)?;
        let name = record_name(backup);
        // Deleting an absent object is no error to the storage; to the user
        // it is.
        if !storage.list("backups/")?.iter().any(|o| o.name == name) {
            return Err(Error::not_found(format!(
                "backup {backup:?} does not exist in vault {vault}"
            ))
            .code("BackupService.6200"));
        }
        storage.delete(&name)
    }
}
