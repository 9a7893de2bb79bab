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
//! key, keys/<n>, index/<id>.idx, backups/<b>.bk, packs/<hh>/<id>.pack
//!                             whole copies: the key (or an encrypted
//!                             vault's key slots), every index, backup
//!                             records, and packs of trees and chunk lists
//!                             (metadata); a listing of `index/`, `keys/`
//!                             or `backups/` brings them in line with the
//!                             remote
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
//! Files: this one (the storage operations: what is cached how, the
//! write order), `listings.rs` (the remote's head and the listings kept
//! under it), `blocks.rs` (the bounded cache of data-pack ranges) and
//! `ahead.rs` (its read-ahead).
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

mod ahead;
mod blocks;
mod listings;
#[cfg(test)]
mod tests;

use super::local::LocalDir;
use super::pack;
use super::storage::{ObjectInfo, Storage};
use crate::error::Result;
use blocks::{BlockCache, Mapped};
use listings::ListState;
use parking_lot::Mutex;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The data cache's size when none is given: room for a few hundred
/// megabytes of restores to be read twice without a download.
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

/// A remote vault with a local cache. See the module docs.
pub struct CachedStorage {
    remote: Arc<dyn Storage>,
    /// The vault's local directory: its registration `vault.json`, and
    /// whole objects (key, indexes, records, metadata packs).
    home: LocalDir,
    /// The same directory, for whole copies (a second name for clarity).
    whole: LocalDir,
    /// Byte ranges of data packs (shared with its read-ahead helpers).
    blocks: Arc<BlockCache>,
    /// Whole copies of packs as this process last found them.
    whole_maps: Mapped,
    /// The remote's listings as this process knows them.
    listing: Mutex<ListState>,
    /// A whole-pack fetch failed in this process: the others are left to
    /// ranges, so that an unreachable bucket costs one round of retries
    /// per blob read, not two.
    whole_failed: std::sync::atomic::AtomicBool,
    /// Objects at the vault's root that this process found absent in the
    /// remote (and has not put since): not asked again.
    absent: Mutex<std::collections::HashSet<String>>,
    /// How long a head read or written by this process stands for the
    /// remote's in a listing ([`HEAD_TTL`] for a vault's cache; zero, every
    /// listing asks, unless set).
    head_ttl: std::time::Duration,
}

/// How long a cached vault trusts the head it last saw for a listing: a
/// mount shows another host's new backup at most this much later (the
/// bound docs/FORMAT.md §19.4 gives).
pub const HEAD_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl std::fmt::Debug for CachedStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStorage")
            .field("remote", &self.remote.describe())
            .field("cache", &self.whole.root())
            .field("limit", &self.blocks.limit())
            .finish()
    }
}

/// How an object is cached.
#[derive(PartialEq, Eq)]
enum Class {
    /// The local registration, kept beside the cache (never evicted).
    Registration,
    /// Always kept whole: small, and read at every open (the key, an
    /// encrypted vault's key slots, indexes, records).
    Whole,
    /// A pack: whole if it holds only metadata, else by range.
    Pack,
    /// Not cached.
    Other,
}

fn class(name: &str) -> Class {
    if name == "vault.json" {
        Class::Registration
    } else if name == "key"
        || name.starts_with("index/")
        || name.starts_with("backups/")
        || name.starts_with("keys/")
    {
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
            blocks: Arc::new(BlockCache::new(home.join("cache"), limit)),
            whole_maps: Mapped::new(),
            listing: Mutex::new(ListState::default()),
            whole_failed: std::sync::atomic::AtomicBool::new(false),
            absent: Mutex::new(std::collections::HashSet::new()),
            head_ttl: std::time::Duration::ZERO,
        }
    }

    /// The same, trusting a head it saw less than `ttl` ago for listings
    /// ([`HEAD_TTL`]).
    pub fn with_head_ttl(mut self, ttl: std::time::Duration) -> CachedStorage {
        self.head_ttl = ttl;
        self
    }

    /// The remote storage.
    pub fn remote(&self) -> &Arc<dyn Storage> {
        &self.remote
    }

    /// Keep a copy of `name` in `dir`. A cache that cannot be written
    /// (disk full) is no failure of the operation: it is logged, and the
    /// remote is read next time.
    fn remember(&self, dir: &LocalDir, name: &str, data: &[u8]) {
        self.whole_maps.drop_key(name);
        if let Err(e) = dir.put(name, data) {
            log::warn!("cache: keep a copy of {name}: {e}");
        }
    }

    /// The local copy of `name`, if the cache has one.
    fn cached_whole(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.whole.get(name)
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
        self.absent.lock().remove(name);
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

    fn put_kept(&self, name: &str, data: &[u8]) -> Result<()> {
        self.put(name, data)?;
        // A clear metadata pack was kept by `put` already; a sealed one
        // (an encrypted vault) cannot be told by its bytes, only by its
        // writer. Without this the first read of its trees downloaded
        // the pack again (570 KB after a backup of the quick tree).
        if class(name) == Class::Pack && !pack::holds_only_metadata(data) {
            self.remember(&self.whole, name, data);
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
                // An object at the root found absent is not asked again by
                // this process: an encrypted vault's `key`, whose absence
                // is checked at every open (a planted clear key), costs
                // one GET per command, not one per open.
                let root = !name.contains('/');
                if root && self.absent.lock().contains(name) {
                    return Ok(None);
                }
                let d = self.remote.get(name)?;
                match &d {
                    Some(d) => self.remember(&self.whole, name, d),
                    None if root => {
                        self.absent.lock().insert(name.to_string());
                    }
                    None => {}
                }
                Ok(d)
            }
            // A data pack read whole (check --read-data) is not kept: it
            // would push out what browsing and restores need.
            Class::Pack => match self.cached_whole(name)? {
                Some(d) => Ok(Some(d)),
                None => match self.blocks.get_whole(name) {
                    Some(d) => Ok(Some(d)),
                    None => self.remote.get(name),
                },
            },
            Class::Other => self.remote.get(name),
        }
    }

    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if class(name) == Class::Pack {
            // A whole copy (a metadata pack read by range), looked for
            // once per pack, not once per blob.
            let whole = self
                .whole_maps
                .get_or(name, || self.whole.map(name).ok().flatten());
            if let Some(m) = whole {
                let end = offset.checked_add(len).filter(|e| *e <= m.len() as u64);
                if let Some(end) = end {
                    return Ok(m[offset as usize..end as usize].to_vec());
                }
            }
            if let Some(d) = self.blocks.read_whole(name, offset, len) {
                return Ok(d);
            }
            // By the block when the pack's size is known here; else the
            // exact range (a range beyond the size gets the remote's
            // error naming the object).
            if let Some(size) = self.size_of(name) {
                if let Some(d) = self.blocks.read(&self.remote, name, size, offset, len)? {
                    return Ok(d);
                }
            }
            return self.blocks.exact(&*self.remote, name, offset, len);
        }
        self.remote.get_range(name, offset, len)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        // One GET says whether the listings kept are still the remote's
        // (at most one per head TTL).
        let head = self.recent_head()?;
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
        // The copies of a key slot removed on another host (a password
        // revoked) go with the listing that no longer shows it.
        if prefix == "backups/" || prefix == "index/" || prefix == crate::crypto::slot::PREFIX {
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
        self.whole_maps.drop_key(name);
        if record {
            self.settle();
        }
        match class(name) {
            Class::Registration => self.home.delete(name)?,
            Class::Whole => self.whole.delete(name)?,
            Class::Pack => {
                self.whole.delete(name)?;
                self.blocks.forget(name);
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
        self.whole_maps.drop_key(name);
        let mut any = false;
        if matches!(self.whole.get(name), Ok(Some(_))) {
            any = self.whole.delete(name).is_ok();
        }
        let ranges = self.blocks.forget(name);
        // A pack's bytes may have come from a local copy even when none is
        // here now: another thread reading the same pack may have dropped
        // that copy first, or dropped one it kept again meanwhile (the
        // damaged-cache race, `readers_of_one_damaged_cached_pack_...`).
        // The reader then reads again from the source, a bounded number of
        // times, rather than report damage the bucket does not have.
        ranges || any || class(name) == Class::Pack
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
            || self
                .whole_maps
                .get_or(name, || self.whole.map(name).ok().flatten())
                .is_some()
        {
            return;
        }
        let Some(size) = self.size_of(name) else {
            return;
        };
        // Most of it, and room for it beside the other ranges.
        if bytes.saturating_mul(2) <= size
            || !self.blocks.room_for_whole(size)
            || self.blocks.has_whole(name, size)
        {
            return;
        }
        // Bounded by the listed size: the object may have been replaced by
        // a larger one since (anyone who can write to the bucket can).
        match self.remote.get_at_most(name, size) {
            Ok(Some(d)) if d.len() as u64 == size => self.blocks.keep_whole(name, d),
            Ok(_) => log::debug!("cache: {name} changed size or vanished; read by range"),
            Err(e) => {
                self.whole_failed.store(true, Ordering::Relaxed);
                log::debug!("cache: fetch {name} whole: {e}; read by range");
            }
        }
    }

    fn reading_once(&self, on: bool) {
        self.blocks.once(on);
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
