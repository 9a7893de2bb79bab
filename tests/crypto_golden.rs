//! Golden vectors of the encrypted format (docs/FORMAT.md §16): key slots, one
//! sealed object of each kind and blob ids, in `tests/golden/crypto-v2/`,
//! written once by `make_crypto_golden` and never regenerated. Each is read
//! twice: by the library, and by a decoder written from FORMAT.md §16 alone
//! with the cryptographic crates used directly, so that a change of a byte
//! layout, a context string or a kind number in the code fails here.

use cbrfs::crypto::slot::{self, Secret};
use cbrfs::crypto::{MasterKey, Object};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/crypto-v2")
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn arr16(v: &[u8]) -> [u8; 16] {
    v.try_into().expect("16 bytes")
}

fn arr32(v: &[u8]) -> [u8; 32] {
    v.try_into().expect("32 bytes")
}

/// The inputs the golden files were made from.
struct Inputs {
    master: [u8; 32],
    password: &'static [u8],
    key_file: Vec<u8>,
    pack_id: [u8; 16],
    index_id: [u8; 16],
    backup: &'static str,
}

fn inputs() -> Inputs {
    let mut master = [0u8; 32];
    for (i, b) in master.iter_mut().enumerate() {
        *b = i as u8;
    }
    Inputs {
        master,
        password: b"cbrfs golden password",
        key_file: (0..64u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(5))
            .collect(),
        pack_id: [0x11; 16],
        index_id: [0x22; 16],
        backup: "golden",
    }
}

/// Known data and the name of its sealed file.
const BLOB: &[u8] = b"cbrfs golden blob: compress, then seal\n";
const TRAILER: &[u8] = b"a pack's blob table";
const INDEX: &[u8] = b"an index's entries";
const RECORD: &[u8] = b"a backup record's payload";
const CONFIG: &[u8] = b"{\"name\": \"golden\"}";

fn vectors() -> serde_json::Value {
    let text = std::fs::read_to_string(dir().join("vectors.json")).expect("vectors.json");
    serde_json::from_str(&text).expect("vectors.json is JSON")
}

#[test]
fn library_reads_the_golden_vectors() {
    let v = vectors();
    let inp = inputs();
    let d = dir();
    assert_eq!(v["master_key"], hex(&inp.master));
    let m = MasterKey::from_bytes(inp.master);
    assert_eq!(hex(&m.key_id()), v["key_id"]);
    assert_eq!(m.chunker_seed().to_string(), v["chunker_seed"]);

    // Slots: 0 by password, 1 by key file.
    let s0 = std::fs::read(d.join("keys/0.slot")).unwrap();
    let got = slot::unlock(&s0, 0, Secret::Password(inp.password), "golden").unwrap();
    assert_eq!(got.key_id(), m.key_id());
    let e = slot::unlock(&s0, 0, Secret::Password(b"wrong"), "golden").unwrap_err();
    assert_eq!(e.to_string(), "wrong password for vault golden");
    let s1 = std::fs::read(d.join("keys/1.slot")).unwrap();
    let got = slot::unlock(&s1, 1, Secret::KeyFile(&inp.key_file), "golden").unwrap();
    assert_eq!(got.key_id(), m.key_id());
    let h = slot::SlotHeader::decode(&s0, "slot 0").unwrap();
    assert_eq!(
        h.params,
        Some(slot::KdfParams {
            m_kib: 256,
            t: 2,
            p: 1
        })
    );

    // Blob ids.
    let ids = m.blob_id_key();
    for pair in v["blob_ids"].as_array().unwrap() {
        let data = pair["data"].as_str().unwrap().as_bytes();
        assert_eq!(hex(&ids.id(data)), pair["id"], "{pair}");
    }

    // One sealed object of each kind.
    let k = m.seal_key();
    let blob_id = ids.id(BLOB);
    let cases: [(&str, Object, &[u8]); 5] = [
        ("blob.sealed", Object::PackBlob(&blob_id), BLOB),
        ("trailer.sealed", Object::PackTrailer(&inp.pack_id), TRAILER),
        ("index.sealed", Object::Index(&inp.index_id), INDEX),
        ("record.sealed", Object::Record(inp.backup), RECORD),
        ("config.sealed", Object::Config, CONFIG),
    ];
    for (file, obj, plain) in cases {
        let sealed = std::fs::read(d.join(file)).unwrap();
        assert_eq!(&k.open(obj, &sealed).unwrap()[..], plain, "{file}");
        // Not as another object of the same kind.
        let other = [0x33u8; 16];
        let wrong = match obj {
            Object::PackBlob(_) => Object::PackBlob(&other),
            Object::PackTrailer(_) => Object::PackTrailer(&other),
            Object::Index(_) => Object::Index(&other),
            Object::Record(_) => Object::Record("other"),
            Object::Config => Object::Record("golden"),
        };
        assert!(k.open(wrong, &sealed).is_err(), "{file} opened as {wrong}");
    }
}

/// FORMAT.md §16, transcribed: context strings, associated data, slot
/// header offsets. Nothing here calls cbrfs::crypto.
mod from_the_doc {
    use super::*;
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

    pub fn derive(ctx: &str, master: &[u8; 32]) -> [u8; 32] {
        blake3::derive_key(ctx, master)
    }

    pub fn ad(kind: u8, binding: &[u8]) -> Vec<u8> {
        let mut ad = b"cbrfs-v2".to_vec();
        ad.push(1);
        ad.push(kind);
        ad.extend_from_slice(&(binding.len() as u32).to_le_bytes());
        ad.extend_from_slice(binding);
        ad
    }

    pub fn open(key: &[u8; 32], ad: &[u8], sealed: &[u8]) -> Vec<u8> {
        assert!(sealed.len() >= 41);
        assert_eq!(sealed[0], 1, "scheme");
        let cipher = XChaCha20Poly1305::new(key.into());
        let nonce = XNonce::from_slice(&sealed[1..25]);
        let tag = Tag::from_slice(&sealed[sealed.len() - 16..]);
        let mut buf = sealed[25..sealed.len() - 16].to_vec();
        cipher
            .decrypt_in_place_detached(nonce, ad, &mut buf, tag)
            .expect("tag verifies");
        buf
    }

    pub fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }

    /// The master key in slot `number`.
    pub fn unlock(slot: &[u8], number: u32, secret: &[u8]) -> [u8; 32] {
        assert_eq!(slot.len(), 153);
        assert_eq!(&slot[0..8], b"CBRSLOT1");
        assert_eq!(u32_at(slot, 8), 2);
        let salt = &slot[32..64];
        let mut kek = [0u8; 32];
        match slot[12] {
            1 => {
                let params = argon2::Params::new(
                    u32_at(slot, 16),
                    u32_at(slot, 20),
                    u32_at(slot, 24),
                    Some(32),
                )
                .unwrap();
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into(secret, salt, &mut kek)
                    .unwrap();
            }
            2 => {
                let mut h = blake3::Hasher::new_derive_key("cbrfs 2026-11-26 v2 key file KEK");
                h.update(salt);
                h.update(secret);
                kek = *h.finalize().as_bytes();
            }
            k => panic!("kdf {k}"),
        }
        let mut binding = slot[..80].to_vec();
        binding.extend_from_slice(&number.to_le_bytes());
        let master = open(&kek, &ad(6, &binding), &slot[80..]);
        let master = arr32(&master);
        let key_id = &derive("cbrfs 2026-11-26 v2 master key id", &master)[..16];
        assert_eq!(key_id, &slot[64..80], "key id");
        master
    }
}

#[test]
fn an_independent_decoder_written_from_format_md_reads_them() {
    use from_the_doc::*;
    let v = vectors();
    let inp = inputs();
    let d = dir();
    let s0 = std::fs::read(d.join("keys/0.slot")).unwrap();
    assert_eq!(unlock(&s0, 0, inp.password), inp.master);
    let s1 = std::fs::read(d.join("keys/1.slot")).unwrap();
    assert_eq!(unlock(&s1, 1, &inp.key_file), inp.master);
    assert_eq!(
        &s1[16..28],
        &[0u8; 12],
        "key-file slot has no argon2 parameters"
    );

    let seal = derive("cbrfs 2026-11-26 v2 object sealing key", &inp.master);
    let idk = derive("cbrfs 2026-11-26 v2 blob id key", &inp.master);
    let seed = derive("cbrfs 2026-11-26 v2 chunker seed", &inp.master);
    assert_eq!(
        u64::from_le_bytes(seed[..8].try_into().unwrap()).to_string(),
        v["chunker_seed"]
    );
    let id = |data: &[u8]| arr16(&blake3::keyed_hash(&idk, data).as_bytes()[..16]);
    for pair in v["blob_ids"].as_array().unwrap() {
        let data = pair["data"].as_str().unwrap().as_bytes();
        assert_eq!(hex(&id(data)), pair["id"]);
    }
    // Every sealed file as vectors.json describes it: kind, binding,
    // plaintext.
    let sealed = v["sealed"].as_object().unwrap();
    assert_eq!(sealed.len(), 5);
    for (file, want) in sealed {
        let bytes = std::fs::read(d.join(file)).unwrap();
        let kind = want["kind"].as_u64().unwrap() as u8;
        let binding = unhex(want["binding"].as_str().unwrap());
        let plain = want["plaintext"].as_str().unwrap().as_bytes();
        assert_eq!(bytes.len(), plain.len() + 41, "{file}");
        assert_eq!(open(&seal, &ad(kind, &binding), &bytes), plain, "{file}");
    }
    assert_eq!(sealed["blob.sealed"]["binding"], hex(&id(BLOB)));
    assert_eq!(unhex(v["master_key"].as_str().unwrap()), inp.master);
    assert_eq!(std::fs::read(d.join("keyfile.bin")).unwrap(), inp.key_file);
}

/// Writes the golden files; run once, by hand, with
/// `CBRFS_MAKE_CRYPTO_GOLDEN=1 cargo test --test crypto_golden -- --ignored`.
/// Refuses to overwrite: golden files are never regenerated (FORMAT.md §14.4).
#[test]
#[ignore]
fn make_crypto_golden() {
    if std::env::var_os("CBRFS_MAKE_CRYPTO_GOLDEN").is_none() {
        return;
    }
    let d = dir();
    assert!(
        !d.exists(),
        "{} exists: golden files are never regenerated",
        d.display()
    );
    std::fs::create_dir_all(d.join("keys")).unwrap();
    let inp = inputs();
    let m = MasterKey::from_bytes(inp.master);
    let params = slot::KdfParams {
        m_kib: 256,
        t: 2,
        p: 1,
    };
    let s0 = slot::create_slot(Secret::Password(inp.password), params, &m, 0).unwrap();
    std::fs::write(d.join("keys/0.slot"), s0).unwrap();
    let s1 = slot::create_slot(Secret::KeyFile(&inp.key_file), params, &m, 1).unwrap();
    std::fs::write(d.join("keys/1.slot"), s1).unwrap();
    std::fs::write(d.join("keyfile.bin"), &inp.key_file).unwrap();
    let ids = m.blob_id_key();
    let k = m.seal_key();
    let blob_id = ids.id(BLOB);
    let cases: [(&str, Object, &[u8]); 5] = [
        ("blob.sealed", Object::PackBlob(&blob_id), BLOB),
        ("trailer.sealed", Object::PackTrailer(&inp.pack_id), TRAILER),
        ("index.sealed", Object::Index(&inp.index_id), INDEX),
        ("record.sealed", Object::Record(inp.backup), RECORD),
        ("config.sealed", Object::Config, CONFIG),
    ];
    for (file, obj, plain) in cases {
        std::fs::write(d.join(file), k.seal(obj, plain).unwrap()).unwrap();
    }
    let blob_ids: Vec<_> = ["", "a", "cbrfs", std::str::from_utf8(BLOB).unwrap()]
        .iter()
        .map(|s| serde_json::json!({"data": s, "id": hex(&ids.id(s.as_bytes()))}))
        .collect();
    let v = serde_json::json!({
        "master_key": hex(&inp.master),
        "key_id": hex(&m.key_id()),
        "chunker_seed": m.chunker_seed().to_string(),
        "password": std::str::from_utf8(inp.password).unwrap(),
        "key_file": "keyfile.bin",
        "pack_id": hex(&inp.pack_id),
        "index_id": hex(&inp.index_id),
        "backup": inp.backup,
        "blob_ids": blob_ids,
        "sealed": {
            "blob.sealed": {"kind": 1, "binding": hex(&blob_id), "plaintext": std::str::from_utf8(BLOB).unwrap()},
            "trailer.sealed": {"kind": 2, "binding": hex(&inp.pack_id), "plaintext": std::str::from_utf8(TRAILER).unwrap()},
            "index.sealed": {"kind": 3, "binding": hex(&inp.index_id), "plaintext": std::str::from_utf8(INDEX).unwrap()},
            "record.sealed": {"kind": 4, "binding": hex(inp.backup.as_bytes()), "plaintext": std::str::from_utf8(RECORD).unwrap()},
            "config.sealed": {"kind": 5, "binding": "", "plaintext": std::str::from_utf8(CONFIG).unwrap()},
        },
    });
    let mut text = serde_json::to_string_pretty(&v).unwrap();
    text.push('\n');
    std::fs::write(d.join("vectors.json"), text).unwrap();
}

/// The golden encrypted vault settings (FORMAT.md §16.5) in
/// `tests/golden/vault-v2/`: a store with vault `golden`, whose
/// `vault.json` has its description, tags and resources sealed, and vault
/// `golden-old`, an encrypted vault's settings as written before they were
/// sealed (format 2, all clear). Both hold slot 0 of `crypto-v2` (the
/// golden master key and password). Written once by `make_vault_v2_golden`.
fn vault_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/vault-v2")
}

/// What the golden vaults' settings hold.
const GOLDEN_PATH: &str = "/srv/golden-source";
const GOLDEN_DESCRIPTION: &str = "golden encrypted vault";

fn golden_settings(name: &str) -> cbrfs::catalog::VaultConfig {
    use cbrfs::catalog::{Compression, Resource, VaultConfig, VaultType};
    VaultConfig {
        format: cbrfs::catalog::VAULT_FORMAT_ENCRYPTED,
        name: name.into(),
        vault_type: VaultType::Filesystem,
        capacity_gb: 10,
        description: GOLDEN_DESCRIPTION.into(),
        tags: vec![("purpose".into(), "golden".into())],
        compression: Compression::Zstd,
        created: "2026-11-26T12:00:00Z".into(),
        resources: vec![Resource {
            name: "src".into(),
            kind: cbrfs::model::ResourceKind::Directory,
            path: GOLDEN_PATH.into(),
            excludes: vec!["*.tmp".into()],
            size: 4096,
            added: "2026-11-26T12:00:00Z".into(),
            one_file_system: false,
            exclude_caches: false,
            exclude_if_present: Vec::new(),
        }],
        policy: None,
        policy_applied_ns: 0,
        auto_expand: false,
        threshold: 80,
        storage: None,
        encrypted: true,
        sealed: None,
        locked: None,
    }
}

/// Copy directory `from` into `to`, recursively.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// The library opens both golden vaults' settings with the golden password:
/// the sealed ones, and the clear ones written before sealing (a store of
/// that time stays readable).
#[test]
fn library_reads_the_golden_vault_settings() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&vault_dir(), &tmp.path().join("store"));
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, [inputs().password, b"\n"].concat()).unwrap();
    cbrfs::store::keyring::set_password_file(Some(pw));
    let store = cbrfs::catalog::Store::open(&tmp.path().join("store")).unwrap();
    for name in ["golden", "golden-old"] {
        let got = store.vault(name).unwrap();
        assert_eq!(got, golden_settings(name), "{name}");
    }
}

/// The sealed settings, read with FORMAT.md §16.5 alone: the clear fields
/// that name data are empty, `sealed` is base64 of a kind-5 object with an
/// empty binding whose plaintext is the JSON of description, tags and
/// resources.
#[test]
fn an_independent_decoder_reads_the_sealed_vault_settings() {
    use base64::Engine as _;
    use from_the_doc::*;
    let text = std::fs::read_to_string(vault_dir().join("vaults/golden/vault.json")).unwrap();
    assert!(!text.contains(GOLDEN_PATH) && !text.contains(GOLDEN_DESCRIPTION));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], 2);
    assert_eq!(v["encrypted"], true);
    assert_eq!(v["description"], "");
    assert_eq!(v["tags"], serde_json::json!([]));
    assert_eq!(v["resources"], serde_json::json!([]));
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(v["sealed"].as_str().unwrap())
        .unwrap();
    let seal = derive("cbrfs 2026-11-26 v2 object sealing key", &inputs().master);
    let plain = open(&seal, &ad(5, b""), &sealed);
    let s: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(s["description"], GOLDEN_DESCRIPTION);
    assert_eq!(s["tags"], serde_json::json!([["purpose", "golden"]]));
    assert_eq!(s["resources"][0]["path"], GOLDEN_PATH);
    assert_eq!(s["resources"][0]["excludes"], serde_json::json!(["*.tmp"]));
}

/// Writes `tests/golden/vault-v2/`; run once, by hand, with
/// `CBRFS_MAKE_VAULT_GOLDEN=1 cargo test --test crypto_golden -- --ignored`.
/// Refuses to overwrite (FORMAT.md §14.4).
#[test]
#[ignore]
fn make_vault_v2_golden() {
    if std::env::var_os("CBRFS_MAKE_VAULT_GOLDEN").is_none() {
        return;
    }
    let d = vault_dir();
    assert!(!d.exists(), "{} exists: never regenerated", d.display());
    let store = cbrfs::catalog::Store::init(&d).unwrap();
    let slot0 = std::fs::read(dir().join("keys/0.slot")).unwrap();
    for name in ["golden", "golden-old"] {
        let v = store.vault_dir(name);
        for sub in ["keys", "backups", "packs", "index"] {
            std::fs::create_dir_all(v.join(sub)).unwrap();
        }
        std::fs::write(v.join("keys/0.slot"), &slot0).unwrap();
    }
    let pw = std::env::temp_dir().join("cbrfs-vault-golden-password");
    std::fs::write(&pw, [inputs().password, b"\n"].concat()).unwrap();
    cbrfs::store::keyring::set_password_file(Some(pw));
    store.save_vault(&golden_settings("golden")).unwrap();
    // As the code before the settings were sealed wrote them.
    let old = serde_json::to_vec_pretty(&golden_settings("golden-old")).unwrap();
    std::fs::write(store.vault_dir("golden-old").join("vault.json"), old).unwrap();
    // Local state of a store, not part of the golden format.
    let _ = std::fs::remove_file(d.join("catalog.lock"));
}
