//! The store: packs and indexes of one vault. Bytes in, blob id out; blob id
//! in, verified bytes out. It knows nothing of trees, vaults or paths.
//!
//! The store is sealed: the pack and index formats live in private
//! modules, and every file of a vault (packs, indexes, backup records,
//! `vault.json`, the key) is reached through the [`Storage`] interface
//! ([`storage`] names what it promises; [`LocalDir`] is the local
//! directory). The engine asks [`Repo`] for blobs and for the operations
//! that change files: a backup's [`RepoWriter`], prune's commit
//! ([`Repo::commit_prune`]) and index repair ([`Repo::rebuild_index`]), so
//! that the write-ordering rules below live in this module alone.
//!
//! Layout of a vault's store directory (see docs/FORMAT.md):
//! ```text
//! key                     the vault's 192-byte hashing secret (never changes)
//! packs/<hh>/<id>.pack    sealed pack files, named by the XXH3-128 of their bytes
//! index/<id>.idx          sorted index files naming which pack holds each blob
//! ```
//!
//! # Concurrency (operation × concurrent operation)
//!
//! | running \ beside      | reader (mount, restore, check) | backup (writer)         |
//! |-----------------------|--------------------------------|-------------------------|
//! | reader                | yes: sealed files never change | yes: see below          |
//! | backup (writer)       | yes                            | no: the vault's writer lock (`backup.lock`) admits one |
//!
//! A reader only ever sees sealed packs and complete indexes: both appear by
//! atomic rename, after fsync. A writer only adds files (packs, then the
//! index naming them) and, when merging indexes, writes the merged index
//! before unlinking the ones it replaces; a reader that mapped an unlinked
//! index keeps a valid mapping, and a reader that lists the directory between
//! the two steps sees the same blobs twice, which lookup tolerates. A reader
//! whose mapped indexes do not name a blob, or whose pack vanished, re-lists
//! the directory before calling the blob lost ([`Repo::locate`]), and again
//! (a few times) while indexes it listed vanish before it opens them: its
//! listing was older than the index that replaced them.
//!
//! Every store file is opened with `O_NOFOLLOW|O_NONBLOCK` and used only if
//! `fstat` says it is a regular file ([`crate::fsutil::open_store_file`]): a
//! planted symlink or FIFO is refused with the file's name, never followed
//! and never waited on.

// Sealed: the pack and index formats, and which files exist, are known
// only inside the store; the engine asks Repo for blobs and for the
// operations that change files (a backup's writer, prune's commit, index
// repair).
pub mod cached;
mod compression;
mod fenced;
mod index;
pub mod keyring;
pub mod lease;
mod lease_seal;
mod listing;
pub mod local;
mod maintenance;
pub mod marks;
mod pack;
mod prefetch;
pub use maintenance::IndexRebuild;
pub use prefetch::ReadingOnce;
mod reader;
pub mod remote;
pub mod s3;
pub mod storage;
mod writer;

pub use cached::CachedStorage;
pub use local::LocalDir;
pub use remote::RemoteConfig;
pub use storage::{ObjectInfo, Storage};

pub use compression::{
    compress_blob, compress_into, compress_into_at, give_buffer, pooled_bytes, release_buffers,
    take_buffer, take_filled, DiskCodec, ZSTD_LEVEL, ZSTD_LEVEL_DISK,
};
/// An index's magic and the version of a sealed one (docs/FORMAT.md §7.1,
/// §16.5): what `vault attach` looks for to tell an encrypted vault.
pub use index::{MAGIC as INDEX_MAGIC, VERSION_SEALED as INDEX_VERSION_SEALED};
pub use marks::Mark;
pub use reader::{IndexTable, Repo};
pub use writer::{index_size, pack_overhead, pack_sizes_for, AddOutcome, RepoWriter, WriterStats};

use crate::error::{Error, Result};
use std::fmt;

/// Seal a pack once its payload reaches this size.
pub const PACK_TARGET: usize = 16 << 20;

/// Size of a vault's hashing secret, in bytes.
pub const SECRET_LEN: usize = 192;

/// The id of a blob: XXH3-128 of its uncompressed bytes, keyed with the
/// vault's secret. Stored big-endian so that byte order is sort order.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, bincode::Encode, bincode::Decode,
)]
pub struct BlobId(pub [u8; 16]);

impl BlobId {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        crate::fsutil::hex(&self.0)
    }
    /// Parse 32 hex digits.
    pub fn from_hex(s: &str) -> Option<BlobId> {
        let v = crate::fsutil::unhex(s)?;
        Some(BlobId(v.try_into().ok()?))
    }
    /// Short form for messages.
    pub fn short(&self) -> String {
        crate::fsutil::hex(&self.0[..8])
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

/// What a blob holds. Stored as one byte; never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlobKind {
    /// File or disk content.
    Data = 0,
    /// One directory's entries (a model tree).
    Tree = 1,
    /// Part of a large file's chunk list.
    ChunkList = 2,
}

impl BlobKind {
    /// Decode the on-disk byte.
    pub fn from_u8(b: u8) -> Option<BlobKind> {
        match b {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            2 => Some(BlobKind::ChunkList),
            _ => None,
        }
    }
    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Data => "data",
            BlobKind::Tree => "tree",
            BlobKind::ChunkList => "chunk list",
        }
    }
}

/// How a blob's bytes are stored in its pack. One byte; never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None = 0,
    /// One zstd frame.
    Zstd = 1,
    /// One LZ4 block (no frame): disks' chunks that compress poorly.
    Lz4 = 2,
}

impl Compression {
    /// Decode the on-disk byte.
    pub fn from_u8(b: u8) -> Option<Compression> {
        match b {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            2 => Some(Compression::Lz4),
            _ => None,
        }
    }
}

/// The vault's keys: how blob ids are made and, for an encrypted vault
/// (docs/FORMAT.md §16), the key that seals every object. The id function
/// is a property of the vault's key: keyed XXH3 for a version-1 vault (its
/// secret sits beside the data), keyed BLAKE3 for an encrypted one (ids are
/// visible in the storage, so they must be a PRF of a secret key).
#[derive(Clone)]
pub struct Key(KeyKind);

#[derive(Clone)]
enum KeyKind {
    /// Version 1: the 192-byte XXH3 secret of the `key` object.
    Xxh3(Vec<u8>),
    /// Version 2: keys derived from the master key (§16.2).
    Sealed(std::sync::Arc<SealedKeys>),
}

/// The keys an encrypted vault derives from its master key.
struct SealedKeys {
    seal: crate::crypto::SealKey,
    ids: crate::crypto::BlobIdKey,
    seed: u64,
    fingerprints: crate::crypto::FingerprintKey,
}

impl Key {
    /// A key from a stored secret; refuses a wrong length.
    pub fn from_secret(secret: Vec<u8>) -> Result<Key> {
        if secret.len() != SECRET_LEN {
            return Err(Error::corrupt(format!(
                "vault key has {} bytes, expected {SECRET_LEN}",
                secret.len()
            )));
        }
        Ok(Key(KeyKind::Xxh3(secret)))
    }
    /// The keys of an encrypted vault, derived from its master key.
    pub fn from_master(master: &crate::crypto::MasterKey) -> Key {
        Key(KeyKind::Sealed(std::sync::Arc::new(SealedKeys {
            seal: master.seal_key(),
            ids: master.blob_id_key(),
            seed: master.chunker_seed(),
            fingerprints: master.fingerprint_key(),
        })))
    }
    /// A new random key.
    pub fn generate() -> Key {
        Key(KeyKind::Xxh3(crate::fsutil::random_bytes(SECRET_LEN)))
    }
    /// The secret's bytes, for writing the key file (empty for an
    /// encrypted vault, which has no key file).
    pub fn secret(&self) -> &[u8] {
        match &self.0 {
            KeyKind::Xxh3(s) => s,
            KeyKind::Sealed(_) => &[],
        }
    }
    /// The sealing key of an encrypted vault; `None` for a version-1 vault.
    pub fn seal_key(&self) -> Option<&crate::crypto::SealKey> {
        match &self.0 {
            KeyKind::Xxh3(_) => None,
            KeyKind::Sealed(k) => Some(&k.seal),
        }
    }
    /// The key of an encrypted vault's disk fingerprint tables (the
    /// backup's, host-local); `None` for a version-1 vault, whose ids are
    /// as cheap as fingerprints.
    pub fn fingerprint_key(&self) -> Option<&crate::crypto::FingerprintKey> {
        match &self.0 {
            KeyKind::Xxh3(_) => None,
            KeyKind::Sealed(k) => Some(&k.fingerprints),
        }
    }
    /// True for an encrypted vault.
    pub fn encrypted(&self) -> bool {
        self.seal_key().is_some()
    }
    /// The id of `data`.
    #[inline]
    pub fn id(&self, data: &[u8]) -> BlobId {
        match &self.0 {
            KeyKind::Xxh3(secret) => {
                BlobId(xxhash_rust::xxh3::xxh3_128_with_secret(data, secret).to_be_bytes())
            }
            KeyKind::Sealed(k) => BlobId(k.ids.id(data)),
        }
    }
    /// The seed of the content-defined chunker's gear table, derived from the
    /// secret so that chunk boundaries do not reveal content across vaults.
    pub fn chunker_seed(&self) -> u64 {
        match &self.0 {
            KeyKind::Xxh3(secret) => {
                xxhash_rust::xxh3::xxh3_64_with_secret(b"cbrfs chunker seed", secret)
            }
            KeyKind::Sealed(k) => k.seed,
        }
    }
}

/// Where a blob lives: which pack, where in it, how it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// The pack holding it.
    pub pack: BlobId,
    /// Kind of blob.
    pub kind: BlobKind,
    /// How it is stored.
    pub compression: Compression,
    /// Byte offset of the stored bytes in the pack.
    pub offset: u64,
    /// Stored (possibly compressed) length.
    pub stored_len: u32,
    /// Uncompressed length.
    pub raw_len: u32,
}

/// Little-endian field readers for the fixed-width formats; callers check
/// lengths before slicing (they are only used on validated ranges).
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
