//! The mount's root: one directory per vault. Its attributes, like a
//! vault directory's, come from what it lists (see [`Vfs::live_attr`]),
//! so the kernel drops its cached listing when the CLI makes or deletes a
//! vault.

use super::vault::VaultDir;
use super::{cbrfs_xattrs, err_errno, Attr, Child, Entry, EntryOps, Listing, VResult, Vfs};
use crate::rules;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The root directory.
#[derive(Clone)]
pub(super) struct Root;

impl EntryOps for Root {
    fn attr(&self, vfs: &Vfs) -> VResult<Attr> {
        vfs.live_attr(None, &vfs.live_names(None)?)
    }

    fn lookup(&self, vfs: &Vfs, name: &[u8]) -> VResult<Child> {
        let name = std::str::from_utf8(name).unwrap_or("");
        if !vfs.vault_exists(name) {
            return Err(libc::ENOENT);
        }
        let entry = Entry::Vault(VaultDir(name.to_string()));
        Ok(Child::of(name.as_bytes().to_vec(), entry))
    }

    fn list(&self, vfs: &Vfs, own: bool) -> VResult<Listing> {
        let names = vfs.live_names(None)?;
        let own = own.then(|| vfs.live_attr(None, &names)).transpose()?;
        let children = names
            .into_iter()
            .map(|v| Child::of(v.as_bytes().to_vec(), Entry::Vault(VaultDir(v))))
            .collect();
        Ok(Listing::made(own, children))
    }

    /// What the mount holds: `user.cbrfs.inodes` (inodes the kernel
    /// holds) and `user.cbrfs.tree_cache_bytes` (decoded trees kept), for
    /// measuring memory per inode (scripts/bench-million.sh).
    fn xattrs(&self, vfs: &Vfs) -> VResult<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(cbrfs_xattrs(vec![
            ("inodes".into(), vfs.inode_count().to_string()),
            (
                "tree_cache_bytes".into(),
                vfs.tree_cache_bytes().to_string(),
            ),
        ]))
    }
}

/// The root's and the vaults' listings, whose attributes follow them.
impl Vfs {
    pub(super) fn vault_exists(&self, name: &str) -> bool {
        rules::check_name("vault name", name).is_ok()
            && self.store.vault_dir(name).join("vault.json").exists()
    }

    /// The names the root lists (vaults) or a vault lists (its backups,
    /// those a mkdir started included), sorted.
    pub(super) fn live_names(&self, vault: Option<&str>) -> VResult<Vec<String>> {
        match vault {
            None => self.store.vault_names().map_err(|e| err_errno(&e)),
            Some(v) => {
                let mut names = self.store.backup_names(v).map_err(|e| err_errno(&e))?;
                for (rv, rb) in self.running.lock().keys() {
                    if rv == v && !names.contains(rb) {
                        names.push(rb.clone());
                    }
                }
                names.sort();
                Ok(names)
            }
        }
    }

    /// The mtime of the root (`vault` None) or of a vault's directory: it
    /// changes whenever the listing does. The kernel caches every
    /// directory's listing (the mount opts out of OPENDIR) and, with
    /// FUSE_AUTO_INVAL_DATA, drops a listing once the directory's mtime
    /// differs from the one it was cached under; these directories change
    /// when the CLI makes or deletes a vault or a backup. The newest
    /// change of the store files behind the listing, with its last six
    /// digits of nanoseconds replaced by a hash of the names listed: two
    /// listings made within one tick of the file system's clock still
    /// differ.
    fn live_mtime(&self, vault: Option<&str>, names: &[String]) -> i64 {
        let ns = |p: PathBuf| {
            std::fs::metadata(p).map_or(0, |m| m.mtime() * 1_000_000_000 + m.mtime_nsec())
        };
        let base = match vault {
            None => names
                .iter()
                .map(|v| ns(self.store.vault_dir(v).join("vault.json")))
                .chain([ns(self.store.root().join("vaults")), self.mounted_ns])
                .max()
                .unwrap_or(0),
            Some(v) => {
                let d = self.store.vault_dir(v);
                ns(d.join("vault.json")).max(ns(d.join("backups")))
            }
        };
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for n in names {
            h.update(n.as_bytes());
            h.update(&[0]);
        }
        base - base.rem_euclid(1_000_000) + (h.digest() % 1_000_000) as i64
    }

    /// Attributes of the root (`vault` None) or of a vault's directory,
    /// whose listing is `names` (from [`Vfs::live_names`]).
    pub(super) fn live_attr(&self, vault: Option<&str>, names: &[String]) -> VResult<Attr> {
        if vault.is_some_and(|v| !self.vault_exists(v)) {
            return Err(libc::ENOENT);
        }
        Ok(self.dir_attr(0o755, self.live_mtime(vault, names)))
    }
}
