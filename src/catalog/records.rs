//! The catalog's records: the JSON files of vaults (`vault.json`),
//! servers and policies, and the typed words in them (vault type,
//! compression, member and resource kind). serde writes each enum as the
//! lowercase word the files have always held; reading a word not listed
//! here is damage naming the file (see `read_record`).

use crate::error::{Error, Result};
use crate::model::ResourceKind;
use crate::rules;
use serde::{Deserialize, Serialize};

/// Version of the catalog's JSON records.
pub const CATALOG_FORMAT: u32 = 1;

crate::names::words! {
    /// The type of a vault, which decides the resources it takes.
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum VaultType("vault type") {
        /// Directory trees (CBR: SFS Turbo file systems).
        Filesystem = "filesystem" | "file-system" | "fs",
        /// Block devices and disk images (CBR: EVS disks).
        Disk = "disk",
        /// Servers (CBR: ECS).
        Server = "server",
    }
}

crate::names::words! {
    /// How a vault stores its blobs: `zstd` or `none` in vault.json and the
    /// CLI.
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Compression("compression") {
        /// zstd, level 3.
        Zstd = "zstd",
        /// Stored as read.
        None = "none",
    }
}

crate::names::words! {
    /// What a server member is: `directory` or `disk` in its JSON and in a
    /// server backup's member list.
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum MemberKind("member kind") {
        /// A directory tree.
        Directory = "directory",
        /// A block device or disk image.
        Disk = "disk",
    }
}

impl MemberKind {
    /// The kind of resource the member is backed up as.
    pub fn resource_kind(self) -> ResourceKind {
        match self {
            MemberKind::Directory => ResourceKind::Directory,
            MemberKind::Disk => ResourceKind::Disk,
        }
    }
}

/// A resource associated with a vault.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// Name, unique in the vault; the directory name in the mount.
    pub name: String,
    /// `directory`, `disk` or `server`.
    pub kind: ResourceKind,
    /// Absolute source path.
    pub path: String,
    /// Exclude globs (directory resources).
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Size when associated, bytes.
    pub size: u64,
    /// When associated, RFC 3339.
    pub added: String,
    /// Stay on the resource root's file system: a directory on another
    /// device is kept as an empty directory (its mount point), as restic's
    /// `--one-file-system` does. Absent in older catalogs: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_file_system: bool,
    /// Leave out the contents of a directory holding a `CACHEDIR.TAG` with
    /// the standard signature, keeping the tag itself (restic's and borg's
    /// `--exclude-caches`). Absent in older catalogs: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclude_caches: bool,
    /// Leave out the contents of a directory holding an entry of one of
    /// these names, keeping that entry (restic's `--exclude-if-present`).
    /// Absent in older catalogs: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_if_present: Vec<String>,
}

/// A member of a server: a directory tree or a disk.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Name, unique in the server; the entry name in backups.
    pub name: String,
    /// `directory` or `disk`.
    pub kind: MemberKind,
    /// Absolute source path.
    pub path: String,
}

/// A server (`servers/<name>.json`): members backed up together in one run,
/// with optional hooks around the backup for application consistency.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Catalog format.
    pub format: u32,
    /// Server name.
    pub name: String,
    /// Members, in the order given.
    pub members: Vec<Member>,
    /// Shell command run before any member is read.
    pub pre_hook: Option<String>,
    /// Shell command run after the backup, also when it failed.
    pub post_hook: Option<String>,
    /// Time limit of each hook, seconds.
    pub hook_timeout_s: u64,
    /// Creation time, RFC 3339.
    pub created: String,
}

/// A vault's settings (`vault.json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VaultConfig {
    /// Catalog format.
    pub format: u32,
    /// Vault name.
    pub name: String,
    /// Vault type.
    #[serde(rename = "type")]
    pub vault_type: VaultType,
    /// Capacity in GB (2^30 bytes).
    pub capacity_gb: u64,
    /// Description.
    pub description: String,
    /// Tags in the order given.
    pub tags: Vec<(String, String)>,
    /// `zstd` or `none`.
    pub compression: Compression,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Associated resources.
    pub resources: Vec<Resource>,
    /// The backup policy applied, if any.
    #[serde(default)]
    pub policy: Option<String>,
    /// When the policy was applied, ns since the epoch: its schedule counts
    /// from there.
    #[serde(default)]
    pub policy_applied_ns: i64,
    /// Grow the capacity to 1.25× when the vault is full.
    #[serde(default)]
    pub auto_expand: bool,
    /// Usage (%) past which a warning is logged and a task recorded.
    #[serde(default = "default_threshold")]
    pub threshold: u8,
    /// Where the vault's objects are kept when not in this store: an S3
    /// bucket (issue 14); this store then keeps the registration and a
    /// cache. Absent: in the store, as always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<crate::store::RemoteConfig>,
    /// Encrypted (docs/FORMAT.md §16): chosen at creation, never changed.
    /// Such a vault's settings have format [`VAULT_FORMAT_ENCRYPTED`], so
    /// that a reader without encryption refuses the vault instead of
    /// misreading it. Absent (false) in every unencrypted vault.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// An encrypted vault's description, tags and resources (the settings
    /// that name its data: paths, resource names), sealed with the vault's
    /// key (kind 5, docs/FORMAT.md §16.5) and base64-encoded; those fields
    /// are then empty in the clear. Absent in unencrypted vaults and in
    /// encrypted ones written before the settings were sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// Why the sealed settings could not be opened when this was read for
    /// a listing (no password at hand, a wrong one): description, tags and
    /// resources are then empty. Never stored.
    #[serde(skip)]
    pub locked: Option<String>,
}

/// The settings format of an encrypted vault (a v1 reader refuses it).
pub const VAULT_FORMAT_ENCRYPTED: u32 = 2;
/// The settings format of an unencrypted vault whose disks' chunks may be
/// LZ4 blocks (compression byte 2, docs/FORMAT.md §8). Readers before
/// LZ4 accept exactly 1 (clear) or 2 (encrypted), so they refuse such a
/// vault as a whole, naming its format, instead of finding its LZ4 blobs
/// undecodable and calling them damage.
pub const VAULT_FORMAT_LZ4: u32 = 3;
/// [`VAULT_FORMAT_LZ4`] of an encrypted vault.
pub const VAULT_FORMAT_ENCRYPTED_LZ4: u32 = 4;

fn default_threshold() -> u8 {
    80
}

/// A backup policy (`policies/<name>.json`): when to back up and what to
/// keep.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Catalog format.
    pub format: u32,
    /// Policy name.
    pub name: String,
    /// RRULE schedules, as given.
    pub schedules: Vec<String>,
    /// Retention, as given.
    pub retention: crate::policy::retention::RetentionArgs,
    /// Force a full backup after this many incrementals (-1: never).
    pub full_every: i32,
    /// False: no automatic backups.
    pub enabled: bool,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Creation time, ns (anchors INTERVAL schedules).
    pub created_ns: i64,
}

impl VaultConfig {
    /// Capacity in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_gb.saturating_mul(rules::GB)
    }
    /// True if blobs are zstd-compressed.
    pub fn compress(&self) -> bool {
        self.compression == Compression::Zstd
    }
    /// True if the vault's format lets a disk's chunks be LZ4 blocks
    /// (vaults made since LZ4; older ones keep zstd, so the binaries that
    /// made them still read them).
    pub fn disk_lz4(&self) -> bool {
        self.format == VAULT_FORMAT_LZ4 || self.format == VAULT_FORMAT_ENCRYPTED_LZ4
    }
    /// The settings format of a new vault: encrypted or not, with LZ4.
    pub fn new_format(encrypted: bool) -> u32 {
        if encrypted {
            VAULT_FORMAT_ENCRYPTED_LZ4
        } else {
            VAULT_FORMAT_LZ4
        }
    }
    /// The resource named `name`.
    pub fn resource(&self, name: &str) -> Result<&Resource> {
        self.resources
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| {
                Error::not_found(format!(
                    "resource {name:?} is not associated with vault {}",
                    self.name
                ))
                .code("BackupService.6135")
            })
    }
}
