//! Restore: recreate a resource's tree in an empty or new directory with
//! contents, modes, owners (as root), times, xattrs, symlinks, hard links,
//! devices, fifos and holes.
//!
//! Safety: every entry is created relative to a descriptor of its parent
//! directory that restore itself created, with O_EXCL/O_NOFOLLOW, so nothing
//! is written outside the target and no symlink restore made is followed.

use super::reader::{self, ChunkCache};
use crate::catalog::Store;
use crate::error::{Error, IoContext, Result};
use crate::model::{self, BackupRecord, Node, NodeKind, Tree};
use crate::store::{BlobId, Repo};
use crate::sys;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What a restore did.
#[derive(Debug, Default, Clone)]
pub struct RestoreStats {
    /// Files written.
    pub files: u64,
    /// Directories made.
    pub dirs: u64,
    /// Other entries made.
    pub others: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Entries that failed, with why.
    pub errors: Vec<String>,
}

/// Restore `resource` (or every resource) of `backup` into `to`.
/// With one resource the tree's contents go into `to`; with several, each
/// goes into `to/<resource>`.
pub fn restore(
    store: &Store,
    vault: &str,
    backup: &str,
    resource: Option<&str>,
    to: &Path,
) -> Result<RestoreStats> {
    let rec = store.backup(vault, backup)?;
    let parts: Vec<_> = match resource {
        Some(r) => vec![rec.resources.iter().find(|p| p.name == r).ok_or_else(|| {
            Error::not_found(format!(
                "resource {r:?} is not in backup {backup} of vault {vault}"
            ))
            .code("BackupService.6302")
        })?],
        None => rec.resources.iter().collect(),
    };
    prepare_target(to)?;
    let repo = store.repo(vault)?;
    let root = sys::open_dir(to).ctx(|| format!("open restore target {}", to.display()))?;
    let mut r = Restorer {
        repo: &repo,
        cache: ChunkCache::new(16 << 20),
        links: HashMap::new(),
        stats: RestoreStats::default(),
        root_path: to.to_path_buf(),
        root_fd: root,
        as_root: sys::euid() == 0,
        rec: &rec,
    };
    if parts.len() == 1 {
        let root_fd = r.root_fd.try_clone().ctx(|| "dup target".to_string())?;
        r.restore_dir(&root_fd, &parts[0].root, Vec::new())?;
        // The target itself takes the resource root's metadata, through
        // "." of its own descriptor.
        let mut meta = parts[0].meta.clone();
        meta.name = b".".to_vec();
        r.metadata(&root_fd, &meta, b"")?;
    } else {
        for p in parts {
            let name = p.name.as_bytes();
            sys::mkdir_at(&r.root_fd, name, 0o700)
                .ctx(|| format!("create {}/{}", to.display(), p.name))?;
            let fd = sys::open_dir_at(&r.root_fd, name)
                .ctx(|| format!("open {}/{}", to.display(), p.name))?;
            // Hard-link groups are numbered per resource.
            r.links.clear();
            r.restore_dir(&fd, &p.root, name.to_vec())?;
            let mut meta = p.meta.clone();
            meta.name = name.to_vec();
            let root_fd = r.root_fd.try_clone().ctx(|| "dup target".to_string())?;
            r.metadata(&root_fd, &meta, name)?;
        }
    }
    Ok(r.stats)
}

/// The target must be absent (it is created) or an empty directory.
fn prepare_target(to: &Path) -> Result<()> {
    match std::fs::symlink_metadata(to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(to).ctx(|| format!("create restore target {}", to.display()))
        }
        Err(e) => Err(Error::io(format!("restore target {}", to.display()), e)),
        Ok(m) if !m.is_dir() => Err(Error::invalid(format!(
            "restore target {} exists and is not a directory: give an empty or new directory",
            to.display()
        ))),
        Ok(_) => {
            let mut rd = std::fs::read_dir(to).ctx(|| format!("read {}", to.display()))?;
            if rd.next().is_some() {
                return Err(Error::invalid(format!(
                    "restore target {} is not empty: give an empty or new directory",
                    to.display()
                )));
            }
            Ok(())
        }
    }
}

struct Restorer<'a> {
    repo: &'a Repo,
    cache: ChunkCache,
    /// Hard-link group → path of its first restored name, relative to root.
    links: HashMap<u64, Vec<u8>>,
    stats: RestoreStats,
    root_path: PathBuf,
    root_fd: OwnedFd,
    as_root: bool,
    rec: &'a BackupRecord,
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        name.to_vec()
    } else {
        [rel, b"/", name].concat()
    }
}

impl Restorer<'_> {
    fn display(&self, rel: &[u8]) -> String {
        format!(
            "{}/{}",
            self.root_path.display(),
            String::from_utf8_lossy(rel)
        )
    }

    fn fail(&mut self, rel: &[u8], e: impl std::fmt::Display) {
        let msg = format!("{}: {e}", self.display(rel));
        log::error!("{msg}");
        self.stats.errors.push(msg);
    }

    /// Restore the entries of tree `id` into directory `dir` (at `rel`).
    fn restore_dir(&mut self, dir: &OwnedFd, id: &BlobId, rel: Vec<u8>) -> Result<()> {
        let tree: Tree = match self.repo.read_blob(id).and_then(|b| model::decode_tree(&b)) {
            Ok(t) => t,
            Err(e) => {
                self.fail(
                    &rel,
                    format!(
                        "directory cannot be read from backup {}: {e}",
                        self.rec.name
                    ),
                );
                return Ok(());
            }
        };
        for n in &tree.entries {
            let child = join(&rel, &n.name);
            if let Err(e) = self.entry(dir, n, &child) {
                if e.kind() == crate::error::Kind::NoSpace {
                    return Err(e);
                }
                self.fail(&child, e);
            }
        }
        Ok(())
    }

    fn entry(&mut self, dir: &OwnedFd, n: &Node, rel: &[u8]) -> Result<()> {
        let name = n.name.as_slice();
        let shown = self.display(rel);
        let path = || shown.clone();
        if n.link_group != 0 {
            if let Some(first) = self.links.get(&n.link_group) {
                return sys::link_at(&self.root_fd, first, dir, name)
                    .ctx(|| format!("{}: hard link", path()));
            }
        }
        match n.kind {
            NodeKind::Dir => {
                sys::mkdir_at(dir, name, 0o700).ctx(|| format!("{}: mkdir", path()))?;
                let sub = sys::open_dir_at(dir, name).ctx(|| format!("{}: open", path()))?;
                self.stats.dirs += 1;
                if let Some(id) = n.subtree {
                    self.restore_dir(&sub, &id, rel.to_vec())?;
                }
            }
            NodeKind::File => {
                let f = sys::create_file_at(dir, name).ctx(|| format!("{}: create", path()))?;
                let result = self.write_file(&f, n, rel);
                f.set_len(n.size).ctx(|| format!("{}: set size", path()))?;
                result?;
                self.stats.files += 1;
            }
            NodeKind::Symlink => {
                sys::symlink_at(&n.target, dir, name).ctx(|| format!("{}: symlink", path()))?;
                self.stats.others += 1;
            }
            NodeKind::CharDev | NodeKind::BlockDev | NodeKind::Fifo | NodeKind::Socket => {
                sys::mknod_at(dir, name, n.kind.ifmt() | 0o600, n.rdev)
                    .ctx(|| format!("{}: mknod", path()))?;
                self.stats.others += 1;
            }
        }
        self.metadata(dir, n, rel)?;
        if n.link_group != 0 {
            self.links.insert(n.link_group, rel.to_vec());
        }
        Ok(())
    }

    fn write_file(&mut self, f: &std::fs::File, n: &Node, rel: &[u8]) -> Result<()> {
        for c in reader::all_chunks(self.repo, n)? {
            let data = self.cache.get(self.repo, &c.id).map_err(|e| {
                e.context(format!(
                    "{} (backup {}, offset {})",
                    self.display(rel),
                    self.rec.name,
                    c.offset
                ))
            })?;
            if data.len() != c.len as usize {
                return Err(Error::corrupt(format!(
                    "{}: chunk {} has {} bytes, the file expects {} (backup {})",
                    self.display(rel),
                    c.id,
                    data.len(),
                    c.len,
                    self.rec.name
                )));
            }
            f.write_all_at(&data, c.offset)
                .ctx(|| format!("{}: write", self.display(rel)))?;
            self.stats.bytes += data.len() as u64;
        }
        Ok(())
    }

    /// Owner, mode, xattrs, times, in that order: chown clears setuid, and
    /// chmod rewrites an ACL's mask, so the ACL xattr comes after both.
    fn metadata(&mut self, dir: &OwnedFd, n: &Node, rel: &[u8]) -> Result<()> {
        let name = n.name.as_slice();
        match sys::chown_at(dir, name, n.uid, n.gid) {
            Ok(()) => {}
            Err(e) if !self.as_root && e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(Error::io(format!("{}: chown", self.display(rel)), e)),
        }
        if n.kind != NodeKind::Symlink {
            sys::chmod_at(dir, name, n.mode).ctx(|| format!("{}: chmod", self.display(rel)))?;
        }
        let fd_path = sys::fd_path(dir, name);
        for x in &n.xattrs {
            let privileged = x.name.starts_with(b"security.") || x.name.starts_with(b"trusted.");
            if privileged && !self.as_root {
                continue;
            }
            if let Err(e) = sys::set_xattr(&fd_path, &x.name, &x.value) {
                self.fail(
                    rel,
                    format!("xattr {}: {e}", String::from_utf8_lossy(&x.name)),
                );
            }
        }
        // Access times are not kept (reading a tree would change them and
        // defeat deduplication of unchanged trees); atime takes mtime.
        sys::utimens_at(dir, name, n.mtime_ns, n.mtime_ns)
            .ctx(|| format!("{}: set times", self.display(rel)))?;
        Ok(())
    }
}
