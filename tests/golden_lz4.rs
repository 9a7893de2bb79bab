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
fn compression_bytes(store: &Path, vault: &str) -> Vec<u8> {
    let dir = store.join("vaults").join(vault).join("index");
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
    let bytes = compression_bytes(&store, "golden");
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

/// A disk image of 64 chunks of 16 KiB like machine code (half words from
/// a small table, half random: zstd brings them nowhere near 4/10), from a
/// fixed xorshift seed.
fn code_like_image(path: &Path) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let table: Vec<u64> = (0..256).map(|_| next()).collect();
    let mut img = Vec::with_capacity(64 << 14);
    while img.len() < 64 << 14 {
        let r = next();
        let w = if r & 1 == 0 {
            table[(r >> 8) as usize % 256]
        } else {
            next()
        };
        img.extend_from_slice(&w.to_le_bytes());
    }
    std::fs::write(path, img).unwrap();
}

/// LZ4 blocks go only into vaults whose settings say readers know them
/// (format 3, or 4 encrypted: every vault made since LZ4). A vault of
/// format 1, made by an older binary, keeps zstd for every chunk, so that
/// binary still reads all of it; and an older binary refuses a format-3
/// vault as a whole (it accepts exactly 1 or 2).
#[test]
fn only_vaults_made_since_lz4_get_lz4_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    for v in ["new", "old"] {
        code_like_image(&tmp.path().join(v));
        let out = cbrfs(
            &store,
            &["vault", "create", v, "--type", "disk", "--capacity", "10"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let settings = store.join("vaults/old/vault.json");
    let text = std::fs::read_to_string(&settings).unwrap();
    assert!(text.contains("\"format\": 3,"), "a new clear vault: {text}");
    std::fs::write(&settings, text.replace("\"format\": 3,", "\"format\": 1,")).unwrap();
    for v in ["new", "old"] {
        let img = tmp.path().join(v);
        let img_s = img.to_str().unwrap();
        let out = cbrfs(
            &store,
            &["vault", "associate", v, "--disk", img_s, "--name", "disk"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = cbrfs(&store, &["backup", "create", v, "--name", "b1"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        compression_bytes(&store, "new").contains(&2),
        "no LZ4 block in the new vault"
    );
    let old = compression_bytes(&store, "old");
    assert!(
        old.contains(&1) && !old.contains(&2),
        "the format-1 vault: {old:?}"
    );
    for v in ["new", "old"] {
        let out = cbrfs(&store, &["check", v, "--read-data"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
