//! Vault and resource operations with CBR's rules: create, list, show,
//! update, delete, associate, dissociate. Each call validates its input,
//! takes its locks, records its task when it is one CBR lists (deleting a
//! vault, removing a resource), and returns what the CLI prints: a typed
//! report that `--json` serializes as it is (docs/JSON.md).

use crate::catalog::{self, Compression, Resource, Store, VaultConfig, VaultType};
use crate::error::{Error, Result};
use crate::model::ResourceKind;
use crate::rules;
use std::path::{Path, PathBuf};

mod report;
pub use report::{list, report, show, ResourceReport, TagReport, VaultList, VaultReport};

/// Delete a vault with its backups. One that holds backups is refused
/// unless `force` is set (CBR's BackupService.7301). Recorded as a
/// `delete_vault` task. Returns how many backups went with it.
pub fn delete(store: &Store, name: &str, force: bool) -> Result<usize> {
    // No password needed: deleting reads no sealed object.
    store.vault_settings(name)?;
    let n = store.backup_names(name)?.len();
    if n > 0 && !force {
        return Err(Error::conflict(format!(
            "vault {name} holds {n} backups: deleting it deletes them; add --force to do so"
        ))
        .code("BackupService.7301"));
    }
    let t = crate::tasks::start(
        store,
        crate::tasks::TaskType::DeleteVault,
        name,
        None,
        None,
        catalog::now_ns(),
    );
    let r = store.delete_vault(name);
    t.finish(&r);
    r?;
    Ok(n)
}

/// What `vault associate` names: a directory (with its options), a disk,
/// or a server.
#[derive(Clone, Debug, Default)]
pub struct Associate {
    /// A directory tree.
    pub path: Option<PathBuf>,
    /// A block device or disk image.
    pub disk: Option<PathBuf>,
    /// A defined server.
    pub server: Option<String>,
    /// Server members left out.
    pub exclude_members: Vec<String>,
    /// Resource name (directories and disks).
    pub name: Option<String>,
    /// Exclude globs.
    pub excludes: Vec<String>,
    /// Files of exclude globs, read now and stored with the resource.
    pub exclude_files: Vec<PathBuf>,
    /// Stay on each directory's file system.
    pub one_file_system: bool,
    /// Leave out the contents of tagged cache directories.
    pub exclude_caches: bool,
    /// Leave out the contents of directories holding one of these names.
    pub exclude_if_present: Vec<String>,
}

/// Associate a directory, a disk or a server with `vault`, refusing options
/// that do not apply to what is named (rather than ignoring them).
pub fn associate(store: &Store, vault: &str, a: Associate) -> Result<Resource> {
    if a.path.is_none()
        && (a.exclude_caches || !a.exclude_if_present.is_empty() || !a.exclude_files.is_empty())
    {
        return Err(Error::invalid(
            "--exclude-file, --exclude-caches and --exclude-if-present apply to a directory resource (--path)",
        ));
    }
    let mut excludes = a.excludes;
    for f in &a.exclude_files {
        excludes.extend(read_exclude_file(f)?);
    }
    match (a.path, a.disk, a.server) {
        (Some(p), _, _) => {
            let opts = DirOptions {
                excludes,
                one_file_system: a.one_file_system,
                exclude_caches: a.exclude_caches,
                exclude_if_present: a.exclude_if_present,
            };
            associate_dir(store, vault, &p, a.name, opts)
        }
        (_, Some(d), _) => associate_disk(store, vault, &d, a.name),
        (_, _, Some(sv)) => {
            if a.name.is_some() {
                return Err(Error::invalid(
                    "--name does not apply to a server: the resource takes the server's name",
                ));
            }
            associate_server_with(store, vault, &sv, a.exclude_members, a.one_file_system)
        }
        _ => Err(Error::invalid("give --path, --disk or --server")),
    }
}

/// Settings of a new vault.
#[derive(Clone, Debug)]
pub struct NewVault {
    /// Name; default `vault_XXXX`.
    pub name: Option<String>,
    /// Type.
    pub vault_type: VaultType,
    /// Capacity text, e.g. `100GB`.
    pub capacity: String,
    /// Description.
    pub description: String,
    /// `KEY=VALUE` tags.
    pub tags: Vec<String>,
    /// Compression text, `zstd` or `none` (checked with the other
    /// settings, in their order, by [`prepare`]).
    pub compression: String,
    /// Encrypted (docs/FORMAT.md §16).
    pub encrypt: bool,
}

/// Parse tags, rejecting duplicates and more than ten.
fn merge_tags(
    existing: &[(String, String)],
    add: &[String],
    remove: &[String],
) -> Result<Vec<(String, String)>> {
    let mut tags: Vec<(String, String)> = existing.to_vec();
    for k in remove {
        rules::check_tag_key(k)?;
        if !tags.iter().any(|(t, _)| t == k) {
            return Err(Error::not_found(format!(
                "tag {k:?} is not set on this vault"
            )));
        }
        tags.retain(|(t, _)| t != k);
    }
    let mut seen = std::collections::HashSet::new();
    for t in add {
        let (k, v) = rules::parse_tag(t)?;
        if !seen.insert(k.clone()) {
            return Err(Error::param(format!(
                "tag key {k:?} is given twice: tag keys are unique"
            )));
        }
        match tags.iter_mut().find(|(t, _)| *t == k) {
            Some(slot) => slot.1 = v,
            None => tags.push((k, v)),
        }
    }
    if tags.len() > rules::MAX_TAGS {
        return Err(Error::param(format!(
            "a vault has at most {} tags; this would give it {}",
            rules::MAX_TAGS,
            tags.len()
        ))
        .code("BackupService.6600"));
    }
    Ok(tags)
}

/// Create a vault.
pub fn create(store: &Store, v: NewVault) -> Result<VaultConfig> {
    let cfg = prepare(v)?;
    store.create_vault(&cfg)?;
    Ok(cfg)
}

/// Check a new vault's settings and build its record, without a store: the
/// CLI checks them before it creates a missing store, so that a refused
/// `vault create` leaves nothing behind.
pub fn prepare(v: NewVault) -> Result<VaultConfig> {
    let name = v
        .name
        .unwrap_or_else(|| format!("vault_{}", crate::fsutil::random_suffix(4)));
    rules::check_name("vault name", &name)?;
    rules::check_description("vault", &v.description)?;
    let capacity_gb = rules::parse_capacity(&v.capacity)?;
    let tags = merge_tags(&[], &v.tags, &[])?;
    let compression = Compression::parse(&v.compression)?;
    let cfg = VaultConfig {
        format: VaultConfig::new_format(v.encrypt),
        name,
        vault_type: v.vault_type,
        capacity_gb,
        description: v.description,
        tags,
        compression,
        created: catalog::now_rfc3339(),
        resources: Vec::new(),
        policy: None,
        policy_applied_ns: 0,
        auto_expand: false,
        threshold: 80,
        encrypted: v.encrypt,
        storage: None,
        sealed: None,
        locked: None,
    };
    Ok(cfg)
}

/// Create a vault whose objects are kept in remote `storage` (an S3
/// bucket), this store keeping its registration and a cache.
pub fn create_remote(
    store: &Store,
    v: NewVault,
    storage: crate::store::RemoteConfig,
) -> Result<VaultConfig> {
    let mut cfg = prepare(v)?;
    cfg.storage = Some(storage);
    store.create_vault(&cfg)?;
    Ok(cfg)
}

/// Changes to a vault.
#[derive(Clone, Debug, Default)]
pub struct VaultUpdate {
    /// New capacity (may only grow).
    pub capacity: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// Tags to set.
    pub tags: Vec<String>,
    /// Tag keys to remove.
    pub untag: Vec<String>,
    /// Turn auto-expansion on or off.
    pub auto_expand: Option<bool>,
    /// New usage threshold, %.
    pub threshold: Option<u8>,
}

/// Update a vault.
pub fn update(store: &Store, name: &str, u: VaultUpdate) -> Result<VaultConfig> {
    let _lock = store.lock()?;
    let mut cfg = store.vault(name)?;
    if let Some(c) = &u.capacity {
        let gb = rules::parse_capacity(c)?;
        if gb < cfg.capacity_gb {
            return Err(Error::param(format!(
                "vault {name}: capacity {gb} GB is smaller than the current {} GB: a vault's capacity can only be expanded",
                cfg.capacity_gb
            ))
            .code("BackupService.6101"));
        }
        cfg.capacity_gb = gb;
    }
    if let Some(d) = &u.description {
        rules::check_description("vault", d)?;
        cfg.description = d.clone();
    }
    cfg.tags = merge_tags(&cfg.tags, &u.tags, &u.untag)?;
    if let Some(a) = u.auto_expand {
        cfg.auto_expand = a;
    }
    if let Some(t) = u.threshold {
        if !(1..=100).contains(&t) {
            return Err(Error::param(format!(
                "vault {name}: usage threshold {t}% is out of range: 1 to 100"
            )));
        }
        cfg.threshold = t;
    }
    store.save_vault(&cfg)?;
    Ok(cfg)
}

/// What a resource is, for the association rules.
fn kind_label(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Disk => "a disk (--disk) goes into a disk vault",
        ResourceKind::Server => "a server (--server) goes into a server vault",
        ResourceKind::Directory => "a directory (--path) goes into a filesystem vault",
    }
}

/// The rules every association obeys, then the record: the vault takes
/// this type, the resource is in no vault yet and its name is free, the
/// vault has room for one more, and the resources fit its capacity.
fn add_resource(store: &Store, vault: &str, want: VaultType, r: Resource) -> Result<Resource> {
    let _lock = store.lock()?;
    let mut cfg = store.vault(vault)?;
    if cfg.vault_type != want {
        return Err(Error::param(format!(
            "vault {vault} is a {} vault: {}",
            cfg.vault_type.as_str(),
            kind_label(r.kind)
        ))
        .code("BackupService.6102"));
    }
    rules::check_name("resource name", &r.name)
        .map_err(|e| e.context("give a valid name with --name".to_string()))?;
    if cfg
        .resources
        .iter()
        .any(|x| x.kind == r.kind && x.path == r.path)
    {
        return Err(Error::conflict(format!(
            "resource {} is already associated with vault {vault}",
            r.path
        ))
        .code("BackupService.6104"));
    }
    if let Some((other, _)) = store.vault_of_path(r.kind, &r.path)? {
        return Err(Error::conflict(format!(
            "resource {} is already associated with vault {other}: a resource can be in one vault only",
            r.path
        ))
        .code("BackupService.6103"));
    }
    if cfg.resources.iter().any(|x| x.name == r.name) {
        return Err(Error::conflict(format!(
            "vault {vault} already has a resource named {:?}: choose another with --name",
            r.name
        ))
        .code("BackupService.6104"));
    }
    if cfg.resources.len() >= rules::MAX_RESOURCES {
        return Err(Error::param(format!(
            "vault {vault} has {} resources, the most a vault takes",
            rules::MAX_RESOURCES
        ))
        .code("BackupService.6100"));
    }
    let total: u64 = cfg.resources.iter().map(|x| x.size).sum::<u64>() + r.size;
    if total > cfg.capacity_bytes() {
        return Err(Error::param(format!(
            "vault {vault}: its resources would total {}, more than its capacity of {}; expand it with 'cbrfs vault update {vault} --capacity'",
            rules::human_bytes(total),
            rules::human_bytes(cfg.capacity_bytes())
        ))
        .code("BackupService.6101"));
    }
    cfg.resources.push(r.clone());
    store.save_vault(&cfg)?;
    Ok(r)
}

/// An absolute, UTF-8 form of an existing path, refusing paths inside the
/// store.
fn resolve(store: &Store, path: &Path, what: &str) -> Result<(std::path::PathBuf, String)> {
    let abs = std::fs::canonicalize(path)
        .map_err(|e| Error::invalid(format!("{what} {}: {e}", path.display())))?;
    let s = abs
        .to_str()
        .ok_or_else(|| Error::invalid(format!("{what} {} is not valid UTF-8", abs.display())))?
        .to_string();
    if abs.starts_with(store.root()) {
        return Err(Error::invalid(format!(
            "{what} {s} is inside the cbrfs store {}",
            store.root().display()
        )));
    }
    Ok((abs, s))
}

fn default_name(abs: &Path, fallback: &str) -> String {
    abs.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| fallback.into())
}

/// Associate a directory with a file-system vault.
pub fn associate_path(
    store: &Store,
    vault: &str,
    path: &Path,
    name: Option<String>,
    excludes: Vec<String>,
) -> Result<Resource> {
    associate_path_with(store, vault, path, name, excludes, false)
}

/// [`associate_path`], and with `one_file_system` the backups of the
/// resource stay on its root's file system (see
/// [`Resource::one_file_system`]).
pub fn associate_path_with(
    store: &Store,
    vault: &str,
    path: &Path,
    name: Option<String>,
    excludes: Vec<String>,
    one_file_system: bool,
) -> Result<Resource> {
    let opts = DirOptions {
        excludes,
        one_file_system,
        ..Default::default()
    };
    associate_dir(store, vault, path, name, opts)
}

/// How a directory resource is backed up; stored with it in the catalog,
/// so that policy backups follow it as manual ones do.
#[derive(Clone, Debug, Default)]
pub struct DirOptions {
    /// Exclude globs (see [`Resource::excludes`]).
    pub excludes: Vec<String>,
    /// See [`Resource::one_file_system`].
    pub one_file_system: bool,
    /// See [`Resource::exclude_caches`].
    pub exclude_caches: bool,
    /// See [`Resource::exclude_if_present`].
    pub exclude_if_present: Vec<String>,
}

/// The globs of an exclude file (restic's and borg's `--exclude-file`):
/// one a line; blank lines and lines starting with `#` are skipped, and
/// surrounding white space is trimmed. `shown` names the file in errors.
pub fn parse_exclude_file(text: &[u8], shown: &str) -> Result<Vec<String>> {
    let text = std::str::from_utf8(text).map_err(|e| {
        Error::param(format!(
            "exclude file {shown} is not UTF-8 text (at byte {})",
            e.valid_up_to()
        ))
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// Read an exclude file given on the command line (see
/// [`parse_exclude_file`]); its globs are copied into the resource, so the
/// file is not needed at backup time.
pub fn read_exclude_file(path: &Path) -> Result<Vec<String>> {
    use std::io::Read;
    // It is read whole, so it must be small.
    const MAX: u64 = 1 << 20;
    let shown = crate::quote::quote(&path.to_string_lossy()).into_owned();
    // The file is named by root on the command line: following its path is
    // what the user asked for.
    let f = std::fs::File::open(path)
        .map_err(|e| Error::param(format!("exclude file {shown}: cannot open: {e}")))?;
    let mut buf = Vec::new();
    f.take(MAX + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::param(format!("exclude file {shown}: cannot read: {e}")))?;
    if buf.len() as u64 > MAX {
        return Err(Error::param(format!(
            "exclude file {shown} is larger than 1 MiB: an exclude file holds globs, one a line"
        )));
    }
    parse_exclude_file(&buf, &shown)
}

/// Associate a directory with a file-system vault, backed up with `opts`.
pub fn associate_dir(
    store: &Store,
    vault: &str,
    path: &Path,
    name: Option<String>,
    opts: DirOptions,
) -> Result<Resource> {
    let DirOptions {
        excludes,
        one_file_system,
        exclude_caches,
        exclude_if_present,
    } = opts;
    for n in &exclude_if_present {
        if n.is_empty() || n.contains('/') || n == "." || n == ".." || n.contains('\0') {
            return Err(Error::param(format!(
                "--exclude-if-present {}: give a file name, without '/'",
                crate::quote::quote(n)
            )));
        }
    }
    let (abs, abs_str) = resolve(store, path, "resource path")?;
    if !abs.is_dir() {
        return Err(Error::invalid(format!(
            "resource path {abs_str} is not a directory"
        )));
    }
    for g in &excludes {
        if g.is_empty() {
            return Err(Error::param("exclude pattern is empty".to_string()));
        }
    }
    let r = Resource {
        name: name.unwrap_or_else(|| default_name(&abs, "root")),
        kind: ResourceKind::Directory,
        size: super::sizes::tree(&abs),
        path: abs_str,
        excludes,
        added: catalog::now_rfc3339(),
        one_file_system,
        exclude_caches,
        exclude_if_present,
    };
    add_resource(store, vault, VaultType::Filesystem, r)
}

/// Associate a block device or raw disk image with a disk vault.
pub fn associate_disk(
    store: &Store,
    vault: &str,
    path: &Path,
    name: Option<String>,
) -> Result<Resource> {
    let (abs, abs_str) = resolve(store, path, "disk")?;
    let size = crate::sys::device_size(&abs).map_err(|e| {
        Error::invalid(format!(
            "disk {abs_str}: {e}: give a block device or a disk image file"
        ))
    })?;
    let r = Resource {
        name: name.unwrap_or_else(|| default_name(&abs, "disk")),
        kind: ResourceKind::Disk,
        size,
        path: abs_str,
        excludes: Vec::new(),
        added: catalog::now_rfc3339(),
        one_file_system: false,
        exclude_caches: false,
        exclude_if_present: Vec::new(),
    };
    add_resource(store, vault, VaultType::Disk, r)
}

/// Associate a server with a server vault; `exclude` names members left out.
pub fn associate_server(
    store: &Store,
    vault: &str,
    server: &str,
    exclude: Vec<String>,
) -> Result<Resource> {
    associate_server_with(store, vault, server, exclude, false)
}

/// [`associate_server`], and with `one_file_system` every directory
/// member's backup stays on that member's file system (mounts inside a
/// member are kept as empty directories, as for a directory resource).
pub fn associate_server_with(
    store: &Store,
    vault: &str,
    server: &str,
    exclude: Vec<String>,
    one_file_system: bool,
) -> Result<Resource> {
    let s = store.server(server)?;
    for m in &exclude {
        if !s.members.iter().any(|x| &x.name == m) {
            return Err(Error::not_found(format!(
                "server {server} has no member {m:?} to exclude"
            )));
        }
    }
    let r = Resource {
        name: s.name.clone(),
        kind: ResourceKind::Server,
        size: super::sizes::server(&s, &exclude),
        path: s.name.clone(),
        excludes: exclude,
        added: catalog::now_rfc3339(),
        one_file_system,
        exclude_caches: false,
        exclude_if_present: Vec::new(),
    };
    add_resource(store, vault, VaultType::Server, r)
}

/// Dissociate a resource. As in CBR, its backups in the vault go with it:
/// each backup record loses that resource, and a record left empty is
/// deleted. The data goes with the next prune. Backups are lost, so unless
/// `force` is set a resource that any backup holds is refused, as `vault
/// delete` refuses a vault that holds backups.
/// Recorded as a `remove_resource` task; returns the backups deleted.
pub fn dissociate(store: &Store, vault: &str, resource: &str, force: bool) -> Result<Vec<String>> {
    let t = crate::tasks::start(
        store,
        crate::tasks::TaskType::RemoveResource,
        vault,
        Some(resource),
        None,
        catalog::now_ns(),
    );
    let r = dissociate_untracked(store, vault, resource, force);
    t.finish(&r);
    r
}

fn dissociate_untracked(
    store: &Store,
    vault: &str,
    resource: &str,
    force: bool,
) -> Result<Vec<String>> {
    let _lock = store.lock()?;
    let mut cfg = store.vault(vault)?;
    cfg.resource(resource)?;
    let _busy = store.try_backup_lock(vault)?;
    let holding: Vec<_> = store
        .backups(vault)?
        .into_iter()
        .flatten()
        .filter(|rec| rec.resources.iter().any(|p| p.name == resource))
        .collect();
    if !holding.is_empty() && !force {
        let mut names: Vec<&str> = holding.iter().take(5).map(|r| r.name.as_str()).collect();
        if holding.len() > 5 {
            names.push("...");
        }
        return Err(Error::conflict(format!(
            "resource {resource} of vault {vault} is in {} backups ({}): dissociating it deletes it from them; add --force to do so",
            holding.len(),
            names.join(", ")
        ))
        .code("BackupService.7301"));
    }
    let mut deleted = Vec::new();
    for rec in holding {
        let mut rec = rec;
        rec.resources.retain(|p| p.name != resource);
        if rec.resources.is_empty() {
            store.delete_backup(vault, &rec.name)?;
            deleted.push(rec.name);
        } else {
            store.save_backup(&rec)?;
        }
    }
    cfg.resources.retain(|r| r.name != resource);
    store.save_vault(&cfg)?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_file_skips_comments_and_blanks_and_trims() {
        let globs = parse_exclude_file(b"# c\n\n*.log\n  *.tmp \r\n#x\ncache/*\n", "f").unwrap();
        assert_eq!(globs, ["*.log", "*.tmp", "cache/*"]);
        let e = parse_exclude_file(b"ok\n\xff\n", "'f'").unwrap_err();
        assert!(
            e.to_string().contains("exclude file 'f' is not UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn a_resource_from_an_older_catalog_reads_without_the_new_options() {
        let old = r#"{"name":"r","kind":"directory","path":"/x","excludes":[],"size":1,"added":"2026-01-01T00:00:00Z"}"#;
        let r: Resource = serde_json::from_str(old).unwrap();
        assert!(!r.exclude_caches && r.exclude_if_present.is_empty() && !r.one_file_system);
        // And writing it back adds nothing an older cbrfs would trip on.
        let back = serde_json::to_string(&r).unwrap();
        assert!(!back.contains("exclude_caches") && !back.contains("exclude_if_present"));
    }
}
