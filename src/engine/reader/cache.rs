//! The mount's and restore's cache of verified chunks, bounded in bytes,
//! and the helper threads that fill it ahead of the readers
//! ([`super::for_each_chunk`], [`ChunkCache::prefetch_all`]).

use crate::error::{Error, Result};
use crate::model::ChunkRef;
use crate::store::{BlobId, Repo};
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A cache of verified chunks, bounded in bytes, shared by the readers of
/// one mount or one restore (and by the threads that read ahead for them,
/// [`ChunkCache::prefetch`], [`for_each_chunk`]), so a chunk read in pieces
/// or wanted by two threads at once is fetched and verified once: a thread
/// that asks for a chunk another is loading waits for it. A chunk leaves
/// when a read reaches its last byte (a streaming reader is done with it),
/// or first in, first out once the cache is full (random readers).
/// Cloning gives another handle on the same cache.
#[derive(Clone)]
pub struct ChunkCache {
    shared: Arc<CacheShared>,
}

struct CacheShared {
    inner: Mutex<CacheInner>,
    /// Signalled whenever a load ends (done or failed).
    loaded: Condvar,
    cap_bytes: usize,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<BlobId, Slot>,
    /// Insertion order for eviction, with each insertion's generation: an
    /// entry whose generation is no longer the map's was removed (a chunk
    /// read to its end) and is skipped, so removal costs no search.
    order: VecDeque<(BlobId, u64)>,
    /// Bytes of the ready chunks.
    bytes: usize,
    generation: u64,
    /// Bytes of prefetches queued or running (bounded: see
    /// [`ChunkCache::prefetch`]).
    ahead: usize,
    /// Chunks asked for so far ([`ChunkCache::get`]): counting is all a
    /// read pays for the idle check ([`ChunkCache::release_if_idle`]),
    /// which compares it between its own calls (no clock read per chunk).
    uses: u64,
    /// `uses` when the idle check last saw it change, and when.
    seen: Option<(u64, std::time::Instant)>,
    /// True once the memory was given back after the last reads.
    released: bool,
    /// Read-ahead jobs queued so far (for tests).
    jobs: u64,
    /// Chunks decoded into the cache so far (for tests).
    loads: u64,
}

enum Slot {
    /// Verified bytes, and the generation they were inserted with.
    Ready(Arc<Vec<u8>>, u64),
    /// A thread is reading and verifying it; `waited`: another thread
    /// waits for it (to be woken when it is done).
    Loading { waited: bool },
}

/// What [`ChunkCache::claim`] found.
pub(super) enum Claim {
    Ready(Arc<Vec<u8>>),
    /// Marked loading: the caller loads it.
    Mine,
    /// Another thread loads it (only when not waiting).
    Busy,
}

/// A claim on a chunk this thread took ([`ChunkCache::claim`]) to decode
/// it elsewhere than into the cache, given up ([`ChunkCache::unclaim`])
/// when dropped: after the read, and also should the read unwind (a bug
/// met on some damaged input), else every other reader of this chunk
/// would wait for it for ever, as [`ChunkCache::load`] guards against.
pub(super) struct Unclaim<'a>(pub(super) &'a ChunkCache, pub(super) BlobId);

impl Drop for Unclaim<'_> {
    fn drop(&mut self) {
        self.0.unclaim(&self.1);
    }
}

impl ChunkCache {
    /// A cache holding at most `cap_bytes` of chunk data (at least one chunk).
    pub fn new(cap_bytes: usize) -> Self {
        ChunkCache {
            shared: Arc::new(CacheShared {
                inner: Mutex::new(CacheInner::default()),
                loaded: Condvar::new(),
                cap_bytes,
            }),
        }
    }

    /// Drop chunk `id` (a reader read up to its end).
    pub fn done(&self, id: &BlobId) {
        let mut g = self.shared.inner.lock();
        if let Some(Slot::Ready(v, _)) = g.map.get(id) {
            let n = v.len();
            if let Some(Slot::Ready(v, _)) = g.map.remove(id) {
                recycle(v);
            }
            g.bytes -= n;
            // Order entries of removed chunks are skipped when popped; they
            // are dropped here once they outnumber the live ones, so the
            // queue stays proportional to the cache.
            if g.order.len() > 2 * g.map.len() + 64 {
                let CacheInner { map, order, .. } = &mut *g;
                order
                    .retain(|(id, gen)| matches!(map.get(id), Some(Slot::Ready(_, g)) if g == gen));
            }
        }
    }

    /// The most bytes it holds.
    pub fn cap_bytes(&self) -> usize {
        self.shared.cap_bytes
    }

    /// Bytes held (for tests).
    pub fn held_bytes(&self) -> usize {
        self.shared.inner.lock().bytes
    }

    /// True if chunk `id` is held or being loaded.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.shared.inner.lock().map.contains_key(id)
    }

    /// True if another thread is reading and verifying chunk `id` now.
    pub fn is_loading(&self, id: &BlobId) -> bool {
        matches!(
            self.shared.inner.lock().map.get(id),
            Some(Slot::Loading { .. })
        )
    }

    /// The verified bytes of chunk `id`: from the cache, from the thread
    /// already loading it (waiting for it), or read and verified here.
    pub fn get(&self, repo: &Repo, id: &BlobId) -> Result<Arc<Vec<u8>>> {
        match self.claim(id, true) {
            Claim::Ready(v) => Ok(v),
            Claim::Mine => self.load(repo, id),
            // Not returned when waiting.
            Claim::Busy => Err(Error::corrupt(format!("chunk {id}: still loading"))),
        }
    }

    /// Load chunk `id` into the cache unless it is held or another thread
    /// is loading it: never waits for another thread (a helper, or a
    /// reader helping with its own request, moves on to the next chunk
    /// instead of sleeping while there is decoding left to do). A failure
    /// is left for the reader that asks for the chunk to meet.
    pub fn fill(&self, repo: &Repo, id: &BlobId) {
        if let Claim::Mine = self.claim(id, false) {
            let _ = self.load(repo, id);
        }
    }

    /// Look chunk `id` up: held, or now this thread's to load (marked
    /// loading), or (with `wait` false) being loaded by another thread.
    /// With `wait`, a chunk another thread loads is waited for.
    pub(super) fn claim(&self, id: &BlobId, wait: bool) -> Claim {
        let sh = &*self.shared;
        let mut g = sh.inner.lock();
        g.uses = g.uses.wrapping_add(1);
        loop {
            match g.map.get_mut(id) {
                Some(Slot::Ready(v, _)) => return Claim::Ready(v.clone()),
                Some(Slot::Loading { waited }) if wait => {
                    // The loader wakes the waiters only of a chunk someone
                    // waits for: a reader waiting for one chunk is not
                    // woken by every other chunk loaded meanwhile (64 to
                    // each of the kernel's 1 MiB requests of a disk).
                    *waited = true;
                    sh.loaded.wait(&mut g);
                }
                Some(Slot::Loading { .. }) => return Claim::Busy,
                None => break,
            }
        }
        g.map.insert(*id, Slot::Loading { waited: false });
        Claim::Mine
    }

    /// Give up the claim on chunk `id` this thread took ([`Self::claim`])
    /// and decoded elsewhere than into the cache (a request's buffer,
    /// [`super::assemble`]): its slot goes, and a thread waiting for it
    /// reads it itself.
    pub(super) fn unclaim(&self, id: &BlobId) {
        let sh = &*self.shared;
        let waited = {
            let mut g = sh.inner.lock();
            match g.map.get(id) {
                Some(Slot::Loading { waited }) => {
                    let w = *waited;
                    g.map.remove(id);
                    w
                }
                _ => false,
            }
        };
        if waited {
            sh.loaded.notify_all();
        }
    }

    /// Read and verify chunk `id`, claimed by this thread ([`Self::claim`]),
    /// and put it in the cache.
    pub(super) fn load(&self, repo: &Repo, id: &BlobId) -> Result<Arc<Vec<u8>>> {
        let sh = &*self.shared;
        // Should the read unwind (a bug met on some damaged input), the
        // slot must not stay Loading: every other reader of this chunk
        // would wait for it for ever (a mount's reads hanging instead of
        // failing).
        struct Unwinding<'a>(&'a CacheShared, BlobId);
        impl Drop for Unwinding<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.inner.lock().map.remove(&self.1);
                    self.0.loaded.notify_all();
                }
            }
        }
        let guard = Unwinding(sh, *id);
        let read = repo.read_blob(id).map(Arc::new);
        drop(guard);
        let mut g = sh.inner.lock();
        let waited = matches!(g.map.remove(id), Some(Slot::Loading { waited: true }));
        let out = match read {
            Ok(data) => {
                // Evict first in, first out; never the chunks being loaded
                // (not counted in `bytes`), nor order entries gone stale.
                while g.bytes + data.len() > sh.cap_bytes {
                    let Some((old, gen)) = g.order.pop_front() else {
                        break;
                    };
                    if let Some(Slot::Ready(v, g2)) = g.map.get(&old) {
                        if *g2 == gen {
                            let n = v.len();
                            if let Some(Slot::Ready(v, _)) = g.map.remove(&old) {
                                recycle(v);
                            }
                            g.bytes -= n;
                        }
                    }
                }
                g.loads += 1;
                g.generation += 1;
                let gen = g.generation;
                g.order.push_back((*id, gen));
                g.bytes += data.len();
                g.map.insert(*id, Slot::Ready(data.clone(), gen));
                Ok(data)
            }
            // Nothing kept: a waiter reads it again itself and gets its
            // own error (an error is not shared between threads).
            Err(e) => Err(e),
        };
        drop(g);
        if waited {
            sh.loaded.notify_all();
        }
        out
    }

    /// Read and verify chunk `c` on the shared helper threads, into this
    /// cache ([`ChunkCache::prefetch_all`] of one chunk).
    pub fn prefetch(&self, repo: &Arc<Repo>, c: &ChunkRef) {
        self.prefetch_all(repo, std::slice::from_ref(c), None);
    }

    /// Read and verify `chunks` on the shared helper threads, into this
    /// cache, except those held or loading already; a failure is left for
    /// the reader that asks for it to meet (and report). At most half the
    /// cache's size is queued or loading at once: the chunks beyond that
    /// are not queued (their reader reads them itself), so memory stays
    /// bounded however far a reader asks to look ahead. Chunks go to the
    /// helpers in jobs of about [`JOB_BYTES`], not one by one: a job costs
    /// a helper's wake-up, and a disk's 16 KiB chunks come 64 to the MiB
    /// (issue 17: on two cores, the wake-ups of one job per chunk cost
    /// more than a chunk's decoding).
    ///
    /// `reader`, if given, is how far its reader has read chunks to their
    /// end ([`FileReader::read_with`]): a job skips the chunks that end
    /// there or before. The reader's own threads took those (and dropped
    /// them from the cache when done), so a helper that reached them late
    /// would decode them a second time, for a cache slot nobody reads
    /// (issue 17: with the kernel's 1 MiB requests half the chunks of a
    /// disk image were decoded twice, and the cache filled with them).
    pub fn prefetch_all(
        &self,
        repo: &Arc<Repo>,
        chunks: &[ChunkRef],
        reader: Option<&Arc<AtomicU64>>,
    ) {
        let mut jobs: Vec<(Vec<ChunkRef>, usize)> = Vec::new();
        {
            let mut g = self.shared.inner.lock();
            let mut cur: (Vec<ChunkRef>, usize) = (Vec::new(), 0);
            for c in chunks {
                if g.map.contains_key(&c.id) {
                    continue;
                }
                if g.ahead + c.len as usize > self.shared.cap_bytes / 2 {
                    break;
                }
                g.ahead += c.len as usize;
                cur.0.push(*c);
                cur.1 += c.len as usize;
                if cur.1 >= JOB_BYTES {
                    jobs.push(std::mem::take(&mut cur));
                }
            }
            if !cur.0.is_empty() {
                jobs.push(cur);
            }
            g.jobs += jobs.len() as u64;
        }
        for (chunks, len) in jobs {
            // The job holds the store weakly: a job still queued when its
            // reader (the mount) is gone does nothing, and never keeps a
            // store's mapped files in use after it
            // ([`ChunkCache::wait_idle`]).
            let (cache, repo, reader) = (self.clone(), Arc::downgrade(repo), reader.cloned());
            helpers().submit(Box::new(move || {
                // Counted out even if a read unwinds: else read-ahead
                // would stay off for good once half the cache's worth had.
                struct Queued(ChunkCache, usize);
                impl Drop for Queued {
                    fn drop(&mut self) {
                        self.0.shared.inner.lock().ahead -= self.1;
                        self.0.shared.loaded.notify_all();
                    }
                }
                let queued = Queued(cache, len);
                for c in &chunks {
                    let at = reader.as_ref().map_or(0, |r| r.load(Ordering::Relaxed));
                    if c.offset.saturating_add(c.len as u64) <= at {
                        continue;
                    }
                    let Some(repo) = repo.upgrade() else {
                        break;
                    };
                    queued.0.fill(&repo, &c.id);
                }
            }));
        }
    }

    /// Bytes of prefetches queued or running (for tests).
    #[cfg(test)]
    pub(super) fn ahead_bytes(&self) -> usize {
        self.shared.inner.lock().ahead
    }

    /// Chunks decoded into the cache so far (tests: a request's chunks
    /// are decoded into its own buffer instead).
    #[cfg(test)]
    pub(super) fn loads(&self) -> u64 {
        self.shared.inner.lock().loads
    }

    /// Read-ahead jobs queued so far: zero for a reader that never read
    /// ahead (tests of the mount's random reads).
    pub fn read_ahead_jobs(&self) -> u64 {
        self.shared.inner.lock().jobs
    }

    /// Give the cache's chunks and the decoded-chunk buffer pool back once
    /// no chunk was asked for during `idle` (issue 13: a mount kept up to
    /// 64 MiB more after a burst of reads than before either existed).
    /// Called now and then with the time `now` (the mount's reaper, every
    /// half second; tests pass their own clock): the first call that sees
    /// the count of uses unchanged for `idle` since it changed drops every
    /// ready chunk (not those loading, nor while read-ahead runs) and
    /// empties the pool ([`crate::store::release_buffers`]). True when it
    /// did, once per burst of reads: the caller then gives freed memory
    /// back to the system (`malloc_trim`). A reader that resumes later
    /// decodes again what it had not reached, which costs what the first
    /// read did, once, against holding its memory for ever.
    pub fn release_if_idle(&self, now: std::time::Instant, idle: std::time::Duration) -> bool {
        let mut g = self.shared.inner.lock();
        match g.seen {
            Some((uses, since)) if uses == g.uses => {
                if g.released || g.ahead > 0 || now.saturating_duration_since(since) < idle {
                    return false;
                }
            }
            _ => {
                g.seen = Some((g.uses, now));
                g.released = false;
                return false;
            }
        }
        g.released = true;
        let CacheInner {
            map, order, bytes, ..
        } = &mut *g;
        // Loading slots stay: their threads insert what they read.
        map.retain(|_, s| matches!(s, Slot::Loading { .. }));
        order.clear();
        order.shrink_to_fit();
        map.shrink_to_fit();
        *bytes = 0;
        drop(g);
        crate::store::release_buffers();
        true
    }

    /// Wait until no read-ahead of this cache is queued or running: the
    /// owner (the mount's tree) calls it as it ends, so that no helper
    /// reads its store's files after it (a store's files may then change:
    /// the damage tests rewrite them in place).
    pub fn wait_idle(&self) {
        let mut g = self.shared.inner.lock();
        while g.ahead > 0 {
            self.shared
                .loaded
                .wait_for(&mut g, std::time::Duration::from_millis(50));
        }
    }
}

/// A chunk leaving the cache: its buffer goes back to the store's pool for
/// the next chunk decoded, unless a reader still holds it.
fn recycle(v: Arc<Vec<u8>>) {
    if let Ok(v) = Arc::try_unwrap(v) {
        crate::store::give_buffer(v);
    }
}

/// A job for the helper threads.
type Job = Box<dyn FnOnce() + Send>;

/// Threads that read and verify chunks ahead of the mount's readers: as
/// many as the cores, at most 4, started at the first prefetch.
struct Helpers {
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
}

impl Helpers {
    fn submit(&self, job: Job) {
        self.queue.lock().push_back(job);
        self.ready.notify_one();
    }
}

fn helpers() -> &'static Helpers {
    static HELPERS: std::sync::OnceLock<&'static Helpers> = std::sync::OnceLock::new();
    HELPERS.get_or_init(|| {
        let h: &'static Helpers = Box::leak(Box::new(Helpers {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
        }));
        for i in 0..helper_count() {
            let spawned = std::thread::Builder::new()
                .name(format!("cbrfs-readahead-{i}"))
                .spawn(move || loop {
                    let job = {
                        let mut q = h.queue.lock();
                        loop {
                            match q.pop_front() {
                                Some(j) => break j,
                                None => h.ready.wait(&mut q),
                            }
                        }
                    };
                    // A job that unwinds (a bug) must not end the helper:
                    // read-ahead would stop for the rest of the process.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                });
            if let Err(e) = spawned {
                // Without helpers, queued chunks are never loaded, only
                // counted: readers read them themselves, as before.
                log::warn!("cannot start a read-ahead thread: {e}");
            }
        }
        h
    })
}

/// Threads reading ahead: the cores, at most 4 (decoding is CPU work; more
/// threads than cores only wait).
pub(super) fn helper_count() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
}

/// Bytes of chunks one read-ahead job of [`ChunkCache::prefetch_all`]
/// reads: one chunk of a file's (256 KiB and more), 16 of a disk's.
const JOB_BYTES: usize = 256 << 10;
