//! `latest` in a vault's directory: a symlink to its newest backup (see
//! [`Vfs::latest`]).

use super::{Attr, EntryOps, VResult, Vfs};
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
