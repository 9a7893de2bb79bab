//! Restore of a whole backup with several resources.

mod common;

use cbrfs::catalog::Store;
use cbrfs::engine::restore;
use cbrfs::engine::vaults;
use common::{filesystem_vault, take_backup};

/// Hard-link groups are numbered per resource: group 1 of the second
/// resource must not be linked to group 1 of the first.
#[test]
fn hard_links_stay_within_their_resource() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("x"), b"first resource").unwrap();
    std::fs::hard_link(a.join("x"), a.join("y")).unwrap();
    std::fs::write(b.join("p"), b"second resource").unwrap();
    std::fs::hard_link(b.join("p"), b.join("q")).unwrap();
    let store = Store::init(&dir.path().join("store")).unwrap();
    filesystem_vault(&store, "v", "", "zstd");
    vaults::associate_path(&store, "v", &a, Some("a".into()), vec![]).unwrap();
    vaults::associate_path(&store, "v", &b, Some("b".into()), vec![]).unwrap();
    take_backup(&store, "v", "b1");
    let out = dir.path().join("out");
    let stats = restore::restore(&store, "v", "b1", None, &out).unwrap();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    for (f, want) in [
        ("a/x", &b"first resource"[..]),
        ("a/y", b"first resource"),
        ("b/p", b"second resource"),
        ("b/q", b"second resource"),
    ] {
        assert_eq!(std::fs::read(out.join(f)).unwrap(), want, "{f}");
    }
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| std::fs::metadata(out.join(p)).unwrap().ino();
    assert_eq!(ino("a/x"), ino("a/y"));
    assert_eq!(ino("b/p"), ino("b/q"));
    assert_ne!(ino("a/x"), ino("b/p"));
}
