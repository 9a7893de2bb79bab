//! Restore: recreate a resource's tree in an empty or new directory with
//! contents, modes, owners (as root), times, xattrs, symlinks, hard links,
//! devices, fifos and holes.
//!
//! Safety (issue #12): restore runs as root into directories other users
//! may reach, from stores that may be hostile.
//! - Every entry is created relative to a descriptor of its parent
//!   directory that restore itself created, with O_EXCL/O_NOFOLLOW, and its
//!   owner, mode, xattrs and times are set through a descriptor of the very
//!   inode restore created (checked with fstat), never by name: an entry
//!   swapped for a symlink by another user is never followed.
//! - A target directory another user owns or may write is refused unless
//!   the user says so ([`RestoreOptions::allow_untrusted_target`]); the
//!   paths to targets and in-place originals are opened component by
//!   component without following symlinks.
//! - A restore writes no more than the backup records: no file beyond its
//!   recorded size, no more entries and bytes than the record's totals, no
//!   tree inside itself; the walk is iterative, so nesting depth is bounded
//!   by descriptors, not by the stack.

use super::progress::Progress;
use super::reader::{self, ChunkCache};
use crate::catalog::Store;
use crate::error::{Error, IoContext, Kind, Result};
use crate::model::{
    self, BackupRecord, Content, Node, NodeKind, ResourceBackup, ResourceKind, Tree,
};
use crate::store::{BlobId, Repo};
use crate::sys;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

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
    /// Restore into an existing target directory that another user owns or
    /// that group or others may write. Refused by default: whoever can
    /// rename entries there can race restore's chown and chmod.
    pub allow_untrusted_target: bool,
    /// Restore only entries matching one of these (and everything below
    /// them, and their parent directories); empty: everything.
    pub include: Vec<String>,
    /// Leave out entries matching one of these, and everything below them.
    pub exclude: Vec<String>,
}

/// `--include` and `--exclude` globs. A glob without a `/` matches an
/// entry's name; with a `/`, its path relative to the resource
/// (`home/alice/notes.txt`) or the same path after the resource's name, as
/// `ls` shows it (`data/home/alice/notes.txt`); a leading `/` is ignored.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    include: Vec<String>,
    exclude: Vec<String>,
    /// Includes that matched an entry, by index.
    matched: Vec<bool>,
    /// The resource being restored: its root's name, and whether restore
    /// paths start with it (several resources, each in `to/<resource>`).
    resource: Vec<u8>,
    prefixed: bool,
}

/// What a filter says of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pick {
    /// Restore it and everything below it (bar exclusions).
    Whole,
    /// A directory that may hold included entries: made, entered, and
    /// removed again if nothing in it is restored.
    Parent,
    /// Leave it out.
    Skip,
}

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

impl Filter {
    /// Check the globs: not empty, no NUL, no `..` component.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter> {
        for (flag, g) in include
            .iter()
            .map(|g| ("--include", g))
            .chain(exclude.iter().map(|g| ("--exclude", g)))
        {
            let t = g.trim_start_matches('/');
            if t.is_empty() || g.contains('\0') || t.split('/').any(|c| c == "..") {
                return Err(Error::param(format!(
                    "{flag} {g:?} is invalid: give a name glob (*.txt) or a path inside the backup (home/alice/notes.txt), without '..'"
                )));
            }
        }
        // `home/alice/` is the directory `home/alice`.
        let trim = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|g| g.trim_end_matches('/').to_string())
                .collect()
        };
        Ok(Filter {
            include: trim(include),
            exclude: trim(exclude),
            matched: vec![false; include.len()],
            resource: Vec::new(),
            prefixed: false,
        })
    }

    fn active(&self) -> bool {
        !self.include.is_empty() || !self.exclude.is_empty()
    }

    /// The entry's path relative to its resource, and after its
    /// resource's name, from its restore path `rel`.
    fn paths(&self, rel: &[u8]) -> (Vec<u8>, Vec<u8>) {
        if self.prefixed {
            let inner = match rel.iter().position(|b| *b == b'/') {
                Some(i) => rel[i + 1..].to_vec(),
                None => Vec::new(),
            };
            (inner, rel.to_vec())
        } else {
            (rel.to_vec(), join(&self.resource, rel))
        }
    }

    fn matches(g: &str, inner: &[u8], full: &[u8], name: &[u8]) -> bool {
        if g.contains('/') {
            let g = g.trim_start_matches('/');
            sys::fnmatch(g, inner) || sys::fnmatch(g, full)
        } else {
            sys::fnmatch(g, name)
        }
    }

    /// Whether a directory at `path` may hold entries `g` matches: its
    /// components match the glob's first ones.
    fn may_hold(g: &str, path: &[u8]) -> bool {
        if !g.contains('/') {
            return true;
        }
        let gs: Vec<&str> = g.trim_start_matches('/').split('/').collect();
        if path.is_empty() {
            return true;
        }
        let ps: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
        ps.len() < gs.len() && ps.iter().zip(&gs).all(|(p, g)| sys::fnmatch(g, p))
    }

    /// What to do with entry `n` at restore path `rel`, whose parent is
    /// restored whole (`whole`) or only as a parent.
    fn pick(&mut self, rel: &[u8], n: &Node, whole: bool) -> Pick {
        if !self.active() {
            return Pick::Whole;
        }
        let (inner, full) = self.paths(rel);
        if self
            .exclude
            .iter()
            .any(|g| Self::matches(g, &inner, &full, &n.name))
        {
            return Pick::Skip;
        }
        if whole || self.include.is_empty() {
            return Pick::Whole;
        }
        let mut hit = false;
        for (i, g) in self.include.iter().enumerate() {
            if Self::matches(g, &inner, &full, &n.name) {
                self.matched[i] = true;
                hit = true;
            }
        }
        if hit {
            return Pick::Whole;
        }
        let may = n.kind == NodeKind::Dir
            && self
                .include
                .iter()
                .any(|g| Self::may_hold(g, &inner) || Self::may_hold(g, &full));
        if may {
            Pick::Parent
        } else {
            Pick::Skip
        }
    }
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
    restore_with_progress(
        store,
        vault,
        backup,
        resource,
        to,
        opts,
        &Progress::default(),
    )
}

/// [`restore_with`], counting in `progress` the bytes written against the
/// bytes the backup recorded (for a progress bar).
pub fn restore_with_progress(
    store: &Store,
    vault: &str,
    backup: &str,
    resource: Option<&str>,
    to: &Path,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreStats> {
    // `latest`: the newest backup, as for ls and diff.
    let rec = super::browse::resolve_backup(store, vault, backup)?;
    let parts: Vec<_> = match resource {
        Some(r) => vec![rec.resources.iter().find(|p| p.name == r).ok_or_else(|| {
            Error::not_found(format!(
                "resource {r:?} is not in backup {backup} of vault {vault}"
            ))
            .code("BackupService.6302")
        })?],
        None => rec.resources.iter().collect(),
    };
    progress.add_total(parts.iter().map(|p| p.stats.bytes_total).sum());
    let repo = store.repo(vault)?;
    let mut filter = Filter::new(&opts.include, &opts.exclude)?;
    if filter.active() {
        if opts.in_place || parts.iter().any(|p| p.kind == ResourceKind::Disk) {
            return Err(Error::invalid(
                "--include and --exclude choose files of a file-system or server backup restored into a directory (--to DIR); a disk is restored whole",
            ));
        }
        check_includes(&repo, &rec, &parts, &opts.include)?;
    }
    if parts.len() == 1 {
        let p = parts[0];
        match p.kind {
            ResourceKind::Disk => {
                let source = PathBuf::from(String::from_utf8_lossy(&p.source).to_string());
                let mut budget = Budget::of(&rec, p);
                return restore_disk(
                    &repo,
                    &rec,
                    &p.meta,
                    &source,
                    to,
                    opts.in_place,
                    &mut budget,
                    progress,
                );
            }
            ResourceKind::Server if opts.in_place => {
                return restore_server_in_place(&repo, &rec, p, progress);
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
    let target = prepare_target(to, opts.allow_untrusted_target)?;
    let root_fd = target.fd.try_clone().ctx(|| "dup target".to_string())?;
    let mut r = Restorer::new(&repo, &rec, target.fd, to, Budget::of(&rec, parts[0]));
    filter.resource = parts[0].meta.name.clone();
    filter.prefixed = parts.len() > 1;
    r.filter = filter;
    r.progress = Some(progress);
    if parts.len() == 1 {
        // The target itself takes the resource root's metadata at the end,
        // through its own descriptor; the filter picks what goes in it.
        r.restore_tree(
            root_fd,
            parts[0].root,
            Vec::new(),
            Some(parts[0].meta.clone()),
            false,
        )?;
    } else {
        for p in parts {
            // Hard-link groups are numbered per resource, and each
            // resource is bounded by its own recorded totals.
            r.links.clear();
            r.budget = Budget::of(&rec, p);
            let name = p.meta.name.clone();
            r.filter.resource = name.clone();
            let pick = r.filter.pick(&name, &p.meta, false);
            if pick == Pick::Skip {
                continue;
            }
            match r.entry(&root_fd, &p.meta, &name) {
                Ok(Some((fd, id))) => {
                    let kept = r.restore_tree(
                        fd,
                        id,
                        name.clone(),
                        Some(p.meta.clone()),
                        pick == Pick::Whole,
                    )?;
                    if !kept && sys::rmdir_at(&root_fd, &name).is_ok() {
                        // Nothing of this resource was included.
                        r.stats.dirs -= 1;
                    }
                }
                Ok(None) => {}
                Err(e) if r.is_fatal(&e) => return Err(e),
                Err(e) => r.failed_entry(e),
            }
        }
        if target.created {
            // Made 0700 so that nobody could enter it during the restore;
            // with several resources it has no recorded metadata of its own.
            sys::fchmod(&root_fd, 0o755).ctx(|| format!("chmod {}", to.display()))?;
        }
    }
    for (g, m) in r.filter.include.iter().zip(&r.filter.matched) {
        if !m {
            r.stats.errors.push(format!(
                "--include {}: no entry of backup {} matches it",
                crate::quote::quote(g),
                rec.name
            ));
        }
    }
    Ok(r.stats)
}

/// Every `--include` that is a path, not a glob, must name an entry of
/// the backup (relative to the resource, or after its name), checked
/// before anything is written: a mistyped path is bad input, not an empty
/// restore.
fn check_includes(
    repo: &Repo,
    rec: &BackupRecord,
    parts: &[&ResourceBackup],
    include: &[String],
) -> Result<()> {
    for g in include.iter().filter(|g| !is_glob(g) && g.contains('/')) {
        let comps: Vec<String> = g
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        // Relative to the resource first (one resource), then as `ls`
        // shows it: after the resource's name.
        let mut tries: Vec<Vec<String>> = Vec::new();
        if parts.len() == 1 {
            let name = String::from_utf8_lossy(&parts[0].meta.name).into_owned();
            tries.push(std::iter::once(name).chain(comps.iter().cloned()).collect());
        }
        tries.push(comps);
        let mut first_err = None;
        let mut found = false;
        for t in &tries {
            let t: Vec<&str> = t.iter().map(String::as_str).collect();
            match super::browse::lookup(repo, rec, &t) {
                Ok(_) => {
                    found = true;
                    break;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if !found {
            if let Some(e) = first_err {
                return Err(e.context(format!("--include {}", crate::quote::quote(g))));
            }
        }
    }
    Ok(())
}

/// The most a restore of one resource may create: the totals its backup
/// recorded. A hostile or damaged store (trees shared many times over, a
/// chunk list far beyond its file) stops with an error naming the backup
/// instead of filling the disk.
#[derive(Clone, Debug)]
struct Budget {
    backup: String,
    resource: String,
    max_entries: u64,
    max_bytes: u64,
    entries: u64,
    bytes: u64,
}

impl Budget {
    fn of(rec: &BackupRecord, p: &ResourceBackup) -> Budget {
        let s = &p.stats;
        // The same bound as ls, find and diff: what the backup recorded.
        let max_entries = super::browse::recorded_entries(p);
        Budget {
            backup: rec.name.clone(),
            resource: p.name.clone(),
            max_entries,
            max_bytes: s.bytes_total,
            entries: 0,
            bytes: 0,
        }
    }

    /// Count one more entry at `shown`.
    fn entry(&mut self, shown: &str) -> Result<()> {
        self.entries += 1;
        if self.entries > self.max_entries {
            return Err(Error::corrupt(format!(
                "backup {}, resource {}: restoring {shown} would create more than the {} entries the backup records (a damaged or hostile backup: a tree listed more than once?); restore stopped",
                self.backup, self.resource, self.max_entries
            )));
        }
        Ok(())
    }

    /// Count a file of `size` bytes at `shown`, before it is written.
    fn bytes(&mut self, shown: &str, size: u64) -> Result<()> {
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > self.max_bytes {
            return Err(Error::corrupt(format!(
                "backup {}, resource {}: restoring {shown} would write more than the {} bytes the backup records (a damaged or hostile backup); restore stopped",
                self.backup, self.resource, self.max_bytes
            )));
        }
        Ok(())
    }
}

/// The error of a chunk that does not lie within its file's recorded size.
fn check_chunk_within(
    shown: &str,
    rec: &BackupRecord,
    size: u64,
    offset: u64,
    len: u64,
) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::corrupt(format!(
            "{shown}: a chunk at offset {offset} of {len} bytes lies beyond the file's recorded size of {size} bytes (backup {}); nothing more is written",
            rec.name
        ))),
    }
}

/// Check a node's chunk-list spans against its size before any list is
/// loaded: a list that claims to reach past the file is damage.
fn check_lists_within(shown: &str, rec: &BackupRecord, n: &Node) -> Result<()> {
    if let Content::Lists(lists) = &n.content {
        for l in lists {
            check_chunk_within(shown, rec, n.size, l.offset, l.span)?;
        }
    }
    Ok(())
}

/// Write a disk backup to `to`: a new image file (holes stay holes), an
/// existing empty file, or a block device at least as large. The original
/// disk only with `in_place`; an original image file is replaced whole
/// (written beside it, then renamed over it).
///
/// The target is opened without following a symlink (in place: no symlink
/// anywhere on its path), and an existing one must be a regular file or a
/// block device owned by root or by the user running restore: a file
/// another user made beforehand would let them read the restored disk.
// Each argument is a distinct input of the disk restore; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn restore_disk(
    repo: &Repo,
    rec: &BackupRecord,
    node: &Node,
    source: &Path,
    to: &Path,
    in_place: bool,
    budget: &mut Budget,
    progress: &Progress,
) -> Result<RestoreStats> {
    let shown = to.display().to_string();
    budget.entry(&shown)?;
    budget.bytes(&shown, node.size)?;
    // The original is looked up only to compare identities (what is
    // written is always the descriptor opened below), and like every other
    // path it is walked from `/` with no symlink followed.
    let original = sys::open_no_symlinks(source, libc::O_PATH)
        .and_then(|fd| sys::fstat(&fd))
        .ok()
        .map(|st| (st.st_dev, st.st_ino, st.st_rdev));
    let (parent, base) = split_target(to)?;
    let pfd = open_dir_path(&parent, false, !in_place)?;
    let existing = match sys::open_path_at(&pfd, &base) {
        Ok(fd) => Some(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
        Err(e) => return Err(Error::io(format!("restore target {shown}"), e)),
    };
    let mut stats = RestoreStats::default();
    let Some(fd) = existing else {
        if in_place {
            return Err(Error::invalid(format!(
                "--in-place restores onto the original disk {}, and {shown} is not it",
                source.display()
            )));
        }
        let f = sys::create_file_at(&pfd, &base).ctx(|| format!("create {shown}"))?;
        if let Err(e) = write_disk(repo, rec, node, &f, to, false, &mut stats, progress) {
            // Never leave a partial image that looks like a restored disk.
            drop(f);
            let _ = sys::unlink_at(&pfd, &base);
            return Err(e);
        }
        stats.files = 1;
        return Ok(stats);
    };
    let st = sys::fstat(&fd).ctx(|| format!("stat {shown}"))?;
    let fmt = st.st_mode & libc::S_IFMT;
    if fmt == libc::S_IFLNK {
        return Err(Error::invalid(format!(
            "restore target {shown} is a symbolic link: restore writes a disk only to the file or device named, never through a link; give the path it leads to"
        )));
    }
    if fmt != libc::S_IFREG && fmt != libc::S_IFBLK {
        return Err(Error::invalid(format!(
            "restore target {shown} exists and is not a regular file or a block device: give a new image file name, an empty file or a block device"
        )));
    }
    let euid = sys::euid();
    if st.st_uid != 0 && st.st_uid != euid {
        return Err(Error::invalid(format!(
            "restore target {shown} is owned by uid {}: a disk is restored only onto a file or device owned by root or by the user running restore (uid {euid}), never into one another user made and can read",
            st.st_uid
        )));
    }
    let is_original = match original {
        Some(o) if fmt == libc::S_IFBLK => o.2 == st.st_rdev && o.2 != 0,
        Some(o) => (o.0, o.1) == (st.st_dev, st.st_ino),
        None => false,
    };
    if is_original && !in_place {
        return Err(Error::invalid(format!(
            "{shown} is the original disk of this backup: restoring over it needs --in-place"
        )));
    }
    if in_place && !is_original {
        return Err(Error::invalid(format!(
            "--in-place restores onto the original disk {}, and {shown} is not it",
            source.display()
        )));
    }
    if fmt == libc::S_IFBLK {
        let f = sys::reopen_for_write(&fd).ctx(|| format!("open {shown}"))?;
        let dev = sys::device_size_of(&f).ctx(|| format!("size of {shown}"))?;
        if dev < node.size {
            return Err(Error::invalid(format!(
                "target {shown} holds {dev} bytes, less than the disk's {} bytes",
                node.size
            )));
        }
        write_disk(repo, rec, node, &f, to, true, &mut stats, progress)?;
    } else if is_original {
        // Written beside the original, then renamed over it, both relative
        // to the one descriptor of their directory.
        let tmp = format!(
            ".{}.cbrfs-restore-{}",
            String::from_utf8_lossy(&base),
            crate::fsutil::random_suffix(6)
        )
        .into_bytes();
        let f = sys::create_file_at(&pfd, &tmp).ctx(|| format!("create beside {shown}"))?;
        let written =
            write_disk(repo, rec, node, &f, to, false, &mut stats, progress).and_then(|()| {
                sys::rename_at(&pfd, &tmp, &pfd, &base).ctx(|| format!("rename over {shown}"))
            });
        if let Err(e) = written {
            drop(f);
            let _ = sys::unlink_at(&pfd, &tmp);
            return Err(e);
        }
        sys::fsync_dir_fd(&pfd).ctx(|| format!("fsync the directory of {shown}"))?;
        stats
            .notes
            .push(format!("replaced {shown} with the backup's disk"));
    } else if st.st_size == 0 {
        let f = sys::reopen_for_write(&fd).ctx(|| format!("open {shown}"))?;
        write_disk(repo, rec, node, &f, to, false, &mut stats, progress)?;
    } else {
        return Err(Error::invalid(format!(
            "restore target {shown} exists: give a new image file name, an empty file or a block device"
        )));
    }
    stats.files = 1;
    Ok(stats)
}

/// Write a disk node's chunks into `f`; regions without chunks are zeroed
/// on a device, left as holes in a file. No chunk may reach past the
/// disk's recorded size.
#[allow(clippy::too_many_arguments)]
fn write_disk(
    repo: &Repo,
    rec: &BackupRecord,
    node: &Node,
    f: &std::fs::File,
    to: &Path,
    device: bool,
    stats: &mut RestoreStats,
    progress: &Progress,
) -> Result<()> {
    let shown = to.display().to_string();
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
    check_lists_within(&shown, rec, node)?;
    let mut pos = 0u64;
    for c in reader::all_chunks(repo, node)? {
        check_chunk_within(&shown, rec, node.size, c.offset, c.len as u64)?;
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
        progress.add_done(data.len() as u64);
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
/// Each path is opened from `/` one component at a time, and a symlink on
/// the way is an error naming it: the record's paths are not trusted to
/// lead where they did at backup time.
fn restore_server_in_place(
    repo: &Repo,
    rec: &BackupRecord,
    part: &ResourceBackup,
    progress: &Progress,
) -> Result<RestoreStats> {
    let tree = model::decode_tree(&repo.read_blob(&part.root)?)?;
    let mut total = RestoreStats::default();
    let mut budget = Budget::of(rec, part);
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
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(Error::corrupt(format!(
                "backup {}: server member {name} has the path {}, not an absolute path without '..'",
                rec.name,
                path.display()
            )));
        }
        if kind == "disk" {
            let s = restore_disk(repo, rec, node, &path, &path, true, &mut budget, progress)?;
            total.bytes += s.bytes;
            total.files += 1;
            total.notes.extend(s.notes);
            continue;
        }
        let (parent, base) = split_target(&path)?;
        let pfd = open_dir_path(&parent, true, false)?;
        let suffix = crate::fsutil::random_suffix(6);
        let base_s = String::from_utf8_lossy(&base).to_string();
        let fresh = format!(".{base_s}.cbrfs-restore-{suffix}").into_bytes();
        let fresh_shown = parent.join(OsString::from_vec(fresh.clone()));
        let fd = make_dir_at(&pfd, &fresh, &fresh_shown.display().to_string())?;
        let root_fd = fd.try_clone().ctx(|| "dup target".to_string())?;
        budget.entry(&path.display().to_string())?;
        let mut r = Restorer::new(repo, rec, fd, &fresh_shown, budget.clone());
        r.progress = Some(progress);
        match node.subtree {
            Some(sub) => {
                r.restore_tree(root_fd, sub, Vec::new(), Some(node.clone()), true)?;
            }
            None => r.dir_metadata(&root_fd, node, b"")?,
        }
        budget = r.budget.clone();
        if sys::fstatat_nofollow(&pfd, &base).is_ok() {
            let aside = format!("{base_s}.cbrfs-replaced-{suffix}").into_bytes();
            sys::rename_at(&pfd, &base, &pfd, &aside)
                .ctx(|| format!("move {} aside", path.display()))?;
            total.notes.push(format!(
                "moved the previous {} to {}",
                path.display(),
                parent.join(OsString::from_vec(aside)).display()
            ));
        }
        sys::rename_at(&pfd, &fresh, &pfd, &base)
            .ctx(|| format!("put the restored {} in place", path.display()))?;
        sys::fsync_dir_fd(&pfd).ctx(|| format!("fsync {}", parent.display()))?;
        total.files += r.stats.files;
        total.dirs += r.stats.dirs;
        total.others += r.stats.others;
        total.bytes += r.stats.bytes;
        total.errors.extend(r.stats.errors);
    }
    Ok(total)
}

/// A target path as its parent directory and its last component, which
/// must be a name (not `/`, `.` or `..`).
fn split_target(to: &Path) -> Result<(PathBuf, Vec<u8>)> {
    let base = match to.components().next_back() {
        Some(Component::Normal(n)) => n.as_bytes().to_vec(),
        _ => {
            return Err(Error::invalid(format!(
                "restore target {} does not end in a name: give a new or empty directory such as /tmp/restore",
                to.display()
            )))
        }
    };
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, base))
}

/// Open directory `path` one component at a time from `/` (or the working
/// directory), each with O_NOFOLLOW|O_DIRECTORY, so that no symlink is
/// followed on the way. With `create`, missing directories are made
/// (0755). With `root_links`, a symlink owned by root (`/var/run`) is
/// resolved by this walk itself, since only root can have made it; any
/// other symlink is an error naming it.
fn open_dir_path(path: &Path, create: bool, root_links: bool) -> Result<OwnedFd> {
    let start = |abs: bool| -> Result<(OwnedFd, PathBuf)> {
        let p = if abs { Path::new("/") } else { Path::new(".") };
        // O_PATH: a walk needs only search permission on the way.
        let fd = sys::open_path_dir(p).ctx(|| format!("open {}", p.display()))?;
        Ok((fd, p.to_path_buf()))
    };
    let mut queue: VecDeque<OsString> = VecDeque::new();
    let push_all = |q: &mut VecDeque<OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => q.push_front(n.to_os_string()),
                Component::ParentDir => q.push_front(OsString::from("..")),
                _ => {}
            }
        }
    };
    push_all(&mut queue, path);
    let (mut cur, mut shown) = start(path.is_absolute())?;
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        let nb = name.as_bytes();
        let next = shown.join(&name);
        match sys::open_path_dir_at(&cur, nb) {
            Ok(fd) => {
                cur = fd;
                shown = next;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                match sys::mkdir_at(&cur, nb, 0o755) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(Error::io(format!("create {}", next.display()), e)),
                }
                // Opened again without following: a symlink put there in
                // between is refused like any other.
                queue.push_front(name);
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                let st =
                    sys::fstatat_nofollow(&cur, nb).ctx(|| format!("stat {}", next.display()))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                    return Err(Error::invalid(format!(
                        "{} is not a directory",
                        next.display()
                    )));
                }
                if !root_links || st.st_uid != 0 {
                    return Err(Error::invalid(format!(
                        "{} is a symbolic link (owned by uid {}): restore follows no symlink on the way to its target; give the path it leads to",
                        next.display(),
                        st.st_uid
                    )));
                }
                links += 1;
                if links > 40 {
                    return Err(Error::invalid(format!(
                        "{}: too many symbolic links on the way",
                        path.display()
                    )));
                }
                let target = PathBuf::from(OsString::from_vec(
                    sys::readlink_at(&cur, nb).ctx(|| format!("read link {}", next.display()))?,
                ));
                if target.is_absolute() {
                    (cur, shown) = start(true)?;
                }
                push_all(&mut queue, &target);
            }
            Err(e) => return Err(Error::io(format!("open {}", next.display()), e)),
        }
    }
    Ok(cur)
}

/// Make directory `name` in `dir` (0700) and open it, checking that what
/// was opened is a directory restore just made (a directory owned by the
/// user running restore), not one somebody put there in between.
fn make_dir_at(dir: &OwnedFd, name: &[u8], shown: &str) -> Result<OwnedFd> {
    sys::mkdir_at(dir, name, 0o700).ctx(|| format!("{shown}: mkdir"))?;
    let fd = sys::open_dir_at(dir, name).ctx(|| format!("{shown}: open"))?;
    let st = sys::fstat(&fd).ctx(|| format!("{shown}: stat"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR || st.st_uid != sys::euid() {
        return Err(Error::failed(format!(
            "{shown}: the directory restore made was replaced by another (owner uid {}) before it was opened; not restored into",
            st.st_uid
        )));
    }
    Ok(fd)
}

/// An opened restore target directory.
struct Target {
    fd: OwnedFd,
    /// Restore made it (it did not exist).
    created: bool,
}

/// The target must be absent (it is created, mode 0700 until the root's
/// metadata is applied at the end) or an empty directory owned by the user
/// running restore that group and others cannot write, unless
/// `allow_untrusted`: in a directory another user can write, they could
/// rename what restore creates.
fn prepare_target(to: &Path, allow_untrusted: bool) -> Result<Target> {
    let shown = to.display().to_string();
    let (parent, base) = split_target(to)?;
    let pfd = open_dir_path(&parent, true, true)?;
    let st = match sys::fstatat_nofollow(&pfd, &base) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            let fd = make_dir_at(&pfd, &base, &format!("restore target {shown}"))?;
            return Ok(Target { fd, created: true });
        }
        Err(e) => return Err(Error::io(format!("restore target {shown}"), e)),
        Ok(st) => st,
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(Error::invalid(format!(
            "restore target {shown} exists and is not a directory: give an empty or new directory"
        )));
    }
    let fd = sys::open_dir_at(&pfd, &base).ctx(|| format!("open restore target {shown}"))?;
    // The checks are on the descriptor restore goes on to use.
    let st = sys::fstat(&fd).ctx(|| format!("stat restore target {shown}"))?;
    let euid = sys::euid();
    let mode = st.st_mode & 0o7777;
    if !allow_untrusted && (st.st_uid != euid || mode & 0o022 != 0) {
        return Err(Error::invalid(format!(
            "restore target {shown} is owned by uid {} with mode {mode:04o}: restore writes only into a directory owned by the user running it (uid {euid}) that group and others cannot write, since whoever can rename entries there could redirect restore's chown and chmod; give --allow-untrusted-target to restore there anyway",
            st.st_uid
        )));
    }
    let mut rd =
        std::fs::read_dir(sys::proc_fd_path(&fd)).ctx(|| format!("read restore target {shown}"))?;
    if rd.next().is_some() {
        return Err(Error::invalid(format!(
            "restore target {shown} is not empty: give an empty or new directory"
        )));
    }
    Ok(Target { fd, created: false })
}

/// The first restored name of a hard-link group, and its inode, so that a
/// later name is linked to that inode and nothing else.
struct LinkFirst {
    rel: Vec<u8>,
    dev: u64,
    ino: u64,
}

/// One directory being restored: its descriptor, its remaining entries
/// and the metadata it takes once they are all made.
struct Frame {
    /// None while the directory is deep below the window of open ones
    /// (see [`KEEP_OPEN`]); reopened, and checked, before it is used.
    fd: Option<OwnedFd>,
    /// Its name in its parent, and its identity when restore made it.
    name: Vec<u8>,
    dev_ino: (u64, u64),
    rel: Vec<u8>,
    entries: std::vec::IntoIter<Node>,
    tree: BlobId,
    meta: Option<Node>,
    /// Restored whole (not only as the parent of included entries).
    whole: bool,
    /// Something was restored into it: a directory made only as a parent
    /// is removed again when nothing in it was.
    kept: bool,
}

/// Directories of the path being restored that stay open: deeper ones
/// are closed and reopened (by name from their open parent, checked to be
/// the same inode) when the walk comes back to them, so a tree of any
/// depth needs a bounded number of descriptors.
const KEEP_OPEN: usize = 256;

/// How an entry's metadata is set: through an open descriptor (files and
/// directories) or an O_PATH one (everything restore must not open).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Handle {
    Open,
    Path,
}

struct Restorer<'a> {
    repo: &'a Repo,
    cache: ChunkCache,
    /// Hard-link group → its first restored name, relative to root.
    links: HashMap<u64, LinkFirst>,
    stats: RestoreStats,
    root_path: PathBuf,
    root_fd: OwnedFd,
    as_root: bool,
    euid: u32,
    rec: &'a BackupRecord,
    budget: Budget,
    /// Trees on the path from the root to the directory being restored.
    on_path: HashSet<BlobId>,
    /// Set when an error stops the whole restore (budget, cycle).
    stopped: bool,
    /// [`KEEP_OPEN`], smaller in tests.
    keep_open: usize,
    /// `--include` and `--exclude`.
    filter: Filter,
    /// Bytes written, for a progress bar.
    progress: Option<&'a Progress>,
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        name.to_vec()
    } else {
        [rel, b"/", name].concat()
    }
}

impl<'a> Restorer<'a> {
    fn new(
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
        }
    }

    fn display(&self, rel: &[u8]) -> String {
        format!(
            "{}/{}",
            self.root_path.display(),
            String::from_utf8_lossy(rel)
        )
    }

    /// Errors that end the restore rather than one entry.
    fn is_fatal(&self, e: &Error) -> bool {
        self.stopped || e.kind() == Kind::NoSpace
    }

    /// An error that ends the restore.
    fn stop(&mut self, e: Error) -> Error {
        self.stopped = true;
        e
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

    /// A frame for directory `fd` (at `rel`) holding tree `id`, or None
    /// when the tree cannot be read (recorded as an error; the directory
    /// gets its metadata at once). A tree already on the path is a cycle.
    fn frame(
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
        }))
    }

    /// Restore tree `id` into directory `fd` (at `rel`), then give the
    /// directory `meta`. Iterative, with an explicit stack: the depth of a
    /// tree is bounded by open descriptors, never by the call stack.
    /// `whole`: everything in it is restored (else the filter picks, see
    /// [`Filter`]). Returns whether anything was restored into it.
    fn restore_tree(
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
                    if let (Some(m), Some(fd)) = (&f.meta, &f.fd) {
                        // After its entries: they would change its mtime,
                        // and its mode may forbid writing into it.
                        if let Err(e) = self.dir_metadata(fd, m, &f.rel) {
                            self.failed_entry(e);
                        }
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
    fn reopen(&mut self, stack: &mut [Frame]) -> Result<()> {
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

    /// Make entry `n` in `dir` at `rel`. A directory with a tree is
    /// returned opened, with its tree, for the caller to descend into (it
    /// takes its metadata when done); everything else is complete.
    fn entry(&mut self, dir: &OwnedFd, n: &Node, rel: &[u8]) -> Result<Option<(OwnedFd, BlobId)>> {
        let name = n.name.as_slice();
        let shown = self.display(rel);
        // Trees are validated where they are decoded; checked again here
        // because this is where a name becomes a place on disk.
        if !model::is_safe_name(name) {
            return Err(Error::corrupt(format!(
                "{}: backup {} has an entry named {:?}, not a single path component; not restored",
                self.display(&rel[..rel.len().saturating_sub(name.len())]),
                self.rec.name,
                String::from_utf8_lossy(name)
            )));
        }
        if let Err(e) = self.budget.entry(&shown) {
            return Err(self.stop(e));
        }
        if n.link_group != 0 && self.links.contains_key(&n.link_group) {
            self.link(dir, n, &shown)?;
            return Ok(None);
        }
        let made = match n.kind {
            NodeKind::Dir => {
                let sub = match make_dir_at(dir, name, &shown) {
                    Ok(fd) => fd,
                    // Each level of a tree being restored holds one open
                    // directory: deeper than the open-file limit allows is
                    // the end of this restore, not one entry's failure.
                    Err(e) if e.os_error().and_then(|o| o.raw_os_error()) == Some(libc::EMFILE) => {
                        return Err(self.stop(e.context(format!(
                            "backup {}: the tree is nested deeper than the open-file limit allows",
                            self.rec.name
                        ))));
                    }
                    Err(e) => return Err(e),
                };
                self.stats.dirs += 1;
                if let Some(id) = n.subtree {
                    return Ok(Some((sub, id)));
                }
                self.dir_metadata(&sub, n, rel)?;
                return Ok(None);
            }
            NodeKind::File => {
                if let Err(e) = self.budget.bytes(&shown, n.size) {
                    return Err(self.stop(e));
                }
                let f = sys::create_file_at(dir, name).ctx(|| format!("{shown}: create"))?;
                let result = self
                    .write_file(&f, n, rel)
                    .and_then(|()| f.set_len(n.size).ctx(|| format!("{shown}: set size")))
                    .and_then(|()| self.metadata(&f, Handle::Open, n, rel));
                let st = result.and_then(|()| sys::fstat(&f).ctx(|| format!("{shown}: stat")));
                match st {
                    Ok(st) => {
                        self.stats.files += 1;
                        st
                    }
                    Err(e) => {
                        // A file whose data could not all be restored is
                        // removed, not left at full size with zeros where
                        // the damaged or unwritten chunks belong: restore
                        // never shows wrong bytes as a file's content.
                        drop(f);
                        let _ = sys::unlink_at(dir, name);
                        return Err(e);
                    }
                }
            }
            NodeKind::Symlink => {
                sys::symlink_at(&n.target, dir, name).ctx(|| format!("{shown}: symlink"))?;
                self.stats.others += 1;
                self.made_node(dir, n, rel, &shown, libc::S_IFLNK)?
            }
            NodeKind::CharDev | NodeKind::BlockDev | NodeKind::Fifo | NodeKind::Socket => {
                sys::mknod_at(dir, name, n.kind.ifmt() | 0o600, n.rdev)
                    .ctx(|| format!("{shown}: mknod"))?;
                self.stats.others += 1;
                self.made_node(dir, n, rel, &shown, n.kind.ifmt())?
            }
        };
        if n.link_group != 0 {
            self.links.insert(
                n.link_group,
                LinkFirst {
                    rel: rel.to_vec(),
                    dev: made.st_dev,
                    ino: made.st_ino,
                },
            );
        }
        Ok(None)
    }

    /// Open the symlink or node restore just made as O_PATH, check it is
    /// the one it made (type, owner, a single link), and set its metadata
    /// through that descriptor.
    fn made_node(
        &mut self,
        dir: &OwnedFd,
        n: &Node,
        rel: &[u8],
        shown: &str,
        ifmt: u32,
    ) -> Result<libc::stat> {
        let fd = sys::open_path_at(dir, &n.name).ctx(|| format!("{shown}: open"))?;
        let st = sys::fstat(&fd).ctx(|| format!("{shown}: stat"))?;
        if st.st_mode & libc::S_IFMT != ifmt || st.st_uid != self.euid || st.st_nlink != 1 {
            return Err(Error::failed(format!(
                "{shown}: the entry restore made was replaced by another (owner uid {}) before its owner and mode were set; left alone",
                st.st_uid
            )));
        }
        self.metadata(&fd, Handle::Path, n, rel)?;
        Ok(st)
    }

    /// Link `n` to the first restored name of its group. That name's
    /// directory is opened from the target one component at a time without
    /// following symlinks, and the new link is checked to be the inode
    /// restore made; otherwise it is removed again.
    fn link(&mut self, dir: &OwnedFd, n: &Node, shown: &str) -> Result<()> {
        let Some(first) = self.links.get(&n.link_group) else {
            return Ok(());
        };
        let (dev, ino) = (first.dev, first.ino);
        let (first_dir, first_name) = match first.rel.iter().rposition(|b| *b == b'/') {
            Some(i) => (first.rel[..i].to_vec(), first.rel[i + 1..].to_vec()),
            None => (Vec::new(), first.rel.clone()),
        };
        let mut cur = self.root_fd.try_clone().ctx(|| "dup target".to_string())?;
        for c in first_dir.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
            cur = sys::open_path_dir_at(&cur, c).ctx(|| format!("{shown}: hard link: open"))?;
        }
        sys::link_at(&cur, &first_name, dir, &n.name).ctx(|| format!("{shown}: hard link"))?;
        let st = sys::fstatat_nofollow(dir, &n.name).ctx(|| format!("{shown}: stat"))?;
        if (st.st_dev, st.st_ino) != (dev, ino) {
            let _ = sys::unlink_at(dir, &n.name);
            return Err(Error::failed(format!(
                "{shown}: the first name of its hard-link group was replaced during the restore; not linked"
            )));
        }
        Ok(())
    }

    fn write_file(&mut self, f: &std::fs::File, n: &Node, rel: &[u8]) -> Result<()> {
        let shown = self.display(rel);
        check_lists_within(&shown, self.rec, n)?;
        let chunks = reader::all_chunks(self.repo, n)
            .map_err(|e| e.context(format!("{shown}: chunk list in backup {}", self.rec.name)))?;
        // Counted only once the whole file is written: a file that fails
        // is removed, and its bytes were not restored.
        let mut bytes = 0;
        for c in chunks {
            // Before anything is read or written: a chunk list may claim
            // any size, the record's size of the file is the bound.
            check_chunk_within(&shown, self.rec, n.size, c.offset, c.len as u64)?;
            let data = self.cache.get(self.repo, &c.id).map_err(|e| {
                e.context(format!(
                    "{shown}: backup {}, offset {}",
                    self.rec.name, c.offset
                ))
            })?;
            if data.len() != c.len as usize {
                return Err(Error::corrupt(format!(
                    "{shown}: chunk {} has {} bytes, the file expects {} (backup {})",
                    c.id,
                    data.len(),
                    c.len,
                    self.rec.name
                )));
            }
            f.write_all_at(&data, c.offset)
                .ctx(|| format!("{shown}: write"))?;
            bytes += data.len() as u64;
            if let Some(p) = self.progress {
                p.add_done(data.len() as u64);
            }
        }
        self.stats.bytes += bytes;
        Ok(())
    }

    /// A directory's metadata, through its own descriptor.
    fn dir_metadata(&mut self, fd: &OwnedFd, n: &Node, rel: &[u8]) -> Result<()> {
        self.metadata(fd, Handle::Open, n, rel)
    }

    /// Owner, mode, xattrs, times, in that order, all on the descriptor of
    /// the inode restore made: chown clears setuid, so chmod comes after
    /// it, and chmod rewrites an ACL's mask, so the ACL xattr comes after
    /// both.
    fn metadata(
        &mut self,
        fd: &impl std::os::fd::AsRawFd,
        how: Handle,
        n: &Node,
        rel: &[u8],
    ) -> Result<()> {
        match sys::fchown(fd, n.uid, n.gid) {
            Ok(()) => {}
            Err(e) if !self.as_root && e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(Error::io(format!("{}: chown", self.display(rel)), e)),
        }
        // Symlinks have no mode of their own.
        if n.kind != NodeKind::Symlink {
            let r = match how {
                Handle::Open => sys::fchmod(fd, n.mode),
                Handle::Path => sys::fchmod_path(fd, n.mode),
            };
            r.ctx(|| format!("{}: chmod", self.display(rel)))?;
        }
        for x in &n.xattrs {
            let privileged = x.name.starts_with(b"security.") || x.name.starts_with(b"trusted.");
            if privileged && !self.as_root {
                continue;
            }
            let r = match how {
                Handle::Open => sys::fset_xattr(fd, &x.name, &x.value),
                Handle::Path => sys::fset_xattr_path(fd, &x.name, &x.value),
            };
            if let Err(e) = r {
                self.fail(
                    rel,
                    format!("xattr {}: {e}", String::from_utf8_lossy(&x.name)),
                );
            }
        }
        // Access times are not kept (reading a tree would change them and
        // defeat deduplication of unchanged trees); atime takes mtime.
        let r = match how {
            Handle::Open => sys::futimens(fd, n.mtime_ns, n.mtime_ns),
            Handle::Path => sys::futimens_path(fd, n.mtime_ns, n.mtime_ns),
        };
        r.ctx(|| format!("{}: set times", self.display(rel)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackupStats, Origin};
    use crate::store::{BlobKind, RepoWriter};

    fn record() -> BackupRecord {
        BackupRecord {
            name: "b".into(),
            vault: "v".into(),
            description: String::new(),
            origin: Origin::Manual,
            policy: None,
            full: true,
            started_ns: 1,
            finished_ns: 2,
            resources: vec![],
            stats: BackupStats::default(),
        }
    }

    /// Content-addressed trees cannot really contain themselves, so the
    /// cycle check is shown with a tree put on the path by hand: entering
    /// it again stops the restore with an error naming the backup.
    #[test]
    fn a_tree_on_its_own_path_is_a_cycle() {
        let dir = tempfile::tempdir().unwrap();
        Repo::create(dir.path()).unwrap();
        let repo = Repo::open(dir.path(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, false);
        let id = w
            .add(BlobKind::Tree, &model::encode_tree(&Tree::default()))
            .unwrap()
            .id;
        w.finish().unwrap();
        let rec = record();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let fd = sys::open_dir(&out).unwrap();
        let budget = Budget {
            backup: "b".into(),
            resource: "r".into(),
            max_entries: 10,
            max_bytes: 10,
            entries: 0,
            bytes: 0,
        };
        let mut r = Restorer::new(&repo, &rec, fd.try_clone().unwrap(), &out, budget);
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
        Repo::create(dir.path()).unwrap();
        let repo = Repo::open(dir.path(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, false);
        let mut leaf = Node::new(b"leaf".to_vec(), NodeKind::File);
        leaf.mode = 0o640;
        let mut id = w
            .add(
                BlobKind::Tree,
                &model::encode_tree(&Tree {
                    entries: vec![leaf],
                }),
            )
            .unwrap()
            .id;
        const LEVELS: usize = 50;
        for i in 0..LEVELS {
            let mut d = Node::new(format!("d{i}").into_bytes(), NodeKind::Dir);
            d.mode = 0o750;
            d.mtime_ns = 1_000_000_000 * (i as i64 + 1);
            d.subtree = Some(id);
            id = w
                .add(
                    BlobKind::Tree,
                    &model::encode_tree(&Tree { entries: vec![d] }),
                )
                .unwrap()
                .id;
        }
        w.finish().unwrap();
        let rec = record();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let fd = sys::open_dir(&out).unwrap();
        let budget = Budget {
            backup: "b".into(),
            resource: "r".into(),
            max_entries: 100,
            max_bytes: 0,
            entries: 0,
            bytes: 0,
        };
        let mut r = Restorer::new(&repo, &rec, fd.try_clone().unwrap(), &out, budget);
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

    /// The walk to a target refuses a symlink on the way, names it, and
    /// follows one only when told and only when root owns it.
    #[test]
    fn the_walk_to_a_target_follows_no_users_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("x")).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = open_dir_path(&link.join("x"), false, false).unwrap_err();
        assert!(
            e.to_string().contains(&link.display().to_string())
                && e.to_string().contains("symbolic link"),
            "{e}"
        );
        assert_eq!(e.exit_code(), 2);
        // Made by the user running the test: followed only if that is root.
        let followed = open_dir_path(&link.join("x"), false, true);
        assert_eq!(followed.is_ok(), sys::euid() == 0, "{:?}", followed.err());
        if sys::euid() == 0 {
            let c = std::ffi::CString::new(link.as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::lchown(c.as_ptr(), 65534, 65534) }, 0);
            let e = open_dir_path(&link.join("x"), false, true).unwrap_err();
            assert!(e.to_string().contains("uid 65534"), "{e}");
        }
        // Missing directories are made on the way, never through a link.
        let fd = open_dir_path(&real.join("a/b"), true, false).unwrap();
        assert!(sys::fstat(&fd).is_ok() && real.join("a/b").is_dir());
    }
}
