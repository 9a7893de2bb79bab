//! The FUSE adapter: fuser callbacks to [`crate::vfs`], errors to errno in
//! one place. Mounting (daemon with a readiness pipe, or foreground) and
//! unmounting are in `mount`.

mod mount;

pub use mount::{is_daemon_child, mount, umount, MountOptions};

use crate::model::NodeKind;
use crate::vfs::{Attr, VResult, Vfs};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Entries and attributes inside a backup never change.
const TTL_SNAPSHOT: Duration = Duration::from_secs(24 * 3600);
/// Vaults and backup lists change under the CLI: seen within a second.
const TTL_LIVE: Duration = Duration::from_secs(1);
/// Largest read request asked of the kernel.
const MAX_READ: u32 = 1 << 20;

struct CbrFs {
    vfs: Arc<Vfs>,
    /// Set once the session exists: pushes small files into the page cache.
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    /// The kernel opens directories without asking (FUSE_NO_OPENDIR_SUPPORT
    /// granted): OPENDIR is answered ENOSYS once and never sent again.
    no_opendir: bool,
    /// The kernel opens files without asking (FUSE_NO_OPEN_SUPPORT
    /// granted): OPEN is answered ENOSYS once and neither OPEN nor RELEASE
    /// is sent again; reads come with handle 0 ([`Vfs::implicit_handle`]).
    no_open: bool,
    /// Whether users other than the mounting one reach the mount: then
    /// every open is asked, so that a write open is refused (see init).
    allow_other: bool,
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn file_type(k: NodeKind) -> FileType {
    match k {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::CharDev => FileType::CharDevice,
        NodeKind::BlockDev => FileType::BlockDevice,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
    }
}

impl From<&Attr> for FileAttr {
    fn from(a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.blocks,
            atime: time(a.mtime_ns),
            mtime: time(a.mtime_ns),
            ctime: time(a.ctime_ns),
            crtime: time(a.mtime_ns),
            kind: file_type(a.kind),
            perm: (a.perm & 0o7777) as u16,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev as u32,
            flags: 0,
            blksize: 4096,
        }
    }
}

fn ttl(a: &Attr) -> Duration {
    if a.immutable {
        TTL_SNAPSHOT
    } else {
        TTL_LIVE
    }
}

fn reply_entry(r: VResult<Attr>, reply: ReplyEntry) {
    match r {
        Ok(a) => reply.entry(&ttl(&a), &FileAttr::from(&a), Generation(0)),
        Err(e) => reply.error(errno(e)),
    }
}

/// List directory `ino` from `offset` into a reply: `add(entry, position)`
/// adds one and says whether the reply is full. The kernel counts a lookup
/// for every entry a readdirplus (`plus`) handed it but "." and ".."; what
/// plain readdir lists, and the entry that did not fit, nobody holds, and
/// their inodes are released (the number stays unique: inode numbers are
/// never reused).
fn list_into(
    vfs: &Vfs,
    ino: u64,
    offset: u64,
    plus: bool,
    mut add: impl FnMut(&crate::vfs::DirEntry, u64) -> bool,
) -> VResult<()> {
    vfs.readdir_each(ino, offset, |pos, e| {
        let full = add(&e, pos);
        if e.name != b"." && e.name != b".." {
            if plus && !full {
                vfs.add_lookup(e.attr.ino);
            } else {
                vfs.forget(e.attr.ino, 0);
            }
        }
        !full
    })
}

fn fill_dir(vfs: &Vfs, ino: u64, offset: u64, mut reply: ReplyDirectory) {
    let r = list_into(vfs, ino, offset, false, |e, pos| {
        reply.add(
            INodeNo(e.attr.ino),
            pos,
            file_type(e.attr.kind),
            OsStr::from_bytes(&e.name),
        )
    });
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn fill_dir_plus(vfs: &Vfs, ino: u64, offset: u64, mut reply: ReplyDirectoryPlus) {
    let r = list_into(vfs, ino, offset, true, |e, pos| {
        reply.add(
            INodeNo(e.attr.ino),
            pos,
            OsStr::from_bytes(&e.name),
            &ttl(&e.attr),
            &FileAttr::from(&e.attr),
            Generation(0),
        )
    });
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

/// Put `data`, the whole content of `ino`, into the kernel's page cache.
fn store(vfs: &Vfs, n: &fuser::Notifier, ino: u64, data: &[u8]) {
    if let Err(e) = n.store(INodeNo(ino), 0, data) {
        log::debug!("store {} bytes of inode {ino}: {e}", data.len());
        vfs.unstore(ino);
    }
}

impl CbrFs {
    /// Run `then` now, or, inside a backup that mkdir started and that is
    /// still running, when it ends (parked, no worker thread held; `then`
    /// gets EAGAIN after the wait bound, EIO if the backup failed).
    fn when_ready(&self, ino: u64, then: impl FnOnce(&Vfs, VResult<()>) + Send + 'static) {
        match self.vfs.pending(ino) {
            Some(key) => {
                let vfs = self.vfs.clone();
                self.vfs.wait(key, Box::new(move |r| then(&vfs, r)));
            }
            None => then(&self.vfs, Ok(())),
        }
    }
}

impl CbrFs {
    /// The vfs handle of a request on file `ino` with handle `fh`: the
    /// kernel's 0 when it opened the file without asking (handles from
    /// [`Vfs::open`] start at 1).
    fn handle(&self, ino: INodeNo, fh: FileHandle) -> VResult<u64> {
        if self.no_open && fh.0 == 0 {
            self.vfs.implicit_handle(u64::from(ino))
        } else {
            Ok(fh.0)
        }
    }
}

impl Filesystem for CbrFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Not FUSE_CACHE_SYMLINKS: `latest` changes target, and the kernel
        // would keep serving the old one from its page cache.
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_POSIX_ACL,
            InitFlags::FUSE_ASYNC_READ,
        ] {
            if let Err(unsupported) = config.add_capabilities(cap) {
                log::info!("kernel lacks FUSE capability {unsupported:?}");
            }
        }
        // Directories without OPENDIR and RELEASEDIR: two requests fewer
        // for every directory a `find` or `cp -a` walks. The kernel then
        // caches every listing; the root's and the vaults' listings change,
        // and their mtimes follow them (Vfs::live_mtime), which the kernel
        // checks before it uses a cached listing only with
        // FUSE_AUTO_INVAL_DATA. Both or neither.
        let both = InitFlags::FUSE_NO_OPENDIR_SUPPORT | InitFlags::FUSE_AUTO_INVAL_DATA;
        self.no_opendir = config.add_capabilities(both).is_ok();
        if !self.no_opendir {
            log::info!("kernel lacks FUSE_NO_OPENDIR_SUPPORT or FUSE_AUTO_INVAL_DATA");
        }
        // Files without OPEN and RELEASE: two requests fewer per file a
        // `cp -a` copies (its first READ, one request, replaces them; the
        // kernel keeps the page cache across opens, FOPEN_KEEP_CACHE being
        // its default then). The kernel then opens a file for writing
        // without asking, and only its WRITE is refused: a shared writable
        // mapping would change the cached pages other readers see until
        // they are evicted. Only the mounting user reaches a mount without
        // allow_other, and would change only what it reads itself: so only
        // there (docs/SECURITY.md).
        if !self.allow_other {
            self.no_open = config
                .add_capabilities(InitFlags::FUSE_NO_OPEN_SUPPORT)
                .is_ok();
            if !self.no_open {
                log::info!("kernel lacks FUSE_NO_OPEN_SUPPORT");
            }
        }
        let _ = config.set_max_readahead(MAX_READ);
        let _ = config.set_max_write(MAX_READ);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let parent = u64::from(parent);
        let name = name.as_bytes().to_vec();
        self.when_ready(parent, move |vfs, r| match r {
            Ok(()) => reply_entry(vfs.lookup(parent, &name), reply),
            Err(e) => reply.error(errno(e)),
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.vfs.forget(u64::from(ino), nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.vfs.getattr(u64::from(ino)) {
            Ok(a) => reply.attr(&ttl(&a), &FileAttr::from(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(errno(self.vfs.modify(u64::from(ino))));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.vfs.readlink(u64::from(ino)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(errno(self.vfs.modify(u64::from(parent))));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.vfs.mkdir(u64::from(parent), name.as_bytes()) {
            Ok(a) => reply.entry(&Duration::ZERO, &FileAttr::from(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(self.vfs.modify(u64::from(parent))));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(self.vfs.rmdir(u64::from(parent))));
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(errno(self.vfs.modify(u64::from(parent))));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(errno(self.vfs.modify(u64::from(parent))));
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(errno(self.vfs.modify(u64::from(newparent))));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.no_open {
            return reply.error(Errno::ENOSYS);
        }
        match self.vfs.open(u64::from(ino), flags.0) {
            // Snapshot contents never change: keep the page cache across opens.
            Ok(fh) => {
                let ino = u64::from(ino);
                // A small file goes into the page cache before the open is
                // answered: its reads then cost no request.
                if let Some(n) = self.notifier.get() {
                    if let Some(data) = self.vfs.prefetch(ino) {
                        store(&self.vfs, n, ino, &data);
                    }
                }
                // No FLUSH at close either (there is nothing to flush;
                // [`CbrFs::flush`] makes the kernel stop asking anyway).
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
                );
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fh = match self.handle(ino, fh) {
            Ok(fh) => fh,
            Err(e) => return reply.error(errno(e)),
        };
        // Answered from the cached chunk, or from a pooled buffer the mount
        // gives back when idle (vfs/file.rs).
        self.vfs.read_with(fh, offset, size, |r| match r {
            Ok(b) => reply.data(b),
            Err(e) => reply.error(errno(e)),
        });
        // Answered: the small files after this one go into the page cache
        // meanwhile, so that a copy reads them without a request
        // (vfs/implicit.rs).
        if self.no_open && offset == 0 {
            if let Some(n) = self.notifier.get() {
                self.vfs
                    .prefetch_after_each(u64::from(ino), |i, data| store(&self.vfs, n, i, data));
            }
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.vfs.release(fh.0);
        reply.ok();
    }

    // close() sends FLUSH for every file opened through the mount, a round
    // trip the closing process waits for (one per file of a `cp -a`, issue
    // 17). Nothing here is ever written (write is EROFS), so there is
    // nothing to flush: ENOSYS, on which the kernel stops sending FLUSH for
    // the whole mount and close() succeeds (fs/fuse/file.c: fc->no_flush);
    // FOPEN_NOFLUSH on open says the same to kernels from 5.19. Answered
    // here, not by fuser's default, which logs "[Not Implemented] flush".
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    // fsync of a file read from a backup: its data is committed in the
    // store already, so syncing succeeds (as on any read-only file).
    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    // Same for a directory (`sync -f DIR`, editors that fsync the parent).
    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    // File ioctls (`lsattr`'s FS_IOC_GETFLAGS, `cp --reflink`'s FICLONE)
    // are not supported: ENOTTY, the usual answer of a file system that has
    // none, without fuser's "[Not Implemented]" log line for each.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    // `cp` tries copy_file_range first: ENOSYS makes the kernel fall back to
    // reads (and stop asking); answered quietly.
    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: fuser::ReplyWrite,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir {
            return reply.error(Errno::ENOSYS);
        }
        match self.vfs.getattr(u64::from(ino)) {
            Ok(a) if a.immutable => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let ino = u64::from(ino);
        self.when_ready(ino, move |vfs, r| match r {
            Ok(()) => fill_dir(vfs, ino, offset, reply),
            Err(e) => reply.error(errno(e)),
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let ino = u64::from(ino);
        self.when_ready(ino, move |vfs, r| match r {
            Ok(()) => fill_dir_plus(vfs, ino, offset, reply),
            Err(e) => reply.error(errno(e)),
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (blocks, free, files) = self.vfs.statfs();
        reply.statfs(blocks, free, free, files, 0, 4096, 255, 4096);
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(errno(self.vfs.modify(u64::from(ino))));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.vfs.xattrs(u64::from(ino)) {
            Ok(xs) => match xs.iter().find(|(n, _)| n.as_slice() == name.as_bytes()) {
                Some((_, v)) if size == 0 => reply.size(v.len() as u32),
                Some((_, v)) if v.len() <= size as usize => reply.data(v),
                Some(_) => reply.error(Errno::ERANGE),
                None => reply.error(Errno::NO_XATTR),
            },
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.vfs.xattrs(u64::from(ino)) {
            Ok(xs) => {
                let mut buf = Vec::new();
                for (n, _) in &xs {
                    buf.extend_from_slice(n);
                    buf.push(0);
                }
                if size == 0 {
                    reply.size(buf.len() as u32);
                } else if buf.len() <= size as usize {
                    reply.data(&buf);
                } else {
                    reply.error(Errno::ERANGE);
                }
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(self.vfs.modify(u64::from(ino))));
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(errno(self.vfs.modify(u64::from(parent))));
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(errno(self.vfs.modify(u64::from(ino))));
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let r = self
            .handle(ino, fh)
            .and_then(|fh| self.vfs.lseek(fh, offset, whence));
        match r {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(errno(e)),
        }
    }
}
