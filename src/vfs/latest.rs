//! `latest` in a vault's directory: a symlink to its newest backup (see
//! [`Vfs::latest`]).

use super::{Attr, EntryOps, VResult, Vfs};
use crate::catalog;
use crate::model::NodeKind;

/// The `latest` link of vault `.0`.
#[derive(Clone)]
pub(super) struct Latest(pub(super) String);

impl EntryOps for Latest {
    fn attr(&self, vfs: &Vfs) -> VResult<Attr> {
        let target = vfs.latest(&self.0).ok_or(libc::ENOENT)?;
        let mut a = vfs.dir_attr(0o777, vfs.mounted_ns);
        a.kind = NodeKind::Symlink;
        a.nlink = 1;
        a.size = target.len() as u64;
        Ok(a)
    }

    fn readlink(&self, vfs: &Vfs) -> VResult<Vec<u8>> {
        vfs.latest(&self.0)
            .map(|n| n.into_bytes())
            .ok_or(libc::ENOENT)
    }
}

impl Vfs {
    /// The newest backup of the vault. One dated later than the real clock
    /// was made by a simulated pass (`policy run-due --now`): it is passed
    /// over while any backup is dated now or earlier, so a simulation never
    /// moves `latest` away from the real backups (issue #16).
    pub(super) fn latest(&self, vault: &str) -> Option<String> {
        let names = self.store.backup_names(vault).ok()?;
        let now = catalog::now_ns();
        let mut best: Option<((bool, i64), String)> = None;
        for n in names {
            if let Ok(c) = self.ctx(vault, &n) {
                let k = (
                    crate::engine::browse::latest_key(c.record.started_ns, now),
                    n,
                );
                if best.as_ref().is_none_or(|b| k > *b) {
                    best = Some(k);
                }
            }
        }
        best.map(|(_, n)| n)
    }
}
