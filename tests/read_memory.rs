//! The mount's read path gives its memory back once reads stop (issue 13:
//! after a `cat` of a large file the mount kept the store's 32 MiB pool of
//! decoded-chunk buffers and its chunk cache for good). One test in its own
//! process: the pool is the process's, and no other test may fill it
//! meanwhile.

mod common;

use cbrfs::catalog::Store;
use cbrfs::engine::vaults;
use cbrfs::vfs::{Vfs, VfsOptions, ROOT_INO};
use common::{filesystem_vault, pseudo_random, take_backup};
use std::time::{Duration, Instant};

#[test]
fn an_idle_mount_gives_the_read_buffers_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Incompressible: its chunks (256 KiB to 4 MiB) are copied out of the
    // packs into pooled buffers.
    let data = pseudo_random(24 << 20, 7);
    std::fs::write(src.join("big"), &data).unwrap();
    let store = Store::init(&dir.path().join("store")).unwrap();
    filesystem_vault(&store, "v", "", "zstd");
    vaults::associate_path(&store, "v", &src, Some("src".into()), vec![]).unwrap();
    take_backup(&store, "v", "b1");
    let v = Vfs::new(
        store.clone(),
        VfsOptions {
            wait: Duration::from_millis(300),
            uid: 0,
            gid: 0,
        },
    );
    let mut ino = ROOT_INO;
    for part in ["v", "b1", "src", "big"] {
        ino = v.lookup(ino, part.as_bytes()).unwrap().ino;
    }
    let read_all = || {
        let fh = v.open(ino, libc::O_RDONLY).unwrap();
        let mut out = Vec::new();
        loop {
            // The kernel's requests of a sequential reader: 128 KiB.
            let d = v.read(fh, out.len() as u64, 128 << 10).unwrap();
            if d.is_empty() {
                break;
            }
            out.extend(d);
        }
        v.release(fh);
        out
    };
    assert!(read_all() == data);
    let after_reads = cbrfs::store::pooled_bytes();
    assert!(
        after_reads >= 1 << 20,
        "the reads left {after_reads} bytes in the pool"
    );
    // The mount's reaper looks every half second and lets go after
    // vfs::READ_IDLE without reads; a loaded machine may be slow.
    let t = Instant::now();
    while cbrfs::store::pooled_bytes() > 0 {
        assert!(
            t.elapsed() < cbrfs::vfs::READ_IDLE + Duration::from_secs(30),
            "the idle mount still holds {} bytes of read buffers",
            cbrfs::store::pooled_bytes()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        t.elapsed() >= cbrfs::vfs::READ_IDLE - Duration::from_millis(600),
        "given back before the mount was idle ({:?})",
        t.elapsed()
    );
    // And reads go on as before after it.
    assert!(read_all() == data);
}
