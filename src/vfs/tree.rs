//! The entries of a backup's trees: directories, files, symlinks, devices,
//! fifos and sockets as they were, with their own attributes and xattrs.
//! Hard links share one inode (keyed by backup, resource and link group).
//! Reading a file's bytes is `file`'s.
//!
//! An inode of such an entry keeps where its node is (which tree, which
//! position), not the node: the node is found again in the tree cache
//! when asked for. A node with its name, xattrs and chunk list is
//! hundreds of bytes, and the kernel may hold millions of inodes (issue
//! 17: about 1 KB per inode when each kept its node).

use super::table::{self, tree_key};
use super::{Attr, BackupCtx, Child, Dir, Entry, EntryOps, Listing, VResult, Vfs};
use crate::model::{Node, NodeKind};
use crate::store::BlobId;
use std::sync::Arc;

/// Node `idx` of tree `dir` of resource `res` of backup `ctx`, or (no
/// `dir`) the root of resource `res` (`idx` is `res`), which is in the
/// backup's record rather than in a tree. The tree's id is shared by its
/// entries' inodes (one per decoded tree: [`Vfs::tree`]), so a node costs
/// 24 bytes.
#[derive(Clone)]
pub(super) struct TreeNode {
    pub(super) ctx: Arc<BackupCtx>,
    dir: Option<Arc<BlobId>>,
    idx: u32,
    res: u32,
    /// Found by its tree and position, whichever backup's directory it is
    /// looked up in: a node of a tree, neither a directory nor a hard
    /// link ([`table::Key::Tree`]). (A flag beside the u32s: the entry stays
    /// 32 bytes.)
    shared: bool,
}

/// A node of a backup, and the decoded tree that holds it (kept alive by
/// this reference only while it is used).
pub(super) struct NodeRef {
    dir: Dir,
    idx: usize,
}

impl std::ops::Deref for NodeRef {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.dir[self.idx]
    }
}

impl TreeNode {
    /// The root node of resource `res` of backup `ctx`.
    pub(super) fn root(ctx: Arc<BackupCtx>, res: u32) -> TreeNode {
        TreeNode {
            ctx,
            dir: None,
            idx: res,
            res,
            shared: false,
        }
    }

    /// How the inode table finds it: by its tree and position (a file,
    /// symlink or special file that is not a hard link: one inode in
    /// every backup that shares its tree), or by its position in its
    /// parent (a directory, a hard link, a resource's root).
    pub(super) fn key(&self) -> table::Key<'static> {
        self.sibling(self.idx)
    }

    /// The key of a node at position `at` of this node's tree that is
    /// keyed as this one is.
    pub(super) fn sibling(&self, at: u32) -> table::Key<'static> {
        match &self.dir {
            Some(id) if self.shared => table::Key::Tree(tree_key(id), at),
            _ => table::Key::At(at),
        }
    }

    /// Its position in its parent's listing: in its tree, or, for a
    /// resource's root, among the backup's resources.
    pub(super) fn position(&self) -> u32 {
        self.idx
    }

    /// The node, from the tree cache (its tree read again if it was
    /// evicted). A position outside the tree cannot come from a listing
    /// of it: EIO, never a panic.
    pub(super) fn node(&self, vfs: &Vfs) -> VResult<NodeRef> {
        let (dir, idx) = match &self.dir {
            None => (self.ctx.roots.clone(), self.idx as usize),
            Some(id) => (vfs.tree(&self.ctx, id)?.1, self.idx as usize),
        };
        if idx >= dir.len() {
            return Err(libc::EIO);
        }
        Ok(NodeRef { dir, idx })
    }

    /// Entry `i` of this directory's tree `dir` (id `id`), made.
    fn child(&self, id: &Arc<BlobId>, dir: &Dir, i: usize) -> Child {
        let n = &dir[i];
        let link = (n.link_group != 0).then_some((self.ctx.id, self.res, n.link_group));
        Child {
            name: n.name.clone(),
            entry: Entry::Node(TreeNode {
                ctx: self.ctx.clone(),
                dir: Some(id.clone()),
                idx: i as u32,
                res: self.res,
                shared: n.kind != NodeKind::Dir && link.is_none(),
            }),
            link,
            attr: Some(node_attr(0, n)),
        }
    }

    /// The key of this node's tree in the inode table ([`tree_key`]):
    /// None for a resource's root, which is in no tree.
    pub(super) fn tree_key(&self) -> Option<u64> {
        self.dir.as_ref().map(tree_key)
    }

    /// The key of this directory's own tree ([`tree_key`]), if it is a
    /// directory (its tree read, from the cache if there).
    pub(super) fn subtree_key(&self, vfs: &Vfs) -> Option<u64> {
        self.tree(vfs).ok().map(|(id, _)| tree_key(&id))
    }

    /// This directory's tree: its id and entries.
    fn tree(&self, vfs: &Vfs) -> VResult<(Arc<BlobId>, Dir)> {
        let me = self.node(vfs)?;
        if me.kind != NodeKind::Dir {
            return Err(libc::ENOTDIR);
        }
        vfs.tree(&self.ctx, &me.subtree.ok_or(libc::EIO)?)
    }

    /// The children of this directory's tree `dir` (id `id`) from
    /// position `skip`, each made as it is handed over: a directory may
    /// hold millions, and a listing in many calls must cost the entries
    /// listed.
    pub(super) fn children(
        self,
        id: Arc<BlobId>,
        dir: Dir,
        skip: usize,
    ) -> impl Iterator<Item = (usize, Child)> {
        // Positions are u32 in an inode; a tree of 2^32 entries (hundreds
        // of GB decoded) cannot be held anyway: the rest is not shown.
        let end = dir.len().min(u32::MAX as usize);
        (skip..end).map(move |i| (i, self.child(&id, &dir, i)))
    }
}

impl EntryOps for TreeNode {
    fn attr(&self, vfs: &Vfs) -> VResult<Attr> {
        Ok(node_attr(0, &*self.node(vfs)?))
    }

    fn lookup(&self, vfs: &Vfs, name: &[u8]) -> VResult<Child> {
        let (id, dir) = self.tree(vfs)?;
        let i = dir
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .filter(|i| *i < u32::MAX as usize)
            .ok_or(libc::ENOENT)?;
        Ok(self.child(&id, &dir, i))
    }

    fn list(&self, vfs: &Vfs, _own: bool) -> VResult<Listing> {
        let (id, dir) = self.tree(vfs)?;
        Ok(Listing::Tree(self.clone(), id, dir))
    }

    fn readlink(&self, vfs: &Vfs) -> VResult<Vec<u8>> {
        let n = self.node(vfs)?;
        if n.kind == NodeKind::Symlink {
            Ok(n.target.clone())
        } else {
            Err(libc::EINVAL)
        }
    }

    fn xattrs(&self, vfs: &Vfs) -> VResult<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .node(vfs)?
            .xattrs
            .iter()
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect())
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
