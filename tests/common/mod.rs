//! Helpers shared by the in-process integration tests (`mod common;`):
//! reproducible bytes, a file-system vault, a backup taken by hand, a
//! vault with a daily policy, a copy of a golden store.
// Each test crate uses only some of these.
#![allow(dead_code)]

use cbrfs::catalog::{Store, VaultType};
use cbrfs::engine::backup::{self, BackupOptions};
use cbrfs::engine::vaults::{self, NewVault};
use cbrfs::model::BackupRecord;

mod random;
#[allow(unused_imports)] // (as dead_code above: not every test crate uses it)
pub use random::pseudo_random;

/// Create file-system vault `name` (capacity 10GB, no tags).
pub fn filesystem_vault(store: &Store, name: &str, description: &str, compression: &str) {
    vaults::create(
        store,
        NewVault {
            name: Some(name.into()),
            vault_type: VaultType::Filesystem,
            capacity: "10GB".into(),
            description: description.into(),
            tags: vec![],
            compression: compression.into(),
            encrypt: false,
        },
    )
    .unwrap();
}

/// Take backup `name` of vault `vault`, as `cbrfs backup create` does.
pub fn take_backup(store: &Store, vault: &str, name: &str) -> BackupRecord {
    backup::prepare(
        store,
        vault,
        BackupOptions {
            name: Some(name.into()),
            ..Default::default()
        },
    )
    .unwrap()
    .run()
    .unwrap()
}

/// Store `blobs` in `vault` through the store's own writer (so they are
/// packed and indexed as a backup's would be); their ids, in order.
pub fn put_blobs(
    store: &Store,
    vault: &str,
    blobs: &[(cbrfs::store::BlobKind, Vec<u8>)],
) -> Vec<cbrfs::store::BlobId> {
    let repo = store.repo(vault).unwrap();
    let mut w = cbrfs::store::RepoWriter::new(&repo, false);
    let ids = blobs
        .iter()
        .map(|(k, d)| w.add(*k, d).unwrap().id)
        .collect();
    w.finish().unwrap();
    ids
}

/// Run `f` on a thread and wait at most `secs` for it: a hostile store
/// must not make a command hang or run long. A panic in `f` fails the
/// test with its message.
pub fn within<T: Send + 'static>(
    what: &str,
    secs: u64,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::Builder::new()
        .name(what.into())
        .stack_size(8 << 20)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .unwrap();
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => panic!("{what}: ended without a result"),
        },
        Err(_) => panic!("{what}: did not finish within {secs} s"),
    }
}

/// A store in `dir`/store with vault `v` of `dir`/src (one file), one
/// backup named `backup`, and policy `p` (daily at 03:00, keep forever)
/// applied to it.
pub fn store_with_daily_policy(dir: &std::path::Path, backup: &str) -> Store {
    use cbrfs::engine::policy;
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    let store = Store::init(&dir.join("store")).unwrap();
    filesystem_vault(&store, "v", "", "none");
    vaults::associate_path(&store, "v", &src, Some("src".into()), vec![]).unwrap();
    take_backup(&store, "v", backup);
    policy::create(
        &store,
        Some("p".into()),
        policy::PolicySpec {
            schedules: vec!["FREQ=DAILY;BYHOUR=3;BYMINUTE=0".into()],
            retention: cbrfs::policy::retention::RetentionArgs {
                keep_forever: true,
                ..Default::default()
            },
            full_every: None,
            disabled: false,
        },
    )
    .unwrap();
    policy::apply(&store, "p", "v").unwrap();
    store
}

/// Copy the golden store `from` to `to`. Git keeps neither the store's
/// modes nor its empty directories; the copy gets the store's own modes
/// back (files 0600, directories 0700) and can take the lock files a
/// reader may write.
pub fn copy_golden(from: &std::path::Path, to: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for ent in std::fs::read_dir(from).unwrap() {
        let ent = ent.unwrap();
        let dest = to.join(ent.file_name());
        if ent.file_type().unwrap().is_dir() {
            copy_golden(&ent.path(), &dest);
        } else {
            std::fs::copy(ent.path(), &dest).unwrap();
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}
