//! Every backup runs on a thread of its own, with a stack for deep trees,
//! whoever starts it (`backup create`, the mount's `mkdir`, a policy pass).

mod common;

use cbrfs::catalog::Store;
use cbrfs::engine::vaults;
use common::{filesystem_vault, take_backup};

/// The walk recurses once per directory level. Started from a thread with
/// a small stack (the scheduler's is a spawned thread's 2 MiB), a backup
/// of a deep tree still completes: it runs on its own thread.
#[test]
fn a_deep_tree_backs_up_from_a_thread_with_a_small_stack() {
    const LEVELS: usize = 1500;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    // "d/" per level: 3,000 bytes, within PATH_MAX.
    let mut deepest = src.clone();
    for _ in 0..LEVELS {
        deepest.push("d");
    }
    std::fs::create_dir_all(&deepest).unwrap();
    std::fs::write(deepest.join("leaf"), b"at the bottom").unwrap();
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
