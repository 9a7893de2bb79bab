//! A real store, damaged one file at a time (a pack, an index, a backup
//! record, vault.json, the key), then read every way a user reads it:
//! `check --read-data`, a restore of each backup, and the mount's tree
//! (readdir, lookup, readlink, read) in process. Nothing may panic; what is
//! read must be what was backed up or an error, never other bytes; a
//! restore that reports no error must be whole; and when check finds no
//! problem, both backups must restore whole.
//!
//! Cases: 64, or `PROPTEST_CASES`.

mod common;

use cbrfs::catalog::Store;
use cbrfs::engine::vaults;
use cbrfs::engine::{check, restore};
use cbrfs::model::NodeKind;
use cbrfs::vfs::{Vfs, VfsOptions, ROOT_INO};
use common::{filesystem_vault, pseudo_random, take_backup};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One entry of a tree: its kind and, for a file its bytes, for a symlink
/// its target.
#[derive(Clone, PartialEq, Eq)]
enum Item {
    Dir,
    File(Vec<u8>),
    Link(Vec<u8>),
    Other,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Dir => write!(f, "directory"),
            Item::File(b) => write!(
                f,
                "file of {} bytes, xxh3 {:016x}",
                b.len(),
                xxhash_rust::xxh3::xxh3_64(b)
            ),
            Item::Link(t) => write!(f, "symlink to {:?}", String::from_utf8_lossy(t)),
            Item::Other => write!(f, "special file"),
        }
    }
}

type Manifest = BTreeMap<String, Item>;

fn manifest(root: &Path) -> Manifest {
    fn walk(dir: &Path, rel: &str, out: &mut Manifest) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let r = format!("{rel}/{}", n.to_string_lossy());
            let md = std::fs::symlink_metadata(&p).unwrap();
            let item = if md.is_dir() {
                walk(&p, &r, out);
                Item::Dir
            } else if md.file_type().is_symlink() {
                use std::os::unix::ffi::OsStrExt;
                Item::Link(
                    std::fs::read_link(&p)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else if md.is_file() {
                Item::File(std::fs::read(&p).unwrap())
            } else {
                Item::Other
            };
            out.insert(r, item);
        }
    }
    let mut out = Manifest::new();
    walk(root, "", &mut out);
    out
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    /// Every file of the vault and its good bytes.
    files: Vec<(PathBuf, Vec<u8>)>,
    /// What each backup restores to.
    expected: BTreeMap<String, Manifest>,
    out: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("a/b/c")).unwrap();
    std::fs::create_dir_all(src.join("empty-dir")).unwrap();
    std::fs::write(src.join("small"), b"hello").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("a/text"), "line\n".repeat(3000)).unwrap();
    std::fs::write(src.join("a/b/random"), pseudo_random(300_000, 1)).unwrap();
    std::os::unix::fs::symlink("../small", src.join("a/link")).unwrap();
    std::fs::hard_link(src.join("small"), src.join("a/b/c/hard")).unwrap();
    // 40 data extents: more than 32 chunks, so its chunk list is in
    // chunk-list blobs.
    let mut f = std::fs::File::create(src.join("sparse")).unwrap();
    for i in 0..40u64 {
        f.seek(SeekFrom::Start(i * 16384)).unwrap();
        f.write_all(&pseudo_random(4096, i + 7)).unwrap();
    }
    f.set_len(40 * 16384 + 5000).unwrap();
    drop(f);
    let sparse_ok = std::fs::metadata(src.join("sparse")).unwrap().blocks() < 40 * 32 * 2;
    let store = Store::init(&dir.path().join("store")).unwrap();
    filesystem_vault(&store, "v", "fuzzed", "zstd");
    vaults::associate_path(&store, "v", &src, Some("src".into()), vec![]).unwrap();
    let take = |name: &str| take_backup(&store, "v", name);
    take("b1");
    std::fs::write(src.join("a/text"), "other\n".repeat(2000)).unwrap();
    std::fs::write(src.join("new"), pseudo_random(1000, 9)).unwrap();
    std::fs::remove_file(src.join("a/link")).unwrap();
    let b2 = take("b2");
    if sparse_ok {
        let n = b2.resources[0].stats.files_new + b2.resources[0].stats.files_changed;
        assert!(n >= 2, "b2 read {n} files");
    }
    let out = dir.path().join("out");
    let mut expected = BTreeMap::new();
    for b in ["b1", "b2"] {
        let to = out.join(format!("good-{b}"));
        let s = restore::restore(&store, "v", b, None, &to).unwrap();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        expected.insert(b.to_string(), manifest(&to));
    }
    assert_ne!(expected["b1"], expected["b2"]);
    let mut files = Vec::new();
    let mut stack = vec![store.vault_dir("v")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with(".lock") {
                let bytes = std::fs::read(&p).unwrap();
                files.push((p, bytes));
            }
        }
    }
    files.sort();
    let kinds = |ext: &str| {
        files
            .iter()
            .filter(|(p, _)| p.to_string_lossy().ends_with(ext))
            .count()
    };
    assert!(
        kinds(".pack") >= 1 && kinds(".idx") == 2 && kinds(".bk") == 2,
        "{files:?}"
    );
    Fixture {
        _dir: dir,
        store,
        files,
        expected,
        out,
    }
}

/// The tree of backup `b` as the mount shows it; `None` where an
/// operation failed. Every byte read must be the expected one.
fn mount_view(v: &Vfs, b: &str, expected: &Manifest) -> Result<bool, TestCaseError> {
    let mut whole = true;
    let Ok(vault) = v.lookup(ROOT_INO, b"v") else {
        return Ok(false);
    };
    let Ok(bk) = v.lookup(vault.ino, b.as_bytes()) else {
        return Ok(false);
    };
    let Ok(res) = v.lookup(bk.ino, b"src") else {
        return Ok(false);
    };
    let mut seen = Manifest::new();
    let mut stack = vec![(res.ino, String::new())];
    while let Some((ino, rel)) = stack.pop() {
        let Ok(entries) = v.readdir(ino, 0) else {
            whole = false;
            continue;
        };
        for (_, e) in entries {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let r = format!("{rel}/{}", String::from_utf8_lossy(&e.name));
            let Ok(a) = v.lookup(ino, &e.name) else {
                whole = false;
                continue;
            };
            let item = match a.kind {
                NodeKind::Dir => {
                    stack.push((a.ino, r.clone()));
                    Item::Dir
                }
                NodeKind::Symlink => match v.readlink(a.ino) {
                    Ok(t) => Item::Link(t),
                    Err(_) => {
                        whole = false;
                        continue;
                    }
                },
                NodeKind::File => {
                    let Ok(fh) = v.open(a.ino, libc::O_RDONLY) else {
                        whole = false;
                        continue;
                    };
                    let mut data = Vec::new();
                    let mut ok = true;
                    while (data.len() as u64) < a.size {
                        match v.read(fh, data.len() as u64, 128 << 10) {
                            Ok(d) if d.is_empty() => break,
                            Ok(d) => {
                                // Bytes read must be the backed-up bytes.
                                if let Some(Item::File(want)) = expected.get(&r) {
                                    let at = data.len();
                                    prop_assert!(
                                        want.get(at..at + d.len()) == Some(&d[..]),
                                        "{}: the mount read other bytes at {}",
                                        r,
                                        at
                                    );
                                }
                                data.extend(d);
                            }
                            Err(_) => {
                                ok = false;
                                break;
                            }
                        }
                    }
                    v.release(fh);
                    if !ok {
                        whole = false;
                        continue;
                    }
                    Item::File(data)
                }
                _ => Item::Other,
            };
            seen.insert(r, item);
        }
    }
    for (path, item) in &seen {
        prop_assert!(
            expected.get(path) == Some(item),
            "{}: the mount shows {:?}",
            path,
            item
        );
    }
    Ok(whole && &seen == expected)
}

#[test]
fn fuzz_damaged_store() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64u32);
    let fx = fixture();
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_time: 30_000,
        ..ProptestConfig::default()
    };
    let n = fx.files.len();
    let damage = prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(p, m)| (0u8, p, m as u64)),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(p, v)| (1u8, p, v)),
        1 => any::<usize>().prop_map(|p| (2u8, p, 0)),
        1 => (any::<usize>(), any::<u64>()).prop_map(|(p, v)| (3u8, p, v)),
    ];
    let input = (0..n, proptest::collection::vec(damage, 1..4));
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let case = std::sync::atomic::AtomicU32::new(0);
    let result = runner.run(&input, |(which, damages)| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (path, good) = &fx.files[which];
        let mut bad = good.clone();
        for (op, p, v) in &damages {
            let len = bad.len().max(1);
            let at = p % len;
            match op {
                0 if !bad.is_empty() => bad[at] ^= *v as u8,
                1 if bad.len() >= 4 => {
                    let at = p % (bad.len() - 3);
                    bad[at..at + 4].copy_from_slice(&(*v as u32).to_le_bytes());
                }
                2 => bad.truncate(p % (bad.len() + 1)),
                3 => bad.extend_from_slice(&v.to_le_bytes()),
                _ => {}
            }
        }
        std::fs::write(path, &bad).unwrap();
        let outcome = (|| {
            let checked = check::check(&fx.store, None, true);
            let clean = matches!(&checked, Ok(v) if v.iter().all(|c| c.problems.is_empty()));
            let mut whole = BTreeMap::new();
            for b in ["b1", "b2"] {
                let to = fx.out.join(format!("case{case}-{b}"));
                let r = restore::restore(&fx.store, "v", b, None, &to);
                let ok = match &r {
                    Ok(s) => s.errors.is_empty(),
                    Err(_) => false,
                };
                if to.exists() {
                    let got = manifest(&to);
                    // A partial restore leaves out what it could not
                    // restore whole; what it wrote must be right.
                    for (p, item) in &got {
                        prop_assert!(
                            fx.expected[b].get(p) == Some(item),
                            "{}: restored {} as {:?} after damaging {}",
                            b,
                            p,
                            item,
                            path.display()
                        );
                    }
                    if ok {
                        prop_assert!(
                            got == fx.expected[b],
                            "{} restored without error but not whole after damaging {}",
                            b,
                            path.display()
                        );
                    }
                    std::fs::remove_dir_all(&to).ok();
                }
                whole.insert(b, ok);
            }
            let v = Vfs::new(
                fx.store.clone(),
                VfsOptions {
                    wait: Duration::from_millis(10),
                    uid: 0,
                    gid: 0,
                },
            );
            for b in ["b1", "b2"] {
                mount_view(&v, b, &fx.expected[b])?;
            }
            if clean {
                prop_assert!(
                    whole.values().all(|w| *w),
                    "check found no problem after damaging {} but a restore failed: {:?}",
                    path.display(),
                    whole
                );
            }
            Ok(())
        })();
        std::fs::write(path, good).unwrap();
        outcome
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
