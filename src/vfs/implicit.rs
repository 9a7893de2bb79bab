//! Files read without an OPEN. When the kernel opens files without asking
//! (FUSE_NO_OPEN_SUPPORT, issue 17: OPEN and RELEASE were two of the
//! round trips a `cp -a` paid per file), its reads carry file handle 0
//! and no RELEASE ever comes. The read path's per-reader state (where the
//! last read ended, how far chunks were queued ahead: vfs/file.rs) is then
//! kept here by inode, opened on the first read, for a few recent inodes
//! only, and dropped when the mount's reads stop: a reader that comes back
//! later starts a new stream, as after an lseek.
//!
//! Without OPEN the content of a small file can no longer be put into the
//! page cache when it is opened ([`Vfs::prefetch`]); each would cost a READ
//! and, since the kernel marks atime stale after every READ it sends, a
//! GETATTR at the next stat (and its cached ACL with it). So the first
//! READ of a small file hands over the small files that follow it in its
//! directory, and those of the directories among them (what a copy of
//! the directory reads next): [`Vfs::prefetch_after_each`].

use super::table::Key;
use super::{Entry, VResult, Vfs, PREFETCH_MAX};
use crate::model::NodeKind;
use std::collections::VecDeque;

/// Inodes whose read state is kept: a reader at a time per worker thread,
/// and some more for readers taking turns; each costs one open handle.
pub const IMPLICIT_MAX: usize = 64;

/// A READ of a small file hands over at most this many of the files after
/// it in its directory (and in the directories among them, one level
/// deep: see [`Vfs::prefetch_after_each`]), of at most [`AFTER_BYTES`]
/// together, among the next [`AFTER_SCAN`] entries of each: the decoding
/// happens after the READ is answered, and a reader of one file costs the
/// mount at most this much more. Session 12 (issue 17) raised them from
/// 16 files, 1 MiB and 64 entries, and added the descent: for `cp -a` of
/// the kernel tree (78,579 files, 4,763 directories with small files) a
/// simulation over the tree's listing (scripts of
/// docs/bench/session12-cpa.md) gives 7,580 READs of small files before,
/// 5,147 with the larger budget and 3,551 with the descent too; each READ
/// also costs a GETATTR, the kernel marking atime stale after it.
/// Counted on a cold mount (`cp -a` of `fs/`, after a `find`, 2 runs
/// each): READ 219-223 before, 115 after; all requests 7,158-7,163
/// before, 6,950 after. 64 files are all of a directory's small files
/// for 96 % of the tree's directories (16 were for 77 %).
pub const AFTER_FILES: usize = 64;
pub const AFTER_BYTES: u64 = 2 << 20;
const AFTER_SCAN: u32 = 128;

/// What one hand-over may still take.
struct Budget {
    files: usize,
    bytes: u64,
}

impl Budget {
    fn spent(&self) -> bool {
        self.files >= AFTER_FILES || self.bytes >= AFTER_BYTES
    }
}

/// The handles of files read without an OPEN, oldest first.
#[derive(Default)]
pub(super) struct Implicit {
    by_ino: VecDeque<(u64, u64)>,
}

impl Vfs {
    /// The handle that reads of inode `ino` without an OPEN use: opened on
    /// its first read (read-only, the checks of [`Vfs::open`]), kept for
    /// the [`IMPLICIT_MAX`] most recent inodes.
    pub fn implicit_handle(&self, ino: u64) -> VResult<u64> {
        {
            let mut m = self.implicit.lock();
            if let Some(i) = m.by_ino.iter().position(|&(n, _)| n == ino) {
                // Most recent last: the oldest goes first when full.
                let e = m.by_ino.remove(i).ok_or(libc::EBADF)?;
                m.by_ino.push_back(e);
                return Ok(e.1);
            }
        }
        // Opened without the lock held (it may read a tree); two threads
        // reading the same new inode keep the first handle.
        let fh = self.open(ino, libc::O_RDONLY)?;
        let (keep, evicted) = {
            let mut m = self.implicit.lock();
            if let Some(&(_, other)) = m.by_ino.iter().find(|&&(n, _)| n == ino) {
                (other, Some(fh))
            } else {
                m.by_ino.push_back((ino, fh));
                let old = if m.by_ino.len() > IMPLICIT_MAX {
                    m.by_ino.pop_front().map(|(_, h)| h)
                } else {
                    None
                };
                (fh, old)
            }
        };
        if let Some(h) = evicted {
            self.release(h);
        }
        Ok(keep)
    }

    /// Drop every handle opened by [`Vfs::implicit_handle`]: called by the
    /// reaper once the mount's reads have stopped, so that an idle mount
    /// holds no read state.
    pub(super) fn release_implicit(&self) {
        let handles = std::mem::take(&mut self.implicit.lock().by_ino);
        for (_, h) in handles {
            self.release(h);
        }
    }

    /// How many inodes have read state kept without an OPEN (tests).
    pub fn implicit_count(&self) -> usize {
        self.implicit.lock().by_ino.len()
    }

    /// The contents of the small files after small file `ino` in its
    /// directory, for the adapter to put into the page cache after it
    /// answered `ino`'s first READ (see the module's text): files the
    /// kernel holds an inode of (a readdirplus handed them), not handed
    /// over before, up to [`AFTER_FILES`] and [`AFTER_BYTES`]. Empty for a
    /// large file or one outside a backup's trees. All of them at once:
    /// the mount hands each over as it is read, [`Vfs::prefetch_after_each`].
    pub fn prefetch_after(&self, ino: u64) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        self.prefetch_after_each(ino, |i, data| out.push((i, data.to_vec())));
        out
    }

    /// [`Vfs::prefetch_after`], each file handed to `each(ino, content)`
    /// as soon as it is read, in listing order, before the next is read.
    /// The copy that caused it goes on meanwhile: it reads the next file
    /// a few round trips later (its xattrs, its ACL, a stat), and finds it
    /// in the page cache only if it was handed over by then, not after
    /// the whole batch was decoded. Collected first (before session 12),
    /// a `cp -a` of `fs/ext4` out of a cold mount sent a READ for the 2
    /// files after the first (each a READ, and a GETATTR after it: the
    /// kernel marks atime stale after every READ); measured alone on
    /// `fs/` the change is small (READ 219-223 before, 218 after, 2 runs
    /// each): most READs were of files no hand-over covered.
    pub fn prefetch_after_each(&self, ino: u64, mut each: impl FnMut(u64, &[u8])) {
        let (parent, pos, t) = {
            let tb = self.table.read();
            match tb.by_ino.get(&ino) {
                Some(i) => match &i.entry {
                    Entry::Node(t) => (i.parent, t.position(), t.clone()),
                    _ => return,
                },
                None => return,
            }
        };
        match t.node(self) {
            Ok(n) if n.kind == NodeKind::File && n.size <= PREFETCH_MAX => {}
            _ => return,
        }
        let mut budget = Budget { files: 0, bytes: 0 };
        let tree = t.tree_key();
        self.hand_over(
            parent,
            tree,
            pos.saturating_add(1),
            true,
            &mut budget,
            &mut each,
        );
    }

    /// Hand the small files of directory `parent` (whose tree has key
    /// `tree` in the inode table) from position `from` on to `each`,
    /// until the budget is spent, the scan ends, or an entry the kernel
    /// was not given. With `descend`, a directory met has its own first
    /// small files handed over there and then: a copy goes into it before
    /// it reads the files after it, and the first READ in each directory
    /// was a READ (and a GETATTR) per directory of the tree that no
    /// hand-over covered. One level only: its own directories are not
    /// entered. Every directory met is entered (not only the first, which
    /// the copy reads next): the simulation's 3,551 READs count that; the
    /// price is a look-up of each one's tree, up to [`AFTER_SCAN`] per
    /// hand-over, read and decoded if the tree cache lost it (a copy lists
    /// each of them soon anyway; a reader of one file does not).
    fn hand_over(
        &self,
        parent: u64,
        tree: Option<u64>,
        from: u32,
        descend: bool,
        budget: &mut Budget,
        each: &mut impl FnMut(u64, &[u8]),
    ) {
        for p in from..from.saturating_add(AFTER_SCAN) {
            if budget.spent() {
                break;
            }
            // Past the listing's end, or entries the kernel was not given.
            // A file is found by its tree (whichever backup it was listed
            // in), a directory or hard link by its parent.
            let sib = {
                let tb = self.table.read();
                tree.and_then(|k| tb.find(parent, Key::Tree(k, p)))
                    .or_else(|| tb.find(parent, Key::At(p)))
            };
            let Some(sib) = sib else {
                break;
            };
            if let Some(data) = self.prefetch(sib) {
                budget.bytes += data.len() as u64;
                budget.files += 1;
                each(sib, &data);
            } else if descend {
                if let Some(k) = self.subtree_key(sib) {
                    self.hand_over(sib, Some(k), 0, false, budget, each);
                }
            }
        }
    }

    /// The key of the tree of directory `ino` of a backup
    /// (`TreeNode::subtree_key`); None for anything else.
    fn subtree_key(&self, ino: u64) -> Option<u64> {
        let t = match &self.table.read().by_ino.get(&ino)?.entry {
            Entry::Node(t) => t.clone(),
            _ => return None,
        };
        t.subtree_key(self)
    }
}
