//! Prune's marks: on a remote vault, packs that no index needs any more
//! are not deleted at once but set aside in a *mark*, and deleted by a
//! later prune once a grace period has passed since the marking (issue 14:
//! a mount on another host may be reading them through an index it mapped
//! before the prune; rustic waits 23 h, kopia 24 h).
//!
//! A mark is the object `prune/<32 hex digits>.mark` (docs/FORMAT.md §19.6):
//! the time of marking and an index (§7 layout) whose pack table names
//! every pack marked and whose entries are the blobs of those packs that
//! the replaced indexes named. Readers use it as a last resort
//! ([`Marks::locate`]): a reader whose view of the indexes is older than
//! the prune, and who re-listed them since, still finds the blobs of a
//! backup deleted under it, in packs that are still there. Writers never
//! look at marks, so a new backup never deduplicates against a marked
//! pack: it stores such a blob again.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "CBRMARK1"
//! 8       4     version (u32 LE): 1 clear, 2 sealed (encrypted vault)
//! 12      4     reserved, 0
//! version 1:
//! 16      8     marked_ns: i64 LE, nanoseconds since the Unix epoch
//! 24      n     an index (§7.1 layout, version 1)
//! 24+n    8     XXH3-64 of bytes 0..24+n
//! version 2:
//! 16      m     one sealed object (kind 3, as an index, bound to the mark's
//!               16-byte id, its name) of: marked_ns (8) | index (§7.1
//!               layout, version 2)
//! ```
//! A mark and an index are never taken for one another even though both
//! are sealed as kind 3: an index's plaintext starts with its magic, a
//! mark's with the time, so each parser refuses the other.

use super::index::{self, IndexFile};
use super::storage::{self, ObjectBytes, Storage};
use super::{le_u32, le_u64, BlobId, Location};
use crate::crypto::{Object, SealKey};
use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// Where marks live in a vault (a prefix the index listing never sees).
pub const PREFIX: &str = "prune/";
/// Magic at the start of a mark.
pub const MAGIC: &[u8; 8] = b"CBRMARK1";
/// Version of a clear mark.
pub const VERSION: u32 = 1;
/// Version of a sealed mark (an encrypted vault).
pub const VERSION_SEALED: u32 = 2;
const HEADER_LEN: usize = 16;
const TIME_LEN: usize = 8;
const SUM_LEN: usize = 8;

/// A mark larger than this is damage, refused before it is read: anyone
/// who can write to the bucket may put gigabytes at a mark's name. A mark
/// holds 40 bytes per blob (§7.1), so this is 25 million blobs given back
/// by one prune.
pub const MAX_BYTES: u64 = 1 << 30;

/// A mark dated more than this after now is not clock skew (hosts' clocks
/// agree within seconds under NTP) but a clock gone wrong or a planted
/// mark: prune dates it anew (docs/FORMAT.md §19.6, [`Phase::FutureDated`]).
pub const FUTURE_SKEW: std::time::Duration = std::time::Duration::from_secs(600);

/// A reader that misses a blob lists the marks again at most this often
/// (a restore of a pruned backup misses every blob of it).
pub const RELIST_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// What prune does with a mark's packs (docs/FORMAT.md §19.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Within its grace period: its packs wait.
    Waiting,
    /// Its grace period has passed: its packs are deleted, then the mark.
    Expired,
    /// Dated in the future beyond [`FUTURE_SKEW`]: its grace would count
    /// from a time that has not come (for ever, for a date far ahead).
    /// Prune dates it anew, now ([`Mark::redate`]), and its packs wait one
    /// grace period from there: neither kept for ever nor deleted at once.
    FutureDated,
}

/// The phase at `now_ns` of a mark made at `marked_ns`, with grace period
/// `grace`. `two_phase` is false for a local vault, which deletes at once
/// whatever a mark names.
pub fn phase(marked_ns: i64, now_ns: i64, grace: std::time::Duration, two_phase: bool) -> Phase {
    if !two_phase {
        return Phase::Expired;
    }
    let skew = FUTURE_SKEW.as_nanos() as i64;
    if marked_ns > now_ns.saturating_add(skew) {
        return Phase::FutureDated;
    }
    let grace_ns = i64::try_from(grace.as_nanos()).unwrap_or(i64::MAX);
    if now_ns.saturating_sub(marked_ns) < grace_ns {
        Phase::Waiting
    } else {
        Phase::Expired
    }
}

/// One mark: when, which packs, and where their blobs were.
pub struct Mark {
    name: String,
    marked_ns: i64,
    index: IndexFile,
}

impl Mark {
    /// Its object name, `prune/<hex>.mark`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// When the packs were marked, ns since the Unix epoch (the marking
    /// host's clock).
    pub fn marked_ns(&self) -> i64 {
        self.marked_ns
    }
    /// Every pack it marks.
    pub fn packs(&self) -> Vec<BlobId> {
        self.index.pack_ids()
    }
    /// Where blob `id` was, if a marked pack holds it.
    pub fn lookup(&self, id: &BlobId) -> Option<Location> {
        self.index.lookup(id)
    }

    /// Read and check mark `name`. A missing mark is an error for which
    /// [`storage::is_absent`] is true.
    pub fn open(storage: &dyn Storage, name: &str, seal: Option<&SealKey>) -> Result<Mark> {
        let label = storage::object_label(storage, name);
        let bad = |why: &str| Error::corrupt(format!("prune mark {label} is damaged: {why}"));
        let id = mark_id(name).ok_or_else(|| bad("its name is not prune/<32 hex digits>.mark"))?;
        let bytes = read_bounded(storage, name)?;
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC || le_u32(&bytes, 12) != 0 {
            return Err(bad("bad magic"));
        }
        let version = le_u32(&bytes, 8);
        // The body: the time, then the index bytes.
        let body: Vec<u8> = match (version, seal) {
            (VERSION, None) => {
                if bytes.len() < HEADER_LEN + TIME_LEN + SUM_LEN {
                    return Err(bad("too short"));
                }
                let end = bytes.len() - SUM_LEN;
                if xxhash_rust::xxh3::xxh3_64(&bytes[..end]) != le_u64(&bytes, end) {
                    return Err(bad("checksum mismatch"));
                }
                bytes[HEADER_LEN..end].to_vec()
            }
            (VERSION_SEALED, Some(k)) => k
                .open(Object::Index(&id), &bytes[HEADER_LEN..])
                .map_err(|e| e.context(format!("prune mark {label}")))?,
            (VERSION | VERSION_SEALED, _) => {
                return Err(bad(
                    "its version does not match the vault's (encrypted: 2, clear: 1)",
                ))
            }
            _ => return Err(bad("unknown version")),
        };
        if body.len() < TIME_LEN {
            return Err(bad("too short"));
        }
        let marked_ns = le_u64(&body, 0) as i64;
        let index = IndexFile::parse(
            name,
            label.clone(),
            ObjectBytes::Read(body[TIME_LEN..].to_vec()),
            index::version_for(seal),
        )?;
        // Read whole into memory and small: checked whole at once.
        index.verify()?;
        Ok(Mark {
            name: name.to_string(),
            marked_ns,
            index,
        })
    }

    /// Publish this mark again dated `now_ns` (same packs, same blobs),
    /// then delete it: a mark dated in the future ([`Phase::FutureDated`]).
    /// Returns the new mark's name. The new mark goes first, so a kill in
    /// between leaves both (the packs wait for the later one).
    pub fn redate(
        &self,
        storage: &dyn Storage,
        now_ns: i64,
        seal: Option<&SealKey>,
    ) -> Result<String> {
        let (name, _) = write_mark(
            storage,
            now_ns,
            &self.packs(),
            self.index.iter().collect(),
            seal,
        )?;
        storage.delete(&self.name)?;
        Ok(name)
    }
}

/// The bytes of mark `name`, its length checked before they are read:
/// mapped where the storage maps (a local vault), else read with a bound.
fn read_bounded(storage: &dyn Storage, name: &str) -> Result<ObjectBytes> {
    let at = storage.describe();
    if let Some(m) = storage.map(name)? {
        if m.len() as u64 > MAX_BYTES {
            return Err(storage::too_big(&at, name, MAX_BYTES));
        }
        return Ok(ObjectBytes::Mapped(m));
    }
    match storage.get_at_most(name, MAX_BYTES)? {
        Some(v) => Ok(ObjectBytes::Read(v)),
        None => Err(storage::absent(storage, name)),
    }
}

/// The id in a mark's name `prune/<32 hex digits>.mark`.
fn mark_id(name: &str) -> Option<[u8; 16]> {
    let hex = name.strip_prefix(PREFIX)?.strip_suffix(".mark")?;
    Some(BlobId::from_hex(hex)?.0)
}

/// The names of the marks present now.
pub fn mark_names(storage: &dyn Storage) -> Result<Vec<String>> {
    Ok(storage
        .list(PREFIX)?
        .into_iter()
        .map(|o| o.name)
        .filter(|n| mark_id(n).is_some())
        .collect())
}

/// Publish a mark of `packs` (with `entries`, the blobs of those packs the
/// replaced indexes named), made at `marked_ns`, sealed with `seal` when
/// the vault is encrypted. Returns its name and size. Its name is random:
/// two marks never share one.
pub fn write_mark(
    storage: &dyn Storage,
    marked_ns: i64,
    packs: &[BlobId],
    entries: Vec<(BlobId, Location)>,
    seal: Option<&SealKey>,
) -> Result<(String, u64)> {
    let id: [u8; 16] = crate::crypto::keys::random::<16>()?;
    let name = format!("{PREFIX}{}.mark", crate::fsutil::hex(&id));
    let mut body = Vec::new();
    body.extend_from_slice(&(marked_ns as u64).to_le_bytes());
    body.extend_from_slice(&index::index_bytes(
        entries,
        packs,
        index::version_for(seal),
    ));
    let mut file = Vec::with_capacity(body.len() + 64 + crate::crypto::seal::OVERHEAD);
    file.extend_from_slice(MAGIC);
    match seal {
        Some(k) => {
            file.extend_from_slice(&VERSION_SEALED.to_le_bytes());
            file.extend_from_slice(&0u32.to_le_bytes());
            k.seal_into(Object::Index(&id), &body, &mut file)?;
        }
        None => {
            file.extend_from_slice(&VERSION.to_le_bytes());
            file.extend_from_slice(&0u32.to_le_bytes());
            file.extend_from_slice(&body);
            let sum = xxhash_rust::xxh3::xxh3_64(&file);
            file.extend_from_slice(&sum.to_le_bytes());
        }
    }
    storage.put(&name, &file)?;
    Ok((name, file.len() as u64))
}

/// The marks a reader consults for a blob no index names: opened once
/// each; listed again on a miss, but at most every [`RELIST_EVERY`] (a
/// restore of a backup deleted and pruned under it misses every blob of
/// it: one listing for them all, not one per blob).
#[derive(Default)]
pub struct Marks {
    state: Mutex<MarksState>,
}

#[derive(Default)]
struct MarksState {
    open: HashMap<String, Arc<Mark>>,
    /// When the marks were last listed.
    listed: Option<std::time::Instant>,
}

impl Marks {
    /// Where blob `id` was when a prune marked its pack, if a mark says.
    /// Errors (a listing that fails, a damaged mark) count as "not there":
    /// the caller reports the blob missing, as without marks.
    pub fn locate(
        &self,
        storage: &dyn Storage,
        id: &BlobId,
        seal: Option<&SealKey>,
    ) -> Option<Location> {
        let mut st = self.state.lock();
        if let Some(l) = st.open.values().find_map(|m| m.lookup(id)) {
            return Some(l);
        }
        if st.listed.is_some_and(|t| t.elapsed() < RELIST_EVERY) {
            return None;
        }
        let names = mark_names(storage).ok()?;
        st.listed = Some(std::time::Instant::now());
        st.open.retain(|n, _| names.contains(n));
        for n in names {
            if st.open.contains_key(&n) {
                continue;
            }
            match Mark::open(storage, &n, seal) {
                Ok(m) => {
                    st.open.insert(n, Arc::new(m));
                }
                Err(e) => log::warn!("{e}"),
            }
        }
        st.open.values().find_map(|m| m.lookup(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BlobKind, Compression, LocalDir};

    fn loc(pack: u8, offset: u64) -> Location {
        Location {
            pack: BlobId([pack; 16]),
            kind: BlobKind::Data,
            compression: Compression::None,
            offset,
            stored_len: 10,
            raw_len: 10,
        }
    }

    /// A mark written reads back: its time, every pack (with or without
    /// an indexed blob), its entries; a flipped byte anywhere is refused.
    #[test]
    fn mark_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalDir::new(dir.path());
        let entries = vec![(BlobId([7; 16]), loc(1, 16)), (BlobId([3; 16]), loc(2, 40))];
        let orphan = BlobId([9; 16]);
        let (name, len) = write_mark(&s, 1_234_567, &[orphan], entries, None).unwrap();
        assert!(
            name.starts_with("prune/") && name.ends_with(".mark"),
            "{name}"
        );
        assert_eq!(mark_names(&s).unwrap(), vec![name.clone()]);
        let m = Mark::open(&s, &name, None).unwrap();
        assert_eq!(m.marked_ns(), 1_234_567);
        let mut packs = m.packs();
        packs.sort();
        assert_eq!(packs, vec![BlobId([1; 16]), BlobId([2; 16]), orphan]);
        assert_eq!(m.lookup(&BlobId([7; 16])), Some(loc(1, 16)));
        assert_eq!(m.lookup(&BlobId([8; 16])), None);
        let path = dir.path().join(&name);
        let good = std::fs::read(&path).unwrap();
        assert_eq!(good.len() as u64, len);
        for at in [0, 9, 13, 17, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                Mark::open(&s, &name, None).is_err(),
                "flip at {at} accepted"
            );
        }
        std::fs::write(&path, &good[..good.len() - 3]).unwrap();
        assert!(Mark::open(&s, &name, None).is_err());
    }

    /// In an encrypted vault a mark is sealed: it opens with the key, not
    /// without, and not under another mark's name.
    #[test]
    fn sealed_mark_is_bound_to_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalDir::new(dir.path());
        let master = crate::crypto::MasterKey::generate().unwrap();
        let key = master.seal_key();
        let (name, _) =
            write_mark(&s, 42, &[], vec![(BlobId([5; 16]), loc(4, 0))], Some(&key)).unwrap();
        let m = Mark::open(&s, &name, Some(&key)).unwrap();
        assert_eq!(m.marked_ns(), 42);
        assert_eq!(m.lookup(&BlobId([5; 16])), Some(loc(4, 0)));
        assert!(Mark::open(&s, &name, None).is_err());
        let other = format!("{PREFIX}{}.mark", "ab".repeat(16));
        std::fs::create_dir_all(dir.path().join("prune")).unwrap();
        std::fs::copy(dir.path().join(&name), dir.path().join(&other)).unwrap();
        assert!(Mark::open(&s, &other, Some(&key)).is_err());
        // Nor is an index taken for a mark.
        let (idx, _) =
            index::write_index(&s, vec![(BlobId([5; 16]), loc(4, 0))], Some(&key)).unwrap();
        let id = idx
            .strip_prefix("index/")
            .unwrap()
            .strip_suffix(".idx")
            .unwrap();
        let as_mark = format!("{PREFIX}{id}.mark");
        let mut bytes = std::fs::read(dir.path().join(&idx)).unwrap();
        bytes[..8].copy_from_slice(MAGIC);
        std::fs::write(dir.path().join(&as_mark), &bytes).unwrap();
        assert!(Mark::open(&s, &as_mark, Some(&key)).is_err());
    }

    /// A bucket as S3 is (nothing mapped), counting requests: whole
    /// reads, bounded reads (and their bound), and listings.
    #[derive(Debug)]
    struct Counted {
        dir: LocalDir,
        gets: std::sync::atomic::AtomicUsize,
        bounded: Mutex<Vec<u64>>,
        lists: std::sync::atomic::AtomicUsize,
    }

    impl Counted {
        fn new(path: &std::path::Path) -> Counted {
            Counted {
                dir: LocalDir::new(path),
                gets: 0.into(),
                bounded: Mutex::new(Vec::new()),
                lists: 0.into(),
            }
        }
    }

    impl crate::testkit::Wrapper for Counted {
        fn inner(&self) -> &dyn Storage {
            &self.dir
        }
        fn describe(&self) -> String {
            "s3://counted/v".into()
        }
        fn get(&self, n: &str) -> Result<Option<Vec<u8>>> {
            self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.dir.get(n)
        }
        fn get_at_most(&self, n: &str, limit: u64) -> Result<Option<Vec<u8>>> {
            self.bounded.lock().push(limit);
            self.dir.get_at_most(n, limit)
        }
        fn list(&self, p: &str) -> Result<Vec<storage::ObjectInfo>> {
            self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.dir.list(p)
        }
    }

    /// A mark in a bucket is read with its length bound (anyone who can
    /// write there may put gigabytes at a mark's name), never whole.
    #[test]
    fn marks_are_read_with_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let s = Counted::new(dir.path());
        let (name, _) = write_mark(&s, 5, &[], vec![(BlobId([7; 16]), loc(1, 16))], None).unwrap();
        let m = Mark::open(&s, &name, None).unwrap();
        assert_eq!(m.lookup(&BlobId([7; 16])), Some(loc(1, 16)));
        assert_eq!(*s.bounded.lock(), vec![MAX_BYTES]);
        assert_eq!(s.gets.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Over the bound: damaged, named.
        let e = match Mark::open(&Tiny(&s), &name, None) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("an oversized mark was read"),
        };
        assert!(e.contains("more than the 16 bytes"), "{e}");

        /// The same bucket, with a 16-byte bound on what it returns.
        #[derive(Debug)]
        struct Tiny<'a>(&'a Counted);
        impl crate::testkit::Wrapper for Tiny<'_> {
            fn inner(&self) -> &dyn Storage {
                self.0
            }
            fn get_at_most(&self, n: &str, limit: u64) -> Result<Option<Vec<u8>>> {
                assert_eq!(limit, MAX_BYTES);
                Storage::get_at_most(self.0, n, 16)
            }
        }
    }

    /// A reader missing many blobs (a restore of a backup pruned under
    /// it) lists the marks once, not once per blob; what an open mark
    /// holds is found without a listing.
    #[test]
    fn a_reader_lists_the_marks_once_for_many_misses() {
        let dir = tempfile::tempdir().unwrap();
        let s = Counted::new(dir.path());
        write_mark(&s, 5, &[], vec![(BlobId([7; 16]), loc(1, 16))], None).unwrap();
        let marks = Marks::default();
        for i in 0..200u8 {
            assert_eq!(
                marks.locate(&s, &BlobId([i.wrapping_add(8); 16]), None),
                None
            );
        }
        assert_eq!(s.lists.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(marks.locate(&s, &BlobId([7; 16]), None), Some(loc(1, 16)));
        assert_eq!(s.lists.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// docs/FORMAT.md §19.6: within the grace a mark waits, after it its
    /// packs go; a mark dated in the future by more than clock skew is
    /// neither kept for ever nor deleted at once: prune dates it anew. A
    /// local vault deletes at once.
    #[test]
    fn phases_of_a_mark() {
        let h = 3_600_000_000_000i64;
        let now = 1_800_000_000_000_000_000i64;
        let grace = std::time::Duration::from_secs(24 * 3600);
        assert_eq!(phase(now - h, now, grace, true), Phase::Waiting);
        assert_eq!(phase(now - 25 * h, now, grace, true), Phase::Expired);
        assert_eq!(phase(now - 25 * h, now, grace, false), Phase::Expired);
        // Clock skew: waits (a little longer than the grace).
        assert_eq!(phase(now + h / 12, now, grace, true), Phase::Waiting);
        for future in [now + h, now + 24 * 365 * h, i64::MAX] {
            assert_eq!(phase(future, now, grace, true), Phase::FutureDated);
            assert_eq!(phase(future, now, grace, false), Phase::Expired);
        }
        // A grace of 0 deletes now, but not what is dated ahead.
        assert_eq!(
            phase(now, now, std::time::Duration::ZERO, true),
            Phase::Expired
        );
        assert_eq!(
            phase(now + h, now, std::time::Duration::ZERO, true),
            Phase::FutureDated
        );
        assert_eq!(phase(i64::MIN, now, grace, true), Phase::Expired);
    }

    /// A mark dated anew keeps its packs and blobs, dated now; the old
    /// one is gone.
    #[test]
    fn a_mark_dated_anew_keeps_its_packs() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalDir::new(dir.path());
        let entries = vec![(BlobId([7; 16]), loc(1, 16))];
        let (old, _) = write_mark(&s, i64::MAX, &[BlobId([9; 16])], entries, None).unwrap();
        let m = Mark::open(&s, &old, None).unwrap();
        let new = m.redate(&s, 1234, None).unwrap();
        assert_ne!(new, old);
        assert_eq!(mark_names(&s).unwrap(), vec![new.clone()]);
        let n = Mark::open(&s, &new, None).unwrap();
        assert_eq!(n.marked_ns(), 1234);
        let (mut a, mut b) = (m.packs(), n.packs());
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert_eq!(n.lookup(&BlobId([7; 16])), Some(loc(1, 16)));
    }
}
