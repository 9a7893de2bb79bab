//! The entries of a backup's trees: directories, files, symlinks, devices,
//! fifos and sockets as they were, with their own attributes and xattrs.
//! Hard links share one inode (keyed by backup, resource and link group).
//! Reading a file's bytes is `file`'s.

use super::{
    find_in, Attr, BackupCtx, Child, Dir, Entry, EntryOps, LinkKey, Listing, VResult, Vfs,
};
use crate::model::{Node, NodeKind};
use std::sync::Arc;

/// Node `node` of resource `res` of backup `ctx`.
#[derive(Clone)]
pub(super) struct TreeNode {
    pub(super) ctx: Arc<BackupCtx>,
    pub(super) res: u32,
    pub(super) node: Arc<Node>,
}

impl TreeNode {
    /// The entry of `child`, an entry of this directory's tree, and its
    /// hard-link key.
    fn child(&self, child: Arc<Node>) -> (Entry, Option<LinkKey>) {
        let link = (child.link_group != 0).then_some((self.ctx.id, self.res, child.link_group));
        let entry = Entry::Node(TreeNode {
            ctx: self.ctx.clone(),
            res: self.res,
            node: child,
        });
        (entry, link)
    }

    /// This directory's tree.
    fn tree(&self, vfs: &Vfs) -> VResult<Dir> {
        if self.node.kind != NodeKind::Dir {
            return Err(libc::ENOTDIR);
        }
        vfs.tree(&self.ctx, &self.node.subtree.ok_or(libc::EIO)?)
    }

    /// The children of this directory's tree `dir` from position `skip`,
    /// each made as it is handed over: a directory may hold millions, and
    /// a listing in many calls must cost the entries listed.
    pub(super) fn children(self, dir: Dir, skip: usize) -> impl Iterator<Item = (usize, Child)> {
        (skip..dir.len()).map(move |i| {
            let n = dir[i].clone();
            let name = n.name.clone();
            let (entry, link) = self.child(n);
            (i, Child { name, entry, link })
        })
    }
}

impl EntryOps for TreeNode {
    fn attr(&self, _vfs: &Vfs) -> VResult<Attr> {
        Ok(node_attr(0, &self.node))
    }

    fn lookup(&self, vfs: &Vfs, name: &[u8]) -> VResult<(Entry, Option<LinkKey>)> {
        let child = find_in(&self.tree(vfs)?, name).ok_or(libc::ENOENT)?;
        Ok(self.child(child))
    }

    fn list(&self, vfs: &Vfs, _own: bool) -> VResult<Listing> {
        Ok(Listing::Tree(self.clone(), self.tree(vfs)?))
    }

    fn readlink(&self, _vfs: &Vfs) -> VResult<Vec<u8>> {
        if self.node.kind == NodeKind::Symlink {
            Ok(self.node.target.clone())
        } else {
            Err(libc::EINVAL)
        }
    }

    fn xattrs(&self, _vfs: &Vfs) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.node
            .xattrs
            .iter()
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect()
    }
}

/// Attributes of a node of a backup.
pub fn node_attr(ino: u64, n: &Node) -> Attr {
    Attr {
        ino,
        kind: n.kind,
        perm: n.mode & 0o7777,
        nlink: n.nlink.max(1),
        uid: n.uid,
        gid: n.gid,
        size: n.size,
        blocks: n.blocks,
        mtime_ns: n.mtime_ns,
        ctime_ns: n.ctime_ns,
        rdev: n.rdev,
        immutable: true,
    }
}
