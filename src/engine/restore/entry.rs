//! One entry restored: made relative to its parent's descriptor with
//! O_EXCL/O_NOFOLLOW, checked to be the inode restore made, hard links
//! linked to their group's first name, files written, and owner, mode,
//! xattrs and times set through a descriptor.

use super::budget::{check_lists_within, chunks_within};
use super::pool::Job;
use super::target::make_dir_at;
use super::tree::Restorer;
use crate::engine::progress::Progress;
use crate::engine::reader::{self, ChunkCache};
use crate::error::{Error, IoContext, Result};
use crate::model::BackupRecord;
use crate::model::{self, Node, NodeKind};
use crate::store::{BlobId, Repo};
use crate::sys;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The first restored name of a hard-link group, and its inode, so that a
/// later name is linked to that inode and nothing else.
pub(super) struct LinkFirst {
    pub(super) rel: Vec<u8>,
    pub(super) dev: u64,
    pub(super) ino: u64,
}

/// How an entry's metadata is set: through an open descriptor (files and
/// directories) or an O_PATH one (everything restore must not open).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Handle {
    Open,
    Path,
}

impl Restorer<'_> {
    /// Make entry `n` in `dir` at `rel`. A directory with a tree is
    /// returned opened, with its tree, for the caller to descend into (it
    /// takes its metadata when done); everything else is complete.
    pub(super) fn entry(
        &mut self,
        dir: &OwnedFd,
        n: &Node,
        rel: &[u8],
    ) -> Result<Option<(OwnedFd, BlobId)>> {
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
                // A file of no hard-link group goes to the pool of writers
                // when there is one; a linked file is written here, since
                // its later names are linked to it and must never show it
                // half-written or removed after a failure.
                if n.link_group == 0 && self.pool.is_some() {
                    let dir = self.shared_dir(dir, &shown)?;
                    self.submit(Job {
                        file: f,
                        dir,
                        node: n.clone(),
                        rel: rel.to_vec(),
                        dir_id: self.cur_dir,
                    })?;
                    return Ok(None);
                }
                let ctx = self.file_ctx();
                let mut notes = Vec::new();
                let linked = n.link_group != 0;
                let done = finish_file(&ctx, &f, n, rel, &mut notes, linked);
                self.noted(notes);
                match done {
                    Ok((bytes, st)) => {
                        self.stats.files += 1;
                        self.stats.bytes += bytes;
                        match st {
                            Some(st) => st,
                            // Not in a hard-link group: nothing needs its
                            // identity.
                            None => return Ok(None),
                        }
                    }
                    Err(e) => {
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
    pub(super) fn made_node(
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
    pub(super) fn link(&mut self, dir: &OwnedFd, n: &Node, shown: &str) -> Result<()> {
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

    /// A directory's metadata, through its own descriptor.
    pub(super) fn dir_metadata(&mut self, fd: &OwnedFd, n: &Node, rel: &[u8]) -> Result<()> {
        self.metadata(fd, Handle::Open, n, rel)
    }

    /// Owner, mode, xattrs, times: see [`apply_metadata`]; an xattr that
    /// cannot be set is recorded, not fatal.
    pub(super) fn metadata(
        &mut self,
        fd: &impl std::os::fd::AsRawFd,
        how: Handle,
        n: &Node,
        rel: &[u8],
    ) -> Result<()> {
        let mut notes = Vec::new();
        let r = apply_metadata(&self.root_path, self.as_root, fd, how, n, rel, &mut notes);
        self.noted(notes);
        r
    }

    /// Record failures already naming their path (xattrs not set).
    pub(super) fn noted(&mut self, notes: Vec<String>) {
        for msg in notes {
            log::debug!("{msg}");
            self.stats.errors.push(msg);
        }
    }
}

impl<'a> Restorer<'a> {
    /// The walk's directory `dir` (number `cur_dir`) as the pool's jobs
    /// hold it: duplicated once per directory and shared by its files.
    pub(super) fn shared_dir(&mut self, dir: &OwnedFd, shown: &str) -> Result<Arc<OwnedFd>> {
        if let Some((id, fd)) = &self.dir_share {
            if *id == self.cur_dir {
                return Ok(fd.clone());
            }
        }
        let fd = Arc::new(dir.try_clone().ctx(|| format!("{shown}: dup directory"))?);
        self.dir_share = Some((self.cur_dir, fd.clone()));
        Ok(fd)
    }

    /// What writing a file needs, apart from the walk's state.
    pub(super) fn file_ctx(&self) -> FileCtx<'a> {
        FileCtx {
            repo: self.repo,
            rec: self.rec,
            cache: self.cache.clone(),
            progress: self.progress,
            root_path: self.root_path.clone(),
            as_root: self.as_root,
        }
    }
}

/// What writing a file's contents and metadata needs, without the walk's
/// state: the walk uses it for the files it writes itself, and each worker
/// of the pool has its own (the cache is one, shared).
pub(super) struct FileCtx<'a> {
    pub(super) repo: &'a Repo,
    pub(super) rec: &'a BackupRecord,
    pub(super) cache: ChunkCache,
    pub(super) progress: Option<&'a Progress>,
    pub(super) root_path: PathBuf,
    pub(super) as_root: bool,
}

/// `root/rel`, as errors show a restored entry.
pub(super) fn display(root: &Path, rel: &[u8]) -> String {
    format!("{}/{}", root.display(), String::from_utf8_lossy(rel))
}

/// Write file `n`'s contents into `f` (created by the walk), give it its
/// recorded size, then its owner, mode, xattrs and times (after the data:
/// writing would change its mtime), all through `f`. Returns the bytes
/// written and, if `stat`, its stat (a hard-link group's first name: its
/// later names are checked against it); an xattr that could not be set
/// is left in `notes`.
pub(super) fn finish_file(
    ctx: &FileCtx,
    f: &std::fs::File,
    n: &Node,
    rel: &[u8],
    notes: &mut Vec<String>,
    stat: bool,
) -> Result<(u64, Option<libc::stat>)> {
    let shown = display(&ctx.root_path, rel);
    let (bytes, end) = write_file(ctx, f, n, &shown)?;
    // The file was created empty (O_EXCL) and grew to the end of its last
    // write: its size needs setting only when that is not the recorded
    // size (a hole at the end, or no data). One system call less per file.
    if end != n.size {
        f.set_len(n.size).ctx(|| format!("{shown}: set size"))?;
    }
    apply_metadata(&ctx.root_path, ctx.as_root, f, Handle::Open, n, rel, notes)?;
    let st = match stat {
        true => Some(sys::fstat(f).ctx(|| format!("{shown}: stat"))?),
        false => None,
    };
    Ok((bytes, st))
}

/// Write `n`'s chunks into `f`; the bytes written and the end of the last
/// write (the file's size now: it was created empty).
fn write_file(ctx: &FileCtx, f: &std::fs::File, n: &Node, shown: &str) -> Result<(u64, u64)> {
    let (repo, rec, progress) = (ctx.repo, ctx.rec, ctx.progress);
    check_lists_within(shown, rec, n)?;
    let chunks = reader::all_chunks(repo, n)
        .map_err(|e| e.context(format!("{shown}: chunk list in backup {}", rec.name)))?;
    // A remote vault fetches a data pack whole when this file wants
    // most of it (one request), by ranges otherwise.
    repo.will_read(chunks.iter().map(|c| c.id));
    // Counted only once the whole file is written: a file that fails
    // is removed, and its bytes were not restored.
    let mut bytes = 0;
    let mut end = 0u64;
    // Before a chunk is read or written: a chunk list may claim any
    // size, the record's size of the file is the bound. The first
    // chunk out of bounds ends the chunks (helpers read none past it).
    let mut refused = None;
    let chunks = chunks_within(shown, rec, n.size, chunks, &mut refused);
    // A large file's chunks are read, decrypted and verified on helper
    // threads ahead of the writes.
    reader::for_each_chunk(
        repo,
        &ctx.cache,
        chunks,
        reader::read_ahead_workers(n.size),
        reader::READ_AHEAD,
        |c, data| {
            let data = data.map_err(|e| {
                e.context(format!("{shown}: backup {}, offset {}", rec.name, c.offset))
            })?;
            reader::check_chunk_len(repo, c, &data)
                .map_err(|e| e.context(format!("{shown}: backup {}", rec.name)))?;
            f.write_all_at(&data, c.offset)
                .ctx(|| format!("{shown}: write"))?;
            bytes += data.len() as u64;
            end = end.max(c.offset.saturating_add(data.len() as u64));
            if let Some(p) = progress {
                p.add_done(data.len() as u64);
            }
            Ok(())
        },
    )?;
    if let Some(e) = refused {
        return Err(e);
    }
    Ok((bytes, end))
}

/// Owner, mode, xattrs, times, in that order, all on the descriptor of
/// the inode restore made: chown clears setuid, so chmod comes after
/// it, and chmod rewrites an ACL's mask, so the ACL xattr comes after
/// both. An xattr that cannot be set is left in `notes`.
pub(super) fn apply_metadata(
    root: &Path,
    as_root: bool,
    fd: &impl std::os::fd::AsRawFd,
    how: Handle,
    n: &Node,
    rel: &[u8],
    notes: &mut Vec<String>,
) -> Result<()> {
    match sys::fchown(fd, n.uid, n.gid) {
        Ok(()) => {}
        Err(e) if !as_root && e.raw_os_error() == Some(libc::EPERM) => {}
        Err(e) => return Err(Error::io(format!("{}: chown", display(root, rel)), e)),
    }
    // Symlinks have no mode of their own.
    if n.kind != NodeKind::Symlink {
        let r = match how {
            Handle::Open => sys::fchmod(fd, n.mode),
            Handle::Path => sys::fchmod_path(fd, n.mode),
        };
        r.ctx(|| format!("{}: chmod", display(root, rel)))?;
    }
    for x in &n.xattrs {
        let privileged = x.name.starts_with(b"security.") || x.name.starts_with(b"trusted.");
        if privileged && !as_root {
            continue;
        }
        let r = match how {
            Handle::Open => sys::fset_xattr(fd, &x.name, &x.value),
            Handle::Path => sys::fset_xattr_path(fd, &x.name, &x.value),
        };
        if let Err(e) = r {
            notes.push(format!(
                "{}: xattr {}: {e}",
                display(root, rel),
                String::from_utf8_lossy(&x.name)
            ));
        }
    }
    // Access times are not kept (reading a tree would change them and
    // defeat deduplication of unchanged trees); atime takes mtime.
    let r = match how {
        Handle::Open => sys::futimens(fd, n.mtime_ns, n.mtime_ns),
        Handle::Path => sys::futimens_path(fd, n.mtime_ns, n.mtime_ns),
    };
    r.ctx(|| format!("{}: set times", display(root, rel)))?;
    Ok(())
}
