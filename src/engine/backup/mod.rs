//! Backup: walk a resource, chunk what changed, store new blobs, write the
//! trees bottom-up, then commit: index after packs, record after index.
//!
//! A file whose size, mtime, ctime and inode match the previous backup of the
//! same resource is not read again: its chunk list is reused. `--full`
//! reads everything (deduplication still applies).
//!
//! This file owns a backup's life: its checks and lock ([`prepare`]), its
//! task and status file, the run over the vault's resources and the commit
//! of its record. The parts: `walker` (the walk of one resource),
//! `pending` (reads out and trees waiting for them), `readers` (the reader
//! threads), `source` (opening entries safely), `disk` (disk resources),
//! `server` (server resources and hooks), `capacity` (auto-expand and the
//! usage threshold).

mod capacity;
mod disk;
mod fingerprints;
mod pending;
mod readers;
mod server;
mod source;
mod walker;

use super::progress::Progress;
use super::status;
use crate::catalog::{self, Resource, Store, VaultConfig};
use crate::chunker::Cdc;
use crate::error::{Error, IoContext, Kind, Result};
use crate::model::{
    self, BackupRecord, BackupStats, Node, NodeKind, Origin, ResourceBackup, ResourceKind, Tree,
};
use crate::mountinfo::MountTable;
use crate::rules;
use crate::store::RepoWriter;
use crate::tasks;
use capacity::expand;
use parking_lot::{Condvar, Mutex};
use readers::{max_inflight, reader, Buffers, Done, Job, Shared, BIG_BUFFERS};
use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use walker::Walker;

pub use disk::DISK_CHUNK;
pub use readers::READERS;
pub use server::server_members;

/// Index the packs sealed every this many bytes during a backup, so that a
/// backup killed (or failed) later keeps them for its retry (issue #16).
const CHECKPOINT_BYTES: u64 = 256 << 20;
/// ...and once a pack is sealed this long after the last checkpoint.
const CHECKPOINT_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

/// Stack of a backup's thread ([`Prepared::start`]): the walk recurses
/// once per directory level of the source.
pub const STACK: usize = 256 << 20;

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
    _lock: Option<crate::store::lease::WriterLock>,
    used_before: u64,
    /// The task recorded when the backup was accepted.
    task: Option<tasks::TaskHandle>,
    /// Its status file, written when it was accepted (None for a dry run).
    status_file: Option<status::Writer>,
    /// When it was accepted, RFC 3339.
    started: String,
    /// Where its task's count of requests to a remote vault's bucket
    /// starts; its record counts from the same point.
    requests_mark: Option<crate::model::Requests>,
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
///
/// A refusal is recorded in the task log here, whoever asked (`backup
/// create`, the mount's `mkdir`, a policy pass), by [`record_refusal`]: a
/// failed backup task with the reason, dated at the backup's time
/// ([`BackupOptions::at_ns`], else now). It names the backup only for a
/// `mkdir`, whose name is the directory the user made; a refused `backup
/// create` names none, as no backup was made. A policy's time point that
/// finds the vault busy is not a failure: it is recorded as skipped, and
/// the error returned says so.
pub fn prepare(store: &Store, vault: &str, opts: BackupOptions) -> Result<Prepared> {
    let at_ns = opts.at_ns.unwrap_or_else(catalog::now_ns);
    let origin = opts.origin.unwrap_or(Origin::Manual);
    let asked = match origin {
        Origin::Mount => opts.name.clone(),
        Origin::Manual | Origin::Policy => None,
    };
    let policy = opts.policy.clone();
    // Before the vault is opened and its lease taken: the task counts
    // both (docs/JSON.md, `requests`).
    let mark = store.task_requests_mark(vault);
    accept(store, vault, opts, mark).map_err(|e| match (origin, policy, e.kind()) {
        (Origin::Policy, Some(p), Kind::Busy) => {
            let why = format!(
                "policy {p}: time point skipped: the vault's previous backup is still running"
            );
            tasks::event(
                store,
                tasks::TaskType::Backup,
                vault,
                tasks::TaskState::Skipped,
                why.clone(),
                at_ns,
            );
            Error::new(Kind::Busy, why)
        }
        _ => {
            record_refusal_counting(store, vault, asked.as_deref(), &e, at_ns, mark);
            e
        }
    })
}

/// [`prepare`] but for the task log.
fn accept(
    store: &Store,
    vault: &str,
    mut opts: BackupOptions,
    mark: Option<crate::model::Requests>,
) -> Result<Prepared> {
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
    let dry_run = opts.dry_run;
    opts.name = Some(name.clone());
    // One value for both paths; a real backup fills in its lock, task and
    // status file below.
    let mut p = Prepared {
        task: None,
        status_file: None,
        started: catalog::now_rfc3339(),
        requests_mark: mark,
        store: store.clone(),
        vault: cfg,
        name,
        opts,
        resources,
        _lock: None,
        used_before: 0,
        progress: Arc::new(Progress::new(total)),
    };
    if dry_run {
        // Nothing is written, so nothing to lock out, and a full vault is
        // for the figures to show, not a refusal.
        p.used_before = store.used_bytes(vault)?;
        return Ok(p);
    }
    // On a remote vault the lease is confirmed behind the backup's first
    // work (its settle time is a wait): only packs go up before it is.
    let lock = store.try_backup_lock_early(vault)?;
    let repo = store.repo(vault)?;
    let used = repo.used_bytes()?;
    if used >= p.vault.capacity_bytes() && p.vault.auto_expand {
        p.vault = expand(
            store,
            vault,
            used,
            p.opts.at_ns.unwrap_or_else(catalog::now_ns),
        )?;
    }
    if used >= p.vault.capacity_bytes() {
        return Err(Error::new(
            Kind::NoSpace,
            format!(
                "vault {vault} is full: {} used of {} GB capacity",
                rules::human_bytes(used),
                p.vault.capacity_gb
            ),
        )
        .code("BackupService.6114"));
    }
    // Accepted: from here the backup is in the task log and has a status
    // file, so if this process dies before `run` even starts (a mount daemon
    // killed right after a mkdir), `backup wait` and `task list` say it
    // failed instead of that it never existed.
    p.started = catalog::now_rfc3339();
    let at = p.opts.at_ns.unwrap_or_else(catalog::now_ns);
    p.task = Some(tasks::start_counting(
        store,
        tasks::TaskType::Backup,
        vault,
        None,
        Some(&p.name),
        at,
        mark,
    ));
    let status_file = status::Writer::new(store, vault);
    status_file.write(&status::Status {
        backup: p.name.clone(),
        status: status::RunStatus::Protecting,
        progress: 0,
        bytes_read: 0,
        files: 0,
        pid: std::process::id(),
        started: p.started.clone(),
        error: None,
    });
    p.status_file = Some(status_file);
    p._lock = Some(lock);
    p.used_before = used;
    Ok(p)
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

    /// Run the backup and commit it, on a thread of its own (see
    /// [`Prepared::start`]), and wait for it. On error nothing is committed:
    /// sealed packs without an index are invisible (prune removes them),
    /// and every earlier backup is untouched.
    pub fn run(self) -> Result<BackupRecord> {
        self.start(|result| result)?
            .join()
            .map_err(|_| Error::failed("the backup thread panicked (see the log)"))?
    }

    /// Start the backup on a thread of its own and return at once; `then`
    /// gets its result on that thread, and what `then` returns is what the
    /// handle's `join` gives. Every backup starts here — the mount's
    /// `mkdir`, `backup create` and a policy pass — because the walk
    /// recurses once per directory level: the thread gets [`STACK`] bytes of
    /// stack, not the 2 MiB of a spawned thread or the 8 MiB of `main`.
    pub fn start<T: Send + 'static>(
        self,
        then: impl FnOnce(Result<BackupRecord>) -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<T>> {
        let what = format!("backup {} of vault {}", self.name, self.vault.name);
        std::thread::Builder::new()
            .name(format!("backup-{}-{}", self.vault.name, self.name))
            .stack_size(STACK)
            .spawn(move || then(self.run_here()))
            .map_err(|e| Error::io(format!("{what}: start its thread"), e))
    }

    /// [`Prepared::run`] on the calling thread.
    fn run_here(mut self) -> Result<BackupRecord> {
        if self.opts.dry_run {
            // No task, status or capacity event: nothing happened.
            return self.run_inner();
        }
        let vault = self.vault.name.clone();
        let started = self.started.clone();
        let at = self.opts.at_ns.unwrap_or_else(catalog::now_ns);
        let task = std::sync::Mutex::new(self.task.take().unwrap_or_else(|| {
            tasks::start(
                &self.store,
                tasks::TaskType::Backup,
                &vault,
                None,
                Some(&self.name),
                at,
            )
        }));
        // The one writer since the backup was accepted: a failure to write
        // is logged once, however many writes fail.
        let status_file = self
            .status_file
            .take()
            .unwrap_or_else(|| status::Writer::new(&self.store, &vault));
        let status = |st: status::RunStatus, error: Option<String>| status::Status {
            backup: self.name.clone(),
            status: st,
            progress: self.progress.percent(),
            bytes_read: self.progress.read(),
            files: self.progress.files(),
            pid: std::process::id(),
            started: started.clone(),
            error,
        };
        status_file.write(&status(status::RunStatus::Protecting, None));
        let done = std::sync::atomic::AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            let ticker = s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::park_timeout(std::time::Duration::from_millis(500));
                    if !done.load(std::sync::atomic::Ordering::Relaxed) {
                        status_file.write(&status(status::RunStatus::Protecting, None));
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
            Ok(_) => status_file.remove(&self.name),
            Err(e) => status_file.write(&status(status::RunStatus::Error, Some(e.to_string()))),
        }
        if result.is_ok() {
            self.after_capacity(at);
        }
        // The writer lock before the task ends: releasing a remote vault's
        // lease is a request of the backup's (one DELETE), which its task
        // counts like the lease's taking.
        drop(self._lock.take());
        if let Ok(t) = task.into_inner() {
            t.finish(&result);
        }
        result
    }

    fn run_inner(&self) -> Result<BackupRecord> {
        let started_ns = self.opts.at_ns.unwrap_or_else(catalog::now_ns);
        let t0 = std::time::Instant::now();
        let vault = self.vault.name.clone();
        // The record keeps what the backup asked of a remote vault's
        // bucket, from where its task counts (the vault's open included).
        let requests_before = self.requests_mark;
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
        let fingerprints =
            fingerprints::Fingerprints::new(&self.store.vault_dir(&vault), repo.key(), !dry_run);
        let sh = Shared {
            writer: &writer,
            cdc: &cdc,
            key: repo.key(),
            compress,
            disk_lz4: self.vault.disk_lz4(),
            progress: &self.progress,
            stop: AtomicBool::new(false),
            big: Mutex::new((0..BIG_BUFFERS).map(|_| Buffers::default()).collect()),
            big_ready: Condvar::new(),
            fingerprints: fingerprints.as_ref(),
        };
        let previous = self.store.readable_backups(&vault)?;
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
                // Typed when vault.json was read: an unknown kind there is an
                // error naming the file, no longer taken for a directory.
                let kind = res.kind;
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
        self.store.save_backup_with(&rec, requests_before)?;
        // The next backup's fingerprint tables, once this one is saved; a
        // table not written costs that backup speed, not data.
        if let Some(f) = &fingerprints {
            f.commit();
        }
        self.progress.finish();
        Ok(rec)
    }
}

/// Record a backup that was refused before it started (name taken, vault
/// full, busy) in the task log: [`prepare`] does for its refusals, a policy
/// pass for a vault whose backups it cannot read to decide what to ask for.
/// A vault that does not exist gets no task.
pub(crate) fn record_refusal(
    store: &Store,
    vault: &str,
    backup: Option<&str>,
    e: &Error,
    at_ns: i64,
) {
    let mark = store.task_requests_mark(vault);
    record_refusal_counting(store, vault, backup, e, at_ns, mark);
}

/// [`record_refusal`], the task counting requests from `mark`.
fn record_refusal_counting(
    store: &Store,
    vault: &str,
    backup: Option<&str>,
    e: &Error,
    at_ns: i64,
    mark: Option<crate::model::Requests>,
) {
    if store.vault(vault).is_err() {
        return;
    }
    tasks::start_counting(
        store,
        tasks::TaskType::Backup,
        vault,
        None,
        backup,
        at_ns,
        mark,
    )
    .failed(e);
}

/// A node named `name` of `kind` with what a backup keeps of `st`, the
/// same for a walked entry and a disk: permission bits, owner, times (ns
/// since the epoch), inode and device. The walker adds links, blocks and
/// rdev; a disk its size.
fn stat_node(name: Vec<u8>, kind: NodeKind, st: &libc::stat) -> Node {
    let mut n = Node::new(name, kind);
    n.mode = st.st_mode & 0o7777;
    n.uid = st.st_uid;
    n.gid = st.st_gid;
    n.mtime_ns = ns(st.st_mtime, st.st_mtime_nsec);
    n.ctime_ns = ns(st.st_ctime, st.st_ctime_nsec);
    n.inode = st.st_ino;
    n.dev = st.st_dev;
    n
}

/// The incremental rule: `n`, as fstat describes it now, has the size,
/// mtime, ctime and inode `prev` recorded, so its bytes are taken as
/// unchanged (not read again, unless `--full`; counted unchanged). The
/// same for a walked file and a disk image.
fn meta_unchanged(prev: &Node, n: &Node) -> bool {
    prev.size == n.size
        && prev.mtime_ns == n.mtime_ns
        && prev.ctime_ns == n.ctime_ns
        && prev.inode == n.inode
}

/// Nanoseconds since the epoch from a stat's seconds and nanoseconds.
fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}
