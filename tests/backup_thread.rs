//! Every backup runs on a thread of its own, with a stack for deep trees,
//! whoever starts it (`backup create`, the mount's `mkdir`, a policy pass).

mod common;

use cbrfs::catalog::Store;
use cbrfs::engine::vaults;
use common::{filesystem_vault, take_backup};

/// Levels of the deep tree: "d/" per level, 3,000 bytes, within PATH_MAX.
const LEVELS: usize = 1500;

/// `root/d/d/.../d`, [`LEVELS`] deep.
fn deepest(root: &std::path::Path) -> std::path::PathBuf {
    let mut p = root.to_path_buf();
    for _ in 0..LEVELS {
        p.push("d");
    }
    p
}

/// A tree of [`LEVELS`] nested directories at `root`, with a file `leaf`
/// at the bottom.
fn deep_tree(root: &std::path::Path) {
    std::fs::create_dir_all(deepest(root)).unwrap();
    std::fs::write(deepest(root).join("leaf"), b"at the bottom").unwrap();
}

/// The walk recurses once per directory level. Started from a thread with
/// a small stack (the scheduler's is a spawned thread's 2 MiB), a backup
/// of a deep tree still completes: it runs on its own thread.
#[test]
fn a_deep_tree_backs_up_from_a_thread_with_a_small_stack() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    deep_tree(&src);
    let store = Store::init(&dir.path().join("store")).unwrap();
    filesystem_vault(&store, "v", "", "zstd");
    vaults::associate_path(&store, "v", &src, Some("deep".into()), vec![]).unwrap();
    let rec = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || take_backup(&store, "v", "b1"))
        .unwrap()
        .join()
        .expect("the backup of a deep tree overflowed its caller's stack");
    assert_eq!(rec.stats.dirs, LEVELS as u64);
    assert_eq!(rec.stats.files_new, 1);
}

/// The verbs of the binary that walk a backup's trees, on a tree 1,500
/// levels deep: `backup create` runs the walk on the backup's own thread
/// (the one with a deep stack), while `check --read-data`, `restore` and
/// `prune` run on the main thread beside the progress follower of
/// `cli::with_progress`, which gives the work no thread of its own (their
/// walks keep explicit stacks).
#[test]
fn the_cli_backs_up_checks_restores_and_prunes_a_deep_tree() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    deep_tree(&src);
    let store = dir.path().join("store");
    let to = dir.path().join("restored");
    let cbrfs = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cbrfs"))
            .arg("--store")
            .arg(&store)
            .args(args)
            .env_remove("CBRFS_STORE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cbrfs {args:?}: exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    cbrfs(&[
        os("vault"),
        os("create"),
        os("v"),
        os("--type"),
        os("filesystem"),
        os("--capacity"),
        os("10GB"),
    ]);
    cbrfs(&[
        os("vault"),
        os("associate"),
        os("v"),
        os("--path"),
        src.as_os_str(),
        os("--name"),
        os("deep"),
    ]);
    let out = cbrfs(&[os("backup"), os("create"), os("v"), os("--name"), os("b1")]);
    assert!(out.contains("backup b1 of vault v is available"), "{out}");
    let out = cbrfs(&[os("check"), os("--read-data")]);
    assert!(out.contains("vault v: ok"), "{out}");
    cbrfs(&[os("restore"), os("v"), os("b1"), os("--to"), to.as_os_str()]);
    assert_eq!(
        std::fs::read(deepest(&to).join("leaf")).unwrap(),
        b"at the bottom"
    );
    cbrfs(&[os("backup"), os("delete"), os("v"), os("b1")]);
    cbrfs(&[os("prune")]);
}
