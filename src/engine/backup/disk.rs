//! Disk resources (a block device or a raw image file): fixed-size chunks
//! on a fixed grid, all-zero chunks and holes left out, batches read
//! (with O_DIRECT where the kernel takes it: [`Source`]) and compressed on
//! several threads.

use super::ns;
use super::readers::Shared;
use super::walker::Walker;
use crate::error::{Error, Result};
use crate::model::{ChunkRef, Node, NodeKind};
use crate::store::BlobKind;
use crate::store::ZSTD_LEVEL_DISK;
use crate::sys;
use parking_lot::Mutex;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Chunk size of disks, chosen by measurement. Images made with `mke2fs
/// -t ext4 -d` from 294 MiB of real files (Rust crate sources), then 1 % of
/// their 4 KiB blocks overwritten at random (seed 42); bytes added by the
/// full and the incremental backup, and the incremental as a multiple of
/// the bytes changed:
///
/// | chunk   | 600 MiB image, half empty   | 340 MiB image, 83 % full   |
/// |---------|-----------------------------|----------------------------|
/// | 4 KiB   | 62.3 MB, 7.3 MB (1.16×)     |                            |
/// | 8 KiB   |                             | 51.5 MB, 4.8 MB (1.36×)    |
/// | 16 KiB  | 44.6 MB, 8.3 MB (1.32×)     | 44.3 MB, 5.5 MB (1.53×)    |
/// | 32 KiB  |                             | 39.9 MB, 6.8 MB (1.91×)    |
/// | 64 KiB  | 37.3 MB, 12.3 MB (1.96×)    | 37.0 MB, 9.3 MB (2.60×)    |
/// | 1 MiB   | 31.1 MB, 35.7 MB (5.68×)    |                            |
///
/// On incompressible data (an image of gzip'd files) the multiple tends to
/// chunk/4 KiB: 64 KiB measured 7.6×. 16 KiB bounds it near 4× and keeps a
/// full backup within 20 % of 64 KiB's. Every chunk's offset and length
/// are in the chunk list, so a reader needs no constant.
pub const DISK_CHUNK: usize = 16 << 10;
/// Most threads hashing and compressing a disk's chunks (one a core, up
/// to this many); [`DISK_READS_IN_FLIGHT`] more read it.
pub(super) const DISK_READERS: usize = 4;

impl Walker<'_, '_> {
    /// Back up a disk (block device or raw image) as one file node named
    /// `name`: fixed-size chunks on a fixed grid, all-zero chunks and holes
    /// left out (they read back as zeros). Batches of chunks are read and
    /// compressed on [`DISK_READERS`] threads (see [`read_disk`]).
    pub(super) fn disk(&mut self, path: &Path, name: Vec<u8>, prev: Option<&Node>) -> Result<Node> {
        let shown = path.display().to_string();
        let (f, st) = open_disk(path).map_err(|e| Error::failed(format!("disk {shown}: {e}")))?;
        let block_dev = st.st_mode & libc::S_IFMT == libc::S_IFBLK;
        let size = if block_dev {
            sys::block_device_size(f.as_raw_fd())
        } else {
            Ok(st.st_size.max(0) as u64)
        }
        .map_err(|e| Error::failed(format!("disk {shown}: {e}")))?;
        let mut n = Node::new(name, NodeKind::File);
        n.mode = st.st_mode & 0o7777;
        n.uid = st.st_uid;
        n.gid = st.st_gid;
        n.mtime_ns = ns(st.st_mtime, st.st_mtime_nsec);
        n.ctime_ns = ns(st.st_ctime, st.st_ctime_nsec);
        n.inode = st.st_ino;
        n.dev = st.st_dev;
        n.size = size;
        self.stats.bytes_total += size;
        self.sh.progress.add_file();
        // An image file whose size, times and inode are unchanged is not
        // read again. A block device's times say nothing of its contents.
        if let Some(p) = prev.filter(|p| {
            !self.full
                && !block_dev
                && p.size == n.size
                && p.mtime_ns == n.mtime_ns
                && p.ctime_ns == n.ctime_ns
                && p.inode == n.inode
        }) {
            n.content = p.content.clone();
            n.blocks = p.blocks;
            self.stats.files_unchanged += 1;
            self.sh.progress.add_done(size);
            return Ok(n);
        }
        // Under `--full` an image whose size, times and inode are the
        // previous backup's is read again but counted unchanged, as an
        // incremental would count it (issue #16: it was "new").
        let same_meta = prev.is_some_and(|p| {
            !block_dev
                && p.size == n.size
                && p.mtime_ns == n.mtime_ns
                && p.ctime_ns == n.ctime_ns
                && p.inode == n.inode
        });
        if same_meta {
            self.stats.files_unchanged += 1;
        } else if prev.is_some() {
            self.stats.files_changed += 1;
        } else {
            self.stats.files_new += 1;
        }
        let extents = if block_dev {
            vec![(0, size)]
        } else {
            sys::data_extents(f.as_raw_fd(), size)
                .map_err(|e| Error::failed(format!("disk {shown}: {e}")))?
        };
        // Direct reads where most chunks are new (no previous backup of
        // this disk): compression makes that backup CPU-bound, and a
        // buffered read cost 2 s more system time on the binaries image
        // (page cache filled beside the packs written; 3.1 s against 1.2 s,
        // medians of 3). A re-backup stores few chunks and waits on the
        // device: there the kernel's read-ahead reads faster than direct
        // reads (see [`DISK_READS_IN_FLIGHT`]).
        let direct = prev.is_none();
        let (chunks, read) = read_disk(&f, &shown, &extents, direct, self.sh)?;
        self.stats.bytes_read += read;
        let stored = chunks.iter().map(|c| u64::from(c.len)).sum::<u64>();
        n.blocks = stored.div_ceil(512);
        n.content = self.content(&chunks)?;
        Ok(n)
    }
}

/// Open a disk (a block device or an image file) at its resolved path
/// with no symlink followed (see `sys::open_no_symlinks`); size and
/// metadata come from this descriptor.
pub(super) fn open_disk(path: &Path) -> std::io::Result<(std::fs::File, libc::stat)> {
    // O_NONBLOCK so that a fifo put there does not hang the open; it is
    // cleared once fstat said what was opened.
    let fd = sys::open_no_symlinks(path, libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK)?;
    let st = sys::fstat(&fd)?;
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFBLK && kind != libc::S_IFREG {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a block device or a regular file",
        ));
    }
    // SAFETY: F_SETFL on a valid descriptor.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_RDONLY) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((std::fs::File::from(fd), st))
}

/// Alignment of direct reads: of the buffer, the offset and the length.
/// 4 KiB is a multiple of every logical block size Linux block devices
/// have (512 or 4096), so it suits all of them.
pub(super) const DIRECT_ALIGN: usize = 4096;

/// A disk read with `O_DIRECT` where asked and while the kernel takes it,
/// else through the page cache (re-backups: see [`Walker::disk`]). Measured on the 1.5 GiB binaries image with the page
/// cache dropped (`dd bs=1M`): buffered 1.68 s of system time, direct
/// 0.09 s. A buffered read pays for filling the page cache and then
/// copying out of it (`_copy_to_iter` was 13 % of a backup's profile);
/// a direct read is one DMA into the reader's buffer, and a first backup
/// does not evict the host's page cache with a whole disk read once.
/// Direct reads see what buffered ones do: the kernel writes dirty cached
/// pages of the range back before it reads.
pub(super) struct Source<'f> {
    f: &'f std::fs::File,
    /// O_DIRECT is set on the descriptor. Cleared (for every reader, since
    /// the flag belongs to the open file) the first time a direct read is
    /// refused, and never set again.
    direct: AtomicBool,
}

impl<'f> Source<'f> {
    /// The disk open as `f` (the descriptor whose fstat gave its metadata:
    /// only its flags change), read directly if `direct`. Where O_DIRECT
    /// cannot be set (a file system without direct I/O) it is read through
    /// the page cache.
    pub(super) fn new(f: &'f std::fs::File, direct: bool) -> Source<'f> {
        let direct = direct && set_direct(f, true).is_ok();
        Source {
            f,
            direct: AtomicBool::new(direct),
        }
    }

    /// True while reads are direct.
    pub(super) fn is_direct(&self) -> bool {
        self.direct.load(Ordering::Relaxed)
    }

    /// Read `pos..end` into `buf`, which must hold `end - pos` bytes and
    /// [`DIRECT_ALIGN`] three times more (room to align the buffer, the
    /// start and the end); return where in `buf` the bytes are.
    pub(super) fn read(
        &self,
        pos: u64,
        end: u64,
        buf: &mut [u8],
    ) -> std::io::Result<std::ops::Range<usize>> {
        use std::os::unix::fs::FileExt;
        let len = (end - pos) as usize;
        if self.is_direct() {
            match read_direct(self.f, pos, end, buf) {
                Ok(Some(at)) => return Ok(at..at + len),
                Ok(None) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The device wants another alignment: read through
                    // the page cache from now on.
                    self.direct.store(false, Ordering::Relaxed);
                    set_direct(self.f, false)?;
                }
                Err(e) => return Err(e),
            }
        }
        self.f.read_exact_at(&mut buf[..len], pos)?;
        Ok(0..len)
    }
}

/// Set or clear O_DIRECT on `f`.
fn set_direct(f: &std::fs::File, on: bool) -> std::io::Result<()> {
    // SAFETY: fcntl F_GETFL/F_SETFL on a valid descriptor.
    let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let want = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, want) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Read `pos..end` of `f` (open with O_DIRECT) into `buf`: the aligned
/// range around it, into an aligned part of `buf`; the start of the
/// wanted bytes in `buf`, or `None` if `buf` is too small to align in.
/// At the end of the file the kernel returns fewer bytes than asked,
/// which is fine as long as `end` is reached.
fn read_direct(
    f: &std::fs::File,
    pos: u64,
    end: u64,
    buf: &mut [u8],
) -> std::io::Result<Option<usize>> {
    use std::os::unix::fs::FileExt;
    const A: u64 = DIRECT_ALIGN as u64;
    let apos = pos / A * A;
    let Some(aend) = end.div_ceil(A).checked_mul(A) else {
        return Ok(None);
    };
    let at = buf.as_ptr().align_offset(DIRECT_ALIGN);
    let span = (aend - apos) as usize;
    let Some(dst) = at.checked_add(span).and_then(|last| buf.get_mut(at..last)) else {
        return Ok(None);
    };
    let need = (end - apos) as usize;
    let mut got = 0;
    while got < need {
        match f.read_at(&mut dst[got..], apos + got as u64) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(at + (pos - apos) as usize))
}

/// Bytes of one read of a disk, on a grid of its own size (a multiple of
/// [`DISK_CHUNK`], so no chunk straddles two reads).
pub(super) const DISK_READ: u64 = 2 << 20;
/// Reads of a disk in flight at once, each on its own thread, while the
/// workers hash and compress what was read before (issue 13: with each
/// worker reading its own 1 MiB and then computing, a changed re-backup of
/// the binaries image took 1.24× the old code's). Measured with `--full`
/// re-backups of that image (read and hash, nothing new stored; page
/// cache dropped; alternating, medians of 4-5 on a loaded machine): the
/// old 1 MiB direct reads 1.76 s; direct reads of 1-4 MiB with 2-3 in
/// flight 1.58-1.64 s; buffered, 1 reader of 2-4 MiB 1.8-2.4 s, 2 readers
/// of 2 MiB 1.06 s, 2 of 4 MiB 1.08 s (and 11 MiB more memory).
pub(super) const DISK_READS_IN_FLIGHT: usize = 2;
/// Buffers of [`DISK_READ`] bytes: those being read and one being hashed
/// and compressed (a read's batches are shared out among the workers).
/// This bounds the memory of a disk's reads.
const DISK_BUFFERS: usize = DISK_READS_IN_FLIGHT + 1;
/// Chunks a worker takes at a time out of a read: small enough that the
/// workers share a read's work evenly, large enough that handing it over
/// costs nothing next to hashing it.
const DISK_BATCH: u64 = 64 * DISK_CHUNK as u64;

/// The buffers disk reads go into, lent out one at a time and given back
/// when the last batch of what was read into one is done.
struct Ring {
    free: Mutex<(Vec<Vec<u8>>, usize)>,
    ready: parking_lot::Condvar,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            free: Mutex::new((Vec::new(), 0)),
            ready: parking_lot::Condvar::new(),
        }
    }

    /// A free buffer, allocated while fewer than [`DISK_BUFFERS`] exist,
    /// else waited for.
    fn take(&self) -> Vec<u8> {
        let mut free = self.free.lock();
        loop {
            if let Some(b) = free.0.pop() {
                return b;
            }
            if free.1 < DISK_BUFFERS {
                free.1 += 1;
                return vec![0u8; DISK_READ as usize + 3 * DIRECT_ALIGN];
            }
            self.ready.wait(&mut free);
        }
    }

    fn give(&self, buf: Vec<u8>) {
        self.free.lock().0.push(buf);
        self.ready.notify_one();
    }
}

/// What one read brought in: shared by the batches cut from it, and given
/// back to the ring when the last is dropped.
struct Filled<'r> {
    ring: &'r Ring,
    buf: Vec<u8>,
    /// Where in `buf` the bytes of the disk from `pos` are.
    at: std::ops::Range<usize>,
    pos: u64,
}

impl Drop for Filled<'_> {
    fn drop(&mut self) {
        self.ring.give(std::mem::take(&mut self.buf));
    }
}

/// A batch of chunks for a worker: disk bytes `pos..end` of a read, and
/// the batch's place in the disk's order.
struct DiskJob<'r> {
    filled: std::sync::Arc<Filled<'r>>,
    pos: u64,
    end: u64,
    index: usize,
}

/// Read the data `extents` of a disk (directly if `direct`, see
/// [`Source`]) and store their chunks that are not all zero: [`DISK_READS_IN_FLIGHT`] threads read [`DISK_READ`] bytes at
/// a time in disk order, workers hash and compress batches of the reads,
/// and the chunks come back in disk order. Returns the chunks and the
/// bytes read.
fn read_disk(
    f: &std::fs::File,
    shown: &str,
    extents: &[(u64, u64)],
    direct: bool,
    sh: &Shared<'_, '_>,
) -> Result<(Vec<ChunkRef>, u64)> {
    // Reads end on their own grid (and so on the chunk grid); each is cut
    // into batches numbered in disk order.
    let mut reads = Vec::new();
    let mut batches = 0usize;
    for &(s, e) in extents {
        let mut pos = s;
        while pos < e {
            let end = e.min((pos / DISK_READ + 1) * DISK_READ);
            reads.push((pos, end, batches));
            batches += (end - pos).div_ceil(DISK_BATCH) as usize;
            pos = end;
        }
    }
    let src = Source::new(f, direct);
    let ring = Ring::new();
    let next_read = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let interrupted = AtomicBool::new(false);
    let (job_tx, job_rx) = std::sync::mpsc::channel::<DiskJob<'_>>();
    let job_rx = Mutex::new(job_rx);
    let (res_tx, res_rx) = std::sync::mpsc::channel::<(usize, u64, Result<Vec<ChunkRef>>)>();
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, DISK_READERS);
    let mut chunks = Vec::new();
    let mut read = 0u64;
    let mut first_err = None;
    std::thread::scope(|s| {
        for _ in 0..DISK_READS_IN_FLIGHT.min(reads.len()) {
            let (job_tx, res_tx) = (job_tx.clone(), res_tx.clone());
            let (src, ring, reads) = (&src, &ring, &reads);
            let (next_read, failed, interrupted) = (&next_read, &failed, &interrupted);
            s.spawn(move || loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                // Interrupted: what was stored so far is kept (see
                // `run_inner`).
                if sh.progress.cancelled() {
                    interrupted.store(true, Ordering::Relaxed);
                    failed.store(true, Ordering::Relaxed);
                    return;
                }
                let Some(&(pos, end, first)) = reads.get(next_read.fetch_add(1, Ordering::Relaxed))
                else {
                    return;
                };
                let mut buf = ring.take();
                match src.read(pos, end, &mut buf) {
                    Ok(at) => {
                        sh.progress.add_read(end - pos);
                        let filled = std::sync::Arc::new(Filled { ring, buf, at, pos });
                        let mut p = pos;
                        let mut index = first;
                        while p < end {
                            let e = end.min((p / DISK_BATCH + 1) * DISK_BATCH);
                            let job = DiskJob {
                                filled: filled.clone(),
                                pos: p,
                                end: e,
                                index,
                            };
                            if job_tx.send(job).is_err() {
                                return;
                            }
                            p = e;
                            index += 1;
                        }
                    }
                    Err(err) => {
                        ring.give(buf);
                        failed.store(true, Ordering::Relaxed);
                        let e = Error::failed(format!("disk {shown}: read at {pos}: {err}"));
                        let _ = res_tx.send((first, 0, Err(e)));
                        return;
                    }
                }
            });
        }
        drop(job_tx);
        for _ in 0..workers {
            let res_tx = res_tx.clone();
            let (job_rx, failed) = (&job_rx, &failed);
            s.spawn(move || {
                let mut out = Vec::new();
                loop {
                    // The lock is held while waiting: the other workers
                    // wait on it instead of on the channel.
                    let Ok(job) = job_rx.lock().recv() else {
                        return;
                    };
                    if failed.load(Ordering::Relaxed) {
                        continue; // drained, so that the readers' buffers come back
                    }
                    let f = &job.filled;
                    let from = f.at.start + (job.pos - f.pos) as usize;
                    let data = &f.buf[from..from + (job.end - job.pos) as usize];
                    let r = store_chunks(data, job.pos, &mut out, sh);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    let _ = res_tx.send((job.index, job.end - job.pos, r));
                }
            });
        }
        drop(res_tx);
        // Batches arrive out of order: each waits here until those before
        // it are in. At most the batches of the buffers in the ring wait.
        let mut waiting = std::collections::BTreeMap::new();
        let mut next = 0usize;
        for (index, len, r) in res_rx {
            match r {
                Ok(c) if first_err.is_none() => {
                    waiting.insert(index, (len, c));
                    while let Some((len, c)) = waiting.remove(&next) {
                        chunks.extend(c);
                        read += len;
                        next += 1;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    first_err.get_or_insert(e);
                }
            }
        }
        if first_err.is_none() && next != batches {
            first_err = Some(Error::failed(format!(
                "disk {shown}: {} of {batches} ranges were not read",
                batches - next
            )));
        }
    });
    if interrupted.load(Ordering::Relaxed) {
        return Err(Error::failed(format!("interrupted in disk {shown}")));
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok((chunks, read)),
    }
}

/// Store the chunks of `data` (disk bytes from `pos`, on the chunk grid)
/// that are not all zero.
fn store_chunks(
    data: &[u8],
    pos: u64,
    out: &mut Vec<u8>,
    sh: &Shared<'_, '_>,
) -> Result<Vec<ChunkRef>> {
    const C: u64 = DISK_CHUNK as u64;
    let end = pos + data.len() as u64;
    let mut chunks = Vec::with_capacity(data.len().div_ceil(DISK_CHUNK) + 1);
    let mut off = pos;
    // Chunks end on the grid even where an extent starts off it.
    while off < end {
        let cend = end.min((off / C + 1) * C);
        let c = &data[(off - pos) as usize..(cend - pos) as usize];
        if !is_zero(c) {
            chunks.push(ChunkRef {
                id: sh.put_at(BlobKind::Data, c, out, ZSTD_LEVEL_DISK)?,
                offset: off,
                len: c.len() as u32,
            });
        }
        off = cend;
    }
    Ok(chunks)
}

/// True if every byte of `data` is zero. Or-ing 64-byte blocks lets the
/// compiler use vector instructions (a byte-at-a-time `any` does not), and
/// a non-zero block ends the scan: data chunks are told apart at once, and
/// a zero chunk costs one pass at memory speed.
pub(super) fn is_zero(data: &[u8]) -> bool {
    let mut blocks = data.chunks_exact(64);
    let whole = blocks
        .by_ref()
        .all(|b| b.iter().fold(0u8, |acc, x| acc | x) == 0);
    whole && blocks.remainder().iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file whose length is not a multiple of the alignment, read at
    /// unaligned and aligned ranges, its end included: every range reads
    /// its own bytes, whether the reads are direct or not.
    #[test]
    fn source_reads_every_range_exactly() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let len = 3 * DISK_CHUNK + 1000;
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        for direct in [true, false] {
            // Opened anew: O_DIRECT belongs to the open file.
            let f = std::fs::File::open(&path).unwrap();
            let src = Source::new(&f, direct);
            assert!(direct || !src.is_direct());
            let mut buf = vec![0u8; 4 * DISK_CHUNK + 3 * DIRECT_ALIGN];
            let len = len as u64;
            for (pos, end) in [
                (0, len),
                (0, 1),
                (4096, 20_000),
                (5000, 17_000),
                (16_384, len),
                (len - 1, len),
            ] {
                let at = src.read(pos, end, &mut buf).unwrap();
                assert_eq!(
                    &buf[at],
                    &bytes[pos as usize..end as usize],
                    "{pos}..{end} {direct}"
                );
            }
            // Past the end is an error, not zeros.
            assert!(src.read(len - 10, len + 10, &mut buf).is_err());
        }
    }

    /// Where the file system takes O_DIRECT (ext4, xfs, btrfs, tmpfs
    /// since Linux 6.6), a disk is read without filling the page cache:
    /// after a read of a file whose pages were dropped, none is cached.
    #[test]
    fn source_reads_past_the_page_cache() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let len = 64 * DISK_CHUNK;
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![0x5au8; len]).unwrap();
        f.sync_all().unwrap();
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: fadvise on a valid descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let src = Source::new(&f, true);
        if !src.is_direct() {
            eprintln!(
                "{}: no O_DIRECT on this file system; not checked",
                path.display()
            );
            return;
        }
        let mut buf = vec![0u8; len + 3 * DIRECT_ALIGN];
        let at = src.read(0, len as u64, &mut buf).unwrap();
        assert!(buf[at].iter().all(|b| *b == 0x5a));
        assert!(src.is_direct(), "a direct read was refused");
        // SAFETY: the map is read by mincore only and dropped at the end.
        let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
        let pages = len.div_ceil(4096);
        let mut resident = vec![0u8; pages];
        // SAFETY: `map` spans `len` bytes; `resident` has one byte a page.
        let r = unsafe {
            libc::mincore(
                map.as_ptr() as *mut libc::c_void,
                len,
                resident.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        let cached = resident.iter().filter(|b| **b & 1 == 1).count();
        assert_eq!(
            cached, 0,
            "{cached} of {pages} pages were cached by the read"
        );
    }

    /// A single non-zero byte anywhere, in a whole block or in the tail,
    /// makes a chunk data; empty and all-zero ones are zero.
    #[test]
    fn is_zero_finds_any_non_zero_byte() {
        assert!(is_zero(&[]));
        for len in [1usize, 63, 64, 65, 200, DISK_CHUNK] {
            let mut b = vec![0u8; len];
            assert!(is_zero(&b), "{len}");
            for at in [0, len / 2, len - 1] {
                b[at] = 0x10;
                assert!(!is_zero(&b), "{len} at {at}");
                b[at] = 0;
            }
        }
    }
}
