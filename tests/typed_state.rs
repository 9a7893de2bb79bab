//! Kinds read from the store are typed (issue 13): one that cbrfs does not
//! know is an error naming the file it came from, no longer taken for a
//! directory (a backup once read any unknown resource kind as a directory
//! tree).

mod common;

use cbrfs::catalog::Store;
use cbrfs::engine::backup::{self, BackupOptions};
use cbrfs::engine::vaults;
use common::{filesystem_vault, take_backup};

#[test]
fn an_unknown_resource_kind_in_vault_json_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    let store = Store::init(&dir.path().join("store")).unwrap();
    filesystem_vault(&store, "v", "", "zstd");
    vaults::associate_path(&store, "v", &src, Some("src".into()), vec![]).unwrap();
    take_backup(&store, "v", "first");
    let vault_json = store.vault_dir("v").join("vault.json");
    let text = std::fs::read_to_string(&vault_json).unwrap();
    let kinds = text.matches("\"directory\"").count();
    assert_eq!(kinds, 1, "{text}");
    std::fs::write(&vault_json, text.replace("\"directory\"", "\"tape\"")).unwrap();
    let e = match backup::prepare(&store, "v", BackupOptions::default()).and_then(|p| p.run()) {
        Ok(r) => panic!("a resource of kind \"tape\" was backed up: {r:?}"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert!(msg.contains(&*vault_json.to_string_lossy()), "{msg}");
    assert!(msg.contains("tape"), "{msg}");
    // The same file with its kind back reads again, unchanged.
    std::fs::write(&vault_json, &text).unwrap();
    assert_eq!(
        store.vault("v").unwrap().resources[0].kind.as_str(),
        "directory"
    );
}

/// A vault's compression is `zstd` or `none`; another word in vault.json
/// was read as "no compression".
#[test]
fn an_unknown_compression_in_vault_json_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::init(&dir.path().join("store")).unwrap();
    filesystem_vault(&store, "v", "", "zstd");
    let vault_json = store.vault_dir("v").join("vault.json");
    let text = std::fs::read_to_string(&vault_json).unwrap();
    std::fs::write(&vault_json, text.replace("\"zstd\"", "\"lz4\"")).unwrap();
    let e = store.vault("v").unwrap_err();
    assert!(
        e.to_string().contains(&*vault_json.to_string_lossy()),
        "{e}"
    );
    assert!(e.to_string().contains("lz4"), "{e}");
}
