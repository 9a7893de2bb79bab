//! The writers of file contents: the walk (one thread) makes every entry,
//! creates each regular file descriptor-relative with O_EXCL/O_NOFOLLOW as
//! before, and hands the open file to a small pool of workers that read its
//! chunks (decompress, decrypt, verify) and write them through that
//! descriptor only, then set its size, owner, mode, xattrs and times (after
//! the data) through the same descriptor. A directory's own metadata is set
//! only once every file given out inside it is finished; a worker's error
//! is recorded as the walk would have recorded it (the file named, the file
//! removed, an out-of-space error ending the restore).
//!
//! Why: restore of many files was bound by one core (zstd, BLAKE3 or
//! ChaCha, file creation); the walk stays one thread so that names,
//! directories, hard links and directory times keep their order.
//!
//! Files go to the workers in batches ([`BATCH`]), and come back as one
//! message per batch: a hand-off per file cost a futex wake-up each way,
//! some 11 % of an S3 restore's CPU (perf, 78,579 files). A directory
//! whose files are still being written does not hold the walk up: its
//! metadata is set when its last file is finished (`Pool::deferred`).

use super::entry::{finish_file, FileCtx};
use super::tree::Restorer;
use crate::engine::reader::ChunkCache;
use crate::error::{Error, Result};
use crate::model::Node;
use crate::sys;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

/// Most workers a restore may be told to use.
const MAX_THREADS: usize = 64;

/// Files handed to a worker at once, unless their sizes reach
/// [`BATCH_BYTES`] first: a large file goes alone, so that the workers
/// share the large files' work.
const BATCH: usize = 8;

/// Bytes of files' recorded sizes that end a batch.
const BATCH_BYTES: u64 = 1 << 20;

/// Each worker's chunk cache: the single-threaded restore's size, so that a
/// large file's read-ahead works as it did.
const WORKER_CACHE: usize = 16 << 20;

/// One file to write: created (empty) by the walk, with its directory's
/// descriptor (one duplicate per directory, shared by its files: a dup
/// and a close per file were two of the dozen system calls a small file
/// costs), only to remove the file again if it fails.
pub(super) struct Job {
    pub(super) file: File,
    pub(super) dir: Arc<OwnedFd>,
    pub(super) node: Node,
    pub(super) rel: Vec<u8>,
    /// The walk's number of the directory it is in.
    pub(super) dir_id: u64,
}

/// A finished job: bytes written, xattr failures, or why the file failed.
struct Done {
    dir_id: u64,
    result: Result<u64>,
    notes: Vec<String>,
}

/// The walk's side of the pool.
pub(super) struct Pool {
    /// None once closed: the workers end when the queue is empty.
    jobs: Option<SyncSender<Vec<Job>>>,
    done: Receiver<Vec<Done>>,
    /// Jobs given out and not yet finished, per directory.
    outstanding: HashMap<u64, usize>,
    /// Files given out but not yet sent, and their recorded bytes.
    batch: Vec<Job>,
    batch_bytes: u64,
    /// Directories done by the walk whose files are not all finished: its
    /// descriptor, metadata and place, set once they are (bounded by the
    /// files in flight: each has one at least).
    deferred: HashMap<u64, (OwnedFd, Node, Vec<u8>)>,
}

impl Pool {
    /// Send the files waiting in the batch to the workers.
    fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_bytes = 0;
        let batch = std::mem::take(&mut self.batch);
        let ended = || Error::failed("restore: the file writers ended before the restore did");
        self.jobs
            .as_ref()
            .ok_or_else(ended)?
            .send(batch)
            .map_err(|_| ended())
    }
}

/// Worker threads for restore: `CBRFS_RESTORE_THREADS`, else the cores
/// (2 to 4). One means no pool: files are written by the walk.
pub(super) fn thread_count() -> Result<usize> {
    match std::env::var("CBRFS_RESTORE_THREADS") {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
            _ => Err(Error::invalid(format!(
                "CBRFS_RESTORE_THREADS={}: give a number of restore threads from 1 to {MAX_THREADS}",
                crate::quote::quote(&v)
            ))),
        },
        Err(_) => Ok(std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4))),
    }
}

/// A worker: take batches of jobs until the walk closes the queue.
fn work(ctx: FileCtx, jobs: Arc<Mutex<Receiver<Vec<Job>>>>, done: Sender<Vec<Done>>) {
    loop {
        // The lock is held only to take one batch.
        let batch = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(batch) = batch else { return };
        let finished: Vec<Done> = batch.into_iter().map(|job| one(&ctx, job)).collect();
        if done.send(finished).is_err() {
            return;
        }
    }
}

/// Write one file of a batch.
fn one(ctx: &FileCtx, job: Job) -> Done {
    let mut notes = Vec::new();
    let result = finish_file(ctx, &job.file, &job.node, &job.rel, &mut notes, false);
    let result = match result {
        Ok((bytes, _)) => Ok(bytes),
        Err(e) => {
            // As the walk does: a file whose data could not all be
            // restored is removed, never left with zeros for contents.
            drop(job.file);
            let _ = sys::unlink_at(&job.dir, &job.node.name);
            Err(e)
        }
    };
    drop(job.dir);
    Done {
        dir_id: job.dir_id,
        result,
        notes,
    }
}

impl<'a> Restorer<'a> {
    /// Run `walk` with a pool of `threads` workers writing files (none
    /// with one thread); every job is finished before this returns.
    pub(super) fn with_pool<T>(
        &mut self,
        threads: usize,
        walk: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        if threads <= 1 || self.pool.is_some() {
            return walk(self);
        }
        // Bounded: at most as many batches as workers wait, each file
        // holding a descriptor and its node (the directory's is shared).
        let (jobs_tx, jobs_rx) = sync_channel::<Vec<Job>>(threads);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, done_rx) = channel::<Vec<Done>>();
        std::thread::scope(|s| {
            for _ in 0..threads {
                let mut ctx = self.file_ctx();
                ctx.cache = ChunkCache::new(WORKER_CACHE);
                let (rx, tx) = (jobs_rx.clone(), done_tx.clone());
                s.spawn(move || work(ctx, rx, tx));
            }
            // Only the workers hold senders: if they all ended, waiting
            // for a result ends with an error instead of hanging.
            drop(done_tx);
            self.pool = Some(Pool {
                jobs: Some(jobs_tx),
                done: done_rx,
                outstanding: HashMap::new(),
                batch: Vec::with_capacity(BATCH),
                batch_bytes: 0,
                deferred: HashMap::new(),
            });
            let r = walk(self);
            self.dir_share = None;
            // Close the queue and take every result, also after an error:
            // the files already given out are finished or removed.
            let mut first = match self.pool.as_mut() {
                Some(pool) => pool.flush(),
                None => Ok(()),
            };
            if let Some(pool) = self.pool.as_mut() {
                pool.jobs = None;
            }
            while let Some(Ok(ds)) = self.pool.as_ref().map(|p| p.done.recv()) {
                for d in ds {
                    let t = self.took(d);
                    if first.is_ok() {
                        first = t;
                    }
                }
            }
            // Directories whose files could not all be taken back (the
            // workers ended): their metadata all the same, as before.
            let left: Vec<_> = match self.pool.take() {
                Some(pool) => pool.deferred.into_values().collect(),
                None => Vec::new(),
            };
            for (fd, m, rel) in left {
                if let Err(e) = self.dir_metadata(&fd, &m, &rel) {
                    self.failed_entry(e);
                }
            }
            let finished = first;
            match (r, finished) {
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(e),
                (Ok(v), Ok(())) => Ok(v),
            }
        })
    }

    /// Give a file to the pool (sent with the next full batch), then take
    /// the results already in.
    pub(super) fn submit(&mut self, job: Job) -> Result<()> {
        let Some(pool) = self.pool.as_mut() else {
            return Err(Error::failed("restore: no pool of writers"));
        };
        *pool.outstanding.entry(job.dir_id).or_default() += 1;
        pool.batch_bytes = pool.batch_bytes.saturating_add(job.node.size);
        pool.batch.push(job);
        if pool.batch.len() >= BATCH || pool.batch_bytes >= BATCH_BYTES {
            pool.flush()?;
        }
        loop {
            let ds = match self.pool.as_ref().map(|p| p.done.try_recv()) {
                Some(Ok(ds)) => ds,
                _ => return Ok(()),
            };
            for d in ds {
                self.took(d)?;
            }
        }
    }

    /// Directory `dir_id` (open as `fd`, at `rel`) has all its entries:
    /// give it its metadata `meta` now, or once the files given out in it
    /// are finished (their failure would remove one, changing its mtime;
    /// its mode may forbid that), without holding the walk up.
    pub(super) fn dir_done(&mut self, dir_id: u64, fd: OwnedFd, meta: Node, rel: Vec<u8>) {
        if let Some(pool) = self.pool.as_mut() {
            if pool.outstanding.get(&dir_id).is_some_and(|n| *n > 0) {
                pool.deferred.insert(dir_id, (fd, meta, rel));
                return;
            }
        }
        if let Err(e) = self.dir_metadata(&fd, &meta, &rel) {
            self.failed_entry(e);
        }
    }

    /// Wait until every file given out in directory `dir_id` is finished
    /// (before the directory's own times and mode are set).
    pub(super) fn wait_dir(&mut self, dir_id: u64) -> Result<()> {
        if let Some(pool) = self.pool.as_mut() {
            pool.flush()?;
        }
        loop {
            let Some(pool) = self.pool.as_ref() else {
                return Ok(());
            };
            if pool.outstanding.get(&dir_id).copied().unwrap_or(0) == 0 {
                return Ok(());
            }
            let ds = pool.done.recv().map_err(|_| {
                Error::failed("restore: the file writers ended before the restore did")
            })?;
            for d in ds {
                self.took(d)?;
            }
        }
    }

    /// Count a finished file, or record its failure as the walk would: an
    /// error that ends the restore is returned.
    fn took(&mut self, d: Done) -> Result<()> {
        let mut finished_dir = None;
        if let Some(pool) = self.pool.as_mut() {
            if let Some(n) = pool.outstanding.get_mut(&d.dir_id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    pool.outstanding.remove(&d.dir_id);
                    finished_dir = pool.deferred.remove(&d.dir_id);
                }
            }
        }
        self.noted(d.notes);
        let result = self.took_file(d.result);
        // Its directory's last file: the directory's metadata now.
        if let Some((fd, m, rel)) = finished_dir {
            if let Err(e) = self.dir_metadata(&fd, &m, &rel) {
                self.failed_entry(e);
            }
        }
        result
    }

    /// Count a finished file, or record its failure.
    fn took_file(&mut self, result: Result<u64>) -> Result<()> {
        match result {
            Ok(bytes) => {
                self.stats.files += 1;
                self.stats.bytes += bytes;
                Ok(())
            }
            Err(e) if self.is_fatal(&e) => Err(self.stop(e)),
            Err(e) => {
                self.failed_entry(e);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::budget::Budget;
    use super::*;
    use crate::model::{self, ChunkRef, Content, NodeKind, Tree};
    use crate::store::{BlobId, BlobKind, Repo, RepoWriter};
    use crate::testkit::pseudo_random;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    /// A file node of `chunks` (each written as a data blob), with a mode
    /// and a time of its own.
    fn file(w: &mut RepoWriter, name: &str, chunks: &[Vec<u8>], t: i64) -> Node {
        let mut n = Node::new(name.as_bytes().to_vec(), NodeKind::File);
        let mut refs = Vec::new();
        let mut off = 0u64;
        for c in chunks {
            let id = w.add(BlobKind::Data, c).unwrap().id;
            refs.push(ChunkRef {
                id,
                offset: off,
                len: c.len() as u32,
            });
            off += c.len() as u64;
        }
        n.size = off;
        n.mode = 0o640;
        n.mtime_ns = t * 1_000_000_000 + 7;
        n.content = Content::Chunks(refs);
        n
    }

    fn tree(w: &mut RepoWriter, mut entries: Vec<Node>) -> BlobId {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let t = model::encode_tree(&Tree { entries }).unwrap();
        w.add(BlobKind::Tree, &t).unwrap().id
    }

    /// Every entry below `root`: path, kind and mode, mtime, contents' hash.
    fn listing(root: &Path) -> Vec<(String, u32, i64, i64, String)> {
        let mut out = Vec::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let md = std::fs::symlink_metadata(&p).unwrap();
                // A hash keeps a failure's message short.
                let data = if md.is_file() {
                    blake3::hash(&std::fs::read(&p).unwrap())
                        .to_hex()
                        .to_string()
                } else {
                    todo.push(p.clone());
                    String::new()
                };
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, md.mode(), md.mtime(), md.mtime_nsec(), data));
            }
        }
        out.sort();
        out
    }

    /// Several workers restore the same tree as one does (contents, modes,
    /// times of files and directories), and a file whose chunk cannot be
    /// read is reported by name and removed, the same way with both.
    #[test]
    fn several_workers_restore_what_one_does_and_name_a_failed_file() {
        let dir = tempfile::tempdir().unwrap();
        Repo::create(dir.path()).unwrap();
        let repo = Repo::open(dir.path(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, false);
        let mut top = Vec::new();
        let mut seed = 1;
        for d in 0..6 {
            let mut entries = Vec::new();
            for f in 0..40 {
                seed += 1;
                let len = (seed as usize * 37) % 3000;
                entries.push(file(
                    &mut w,
                    &format!("f{f}"),
                    &[pseudo_random(len, seed)],
                    seed as i64,
                ));
            }
            let mut sub = Node::new(format!("d{d}").into_bytes(), NodeKind::Dir);
            sub.mode = 0o750;
            sub.mtime_ns = (1000 + d) * 1_000_000_000 + 3;
            sub.subtree = Some(tree(&mut w, entries));
            top.push(sub);
        }
        // Large files: past the read-ahead threshold, so each worker's
        // file also has its helper threads.
        for (i, name) in ["big1", "big2"].iter().enumerate() {
            let chunks: Vec<Vec<u8>> = (0..9)
                .map(|k| pseudo_random(1 << 20, 100 * i as u64 + k))
                .collect();
            top.push(file(&mut w, name, &chunks, 50 + i as i64));
        }
        // A file whose last chunk is in no pack: its worker fails after
        // writing the rest, and removes it (which changes its directory's
        // mtime: the directory's times must be set after that).
        let mut chunks: Vec<Vec<u8>> = (0..6).map(|k| pseudo_random(1 << 20, 300 + k)).collect();
        chunks.push(b"x".to_vec());
        let mut bad = file(&mut w, "bad", &chunks, 9);
        if let Content::Chunks(c) = &mut bad.content {
            if let Some(last) = c.last_mut() {
                last.id = BlobId([0xab; 16]);
            }
        }
        let mut inner = vec![bad];
        inner.push(file(&mut w, "ok", &[b"fine".to_vec()], 10));
        let mut holder = Node::new(b"holder".to_vec(), NodeKind::Dir);
        holder.mode = 0o700;
        holder.mtime_ns = 2_000_000_000;
        holder.subtree = Some(tree(&mut w, inner));
        top.push(holder);
        let root = tree(&mut w, top);
        w.finish().unwrap();
        let rec = crate::testkit::record(vec![]);
        let mut results = Vec::new();
        for threads in [1, 4] {
            let out = dir.path().join(format!("out{threads}"));
            std::fs::create_dir(&out).unwrap();
            let fd = sys::open_dir(&out).unwrap();
            let budget = Budget {
                backup: "b".into(),
                resource: "r".into(),
                max_entries: 1000,
                max_bytes: 1 << 30,
                entries: 0,
                bytes: 0,
            };
            let mut r = Restorer::new(&repo, &rec, fd.try_clone().unwrap(), &out, budget);
            r.threads = threads;
            r.restore_tree(fd, root, Vec::new(), None, true).unwrap();
            assert_eq!(r.stats.errors.len(), 1, "{:?}", r.stats.errors);
            let shown = format!("{}/holder/bad", out.display());
            assert!(
                r.stats.errors[0].starts_with(&shown),
                "{:?}",
                r.stats.errors
            );
            assert!(!out.join("holder/bad").exists());
            assert_eq!(r.stats.files, 6 * 40 + 2 + 1);
            results.push((r.stats.files, r.stats.bytes, r.stats.dirs, listing(&out)));
        }
        let (one, many) = (&results[0], &results[1]);
        assert_eq!(one.3.len(), 6 * 41 + 2 + 2);
        assert!(one.3.iter().any(|e| e.0 == "d3" && e.2 == 1003 && e.3 == 3));
        assert!(one.3.iter().any(|e| e.0 == "holder" && e.2 == 2));
        assert_eq!(one, many);
    }
}
