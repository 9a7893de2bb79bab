//! Disk resources (a block device or a raw image file): fixed-size chunks
//! on a fixed grid, all-zero chunks and holes left out, batches read
//! (past the page cache where the kernel allows it: [`Source`]) and
//! compressed on several threads.

use super::fingerprints::Table;
use super::readers::Shared;
use super::walker::Walker;
use super::{meta_unchanged, stat_node};
use crate::crypto::keys::FINGERPRINT_LEN;
use crate::error::{Error, Result};
use crate::model::{ChunkRef, Node, NodeKind};
use crate::store::DiskCodec;
use crate::sys;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

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
/// Threads reading a disk: its batches are read and compressed at once.
pub(super) const DISK_READERS: usize = 4;

impl Walker<'_, '_> {
    /// Back up a disk (block device or raw image) as one file node named
    /// `name`: fixed-size chunks on a fixed grid, all-zero chunks and holes
    /// left out (they read back as zeros). Batches of chunks are read and
    /// compressed on [`DISK_READERS`] threads.
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
        let mut n = stat_node(name, NodeKind::File, &st);
        n.size = size;
        self.stats.bytes_total += size;
        self.sh.progress.add_file();
        // An image file whose size, times and inode are unchanged is not
        // read again. A block device's times say nothing of its contents.
        let same_meta = !block_dev && prev.is_some_and(|p| meta_unchanged(p, &n));
        if let Some(p) = prev.filter(|_| same_meta && !self.full) {
            n.content = p.content.clone();
            n.blocks = p.blocks;
            self.stats.files_unchanged += 1;
            self.sh.progress.add_done(size);
            return Ok(n);
        }
        // Under `--full` an image whose size, times and inode are the
        // previous backup's is read again but counted unchanged, as an
        // incremental would count it (issue #16: it was "new").
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
        // Batches end on the chunk grid so chunks never straddle one.
        const C: u64 = DISK_CHUNK as u64;
        const BATCH: u64 = 64 * C;
        let mut batches = Vec::new();
        for (s, e) in extents {
            let mut pos = s;
            while pos < e {
                let end = e.min((pos / BATCH + 1) * BATCH);
                batches.push((pos, end));
                pos = end;
            }
        }
        let src = Source::new(&f);
        let sh = self.sh;
        // An encrypted vault's chunks are fingerprinted, and those the last
        // backup of this disk stored are recognised by fingerprint rather
        // than hashed again (fingerprints.rs); not under `--full`.
        let fps = sh.fingerprints;
        let table = fps.filter(|_| !self.full).and_then(|f| f.load(path, size));
        let known = table.as_ref();
        let mut fingerprints = Vec::new();
        let mut recognised = 0u64;
        let mut chunks = Vec::new();
        let mut stored = 0u64;
        // Batches go to the readers one at a time, in order, from one
        // counter; each comes back with its index and is put in place. No
        // barrier: a reader that finishes takes the next batch at once,
        // whatever the others do (a window of batches joined all readers
        // every 256 MiB, and its last batches ran on fewer threads).
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let readers = DISK_READERS.min(batches.len()).max(1);
        let batches = &batches[..];
        let outcome: Result<()> = std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<BatchChunks>)>();
            for _ in 0..readers {
                let tx = tx.clone();
                let (src, shown, next, stop) = (&src, &shown, &next, &stop);
                s.spawn(move || {
                    let mut buf = vec![0u8; BATCH as usize + 3 * DIRECT_ALIGN];
                    let mut out = Vec::new();
                    // Carried from batch to batch: the next batch is most
                    // often the same kind of data (DiskCodec's doc).
                    let mut codec = DiskCodec::new(sh.disk_lz4);
                    loop {
                        if stop.load(Ordering::Relaxed) || sh.progress.cancelled() {
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(pos, end)) = batches.get(i) else {
                            return;
                        };
                        let r = disk_batch(
                            src,
                            shown,
                            pos..end,
                            (&mut buf, &mut out, &mut codec),
                            known,
                            sh,
                        );
                        if r.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        if tx.send((i, r)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            let mut results = InOrder::default();
            let mut first_err: Option<(usize, Error)> = None;
            for (i, r) in rx {
                match r {
                    Err(e) => {
                        if first_err.as_ref().is_none_or(|(at, _)| i < *at) {
                            first_err = Some((i, e));
                        }
                    }
                    Ok(c) => results.put(i, c),
                }
                if first_err.is_some() {
                    stop.store(true, Ordering::Relaxed);
                    continue;
                }
                while let Some((at, b)) = results.pop() {
                    let (pos, end) = batches[at];
                    stored += b.chunks.iter().map(|c| c.len as u64).sum::<u64>();
                    chunks.extend(b.chunks);
                    fingerprints.extend(b.fps);
                    recognised += b.recognised;
                    self.stats.bytes_read += end - pos;
                }
            }
            if let Some((_, e)) = first_err {
                return Err(e);
            }
            let want = results.next;
            if want < batches.len() {
                // Interrupted: what was stored so far is kept (see
                // `run_inner`).
                if sh.progress.cancelled() {
                    return Err(Error::failed(format!("interrupted in disk {shown}")));
                }
                let (pos, _) = batches[want];
                return Err(Error::failed(format!(
                    "disk {shown}: the range at {pos} was not read"
                )));
            }
            Ok(())
        });
        outcome?;
        if let Some(f) = fps {
            log::info!(
                "disk {shown}: {} of {} chunks recognised by their fingerprints ({} in the table)",
                recognised,
                chunks.len(),
                known.map_or(0, |t| t.len())
            );
            // The last table is no longer needed while the next is written.
            drop(table);
            // A table not written costs the next backup speed, not data.
            if let Err(e) = f.stage(path, &chunks, &fingerprints) {
                log::warn!("disk {shown}: fingerprint table not written: {e}");
            }
        }
        n.blocks = stored.div_ceil(512);
        n.content = self.content(&chunks)?;
        Ok(n)
    }
}

/// Results numbered 0, 1, 2, ... that arrive in any order, taken out in
/// order: those that came before an earlier one wait here. A disk batch's
/// result is its chunk references (64 of 32 bytes at most: id, offset,
/// length), not its bytes, so even a reader stuck on one slow read while
/// the others go on holds back little memory.
struct InOrder<T> {
    early: std::collections::BTreeMap<usize, T>,
    /// The number of the next result to take out.
    next: usize,
}

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        InOrder {
            early: std::collections::BTreeMap::new(),
            next: 0,
        }
    }
}

impl<T> InOrder<T> {
    /// Result number `i` arrived.
    fn put(&mut self, i: usize, v: T) {
        self.early.insert(i, v);
    }

    /// The next result in order with its number, if it arrived.
    fn pop(&mut self) -> Option<(usize, T)> {
        let v = self.early.remove(&self.next)?;
        self.next += 1;
        Some((self.next - 1, v))
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

/// How a [`Source`] reads, best first. A source starts at the best its
/// kernel and file system take and only ever moves down the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadMode {
    /// Buffered reads with `RWF_DONTCACHE` (Linux 6.14): the kernel's
    /// read-ahead, and no page left in the page cache once read.
    Uncached = 0,
    /// `O_DIRECT`: one DMA into the reader's buffer, nothing cached.
    Direct = 1,
    /// Plain buffered reads, where neither of the others is taken.
    Buffered = 2,
}

impl ReadMode {
    /// The mode stored as `mode as u8`.
    fn from_u8(v: u8) -> ReadMode {
        match v {
            0 => ReadMode::Uncached,
            1 => ReadMode::Direct,
            _ => ReadMode::Buffered,
        }
    }
}

/// A disk's reads: uncached buffered reads where the kernel takes
/// `RWF_DONTCACHE`, else `O_DIRECT`, else through the page cache
/// ([`ReadMode`]). Neither of the first two leaves the disk in the page
/// cache: a backup does not evict the host's cache with a whole disk read
/// once. Both see what buffered reads do: an uncached read copies pages
/// already cached, dirty ones included, and a direct read has the kernel
/// write dirty cached pages of the range back before it reads.
///
/// Uncached first, measured on this 2-core VM (virtio disk, read-ahead
/// 8 MiB), idle, page cache dropped, alternating runs, medians
/// (docs/bench/session14.md, `chg.sh` and `first.sh` there):
/// - changed re-backup (1 % of 4 KiB blocks rewritten) of a fresh copy of
///   the half-sparse kernel-text image, 5 runs: 0.69 s against 1.03 s
///   direct (75e4f56's plain buffered reads: 0.74 s);
/// - the same of the 1.5 GiB binaries image, 4 runs: 1.52 s against
///   3.16 s direct (75e4f56: 1.36 s; plain buffered reads of this build
///   1.20-2.38 s, leaving the whole image in the page cache);
/// - first backups, 4 runs: binaries image 5.57 s against 5.96 s, kernel
///   text 1.44 s against 1.44 s, for more system time (2.66-2.89 s
///   against 1.76-2.03 s on the binaries image: the kernel copies out of
///   pages it then drops).
///
/// Direct reads of 1 MiB on 4 readers took 4.7 ms each (strace): a reader
/// waits for each of its reads, while the kernel's read-ahead keeps the
/// disk busy as the readers hash and compress. `POSIX_FADV_SEQUENTIAL`
/// on top (twice the read-ahead) was slower: 2.2-2.4 s against 1.4-1.7 s
/// on the binaries image's changed re-backup. After a first backup,
/// 13 MiB of the 1 GiB kernel-text image (read-ahead into its holes) and
/// 0.4 MiB of the binaries image were left in the page cache (`fincore`).
///
/// Earlier measurements of direct reads, kept for the record (loaded
/// 2-core machine, page cache dropped, medians):
/// - Against 75e4f56's plain buffered reads (dd of the binaries image:
///   buffered 1.68 s of system time, direct 0.09 s; `_copy_to_iter` was
///   13 % of a first backup's profile), buffered reads beside the packs a
///   backup writes cost 1.63 s of CPU against 0.49 s in a changed
///   re-backup of the binaries image, 3.1 s of system time against 1.2 s
///   in a first backup.
/// - Reads on 2 threads of their own (1-4 MiB, 2-3 in flight, a ring of
///   3-4 buffers) ahead of the workers: within the spread, for 1.5-4 MiB
///   more peak memory. Batches of 2 or 4 MiB on 2, 4 or 8 readers: no
///   better than 1 MiB on 4 (docs/bench/session12-disk.md). Idle, this
///   session: 8 direct readers 0.85-1.05 s and 4 MiB batches 0.82-0.91 s
///   on the kernel-text image's changed re-backup, against 0.63 s
///   uncached.
pub(super) struct Source<'f> {
    f: &'f std::fs::File,
    /// The [`ReadMode`] now, as its index. O_DIRECT belongs to the open
    /// file, so the mode is shared by every reader of this source.
    mode: AtomicU8,
}

impl<'f> Source<'f> {
    /// The disk open as `f` (the descriptor whose fstat gave its metadata:
    /// only its flags may change), read the best way its kernel and file
    /// system take: a one-byte uncached read at 0 tells whether
    /// `RWF_DONTCACHE` is taken, else O_DIRECT is set if it can be.
    pub(super) fn new(f: &'f std::fs::File) -> Source<'f> {
        let mode = if sys::pread_uncached(f, &mut [0u8; 1], 0).is_ok() {
            ReadMode::Uncached
        } else {
            ReadMode::Direct
        };
        Source::with_mode(f, mode)
    }

    /// A source that starts at `mode` (or the next one down that `f`
    /// takes: O_DIRECT may be refused).
    pub(super) fn with_mode(f: &'f std::fs::File, mut mode: ReadMode) -> Source<'f> {
        if mode == ReadMode::Direct && set_direct(f, true).is_err() {
            mode = ReadMode::Buffered;
        }
        Source {
            f,
            mode: AtomicU8::new(mode as u8),
        }
    }

    /// How reads are done now.
    pub(super) fn mode(&self) -> ReadMode {
        ReadMode::from_u8(self.mode.load(Ordering::Relaxed))
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
        match self.mode() {
            ReadMode::Uncached => {
                read_uncached(self.f, pos, &mut buf[..len])?;
                return Ok(0..len);
            }
            ReadMode::Direct => match read_direct(self.f, pos, end, buf) {
                Ok(Some(at)) => return Ok(at..at + len),
                Ok(None) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The device wants another alignment: read through
                    // the page cache from now on.
                    self.mode.store(ReadMode::Buffered as u8, Ordering::Relaxed);
                    set_direct(self.f, false)?;
                }
                Err(e) => return Err(e),
            },
            ReadMode::Buffered => {}
        }
        self.f.read_exact_at(&mut buf[..len], pos)?;
        Ok(0..len)
    }
}

/// Fill `buf` from `pos` of `f` with uncached reads; the end of the file
/// before `buf` is full is an error.
fn read_uncached(f: &std::fs::File, pos: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let need = buf.len();
    read_at_least(buf, pos, need, |b, at| sys::pread_uncached(f, b, at))
}

/// Read from `pos` into `dst` with `read` (a positioned read: bytes into
/// the slice, from the offset) until at least `need` bytes are in; a read
/// may bring more, up to `dst`'s length. The end of the file before
/// `need` is an error; an interrupted read is tried again.
fn read_at_least(
    dst: &mut [u8],
    pos: u64,
    need: usize,
    mut read: impl FnMut(&mut [u8], u64) -> std::io::Result<usize>,
) -> std::io::Result<()> {
    let mut got = 0;
    while got < need {
        match read(&mut dst[got..], pos + got as u64) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
    read_at_least(dst, apos, need, |b, at| f.read_at(b, at))?;
    Ok(Some(at + (pos - apos) as usize))
}

/// What [`disk_batch`] stored of one batch.
pub(super) struct BatchChunks {
    /// Its chunks that are not all zero, in order.
    pub(super) chunks: Vec<ChunkRef>,
    /// In an encrypted vault, their fingerprints (one a chunk); else none.
    pub(super) fps: Vec<[u8; FINGERPRINT_LEN]>,
    /// How many of them took their id from the fingerprint table.
    pub(super) recognised: u64,
}

/// Read the chunk-grid range `range` of a disk into `buf` (with `out` and
/// `codec` to compress) and store its chunks that are not all zero. In an
/// encrypted vault each chunk is fingerprinted, and a whole one whose
/// fingerprint is `known`'s at its offset, under an id the vault holds,
/// takes that id unhashed.
pub(super) fn disk_batch(
    src: &Source<'_>,
    shown: &str,
    range: std::ops::Range<u64>,
    (buf, out, codec): (&mut [u8], &mut Vec<u8>, &mut DiskCodec),
    known: Option<&Table>,
    sh: &Shared<'_, '_>,
) -> Result<BatchChunks> {
    const C: u64 = DISK_CHUNK as u64;
    let (pos, end) = (range.start, range.end);
    let len = (end - pos) as usize;
    let at = src
        .read(pos, end, buf)
        .map_err(|err| Error::failed(format!("disk {shown}: read at {pos}: {err}")))?;
    let buf = &buf[at];
    sh.progress.add_read(len as u64);
    let mut chunks = Vec::new();
    let mut fps = Vec::new();
    let mut recognised = 0;
    let mut off = pos;
    while off < end {
        let cend = end.min((off / C + 1) * C);
        let data = &buf[(off - pos) as usize..(cend - pos) as usize];
        if !is_zero(data) {
            let id = match sh.fingerprints {
                None => sh.put_disk(data, out, codec)?,
                Some(f) => {
                    let fp = f.fingerprint(data);
                    fps.push(fp);
                    // Whole chunks only: XXH3 is no MAC, and pairs of short
                    // inputs (17 to 240 bytes) that collide for a fraction of
                    // its secrets are known (xxHash issue 1127); a short
                    // chunk (the end of an image, of an extent) is hashed.
                    let hit = known
                        .filter(|_| data.len() == DISK_CHUNK)
                        .and_then(|t| t.get(off))
                        .filter(|e| e.len as usize == data.len() && e.fp == fp)
                        .filter(|e| sh.writer.lock().known(&e.id));
                    match hit {
                        Some(e) => {
                            recognised += 1;
                            e.id
                        }
                        None => sh.put_disk(data, out, codec)?,
                    }
                }
            };
            chunks.push(ChunkRef {
                id,
                offset: off,
                len: data.len() as u32,
            });
        }
        off = cend;
    }
    Ok(BatchChunks {
        chunks,
        fps,
        recognised,
    })
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
    /// its own bytes in every [`ReadMode`] this file system takes (the
    /// best, as `Source::new` finds it, then direct and buffered).
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
        let best = Source::new(&std::fs::File::open(&path).unwrap()).mode();
        let len = len as u64;
        for mode in [best, ReadMode::Direct, ReadMode::Buffered] {
            // O_DIRECT belongs to the open file: a new one for each mode.
            let f = std::fs::File::open(&path).unwrap();
            let src = Source::with_mode(&f, mode);
            let mut buf = vec![0u8; 4 * DISK_CHUNK + 3 * DIRECT_ALIGN];
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
                    "{mode:?} {pos}..{end}"
                );
            }
            // Past the end is an error, not zeros.
            assert!(src.read(len - 10, len + 10, &mut buf).is_err(), "{mode:?}");
        }
    }

    /// Where the kernel takes RWF_DONTCACHE (Linux 6.14, ext4, xfs,
    /// btrfs) or O_DIRECT (ext4, xfs, btrfs, tmpfs since Linux 6.6), a
    /// disk is read without filling the page cache: after a read of a
    /// file whose pages were dropped, none is cached, in the mode
    /// `Source::new` chose and in direct mode.
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
        let best = Source::new(&std::fs::File::open(&path).unwrap()).mode();
        for mode in [best, ReadMode::Direct] {
            let f = std::fs::File::open(&path).unwrap();
            // SAFETY: fadvise on a valid descriptor.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            let src = Source::with_mode(&f, mode);
            if src.mode() == ReadMode::Buffered {
                eprintln!(
                    "{}: neither uncached nor direct reads on this file system; not checked",
                    path.display()
                );
                continue;
            }
            let mut buf = vec![0u8; len + 3 * DIRECT_ALIGN];
            let at = src.read(0, len as u64, &mut buf).unwrap();
            assert!(buf[at].iter().all(|b| *b == 0x5a));
            assert_eq!(src.mode(), mode, "a read in {mode:?} mode was refused");
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
                "{mode:?}: {cached} of {pages} pages were cached by the read"
            );
        }
    }

    /// Batches done out of order come out in order, each once, and none
    /// comes out before every earlier one has.
    #[test]
    fn results_come_out_in_order() {
        let mut r = InOrder::default();
        let mut got = Vec::new();
        for i in [3usize, 1, 0, 2, 6, 4, 5, 7] {
            r.put(i, i * 10);
            while let Some((at, v)) = r.pop() {
                assert_eq!(v, at * 10);
                got.push(at);
            }
            assert!(got.iter().all(|&g| g < r.next) && got.len() == r.next);
        }
        assert_eq!(got, (0..8).collect::<Vec<_>>());
        r.put(9, 90);
        assert!(r.pop().is_none(), "8 has not come");
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
