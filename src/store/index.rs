//! Index files: which pack holds each blob, as a sorted fixed-width table
//! with a 256-entry fan-out (after git's idx v2), searched in place through
//! mmap so that opening a vault costs O(1) whatever its size.
//!
//! ```text
//! offset              size   field
//! 0                   8      magic "CBRIDX01"
//! 8                   4      version (u32 LE) = 1
//! 12                  4      P, number of packs (u32 LE)
//! 16                  16*P   pack ids
//! 16+16P              1024   fan-out: 256 × u32 LE, fanout[b] = entries whose
//!                            first id byte is ≤ b; N = fanout[255]
//! 1040+16P            40*N   entries sorted by id (see ENTRY_LEN)
//! end-16              8      XXH3-64 of every byte before it
//! end-8               8      magic "CBRIXEND"
//! ```
//! Entry: id 16 | pack number u32 | kind u8 | compression u8 | reserved 2 |
//! offset u64 | stored_len u32 | raw_len u32.
//! The file is named `index/<XXH3-128 of the file>.idx`.

use super::pack::PackEntry;
use super::storage::{self, ObjectBytes, Storage};
use super::{le_u32, le_u64, BlobId, BlobKind, Compression, Location};
use crate::crypto::{Object, SealKey};
use crate::error::{Error, Result};

/// Magic at the start of an index.
pub const MAGIC: &[u8; 8] = b"CBRIDX01";
/// Magic at the end of an index.
pub const END_MAGIC: &[u8; 8] = b"CBRIXEND";
/// Index format version.
pub const VERSION: u32 = 1;
/// Index format version of an encrypted vault: a 16-byte clear header
/// (magic, version 2, zero) and one sealed object (kind 3, bound to the
/// index's random id, its file name) whose plaintext is the version-1
/// layout below with version 2 in its version field.
pub const VERSION_SEALED: u32 = 2;
/// One entry's width.
pub const ENTRY_LEN: usize = 40;
const HEADER_LEN: usize = 16;
const FANOUT_LEN: usize = 1024;
const FOOTER_LEN: usize = 16;

/// A mapped index file.
pub struct IndexFile {
    /// Its object name, `index/<hex>.idx`.
    name: String,
    /// How messages name it: its path, or its URL.
    label: String,
    map: ObjectBytes,
    packs: usize,
    entries_at: usize,
    count: usize,
}

impl IndexFile {
    /// Map (or read) index `name` of `storage` and validate its shape
    /// (not its checksum: that reads the whole file, which is for `check`).
    /// A missing index is an error for which [`storage::is_absent`] is true.
    /// `seal` is the vault's sealing key (an encrypted vault: the index
    /// must be version 2 and is opened whole into memory).
    pub fn open(storage: &dyn Storage, name: &str, seal: Option<&SealKey>) -> Result<IndexFile> {
        let label = storage::object_label(storage, name);
        let mut map = storage::load(storage, name)?;
        let bad = |why: &str| Error::corrupt(format!("index {label} is damaged: {why}"));
        let version = if let Some(k) = seal {
            if map.len() < HEADER_LEN || &map[..8] != MAGIC {
                return Err(bad("bad magic"));
            }
            if le_u32(&map, 8) != VERSION_SEALED || le_u32(&map, 12) != 0 {
                return Err(bad(
                    "not an encrypted (version 2) index in an encrypted vault",
                ));
            }
            let id =
                index_id(name).ok_or_else(|| bad("its name is not index/<32 hex digits>.idx"))?;
            let plain = k
                .open(Object::Index(&id), &map[HEADER_LEN..])
                .map_err(|e| e.context(format!("index {label}")))?;
            map = ObjectBytes::Read(plain);
            VERSION_SEALED
        } else {
            VERSION
        };
        Self::parse(name, label, map, version)
    }

    /// Validate the shape of index bytes `map` (the layout above, opened
    /// if it was sealed) of version `version`, named `name` and labelled
    /// `label` in messages. Prune's marks carry an index of this layout
    /// inside their own envelope ([`super::marks`]).
    pub(super) fn parse(
        name: &str,
        label: String,
        map: ObjectBytes,
        version: u32,
    ) -> Result<IndexFile> {
        let bad = |why: &str| Error::corrupt(format!("index {label} is damaged: {why}"));
        if map.len() < HEADER_LEN + FANOUT_LEN + FOOTER_LEN {
            return Err(bad("too short"));
        }
        if &map[..8] != MAGIC || &map[map.len() - 8..] != END_MAGIC {
            return Err(bad("bad magic"));
        }
        if le_u32(&map, 8) != version {
            return Err(bad("unknown version"));
        }
        let packs = le_u32(&map, 12) as usize;
        let fanout_at = HEADER_LEN + packs * 16;
        let entries_at = fanout_at + FANOUT_LEN;
        if entries_at + FOOTER_LEN > map.len() {
            return Err(bad("pack table does not fit"));
        }
        let mut prev = 0;
        for b in 0..256 {
            let v = le_u32(&map, fanout_at + b * 4) as usize;
            if v < prev {
                return Err(bad("fan-out is not monotonic"));
            }
            prev = v;
        }
        let count = prev;
        if entries_at + count * ENTRY_LEN + FOOTER_LEN != map.len() {
            return Err(bad("size does not match its entry count"));
        }
        Ok(IndexFile {
            name: name.to_string(),
            label,
            map,
            packs,
            entries_at,
            count,
        })
    }

    /// Its object name, `index/<hex>.idx`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count
    }
    /// The packs it names.
    pub fn pack_ids(&self) -> Vec<BlobId> {
        (0..self.packs).map(|i| self.pack_id(i)).collect()
    }
    fn pack_id(&self, i: usize) -> BlobId {
        let at = HEADER_LEN + i * 16;
        let mut id = [0u8; 16];
        id.copy_from_slice(&self.map[at..at + 16]);
        BlobId(id)
    }
    fn fanout(&self, b: usize) -> usize {
        le_u32(&self.map, HEADER_LEN + self.packs * 16 + b * 4) as usize
    }
    fn entry_id(&self, i: usize) -> &[u8] {
        let at = self.entries_at + i * ENTRY_LEN;
        &self.map[at..at + 16]
    }

    /// Decode entry `i`; `None` if its fields are out of range.
    pub fn entry(&self, i: usize) -> Option<(BlobId, Location)> {
        let at = self.entries_at + i * ENTRY_LEN;
        let e = &self.map[at..at + ENTRY_LEN];
        let mut id = [0u8; 16];
        id.copy_from_slice(&e[..16]);
        let pack_no = le_u32(e, 16) as usize;
        if pack_no >= self.packs {
            return None;
        }
        Some((
            BlobId(id),
            Location {
                pack: self.pack_id(pack_no),
                kind: BlobKind::from_u8(e[20])?,
                compression: Compression::from_u8(e[21])?,
                offset: le_u64(e, 24),
                stored_len: le_u32(e, 32),
                raw_len: le_u32(e, 36),
            },
        ))
    }

    /// Binary search for `id` within its fan-out bucket. A damaged entry
    /// reads as absent (and the blob as missing), never as another blob.
    pub fn lookup(&self, id: &BlobId) -> Option<Location> {
        let b = id.0[0] as usize;
        let lo = if b == 0 { 0 } else { self.fanout(b - 1) };
        let hi = self.fanout(b).min(self.count);
        if lo >= hi {
            return None;
        }
        let (mut lo, mut hi) = (lo, hi);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry_id(mid).cmp(&id.0[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    return self.entry(mid).filter(|(eid, _)| eid == id).map(|(_, l)| l)
                }
            }
        }
        None
    }

    /// Verify the trailing checksum and that entries are sorted (for check).
    pub fn verify(&self) -> Result<()> {
        let end = self.map.len() - FOOTER_LEN;
        if xxhash_rust::xxh3::xxh3_64(&self.map[..end]) != le_u64(&self.map, end) {
            return Err(Error::corrupt(format!(
                "index {}: checksum mismatch",
                self.label
            )));
        }
        for i in 1..self.count {
            if self.entry_id(i - 1) >= self.entry_id(i) {
                return Err(Error::corrupt(format!(
                    "index {}: entries out of order",
                    self.label
                )));
            }
        }
        for i in 0..self.count {
            if self.entry(i).is_none() {
                return Err(Error::corrupt(format!(
                    "index {}: entry {i} is undecodable",
                    self.label
                )));
            }
        }
        Ok(())
    }

    /// Every entry (for merging and check).
    pub fn iter(&self) -> impl Iterator<Item = (BlobId, Location)> + '_ {
        (0..self.count).filter_map(|i| self.entry(i))
    }
}

/// The size of the index [`write_index`] writes for `packs` packs and
/// `entries` distinct blobs.
pub fn index_len(packs: usize, entries: usize) -> u64 {
    (HEADER_LEN + packs * 16 + FANOUT_LEN + entries * ENTRY_LEN + FOOTER_LEN) as u64
}

/// The id in an index's object name `index/<32 hex digits>.idx`.
fn index_id(name: &str) -> Option<[u8; 16]> {
    let hex = name.strip_prefix("index/")?.strip_suffix(".idx")?;
    Some(BlobId::from_hex(hex)?.0)
}

/// The version field of the index layout in a vault sealed with `seal`
/// ([`VERSION_SEALED`]) or clear ([`VERSION`]): index files and prune
/// marks (which carry this layout) alike.
pub(super) fn version_for(seal: Option<&SealKey>) -> u32 {
    if seal.is_some() {
        VERSION_SEALED
    } else {
        VERSION
    }
}

/// Publish an index of `entries` (any order; duplicates keep the first) in
/// `storage`, durably, sealed with `seal` (version 2) when given; returns
/// its name and size.
pub fn write_index(
    storage: &dyn Storage,
    entries: Vec<(BlobId, Location)>,
    seal: Option<&SealKey>,
) -> Result<(String, u64)> {
    let buf = index_bytes(entries, &[], version_for(seal));
    if let Some(k) = seal {
        // Random id, fixed before sealing: the seal is bound to it.
        let id: [u8; 16] = crate::crypto::keys::random::<16>()?;
        let mut file = Vec::with_capacity(HEADER_LEN + buf.len() + crate::crypto::seal::OVERHEAD);
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&VERSION_SEALED.to_le_bytes());
        file.extend_from_slice(&0u32.to_le_bytes());
        k.seal_into(Object::Index(&id), &buf, &mut file)?;
        let name = format!("index/{}.idx", crate::fsutil::hex(&id));
        storage.put(&name, &file)?;
        return Ok((name, file.len() as u64));
    }
    let name = format!(
        "index/{}.idx",
        crate::fsutil::hex(&xxhash_rust::xxh3::xxh3_128(&buf).to_be_bytes())
    );
    storage.put(&name, &buf)?;
    Ok((name, buf.len() as u64))
}

/// The bytes of the layout above (with `version` in its version field)
/// naming `entries` (any order; duplicates keep the first) and, in its
/// pack table, also the packs `more_packs` (prune's marks name packs of
/// which no blob is indexed). Not sealed.
pub(super) fn index_bytes(
    mut entries: Vec<(BlobId, Location)>,
    more_packs: &[BlobId],
    version: u32,
) -> Vec<u8> {
    entries.sort_by_key(|e| e.0);
    entries.dedup_by(|a, b| a.0 == b.0);
    let mut packs: Vec<BlobId> = entries.iter().map(|(_, l)| l.pack).collect();
    packs.extend_from_slice(more_packs);
    packs.sort();
    packs.dedup();
    let mut buf = Vec::with_capacity(
        HEADER_LEN + packs.len() * 16 + FANOUT_LEN + entries.len() * ENTRY_LEN + FOOTER_LEN,
    );
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&version.to_le_bytes());
    buf.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in &packs {
        buf.extend_from_slice(&p.0);
    }
    let mut fanout = [0u32; 256];
    for (id, _) in &entries {
        fanout[id.0[0] as usize] += 1;
    }
    let mut acc = 0u32;
    for f in fanout.iter_mut() {
        acc += *f;
        *f = acc;
    }
    for f in fanout {
        buf.extend_from_slice(&f.to_le_bytes());
    }
    for (id, l) in &entries {
        let pack_no = packs.binary_search(&l.pack).unwrap_or(0) as u32;
        buf.extend_from_slice(&id.0);
        buf.extend_from_slice(&pack_no.to_le_bytes());
        buf.push(l.kind as u8);
        buf.push(l.compression as u8);
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&l.offset.to_le_bytes());
        buf.extend_from_slice(&l.stored_len.to_le_bytes());
        buf.extend_from_slice(&l.raw_len.to_le_bytes());
    }
    let sum = xxhash_rust::xxh3::xxh3_64(&buf);
    buf.extend_from_slice(&sum.to_le_bytes());
    buf.extend_from_slice(END_MAGIC);
    buf
}

/// Index entries for the blobs of a sealed pack.
pub fn entries_of_pack(pack: BlobId, entries: &[PackEntry]) -> Vec<(BlobId, Location)> {
    entries.iter().map(|e| (e.id, e.location(pack))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalDir;
    use std::path::Path;

    fn loc(pack: u8, off: u64) -> Location {
        Location {
            pack: BlobId([pack; 16]),
            kind: BlobKind::Data,
            compression: Compression::Zstd,
            offset: off,
            stored_len: 10,
            raw_len: 20,
        }
    }

    #[test]
    fn write_and_search() {
        let dir = tempfile::tempdir().unwrap();
        let mut entries = Vec::new();
        for i in 0..1000u32 {
            let mut id = [0u8; 16];
            id[..4]
                .copy_from_slice(&xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()).to_be_bytes()[..4]);
            id[4..8].copy_from_slice(&i.to_be_bytes());
            entries.push((BlobId(id), loc((i % 3) as u8, i as u64)));
        }
        let s = LocalDir::new(dir.path());
        let (p, _) = write_index(&s, entries.clone(), None).unwrap();
        let idx = IndexFile::open(&s, &p, None).unwrap();
        idx.verify().unwrap();
        assert_eq!(idx.len(), 1000);
        for (id, l) in &entries {
            assert_eq!(idx.lookup(id), Some(*l));
        }
        assert_eq!(idx.lookup(&BlobId([0xee; 16])), None);
        assert_eq!(idx.pack_ids().len(), 3);
    }

    /// Open `bytes` as an index through the real path (file, mmap) and use
    /// every method: nothing may panic or allocate much more than the
    /// file's size; an index that passes `verify` must hold `good`'s
    /// entries (or `good` is None: arbitrary bytes).
    fn try_index(
        dir: &Path,
        name: &str,
        bytes: &[u8],
        good: Option<&[(BlobId, Location)]>,
        probes: &[BlobId],
    ) -> std::result::Result<(), proptest::test_runner::TestCaseError> {
        std::fs::write(dir.join(name), bytes).unwrap();
        crate::testkit::decodes_within_bounds("an index", bytes, good, || {
            let idx = IndexFile::open(&LocalDir::new(dir), name, None)?;
            let _ = (idx.len(), idx.pack_ids());
            for id in probes
                .iter()
                .chain(good.unwrap_or(&[]).iter().map(|(id, _)| id))
            {
                if let Some(l) = idx.lookup(id) {
                    assert!(idx.pack_ids().contains(&l.pack));
                }
            }
            let all: Vec<_> = idx.iter().collect();
            idx.verify()?;
            Ok(all)
        })
    }

    #[test]
    fn fuzz_index_files() {
        use crate::testkit;
        use proptest::prelude::*;
        let config = testkit::config(384);
        let secs = testkit::deadline(config.cases, 20);
        testkit::within(secs, move || {
            let dir = tempfile::tempdir().unwrap();
            let mut entries = Vec::new();
            for i in 0..40u8 {
                let mut id = [i.wrapping_mul(37); 16];
                id[15] = i;
                entries.push((BlobId(id), loc(i % 3, 16 + i as u64 * 10)));
            }
            entries.sort_by_key(|e| e.0);
            let (p, _) = write_index(&LocalDir::new(dir.path()), entries.clone(), None).unwrap();
            let good = std::fs::read(dir.path().join(p)).unwrap();
            let (path, name) = (dir.path(), "index/fuzz.idx");
            let probes = proptest::collection::vec(any::<[u8; 16]>().prop_map(BlobId), 0..4);
            let mut runner = proptest::test_runner::TestRunner::new(config);
            runner
                .run(
                    &(testkit::damages(), probes.clone()),
                    |(damages, probes)| {
                        let bad = testkit::apply(&good, &damages);
                        try_index(path, name, &bad, Some(&entries), &probes)
                    },
                )
                .unwrap();
            // Arbitrary bytes; and a valid header, pack table and fan-out
            // of arbitrary values with a size that fits them.
            let raw = (
                proptest::collection::vec(any::<u8>(), 0..1200),
                0u32..4,
                proptest::collection::vec(0u32..6, 256),
                probes,
            );
            runner
                .run(&raw, |(data, packs, mut fanout, probes)| {
                    try_index(path, name, &data, None, &probes)?;
                    fanout.sort();
                    let n = fanout[255] as usize;
                    let mut b = Vec::new();
                    b.extend_from_slice(MAGIC);
                    b.extend_from_slice(&VERSION.to_le_bytes());
                    b.extend_from_slice(&packs.to_le_bytes());
                    b.extend((0..packs as usize * 16).map(|i| data.get(i).copied().unwrap_or(0)));
                    for f in &fanout {
                        b.extend_from_slice(&f.to_le_bytes());
                    }
                    b.extend((0..n * ENTRY_LEN).map(|i| data.get(i).copied().unwrap_or(i as u8)));
                    let sum = xxhash_rust::xxh3::xxh3_64(&b);
                    b.extend_from_slice(&sum.to_le_bytes());
                    b.extend_from_slice(END_MAGIC);
                    try_index(path, name, &b, None, &probes)
                })
                .unwrap();
        });
    }

    #[test]
    fn damaged_index_is_refused_or_fails_verify() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalDir::new(dir.path());
        let (name, _) = write_index(&s, vec![(BlobId([5; 16]), loc(1, 16))], None).unwrap();
        let p = dir.path().join(&name);
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 20] ^= 0xff;
        std::fs::write(&p, &bytes).unwrap();
        let idx = IndexFile::open(&s, &name, None).unwrap();
        assert!(idx.verify().is_err());
        std::fs::write(&p, &bytes[..n - 1]).unwrap();
        assert!(IndexFile::open(&s, &name, None).is_err());
    }
}
