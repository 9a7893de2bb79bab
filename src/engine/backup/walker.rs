//! The walk of one resource: directories listed and their entries opened
//! and stat'ed in order on one thread, each node built from its own
//! descriptor, files handed to the readers, unchanged files' chunk lists
//! taken from the previous backup, and chunk lists of large files.

use super::pending::PendingDir;
use super::readers::{Done, FileState, Job, Shared};
use super::source::{is_cache_tag, open_entry, Handle, Opened, CACHEDIR_TAG};
use super::{meta_unchanged, stat_node, MAX_WARNINGS};
use crate::error::{Error, Result};
use crate::model::{
    self, BackupStats, ChunkRef, Content, ListRef, Node, NodeKind, RelChunk, Tree, Xattr,
};
use crate::mountinfo::MountTable;
use crate::store::{BlobId, BlobKind, Repo};
use crate::sys;
use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;

/// Walks one resource. Directories are listed and their entries stat'ed on
/// the walker's thread, in order; the files to read go to the readers, and
/// a directory's tree is written once its files are back. Trees are
/// finished in the order their listings ended (children before parents),
/// so a parent's tree always names its children's.
pub(super) struct Walker<'a, 'w> {
    pub(super) repo: &'a Repo,
    pub(super) sh: &'a Shared<'a, 'w>,
    pub(super) jobs: &'a mpsc::Sender<Vec<Job>>,
    pub(super) done: &'a mpsc::Receiver<Vec<Done>>,
    /// Files handed out (or batched) and not yet back.
    pub(super) inflight: usize,
    /// The batch being filled, and its bytes.
    pub(super) batch: Vec<Job>,
    pub(super) batch_bytes: u64,
    pub(super) full: bool,
    pub(super) excludes: &'a [String],
    pub(super) stats: BackupStats,
    pub(super) warnings: Vec<String>,
    /// (dev, inode) → hard-link group.
    pub(super) links: HashMap<(u64, u64), u64>,
    /// The store's own directory: never backed up into itself.
    pub(super) skip: Option<(u64, u64)>,
    pub(super) pending: HashMap<u64, PendingDir>,
    /// Pending directories in the order their listings ended.
    pub(super) order: VecDeque<u64>,
    /// Trees of finished resource roots, by pending id.
    pub(super) roots: HashMap<u64, BlobId>,
    pub(super) next_dir: u64,
    /// Set by `node` to a file whose content the readers are to read.
    pub(super) deferred: Option<std::fs::File>,
    /// Stay on each directory's parent's device (`--one-file-system`).
    pub(super) one_fs: bool,
    /// The mounts, to tell a user's FUSE mount when a device changes.
    pub(super) mounts: &'a MountTable,
    /// File reads out at most: each holds an open descriptor.
    pub(super) max_inflight: usize,
    /// Set by `node` to the pending id of the directory it listed.
    pub(super) listed: Option<u64>,
    /// What trees and chunk lists are compressed into.
    pub(super) out: Vec<u8>,
    /// Entries (pending directory, index) read again under `--full` whose
    /// metadata is the previous backup's: counted unchanged or changed
    /// once their content is back.
    pub(super) recheck: HashSet<(u64, usize)>,
    /// Leave out the contents of cache directories (`--exclude-caches`).
    pub(super) exclude_caches: bool,
    /// Leave out the contents of directories holding these names.
    pub(super) if_present: &'a [String],
}

impl Walker<'_, '_> {
    pub(super) fn warn(&mut self, msg: String) {
        log::info!("{msg}");
        self.stats.errors += 1;
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(msg);
        }
    }

    /// The root node of a directory resource (or server member) named
    /// `name` at `path`, with its tree.
    pub(super) fn resource_dir(
        &mut self,
        name: &str,
        path: &str,
        prev: Option<&Node>,
    ) -> Result<Node> {
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

    pub(super) fn store_tree(&mut self, tree: Tree) -> Result<BlobId> {
        self.sh
            .put(BlobKind::Tree, &model::encode_tree(&tree)?, &mut self.out)
    }

    pub(super) fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        model::decode_tree(&self.repo.read_blob(id)?)
    }

    pub(super) fn excluded(&self, rel: &[u8], name: &[u8]) -> bool {
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
    pub(super) fn dir(
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
            let listed = FileState::of_node(&n);
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
                    listed,
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
    pub(super) fn tagged(
        &self,
        fd: &OwnedFd,
        names: &[sys::DirEntry],
        path: &Path,
    ) -> Option<Vec<Vec<u8>>> {
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
    pub(super) fn node(
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
        let mut n = stat_node(name, kind, &st);
        n.nlink = st.st_nlink.min(u32::MAX as u64) as u32;
        n.blocks = st.st_blocks.max(0) as u64;
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
                let same_meta = prev.filter(|p| p.kind == NodeKind::File && meta_unchanged(p, &n));
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
    pub(super) fn crosses_into(&mut self, path: &Path, dev: u64) -> bool {
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
    pub(super) fn content(&mut self, chunks: &[ChunkRef]) -> Result<Content> {
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
                let blob = model::encode_chunk_list(&cur)?;
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
