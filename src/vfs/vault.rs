//! A vault's directory: its backups (those a `mkdir` started included) and
//! `latest`; its `user.cbrfs.*` xattrs say its type, capacity and use.

use super::backup_dir::BackupDir;
use super::latest::Latest;
use super::{cbrfs_xattrs, Attr, Child, Entry, EntryOps, Listing, VResult, Vfs};
use crate::rules;
use std::time::Duration;

/// The directory of vault `.0`.
#[derive(Clone)]
pub(super) struct VaultDir(pub(super) String);

impl EntryOps for VaultDir {
    fn attr(&self, vfs: &Vfs) -> VResult<Attr> {
        let v = Some(self.0.as_str());
        vfs.live_attr(v, &vfs.live_names(v)?)
    }

    fn lookup(&self, vfs: &Vfs, name: &[u8]) -> VResult<Child> {
        let v = &self.0;
        if locked(vfs, v).is_some() {
            return Err(libc::ENOENT);
        }
        let sname = std::str::from_utf8(name).unwrap_or("");
        if name == b"latest" {
            vfs.latest(v).ok_or(libc::ENOENT)?;
            Ok(Child::of(name.to_vec(), Entry::Latest(Latest(v.clone()))))
        } else if vfs.backup_exists(v, sname) {
            let entry = Entry::Backup(BackupDir::new(v, sname));
            Ok(Child::of(name.to_vec(), entry))
        } else {
            Err(libc::ENOENT)
        }
    }

    fn list(&self, vfs: &Vfs, own: bool) -> VResult<Listing> {
        let v = &self.0;
        let names = vfs.live_names(Some(v))?;
        let own = own.then(|| vfs.live_attr(Some(v), &names)).transpose()?;
        // A vault whose key is not available lists nothing; its
        // user.cbrfs.status says why.
        if locked(vfs, v).is_some() {
            return Ok(Listing::made(own, Vec::new()));
        }
        let mut children: Vec<Child> = names
            .into_iter()
            .map(|b| Child::of(b.as_bytes().to_vec(), Entry::Backup(BackupDir::new(v, &b))))
            .collect();
        if vfs.latest(v).is_some() {
            children.push(Child::of(
                b"latest".to_vec(),
                Entry::Latest(Latest(v.clone())),
            ));
        }
        Ok(Listing::made(own, children))
    }

    fn xattrs(&self, vfs: &Vfs) -> VResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let v = &self.0;
        let mut out: Vec<(String, String)> = Vec::new();
        // Not unlocked for this: a locked vault still shows its clear
        // settings, and its status says why it is locked.
        if let Ok(cfg) = vfs.store.vault_settings(v) {
            let used = vfs.store.used_bytes(v).unwrap_or(0);
            out.push(("type".into(), cfg.vault_type.as_str().into()));
            out.push(("capacity".into(), format!("{}GB", cfg.capacity_gb)));
            out.push(("used".into(), used.to_string()));
            out.push(("description".into(), cfg.description.clone()));
            out.push((
                "tags".into(),
                cfg.tags
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ));
            out.push(("resources".into(), cfg.resources.len().to_string()));
            out.push((
                "encrypted".into(),
                if cfg.encrypted { "yes" } else { "no" }.into(),
            ));
            if let Some(why) = locked(vfs, v) {
                out.push(("status".into(), format!("locked: {why}")));
            }
        }
        Ok(cbrfs_xattrs(out))
    }
}

/// Why encrypted vault `v` is locked in this mount (its key could not be
/// unlocked: no password given, a wrong one), or `None` if it is open or
/// not encrypted. The unlock is tried once per process (store::keyring
/// remembers a failure), so a locked vault costs no prompt per access.
fn locked(vfs: &Vfs, v: &str) -> Option<String> {
    // A vault whose storage cannot be reached shows that error where it
    // is read, not as locked.
    let storage = vfs.store.vault_storage(v).ok()?;
    match crate::store::keyring::settings_say_encrypted(&*storage) {
        Ok(true) => crate::store::keyring::vault_key(&*storage, v)
            .err()
            .map(|e| e.to_string()),
        _ => None,
    }
}

/// A lookup of a backup not cached here lists a vault in a bucket at most
/// this often (a shell probing names must not cost a LIST each).
const RELIST_EVERY: Duration = Duration::from_secs(2);

impl Vfs {
    pub(super) fn backup_exists(&self, vault: &str, name: &str) -> bool {
        if rules::check_name("backup name", name).is_err() {
            return false;
        }
        if self.running(vault, name).is_some() || self.store.backup_path(vault, name).exists() {
            return true;
        }
        // A vault in a bucket: another host may have made the backup since
        // this one last listed it; a listing fetches new records.
        self.relist_remote(vault) && self.store.backup_path(vault, name).exists()
    }

    /// List the backups of `vault` if it is kept in a bucket and was not
    /// listed for a lookup in the last [`RELIST_EVERY`]; true if listed.
    fn relist_remote(&self, vault: &str) -> bool {
        if !matches!(self.store.registration(vault), Ok(Some(_))) {
            return false;
        }
        {
            let mut listed = self.listed.lock();
            let now = std::time::Instant::now();
            if listed
                .get(vault)
                .is_some_and(|t| now.duration_since(*t) < RELIST_EVERY)
            {
                return false;
            }
            listed.insert(vault.to_string(), now);
        }
        self.store.backup_names(vault).is_ok()
    }
}
