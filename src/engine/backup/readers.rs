//! The reader threads: regular files handed over by the walker in batches,
//! read from the walker's own descriptor, chunked, hashed, compressed and
//! stored, and handed back; what they share with the walker.

use super::ns;
use crate::chunker::Cdc;
use crate::engine::progress::Progress;
use crate::error::{Error, Result};
use crate::model::{ChunkRef, Node};
use crate::store::Key;
use crate::store::{BlobId, BlobKind, Compression, DiskCodec, RepoWriter};
use crate::sys;
use parking_lot::{Condvar, Mutex};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

/// Files read at once, across directories. On a cold cache a backup waits
/// on the disk, and a virtio or NVMe disk serves many reads at once far
/// faster than one after another: the 78,579 files of a kernel tree, page
/// cache dropped, read by `xargs -P 16 cat` in 4.95 s and by `tar | cat`
/// in 20.95 s on this project's 2-core machine.
pub const READERS: usize = 16;
/// File reads handed out and not yet back; bounds the directories held
/// in memory while their files are read.
pub(super) const MAX_INFLIGHT: usize = 32 * READERS;
/// Files go to the readers in batches of up to this many files or bytes:
/// a handover per file cost more than reading a small one (a directory of
/// a million small files took 18.6 s of system time, 7.7 s with 4
/// threads per directory and no handover).
pub(super) const BATCH_FILES: usize = 16;
pub(super) const BATCH_BYTES: u64 = 1 << 20;
/// Files at least this big are read with one of [`BIG_BUFFERS`] buffers
/// of [`crate::chunker::buffer_len`] bytes; smaller ones with their
/// reader's own buffer, which so stays under a megabyte.
pub(super) const BIG_FILE: u64 = 1 << 20;
pub(super) const BIG_BUFFERS: usize = 3;

/// What the walker and the reader threads share.
pub(super) struct Shared<'a, 'w> {
    pub(super) writer: &'a Mutex<RepoWriter<'w>>,
    pub(super) cdc: &'a Cdc,
    pub(super) key: &'a Key,
    pub(super) compress: bool,
    /// The vault's format lets disks' chunks be LZ4 blocks
    /// (`VaultConfig::disk_lz4`); else they stay zstd.
    pub(super) disk_lz4: bool,
    pub(super) progress: &'a Progress,
    /// Set once the store failed: the readers skip what is left.
    pub(super) stop: AtomicBool,
    /// Buffers for big files, lent one at a time.
    pub(super) big: Mutex<Vec<Buffers>>,
    pub(super) big_ready: Condvar,
    /// An encrypted vault's disk fingerprint tables.
    pub(super) fingerprints: Option<&'a super::fingerprints::Fingerprints<'a>>,
}

#[cfg(test)]
impl<'a, 'w> Shared<'a, 'w> {
    /// What a backup of a compressing vault shares, for tests that call
    /// the readers' functions themselves.
    pub(super) fn for_test(
        writer: &'a Mutex<RepoWriter<'w>>,
        cdc: &'a Cdc,
        progress: &'a Progress,
        fingerprints: Option<&'a super::fingerprints::Fingerprints<'a>>,
    ) -> Self {
        let key = writer.lock().repo().key();
        Shared {
            writer,
            cdc,
            key,
            compress: true,
            disk_lz4: true,
            progress,
            stop: AtomicBool::new(false),
            big: Mutex::new(Vec::new()),
            big_ready: Condvar::new(),
            fingerprints,
        }
    }
}

impl Shared<'_, '_> {
    /// Store `data` as a blob of `kind` unless it is stored already, and
    /// return its id. Hashing and compression run on the calling thread;
    /// the writer's lock is held only to reserve the id and to append.
    pub(super) fn put(&self, kind: BlobKind, data: &[u8], out: &mut Vec<u8>) -> Result<BlobId> {
        self.put_at(kind, data, out, crate::store::ZSTD_LEVEL)
    }

    /// [`Shared::put`], compressing at zstd level `level` (disks' chunks
    /// use a cheaper one).
    pub(super) fn put_at(
        &self,
        kind: BlobKind,
        data: &[u8],
        out: &mut Vec<u8>,
        level: i32,
    ) -> Result<BlobId> {
        self.put_with(kind, data, || {
            crate::store::compress_into_at(data, out, level)
                .then_some((Compression::Zstd, &out[..]))
        })
    }

    /// [`Shared::put`] for a disk's data chunk: compressed by `codec`
    /// (zstd or LZ4, by how well the data compresses).
    pub(super) fn put_disk(
        &self,
        data: &[u8],
        out: &mut Vec<u8>,
        codec: &mut DiskCodec,
    ) -> Result<BlobId> {
        self.put_with(BlobKind::Data, data, || {
            codec.compress(data, out).map(|how| (how, &out[..]))
        })
    }

    /// Store `data` unless it is stored already: `compress` (run only for
    /// a new blob of a compressing vault) gives its compressed form, or
    /// `None` to store it raw.
    fn put_with<'o>(
        &self,
        kind: BlobKind,
        data: &[u8],
        compress: impl FnOnce() -> Option<(Compression, &'o [u8])>,
    ) -> Result<BlobId> {
        let id = self.key.id(data);
        if self.writer.lock().reserve(id) {
            let c = if self.compress { compress() } else { None };
            self.writer.lock().append_reserved(id, kind, data, c)?;
        }
        Ok(id)
    }

    pub(super) fn take_big(&self) -> Buffers {
        let mut bufs = self.big.lock();
        loop {
            if let Some(b) = bufs.pop() {
                return b;
            }
            self.big_ready.wait(&mut bufs);
        }
    }

    pub(super) fn give_big(&self, buf: Buffers) {
        self.big.lock().push(buf);
        self.big_ready.notify_one();
    }
}

/// A reader's buffers: what it reads, and what it compresses into.
#[derive(Default)]
pub(super) struct Buffers {
    pub(super) read: Vec<u8>,
    pub(super) out: Vec<u8>,
}

/// A file for the readers: entry `idx` of pending directory `dir`.
pub(super) struct Job {
    pub(super) dir: u64,
    pub(super) idx: usize,
    /// For messages only: the bytes come from `file`.
    pub(super) path: PathBuf,
    /// The descriptor whose fstat gave the entry's metadata.
    pub(super) file: std::fs::File,
    /// Its state when listed (the fstat of `file`).
    pub(super) listed: FileState,
}

/// A file read, back from a reader.
pub(super) struct Done {
    pub(super) dir: u64,
    pub(super) idx: usize,
    pub(super) path: PathBuf,
    pub(super) result: std::result::Result<FileRead, ReadError>,
}

/// One file read.
pub(super) struct FileRead {
    pub(super) chunks: Vec<ChunkRef>,
    pub(super) bytes: u64,
    /// Where a read met the end of the file before the extent it was
    /// reading ended: the file shrank while it was read.
    pub(super) eof_at: Option<u64>,
    /// The file's state once read (fstat of the descriptor read).
    pub(super) after: FileState,
}

/// What tells whether a file changed while it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FileState {
    pub(super) size: u64,
    pub(super) mtime_ns: i64,
    pub(super) ctime_ns: i64,
    pub(super) dev: u64,
    pub(super) inode: u64,
}

impl FileState {
    pub(super) fn of(md: &std::fs::Metadata) -> FileState {
        FileState {
            size: md.len(),
            mtime_ns: ns(md.mtime(), md.mtime_nsec()),
            ctime_ns: ns(md.ctime(), md.ctime_nsec()),
            dev: md.dev(),
            inode: md.ino(),
        }
    }
    pub(super) fn of_node(n: &Node) -> FileState {
        FileState {
            size: n.size,
            mtime_ns: n.mtime_ns,
            ctime_ns: n.ctime_ns,
            dev: n.dev,
            inode: n.inode,
        }
    }
}

/// Why a file read failed: the source (reported, the entry skipped), the
/// store (the backup stops), or an earlier store failure (not read).
pub(super) enum ReadError {
    Source(Error),
    Store(Error),
    Stopped,
}

/// A reader thread: reads files until the walker hangs up.
pub(super) fn reader(
    sh: &Shared<'_, '_>,
    jobs: &Mutex<mpsc::Receiver<Vec<Job>>>,
    done: mpsc::Sender<Vec<Done>>,
) {
    let mut small = Buffers::default();
    loop {
        let batch = match jobs.lock().recv() {
            Ok(b) => b,
            Err(_) => return,
        };
        let mut back = Vec::with_capacity(batch.len());
        for job in batch {
            back.push(read_job(sh, job, &mut small));
        }
        if done.send(back).is_err() {
            return;
        }
    }
}

/// One file of a batch.
pub(super) fn read_job(sh: &Shared<'_, '_>, mut job: Job, small: &mut Buffers) -> Done {
    {
        // A panic in a read (a bug) must not leave the walker waiting for
        // a result that never comes: it comes back as a store error.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if sh.stop.load(Ordering::Relaxed) || sh.progress.cancelled() {
                Err(ReadError::Stopped)
            } else if job.listed.size >= BIG_FILE {
                let mut buf = sh.take_big();
                let r = read_one(&mut job.file, &job.path, job.listed, &mut buf, sh);
                sh.give_big(buf);
                r
            } else {
                read_one(&mut job.file, &job.path, job.listed, small, sh)
            }
        }))
        .unwrap_or_else(|_| {
            Err(ReadError::Store(Error::failed(format!(
                "{}: internal error while reading (see the log)",
                job.path.display()
            ))))
        });
        if matches!(result, Err(ReadError::Store(_))) {
            sh.stop.store(true, Ordering::Relaxed);
        }
        Done {
            dir: job.dir,
            idx: job.idx,
            path: job.path,
            result,
        }
    }
}

/// Read, chunk and store the data extents (holes stay holes) of the
/// regular file open as `f`: the walker's descriptor, whose fstat gave
/// the entry's metadata (`listed`). It is never opened again by name.
///
/// Holes are trusted only in a file that did not change since it was
/// listed, while they were mapped and its data read. SEEK_DATA and
/// SEEK_HOLE answer for the file as it is at each call: a truncation
/// between two of them ends the map early, and the file may then grow
/// back over what the map calls a hole (tests/reliability/changing.sh
/// restored zeros inside a file that never had one). Such a file is read
/// again whole, its holes read as whatever it holds there, so every byte
/// stored is one the file had.
pub(super) fn read_one(
    f: &mut std::fs::File,
    path: &Path,
    listed: FileState,
    bufs: &mut Buffers,
    sh: &Shared<'_, '_>,
) -> std::result::Result<FileRead, ReadError> {
    let size = listed.size;
    let extents = sys::data_extents(f.as_raw_fd(), size)
        .map_err(|e| source(path, "cannot find data extents", e))?;
    let mapped: u64 = extents.iter().map(|(s, e)| e - s).sum();
    let read = read_extents(f, path, &extents, bufs, sh)?;
    if mapped < size && read.after != listed {
        return read_extents(f, path, &[(0, size)], bufs, sh);
    }
    Ok(read)
}

/// A failure of the source file at `path` while `what`.
fn source(path: &Path, what: &str, e: std::io::Error) -> ReadError {
    ReadError::Source(Error::io(format!("{}: {what}", path.display()), e))
}

/// Read, chunk and store `extents` of `f` ([`read_one`]), then fstat it.
fn read_extents(
    f: &mut std::fs::File,
    path: &Path,
    extents: &[(u64, u64)],
    bufs: &mut Buffers,
    sh: &Shared<'_, '_>,
) -> std::result::Result<FileRead, ReadError> {
    let Buffers { read: buf, out } = bufs;
    let src = |what: &str, e: std::io::Error| source(path, what, e);
    let mut chunks = Vec::new();
    let mut bytes = 0;
    let mut eof_at = None;
    let mut store_err: Option<Error> = None;
    for &(start, end) in extents {
        let read = sh.cdc.split_with(
            ReadAt { f, pos: start }.take(end - start),
            buf,
            end - start,
            |off, data| {
                sh.progress.add_read(data.len() as u64);
                match sh.put(BlobKind::Data, data, out) {
                    Ok(id) => {
                        chunks.push(ChunkRef {
                            id,
                            offset: start + off,
                            len: data.len() as u32,
                        });
                        Ok(())
                    }
                    Err(e) => {
                        store_err = Some(e);
                        Err(std::io::Error::other("store failed"))
                    }
                }
            },
        );
        if let Some(e) = store_err.take() {
            return Err(ReadError::Store(e));
        }
        let n = read.map_err(|e| src("cannot read", e))?;
        bytes += n;
        if n < end - start {
            // The file ended before this extent did: it was truncated
            // while read. What follows is not the file's any more.
            eof_at = Some(start + n);
            break;
        }
    }
    let after = FileState::of(&f.metadata().map_err(|e| src("stat", e))?);
    Ok(FileRead {
        chunks,
        bytes,
        eof_at,
        after,
    })
}

/// Reads `f` from `pos` on with `pread`: no `lseek` back to each
/// extent's start after SEEK_DATA/SEEK_HOLE left the offset at the end
/// (one system call fewer per file, 78,579 in a kernel tree's first
/// backup; docs/bench/session12-tree.md).
struct ReadAt<'f> {
    f: &'f std::fs::File,
    pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.f.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// File reads out at most: [`MAX_INFLIGHT`], or fewer when the limit on
/// open files is low (each read out holds its file open, and the walk one
/// descriptor per directory level). main raises the soft limit to the
/// hard one; a quarter of it is left to reads.
pub(super) fn max_inflight() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct.
    let cur = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    ((cur / 4) as usize).clamp(BATCH_FILES, MAX_INFLIGHT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Repo;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    /// A sparse file: 64 KiB of data, a 4 MiB hole, 64 KiB of data.
    fn sparse_file(path: &Path) -> std::fs::File {
        let f = std::fs::File::create(path).unwrap();
        f.write_all_at(&[7u8; 64 << 10], 0).unwrap();
        f.write_all_at(&[9u8; 64 << 10], (4 << 20) + (64 << 10))
            .unwrap();
        f.sync_all().unwrap();
        std::fs::File::open(path).unwrap()
    }

    /// Holes are trusted only in a file unchanged since it was listed: an
    /// unchanged sparse file is read by its data extents alone, one that
    /// changed after its listing is read whole (a hole in its map may be
    /// a truncation it grew back over), and both store its bytes.
    #[test]
    fn holes_are_trusted_only_in_a_file_unchanged_since_listed() {
        let dir = tempfile::tempdir().unwrap();
        Repo::create(&dir.path().join("v")).unwrap();
        let repo = Repo::open(&dir.path().join("v"), "v").unwrap();
        let writer = Mutex::new(RepoWriter::new(&repo, true));
        let cdc = Cdc::new(repo.key().chunker_seed());
        let progress = Progress::new(0);
        let sh = Shared::for_test(&writer, &cdc, &progress, None);
        let path = dir.path().join("sparse");
        let mut bufs = Buffers::default();
        let data_bytes = 2 * (64u64 << 10);

        let mut f = sparse_file(&path);
        let listed = FileState::of(&f.metadata().unwrap());
        let size = listed.size;
        let read = read_one(&mut f, &path, listed, &mut bufs, &sh)
            .ok()
            .unwrap();
        assert_eq!(read.bytes, data_bytes, "unchanged: only the data is read");
        assert_eq!(read.after, listed);

        // Changed after its listing (a byte appended): the map is not
        // trusted, and the file is read whole up to its listed size.
        let mut f = sparse_file(&path);
        let listed = FileState::of(&f.metadata().unwrap());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[7u8])
            .unwrap();
        let read = read_one(&mut f, &path, listed, &mut bufs, &sh)
            .ok()
            .unwrap();
        assert_eq!(read.after.size, size + 1);
        assert_eq!(read.bytes, size, "changed: read whole, holes included");
        let covered: u64 = read.chunks.iter().map(|c| c.len as u64).sum();
        assert_eq!(covered, size);
        assert_eq!(read.eof_at, None);
    }
}
