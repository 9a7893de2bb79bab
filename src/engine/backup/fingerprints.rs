//! Fingerprint tables of an encrypted vault's disks (docs/FORMAT.md §20):
//! host-local files, never in the storage, that let a re-backup of a disk
//! skip the keyed BLAKE3 of every chunk it backed up last time.
//!
//! An encrypted vault's blob ids are keyed BLAKE3 (§16.2), about fifteen
//! times the CPU of the keyed XXH3 of a version-1 vault, and a disk's
//! re-backup reads and hashes every chunk: on the binaries image that made
//! an encrypted vault's changed re-backup 1.3× a plain one's. So each backup
//! of a disk in an encrypted vault leaves, for the next one, a table of
//! its chunks: offset, length, keyed XXH3-128 fingerprint
//! ([`crate::crypto::FingerprintKey`]) and blob id. The next backup
//! fingerprints each chunk; where the fingerprint at that offset matches
//! and the vault still holds the id, the id is taken from the table.
//!
//! Why this is sound:
//! - An entry is a fact about content (these bytes have this id), true in
//!   any backup of any disk of the vault: a stale, replayed or other disk's
//!   table can cost speed, never give a wrong id. An id no longer stored
//!   (pruned) is hashed and stored afresh.
//! - The table is sealed with the vault's key (AEAD, kind 8, bound to its
//!   header and file name), so a table that was edited, truncated or made
//!   without the key is not used; it is a cache, so such a table is ignored
//!   (logged), and the backup hashes every chunk.
//! - A fingerprint is keyed with a secret derived from the master key,
//!   unknown to whoever writes the disk. XXH3 is no MAC: short inputs have
//!   published collision pairs that hold for a fraction of secrets
//!   (xxHash issue 1127), so only whole 16 KiB chunks are recognised; for
//!   those no way to collide without the secret is known (not proven: the
//!   footing of a version-1 vault's ids). Accidental collisions of 128-bit
//!   fingerprints at one offset are out of reach.
//! - The table never leaves the host: it says which 16 KiB regions of the
//!   disk hold equal data, which the sealed store does not show.
//!
//! `--full` backups ignore the tables (every chunk hashed); dry runs write
//! none.

use crate::crypto::keys::FINGERPRINT_LEN;
use crate::crypto::seal::{Kind, PREFIX_LEN};
use crate::crypto::{FingerprintKey, SealKey};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::model::ChunkRef;
use crate::store::{BlobId, Key};
use parking_lot::Mutex;
use std::path::{Path, PathBuf};

/// First bytes of a table file.
pub const MAGIC: &[u8; 8] = b"CBRDFP01";
/// The table format this code writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of the clear header: magic, version.
const HEADER_LEN: usize = 12;
/// Bytes of one entry: offset u64, length u32, fingerprint, id.
pub const ENTRY_LEN: usize = 8 + 4 + FINGERPRINT_LEN + 16;

/// One chunk of the disk as the last backup found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Offset of the chunk in the disk.
    pub offset: u64,
    /// Its length (at most a disk chunk).
    pub len: u32,
    /// Its fingerprint.
    pub fp: [u8; FINGERPRINT_LEN],
    /// Its blob id.
    pub id: BlobId,
}

/// The entries of one disk, in increasing offset order: the opened
/// plaintext of its table, kept as the bytes it is (44 per entry, looked
/// up where they lie), every length and the order checked when opened.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// The table file's bytes, opened in place.
    bytes: Vec<u8>,
    /// Where the entries start in `bytes`.
    at: usize,
    /// Number of entries.
    count: usize,
}

impl Table {
    /// The entry of the chunk at `offset`, if the last backup had one.
    pub fn get(&self, offset: u64) -> Option<Entry> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.entry(mid);
            match e.offset.cmp(&offset) {
                std::cmp::Ordering::Equal => return Some(e),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Entry `i` (< count).
    fn entry(&self, i: usize) -> Entry {
        decode_entry(&self.bytes[self.at + i * ENTRY_LEN..self.at + (i + 1) * ENTRY_LEN])
    }

    /// The table whose plaintext is `bytes[at..]`: count, then the
    /// entries, each of their lengths and their order checked.
    fn check(bytes: Vec<u8>, at: usize) -> std::result::Result<Table, String> {
        let b = bytes.get(at..).ok_or("shorter than its entry count")?;
        let (count, rest) = b
            .split_first_chunk::<8>()
            .ok_or("shorter than its entry count")?;
        let count = u64::from_le_bytes(*count);
        if rest.len() % ENTRY_LEN != 0 || (rest.len() / ENTRY_LEN) as u64 != count {
            return Err(format!(
                "{count} entries announced, {} bytes of entries",
                rest.len()
            ));
        }
        let mut end = 0u64;
        for e in rest.chunks_exact(ENTRY_LEN).map(decode_entry) {
            if e.len == 0 || e.len as usize > super::disk::DISK_CHUNK || e.offset < end {
                return Err(format!(
                    "entry at {} (length {}) is empty, longer than a disk chunk or out of order",
                    e.offset, e.len
                ));
            }
            end = e
                .offset
                .checked_add(e.len as u64)
                .ok_or_else(|| format!("entry at {} ends past 2^64", e.offset))?;
        }
        let count = rest.len() / ENTRY_LEN;
        Ok(Table {
            bytes,
            at: at + 8,
            count,
        })
    }
}

/// An entry from its 44 bytes.
fn decode_entry(e: &[u8]) -> Entry {
    let mut b = [0u8; ENTRY_LEN];
    b.copy_from_slice(e);
    let mut fp = [0u8; FINGERPRINT_LEN];
    fp.copy_from_slice(&b[12..12 + FINGERPRINT_LEN]);
    let mut id = [0u8; 16];
    id.copy_from_slice(&b[12 + FINGERPRINT_LEN..]);
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&b[..8]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&b[8..12]);
    Entry {
        offset: u64::from_le_bytes(offset),
        len: u32::from_le_bytes(len),
        fp,
        id: BlobId(id),
    }
}

/// Append the plaintext of a table of `chunks` and their fingerprints:
/// entry count (u64), then the entries, little-endian.
fn encode_into(chunks: &[ChunkRef], fps: &[[u8; FINGERPRINT_LEN]], out: &mut Vec<u8>) {
    out.reserve(8 + chunks.len() * ENTRY_LEN + crate::crypto::seal::TAG_LEN);
    out.extend_from_slice(&(chunks.len() as u64).to_le_bytes());
    for (c, fp) in chunks.iter().zip(fps) {
        out.extend_from_slice(&c.offset.to_le_bytes());
        out.extend_from_slice(&c.len.to_le_bytes());
        out.extend_from_slice(fp);
        out.extend_from_slice(&c.id.0);
    }
}

/// The tables of one backup's vault: where they live, their keys, and the
/// tables of this backup, written under temporary names as each disk is
/// done and renamed into place once the backup's record is saved.
pub struct Fingerprints<'k> {
    dir: PathBuf,
    key: &'k FingerprintKey,
    seal: &'k SealKey,
    /// False for a dry run, which writes no table.
    write: bool,
    staged: Mutex<Staged>,
}

/// This backup's tables, written and not yet in place.
#[derive(Default)]
struct Staged {
    /// The directory is made and a killed backup's temporaries removed.
    ready: bool,
    tables: Vec<(String, fsutil::TempFile)>,
}

impl<'k> Fingerprints<'k> {
    /// The tables of the vault whose directory (its local one, for a vault
    /// in a bucket) is `vault_dir`; `None` unless the vault is encrypted.
    /// A backup that holds the vault's writer lock writes them (`write`);
    /// a dry run only reads them.
    pub fn new(vault_dir: &Path, key: &'k Key, write: bool) -> Option<Self> {
        Some(Fingerprints {
            dir: vault_dir.join("fingerprints"),
            key: key.fingerprint_key()?,
            seal: key.seal_key()?,
            write,
            staged: Mutex::new(Staged::default()),
        })
    }

    /// The fingerprint of a chunk's bytes.
    #[inline]
    pub fn fingerprint(&self, data: &[u8]) -> [u8; FINGERPRINT_LEN] {
        self.key.fingerprint(data)
    }

    /// The associated data's binding: the clear header, then the name.
    fn binding(name: &str) -> Vec<u8> {
        let mut b = header().to_vec();
        b.extend_from_slice(name.as_bytes());
        b
    }

    /// Most bytes of the table of a disk of `size` bytes: two entries per
    /// whole disk chunk (an extent may start within one) and 1024 more.
    pub fn most_bytes(size: u64) -> u64 {
        (size / super::disk::DISK_CHUNK as u64)
            .saturating_mul(2)
            .saturating_add(1024)
            .saturating_mul(ENTRY_LEN as u64)
            .saturating_add((HEADER_LEN + 8 + crate::crypto::seal::OVERHEAD) as u64)
    }

    /// The table the last backup left for the disk at `source`, whose size
    /// is now `size`; `None` if there is none, or none usable (logged: a
    /// table is a cache, and the backup then hashes every chunk).
    pub fn load(&self, source: &Path, size: u64) -> Option<Table> {
        use std::io::Read;
        use std::os::unix::ffi::OsStrExt;
        let name = self.key.table_name(source.as_os_str().as_bytes());
        let path = self.dir.join(&name);
        let unusable = |why: String| {
            log::warn!(
                "fingerprint table {} of disk {}: {why}; every chunk is hashed",
                path.display(),
                source.display()
            );
            None
        };
        let mut f = match fsutil::open_store_file(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => return unusable(e.to_string()),
        };
        let most = Self::most_bytes(size);
        let len = match f.metadata() {
            Ok(m) => m.len(),
            Err(e) => return unusable(e.to_string()),
        };
        if len > most {
            return unusable(format!(
                "{len} bytes, more than a table of a {size}-byte disk takes ({most})"
            ));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        if let Err(e) = f.by_ref().take(most).read_to_end(&mut bytes) {
            return unusable(e.to_string());
        }
        if bytes.get(..HEADER_LEN) != Some(&header()[..]) {
            return unusable("not a version-1 table (magic or version)".into());
        }
        let what = format!("fingerprint table {name}");
        let plain_len = match self.seal.open_local_in_place(
            Kind::Fingerprints,
            &Self::binding(&name),
            &mut bytes[HEADER_LEN..],
            &what,
        ) {
            Ok(p) => p.len(),
            Err(e) => return unusable(e.to_string()),
        };
        // The plaintext lies after the header and the envelope's prefix;
        // the tag after it is dropped.
        bytes.truncate(HEADER_LEN + PREFIX_LEN + plain_len);
        Table::check(bytes, HEADER_LEN + PREFIX_LEN).map_or_else(unusable, Some)
    }

    /// Write the table of the disk at `source` from the chunks this backup
    /// stored and their fingerprints, under a temporary name (mode 0600 in
    /// a 0700 directory), to be put in place by [`Fingerprints::commit`]
    /// once the backup is. Nothing in a dry run.
    pub fn stage(
        &self,
        source: &Path,
        chunks: &[ChunkRef],
        fps: &[[u8; FINGERPRINT_LEN]],
    ) -> Result<()> {
        use std::io::Write;
        use std::os::unix::ffi::OsStrExt;
        if !self.write {
            return Ok(());
        }
        if chunks.len() != fps.len() {
            return Err(Error::failed(format!(
                "disk {}: {} chunks but {} fingerprints",
                source.display(),
                chunks.len(),
                fps.len()
            )));
        }
        let name = self.key.table_name(source.as_os_str().as_bytes());
        // The file is built where it is sealed: header, room for the
        // envelope's prefix, the plaintext (then sealed in place, tag
        // appended).
        let mut file = header().to_vec();
        file.resize(HEADER_LEN + PREFIX_LEN, 0);
        encode_into(chunks, fps, &mut file);
        self.seal.seal_local_in_place(
            Kind::Fingerprints,
            &Self::binding(&name),
            &mut file,
            HEADER_LEN,
        )?;
        let mut staged = self.staged.lock();
        if !staged.ready {
            // The backup holds the vault's writer lock: temporaries here
            // are a killed backup's.
            fsutil::create_dir_all(&self.dir)?;
            fsutil::ensure_real_dir(&self.dir)
                .ctx(|| format!("fingerprint tables {}", self.dir.display()))?;
            fsutil::remove_stale_temps(&self.dir)?;
            staged.ready = true;
        }
        let mut tmp = fsutil::TempFile::new_in(&self.dir)?;
        tmp.file()
            .write_all(&file)
            .ctx(|| format!("write {}", tmp.path().display()))?;
        staged.tables.push((name, tmp));
        Ok(())
    }

    /// Put the staged tables in place, each replacing the disk's last one
    /// atomically. Not fsynced: a table torn by a crash fails its tag and
    /// is not used, costing one slower backup. A table that cannot be put
    /// in place is logged, and the others still are.
    pub fn commit(&self) {
        let tables = std::mem::take(&mut self.staged.lock().tables);
        for (name, tmp) in tables {
            let dest = self.dir.join(&name);
            if let Err(e) = tmp.commit_unsynced(&dest) {
                log::warn!("fingerprint table {} not written: {e}", dest.display());
            }
        }
    }
}
/// The clear header: magic, then the version (u32 little-endian).
fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::super::disk::{disk_batch, Source, DIRECT_ALIGN, DISK_CHUNK};
    use super::super::readers::Shared;
    use super::*;
    use crate::chunker::Cdc;
    use crate::crypto::MasterKey;
    use crate::engine::progress::Progress;
    use crate::store::{DiskCodec, LocalDir, Repo, RepoWriter, Storage};
    use std::os::unix::fs::{FileExt, PermissionsExt};
    use std::sync::Arc;

    const C: u64 = DISK_CHUNK as u64;
    /// Chunks of the test disk: two batches of 64 and a short one.
    const CHUNKS: u64 = 150;

    /// An encrypted vault's repository in `dir` (its key given, as a
    /// slot would give it).
    fn new_repo(dir: &Path, key: &Key) -> Repo {
        Repo::create(dir).unwrap();
        std::fs::remove_file(dir.join("key")).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalDir::new(dir));
        Repo::open_with_key(storage, "v", key.clone()).unwrap()
    }

    /// A disk image of `CHUNKS` chunks: every fifth all zero, the others
    /// distinct, its last one short.
    fn disk(path: &Path) -> std::fs::File {
        let f = std::fs::File::create(path).unwrap();
        for i in 0..CHUNKS {
            let mut chunk = vec![0u8; DISK_CHUNK];
            if i % 5 != 0 {
                for (j, b) in chunk.iter_mut().enumerate() {
                    *b = (i as usize * 131 + j * 7 + j / 997) as u8 | 1;
                }
            }
            f.write_all_at(&chunk, i * C).unwrap();
        }
        f.set_len(CHUNKS * C - 1000).unwrap();
        f
    }

    /// One backup of the disk at `path` into `repo`, as `Walker::disk`
    /// makes it (batches of 64 chunks, in order), with `known` the table
    /// the last one left: its chunks, its fingerprints and how many ids
    /// came from the table. The writer's blobs are indexed at the end.
    fn back_up(
        repo: &Repo,
        fps: &Fingerprints<'_>,
        path: &Path,
        known: Option<&Table>,
    ) -> (Vec<ChunkRef>, Vec<[u8; FINGERPRINT_LEN]>, u64) {
        let writer = Mutex::new(RepoWriter::new(repo, true));
        let cdc = Cdc::new(repo.key().chunker_seed());
        let progress = Progress::new(0);
        let sh = Shared::for_test(&writer, &cdc, &progress, Some(fps));
        let f = std::fs::File::open(path).unwrap();
        let len = f.metadata().unwrap().len();
        let src = Source::new(&f);
        let mut buf = vec![0u8; 64 * DISK_CHUNK + 3 * DIRECT_ALIGN];
        let (mut out, mut codec) = (Vec::new(), DiskCodec::new(true));
        let (mut chunks, mut prints, mut recognised) = (Vec::new(), Vec::new(), 0);
        let mut pos = 0;
        while pos < len {
            let end = len.min(pos + 64 * C);
            let b = disk_batch(
                &src,
                "test disk",
                pos..end,
                (&mut buf, &mut out, &mut codec),
                known,
                &sh,
            )
            .unwrap();
            chunks.extend(b.chunks);
            prints.extend(b.fps);
            recognised += b.recognised;
            pos = end;
        }
        drop(sh);
        writer.into_inner().finish().unwrap();
        (chunks, prints, recognised)
    }

    /// Every chunk's id is its keyed BLAKE3 id, as if hashed.
    fn ids_are_true(key: &Key, path: &Path, chunks: &[ChunkRef]) {
        let bytes = std::fs::read(path).unwrap();
        for c in chunks {
            let data = &bytes[c.offset as usize..c.offset as usize + c.len as usize];
            assert_eq!(c.id, key.id(data), "chunk at {}", c.offset);
        }
    }

    /// A re-backup takes the ids of unchanged chunks from the table the
    /// last backup left, and hashes the changed ones: every id is the one
    /// hashing gives. A table whose ids the vault no longer holds (pruned)
    /// costs hashing, never a missing blob.
    #[test]
    fn a_rebackup_recognises_unchanged_chunks_by_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::from_master(&MasterKey::generate().unwrap());
        let repo = new_repo(&dir.path().join("v"), &key);
        let fps = Fingerprints::new(dir.path(), &key, true).unwrap();
        let img = dir.path().join("disk.img");
        let f = disk(&img);
        let data_chunks = (0..CHUNKS).filter(|i| i % 5 != 0).count() as u64;

        let (c1, p1, known) = back_up(&repo, &fps, &img, None);
        assert_eq!((c1.len() as u64, known), (data_chunks, 0));
        assert_eq!(p1.len(), c1.len());
        ids_are_true(&key, &img, &c1);
        fps.stage(&img, &c1, &p1).unwrap();
        fps.commit();
        let tdir = dir.path().join("fingerprints");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tdir), 0o700);
        let files: Vec<_> = std::fs::read_dir(&tdir).unwrap().collect();
        assert_eq!(files.len(), 1, "one table, no temporary left");
        let table_path = files[0].as_ref().unwrap().path();
        assert_eq!(mode(&table_path), 0o600);

        // Three chunks changed (10 was all zero), one zeroed.
        for i in [1u64, 10, 77] {
            f.write_all_at(&[0xee; 100], i * C + 5).unwrap();
        }
        f.write_all_at(&vec![0u8; DISK_CHUNK], 2 * C).unwrap();
        let table = fps.load(&img, CHUNKS * C).expect("the table loads");
        assert_eq!(table.len(), c1.len());
        let (c2, p2, known) = back_up(&repo, &fps, &img, Some(&table));
        ids_are_true(&key, &img, &c2);
        assert_eq!(c2.len() as u64, data_chunks);
        // Chunk 10 now holds data, chunk 2 none: the others' ids, all but
        // those of the changed 1 and 77 and of the short last chunk (whole
        // chunks only), come from the table.
        assert_eq!(
            known,
            data_chunks - 4,
            "all but the changed, the zeroed and the short"
        );

        // The same table against a vault that holds none of its ids (as
        // after a prune of every backup): each chunk hashed and stored.
        assert_eq!(p2.len(), c2.len());
        let empty = new_repo(&dir.path().join("v2"), &key);
        let (c3, _, known) = back_up(&empty, &fps, &img, Some(&table));
        assert_eq!(known, 0);
        ids_are_true(&key, &img, &c3);
        let empty = Repo::open_with_key(
            Arc::new(LocalDir::new(dir.path().join("v2"))),
            "v",
            key.clone(),
        )
        .unwrap();
        for c in &c3 {
            assert!(
                empty.lookup(&c.id).is_some(),
                "chunk at {} stored",
                c.offset
            );
        }
    }

    /// A table that was edited, truncated, swapped with another disk's or
    /// sealed by another vault is not used (the backup hashes every chunk),
    /// and so is a file too long for the disk; a missing table is none.
    #[test]
    fn a_damaged_or_foreign_table_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::from_master(&MasterKey::generate().unwrap());
        let fps = Fingerprints::new(dir.path(), &key, true).unwrap();
        let (a, b) = (Path::new("/dev/disk-a"), Path::new("/dev/disk-b"));
        let size = 1 << 30;
        assert!(fps.load(a, size).is_none(), "no table yet");
        let chunk = |i: u8| ChunkRef {
            id: BlobId([i; 16]),
            offset: i as u64 * C,
            len: DISK_CHUNK as u32,
        };
        let chunks = [chunk(1), chunk(2), chunk(9)];
        let prints = [[1u8; 16], [2; 16], [9; 16]];
        fps.stage(a, &chunks, &prints).unwrap();
        fps.stage(b, &chunks[..1], &prints[..1]).unwrap();
        fps.commit();
        let table = fps.load(a, size).unwrap();
        assert_eq!(table.len(), 3);
        assert_eq!(
            table.get(2 * C),
            Some(Entry {
                offset: 2 * C,
                len: DISK_CHUNK as u32,
                fp: [2; 16],
                id: BlobId([2; 16])
            })
        );
        assert_eq!(table.get(3 * C), None);
        assert_eq!(fps.load(b, size).unwrap().len(), 1);

        let tdir = dir.path().join("fingerprints");
        let path_of = |disk: &Path| {
            use std::os::unix::ffi::OsStrExt;
            tdir.join(
                key.fingerprint_key()
                    .unwrap()
                    .table_name(disk.as_os_str().as_bytes()),
            )
        };
        let good = std::fs::read(path_of(a)).unwrap();
        let other = std::fs::read(path_of(b)).unwrap();
        let put = |bytes: &[u8]| std::fs::write(path_of(a), bytes).unwrap();
        for at in [0, 9, 12, 40, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            put(&bad);
            assert!(fps.load(a, size).is_none(), "byte {at} flipped");
        }
        put(&good[..good.len() - 1]);
        assert!(fps.load(a, size).is_none(), "truncated");
        put(&other);
        assert!(
            fps.load(a, size).is_none(),
            "disk b's table in disk a's place"
        );
        put(&good);
        assert!(fps.load(a, size).is_some());
        // Another vault's key: its own file name, and a stranger's table
        // put under that name does not open.
        let key2 = Key::from_master(&MasterKey::generate().unwrap());
        let fps2 = Fingerprints::new(dir.path(), &key2, true).unwrap();
        assert!(fps2.load(a, size).is_none());
        {
            use std::os::unix::ffi::OsStrExt;
            let name2 = key2
                .fingerprint_key()
                .unwrap()
                .table_name(a.as_os_str().as_bytes());
            std::fs::write(tdir.join(name2), &good).unwrap();
        }
        assert!(fps2.load(a, size).is_none(), "sealed by another vault");
        // A symlink in the table's place, to a good copy of it elsewhere,
        // is not followed.
        let outside = dir.path().join("good-copy");
        std::fs::write(&outside, &good).unwrap();
        std::fs::remove_file(path_of(a)).unwrap();
        std::os::unix::fs::symlink(&outside, path_of(a)).unwrap();
        assert!(fps.load(a, size).is_none(), "a symlink");
        std::fs::remove_file(path_of(a)).unwrap();
        std::fs::rename(&outside, path_of(a)).unwrap();
        assert!(fps.load(a, size).is_some(), "the same bytes in place");
        // A table longer than a disk of that size can have is not read.
        let many: Vec<ChunkRef> = (0..2000u64)
            .map(|i| ChunkRef {
                id: BlobId([7; 16]),
                offset: i * C,
                len: DISK_CHUNK as u32,
            })
            .collect();
        fps.stage(a, &many, &vec![[7u8; 16]; 2000]).unwrap();
        fps.commit();
        assert!(Fingerprints::most_bytes(C) < 12 + 41 + 8 + 2000 * ENTRY_LEN as u64);
        assert!(
            fps.load(a, C).is_none(),
            "2000 entries for a one-chunk disk"
        );
        assert_eq!(fps.load(a, 2000 * C).map(|t| t.len()), Some(2000));
        // A dry run writes no table.
        let dry = Fingerprints::new(dir.path(), &key, false).unwrap();
        dry.stage(b, &chunks, &prints).unwrap();
        dry.commit();
        assert_eq!(
            fps.load(b, size).map(|t| t.len()),
            Some(1),
            "b's table as it was"
        );
        // No table for a plain vault.
        assert!(Fingerprints::new(dir.path(), &Key::generate(), true).is_none());
    }

    /// The plaintext's every length and order is checked.
    #[test]
    fn bad_plaintexts_are_refused() {
        let c = |offset: u64, len: u32| ChunkRef {
            id: BlobId([4; 16]),
            offset,
            len,
        };
        let table = |chunks: &[ChunkRef]| {
            let mut b = vec![9u8; 5];
            encode_into(chunks, &vec![[3u8; 16]; chunks.len()], &mut b);
            b
        };
        let ok = [c(0, 100), c(C, DISK_CHUNK as u32), c(2 * C + 5, 7)];
        let bytes = table(&ok);
        assert_eq!(bytes.len(), 5 + 8 + 3 * ENTRY_LEN);
        let t = Table::check(bytes.clone(), 5).unwrap();
        assert_eq!(t.len(), 3);
        for x in &ok {
            assert_eq!(
                t.get(x.offset),
                Some(Entry {
                    offset: x.offset,
                    len: x.len,
                    fp: [3; 16],
                    id: x.id
                })
            );
        }
        assert_eq!(t.get(1), None);
        assert!(Table::check(bytes[..bytes.len() - 1].to_vec(), 5).is_err());
        assert!(Table::check(bytes[..10].to_vec(), 5).is_err());
        assert!(Table::check(bytes.clone(), 50_000).is_err());
        let mut more = bytes.clone();
        more[5] = 4;
        assert!(Table::check(more, 5).is_err(), "count says 4");
        for bad in [
            vec![c(0, 0)],
            vec![c(0, DISK_CHUNK as u32 + 1)],
            vec![c(C, 10), c(0, 10)],
            vec![c(0, 100), c(50, 100)],
            vec![c(u64::MAX - 5, 10)],
        ] {
            assert!(Table::check(table(&bad), 5).is_err(), "{bad:?}");
        }
        assert_eq!(Table::check(table(&[]), 5).unwrap().len(), 0);
    }

    /// A disk's chunks: offset and bytes.
    type Chunks = Vec<(u64, Vec<u8>)>;

    /// The golden table's master key, disk and chunks (docs/FORMAT.md §20).
    fn golden() -> ([u8; 32], &'static Path, Chunks) {
        let mut master = [0u8; 32];
        for (i, b) in master.iter_mut().enumerate() {
            *b = i as u8;
        }
        let chunks = vec![
            (0, b"golden chunk 0".to_vec()),
            (C, vec![0xab; DISK_CHUNK]),
            (5 * C + 512, b"golden chunk 2, after a hole".to_vec()),
        ];
        (master, Path::new("/dev/golden-disk"), chunks)
    }

    /// The golden vault directory: its table is in `fingerprints/`.
    fn golden_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/fingerprints-v1")
    }

    /// Writes tests/golden/fingerprints-v1/ once; never run again (the
    /// golden table must stay what version 1 wrote).
    #[test]
    #[ignore = "writes the golden fingerprint table once"]
    fn make_golden_fingerprint_table() {
        let (master, disk, chunks) = golden();
        let key = Key::from_master(&MasterKey::from_bytes(master));
        let fps = Fingerprints::new(&golden_dir(), &key, true).unwrap();
        let refs: Vec<ChunkRef> = chunks
            .iter()
            .map(|(off, d)| ChunkRef {
                id: key.id(d),
                offset: *off,
                len: d.len() as u32,
            })
            .collect();
        let prints: Vec<_> = chunks.iter().map(|(_, d)| fps.fingerprint(d)).collect();
        fps.stage(disk, &refs, &prints).unwrap();
        fps.commit();
    }

    /// The golden table of version 1 (master key 0x00..0x1f, disk
    /// `/dev/golden-disk`) opens, under the name §20 derives, with the
    /// fingerprints and ids of its three chunks; its fingerprints are
    /// XXH3-128 with bytes 32-223 of the key stream, big-endian.
    #[test]
    fn the_golden_table_reads_back() {
        let (master, disk, chunks) = golden();
        let key = Key::from_master(&MasterKey::from_bytes(master));
        let fps = Fingerprints::new(&golden_dir(), &key, true).unwrap();
        let table = fps.load(disk, 1 << 20).expect("the golden table opens");
        assert_eq!(table.len(), 3);
        let mut stream = [0u8; 224];
        blake3::Hasher::new_derive_key("cbrfs 2026-11-27 v2 disk fingerprint key")
            .update(&master)
            .finalize_xof()
            .fill(&mut stream);
        let name_key: [u8; 32] = stream[..32].try_into().unwrap();
        let name = crate::fsutil::hex(
            &blake3::keyed_hash(&name_key, b"/dev/golden-disk").as_bytes()[..16],
        );
        let file = golden_dir().join("fingerprints").join(&name);
        assert!(file.is_file(), "named {name}");
        for (off, d) in &chunks {
            let e = table.get(*off).unwrap();
            assert_eq!(e.len as usize, d.len());
            assert_eq!(e.id, key.id(d));
            assert_eq!(
                e.fp,
                xxhash_rust::xxh3::xxh3_128_with_secret(d, &stream[32..]).to_be_bytes()
            );
        }
        let bytes = std::fs::read(file).unwrap();
        assert_eq!(&bytes[..12], b"CBRDFP01\x01\0\0\0");
        assert_eq!(bytes.len(), 12 + 41 + 8 + 3 * ENTRY_LEN);
    }
}
