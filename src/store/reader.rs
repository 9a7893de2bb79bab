//! The read side of a vault's store: [`Repo`] maps the indexes and packs
//! it reaches through the vault's [`Storage`], finds blobs (re-listing when
//! a writer replaced what it listed) and returns only verified bytes. Also
//! the read-only inspection check and the format tests use.

use super::compression::{
    decompress, decompress_lz4, decompress_lz4_to_slice, decompress_to_slice, give_buffer,
    take_buffer,
};
use super::index::{self, IndexFile};
use super::pack::PackReader;
use super::storage::{self, Storage};
use super::{BlobId, Compression, Key, LocalDir, Location};
use crate::error::{Error, Result};
use crate::fsutil;
use parking_lot::{Mutex, RwLock};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// How many times a reader re-lists `index/` to find a blob its mapped
/// indexes do not name, or a pack that vanished under it.
pub(super) const RELIST_TRIES: usize = 4;
/// Reads of a damaged cached copy from the source: more than one, since
/// another thread may put the damaged copy back (from bytes it had read
/// before) between one thread's drop and its read.
const DAMAGE_TRIES: usize = 3;

/// How much a read checks of a blob it returns.
///
/// A clear blob (version 1) is always hashed with the vault's keyed XXH3
/// and compared with its id. A sealed blob has already been authenticated
/// as blob `id` when it opened: the id is in its associated data (FORMAT.md
/// §16.3), so its tag holds only for the bytes a writer of this vault
/// sealed as that blob, and a writer seals only the bytes whose id it is.
/// Hashing them again with keyed BLAKE3 (a pass over every byte read, a
/// third of the cipher's cost) adds nothing against the bucket, so reads
/// ([`Repo::read_blob`]: the mount, restore) skip it. `check --read-data`
/// and prune's copies ([`Repo::read_at`]) still hash every blob: a writer's
/// own mistake (bytes sealed under another blob's id) is theirs to find.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verify {
    /// Clear blobs hashed, sealed blobs trusted to their tag.
    Read,
    /// Every blob hashed and compared with its id.
    Whole,
}

/// Where a blob read goes ([`Repo::read_at_try`]).
enum Out<'a> {
    /// A buffer of its own, returned.
    New,
    /// This slice, exactly the blob's length.
    Into(&'a mut [u8]),
}

/// An index's contents: the packs it names and its entries, in its order.
pub type IndexTable = (Vec<BlobId>, Vec<(BlobId, Location)>);

/// The read side of a vault's store: mapped indexes and packs.
pub struct Repo {
    pub(super) storage: Arc<dyn Storage>,
    pub(super) vault: String,
    pub(super) key: Key,
    indexes: RwLock<Vec<Arc<IndexFile>>>,
    /// Index files that could not be opened at the last refresh, with why.
    index_errors: RwLock<Vec<String>>,
    packs: Mutex<HashMap<BlobId, Arc<PackReader>>>,
    /// Prune's marks (a remote vault), the last resort of a read.
    marks: super::marks::Marks,
}

impl Repo {
    /// Create the store directory of a new vault with a fresh key.
    pub fn create(dir: &Path) -> Result<()> {
        Self::create_layout(dir)?;
        Self::create_in(&LocalDir::new(dir))
    }

    /// Make a new encrypted vault's store in `dir`: the layout and the
    /// master key's first slot, sealed by the password or key file given
    /// for vault `vault` (no clear key).
    pub fn create_encrypted(dir: &Path, vault: &str) -> Result<()> {
        Self::create_layout(dir)?;
        super::keyring::create_encrypted(&LocalDir::new(dir), vault).map(drop)
    }

    /// The directories of the layout exist from the start (the storage
    /// would make them at the first pack or index).
    fn create_layout(dir: &Path) -> Result<()> {
        fsutil::create_dir_all(&dir.join("packs"))?;
        fsutil::create_dir_all(&dir.join("index"))
    }

    /// Give a new vault's storage a fresh key.
    pub fn create_in(storage: &dyn Storage) -> Result<()> {
        storage.put("key", Key::generate().secret())
    }

    /// Open the store of vault `vault` in `dir`: reads the key and maps the
    /// indexes (O(number of index files), not of their size).
    pub fn open(dir: &Path, vault: &str) -> Result<Repo> {
        Self::open_in(Arc::new(LocalDir::new(dir)), vault)
    }

    /// Open the store of vault `vault` kept in `storage`.
    pub fn open_in(storage: Arc<dyn Storage>, vault: &str) -> Result<Repo> {
        // The one place a vault's key is found (unlocked, once per
        // process, for an encrypted vault): every command that reads or
        // writes blobs comes through here.
        let key = super::keyring::vault_key(&*storage, vault)?;
        Self::open_with_key(storage, vault, key)
    }

    /// Open the store of vault `vault` kept in `storage` with its key.
    pub fn open_with_key(storage: Arc<dyn Storage>, vault: &str, key: Key) -> Result<Repo> {
        let repo = Repo {
            storage,
            vault: vault.to_string(),
            key,
            indexes: RwLock::new(Vec::new()),
            index_errors: RwLock::new(Vec::new()),
            packs: Mutex::new(HashMap::new()),
            marks: super::marks::Marks::default(),
        };
        repo.refresh()
            .map_err(|e| e.context(format!("vault {vault}")))?;
        Ok(repo)
    }

    /// The vault's name.
    pub fn vault(&self) -> &str {
        &self.vault
    }
    /// Where the vault's objects are kept.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }
    /// The vault's keyed hash.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Names of the index objects present now (`index/<hex>.idx`).
    pub(super) fn index_names(&self) -> Result<Vec<String>> {
        Ok(self
            .storage
            .list("index/")?
            .into_iter()
            .map(|o| o.name)
            .filter(|n| n.ends_with(".idx"))
            .collect())
    }

    /// Re-list the index directory: map new index files, drop vanished ones.
    /// An index that vanishes between listing and opening (merged by a
    /// writer) is skipped; its blobs are in the merged index. One that
    /// cannot be opened is left out and reported by [`Repo::index_errors`].
    pub fn refresh(&self) -> Result<()> {
        self.refresh_counting().map(|_| ())
    }

    /// [`Repo::refresh`], returning how many listed index files vanished
    /// before they could be opened: a sign that the listing is already
    /// stale (a writer replaced them by one this listing may not show).
    fn refresh_counting(&self) -> Result<usize> {
        let names = self.index_names()?;
        self.refresh_from(names)
    }

    /// Map the index objects `names` (a listing of `index/`), keeping those
    /// mapped already; returns how many vanished before they were opened.
    fn refresh_from(&self, names: Vec<String>) -> Result<usize> {
        let current: HashMap<String, Arc<IndexFile>> = self
            .indexes
            .read()
            .iter()
            .map(|i| (i.name().to_string(), i.clone()))
            .collect();
        let mut next = Vec::with_capacity(names.len());
        let mut errors = Vec::new();
        let mut vanished = 0;
        for n in names {
            if let Some(i) = current.get(&n) {
                next.push(i.clone());
                continue;
            }
            match IndexFile::open(&*self.storage, &n, self.key.seal_key()) {
                Ok(i) => next.push(Arc::new(i)),
                Err(e) if storage::is_absent(&e) => {
                    vanished += 1;
                }
                // One damaged index must not make every backup of the vault
                // unreadable: its blobs count as missing (the backups that
                // need them fail to restore and check names them), the rest
                // stay readable, and the next backup stores again what it
                // needs.
                Err(e) => {
                    let e = e.context(format!("vault {}", self.vault)).to_string();
                    // Said once, not at every re-listing a missed blob makes.
                    if !self.index_errors.read().contains(&e) {
                        log::warn!("{e}");
                    }
                    errors.push(e);
                }
            }
        }
        // Newest (largest) first is no better than any order; keep the
        // biggest index first since most lookups hit it.
        next.sort_by_key(|i| std::cmp::Reverse(i.len()));
        *self.indexes.write() = next;
        *self.index_errors.write() = errors;
        Ok(vanished)
    }

    /// The mapped indexes.
    pub(super) fn indexes(&self) -> Vec<Arc<IndexFile>> {
        self.indexes.read().clone()
    }

    /// How many index files are mapped.
    pub fn index_count(&self) -> usize {
        self.indexes.read().len()
    }

    /// The packs the mapped indexes name.
    pub fn indexed_packs(&self) -> std::collections::BTreeSet<BlobId> {
        self.indexes
            .read()
            .iter()
            .flat_map(|i| i.pack_ids())
            .collect()
    }

    /// Call `f` with every entry of every mapped index, index by index (a
    /// blob named by two indexes comes twice; the first is the one
    /// [`Repo::lookup`] finds). Damaged entries are skipped.
    pub fn for_each_entry(&self, mut f: impl FnMut(BlobId, Location)) {
        for idx in self.indexes() {
            for (id, loc) in idx.iter() {
                f(id, loc);
            }
        }
    }

    /// Check every mapped index whole (its checksum, its order, every
    /// entry decodable): one message per damaged index, naming it.
    pub fn verify_indexes(&self) -> Vec<String> {
        self.indexes()
            .iter()
            .filter_map(|i| i.verify().err())
            .map(|e| format!("vault {}: {e}", self.vault))
            .collect()
    }

    /// The pack table of index `name` (an `index/<hex>.idx` object), opened
    /// afresh and verified whole: the packs it names and its entries, in
    /// its order. For tests of the format and for tools.
    pub fn verified_index(&self, name: &str) -> Result<IndexTable> {
        let idx = IndexFile::open(&*self.storage, name, self.key.seal_key())?;
        idx.verify()?;
        Ok((idx.pack_ids(), idx.iter().collect()))
    }

    /// The blob table of pack `id`, checked against its checksum.
    pub fn pack_table(&self, id: BlobId) -> Result<Vec<(BlobId, Location)>> {
        let pack = self.pack(id)?;
        Ok(index::entries_of_pack(id, &pack.entries()?))
    }

    /// Check pack `id`: an error if it cannot be opened (then none of its
    /// blobs can be read), else the problems found: a blob table that
    /// fails its checksum, and with `whole` bytes that do not hash to the
    /// pack's name (reads all of it).
    pub fn check_pack(&self, id: BlobId, whole: bool) -> Result<Vec<String>> {
        let pack = self.pack(id)?;
        let mut problems = Vec::new();
        if let Err(e) = pack.entries() {
            problems.push(e.to_string());
        }
        // A sealed pack has a random name: whole, it is checked by opening
        // every blob (check --read-data reads each one).
        if whole && !pack.sealed() && !pack.verify_id() {
            problems.push(format!(
                "vault {}: pack {id} does not hash to its name",
                self.vault
            ));
        }
        Ok(problems)
    }

    /// True if pack `id`'s bytes hash to its name (reads all of it).
    pub fn pack_hashes_to_name(&self, id: BlobId) -> Result<bool> {
        let p = self.pack(id)?;
        Ok(p.sealed() || p.verify_id())
    }

    /// The index files left out at the last refresh because they could
    /// not be opened (damaged or unreadable), each with why.
    pub fn index_errors(&self) -> Vec<String> {
        self.index_errors.read().clone()
    }

    /// Where blob `id` is stored, if any index knows it.
    pub fn lookup(&self, id: &BlobId) -> Option<Location> {
        self.indexes.read().iter().find_map(|i| i.lookup(id))
    }

    /// The mapped pack `id`.
    pub(super) fn pack(&self, id: BlobId) -> Result<Arc<PackReader>> {
        if let Some(p) = self.packs.lock().get(&id) {
            return Ok(p.clone());
        }
        let p = Arc::new(
            PackReader::open(&*self.storage, id, self.key.seal_key())
                .map_err(|e| e.context(format!("vault {}", self.vault)))?,
        );
        self.packs.lock().insert(id, p.clone());
        Ok(p)
    }

    /// Forget mapped packs (after prune removed some).
    pub(super) fn drop_pack_cache(&self) {
        self.packs.lock().clear();
    }

    /// Where blob `id` is stored, looking again at the index directory when
    /// the mapped indexes do not know it: a backup or a prune may have
    /// written the index naming it after this reader listed `index/`
    /// (issue #12, finding 7). A listing in which an index vanished before
    /// it could be opened is stale, so it is retried, a bounded number of
    /// times; a blob truly in no index costs one re-listing.
    pub fn locate(&self, id: &BlobId) -> Result<Option<Location>> {
        match self.lookup(id) {
            Some(l) => Ok(Some(l)),
            None => self.relist_for(id, |_| true),
        }
    }

    /// Re-list `index/` until it names blob `id` at a location `good`
    /// accepts, or a listing in which no index vanished (so not stale)
    /// does not; at most [`RELIST_TRIES`] times.
    fn relist_for(
        &self,
        id: &BlobId,
        good: impl Fn(&Location) -> bool,
    ) -> Result<Option<Location>> {
        for _ in 0..RELIST_TRIES {
            let vanished = self.refresh_counting()?;
            if let Some(l) = self.lookup(id).filter(&good) {
                return Ok(Some(l));
            }
            if vanished == 0 {
                break;
            }
        }
        Ok(None)
    }

    /// Read blob `id` and verify it. Never returns bytes that are not blob
    /// `id`'s: a clear blob must hash to `id`; a sealed one (an encrypted
    /// vault) must open as blob `id`, which only the vault's writers can
    /// seal (see [`Verify`]).
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.find(id)?;
        self.read_at_try(id, &loc, 0, Verify::Read, &mut Out::New)
    }

    /// Where blob `id` is, for a read.
    fn find(&self, id: &BlobId) -> Result<Location> {
        // A blob in no index may be in a pack a prune on another host
        // marked while this reader was reading a backup it deleted: the
        // pack stays for the grace period, and the mark says where the
        // blob is (store::marks). Only reads look there; writers never
        // deduplicate against a marked pack.
        let found = match self.locate(id)? {
            Some(l) => Some(l),
            None => self.marks.locate(&*self.storage, id, self.key.seal_key()),
        };
        found.ok_or_else(|| {
            // A damaged index is left out (its blobs read as missing): say
            // which, since it is the likely cause.
            let left_out = self.index_errors.read().join("; ");
            let why = if left_out.is_empty() {
                String::new()
            } else {
                format!(" (index files left out: {left_out})")
            };
            Error::corrupt(format!(
                "vault {}: blob {} is not in any index{why}",
                self.vault, id
            ))
        })
    }

    /// [`Repo::read_blob`] into `dst`, which must be exactly the blob's
    /// length (else an error, as for a damaged blob): decompressed (or
    /// opened) straight into place. The mount's reader puts a request's
    /// chunks together this way, where a chunk decoded into a buffer of
    /// its own was then copied into the request's (issue 17: that copy
    /// was 8 % of the daemon's CPU in a `cat` of a disk image).
    pub fn read_blob_into(&self, id: &BlobId, dst: &mut [u8]) -> Result<()> {
        let loc = self.find(id)?;
        // Refused before the read: what is damaged is the reference that
        // asked for this length (a chunk list), not the pack, whose cached
        // copy a blob failing its checks would drop and fetch again.
        if dst.len() as u64 != loc.raw_len as u64 {
            return Err(Error::corrupt(format!(
                "vault {}: blob {} is {} bytes, its reader expects {}",
                self.vault,
                id,
                loc.raw_len,
                dst.len()
            )));
        }
        self.read_at_try(id, &loc, 0, Verify::Read, &mut Out::Into(dst))
            .map(|_| ())
    }

    /// Read blob `id` from `loc` and verify it wholly: its bytes must hash
    /// to `id`, sealed or not (`check --read-data`, prune's copies).
    pub fn read_at(&self, id: &BlobId, loc: &Location) -> Result<Vec<u8>> {
        self.read_at_try(id, loc, 0, Verify::Whole, &mut Out::New)
    }

    /// Read blob `id` at `loc`, verified, into `out`: a new buffer
    /// (returned) or a slice of its length (an empty buffer returned).
    fn read_at_try(
        &self,
        id: &BlobId,
        loc: &Location,
        tries: usize,
        verify: Verify,
        out: &mut Out<'_>,
    ) -> Result<Vec<u8>> {
        let pack = match self.pack_for_read(loc) {
            Ok(p) => p,
            Err(e) => return self.read_moved(id, loc, tries, verify, e, out),
        };
        // Borrowed from a mapped pack, fetched from a ranged one.
        let stored = match pack.stored(loc) {
            Ok(s) => s,
            Err(e) => return self.read_moved(id, loc, tries, verify, e, out),
        };
        let data = if !pack.sealed() {
            self.decode_blob(id, loc, stored, true, out)
        } else if loc.compression != Compression::None {
            // The compressed form is opened into a buffer of the pool,
            // decompressed from there and given back at once: no new
            // allocation of that size per blob (one of a megabyte costs a
            // page fault per 4 KiB), and no buffer kept per thread (the
            // mount's threads each kept up to 2 MiB), only the pool's
            // bounded bytes.
            let mut s = take_buffer(stored.len());
            let r = pack
                .unseal_into(id, &stored, &mut s)
                .map_err(|e| e.context(format!("vault {}", self.vault)))
                .and_then(|_| {
                    self.decode_blob(id, loc, Cow::Borrowed(&s[..]), verify == Verify::Whole, out)
                });
            give_buffer(s);
            r
        } else {
            // Opened into a buffer from the pool: it is the blob.
            let mut buf = take_buffer(stored.len());
            pack.unseal_into(id, &stored, &mut buf)
                .map_err(|e| e.context(format!("vault {}", self.vault)))
                .and_then(|_| {
                    self.decode_blob(id, loc, Cow::Owned(buf), verify == Verify::Whole, out)
                })
        };
        match data {
            Ok(data) => Ok(data),
            // A local copy of a remote pack (a cache) that fails
            // verification (or, sealed, does not open) is dropped and read
            // again from the source, once; the source's bytes are verified
            // the same way.
            Err(e) if tries < RELIST_TRIES + DAMAGE_TRIES => {
                let name = super::pack::pack_name(&loc.pack);
                // Another thread reading the same pack (restore's file
                // writers, read-ahead helpers) may have found the damage
                // first and dropped the copy: the pack this read used is
                // then no longer the one kept, and this read goes to the
                // source too instead of failing.
                let dropped_by_another = self
                    .packs
                    .lock()
                    .get(&loc.pack)
                    .is_none_or(|p| !Arc::ptr_eq(p, &pack));
                if self.storage.forget_cached(&name) || dropped_by_another {
                    log::warn!("{e}; read again from {}", self.storage.describe());
                    self.packs.lock().remove(&loc.pack);
                    self.read_at_try(id, loc, tries.max(RELIST_TRIES) + 1, verify, out)
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Reading blob `id` at `loc` failed with `e` before its bytes were
    /// had: if its pack is gone, prune rewrote the pack and removed it
    /// after writing the index that names the blob's new place: look again
    /// (a bounded number of times: each prune moves a blob at most once
    /// more).
    fn read_moved(
        &self,
        id: &BlobId,
        loc: &Location,
        tries: usize,
        verify: Verify,
        e: Error,
        out: &mut Out<'_>,
    ) -> Result<Vec<u8>> {
        if !(is_not_found(&e) && tries < RELIST_TRIES) {
            return Err(e);
        }
        self.packs.lock().remove(&loc.pack);
        match self.relist_for(id, |l| l.pack != loc.pack)? {
            Some(l) => self.read_at_try(id, &l, tries + 1, verify, out),
            None => Err(e),
        }
    }

    /// The pack holding the blob at `loc`, opened for reading blobs: a
    /// pack of trees and chunk lists is kept whole by a caching backend
    /// (browsing reads it again and again); a data pack is mapped where
    /// the backend can, else read by byte range.
    fn pack_for_read(&self, loc: &Location) -> Result<Arc<PackReader>> {
        if let Some(p) = self.packs.lock().get(&loc.pack) {
            return Ok(p.clone());
        }
        let name = super::pack::pack_name(&loc.pack);
        if loc.kind != super::BlobKind::Data {
            self.storage.keep_whole(&name)?;
        }
        let p = Arc::new(
            PackReader::open_lazy(&self.storage, loc.pack, self.key.seal_key())
                .map_err(|e| e.context(format!("vault {}", self.vault)))?,
        );
        self.packs.lock().insert(loc.pack, p.clone());
        Ok(p)
    }

    /// The blob `id` from its bytes as compressed (opened, if sealed):
    /// decompressed into `out`, and checked against its length and, if
    /// `hash`, its id.
    fn decode_blob(
        &self,
        id: &BlobId,
        loc: &Location,
        stored: Cow<'_, [u8]>,
        hash: bool,
        out: &mut Out<'_>,
    ) -> Result<Vec<u8>> {
        let damaged = |why: String| {
            Error::corrupt(format!(
                "vault {}, pack {}, {} blob {}: {why}",
                self.vault,
                loc.pack,
                loc.kind.name(),
                id
            ))
        };
        if let Out::Into(dst) = out {
            if dst.len() as u64 != loc.raw_len as u64 {
                return Err(damaged(format!(
                    "length {} differs from the {} bytes its reader expects",
                    loc.raw_len,
                    dst.len()
                )));
            }
            let n = match loc.compression {
                Compression::None => {
                    if stored.len() == dst.len() {
                        dst.copy_from_slice(&stored);
                    }
                    let n = stored.len();
                    if let Cow::Owned(v) = stored {
                        give_buffer(v);
                    }
                    n
                }
                Compression::Zstd => decompress_to_slice(&stored, dst)
                    .map_err(|e| damaged(format!("does not decompress ({e})")))?,
                Compression::Lz4 => decompress_lz4_to_slice(&stored, dst)
                    .map_err(|e| damaged(format!("does not decompress as LZ4 ({e})")))?,
            };
            if n != dst.len() {
                return Err(damaged(format!(
                    "length {n} differs from the index's {}",
                    loc.raw_len
                )));
            }
            if hash && self.key.id(dst) != *id {
                return Err(damaged("content does not match its id".into()));
            }
            return Ok(Vec::new());
        }
        let data = match loc.compression {
            // An opened (sealed) blob is already a copy of its own: no
            // second one. A mapped one is copied into a pooled buffer.
            Compression::None => match stored {
                Cow::Owned(v) => v,
                Cow::Borrowed(b) => {
                    let mut v = take_buffer(b.len());
                    v.extend_from_slice(b);
                    v
                }
            },
            Compression::Zstd => decompress(&stored, loc.raw_len as usize)
                .map_err(|e| damaged(format!("does not decompress ({e})")))?,
            Compression::Lz4 => decompress_lz4(&stored, loc.raw_len as usize)
                .map_err(|e| damaged(format!("does not decompress as LZ4 ({e})")))?,
        };
        if data.len() != loc.raw_len as usize {
            return Err(damaged(format!(
                "length {} differs from the index's {}",
                data.len(),
                loc.raw_len
            )));
        }
        if hash && self.key.id(&data) != *id {
            return Err(damaged("content does not match its id".into()));
        }
        Ok(data)
    }

    /// Every sealed pack with its size. Only names in the layout count
    /// (`packs/<first two hex digits>/<hex>.pack`): anything else is no
    /// pack of this store.
    pub fn list_packs(&self) -> Result<Vec<(BlobId, u64)>> {
        let mut out: Vec<(BlobId, u64)> = self
            .storage
            .list("packs/")?
            .into_iter()
            .filter_map(|o| {
                let hex = o
                    .name
                    .strip_prefix("packs/")?
                    .get(3..)?
                    .strip_suffix(".pack")?;
                let id = BlobId::from_hex(hex)?;
                (super::pack::pack_name(&id) == o.name).then_some((id, o.size))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Bytes the vault's store takes: packs and indexes.
    pub fn used_bytes(&self) -> Result<u64> {
        Self::used_bytes_in(&*self.storage)
    }

    /// Bytes the store in `storage` takes: packs and indexes, from a
    /// listing (no key needed, so `vault list` and the mount's `statfs`
    /// never ask for an encrypted vault's password).
    pub fn used_bytes_in(storage: &dyn Storage) -> Result<u64> {
        let packs: u64 = storage
            .list("packs/")?
            .into_iter()
            .filter(|o| {
                let id = o
                    .name
                    .strip_prefix("packs/")
                    .and_then(|n| n.get(3..))
                    .and_then(|n| n.strip_suffix(".pack"))
                    .and_then(BlobId::from_hex);
                id.is_some_and(|id| super::pack::pack_name(&id) == o.name)
            })
            .map(|o| o.size)
            .sum();
        let idx: u64 = storage
            .list("index/")?
            .iter()
            .filter(|o| o.name.ends_with(".idx"))
            .map(|o| o.size)
            .sum();
        Ok(packs + idx)
    }

    /// Ask the storage to keep every pack of trees and chunk lists whole
    /// (a remote vault's cache: browsing then never waits on the network);
    /// returns how many such packs there are. Nothing for a local vault.
    pub fn warm_metadata(&self) -> Result<usize> {
        let mut data_packs = std::collections::HashSet::new();
        let mut packs = std::collections::BTreeSet::new();
        self.for_each_entry(|_, loc| {
            packs.insert(loc.pack);
            if loc.kind == super::BlobKind::Data {
                data_packs.insert(loc.pack);
            }
        });
        let mut n = 0;
        for p in packs.iter().filter(|p| !data_packs.contains(p)) {
            self.storage.keep_whole(&super::pack::pack_name(p))?;
            n += 1;
        }
        Ok(n)
    }

    /// Remove temporary files a killed writer left. Call only while holding
    /// the vault's writer lock.
    pub fn remove_stale_temps(&self) -> Result<usize> {
        self.storage.remove_stale_temps()
    }
}

fn is_not_found(e: &Error) -> bool {
    storage::is_absent(e)
}

/// The paths of a repo's index files, kept in local directory `dir`.
#[cfg(test)]
pub(super) fn index_paths(repo: &Repo, dir: &Path) -> Vec<std::path::PathBuf> {
    let names = repo.index_names().unwrap();
    names.iter().map(|n| dir.join(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::writer::{merge_indexes, RepoWriter};
    use crate::store::BlobKind;
    use std::fs;
    use std::path::PathBuf;

    /// A request's buffer whose length is not the blob's (a crafted chunk
    /// list naming the chunk with another length) is refused before the
    /// blob is read: the list is damaged, not the pack, so a cached copy
    /// of the pack is not dropped and fetched again (up to three times per
    /// read of the file, from a billed remote) as for a blob that fails
    /// verification.
    #[test]
    fn a_buffer_of_another_length_is_refused_without_reading_again() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        #[derive(Debug)]
        struct Cached(crate::store::LocalDir, AtomicUsize, AtomicUsize);
        impl crate::testkit::Wrapper for Cached {
            fn inner(&self) -> &dyn Storage {
                &self.0
            }
            fn get_range(&self, n: &str, o: u64, l: u64) -> Result<Vec<u8>> {
                self.2.fetch_add(1, Ordering::SeqCst);
                Storage::get_range(&self.0, n, o, l)
            }
            fn forget_cached(&self, _: &str) -> bool {
                self.1.fetch_add(1, Ordering::SeqCst);
                true
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(Cached(
            crate::store::LocalDir::new(dir.path()),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        ));
        Repo::create_in(&*s).unwrap();
        let repo = Repo::open_in(s.clone(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, false);
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let id = w.add(BlobKind::Data, &data).unwrap().id;
        w.finish().unwrap();
        let repo = Repo::open_in(s.clone(), "v").unwrap();
        let mut right = vec![0u8; 5000];
        repo.read_blob_into(&id, &mut right).unwrap();
        assert!(right == data);
        let reads = s.2.load(Ordering::SeqCst);
        for n in [4000, 6000] {
            let mut wrong = vec![0u8; n];
            let e = repo.read_blob_into(&id, &mut wrong).unwrap_err();
            assert!(e.to_string().contains("its reader expects"), "{e}");
        }
        assert_eq!(s.1.load(Ordering::SeqCst), 0, "cached copies dropped");
        assert_eq!(s.2.load(Ordering::SeqCst), reads, "blob read again");
    }

    /// The interleaving of finding 7 of issue #12, step by step: a reader
    /// lists `index/`, a writer (prune, or a merge) writes the index that
    /// replaces the listed ones and unlinks them, and only then the reader
    /// opens what it listed. Every listed index has vanished, the new one
    /// was not listed: the read must still find its blob.
    #[test]
    fn reader_whose_listing_went_stale_finds_the_new_index() {
        let dir = tempfile::tempdir().unwrap();
        Repo::create(dir.path()).unwrap();
        let writer_view = Repo::open(dir.path(), "v").unwrap();
        // Opened before any index exists, so it has none mapped yet.
        let reader = Repo::open(dir.path(), "v").unwrap();
        let mut ids = Vec::new();
        for seed in 0..2u8 {
            let mut w = RepoWriter::new(&writer_view, false);
            ids.push(w.add(BlobKind::Data, &vec![seed; 5000]).unwrap().id);
            w.finish().unwrap();
        }
        // The reader's listing, taken before the rewrite.
        let listing = reader.index_names().unwrap();
        assert_eq!(listing.len(), 2);
        writer_view.refresh().unwrap();
        merge_indexes(&writer_view, &writer_view.indexes()).unwrap();
        // ...and opened after it: both listed indexes vanished.
        assert_eq!(reader.refresh_from(listing).unwrap(), 2);
        assert!(reader.indexes().is_empty());
        for id in &ids {
            let data = reader
                .read_blob(id)
                .unwrap_or_else(|e| panic!("blob {id} not found after a stale listing: {e}"));
            assert_eq!(reader.key().id(&data), *id);
        }
        // A blob in no index costs one re-listing and is reported.
        let e = reader.read_blob(&BlobId([9; 16])).unwrap_err();
        assert!(e.to_string().contains("is not in any index"), "{e}");
    }

    #[test]
    fn flipped_byte_is_an_error_not_wrong_bytes() {
        let dir = tempfile::tempdir().unwrap();
        Repo::create(dir.path()).unwrap();
        let repo = Repo::open(dir.path(), "v").unwrap();
        let data: Vec<u8> = (0..5000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut w = RepoWriter::new(&repo, false);
        let a = w.add(BlobKind::Data, &data).unwrap();
        w.finish().unwrap();
        let loc = repo.lookup(&a.id).unwrap();
        let path = dir.path().join(super::super::pack::pack_name(&loc.pack));
        let mut bytes = fs::read(&path).unwrap();
        bytes[loc.offset as usize + 10] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let repo = Repo::open(dir.path(), "v").unwrap();
        let err = repo.read_blob(&a.id).unwrap_err().to_string();
        assert!(err.contains("vault v"), "{err}");
        assert!(err.contains(&loc.pack.to_hex()), "{err}");
        assert!(err.contains(&a.id.to_hex()), "{err}");
    }

    /// An LZ4 blob (a disk chunk's codec, compression byte 2) reads back
    /// in a plain vault and in an encrypted one (compressed, then sealed),
    /// by the mount's and restore's read and by check's; a flipped byte in
    /// its block is an error naming it, never other bytes.
    #[test]
    fn lz4_blobs_read_back_and_a_damaged_one_is_an_error() {
        let data: Vec<u8> = (0..4096u32).flat_map(|i| (i % 700).to_le_bytes()).collect();
        let block = lz4_flex::block::compress(&data);
        assert!(block.len() < data.len() / 2);
        for sealed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            Repo::create(dir.path()).unwrap();
            let open = |key: &Option<Key>| match key {
                Some(k) => {
                    let storage: Arc<dyn Storage> = Arc::new(LocalDir::new(dir.path()));
                    Repo::open_with_key(storage, "v", k.clone()).unwrap()
                }
                None => Repo::open(dir.path(), "v").unwrap(),
            };
            let key = sealed.then(|| {
                std::fs::remove_file(dir.path().join("key")).unwrap();
                Key::from_master(&crate::crypto::MasterKey::generate().unwrap())
            });
            let repo = open(&key);
            let id = repo.key().id(&data);
            let mut w = RepoWriter::new(&repo, true);
            assert!(w.reserve(id));
            w.append_reserved(id, BlobKind::Data, &data, Some((Compression::Lz4, &block)))
                .unwrap();
            w.finish().unwrap();
            let repo = open(&key);
            let loc = repo.lookup(&id).unwrap();
            assert_eq!(loc.compression, Compression::Lz4, "sealed {sealed}");
            assert_eq!(repo.read_blob(&id).unwrap(), data, "sealed {sealed}");
            assert_eq!(repo.read_at(&id, &loc).unwrap(), data, "sealed {sealed}");
            let path = dir.path().join(super::super::pack::pack_name(&loc.pack));
            let mut bytes = fs::read(&path).unwrap();
            bytes[loc.offset as usize + loc.stored_len as usize / 2] ^= 0x10;
            fs::write(&path, &bytes).unwrap();
            let repo = open(&key);
            for e in [repo.read_blob(&id), repo.read_at(&id, &loc)] {
                let e = e.unwrap_err().to_string();
                assert!(e.contains(&id.to_hex()), "sealed {sealed}: {e}");
            }
        }
    }

    /// A sealed blob is trusted to its tag on the read path and hashed by
    /// `read_at` (check, prune): shown with what only a holder of the key
    /// can make, other bytes sealed under a blob's id. The mount and
    /// restore return them (the tag holds: no hash is computed), check
    /// reports the blob. A flipped byte fails both.
    #[test]
    fn sealed_blobs_are_hashed_by_check_and_trusted_to_their_tag_on_reads() {
        let dir = tempfile::tempdir().unwrap();
        Repo::create(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("key")).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalDir::new(dir.path()));
        let key = Key::from_master(&crate::crypto::MasterKey::generate().unwrap());
        let repo = Repo::open_with_key(storage.clone(), "v", key.clone()).unwrap();
        // Random bytes do not compress: stored raw, so the forged blob
        // below has the same length.
        let data = crate::fsutil::random_bytes(5000);
        let mut w = RepoWriter::new(&repo, true);
        let id = w.add(BlobKind::Data, &data).unwrap().id;
        w.finish().unwrap();
        let repo = Repo::open_with_key(storage.clone(), "v", key.clone()).unwrap();
        let loc = repo.lookup(&id).unwrap();
        assert_eq!(loc.compression, Compression::None);
        assert_eq!(repo.read_blob(&id).unwrap(), data);
        assert_eq!(repo.read_at(&id, &loc).unwrap(), data);
        let path = dir.path().join(super::super::pack::pack_name(&loc.pack));
        let good = fs::read(&path).unwrap();
        let other = crate::fsutil::random_bytes(5000);
        let forged = key
            .seal_key()
            .unwrap()
            .seal(crate::crypto::Object::PackBlob(&id.0), &other)
            .unwrap();
        assert_eq!(forged.len(), loc.stored_len as usize);
        let mut bytes = good.clone();
        let at = loc.offset as usize;
        bytes[at..at + forged.len()].copy_from_slice(&forged);
        fs::write(&path, &bytes).unwrap();
        let repo = Repo::open_with_key(storage.clone(), "v", key.clone()).unwrap();
        assert_eq!(repo.read_blob(&id).unwrap(), other);
        let e = repo.read_at(&id, &loc).unwrap_err().to_string();
        assert!(e.contains("content does not match its id"), "{e}");
        assert!(e.contains(&id.to_hex()), "{e}");
        let mut bytes = good;
        bytes[at + 30] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let repo = Repo::open_with_key(storage, "v", key).unwrap();
        for e in [repo.read_blob(&id), repo.read_at(&id, &loc)] {
            let e = e.unwrap_err().to_string();
            assert!(e.contains("authentication failed"), "{e}");
        }
    }

    #[test]
    fn damaged_index_leaves_the_others_readable() {
        let dir = tempfile::tempdir().unwrap();
        Repo::create(dir.path()).unwrap();
        let repo = Repo::open(dir.path(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, false);
        let a = w.add(BlobKind::Data, b"first run").unwrap().id;
        w.finish().unwrap();
        let first = index_paths(&repo, dir.path());
        let mut w = RepoWriter::new(&repo, false);
        let b = w.add(BlobKind::Data, b"second run").unwrap().id;
        w.finish().unwrap();
        let second = index_paths(&repo, dir.path())
            .into_iter()
            .find(|p| !first.contains(p))
            .unwrap();
        let bytes = fs::read(&second).unwrap();
        fs::write(&second, &bytes[..10]).unwrap();
        let repo = Repo::open(dir.path(), "v").unwrap();
        let errors = repo.index_errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("vault v"), "{errors:?}");
        assert_eq!(repo.read_blob(&a).unwrap(), b"first run");
        assert!(repo.read_blob(&b).is_err());
    }

    /// The read path over a damaged pack or index (or both): through the
    /// real files and mappings, every blob reads back as it was written or
    /// as an error, never as other bytes, never with a panic, and never
    /// allocating much more than the largest blob or the files.
    #[test]
    fn fuzz_damaged_pack_and_index() {
        use crate::testkit;
        use proptest::prelude::*;
        let config = testkit::config(256);
        let secs = testkit::deadline(config.cases, 40);
        testkit::within(secs, move || {
            let dir = tempfile::tempdir().unwrap();
            Repo::create(dir.path()).unwrap();
            let repo = Repo::open(dir.path(), "v").unwrap();
            let mut blobs: Vec<(BlobId, Vec<u8>)> = Vec::new();
            let mut w = RepoWriter::new(&repo, true);
            let samples: Vec<(BlobKind, Vec<u8>)> = vec![
                (BlobKind::Data, b"short, stored raw".to_vec()),
                (
                    BlobKind::Data,
                    (0..40_000u32).map(|i| (i / 100) as u8).collect(),
                ),
                (BlobKind::Tree, vec![b'x'; 5000]),
                (
                    BlobKind::ChunkList,
                    (0..3000u32).flat_map(|i| i.to_le_bytes()).collect(),
                ),
                (BlobKind::Data, crate::fsutil::random_bytes(3000)),
            ];
            for (kind, data) in samples {
                let id = w.add(kind, &data).unwrap().id;
                blobs.push((id, data));
            }
            w.finish().unwrap();
            // The writer puts data and metadata (trees, chunk lists) in
            // packs of their own: either may be the one damaged.
            let packs = list_all(&dir.path().join("packs"), ".pack");
            assert_eq!(packs.len(), 2, "{packs:?}");
            let good_packs: Vec<Vec<u8>> = packs.iter().map(|p| fs::read(p).unwrap()).collect();
            let index = index_paths(&repo, dir.path()).remove(0);
            let good_index = fs::read(&index).unwrap();
            let largest_blob = blobs.iter().map(|(_, d)| d.len()).max().unwrap_or(0);
            // 0: damage the pack, 1: the index, 2: both, 3: one field of
            // one index entry (pack number, kind, compression, offset,
            // stored_len, raw_len) set to an extreme or random value.
            let which = 0u8..4;
            let field = (
                0..blobs.len(),
                prop_oneof![
                    Just(16usize),
                    Just(20),
                    Just(21),
                    Just(24),
                    Just(32),
                    Just(36)
                ],
                prop_oneof![
                    Just(u64::MAX),
                    Just(u32::MAX as u64),
                    Just(1u64 << 24),
                    Just(0),
                    any::<u64>()
                ],
            );
            let entries_at = 16 + 16 + 1024;
            let mut runner = proptest::test_runner::TestRunner::new(config);
            runner
                .run(
                    &(
                        which,
                        0..packs.len(),
                        testkit::damages(),
                        testkit::damages(),
                        field,
                    ),
                    |(which, pi, dp, di, (entry, at, value))| {
                        let bad_pack = if which == 0 || which == 2 {
                            testkit::apply(&good_packs[pi], &dp)
                        } else {
                            good_packs[pi].clone()
                        };
                        let mut bad_index = if which == 1 || which == 2 {
                            testkit::apply(&good_index, &di)
                        } else {
                            good_index.clone()
                        };
                        if which == 3 {
                            let at = entries_at + entry * index::ENTRY_LEN + at;
                            let width = match at % 40 {
                                20 | 21 => 1,
                                24 => 8,
                                _ => 4,
                            };
                            bad_index[at..at + width]
                                .copy_from_slice(&value.to_le_bytes()[..width]);
                        }
                        for (p, good) in packs.iter().zip(&good_packs) {
                            fs::write(p, good).unwrap();
                        }
                        fs::write(&packs[pi], &bad_pack).unwrap();
                        fs::write(&index, &bad_index).unwrap();
                        let (reads, largest) = testkit::largest_alloc(|| {
                            let repo = Repo::open(dir.path(), "v").unwrap();
                            let _ = repo.index_errors();
                            blobs
                                .iter()
                                .map(|(id, _)| repo.read_blob(id))
                                .collect::<Vec<_>>()
                        });
                        let bound =
                            2 * (largest_blob + bad_pack.len() + bad_index.len()) + (1 << 20);
                        prop_assert!(
                            largest <= bound,
                            "allocated {} at once (bound {})",
                            largest,
                            bound
                        );
                        for ((id, data), r) in blobs.iter().zip(reads) {
                            if let Ok(got) = r {
                                prop_assert!(&got == data, "blob {} read back as other bytes", id);
                            }
                        }
                        Ok(())
                    },
                )
                .unwrap();
        });
    }

    /// An index entry whose lengths say 4 GiB: refused without allocating
    /// them (the index is not checksummed on the read path).
    #[test]
    fn a_huge_raw_len_is_refused_without_allocating_it() {
        let dir = tempfile::tempdir().unwrap();
        Repo::create(dir.path()).unwrap();
        let repo = Repo::open(dir.path(), "v").unwrap();
        let data = vec![5u8; 100_000];
        let mut w = RepoWriter::new(&repo, true);
        let id = w.add(BlobKind::Data, &data).unwrap().id;
        w.finish().unwrap();
        let loc = repo.lookup(&id).unwrap();
        assert_eq!(loc.compression, Compression::Zstd);
        for raw_len in [u32::MAX, 64 << 20, 4 << 20] {
            let bad = Location { raw_len, ..loc };
            let (r, largest) = crate::testkit::largest_alloc(|| repo.read_at(&id, &bad));
            assert!(r.is_err());
            assert!(largest < 1 << 20, "raw_len {raw_len}: allocated {largest}");
        }
        // A frame without its size in the header (not written by cbrfs, but
        // valid zstd) is bounded by the growing buffer.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, &data).unwrap();
        let frame = enc.finish().unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&frame).ok(),
            Some(None)
        );
        let (r, largest) = crate::testkit::largest_alloc(|| decompress(&frame, u32::MAX as usize));
        assert_eq!(r.unwrap(), data);
        assert!(largest < 16 << 20, "allocated {largest}");
        assert!(decompress(&frame, data.len() - 1).is_err());
        assert_eq!(decompress(&frame, data.len()).unwrap(), data);
    }

    fn list_all(top: &Path, suffix: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for sub in fs::read_dir(top).unwrap() {
            let sub = sub.unwrap().path();
            if sub.is_dir() {
                for f in fs::read_dir(&sub).unwrap() {
                    let f = f.unwrap().path();
                    if f.to_string_lossy().ends_with(suffix) {
                        found.push(f);
                    }
                }
            }
        }
        found.sort();
        found
    }
}
