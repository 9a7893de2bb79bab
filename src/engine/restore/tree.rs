//! Tree restore: the [`Restorer`] walks a backup's tree iteratively, with
//! a bounded window of open directories, guarded against cycles, each
//! directory given its metadata once its entries are made.

use super::budget::Budget;
use super::entry::LinkFirst;
use super::filter::{Filter, Pick};
use super::pool::Pool;
use super::{join, RestoreStats};
use crate::engine::progress::Progress;
use crate::engine::reader::ChunkCache;
use crate::error::{Error, IoContext, Kind, Result};
use crate::model::{self, BackupRecord, Node, Tree};
use crate::store::{BlobId, Repo};
use crate::sys;
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// One directory being restored: its descriptor, its remaining entries
/// and the metadata it takes once they are all made.
pub(super) struct Frame {
    /// None while the directory is deep below the window of open ones
    /// (see [`KEEP_OPEN`]); reopened, and checked, before it is used.
    pub(super) fd: Option<OwnedFd>,
    /// Its name in its parent, and its identity when restore made it.
    pub(super) name: Vec<u8>,
    pub(super) dev_ino: (u64, u64),
    pub(super) rel: Vec<u8>,
    pub(super) entries: std::vec::IntoIter<Node>,
    pub(super) tree: BlobId,
    pub(super) meta: Option<Node>,
    /// Restored whole (not only as the parent of included entries).
    pub(super) whole: bool,
    /// Something was restored into it: a directory made only as a parent
    /// is removed again when nothing in it was.
    pub(super) kept: bool,
    /// The walk's number for it: files given to the pool are counted per
    /// directory, and it takes its metadata once they are all written.
    pub(super) dir_id: u64,
}

/// Directories of the path being restored that stay open: deeper ones
/// are closed and reopened (by name from their open parent, checked to be
/// the same inode) when the walk comes back to them, so a tree of any
/// depth needs a bounded number of descriptors.
pub(super) const KEEP_OPEN: usize = 256;

pub(super) struct Restorer<'a> {
    pub(super) repo: &'a Repo,
    pub(super) cache: ChunkCache,
    /// Hard-link group → its first restored name, relative to root.
    pub(super) links: HashMap<u64, LinkFirst>,
    pub(super) stats: RestoreStats,
    pub(super) root_path: PathBuf,
    pub(super) root_fd: OwnedFd,
    pub(super) as_root: bool,
    pub(super) euid: u32,
    pub(super) rec: &'a BackupRecord,
    pub(super) budget: Budget,
    /// Trees on the path from the root to the directory being restored.
    pub(super) on_path: HashSet<BlobId>,
    /// Set when an error stops the whole restore (budget, cycle).
    pub(super) stopped: bool,
    /// [`KEEP_OPEN`], smaller in tests.
    pub(super) keep_open: usize,
    /// `--include` and `--exclude`.
    pub(super) filter: Filter,
    /// Bytes written, for a progress bar.
    pub(super) progress: Option<&'a Progress>,
    /// Workers writing files' contents (1: the walk writes them).
    pub(super) threads: usize,
    /// The workers writing files, while a tree is walked (see `pool`).
    pub(super) pool: Option<Pool>,
    /// The directory whose entries the walk is making, and the next
    /// directory number.
    pub(super) cur_dir: u64,
    pub(super) next_dir: u64,
    /// The directory whose files go to the pool now, duplicated once for
    /// all of them (see `Restorer::shared_dir`).
    pub(super) dir_share: Option<(u64, std::sync::Arc<OwnedFd>)>,
}

impl<'a> Restorer<'a> {
    pub(super) fn new(
        repo: &'a Repo,
        rec: &'a BackupRecord,
        root_fd: OwnedFd,
        to: &Path,
        budget: Budget,
    ) -> Self {
        Restorer {
            repo,
            cache: ChunkCache::new(16 << 20),
            links: HashMap::new(),
            stats: RestoreStats::default(),
            root_path: to.to_path_buf(),
            root_fd,
            as_root: sys::euid() == 0,
            euid: sys::euid(),
            rec,
            budget,
            on_path: HashSet::new(),
            stopped: false,
            keep_open: KEEP_OPEN,
            filter: Filter::default(),
            progress: None,
            threads: 1,
            pool: None,
            cur_dir: 0,
            next_dir: 0,
            dir_share: None,
        }
    }

    pub(super) fn display(&self, rel: &[u8]) -> String {
        format!(
            "{}/{}",
            self.root_path.display(),
            String::from_utf8_lossy(rel)
        )
    }

    /// Errors that end the restore rather than one entry.
    pub(super) fn is_fatal(&self, e: &Error) -> bool {
        self.stopped || e.kind() == Kind::NoSpace
    }

    /// An error that ends the restore.
    pub(super) fn stop(&mut self, e: Error) -> Error {
        self.stopped = true;
        e
    }

    /// Record a failure at `rel` whose message does not name the path yet.
    /// Errors are returned to the caller, who prints them; logging them too
    /// would show each one twice.
    pub(super) fn fail(&mut self, rel: &[u8], e: impl std::fmt::Display) {
        let msg = format!("{}: {e}", self.display(rel));
        log::debug!("{msg}");
        self.stats.errors.push(msg);
    }

    /// Record a failed entry; [`Restorer::entry`]'s errors name the path.
    pub(super) fn failed_entry(&mut self, e: Error) {
        let msg = e.to_string();
        log::debug!("{msg}");
        self.stats.errors.push(msg);
    }

    /// A frame for directory `fd` (at `rel`) holding tree `id`, or None
    /// when the tree cannot be read (recorded as an error; the directory
    /// gets its metadata at once). A tree already on the path is a cycle.
    pub(super) fn frame(
        &mut self,
        fd: OwnedFd,
        id: BlobId,
        rel: Vec<u8>,
        meta: Option<Node>,
        whole: bool,
    ) -> Result<Option<Frame>> {
        if self.on_path.contains(&id) {
            let e = Error::corrupt(format!(
                "{}: backup {} lists tree {id} inside itself (a cycle); restore stopped",
                self.display(&rel),
                self.rec.name
            ));
            return Err(self.stop(e));
        }
        let tree: Tree = match self
            .repo
            .read_blob(&id)
            .and_then(|b| model::decode_tree(&b))
        {
            Ok(t) => t,
            Err(e) => {
                self.fail(
                    &rel,
                    format!(
                        "directory cannot be read from backup {}: {e}",
                        self.rec.name
                    ),
                );
                if let Some(m) = meta {
                    if let Err(e) = self.dir_metadata(&fd, &m, &rel) {
                        self.failed_entry(e);
                    }
                }
                return Ok(None);
            }
        };
        let st = sys::fstat(&fd).ctx(|| format!("{}: stat", self.display(&rel)))?;
        self.on_path.insert(id);
        let name = meta.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        self.next_dir += 1;
        Ok(Some(Frame {
            fd: Some(fd),
            name,
            dev_ino: (st.st_dev, st.st_ino),
            rel,
            entries: tree.entries.into_iter(),
            tree: id,
            meta,
            whole,
            kept: false,
            dir_id: self.next_dir,
        }))
    }

    /// Restore tree `id` into directory `fd` (at `rel`), then give the
    /// directory `meta`. Iterative, with an explicit stack: the depth of a
    /// tree is bounded by open descriptors, never by the call stack.
    /// `whole`: everything in it is restored (else the filter picks, see
    /// [`Filter`]). Returns whether anything was restored into it.
    /// Regular files' contents are written by a pool of workers (see
    /// `pool`), all finished before this returns.
    pub(super) fn restore_tree(
        &mut self,
        fd: OwnedFd,
        id: BlobId,
        rel: Vec<u8>,
        meta: Option<Node>,
        whole: bool,
    ) -> Result<bool> {
        let threads = self.threads;
        self.with_pool(threads, |r| r.walk(fd, id, rel, meta, whole))
    }

    /// [`Restorer::restore_tree`]'s walk.
    fn walk(
        &mut self,
        fd: OwnedFd,
        id: BlobId,
        rel: Vec<u8>,
        meta: Option<Node>,
        whole: bool,
    ) -> Result<bool> {
        let mut stack: Vec<Frame> = Vec::new();
        match self.frame(fd, id, rel, meta, whole)? {
            Some(f) => stack.push(f),
            // Unreadable: recorded as an error, the directory kept.
            None => return Ok(true),
        }
        loop {
            if stack.last().is_some_and(|t| t.fd.is_none()) {
                self.reopen(&mut stack)?;
            }
            let Some(top) = stack.last_mut() else {
                return Ok(true);
            };
            let Some(top_fd) = top.fd.as_ref() else {
                return Err(Error::failed(format!(
                    "{}: directory not open",
                    self.display(&top.rel)
                )));
            };
            match top.entries.next() {
                Some(n) => {
                    let child = join(&top.rel, &n.name);
                    let pick = self.filter.pick(&child, &n, top.whole);
                    if pick == Pick::Skip {
                        continue;
                    }
                    self.cur_dir = top.dir_id;
                    let made = self.entry(top_fd, &n, &child);
                    if pick == Pick::Whole {
                        top.kept = true;
                    }
                    match made {
                        Ok(Some((fd, id))) => {
                            let whole = pick == Pick::Whole;
                            if let Some(f) = self.frame(fd, id, child, Some(n), whole)? {
                                stack.push(f);
                                // Close the directory that just left the
                                // window (never the first: the walk
                                // reopens from it).
                                let len = stack.len();
                                if len > self.keep_open + 1 {
                                    stack[len - 1 - self.keep_open].fd = None;
                                }
                            } else {
                                // Its tree could not be read (an error
                                // recorded): the directory stays.
                                top.kept = true;
                            }
                        }
                        Ok(None) if pick == Pick::Parent => {
                            // A directory without a tree holds nothing
                            // included: made only as a parent, removed.
                            if sys::rmdir_at(top_fd, &n.name).is_ok() {
                                self.stats.dirs -= 1;
                            }
                        }
                        Ok(None) => {}
                        Err(e) if self.is_fatal(&e) => return Err(e),
                        Err(e) => self.failed_entry(e),
                    }
                }
                None => {
                    let Some(f) = stack.pop() else {
                        return Ok(true);
                    };
                    self.on_path.remove(&f.tree);
                    let kept = f.whole || f.kept;
                    if !kept && !stack.is_empty() {
                        // Its files (none was restored) finished before it
                        // is removed.
                        self.wait_dir(f.dir_id)?;
                        // Made only as the parent of included entries, and
                        // none was restored: removed again, by name from
                        // its parent (restore made both, mode 0700).
                        drop(f.fd);
                        if stack.last().is_some_and(|t| t.fd.is_none()) {
                            self.reopen(&mut stack)?;
                        }
                        if let Some(parent) = stack.last().and_then(|t| t.fd.as_ref()) {
                            match sys::rmdir_at(parent, &f.name) {
                                Ok(()) => self.stats.dirs -= 1,
                                Err(e) => self.fail(&f.rel, format!("rmdir: {e}")),
                            }
                        }
                        continue;
                    }
                    if let Some(parent) = stack.last_mut() {
                        parent.kept |= kept;
                    }
                    if let (Some(m), Some(fd)) = (f.meta, f.fd) {
                        // After its entries: they would change its mtime,
                        // and its mode may forbid writing into it; after
                        // its files too, without waiting for them here.
                        self.dir_done(f.dir_id, fd, m, f.rel);
                    }
                    if stack.is_empty() {
                        return Ok(kept);
                    }
                }
            }
        }
    }

    /// Reopen the top frame's directory, and those above it in the window,
    /// from the nearest open one below, by name without following
    /// symlinks, each checked to be the directory restore made.
    pub(super) fn reopen(&mut self, stack: &mut [Frame]) -> Result<()> {
        let Some(top) = stack.len().checked_sub(1) else {
            return Ok(());
        };
        let Some(open) = stack[..top].iter().rposition(|f| f.fd.is_some()) else {
            return Err(Error::failed(format!(
                "{}: no open directory to reopen it from",
                self.display(&stack[top].rel)
            )));
        };
        let keep_from = top.saturating_sub(self.keep_open / 2).max(open + 1);
        let mut transient: Option<OwnedFd> = None;
        for k in open + 1..=top {
            let opened = {
                let parent = match (&stack[k - 1].fd, &transient) {
                    (Some(f), _) | (None, Some(f)) => f,
                    (None, None) => {
                        return Err(Error::failed(format!(
                            "{}: no open parent",
                            self.display(&stack[k].rel)
                        )))
                    }
                };
                let shown = self.display(&stack[k].rel);
                let fd =
                    sys::open_dir_at(parent, &stack[k].name).ctx(|| format!("{shown}: reopen"))?;
                let st = sys::fstat(&fd).ctx(|| format!("{shown}: stat"))?;
                if (st.st_dev, st.st_ino) != stack[k].dev_ino {
                    let e = Error::failed(format!(
                        "{shown}: the directory restore made was moved or replaced during the restore; restore stopped"
                    ));
                    return Err(self.stop(e));
                }
                fd
            };
            if k >= keep_from {
                stack[k].fd = Some(opened);
                transient = None;
            } else {
                transient = Some(opened);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeKind;
    use crate::store::{BlobKind, RepoWriter};

    /// An empty vault "v" in `dir`.
    fn vault(dir: &Path) -> Repo {
        Repo::create(dir).unwrap();
        Repo::open(dir, "v").unwrap()
    }

    fn put_tree(w: &mut RepoWriter, entries: Vec<Node>) -> BlobId {
        w.add(
            BlobKind::Tree,
            &model::encode_tree(&Tree { entries }).unwrap(),
        )
        .unwrap()
        .id
    }

    /// The directory `dir/out`, made, and opened, to restore into.
    fn target(dir: &Path) -> (PathBuf, OwnedFd) {
        let out = dir.join("out");
        std::fs::create_dir(&out).unwrap();
        let fd = sys::open_dir(&out).unwrap();
        (out, fd)
    }

    /// The budget of backup "b", resource "r".
    fn budget(max_entries: u64, max_bytes: u64) -> Budget {
        Budget {
            backup: "b".into(),
            resource: "r".into(),
            max_entries,
            max_bytes,
            entries: 0,
            bytes: 0,
        }
    }

    /// Content-addressed trees cannot really contain themselves, so the
    /// cycle check is shown with a tree put on the path by hand: entering
    /// it again stops the restore with an error naming the backup.
    #[test]
    fn a_tree_on_its_own_path_is_a_cycle() {
        let dir = tempfile::tempdir().unwrap();
        let repo = vault(dir.path());
        let mut w = RepoWriter::new(&repo, false);
        let id = put_tree(&mut w, Vec::new());
        w.finish().unwrap();
        let rec = crate::testkit::record(vec![]);
        let (out, fd) = target(dir.path());
        let mut r = Restorer::new(&repo, &rec, fd.try_clone().unwrap(), &out, budget(10, 10));
        r.on_path.insert(id);
        let e = r.restore_tree(fd, id, Vec::new(), None, true).unwrap_err();
        assert!(
            e.to_string().contains("cycle") && e.to_string().contains("backup b"),
            "{e}"
        );
        assert!(r.is_fatal(&e));
    }

    /// A tree deeper than the window of open directories: the deep ones
    /// are closed on the way down and reopened on the way up, and every
    /// directory still gets its own mode and time.
    #[test]
    fn deep_trees_restore_through_a_small_window_of_open_directories() {
        let dir = tempfile::tempdir().unwrap();
        let repo = vault(dir.path());
        let mut w = RepoWriter::new(&repo, false);
        let mut leaf = Node::new(b"leaf".to_vec(), NodeKind::File);
        leaf.mode = 0o640;
        let mut id = put_tree(&mut w, vec![leaf]);
        const LEVELS: usize = 50;
        for i in 0..LEVELS {
            let mut d = Node::new(format!("d{i}").into_bytes(), NodeKind::Dir);
            d.mode = 0o750;
            d.mtime_ns = 1_000_000_000 * (i as i64 + 1);
            d.subtree = Some(id);
            id = put_tree(&mut w, vec![d]);
        }
        w.finish().unwrap();
        let rec = crate::testkit::record(vec![]);
        let (out, fd) = target(dir.path());
        let mut r = Restorer::new(&repo, &rec, fd.try_clone().unwrap(), &out, budget(100, 0));
        r.keep_open = 4;
        r.restore_tree(fd, id, Vec::new(), None, true).unwrap();
        assert!(r.stats.errors.is_empty(), "{:?}", r.stats.errors);
        assert_eq!((r.stats.dirs, r.stats.files), (LEVELS as u64, 1));
        let mut p = out.clone();
        for i in (0..LEVELS).rev() {
            p.push(format!("d{i}"));
            let md = std::fs::metadata(&p).unwrap();
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                (md.mode() & 0o7777, md.mtime()),
                (0o750, i as i64 + 1),
                "{}",
                p.display()
            );
        }
        assert!(p.join("leaf").is_file());
    }
}
