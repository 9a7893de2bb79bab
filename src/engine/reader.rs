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

/// Resolve the chunk list of one chunk-list blob into absolute chunks.
pub fn load_list(repo: &Repo, list: &ListRef) -> Result<Vec<ChunkRef>> {
    let rel = model::decode_chunk_list(&repo.read_blob(&list.id)?)?;
    let mut pos = list.offset;
    let mut out = Vec::with_capacity(rel.len());
    for r in rel {
        let offset = pos
            .checked_add(r.gap)
            .ok_or_else(|| Error::corrupt(format!("chunk list {} overflows", list.id)))?;
        out.push(ChunkRef {
            id: r.id,
            offset,
            len: r.len,
        });
        pos = offset
            .checked_add(r.len as u64)
            .ok_or_else(|| Error::corrupt(format!("chunk list {} overflows", list.id)))?;
    }
    Ok(out)
}

/// Every chunk of a file, in order.
pub fn all_chunks(repo: &Repo, node: &Node) -> Result<Vec<ChunkRef>> {
    match &node.content {
        Content::None => Ok(Vec::new()),
        Content::Chunks(c) => Ok(c.clone()),
        Content::Lists(lists) => {
            let mut out = Vec::new();
            for l in lists {
                out.extend(load_list(repo, l)?);
            }
            Ok(out)
        }
    }
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

/// Random access to one file's bytes.
pub struct FileReader {
    size: u64,
    lists: Vec<ListRef>,
    inline: Vec<ChunkRef>,
    loaded: Mutex<HashMap<usize, Arc<Vec<ChunkRef>>>>,
}

impl FileReader {
    /// A reader of `node`'s content.
    pub fn new(node: &Node) -> Self {
        let (inline, lists) = match &node.content {
            Content::None => (Vec::new(), Vec::new()),
            Content::Chunks(c) => (c.clone(), Vec::new()),
            Content::Lists(l) => (Vec::new(), l.clone()),
        };
        FileReader {
            size: node.size,
            lists,
            inline,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// File size.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn list(&self, repo: &Repo, i: usize) -> Result<Arc<Vec<ChunkRef>>> {
        if let Some(l) = self.loaded.lock().get(&i) {
            return Ok(l.clone());
        }
        let l = Arc::new(load_list(repo, &self.lists[i])?);
        self.loaded.lock().insert(i, l.clone());
        Ok(l)
    }

    /// The chunks overlapping `[off, end)`.
    fn chunks_in(&self, repo: &Repo, off: u64, end: u64) -> Result<Vec<ChunkRef>> {
        let pick = |cs: &[ChunkRef], out: &mut Vec<ChunkRef>| {
            // Saturating: offsets and lengths come from stored trees and
            // lists, which a damaged or hostile store may fill with anything.
            let first = cs.partition_point(|c| c.offset.saturating_add(c.len as u64) <= off);
            for c in &cs[first..] {
                if c.offset >= end {
                    break;
                }
                out.push(*c);
            }
        };
        let mut out = Vec::new();
        if self.lists.is_empty() {
            pick(&self.inline, &mut out);
            return Ok(out);
        }
        let first = self
            .lists
            .partition_point(|l| l.offset.saturating_add(l.span) <= off);
        for i in first..self.lists.len() {
            if self.lists[i].offset >= end {
                break;
            }
            let l = self.list(repo, i)?;
            pick(&l, &mut out);
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
            if data.len() != c.len as usize {
                return Err(Error::corrupt(format!(
                    "vault {}: chunk {} has {} bytes, its file expects {}",
                    repo.vault(),
                    c.id,
                    data.len(),
                    c.len
                )));
            }
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
            let end = c.offset.checked_add(c.len as u64);
            if data.len() != c.len as usize || end.is_none_or(|e| e > self.size) {
                return Err(Error::corrupt(format!(
                    "vault {}: chunk {} has {} bytes at offset {}, its file of {} bytes expects {}",
                    repo.vault(),
                    c.id,
                    data.len(),
                    c.offset,
                    self.size,
                    c.len
                )));
            }
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
                w.add(BlobKind::ChunkList, &model::encode_chunk_list(l))
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
