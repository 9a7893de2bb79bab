//! Encrypted vaults end to end, in process (issue 15, docs/FORMAT.md §16):
//! what the store holds, round trips, and tampering. The CLI and mount
//! paths are in tests/encryption.sh.

mod common;

use cbrfs::catalog::{Store, VaultType};
use cbrfs::engine::restore;
use cbrfs::engine::vaults::{self, NewVault};
use common::take_backup;
use std::path::{Path, PathBuf};

const PASSWORD: &str = "correct horse battery staple";

/// A store with encrypted file-system vault `v` holding directory `src`.
/// The password comes from a file given as `--password-file` would be;
/// every test of this binary gives the same file and cheap KDF
/// parameters, so the process-wide settings agree whatever the order.
fn encrypted_store(dir: &Path, src: &Path) -> Store {
    let pw = std::env::temp_dir().join("cbrfs-encryption-test-password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    std::env::set_var("CBRFS_KDF_PARAMS", "m=256,t=1,p=1");
    cbrfs::store::keyring::set_password_file(Some(pw));
    let store = Store::init(&dir.join("store")).unwrap();
    vaults::create(
        &store,
        NewVault {
            name: Some("v".into()),
            vault_type: VaultType::Filesystem,
            capacity: "10GB".into(),
            description: String::new(),
            tags: vec![],
            compression: "zstd".into(),
            encrypt: true,
        },
    )
    .unwrap();
    vaults::associate_path(&store, "v", src, Some("r".into()), vec![]).unwrap();
    store
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A source tree whose file names and contents carry unique markers: once,
/// and repeated so that it compresses.
fn marked_source(dir: &Path) -> PathBuf {
    let src = dir.join("secret-source-dir");
    std::fs::create_dir_all(src.join("SECRETSUBDIRNAME")).unwrap();
    std::fs::write(
        src.join("SECRETFILENAME-once.txt"),
        b"before MARKER-7f3a9c-ONCE after",
    )
    .unwrap();
    std::fs::write(
        src.join("SECRETSUBDIRNAME/SECRETFILENAME-repeated.txt"),
        b"MARKER-7f3a9c-REPEATED ".repeat(20_000),
    )
    .unwrap();
    std::fs::write(src.join("random.bin"), common::pseudo_random(3 << 20, 5)).unwrap();
    src
}

/// No plaintext leaves: no marker, no file name and no path of the source
/// in any file of the store, the vault's settings included (its resources
/// are sealed, catalog/sealed.rs). And the vault is what it says: format 2,
/// slots, no clear key, version-2 packs, indexes and records.
#[test]
fn no_plaintext_in_the_store_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let src = marked_source(dir.path());
    let store = encrypted_store(dir.path(), &src);
    take_backup(&store, "v", "b1");
    // A second backup of the same tree deduplicates.
    take_backup(&store, "v", "b2");
    let vdir = store.vault_dir("v");
    assert!(
        !vdir.join("key").exists(),
        "an encrypted vault has no clear key"
    );
    assert!(vdir.join("keys/0.slot").exists());
    let settings = std::fs::read_to_string(vdir.join("vault.json")).unwrap();
    assert!(settings.contains("\"format\": 4"), "{settings}");
    assert!(settings.contains("\"encrypted\": true"), "{settings}");
    let needles: Vec<&[u8]> = vec![
        b"MARKER-7f3a9c",
        b"SECRETFILENAME",
        b"SECRETSUBDIRNAME",
        b"secret-source-dir",
    ];
    let mut objects = 0;
    for f in files_under(&vdir) {
        let bytes = std::fs::read(&f).unwrap();
        let name = f.strip_prefix(&vdir).unwrap().to_string_lossy().to_string();
        for n in &needles {
            assert!(
                !contains(&bytes, n) && !contains(name.as_bytes(), n),
                "{name} holds {:?}",
                String::from_utf8_lossy(n)
            );
        }
        for (prefix, magic) in [
            ("packs/", &b"CBRPACK1"[..]),
            ("index/", b"CBRIDX01"),
            ("backups/", b"CBRBKUP1"),
        ] {
            if name.starts_with(prefix) {
                assert_eq!(&bytes[..8], magic, "{name}");
                assert_eq!(
                    &bytes[8..12],
                    &2u32.to_le_bytes(),
                    "{name} is not version 2"
                );
                objects += 1;
            }
        }
    }
    assert!(objects >= 4, "packs, index and records: {objects}");
    // The settings naming the source are sealed (catalog/sealed.rs), and
    // nothing else in the whole store (task log, status, checks) names it.
    assert!(settings.contains("\"sealed\": \""), "{settings}");
    for f in files_under(store.root()) {
        let bytes = std::fs::read(&f).unwrap();
        for n in &needles {
            assert!(
                !contains(&bytes, n),
                "{} holds {:?}",
                f.display(),
                String::from_utf8_lossy(n)
            );
        }
    }
    assert_eq!(store.vault("v").unwrap().resources[0].name, "r");
    let b2 = store.backup("v", "b2").unwrap();
    assert!(b2.resources.iter().all(|r| r.name == "r"));
    let out = dir.path().join("out");
    let stats = restore::restore(&store, "v", "b2", None, &out).unwrap();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    for f in [
        "SECRETFILENAME-once.txt",
        "SECRETSUBDIRNAME/SECRETFILENAME-repeated.txt",
        "random.bin",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
}

/// Tampering is detected: a flipped byte, a truncation, or two objects of
/// the same kind swapped (packs, indexes, records) make restore and check
/// --read-data fail naming the object, never give wrong bytes.
#[test]
fn tampering_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let src = marked_source(dir.path());
    let store = encrypted_store(dir.path(), &src);
    take_backup(&store, "v", "b1");
    std::fs::write(src.join("random.bin"), common::pseudo_random(2 << 20, 6)).unwrap();
    take_backup(&store, "v", "b2");
    let vdir = store.vault_dir("v");
    let all = files_under(&vdir);
    let of = |prefix: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = all
            .iter()
            .filter(|p| {
                p.strip_prefix(&vdir)
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(prefix)
            })
            .cloned()
            .collect();
        v.sort();
        v
    };
    let packs = of("packs/");
    let indexes = of("index/");
    let records = of("backups/");
    assert!(packs.len() >= 2 && indexes.len() >= 2 && records.len() == 2);

    // Every way of damaging one object, each undone after its check.
    type Damage = Box<dyn Fn(&[u8]) -> Vec<u8>>;
    let damages: Vec<(&str, Damage)> = vec![
        (
            "flip",
            Box::new(|b: &[u8]| {
                let mut v = b.to_vec();
                let i = v.len() / 2;
                v[i] ^= 0x40;
                v
            }),
        ),
        ("truncate", Box::new(|b: &[u8]| b[..b.len() - 1].to_vec())),
    ];
    // `name` may be "a|b": a swap damages both objects, and whichever is
    // read first is the one named.
    let check_fails = |what: &str, name: &str| {
        let names: Vec<&str> = name.split('|').collect();
        let out = dir.path().join(format!("out-{}", rand_suffix()));
        let r1 = restore::restore(&store, "v", "b1", None, &out);
        let r2 = restore::restore(&store, "v", "b2", None, &out.with_extension("2"));
        let failed = |r: &cbrfs::error::Result<restore::RestoreStats>| match r {
            Err(e) => Some(e.to_string()),
            Ok(s) if !s.errors.is_empty() => Some(format!("{:?}", s.errors)),
            Ok(_) => None,
        };
        let msgs: Vec<String> = [failed(&r1), failed(&r2)].into_iter().flatten().collect();
        assert!(
            !msgs.is_empty(),
            "{what} of {name}: both restores succeeded"
        );
        assert!(
            msgs.iter().any(|m| names.iter().any(|n| m.contains(n))),
            "{what} of {name}: no message names it: {msgs:?}"
        );
        let check = cbrfs::engine::check::check(&store, Some("v"), true).unwrap();
        assert!(
            check[0]
                .problems
                .iter()
                .any(|m| names.iter().any(|n| m.contains(n))),
            "{what} of {name}: check --read-data does not name it: {:?}",
            check[0].problems
        );
    };
    let id_of = |p: &Path| p.file_stem().unwrap().to_string_lossy().to_string();
    for group in [&packs, &indexes, &records] {
        let victim = &group[0];
        let good = std::fs::read(victim).unwrap();
        for (what, f) in &damages {
            std::fs::write(victim, f(&good)).unwrap();
            check_fails(what, &id_of(victim));
            std::fs::write(victim, &good).unwrap();
        }
        // Swap two objects of the same kind.
        let other = &group[1];
        let good2 = std::fs::read(other).unwrap();
        std::fs::write(victim, &good2).unwrap();
        std::fs::write(other, &good).unwrap();
        check_fails("swap", &format!("{}|{}", id_of(victim), id_of(other)));
        std::fs::write(victim, &good).unwrap();
        std::fs::write(other, &good2).unwrap();
    }
    // A clear key planted beside the slots (a v1 vault's `key`): refused,
    // naming the vault, never used to read.
    std::fs::write(vdir.join("key"), vec![7u8; 192]).unwrap();
    let e = store
        .repo("v")
        .err()
        .expect("a planted clear key was accepted");
    assert!(e.to_string().contains("clear `key`"), "{e}");
    std::fs::remove_file(vdir.join("key")).unwrap();
    // Everything put back: both restore.
    for b in ["b1", "b2"] {
        let out = dir.path().join(format!("final-{b}"));
        let s = restore::restore(&store, "v", b, None, &out).unwrap();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}
