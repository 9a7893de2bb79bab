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
//! directory (what a copy of the directory reads next): [`Vfs::prefetch_after`].

use super::table::Key;
use super::{Entry, VResult, Vfs, PREFETCH_MAX};
use crate::model::NodeKind;
use std::collections::VecDeque;

/// Inodes whose read state is kept: a reader at a time per worker thread,
/// and some more for readers taking turns; each costs one open handle.
pub const IMPLICIT_MAX: usize = 64;

/// A READ of a small file hands over at most this many of the files after
/// it in its directory, of at most [`AFTER_BYTES`] together, among the
/// next [`AFTER_SCAN`] entries: a few round trips' worth, so that a
/// reader of one file costs the mount little more.
pub const AFTER_FILES: usize = 16;
pub const AFTER_BYTES: u64 = 1 << 20;
const AFTER_SCAN: u32 = 64;

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
    /// large file or one outside a backup's trees.
    pub fn prefetch_after(&self, ino: u64) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let (parent, pos, t) = {
            let tb = self.table.read();
            match tb.by_ino.get(&ino) {
                Some(i) => match &i.entry {
                    Entry::Node(t) => (i.parent, t.position(), t.clone()),
                    _ => return out,
                },
                None => return out,
            }
        };
        match t.node(self) {
            Ok(n) if n.kind == NodeKind::File && n.size <= PREFETCH_MAX => {}
            _ => return out,
        }
        let mut bytes = 0u64;
        for p in pos.saturating_add(1)..pos.saturating_add(1 + AFTER_SCAN) {
            if out.len() >= AFTER_FILES || bytes >= AFTER_BYTES {
                break;
            }
            // Past the listing's end, or entries the kernel was not given.
            // A file is found by its tree (whichever backup it was listed
            // in), a directory or hard link by its parent.
            let sib = {
                let tb = self.table.read();
                tb.find(parent, t.sibling(p))
                    .or_else(|| tb.find(parent, Key::At(p)))
            };
            let Some(sib) = sib else {
                break;
            };
            if let Some(data) = self.prefetch(sib) {
                bytes += data.len() as u64;
                out.push((sib, data));
            }
        }
        out
    }
}
