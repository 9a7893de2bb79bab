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
use crate::model::{self, BackupRecord, Node, NodeKind, ResourceBackup, ResourceKind, Tree};
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
    /// What was done besides writing the target (files moved aside).
    pub notes: Vec<String>,
}

/// How to restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Restore onto the resource's original disk or paths.
    pub in_place: bool,
}

/// Restore `resource` (or every resource) of `backup` into `to`.
/// With one directory or server resource its tree goes into `to`; a disk
/// resource goes to the image file or block device `to`; with several
/// resources each goes into `to/<resource>` (disks as `<resource>.img`).
pub fn restore(
    store: &Store,
    vault: &str,
    backup: &str,
    resource: Option<&str>,
    to: &Path,
) -> Result<RestoreStats> {
    restore_with(
        store,
        vault,
        backup,
        resource,
        to,
        &RestoreOptions::default(),
    )
}

/// [`restore`] with options.
pub fn restore_with(
    store: &Store,
    vault: &str,
    backup: &str,
    resource: Option<&str>,
    to: &Path,
    opts: &RestoreOptions,
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
    let repo = store.repo(vault)?;
    if parts.len() == 1 {
        let p = parts[0];
        match p.kind {
            ResourceKind::Disk => {
                let source = PathBuf::from(String::from_utf8_lossy(&p.source).to_string());
                return restore_disk(&repo, &rec, &p.meta, &source, to, opts.in_place);
            }
            ResourceKind::Server if opts.in_place => {
                return restore_server_in_place(&repo, &rec, p);
            }
            ResourceKind::Directory if opts.in_place => {
                return Err(Error::invalid(
                    "--in-place is for disks and servers; a file-system backup is restored into a new or empty directory (--to DIR)",
                ));
            }
            _ => {}
        }
    } else if opts.in_place {
        return Err(Error::invalid(
            "--in-place needs --resource: name the disk or server to restore onto its original",
        ));
    }
    prepare_target(to)?;
    let mut r = Restorer::new(&repo, &rec, to)?;
    let root_fd = r.root_fd.try_clone().ctx(|| "dup target".to_string())?;
    if parts.len() == 1 {
        r.restore_dir(&root_fd, &parts[0].root, Vec::new())?;
        // The target itself takes the resource root's metadata, through
        // "." of its own descriptor.
        let mut meta = parts[0].meta.clone();
        meta.name = b".".to_vec();
        r.metadata(&root_fd, &meta, b"")?;
    } else {
        for p in parts {
            // Hard-link groups are numbered per resource.
            r.links.clear();
            let name = p.meta.name.clone();
            r.entry(&root_fd, &p.meta, &name)?;
        }
    }
    Ok(r.stats)
}

/// Write a disk backup to `to`: a new image file (holes stay holes), an
/// existing empty file, or a block device at least as large. The original
/// disk only with `in_place`; an original image file is replaced whole
/// (written beside it, then renamed over it).
fn restore_disk(
    repo: &Repo,
    rec: &BackupRecord,
    node: &Node,
    source: &Path,
    to: &Path,
    in_place: bool,
) -> Result<RestoreStats> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let original = std::fs::metadata(source)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.rdev()));
    let target = std::fs::metadata(to);
    let is_original = match (&original, &target) {
        (Some(o), Ok(t)) => {
            if t.file_type().is_block_device() {
                o.2 == t.rdev() && o.2 != 0
            } else {
                (o.0, o.1) == (t.dev(), t.ino())
            }
        }
        _ => false,
    };
    if is_original && !in_place {
        return Err(Error::invalid(format!(
            "{} is the original disk of this backup: restoring over it needs --in-place",
            to.display()
        )));
    }
    if in_place && !is_original {
        return Err(Error::invalid(format!(
            "--in-place restores onto the original disk {}, and {} is not it",
            source.display(),
            to.display()
        )));
    }
    let mut stats = RestoreStats::default();
    match target {
        Ok(m) if m.file_type().is_block_device() => {
            let dev = sys::device_size(to).ctx(|| format!("size of {}", to.display()))?;
            if dev < node.size {
                return Err(Error::invalid(format!(
                    "target {} holds {} bytes, less than the disk's {} bytes",
                    to.display(),
                    dev,
                    node.size
                )));
            }
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(to)
                .ctx(|| format!("open {}", to.display()))?;
            write_disk(repo, rec, node, &f, to, true, &mut stats)?;
        }
        Ok(m) if m.is_file() && is_original => {
            let dir = to.parent().unwrap_or(Path::new("."));
            let mut tmp = crate::fsutil::TempFile::new_in(dir)?;
            write_disk(repo, rec, node, tmp.file(), to, false, &mut stats)?;
            tmp.commit(to)?;
            stats
                .notes
                .push(format!("replaced {} with the backup's disk", to.display()));
        }
        Ok(m) if m.is_file() && m.len() == 0 => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(to)
                .ctx(|| format!("open {}", to.display()))?;
            write_disk(repo, rec, node, &f, to, false, &mut stats)?;
        }
        Ok(_) => {
            return Err(Error::invalid(format!(
            "restore target {} exists: give a new image file name, an empty file or a block device",
            to.display()
        )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(to)
                .ctx(|| format!("create {}", to.display()))?;
            write_disk(repo, rec, node, &f, to, false, &mut stats)?;
        }
        Err(e) => return Err(Error::io(format!("restore target {}", to.display()), e)),
    }
    stats.files = 1;
    Ok(stats)
}

/// Write a disk node's chunks into `f`; regions without chunks are zeroed
/// on a device, left as holes in a file.
fn write_disk(
    repo: &Repo,
    rec: &BackupRecord,
    node: &Node,
    f: &std::fs::File,
    to: &Path,
    device: bool,
    stats: &mut RestoreStats,
) -> Result<()> {
    let cache = ChunkCache::new(16 << 20);
    let zeros = vec![0u8; 1 << 20];
    let zero = |from: u64, until: u64| -> Result<()> {
        let mut p = from;
        while p < until {
            let n = (until - p).min(zeros.len() as u64) as usize;
            f.write_all_at(&zeros[..n], p)
                .ctx(|| format!("write {}", to.display()))?;
            p += n as u64;
        }
        Ok(())
    };
    if !device {
        // Whatever the file held goes: the backup's holes must read as zeros.
        f.set_len(0).ctx(|| format!("truncate {}", to.display()))?;
    }
    let mut pos = 0u64;
    for c in reader::all_chunks(repo, node)? {
        let data = cache.get(repo, &c.id).map_err(|e| {
            e.context(format!(
                "{} (backup {}, offset {})",
                to.display(),
                rec.name,
                c.offset
            ))
        })?;
        if data.len() != c.len as usize {
            return Err(Error::corrupt(format!(
                "{}: chunk {} has {} bytes, the disk expects {}",
                to.display(),
                c.id,
                data.len(),
                c.len
            )));
        }
        if device {
            zero(pos, c.offset)?;
        }
        f.write_all_at(&data, c.offset)
            .ctx(|| format!("write {}", to.display()))?;
        stats.bytes += data.len() as u64;
        // Saturating: a damaged chunk list may hold any offset.
        pos = c.offset.saturating_add(c.len as u64);
    }
    if device {
        zero(pos, node.size)?;
    } else {
        f.set_len(node.size)
            .ctx(|| format!("set size of {}", to.display()))?;
    }
    f.sync_all().ctx(|| format!("fsync {}", to.display()))
}

/// Restore every member of a server backup onto its original path: disks
/// in place; a directory is restored beside the original, which is then
/// moved aside (`<path>.cbrfs-replaced-XXXX`) and replaced by a rename.
fn restore_server_in_place(
    repo: &Repo,
    rec: &BackupRecord,
    part: &ResourceBackup,
) -> Result<RestoreStats> {
    let tree = model::decode_tree(&repo.read_blob(&part.root)?)?;
    let mut total = RestoreStats::default();
    for (kind, name, path) in super::backup::server_members(&part.source) {
        let entry = if kind == "disk" {
            format!("{name}.img")
        } else {
            name.clone()
        };
        let node = tree.find(entry.as_bytes()).ok_or_else(|| {
            Error::corrupt(format!(
                "backup {}: server member {name} is missing from its tree",
                rec.name
            ))
        })?;
        let path = PathBuf::from(path);
        if kind == "disk" {
            let s = restore_disk(repo, rec, node, &path, &path, true)?;
            total.bytes += s.bytes;
            total.files += 1;
            total.notes.extend(s.notes);
            continue;
        }
        let parent = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent).ctx(|| format!("create {}", parent.display()))?;
        let suffix = crate::fsutil::random_suffix(6);
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let fresh = parent.join(format!(".{base}.cbrfs-restore-{suffix}"));
        prepare_target(&fresh)?;
        let mut r = Restorer::new(repo, rec, &fresh)?;
        let fd = r.root_fd.try_clone().ctx(|| "dup target".to_string())?;
        if let Some(sub) = node.subtree {
            r.restore_dir(&fd, &sub, Vec::new())?;
        }
        let mut meta = node.clone();
        meta.name = b".".to_vec();
        r.metadata(&fd, &meta, b"")?;
        if std::fs::symlink_metadata(&path).is_ok() {
            let aside = parent.join(format!("{base}.cbrfs-replaced-{suffix}"));
            std::fs::rename(&path, &aside).ctx(|| format!("move {} aside", path.display()))?;
            total.notes.push(format!(
                "moved the previous {} to {}",
                path.display(),
                aside.display()
            ));
        }
        std::fs::rename(&fresh, &path)
            .ctx(|| format!("put the restored {} in place", path.display()))?;
        crate::fsutil::sync_dir(parent)?;
        total.files += r.stats.files;
        total.dirs += r.stats.dirs;
        total.others += r.stats.others;
        total.bytes += r.stats.bytes;
        total.errors.extend(r.stats.errors);
    }
    Ok(total)
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

impl<'a> Restorer<'a> {
    fn new(repo: &'a Repo, rec: &'a BackupRecord, to: &Path) -> Result<Self> {
        let root = sys::open_dir(to).ctx(|| format!("open restore target {}", to.display()))?;
        Ok(Restorer {
            repo,
            cache: ChunkCache::new(16 << 20),
            links: HashMap::new(),
            stats: RestoreStats::default(),
            root_path: to.to_path_buf(),
            root_fd: root,
            as_root: sys::euid() == 0,
            rec,
        })
    }

    fn display(&self, rel: &[u8]) -> String {
        format!(
            "{}/{}",
            self.root_path.display(),
            String::from_utf8_lossy(rel)
        )
    }

    /// Record a failure at `rel` whose message does not name the path yet.
    /// Errors are returned to the caller, who prints them; logging them too
    /// would show each one twice.
    fn fail(&mut self, rel: &[u8], e: impl std::fmt::Display) {
        let msg = format!("{}: {e}", self.display(rel));
        log::debug!("{msg}");
        self.stats.errors.push(msg);
    }

    /// Record a failed entry; [`Restorer::entry`]'s errors name the path.
    fn failed_entry(&mut self, e: Error) {
        let msg = e.to_string();
        log::debug!("{msg}");
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
                self.failed_entry(e);
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
                let result = self
                    .write_file(&f, n, rel)
                    .and_then(|()| f.set_len(n.size).ctx(|| format!("{}: set size", path())));
                if let Err(e) = result {
                    // A file whose data could not all be restored is removed,
                    // not left at full size with zeros where the damaged or
                    // unwritten chunks belong: restore never shows wrong
                    // bytes as a file's content. The error names the file.
                    drop(f);
                    let _ = sys::unlink_at(dir, name);
                    return Err(e);
                }
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
        let chunks = reader::all_chunks(self.repo, n).map_err(|e| {
            e.context(format!(
                "{}: chunk list in backup {}",
                self.display(rel),
                self.rec.name
            ))
        })?;
        // Counted only once the whole file is written: a file that fails
        // is removed, and its bytes were not restored.
        let mut bytes = 0;
        for c in chunks {
            let data = self.cache.get(self.repo, &c.id).map_err(|e| {
                e.context(format!(
                    "{}: backup {}, offset {}",
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
            bytes += data.len() as u64;
        }
        self.stats.bytes += bytes;
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
