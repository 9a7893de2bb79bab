//! Reading a file's bytes out of a backup: resolve its chunk list (inline
//! or in chunk-list blobs), find the chunks covering a range by binary
//! search on their offsets, and fill holes with zeros. Every blob is
//! verified against its id on the way (in [`Repo::read_blob`]).

use crate::error::{Error, Result};
use crate::model::{self, ChunkRef, Content, ListRef, Node};
use crate::store::{BlobId, Repo};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

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

/// A cache of verified chunks, bounded in bytes, shared by the readers of
/// one mount or one restore, so a chunk read in pieces is fetched and
/// verified once. A chunk leaves when a read reaches its last byte (a
/// streaming reader is done with it), or first in, first out once the
/// cache is full (random readers).
pub struct ChunkCache {
    inner: Mutex<CacheInner>,
    cap_bytes: usize,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<BlobId, Arc<Vec<u8>>>,
    order: std::collections::VecDeque<BlobId>,
    bytes: usize,
}

impl ChunkCache {
    /// A cache holding at most `cap_bytes` of chunk data (at least one chunk).
    pub fn new(cap_bytes: usize) -> Self {
        ChunkCache {
            inner: Mutex::new(CacheInner::default()),
            cap_bytes,
        }
    }
    /// Drop chunk `id` (a reader read up to its end).
    pub fn done(&self, id: &BlobId) {
        let mut g = self.inner.lock();
        if let Some(v) = g.map.remove(id) {
            g.bytes -= v.len();
            if let Some(i) = g.order.iter().position(|o| o == id) {
                g.order.remove(i);
            }
        }
    }

    /// Bytes held (for tests).
    pub fn held_bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    /// The verified bytes of chunk `id`.
    pub fn get(&self, repo: &Repo, id: &BlobId) -> Result<Arc<Vec<u8>>> {
        if let Some(v) = self.inner.lock().map.get(id) {
            return Ok(v.clone());
        }
        let data = Arc::new(repo.read_blob(id)?);
        let mut g = self.inner.lock();
        if !g.map.contains_key(id) {
            while g.bytes + data.len() > self.cap_bytes {
                let Some(old) = g.order.pop_front() else {
                    break;
                };
                if let Some(v) = g.map.remove(&old) {
                    g.bytes -= v.len();
                }
            }
            g.order.push_back(*id);
            g.bytes += data.len();
            g.map.insert(*id, data.clone());
        }
        Ok(data)
    }
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

    /// Read up to `len` bytes at `off` (short only at end of file); holes
    /// read as zeros.
    pub fn read_at(
        &self,
        repo: &Repo,
        cache: &ChunkCache,
        off: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        if off >= self.size {
            return Ok(Vec::new());
        }
        let end = off.saturating_add(len as u64).min(self.size);
        let mut buf = vec![0u8; (end - off) as usize];
        for c in self.chunks_in(repo, off, end)? {
            let data = cache.get(repo, &c.id)?;
            check_chunk_len(repo, &c, &data)?;
            let s = off.max(c.offset);
            let e = end.min(c.offset.saturating_add(c.len as u64));
            if s >= e {
                continue;
            }
            buf[(s - off) as usize..(e - off) as usize]
                .copy_from_slice(&data[(s - c.offset) as usize..(e - c.offset) as usize]);
            if e == c.offset.saturating_add(c.len as u64) {
                cache.done(&c.id);
            }
        }
        Ok(buf)
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
}
