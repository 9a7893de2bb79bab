//! Tests of the cached storage: a second local directory stands in for
//! the bucket (a real storage, not a mock).

use super::*;
use crate::store::listing::{Head, HEAD, HEAD_LIMIT};
use crate::store::{BlobId, BlobKind, Repo, RepoWriter};
use std::path::PathBuf;

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

/// Distinct seeds give distinct bytes (`pseudo_random` merges 2k and
/// 2k+1).
fn bytes(seed: u32, n: usize) -> Vec<u8> {
    crate::testkit::pseudo_random(n, u64::from(seed) * 2 + 1)
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

impl crate::testkit::Wrapper for Logged {
    fn inner(&self) -> &dyn Storage {
        &self.inner
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

/// A vault written on host "home" of `remote`: `count` data blobs of
/// `len` bytes each (seeds `seed`, `seed + 1`, ...) and one backup record,
/// for a reader on another host to read back.
fn vault_of_blobs(
    t: &tempfile::TempDir,
    remote: &Arc<Logged>,
    count: u32,
    seed: u32,
    len: usize,
) -> Vec<(BlobId, Vec<u8>)> {
    let a = host(remote, t, "home");
    Repo::create_in(&*a).unwrap();
    let repo = Repo::open_in(a.clone(), "v").unwrap();
    let mut w = RepoWriter::new(&repo, false);
    let blobs = (0..count)
        .map(|i| {
            let b = bytes(seed + i, len);
            (w.add(BlobKind::Data, &b).unwrap().id, b)
        })
        .collect();
    w.finish().unwrap();
    a.put("backups/b.bk", b"b").unwrap();
    blobs
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

/// The vault "v" opened on host `home`, with the listing of packs/ (for
/// their sizes) kept first and the request log cleared: what follows
/// counts only the reads a test makes.
fn counted_reader(remote: &Arc<Logged>, t: &tempfile::TempDir, home: &str) -> Repo {
    let r = Repo::open_in(host(remote, t, home), "v").unwrap();
    r.used_bytes().unwrap();
    remote.ops.lock().clear();
    r
}

/// A vault on host "home" of a new logged remote, with one backup "b1"
/// of `len` bytes of seed `seed`.
fn one_backup(seed: u32, len: usize) -> (tempfile::TempDir, Arc<Logged>, Arc<CachedStorage>) {
    let t = tempfile::tempdir().unwrap();
    let remote = logged(&t);
    let a = host(&remote, &t, "home");
    Repo::create_in(&*a).unwrap();
    backup(&a, "b1", &bytes(seed, len));
    (t, remote, a)
}

/// The names `s` lists under `prefix`.
fn listed(s: &CachedStorage, prefix: &str) -> Vec<String> {
    s.list(prefix)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect()
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
    let (t, remote, a) = one_backup(20, 50_000);
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
    let names = listed(&a, "backups/");
    assert_eq!(names, ["backups/b1.bk", "backups/b2.bk"]);
    // Host two writes: host one's next listing is asked again.
    let b = host(&remote, &t, "home2");
    backup(&b, "b3", &bytes(21, 50_000));
    remote.ops.lock().clear();
    let names = listed(&a, "backups/");
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
    let names = listed(&b, "backups/");
    assert_eq!(names, ["backups/b2.bk", "backups/b3.bk"]);
}

/// A head announcing a record that no listing shows (its writer was
/// killed between the two, or the listing lags): the listing is used
/// but not kept. A dirty listings file (a writer killed on this host
/// before its head) is not trusted.
#[test]
fn a_listing_that_misses_what_the_head_announced_is_not_kept() {
    let (t, remote, a) = one_backup(22, 10_000);
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
    let (t, remote, a) = one_backup(24, 10_000);
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
    let (_t, remote, a) = one_backup(23, 10_000);
    remote.ops.lock().clear();
    a.list("backups/").unwrap();
    assert_eq!(count(&remote.ops.lock(), "list "), 0);
    let mut big = Head::next(None, &[], &[]).encode();
    big.resize(HEAD_LIMIT + 1, b' ');
    remote.inner.put(HEAD, &big).unwrap();
    let e = a.remote.get_at_most(HEAD, HEAD_LIMIT as u64).unwrap_err();
    assert!(e.to_string().contains("head is damaged"), "{e}");
    remote.ops.lock().clear();
    let names = listed(&a, "backups/");
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
    let blobs = vault_of_blobs(&t, &remote, 60, 100, 3000);
    let r = counted_reader(&remote, &t, "home2");
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
    let blobs = vault_of_blobs(&t, &remote, 8, 30, 40_000);
    let fresh = |home: &str| counted_reader(&remote, &t, home);
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
    use crate::crypto::slot::{self, Secret};
    use crate::store::keyring::Slots;
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
    let repo = encrypted_vault(&cached);
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

/// An encrypted vault's key slots are kept on the host: another process
/// unlocks from the cached slot without reading one from the bucket (it
/// lists them there), and asks the bucket for a clear `key` once, however
/// often it opens the vault. A cached slot that no longer opens (damaged
/// here) is dropped and the bucket's read again; a slot removed from the
/// bucket, by another host or by anyone who can delete there (no head
/// written), is no longer offered from the cache.
#[test]
fn key_slots_are_cached_and_a_bad_copy_is_read_again() {
    use crate::crypto::slot::{self, KdfParams, Secret};
    use crate::store::keyring::{self, Slots};
    let t = tempfile::tempdir().unwrap();
    let remote = logged(&t);
    let a = host(&remote, &t, "home");
    let params = KdfParams::parse("m=64,t=1,p=1").unwrap();
    keyring::create_encrypted_with(&*a, "v", Secret::Password(b"pw"), params).unwrap();
    a.publish().unwrap();
    let pw = Secret::Password(b"pw");
    // Host two, a cold cache: the slot comes from the bucket.
    let b = host(&remote, &t, "home2");
    remote.ops.lock().clear();
    let (n, master) = keyring::unlock_slots(&*b, "v", pw).unwrap();
    assert_eq!(n, 0);
    assert_eq!(count(&remote.ops.lock(), "get keys/"), 1);
    // Its next process: from the cache; the clear `key` asked once.
    drop(b);
    let b = host(&remote, &t, "home2");
    remote.ops.lock().clear();
    keyring::unlock_slots(&*b, "v", pw).unwrap();
    for _ in 0..3 {
        assert!(b.get("key").unwrap().is_none());
    }
    let ops = remote.ops.lock().clone();
    assert_eq!(count(&ops, "get keys/"), 0, "{ops:?}");
    // Nor listed there: `keys/` is kept under the head like `index/`, so
    // an unchanged re-backup makes no LIST (issue 14's costs).
    assert_eq!(count(&ops, "list keys/"), 0, "{ops:?}");
    assert_eq!(count(&ops, "get key"), 1, "{ops:?}");
    // A damaged copy: dropped, and the bucket's slot opens.
    let copy = t.path().join("home2").join(slot::slot_name(0));
    let mut bytes = std::fs::read(&copy).unwrap();
    let at = bytes.len() - 5;
    bytes[at] ^= 0x20;
    std::fs::write(&copy, &bytes).unwrap();
    remote.ops.lock().clear();
    keyring::unlock_slots(&*b, "v", pw).unwrap();
    assert_eq!(count(&remote.ops.lock(), "get keys/"), 1);
    assert_ne!(
        std::fs::read(&copy).unwrap(),
        bytes,
        "the copy was replaced"
    );
    // Host one adds a slot and removes slot 0: host two's next listing
    // drops its copy of slot 0, and the old password no longer opens.
    slot::add_slot(&Slots(&*a), "v", &master, Secret::Password(b"pw2"), params).unwrap();
    slot::remove_slot(&Slots(&*a), "v", 0, &master).unwrap();
    a.publish().unwrap();
    let e = keyring::unlock_slots(&*b, "v", pw).unwrap_err();
    assert_eq!(e.kind(), crate::error::Kind::Invalid, "{e}");
    assert!(!copy.exists());
    let (n, _) = keyring::unlock_slots(&*b, "v", Secret::Password(b"pw2")).unwrap();
    assert_eq!(n, 1);
    // Deleted from the bucket behind every cache's back (no head): this
    // host still opens from its verified copy until a head or a fresh
    // listing says otherwise; a process that distrusts kept listings
    // (prune) sees the bucket as it is, and no slot opens there.
    remote.inner.delete(&slot::slot_name(1)).unwrap();
    keyring::unlock_slots(&*b, "v", Secret::Password(b"pw2")).unwrap();
    drop(b);
    let b = host(&remote, &t, "home2");
    b.distrust_kept_listings();
    let e = keyring::unlock_slots(&*b, "v", Secret::Password(b"pw2")).unwrap_err();
    assert!(e.to_string().contains("key slot"), "{e}");
}

/// With a head TTL, listings within it trust the head this process last
/// saw: one GET of the head for many listings. A change (before its
/// first write) and a process told to distrust kept listings ask again.
#[test]
fn a_recent_head_is_not_asked_again() {
    let (t, remote, a) = one_backup(26, 10_000);
    drop(a);
    let ttl = std::time::Duration::from_secs(3600);
    let home = t.path().join("home");
    let a = CachedStorage::new(remote.clone(), &home, DEFAULT_CACHE_BYTES).with_head_ttl(ttl);
    remote.ops.lock().clear();
    for p in ["index/", "backups/", "packs/", "index/", "backups/"] {
        a.list(p).unwrap();
    }
    assert_eq!(count(&remote.ops.lock(), "get head"), 1);
    remote.ops.lock().clear();
    a.put("index/0123.idx", b"x").unwrap();
    assert_eq!(count(&remote.ops.lock(), "get head"), 1, "a change asks");
    drop(a);
    let a = CachedStorage::new(remote.clone(), &home, DEFAULT_CACHE_BYTES).with_head_ttl(ttl);
    a.list("index/").unwrap();
    a.distrust_kept_listings();
    remote.ops.lock().clear();
    a.list("index/").unwrap();
    assert_eq!(count(&remote.ops.lock(), "get head"), 1, "distrust asks");
}

/// A data pack read blob after blob from a cold cache: the blocks ahead
/// are fetched by a helper while the reader uses the current ones, in
/// fewer GETs than blocks, and every blob reads back exactly; read again
/// out of order (warm), nothing is fetched.
#[test]
fn blocks_read_in_order_are_fetched_ahead() {
    let t = tempfile::tempdir().unwrap();
    let remote = logged(&t);
    let blobs = vault_of_blobs(&t, &remote, 24, 200, 400_000);
    let c = host(&remote, &t, "home2");
    let r = Repo::open_in(c.clone(), "v").unwrap();
    r.used_bytes().unwrap();
    remote.ops.lock().clear();
    for (id, b) in &blobs {
        assert_eq!(&r.read_blob(id).unwrap(), b);
    }
    let ops = remote.ops.lock().clone();
    // 24 blobs of 400 kB: about 10 blocks of 1 MiB.
    let gets = count(&ops, "range ");
    assert!((1..=6).contains(&gets), "{gets} GETs: {ops:?}");
    remote.ops.lock().clear();
    let r = Repo::open_in(c.clone(), "v").unwrap();
    for i in [20, 3, 11, 0, 23, 7] {
        assert_eq!(r.read_blob(&blobs[i].0).unwrap(), blobs[i].1);
    }
    assert_eq!(count(&remote.ops.lock(), "range "), 0);
}

/// An encrypted backup keeps the metadata pack it just uploaded (its
/// table is sealed, so only the writer can tell it holds no data): the
/// trees are read back without a request, and a damaged kept copy is
/// dropped and read again from the bucket, never served.
#[test]
fn an_encrypted_backup_keeps_its_metadata_pack_without_downloading_it() {
    let t = tempfile::tempdir().unwrap();
    let remote = logged(&t);
    let cached = host(&remote, &t, "home");
    let repo = encrypted_vault(&cached);
    let mut w = RepoWriter::new(&repo, true);
    let data = bytes(9, 200_000);
    let d = w.add(BlobKind::Data, &data).unwrap().id;
    let trees: Vec<(BlobId, Vec<u8>)> = (0..20u32)
        .map(|i| {
            let b = format!("sealed tree blob {i}").into_bytes();
            (w.add(BlobKind::Tree, &b).unwrap().id, b)
        })
        .collect();
    w.finish().unwrap();
    let meta = repo.lookup(&trees[0].0).unwrap().pack;
    let data_pack = repo.lookup(&d).unwrap().pack;
    assert_ne!(meta, data_pack);
    let meta_name = pack::pack_name(&meta);
    assert!(t.path().join("home").join(&meta_name).exists());
    // The data pack is not kept: a backup must not fill the cache.
    assert!(!t
        .path()
        .join("home")
        .join(pack::pack_name(&data_pack))
        .exists());
    remote.ops.lock().clear();
    let again = Repo::open_in(cached.clone(), "v").unwrap();
    for (id, b) in &trees {
        assert_eq!(&again.read_blob(id).unwrap(), b);
    }
    let ops = remote.ops.lock().clone();
    assert_eq!(
        count(&ops, "get packs/") + count(&ops, "range packs/"),
        0,
        "{ops:?}"
    );
    // A byte flipped in the kept copy: read again from the bucket.
    let path = t.path().join("home").join(&meta_name);
    let mut bad = std::fs::read(&path).unwrap();
    let at = repo.lookup(&trees[3].0).unwrap().offset as usize + 2;
    bad[at] ^= 0x40;
    std::fs::write(&path, &bad).unwrap();
    let fresh = Repo::open_in(cached.clone(), "v").unwrap();
    assert_eq!(fresh.read_blob(&trees[3].0).unwrap(), trees[3].1);
    let ops = remote.ops.lock().clone();
    assert!(
        count(&ops, "get packs/") + count(&ops, "range packs/") > 0,
        "{ops:?}"
    );
}

/// A bucket standing-in that answers the first `left` ranged reads of
/// one pack with a byte flipped, each held at a barrier until all of
/// them were asked: every reader then holds the damaged bytes (and has
/// kept them in the cache) before any of them can find the damage and
/// drop the copy. Later reads get the right bytes.
#[derive(Debug)]
struct Damaging {
    inner: LocalDir,
    pack: String,
    left: Mutex<usize>,
    barrier: std::sync::Barrier,
    /// Ranged reads of the pack, after the damaged ones.
    good: std::sync::atomic::AtomicUsize,
}

impl Storage for Damaging {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.inner.put(name, data)
    }
    fn put_file(&self, name: &str, file: &File, len: u64) -> Result<()> {
        self.inner.put_file(name, file, len)
    }
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get(name)
    }
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut d = self.inner.get_range(name, offset, len)?;
        if name != self.pack {
            return Ok(d);
        }
        let damaged = {
            let mut left = self.left.lock();
            let was = *left > 0;
            *left = left.saturating_sub(1);
            was
        };
        if damaged {
            // Past the pack's header: inside the blob.
            let at = 40.min(d.len() - 1);
            d[at] ^= 0x01;
            self.barrier.wait();
        } else {
            self.good.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(d)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name)
    }
}

/// One reader's two reads, and its number.
type Reads = (Result<Vec<u8>>, Result<Vec<u8>>, usize);

/// The damaged-cache race fixed in 2373905, made deterministic: several
/// threads read blobs of one data pack whose cached copy is damaged, all
/// of them holding the damaged bytes before any drops the copy (the
/// remote's barrier), so each one's drop and re-read meets the others'
/// (a copy already dropped by another, damaged bytes kept again after a
/// drop). Each reader gets the right bytes, in every order the threads
/// then take; never wrong bytes, and no error either (the retries from
/// the source, 3, are as many as the damaged copies a thread can meet
/// after its own: 3 readers). With more readers than that a reader may
/// end with an error (seen with 4), never with wrong bytes.
#[test]
fn readers_of_one_damaged_cached_pack_get_right_bytes_never_wrong() {
    for round in 0..10u32 {
        // Mostly 3 readers (right bytes promised), every third round 5
        // (right bytes or an error).
        let readers: usize = if round % 3 == 2 { 5 } else { 3 };
        let t = tempfile::tempdir().unwrap();
        let bucket = t.path().join("bucket");
        // Written through a plain cache first, to learn the pack's name.
        let writer = Arc::new(CachedStorage::new(
            Arc::new(LocalDir::new(&bucket)),
            &t.path().join("home0"),
            DEFAULT_CACHE_BYTES,
        ));
        Repo::create_in(&*writer).unwrap();
        let repo = Repo::open_in(writer.clone(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, false);
        // Small blobs in one block of the pack: every reader wants it.
        let blobs: Vec<(BlobId, Vec<u8>)> = (0..readers as u32)
            .map(|i| {
                let b = bytes(round * 10 + i + 1, 3000);
                (w.add(BlobKind::Data, &b).unwrap().id, b)
            })
            .collect();
        w.finish().unwrap();
        let pack_id = repo.lookup(&blobs[0].0).unwrap().pack;
        assert!(blobs
            .iter()
            .all(|(id, _)| repo.lookup(id).unwrap().pack == pack_id));
        let remote = Arc::new(Damaging {
            inner: LocalDir::new(&bucket),
            pack: pack::pack_name(&pack_id),
            left: Mutex::new(readers),
            barrier: std::sync::Barrier::new(readers),
            good: std::sync::atomic::AtomicUsize::new(0),
        });
        let cached = Arc::new(CachedStorage::new(
            remote.clone(),
            &t.path().join("home"),
            DEFAULT_CACHE_BYTES,
        ));
        let repo = Repo::open_in(cached.clone(), "v").unwrap();
        repo.used_bytes().unwrap();
        // Every reader reads the same blob (the one whose bytes the
        // remote damages: the first in the pack), then its own.
        let first = blobs
            .iter()
            .min_by_key(|(id, _)| repo.lookup(id).unwrap().offset)
            .unwrap()
            .clone();
        let results: Vec<Reads> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..readers)
                .map(|i| {
                    let (repo, first, blobs) = (&repo, &first, &blobs);
                    s.spawn(move || (repo.read_blob(&first.0), repo.read_blob(&blobs[i].0), i))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (a, b, i) in results {
            // Never wrong bytes: right ones, or an error.
            if let Ok(a) = &a {
                assert_eq!(a, &first.1, "round {round}: wrong bytes served");
            }
            if let Ok(b) = &b {
                assert_eq!(b, &blobs[i].1, "round {round}: wrong bytes served");
            }
            for e in [&a, &b].into_iter().filter_map(|r| r.as_ref().err()) {
                assert_eq!(e.kind(), crate::error::Kind::Corrupt, "round {round}: {e}");
            }
            // Right ones whenever the retries cover the damaged copies.
            if readers <= 3 {
                assert!(
                    a.is_ok() && b.is_ok(),
                    "round {round}: {:?} {:?}",
                    a.err(),
                    b.err()
                );
            }
        }
        assert_eq!(*remote.left.lock(), 0, "every reader met the damage");
        assert!(
            remote.good.load(std::sync::atomic::Ordering::Relaxed) >= 1,
            "read again from the source"
        );
    }
}

/// Vault `v` created encrypted (password "pw", cheap KDF) on `cached`,
/// with its settings saying so, opened.
fn encrypted_vault(cached: &Arc<CachedStorage>) -> Repo {
    use crate::crypto::slot::{KdfParams, Secret};
    use crate::store::keyring;
    let params = KdfParams::parse("m=64,t=1,p=1").unwrap();
    keyring::create_encrypted_with(&**cached, "v", Secret::Password(b"pw"), params).unwrap();
    cached
        .put(
            "vault.json",
            br#"{"format": 2, "name": "v", "encrypted": true}"#,
        )
        .unwrap();
    Repo::open_in(cached.clone(), "v").unwrap()
}

/// Files below `dir` (none when it does not exist).
fn cache_files(t: &tempfile::TempDir, home: &str) -> Vec<PathBuf> {
    files_under(&t.path().join(home).join("cache"))
}

/// A one-pass reader (a restore) reads data by the block as before, one
/// ranged GET for many small blobs and right bytes, but writes nothing
/// into the cache on disk: the blocks are held in memory, and dropped
/// when it ends. Without it, the same reads keep their blocks on disk.
#[test]
fn a_restore_holds_its_blocks_in_memory_not_in_the_disk_cache() {
    let t = tempfile::tempdir().unwrap();
    let remote = logged(&t);
    let blobs = vault_of_blobs(&t, &remote, 60, 200, 3000);
    let c = host(&remote, &t, "home2");
    let r = Repo::open_in(c.clone(), "v").unwrap();
    r.used_bytes().unwrap();
    remote.ops.lock().clear();
    {
        let _once = r.reading_once();
        for (id, b) in &blobs {
            assert_eq!(&r.read_blob(id).unwrap(), b);
        }
        assert!(c.blocks.held_in_memory().0 > 0);
    }
    let ops = remote.ops.lock().clone();
    assert_eq!(count(&ops, "range "), 1, "{ops:?}");
    assert_eq!(cache_files(&t, "home2"), Vec::<PathBuf>::new());
    assert_eq!(c.blocks.held_in_memory().0, 0, "dropped at the end");
    // Not reading once: the block is fetched again and kept on disk.
    let r = Repo::open_in(c.clone(), "v").unwrap();
    remote.ops.lock().clear();
    for (id, b) in &blobs {
        assert_eq!(&r.read_blob(id).unwrap(), b);
    }
    assert_eq!(count(&remote.ops.lock(), "range "), 1);
    assert_eq!(cache_files(&t, "home2").len(), 1);
    // What is on disk is read from there by a restore: no request.
    let r = Repo::open_in(c.clone(), "v").unwrap();
    remote.ops.lock().clear();
    let _once = r.reading_once();
    for (id, b) in &blobs {
        assert_eq!(&r.read_blob(id).unwrap(), b);
    }
    assert_eq!(count(&remote.ops.lock(), "range "), 0);
}

/// Reading once, most of a pack is fetched whole with one GET and held
/// in memory (no `.all` copy on disk); every blob reads from it.
#[test]
fn a_restore_holds_a_whole_pack_in_memory() {
    let t = tempfile::tempdir().unwrap();
    let remote = logged(&t);
    let blobs = vault_of_blobs(&t, &remote, 8, 300, 400_000);
    let r = counted_reader(&remote, &t, "home2");
    let _once = r.reading_once();
    r.will_read(blobs.iter().map(|b| b.0));
    r.will_read(blobs.iter().map(|b| b.0));
    for (id, b) in &blobs {
        assert_eq!(&r.read_blob(id).unwrap(), b);
    }
    let ops = remote.ops.lock().clone();
    assert_eq!(count(&ops, "get packs/"), 1, "{ops:?}");
    assert_eq!(count(&ops, "range "), 0, "{ops:?}");
    assert_eq!(cache_files(&t, "home2"), Vec::<PathBuf>::new());
}

/// A bucket that answers a pack's range with a byte flipped, once (a
/// fault in transit, or a damaged replica the next read avoids).
#[derive(Debug)]
struct FlipOnce {
    inner: LocalDir,
    /// Pack offset of the byte to flip; cleared once flipped.
    at: Mutex<Option<u64>>,
}

impl crate::testkit::Wrapper for FlipOnce {
    fn inner(&self) -> &dyn Storage {
        &self.inner
    }
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut d = self.inner.get_range(name, offset, len)?;
        let mut at = self.at.lock();
        if let Some(a) = *at {
            if name.starts_with("packs/") && (offset..offset + len).contains(&a) {
                d[(a - offset) as usize] ^= 0x08;
                *at = None;
            }
        }
        Ok(d)
    }
}

/// Reading once, a block held in memory whose blob fails verification
/// is dropped like a damaged cache entry, and read again from the
/// bucket: the right bytes, never the damaged ones; with the damage in
/// the bucket itself, an error naming the blob. Plain and encrypted.
#[test]
fn a_damaged_block_held_in_memory_is_read_again_never_served() {
    for encrypted in [false, true] {
        let t = tempfile::tempdir().unwrap();
        let remote = Arc::new(FlipOnce {
            inner: LocalDir::new(t.path().join("bucket")),
            at: Mutex::new(None),
        });
        let a = Arc::new(CachedStorage::new(
            remote.clone(),
            &t.path().join("home"),
            DEFAULT_CACHE_BYTES,
        ));
        let repo = if encrypted {
            encrypted_vault(&a)
        } else {
            Repo::create_in(&*a).unwrap();
            Repo::open_in(a.clone(), "v").unwrap()
        };
        let mut w = RepoWriter::new(&repo, false);
        let blobs: Vec<(BlobId, Vec<u8>)> = (0..20u32)
            .map(|i| {
                let b = bytes(400 + i, 5000);
                (w.add(BlobKind::Data, &b).unwrap().id, b)
            })
            .collect();
        w.finish().unwrap();
        let key = repo.key().clone();
        let open = |c: &Arc<CachedStorage>| match encrypted {
            true => Repo::open_with_key(c.clone(), "v", key.clone()).unwrap(),
            false => Repo::open_in(c.clone(), "v").unwrap(),
        };
        let c = Arc::new(CachedStorage::new(
            remote.clone(),
            &t.path().join("home2"),
            DEFAULT_CACHE_BYTES,
        ));
        let r = open(&c);
        let loc = r.lookup(&blobs[7].0).unwrap();
        *remote.at.lock() = Some(loc.offset + 100);
        let once = r.reading_once();
        for (id, b) in &blobs {
            assert_eq!(&r.read_blob(id).unwrap(), b, "encrypted {encrypted}");
        }
        assert!(remote.at.lock().is_none(), "the flip happened");
        drop(once);
        assert_eq!(cache_files(&t, "home2"), Vec::<PathBuf>::new());
        // Damaged in the bucket: an error, every time.
        let name = pack::pack_name(&loc.pack);
        let path = t.path().join("bucket").join(&name);
        let mut bad = std::fs::read(&path).unwrap();
        bad[loc.offset as usize + 100] ^= 0x08;
        std::fs::write(&path, &bad).unwrap();
        let c = Arc::new(CachedStorage::new(
            remote.clone(),
            &t.path().join("home3"),
            DEFAULT_CACHE_BYTES,
        ));
        let r = open(&c);
        let _once = r.reading_once();
        let e = r.read_blob(&blobs[7].0).unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::Corrupt, "{e}");
        assert_eq!(&r.read_blob(&blobs[6].0).unwrap(), &blobs[6].1);
    }
}

/// Reading once, the blocks held in memory stay within their bound
/// however much is read, and every blob still reads right.
#[test]
fn blocks_held_in_memory_are_bounded() {
    let t = tempfile::tempdir().unwrap();
    let remote = logged(&t);
    let blobs = vault_of_blobs(&t, &remote, 120, 500, 50_000);
    // 1 MiB of cache: blocks of 64 KiB, at most 512 KiB in memory,
    // against 6 MB read.
    let c = Arc::new(CachedStorage::new(
        remote.clone(),
        &t.path().join("home2"),
        1 << 20,
    ));
    let r = Repo::open_in(c.clone(), "v").unwrap();
    let _once = r.reading_once();
    let mut most = 0;
    for (id, b) in &blobs {
        assert_eq!(&r.read_blob(id).unwrap(), b);
        let (held, limit) = c.blocks.held_in_memory();
        assert!(held <= limit, "{held} > {limit}");
        most = most.max(held);
    }
    assert!(most > 0);
    assert_eq!(cache_files(&t, "home2"), Vec::<PathBuf>::new());
}
