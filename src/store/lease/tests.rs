use super::record::{decode, stale_reason, LEASE_MAX_BYTES};
use super::*;
use crate::store::LocalDir;
use crate::store::ObjectInfo;
use std::fs::File;

/// Short timings for tests; the settle time leaves room for a loaded
/// machine (an attempt slower than it is tried again, after a wait).
fn fast() -> Timing {
    Timing::from_values(Some("6"), Some("0.2"), Some("300")).unwrap()
}

/// A bucket in memory: one lock, so every read sees every write that
/// returned (read-after-write for a key, as S3 gives).
#[derive(Debug, Default)]
struct Mem {
    objects: Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
    /// Writes of the lease fail while set (a network outage).
    lease_down: std::sync::atomic::AtomicBool,
    /// Reads with a bound ([`Storage::get_at_most`]).
    bounded: std::sync::atomic::AtomicUsize,
}

impl Storage for Mem {
    fn describe(&self) -> String {
        "s3://mem/vault".into()
    }
    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        if name == LEASE_OBJECT && self.lease_down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::failed(
                "s3://mem/vault/lease: 503 Slow Down (8 attempts)",
            ));
        }
        self.objects.lock().insert(name.into(), data.to_vec());
        Ok(())
    }
    fn put_file(&self, name: &str, file: &File, len: u64) -> Result<()> {
        let mut v = vec![0u8; len as usize];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut v, 0).unwrap();
        self.put(name, &v)
    }
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.objects.lock().get(name).cloned())
    }
    fn get_at_most(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        self.bounded
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let got = self.objects.lock().get(name).cloned();
        crate::store::storage::at_most(got, name, limit, || "s3://mem/vault".into())
    }
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let o = self.objects.lock();
        let v = o.get(name).ok_or_else(|| Error::failed("absent"))?;
        Ok(v[offset as usize..(offset + len) as usize].to_vec())
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .objects
            .lock()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectInfo {
                name: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }
    fn delete(&self, name: &str) -> Result<()> {
        self.objects.lock().remove(name);
        Ok(())
    }
}

/// A bucket, seen through a fence as one host's store sees it.
fn bucket() -> (Arc<Mem>, Arc<dyn Storage>, Arc<Fence>) {
    let mem = Arc::new(Mem::default());
    let (s, f) = other_host(&mem);
    (mem, s, f)
}

/// The same bucket as another host (process) sees it: its own fence.
fn other_host(mem: &Arc<Mem>) -> (Arc<dyn Storage>, Arc<Fence>) {
    let fence = Arc::new(Fence::default());
    let s: Arc<dyn Storage> = Arc::new(Fenced::new(mem.clone(), fence.clone()));
    (s, fence)
}

fn stored(s: &dyn Storage) -> Option<LeaseRecord> {
    s.get(LEASE_OBJECT).unwrap().map(|b| decode(&b).unwrap())
}

#[test]
fn timings_come_from_the_environment_and_are_checked() {
    assert_eq!(
        Timing::from_values(None, None, None).unwrap(),
        Timing::default()
    );
    let t = Timing::from_values(Some("6"), Some("1.5"), Some("100")).unwrap();
    assert_eq!(t.ttl, Duration::from_secs(6));
    assert_eq!(t.renew, Duration::from_millis(1500));
    assert_eq!(t.settle, Duration::from_millis(100));
    assert_eq!(t.margin(), Duration::from_secs(3));
    for (ttl, renew, settle, what) in [
        (Some("x"), None, None, "CBRFS_LEASE_TTL_S"),
        (Some("-3"), None, None, "CBRFS_LEASE_TTL_S"),
        (None, Some("0"), None, "CBRFS_LEASE_RENEW_S"),
        (None, None, Some("inf"), "CBRFS_LEASE_SETTLE_MS"),
        (Some("60"), Some("30"), None, "at most a third"),
        (Some("10"), Some("1"), Some("2000"), "at most a tenth"),
    ] {
        let e = Timing::from_values(ttl, renew, settle).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().contains(what), "{e}");
    }
}

/// The first writer takes the lease; a second (another host) gets the
/// vault-busy error naming the vault and the holder; once the first
/// lets go the lease object is gone and the second takes it.
#[test]
fn one_writer_at_a_time_and_the_second_is_told_who_holds_it() {
    let (t, s, fence) = bucket();
    let a = Lease::acquire(s.clone(), "home", fast(), fence).unwrap();
    let rec = stored(&*s).unwrap();
    assert_eq!(rec.token, a.record().token);
    assert_eq!(rec.pid, std::process::id());
    assert_eq!(rec.host, host_name());
    let (s2, f2) = other_host(&t);
    let e = Lease::acquire(s2.clone(), "home", fast(), f2.clone()).unwrap_err();
    assert_eq!(e.cbr_code(), Some("BackupService.6125"));
    assert_eq!(e.kind(), Kind::Busy);
    let msg = e.to_string();
    assert!(
        msg.contains("vault home: a backup task is in progress on host"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert!(msg.contains("since "), "{msg}");
    // The lease is this process's and it lives: no same-host takeover.
    drop(a);
    assert!(stored(&*s).is_none(), "the lease is removed on release");
    let b = Lease::acquire(s2, "home", fast(), f2).unwrap();
    b.check().unwrap();
}

/// A lease past its expiry (its holder died) is taken over, and so is
/// one whose process on this host has ended (kill -9) before expiry,
/// and a damaged one; a live one of another process is not.
#[test]
fn stale_leases_are_taken_over() {
    let (mem, s, fence) = bucket();
    let me = ProcessId::current();
    assert!(me.is_some(), "/proc tells this process");
    let now = crate::clock::now_ns();
    let old = LeaseRecord {
        format: LEASE_FORMAT,
        host: "gone-host".into(),
        pid: 1,
        token: "0".repeat(32),
        acquired_ns: now - 3_600_000_000_000,
        renewed_ns: now - 600_000_000_000,
        expires_ns: now - 300_000_000_000,
        process: None,
    };
    write(&*s, &old, None).unwrap();
    let a = Lease::acquire(s.clone(), "home", fast(), fence.clone()).unwrap();
    assert_ne!(stored(&*s).unwrap().token, old.token);
    drop(a);

    // Same host, a process that ended: a pid that is not running (or
    // is, but started at another time).
    let mut dead = old.clone();
    dead.expires_ns = now + 3_600_000_000_000;
    dead.pid = std::process::id();
    dead.process = me.clone().map(|mut p| {
        p.start_ticks += 1;
        p
    });
    write(&*s, &dead, None).unwrap();
    assert!(stale_reason(&dead, now, me.as_ref())
        .unwrap()
        .contains("has ended"));
    let a = Lease::acquire(s.clone(), "home", fast(), fence.clone()).unwrap();
    drop(a);

    // The same, but alive (this very process) on another host's
    // boot: live, refused.
    let mut live = dead.clone();
    live.process = me.clone().map(|mut p| {
        p.boot_id = "another-boot".into();
        p
    });
    write(&*s, &live, None).unwrap();
    let e = Lease::acquire(s.clone(), "home", fast(), fence.clone()).unwrap_err();
    assert!(e.to_string().contains("on host gone-host (pid"), "{e}");
    // And this process itself, here: alive, so live.
    live.process = me.clone();
    assert_eq!(stale_reason(&live, now, me.as_ref()), None);

    // Damaged: taken over.
    s.put(LEASE_OBJECT, b"{not json").unwrap();
    Lease::acquire(s.clone(), "home", fast(), fence.clone()).unwrap();
    s.put(LEASE_OBJECT, &vec![b' '; LEASE_MAX_BYTES + 1])
        .unwrap();
    // Read with its bound (anyone may put gigabytes there), never whole.
    let before = mem.bounded.load(std::sync::atomic::Ordering::SeqCst);
    Lease::acquire(s, "home", fast(), fence).unwrap();
    assert!(mem.bounded.load(std::sync::atomic::Ordering::SeqCst) > before);
}

#[test]
fn damaged_lease_objects_are_told_apart() {
    let good = LeaseRecord {
        format: LEASE_FORMAT,
        host: "h".into(),
        pid: 7,
        token: "ab".repeat(16),
        acquired_ns: 1,
        renewed_ns: 2,
        expires_ns: 3,
        process: None,
    };
    let j = serde_json::to_vec(&good).unwrap();
    assert_eq!(decode(&j).unwrap(), good);
    let mut bad = good.clone();
    bad.format = 2;
    assert!(decode(&serde_json::to_vec(&bad).unwrap())
        .unwrap_err()
        .contains("format 2"));
    bad = good.clone();
    bad.token = "zz".repeat(16);
    assert!(decode(&serde_json::to_vec(&bad).unwrap())
        .unwrap_err()
        .contains("token"));
    bad = good.clone();
    bad.host = "h".repeat(300);
    assert!(decode(&serde_json::to_vec(&bad).unwrap())
        .unwrap_err()
        .contains("host name"));
    assert!(decode(b"[]").unwrap_err().contains("not a lease"));
}

/// The holder renews: the expiry moves on while it works.
#[test]
fn the_holder_renews_its_lease() {
    let (_t, s, fence) = bucket();
    let a = Lease::acquire(s.clone(), "home", fast(), fence).unwrap();
    let first = stored(&*s).unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = stored(&*s).unwrap();
        if now.expires_ns > first.expires_ns {
            assert_eq!(now.token, first.token);
            assert_eq!(now.acquired_ns, first.acquired_ns);
            break;
        }
        assert!(std::time::Instant::now() < end, "never renewed");
        std::thread::sleep(Duration::from_millis(50));
    }
    a.check().unwrap();
}

/// A bucket whose first `.1` puts take `.2`.
#[derive(Debug)]
struct SlowPut(Arc<Mem>, std::sync::atomic::AtomicU32, Duration);
impl crate::testkit::Wrapper for SlowPut {
    fn inner(&self) -> &dyn Storage {
        &*self.0
    }
    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        let left = self.1.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.1.store(left - 1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(self.2);
        }
        self.0.put(name, data)
    }
}

/// The race without conditional writes: contender B reads "free",
/// then its write is slow; meanwhile A takes and confirms the lease;
/// B's write lands over A's. B timed its read and write over the settle
/// time, so it does not trust that attempt: it tries again only after A
/// has surely noticed (A's renewals read the lease back; A finds it gone
/// before it publishes a record). Never two writers that both go on.
#[test]
fn a_slow_contender_waits_and_never_shares_the_lease() {
    let (mem, s, fence) = bucket();
    let bf = Arc::new(Fence::default());
    let slow = Arc::new(SlowPut(mem.clone(), 1.into(), Duration::from_millis(900)));
    let bs: Arc<dyn Storage> = Arc::new(Fenced::new(slow, bf.clone()));
    // A 3 s lease: B's wait after its slow write is the margin, 1.5 s.
    let timing = Timing::from_values(Some("3"), Some("0.2"), Some("300")).unwrap();
    let b = std::thread::spawn(move || {
        let t = boottime();
        Lease::acquire(bs, "home", timing, bf).map(|l| (l, boottime() - t))
    });
    // B has read "free" and is writing; A takes the lease meanwhile.
    std::thread::sleep(Duration::from_millis(100));
    let a = Lease::acquire(s.clone(), "home", timing, fence).unwrap();
    let (b, took) = b.join().unwrap().unwrap();
    assert!(took >= timing.margin(), "B tried again after {took:?}");
    // A's lease was overwritten by the slow write: A must not publish.
    let e = s.put("backups/a.bk", b"record").unwrap_err();
    assert!(e.to_string().contains("the writer lease was lost"), "{e}");
    assert!(mem.get("backups/a.bk").unwrap().is_none());
    assert_eq!(stored(&*s).unwrap().token, b.record().token);
    b.check().unwrap();
    drop(a);
    drop(b);
    assert!(stored(&*s).is_none());
}

/// A bucket that always answers slower than the settle time: no attempt
/// is trusted; after the last the error says so (and names the setting),
/// and no lease of ours is left.
#[test]
fn a_bucket_always_slower_than_the_settle_time_refuses_the_lease() {
    let mem = Arc::new(Mem::default());
    let fence = Arc::new(Fence::default());
    let slow = Arc::new(SlowPut(
        mem.clone(),
        u32::MAX.into(),
        Duration::from_millis(150),
    ));
    let s: Arc<dyn Storage> = Arc::new(Fenced::new(slow, fence.clone()));
    // Waits of half the 1 s lease between attempts.
    let timing = Timing::from_values(Some("1"), Some("0.3"), Some("100")).unwrap();
    let e = Lease::acquire(s.clone(), "home", timing, fence).unwrap_err();
    assert_eq!(e.cbr_code(), Some("BackupService.6125"), "{e}");
    assert!(e.to_string().contains("answered too slowly"), "{e}");
    assert!(e.to_string().contains("CBRFS_LEASE_SETTLE_MS"), "{e}");
    assert!(stored(&*s).is_none(), "a lease was left");
}

/// How a lease request fails in [`Flaky`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// An error, and nothing done (a 503).
    Refused,
    /// Done, but the answer is lost (a connection dropped after the
    /// request was served).
    AnswerLost,
}

/// A bucket whose requests for the lease object fail: the `nth` (from 1),
/// or every one if `nth` is 0.
#[derive(Debug)]
struct Flaky {
    mem: Arc<Mem>,
    nth: u32,
    fault: Fault,
    seen: std::sync::atomic::AtomicU32,
}

impl Flaky {
    fn fails(&self, name: &str) -> bool {
        if name != LEASE_OBJECT {
            return false;
        }
        let n = 1 + self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.nth == 0 || n == self.nth
    }
    fn outcome<T>(&self, name: &str, op: impl FnOnce() -> Result<T>) -> Result<T> {
        if !self.fails(name) {
            return op();
        }
        if self.fault == Fault::AnswerLost {
            op()?;
        }
        Err(Error::failed(format!(
            "S3 request of s3://mem/vault/{name}: gave up after 8 attempts; last: connection reset"
        )))
    }
}

impl crate::testkit::Wrapper for Flaky {
    fn inner(&self) -> &dyn Storage {
        &*self.mem
    }
    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.outcome(name, || self.mem.put(name, data))
    }
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.outcome(name, || self.mem.get(name))
    }
    fn get_at_most(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        self.outcome(name, || self.mem.get_at_most(name, limit))
    }
    fn delete(&self, name: &str) -> Result<()> {
        self.outcome(name, || self.mem.delete(name))
    }
}

/// One failed request while taking the lease (the read, the write, or the
/// read-back; refused, or served with the answer lost) does not refuse
/// it: a fresh attempt takes it, and our own token left by the failed
/// attempt is not "busy".
#[test]
fn one_failed_request_does_not_refuse_the_lease() {
    for fault in [Fault::Refused, Fault::AnswerLost] {
        for nth in 1..=3 {
            let mem = Arc::new(Mem::default());
            let flaky = Arc::new(Flaky {
                mem: mem.clone(),
                nth,
                fault,
                seen: 0.into(),
            });
            let fence = Arc::new(Fence::default());
            let s: Arc<dyn Storage> = Arc::new(Fenced::new(flaky.clone(), fence.clone()));
            let a = Lease::acquire(s.clone(), "home", fast(), fence)
                .unwrap_or_else(|e| panic!("request {nth} {fault:?}: {e}"));
            let seen = flaky.seen.load(std::sync::atomic::Ordering::SeqCst);
            assert!(seen > 3, "request {nth} {fault:?}: {seen} requests");
            let mem_s: Arc<dyn Storage> = mem.clone();
            assert_eq!(stored(&*mem_s).unwrap().token, a.record().token);
            a.check().unwrap();
            s.put("backups/b.bk", b"record").unwrap();
        }
    }
}

/// Every request failing: the attempts end, bounded, with the last
/// error naming the vault and the lease, and leave no lease.
#[test]
fn a_bucket_that_always_fails_ends_the_attempts() {
    let mem = Arc::new(Mem::default());
    let flaky = Arc::new(Flaky {
        mem: mem.clone(),
        nth: 0,
        fault: Fault::AnswerLost,
        seen: 0.into(),
    });
    let fence = Arc::new(Fence::default());
    let s: Arc<dyn Storage> = Arc::new(Fenced::new(flaky.clone(), fence.clone()));
    let timing = Timing::from_values(Some("6"), Some("0.2"), Some("50")).unwrap();
    let e = Lease::acquire(s, "home", timing, fence).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "vault home: could not take the writer lease s3://mem/vault/lease in {ATTEMPTS} attempts"
        )),
        "{msg}"
    );
    assert!(msg.contains("connection reset"), "{msg}");
    // Each attempt ended at its first request (the read).
    assert_eq!(
        flaky.seen.load(std::sync::atomic::Ordering::SeqCst),
        ATTEMPTS,
        "one request per attempt, and nothing to withdraw"
    );
}

/// A backup's lease ([`Lease::begin`]): packs go up while it is being
/// confirmed, the record waits for it and goes once it is.
#[test]
fn packs_go_up_while_the_lease_is_confirmed_and_the_record_waits() {
    let (_t, s, fence) = bucket();
    let timing = Timing::from_values(Some("30"), Some("1"), Some("1000")).unwrap();
    let t0 = std::time::Instant::now();
    let mut c = Lease::begin(s.clone(), "home", timing, fence).unwrap();
    // Our lease is written when begin returns: another host sees it.
    assert!(stored(&*s).is_some());
    s.put("packs/ab/x.pack", b"pack").unwrap();
    // A bucket has no temporaries: a backup's first call does not wait.
    s.remove_stale_temps().unwrap();
    assert!(
        t0.elapsed() < timing.settle,
        "a pack waited for the lease: {:?}",
        t0.elapsed()
    );
    s.put("backups/b.bk", b"record").unwrap();
    assert!(t0.elapsed() >= timing.settle, "the record did not wait");
    let token = c.wait().unwrap().record().token;
    assert_eq!(stored(&*s).unwrap().token, token);
    drop(c);
    assert!(stored(&*s).is_none(), "released");
}

/// A backup's lease refused after its packs went up (another writer won
/// the race): no index, head or record is published, every later write
/// fails with the busy error, and the winner's lease is left alone.
#[test]
fn a_refused_lease_publishes_nothing_even_after_packs_went_up() {
    let (t, s, fence) = bucket();
    let timing = Timing::from_values(Some("30"), Some("1"), Some("1000")).unwrap();
    let mut c = Lease::begin(s.clone(), "home", timing, fence).unwrap();
    // Another writer's lease lands after ours, within our settle time.
    let (s2, _f2) = other_host(&t);
    let mut thief = stored(&*s).unwrap();
    thief.host = "host-b".into();
    thief.pid = 4242;
    thief.token = "cd".repeat(16);
    thief.process = None;
    write(&*s2, &thief, None).unwrap();
    s.put("packs/ab/x.pack", b"pack").unwrap();
    for (name, delete) in [
        ("index/x.idx", false),
        ("backups/b.bk", false),
        ("packs/ab/old.pack", true),
        ("packs/ab/y.pack", false),
    ] {
        let e = if delete {
            s.delete(name)
        } else {
            s.put(name, b"x")
        }
        .unwrap_err();
        assert_eq!(e.cbr_code(), Some("BackupService.6125"), "{name}: {e}");
        assert!(
            e.to_string()
                .contains("in progress on host host-b (pid 4242"),
            "{name}: {e}"
        );
    }
    assert!(s.publish().is_err(), "the head was written");
    assert!(t.get("packs/ab/x.pack").unwrap().is_some());
    for name in ["index/x.idx", "backups/b.bk", "packs/ab/y.pack"] {
        assert!(t.get(name).unwrap().is_none(), "{name} was written");
    }
    let e = c.wait().unwrap_err();
    assert_eq!(e.cbr_code(), Some("BackupService.6125"), "{e}");
    drop(c);
    assert_eq!(stored(&*s).unwrap().token, thief.token);
    // The fence is clear again for the next operation.
    s.put("vault.json", b"{}").unwrap();
}

/// Every method reaches the vault's storage through the fence,
/// including those the trait gives a default.
#[test]
fn fenced_forwards_every_method() {
    #[derive(Debug, Default)]
    struct Calls(Mutex<Vec<&'static str>>, Mem);
    impl Storage for Calls {
        fn describe(&self) -> String {
            "s3://calls".into()
        }
        fn put(&self, n: &str, d: &[u8]) -> Result<()> {
            self.1.put(n, d)
        }
        fn put_file(&self, n: &str, f: &File, l: u64) -> Result<()> {
            self.1.put_file(n, f, l)
        }
        fn get(&self, n: &str) -> Result<Option<Vec<u8>>> {
            self.1.get(n)
        }
        fn get_range(&self, n: &str, o: u64, l: u64) -> Result<Vec<u8>> {
            self.1.get_range(n, o, l)
        }
        fn list(&self, p: &str) -> Result<Vec<ObjectInfo>> {
            self.1.list(p)
        }
        fn delete(&self, n: &str) -> Result<()> {
            self.1.delete(n)
        }
        fn map(&self, _: &str) -> Result<Option<memmap2::Mmap>> {
            self.0.lock().push("map");
            Ok(None)
        }
        fn remove_stale_temps(&self) -> Result<usize> {
            self.0.lock().push("remove_stale_temps");
            Ok(0)
        }
        fn put_kept(&self, n: &str, d: &[u8]) -> Result<()> {
            self.0.lock().push("put_kept");
            self.1.put(n, d)
        }
        fn keep_whole(&self, _: &str) -> Result<()> {
            self.0.lock().push("keep_whole");
            Ok(())
        }
        fn forget_cached(&self, _: &str) -> bool {
            self.0.lock().push("forget_cached");
            true
        }
        fn requests(&self) -> Option<crate::store::s3::S3Counters> {
            self.0.lock().push("requests");
            Some(Default::default())
        }
        fn publish(&self) -> Result<()> {
            self.0.lock().push("publish");
            Ok(())
        }
        fn will_read(&self, _: &str, _: u64) {
            self.0.lock().push("will_read");
        }
        fn reading_once(&self, _: bool) {
            self.0.lock().push("reading_once");
        }
        fn get_at_most(&self, _: &str, _: u64) -> Result<Option<Vec<u8>>> {
            self.0.lock().push("get_at_most");
            Ok(None)
        }
        fn distrust_kept_listings(&self) {
            self.0.lock().push("distrust_kept_listings");
        }
    }
    let inner = Arc::new(Calls::default());
    let f = Fenced::new(inner.clone(), Arc::new(Fence::default()));
    assert_eq!(f.describe(), "s3://calls");
    f.map("packs/ab/x.pack").unwrap();
    f.put_kept("packs/ab/y.pack", b"y").unwrap();
    f.remove_stale_temps().unwrap();
    f.keep_whole("packs/ab/x.pack").unwrap();
    assert!(f.forget_cached("packs/ab/x.pack"));
    assert!(f.requests().is_some());
    f.publish().unwrap();
    f.will_read("packs/ab/x.pack", 5);
    f.reading_once(true);
    assert_eq!(f.get_at_most("head", 10).unwrap(), None);
    f.distrust_kept_listings();
    assert_eq!(
        *inner.0.lock(),
        [
            "map",
            "put_kept",
            "remove_stale_temps",
            "keep_whole",
            "forget_cached",
            "requests",
            "publish",
            "will_read",
            "reading_once",
            "get_at_most",
            "distrust_kept_listings"
        ]
    );
}

/// A backup's lease removed before its read-back (another writer took
/// it over and released it, maybe pruning meanwhile): no fresh attempt,
/// since the backup already read the indexes; it publishes nothing.
#[test]
fn a_backup_lease_removed_before_it_was_confirmed_is_not_taken_again() {
    let (t, s, fence) = bucket();
    let timing = Timing::from_values(Some("30"), Some("1"), Some("1000")).unwrap();
    let mut c = Lease::begin(s.clone(), "home", timing, fence).unwrap();
    let (s2, _f2) = other_host(&t);
    s2.delete(LEASE_OBJECT).unwrap();
    let e = s.put("index/x.idx", b"i").unwrap_err();
    assert_eq!(e.cbr_code(), Some("BackupService.6125"), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(
            "vault home: the writer lease was lost before it was confirmed (it was removed)"
        ),
        "{msg}"
    );
    assert!(t.get("index/x.idx").unwrap().is_none());
    assert!(c.wait().is_err());
    drop(c);
    assert!(stored(&*s).is_none(), "a lease was taken again");
}

/// The example of docs/FORMAT.md §19.5 is a lease this cbrfs reads.
#[test]
fn the_documented_lease_decodes() {
    let doc = include_str!("../../../docs/FORMAT.md");
    let at = doc.find("### 19.5").unwrap();
    let start = at + doc[at..].find("```json\n").unwrap() + 8;
    let end = start + doc[start..].find("```").unwrap();
    let r = decode(&doc.as_bytes()[start..end]).unwrap();
    assert_eq!(r.host, "host1");
    assert_eq!(r.pid, 4242);
    assert_eq!(r.expires_ns - r.renewed_ns, 300_000_000_000);
    assert_eq!(r.process.unwrap().pid_ns, 4026531836);
}

/// A lease taken by another writer (here: overwritten) is lost: the
/// next backup record, delete, or any write after the renewal noticed
/// it, is refused naming the vault and the new holder; other hosts'
/// writes are not this fence's business.
#[test]
fn a_lost_lease_stops_the_writer() {
    let (t, s, fence) = bucket();
    let timing = Timing::from_values(Some("300"), Some("60"), Some("300")).unwrap();
    let a = Lease::acquire(s.clone(), "home", timing, fence).unwrap();
    s.put("packs/ab/x.pack", b"pack").unwrap();
    let mut thief = a.record();
    thief.host = "host-b".into();
    thief.token = "cd".repeat(16);
    let (s2, _f2) = other_host(&t);
    write(&*s2, &thief, None).unwrap();
    // A pack may still go (harmless, unreferenced); the record may not.
    s.put("packs/ab/y.pack", b"pack").unwrap();
    let e = s.put("backups/b1.bk", b"record").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("vault home: the writer lease was lost"),
        "{msg}"
    );
    assert!(msg.contains("it now names host host-b"), "{msg}");
    assert!(s.get("backups/b1.bk").unwrap().is_none());
    // From now on nothing is written.
    assert!(s.put("index/x.idx", b"i").is_err());
    assert!(s.delete("packs/ab/x.pack").is_err());
    // Release leaves the other writer's lease alone.
    drop(a);
    assert_eq!(stored(&*s).unwrap().token, thief.token);
    // Without a lease held, the fence lets writes through.
    s.put("vault.json", b"{}").unwrap();
}

/// Renewals that fail: the writer stops at `ttl - margin` after its
/// last good renewal, before the lease (as others see it) expires.
#[test]
fn a_writer_that_cannot_renew_stops_before_its_lease_expires() {
    let (mem, s, fence) = bucket();
    let timing = Timing::from_values(Some("3"), Some("0.2"), Some("300")).unwrap();
    let a = Lease::acquire(s.clone(), "home", timing, fence).unwrap();
    mem.lease_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let started = boottime();
    let last = stored(&*s).unwrap();
    // Writes go on while the margin lasts...
    s.put("packs/ab/x.pack", b"pack").unwrap();
    // ...and stop before the stored expiry.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let e = loop {
        match s.put("packs/ab/y.pack", b"pack") {
            Err(e) => break e,
            Ok(()) => {
                assert!(std::time::Instant::now() < end, "never stopped");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert!(
        crate::clock::now_ns() < last.expires_ns,
        "stopped only after the lease expired"
    );
    assert!(boottime() - started < timing.ttl);
    let msg = e.to_string();
    assert!(
        msg.contains("vault home: the writer lease could not be renewed since"),
        "{msg}"
    );
    assert!(msg.contains("503 Slow Down"), "{msg}");
    assert!(msg.contains("before the lease could expire"), "{msg}");
    assert!(s.put("backups/b.bk", b"r").is_err());
    assert!(s.get("backups/b.bk").unwrap().is_none());
    drop(a);
}

/// Contenders at once: at most one wins, the others get the busy error
/// (or the "try again" of a slow attempt), never two holders.
#[test]
fn contenders_racing_for_a_free_lease_never_both_win() {
    let t = Arc::new(Mem::default());
    let mut won = 0;
    for _round in 0..5 {
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (s, f) = other_host(&t);
                let b = barrier.clone();
                std::thread::spawn(move || {
                    b.wait();
                    Lease::acquire(s, "home", fast(), f)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<&Lease> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert!(winners.len() <= 1, "{} winners", winners.len());
        won += winners.len();
        for r in &results {
            if let Err(e) = r {
                assert_eq!(e.cbr_code(), Some("BackupService.6125"), "{e}");
            }
        }
        // The winner's lease is the one stored, and it still checks.
        if let Some(w) = winners.first() {
            let (s, _) = other_host(&t);
            assert_eq!(stored(&*s).unwrap().token, w.record().token);
            w.check().unwrap();
        }
        drop(results);
    }
    assert!(won > 0, "no round had a winner");
}

/// A lease lost by another host's takeover is noticed at the next
/// renewal even without a write.
#[test]
fn the_renewal_notices_a_lost_lease() {
    let (t, s, fence) = bucket();
    let a = Lease::acquire(s, "home", fast(), fence).unwrap();
    let (s2, _) = other_host(&t);
    s2.delete(LEASE_OBJECT).unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while a.check().is_ok() {
        assert!(std::time::Instant::now() < end, "never noticed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(a.check().unwrap_err().to_string().contains("removed"));
}

/// The lease is read from the bucket itself, never from the vault's
/// cache: another host's lease written after ours was read is seen.
#[test]
fn the_cache_never_serves_a_lease() {
    let t = tempfile::tempdir().unwrap();
    let remote = Arc::new(LocalDir::new(t.path().join("bucket")));
    let cached = Arc::new(crate::store::CachedStorage::new(
        remote.clone(),
        &t.path().join("home"),
        crate::store::cached::DEFAULT_CACHE_BYTES,
    ));
    let fence = Arc::new(Fence::default());
    let s: Arc<dyn Storage> = Arc::new(Fenced::new(cached, fence.clone()));
    // A local directory's writes fsync: room for a loaded disk.
    let slow = Timing::from_values(Some("30"), Some("1"), Some("2000")).unwrap();
    let a = Lease::acquire(s.clone(), "home", slow, fence.clone()).unwrap();
    drop(a);
    let mut other = LeaseRecord {
        format: LEASE_FORMAT,
        host: "host-b".into(),
        pid: 4242,
        token: "ef".repeat(16),
        acquired_ns: crate::clock::now_ns(),
        renewed_ns: crate::clock::now_ns(),
        expires_ns: crate::clock::now_ns() + 600_000_000_000,
        process: None,
    };
    write(&*remote, &other, None).unwrap();
    let e = Lease::acquire(s.clone(), "home", slow, fence.clone()).unwrap_err();
    assert!(e.to_string().contains("on host host-b (pid 4242"), "{e}");
    other.expires_ns = 0;
    write(&*remote, &other, None).unwrap();
    Lease::acquire(s, "home", slow, fence).unwrap();
}
