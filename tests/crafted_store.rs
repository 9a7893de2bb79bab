//! The crafted-store test kit (issue 12, findings 4, 6, 8 and 9): a real
//! store made with the crate's API, then backups whose records, trees and
//! chunk lists are written through the model's own encoders and the
//! store's writer (so every blob is validly packed and indexed) and are
//! hostile: escaping names, a root that disagrees with the root node, a
//! 1-byte file naming 2 GiB, a file repeating one chunk list 40,000 times,
//! 40 trees that each point twice at the next, 10,000 levels of nesting.
//!
//! Each case runs the real commands in-process (check, prune, restore, the
//! mount's file reader) on a thread with a deadline, and asserts an error
//! that names the backup, or a clean result where the store is only
//! unusual. `tests/crafted_store.sh` runs the release binary on the same
//! stores (written by the ignored `write_crafted_stores`) under `timeout`
//! and `prlimit --as`.

mod common;

use cbrfs::catalog::Store;
use cbrfs::engine::reader::{ChunkCache, FileReader};
use cbrfs::engine::servers::{self, NewMember, ServerUpdate};
use cbrfs::engine::{backup, check, prune, restore, vaults};
use cbrfs::model::{
    self, BackupRecord, ChunkRef, Content, ListRef, Node, NodeKind, RelChunk, Tree,
};
use cbrfs::store::{BlobId, BlobKind};
use cbrfs::vfs::{Vfs, VfsOptions, ROOT_INO};
use common::{filesystem_vault, pseudo_random, put_blobs, take_backup, within};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Seconds any one command may take on a crafted store (debug build).
const BOUND: u64 = 60;

/// A store with vault `v`, directory resource `r` and one good backup.
struct Base {
    root: PathBuf,
    store: Store,
    good: BackupRecord,
}

fn base_at(root: &Path) -> Base {
    let src = root.join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("f"), pseudo_random(100_000, 1)).unwrap();
    std::fs::write(src.join("d/g"), b"g").unwrap();
    let store = Store::init(&root.join("store")).unwrap();
    filesystem_vault(&store, "v", "", "zstd");
    vaults::associate_path(&store, "v", &src, Some("r".into()), vec![]).unwrap();
    let good = take_backup(&store, "v", "good");
    Base {
        root: root.to_path_buf(),
        store,
        good,
    }
}

fn tree_blob(b: &Base, entries: Vec<Node>) -> BlobId {
    // encode_tree does not validate: a hostile writer need not either.
    let t = model::encode_tree(&Tree { entries }).unwrap();
    put_blobs(&b.store, "v", &[(BlobKind::Tree, t)])[0]
}

fn dir_node(name: &[u8], sub: BlobId) -> Node {
    Node {
        mode: 0o755,
        subtree: Some(sub),
        ..Node::new(name.to_vec(), NodeKind::Dir)
    }
}

/// Save backup `name`: the good backup's record with resource `r` rooted
/// at tree `root`.
fn save_rooted(b: &Base, name: &str, root: BlobId) {
    let mut r = b.good.clone();
    r.name = name.into();
    r.resources[0].root = root;
    r.resources[0].meta.subtree = Some(root);
    b.store.save_backup(&r).unwrap();
}

// ---- the crafted backups ----

/// Finding 4: a second resource `s` whose root node is named `bad` (restore
/// of several resources creates each under its root node's name).
fn craft_escape_meta(b: &Base, name: &str, bad: &[u8]) {
    let mut r = b.good.clone();
    r.name = name.into();
    let mut s = r.resources[0].clone();
    s.name = "s".into();
    s.meta.name = bad.to_vec();
    r.resources.push(s);
    b.store.save_backup(&r).unwrap();
}

/// Finding 4: a root tree with an entry named `bad`.
fn craft_escape_tree(b: &Base, name: &str, bad: &[u8]) {
    let f = Node {
        mode: 0o644,
        ..Node::new(bad.to_vec(), NodeKind::File)
    };
    save_rooted(b, name, tree_blob(b, vec![f]));
}

/// Finding 9: `root` says tree A (the good backup's), the root node says
/// tree B, whose file's chunk no other backup uses. Returns that chunk.
fn craft_roots_disagree(b: &Base, name: &str) -> BlobId {
    let data = pseudo_random(5000, 9);
    let chunk = put_blobs(&b.store, "v", &[(BlobKind::Data, data.clone())])[0];
    let f = Node {
        mode: 0o644,
        size: data.len() as u64,
        content: Content::Chunks(vec![ChunkRef {
            id: chunk,
            offset: 0,
            len: data.len() as u32,
        }]),
        ..Node::new(b"only-in-b".to_vec(), NodeKind::File)
    };
    let tree_b = tree_blob(b, vec![f]);
    let mut r = b.good.clone();
    r.name = name.into();
    r.resources[0].meta.subtree = Some(tree_b);
    b.store.save_backup(&r).unwrap();
    chunk
}

/// One real 1 MiB chunk, for cases that name it many times.
fn mib_chunk(b: &Base) -> BlobId {
    put_blobs(
        &b.store,
        "v",
        &[(BlobKind::Data, pseudo_random(1 << 20, 3))],
    )[0]
}

/// A chunk-list blob of `n` back-to-back references to `chunk` (1 MiB).
fn list_blob(b: &Base, chunk: BlobId, n: usize) -> BlobId {
    let rel = vec![
        RelChunk {
            id: chunk,
            gap: 0,
            len: 1 << 20,
        };
        n
    ];
    put_blobs(
        &b.store,
        "v",
        &[(BlobKind::ChunkList, model::encode_chunk_list(&rel).unwrap())],
    )[0]
}

/// Finding 8: a 1-byte file whose one chunk list names 2 GiB (2,048 ×
/// 1 MiB), its reference claiming 1 chunk over 1 byte.
fn craft_one_byte_2gib(b: &Base, name: &str) {
    let list = list_blob(b, mib_chunk(b), 2048);
    let f = Node {
        mode: 0o644,
        size: 1,
        content: Content::Lists(vec![ListRef {
            id: list,
            offset: 0,
            span: 1,
            count: 1,
        }]),
        ..Node::new(b"tiny".to_vec(), NodeKind::File)
    };
    save_rooted(b, name, tree_blob(b, vec![f]));
}

/// Lists × chunks per list of [`craft_big_lists`].
const BIG_LISTS: (usize, usize) = (40_000, 2_000);

/// Finding 8: a file that repeats one chunk list of 2,000 chunks 40,000
/// times (8 × 10^7 chunk references, 80 TB, from 1.2 MB of store): valid
/// in form, but materialising its chunks took gigabytes.
fn craft_big_lists(b: &Base, name: &str) -> Node {
    let (lists, per) = BIG_LISTS;
    let list = list_blob(b, mib_chunk(b), per);
    let span = (per as u64) << 20;
    let f = Node {
        mode: 0o644,
        size: span * lists as u64,
        content: Content::Lists(
            (0..lists as u64)
                .map(|i| ListRef {
                    id: list,
                    offset: i * span,
                    span,
                    count: per as u32,
                })
                .collect(),
        ),
        ..Node::new(b"huge".to_vec(), NodeKind::File)
    };
    save_rooted(b, name, tree_blob(b, vec![f.clone()]));
    f
}

/// A chain of `levels` trees, each holding `entries(next)` where `next` is
/// the tree below, written through one writer (one pack, one index);
/// returns the top.
fn tree_chain(b: &Base, levels: usize, entries: impl Fn(BlobId) -> Vec<Node>) -> BlobId {
    let repo = b.store.repo("v").unwrap();
    let mut w = cbrfs::store::RepoWriter::new(&repo, false);
    let mut next = w
        .add(
            BlobKind::Tree,
            &model::encode_tree(&Tree::default()).unwrap(),
        )
        .unwrap()
        .id;
    for _ in 0..levels {
        let t = Tree {
            entries: entries(next),
        };
        next = w
            .add(BlobKind::Tree, &model::encode_tree(&t).unwrap())
            .unwrap()
            .id;
    }
    w.finish().unwrap();
    next
}

/// Finding 8: `levels` trees that each point twice at the next (2^levels
/// paths, `levels` + 1 trees).
fn craft_shared(b: &Base, name: &str, levels: usize) {
    let top = tree_chain(b, levels, |n| vec![dir_node(b"a", n), dir_node(b"b", n)]);
    save_rooted(b, name, top);
}

/// Finding 8: `levels` directories nested in one another.
fn craft_deep(b: &Base, name: &str, levels: usize) {
    let top = tree_chain(b, levels, |n| vec![dir_node(b"d", n)]);
    save_rooted(b, name, top);
}

// ---- running the commands ----

/// Names the record `craft_escape_*` may not let through, with the name
/// each crafted backup gets.
const BAD_NAMES: [(&str, &[u8]); 6] = [
    ("esc-dotdot", b"../../escaped-file"),
    ("esc-slash", b"a/b"),
    ("esc-dot", b"."),
    ("esc-dotdot2", b".."),
    ("esc-empty", b""),
    ("esc-nul", b"a\0b"),
];

fn check_vault(store: &Store) -> check::VaultCheck {
    let s = store.clone();
    within("check --read-data", BOUND, move || {
        check::check(&s, Some("v"), true).unwrap().remove(0)
    })
}

/// Check finds backup `name` damaged with a problem naming it, and the
/// good backup undamaged.
fn assert_damaged(c: &check::VaultCheck, name: &str) {
    assert!(
        c.damaged_backups.contains(name),
        "backup {name} not reported damaged: {:?}",
        c.problems
    );
    assert!(
        c.problems.iter().any(|p| p.contains(name)),
        "no problem names backup {name}: {:?}",
        c.problems
    );
    assert!(!c.damaged_backups.contains("good"), "{:?}", c.problems);
}

/// Restore backup `name` into a new directory under `b.root/out/NAME`;
/// every failure (returned, or per entry) as one string. Nothing may
/// appear outside the target.
fn restore_failures(b: &Base, name: &str) -> String {
    let outer = b.root.join(format!("out-{name}"));
    let to = outer.join(name);
    std::fs::create_dir_all(&outer).unwrap();
    let (s, n, t) = (b.store.clone(), name.to_string(), to.clone());
    let r = within("restore", BOUND, move || {
        restore::restore(&s, "v", &n, None, &t)
    });
    let outside: Vec<_> = std::fs::read_dir(&outer)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|f| f.as_encoded_bytes() != name.as_bytes())
        .collect();
    assert!(
        outside.is_empty(),
        "restore wrote beside its target: {outside:?}"
    );
    assert!(!b.root.join("escaped-file").exists());
    match r {
        Err(e) => e.to_string(),
        Ok(stats) => stats.errors.join("\n"),
    }
}

/// Prune, within the bound.
fn prune_vault(store: &Store) -> cbrfs::error::Result<prune::PruneReport> {
    let s = store.clone();
    within("prune", BOUND, move || prune::prune(&s, "v", false, 50))
}

// ---- finding 4 ----

/// A record whose resource root node is named `../../escaped-file` (or
/// `a/b`, `.`, `..`, empty, with a NUL) does not decode: check reports that
/// backup damaged by name, restore refuses naming it and creates nothing
/// outside its target, and the good backup stays good.
#[test]
fn escaping_root_node_names_are_refused() {
    every_bad_name_is_refused(craft_escape_meta);
}

/// A tree entry named `../x`-like: the tree does not decode; check names
/// the backup, restore reports it (naming the backup) and creates nothing
/// outside its target.
#[test]
fn escaping_tree_entry_names_are_refused() {
    every_bad_name_is_refused(craft_escape_tree);
}

/// One backup per name of `BAD_NAMES`, made by `craft`: check reports each
/// damaged and restore of each fails naming it.
fn every_bad_name_is_refused(craft: fn(&Base, &str, &[u8])) {
    let dir = tempfile::tempdir().unwrap();
    let b = base_at(dir.path());
    for (name, bad) in BAD_NAMES {
        craft(&b, name, bad);
    }
    let c = check_vault(&b.store);
    for (name, _) in BAD_NAMES {
        assert_damaged(&c, name);
        let e = restore_failures(&b, name);
        assert!(e.contains(name), "restore of {name}: {e}");
    }
}

// ---- finding 9 ----

/// A record whose `root` and root node disagree is damaged (not "ok" to
/// check while restore reads something else), and prune refuses rather
/// than delete the data restore would read.
#[test]
fn a_record_whose_roots_disagree_is_damaged_and_prune_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let b = base_at(dir.path());
    let chunk = craft_roots_disagree(&b, "split");
    let c = check_vault(&b.store);
    assert_damaged(&c, "split");
    let e = prune_vault(&b.store).expect_err("prune ran over a record it cannot read");
    assert!(e.to_string().contains("split"), "{e}");
    let repo = b.store.repo("v").unwrap();
    assert!(
        repo.read_blob(&chunk).is_ok(),
        "prune removed tree B's data"
    );
}

// ---- finding 8 ----

/// A 1-byte file whose chunk list names 2 GiB: check names the backup,
/// restore fails that file (naming the backup) and writes no 2 GiB, and
/// the mount's reader refuses it.
#[test]
fn a_one_byte_file_naming_2_gib_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = base_at(dir.path());
    craft_one_byte_2gib(&b, "tiny");
    let c = check_vault(&b.store);
    assert_damaged(&c, "tiny");
    let e = restore_failures(&b, "tiny");
    assert!(e.contains("tiny"), "{e}");
    let written = b.root.join("out-tiny/tiny/tiny");
    if let Ok(m) = std::fs::metadata(&written) {
        assert!(m.len() <= 1, "restore wrote {} bytes", m.len());
    }
    let repo = b.store.repo("v").unwrap();
    let rec = b.store.backup("v", "tiny").unwrap();
    let tree = model::decode_tree(&repo.read_blob(&rec.resources[0].root).unwrap()).unwrap();
    let f = FileReader::new(&tree.entries[0]);
    let cache = ChunkCache::new(1 << 20);
    assert!(f.read_at(&repo, &cache, 0, 4096).is_err());
    assert!(cbrfs::engine::reader::all_chunks(&repo, &tree.entries[0]).is_err());
    // The same claim made inline, or by the list's reference, does not
    // even decode.
    for content in [
        Content::Chunks(vec![ChunkRef {
            id: BlobId([1; 16]),
            offset: 0,
            len: 1 << 31,
        }]),
        Content::Lists(vec![ListRef {
            id: BlobId([1; 16]),
            offset: 0,
            span: 2 << 30,
            count: 2048,
        }]),
    ] {
        let n = Node {
            size: 1,
            content,
            ..Node::new(b"tiny".to_vec(), NodeKind::File)
        };
        let t = model::encode_tree(&Tree { entries: vec![n] }).unwrap();
        assert!(model::decode_tree(&t).is_err());
    }
}

/// A file naming one chunk twice, once with a length that is not the
/// blob's (validate_content lets it by: in order, within the size), read
/// through the mount: EIO, as every other reader says. Its request's
/// buffer comes from the store's pool, not zeroed (issue 17); before the
/// guard in `assemble` the mount copied the chunk at the longer length,
/// so the reply held what the pooled buffer held after it: here the
/// bytes of file `p`, read by the request before.
#[test]
fn a_chunk_named_twice_with_two_lengths_reads_as_eio_not_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let b = base_at(dir.path());
    let l = 300_000usize;
    let datas: Vec<Vec<u8>> = (0..4).map(|i| pseudo_random(l, 20 + i)).collect();
    let ids = put_blobs(
        &b.store,
        "v",
        &datas
            .iter()
            .map(|d| (BlobKind::Data, d.clone()))
            .collect::<Vec<_>>(),
    );
    let file = |name: &[u8], chunks: Vec<ChunkRef>| Node {
        mode: 0o644,
        size: 3 * l as u64,
        content: Content::Chunks(chunks),
        ..Node::new(name.to_vec(), NodeKind::File)
    };
    let at = |i: usize, offset: usize, len: usize| ChunkRef {
        id: ids[i],
        offset: offset as u64,
        len: len as u32,
    };
    let p = file(b"p", vec![at(1, 0, l), at(2, l, l), at(3, 2 * l, l)]);
    let twice = file(b"twice", vec![at(0, 0, l + l / 2), at(0, l + l / 2, l)]);
    save_rooted(&b, "twice", tree_blob(&b, vec![p, twice]));
    let v = Vfs::new(
        b.store.clone(),
        VfsOptions {
            wait: Duration::from_millis(300),
            uid: 0,
            gid: 0,
        },
    );
    let ino = |name: &str| {
        ["v", "twice", "r", name]
            .iter()
            .fold(ROOT_INO, |i, n| v.lookup(i, n.as_bytes()).unwrap().ino)
    };
    let fh = v.open(ino("p"), libc::O_RDONLY).unwrap();
    let got = v.read(fh, 0, 3 * l as u32).unwrap();
    assert!(got == datas[1..].concat());
    v.release(fh);
    let fh = v.open(ino("twice"), libc::O_RDONLY).unwrap();
    let got = v.read(fh, 0, 3 * l as u32);
    v.release(fh);
    if let Ok(bytes) = &got {
        let of_p = bytes[l..l + l / 2] == datas[3][l / 2..];
        panic!("answered {} bytes (bytes of p in it: {of_p})", bytes.len());
    }
    assert_eq!(got, Err(libc::EIO));
}

/// A file repeating one list 40,000 times: check, prune and the reader
/// read the list once; check calls the backup fine (it is valid in form),
/// prune keeps it.
#[test]
fn a_file_repeating_one_chunk_list_costs_one_list() {
    let dir = tempfile::tempdir().unwrap();
    let b = base_at(dir.path());
    let f = craft_big_lists(&b, "biglists");
    let c = check_vault(&b.store);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    prune_vault(&b.store).unwrap();
    let repo = b.store.repo("v").unwrap();
    let cache = ChunkCache::new(4 << 20);
    let r = within("read", BOUND, move || {
        let reader = FileReader::new(&f);
        let mid = reader.size() / 2 + 12345;
        let got = reader.read_at(&repo, &cache, mid, 4096).unwrap();
        let chunks = cbrfs::engine::reader::all_chunks(&repo, &f).unwrap();
        (got, chunks.iter().count())
    });
    let want = pseudo_random(1 << 20, 3);
    let at = ((1u64 << 20) * BIG_LISTS.1 as u64 * BIG_LISTS.0 as u64 / 2 + 12345) % (1 << 20);
    assert_eq!(r.0, &want[at as usize..at as usize + 4096]);
    assert_eq!(r.1, BIG_LISTS.0 * BIG_LISTS.1);
}

/// 40 trees that each point twice at the next: check and prune finish
/// at once (each tree is read once) and find nothing wrong.
#[test]
fn shared_subtrees_are_visited_once() {
    let dir = tempfile::tempdir().unwrap();
    let b = base_at(dir.path());
    craft_shared(&b, "shared", 40);
    let c = check_vault(&b.store);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    prune_vault(&b.store).unwrap();
    let c = check_vault(&b.store);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
}

/// 10,000 levels of nesting: check and prune walk them without recursion.
#[test]
fn deep_nesting_is_walked_without_recursion() {
    let dir = tempfile::tempdir().unwrap();
    let b = base_at(dir.path());
    craft_deep(&b, "deep", 10_000);
    let c = check_vault(&b.store);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    prune_vault(&b.store).unwrap();
}

/// Restore's share of finding 8 (bounded counts, depth): 2^40 paths and
/// 10,000 levels must fail or finish within the bound (restore counts what
/// it creates against the record's totals and walks with its own stack).
#[test]
fn restore_of_shared_and_deep_trees_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let b = base_at(dir.path());
    craft_shared(&b, "shared", 40);
    craft_deep(&b, "deep", 10_000);
    let _ = restore_failures(&b, "shared");
    let _ = restore_failures(&b, "deep");
}

/// `ls`, `find` and `diff` on 2^40 paths and 10,000 levels: each stops at
/// the entries the record counts, with an error naming the backup, within
/// the bound.
#[test]
fn ls_find_diff_of_shared_and_deep_trees_are_bounded() {
    use cbrfs::engine::browse;
    let dir = tempfile::tempdir().unwrap();
    let b = base_at(dir.path());
    craft_shared(&b, "shared", 40);
    craft_deep(&b, "deep", 10_000);
    for name in ["shared", "deep"] {
        let s = b.store.clone();
        let e = within("ls -R", BOUND, move || {
            browse::ls(&s, "v", name, None, true).unwrap_err()
        });
        assert!(e.to_string().contains(name), "{e}");
        assert!(e.to_string().contains("more than the"), "{e}");
        let s = b.store.clone();
        let e = within("diff", BOUND, move || {
            browse::diff(&s, "v", "good", name).unwrap_err()
        });
        assert!(e.to_string().contains(name), "{e}");
    }
    let s = b.store.clone();
    let r = within("find", BOUND, move || browse::find(&s, "v", "zzz").unwrap());
    assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    assert!(
        r.errors.iter().any(|e| e.contains("backup shared")),
        "{:?}",
        r.errors
    );
}

// ---- finding 6 ----

/// A directory member `x.img` and a disk member `x` would both be the
/// entry `x.img`: define and update refuse, naming both; a server
/// configuration that has them anyway (written before the rule) makes the
/// backup fail, and no record is written.
#[test]
fn server_members_that_share_an_entry_name_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = base_at(dir.path());
    let (d, disk, other) = (
        dir.path().join("m/x.img"),
        dir.path().join("n/x"),
        dir.path().join("o/y"),
    );
    for p in [&d, &other] {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
    std::fs::write(&disk, vec![1u8; 1 << 16]).unwrap();
    let e = servers::define(
        &b.store,
        "srv",
        &[NewMember::Path(d.clone()), NewMember::Disk(disk.clone())],
        None,
        None,
        None,
    )
    .unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("m/x.img") && msg.contains("n/x"), "{msg}");
    servers::define(
        &b.store,
        "srv",
        &[NewMember::Path(d.clone()), NewMember::Path(other)],
        None,
        None,
        None,
    )
    .unwrap();
    let e = servers::update(
        &b.store,
        "srv",
        ServerUpdate {
            add: vec![NewMember::Disk(disk.clone())],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    // As a configuration from before the rule would have it.
    let mut cfg = b.store.server("srv").unwrap();
    cfg.members.push(cbrfs::catalog::Member {
        name: "x".into(),
        kind: cbrfs::catalog::MemberKind::Disk,
        path: disk.to_string_lossy().into_owned(),
    });
    b.store.save_server(&cfg).unwrap();
    vaults::create(
        &b.store,
        vaults::NewVault {
            name: Some("w".into()),
            vault_type: cbrfs::catalog::VaultType::Server,
            capacity: "10GB".into(),
            description: String::new(),
            tags: vec![],
            compression: "zstd".into(),
            encrypt: false,
        },
    )
    .unwrap();
    vaults::associate_server(&b.store, "w", "srv", vec![]).unwrap();
    let s = b.store.clone();
    let r = within("backup", BOUND, move || {
        backup::prepare(
            &s,
            "w",
            backup::BackupOptions {
                name: Some("clash".into()),
                ..Default::default()
            },
        )
        .and_then(|p| p.run())
    });
    let e = r.expect_err("a backup with two entries x.img was made available");
    assert!(e.to_string().contains("srv"), "{e}");
    assert!(b.store.backup("w", "clash").is_err());
}

// ---- the stores for tests/crafted_store.sh ----

/// Write one crafted store per case under `$CBRFS_CRAFTED_DIR/<case>`
/// (each with its good backup): the shell test runs the release binary on
/// them under `timeout` and `prlimit --as`.
#[test]
#[ignore = "writes the stores of tests/crafted_store.sh"]
fn write_crafted_stores() {
    let Some(out) = std::env::var_os("CBRFS_CRAFTED_DIR") else {
        panic!("set CBRFS_CRAFTED_DIR");
    };
    let out = PathBuf::from(out);
    let case = |name: &str, craft: &dyn Fn(&Base)| {
        let b = base_at(&out.join(name));
        craft(&b);
    };
    case("escape", &|b| {
        craft_escape_meta(b, "escape", b"../../escaped-file")
    });
    case("escape-tree", &|b| {
        craft_escape_tree(b, "escapetree", b"../x")
    });
    case("split", &|b| {
        craft_roots_disagree(b, "split");
    });
    case("tiny", &|b| craft_one_byte_2gib(b, "tiny"));
    case("biglists", &|b| {
        craft_big_lists(b, "biglists");
    });
    case("shared", &|b| craft_shared(b, "shared", 40));
    case("deep", &|b| craft_deep(b, "deep", 10_000));
}

/// A chunk reference claiming one byte more than its blob holds (within
/// the file's recorded size): restore fails that file with the reader's
/// one length check, naming the file, the backup, the vault and both
/// lengths, and leaves no file of the wrong size.
#[test]
fn a_chunk_shorter_than_its_reference_fails_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = base_at(dir.path());
    let data = pseudo_random(5000, 11);
    let chunk = put_blobs(&b.store, "v", &[(BlobKind::Data, data)])[0];
    let f = Node {
        mode: 0o644,
        size: 5001,
        content: Content::Chunks(vec![ChunkRef {
            id: chunk,
            offset: 0,
            len: 5001,
        }]),
        ..Node::new(b"short".to_vec(), NodeKind::File)
    };
    save_rooted(&b, "short", tree_blob(&b, vec![f]));
    let e = restore_failures(&b, "short");
    for part in [
        "short",
        "backup short",
        "vault v",
        "has 5000 bytes, its file expects 5001",
    ] {
        assert!(e.contains(part), "{part:?} not in {e}");
    }
    let written = b.root.join("out-short/short/short");
    if let Ok(m) = std::fs::metadata(&written) {
        assert_ne!(m.len(), 5001, "restore wrote the file at its claimed size");
    }
}
