//! The block cache: byte ranges of data packs kept on this host's disk
//! (`cache/` in the vault's directory), bounded in bytes, least recently
//! used out first.
//!
//! ```text
//! cache/packs/<hh>/<id>.pack.<offset>-<len>   a range (an aligned block)
//! cache/packs/<hh>/<id>.pack.all              a whole data pack
//! ```
//!
//! Nothing here is trusted: an entry of the wrong length is not served,
//! and every blob read from one is verified against its id by the reader,
//! which drops the entry on a mismatch ([`Storage::forget_cached`]) and
//! reads the remote instead. Entries are therefore written without
//! fsyncs ([`LocalDir::put_unsynced`]): a crash may leave one torn, and it
//! is then refused and fetched again.
//!
//! While a reader that reads data once is running ([`BlockCache::once`]:
//! a restore), blocks fetched are held in memory instead, at most
//! [`MEM_BYTES`] of them, first in first out, and none is written to the
//! disk: a restore's data is read once, and writing it into the cache cost
//! some 12 % of an S3 restore's time (perf), besides the disk writes
//! competing with the reads (restic keeps no data packs either). What is
//! on disk already is still read from there.

use super::ahead::{ReadAhead, MAX_WINDOW};
use crate::error::{Error, Result};
use crate::store::local::LocalDir;
use crate::store::storage::{object_label, Storage};
use memmap2::Mmap;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Data packs are read into the cache in aligned blocks of this size
/// ([`BlockCache::read`]).
const BLOCK: u64 = 1 << 20;

/// Bytes of blocks held in memory while a one-pass reader runs (see the
/// module docs): room for the read-ahead windows of a few packs (ahead.rs:
/// at most [`MAX_WINDOW`] blocks per fetch) beside the blocks the readers
/// are in, so that a block fetched ahead is still here when it is read.
pub(super) const MEM_BYTES: u64 = 64 << 20;

/// Entries a process keeps mapped (at most): a restore reads some ten
/// chunks per block, and mapping, marking and unmapping the block for each
/// chunk cost a dozen system calls per chunk.
const MAPPED: usize = 32;

/// A few local files by name, mapped or known absent, most recently used
/// last: what this process found when it last looked, so that reading the
/// next chunk of a block (or asking again for a copy that is not there)
/// costs no system call. An entry is dropped whenever this process writes
/// or removes the file; another process's writes are seen once an entry
/// falls out (at worst a copy is fetched again, never a wrong byte served:
/// every blob is verified).
pub(super) struct Mapped {
    items: Mutex<VecDeque<(String, Option<Arc<Mmap>>)>>,
    /// Counts drops: a file mapped while a drop happened (another thread
    /// found it damaged and removed it) is not remembered, or a removed
    /// file's mapping would come back and be served again.
    drops: std::sync::atomic::AtomicU64,
}

impl Mapped {
    pub(super) fn new() -> Mapped {
        Mapped {
            items: Mutex::new(VecDeque::with_capacity(MAPPED)),
            drops: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The file `key` mapped, or None when absent: as this process last
    /// found it, else as `open` finds it now (and remembered).
    pub(super) fn get_or(
        &self,
        key: &str,
        open: impl FnOnce() -> Option<Mmap>,
    ) -> Option<Arc<Mmap>> {
        use std::sync::atomic::Ordering;
        let seen = {
            let mut items = self.items.lock();
            if let Some(i) = items.iter().position(|(k, _)| k == key) {
                if let Some(e) = items.remove(i) {
                    let v = e.1.clone();
                    items.push_back(e);
                    return v;
                }
            }
            self.drops.load(Ordering::Relaxed)
        };
        let v = open().map(Arc::new);
        let mut items = self.items.lock();
        if self.drops.load(Ordering::Relaxed) != seen {
            return v;
        }
        if items.len() >= MAPPED {
            items.pop_front();
        }
        items.push_back((key.to_string(), v.clone()));
        v
    }

    /// Forget what was found of `key`.
    pub(super) fn drop_key(&self, key: &str) {
        let mut items = self.items.lock();
        self.drops
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        items.retain(|(k, _)| k != key);
    }

    /// Forget what was found of every key starting with `prefix`.
    pub(super) fn drop_prefix(&self, prefix: &str) {
        let mut items = self.items.lock();
        self.drops
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        items.retain(|(k, _)| !k.starts_with(prefix));
    }
}

/// A block's bytes: a mapped cache entry, or a part of a fetched span held
/// in memory (shared with the span's other blocks: no copy).
pub(super) enum Held {
    Mapped(Arc<Mmap>),
    Mem(Arc<Vec<u8>>, usize, usize),
}

impl std::ops::Deref for Held {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Held::Mapped(m) => m,
            Held::Mem(v, at, len) => &v[*at..*at + *len],
        }
    }
}

/// Blocks held in memory while a one-pass reader runs: by entry name,
/// first in first out within [`MEM_BYTES`].
#[derive(Default)]
struct MemBlocks {
    map: std::collections::HashMap<String, (Arc<Vec<u8>>, usize, usize)>,
    order: VecDeque<String>,
    bytes: u64,
}

impl MemBlocks {
    fn insert(&mut self, key: String, span: &Arc<Vec<u8>>, at: usize, len: usize, limit: u64) {
        if let Some(old) = self.map.insert(key.clone(), (span.clone(), at, len)) {
            self.bytes -= old.2 as u64;
        } else {
            self.order.push_back(key);
        }
        self.bytes += len as u64;
        while self.bytes > limit {
            let Some(k) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.map.remove(&k) {
                self.bytes -= old.2 as u64;
            }
        }
    }

    fn get(&self, key: &str) -> Option<Held> {
        self.map
            .get(key)
            .map(|(v, at, len)| Held::Mem(v.clone(), *at, *len))
    }

    /// Drop every block whose key starts with `prefix`; true if any.
    fn forget(&mut self, prefix: &str) -> bool {
        let before = self.map.len();
        self.map.retain(|k, _| !k.starts_with(prefix));
        self.order.retain(|k| !k.starts_with(prefix));
        self.bytes = self.map.values().map(|v| v.2 as u64).sum();
        self.map.len() != before
    }

    fn clear(&mut self) {
        *self = MemBlocks::default();
    }
}

/// Where the blocks of one data pack are.
#[derive(Clone)]
struct Layout {
    name: String,
    size: u64,
    bsize: u64,
}

impl Layout {
    fn new(name: &str, size: u64, bsize: u64) -> Layout {
        Layout {
            name: name.to_string(),
            size,
            bsize,
        }
    }

    /// Offset and length of block `b`.
    fn block(&self, b: u64) -> (u64, u64) {
        let start = b * self.bsize;
        (start, self.bsize.min(self.size - start))
    }

    /// The entry name of block `b`.
    fn key(&self, b: u64) -> String {
        let (start, len) = self.block(b);
        BlockCache::range_name(&self.name, start, len)
    }
}

/// Byte ranges of data packs on local disk. See the module docs.
pub(super) struct BlockCache {
    dir: LocalDir,
    /// Bound of the entries' bytes.
    limit: u64,
    /// The entries' bytes as last counted plus those added since; counted
    /// from the directory at the first insertion (`u64::MAX`: not yet).
    used: AtomicU64,
    /// One eviction at a time in this process.
    evicting: Mutex<()>,
    /// Entries this process has mapped, or found absent.
    mapped: Mapped,
    /// Which packs are read in order, and what helpers are fetching.
    ahead: ReadAhead,
    /// One-pass readers running ([`BlockCache::once`]): while any is,
    /// fetched blocks go to `mem`, not to the disk.
    once: std::sync::atomic::AtomicUsize,
    /// Blocks held in memory for them.
    mem: Mutex<MemBlocks>,
    /// Bound of `mem`, bytes ([`MEM_BYTES`]; smaller in a small cache).
    mem_limit: u64,
}

impl BlockCache {
    /// A cache in directory `root` of at most `limit` bytes.
    pub(super) fn new(root: PathBuf, limit: u64) -> BlockCache {
        BlockCache {
            dir: LocalDir::new(root),
            limit,
            used: AtomicU64::new(u64::MAX),
            evicting: Mutex::new(()),
            mapped: Mapped::new(),
            ahead: ReadAhead::default(),
            once: std::sync::atomic::AtomicUsize::new(0),
            mem: Mutex::new(MemBlocks::default()),
            mem_limit: MEM_BYTES.min(limit / 2),
        }
    }

    /// A reader that reads data once (a restore) starts (`true`) or ends:
    /// while one runs, fetched blocks are held in memory, not written to
    /// the disk (module docs); when the last ends, they are dropped.
    pub(super) fn once(&self, on: bool) {
        if on {
            self.once.fetch_add(1, Ordering::SeqCst);
        } else {
            let was = self
                .once
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if was == Ok(1) {
                self.mem.lock().clear();
            }
        }
    }

    /// Bytes of blocks held in memory, and their bound (for tests).
    #[cfg(test)]
    pub(super) fn held_in_memory(&self) -> (u64, u64) {
        (self.mem.lock().bytes, self.mem_limit)
    }

    /// True while a one-pass reader runs.
    fn in_memory(&self) -> bool {
        self.once.load(Ordering::SeqCst) > 0
    }

    /// Block `key` as held in memory, `len` bytes.
    fn held(&self, key: &str, len: u64) -> Option<Held> {
        let h = self.mem.lock().get(key)?;
        (h.len() as u64 == len).then_some(h)
    }

    /// Block `b` of `lay`: held in memory, or its cache entry mapped.
    fn block(&self, lay: &Layout, b: u64) -> Option<Held> {
        let key = lay.key(b);
        let len = lay.block(b).1;
        if let Some(h) = self.held(&key, len) {
            return Some(h);
        }
        self.open(&key, Some(len)).map(Held::Mapped)
    }

    /// The bound, bytes.
    pub(super) fn limit(&self) -> u64 {
        self.limit
    }

    /// The entry name of a whole data pack.
    fn all_name(name: &str) -> String {
        format!("{name}.all")
    }

    /// The entry name of `len` bytes at `offset` of `name`.
    fn range_name(name: &str, offset: u64, len: u64) -> String {
        format!("{name}.{offset}-{len}")
    }

    /// Entry `key` mapped, if it is here (and `len` bytes long when
    /// given); marked as used when this process first maps it.
    fn open(&self, key: &str, len: Option<u64>) -> Option<Arc<Mmap>> {
        let m = self.mapped.get_or(key, || {
            let m = self.dir.map(key).ok().flatten()?;
            self.touch(key);
            Some(m)
        })?;
        match len {
            // A torn or damaged entry: not served, replaced by the caller.
            Some(l) if m.len() as u64 != l => None,
            _ => Some(m),
        }
    }

    /// True if data pack `name` (of `size` bytes) is here whole: as its
    /// whole copy, or (while a one-pass reader runs) every block of it
    /// held in memory.
    pub(super) fn has_whole(&self, name: &str, size: u64) -> bool {
        if self.open(&Self::all_name(name), None).is_some() {
            return true;
        }
        if !self.in_memory() || size == 0 {
            return false;
        }
        let lay = Layout::new(name, size, self.block_size());
        (0..size.div_ceil(lay.bsize)).all(|b| self.held(&lay.key(b), lay.block(b).1).is_some())
    }

    /// The whole copy of data pack `name`, if there is one.
    pub(super) fn get_whole(&self, name: &str) -> Option<Vec<u8>> {
        self.dir.get(&Self::all_name(name)).ok().flatten()
    }

    /// Keep `data` as the whole copy of data pack `name`; while a one-pass
    /// reader runs, as its blocks in memory.
    pub(super) fn keep_whole(&self, name: &str, data: Vec<u8>) {
        if self.in_memory() && !data.is_empty() {
            let lay = Layout::new(name, data.len() as u64, self.block_size());
            let span = Arc::new(data);
            let mut mem = self.mem.lock();
            for b in 0..lay.size.div_ceil(lay.bsize) {
                let (start, len) = lay.block(b);
                mem.insert(
                    lay.key(b),
                    &span,
                    start as usize,
                    len as usize,
                    self.mem_limit,
                );
            }
            return;
        }
        self.keep(&Self::all_name(name), &data);
    }

    /// True if the whole of pack `size` bytes fits beside the other
    /// blocks: on disk, half the cache; in memory, half of what it holds.
    pub(super) fn room_for_whole(&self, size: u64) -> bool {
        let room = if self.in_memory() {
            self.mem_limit
        } else {
            self.limit
        };
        size <= room / 2
    }

    /// `len` bytes at `offset` of data pack `name` from its whole copy, if
    /// there is one that long (marked as used now).
    pub(super) fn read_whole(&self, name: &str, offset: u64, len: u64) -> Option<Vec<u8>> {
        let m = self.open(&Self::all_name(name), None)?;
        let end = offset.checked_add(len).filter(|e| *e <= m.len() as u64)?;
        Some(m[offset as usize..end as usize].to_vec())
    }

    /// Bytes `offset..offset+len` of data pack `name` of `size` bytes, read
    /// from `remote` in aligned blocks of [`BLOCK`] bytes, each missing run
    /// of blocks with one ranged GET, and the blocks kept. A restore or a
    /// `cp -a` of many small files reads their chunks in the order the
    /// backup wrote them, so one GET serves every chunk of a block (one GET
    /// per chunk was one per file: 10,958 GETs to restore 10,947 files,
    /// measured); blocks read in order are fetched ahead (ahead.rs). None
    /// when the range is not within `size`: the caller then asks for the
    /// exact range (and gets the error naming the object).
    pub(super) fn read(
        self: &Arc<Self>,
        remote: &Arc<dyn Storage>,
        name: &str,
        size: u64,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>> {
        let Some(end) = offset.checked_add(len).filter(|e| *e <= size && len > 0) else {
            return Ok(None);
        };
        let lay = Layout::new(name, size, self.block_size());
        let (first, last) = (offset / lay.bsize, (end - 1) / lay.bsize);
        let mut out = Vec::with_capacity(len as usize);
        let mut b = first;
        while b <= last {
            let (start, blen) = lay.block(b);
            self.read_ahead(remote, &lay, b);
            // A cached block is mapped, and only the wanted bytes copied
            // (reading the whole block for each small chunk cost a 1 MiB
            // copy per file of a restore). A block a helper is fetching is
            // waited for.
            let mut found = self.block(&lay, b);
            if found.is_none() && self.ahead.wait_for(name, b) {
                found = self.block(&lay, b);
            }
            let data = match found {
                Some(m) => m,
                None => {
                    // This block and the missing ones after it (up to the
                    // last wanted): one GET.
                    let mut e = b;
                    while e < last && self.block(&lay, e + 1).is_none() {
                        e += 1;
                    }
                    let d = self.fetch(&**remote, &lay, b, e + 1)?;
                    // Copy the wanted part of every fetched block.
                    let (estart, elen) = lay.block(e);
                    let from = offset.max(start) - start;
                    let to = end.min(estart + elen) - start;
                    out.extend_from_slice(&d[from as usize..to as usize]);
                    b = e + 1;
                    continue;
                }
            };
            let from = offset.max(start) - start;
            let to = end.min(start + blen) - start;
            out.extend_from_slice(&data[from as usize..to as usize]);
            b += 1;
        }
        Ok(Some(out))
    }

    /// The block size: a small cache (tests, or a tiny --cache-size) gets
    /// smaller blocks, sixteen fit in it.
    fn block_size(&self) -> u64 {
        BLOCK.min((self.limit / 16).max(4096))
    }

    /// Blocks `first..end` of the pack `lay` describes, with one ranged
    /// GET, kept (in memory while a one-pass reader runs); their bytes.
    fn fetch(
        &self,
        remote: &dyn Storage,
        lay: &Layout,
        first: u64,
        end: u64,
    ) -> Result<Arc<Vec<u8>>> {
        let (start, _) = lay.block(first);
        let (lstart, llen) = lay.block(end - 1);
        let span = lstart + llen - start;
        let d = remote.get_range(&lay.name, start, span)?;
        if d.len() as u64 != span {
            return Err(Error::corrupt(format!(
                "{}: asked for {span} bytes at offset {start}, got {}",
                object_label(remote, &lay.name),
                d.len()
            )));
        }
        let d = Arc::new(d);
        let in_memory = self.in_memory();
        for k in first..end {
            let (ks, kl) = lay.block(k);
            let at = (ks - start) as usize;
            if in_memory {
                let key = lay.key(k);
                self.mem
                    .lock()
                    .insert(key, &d, at, kl as usize, self.mem_limit);
            } else {
                self.keep(&lay.key(k), &d[at..at + kl as usize]);
            }
        }
        Ok(d)
    }

    /// Note a read of block `b`, and start a helper fetching the blocks
    /// after it when the reads are sequential (ahead.rs). Not in a cache
    /// too small to hold a window beside what is being read.
    fn read_ahead(self: &Arc<Self>, remote: &Arc<dyn Storage>, lay: &Layout, b: u64) {
        if MAX_WINDOW * lay.bsize > self.limit / 4 {
            return;
        }
        let blocks = lay.size.div_ceil(lay.bsize);
        let cached = |k: u64| self.block(lay, k).is_some();
        let Some((first, end)) = self.ahead.note(&lay.name, b, blocks, cached) else {
            return;
        };
        /// Ends the helper's fetch whatever happens to it (a panic
        /// included), so that no reader waits for it forever.
        struct Done(Arc<BlockCache>, String, u64, u64);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.ahead.finished(&self.1, self.2, self.3);
            }
        }
        let done = Done(self.clone(), lay.name.clone(), first, end);
        let (remote, lay2) = (remote.clone(), lay.clone());
        let spawned = std::thread::Builder::new()
            .name("cbrfs-ahead".into())
            .spawn(move || {
                if let Err(e) = done.0.fetch(&*remote, &lay2, first, end) {
                    // The reader that wants these blocks fetches them
                    // itself, and reports what is wrong.
                    log::debug!("cache: read ahead in {}: {e}", lay2.name);
                }
                drop(done);
            });
        // A thread that cannot start drops `done` with its closure.
        if let Err(e) = spawned {
            log::debug!("cache: read ahead: {e}");
        }
    }

    /// Exactly `len` bytes at `offset` of data pack `name`: kept as a range
    /// of its own (a pack whose size is not known here), else read from
    /// `remote` and kept.
    pub(super) fn exact(
        &self,
        remote: &dyn Storage,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let key = Self::range_name(name, offset, len);
        if let Some(d) = self.cached_range(&key, len) {
            return Ok(d);
        }
        let d = remote.get_range(name, offset, len)?;
        if d.len() as u64 != len {
            return Err(Error::corrupt(format!(
                "{}: asked for {len} bytes at offset {offset}, got {}",
                object_label(remote, name),
                d.len()
            )));
        }
        // Read once: not kept (a pack whose size is unknown here is rare).
        if !self.in_memory() {
            self.keep(&key, &d);
        }
        Ok(d)
    }

    /// Mark entry `key` as used now (least recently used goes first). The
    /// cache directory is this store's own, but a link put there is still
    /// not followed.
    fn touch(&self, key: &str) {
        use std::os::unix::fs::OpenOptionsExt;
        if let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.dir.root().join(key))
        {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    /// Entry `key`, marked as used now, or None.
    fn cached_range(&self, key: &str, len: u64) -> Option<Vec<u8>> {
        let data = self.dir.get(key).ok().flatten()?;
        if data.len() as u64 != len {
            // A torn or damaged entry: not served, replaced by the caller.
            return None;
        }
        self.touch(key);
        Some(data)
    }

    /// Keep entry `key` and evict the least recently used entries beyond
    /// the bound. A cache that cannot be written (disk full) is no failure
    /// of the read: it is logged, and the remote is read next time.
    fn keep(&self, key: &str, data: &[u8]) {
        if let Err(e) = self.dir.put_unsynced(key, data) {
            log::warn!("cache: keep a copy of {key}: {e}");
        }
        // After the write: what this process found before (absent, or a
        // torn entry) is not what is there now.
        self.mapped.drop_key(key);
        let before = self.used.load(Ordering::Relaxed);
        let now = if before == u64::MAX {
            let n = self.files().iter().map(|f| f.1).sum();
            self.used.store(n, Ordering::Relaxed);
            n
        } else {
            self.used.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64
        };
        if now > self.limit {
            self.evict();
        }
    }

    /// Every entry: path, size, last use.
    fn files(&self) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.root().to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                // symlink_metadata: a link in the cache is not followed.
                let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                    continue;
                };
                if m.is_dir() {
                    stack.push(e.path());
                } else if m.is_file() {
                    let t = m.modified().unwrap_or(std::time::UNIX_EPOCH);
                    out.push((e.path(), m.len(), t));
                }
            }
        }
        out
    }

    /// Remove the least recently used entries until they take at most nine
    /// tenths of the bound (so that eviction is not run per insert).
    fn evict(&self) {
        let Some(_g) = self.evicting.try_lock() else {
            return;
        };
        let mut files = self.files();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort_by_key(|f| f.2);
        let goal = self.limit / 10 * 9;
        for (path, size, _) in files {
            if total <= goal {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(size);
            }
        }
        self.used.store(total, Ordering::Relaxed);
    }

    /// Remove every entry of object `name`; true if any.
    pub(super) fn forget(&self, name: &str) -> bool {
        let prefix = format!("{name}.");
        let held = self.mem.lock().forget(&prefix);
        self.mapped.drop_prefix(&prefix);
        let Ok(list) = self.dir.list(&prefix) else {
            return held;
        };
        let mut any = held;
        for o in list {
            if self.dir.delete(&o.name).is_ok() {
                any = true;
            }
        }
        any
    }
}
