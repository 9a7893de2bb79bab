//! The golden store of disk chunks in every codec (`tests/golden/disk-lz4/`,
//! written once by tests/golden/make-disk-lz4.sh, never regenerated): its
//! index holds LZ4 blobs (compression byte 2, docs/FORMAT.md §8) beside
//! zstd and raw ones, and this binary must go on restoring it byte for byte
//! and verifying every blob.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/disk-lz4")
}

fn cbrfs(store: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cbrfs"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

/// The compression byte of every index entry, by the layout of FORMAT.md
/// §7 (16-byte header with the pack count at 12, 16 bytes per pack, a
/// 1024-byte fan-out, 40-byte entries with the compression byte at 21, a
/// 16-byte footer).
fn compression_bytes(store: &Path) -> Vec<u8> {
    let dir = store.join("vaults/golden/index");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let b = std::fs::read(e.unwrap().path()).unwrap();
        let packs = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
        let at = 16 + 16 * packs + 1024;
        let n = (b.len() - 16 - at) / 40;
        out.extend((0..n).map(|i| b[at + 40 * i + 21]));
    }
    out
}

#[test]
fn the_lz4_golden_store_restores_and_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    common::copy_golden(&golden().join("store"), &store);
    let bytes = compression_bytes(&store);
    for code in [0u8, 1, 2] {
        assert!(
            bytes.contains(&code),
            "no blob of compression {code} in the golden store: {bytes:?}"
        );
    }
    let check = cbrfs(&store, &["check", "golden", "--read-data"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let img = tmp.path().join("disk.img");
    let img_s = img.to_str().unwrap();
    let r = cbrfs(
        &store,
        &[
            "restore",
            "golden",
            "b1",
            "--resource",
            "disk",
            "--to",
            img_s,
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let sum = Command::new("sha256sum").arg(&img).output().unwrap();
    let sum = String::from_utf8(sum.stdout).unwrap();
    let want = std::fs::read_to_string(golden().join("disk.img.sha256")).unwrap();
    assert_eq!(sum.split_whitespace().next(), Some(want.trim()));
}
