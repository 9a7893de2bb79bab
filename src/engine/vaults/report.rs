//! What `vault list` and `vault show` report: a vault with its use, backup
//! count and resources (the vault object of docs/JSON.md, serialized as it
//! is by `--json`), and the tag filters of a listing.

use crate::catalog::{Store, VaultConfig};
use crate::error::{Error, Result};
use crate::rules;
use serde::Serialize;

/// A vault as `vault list` and `vault show` report it (the vault object of
/// docs/JSON.md).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct VaultReport {
    /// Vault name.
    pub name: String,
    /// `filesystem`, `disk` or `server`.
    #[serde(rename = "type")]
    pub vault_type: String,
    /// Capacity, GB (2^30 bytes).
    pub capacity_gb: u64,
    /// Bytes its packs and indexes take; 0 when they cannot be read (a
    /// listing names the vault rather than failing on it).
    pub used_bytes: u64,
    /// Description.
    pub description: String,
    /// Tags, in the order they were set.
    pub tags: Vec<TagReport>,
    /// How new blobs are stored.
    pub compression: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Backup records, damaged ones included.
    pub backups: usize,
    /// Capacity minus use, never negative.
    pub free_bytes: u64,
    /// The applied policy.
    pub policy: Option<String>,
    /// The capacity grows when the vault is full.
    pub auto_expand: bool,
    /// Usage (%) past which a capacity task is recorded.
    pub threshold_percent: u8,
    /// Encrypted (chosen at creation, never changed).
    pub encrypted: bool,
    /// Why an encrypted vault listed without its password is locked: its
    /// description, tags and resources are sealed and shown empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked: Option<String>,
    /// Associated resources, in association order.
    pub resources: Vec<ResourceReport>,
    /// Where the vault's objects are, for a vault kept in a bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageReport>,
}

/// The bucket a remote vault is kept in (no credential: none is stored).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct StorageReport {
    /// `s3://bucket/prefix`.
    pub url: String,
    /// The S3 service.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The key prefix (empty, or ending in `/`).
    pub prefix: String,
    /// Bound of this host's cache of data, bytes.
    pub cache_bytes: u64,
}

impl VaultReport {
    /// The capacity in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_gb.saturating_mul(rules::GB)
    }
}

/// One tag of a vault.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct TagReport {
    /// Key.
    pub key: String,
    /// Value, may be empty.
    pub value: String,
}

/// A resource of a vault, as reported.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ResourceReport {
    /// Name, unique in the vault.
    pub name: String,
    /// `directory`, `disk` or `server`.
    pub kind: String,
    /// Source path.
    pub path: String,
    /// Exclude globs.
    pub excludes: Vec<String>,
    /// Apparent size when associated.
    pub size_bytes: u64,
    /// When associated, RFC 3339.
    pub added: String,
    /// `--one-file-system`.
    pub one_file_system: bool,
    /// `--exclude-caches`.
    pub exclude_caches: bool,
    /// `--exclude-if-present` names.
    pub exclude_if_present: Vec<String>,
    /// A disk that starts with a LUKS header now: encrypted at the source
    /// (read when reported; false for directories and servers).
    pub encrypted_at_source: bool,
}

/// The report of a vault, with its use and backup count read from the
/// store.
pub fn report(store: &Store, v: &VaultConfig) -> VaultReport {
    // A vault whose packs cannot be read still lists, with 0 used: the
    // listing is how the user finds it (docs/JSON.md).
    // From a listing: an encrypted vault is not unlocked for this.
    let used = store.used_bytes(&v.name).unwrap_or(0);
    let backups = store.backup_names(&v.name).map(|b| b.len()).unwrap_or(0);
    VaultReport {
        name: v.name.clone(),
        vault_type: v.vault_type.as_str().to_string(),
        capacity_gb: v.capacity_gb,
        used_bytes: used,
        description: v.description.clone(),
        tags: v
            .tags
            .iter()
            .map(|(k, val)| TagReport {
                key: k.clone(),
                value: val.clone(),
            })
            .collect(),
        compression: v.compression.to_string(),
        created: v.created.clone(),
        backups,
        free_bytes: v.capacity_bytes().saturating_sub(used),
        policy: v.policy.clone(),
        auto_expand: v.auto_expand,
        threshold_percent: v.threshold,
        encrypted: v.encrypted,
        locked: v.locked.clone(),
        storage: v.storage.as_ref().map(|r| StorageReport {
            url: r.url(),
            endpoint: r.endpoint.clone(),
            bucket: r.bucket.clone(),
            prefix: r.prefix.clone(),
            cache_bytes: r.cache_bytes,
        }),
        resources: v
            .resources
            .iter()
            .map(|r| ResourceReport {
                name: r.name.clone(),
                kind: r.kind.to_string(),
                path: r.path.clone(),
                excludes: r.excludes.clone(),
                size_bytes: r.size,
                added: r.added.clone(),
                one_file_system: r.one_file_system,
                exclude_caches: r.exclude_caches,
                exclude_if_present: r.exclude_if_present.clone(),
                encrypted_at_source: r.kind == crate::model::ResourceKind::Disk
                    && crate::engine::luks::source_is_luks(std::path::Path::new(&r.path)),
            })
            .collect(),
    }
}

/// What `vault list` found: the vaults that matched, and the vault records
/// that could not be read (each error names its vault).
#[derive(Debug)]
pub struct VaultList {
    /// Matching vaults, by name.
    pub vaults: Vec<VaultReport>,
    /// Vaults whose record is damaged.
    pub damaged: Vec<Error>,
}

/// The vaults carrying every tag filter: `KEY=VALUE`, or `KEY` for any
/// value. A filter that is not a valid tag is refused before anything is
/// read.
pub fn list(store: &Store, tag_filters: &[String]) -> Result<VaultList> {
    let mut filters = Vec::new();
    for t in tag_filters {
        match t.split_once('=') {
            Some(_) => {
                let (k, v) = rules::parse_tag(t)?;
                filters.push((k, Some(v)));
            }
            None => {
                rules::check_tag_key(t)?;
                filters.push((t.clone(), None));
            }
        }
    }
    let (all, damaged) = store.vaults_and_damage()?;
    let vaults = all
        .iter()
        .filter(|v| {
            filters.iter().all(|(k, val)| {
                v.tags
                    .iter()
                    .any(|(tk, tv)| tk == k && val.as_ref().is_none_or(|x| x == tv))
            })
        })
        .map(|v| report(store, v))
        .collect();
    Ok(VaultList { vaults, damaged })
}

/// One vault.
pub fn show(store: &Store, name: &str) -> Result<VaultReport> {
    Ok(report(store, &store.vault(name)?))
}
