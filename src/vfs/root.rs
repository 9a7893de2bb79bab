//! The mount's root: one directory per vault. Its attributes, like a
//! vault directory's, come from what it lists (see [`Vfs::live_attr`]),
//! so the kernel drops its cached listing when the CLI makes or deletes a
//! vault.

use super::vault::VaultDir;
use super::{Attr, Child, Entry, EntryOps, LinkKey, Listing, VResult, Vfs};

/// The root directory.
#[derive(Clone)]
pub(super) struct Root;

impl EntryOps for Root {
    fn attr(&self, vfs: &Vfs) -> VResult<Attr> {
        vfs.live_attr(None, &vfs.live_names(None)?)
    }

    fn lookup(&self, vfs: &Vfs, name: &[u8]) -> VResult<(Entry, Option<LinkKey>)> {
        let name = std::str::from_utf8(name).unwrap_or("");
        if !vfs.vault_exists(name) {
            return Err(libc::ENOENT);
        }
        Ok((Entry::Vault(VaultDir(name.to_string())), None))
    }

    fn list(&self, vfs: &Vfs, own: bool) -> VResult<Listing> {
        let names = vfs.live_names(None)?;
        let own = own.then(|| vfs.live_attr(None, &names)).transpose()?;
        let children = names
            .into_iter()
            .map(|v| Child {
                name: v.as_bytes().to_vec(),
                entry: Entry::Vault(VaultDir(v)),
                link: None,
            })
            .collect();
        Ok(Listing::made(own, children))
    }
}
