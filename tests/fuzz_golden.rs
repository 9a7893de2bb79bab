//! Mutation fuzzing of every decoder of store input, seeded from the golden
//! store (`tests/golden/store-v1`): pack trailers and tables, indexes, trees,
//! chunk lists, backup records, vault configs and keys (issue #12: "a fuzz
//! target for every decoder, run for a bounded time in CI, with its corpus
//! seeded from the golden store").
//!
//! The proptest fuzzers beside each decoder (src/model.rs `fuzz_*`,
//! src/store/pack.rs, src/store/index.rs, src/catalog.rs) start from
//! generated inputs; these start from real files, so that mutations reach
//! deep into well-formed structures: bit flips, byte sets, truncations,
//! splices from other corpus files, inserted and removed ranges, and length
//! fields (fixed-width and bincode varints) set to extremes. Records are
//! also re-sealed after mutation (length and checksum fixed), so that the
//! payload's decoder is reached, not only the checksum.
//!
//! For every input, each decoder must: not panic (run under
//! `catch_unwind`), finish within [`DECODE_TIME`], and allocate at most
//! [`mem_bound`] of the input's size (a counting global allocator of this
//! test binary measures the peak). A decoded structure never holds more
//! items than its input has bytes.
//!
//! Bounded: `CBRFS_FUZZ_SECONDS` [default 8] of wall time shared by the
//! targets, at most 2,500 inputs per second of it each; `CBRFS_FUZZ_SEED`
//! [default fixed] makes a failure reproducible, and every failure prints
//! the seed, the target and the iteration.

mod common;

use cbrfs::catalog::{Store, VaultConfig};
use cbrfs::model::{self, Content, RelChunk};
use cbrfs::store::{BlobId, BlobKind, Key, Repo};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/store-v1/store");
const VAULT: &str = "golden";
/// Longest time one decode of one input may take (generous: CI machines
/// are shared and this is a debug build of our code).
const DECODE_TIME: Duration = Duration::from_secs(3);
/// Most inputs per target per second of `CBRFS_FUZZ_SECONDS`, whatever
/// the time budget (the fast targets stop there).
const ITERATIONS_PER_SECOND: f64 = 2_500.0;

// ---------------------------------------------------------------------------
// A counting allocator: per-thread current and peak bytes, so that each
// decode's peak is measured on the thread that runs it (the test harness
// runs tests on several threads).

struct Counting;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(n: usize) {
    let _ = CURRENT.try_with(|c| {
        let v = c.get().saturating_add(n);
        c.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v)
            }
        });
    });
}

fn note_free(n: usize) {
    let _ = CURRENT.try_with(|c| c.set(c.get().saturating_sub(n)));
}

// SAFETY: forwards to the system allocator; the counters are plain
// thread-local cells without destructors, so touching them never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note_alloc(l.size());
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note_free(l.size());
        System.dealloc(p, l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note_alloc(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note_free(l.size());
        note_alloc(new);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Most bytes a decode of `input_len` bytes may hold at once: a fixed
/// allowance (buffers, error messages, a zstd context) plus a multiple of
/// the input, as decoded structs are larger than their encoding.
fn mem_bound(input_len: usize) -> usize {
    (8 << 20) + input_len.saturating_mul(64)
}

// ---------------------------------------------------------------------------
// Seeded randomness and mutations.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Values a length or count field is set to.
const EXTREMES: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    u64::MAX,
];

/// One to three mutations of `seed`, splicing from `corpus`.
fn mutate(seed: &[u8], corpus: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        let len = b.len();
        match rng.below(9) {
            // Flip a few bits.
            0 => {
                for _ in 0..1 + rng.below(8) {
                    if len > 0 {
                        let i = rng.below(len);
                        b[i] ^= 1 << rng.below(8);
                    }
                }
            }
            // Set a byte to an interesting value.
            1 => {
                if len > 0 {
                    let i = rng.below(len);
                    b[i] = [0, 1, 0x7f, 0x80, 0xfb, 0xfc, 0xfd, 0xff][rng.below(8)];
                }
            }
            // Truncate.
            2 => b.truncate(rng.below(len + 1)),
            // Splice a slice of another corpus file over a range.
            3 => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = 1 + rng.below((other.len() - from).min(4096));
                    let at = rng.below(len + 1);
                    let end = (at + n).min(len);
                    b.splice(at..end, other[from..from + n].iter().copied());
                }
            }
            // Duplicate a range (repeated structures, shared subtrees).
            4 => {
                if len > 0 {
                    let from = rng.below(len);
                    let n = 1 + rng.below((len - from).min(512));
                    let piece = b[from..from + n].to_vec();
                    let at = rng.below(len + 1);
                    b.splice(at..at, piece);
                }
            }
            // Remove a range.
            5 => {
                if len > 0 {
                    let from = rng.below(len);
                    let n = 1 + rng.below((len - from).min(512));
                    b.drain(from..from + n);
                }
            }
            // A fixed-width little-endian length field set to an extreme,
            // at an aligned offset (the pack and index formats).
            6 => {
                let width = if rng.below(2) == 0 { 4 } else { 8 };
                if len >= width {
                    let at = rng.below(len - width + 1) / width * width;
                    let v = EXTREMES[rng.below(EXTREMES.len())].to_le_bytes();
                    b[at..at + width].copy_from_slice(&v[..width]);
                }
            }
            // A bincode varint set to an extreme: 0xfb u16, 0xfc u32,
            // 0xfd u64 (lengths of names, vectors, chunk lists).
            7 => {
                if len > 0 {
                    let at = rng.below(len);
                    let v = EXTREMES[rng.below(EXTREMES.len())];
                    let mut field = vec![0xfd];
                    field.extend(v.to_le_bytes());
                    let end = (at + 1 + rng.below(9)).min(len);
                    b.splice(at..end, field);
                }
            }
            // Random bytes appended or inserted.
            _ => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(64);
                let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(at..at, junk);
            }
        }
    }
    b
}

// ---------------------------------------------------------------------------
// The corpus: every file of the golden store, classified, and every blob in
// its packs.

struct Corpus {
    packs: Vec<(BlobId, Vec<u8>)>,
    indexes: Vec<Vec<u8>>,
    records: Vec<Vec<u8>>,
    vault_configs: Vec<Vec<u8>>,
    keys: Vec<Vec<u8>>,
    trees: Vec<Vec<u8>>,
    chunk_lists: Vec<Vec<u8>>,
    /// Every file and blob, for splices.
    all: Vec<Vec<u8>>,
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for ent in fs::read_dir(dir).unwrap() {
        let p = ent.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn load_corpus(store: &Path) -> Corpus {
    let mut c = Corpus {
        packs: vec![],
        indexes: vec![],
        records: vec![],
        vault_configs: vec![],
        keys: vec![],
        trees: vec![],
        chunk_lists: vec![],
        all: vec![],
    };
    let mut files = Vec::new();
    files_under(store, &mut files);
    files.sort();
    for f in &files {
        let bytes = fs::read(f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if let Some(hex) = name.strip_suffix(".pack") {
            c.packs
                .push((BlobId::from_hex(hex).unwrap(), bytes.clone()));
        } else if name.ends_with(".idx") {
            c.indexes.push(bytes.clone());
        } else if name.ends_with(".bk") {
            c.records.push(bytes.clone());
        } else if name == "vault.json" || name == "cbrfs-store.json" {
            c.vault_configs.push(bytes.clone());
        } else if name == "key" {
            c.keys.push(bytes.clone());
        }
        c.all.push(bytes);
    }
    let repo = Repo::open(&store.join("vaults").join(VAULT), VAULT).unwrap();
    let mut entries = Vec::new();
    repo.for_each_entry(|id, loc| entries.push((id, loc)));
    {
        for (id, loc) in entries {
            let blob = repo.read_at(&id, &loc).unwrap();
            match loc.kind {
                BlobKind::Tree => {
                    // A chunk list seeded from a real tree's chunks, in case
                    // the golden store has no separate chunk-list blob.
                    for n in &model::decode_tree(&blob).unwrap().entries {
                        if let Content::Chunks(cs) = &n.content {
                            let rel: Vec<RelChunk> = cs
                                .iter()
                                .map(|ch| RelChunk {
                                    id: ch.id,
                                    gap: 0,
                                    len: ch.len,
                                })
                                .collect();
                            if c.chunk_lists.len() < 8 && !rel.is_empty() {
                                c.chunk_lists.push(model::encode_chunk_list(&rel).unwrap());
                            }
                        }
                    }
                    c.trees.push(blob.clone());
                }
                BlobKind::ChunkList => c.chunk_lists.push(blob.clone()),
                BlobKind::Data => {}
            }
            if blob.len() <= 1 << 16 {
                c.all.push(blob);
            }
        }
    }
    for (what, n) in [
        ("packs", c.packs.len()),
        ("indexes", c.indexes.len()),
        ("records", c.records.len()),
        ("vault configs", c.vault_configs.len()),
        ("keys", c.keys.len()),
        ("trees", c.trees.len()),
        ("chunk lists", c.chunk_lists.len()),
    ] {
        assert!(n > 0, "the golden store gave no {what}");
    }
    c
}

// ---------------------------------------------------------------------------
// Running one decode under the three bounds.

/// Run `decode` on `input` (its size for the bounds): no panic, within
/// [`DECODE_TIME`], at most [`mem_bound`] bytes held at the peak. `decode`
/// returns the number of items it decoded (0 for an error), which must not
/// exceed the input's bytes.
fn bounded(
    target: &str,
    seed: u64,
    iteration: usize,
    input: &[u8],
    decode: impl FnOnce() -> usize,
) {
    let base = CURRENT.with(|c| c.get());
    PEAK.with(|p| p.set(base));
    let t0 = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(decode));
    let took = t0.elapsed();
    let peak = PEAK.with(|p| p.get()).saturating_sub(base);
    let what = format!(
        "target {target}, CBRFS_FUZZ_SEED={seed}, iteration {iteration}, input of {} bytes",
        input.len()
    );
    let items = match r {
        Ok(n) => n,
        Err(_) => panic!("{what}: the decoder panicked"),
    };
    assert!(took <= DECODE_TIME, "{what}: took {took:?}");
    assert!(
        peak <= mem_bound(input.len()),
        "{what}: held {peak} bytes at its peak, more than {}",
        mem_bound(input.len())
    );
    assert!(
        items <= input.len().max(1),
        "{what}: decoded {items} items from fewer bytes"
    );
}

/// The shared time budget and the seed.
struct Budget {
    deadline_per_target: Duration,
    max_iterations: usize,
    seed: u64,
}

fn budget(targets: u32) -> Budget {
    let secs: f64 = std::env::var("CBRFS_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8.0);
    let seed = std::env::var("CBRFS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0de);
    Budget {
        deadline_per_target: Duration::from_secs_f64(secs.max(0.1) / targets as f64),
        max_iterations: (secs.max(0.1) * ITERATIONS_PER_SECOND) as usize,
        seed,
    }
}

/// Feed mutations of `seeds` to `run` until the target's share of the time
/// or its most iterations are used; returns how many inputs were tried.
fn campaign(
    target: &str,
    salt: u64,
    seeds: &[Vec<u8>],
    corpus: &[Vec<u8>],
    mut run: impl FnMut(&[u8], usize, u64),
) -> usize {
    let b = budget(7);
    let seed = b.seed ^ salt;
    let mut rng = Rng(seed | 1);
    let t0 = Instant::now();
    // The unmutated seeds first: they must decode as they are.
    for (i, s) in seeds.iter().enumerate() {
        run(s, i, seed);
    }
    let mut n = 0;
    while n < b.max_iterations && t0.elapsed() < b.deadline_per_target {
        let input = mutate(&seeds[rng.below(seeds.len())], corpus, &mut rng);
        run(&input, seeds.len() + n, seed);
        n += 1;
    }
    eprintln!(
        "fuzz_golden: {target}: {n} mutated inputs in {:?}",
        t0.elapsed()
    );
    n
}

// ---------------------------------------------------------------------------
// The targets.

/// Where pack `id` lives in a vault directory (docs/FORMAT.md §6.4).
fn pack_path(vault_dir: &Path, id: &BlobId) -> PathBuf {
    let hex = id.to_hex();
    vault_dir
        .join("packs")
        .join(&hex[..2])
        .join(format!("{hex}.pack"))
}

#[test]
fn fuzz_pack_files_from_golden() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    common::copy_golden(Path::new(GOLDEN), &store);
    let c = load_corpus(&store);
    let vault_dir = store.join("vaults").join(VAULT);
    let seeds: Vec<Vec<u8>> = c.packs.iter().map(|(_, b)| b.clone()).collect();
    let mut which = 0usize;
    let n = campaign("pack", 1, &seeds, &c.all, |input, i, seed| {
        // The mutated pack replaces one of the golden packs, under its name,
        // and is read as every reader reads it: the trailer and table (as
        // check and repair read them), every blob through a fresh Repo
        // (index, pack, decompression, verification).
        let (id, _) = &c.packs[which % c.packs.len()];
        which += 1;
        let path = pack_path(&vault_dir, id);
        fs::write(&path, input).unwrap();
        bounded("pack", seed, i, input, || {
            let mut items = 0;
            if let Ok(repo) = Repo::open(&vault_dir, VAULT) {
                let _ = repo.pack_hashes_to_name(*id);
                let _ = repo.check_pack(*id, true);
                if let Ok(es) = repo.pack_table(*id) {
                    items = es.len();
                }
                repo.for_each_entry(|bid, loc| {
                    if loc.pack == *id {
                        let _ = repo.read_at(&bid, &loc);
                    }
                });
            }
            items
        });
        for (pid, good) in &c.packs {
            fs::write(pack_path(&vault_dir, pid), good).unwrap();
        }
    });
    assert!(n > 0);
}

#[test]
fn fuzz_index_files_from_golden() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    common::copy_golden(Path::new(GOLDEN), &store);
    let c = load_corpus(&store);
    // A vault holding the golden key and the mutated index as its only
    // one, read as every reader reads it: mapped and its shape checked
    // when the vault opens, then verified whole, every entry decoded and
    // looked up.
    let vault_dir = tmp.path().join("index-vault");
    fs::create_dir_all(vault_dir.join("index")).unwrap();
    fs::write(vault_dir.join("key"), &c.keys[0]).unwrap();
    let path = vault_dir.join("index").join("fuzz.idx");
    let n = campaign("index", 2, &c.indexes, &c.all, |input, i, seed| {
        fs::write(&path, input).unwrap();
        bounded("index", seed, i, input, || {
            let Ok(repo) = Repo::open(&vault_dir, VAULT) else {
                return 0;
            };
            let _ = repo.index_errors();
            let _ = repo.verify_indexes();
            let _ = repo.indexed_packs();
            let _ = repo.verified_index("index/fuzz.idx");
            let mut items = 0;
            repo.for_each_entry(|id, _| {
                let _ = repo.lookup(&id);
                items += 1;
            });
            let _ = repo.lookup(&BlobId([0xff; 16]));
            items
        });
    });
    assert!(n > 0);
}

#[test]
fn fuzz_trees_from_golden() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    common::copy_golden(Path::new(GOLDEN), &store);
    let c = load_corpus(&store);
    let n = campaign("tree", 3, &c.trees, &c.all, |input, i, seed| {
        bounded("tree", seed, i, input, || match model::decode_tree(input) {
            Ok(t) => {
                let mut items = t.entries.len();
                for e in &t.entries {
                    if let Content::Chunks(cs) = &e.content {
                        items += cs.len();
                    }
                    if let Content::Lists(ls) = &e.content {
                        items += ls.len();
                    }
                    // Names were validated where they were decoded.
                    assert!(model::is_safe_name(&e.name));
                }
                items
            }
            Err(_) => 0,
        });
    });
    assert!(n > 0);
}

#[test]
fn fuzz_chunk_lists_from_golden() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    common::copy_golden(Path::new(GOLDEN), &store);
    let c = load_corpus(&store);
    let n = campaign("chunk list", 4, &c.chunk_lists, &c.all, |input, i, seed| {
        bounded("chunk list", seed, i, input, || {
            model::decode_chunk_list(input).map_or(0, |l| l.len())
        });
    });
    assert!(n > 0);
}

/// A backup record with its length and checksum made to match its payload
/// again, so that the payload's decoder is reached.
fn reseal(data: &[u8]) -> Vec<u8> {
    if data.len() < 16 {
        return data.to_vec();
    }
    let payload_end = data.len().saturating_sub(8).max(16);
    let payload = &data[16..payload_end];
    let mut out = data[..12].to_vec();
    out.extend((payload.len() as u32).to_le_bytes());
    out.extend(payload);
    out.extend(xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    out
}

#[test]
fn fuzz_backup_records_from_golden() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    common::copy_golden(Path::new(GOLDEN), &store);
    let c = load_corpus(&store);
    let mut flip = false;
    let (mut past_checksum, mut decoded) = (0usize, 0usize);
    let n = campaign("backup record", 5, &c.records, &c.all, |input, i, seed| {
        // Every other input re-sealed: past the checksum into bincode.
        flip = !flip;
        let input = if flip && i >= c.records.len() {
            reseal(input)
        } else {
            input.to_vec()
        };
        bounded("backup record", seed, i, &input, || {
            let r = model::decode_record(&input);
            match &r {
                Ok(_) => decoded += 1,
                Err(e) if !e.to_string().contains("checksum") => past_checksum += 1,
                Err(_) => {}
            }
            r.map_or(0, |r| {
                r.resources.len() + r.resources.iter().map(|p| p.warnings.len()).sum::<usize>()
            })
        });
    });
    eprintln!(
        "fuzz_golden: backup record: {decoded} decoded, {past_checksum} refused for another reason than the checksum"
    );
    assert!(n > 0 && past_checksum > 0);
}

#[test]
fn fuzz_vault_configs_and_keys_from_golden() {
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    common::copy_golden(Path::new(GOLDEN), &store_dir);
    let c = load_corpus(&store_dir);
    let store = Store::init(&store_dir).unwrap();
    let vault_json = store.vault_dir(VAULT).join("vault.json");
    let good = fs::read(&vault_json).unwrap();
    let n = campaign(
        "vault config",
        6,
        &c.vault_configs,
        &c.all,
        |input, i, seed| {
            // Through the catalog's own reader (format and name checks) and the
            // listing that tolerates damage, and serde directly.
            fs::write(&vault_json, input).unwrap();
            bounded("vault config", seed, i, input, || {
                let direct = serde_json::from_slice::<VaultConfig>(input)
                    .map_or(0, |v| v.resources.len() + v.tags.len());
                let _ = store.vault(VAULT);
                let _ = store.vaults_and_damage();
                direct
            });
        },
    );
    fs::write(&vault_json, good).unwrap();
    let k = campaign("key", 7, &c.keys, &c.all, |input, i, seed| {
        bounded("key", seed, i, input, || {
            Key::from_secret(input.to_vec()).map_or(0, |k| usize::from(k.secret().is_empty()))
        });
    });
    assert!(n > 0 && k > 0);
}
