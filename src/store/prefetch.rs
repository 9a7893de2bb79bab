//! Read hints: before a restore reads a file's chunks, the data packs
//! they are in, with how many of each pack's bytes are wanted, go to the
//! storage ([`Storage::will_read`]), so that a caching backend fetches a
//! pack whole, in one request, when most of it is wanted, and by byte
//! ranges otherwise (docs/FORMAT.md §19.2). And a restore says that it
//! reads data once ([`Repo::reading_once`]), so that a caching backend
//! holds what it fetches in memory rather than on disk.

use super::storage::Storage;
use super::{BlobId, BlobKind, Repo};
use std::collections::HashMap;

impl Repo {
    /// Tell the storage which data packs the blobs `ids` are in, and how
    /// many stored bytes of each (a local vault ignores the hint: one
    /// index lookup per chunk is its cost).
    pub fn will_read(&self, ids: impl IntoIterator<Item = BlobId>) {
        let storage: &dyn Storage = &**self.storage();
        let mut per_pack: HashMap<BlobId, u64> = HashMap::new();
        for id in ids {
            if let Some(l) = self.lookup(&id).filter(|l| l.kind == BlobKind::Data) {
                *per_pack.entry(l.pack).or_default() += u64::from(l.stored_len);
            }
        }
        for (pack, bytes) in per_pack {
            storage.will_read(&super::pack::pack_name(&pack), bytes);
        }
    }
}

/// A one-pass reader of a vault's data (a restore), from
/// [`Repo::reading_once`] until dropped.
pub struct ReadingOnce {
    storage: std::sync::Arc<dyn Storage>,
}

impl Drop for ReadingOnce {
    fn drop(&mut self) {
        self.storage.reading_once(false);
    }
}

impl Repo {
    /// Tell the storage that this process reads the data it is about to
    /// read once, in order (a restore), until the guard is dropped: a
    /// caching backend then holds the ranges it fetches in bounded memory
    /// instead of writing them into its cache on disk (restic keeps no
    /// data packs either), the cache on disk stays for what browsing reads
    /// again. A local vault ignores it.
    pub fn reading_once(&self) -> ReadingOnce {
        let storage = self.storage().clone();
        storage.reading_once(true);
        ReadingOnce { storage }
    }
}
