//! Files of a backup opened for reading: reads, holes (SEEK_DATA,
//! SEEK_HOLE) and the prefetch of small files into the page cache.

use super::{BackupCtx, Entry, VResult, Vfs};
use crate::engine::reader::{FileReader, READ_AHEAD};
use crate::model::NodeKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An open file.
pub struct OpenFile {
    pub(super) ctx: Arc<BackupCtx>,
    pub(super) reader: FileReader,
    /// Where the last read ended: a read starting near it is sequential.
    next: AtomicU64,
    /// How far chunks were queued for reading ahead.
    ahead: AtomicU64,
}

/// A read starting within this distance of the last one's end counts as
/// sequential: the kernel sends a stream's requests on several threads,
/// so they may arrive a little out of order.
const SEQUENTIAL_SLACK: u64 = 4 << 20;

/// Files up to this size are read whole when opened, for the kernel's page
/// cache (see [`Vfs::prefetch`]): the kernel's first readahead of such a
/// file would ask for all of it anyway.
pub const PREFETCH_MAX: u64 = 128 << 10;

impl Vfs {
    /// Open a file for reading; any write access is EROFS.
    pub fn open(&self, ino: u64, flags: i32) -> VResult<u64> {
        let acc = flags & libc::O_ACCMODE;
        if acc != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(libc::EROFS);
        }
        let Entry::Node(t) = self.entry(ino)?.0 else {
            return Err(libc::EISDIR);
        };
        let node = t.node(self)?;
        if node.kind != NodeKind::File {
            return Err(libc::EACCES);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let reader = FileReader::new(&node);
        self.files.lock().insert(
            fh,
            Arc::new(OpenFile {
                ctx: t.ctx,
                reader,
                next: AtomicU64::new(0),
                ahead: AtomicU64::new(0),
            }),
        );
        Ok(fh)
    }

    /// The whole content of small file `ino`, for the adapter to put into
    /// the kernel's page cache (with FUSE_NOTIFY_STORE) before it answers
    /// the file's open, so that reading it costs no request (and no
    /// attribute refresh: the kernel marks atime stale after every read
    /// request it sends). `None` for an empty or large file, one handed
    /// over before, or one that cannot be read: reads then go through
    /// [`Vfs::read`], which reports damage as EIO.
    pub fn prefetch(&self, ino: u64) -> Option<Vec<u8>> {
        // The node is found (its tree perhaps read) without the table's
        // lock held; `stored` is set under it, once.
        let t = match self.table.read().by_ino.get(&ino)? {
            i if i.stored => return None,
            i => match &i.entry {
                Entry::Node(t) => t.clone(),
                _ => return None,
            },
        };
        let node = t.node(self).ok()?;
        if node.kind != NodeKind::File || node.size == 0 || node.size > PREFETCH_MAX {
            return None;
        }
        {
            let mut tb = self.table.write();
            let i = tb.by_ino.get_mut(&ino)?;
            if i.stored {
                return None;
            }
            i.stored = true;
        }
        let ctx = t.ctx;
        FileReader::new(&node)
            .read_whole(&ctx.repo)
            .inspect_err(|e| log::debug!("backup {}: prefetch: {e}", ctx.record.name))
            .ok()
    }

    /// The kernel refused the content of `ino` handed over by
    /// [`Vfs::prefetch`]: a later open may try again.
    pub fn unstore(&self, ino: u64) {
        if let Some(i) = self.table.write().by_ino.get_mut(&ino) {
            i.stored = false;
        }
    }

    /// Close a file.
    pub fn release(&self, fh: u64) {
        self.files.lock().remove(&fh);
    }

    pub(super) fn file(&self, fh: u64) -> VResult<Arc<OpenFile>> {
        self.files.lock().get(&fh).cloned().ok_or(libc::EBADF)
    }

    /// Read `size` bytes at `offset`. Damaged data is EIO, never wrong bytes.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> VResult<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_into(fh, offset, size, &mut buf)?;
        Ok(buf)
    }

    /// [`Vfs::read`] into `buf` (cleared first; the mount's threads keep
    /// one each, so a request's bytes go to pages already mapped). A
    /// sequential reader's chunks, this request's and those of the next
    /// [`READ_AHEAD`] bytes, are read and verified on helper threads
    /// meanwhile (issue 17: a large read must not cost one decompression,
    /// decryption and verification after another on the thread of one
    /// request); random reads read only what they ask.
    pub fn read_into(&self, fh: u64, offset: u64, size: u32, buf: &mut Vec<u8>) -> VResult<()> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let f = self.file(fh)?;
        let end = offset.saturating_add(size as u64);
        let last = f.next.swap(end, Ordering::Relaxed);
        if offset.abs_diff(last) <= SEQUENTIAL_SLACK {
            let until = end.saturating_add(READ_AHEAD as u64);
            // Queued already up to `ahead`, if that is within this window.
            let ahead = f.ahead.load(Ordering::Relaxed);
            let from = if (offset..=until).contains(&ahead) {
                ahead
            } else {
                offset
            };
            if from < until {
                f.ahead.store(until, Ordering::Relaxed);
                // A chunk list that cannot be read fails the read below.
                let _ = f.reader.read_ahead(&f.ctx.repo, &self.cache, from, until);
            }
        }
        f.reader
            .read_into(&f.ctx.repo, &self.cache, offset, size as usize, buf)
            .map_err(|e| {
                log::error!("backup {}: read: {e}", f.ctx.record.name);
                libc::EIO
            })
    }

    /// SEEK_DATA / SEEK_HOLE.
    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> VResult<i64> {
        let f = self.file(fh)?;
        let size = f.reader.size();
        if offset < 0 {
            return Err(libc::EINVAL);
        }
        let off = offset as u64;
        if off >= size {
            return Err(libc::ENXIO);
        }
        let next = f.reader.next_data(&f.ctx.repo, off).map_err(|e| {
            // As a failed read: the log names the damaged object
            // (a chunk list that does not open), errno cannot.
            log::error!("backup {}: seek: {e}", f.ctx.record.name);
            libc::EIO
        })?;
        match whence {
            libc::SEEK_DATA => match next {
                Some((s, _)) => Ok(s as i64),
                None => Err(libc::ENXIO),
            },
            libc::SEEK_HOLE => match next {
                Some((s, e)) if s <= off => Ok(e as i64),
                _ => Ok(off as i64),
            },
            _ => Err(libc::EINVAL),
        }
    }
}
