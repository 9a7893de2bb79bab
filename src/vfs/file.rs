//! Files of a backup opened for reading: reads, holes (SEEK_DATA,
//! SEEK_HOLE) and the prefetch of small files into the page cache.

use super::{BackupCtx, Entry, VResult, Vfs};
use crate::engine::reader::{FileReader, READ_AHEAD};
use crate::model::NodeKind;
use crate::store::Repo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An open file.
pub struct OpenFile {
    pub(super) ctx: Arc<BackupCtx>,
    /// Its backup's opened vault (opened for the first file read).
    repo: Arc<Repo>,
    pub(super) reader: FileReader,
    /// Where the last read ended: a read starting near it is sequential.
    next: AtomicU64,
    /// How far chunks were queued for reading ahead.
    ahead: AtomicU64,
    /// The read-ahead window of the current sequential stream, bytes: 0
    /// after a random read, then doubled by each sequential read up to
    /// [`READ_AHEAD`], as the kernel's own read-ahead ramps up.
    window: AtomicU64,
    /// How far this reader has read chunks to their end (set back by a
    /// read elsewhere): read-ahead skips the chunks behind it
    /// ([`crate::engine::reader::ChunkCache::prefetch_all`]).
    done_to: Arc<AtomicU64>,
}

/// A read starting within this distance of the last one's end, or within
/// two of its own lengths, counts as sequential: the kernel sends a
/// stream's requests (up to 1 MiB each) on several threads, so they may
/// arrive a little out of order. Small, so that random reads are seldom
/// taken for a stream (issue 17: a random 4 KiB read must not pay for
/// decoding its neighbours); it was 4 MiB, within which two random reads
/// of a file fell often enough on a small file, and always on one under
/// 4 MiB.
const SEQUENTIAL_SLACK: u64 = 256 << 10;

/// The read-ahead window of a stream's first sequential read: twice the
/// request, at least this much (a stream found by two adjacent 4 KiB
/// reads reads ahead a few chunks, not [`READ_AHEAD`] at once).
const WINDOW_MIN: u64 = 128 << 10;

/// The read path's memory goes back after this long without a read
/// ([`Vfs::release_idle_reads`]): long enough that a reader pausing
/// between files keeps what it read ahead, short enough that an idle
/// mount soon holds no more than before there was a pool (issue 13).
pub const READ_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

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
        let repo = self.ctx_repo(&t.ctx)?.1.clone();
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let reader = FileReader::new(&node);
        self.files.lock().insert(
            fh,
            Arc::new(OpenFile {
                ctx: t.ctx,
                repo,
                reader,
                next: AtomicU64::new(0),
                ahead: AtomicU64::new(0),
                window: AtomicU64::new(0),
                done_to: Arc::new(AtomicU64::new(0)),
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
        let repo = &self.ctx_repo(&ctx).ok()?.1;
        FileReader::new(&node)
            .read_whole(repo)
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
        let mut out = Err(libc::EIO);
        self.read_with(fh, offset, size, |r| out = r.map(<[u8]>::to_vec));
        out
    }

    /// [`Vfs::read`], its bytes (or errno) handed to `reply` instead of
    /// returned: a request within one chunk is answered straight from the
    /// cached chunk, with no copy of its own ([`FileReader::read_with`]).
    /// A sequential reader's chunks, this request's and those of the next
    /// [`READ_AHEAD`] bytes, are read and verified on helper threads
    /// meanwhile (issue 17: a large read must not cost one decompression,
    /// decryption and verification after another on the thread of one
    /// request); random reads read only what they ask.
    pub fn read_with(&self, fh: u64, offset: u64, size: u32, reply: impl FnOnce(VResult<&[u8]>)) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let f = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply(Err(e)),
        };
        let end = offset.saturating_add(size as u64);
        let last = f.next.swap(end, Ordering::Relaxed);
        let slack = SEQUENTIAL_SLACK.max(2 * size as u64);
        let sequential = offset.abs_diff(last) <= slack;
        if sequential && f.reader.spans_chunks(&f.repo, offset, end, 2) {
            // A sequential request of several chunks (a disk image's 16 KiB
            // chunks, 64 to the kernel's 1 MiB request) reads nothing
            // ahead: the kernel keeps several such requests in flight
            // (READ_AHEAD_KB in fuse/mount.rs), one on each of the mount's
            // threads, and each thread decodes its request's chunks
            // straight into the reply ([`FileReader::read_with`]). Read
            // ahead by the helpers, the same chunks were decoded into the
            // cache and then copied into the reply, with a wake-up per job
            // (issue 17, `cat` of the binaries image through the mount,
            // daemon CPU: docs/bench/session12-mnt.md).
        } else if !sequential {
            // A random read, or a new stream: no read-ahead until the next
            // read continues it (the kernel's own rule), so a random reader
            // decodes only the chunks it reads. What lies behind it may be
            // wanted again.
            f.window.store(0, Ordering::Relaxed);
            f.done_to.store(offset, Ordering::Relaxed);
            f.ahead.store(end, Ordering::Relaxed);
            // A large random request (several chunks) is still decoded on
            // the helpers beside this thread: its own chunks, not others.
            let _ = f
                .reader
                .read_parallel(&f.repo, &self.cache, offset, end, Some(&f.done_to));
        } else {
            let window = match f.window.load(Ordering::Relaxed) {
                0 => (2 * size as u64).max(WINDOW_MIN),
                w => w.saturating_mul(2),
            }
            .min(READ_AHEAD as u64);
            f.window.store(window, Ordering::Relaxed);
            let until = end.saturating_add(window);
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
                let _ = f
                    .reader
                    .read_ahead(&f.repo, &self.cache, from, until, Some(&f.done_to));
            }
        }
        // `reply` is called once: with the bytes, or with the error.
        let mut reply = Some(reply);
        let done = f.reader.read_with(
            &f.repo,
            &self.cache,
            (offset, size as usize),
            Some(&f.done_to),
            |b| {
                if let Some(r) = reply.take() {
                    r(Ok(b));
                }
            },
        );
        if let Err(e) = done {
            log::error!("backup {}: read: {e}", f.ctx.record.name);
            if let Some(r) = reply.take() {
                r(Err(libc::EIO));
            }
        }
    }

    /// Read-ahead jobs the mount has queued so far (tests: random reads
    /// queue none).
    pub fn read_ahead_jobs(&self) -> u64 {
        self.cache.read_ahead_jobs()
    }

    /// Give the read path's memory back once the mount's reads have
    /// stopped for [`READ_IDLE`] (its chunk cache and the store's buffer
    /// pool, then free memory to the system): called by the reaper thread
    /// with the time now.
    pub(super) fn release_idle_reads(&self, now: std::time::Instant) {
        if self.cache.release_if_idle(now, READ_IDLE) {
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim only releases free memory.
            unsafe {
                libc::malloc_trim(0);
            }
        }
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
        let next = f.reader.next_data(&f.repo, off).map_err(|e| {
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
