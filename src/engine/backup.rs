//! Backup: walk a resource, chunk what changed, store new blobs, write the
//! trees bottom-up, then commit: index after packs, record after index.
//!
//! A file whose size, mtime, ctime and inode match the previous backup of the
//! same resource is not read again: its chunk list is reused. `--full`
//! reads everything (deduplication still applies).

use super::progress::Progress;
use super::status;
use crate::catalog::{self, Resource, Store, VaultConfig};
use crate::chunker::Cdc;
use crate::error::{Error, IoContext, Kind, Result};
use crate::model::{
    self, BackupRecord, BackupStats, ChunkRef, Content, ListRef, Node, NodeKind, Origin, RelChunk,
    ResourceBackup, ResourceKind, Tree, Xattr,
};
use crate::rules;
use crate::store::{BlobId, BlobKind, Repo, RepoWriter};
use crate::sys;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    _lock: crate::fsutil::Flock,
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
    if store.backup_path(vault, &name).exists() {
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
    let lock = store.try_backup_lock(vault)?;
    let repo = store.repo(vault)?;
    let used = repo.used_bytes()?;
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
    let total: u64 = resources.iter().map(|r| r.size).sum();
    opts.name = Some(name.clone());
    Ok(Prepared {
        store: store.clone(),
        vault: cfg,
        name,
        opts,
        resources,
        _lock: lock,
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
    pub fn run(self) -> Result<BackupRecord> {
        let vault = self.vault.name.clone();
        let started = catalog::now_rfc3339();
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
        result
    }

    fn run_inner(&self) -> Result<BackupRecord> {
        let started_ns = catalog::now_ns();
        let vault = self.vault.name.clone();
        let repo = self.store.repo(&vault)?;
        // Under the writer lock no other writer of packs, indexes or records
        // runs: their temporaries are a killed run's.
        repo.remove_stale_temps()?;
        crate::fsutil::remove_stale_temps(&self.store.vault_dir(&vault).join("backups"))?;
        let used = repo.used_bytes()?;
        let mut writer = RepoWriter::new(&repo, self.vault.compress());
        writer.limit = Some(self.vault.capacity_bytes().saturating_sub(used));
        let cdc = Cdc::new(repo.key().chunker_seed());
        let previous = latest_records(&self.store, &vault);
        let store_id = std::fs::metadata(self.store.root())
            .map(|m| (m.dev(), m.ino()))
            .ok();
        let mut parts = Vec::new();
        let mut totals = BackupStats::default();
        for res in &self.resources {
            let parent = previous
                .iter()
                .filter_map(|r| {
                    r.resources
                        .iter()
                        .find(|p| p.name == res.name && p.kind == ResourceKind::Directory)
                        .map(|p| (r.name.clone(), p.meta.clone()))
                })
                .next_back();
            let mut w = Walker {
                repo: &repo,
                writer: &mut writer,
                cdc: &cdc,
                full: self.opts.full || parent.is_none(),
                excludes: &res.excludes,
                stats: BackupStats::default(),
                warnings: Vec::new(),
                links: HashMap::new(),
                progress: &self.progress,
                skip: store_id,
            };
            let root_path = PathBuf::from(&res.path);
            let md = std::fs::symlink_metadata(&root_path)
                .ctx(|| format!("resource {}: read {}", res.name, res.path))?;
            if !md.is_dir() {
                return Err(Error::failed(format!(
                    "resource {}: {} is no longer a directory",
                    res.name, res.path
                )));
            }
            let prev_meta = parent.as_ref().map(|(_, m)| m.clone());
            let meta = w
                .node(
                    &root_path,
                    b"",
                    res.name.as_bytes().to_vec(),
                    prev_meta.as_ref(),
                )?
                .ok_or_else(|| {
                    Error::failed(format!(
                        "resource {}: {} cannot be backed up",
                        res.name, res.path
                    ))
                })?;
            let root = meta.subtree.ok_or_else(|| {
                Error::failed(format!("resource {}: {} has no tree", res.name, res.path))
            })?;
            w.stats.dirs -= 1;
            let stats = w.stats;
            totals.add(&stats);
            parts.push(ResourceBackup {
                name: res.name.clone(),
                kind: ResourceKind::Directory,
                source: res.path.as_bytes().to_vec(),
                root,
                meta,
                full: w.full,
                parent: parent.map(|(n, _)| n),
                stats,
                warnings: w.warnings,
            });
        }
        let ws = writer.finish()?;
        totals.blobs_new = ws.blobs_new;
        totals.bytes_added = ws.bytes_written;
        parts.sort_by(|a, b| a.name.cmp(&b.name));
        let rec = BackupRecord {
            name: self.name.clone(),
            vault: vault.clone(),
            description: self.opts.description.clone(),
            origin: self.opts.origin.unwrap_or(Origin::Manual),
            policy: self.opts.policy.clone(),
            full: parts.iter().all(|p| p.full),
            started_ns,
            finished_ns: catalog::now_ns(),
            resources: parts,
            stats: totals,
        };
        self.store.save_backup(&rec)?;
        self.progress.finish();
        Ok(rec)
    }
}

/// Every readable backup of a vault, oldest first.
pub fn latest_records(store: &Store, vault: &str) -> Vec<BackupRecord> {
    store
        .backups(vault)
        .map(|v| v.into_iter().filter_map(|r| r.ok()).collect())
        .unwrap_or_default()
}

struct Walker<'a, 'w> {
    repo: &'a Repo,
    writer: &'a mut RepoWriter<'w>,
    cdc: &'a Cdc,
    full: bool,
    excludes: &'a [String],
    stats: BackupStats,
    warnings: Vec<String>,
    /// (dev, inode) → hard-link group.
    links: HashMap<(u64, u64), u64>,
    progress: &'a Progress,
    /// The store's own directory: never backed up into itself.
    skip: Option<(u64, u64)>,
}

fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

impl Walker<'_, '_> {
    fn warn(&mut self, msg: String) {
        log::info!("{msg}");
        self.stats.errors += 1;
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(msg);
        }
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

    /// Back up directory `path` (relative path `rel` in the resource) and
    /// return its tree blob. `prev` is the same directory in the previous
    /// backup.
    fn dir(&mut self, path: &Path, rel: &[u8], prev: Option<&Tree>) -> Result<BlobId> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        match std::fs::read_dir(path) {
            Ok(rd) => {
                for ent in rd {
                    match ent {
                        Ok(e) => names.push(e.file_name().as_bytes().to_vec()),
                        Err(e) => {
                            self.warn(format!("{}: cannot list: {e}", path.display()));
                            break;
                        }
                    }
                }
            }
            Err(e) => self.warn(format!("{}: cannot list: {e}", path.display())),
        }
        names.sort();
        let mut tree = Tree::default();
        for name in names {
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                [rel, b"/", &name].concat()
            };
            if self.excluded(&child_rel, &name) {
                continue;
            }
            let child = path.join(std::ffi::OsStr::from_bytes(&name));
            let prev_node = prev.and_then(|t| t.find(&name));
            match self.node(&child, &child_rel, name, prev_node) {
                Ok(Some(n)) => tree.entries.push(n),
                Ok(None) => {}
                Err(e) if matches!(e.kind(), Kind::Io) && e.os_error().is_some() => {
                    self.warn(e.to_string())
                }
                Err(e) => return Err(e),
            }
        }
        let blob = model::encode_tree(&tree);
        Ok(self.writer.add(BlobKind::Tree, &blob)?.id)
    }

    /// One entry. Source-side I/O errors come back as `Kind::Io` with the
    /// path, and the caller reports and skips the entry; store errors stop.
    fn node(
        &mut self,
        path: &Path,
        rel: &[u8],
        name: Vec<u8>,
        prev: Option<&Node>,
    ) -> Result<Option<Node>> {
        let md =
            std::fs::symlink_metadata(path).ctx(|| format!("{}: cannot stat", path.display()))?;
        let Some(kind) = NodeKind::from_mode(md.mode()) else {
            self.warn(format!("{}: unknown file type", path.display()));
            return Ok(None);
        };
        if kind == NodeKind::Dir && self.skip == Some((md.dev(), md.ino())) {
            self.warn(format!(
                "{}: is the cbrfs store itself, not backed up",
                path.display()
            ));
            return Ok(None);
        }
        let mut n = Node::new(name, kind);
        n.mode = md.mode() & 0o7777;
        n.uid = md.uid();
        n.gid = md.gid();
        n.mtime_ns = ns(md.mtime(), md.mtime_nsec());
        n.ctime_ns = ns(md.ctime(), md.ctime_nsec());
        n.nlink = md.nlink() as u32;
        n.blocks = md.blocks();
        n.inode = md.ino();
        n.dev = md.dev();
        n.rdev = md.rdev();
        n.xattrs = match sys::list_xattrs(path) {
            Ok(x) => x
                .into_iter()
                .map(|(name, value)| Xattr { name, value })
                .collect(),
            Err(e) => {
                self.warn(format!("{}: cannot read xattrs: {e}", path.display()));
                Vec::new()
            }
        };
        if kind != NodeKind::Dir && md.nlink() > 1 {
            let next = self.links.len() as u64 + 1;
            n.link_group = *self.links.entry((md.dev(), md.ino())).or_insert(next);
        }
        match kind {
            NodeKind::Dir => {
                self.stats.dirs += 1;
                let prev_tree = match prev {
                    Some(p) if p.kind == NodeKind::Dir && !self.full => {
                        p.subtree.and_then(|id| self.load_tree(&id).ok())
                    }
                    _ => None,
                };
                n.subtree = Some(self.dir(path, rel, prev_tree.as_ref())?);
            }
            NodeKind::Symlink => {
                self.stats.others += 1;
                let t = std::fs::read_link(path)
                    .ctx(|| format!("{}: cannot read link", path.display()))?;
                n.target = t.as_os_str().as_bytes().to_vec();
                n.size = n.target.len() as u64;
            }
            NodeKind::File => {
                n.size = md.len();
                self.stats.bytes_total += n.size;
                let unchanged = prev.filter(|p| {
                    !self.full
                        && p.kind == NodeKind::File
                        && p.size == n.size
                        && p.mtime_ns == n.mtime_ns
                        && p.ctime_ns == n.ctime_ns
                        && p.inode == n.inode
                });
                if let Some(p) = unchanged {
                    n.content = p.content.clone();
                    self.stats.files_unchanged += 1;
                    self.progress.add_done(n.size);
                } else {
                    if prev.is_some() {
                        self.stats.files_changed += 1;
                    } else {
                        self.stats.files_new += 1;
                    }
                    self.file(path, &mut n)?;
                }
                self.progress.add_file();
            }
            _ => self.stats.others += 1,
        }
        Ok(Some(n))
    }

    /// Read, chunk and store a file's data extents; holes stay holes.
    fn file(&mut self, path: &Path, n: &mut Node) -> Result<()> {
        let mut f = sys::open_noatime(path).ctx(|| format!("{}: cannot open", path.display()))?;
        let extents = sys::data_extents(f.as_raw_fd(), n.size)
            .ctx(|| format!("{}: cannot find data extents", path.display()))?;
        let mut chunks: Vec<ChunkRef> = Vec::new();
        let mut store_err: Option<Error> = None;
        for (start, end) in extents {
            f.seek(SeekFrom::Start(start))
                .ctx(|| format!("{}: seek", path.display()))?;
            let writer = &mut *self.writer;
            let progress = self.progress;
            let read = self.cdc.split((&mut f).take(end - start), |off, data| {
                progress.add_read(data.len() as u64);
                match writer.add(BlobKind::Data, data) {
                    Ok(o) => {
                        chunks.push(ChunkRef {
                            id: o.id,
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
            });
            if let Some(e) = store_err.take() {
                return Err(e);
            }
            let read = read.ctx(|| format!("{}: cannot read", path.display()))?;
            self.stats.bytes_read += read;
        }
        // A file that grew while being read keeps its stat size; one that
        // shrank ends where its data ended.
        if let Some(last) = chunks.last() {
            let end = last.offset + last.len as u64;
            if end > n.size {
                self.warn(format!("{}: grew during the backup", path.display()));
                n.size = end;
            }
        }
        if let Ok(md) = f.metadata() {
            if ns(md.mtime(), md.mtime_nsec()) != n.mtime_ns {
                self.warn(format!(
                    "{}: changed during the backup (saved as read)",
                    path.display()
                ));
            }
        }
        n.content = self.content(chunks)?;
        Ok(())
    }

    /// A file's content reference: inline for small files, chunk-list blobs
    /// for large ones. Lists end where a chunk id's low bits are zero, so a
    /// change in one place rewrites one list, not those after it.
    fn content(&mut self, chunks: Vec<ChunkRef>) -> Result<Content> {
        if chunks.is_empty() {
            return Ok(Content::None);
        }
        if chunks.len() <= model::INLINE_CHUNKS {
            return Ok(Content::Chunks(chunks));
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
                let id = self.writer.add(BlobKind::ChunkList, &blob)?.id;
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
