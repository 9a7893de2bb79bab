//! Pack files: blobs back to back, sealed with a blob table and a footer.
//!
//! ```text
//! offset          size   field
//! 0               8      magic "CBRPACK1"
//! 8               4      version (u32 LE) = 1
//! 12              4      reserved, zero
//! 16              ...    blob payloads, back to back
//! table_offset    36*N   blob table, one entry per blob (see ENTRY_LEN)
//! end-32          4      N, blob count (u32 LE)
//! end-28          4      reserved, zero
//! end-24          8      table_offset (u64 LE)
//! end-16          8      XXH3-64 of the blob table
//! end-8           8      magic "CBRPKEND"
//! ```
//! Version 2 (an encrypted vault, docs/FORMAT.md §16.5): the same frame
//! with version 2; each blob's stored bytes are sealed on their own (kind
//! 1, bound to the blob's id) so that one blob is still one byte range; the
//! blob table is one sealed object (kind 2, bound to the pack's id) of
//! `36*N + 41` bytes; the footer's checksum field is zero (the tag covers
//! the table); and the pack's id is 16 random bytes, since it is bound into
//! the table's seal and so cannot be a hash of the file.
//!
//! A pack is built whole in memory and published through the vault's
//! [`Storage`] as `packs/<hh>/<id>.pack`, where `<id>` is the XXH3-128
//! (unkeyed) of the whole file; publishing is atomic and verified (the
//! local directory re-reads it before the rename). It is never modified
//! afterwards: readers map it, and truncating a mapped file would kill them
//! with SIGBUS.

use super::storage::{self, ObjectBytes, Storage};
use super::{le_u32, le_u64, BlobId, BlobKind, Compression, Location};
use crate::crypto::{Object, SealKey};
use crate::error::{Error, Result};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

/// Magic at the start of a pack.
pub const MAGIC: &[u8; 8] = b"CBRPACK1";
/// Magic at the very end of a pack.
pub const END_MAGIC: &[u8; 8] = b"CBRPKEND";
/// Pack format version.
pub const VERSION: u32 = 1;
/// Pack format version of an encrypted vault (sealed blobs and table).
pub const VERSION_SEALED: u32 = 2;
/// Header length.
pub const HEADER_LEN: usize = 16;
/// Footer length.
pub const FOOTER_LEN: usize = 32;
/// One blob-table entry: id 16 | kind 1 | compression 1 | reserved 2 |
/// stored_len u32 | raw_len u32 | offset u64.
pub const ENTRY_LEN: usize = 36;

/// The object name of pack `id`: `packs/<first two hex digits>/<hex>.pack`.
pub fn pack_name(id: &BlobId) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{hex}.pack", &hex[..2])
}

/// One entry of a pack's blob table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// Blob id.
    pub id: BlobId,
    /// Blob kind.
    pub kind: BlobKind,
    /// Storage form.
    pub compression: Compression,
    /// Offset of the stored bytes.
    pub offset: u64,
    /// Stored length.
    pub stored_len: u32,
    /// Uncompressed length.
    pub raw_len: u32,
}

impl PackEntry {
    /// Where this entry's blob is, in pack `pack`: the index's entry for it.
    pub fn location(&self, pack: BlobId) -> Location {
        Location {
            pack,
            kind: self.kind,
            compression: self.compression,
            offset: self.offset,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0);
        out.push(self.kind as u8);
        out.push(self.compression as u8);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
    }
    fn decode(b: &[u8]) -> Option<PackEntry> {
        if b.len() < ENTRY_LEN {
            return None;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[..16]);
        Some(PackEntry {
            id: BlobId(id),
            kind: BlobKind::from_u8(b[16])?,
            compression: Compression::from_u8(b[17])?,
            stored_len: le_u32(b, 20),
            raw_len: le_u32(b, 24),
            offset: le_u64(b, 28),
        })
    }
}

/// How full a pack's buffer is before the rest of it is asked for huge
/// pages ([`crate::sys::advise_huge_pages`]).
const HUGE_AFTER: usize = 2 << 20;

/// Builds one pack in memory and seals it to disk.
pub struct PackWriter {
    buf: Vec<u8>,
    /// True once the buffer's rest was asked for huge pages.
    huge: bool,
    entries: Vec<PackEntry>,
    /// The vault's sealing key: a version-2 pack.
    seal: Option<SealKey>,
}

impl Default for PackWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PackWriter {
    /// An empty pack.
    pub fn new() -> Self {
        Self::with_seal(None)
    }

    /// An empty pack, sealed with `seal` (version 2) when given.
    pub fn with_seal(seal: Option<SealKey>) -> Self {
        // Room for a full pack and the blob that fills it, reserved once:
        // growing by doubling would copy, and may reserve twice the pack.
        // Pages not written are not touched, so a small pack costs little.
        let mut buf = Vec::with_capacity(
            HEADER_LEN + super::PACK_TARGET + crate::chunker::MAX_SIZE + (1 << 20),
        );
        let version = if seal.is_some() {
            VERSION_SEALED
        } else {
            VERSION
        };
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&version.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        PackWriter {
            buf,
            huge: false,
            entries: Vec::new(),
            seal,
        }
    }
    /// Bytes so far (payloads and header).
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// True if no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Append a blob's stored bytes (sealed first in a version-2 pack).
    pub fn add(
        &mut self,
        id: BlobId,
        kind: BlobKind,
        compression: Compression,
        stored: &[u8],
        raw_len: u32,
    ) -> Result<()> {
        let offset = self.buf.len() as u64;
        match &self.seal {
            Some(k) => k.seal_into(Object::PackBlob(&id.0), stored, &mut self.buf)?,
            None => self.buf.extend_from_slice(stored),
        }
        // Once a pack is past its first 2 MiB it is a data pack that will
        // fill: the rest of its buffer in huge pages (a first backup of the
        // binaries image took 170,000 page faults, 0.5 s of its 8.3 s of
        // CPU, filling 4 KiB pages). Not before, so a small pack (trees,
        // the last one of a run) touches only its own few pages.
        if !self.huge && self.buf.len() >= HUGE_AFTER {
            self.huge = true;
            crate::sys::advise_huge_pages(&mut self.buf);
        }
        self.entries.push(PackEntry {
            id,
            kind,
            compression,
            offset,
            stored_len: (self.buf.len() as u64 - offset) as u32,
            raw_len,
        });
        Ok(())
    }

    /// Publish the pack in `storage` (atomically, verified), and return
    /// its id, its size and its entries.
    pub fn seal(mut self, storage: &dyn Storage) -> Result<(BlobId, u64, Vec<PackEntry>)> {
        let table_offset = self.buf.len() as u64;
        let mut table = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for e in &self.entries {
            e.encode(&mut table);
        }
        // A version-2 pack's id is random and fixed before its table is
        // sealed, since the table is bound to it.
        let sealed_id = match &self.seal {
            Some(_) => Some(BlobId(crate::crypto::keys::random::<16>()?)),
            None => None,
        };
        let table_sum = match (&self.seal, &sealed_id) {
            (Some(k), Some(id)) => {
                table = k.seal(Object::PackTrailer(&id.0), &table)?;
                0
            }
            _ => xxhash_rust::xxh3::xxh3_64(&table),
        };
        self.buf.extend_from_slice(&table);
        self.buf
            .extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        self.buf.extend_from_slice(&table_offset.to_le_bytes());
        self.buf.extend_from_slice(&table_sum.to_le_bytes());
        self.buf.extend_from_slice(END_MAGIC);
        let id = sealed_id
            .unwrap_or_else(|| BlobId(xxhash_rust::xxh3::xxh3_128(&self.buf).to_be_bytes()));
        // A pack of trees and chunk lists only is read whole and often
        // (browsing, the next backup): a cache keeps what it just sent.
        if self.entries.iter().all(|e| e.kind != BlobKind::Data) {
            storage.put_kept(&pack_name(&id), &self.buf)?;
        } else {
            storage.put(&pack_name(&id), &self.buf)?;
        }
        Ok((id, self.buf.len() as u64, self.entries))
    }
}

/// A sealed pack: mapped (or read) whole, or — on a backend that cannot
/// map it (an object store behind a cache) — read blob by blob with byte
/// ranges, so that restoring one file does not download its whole 16 MiB
/// pack. Either way a blob's bytes are verified against its id by the
/// caller ([`super::Repo::read_at`]), so a range that comes back damaged
/// is an error, never other bytes. In an encrypted vault (a version-2
/// pack) each blob is also opened with the vault's sealing key, bound to
/// its id, whether it comes from the whole pack or from a range.
pub struct PackReader {
    id: BlobId,
    /// How messages name it: its path, or its URL.
    label: String,
    body: Body,
    /// The vault's sealing key: its packs are version 2.
    seal: Option<SealKey>,
}

enum Body {
    Whole(Whole),
    /// Not loaded: blobs are read by range from `storage`; the whole pack
    /// is loaded only when its table or its hash is wanted (check). Its
    /// header is not read first: a version-1 pack in an encrypted vault
    /// has blobs that do not open, a version-2 pack in a clear vault blobs
    /// that do not hash to their ids.
    Ranged {
        storage: Arc<dyn Storage>,
        name: String,
        whole: OnceLock<Whole>,
    },
}

/// A whole pack's bytes, header and footer validated.
struct Whole {
    map: ObjectBytes,
    table_offset: usize,
    count: usize,
}

impl Whole {
    /// Validate `map`'s header and footer; `seal` is the vault's sealing
    /// key (an encrypted vault): its packs must be version 2, a clear
    /// vault's version 1.
    fn parse(label: &str, map: ObjectBytes, seal: Option<&SealKey>) -> Result<Whole> {
        let bad = |why: &str| Error::corrupt(format!("pack {label} is damaged: {why}"));
        if map.len() < HEADER_LEN + FOOTER_LEN {
            return Err(bad("shorter than header and footer"));
        }
        if &map[..8] != MAGIC {
            return Err(bad("bad magic"));
        }
        let version = le_u32(&map, 8);
        match (version, seal) {
            (VERSION, None) | (VERSION_SEALED, Some(_)) => {}
            // A clear pack in an encrypted vault was not written by it:
            // nothing unsealed is read from an encrypted vault.
            (VERSION, Some(_)) => {
                return Err(bad("a clear (version 1) pack in an encrypted vault"))
            }
            (VERSION_SEALED, None) => {
                return Err(bad(
                    "an encrypted (version 2) pack in a vault that is not encrypted",
                ))
            }
            _ => return Err(bad(&format!("unknown version {version}"))),
        }
        let table_extra = if seal.is_some() {
            crate::crypto::seal::OVERHEAD as u64
        } else {
            0
        };
        let f = map.len() - FOOTER_LEN;
        if &map[f + 24..f + 32] != END_MAGIC {
            return Err(bad("bad end magic"));
        }
        let count = le_u32(&map, f) as usize;
        let table_offset = le_u64(&map, f + 8);
        let expect_end = (count as u64)
            .checked_mul(ENTRY_LEN as u64)
            .and_then(|t| t.checked_add(table_offset))
            .and_then(|t| t.checked_add(table_extra));
        if table_offset < HEADER_LEN as u64 || expect_end != Some(f as u64) {
            return Err(bad("blob table does not fit the file"));
        }
        Ok(Whole {
            map,
            table_offset: table_offset as usize,
            count,
        })
    }
}

impl PackReader {
    /// Load (map) pack `id` of `storage` and validate its header and
    /// footer. A missing pack is an error for which
    /// [`storage::is_absent`] is true.
    /// `seal` is the vault's sealing key (an encrypted vault): its packs
    /// must be version 2, a clear vault's version 1.
    pub fn open(storage: &dyn Storage, id: BlobId, seal: Option<&SealKey>) -> Result<PackReader> {
        let name = pack_name(&id);
        let label = storage::object_label(storage, &name);
        let map = storage::load(storage, &name)?;
        let whole = Whole::parse(&label, map, seal)?;
        Ok(PackReader {
            id,
            label,
            body: Body::Whole(whole),
            seal: seal.cloned(),
        })
    }

    /// Pack `id` mapped if `storage` can map it now, else read by range
    /// (no request is made here: an absent pack shows at the first read).
    /// `seal` as for [`PackReader::open`].
    pub fn open_lazy(
        storage: &Arc<dyn Storage>,
        id: BlobId,
        seal: Option<&SealKey>,
    ) -> Result<PackReader> {
        let name = pack_name(&id);
        let label = storage::object_label(&**storage, &name);
        match storage.map(&name)? {
            Some(m) => Ok(PackReader {
                id,
                body: Body::Whole(Whole::parse(&label, ObjectBytes::Mapped(m), seal)?),
                label,
                seal: seal.cloned(),
            }),
            None => Ok(PackReader {
                id,
                label,
                body: Body::Ranged {
                    storage: storage.clone(),
                    name,
                    whole: OnceLock::new(),
                },
                seal: seal.cloned(),
            }),
        }
    }

    /// The whole pack, loading it once if it is read by range.
    fn whole(&self) -> Result<&Whole> {
        match &self.body {
            Body::Whole(w) => Ok(w),
            Body::Ranged {
                storage,
                name,
                whole,
            } => {
                if let Some(w) = whole.get() {
                    return Ok(w);
                }
                let w = Whole::parse(
                    &self.label,
                    storage::load(&**storage, name)?,
                    self.seal.as_ref(),
                )?;
                Ok(whole.get_or_init(|| w))
            }
        }
    }

    /// Size of the file.
    #[cfg(test)]
    pub fn size(&self) -> u64 {
        self.whole().map(|w| w.map.len() as u64).unwrap_or(0)
    }

    /// The stored bytes of the blob at `loc`, bounds-checked (a ranged
    /// read checks them against what the server returns: exactly
    /// `stored_len` bytes, or an error naming the pack). Sealed in a
    /// version-2 pack: see [`PackReader::unseal_into`].
    pub fn stored(&self, loc: &Location) -> Result<Cow<'_, [u8]>> {
        let outside = || {
            Error::corrupt(format!(
                "pack {}: blob at offset {} length {} lies outside the pack's data",
                self.label, loc.offset, loc.stored_len
            ))
        };
        let whole = match &self.body {
            Body::Whole(w) => w,
            Body::Ranged { whole, .. } if whole.get().is_some() => {
                whole.get().ok_or_else(outside)?
            }
            Body::Ranged { storage, name, .. } => {
                if loc.offset < HEADER_LEN as u64 {
                    return Err(outside());
                }
                return Ok(Cow::Owned(storage.get_range(
                    name,
                    loc.offset,
                    loc.stored_len as u64,
                )?));
            }
        };
        let start = loc.offset as usize;
        let end = start.checked_add(loc.stored_len as usize);
        match end {
            Some(end) if start >= HEADER_LEN && end <= whole.table_offset => {
                Ok(Cow::Borrowed(&whole.map[start..end]))
            }
            _ => Err(outside()),
        }
    }

    /// True for a version-2 (sealed) pack.
    pub fn sealed(&self) -> bool {
        self.seal.is_some()
    }

    /// Blob `id`'s `stored` bytes (from [`PackReader::stored`]) as
    /// compressed, opened into `out` (cleared first), and so authenticated
    /// as blob `id`, in a version-2 pack: `true`. `false` (nothing done) for
    /// a version-1 pack, whose stored bytes are used as they are.
    pub fn unseal_into(&self, id: &BlobId, stored: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        match &self.seal {
            None => Ok(false),
            Some(k) => k
                .open_into(Object::PackBlob(&id.0), stored, out)
                .map(|()| true)
                .map_err(|e| e.context(format!("pack {}", self.label))),
        }
    }

    /// Decode and check the blob table (for check and index rebuild).
    pub fn entries(&self) -> Result<Vec<PackEntry>> {
        let w = self.whole()?;
        let f = w.map.len() - FOOTER_LEN;
        if let Some(k) = &self.seal {
            let table = k
                .open(Object::PackTrailer(&self.id.0), &w.map[w.table_offset..f])
                .map_err(|e| e.context(format!("pack {}", self.label)))?;
            if table.len() != w.count * ENTRY_LEN {
                return Err(Error::corrupt(format!(
                    "pack {}: blob table holds {} bytes, not {} entries",
                    self.label,
                    table.len(),
                    w.count
                )));
            }
            return Self::decode_table(&table, &self.label);
        }
        let table = &w.map[w.table_offset..w.table_offset + w.count * ENTRY_LEN];
        if xxhash_rust::xxh3::xxh3_64(table) != le_u64(&w.map, f + 16) {
            return Err(Error::corrupt(format!(
                "pack {}: blob table checksum mismatch",
                self.label
            )));
        }
        Self::decode_table(table, &self.label)
    }

    fn decode_table(table: &[u8], label: &str) -> Result<Vec<PackEntry>> {
        table
            .chunks_exact(ENTRY_LEN)
            .map(|e| {
                PackEntry::decode(e).ok_or_else(|| {
                    Error::corrupt(format!("pack {label}: undecodable blob table entry"))
                })
            })
            .collect()
    }

    /// True if the whole file hashes to its name (false if it cannot be
    /// loaded). Never true of a version-2 pack, whose name is random.
    pub fn verify_id(&self) -> bool {
        match self.whole() {
            Ok(w) => BlobId(xxhash_rust::xxh3::xxh3_128(&w.map).to_be_bytes()) == self.id,
            Err(_) => false,
        }
    }
}

/// True if sealed pack `bytes` holds only metadata blobs (trees and chunk
/// lists): a cache keeps such packs whole. False when it cannot tell —
/// always for a version-2 pack, whose table is sealed: an encrypted
/// vault's metadata packs are kept whole when first read instead
/// ([`super::Repo`] asks the storage to, by the index's blob kinds).
pub fn holds_only_metadata(bytes: &[u8]) -> bool {
    let f = match bytes.len().checked_sub(FOOTER_LEN) {
        Some(f) if bytes.len() >= HEADER_LEN + FOOTER_LEN && &bytes[..8] == MAGIC => f,
        _ => return false,
    };
    let count = le_u32(bytes, f) as usize;
    let table_offset = le_u64(bytes, f + 8) as usize;
    let Some(end) = count
        .checked_mul(ENTRY_LEN)
        .and_then(|t| t.checked_add(table_offset))
    else {
        return false;
    };
    if end != f || table_offset < HEADER_LEN || count == 0 {
        return false;
    }
    bytes[table_offset..end]
        .chunks_exact(ENTRY_LEN)
        .all(|e| matches!(PackEntry::decode(e), Some(p) if p.kind != BlobKind::Data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalDir;
    use std::path::{Path, PathBuf};

    fn pack_path(dir: &Path, id: &BlobId) -> PathBuf {
        dir.join(pack_name(id))
    }

    #[test]
    fn seal_open_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::new();
        let a = BlobId([1; 16]);
        let b = BlobId([2; 16]);
        w.add(a, BlobKind::Data, Compression::None, b"hello", 5)
            .unwrap();
        w.add(b, BlobKind::Tree, Compression::None, b"world!", 6)
            .unwrap();
        let (id, size, entries) = w.seal(&LocalDir::new(dir.path())).unwrap();
        let r = PackReader::open(&LocalDir::new(dir.path()), id, None).unwrap();
        assert_eq!(r.size(), size);
        assert!(r.verify_id());
        assert_eq!(r.entries().unwrap(), entries);
        let loc = |e: &PackEntry| e.location(id);
        assert_eq!(&*r.stored(&loc(&entries[1])).unwrap(), b"world!");
        let mut bad = loc(&entries[1]);
        bad.stored_len = 1 << 20;
        assert!(r.stored(&bad).is_err());
    }

    /// A pack's buffer is asked for huge pages once past its first 2 MiB,
    /// not before (a small pack keeps small pages), and its bytes are the
    /// same either way. Where the kernel has transparent huge pages, the
    /// buffer's rest is marked for them (whether any are granted is the
    /// kernel's to decide).
    #[test]
    fn a_filling_pack_asks_for_huge_pages_after_2_mib() {
        let mut w = PackWriter::new();
        let chunk = vec![5u8; 64 << 10];
        let mut n = 0u8;
        let mut add = |w: &mut PackWriter| {
            w.add(
                BlobId([n; 16]),
                BlobKind::Data,
                Compression::None,
                &chunk,
                1,
            )
            .unwrap();
            n = n.wrapping_add(1);
        };
        while w.len() + chunk.len() < HUGE_AFTER {
            add(&mut w);
        }
        assert!(!w.huge, "asked before 2 MiB");
        while w.len() < 12 << 20 {
            add(&mut w);
        }
        assert!(w.huge);
        assert!(w.buf[HEADER_LEN..].iter().all(|&b| b == 5));
        if !Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            eprintln!("this kernel has no transparent huge pages: not checked");
            return;
        }
        // The advice is what this code controls: every mapping that holds
        // the buffer's spare part carries VM_HUGEPAGE ("hg" in smaps'
        // VmFlags; the advice splits its mapping in two). Whether the
        // kernel then grants huge pages depends on how fragmented its
        // memory is (CI saw AnonHugePages 0 kB on a busy machine), so
        // that is reported, not asserted.
        let spare =
            w.buf.as_ptr() as usize + w.buf.len()..w.buf.as_ptr() as usize + w.buf.capacity();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let (mut inside, mut advised, mut unadvised, mut huge_kb) = (false, 0, 0, 0u64);
        for line in smaps.lines() {
            let first = line.split(' ').next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    // Mappings that hold any whole page of the spare part.
                    inside = a < (spare.end & !4095) && spare.start.next_multiple_of(4096) < b;
                    continue;
                }
            }
            if !inside {
                continue;
            }
            if let Some(kb) = line.strip_prefix("AnonHugePages:") {
                huge_kb += kb
                    .trim()
                    .trim_end_matches(" kB")
                    .parse::<u64>()
                    .unwrap_or(0);
            }
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                if flags.split_whitespace().any(|f| f == "hg") {
                    advised += 1;
                } else {
                    unadvised += 1;
                }
            }
        }
        assert!(
            advised >= 1 && unadvised == 0,
            "{advised} mappings of the buffer's rest advised for huge pages, {unadvised} not"
        );
        eprintln!("AnonHugePages {huge_kb} kB in the buffer's advised mappings");
    }

    /// A sealed pack of blobs of each kind and storage form, its id, its
    /// bytes and its entries.
    fn sample(dir: &Path) -> (BlobId, Vec<u8>, Vec<PackEntry>) {
        let mut w = PackWriter::new();
        let blobs: [(u8, BlobKind, Compression, Vec<u8>); 4] = [
            (1, BlobKind::Data, Compression::None, b"hello".to_vec()),
            (2, BlobKind::Tree, Compression::Zstd, vec![7; 300]),
            (3, BlobKind::ChunkList, Compression::None, vec![]),
            (4, BlobKind::Data, Compression::None, (0..=255).collect()),
        ];
        for (i, kind, c, data) in blobs {
            w.add(BlobId([i; 16]), kind, c, &data, data.len() as u32 + 3)
                .unwrap();
        }
        let (id, _, entries) = w.seal(&LocalDir::new(dir)).unwrap();
        let bytes = std::fs::read(pack_path(dir, &id)).unwrap();
        (id, bytes, entries)
    }

    /// Open `bytes` as pack `id` through the real path (file, mmap) and use
    /// every reader method: nothing may panic or allocate much more than
    /// the file's size, and a table that passes its checksum must be
    /// `good`'s (or `good` is None: arbitrary bytes).
    fn try_pack(
        dir: &Path,
        id: BlobId,
        bytes: &[u8],
        good: Option<&[PackEntry]>,
        probes: &[(u64, u32)],
    ) -> std::result::Result<(), proptest::test_runner::TestCaseError> {
        std::fs::write(pack_path(dir, &id), bytes).unwrap();
        crate::testkit::decodes_within_bounds("pack table", bytes, good, || {
            let p = PackReader::open(&LocalDir::new(dir), id, None)?;
            let _ = p.verify_id();
            for (offset, stored_len) in probes {
                let loc = Location {
                    pack: id,
                    kind: BlobKind::Data,
                    compression: Compression::None,
                    offset: *offset,
                    stored_len: *stored_len,
                    raw_len: 0,
                };
                if let Ok(s) = p.stored(&loc) {
                    assert_eq!(s.len(), *stored_len as usize);
                }
            }
            let entries = p.entries()?;
            for e in &entries {
                if let Ok(s) = p.stored(&e.location(id)) {
                    assert_eq!(s.len(), e.stored_len as usize);
                }
            }
            Ok(entries)
        })
    }

    #[test]
    fn fuzz_pack_files() {
        use crate::testkit;
        use proptest::prelude::*;
        let config = testkit::config(384);
        let secs = testkit::deadline(config.cases, 20);
        testkit::within(secs, move || {
            let dir = tempfile::tempdir().unwrap();
            let (id, good, entries) = sample(dir.path());
            let mut runner = proptest::test_runner::TestRunner::new(config);
            let probes = proptest::collection::vec((any::<u64>(), any::<u32>()), 0..4);
            let damaged = (testkit::damages(), probes.clone());
            runner
                .run(&damaged, |(damages, probes)| {
                    let bad = testkit::apply(&good, &damages);
                    try_pack(dir.path(), id, &bad, Some(&entries), &probes)
                })
                .unwrap();
            // Arbitrary bytes, and arbitrary bytes inside a valid frame
            // (magics, version, a table offset and count that fit).
            let raw = (
                proptest::collection::vec(any::<u8>(), 0..600),
                any::<u8>(),
                probes,
            );
            runner
                .run(&raw, |(mut data, count, probes)| {
                    try_pack(dir.path(), id, &data, None, &probes)?;
                    let n = count as usize % 8;
                    let table_len = n * ENTRY_LEN;
                    data.resize(data.len().max(HEADER_LEN + table_len), 0);
                    let t = data.len() - table_len;
                    data[..8].copy_from_slice(MAGIC);
                    data[8..12].copy_from_slice(&VERSION.to_le_bytes());
                    let sum = xxhash_rust::xxh3::xxh3_64(&data[t..]);
                    data.extend_from_slice(&(n as u32).to_le_bytes());
                    data.extend_from_slice(&[0; 4]);
                    data.extend_from_slice(&(t as u64).to_le_bytes());
                    data.extend_from_slice(&sum.to_le_bytes());
                    data.extend_from_slice(END_MAGIC);
                    try_pack(dir.path(), id, &data, None, &probes)
                })
                .unwrap();
        });
    }

    #[test]
    fn truncated_pack_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::new();
        w.add(BlobId([1; 16]), BlobKind::Data, Compression::None, b"x", 1)
            .unwrap();
        let (id, size, _) = w.seal(&LocalDir::new(dir.path())).unwrap();
        let p = pack_path(dir.path(), &id);
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(size - 3).unwrap();
        assert!(PackReader::open(&LocalDir::new(dir.path()), id, None).is_err());
    }
}
