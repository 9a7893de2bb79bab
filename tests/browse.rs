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
    let store = Store::open(&dir.join("store")).unwrap();
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
