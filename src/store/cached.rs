//! [`CachedStorage`]: a vault kept in a remote [`Storage`] (an S3 bucket)
//! with a local cache, so that browsing never waits on the network once
//! the cache is warm and reading data fetches only the byte ranges wanted.
//!
//! The remote holds the whole vault; the cache can be deleted at any time
//! and is rebuilt from the remote as objects are read. It mirrors the
//! local layout in the vault's directory, so that whatever looks at a
//! vault's files there (the mount's change detection) finds them:
//!
//! ```text
//! vault.json                  the registration: this host's copy of the
//!                             vault's settings, naming the remote
//! key, index/<id>.idx, backups/<b>.bk, packs/<hh>/<id>.pack
//!                             whole copies: the key, every index, backup
//!                             records, and packs of trees and chunk lists
//!                             (metadata); a listing of `index/` or
//!                             `backups/` brings them in line with the remote
//! cache/packs/<hh>/<id>.pack.<offset>-<len>
//!                             byte ranges of data packs, bounded by the
//!                             cache size, least recently used out first
//! cache/packs/<hh>/<id>.pack.all
//!                             a whole data pack, fetched once when most
//!                             of it is about to be read (same bound)
//! listings.json               listings of the remote, current under the
//!                             head they name (`listing.rs`)
//! ```
//!
//! Everything but `vault.json` (and the lock files) is cache.
//!
//! Listings are asked of the remote only when its `head` (one GET) is not
//! the one this host's listings were made under (`listing.rs`); this
//! storage writes the head as a writer must: before a backup record is
//! put or deleted, and on [`Storage::publish`] after other changes.
//!
//! Writes go to the remote first and return only when it published the
//! object, so the store's write order (packs, then the index naming them,
//! then the record) holds on the remote; the cache is filled after. A
//! cached copy is never trusted more than the remote: every blob read from
//! it is verified against its id by the reader, which drops a copy that
//! fails ([`Storage::forget_cached`]) and reads the remote instead.

use super::listing::{Head, Listings, HEAD, HEAD_LIMIT, LISTINGS};
use super::local::LocalDir;
use super::pack;
use super::storage::{ObjectInfo, Storage};
use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The data cache's size when none is given: room for a few hundred
/// megabytes of restores to be read twice without a download.
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

/// Data packs are read into the cache in aligned blocks of this size
/// ([`CachedStorage::get_blocks`]).
const BLOCK: u64 = 1 << 20;

/// A remote vault with a local cache. See the module docs.
pub struct CachedStorage {
    remote: Arc<dyn Storage>,
    /// The vault's local directory: its registration `vault.json`, and
    /// whole objects (key, indexes, records, metadata packs).
    home: LocalDir,
    /// The same directory, for whole copies (a second name for clarity).
    whole: LocalDir,
    /// Byte ranges of data packs.
    ranges: LocalDir,
    /// Bound of the ranges' bytes.
    limit: u64,
    /// The ranges' bytes as last counted plus those added since; counted
    /// from the directory at the first insertion (`u64::MAX`: not yet).
    used: AtomicU64,
    /// One eviction at a time in this process.
    evicting: Mutex<()>,
    /// The remote's listings as this process knows them.
    listing: Mutex<ListState>,
    /// A whole-pack fetch failed in this process: the others are left to
    /// ranges, so that an unreachable bucket costs one round of retries
    /// per blob read, not two.
    whole_failed: std::sync::atomic::AtomicBool,
}

/// This process's view of the remote's listings.
#[derive(Default)]
struct ListState {
    /// The listings and the head they are current under.
    l: Listings,
    /// `l` was read from `listings.json` once.
    loaded: bool,
    /// This process changed the remote since it last wrote the head: a
    /// head is owed (and `listings.json` says dirty).
    changed: bool,
    /// [`CachedStorage::size_of`] listed once in this process already.
    sized: bool,
    /// Every listing is asked of the remote ([`Storage::distrust_kept_listings`]).
    fresh: bool,
    /// A change failed: the remote may be unreachable, and a head that
    /// [`Drop`] would owe is not worth a second round of retries (what
    /// the failed work left is unreferenced; `listings.json` stays dirty).
    failed: bool,
}

impl std::fmt::Debug for CachedStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStorage")
            .field("remote", &self.remote.describe())
            .field("cache", &self.whole.root())
            .field("limit", &self.limit)
            .finish()
    }
}

/// How an object is cached.
#[derive(PartialEq, Eq)]
enum Class {
    /// The local registration, kept beside the cache (never evicted).
    Registration,
    /// Always kept whole: small, and read at every open.
    Whole,
    /// A pack: whole if it holds only metadata, else by range.
    Pack,
    /// Not cached.
    Other,
}

fn class(name: &str) -> Class {
    if name == "vault.json" {
        Class::Registration
    } else if name == "key" || name.starts_with("index/") || name.starts_with("backups/") {
        Class::Whole
    } else if name.starts_with("packs/") {
        Class::Pack
    } else {
        Class::Other
    }
}

impl CachedStorage {
    /// The vault in `remote`, cached in local directory `home` (the
    /// vault's directory in the store), with at most `limit` bytes of
    /// data ranges.
    pub fn new(remote: Arc<dyn Storage>, home: &Path, limit: u64) -> CachedStorage {
        CachedStorage {
            remote,
            home: LocalDir::new(home),
            whole: LocalDir::new(home),
            ranges: LocalDir::new(home.join("cache")),
            limit,
            used: AtomicU64::new(u64::MAX),
            evicting: Mutex::new(()),
            listing: Mutex::new(ListState::default()),
            whole_failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The remote storage.
    pub fn remote(&self) -> &Arc<dyn Storage> {
        &self.remote
    }

    /// `listings.json`, if there is a readable one.
    fn read_listings(&self) -> Option<Listings> {
        let d = self.home.get(LISTINGS).ok()??;
        serde_json::from_slice(&d).ok()
    }

    /// Keep `l` as `listings.json` (a cache: a failure is logged).
    fn save_listings(&self, l: &Listings) {
        if let Ok(j) = serde_json::to_vec(l) {
            self.remember(&self.home, LISTINGS, &j);
        }
    }

    /// The remote's head: its bytes and what they say; None when there is
    /// none or it is not one this version reads (nothing is then cached).
    fn remote_head(&self) -> Result<Option<(Vec<u8>, Head)>> {
        // Never more than a head's bytes: anyone who can write to the
        // bucket may put gigabytes under this name, read by every command.
        // An oversized head is no head (nothing is cached).
        let bytes = match self.remote.get_at_most(HEAD, HEAD_LIMIT as u64) {
            Err(e) if e.kind() == crate::error::Kind::Corrupt => {
                log::warn!("{e}");
                None
            }
            r => r?,
        };
        Ok(bytes.and_then(|b| Head::parse(&b).map(|h| (b, h))))
    }

    /// Make `st` the listings current under the remote head `head`: kept
    /// if they are, else those another process of this host saved under
    /// it, else none.
    fn align(&self, st: &mut ListState, head: Option<&[u8]>) {
        if !st.loaded {
            st.loaded = true;
            st.l = self
                .read_listings()
                .filter(|l| !l.dirty)
                .unwrap_or_default();
        }
        let Some(head) = head else {
            // No head (yet): listings made now are kept only in memory,
            // never served; the head this process may write makes them
            // current (it holds the writer lock).
            if st.l.head.is_some() {
                st.l = Listings {
                    dirty: st.changed,
                    ..Listings::default()
                };
            }
            return;
        };
        if st.l.current_under(head) {
            return;
        }
        if let Some(f) = self.read_listings() {
            if !f.dirty && f.current_under(head) {
                st.l = f;
                st.l.dirty = st.changed;
                return;
            }
        }
        st.l = Listings {
            head: String::from_utf8(head.to_vec()).ok(),
            dirty: st.changed,
            ..Listings::default()
        };
    }

    /// Before this process's first change to the remote since its last
    /// head: check that its listings are the remote's (one GET; under the
    /// writer lock nobody else changes them after), and mark
    /// `listings.json` dirty, so that a kill before the head leaves
    /// listings nobody trusts.
    fn before_change(&self, name: &str) {
        // Objects at the vault's root (`vault.json`, `key`, the writer's
        // `lease`) are in no listing the store asks for (they are read by
        // name): changing them owes no head.
        if !name.contains('/') || self.listing.lock().changed {
            return;
        }
        // Unknown (a failed GET): no listing is kept.
        let head = self.remote_head().ok().flatten();
        let mut st = self.listing.lock();
        self.align(&mut st, head.as_ref().map(|h| h.0.as_slice()));
        st.changed = true;
        st.l.dirty = true;
        self.save_listings(&st.l);
    }

    /// Write the remote's next head, announcing `added` and `removed`.
    fn write_head(&self, added: &[&str], removed: &[&str]) -> Result<()> {
        let prev = self
            .listing
            .lock()
            .l
            .head
            .as_deref()
            .and_then(|t| Head::parse(t.as_bytes()));
        let bytes = Head::next(prev.as_ref(), added, removed).encode();
        self.failing(self.remote.put(HEAD, &bytes))?;
        let mut st = self.listing.lock();
        st.l.head = String::from_utf8(bytes).ok();
        Ok(())
    }

    /// `r`, noting a failure (see [`ListState::failed`]).
    fn failing<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.listing.lock().failed = true;
        }
        r
    }

    /// The head covering this process's changes is written: its listings
    /// are current and kept.
    fn settle(&self) {
        let mut st = self.listing.lock();
        st.changed = false;
        st.l.dirty = false;
        self.save_listings(&st.l);
    }

    /// The size of object `name` from a listing (kept, or asked for).
    fn size_of(&self, name: &str) -> Option<u64> {
        {
            let mut st = self.listing.lock();
            if let Some(s) = st.l.size_of(name) {
                return Some(s);
            }
            // At most one listing per process for this (a vault without a
            // head keeps none: it would be one LIST per file read).
            if st.sized {
                return None;
            }
            st.sized = true;
        }
        let (dir, _) = name.rsplit_once('/')?;
        let prefix = format!("{}/", dir.split('/').next()?);
        self.list(&prefix)
            .ok()?
            .into_iter()
            .find(|o| o.name == name)
            .map(|o| o.size)
    }

    /// The range-cache name of a whole data pack.
    fn all_name(name: &str) -> String {
        format!("{name}.all")
    }

    /// `len` bytes at `offset` of data pack `name` from its whole cached
    /// copy, if there is one that long (marked as used now).
    fn cached_all(&self, name: &str, offset: u64, len: u64) -> Option<Vec<u8>> {
        let key = Self::all_name(name);
        let m = self.ranges.map(&key).ok().flatten()?;
        let end = offset.checked_add(len).filter(|e| *e <= m.len() as u64)?;
        self.touch(&key);
        Some(m[offset as usize..end as usize].to_vec())
    }

    /// Bring the local copies under `prefix` in line with listing
    /// `listed` of the remote: drop copies of objects no longer there, and
    /// fetch backup records not yet here (the mount finds backups by their
    /// local file). A copy dropped because the listing lagged is fetched
    /// again when read.
    fn sync(&self, prefix: &str, listed: &[ObjectInfo]) {
        let Ok(local) = self.whole.list(prefix) else {
            return;
        };
        let remote: std::collections::HashSet<&str> =
            listed.iter().map(|o| o.name.as_str()).collect();
        let here: std::collections::HashSet<&str> = local.iter().map(|o| o.name.as_str()).collect();
        for o in &local {
            if !remote.contains(o.name.as_str()) {
                let _ = self.whole.delete(&o.name);
            }
        }
        if prefix == "backups/" {
            for o in listed {
                if !here.contains(o.name.as_str()) {
                    match self.remote.get(&o.name) {
                        Ok(Some(d)) => self.remember(&self.whole, &o.name, &d),
                        Ok(None) => {}
                        Err(e) => log::warn!("cache: fetch {}: {e}", o.name),
                    }
                }
            }
        }
    }

    /// Keep a copy of `name` in `dir`. A cache that cannot be written
    /// (disk full) is no failure of the operation: it is logged, and the
    /// remote is read next time.
    fn remember(&self, dir: &LocalDir, name: &str, data: &[u8]) {
        if let Err(e) = dir.put(name, data) {
            log::warn!("cache: keep a copy of {name}: {e}");
        }
    }

    /// The local copy of `name`, if the cache has one.
    fn cached_whole(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.whole.get(name)
    }

    /// The range cache's object name of `len` bytes at `offset` of `name`.
    fn range_name(name: &str, offset: u64, len: u64) -> String {
        format!("{name}.{offset}-{len}")
    }

    /// Bytes `offset..offset+len` of data pack `name` through the block
    /// cache: the pack is read in aligned blocks of [`BLOCK`] bytes, each
    /// missing run of blocks with one ranged GET, and the blocks are kept
    /// like any range. A restore or a `cp -a` of many small files reads
    /// their chunks in the order the backup wrote them, so one GET serves
    /// every chunk of a block (one GET per chunk was one per file: 10,958
    /// GETs to restore 10,947 files, measured). None when the pack's size
    /// is not known here or the range is not within it: the caller then
    /// asks for the exact range (and gets the error naming the object).
    fn get_blocks(&self, name: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        let Some(size) = self.size_of(name) else {
            return Ok(None);
        };
        let Some(end) = offset.checked_add(len).filter(|e| *e <= size && len > 0) else {
            return Ok(None);
        };
        // A small cache (tests, or a tiny --cache-size) gets smaller
        // blocks: sixteen fit in it.
        let bsize = BLOCK.min((self.limit / 16).max(4096));
        let block = |b: u64| {
            let start = b * bsize;
            (start, bsize.min(size - start))
        };
        let key = |b: u64| {
            let (start, blen) = block(b);
            Self::range_name(name, start, blen)
        };
        let (first, last) = (offset / bsize, (end - 1) / bsize);
        let mut out = Vec::with_capacity(len as usize);
        let mut b = first;
        while b <= last {
            let (start, blen) = block(b);
            // A cached block is mapped, and only the wanted bytes copied
            // (reading the whole block for each small chunk cost a 1 MiB
            // copy per file of a restore).
            let cached = self
                .ranges
                .map(&key(b))
                .ok()
                .flatten()
                .filter(|m| m.len() as u64 == blen);
            let data = match cached {
                Some(m) => {
                    self.touch(&key(b));
                    m
                }
                None => {
                    // This block and the missing ones after it (up to the
                    // last wanted): one GET.
                    let mut e = b;
                    while e < last && self.ranges.map(&key(e + 1)).ok().flatten().is_none() {
                        e += 1;
                    }
                    let (estart, elen) = block(e);
                    let span = estart + elen - start;
                    let d = self.remote.get_range(name, start, span)?;
                    if d.len() as u64 != span {
                        return Err(Error::corrupt(format!(
                            "{}: asked for {span} bytes at offset {start}, got {}",
                            super::storage::object_label(self, name),
                            d.len()
                        )));
                    }
                    for k in b..=e {
                        let (ks, kl) = block(k);
                        let at = (ks - start) as usize;
                        self.remember_range(&key(k), &d[at..at + kl as usize]);
                    }
                    // Copy the wanted part of every fetched block.
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

    /// Mark cached range `key` as used now (least recently used goes
    /// first). The cache directory is this store's own, but a link put
    /// there is still not followed.
    fn touch(&self, key: &str) {
        use std::os::unix::fs::OpenOptionsExt;
        if let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.ranges.root().join(key))
        {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    /// A cached range, marked as used now (least recently used goes
    /// first), or None.
    fn cached_range(&self, key: &str, len: u64) -> Option<Vec<u8>> {
        let data = self.ranges.get(key).ok().flatten()?;
        if data.len() as u64 != len {
            // A torn or damaged entry: not served, replaced below.
            return None;
        }
        self.touch(key);
        Some(data)
    }

    /// Keep range `key` and evict the least recently used ranges beyond
    /// the bound.
    fn remember_range(&self, key: &str, data: &[u8]) {
        self.remember(&self.ranges, key, data);
        let before = self.used.load(Ordering::Relaxed);
        let now = if before == u64::MAX {
            let n = self.ranges_files().iter().map(|f| f.1).sum();
            self.used.store(n, Ordering::Relaxed);
            n
        } else {
            self.used.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64
        };
        if now > self.limit {
            self.evict();
        }
    }

    /// Every range file: path, size, last use.
    fn ranges_files(&self) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let mut out = Vec::new();
        let mut stack = vec![self.ranges.root().to_path_buf()];
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

    /// Remove the least recently used ranges until they take at most
    /// nine tenths of the bound (so that eviction is not run per insert).
    fn evict(&self) {
        let Some(_g) = self.evicting.try_lock() else {
            return;
        };
        let mut files = self.ranges_files();
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

    /// Remove every cached range of object `name`; true if any.
    fn forget_ranges(&self, name: &str) -> bool {
        let prefix = format!("{name}.");
        let Ok(list) = self.ranges.list(&prefix) else {
            return false;
        };
        let mut any = false;
        for o in list {
            if self.ranges.delete(&o.name).is_ok() {
                any = true;
            }
        }
        any
    }
}

impl Storage for CachedStorage {
    fn describe(&self) -> String {
        self.remote.describe()
    }

    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.before_change(name);
        // A record comes after a head announcing it: a listing made under
        // that head is kept only once it shows the record.
        let record = name.starts_with("backups/");
        if record {
            self.write_head(&[name], &[])?;
        }
        // The remote first: the object is published when this returns.
        self.failing(self.remote.put(name, data))?;
        self.listing.lock().l.changed(name, Some(data.len() as u64));
        if record {
            self.settle();
        }
        match class(name) {
            // The registration must follow: it is what this host reads.
            Class::Registration => self.home.put(name, data)?,
            Class::Whole => self.remember(&self.whole, name, data),
            Class::Pack if pack::holds_only_metadata(data) => {
                self.remember(&self.whole, name, data)
            }
            Class::Pack | Class::Other => {}
        }
        Ok(())
    }

    fn put_file(&self, name: &str, file: &File, len: u64) -> Result<()> {
        self.before_change(name);
        self.failing(self.remote.put_file(name, file, len))?;
        self.listing.lock().l.changed(name, Some(len));
        Ok(())
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match class(name) {
            Class::Registration => match self.home.get(name)? {
                Some(d) => Ok(Some(d)),
                None => self.remote.get(name),
            },
            Class::Whole => {
                if let Some(d) = self.cached_whole(name)? {
                    return Ok(Some(d));
                }
                let d = self.remote.get(name)?;
                if let Some(d) = &d {
                    self.remember(&self.whole, name, d);
                }
                Ok(d)
            }
            // A data pack read whole (check --read-data) is not kept: it
            // would push out what browsing and restores need.
            Class::Pack => match self.cached_whole(name)? {
                Some(d) => Ok(Some(d)),
                None => match self.ranges.get(&Self::all_name(name)).ok().flatten() {
                    Some(d) => Ok(Some(d)),
                    None => self.remote.get(name),
                },
            },
            Class::Other => self.remote.get(name),
        }
    }

    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if class(name) == Class::Pack {
            if let Ok(Some(m)) = self.whole.map(name) {
                let end = offset.checked_add(len).filter(|e| *e <= m.len() as u64);
                if let Some(end) = end {
                    return Ok(m[offset as usize..end as usize].to_vec());
                }
            }
            if let Some(d) = self.cached_all(name, offset, len) {
                return Ok(d);
            }
            if let Some(d) = self.get_blocks(name, offset, len)? {
                return Ok(d);
            }
            let key = Self::range_name(name, offset, len);
            if let Some(d) = self.cached_range(&key, len) {
                return Ok(d);
            }
            let d = self.remote.get_range(name, offset, len)?;
            if d.len() as u64 != len {
                return Err(Error::corrupt(format!(
                    "{}: asked for {len} bytes at offset {offset}, got {}",
                    super::storage::object_label(self, name),
                    d.len()
                )));
            }
            self.remember_range(&key, &d);
            return Ok(d);
        }
        self.remote.get_range(name, offset, len)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        // One GET says whether the listings kept are still the remote's.
        let head = self.remote_head()?;
        let cached = {
            let mut st = self.listing.lock();
            self.align(&mut st, head.as_ref().map(|h| h.0.as_slice()));
            head.as_ref()
                .filter(|_| !st.fresh)
                .and_then(|_| st.l.get(prefix))
        };
        let listed = match cached {
            Some(l) => l,
            None => {
                let listed = self.remote.list(prefix)?;
                let mut st = self.listing.lock();
                // Kept if it shows what its head announced, and no other
                // head came meanwhile.
                let keep = match &head {
                    Some((bytes, h)) => h.shown_by(prefix, &listed) && st.l.current_under(bytes),
                    None => st.l.head.is_none(),
                };
                if keep {
                    st.l.insert(prefix, &listed);
                    if !st.changed && head.is_some() {
                        self.save_listings(&st.l);
                    }
                }
                listed
            }
        };
        if prefix == "backups/" || prefix == "index/" {
            self.sync(prefix, &listed);
        }
        Ok(listed)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.before_change(name);
        let record = name.starts_with("backups/");
        if record {
            self.write_head(&[], &[name])?;
        }
        self.failing(self.remote.delete(name))?;
        self.listing.lock().l.changed(name, None);
        if record {
            self.settle();
        }
        match class(name) {
            Class::Registration => self.home.delete(name)?,
            Class::Whole => self.whole.delete(name)?,
            Class::Pack => {
                self.whole.delete(name)?;
                self.forget_ranges(name);
            }
            Class::Other => {}
        }
        Ok(())
    }

    fn map(&self, name: &str) -> Result<Option<memmap2::Mmap>> {
        match class(name) {
            Class::Whole | Class::Pack => {
                if let Some(m) = self.whole.map(name).ok().flatten() {
                    return Ok(Some(m));
                }
                if class(name) == Class::Pack {
                    // A data pack is read by range.
                    return Ok(None);
                }
                match self.remote.get(name)? {
                    Some(d) => {
                        self.remember(&self.whole, name, &d);
                        // Mapped if the copy was kept; else read.
                        Ok(self.whole.map(name).ok().flatten())
                    }
                    None => Err(super::storage::absent(self, name)),
                }
            }
            Class::Registration | Class::Other => Ok(None),
        }
    }

    fn remove_stale_temps(&self) -> Result<usize> {
        self.remote.remove_stale_temps()
    }

    fn keep_whole(&self, name: &str) -> Result<()> {
        if class(name) != Class::Pack || self.whole.map(name).ok().flatten().is_some() {
            return Ok(());
        }
        if let Some(d) = self.remote.get(name)? {
            self.remember(&self.whole, name, &d);
        }
        Ok(())
    }

    fn forget_cached(&self, name: &str) -> bool {
        let mut any = false;
        if matches!(self.whole.get(name), Ok(Some(_))) {
            any = self.whole.delete(name).is_ok();
        }
        self.forget_ranges(name) || any
    }

    fn requests(&self) -> Option<super::s3::S3Counters> {
        self.remote.requests()
    }

    fn publish(&self) -> Result<()> {
        if !self.listing.lock().changed {
            return Ok(());
        }
        self.write_head(&[], &[])?;
        self.settle();
        Ok(())
    }

    fn distrust_kept_listings(&self) {
        self.listing.lock().fresh = true;
    }

    fn get_at_most(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        // What is not cached here is read from the remote, bounded there.
        if class(name) == Class::Other {
            return self.remote.get_at_most(name, limit);
        }
        match self.get(name)? {
            Some(b) if b.len() as u64 > limit => Err(super::storage::too_big(
                &self.remote.describe(),
                name,
                limit,
            )),
            b => Ok(b),
        }
    }

    fn will_read(&self, name: &str, bytes: u64) {
        // Only data packs are read by range; a pack already here whole
        // (metadata, or fetched before) needs nothing.
        if class(name) != Class::Pack
            || bytes == 0
            || self.whole_failed.load(Ordering::Relaxed)
            || matches!(self.whole.map(name), Ok(Some(_)))
            || matches!(self.ranges.map(&Self::all_name(name)), Ok(Some(_)))
        {
            return;
        }
        let Some(size) = self.size_of(name) else {
            return;
        };
        // Most of it, and room for it beside the other ranges.
        if bytes.saturating_mul(2) <= size || size > self.limit / 2 {
            return;
        }
        // Bounded by the listed size: the object may have been replaced by
        // a larger one since (anyone who can write to the bucket can).
        match self.remote.get_at_most(name, size) {
            Ok(Some(d)) if d.len() as u64 == size => self.remember_range(&Self::all_name(name), &d),
            Ok(_) => log::debug!("cache: {name} changed size or vanished; read by range"),
            Err(e) => {
                self.whole_failed.store(true, Ordering::Relaxed);
                log::debug!("cache: fetch {name} whole: {e}; read by range");
            }
        }
    }
}

impl Drop for CachedStorage {
    /// A writer that changed the remote and ends without a head (a
    /// command that does not call [`Storage::publish`]) owes one: written
    /// here, best effort, so that other hosts see its changes. A process
    /// killed, or one whose change failed, skips this; its
    /// `listings.json` stays dirty, and the next writer's head covers what
    /// it left.
    fn drop(&mut self) {
        if self.listing.lock().failed {
            return;
        }
        if let Err(e) = self.publish() {
            log::warn!("cache: write the head of {}: {e}", self.remote.describe());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BlobId, BlobKind, Repo, RepoWriter};

    /// A vault in a "remote" (a second local directory standing in for
    /// the bucket: a real storage, not a mock), cached in another.
    fn setup(limit: u64) -> (tempfile::TempDir, Arc<LocalDir>, Arc<CachedStorage>) {
        let t = tempfile::tempdir().unwrap();
        let remote = Arc::new(LocalDir::new(t.path().join("bucket")));
        let cached = Arc::new(CachedStorage::new(
            remote.clone(),
            &t.path().join("home"),
            limit,
        ));
        Repo::create_in(&*cached).unwrap();
        (t, remote, cached)
    }

    fn bytes(seed: u32, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn files_under(p: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![p.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        out
    }

    /// Writes reach the remote (the whole vault is there); metadata is
    /// cached whole, data by the ranges read; a deleted cache is rebuilt
    /// from the remote alone.
    #[test]
    fn remote_holds_everything_and_cache_is_rebuilt() {
        let (t, remote, cached) = setup(DEFAULT_CACHE_BYTES);
        let repo = Repo::open_in(cached.clone(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, true);
        let data = bytes(1, 300_000);
        let d = w.add(BlobKind::Data, &data).unwrap().id;
        let tree = w.add(BlobKind::Tree, b"a tree blob").unwrap().id;
        w.finish().unwrap();
        // The remote alone can be opened and read.
        let from_remote = Repo::open_in(remote.clone(), "v").unwrap();
        assert_eq!(from_remote.read_blob(&d).unwrap(), data);
        assert_eq!(from_remote.read_blob(&tree).unwrap(), b"a tree blob");
        // The metadata pack and the index are whole in the cache; the data
        // pack is not.
        let whole = t.path().join("home");
        let tree_pack = repo.lookup(&tree).unwrap().pack;
        let data_pack = repo.lookup(&d).unwrap().pack;
        assert!(whole.join(pack::pack_name(&tree_pack)).exists());
        assert!(!whole.join(pack::pack_name(&data_pack)).exists());
        assert!(!files_under(&whole.join("index")).is_empty());
        // Reading data keeps a range, not the pack.
        let repo = Repo::open_in(cached.clone(), "v").unwrap();
        assert_eq!(repo.read_blob(&d).unwrap(), data);
        let ranges = files_under(&t.path().join("home/cache"));
        assert_eq!(ranges.len(), 1, "{ranges:?}");
        // The cache deleted: everything reads again, from the remote.
        for d in ["cache", "key", "index", "packs", "backups"] {
            let p = t.path().join("home").join(d);
            if p.is_dir() {
                std::fs::remove_dir_all(p).unwrap();
            } else if p.exists() {
                std::fs::remove_file(p).unwrap();
            }
        }
        let repo = Repo::open_in(cached.clone(), "v").unwrap();
        assert_eq!(repo.read_blob(&d).unwrap(), data);
        assert_eq!(repo.read_blob(&tree).unwrap(), b"a tree blob");
        assert!(whole.join(pack::pack_name(&tree_pack)).exists());
    }

    /// A byte flipped in a cached range or in a cached metadata pack: the
    /// read drops the copy and reads the remote, never wrong bytes.
    #[test]
    fn a_damaged_cache_entry_is_refetched_never_served() {
        let (t, _remote, cached) = setup(DEFAULT_CACHE_BYTES);
        let repo = Repo::open_in(cached.clone(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, false);
        let data = bytes(2, 100_000);
        let d = w.add(BlobKind::Data, &data).unwrap().id;
        let tree = w.add(BlobKind::Tree, &bytes(3, 5000)).unwrap().id;
        w.finish().unwrap();
        assert_eq!(repo.read_blob(&d).unwrap(), data);
        let flip = |p: &Path, at: usize| {
            let mut b = std::fs::read(p).unwrap();
            b[at] ^= 0x40;
            std::fs::write(p, b).unwrap();
        };
        let range = files_under(&t.path().join("home/cache")).remove(0);
        flip(&range, 500);
        let tree_loc = repo.lookup(&tree).unwrap();
        let tree_pack = t.path().join("home").join(pack::pack_name(&tree_loc.pack));
        flip(&tree_pack, tree_loc.offset as usize + 7);
        let repo = Repo::open_in(cached.clone(), "v").unwrap();
        assert_eq!(repo.read_blob(&d).unwrap(), data);
        assert_eq!(repo.read_blob(&tree).unwrap(), bytes(3, 5000));
        // The damaged range was replaced by a good one.
        assert!(range.exists());
        let repo = Repo::open_in(cached.clone(), "v").unwrap();
        assert_eq!(repo.read_blob(&d).unwrap(), data);
    }

    /// The data cache stays within its bound, least recently used out.
    #[test]
    fn the_range_cache_is_bounded() {
        let (t, _remote, cached) = setup(250_000);
        let repo = Repo::open_in(cached.clone(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, false);
        let blobs: Vec<_> = (0..10u32)
            .map(|i| {
                let b = bytes(10 + i, 100_000);
                (w.add(BlobKind::Data, &b).unwrap().id, b)
            })
            .collect();
        w.finish().unwrap();
        let repo = Repo::open_in(cached.clone(), "v").unwrap();
        for (id, b) in &blobs {
            assert_eq!(&repo.read_blob(id).unwrap(), b);
        }
        let total: u64 = files_under(&t.path().join("home/cache"))
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert!(total <= 250_000, "{total}");
        assert!(total > 0);
    }

    /// A storage that logs every request made of it (the bucket's bill).
    #[derive(Debug)]
    struct Logged {
        inner: LocalDir,
        ops: Mutex<Vec<String>>,
        /// The bound of each bounded read.
        limits: Mutex<Vec<u64>>,
    }

    impl Storage for Logged {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn put(&self, name: &str, data: &[u8]) -> Result<()> {
            self.ops.lock().push(format!("put {name}"));
            self.inner.put(name, data)
        }
        fn put_file(&self, name: &str, file: &File, len: u64) -> Result<()> {
            self.ops.lock().push(format!("put {name}"));
            self.inner.put_file(name, file, len)
        }
        fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
            // Anyone may put gigabytes under these names in a bucket.
            assert!(
                name != HEAD && name != "lease",
                "{name} read whole, not with get_at_most"
            );
            self.ops.lock().push(format!("get {name}"));
            self.inner.get(name)
        }
        fn get_at_most(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>> {
            self.ops.lock().push(format!("get {name}"));
            self.limits.lock().push(limit);
            self.inner.get_at_most(name, limit)
        }
        fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
            self.ops.lock().push(format!("range {name}"));
            self.inner.get_range(name, offset, len)
        }
        fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
            self.ops.lock().push(format!("list {prefix}"));
            self.inner.list(prefix)
        }
        fn delete(&self, name: &str) -> Result<()> {
            self.ops.lock().push(format!("delete {name}"));
            self.inner.delete(name)
        }
    }

    fn logged(t: &tempfile::TempDir) -> Arc<Logged> {
        Arc::new(Logged {
            inner: LocalDir::new(t.path().join("bucket")),
            ops: Mutex::new(Vec::new()),
            limits: Mutex::new(Vec::new()),
        })
    }

    fn host(remote: &Arc<Logged>, t: &tempfile::TempDir, home: &str) -> Arc<CachedStorage> {
        Arc::new(CachedStorage::new(
            remote.clone(),
            &t.path().join(home),
            DEFAULT_CACHE_BYTES,
        ))
    }

    /// What a backup does to the store: blobs, its index, its record.
    fn backup(cached: &Arc<CachedStorage>, name: &str, data: &[u8]) -> BlobId {
        let repo = Repo::open_in(cached.clone(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, false);
        let id = w.add(BlobKind::Data, data).unwrap().id;
        w.finish().unwrap();
        repo.used_bytes().unwrap();
        cached.list("backups/").unwrap();
        cached
            .put(&format!("backups/{name}.bk"), name.as_bytes())
            .unwrap();
        id
    }

    fn count(ops: &[String], what: &str) -> usize {
        ops.iter().filter(|o| o.starts_with(what)).count()
    }

    /// Under a head that has not changed, listings come from this host's
    /// cache (one GET of the head, no LIST), in this process and the
    /// next; a record written from another host changes the head, and the
    /// next listing asks the remote again and sees it.
    #[test]
    fn an_unchanged_head_means_no_listing() {
        let t = tempfile::tempdir().unwrap();
        let remote = logged(&t);
        let a = host(&remote, &t, "home");
        Repo::create_in(&*a).unwrap();
        backup(&a, "b1", &bytes(20, 50_000));
        // Another process of this host: an unchanged re-backup.
        drop(a);
        let a = host(&remote, &t, "home");
        remote.ops.lock().clear();
        let repo = Repo::open_in(a.clone(), "v").unwrap();
        repo.used_bytes().unwrap();
        a.list("backups/").unwrap();
        a.put("backups/b2.bk", b"b2").unwrap();
        let ops = remote.ops.lock().clone();
        assert_eq!(count(&ops, "list "), 0, "{ops:?}");
        assert_eq!(count(&ops, "put "), 2, "{ops:?}");
        assert_eq!(ops.last().map(String::as_str), Some("put backups/b2.bk"));
        // Its own record is in its listings without a LIST.
        let names: Vec<String> = a
            .list("backups/")
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["backups/b1.bk", "backups/b2.bk"]);
        // Host two writes: host one's next listing is asked again.
        let b = host(&remote, &t, "home2");
        backup(&b, "b3", &bytes(21, 50_000));
        remote.ops.lock().clear();
        let names: Vec<String> = a
            .list("backups/")
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["backups/b1.bk", "backups/b2.bk", "backups/b3.bk"]);
        assert_eq!(
            *remote.ops.lock(),
            ["get head", "list backups/", "get backups/b3.bk"]
        );
        // ...and kept.
        remote.ops.lock().clear();
        a.list("backups/").unwrap();
        assert_eq!(*remote.ops.lock(), ["get head"]);
        // A deleted record: host two's listing no longer shows it.
        a.delete("backups/b1.bk").unwrap();
        let names: Vec<String> = b
            .list("backups/")
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["backups/b2.bk", "backups/b3.bk"]);
    }

    /// A head announcing a record that no listing shows (its writer was
    /// killed between the two, or the listing lags): the listing is used
    /// but not kept. A dirty listings file (a writer killed on this host
    /// before its head) is not trusted.
    #[test]
    fn a_listing_that_misses_what_the_head_announced_is_not_kept() {
        let t = tempfile::tempdir().unwrap();
        let remote = logged(&t);
        let a = host(&remote, &t, "home");
        Repo::create_in(&*a).unwrap();
        backup(&a, "b1", &bytes(22, 10_000));
        let h = Head::next(None, &["backups/lost.bk"], &[]);
        remote.inner.put(HEAD, &h.encode()).unwrap();
        remote.ops.lock().clear();
        a.list("backups/").unwrap();
        a.list("backups/").unwrap();
        assert_eq!(count(&remote.ops.lock(), "list "), 2);
        // Killed mid-change on this host: the file says dirty.
        let a = host(&remote, &t, "home3");
        a.list("index/").unwrap();
        a.put("index/x.idx", b"x").unwrap();
        std::mem::forget(a);
        let a = host(&remote, &t, "home3");
        remote.ops.lock().clear();
        a.list("index/").unwrap();
        assert_eq!(count(&remote.ops.lock(), "list "), 1);
    }

    /// A head put back with old bytes (replayed by a bucket writer, or a
    /// stale read) makes a host serve listings that miss a newer backup's
    /// index and record; once told to distrust kept listings (prune), it
    /// lists the bucket and sees them.
    #[test]
    fn distrusted_listings_are_asked_of_the_bucket() {
        let t = tempfile::tempdir().unwrap();
        let remote = logged(&t);
        let a = host(&remote, &t, "home");
        Repo::create_in(&*a).unwrap();
        backup(&a, "b1", &bytes(24, 10_000));
        a.list("index/").unwrap();
        let old_head = remote.inner.get(HEAD).unwrap().unwrap();
        let b = host(&remote, &t, "home2");
        backup(&b, "b2", &bytes(25, 10_000));
        drop(b);
        remote.inner.put(HEAD, &old_head).unwrap();
        let names = |l: Vec<ObjectInfo>| l.into_iter().map(|o| o.name).collect::<Vec<_>>();
        let bucket = names(remote.inner.list("index/").unwrap());
        assert_eq!(names(a.list("backups/").unwrap()), ["backups/b1.bk"]);
        assert_ne!(names(a.list("index/").unwrap()), bucket, "the replay shows");
        a.distrust_kept_listings();
        assert_eq!(
            names(a.list("backups/").unwrap()),
            ["backups/b1.bk", "backups/b2.bk"]
        );
        assert_eq!(names(a.list("index/").unwrap()), bucket);
    }

    /// A head larger than any head is read no further than its bound and
    /// taken for no head: listings are asked of the remote, never served
    /// from what was kept under an earlier head.
    #[test]
    fn an_oversized_head_is_no_head() {
        let t = tempfile::tempdir().unwrap();
        let remote = logged(&t);
        let a = host(&remote, &t, "home");
        Repo::create_in(&*a).unwrap();
        backup(&a, "b1", &bytes(23, 10_000));
        remote.ops.lock().clear();
        a.list("backups/").unwrap();
        assert_eq!(count(&remote.ops.lock(), "list "), 0);
        let mut big = Head::next(None, &[], &[]).encode();
        big.resize(HEAD_LIMIT + 1, b' ');
        remote.inner.put(HEAD, &big).unwrap();
        let e = a.remote.get_at_most(HEAD, HEAD_LIMIT as u64).unwrap_err();
        assert!(e.to_string().contains("head is damaged"), "{e}");
        remote.ops.lock().clear();
        let names: Vec<String> = a
            .list("backups/")
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["backups/b1.bk"]);
        a.list("backups/").unwrap();
        assert_eq!(count(&remote.ops.lock(), "list "), 2);
    }

    /// Many small blobs read one by one (a restore of small files, a
    /// `cp -a` through the mount) cost one ranged GET per block of the
    /// pack, not one per blob; every blob still verifies.
    #[test]
    fn small_blobs_are_read_by_the_block() {
        let t = tempfile::tempdir().unwrap();
        let remote = logged(&t);
        let a = host(&remote, &t, "home");
        Repo::create_in(&*a).unwrap();
        let repo = Repo::open_in(a.clone(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, false);
        let blobs: Vec<(BlobId, Vec<u8>)> = (0..60u32)
            .map(|i| {
                let b = bytes(100 + i, 3000);
                (w.add(BlobKind::Data, &b).unwrap().id, b)
            })
            .collect();
        w.finish().unwrap();
        a.put("backups/b.bk", b"b").unwrap();
        let c = host(&remote, &t, "home2");
        let r = Repo::open_in(c.clone(), "v").unwrap();
        r.used_bytes().unwrap();
        remote.ops.lock().clear();
        for (id, b) in &blobs {
            assert_eq!(&r.read_blob(id).unwrap(), b);
        }
        let ops = remote.ops.lock().clone();
        assert_eq!(count(&ops, "range "), 1, "{ops:?}");
        assert_eq!(count(&ops, "get packs/"), 0, "{ops:?}");
    }

    /// A restore that wants more than half of a data pack's bytes fetches
    /// the pack whole, once, and reads every blob from that copy; less
    /// than half, and blobs are read by range.
    #[test]
    fn most_of_a_pack_is_fetched_whole_else_ranges() {
        let t = tempfile::tempdir().unwrap();
        let remote = logged(&t);
        let a = host(&remote, &t, "home");
        Repo::create_in(&*a).unwrap();
        let repo = Repo::open_in(a.clone(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, false);
        let blobs: Vec<(BlobId, Vec<u8>)> = (0..8u32)
            .map(|i| {
                let b = bytes(30 + i, 40_000);
                (w.add(BlobKind::Data, &b).unwrap().id, b)
            })
            .collect();
        w.finish().unwrap();
        a.put("backups/b.bk", b"b").unwrap();
        let fresh = |home: &str| {
            let c = host(&remote, &t, home);
            let r = Repo::open_in(c.clone(), "v").unwrap();
            // The listing of packs/ (for their sizes) is kept here first.
            r.used_bytes().unwrap();
            remote.ops.lock().clear();
            r
        };
        // Six of eight blobs: whole.
        let r = fresh("home2");
        r.will_read(blobs[..6].iter().map(|b| b.0));
        for (id, b) in &blobs[..6] {
            assert_eq!(&r.read_blob(id).unwrap(), b);
        }
        let ops = remote.ops.lock().clone();
        assert_eq!(count(&ops, "get packs/"), 1, "{ops:?}");
        assert_eq!(count(&ops, "range "), 0, "{ops:?}");
        // Two of eight: by range.
        let r = fresh("home3");
        r.will_read(blobs[..2].iter().map(|b| b.0));
        for (id, b) in &blobs[..2] {
            assert_eq!(&r.read_blob(id).unwrap(), b);
        }
        let ops = remote.ops.lock().clone();
        assert_eq!(count(&ops, "get packs/"), 0, "{ops:?}");
        // The two blobs lie side by side in the pack: their blocks are
        // fetched with one ranged GET (get_blocks).
        assert_eq!(count(&ops, "range "), 1, "{ops:?}");
        // A pack replaced in the bucket by a far larger one since it was
        // listed is read no further than its listed size (and not kept).
        let r = fresh("home4");
        let pack = r.lookup(&blobs[0].0).unwrap().pack;
        let name = pack::pack_name(&pack);
        let listed = remote.inner.get(&name).unwrap().unwrap().len() as u64;
        remote.inner.put(&name, &vec![0u8; 4 << 20]).unwrap();
        remote.limits.lock().clear();
        r.will_read(blobs.iter().map(|b| b.0));
        assert_eq!(*remote.limits.lock(), [listed]);
        assert!(r.read_blob(&blobs[0].0).is_err());
    }

    /// Writes reach the remote in the store's order (every pack before the
    /// index naming it); once the cache is warm, reading metadata makes no
    /// request at all, and data is read by range, never whole.
    #[test]
    fn write_order_holds_and_a_warm_cache_reads_metadata_without_requests() {
        let t = tempfile::tempdir().unwrap();
        let remote = Arc::new(Logged {
            inner: LocalDir::new(t.path().join("bucket")),
            ops: Mutex::new(Vec::new()),
            limits: Mutex::new(Vec::new()),
        });
        let cached = Arc::new(CachedStorage::new(
            remote.clone(),
            &t.path().join("home"),
            DEFAULT_CACHE_BYTES,
        ));
        Repo::create_in(&*cached).unwrap();
        // The settings, as the catalog writes them: opening a vault reads
        // them (is it encrypted?) from this host's copy, with no request.
        cached.put("vault.json", br#"{"name": "v"}"#).unwrap();
        let repo = Repo::open_in(cached.clone(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, true);
        let data = bytes(5, 200_000);
        let d = w.add(BlobKind::Data, &data).unwrap().id;
        let tree = w.add(BlobKind::Tree, b"entries").unwrap().id;
        w.finish().unwrap();
        let puts: Vec<String> = remote
            .ops
            .lock()
            .iter()
            .filter(|o| o.starts_with("put "))
            .cloned()
            .collect();
        let first_index = puts.iter().position(|o| o.contains("index/")).unwrap();
        let last_pack = puts.iter().rposition(|o| o.contains("packs/")).unwrap();
        assert!(last_pack < first_index, "{puts:?}");
        // A reader opening the warm cache: the key, the indexes and the
        // metadata pack are local; only the head and (no record has
        // written a head yet) the listing of index/ are asked.
        remote.ops.lock().clear();
        let repo = Repo::open_in(cached.clone(), "v").unwrap();
        assert_eq!(repo.read_blob(&tree).unwrap(), b"entries");
        assert_eq!(*remote.ops.lock(), ["get head", "list index/"]);
        // Data: one ranged read, then none.
        remote.ops.lock().clear();
        assert_eq!(repo.read_blob(&d).unwrap(), data);
        let repo = Repo::open_in(cached.clone(), "v").unwrap();
        assert_eq!(repo.read_blob(&d).unwrap(), data);
        let ops = remote.ops.lock().clone();
        assert_eq!(
            ops.iter().filter(|o| o.starts_with("range ")).count(),
            1,
            "{ops:?}"
        );
        assert!(!ops.iter().any(|o| o.starts_with("get packs/")), "{ops:?}");
    }

    /// An encrypted vault kept in the bucket: its key slots, sealed packs
    /// and sealed index go to the remote (no clear key, no data in the
    /// clear); another host's cold cache unlocks it from the bucket's
    /// slots, reads a data blob by range (opened, bound to its id) and
    /// metadata whole; a flipped byte in the bucket's data pack, in a blob
    /// or in the sealed blob table, is an error, never other bytes.
    #[test]
    fn encrypted_vault_round_trips_and_a_flipped_byte_in_the_bucket_is_detected() {
        use crate::crypto::slot::{self, KdfParams, Secret};
        use crate::store::keyring::{self, Slots};
        let t = tempfile::tempdir().unwrap();
        let bucket = t.path().join("bucket");
        let remote = Arc::new(LocalDir::new(&bucket));
        let cache = |home: &str| {
            Arc::new(CachedStorage::new(
                remote.clone(),
                &t.path().join(home),
                DEFAULT_CACHE_BYTES,
            ))
        };
        let cached = cache("home");
        let params = KdfParams::parse("m=64,t=1,p=1").unwrap();
        keyring::create_encrypted_with(&*cached, "v", Secret::Password(b"pw"), params).unwrap();
        cached
            .put(
                "vault.json",
                br#"{"format": 2, "name": "v", "encrypted": true}"#,
            )
            .unwrap();
        let repo = Repo::open_in(cached.clone(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, true);
        let data = bytes(7, 300_000);
        let d = w.add(BlobKind::Data, &data).unwrap().id;
        let tree = w.add(BlobKind::Tree, b"a sealed tree blob").unwrap().id;
        w.finish().unwrap();
        assert!(remote.get("key").unwrap().is_none());
        let files = files_under(&bucket);
        assert!(files.iter().any(|f| f.starts_with(bucket.join("keys"))));
        for f in &files {
            let b = std::fs::read(f).unwrap();
            assert!(!b.windows(64).any(|w| w == &data[1000..1064]), "{f:?}");
            assert!(!b.windows(18).any(|w| w == b"a sealed tree blob"), "{f:?}");
        }

        // Another host: a cold cache, unlocked from the bucket's slots.
        let (_, master) =
            slot::unlock_vault(&Slots(&*cache("home2")), "v", Secret::Password(b"pw")).unwrap();
        let key = crate::store::Key::from_master(&master);
        let cold = cache("home2");
        let repo = Repo::open_with_key(cold.clone(), "v", key.clone()).unwrap();
        assert_eq!(repo.read_blob(&d).unwrap(), data);
        assert_eq!(repo.read_blob(&tree).unwrap(), b"a sealed tree blob");
        let loc = repo.lookup(&d).unwrap();
        let name = pack::pack_name(&loc.pack);
        assert!(
            !t.path().join("home2").join(&name).exists(),
            "the data pack was read by range, not whole"
        );
        // A wrong key opens nothing.
        let other = crate::store::Key::from_master(&crate::crypto::MasterKey::generate().unwrap());
        assert!(Repo::open_with_key(cache("home-wrong"), "v", other)
            .and_then(|r| r.read_blob(&d))
            .is_err());

        // A flipped byte in the blob, in the bucket: another cold cache
        // (and the retry from the source) finds it.
        let path = bucket.join(&name);
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        bad[loc.offset as usize + 100] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        let repo = Repo::open_with_key(cache("home3"), "v", key.clone()).unwrap();
        let e = repo.read_blob(&d).unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::Corrupt, "{e}");
        // A flipped byte in the sealed blob table: check finds it (the
        // pack is loaded whole from its ranged reader).
        let mut bad = good.clone();
        let at = bad.len() - pack::FOOTER_LEN - 5;
        bad[at] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        let repo = Repo::open_with_key(cache("home4"), "v", key.clone()).unwrap();
        let problems = repo.check_pack(loc.pack, true).unwrap();
        assert!(!problems.is_empty());
        // Restored, it reads and checks clean again.
        std::fs::write(&path, &good).unwrap();
        let repo = Repo::open_with_key(cache("home5"), "v", key).unwrap();
        assert!(repo.check_pack(loc.pack, true).unwrap().is_empty());
        assert_eq!(repo.read_blob(&d).unwrap(), data);
    }
}
