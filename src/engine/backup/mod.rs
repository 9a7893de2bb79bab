//! Backup: walk a resource, chunk what changed, store new blobs, write the
//! trees bottom-up, then commit: index after packs, record after index.
//!
//! A file whose size, mtime, ctime and inode match the previous backup of the
//! same resource is not read again: its chunk list is reused. `--full`
//! reads everything (deduplication still applies).

use super::progress::Progress;
use super::servers;
use super::status;
use crate::catalog::{self, Resource, Store, VaultConfig};
use crate::chunker::Cdc;
use crate::error::{Error, IoContext, Kind, Result};
use crate::model::{
    self, BackupRecord, BackupStats, ChunkRef, Content, ListRef, Node, NodeKind, Origin, RelChunk,
    ResourceBackup, ResourceKind, Tree, Xattr,
};
use crate::mountinfo::MountTable;
use crate::rules;
use crate::store::Key;
use crate::store::{BlobId, BlobKind, Repo, RepoWriter};
use crate::sys;
use crate::tasks;
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

/// Chunk size of disks, chosen by measurement. Images made with `mke2fs
/// -t ext4 -d` from 294 MiB of real files (Rust crate sources), then 1 % of
/// their 4 KiB blocks overwritten at random (seed 42); bytes added by the
/// full and the incremental backup, and the incremental as a multiple of
/// the bytes changed:
///
/// | chunk   | 600 MiB image, half empty   | 340 MiB image, 83 % full   |
/// |---------|-----------------------------|----------------------------|
/// | 4 KiB   | 62.3 MB, 7.3 MB (1.16×)     |                            |
/// | 8 KiB   |                             | 51.5 MB, 4.8 MB (1.36×)    |
/// | 16 KiB  | 44.6 MB, 8.3 MB (1.32×)     | 44.3 MB, 5.5 MB (1.53×)    |
/// | 32 KiB  |                             | 39.9 MB, 6.8 MB (1.91×)    |
/// | 64 KiB  | 37.3 MB, 12.3 MB (1.96×)    | 37.0 MB, 9.3 MB (2.60×)    |
/// | 1 MiB   | 31.1 MB, 35.7 MB (5.68×)    |                            |
///
/// On incompressible data (an image of gzip'd files) the multiple tends to
/// chunk/4 KiB: 64 KiB measured 7.6×. 16 KiB bounds it near 4× and keeps a
/// full backup within 20 % of 64 KiB's. Every chunk's offset and length
/// are in the chunk list, so a reader needs no constant.
pub const DISK_CHUNK: usize = 16 << 10;

/// Index the packs sealed every this many bytes during a backup, so that a
/// backup killed (or failed) later keeps them for its retry (issue #16).
const CHECKPOINT_BYTES: u64 = 256 << 20;
/// ...and once a pack is sealed this long after the last checkpoint.
const CHECKPOINT_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

/// Most warnings kept in a backup record per resource.
const MAX_WARNINGS: usize = 100;

/// What to back up and how.
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    /// Backup name; default `manualbk_XXXX` (or `autobk_XXXX` for policies).
    pub name: Option<String>,
    /// Description.
    pub description: String,
    /// Read every file again.
    pub full: bool,
    /// Only these resources (all if empty).
    pub resources: Vec<String>,
    /// How the backup was started.
    pub origin: Option<Origin>,
    /// The policy, for automatic backups.
    pub policy: Option<String>,
    /// The backup's time, ns since the epoch [default: now]; a policy pass
    /// run with `--now` dates its backups at their time points.
    pub at_ns: Option<i64>,
    /// Walk and count what would be read and added, writing nothing to the
    /// store: chunks are hashed and compressed to find what deduplicates,
    /// then dropped. No writer lock, task, status file or record.
    pub dry_run: bool,
}

/// A backup that passed its checks and holds the vault's writer lock;
/// [`Prepared::run`] does the work. Splitting the two lets the mount accept
/// a `mkdir` at once and run the backup on another thread.
pub struct Prepared {
    store: Store,
    vault: VaultConfig,
    name: String,
    opts: BackupOptions,
    resources: Vec<Resource>,
    /// None for a dry run, which writes nothing.
    _lock: Option<crate::fsutil::Flock>,
    used_before: u64,
    /// The task recorded when the backup was accepted.
    task: Option<tasks::TaskHandle>,
    /// When it was accepted, RFC 3339.
    started: String,
    /// Live counters, for progress bars and `user.cbrfs.progress`.
    pub progress: Arc<Progress>,
}

/// A default backup name: `manualbk_XXXX` or `autobk_XXXX`.
pub fn default_name(origin: Origin) -> String {
    let prefix = if origin == Origin::Policy {
        "autobk"
    } else {
        "manualbk"
    };
    format!("{prefix}_{}", crate::fsutil::random_suffix(4))
}

/// Check everything a backup needs before it starts, and take the vault's
/// writer lock: the name is valid and free, the vault has resources, and it
/// is not full.
pub fn prepare(store: &Store, vault: &str, mut opts: BackupOptions) -> Result<Prepared> {
    let cfg = store.vault(vault)?;
    let origin = opts.origin.unwrap_or(Origin::Manual);
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => default_name(origin),
    };
    rules::check_name("backup name", &name)?;
    rules::check_description("backup", &opts.description)?;
    if name == "latest" {
        return Err(Error::param(format!(
            "backup name {name:?} is reserved: it names the newest backup in the mount"
        )));
    }
    if !opts.dry_run && store.backup_path(vault, &name).exists() {
        return Err(Error::conflict(format!(
            "backup {name:?} already exists in vault {vault}"
        )));
    }
    let resources: Vec<Resource> = if opts.resources.is_empty() {
        cfg.resources.clone()
    } else {
        opts.resources
            .iter()
            .map(|r| cfg.resource(r).cloned())
            .collect::<Result<_>>()?
    };
    if resources.is_empty() {
        return Err(Error::not_found(format!(
            "vault {vault} has no resources to back up: associate one with 'cbrfs vault associate'"
        ))
        .code("BackupService.0001"));
    }
    let total: u64 = resources.iter().map(|r| r.size).sum();
    if opts.dry_run {
        // Nothing is written, so nothing to lock out, and a full vault is
        // for the figures to show, not a refusal.
        let used = store.repo(vault)?.used_bytes()?;
        opts.name = Some(name.clone());
        return Ok(Prepared {
            task: None,
            started: catalog::now_rfc3339(),
            store: store.clone(),
            vault: cfg,
            name,
            opts,
            resources,
            _lock: None,
            used_before: used,
            progress: Arc::new(Progress::new(total)),
        });
    }
    let lock = store.try_backup_lock(vault)?;
    let repo = store.repo(vault)?;
    let used = repo.used_bytes()?;
    let mut cfg = cfg;
    if used >= cfg.capacity_bytes() && cfg.auto_expand {
        cfg = expand(
            store,
            vault,
            used,
            opts.at_ns.unwrap_or_else(catalog::now_ns),
        )?;
    }
    if used >= cfg.capacity_bytes() {
        return Err(Error::new(
            Kind::NoSpace,
            format!(
                "vault {vault} is full: {} used of {} GB capacity",
                rules::human_bytes(used),
                cfg.capacity_gb
            ),
        )
        .code("BackupService.6114"));
    }
    opts.name = Some(name.clone());
    // Accepted: from here the backup is in the task log and has a status
    // file, so if this process dies before `run` even starts (a mount daemon
    // killed right after a mkdir), `backup wait` and `task list` say it
    // failed instead of that it never existed.
    let started = catalog::now_rfc3339();
    let at = opts.at_ns.unwrap_or_else(catalog::now_ns);
    let task = tasks::start(store, "backup", vault, None, Some(&name), at);
    let _ = status::write(
        store,
        vault,
        &status::Status {
            backup: name.clone(),
            status: "protecting".into(),
            progress: 0,
            bytes_read: 0,
            files: 0,
            pid: std::process::id(),
            started: started.clone(),
            error: None,
        },
    );
    Ok(Prepared {
        task: Some(task),
        started,
        store: store.clone(),
        vault: cfg,
        name,
        opts,
        resources,
        _lock: Some(lock),
        used_before: used,
        progress: Arc::new(Progress::new(total)),
    })
}

impl Prepared {
    /// The backup's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The vault's name.
    pub fn vault(&self) -> &str {
        &self.vault.name
    }

    /// Run the backup and commit it. On error nothing is committed: sealed
    /// packs without an index are invisible (prune removes them), and every
    /// earlier backup is untouched.
    pub fn run(mut self) -> Result<BackupRecord> {
        if self.opts.dry_run {
            // No task, status or capacity event: nothing happened.
            return self.run_inner();
        }
        let vault = self.vault.name.clone();
        let started = self.started.clone();
        let at = self.opts.at_ns.unwrap_or_else(catalog::now_ns);
        let task = std::sync::Mutex::new(self.task.take().unwrap_or_else(|| {
            tasks::start(&self.store, "backup", &vault, None, Some(&self.name), at)
        }));
        let status = |st: &str, error: Option<String>| status::Status {
            backup: self.name.clone(),
            status: st.to_string(),
            progress: self.progress.percent(),
            bytes_read: self.progress.read(),
            files: self.progress.files(),
            pid: std::process::id(),
            started: started.clone(),
            error,
        };
        let _ = status::write(&self.store, &vault, &status("protecting", None));
        let done = std::sync::atomic::AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            let ticker = s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::park_timeout(std::time::Duration::from_millis(500));
                    if !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = status::write(&self.store, &vault, &status("protecting", None));
                        if let Ok(mut t) = task.lock() {
                            t.progress(self.progress.percent());
                        }
                    }
                }
            });
            let r = self.run_inner();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            ticker.thread().unpark();
            r
        });
        match &result {
            Ok(_) => status::remove(&self.store, &vault, &self.name),
            Err(e) => {
                let _ = status::write(&self.store, &vault, &status("error", Some(e.to_string())));
            }
        }
        if let Ok(t) = task.into_inner() {
            t.finish(&result);
        }
        if result.is_ok() {
            self.after_capacity(at);
        }
        result
    }

    /// After a backup: auto-expand a vault it filled, and record a crossing
    /// of the usage threshold.
    fn after_capacity(&self, at: i64) {
        let vault = &self.vault.name;
        let Ok(used) = self.store.repo(vault).and_then(|r| r.used_bytes()) else {
            return;
        };
        let cap = self.vault.capacity_bytes().max(1);
        if used >= cap && self.vault.auto_expand {
            if let Err(e) = expand(&self.store, vault, used, at) {
                log::warn!("vault {vault}: auto-expand failed: {e}");
            }
        }
        let cap = self
            .store
            .vault(vault)
            .map(|c| c.capacity_bytes())
            .unwrap_or(cap)
            .max(1);
        let before = (self.used_before as u128 * 100 / cap as u128) as u64;
        let after = (used as u128 * 100 / cap as u128) as u64;
        let t = self.vault.threshold as u64;
        if before < t && after >= t {
            let msg = format!(
                "vault {vault} usage is {after}% ({} of {} GB), past its {t}% threshold",
                rules::human_bytes(used),
                cap / rules::GB
            );
            log::warn!("{msg}");
            tasks::event(&self.store, "capacity", vault, "success", msg, at);
        }
    }

    fn run_inner(&self) -> Result<BackupRecord> {
        let started_ns = self.opts.at_ns.unwrap_or_else(catalog::now_ns);
        let t0 = std::time::Instant::now();
        let vault = self.vault.name.clone();
        let repo = self.store.repo(&vault)?;
        let dry_run = self.opts.dry_run;
        // Under the writer lock no other writer of packs, indexes or records
        // runs: their temporaries are a killed run's. A dry run holds no
        // lock: the temporaries may be a running backup's.
        if !dry_run {
            repo.remove_stale_temps()?;
            crate::fsutil::remove_stale_temps(&self.store.vault_dir(&vault).join("backups"))?;
        }
        let used = repo.used_bytes()?;
        let mut writer = RepoWriter::new(&repo, self.vault.compress());
        writer.dry_run = dry_run;
        writer.checkpoint_every = Some(CHECKPOINT_BYTES);
        writer.checkpoint_after = Some(CHECKPOINT_AFTER);
        // With auto-expand a backup may fill the vault up to 1.25× its
        // capacity, which is then expanded.
        let cap = if self.vault.auto_expand {
            self.vault.capacity_bytes().saturating_mul(5) / 4
        } else {
            self.vault.capacity_bytes()
        };
        writer.limit = (!dry_run).then(|| cap.saturating_sub(used));
        let compress = writer.compresses();
        let writer = Mutex::new(writer);
        let cdc = Cdc::new(repo.key().chunker_seed());
        let sh = Shared {
            writer: &writer,
            cdc: &cdc,
            key: repo.key(),
            compress,
            progress: &self.progress,
            stop: AtomicBool::new(false),
            big: Mutex::new((0..BIG_BUFFERS).map(|_| Buffers::default()).collect()),
            big_ready: Condvar::new(),
        };
        let previous = latest_records(&self.store, &vault);
        let store_id = std::fs::metadata(self.store.root())
            .map(|m| (m.dev(), m.ino()))
            .ok();
        // Parsed once per backup: looked up only where a directory's device
        // is not its parent's.
        let mounts = MountTable::read().unwrap_or_else(|e| {
            log::warn!(
                "cannot read /proc/self/mountinfo ({e}): FUSE mounts of users cannot be told apart"
            );
            MountTable::default()
        });
        let max_inflight = max_inflight();
        let mut parts = Vec::new();
        let mut totals = BackupStats::default();
        let (jobs, job_rx) = mpsc::channel::<Vec<Job>>();
        let job_rx = Mutex::new(job_rx);
        let (done_tx, done) = mpsc::channel::<Vec<Done>>();
        let walked = std::thread::scope(|s| -> Result<()> {
            // The walk owns the only sender of jobs: when it ends, however
            // it ends, the readers run out of jobs and stop.
            let jobs = jobs;
            for _ in 0..READERS {
                let done_tx = done_tx.clone();
                let (sh, job_rx) = (&sh, &job_rx);
                std::thread::Builder::new()
                    .name("cbrfs-read".into())
                    .spawn_scoped(s, move || reader(sh, job_rx, done_tx))
                    .ctx(|| "start a file reader".to_string())?;
            }
            drop(done_tx);
            for res in &self.resources {
                let kind = match res.kind.as_str() {
                    "disk" => ResourceKind::Disk,
                    "server" => ResourceKind::Server,
                    _ => ResourceKind::Directory,
                };
                let parent = previous
                    .iter()
                    .filter_map(|r| {
                        r.resources
                            .iter()
                            .find(|p| p.name == res.name && p.kind == kind)
                            .map(|p| (r.name.clone(), p.meta.clone()))
                    })
                    .next_back();
                let mut w = Walker {
                    repo: &repo,
                    sh: &sh,
                    jobs: &jobs,
                    done: &done,
                    inflight: 0,
                    batch: Vec::new(),
                    batch_bytes: 0,
                    full: self.opts.full || parent.is_none(),
                    excludes: &res.excludes,
                    stats: BackupStats::default(),
                    warnings: Vec::new(),
                    links: HashMap::new(),
                    skip: store_id,
                    pending: HashMap::new(),
                    order: VecDeque::new(),
                    roots: HashMap::new(),
                    next_dir: 0,
                    deferred: None,
                    one_fs: res.one_file_system,
                    mounts: &mounts,
                    max_inflight,
                    listed: None,
                    out: Vec::new(),
                    recheck: HashSet::new(),
                    exclude_caches: res.exclude_caches,
                    if_present: &res.exclude_if_present,
                };
                let prev_meta = parent.as_ref().map(|(_, m)| m.clone());
                // The resources are walked one after the other, each to its
                // last blob: what the writer added meanwhile is this one's.
                let added_before = sh.writer.lock().stats();
                let (meta, root, source) = match kind {
                    ResourceKind::Directory => {
                        let meta = w.resource_dir(&res.name, &res.path, prev_meta.as_ref())?;
                        let root = meta.subtree.unwrap_or_default();
                        (meta, root, res.path.as_bytes().to_vec())
                    }
                    ResourceKind::Disk => {
                        let name = format!("{}.img", res.name).into_bytes();
                        let meta = w.disk(Path::new(&res.path), name, prev_meta.as_ref())?;
                        let root = w.store_tree(Tree {
                            entries: vec![meta.clone()],
                        })?;
                        (meta, root, res.path.as_bytes().to_vec())
                    }
                    ResourceKind::Server => {
                        let server = self.store.server(&res.path)?;
                        let (meta, source) =
                            self.server(&mut w, &server, &res.excludes, prev_meta.as_ref())?;
                        let root = meta.subtree.unwrap_or_default();
                        (meta, root, source)
                    }
                };
                let added = sh.writer.lock().stats();
                let mut stats = w.stats;
                stats.blobs_new = added.blobs_new - added_before.blobs_new;
                stats.bytes_added = added.stored_new - added_before.stored_new;
                totals.add(&stats);
                parts.push(ResourceBackup {
                    name: res.name.clone(),
                    kind,
                    source,
                    root,
                    meta,
                    full: w.full,
                    parent: parent.map(|(n, _)| n),
                    stats,
                    warnings: w.warnings,
                });
            }
            Ok(())
        });
        if let Err(e) = walked {
            if dry_run || !self.progress.cancelled() {
                return Err(e);
            }
            // Interrupted by the user: index what was stored so far (its
            // packs are sealed and durable first), so that the retry finds
            // those blobs and does not store them again (issue #16). No
            // record: the backup did not happen; prune drops what no
            // backup ends up using.
            let ws = writer.into_inner().finish()?;
            return Err(Error::failed(format!(
                "backup {} of vault {vault} interrupted: kept {} in {} (indexed, the next backup reuses them)",
                self.name,
                rules::human_bytes(ws.bytes_written),
                rules::count(ws.blobs_new, "new blob", "new blobs")
            )));
        }
        let writer = writer.into_inner();
        let ws = writer.finish()?;
        totals.blobs_new = ws.blobs_new;
        // A dry run wrote no pack or index: its figure is the blobs' stored
        // bytes, the sum of the resources'.
        totals.bytes_added = if dry_run {
            ws.stored_new
        } else {
            ws.bytes_written
        };
        parts.sort_by(|a, b| a.name.cmp(&b.name));
        let rec = BackupRecord {
            name: self.name.clone(),
            vault: vault.clone(),
            description: self.opts.description.clone(),
            origin: self.opts.origin.unwrap_or(Origin::Manual),
            policy: self.opts.policy.clone(),
            full: parts.iter().all(|p| p.full),
            started_ns,
            finished_ns: started_ns + t0.elapsed().as_nanos() as i64,
            resources: parts,
            stats: totals,
        };
        // The record makes the backup available: first make sure that it
        // and every resource's root tree read back as check, restore and
        // the mount will read them.
        model::validate_record(&rec)?;
        if dry_run {
            self.progress.finish();
            return Ok(rec);
        }
        for p in &rec.resources {
            repo.read_blob(&p.root)
                .and_then(|b| model::decode_tree(&b))
                .map_err(|e| {
                    e.context(format!(
                        "backup {} of vault {vault}, resource {}: the root tree just written does not read back",
                        rec.name, p.name
                    ))
                })?;
        }
        self.store.save_backup(&rec)?;
        self.progress.finish();
        Ok(rec)
    }
}

impl Prepared {
    /// Back up a server: the pre-hook, every member (directories as trees,
    /// disks as `<member>.img`) into one tree, then the post-hook, which runs
    /// whether or not the members were read. Returns the server's root node
    /// and its member list encoded for the record's `source`
    /// (`kind NUL name NUL path NUL` per member).
    fn server(
        &self,
        w: &mut Walker<'_, '_>,
        server: &catalog::ServerConfig,
        exclude: &[String],
        prev: Option<&Node>,
    ) -> Result<(Node, Vec<u8>)> {
        let env = |hook: &str, result: &str| {
            vec![
                ("CBRFS_VAULT", self.vault.name.clone()),
                ("CBRFS_BACKUP", self.name.clone()),
                ("CBRFS_SERVER", server.name.clone()),
                ("CBRFS_HOOK", hook.to_string()),
                ("CBRFS_RESULT", result.to_string()),
            ]
        };
        let timeout = std::time::Duration::from_secs(server.hook_timeout_s.max(1));
        let pre = match &server.pre_hook {
            Some(h) => servers::run_hook(h, timeout, &env("pre", ""))
                .map(|_| ())
                .map_err(|e| e.context(format!("server {}: pre-hook", server.name))),
            None => Ok(()),
        };
        let result = pre.and_then(|()| self.server_members(w, server, exclude, prev));
        // The post-hook runs whatever happened: after a failed pre-hook too,
        // since it may have to undo part of it (thaw a file system).
        if let Some(h) = &server.post_hook {
            let r = if result.is_ok() { "success" } else { "failure" };
            if let Err(e) = servers::run_hook(h, timeout, &env("post", r)) {
                w.warn(format!("server {}: post-hook: {e}", server.name));
            }
        }
        result
    }

    fn server_members(
        &self,
        w: &mut Walker<'_, '_>,
        server: &catalog::ServerConfig,
        exclude: &[String],
        prev: Option<&Node>,
    ) -> Result<(Node, Vec<u8>)> {
        let prev_tree = match prev {
            Some(p) if !w.full => p.subtree.and_then(|id| w.load_tree(&id).ok()),
            _ => None,
        };
        let mut tree = Tree::default();
        let mut source = Vec::new();
        for m in server.members.iter().filter(|m| !exclude.contains(&m.name)) {
            let entry_name = servers::entry_name(m);
            let prev_node = prev_tree
                .as_ref()
                .and_then(|t| t.find(entry_name.as_bytes()));
            let node = if m.kind == "disk" {
                w.disk(Path::new(&m.path), entry_name.into_bytes(), prev_node)?
            } else {
                w.resource_dir(&entry_name, &m.path, prev_node)?
            };
            tree.entries.push(node);
            for f in [m.kind.as_bytes(), m.name.as_bytes(), m.path.as_bytes()] {
                source.extend_from_slice(f);
                source.push(0);
            }
        }
        tree.entries.sort_by(|a, b| a.name.cmp(&b.name));
        // A server defined before member names were checked against each
        // other may still have two members with one entry name: such a
        // tree could never be read back, so the backup fails here instead.
        model::validate_tree(&tree).map_err(|e| {
            Error::conflict(format!(
                "server {}: its members cannot be backed up together ({e}); rename or remove one with 'cbrfs server update'",
                server.name
            ))
        })?;
        let root = w.store_tree(tree)?;
        let mut meta = Node::new(server.name.as_bytes().to_vec(), NodeKind::Dir);
        meta.mode = 0o755;
        meta.nlink = 2;
        meta.mtime_ns = catalog::now_ns();
        meta.ctime_ns = meta.mtime_ns;
        meta.subtree = Some(root);
        Ok((meta, source))
    }
}

/// Members of a server backup from its record's `source` field:
/// `(kind, name, path)`.
pub fn server_members(source: &[u8]) -> Vec<(String, String, String)> {
    let fields: Vec<String> = source
        .split(|b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).to_string())
        .collect();
    fields
        .chunks_exact(3)
        .map(|c| (c[0].clone(), c[1].clone(), c[2].clone()))
        .collect()
}

/// Grow a full vault's capacity to 1.25× (auto-expand), recording it.
fn expand(store: &Store, vault: &str, used: u64, at_ns: i64) -> Result<VaultConfig> {
    let _lock = store.lock()?;
    let mut cfg = store.vault(vault)?;
    let old = cfg.capacity_gb;
    let new = (old.saturating_mul(5).div_ceil(4)).clamp(old + 1, rules::CAPACITY_MAX_GB);
    if new <= old {
        return Ok(cfg);
    }
    cfg.capacity_gb = new;
    store.save_vault(&cfg)?;
    let msg = format!(
        "vault {vault} was full ({} used): capacity expanded from {old} GB to {new} GB",
        rules::human_bytes(used)
    );
    log::warn!("{msg}");
    tasks::event(store, "capacity", vault, "success", msg, at_ns);
    Ok(cfg)
}

/// Record a backup that was refused before it started (name taken, vault
/// full, busy) in the task log.
pub fn record_refusal(store: &Store, vault: &str, backup: Option<&str>, e: &Error, at_ns: i64) {
    if store.vault(vault).is_err() {
        return;
    }
    let mut t = tasks::start(store, "backup", vault, None, backup, at_ns);
    if let Some(b) = backup {
        t.set_backup(b);
    }
    t.failed(e);
}

/// Every readable backup of a vault, oldest first.
pub fn latest_records(store: &Store, vault: &str) -> Vec<BackupRecord> {
    store
        .backups(vault)
        .map(|v| v.into_iter().filter_map(|r| r.ok()).collect())
        .unwrap_or_default()
}

/// Files read at once, across directories. On a cold cache a backup waits
/// on the disk, and a virtio or NVMe disk serves many reads at once far
/// faster than one after another: the 78,579 files of a kernel tree, page
/// cache dropped, read by `xargs -P 16 cat` in 4.95 s and by `tar | cat`
/// in 20.95 s on this project's 2-core machine.
pub const READERS: usize = 16;
/// File reads handed out and not yet back; bounds the directories held
/// in memory while their files are read.
const MAX_INFLIGHT: usize = 32 * READERS;
/// Files go to the readers in batches of up to this many files or bytes:
/// a handover per file cost more than reading a small one (a directory of
/// a million small files took 18.6 s of system time, 7.7 s with 4
/// threads per directory and no handover).
const BATCH_FILES: usize = 16;
const BATCH_BYTES: u64 = 1 << 20;
/// Files at least this big are read with one of [`BIG_BUFFERS`] buffers
/// of [`crate::chunker::buffer_len`] bytes; smaller ones with their
/// reader's own buffer, which so stays under a megabyte.
const BIG_FILE: u64 = 1 << 20;
const BIG_BUFFERS: usize = 3;
/// Threads reading a disk: its batches are read and compressed at once.
const DISK_READERS: usize = 4;

/// What the walker and the reader threads share.
struct Shared<'a, 'w> {
    writer: &'a Mutex<RepoWriter<'w>>,
    cdc: &'a Cdc,
    key: &'a Key,
    compress: bool,
    progress: &'a Progress,
    /// Set once the store failed: the readers skip what is left.
    stop: AtomicBool,
    /// Buffers for big files, lent one at a time.
    big: Mutex<Vec<Buffers>>,
    big_ready: Condvar,
}

impl Shared<'_, '_> {
    /// Store `data` as a blob of `kind` unless it is stored already, and
    /// return its id. Hashing and compression run on the calling thread;
    /// the writer's lock is held only to reserve the id and to append.
    fn put(&self, kind: BlobKind, data: &[u8], out: &mut Vec<u8>) -> Result<BlobId> {
        let id = self.key.id(data);
        if self.writer.lock().reserve(id) {
            let c = (self.compress && crate::store::compress_into(data, out)).then_some(&out[..]);
            self.writer.lock().append_reserved(id, kind, data, c)?;
        }
        Ok(id)
    }

    fn take_big(&self) -> Buffers {
        let mut bufs = self.big.lock();
        loop {
            if let Some(b) = bufs.pop() {
                return b;
            }
            self.big_ready.wait(&mut bufs);
        }
    }

    fn give_big(&self, buf: Buffers) {
        self.big.lock().push(buf);
        self.big_ready.notify_one();
    }
}

/// A reader's buffers: what it reads, and what it compresses into.
#[derive(Default)]
struct Buffers {
    read: Vec<u8>,
    out: Vec<u8>,
}

/// A file for the readers: entry `idx` of pending directory `dir`.
struct Job {
    dir: u64,
    idx: usize,
    /// For messages only: the bytes come from `file`.
    path: PathBuf,
    /// The descriptor whose fstat gave the entry's metadata.
    file: std::fs::File,
    size: u64,
}

/// A file read, back from a reader.
struct Done {
    dir: u64,
    idx: usize,
    path: PathBuf,
    result: std::result::Result<FileRead, ReadError>,
}

/// One file read.
struct FileRead {
    chunks: Vec<ChunkRef>,
    bytes: u64,
    /// Where a read met the end of the file before the extent it was
    /// reading ended: the file shrank while it was read.
    eof_at: Option<u64>,
    /// The file's state once read (fstat of the descriptor read).
    after: FileState,
}

/// What tells whether a file changed while it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileState {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    dev: u64,
    inode: u64,
}

impl FileState {
    fn of(md: &std::fs::Metadata) -> FileState {
        FileState {
            size: md.len(),
            mtime_ns: ns(md.mtime(), md.mtime_nsec()),
            ctime_ns: ns(md.ctime(), md.ctime_nsec()),
            dev: md.dev(),
            inode: md.ino(),
        }
    }
    fn of_node(n: &Node) -> FileState {
        FileState {
            size: n.size,
            mtime_ns: n.mtime_ns,
            ctime_ns: n.ctime_ns,
            dev: n.dev,
            inode: n.inode,
        }
    }
}

/// Why a file read failed: the source (reported, the entry skipped), the
/// store (the backup stops), or an earlier store failure (not read).
enum ReadError {
    Source(Error),
    Store(Error),
    Stopped,
}

/// A reader thread: reads files until the walker hangs up.
fn reader(
    sh: &Shared<'_, '_>,
    jobs: &Mutex<mpsc::Receiver<Vec<Job>>>,
    done: mpsc::Sender<Vec<Done>>,
) {
    let mut small = Buffers::default();
    loop {
        let batch = match jobs.lock().recv() {
            Ok(b) => b,
            Err(_) => return,
        };
        let mut back = Vec::with_capacity(batch.len());
        for job in batch {
            back.push(read_job(sh, job, &mut small));
        }
        if done.send(back).is_err() {
            return;
        }
    }
}

/// One file of a batch.
fn read_job(sh: &Shared<'_, '_>, mut job: Job, small: &mut Buffers) -> Done {
    {
        // A panic in a read (a bug) must not leave the walker waiting for
        // a result that never comes: it comes back as a store error.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if sh.stop.load(Ordering::Relaxed) || sh.progress.cancelled() {
                Err(ReadError::Stopped)
            } else if job.size >= BIG_FILE {
                let mut buf = sh.take_big();
                let r = read_one(&mut job.file, &job.path, job.size, &mut buf, sh);
                sh.give_big(buf);
                r
            } else {
                read_one(&mut job.file, &job.path, job.size, small, sh)
            }
        }))
        .unwrap_or_else(|_| {
            Err(ReadError::Store(Error::failed(format!(
                "{}: internal error while reading (see the log)",
                job.path.display()
            ))))
        });
        if matches!(result, Err(ReadError::Store(_))) {
            sh.stop.store(true, Ordering::Relaxed);
        }
        Done {
            dir: job.dir,
            idx: job.idx,
            path: job.path,
            result,
        }
    }
}

/// Read, chunk and store the data extents (holes stay holes) of the
/// regular file open as `f`: the walker's descriptor, whose fstat gave
/// the entry's metadata. It is never opened again by name.
fn read_one(
    f: &mut std::fs::File,
    path: &Path,
    size: u64,
    bufs: &mut Buffers,
    sh: &Shared<'_, '_>,
) -> std::result::Result<FileRead, ReadError> {
    let Buffers { read: buf, out } = bufs;
    let src = |what: &str, e: std::io::Error| {
        ReadError::Source(Error::io(format!("{}: {what}", path.display()), e))
    };
    let extents =
        sys::data_extents(f.as_raw_fd(), size).map_err(|e| src("cannot find data extents", e))?;
    let mut chunks = Vec::new();
    let mut bytes = 0;
    let mut eof_at = None;
    let mut store_err: Option<Error> = None;
    for (start, end) in extents {
        f.seek(SeekFrom::Start(start)).map_err(|e| src("seek", e))?;
        let read = sh.cdc.split_with(
            (&mut *f).take(end - start),
            buf,
            end - start,
            |off, data| {
                sh.progress.add_read(data.len() as u64);
                match sh.put(BlobKind::Data, data, out) {
                    Ok(id) => {
                        chunks.push(ChunkRef {
                            id,
                            offset: start + off,
                            len: data.len() as u32,
                        });
                        Ok(())
                    }
                    Err(e) => {
                        store_err = Some(e);
                        Err(std::io::Error::other("store failed"))
                    }
                }
            },
        );
        if let Some(e) = store_err.take() {
            return Err(ReadError::Store(e));
        }
        let n = read.map_err(|e| src("cannot read", e))?;
        bytes += n;
        if n < end - start {
            // The file ended before this extent did: it was truncated
            // while read. What follows is not the file's any more.
            eof_at = Some(start + n);
            break;
        }
    }
    let after = FileState::of(&f.metadata().map_err(|e| src("stat", e))?);
    Ok(FileRead {
        chunks,
        bytes,
        eof_at,
        after,
    })
}

/// File reads out at most: [`MAX_INFLIGHT`], or fewer when the limit on
/// open files is low (each read out holds its file open, and the walk one
/// descriptor per directory level). main raises the soft limit to the
/// hard one; a quarter of it is left to reads.
fn max_inflight() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct.
    let cur = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    ((cur / 4) as usize).clamp(BATCH_FILES, MAX_INFLIGHT)
}

/// What the walker opened for an entry: the one descriptor its metadata,
/// xattrs and (for a regular file) bytes all come from.
enum Handle {
    Dir(OwnedFd),
    File(std::fs::File),
    /// Symlinks, devices, fifos and sockets: an `O_PATH` descriptor (or,
    /// where the listing said a regular file, the read-only one of what
    /// was there instead; it is never read).
    Other(OwnedFd),
}

impl Handle {
    fn raw(&self) -> RawFd {
        match self {
            Handle::Dir(fd) | Handle::Other(fd) => fd.as_raw_fd(),
            Handle::File(f) => f.as_raw_fd(),
        }
    }
}

/// An entry opened, and what `fstat` of its descriptor says.
struct Opened {
    handle: Handle,
    st: libc::stat,
}

impl Opened {
    /// Sort a descriptor by what fstat says it is.
    fn of(fd: OwnedFd) -> std::io::Result<Opened> {
        let st = sys::fstat(&fd)?;
        let handle = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Handle::Dir(fd),
            libc::S_IFREG => Handle::File(std::fs::File::from(fd)),
            _ => Handle::Other(fd),
        };
        Ok(Opened { handle, st })
    }
}

/// Open entry `name` of the directory `dir`, never following a symlink,
/// and never by a path from `/`. The listing's `d_type` (`hint`) only
/// chooses the first try: a directory is opened `O_DIRECTORY`, a regular
/// file for reading (`sys::open_read_at`: no blocking on a fifo swapped
/// in, no controlling terminal); anything else, or an entry that is no
/// longer what the listing said, gets an `O_PATH` descriptor first — a
/// device is never opened (a tape would rewind) — and if fstat of that
/// says a directory or regular file, the same inode is opened through it
/// (`sys::reopen`). What is recorded is what the final descriptor is.
fn open_entry(dir: &OwnedFd, name: &[u8], hint: u8) -> std::io::Result<Opened> {
    let not_that =
        |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR));
    match hint {
        libc::DT_DIR => match sys::open_dir_at(dir, name) {
            Ok(fd) => return Opened::of(fd),
            Err(e) if not_that(&e) => {}
            Err(e) => return Err(e),
        },
        libc::DT_REG => match sys::open_read_at(dir.as_raw_fd(), name) {
            Ok(f) => return Opened::of(OwnedFd::from(f)),
            Err(e) if not_that(&e) => {}
            Err(e) => return Err(e),
        },
        _ => {}
    }
    let p = sys::open_path_at(dir, name)?;
    let st = sys::fstat(&p)?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Opened::of(sys::reopen(&p, true)?),
        libc::S_IFREG => Opened::of(sys::reopen(&p, false)?),
        _ => Ok(Opened {
            handle: Handle::Other(p),
            st,
        }),
    }
}

/// The name of a cache directory's tag (<https://bford.info/cachedir/>).
const CACHEDIR_TAG: &[u8] = b"CACHEDIR.TAG";
/// What a valid tag starts with.
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// True if entry `name` of `dir` is a regular file starting with the cache
/// directory signature (a symlink or a file without it is no tag).
fn is_cache_tag(dir: &OwnedFd, name: &[u8], hint: u8) -> bool {
    let Ok(Opened {
        handle: Handle::File(f),
        ..
    }) = open_entry(dir, name, hint)
    else {
        return false;
    };
    let mut head = Vec::with_capacity(CACHEDIR_SIGNATURE.len());
    f.take(CACHEDIR_SIGNATURE.len() as u64)
        .read_to_end(&mut head)
        .is_ok()
        && head == CACHEDIR_SIGNATURE
}

/// Open a disk (a block device or an image file) at its resolved path
/// with no symlink followed (see `sys::open_no_symlinks`); size and
/// metadata come from this descriptor.
fn open_disk(path: &Path) -> std::io::Result<(std::fs::File, libc::stat)> {
    // O_NONBLOCK so that a fifo put there does not hang the open; it is
    // cleared once fstat said what was opened.
    let fd = sys::open_no_symlinks(path, libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK)?;
    let st = sys::fstat(&fd)?;
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFBLK && kind != libc::S_IFREG {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a block device or a regular file",
        ));
    }
    // SAFETY: F_SETFL on a valid descriptor.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_RDONLY) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((std::fs::File::from(fd), st))
}

fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// A directory listed, whose tree waits for its files' reads and its
/// subdirectories' trees.
struct PendingDir {
    tree: Tree,
    /// File reads not yet back.
    waiting: usize,
    /// Entries whose read failed (reported), left out of the tree.
    failed: Vec<usize>,
    /// The entry whose subtree this is (pending directory, index), or none
    /// for a resource's root.
    parent: Option<(u64, usize)>,
}

/// Walks one resource. Directories are listed and their entries stat'ed on
/// the walker's thread, in order; the files to read go to the readers, and
/// a directory's tree is written once its files are back. Trees are
/// finished in the order their listings ended (children before parents),
/// so a parent's tree always names its children's.
struct Walker<'a, 'w> {
    repo: &'a Repo,
    sh: &'a Shared<'a, 'w>,
    jobs: &'a mpsc::Sender<Vec<Job>>,
    done: &'a mpsc::Receiver<Vec<Done>>,
    /// Files handed out (or batched) and not yet back.
    inflight: usize,
    /// The batch being filled, and its bytes.
    batch: Vec<Job>,
    batch_bytes: u64,
    full: bool,
    excludes: &'a [String],
    stats: BackupStats,
    warnings: Vec<String>,
    /// (dev, inode) → hard-link group.
    links: HashMap<(u64, u64), u64>,
    /// The store's own directory: never backed up into itself.
    skip: Option<(u64, u64)>,
    pending: HashMap<u64, PendingDir>,
    /// Pending directories in the order their listings ended.
    order: VecDeque<u64>,
    /// Trees of finished resource roots, by pending id.
    roots: HashMap<u64, BlobId>,
    next_dir: u64,
    /// Set by `node` to a file whose content the readers are to read.
    deferred: Option<std::fs::File>,
    /// Stay on each directory's parent's device (`--one-file-system`).
    one_fs: bool,
    /// The mounts, to tell a user's FUSE mount when a device changes.
    mounts: &'a MountTable,
    /// File reads out at most: each holds an open descriptor.
    max_inflight: usize,
    /// Set by `node` to the pending id of the directory it listed.
    listed: Option<u64>,
    /// What trees and chunk lists are compressed into.
    out: Vec<u8>,
    /// Entries (pending directory, index) read again under `--full` whose
    /// metadata is the previous backup's: counted unchanged or changed
    /// once their content is back.
    recheck: HashSet<(u64, usize)>,
    /// Leave out the contents of cache directories (`--exclude-caches`).
    exclude_caches: bool,
    /// Leave out the contents of directories holding these names.
    if_present: &'a [String],
}

impl Walker<'_, '_> {
    fn warn(&mut self, msg: String) {
        log::info!("{msg}");
        self.stats.errors += 1;
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(msg);
        }
    }

    /// The root node of a directory resource (or server member) named
    /// `name` at `path`, with its tree.
    fn resource_dir(&mut self, name: &str, path: &str, prev: Option<&Node>) -> Result<Node> {
        let root_path = PathBuf::from(path);
        // Opened from `/` with no symlink followed on the way, and not the
        // directory's path again after: everything below is reached from
        // this descriptor.
        let fd =
            sys::open_no_symlinks(&root_path, libc::O_RDONLY | libc::O_DIRECTORY).map_err(|e| {
                match e.raw_os_error() {
                    Some(libc::ENOTDIR) => {
                        Error::failed(format!("resource {name}: {path} is no longer a directory"))
                    }
                    _ => Error::failed(format!("resource {name}: {e}")),
                }
            })?;
        let st =
            sys::fstat(&fd).map_err(|e| Error::failed(format!("resource {name}: {path}: {e}")))?;
        let opened = Opened {
            handle: Handle::Dir(fd),
            st,
        };
        self.listed = None;
        let mut meta = self
            .node(
                opened,
                &root_path,
                b"",
                name.as_bytes().to_vec(),
                prev,
                None,
                None,
            )?
            .ok_or_else(|| Error::failed(format!("resource {name}: {path} cannot be backed up")))?;
        let root = self.listed.take().ok_or_else(|| {
            Error::failed(format!("resource {name}: {path} is no longer a directory"))
        })?;
        self.flush()?;
        meta.subtree = Some(self.roots.remove(&root).ok_or_else(|| {
            Error::failed(format!(
                "resource {name}: the tree of {path} was not written"
            ))
        })?);
        // The resource's own directory is not one of its entries.
        self.stats.dirs -= 1;
        Ok(meta)
    }

    fn store_tree(&mut self, tree: Tree) -> Result<BlobId> {
        self.sh
            .put(BlobKind::Tree, &model::encode_tree(&tree), &mut self.out)
    }

    /// Back up a disk (block device or raw image) as one file node named
    /// `name`: fixed-size chunks on a fixed grid, all-zero chunks and holes
    /// left out (they read back as zeros). Batches of chunks are read and
    /// compressed on [`DISK_READERS`] threads.
    fn disk(&mut self, path: &Path, name: Vec<u8>, prev: Option<&Node>) -> Result<Node> {
        let shown = path.display().to_string();
        let (f, st) = open_disk(path).map_err(|e| Error::failed(format!("disk {shown}: {e}")))?;
        let block_dev = st.st_mode & libc::S_IFMT == libc::S_IFBLK;
        let size = if block_dev {
            sys::block_device_size(f.as_raw_fd())
        } else {
            Ok(st.st_size.max(0) as u64)
        }
        .map_err(|e| Error::failed(format!("disk {shown}: {e}")))?;
        let mut n = Node::new(name, NodeKind::File);
        n.mode = st.st_mode & 0o7777;
        n.uid = st.st_uid;
        n.gid = st.st_gid;
        n.mtime_ns = ns(st.st_mtime, st.st_mtime_nsec);
        n.ctime_ns = ns(st.st_ctime, st.st_ctime_nsec);
        n.inode = st.st_ino;
        n.dev = st.st_dev;
        n.size = size;
        self.stats.bytes_total += size;
        self.sh.progress.add_file();
        // An image file whose size, times and inode are unchanged is not
        // read again. A block device's times say nothing of its contents.
        if let Some(p) = prev.filter(|p| {
            !self.full
                && !block_dev
                && p.size == n.size
                && p.mtime_ns == n.mtime_ns
                && p.ctime_ns == n.ctime_ns
                && p.inode == n.inode
        }) {
            n.content = p.content.clone();
            n.blocks = p.blocks;
            self.stats.files_unchanged += 1;
            self.sh.progress.add_done(size);
            return Ok(n);
        }
        // Under `--full` an image whose size, times and inode are the
        // previous backup's is read again but counted unchanged, as an
        // incremental would count it (issue #16: it was "new").
        let same_meta = prev.is_some_and(|p| {
            !block_dev
                && p.size == n.size
                && p.mtime_ns == n.mtime_ns
                && p.ctime_ns == n.ctime_ns
                && p.inode == n.inode
        });
        if same_meta {
            self.stats.files_unchanged += 1;
        } else if prev.is_some() {
            self.stats.files_changed += 1;
        } else {
            self.stats.files_new += 1;
        }
        let extents = if block_dev {
            vec![(0, size)]
        } else {
            sys::data_extents(f.as_raw_fd(), size)
                .map_err(|e| Error::failed(format!("disk {shown}: {e}")))?
        };
        // Batches end on the chunk grid so chunks never straddle one.
        const C: u64 = DISK_CHUNK as u64;
        const BATCH: u64 = 64 * C;
        let mut batches = Vec::new();
        for (s, e) in extents {
            let mut pos = s;
            while pos < e {
                let end = e.min((pos / BATCH + 1) * BATCH);
                batches.push((pos, end));
                pos = end;
            }
        }
        let mut chunks = Vec::new();
        let mut stored = 0u64;
        // A window of batches at a time bounds the results held.
        for window in batches.chunks(256) {
            // Interrupted: what was stored so far is kept (see `run_inner`).
            if self.sh.progress.cancelled() {
                return Err(Error::failed(format!("interrupted in disk {shown}")));
            }
            let next = AtomicUsize::new(0);
            let failed = AtomicBool::new(false);
            let results: Vec<Mutex<Option<Result<Vec<ChunkRef>>>>> =
                window.iter().map(|_| Mutex::new(None)).collect();
            let work = || {
                let mut buf = vec![0u8; BATCH as usize];
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(pos, end)) = window.get(i) else {
                        return;
                    };
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let r = disk_batch(&f, &shown, pos, end, &mut buf, &mut out, self.sh);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    *results[i].lock() = Some(r);
                }
            };
            let threads = DISK_READERS.min(window.len());
            std::thread::scope(|s| {
                for _ in 1..threads {
                    s.spawn(work);
                }
                work();
            });
            let mut results: Vec<_> = results.into_iter().map(|r| r.into_inner()).collect();
            if let Some(at) = results.iter().position(|r| matches!(r, Some(Err(_)))) {
                if let Some(Err(e)) = results.swap_remove(at) {
                    return Err(e);
                }
            }
            for (r, &(pos, end)) in results.into_iter().zip(window) {
                let Some(Ok(c)) = r else {
                    return Err(Error::failed(format!(
                        "disk {shown}: the range at {pos} was not read"
                    )));
                };
                stored += c.iter().map(|c| c.len as u64).sum::<u64>();
                chunks.extend(c);
                self.stats.bytes_read += end - pos;
            }
        }
        n.blocks = stored.div_ceil(512);
        n.content = self.content(&chunks)?;
        Ok(n)
    }

    fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        model::decode_tree(&self.repo.read_blob(id)?)
    }

    fn excluded(&self, rel: &[u8], name: &[u8]) -> bool {
        self.excludes.iter().any(|g| {
            if g.contains('/') {
                sys::fnmatch(g.trim_start_matches('/'), rel)
            } else {
                sys::fnmatch(g, name)
            }
        })
    }

    /// List the directory open as `fd` (on device `dev`; `path` and
    /// relative path `rel` in the resource, for messages and exclusions),
    /// open each entry relative to `fd` (see [`open_entry`]), hand its
    /// files to the readers and walk its subdirectories. Returns its
    /// pending id; its tree is written later (see
    /// [`Walker::finish_ready`]) into entry `parent`. `prev` is the same
    /// directory in the previous backup. Without `descend` the directory
    /// is kept empty (a mount point not crossed). One descriptor per level
    /// is held while its entries are walked.
    #[allow(clippy::too_many_arguments)]
    fn dir(
        &mut self,
        fd: OwnedFd,
        dev: u64,
        path: &Path,
        rel: &[u8],
        prev: Option<&Tree>,
        parent: Option<(u64, usize)>,
        descend: bool,
    ) -> Result<u64> {
        let id = self.next_dir;
        self.next_dir += 1;
        self.pending.insert(
            id,
            PendingDir {
                tree: Tree::default(),
                waiting: 0,
                failed: Vec::new(),
                parent,
            },
        );
        let mut names: Vec<sys::DirEntry> = Vec::new();
        if descend {
            match sys::list_dir(&fd) {
                Ok(v) => names = v,
                Err(e) => self.warn(format!("{}: cannot list: {e}", path.display())),
            }
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(keep) = self.tagged(&fd, &names, path) {
            names.retain(|(n, _)| keep.contains(n));
        }
        for (name, hint) in names {
            if self.sh.progress.cancelled() {
                self.sh.stop.store(true, Ordering::Relaxed);
                return Err(Error::failed(format!("interrupted at {}", path.display())));
            }
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                [rel, b"/", &name].concat()
            };
            if self.excluded(&child_rel, &name) {
                continue;
            }
            let child = path.join(std::ffi::OsStr::from_bytes(&name));
            let opened = match open_entry(&fd, &name, hint) {
                Ok(o) => o,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.warn(format!("{}: vanished during the backup", child.display()));
                    continue;
                }
                Err(e) => {
                    self.warn(format!("{}: cannot open: {e}", child.display()));
                    continue;
                }
            };
            let prev_node = prev.and_then(|t| t.find(&name));
            let idx = self.pending_dir(id)?.tree.entries.len();
            self.deferred = None;
            let Some(n) = self.node(
                opened,
                &child,
                &child_rel,
                name,
                prev_node,
                Some((id, idx)),
                Some(dev),
            )?
            else {
                continue;
            };
            let size = n.size;
            let read = self.deferred.take();
            let pd = self.pending_dir(id)?;
            pd.tree.entries.push(n);
            if let Some(file) = read {
                pd.waiting += 1;
                self.submit(Job {
                    dir: id,
                    idx,
                    path: child,
                    file,
                    size,
                })?;
            }
        }
        // No read is taken back between here and the caller's push of this
        // directory's entry: its tree cannot be finished before the entry
        // it goes into exists.
        self.order.push_back(id);
        Ok(id)
    }

    /// If the directory open as `fd` (listed as `names`) is tagged to be
    /// left out — a valid `CACHEDIR.TAG` under `--exclude-caches`, an entry
    /// named by `--exclude-if-present` — the names of the tags, the only
    /// entries kept (as restic keeps them, so the directory says why it is
    /// empty). The tag is opened from `fd` like every entry, never through
    /// a symlink.
    fn tagged(&self, fd: &OwnedFd, names: &[sys::DirEntry], path: &Path) -> Option<Vec<Vec<u8>>> {
        if !self.exclude_caches && self.if_present.is_empty() {
            return None;
        }
        let mut keep: Vec<Vec<u8>> = names
            .iter()
            .filter(|(n, _)| self.if_present.iter().any(|p| p.as_bytes() == &n[..]))
            .map(|(n, _)| n.clone())
            .collect();
        if self.exclude_caches {
            if let Some((n, hint)) = names.iter().find(|(n, _)| n == CACHEDIR_TAG) {
                if is_cache_tag(fd, n, *hint) && !keep.contains(n) {
                    keep.push(n.clone());
                }
            }
        }
        if keep.is_empty() {
            return None;
        }
        log::info!(
            "{}: contents left out (tagged by {})",
            path.display(),
            keep.iter()
                .map(|n| crate::quote::quote_bytes(n))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Some(keep)
    }

    fn pending_dir(&mut self, id: u64) -> Result<&mut PendingDir> {
        self.pending
            .get_mut(&id)
            .ok_or_else(|| Error::failed(format!("internal: directory {id} is not pending")))
    }

    /// Hand a file to the readers; if too many are out, take some back.
    fn submit(&mut self, job: Job) -> Result<()> {
        self.batch_bytes += job.size;
        self.batch.push(job);
        self.inflight += 1;
        if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
            self.send_batch()?;
        }
        while self.inflight >= self.max_inflight {
            self.receive(true)?;
        }
        Ok(())
    }

    fn send_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_bytes = 0;
        self.jobs
            .send(std::mem::take(&mut self.batch))
            .map_err(|_| Error::failed("the file readers stopped".to_string()))
    }

    /// Take back one batch of file reads (waiting for one if `block`), put
    /// them in their directories' trees, and write the trees now complete.
    /// False if none was ready.
    fn receive(&mut self, block: bool) -> Result<bool> {
        let batch = if block {
            // What is waited for must have been sent.
            self.send_batch()?;
            self.done
                .recv()
                .map_err(|_| Error::failed("the file readers stopped".to_string()))?
        } else {
            match self.done.try_recv() {
                Ok(d) => d,
                Err(_) => return Ok(false),
            }
        };
        self.inflight -= batch.len();
        for d in batch {
            self.apply(d)?;
        }
        self.finish_ready()?;
        Ok(true)
    }

    /// Put one file read in its directory's tree.
    fn apply(&mut self, d: Done) -> Result<()> {
        let Done {
            dir,
            idx,
            path,
            result,
        } = d;
        match result {
            Ok(read) => {
                self.stats.bytes_read += read.bytes;
                let content = self.content(&read.chunks)?;
                // Empty but under `--full`: no hashing per file otherwise.
                let recheck = !self.recheck.is_empty() && self.recheck.remove(&(dir, idx));
                let mut warns = Vec::new();
                let n = self
                    .pending_dir(dir)?
                    .tree
                    .entries
                    .get_mut(idx)
                    .ok_or_else(|| Error::failed(format!("internal: no entry {idx}")))?;
                let listed = FileState::of_node(n);
                let data_end = read
                    .chunks
                    .last()
                    .map_or(0, |c| c.offset.saturating_add(c.len as u64));
                // The size kept is what was read: a file that shrank while
                // (or before) it was read must not be restored at its old
                // size with zeros where its end was. Bytes read were the
                // file's when read, so the size never drops below them.
                // When its size moved during the read, a tail the read did
                // not reach is no hole to trust either: SEEK_HOLE put the
                // end where a truncation had it, and the file may have
                // grown again (past or short of its size at open) since.
                let shrank_to = match read.eof_at {
                    Some(e) => Some(e.max(data_end)),
                    None if read.after.size != n.size && data_end < n.size => Some(data_end),
                    None => None,
                };
                // The bytes came from the descriptor the metadata came from:
                // the same inode, whatever happened to its name meanwhile.
                // What can differ is its state, changed while it was read.
                let why = if let Some(to) = shrank_to.filter(|to| *to < n.size) {
                    Some(format!(
                        "shrank during the backup from {} to {} bytes",
                        n.size, to
                    ))
                } else if read.after != listed {
                    Some("changed during the backup".to_string())
                } else {
                    None
                };
                if let Some(to) = shrank_to {
                    n.size = n.size.min(to);
                }
                if let Some(why) = why {
                    warns.push(format!("{}: {why} (saved as read)", path.display()));
                }
                // `n.content` is still the previous backup's (see `node`):
                // same bytes, same chunks.
                let same = recheck.then_some(n.content == content);
                n.content = content;
                match same {
                    Some(true) => self.stats.files_unchanged += 1,
                    Some(false) => self.stats.files_changed += 1,
                    None => {}
                }
                for w in warns {
                    self.warn(w);
                }
            }
            Err(ReadError::Source(e)) => {
                if self.recheck.remove(&(dir, idx)) {
                    self.stats.files_changed += 1;
                }
                self.warn(e.to_string());
                self.pending_dir(dir)?.failed.push(idx);
            }
            Err(ReadError::Store(e)) => return Err(e),
            Err(ReadError::Stopped) => return Err(self.store_failure(&path)),
        }
        self.pending_dir(dir)?.waiting -= 1;
        Ok(())
    }

    /// The store error that stopped the readers, from the reads still out.
    fn store_failure(&mut self, path: &Path) -> Error {
        while self.inflight > 0 {
            if self.send_batch().is_err() {
                break;
            }
            let Ok(batch) = self.done.recv() else { break };
            self.inflight -= batch.len();
            for d in batch {
                if let Err(ReadError::Store(e)) = d.result {
                    return e;
                }
            }
        }
        Error::failed(format!("{}: not read (the backup stopped)", path.display()))
    }

    /// Write the trees of the directories at the front of the order whose
    /// files are all back.
    fn finish_ready(&mut self) -> Result<()> {
        while let Some(&id) = self.order.front() {
            if self.pending.get(&id).is_some_and(|p| p.waiting > 0) {
                return Ok(());
            }
            self.order.pop_front();
            let Some(mut pd) = self.pending.remove(&id) else {
                continue;
            };
            if !pd.failed.is_empty() {
                let mut keep = vec![true; pd.tree.entries.len()];
                for i in &pd.failed {
                    if let Some(k) = keep.get_mut(*i) {
                        *k = false;
                    }
                }
                let mut i = 0;
                pd.tree.entries.retain(|_| {
                    i += 1;
                    keep[i - 1]
                });
            }
            if let Some(e) = pd
                .tree
                .entries
                .iter()
                .find(|e| e.kind == NodeKind::Dir && e.subtree.is_none())
            {
                return Err(Error::failed(format!(
                    "internal: the tree of {} was not written before its parent's",
                    String::from_utf8_lossy(&e.name)
                )));
            }
            let blob = self.store_tree(pd.tree)?;
            match pd.parent {
                Some((p, idx)) => {
                    let entry = self
                        .pending
                        .get_mut(&p)
                        .and_then(|pp| pp.tree.entries.get_mut(idx))
                        .ok_or_else(|| {
                            Error::failed(format!(
                                "internal: directory {id} finished before its entry"
                            ))
                        })?;
                    entry.subtree = Some(blob);
                }
                None => {
                    self.roots.insert(id, blob);
                }
            }
        }
        Ok(())
    }

    /// Take back every read out and write every pending tree.
    fn flush(&mut self) -> Result<()> {
        loop {
            while self.receive(false)? {}
            self.finish_ready()?;
            if self.order.is_empty() {
                return Ok(());
            }
            if self.inflight == 0 {
                return Err(Error::failed(
                    "internal: directories pending with no read out".to_string(),
                ));
            }
            self.receive(true)?;
        }
    }

    /// One entry, from what [`open_entry`] opened: every field of its node
    /// (kind, mode, owner, times, size, links, inode, device) from `fstat`
    /// of that descriptor, its xattrs from the same descriptor, and a
    /// regular file's bytes read later from it too (`self.deferred`), so
    /// metadata and bytes are always of one inode. Source-side failures
    /// are reported and the entry skipped (`Ok(None)`); an error is the
    /// store's and stops the backup. A directory is listed (see
    /// [`Walker::dir`]) as entry `parent`; `parent_dev` is its parent's
    /// device (none for a resource's root).
    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        opened: Opened,
        path: &Path,
        rel: &[u8],
        name: Vec<u8>,
        prev: Option<&Node>,
        parent: Option<(u64, usize)>,
        parent_dev: Option<u64>,
    ) -> Result<Option<Node>> {
        let st = opened.st;
        let Some(kind) = NodeKind::from_mode(st.st_mode) else {
            self.warn(format!("{}: unknown file type", path.display()));
            return Ok(None);
        };
        let (dev, ino) = (st.st_dev, st.st_ino);
        if kind == NodeKind::Dir && self.skip == Some((dev, ino)) {
            self.warn(format!(
                "{}: is the cbrfs store itself, not backed up",
                path.display()
            ));
            return Ok(None);
        }
        let mut n = Node::new(name, kind);
        n.mode = st.st_mode & 0o7777;
        n.uid = st.st_uid;
        n.gid = st.st_gid;
        n.mtime_ns = ns(st.st_mtime, st.st_mtime_nsec);
        n.ctime_ns = ns(st.st_ctime, st.st_ctime_nsec);
        n.nlink = st.st_nlink.min(u32::MAX as u64) as u32;
        n.blocks = st.st_blocks.max(0) as u64;
        n.inode = ino;
        n.dev = dev;
        n.rdev = st.st_rdev;
        n.xattrs = match sys::fd_xattrs(opened.handle.raw()) {
            Ok(x) => x
                .into_iter()
                .map(|(name, value)| Xattr { name, value })
                .collect(),
            Err(e) => {
                self.warn(format!("{}: cannot read xattrs: {e}", path.display()));
                Vec::new()
            }
        };
        if kind != NodeKind::Dir && st.st_nlink > 1 {
            let next = self.links.len() as u64 + 1;
            n.link_group = *self.links.entry((dev, ino)).or_insert(next);
        }
        match (kind, opened.handle) {
            (NodeKind::Dir, Handle::Dir(fd)) => {
                let descend = match parent_dev {
                    Some(pd) if pd != dev => self.crosses_into(path, dev),
                    _ => true,
                };
                let prev_tree = match prev {
                    // Loaded under `--full` too: its files are read
                    // again, but counted against the previous backup.
                    Some(p) if p.kind == NodeKind::Dir && descend => {
                        p.subtree.and_then(|id| self.load_tree(&id).ok())
                    }
                    _ => None,
                };
                let id = self.dir(fd, dev, path, rel, prev_tree.as_ref(), parent, descend)?;
                self.deferred = None;
                self.listed = Some(id);
                self.stats.dirs += 1;
            }
            (NodeKind::Symlink, h) => {
                self.stats.others += 1;
                let t = match sys::readlink_fd(h.raw()) {
                    Ok(t) => t,
                    Err(e) => {
                        self.warn(format!("{}: cannot read link: {e}", path.display()));
                        return Ok(None);
                    }
                };
                n.target = t;
                n.size = n.target.len() as u64;
            }
            (NodeKind::File, Handle::File(f)) => {
                n.size = st.st_size.max(0) as u64;
                self.stats.bytes_total += n.size;
                let same_meta = prev.filter(|p| {
                    p.kind == NodeKind::File
                        && p.size == n.size
                        && p.mtime_ns == n.mtime_ns
                        && p.ctime_ns == n.ctime_ns
                        && p.inode == n.inode
                });
                if let Some(p) = same_meta.filter(|_| !self.full) {
                    n.content = p.content.clone();
                    self.stats.files_unchanged += 1;
                    self.sh.progress.add_done(n.size);
                } else if n.size == 0 {
                    // Nothing to read: fstat said empty, as it says of
                    // every other field of the node.
                    if same_meta.is_some_and(|p| p.content == Content::None) {
                        self.stats.files_unchanged += 1;
                    } else if prev.is_some() {
                        self.stats.files_changed += 1;
                    } else {
                        self.stats.files_new += 1;
                    }
                } else {
                    match (same_meta, parent) {
                        // `--full` reads it again; whether it is unchanged
                        // (as an incremental would have counted it, and
                        // with the same bytes) is known once it is read:
                        // the previous content waits in the node for
                        // `apply` to compare (issue #16: all were "new").
                        (Some(p), Some(at)) => {
                            n.content = p.content.clone();
                            self.recheck.insert(at);
                        }
                        _ if prev.is_some() => self.stats.files_changed += 1,
                        _ => self.stats.files_new += 1,
                    }
                    // Read by the readers (see `reader`), from this
                    // descriptor.
                    self.deferred = Some(f);
                }
                self.sh.progress.add_file();
            }
            (NodeKind::Dir | NodeKind::File, _) => {
                // open_entry hands directories and files over open as such.
                return Err(Error::failed(format!(
                    "internal: {} was not opened as its type",
                    path.display()
                )));
            }
            _ => self.stats.others += 1,
        }
        Ok(Some(n))
    }

    /// Whether to descend into the directory at `path`, on device `dev`,
    /// which is not its parent's: not with `--one-file-system`, and never
    /// into a FUSE file system a user other than root mounted (its daemon
    /// could claim root's ownership and a setuid mode for its files). The
    /// directory itself is kept, empty, as restic keeps mount points.
    fn crosses_into(&mut self, path: &Path, dev: u64) -> bool {
        if self.one_fs {
            log::info!(
                "{}: on another file system, kept as an empty directory (--one-file-system)",
                path.display()
            );
            return false;
        }
        if let Some(m) = self.mounts.user_fuse(dev) {
            let who = m
                .user_id()
                .map_or_else(|| "an unknown user".to_string(), |u| format!("user {u}"));
            let msg = format!(
                "{}: a FUSE file system ({}) mounted by {who}: not descended into, kept as an empty directory",
                path.display(),
                m.fstype
            );
            self.warn(msg);
            return false;
        }
        true
    }

    /// A file's content reference: inline for small files, chunk-list blobs
    /// for large ones. Lists end where a chunk id's low bits are zero, so a
    /// change in one place rewrites one list, not those after it.
    fn content(&mut self, chunks: &[ChunkRef]) -> Result<Content> {
        if chunks.is_empty() {
            return Ok(Content::None);
        }
        if chunks.len() <= model::INLINE_CHUNKS {
            return Ok(Content::Chunks(chunks.to_vec()));
        }
        let mut lists = Vec::new();
        let mut cur: Vec<RelChunk> = Vec::new();
        let mut list_start = 0u64;
        let mut pos = 0u64;
        for (i, c) in chunks.iter().enumerate() {
            cur.push(RelChunk {
                id: c.id,
                gap: c.offset - pos,
                len: c.len,
            });
            pos = c.offset + c.len as u64;
            let boundary = c.id.0[15] & 0x3f == 0 || cur.len() >= 1024;
            if boundary || i + 1 == chunks.len() {
                let blob = model::encode_chunk_list(&cur);
                let id = self.sh.put(BlobKind::ChunkList, &blob, &mut self.out)?;
                lists.push(ListRef {
                    id,
                    offset: list_start,
                    span: pos - list_start,
                    count: cur.len() as u32,
                });
                cur.clear();
                list_start = pos;
            }
        }
        Ok(Content::Lists(lists))
    }
}

/// Read the chunk-grid range `pos..end` of a disk into `buf` and store its
/// chunks that are not all zero.
fn disk_batch(
    f: &std::fs::File,
    shown: &str,
    pos: u64,
    end: u64,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    sh: &Shared<'_, '_>,
) -> Result<Vec<ChunkRef>> {
    use std::os::unix::fs::FileExt;
    const C: u64 = DISK_CHUNK as u64;
    let len = (end - pos) as usize;
    f.read_exact_at(&mut buf[..len], pos)
        .map_err(|err| Error::failed(format!("disk {shown}: read at {pos}: {err}")))?;
    sh.progress.add_read(len as u64);
    let mut chunks = Vec::new();
    let mut off = pos;
    while off < end {
        let cend = end.min((off / C + 1) * C);
        let data = &buf[(off - pos) as usize..(cend - pos) as usize];
        if data.iter().any(|b| *b != 0) {
            chunks.push(ChunkRef {
                id: sh.put(BlobKind::Data, data, out)?,
                offset: off,
                len: data.len() as u32,
            });
        }
        off = cend;
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(o: &Opened) -> (&'static str, u32) {
        let h = match o.handle {
            Handle::Dir(_) => "dir",
            Handle::File(_) => "file",
            Handle::Other(_) => "other",
        };
        (h, o.st.st_mode & libc::S_IFMT)
    }

    /// Whatever the listing's d_type said, what is recorded is what the
    /// open found: a symlink is never followed (nor opened as the
    /// directory it points to), a fifo where a file was listed is not
    /// waited on, and an entry opened through O_PATH and found to be a
    /// file or directory is opened as one — the same inode.
    #[test]
    fn open_entry_records_what_it_opened() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        std::fs::create_dir(p.join("dir")).unwrap();
        std::fs::write(p.join("file"), b"bytes").unwrap();
        std::os::unix::fs::symlink("dir", p.join("link")).unwrap();
        let c = sys::cstr(p.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let dir = sys::open_dir(p).unwrap();
        let open = |name: &[u8], hint: u8| {
            let dir = dir.try_clone().unwrap();
            let name = name.to_vec();
            crate::testkit::within(10, move || open_entry(&dir, &name, hint).unwrap())
        };
        // Listed as a directory, now a symlink to one: the link itself.
        let o = open(b"link", libc::DT_DIR);
        assert_eq!(kind_of(&o), ("other", libc::S_IFLNK));
        assert_eq!(sys::readlink_fd(o.handle.raw()).unwrap(), b"dir");
        // Listed as a file, now a fifo: not blocked on, not a file.
        assert_eq!(
            kind_of(&open(b"fifo", libc::DT_REG)),
            ("other", libc::S_IFIFO)
        );
        // Listed as a symlink, now a file or a directory: opened as such.
        let o = open(b"file", libc::DT_LNK);
        assert_eq!(kind_of(&o), ("file", libc::S_IFREG));
        let Handle::File(mut f) = o.handle else {
            unreachable!()
        };
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "bytes");
        assert_eq!(
            kind_of(&open(b"dir", libc::DT_UNKNOWN)),
            ("dir", libc::S_IFDIR)
        );
        assert_eq!(kind_of(&open(b"dir", libc::DT_REG)), ("dir", libc::S_IFDIR));
        assert_eq!(
            kind_of(&open(b"file", libc::DT_DIR)),
            ("file", libc::S_IFREG)
        );
    }
}
