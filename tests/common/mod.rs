//! Helpers shared by the in-process integration tests (`mod common;`):
//! reproducible bytes, a file-system vault, a backup taken by hand.
// Each test crate uses only some of these.
#![allow(dead_code)]

use cbrfs::catalog::{Store, VaultType};
use cbrfs::engine::backup::{self, BackupOptions};
use cbrfs::engine::vaults::{self, NewVault};
use cbrfs::model::BackupRecord;

/// `n` bytes from a xorshift generator seeded with `seed`: the same bytes
/// on every run, and not compressible.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

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
