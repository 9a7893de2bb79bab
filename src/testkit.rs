//! Helpers of the decoder fuzz tests (unit tests only): how many cases to
//! run, ways to damage a valid encoding, a bound on how much one decode may
//! allocate, and a deadline against decoders that never return.
//!
//! Every `fuzz_*` proptest runs `cases(N)` cases: N by default (a few
//! seconds at most), or `PROPTEST_CASES` when it is set, e.g.
//! `PROPTEST_CASES=20000 cargo test fuzz_`.

use crate::error::Result;
use crate::store::storage::{self, ObjectInfo, Storage};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The number of cases: `PROPTEST_CASES` if set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A proptest config of [`cases`]`(default)` cases that shrinks for a
/// bounded time and keeps no regression files in the source tree.
pub fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        max_shrink_time: 20_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One way of damaging a byte string.
#[derive(Clone, Debug)]
pub enum Damage {
    /// XOR the byte at (position mod length) with a non-zero mask.
    Flip(usize, u8),
    /// Overwrite 4 bytes at (position mod length) with a little-endian u32,
    /// often an extreme one: where a length or count field is, this is
    /// what a hostile file would put there.
    Word(usize, u32),
    /// Overwrite 8 bytes with a little-endian u64.
    Long(usize, u64),
    /// Keep only the first (n mod (length + 1)) bytes.
    Truncate(usize),
    /// Append bytes.
    Extend(Vec<u8>),
    /// Insert bytes at (position mod (length + 1)).
    Insert(usize, Vec<u8>),
    /// Remove up to n bytes at (position mod length).
    Remove(usize, usize),
}

fn extreme_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(0x7f),
        Just(0xff),
        Just(0xfb),
        Just(0xfc),
        Just(0xfd),
        Just(0xffff),
        Just(0x7fff_ffff),
        Just(u32::MAX),
        Just(u32::MAX - 1),
        any::<u32>(),
    ]
}

fn extreme_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(16),
        Just(u32::MAX as u64),
        Just(u64::MAX),
        Just(i64::MAX as u64),
        Just(1 << 40),
        any::<u64>(),
    ]
}

/// One damage.
pub fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(p, m)| Damage::Flip(p, m)),
        2 => (any::<usize>(), extreme_u32()).prop_map(|(p, v)| Damage::Word(p, v)),
        1 => (any::<usize>(), extreme_u64()).prop_map(|(p, v)| Damage::Long(p, v)),
        2 => any::<usize>().prop_map(Damage::Truncate),
        1 => proptest::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Extend),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, b)| Damage::Insert(p, b)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(p, n)| Damage::Remove(p, n)),
    ]
}

/// One to four damages, applied in order.
pub fn damages() -> impl Strategy<Value = Vec<Damage>> {
    proptest::collection::vec(damage(), 1..=4)
}

/// `data` with `damages` applied.
pub fn apply(data: &[u8], damages: &[Damage]) -> Vec<u8> {
    let mut d = data.to_vec();
    for x in damages {
        match x {
            Damage::Flip(p, m) if !d.is_empty() => {
                let i = p % d.len();
                d[i] ^= m;
            }
            Damage::Word(p, v) if d.len() >= 4 => {
                let i = p % (d.len() - 3);
                d[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            Damage::Long(p, v) if d.len() >= 8 => {
                let i = p % (d.len() - 7);
                d[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            Damage::Truncate(n) => d.truncate(n % (d.len() + 1)),
            Damage::Extend(b) => d.extend_from_slice(b),
            Damage::Insert(p, b) => {
                let i = p % (d.len() + 1);
                d.splice(i..i, b.iter().copied());
            }
            Damage::Remove(p, n) if !d.is_empty() => {
                let i = p % d.len();
                let e = (i + n).min(d.len());
                d.drain(i..e);
            }
            _ => {}
        }
    }
    d
}

// ---- the largest single allocation ----

/// The test binary's allocator: the system's, noting per thread the
/// largest single allocation asked for, so that a test can bound what a
/// decoder allocates from a length field.
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: never panic inside the allocator (thread teardown).
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size);
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; `note` only
// touches a const-initialised thread-local without a destructor, which
// does not allocate.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// Run `f` and return its result with the largest single allocation it
/// asked for on this thread.
pub fn largest_alloc<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = LARGEST.with(|l| l.replace(0));
    let r = f();
    let largest = LARGEST.with(|l| l.replace(before.max(l.get())));
    (r, largest)
}

/// Decode damaged or arbitrary `bytes` with `decode` (which opens them
/// through the real path and uses every method): it may not allocate at
/// once much more than their size (twice, and 64 KiB), and what passes
/// its own check must be `good`'s entries (`None`: arbitrary bytes, no
/// expectation). `what` names the file kind in a failure.
pub fn decodes_within_bounds<T: PartialEq + std::fmt::Debug>(
    what: &str,
    bytes: &[u8],
    good: Option<&[T]>,
    decode: impl FnOnce() -> Result<Vec<T>>,
) -> std::result::Result<(), proptest::test_runner::TestCaseError> {
    let (r, largest) = largest_alloc(decode);
    prop_assert!(
        largest <= 2 * bytes.len() + (64 << 10),
        "{what} of {} bytes allocated {} at once",
        bytes.len(),
        largest
    );
    if let (Ok(all), Some(good)) = (r, good) {
        prop_assert_eq!(&all[..], good, "a damaged {} passed its check", what);
    }
    Ok(())
}

/// Run `f` on another thread and panic if it has not returned within
/// `secs` seconds: a decoder stuck in a loop fails the test instead of
/// hanging `cargo test`. Panics inside `f` are passed on.
pub fn within<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("did not finish within {secs} s: a decoder loops or is pathologically slow")
        }
    }
}

/// The deadline of a fuzz test of `cases` cases each allowed `per_case_ms`.
pub fn deadline(cases: u32, per_case_ms: u64) -> u64 {
    60 + cases as u64 * per_case_ms / 1000
}

// The generator of tests/common, the same file: one copy for unit and
// integration tests.
#[path = "../tests/common/random.rs"]
mod random;
pub use random::pseudo_random;

/// A backup record "b" of vault "v" with `resources`: manual, full,
/// started at 1 ns and finished at 2, no stats.
pub fn record(resources: Vec<crate::model::ResourceBackup>) -> crate::model::BackupRecord {
    crate::model::BackupRecord {
        name: "b".into(),
        vault: "v".into(),
        description: String::new(),
        origin: crate::model::Origin::Manual,
        policy: None,
        full: true,
        started_ns: 1,
        finished_ns: 2,
        resources,
        stats: crate::model::BackupStats::default(),
    }
}

/// A test double around a storage: it counts, logs, slows, fails or
/// bounds a few calls and passes the others on to [`Wrapper::inner`].
/// Every type that implements it is a [`Storage`], so that each test
/// writes only the calls it changes, not seven forwarding methods again.
///
/// Like the hand-written wrappers it replaces, it passes on only the calls
/// every storage must answer (and `get_at_most`, by default read whole
/// through [`Wrapper::get`] as the trait's default does): the hints and
/// `map` keep the trait's defaults, so a wrapped local directory is read
/// as an object store is, by `get` and `get_range`, never mapped.
pub trait Wrapper: Send + Sync + std::fmt::Debug {
    /// The storage the calls go on to.
    fn inner(&self) -> &dyn Storage;
    /// [`Storage::describe`].
    fn describe(&self) -> String {
        self.inner().describe()
    }
    /// [`Storage::put`].
    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.inner().put(name, data)
    }
    /// [`Storage::put_file`].
    fn put_file(&self, name: &str, file: &std::fs::File, len: u64) -> Result<()> {
        self.inner().put_file(name, file, len)
    }
    /// [`Storage::get`].
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.inner().get(name)
    }
    /// [`Storage::get_at_most`]: read whole through [`Wrapper::get`] and
    /// refused when larger, as the trait's default does.
    fn get_at_most(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        storage::at_most(Wrapper::get(self, name)?, name, limit, || {
            Wrapper::describe(self)
        })
    }
    /// [`Storage::get_range`].
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner().get_range(name, offset, len)
    }
    /// [`Storage::list`].
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner().list(prefix)
    }
    /// [`Storage::delete`].
    fn delete(&self, name: &str) -> Result<()> {
        self.inner().delete(name)
    }
    /// [`Storage::forget_cached`]: the trait's default (no local copy),
    /// for a wrapper that plays a cached remote.
    fn forget_cached(&self, name: &str) -> bool {
        let _ = name;
        false
    }
}

impl<T: Wrapper> Storage for T {
    fn describe(&self) -> String {
        Wrapper::describe(self)
    }
    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        Wrapper::put(self, name, data)
    }
    fn put_file(&self, name: &str, file: &std::fs::File, len: u64) -> Result<()> {
        Wrapper::put_file(self, name, file, len)
    }
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Wrapper::get(self, name)
    }
    fn get_at_most(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        Wrapper::get_at_most(self, name, limit)
    }
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        Wrapper::get_range(self, name, offset, len)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Wrapper::list(self, prefix)
    }
    fn delete(&self, name: &str) -> Result<()> {
        Wrapper::delete(self, name)
    }
    fn forget_cached(&self, name: &str) -> bool {
        Wrapper::forget_cached(self, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_is_applied() {
        assert_eq!(apply(b"abcd", &[Damage::Flip(5, 1)]), b"accd".to_vec());
        assert_eq!(apply(b"abcd", &[Damage::Truncate(2)]), b"ab".to_vec());
        assert_eq!(apply(b"abcd", &[Damage::Truncate(8)]), b"abc".to_vec()); // 8 mod 5
        assert_eq!(
            apply(b"abcdef", &[Damage::Word(1, u32::MAX)]),
            b"a\xff\xff\xff\xfff".to_vec()
        );
        assert_eq!(
            apply(b"ab", &[Damage::Insert(1, b"xy".to_vec())]),
            b"axyb".to_vec()
        );
        assert_eq!(apply(b"abcd", &[Damage::Remove(1, 2)]), b"ad".to_vec());
        assert_eq!(apply(b"", &[Damage::Flip(0, 1)]), Vec::<u8>::new());
    }

    #[test]
    fn largest_alloc_sees_a_big_vec() {
        let (v, n) = largest_alloc(|| Vec::<u8>::with_capacity(3 << 20));
        assert!(n >= 3 << 20, "{n}");
        drop(v);
        let ((), n) = largest_alloc(|| {});
        assert!(n < 1 << 20, "{n}");
    }

    #[test]
    fn within_fails_a_loop() {
        let r = std::panic::catch_unwind(|| {
            within(1, || std::thread::sleep(std::time::Duration::from_secs(3)))
        });
        assert!(r.is_err());
        assert_eq!(within(5, || 7), 7);
    }
}
