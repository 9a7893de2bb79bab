//! `ls`, `find`, `diff` and partial restore through the engine, on a
//! store made by real backups.

mod common;

use cbrfs::catalog::Store;
use cbrfs::engine::browse;
use cbrfs::engine::vaults;
use common::{filesystem_vault, take_backup};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A vault `v` with resource `data` and two backups: `b1`, then `b2`
/// after changing, adding and removing files.
fn two_backups(dir: &Path) -> Store {
    let src = dir.join("data");
    for d in ["home/alice", "home/bob", "etc", "same/deep"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    std::fs::write(src.join("home/alice/notes.txt"), b"first notes").unwrap();
    std::fs::write(src.join("home/alice/keep.txt"), b"kept").unwrap();
    std::fs::write(src.join("home/bob/a.txt"), b"bob's").unwrap();
    std::fs::write(src.join("etc/conf"), b"x=1").unwrap();
    std::fs::write(src.join("same/deep/f"), b"unchanged").unwrap();
    let store = Store::init(&dir.join("store")).unwrap();
    filesystem_vault(&store, "v", "", "zstd");
    vaults::associate_path(&store, "v", &src, Some("data".into()), vec![]).unwrap();
    take_backup(&store, "v", "b1");
    // Same size, other bytes: a content change only the chunks show.
    std::fs::write(src.join("home/alice/notes.txt"), b"other notes").unwrap();
    std::fs::set_permissions(src.join("etc/conf"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(src.join("home/alice/new.txt"), b"new").unwrap();
    std::fs::remove_file(src.join("home/bob/a.txt")).unwrap();
    take_backup(&store, "v", "b2");
    store
}

fn paths(es: &[browse::Entry]) -> Vec<&str> {
    es.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn ls_lists_a_backups_tree() {
    let dir = tempfile::tempdir().unwrap();
    let store = two_backups(dir.path());
    let l = browse::ls(&store, "v", "b1", None, false).unwrap();
    assert_eq!(paths(&l.entries), ["data"]);
    assert_eq!(l.entries[0].kind, "dir");
    let l = browse::ls(&store, "v", "b1", Some("data/home"), false).unwrap();
    assert_eq!(paths(&l.entries), ["data/home/alice", "data/home/bob"]);
    let l = browse::ls(&store, "v", "b1", Some("/data/home/"), true).unwrap();
    assert_eq!(
        paths(&l.entries),
        [
            "data/home/alice",
            "data/home/bob",
            "data/home/alice/keep.txt",
            "data/home/alice/notes.txt",
            "data/home/bob/a.txt"
        ]
    );
    // A file lists itself, with its metadata.
    let l = browse::ls(&store, "v", "b1", Some("data/home/alice/notes.txt"), false).unwrap();
    assert_eq!(l.entries.len(), 1);
    let e = &l.entries[0];
    assert_eq!((e.kind, e.size), ("file", 11));
    assert_eq!(e.mtime.len(), "2026-11-24T04:25:17Z".len());
    // latest is b2.
    let l = browse::ls(&store, "v", "latest", Some("data/home/alice"), false).unwrap();
    assert_eq!(l.backup, "b2");
    assert_eq!(
        paths(&l.entries),
        [
            "data/home/alice/keep.txt",
            "data/home/alice/new.txt",
            "data/home/alice/notes.txt"
        ]
    );
    // Everything recursively from the top.
    let l = browse::ls(&store, "v", "b2", None, true).unwrap();
    assert!(paths(&l.entries).contains(&"data/same/deep/f"));
}

#[test]
fn ls_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = two_backups(dir.path());
    for (path, want) in [
        ("nope/x", "has no resource \"nope\""),
        ("data/home/carol", "data/home has no entry \"carol\""),
        ("data/etc/conf/x", "data/etc/conf is not a directory"),
        ("data/../x", "'..' is not allowed"),
    ] {
        let e = browse::ls(&store, "v", "b1", Some(path), false).unwrap_err();
        assert!(e.to_string().contains(want), "{path}: {e}");
        assert_eq!(e.exit_code(), 2, "{path}: {e}");
    }
    let e = browse::ls(&store, "v", "b9", None, false).unwrap_err();
    assert!(e.to_string().contains("b9"), "{e}");
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn find_says_in_which_backups_a_path_exists() {
    let dir = tempfile::tempdir().unwrap();
    let store = two_backups(dir.path());
    let r = browse::find(&store, "v", "notes.txt").unwrap();
    let got: Vec<(&str, &str, u64)> = r
        .matches
        .iter()
        .map(|m| (m.backup.as_str(), m.entry.path.as_str(), m.entry.size))
        .collect();
    assert_eq!(
        got,
        [
            ("b1", "data/home/alice/notes.txt", 11),
            ("b2", "data/home/alice/notes.txt", 11)
        ]
    );
    // A glob on the path relative to the resource.
    let r = browse::find(&store, "v", "home/*/a.txt").unwrap();
    let got: Vec<&str> = r.matches.iter().map(|m| m.backup.as_str()).collect();
    assert_eq!(got, ["b1"]);
    // Or on the path as ls shows it, after the resource's name.
    let r = browse::find(&store, "v", "/data/home/bob/*").unwrap();
    let got: Vec<&str> = r.matches.iter().map(|m| m.backup.as_str()).collect();
    assert_eq!(got, ["b1"]);
    let r = browse::find(&store, "v", "*.txt").unwrap();
    assert_eq!(r.matches.len(), 3 + 3);
    assert!(r.errors.is_empty());
    assert!(browse::find(&store, "v", "zzz").unwrap().matches.is_empty());
}

#[test]
fn diff_shows_added_removed_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = two_backups(dir.path());
    let d = browse::diff(&store, "v", "b1", "b2").unwrap();
    let got: Vec<(&str, &str, bool, Vec<&str>)> = d
        .changes
        .iter()
        .filter(|c| c.kind != "dir")
        .map(|c| (c.path.as_str(), c.change, c.content, c.metadata.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("data/etc/conf", "changed", false, vec!["mode"]),
            ("data/home/alice/new.txt", "added", false, vec![]),
            ("data/home/alice/notes.txt", "changed", true, vec!["mtime"]),
            ("data/home/bob/a.txt", "removed", false, vec![]),
        ]
    );
    assert_eq!((d.added, d.removed), (1, 1));
    // data/same is the same tree in both: not read.
    assert!(d.trees_skipped >= 1, "{}", d.trees_skipped);
    assert!(!d.changes.iter().any(|c| c.path.starts_with("data/same")));
    // A backup against itself: nothing, and nothing below the root read.
    let d = browse::diff(&store, "v", "b2", "latest").unwrap();
    assert!(d.changes.is_empty(), "{:?}", d.changes);
    assert_eq!(d.trees_skipped, 1);
}

/// Every path under `root`, relative, sorted ("" for none).
fn tree_of(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn partial(
    store: &Store,
    to: &Path,
    include: &[&str],
    exclude: &[&str],
) -> cbrfs::error::Result<cbrfs::engine::restore::RestoreStats> {
    cbrfs::engine::restore::restore_with(
        store,
        "v",
        "b1",
        None,
        to,
        &cbrfs::engine::restore::RestoreOptions {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    )
}

/// CBR restores single files from file-system backups: one file, its
/// parents made with their recorded mode and time, nothing else.
#[test]
fn restore_includes_one_file_with_its_parents() {
    let dir = tempfile::tempdir().unwrap();
    let alice = dir.path().join("data/home/alice");
    std::fs::create_dir_all(&alice).unwrap();
    std::fs::set_permissions(&alice, std::fs::Permissions::from_mode(0o750)).unwrap();
    let store = two_backups(dir.path());
    for (i, inc) in ["home/alice/notes.txt", "/data/home/alice/notes.txt"]
        .iter()
        .enumerate()
    {
        let to = dir.path().join(format!("out{i}"));
        let st = partial(&store, &to, &[inc], &[]).unwrap();
        assert!(st.errors.is_empty(), "{:?}", st.errors);
        assert_eq!(
            tree_of(&to),
            ["home", "home/alice", "home/alice/notes.txt"],
            "{inc}"
        );
        assert_eq!(
            std::fs::read(to.join("home/alice/notes.txt")).unwrap(),
            b"first notes"
        );
        assert_eq!((st.files, st.dirs), (1, 2));
        use std::os::unix::fs::MetadataExt;
        let (m, o) = (
            std::fs::metadata(to.join("home/alice")).unwrap(),
            std::fs::metadata(&alice).unwrap(),
        );
        assert_eq!(m.mode() & 0o7777, 0o750);
        // b2 added a file to alice after b1: b1's recorded time is older
        // than today's, and the restored one is b1's.
        assert!(m.mtime() <= o.mtime());
    }
}

#[test]
fn restore_globs_include_and_exclude() {
    let dir = tempfile::tempdir().unwrap();
    let store = two_backups(dir.path());
    let to = dir.path().join("g");
    let st = partial(&store, &to, &["*.txt"], &["bob"]).unwrap();
    assert!(st.errors.is_empty(), "{:?}", st.errors);
    assert_eq!(
        tree_of(&to),
        [
            "home",
            "home/alice",
            "home/alice/keep.txt",
            "home/alice/notes.txt"
        ]
    );
    // A whole directory, less what is excluded below it.
    let to = dir.path().join("h");
    partial(&store, &to, &["home/"], &["home/alice/notes.txt"]).unwrap();
    assert_eq!(
        tree_of(&to),
        [
            "home",
            "home/alice",
            "home/alice/keep.txt",
            "home/bob",
            "home/bob/a.txt"
        ]
    );
    // Only --exclude: everything else.
    let to = dir.path().join("e");
    partial(&store, &to, &[], &["home", "deep"]).unwrap();
    assert_eq!(tree_of(&to), ["etc", "etc/conf", "same"]);
    // A glob that matches nothing restores nothing and says so.
    let to = dir.path().join("n");
    let st = partial(&store, &to, &["*.pdf"], &[]).unwrap();
    assert_eq!(tree_of(&to), Vec::<String>::new());
    assert_eq!(st.errors.len(), 1);
    assert!(st.errors[0].contains("*.pdf"), "{:?}", st.errors);
}

#[test]
fn restore_include_of_a_missing_path_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let store = two_backups(dir.path());
    let to = dir.path().join("m");
    let e = partial(&store, &to, &["home/alice/nots.txt"], &[]).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("home/alice/nots.txt"), "{e}");
    assert!(e.to_string().contains("no entry \"nots.txt\""), "{e}");
    // Nothing was made.
    assert!(!to.exists());
    let e = partial(&store, &to, &["../x"], &[]).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
}

/// With several resources, each under `to/<resource>`: an include names
/// the resource, and a resource nothing is taken from is not made.
#[test]
fn restore_include_across_resources() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(a.join("sub")).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("sub/x"), b"x").unwrap();
    std::fs::write(a.join("y"), b"y").unwrap();
    std::fs::write(b.join("z"), b"z").unwrap();
    let store = Store::init(&dir.path().join("store")).unwrap();
    filesystem_vault(&store, "v", "", "zstd");
    vaults::associate_path(&store, "v", &a, Some("a".into()), vec![]).unwrap();
    vaults::associate_path(&store, "v", &b, Some("b".into()), vec![]).unwrap();
    take_backup(&store, "v", "b1");
    let to = dir.path().join("out");
    let st = partial(&store, &to, &["a/sub/x"], &[]).unwrap();
    assert!(st.errors.is_empty(), "{:?}", st.errors);
    assert_eq!(tree_of(&to), ["a", "a/sub", "a/sub/x"]);
    let to = dir.path().join("out2");
    partial(&store, &to, &["b"], &[]).unwrap();
    assert_eq!(tree_of(&to), ["b", "b/z"]);
}

/// The vault's trees, counting reads.
struct Counting {
    repo: cbrfs::store::Repo,
    reads: std::cell::Cell<usize>,
}

impl cbrfs::engine::visit::Blobs for Counting {
    fn tree(&self, id: &cbrfs::store::BlobId) -> cbrfs::error::Result<cbrfs::model::Tree> {
        self.reads.set(self.reads.get() + 1);
        self.repo.tree(id)
    }
    fn list(&self, l: &cbrfs::model::ListRef) -> cbrfs::error::Result<Vec<cbrfs::model::ChunkRef>> {
        self.repo.list(l)
    }
}

/// Diff reads a pair of trees only where their ids differ: data, home,
/// home/alice, home/bob and etc changed (5 pairs); same and same/deep
/// did not and are never read.
#[test]
fn diff_does_not_read_unchanged_trees() {
    let dir = tempfile::tempdir().unwrap();
    let store = two_backups(dir.path());
    let c = Counting {
        repo: store.repo("v").unwrap(),
        reads: Default::default(),
    };
    let (a, b) = (
        store.backup("v", "b1").unwrap(),
        store.backup("v", "b2").unwrap(),
    );
    let d = browse::diff_records(&c, &a, &b).unwrap();
    assert_eq!(c.reads.get(), 10);
    assert_eq!(d.trees_skipped, 1);
}
