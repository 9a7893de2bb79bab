//! The vault's master key and the keys derived from it (docs/FORMAT.md
//! §16.2): one random 32-byte master key per encrypted vault; every other
//! key is BLAKE3 `derive_key` of it with a context string of its own, so
//! that the sealing key and the blob-id key are independent (learning one
//! says nothing of the other) and none needs storing.

use crate::error::{Error, Result};
use std::fmt;
use zeroize::Zeroizing;

/// Bytes of the master key and of every derived key.
pub const KEY_LEN: usize = 32;
/// Bytes of a blob id (the store's ids are 16 bytes, §5).
pub const ID_LEN: usize = 16;

// BLAKE3's derive_key contexts: "application, date, purpose", as BLAKE3's
// documentation asks, so that no other program derives the same keys from
// the same material. They are format: never change one.
/// Context of the key that seals objects (§16.3).
pub const CTX_SEAL: &str = "cbrfs 2026-11-26 v2 object sealing key";
/// Context of the key of blob ids (§16.2).
pub const CTX_BLOB_ID: &str = "cbrfs 2026-11-26 v2 blob id key";
/// Context of the master key's public id, recorded in clear in slots.
pub const CTX_KEY_ID: &str = "cbrfs 2026-11-26 v2 master key id";
/// Context of the chunker seed of an encrypted vault (§12).
pub const CTX_CHUNKER: &str = "cbrfs 2026-11-26 v2 chunker seed";
/// Context of the key of disks' host-local fingerprint tables (§20).
pub const CTX_FINGERPRINT: &str = "cbrfs 2026-11-27 v2 disk fingerprint key";
/// Bytes of the XXH3 secret of fingerprints (XXH3's own default size).
pub const FINGERPRINT_SECRET_LEN: usize = 192;
/// Bytes of a fingerprint.
pub const FINGERPRINT_LEN: usize = 16;

/// `n` bytes from the operating system's random source, or an error (an OS
/// without an entropy source must stop the operation, never weaken a key).
pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf)
        .map_err(|e| Error::failed(format!("the operating system's random source failed: {e}")))?;
    Ok(buf)
}

/// The master key of one encrypted vault. Wiped from memory when dropped;
/// its `Debug` shows only its public id.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl MasterKey {
    /// A new random master key, for a new vault.
    pub fn generate() -> Result<Self> {
        Ok(MasterKey(Zeroizing::new(random::<KEY_LEN>()?)))
    }

    /// A master key from its bytes (an unwrapped slot, a golden vector).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        MasterKey(Zeroizing::new(bytes))
    }

    /// The key's bytes, for wrapping in a slot and for handing an unlocked
    /// key to the mount daemon through a pipe (src/fuse/mount.rs).
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The public id of this key: not secret (a one-way function of a
    /// random key), recorded in clear in every slot so that `key remove`
    /// can tell that another slot holds the same key without its password,
    /// and a slot copied from another vault is recognised.
    pub fn key_id(&self) -> [u8; ID_LEN] {
        truncate(blake3::derive_key(CTX_KEY_ID, &self.0[..]))
    }

    /// The key that seals every object of the vault.
    pub fn seal_key(&self) -> super::SealKey {
        super::SealKey::new(Zeroizing::new(blake3::derive_key(CTX_SEAL, &self.0[..])))
    }

    /// The key of the vault's blob ids.
    pub fn blob_id_key(&self) -> BlobIdKey {
        BlobIdKey(Zeroizing::new(blake3::derive_key(CTX_BLOB_ID, &self.0[..])))
    }

    /// The chunker seed (§12) of an encrypted vault: the first 8 bytes of a
    /// derived key, little-endian. Secret, like v1's, so that chunk
    /// boundaries cannot be compared across vaults.
    pub fn chunker_seed(&self) -> u64 {
        let k = Zeroizing::new(blake3::derive_key(CTX_CHUNKER, &self.0[..]));
        let mut b = [0u8; 8];
        b.copy_from_slice(&k[..8]);
        u64::from_le_bytes(b)
    }
}

impl MasterKey {
    /// The key of this vault's disk fingerprint tables (§20): 224 bytes of
    /// BLAKE3's derive_key output stream, the first 32 keying the tables'
    /// file names, the other 192 the XXH3 secret of fingerprints.
    pub fn fingerprint_key(&self) -> FingerprintKey {
        let mut out = Zeroizing::new([0u8; KEY_LEN + FINGERPRINT_SECRET_LEN]);
        let mut h = blake3::Hasher::new_derive_key(CTX_FINGERPRINT);
        h.update(&self.0[..]);
        h.finalize_xof().fill(&mut out[..]);
        FingerprintKey(out)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id {})", crate::fsutil::hex(&self.key_id()))
    }
}

/// The key of an encrypted vault's blob ids: ids are keyed BLAKE3, since the
/// bucket sees them (pack tables are sealed, but an attacker who can guess
/// a file must not confirm it is stored by computing its id).
pub struct BlobIdKey(Zeroizing<[u8; KEY_LEN]>);

impl BlobIdKey {
    /// The id of a blob: keyed BLAKE3 of its uncompressed bytes, the first
    /// 16 bytes of the 32-byte output (BLAKE3 output is a prefix-stable
    /// XOF, so truncation is its own documented use). 128 bits keep
    /// accidental collisions out of reach (2^64 blobs) and crafted ones
    /// need the key.
    pub fn id(&self, data: &[u8]) -> [u8; ID_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        // update_rayon is not used: the backup already hashes chunks on
        // several threads; update() uses SIMD on one core.
        h.update(data);
        truncate(*h.finalize().as_bytes())
    }
}

impl fmt::Debug for BlobIdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlobIdKey(<secret>)")
    }
}

/// The key of an encrypted vault's disk fingerprint tables (§20): a disk
/// chunk's fingerprint is keyed XXH3-128, ~15 times cheaper than its keyed
/// BLAKE3 id, so that a re-backup recognises the chunks it backed up last
/// time without hashing them again. XXH3 is no cryptographic hash: a
/// fingerprint is only ever compared with one from the host's own sealed
/// table, never shown to the storage, and the secret is unknown to whoever
/// writes the disk, as a version-1 vault's id secret is.
pub struct FingerprintKey(Zeroizing<[u8; KEY_LEN + FINGERPRINT_SECRET_LEN]>);

impl FingerprintKey {
    /// The fingerprint of `data`: XXH3-128 with the derived secret, its
    /// 16 bytes big-endian.
    #[inline]
    pub fn fingerprint(&self, data: &[u8]) -> [u8; FINGERPRINT_LEN] {
        xxhash_rust::xxh3::xxh3_128_with_secret(data, &self.0[KEY_LEN..]).to_be_bytes()
    }

    /// The file name of the table of the disk at `source` (its path's
    /// bytes): 32 hex digits of its keyed BLAKE3, so that names say
    /// nothing of the paths.
    pub fn table_name(&self, source: &[u8]) -> String {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        k.copy_from_slice(&self.0[..KEY_LEN]);
        crate::fsutil::hex(&truncate(*blake3::keyed_hash(&k, source).as_bytes()))
    }
}

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey(<secret>)")
    }
}

fn truncate(full: [u8; 32]) -> [u8; ID_LEN] {
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&full[..ID_LEN]);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_from_each_other_and_per_vault() {
        let a = MasterKey::generate().unwrap();
        let b = MasterKey::generate().unwrap();
        assert_ne!(a.bytes(), b.bytes());
        // Keyed ids differ per vault: the same data gets unrelated ids.
        let data = b"the same chunk in two vaults";
        assert_ne!(a.blob_id_key().id(data), b.blob_id_key().id(data));
        assert_ne!(a.key_id(), b.key_id());
        assert_ne!(a.chunker_seed(), b.chunker_seed());
        // Within one vault the id is a function of the data (dedupe works)
        // and differs for other data.
        let k = a.blob_id_key();
        assert_eq!(k.id(data), a.blob_id_key().id(data));
        assert_ne!(k.id(data), k.id(b"other data"));
        // Independent derivations: the blob-id key is not the sealing key,
        // nor the master key.
        let idk = blake3::derive_key(CTX_BLOB_ID, a.bytes());
        let sk = blake3::derive_key(CTX_SEAL, a.bytes());
        assert_ne!(idk, sk);
        assert_ne!(&idk, a.bytes());
    }

    #[test]
    fn id_is_truncated_keyed_blake3() {
        let m = MasterKey::from_bytes([7; 32]);
        let key = blake3::derive_key(CTX_BLOB_ID, &[7; 32]);
        let full = blake3::keyed_hash(&key, b"abc");
        assert_eq!(&m.blob_id_key().id(b"abc")[..], &full.as_bytes()[..16]);
    }

    /// The fingerprint key is its own derivation: neither the blob-id key
    /// nor the sealing key, per vault, and its fingerprints and names
    /// are functions of their input.
    #[test]
    fn fingerprint_key_is_derived_apart() {
        let m = MasterKey::from_bytes([7; 32]);
        let k = m.fingerprint_key();
        let mut expect = [0u8; KEY_LEN + FINGERPRINT_SECRET_LEN];
        blake3::Hasher::new_derive_key(CTX_FINGERPRINT)
            .update(&[7; 32])
            .finalize_xof()
            .fill(&mut expect);
        assert_eq!(&k.0[..], &expect[..]);
        assert_eq!(
            k.fingerprint(b"abc"),
            xxhash_rust::xxh3::xxh3_128_with_secret(b"abc", &expect[KEY_LEN..]).to_be_bytes()
        );
        assert_ne!(
            &expect[..KEY_LEN],
            &blake3::derive_key(CTX_BLOB_ID, &[7; 32])[..]
        );
        assert_ne!(
            &expect[..KEY_LEN],
            &blake3::derive_key(CTX_SEAL, &[7; 32])[..]
        );
        let other = MasterKey::from_bytes([8; 32]).fingerprint_key();
        assert_ne!(k.fingerprint(b"abc"), other.fingerprint(b"abc"));
        assert_ne!(k.fingerprint(b"abc"), k.fingerprint(b"abd"));
        assert_ne!(k.table_name(b"/dev/vdb"), other.table_name(b"/dev/vdb"));
        assert_ne!(k.table_name(b"/dev/vdb"), k.table_name(b"/dev/vdc"));
        assert_eq!(k.table_name(b"/dev/vdb").len(), 32);
        assert!(!format!("{k:?}").contains("07"));
    }

    #[test]
    fn debug_shows_no_secret() {
        let m = MasterKey::from_bytes([0xab; 32]);
        let s = format!("{m:?} {:?}", m.blob_id_key());
        assert!(!s.contains("abab"), "{s}");
        assert!(s.contains(&crate::fsutil::hex(&m.key_id())), "{s}");
    }
}
