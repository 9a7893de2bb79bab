//! Reading a file's bytes out of a backup: resolve its chunk list (inline
//! or in chunk-list blobs), find the chunks covering a range by binary
//! search on their offsets, and fill holes with zeros. Every blob is
//! verified against its id on the way (in [`Repo::read_blob`]).

use crate::error::{Error, Result};
use crate::model::{self, ChunkRef, Content, ListRef, Node};
use crate::store::{BlobId, Repo};
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod cache;
pub use cache::ChunkCache;
use cache::{helper_count, Claim, Unclaim};

/// Resolve the chunk list of one chunk-list blob into absolute chunks,
/// checked against its reference ([`model::resolve_list`]).
pub fn load_list(repo: &Repo, list: &ListRef) -> Result<Vec<ChunkRef>> {
    let rel = model::decode_chunk_list(&repo.read_blob(&list.id)?)?;
    model::resolve_list(list, &rel)
}

/// Every chunk of a file, in order. The node's content was bounds-checked
/// when its tree was decoded ([`model::validate_content`]); it is checked
/// again here for nodes that did not come from a decoded tree, and each
/// list against its blob. Each distinct list is read, checked and held
/// once, however often the file repeats it (repeated data, or a hostile
/// tree repeating one list many times): memory stays with the lists the
/// store really holds, and the chunks are produced as they are iterated.
pub fn all_chunks(repo: &Repo, node: &Node) -> Result<Chunks> {
    model::validate_content(node.size, &node.content)?;
    match &node.content {
        Content::None => Ok(Chunks::default()),
        Content::Chunks(c) => Ok(Chunks {
            inline: c.clone(),
            lists: Vec::new(),
        }),
        Content::Lists(lists) => {
            let mut loaded: HashMap<ListKey, Arc<Vec<ChunkRef>>> = HashMap::new();
            let mut out = Vec::with_capacity(lists.len());
            for l in lists {
                let key = (l.id, l.span, l.count);
                let cs = match loaded.entry(key) {
                    std::collections::hash_map::Entry::Occupied(e) => e.get().clone(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let at_zero = ListRef { offset: 0, ..*l };
                        e.insert(Arc::new(load_list(repo, &at_zero)?)).clone()
                    }
                };
                out.push((l.offset, cs));
            }
            Ok(Chunks {
                inline: Vec::new(),
                lists: out,
            })
        }
    }
}

/// A file's chunks, in order ([`all_chunks`]): iterate to get them.
#[derive(Default)]
pub struct Chunks {
    inline: Vec<ChunkRef>,
    /// Each list's file offset and its chunks relative to it.
    lists: Vec<(u64, Arc<Vec<ChunkRef>>)>,
}

impl Chunks {
    /// The chunks, in file order.
    pub fn iter(&self) -> impl Iterator<Item = ChunkRef> + '_ {
        self.inline
            .iter()
            .copied()
            .chain(self.lists.iter().flat_map(|(base, cs)| {
                cs.iter().map(move |c| ChunkRef {
                    // Within the file's size (checked): no overflow.
                    offset: base.saturating_add(c.offset),
                    ..*c
                })
            }))
    }
}

impl IntoIterator for Chunks {
    type Item = ChunkRef;
    type IntoIter = ChunksIter;
    fn into_iter(self) -> ChunksIter {
        ChunksIter {
            inline: self.inline.into_iter(),
            lists: self.lists.into_iter(),
            cur: None,
        }
    }
}

/// The owning iterator of [`Chunks`]: one list's chunks at a time.
pub struct ChunksIter {
    inline: std::vec::IntoIter<ChunkRef>,
    lists: std::vec::IntoIter<(u64, Arc<Vec<ChunkRef>>)>,
    /// The list being iterated: its offset, chunks, next index.
    cur: Option<(u64, Arc<Vec<ChunkRef>>, usize)>,
}

impl Iterator for ChunksIter {
    type Item = ChunkRef;
    fn next(&mut self) -> Option<ChunkRef> {
        if let Some(c) = self.inline.next() {
            return Some(c);
        }
        loop {
            if let Some((base, cs, i)) = &mut self.cur {
                if let Some(c) = cs.get(*i) {
                    *i += 1;
                    return Some(ChunkRef {
                        offset: base.saturating_add(c.offset),
                        ..*c
                    });
                }
            }
            let (base, cs) = self.lists.next()?;
            self.cur = Some((base, cs, 0));
        }
    }
}

/// The one check of a chunk's bytes against the reference that named
/// them: a chunk must hold exactly the bytes its file expects.
pub fn check_chunk_len(repo: &Repo, c: &ChunkRef, data: &[u8]) -> Result<()> {
    if data.len() != c.len as usize {
        return Err(Error::corrupt(format!(
            "vault {}: chunk {} at offset {} has {} bytes, its file expects {}",
            repo.vault(),
            c.id,
            c.offset,
            data.len(),
            c.len
        )));
    }
    Ok(())
}

/// The blob ids a file references besides its data chunks (its lists).
pub fn list_ids(node: &Node) -> Vec<BlobId> {
    match &node.content {
        Content::Lists(l) => l.iter().map(|l| l.id).collect(),
        _ => Vec::new(),
    }
}

/// Smallest buffer a request's bytes are put together in
/// ([`FileReader::read_with`]): the store's pool keeps buffers from this
/// size up.
const REQUEST_BUF_MIN: usize = 256 << 10;

/// Bytes [`for_each_chunk`] reads ahead of the chunk being used.
pub const READ_AHEAD: usize = 8 << 20;

/// How many helper threads [`for_each_chunk`] should use for a file or disk
/// of `size` bytes: none below a few chunks (starting threads for each of
/// many small files would cost more than it saves).
pub fn read_ahead_workers(size: u64) -> usize {
    if size < 2 * crate::chunker::MAX_SIZE as u64 {
        0
    } else {
        helper_count()
    }
}

/// Call `f` with each chunk of `chunks` and its verified bytes (or why they
/// could not be had), in order,
/// while helper threads read and verify the chunks that follow, up to
/// `ahead` bytes beyond the one `f` has (through `cache`, which must hold
/// more than `ahead` for the work to be of use); this thread, too, while
/// the chunk it wants next is still being decoded by a helper. Decompression, decryption
/// and verification of a large file or disk then run on several cores
/// beside `f`'s writes. With `workers` 0 it is a plain loop. Stops at the
/// first error `f` returns; the helpers stop with it.
pub fn for_each_chunk<I>(
    repo: &Repo,
    cache: &ChunkCache,
    chunks: I,
    workers: usize,
    ahead: usize,
    mut f: impl FnMut(&ChunkRef, Result<Arc<Vec<u8>>>) -> Result<()>,
) -> Result<()>
where
    I: Iterator<Item = ChunkRef> + Send,
{
    if workers == 0 {
        for c in chunks {
            f(&c, cache.get(repo, &c.id))?;
        }
        return Ok(());
    }
    struct Ahead<I> {
        chunks: I,
        /// Chunks taken from `chunks` by the helpers, in order, for `f`.
        taken: VecDeque<ChunkRef>,
        /// Bytes taken but not yet given to `f`.
        pending: usize,
        stop: bool,
    }
    let state = Mutex::new(Ahead {
        chunks,
        taken: VecDeque::new(),
        pending: 0,
        stop: false,
    });
    let moved = Condvar::new();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let c = {
                    let mut g = state.lock();
                    while !g.stop && g.pending >= ahead {
                        moved.wait(&mut g);
                    }
                    if g.stop {
                        return;
                    }
                    let Some(c) = g.chunks.next() else {
                        return;
                    };
                    g.taken.push_back(c);
                    g.pending += c.len as usize;
                    c
                };
                // A failure is met again by `f`'s own read, which reports it.
                cache.fill(repo, &c.id);
            });
        }
        let stop = || {
            state.lock().stop = true;
            moved.notify_all();
        };
        loop {
            let next = {
                let mut g = state.lock();
                match g.taken.pop_front() {
                    Some(c) => {
                        g.pending -= c.len as usize;
                        Some(c)
                    }
                    None => g.chunks.next(),
                }
            };
            moved.notify_all();
            let Some(c) = next else {
                stop();
                return Ok(());
            };
            // While a helper still decodes the chunk `f` wants, this thread
            // decodes the next untaken one (within `ahead`) instead of
            // sleeping: on two cores the helpers' decoding (decompression,
            // decryption) is a restore's critical path, and `f`'s writes
            // leave this thread idle half the time (issue 15: a sealed
            // vault's extra cipher work all fell on the helpers).
            while cache.is_loading(&c.id) {
                let extra = {
                    let mut g = state.lock();
                    if g.stop || g.pending >= ahead {
                        None
                    } else {
                        let x = g.chunks.next();
                        if let Some(x) = x {
                            g.taken.push_back(x);
                            g.pending += x.len as usize;
                        }
                        x
                    }
                };
                match extra {
                    Some(x) => cache.fill(repo, &x.id),
                    None => break,
                }
            }
            let r = f(&c, cache.get(repo, &c.id));
            if r.is_err() {
                stop();
                return r;
            }
        }
    })
}

/// Put the bytes of `[off, end)` together in `buf` (its old bytes replaced) from
/// `chunks`, the chunks overlapping it in file order ([`FileReader::
/// chunks_in`]); holes read as zeros. A chunk read up to its end leaves the
/// cache, and `done_to` (if given) is raised to its end.
fn assemble(
    repo: &Repo,
    cache: &ChunkCache,
    (off, end): (u64, u64),
    chunks: Vec<ChunkRef>,
    buf: &mut Vec<u8>,
    done_to: Option<&AtomicU64>,
) -> Result<()> {
    let want = (end - off) as usize;
    // Every byte is written below (a chunk's, or zeros for a hole), so the
    // bytes a buffer already holds ([`crate::store::take_filled`]) need no
    // zeroing first.
    if buf.len() >= want {
        buf.truncate(want);
    } else {
        buf.resize(want, 0);
    }
    // Where each chunk goes in `buf`, if it lies there whole.
    let whole = |c: &ChunkRef| {
        let c_end = c.offset.saturating_add(c.len as u64);
        (off <= c.offset && c_end <= end)
            .then(|| ((c.offset - off) as usize, (c_end - off) as usize))
    };
    // The chunks of this request that no thread has started on and that
    // lie in it whole are decoded here first, straight into their place
    // (no copy out of a buffer of their own, and no stay in the cache:
    // issue 17, the copy was 8 % of the mount's CPU in a `cat` of a disk
    // image), from the last: the helpers given the request's chunks in
    // order ([`FileReader::read_ahead`]) work from the first, so this
    // thread decodes beside them instead of sleeping until they reach the
    // chunk it waits for (issue 17: the mount's CPU is the decoding, on
    // two cores, and a thread asleep while chunks wait is a core idle).
    let mut placed = vec![false; chunks.len()];
    // A chunk placed twice (repeated data) is decoded once: where it was
    // placed, and its length there (the blob's, checked by
    // [`Repo::read_blob_into`]).
    let mut at: HashMap<BlobId, (usize, usize)> = HashMap::new();
    // Only in a list in order without overlaps (as every backup writes):
    // the hole filling below zeroes what lies before a chunk and beyond
    // those before it, which in a damaged or crafted list out of order
    // could be a chunk placed here.
    let in_order = chunks
        .windows(2)
        .all(|w| w[0].offset.saturating_add(w[0].len as u64) <= w[1].offset);
    for (i, c) in chunks.iter().enumerate().rev().filter(|_| in_order) {
        let Some((from, to)) = whole(c) else {
            continue;
        };
        if let Some(&(src, len)) = at.get(&c.id) {
            // Only at the same length: a crafted list naming the chunk
            // with another is damage, reported below ([`check_chunk_len`]);
            // copied at its length, it took what follows the placed
            // chunk in `buf` (a pooled buffer's old bytes) or ran past
            // its end.
            if len == to - from {
                buf.copy_within(src..src + len, from);
                placed[i] = true;
            }
            continue;
        }
        if let Claim::Mine = cache.claim(&c.id, false) {
            // Given up even if the read unwinds ([`Unclaim`]).
            let claim = Unclaim(cache, c.id);
            let r = repo
                .read_blob_into(&c.id, &mut buf[from..to])
                .map_err(|e| e.context(format!("chunk at offset {}", c.offset)));
            drop(claim);
            r?;
            placed[i] = true;
            at.insert(c.id, (from, to - from));
        }
    }
    // Up to here `buf` holds what the request has read (or zeros).
    let mut upto = 0usize;
    for (c, placed) in chunks.into_iter().zip(placed) {
        let s = off.max(c.offset);
        let e = end.min(c.offset.saturating_add(c.len as u64));
        if s >= e {
            continue;
        }
        let (from, to) = ((s - off) as usize, (e - off) as usize);
        if from > upto {
            // A hole before it reads as zeros.
            buf[upto..from].fill(0);
        }
        if !placed {
            let data = cache.get(repo, &c.id)?;
            check_chunk_len(repo, &c, &data)?;
            // Chunks out of order or overlapping (a damaged or crafted
            // list) are written where they belong, as the others.
            buf[from..to].copy_from_slice(&data[(s - c.offset) as usize..(e - c.offset) as usize]);
            // Released before the cache drops it, so its buffer can be
            // reused.
            drop(data);
        }
        upto = upto.max(to);
        let finished = e == c.offset.saturating_add(c.len as u64);
        if finished {
            cache.done(&c.id);
            if let Some(d) = done_to {
                d.fetch_max(e, Ordering::Relaxed);
            }
        }
    }
    // A hole at the end.
    buf[upto..].fill(0);
    Ok(())
}

/// A chunk list as a file references it: (blob, span, count).
type ListKey = (BlobId, u64, u32);

/// Random access to one file's bytes.
pub struct FileReader {
    size: u64,
    lists: Vec<ListRef>,
    inline: Vec<ChunkRef>,
    /// Why the node's content reference cannot be read, if it cannot
    /// ([`model::validate_content`]): every read fails with it.
    bad: Option<String>,
    /// Loaded lists by (blob, span, count), their chunk offsets relative to
    /// the list's start: a list a file repeats is held once.
    loaded: Mutex<HashMap<ListKey, Arc<Vec<ChunkRef>>>>,
}

impl FileReader {
    /// A reader of `node`'s content.
    pub fn new(node: &Node) -> Self {
        let bad = model::validate_content(node.size, &node.content)
            .err()
            .map(|e| e.to_string());
        let (inline, lists) = match (&node.content, &bad) {
            (_, Some(_)) | (Content::None, _) => (Vec::new(), Vec::new()),
            (Content::Chunks(c), _) => (c.clone(), Vec::new()),
            (Content::Lists(l), _) => (Vec::new(), l.clone()),
        };
        FileReader {
            size: node.size,
            lists,
            inline,
            bad,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// File size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// List `i`'s chunks, their offsets relative to the list's start.
    fn list(&self, repo: &Repo, i: usize) -> Result<Arc<Vec<ChunkRef>>> {
        let l = &self.lists[i];
        let key = (l.id, l.span, l.count);
        if let Some(cs) = self.loaded.lock().get(&key) {
            return Ok(cs.clone());
        }
        let at_zero = ListRef { offset: 0, ..*l };
        let cs = Arc::new(load_list(repo, &at_zero)?);
        self.loaded.lock().insert(key, cs.clone());
        Ok(cs)
    }

    /// The chunks overlapping `[off, end)`.
    fn chunks_in(&self, repo: &Repo, off: u64, end: u64) -> Result<Vec<ChunkRef>> {
        if let Some(why) = &self.bad {
            return Err(Error::corrupt(why.clone()));
        }
        // `cs` starts at file offset `base`. The content was bounds-checked
        // (offset + length within the size); saturating all the same.
        let pick = |cs: &[ChunkRef], base: u64, out: &mut Vec<ChunkRef>| {
            let (from, to) = (off.saturating_sub(base), end.saturating_sub(base));
            let first = cs.partition_point(|c| c.offset.saturating_add(c.len as u64) <= from);
            for c in &cs[first..] {
                if c.offset >= to {
                    break;
                }
                out.push(ChunkRef {
                    offset: base.saturating_add(c.offset),
                    ..*c
                });
            }
        };
        let mut out = Vec::new();
        if self.lists.is_empty() {
            pick(&self.inline, 0, &mut out);
            return Ok(out);
        }
        let first = self
            .lists
            .partition_point(|l| l.offset.saturating_add(l.span) <= off);
        for i in first..self.lists.len() {
            if self.lists[i].offset >= end {
                break;
            }
            let cs = self.list(repo, i)?;
            pick(&cs, self.lists[i].offset, &mut out);
        }
        Ok(out)
    }

    /// True if at least `n` chunks overlap `[off, end)` (false if its
    /// chunk list cannot be read: the read itself reports that).
    pub fn spans_chunks(&self, repo: &Repo, off: u64, end: u64, n: usize) -> bool {
        let end = end.min(self.size);
        off < end && self.chunks_in(repo, off, end).is_ok_and(|c| c.len() >= n)
    }

    /// Read up to `len` bytes at `off` (short only at end of file); holes
    /// read as zeros.
    pub fn read_at(
        &self,
        repo: &Repo,
        cache: &ChunkCache,
        off: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_into(repo, cache, off, len, &mut buf)?;
        Ok(buf)
    }

    /// [`FileReader::read_at`] into `buf` (cleared first): a reader that
    /// keeps one buffer for its requests (the mount's threads) writes into
    /// pages it already has, where a new megabyte buffer for each request
    /// costs a page fault and a zeroed page per 4 KiB (a quarter of the
    /// mount's CPU in a `cat`, by perf).
    pub fn read_into(
        &self,
        repo: &Repo,
        cache: &ChunkCache,
        off: u64,
        len: usize,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        buf.clear();
        if off >= self.size {
            return Ok(());
        }
        let end = off.saturating_add(len as u64).min(self.size);
        let chunks = self.chunks_in(repo, off, end)?;
        assemble(repo, cache, (off, end), chunks, buf, None)
    }

    /// Call `f` with up to `len` bytes at `off`, as [`FileReader::read_at`]
    /// would return them. A range within one chunk (most requests of a
    /// sequential reader of a file: its chunks are 256 KiB to 4 MiB) is
    /// handed over as a slice of the cached chunk, so the mount's reply is
    /// written to the kernel straight from it: no copy of a request's bytes
    /// into a buffer of its own (issue 17). Other ranges (across chunks,
    /// holes) are put together in a buffer from the store's pool, which
    /// goes back when the mount is idle ([`ChunkCache::release_if_idle`]).
    /// `done_to`, if given, is raised to the end of each chunk read to its
    /// end: read-ahead ([`FileReader::read_ahead`]) skips what lies behind.
    pub fn read_with<R>(
        &self,
        repo: &Repo,
        cache: &ChunkCache,
        (off, len): (u64, usize),
        done_to: Option<&AtomicU64>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        if off >= self.size {
            return Ok(f(&[]));
        }
        let end = off.saturating_add(len as u64).min(self.size);
        let chunks = self.chunks_in(repo, off, end)?;
        if let [c] = chunks.as_slice() {
            let c_end = c.offset.saturating_add(c.len as u64);
            if c.offset <= off && end <= c_end {
                let data = cache.get(repo, &c.id)?;
                check_chunk_len(repo, c, &data)?;
                // Within the chunk (checked above), whose length is checked.
                let r = f(&data[(off - c.offset) as usize..(end - c.offset) as usize]);
                drop(data);
                if end == c_end {
                    cache.done(&c.id);
                    if let Some(d) = done_to {
                        d.fetch_max(end, Ordering::Relaxed);
                    }
                }
                return Ok(r);
            }
        }
        // At least the pool's smallest size: such a buffer is mapped on
        // its own and kept in the pool between requests, where one of the
        // kernel's 128 KiB would come from the heap between decoded
        // chunks and leave it fragmented (RssAnon after a `cat` of a disk
        // image: 40-50 MiB against 2-4 MiB).
        let mut buf = crate::store::take_filled((end - off) as usize, REQUEST_BUF_MIN);
        let r = assemble(repo, cache, (off, end), chunks, &mut buf, done_to).map(|()| f(&buf));
        crate::store::give_buffer(buf);
        r
    }

    /// Queue the chunks overlapping `[off, end)` for the helper threads to
    /// read and verify into `cache` ([`ChunkCache::prefetch_all`]): a
    /// sequential reader's next requests then find them ready, and the
    /// chunks of one large request are decoded on several cores. `reader`:
    /// how far the reader has read, if it is kept (chunks behind it are
    /// skipped, [`ChunkCache::prefetch_all`]).
    pub fn read_ahead(
        &self,
        repo: &Arc<Repo>,
        cache: &ChunkCache,
        off: u64,
        end: u64,
        reader: Option<&Arc<AtomicU64>>,
    ) -> Result<()> {
        self.queue(repo, cache, (off, end), reader, 0)
    }

    /// Queue the chunks of one request `[off, end)` after its first for
    /// the helper threads, to be decoded beside the requesting thread (a
    /// random read of many chunks, which reads nothing ahead). Nothing is
    /// queued for a request within one chunk: the requesting thread reads
    /// it at once, and a helper woken for it would only find it taken.
    pub fn read_parallel(
        &self,
        repo: &Arc<Repo>,
        cache: &ChunkCache,
        off: u64,
        end: u64,
        reader: Option<&Arc<AtomicU64>>,
    ) -> Result<()> {
        self.queue(repo, cache, (off, end), reader, 1)
    }

    /// Queue the chunks overlapping `[off, end)` but the first `skip` of
    /// them for the helpers ([`ChunkCache::prefetch_all`]).
    fn queue(
        &self,
        repo: &Arc<Repo>,
        cache: &ChunkCache,
        (off, end): (u64, u64),
        reader: Option<&Arc<AtomicU64>>,
        skip: usize,
    ) -> Result<()> {
        let end = end.min(self.size);
        if off >= end {
            return Ok(());
        }
        let chunks = self.chunks_in(repo, off, end)?;
        if let Some(rest) = chunks.get(skip..).filter(|r| !r.is_empty()) {
            cache.prefetch_all(repo, rest, reader);
        }
        Ok(())
    }

    /// The whole file, its chunks read past the cache (a file read whole
    /// once needs none of them again); holes read as zeros.
    pub fn read_whole(&self, repo: &Repo) -> Result<Vec<u8>> {
        // One chunk covering the whole file (every file under the chunker's
        // minimum size): its verified bytes are the file.
        if let [c] = self.inline.as_slice() {
            if c.offset == 0 && c.len as u64 == self.size {
                let data = repo.read_blob(&c.id)?;
                if data.len() as u64 == self.size {
                    return Ok(data);
                }
            }
        }
        let mut buf = vec![0u8; self.size as usize];
        for c in self.chunks_in(repo, 0, self.size)? {
            let data = repo.read_blob(&c.id)?;
            check_chunk_len(repo, &c, &data)?;
            buf[c.offset as usize..c.offset as usize + data.len()].copy_from_slice(&data);
        }
        Ok(buf)
    }

    /// The data extent at or after `off` (for SEEK_DATA/SEEK_HOLE): the
    /// start of the next chunk at or after `off`, and where that run of
    /// adjacent chunks ends. `None` if only a hole remains.
    pub fn next_data(&self, repo: &Repo, off: u64) -> Result<Option<(u64, u64)>> {
        let cs = self.chunks_in(repo, off, self.size)?;
        let mut it = cs.into_iter();
        let Some(first) = it.next() else {
            return Ok(None);
        };
        let start = first.offset.max(off);
        let mut end = first.offset.saturating_add(first.len as u64);
        for c in it {
            if c.offset != end {
                break;
            }
            end = c.offset.saturating_add(c.len as u64);
        }
        Ok(Some((start, end.min(self.size))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RelChunk;
    use crate::store::{BlobKind, RepoWriter};
    use crate::testkit;
    use proptest::prelude::*;

    fn extreme() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..5000,
            Just(u64::MAX),
            Just(u64::MAX - 1),
            Just(i64::MAX as u64),
            Just(u32::MAX as u64),
            any::<u64>(),
        ]
    }

    fn len() -> impl Strategy<Value = u32> {
        prop_oneof![0u32..5000, Just(u32::MAX), any::<u32>()]
    }

    /// Files whose chunk references (from a damaged or hostile tree or
    /// chunk list) hold any offsets, lengths and sizes, read at any offset:
    /// an error or bytes, never a panic (an overflow panics in debug
    /// builds), and never more bytes than asked.
    #[test]
    fn fuzz_reading_files_with_hostile_chunk_references() {
        let config = testkit::config(512);
        let secs = testkit::deadline(config.cases, 20);
        testkit::within(secs, move || {
            let dir = tempfile::tempdir().unwrap();
            crate::store::Repo::create(dir.path()).unwrap();
            let repo = Repo::open(dir.path(), "v").unwrap();
            let mut w = RepoWriter::new(&repo, false);
            let data: Vec<BlobId> = [1usize, 100, 4096]
                .iter()
                .map(|n| w.add(BlobKind::Data, &vec![9u8; *n]).unwrap().id)
                .collect();
            let rel = |gap: u64, len: u32, i: usize| RelChunk {
                id: data[i % data.len()],
                gap,
                len,
            };
            let lists: Vec<BlobId> = [
                vec![rel(0, 1, 0), rel(10, 100, 1), rel(0, 4096, 2)],
                vec![rel(u64::MAX, 1, 0), rel(0, 100, 1)],
                vec![rel(u64::MAX - 200, 100, 1), rel(0, 4096, 2)],
                vec![rel(0, u32::MAX, 0), rel(u64::MAX, u32::MAX, 1)],
                vec![],
            ]
            .iter()
            .map(|l| {
                w.add(BlobKind::ChunkList, &model::encode_chunk_list(l).unwrap())
                    .unwrap()
                    .id
            })
            .collect();
            w.finish().unwrap();
            let pick = |pool: Vec<BlobId>| {
                prop_oneof![
                    4 => (0..pool.len()).prop_map(move |i| pool[i]),
                    1 => any::<[u8; 16]>().prop_map(BlobId),
                ]
            };
            let chunk = (pick(data.clone()), extreme(), len())
                .prop_map(|(id, offset, len)| ChunkRef { id, offset, len });
            let list = (pick(lists.clone()), extreme(), extreme(), len()).prop_map(
                |(id, offset, span, count)| ListRef {
                    id,
                    offset,
                    span,
                    count,
                },
            );
            let content = prop_oneof![
                Just(Content::None),
                proptest::collection::vec(chunk, 0..5).prop_map(Content::Chunks),
                proptest::collection::vec(list, 0..4).prop_map(Content::Lists),
            ];
            let reads = proptest::collection::vec((extreme(), 0usize..70_000), 1..5);
            let cache = ChunkCache::new(1 << 20);
            let mut runner = proptest::test_runner::TestRunner::new(config);
            runner
                .run(&(extreme(), content, reads), |(size, content, reads)| {
                    let mut node = Node::new(b"f".to_vec(), model::NodeKind::File);
                    node.size = size;
                    node.content = content;
                    let _ = all_chunks(&repo, &node);
                    let f = FileReader::new(&node);
                    for (off, n) in reads {
                        if let Ok(b) = f.read_at(&repo, &cache, off, n) {
                            prop_assert!(b.len() <= n);
                            prop_assert_eq!(b.len() as u64, size.saturating_sub(off).min(n as u64));
                        }
                        if let Ok(Some((s, e))) = f.next_data(&repo, off) {
                            prop_assert!(s >= off && e <= size, "{} {} {}", s, e, size);
                        }
                    }
                    Ok(())
                })
                .unwrap();
        });
    }

    #[test]
    fn a_chunk_read_to_its_end_leaves_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        Repo::create(dir.path()).unwrap();
        let repo = Repo::open(dir.path(), "v").unwrap();
        let a: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        let mut w = RepoWriter::new(&repo, true);
        let ia = w.add(BlobKind::Data, &a).unwrap().id;
        let ib = w.add(BlobKind::Data, &b).unwrap().id;
        w.finish().unwrap();
        let r = FileReader {
            size: (a.len() + b.len()) as u64,
            lists: Vec::new(),
            bad: None,
            inline: vec![
                ChunkRef {
                    id: ia,
                    offset: 0,
                    len: a.len() as u32,
                },
                ChunkRef {
                    id: ib,
                    offset: a.len() as u64,
                    len: b.len() as u32,
                },
            ],
            loaded: Mutex::new(HashMap::new()),
        };
        let cache = ChunkCache::new(32 << 20);
        // Part of the first chunk: it stays for the next read.
        assert_eq!(r.read_at(&repo, &cache, 0, 100_000).unwrap(), &a[..100_000]);
        assert_eq!(cache.held_bytes(), a.len());
        // Up to its end and into the second: the first leaves.
        let got = r.read_at(&repo, &cache, 100_000, 250_000).unwrap();
        assert_eq!(&got[..200_000], &a[100_000..]);
        assert_eq!(&got[200_000..], &b[..50_000]);
        assert_eq!(cache.held_bytes(), b.len());
        // The rest: nothing is held.
        assert_eq!(
            r.read_at(&repo, &cache, 350_000, 1 << 20).unwrap(),
            &b[50_000..]
        );
        assert_eq!(cache.held_bytes(), 0);
        // Reading whole goes past the cache.
        let mut all = a.clone();
        all.extend_from_slice(&b);
        assert_eq!(r.read_whole(&repo).unwrap(), all);
        assert_eq!(cache.held_bytes(), 0);
    }

    /// A request of several chunks that no thread has decoded yet has them
    /// decoded straight into its buffer, not into the cache and copied
    /// from there (issue 17), in a plain and a sealed vault; the bytes are
    /// the file's, holes read as zeros even in a reused buffer that held
    /// other bytes, a chunk the request repeats is decoded once, and a
    /// chunk already in the cache is taken from there.
    #[test]
    fn a_request_decodes_its_chunks_into_its_own_buffer() {
        for encrypted in [false, true] {
            let (_dir, repo, r, all, cache) = cached_file(8, 16 << 10, encrypted, 8 << 20);
            let mut out = Vec::new();
            let got = r
                .read_with(&repo, &cache, (5000, 100_000), None, |b| b.to_vec())
                .unwrap();
            assert_eq!(got, &all[5000..105_000]);
            // The first and last chunks, read in part, go through the cache;
            // the five whole ones between do not.
            assert_eq!(cache.loads(), 2, "encrypted: {encrypted}");
            r.read_into(&repo, &cache, 0, all.len(), &mut out).unwrap();
            assert_eq!(out, all);
            // A chunk held in the cache (the last, read in part above and
            // not to its end) is not decoded again; the others go straight
            // into place.
            assert_eq!(cache.loads(), 2, "encrypted: {encrypted}");
            // Holes and a repeated chunk, into a buffer full of other bytes.
            let c = r.inline.clone();
            let holey = FileReader {
                size: 10 * (16 << 10),
                lists: Vec::new(),
                bad: None,
                inline: vec![
                    ChunkRef {
                        offset: 16 << 10,
                        ..c[1]
                    },
                    ChunkRef {
                        offset: 3 * (16 << 10),
                        ..c[1]
                    },
                    ChunkRef {
                        offset: 4 * (16 << 10),
                        ..c[2]
                    },
                ],
                loaded: Mutex::new(HashMap::new()),
            };
            let fresh = ChunkCache::new(8 << 20);
            let mut want = vec![0u8; 10 * (16 << 10)];
            let k = 16 << 10;
            want[k..2 * k].copy_from_slice(&all[k..2 * k]);
            want[3 * k..4 * k].copy_from_slice(&all[k..2 * k]);
            want[4 * k..5 * k].copy_from_slice(&all[2 * k..3 * k]);
            let mut buf = vec![0xAAu8; 12 * k];
            assemble(
                &repo,
                &fresh,
                (0, 10 * k as u64),
                holey.chunks_in(&repo, 0, 10 * k as u64).unwrap(),
                &mut buf,
                None,
            )
            .unwrap();
            assert!(buf == want, "encrypted: {encrypted}");
            assert_eq!(fresh.loads(), 0, "encrypted: {encrypted}");
            assert_eq!(fresh.held_bytes(), 0);
            // A list out of order (damaged or crafted): each chunk still
            // lands where it belongs, none zeroed as the hole before another.
            let k64 = k as u64;
            let swapped = vec![
                ChunkRef {
                    offset: 4 * k64,
                    ..c[2]
                },
                ChunkRef {
                    offset: k64,
                    ..c[1]
                },
            ];
            let mut buf = vec![0xAAu8; 12 * k];
            let (o, e) = (0, 10 * k64);
            assemble(&repo, &fresh, (o, e), swapped, &mut buf, None).unwrap();
            let mut want = vec![0u8; 10 * k];
            want[k..2 * k].copy_from_slice(&all[k..2 * k]);
            want[4 * k..5 * k].copy_from_slice(&all[2 * k..3 * k]);
            assert!(buf == want, "out of order, encrypted: {encrypted}");
        }
    }

    /// A crafted list naming one chunk twice with two lengths (one of them
    /// not the blob's) is damage, as in every other read path
    /// ([`check_chunk_len`]): the copy of the chunk already placed must not
    /// take the other length. Before its guard the longer one copied what
    /// followed the placed chunk in the request's buffer (a pooled buffer's
    /// old bytes, another file's: here 0xAA) into the reply, or ran past
    /// the buffer's end and panicked; the shorter one answered a part of
    /// the chunk where the list's length is wrong.
    #[test]
    fn a_chunk_repeated_with_another_length_is_damage_not_other_bytes() {
        let mut bad = Vec::new();
        for encrypted in [false, true] {
            let (_dir, repo, r, _all, _cache) = cached_file(3, 16 << 10, encrypted, 8 << 20);
            let k = 16u64 << 10;
            let x = r.inline[1].id;
            // (first length, request end): longer than the blob with a
            // hole after the second (stale bytes), longer with the request
            // ending at the second's end (past the buffer), shorter.
            for (first, end) in [
                (k + k / 2, 3 * k),
                (k + k / 2, 2 * k + k / 2),
                (k / 2, 2 * k),
            ] {
                let chunks = vec![
                    ChunkRef {
                        id: x,
                        offset: 0,
                        len: first as u32,
                    },
                    ChunkRef {
                        id: x,
                        offset: first,
                        len: k as u32,
                    },
                ];
                model::validate_content(end, &Content::Chunks(chunks.clone())).unwrap();
                let fresh = ChunkCache::new(8 << 20);
                let mut buf = vec![0xAAu8; end as usize];
                let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    assemble(&repo, &fresh, (0, end), chunks, &mut buf, None)
                }));
                let case = format!("first {first}, end {end}, encrypted: {encrypted}");
                match got {
                    Err(_) => bad.push(format!("panicked: {case}")),
                    // A run of the buffer's old bytes (the chunk's bytes
                    // hold no run: each differs from the one before).
                    Ok(Ok(())) if buf.windows(64).any(|w| w.iter().all(|&b| b == 0xAA)) => {
                        bad.push(format!("old bytes: {case}"))
                    }
                    Ok(Ok(())) => bad.push(format!("answered: {case}")),
                    Ok(Err(e)) if !e.to_string().contains("its file expects") => {
                        bad.push(format!("{case}: {e}"))
                    }
                    Ok(Err(_)) => {}
                }
            }
        }
        assert!(bad.is_empty(), "{bad:#?}");
    }

    /// [`chunked_file`] in a new temporary directory (returned: the vault
    /// lives as long as it), with a chunk cache of `cap` bytes.
    fn cached_file(
        n: usize,
        len: usize,
        encrypted: bool,
        cap: usize,
    ) -> (
        tempfile::TempDir,
        Arc<Repo>,
        FileReader,
        Vec<u8>,
        ChunkCache,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (repo, r, all) = chunked_file(dir.path(), n, len, encrypted);
        (dir, repo, r, all, ChunkCache::new(cap))
    }

    /// A vault (plain, or encrypted) holding a file of `n` chunks of
    /// `len` bytes each, all different; its reader and its bytes.
    fn chunked_file(
        dir: &std::path::Path,
        n: usize,
        len: usize,
        encrypted: bool,
    ) -> (Arc<Repo>, FileReader, Vec<u8>) {
        Repo::create(dir).unwrap();
        let storage: Arc<dyn crate::store::Storage> = Arc::new(crate::store::LocalDir::new(dir));
        let key = if encrypted {
            crate::store::Key::from_master(&crate::crypto::MasterKey::generate().unwrap())
        } else {
            crate::store::Key::generate()
        };
        let repo = Repo::open_with_key(storage.clone(), "v", key.clone()).unwrap();
        let mut w = RepoWriter::new(&repo, true);
        let mut all = Vec::new();
        let mut inline = Vec::new();
        for i in 0..n {
            let chunk: Vec<u8> = (0..len)
                .map(|j| ((i * 7919 + j * 31) % 251) as u8)
                .collect();
            let id = w.add(BlobKind::Data, &chunk).unwrap().id;
            inline.push(ChunkRef {
                id,
                offset: all.len() as u64,
                len: len as u32,
            });
            all.extend_from_slice(&chunk);
        }
        w.finish().unwrap();
        let repo = Arc::new(Repo::open_with_key(storage, "v", key).unwrap());
        let r = FileReader {
            size: all.len() as u64,
            lists: Vec::new(),
            bad: None,
            inline,
            loaded: Mutex::new(HashMap::new()),
        };
        (repo, r, all)
    }

    /// With helpers or without, plain or encrypted, a window of one chunk
    /// or of many: every chunk reaches `f` once, in order, with its bytes;
    /// the cache never holds more than its size.
    #[test]
    fn for_each_chunk_gives_every_chunk_in_order() {
        for encrypted in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (repo, r, all) = chunked_file(dir.path(), 40, 20_000, encrypted);
            for (workers, ahead) in [(0, 0), (1, 1), (3, 20_000), (2, 100_000), (4, 1 << 30)] {
                let cache = ChunkCache::new(150_000);
                let mut got = Vec::new();
                let mut offsets = Vec::new();
                for_each_chunk(
                    &repo,
                    &cache,
                    r.inline.clone().into_iter(),
                    workers,
                    ahead,
                    |c, d| {
                        assert!(cache.held_bytes() <= 150_000);
                        offsets.push(c.offset);
                        got.extend_from_slice(&d?);
                        Ok(())
                    },
                )
                .unwrap();
                assert_eq!(
                    offsets,
                    r.inline.iter().map(|c| c.offset).collect::<Vec<_>>()
                );
                assert!(
                    got == all,
                    "workers {workers}, ahead {ahead}, encrypted {encrypted}"
                );
            }
        }
    }

    /// A chunk that cannot be read reaches `f` as an error, after every
    /// chunk before it; `f`'s error ends the walk (helpers and all) with
    /// nothing after it.
    #[test]
    fn for_each_chunk_stops_at_the_first_error() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, r, _) = chunked_file(dir.path(), 30, 10_000, true);
        let mut chunks = r.inline.clone();
        let lost = BlobId([0x77; 16]);
        chunks[12].id = lost;
        for workers in [0, 3] {
            let cache = ChunkCache::new(1 << 20);
            let mut seen = Vec::new();
            let e = for_each_chunk(
                &repo,
                &cache,
                chunks.clone().into_iter(),
                workers,
                50_000,
                |c, d| {
                    seen.push(c.offset);
                    d.map(|_| ())
                },
            )
            .unwrap_err();
            assert!(e.to_string().contains(&lost.to_hex()), "{e}");
            assert_eq!(seen.len(), 13, "workers {workers}");
        }
    }

    /// Threads asking for one chunk at once get the same verified bytes,
    /// read once: the first loads it, the others wait for it.
    #[test]
    fn a_chunk_wanted_by_many_threads_is_read_once() {
        let (_dir, repo, r, all, cache) = cached_file(2, 300_000, true, 1 << 20);
        let id = r.inline[1].id;
        let start = std::sync::Barrier::new(8);
        let got: Vec<Arc<Vec<u8>>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        cache.get(&repo, &id).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(&got[0][..], &all[300_000..]);
        assert!(
            got.iter().all(|g| Arc::ptr_eq(g, &got[0])),
            "read more than once"
        );
        assert_eq!(cache.held_bytes(), 300_000);
    }

    /// `fill` never waits for a chunk another thread loads: it leaves it
    /// to that thread (a helper moves on to the next chunk); it loads an
    /// absent chunk, and leaves a held one as it is.
    #[test]
    fn fill_loads_what_nobody_loads_and_never_waits() {
        let (_dir, repo, r, all, cache) = cached_file(3, 100_000, false, 1 << 20);
        let (a, b) = (r.inline[0].id, r.inline[1].id);
        assert!(matches!(cache.claim(&a, false), Claim::Mine));
        // `a` is "being loaded" by this thread: fill returns at once.
        let (tx, rx) = std::sync::mpsc::channel();
        let (c2, r2) = (cache.clone(), repo.clone());
        std::thread::spawn(move || {
            c2.fill(&r2, &a);
            let _ = tx.send(());
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("fill waited for a chunk another thread loads");
        assert!(matches!(cache.claim(&a, false), Claim::Busy));
        assert_eq!(cache.held_bytes(), 0);
        // Loaded by its claimer, a waiter gets it.
        assert_eq!(&cache.load(&repo, &a).unwrap()[..], &all[..100_000]);
        cache.fill(&repo, &b);
        assert_eq!(cache.held_bytes(), 200_000);
        let held = cache.get(&repo, &b).unwrap();
        cache.fill(&repo, &b);
        assert!(Arc::ptr_eq(&held, &cache.get(&repo, &b).unwrap()));
        assert_eq!(&held[..], &all[100_000..200_000]);
    }

    /// A local directory whose ranged reads panic once `.1` is set: a bug
    /// met while reading, for the tests of unwinding below.
    #[derive(Debug)]
    struct Panicky(crate::store::LocalDir, std::sync::atomic::AtomicBool);
    impl crate::testkit::Wrapper for Panicky {
        fn inner(&self) -> &dyn crate::store::Storage {
            &self.0
        }
        fn get_range(&self, n: &str, o: u64, l: u64) -> Result<Vec<u8>> {
            if self.1.load(std::sync::atomic::Ordering::SeqCst) {
                panic!("a bug reading {n}");
            }
            crate::store::Storage::get_range(&self.0, n, o, l)
        }
    }

    /// A vault on a [`Panicky`] directory (not panicking yet) holding
    /// `blobs` as data blobs, reopened after they were written: its
    /// directory, its storage, the vault and the blobs' ids.
    fn panicky_vault(blobs: &[&[u8]]) -> (tempfile::TempDir, Arc<Panicky>, Arc<Repo>, Vec<BlobId>) {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(Panicky(
            crate::store::LocalDir::new(dir.path()),
            std::sync::atomic::AtomicBool::new(false),
        ));
        Repo::create_in(&*s).unwrap();
        let repo = Arc::new(Repo::open_in(s.clone(), "v").unwrap());
        let mut w = RepoWriter::new(&repo, false);
        let ids = blobs
            .iter()
            .map(|b| w.add(BlobKind::Data, b).unwrap().id)
            .collect();
        w.finish().unwrap();
        let repo = Arc::new(Repo::open_in(s.clone(), "v").unwrap());
        (dir, s, repo, ids)
    }

    /// A read that unwinds (a bug on damaged input) leaves no chunk
    /// marked as loading: the next reader of that chunk reads it itself
    /// instead of waiting for ever.
    #[test]
    fn a_read_that_panics_leaves_no_chunk_loading() {
        let (_dir, s, repo, ids) = panicky_vault(&[&[7u8; 5000]]);
        let id = ids[0];
        let cache = ChunkCache::new(1 << 20);
        s.1.store(true, std::sync::atomic::Ordering::SeqCst);
        let (c2, r2) = (cache.clone(), repo.clone());
        assert!(std::thread::spawn(move || c2.get(&r2, &id)).join().is_err());
        assert!(!cache.contains(&id));
        // The same on a read-ahead helper: counted out, and the helpers
        // still read ahead after.
        let c = ChunkRef {
            id,
            offset: 0,
            len: 5000,
        };
        for _ in 0..2 * helper_count() {
            cache.prefetch(&repo, &c);
            let t = std::time::Instant::now();
            while cache.ahead_bytes() > 0 {
                assert!(
                    t.elapsed().as_secs() < 20,
                    "a failed read-ahead stayed counted"
                );
                std::thread::yield_now();
            }
        }
        s.1.store(false, std::sync::atomic::Ordering::SeqCst);
        let (tx, rx) = std::sync::mpsc::channel();
        let (c2, r2) = (cache.clone(), repo.clone());
        std::thread::spawn(move || {
            let _ = tx.send(c2.get(&r2, &id).map(|d| d.len()));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the next reader waited for a load that had unwound");
        assert_eq!(got.unwrap(), 5000);
        cache.done(&id);
        cache.prefetch(&repo, &c);
        let t = std::time::Instant::now();
        while !cache.contains(&id) || cache.ahead_bytes() > 0 {
            assert!(t.elapsed().as_secs() < 20, "no helper reads ahead any more");
            std::thread::yield_now();
        }
    }

    /// The same for a request's chunks decoded straight into its buffer
    /// ([`assemble`], [`ChunkCache::unclaim`]): a read that unwinds there
    /// leaves no chunk marked as loading, and the next reader of either
    /// chunk reads it instead of waiting for ever.
    #[test]
    fn a_read_into_a_request_that_panics_leaves_no_chunk_loading() {
        let (_dir, s, repo, ids) = panicky_vault(&[&[7u8; 5000], &[9u8; 5000]]);
        let (a, b) = (ids[0], ids[1]);
        let r = Arc::new(FileReader {
            size: 10_000,
            lists: Vec::new(),
            bad: None,
            inline: vec![
                ChunkRef {
                    id: a,
                    offset: 0,
                    len: 5000,
                },
                ChunkRef {
                    id: b,
                    offset: 5000,
                    len: 5000,
                },
            ],
            loaded: Mutex::new(HashMap::new()),
        });
        let cache = ChunkCache::new(1 << 20);
        s.1.store(true, std::sync::atomic::Ordering::SeqCst);
        let (c2, r2, f2) = (cache.clone(), repo.clone(), r.clone());
        let read = move || f2.read_with(&r2, &c2, (0, 10_000), None, |d| d.len());
        assert!(std::thread::spawn(read).join().is_err());
        assert!(
            !cache.is_loading(&a) && !cache.is_loading(&b),
            "left loading"
        );
        s.1.store(false, std::sync::atomic::Ordering::SeqCst);
        for id in [a, b] {
            let (tx, rx) = std::sync::mpsc::channel();
            let (c2, r2) = (cache.clone(), repo.clone());
            std::thread::spawn(move || {
                let _ = tx.send(c2.get(&r2, &id).map(|d| d.len()));
            });
            let got = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .expect("the next reader waited for a load that had unwound");
            assert_eq!(got.unwrap(), 5000);
        }
    }

    /// A cache no reader used for the idle time gives its chunks back,
    /// once per burst of reads, and only then: by the clock passed in, the
    /// idle time counting from the first check that saw the reads stop.
    #[test]
    fn an_idle_cache_gives_its_chunks_back() {
        use std::time::{Duration, Instant};
        let (_dir, repo, r, all, cache) = cached_file(8, 300_000, false, 32 << 20);
        let idle = Duration::from_secs(2);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Part of a chunk: it stays for the reader's next request.
        assert_eq!(
            r.read_at(&repo, &cache, 0, 250_000).unwrap(),
            &all[..250_000]
        );
        assert_eq!(cache.held_bytes(), 300_000);
        assert!(!cache.release_if_idle(at(0), idle), "first look");
        assert!(!cache.release_if_idle(at(1_999), idle));
        // A read meanwhile: the idle time starts again.
        assert_eq!(
            r.read_at(&repo, &cache, 250_000, 40_000).unwrap(),
            &all[250_000..290_000]
        );
        assert!(!cache.release_if_idle(at(2_500), idle), "reads went on");
        assert!(!cache.release_if_idle(at(4_000), idle));
        assert_eq!(cache.held_bytes(), 300_000);
        assert!(cache.release_if_idle(at(4_500), idle));
        assert_eq!(cache.held_bytes(), 0);
        assert!(!cache.contains(&r.inline[0].id));
        assert!(!cache.release_if_idle(at(9_000), idle), "once per burst");
        // Reading on after it: the right bytes, and the next idle time
        // gives them back again.
        assert_eq!(
            r.read_at(&repo, &cache, 500_000, 200_000).unwrap(),
            &all[500_000..700_000]
        );
        assert_eq!(cache.held_bytes(), 300_000);
        assert!(!cache.release_if_idle(at(9_500), idle));
        assert!(cache.release_if_idle(at(11_500), idle));
        assert_eq!(cache.held_bytes(), 0);
    }

    /// A read within one chunk is handed over as a slice of the cached
    /// chunk (no copy); one across chunks or holes is put together, with
    /// the same bytes as `read_at`.
    #[test]
    fn a_read_within_one_chunk_is_handed_over_without_a_copy() {
        let (_dir, repo, r, all, cache) = cached_file(4, 300_000, false, 32 << 20);
        let held = cache.get(&repo, &r.inline[1].id).unwrap();
        let range = held.as_ptr_range();
        let (ptr, bytes) = r
            .read_with(&repo, &cache, (310_000, 128 << 10), None, |b| {
                (b.as_ptr(), b.to_vec())
            })
            .unwrap();
        assert!(range.contains(&ptr), "copied");
        assert_eq!(bytes, &all[310_000..310_000 + (128 << 10)]);
        for (off, len) in [
            (250_000, 128 << 10),
            (0, 1 << 20),
            (1_100_000, 1 << 20),
            (1_200_000, 5),
        ] {
            let got = r
                .read_with(&repo, &cache, (off, len), None, |b| b.to_vec())
                .unwrap();
            assert_eq!(
                got,
                r.read_at(&repo, &cache, off, len).unwrap(),
                "{off}+{len}"
            );
        }
        // The end of a chunk read this way leaves the cache, as with read_at.
        drop(held);
        r.read_with(&repo, &cache, (600_000, 1000), None, |_| ())
            .unwrap();
        assert!(cache.contains(&r.inline[2].id));
        let before = cache.held_bytes();
        let done_to = AtomicU64::new(0);
        r.read_with(&repo, &cache, (900_000 - 10, 10), Some(&done_to), |_| ())
            .unwrap();
        assert_eq!(done_to.load(Ordering::Relaxed), 900_000);
        assert!(!cache.contains(&r.inline[2].id));
        assert_eq!(cache.held_bytes(), before - 300_000);
    }

    /// Read-ahead goes to the helpers in jobs of about JOB_BYTES: many
    /// small chunks cost a few jobs, and all of them arrive, verified.
    #[test]
    fn small_chunks_are_read_ahead_in_jobs() {
        let dir = tempfile::tempdir().unwrap();
        // 250 different chunks (chunked_file's repeat after 251).
        let (repo, r, all) = chunked_file(dir.path(), 250, 16 * 1024, false);
        let cache = ChunkCache::new(32 << 20);
        cache.prefetch_all(&repo, &r.inline, None);
        assert_eq!(cache.read_ahead_jobs(), 16, "4000 KiB in 256 KiB jobs");
        let t = std::time::Instant::now();
        while !r.inline.iter().all(|c| cache.contains(&c.id)) || cache.ahead_bytes() > 0 {
            assert!(t.elapsed().as_secs() < 30, "read-ahead did not finish");
            std::thread::yield_now();
        }
        assert_eq!(cache.held_bytes(), all.len());
        assert_eq!(r.read_at(&repo, &cache, 0, all.len()).unwrap(), all);
    }

    /// Read-ahead skips the chunks the reader has read to their end
    /// already: loading them again would decode them twice, for nobody.
    #[test]
    fn read_ahead_skips_the_chunks_behind_the_reader() {
        let (_dir, repo, r, _, cache) = cached_file(64, 16 * 1024, false, 32 << 20);
        let at = Arc::new(AtomicU64::new(32 * 16 * 1024));
        cache.prefetch_all(&repo, &r.inline, Some(&at));
        let t = std::time::Instant::now();
        while cache.ahead_bytes() > 0 {
            assert!(t.elapsed().as_secs() < 30, "read-ahead did not finish");
            std::thread::yield_now();
        }
        assert!(r.inline[..32].iter().all(|c| !cache.contains(&c.id)));
        assert!(r.inline[32..].iter().all(|c| cache.contains(&c.id)));
    }

    /// Reading ahead puts a file's next chunks into the cache, verified,
    /// within the cache's size; reads then return the file's bytes.
    #[test]
    fn read_ahead_fills_the_cache_within_its_size() {
        let (_dir, repo, r, all, cache) = cached_file(64, 16 * 1024, true, 256 * 1024);
        r.read_ahead(&repo, &cache, 0, 128 * 1024, None).unwrap();
        let t = std::time::Instant::now();
        while !r.inline[..8].iter().all(|c| cache.contains(&c.id)) || cache.ahead_bytes() > 0 {
            assert!(t.elapsed().as_secs() < 30, "read-ahead did not finish");
            std::thread::yield_now();
        }
        assert_eq!(cache.held_bytes(), 128 * 1024);
        // More than the cache holds: it stays within its size, and every
        // read still returns the right bytes.
        r.read_ahead(&repo, &cache, 0, r.size(), None).unwrap();
        for off in (0..all.len()).step_by(100_000) {
            let got = r.read_at(&repo, &cache, off as u64, 100_000).unwrap();
            assert!(got[..] == all[off..(off + 100_000).min(all.len())]);
            assert!(cache.held_bytes() <= 256 * 1024);
        }
        let t = std::time::Instant::now();
        while cache.ahead_bytes() > 0 {
            assert!(t.elapsed().as_secs() < 30, "read-ahead did not finish");
            std::thread::yield_now();
        }
        assert!(cache.held_bytes() <= 256 * 1024);
    }
}
