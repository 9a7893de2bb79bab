//! Thin, safe wrappers over the Linux calls std does not offer: extended
//! attributes, SEEK_DATA/SEEK_HOLE, fnmatch, and *at() calls for restore.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use xattr::FileExt as _;

/// A path or name as a C string; a NUL inside is an InvalidInput error.
pub fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn check_size(rc: libc::ssize_t) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Set an extended attribute on `path` without following a final symlink
/// (`lsetxattr`).
pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    xattr::set(path, OsStr::from_bytes(name), value)
}

/// The data extents of an open file, `[(start, end)]`, found with
/// SEEK_DATA/SEEK_HOLE; a file system without them reports one extent.
pub fn data_extents(fd: RawFd, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        // SAFETY: lseek on a valid descriptor.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENXIO) => break, // only a hole remains
                Some(libc::EINVAL) if out.is_empty() => return Ok(vec![(0, size)]),
                _ => return Err(e),
            }
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = (hole as u64).min(size);
        if (data as u64) < end {
            out.push((data as u64, end));
        }
        if hole <= data {
            break;
        }
        pos = hole;
    }
    Ok(out)
}

/// fnmatch(3) with FNM_PATHNAME when the pattern has a `/`.
pub fn fnmatch(pattern: &str, text: &[u8]) -> bool {
    let (Ok(p), Ok(t)) = (CString::new(pattern), cstr(text)) else {
        return false;
    };
    let flags = if pattern.contains('/') {
        libc::FNM_PATHNAME
    } else {
        0
    };
    // SAFETY: valid C strings.
    unsafe { libc::fnmatch(p.as_ptr(), t.as_ptr(), flags) == 0 }
}

/// `open(path, flags | O_CLOEXEC)`, owned.
fn open_flags(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let p = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: valid C string; the descriptor is fresh and owned below.
    let fd = check(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) })?;
    Ok(own(fd))
}

/// `openat(dir, name, flags | O_CLOEXEC)`, owned.
fn openat_flags(dir: &impl AsRawFd, name: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let n = cstr(name)?;
    // SAFETY: valid descriptor and C string; the descriptor is fresh and
    // owned below.
    let fd = check(unsafe { libc::openat(dir.as_raw_fd(), n.as_ptr(), flags | libc::O_CLOEXEC) })?;
    Ok(own(fd))
}

/// Open a directory for *at() calls, refusing to follow a symlink.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    open_flags(path, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)
}

/// Open `name` in `dir` as a directory, not following symlinks.
pub fn open_dir_at(dir: &OwnedFd, name: &[u8]) -> io::Result<OwnedFd> {
    openat_flags(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )
}

/// Create a new directory `name` in `dir` (fails if anything exists there).
pub fn mkdir_at(dir: &OwnedFd, name: &[u8], mode: u32) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

/// Create a new regular file `name` in `dir` for writing; never follows or
/// reuses anything already there (O_CREAT|O_EXCL|O_NOFOLLOW).
pub fn create_file_at(dir: &OwnedFd, name: &[u8]) -> io::Result<std::fs::File> {
    let n = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Create symlink `name` → `target` in `dir`.
pub fn symlink_at(target: &[u8], dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let t = cstr(target)?;
    let n = cstr(name)?;
    // SAFETY: valid C strings and descriptor.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) }).map(|_| ())
}

/// Create a device, fifo or socket node.
pub fn mknod_at(dir: &OwnedFd, name: &[u8], mode: u32, rdev: u64) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid C string and descriptor.
    check(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            n.as_ptr(),
            mode as libc::mode_t,
            rdev as libc::dev_t,
        )
    })
    .map(|_| ())
}

/// Remove the file `name` in `dir` (not a directory).
pub fn unlink_at(dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), 0) }).map(|_| ())
}

/// Hard-link `old` (relative to `old_dir`) as `name` in `dir`, not following
/// a final symlink.
pub fn link_at(old_dir: &OwnedFd, old: &[u8], dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let o = cstr(old)?;
    let n = cstr(name)?;
    // SAFETY: valid C strings and descriptors.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            dir.as_raw_fd(),
            n.as_ptr(),
            0,
        )
    })
    .map(|_| ())
}

fn timespec(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as libc::c_long,
    }
}

/// Open a file for reading without updating its atime where allowed.
/// Never blocks: a file replaced by a fifo after it was listed would
/// block a plain open until a writer came (the caller checks that it
/// opened a regular file). O_NONBLOCK does not change reads of regular
/// files.
pub fn open_noatime(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags | libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path),
        r => r,
    }
}

/// Size of a regular file or a block device (BLKGETSIZE64).
pub fn device_size(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::FileTypeExt;
    let md = std::fs::metadata(path)?;
    if md.file_type().is_block_device() {
        let f = std::fs::File::open(path)?;
        let mut size: u64 = 0;
        // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
        const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
        // SAFETY: the ioctl writes one u64 into `size`.
        check(unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) })?;
        Ok(size)
    } else if md.is_file() {
        Ok(md.len())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a block device or a regular file",
        ))
    }
}

fn own(fd: libc::c_int) -> OwnedFd {
    // SAFETY: callers pass a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Flags of the backup's open of a file it reads: never follow a symlink,
/// never block (a fifo swapped in waits for no writer), never become a
/// controlling terminal, and leave the atime alone where allowed.
const READ_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

/// Open `name` in the directory `dir` for reading, as a backup reads a
/// regular file: `O_NOFOLLOW|O_NONBLOCK|O_NOCTTY|O_NOATIME` (O_NOATIME
/// is refused to a non-owner who is not root: then without it). What was
/// opened is whatever is there now: the caller's `fstat` says what it is.
pub fn open_read_at(dir: RawFd, name: &[u8]) -> io::Result<std::fs::File> {
    let n = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    let rc = unsafe { libc::openat(dir, n.as_ptr(), READ_FLAGS | libc::O_NOATIME) };
    let fd = match check(rc) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            // SAFETY: as above.
            check(unsafe { libc::openat(dir, n.as_ptr(), READ_FLAGS) })?
        }
        r => r?,
    };
    Ok(std::fs::File::from(own(fd)))
}

/// Open the very inode an `O_PATH` descriptor pins, for reading (`dir`:
/// as a directory). Through `/proc/self/fd/N` the kernel goes to that
/// inode, not to a name that may point elsewhere by now. Only for regular
/// files and directories, which `fstat` of `fd` said it is.
pub fn reopen(fd: &OwnedFd, dir: bool) -> io::Result<OwnedFd> {
    let p = cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
    let flags = if dir {
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC
    } else {
        // Not O_NOFOLLOW: the magic link itself must be followed.
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC
    };
    // SAFETY: valid C string.
    let rc = unsafe { libc::open(p.as_ptr(), flags | libc::O_NOATIME) };
    let fd = match check(rc) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            // SAFETY: as above.
            check(unsafe { libc::open(p.as_ptr(), flags) })?
        }
        r => r?,
    };
    Ok(own(fd))
}

/// Open an absolute path one component at a time from `/`, following no
/// symlink anywhere on the way: a resource path is stored resolved
/// (realpath when associated), so a symlink in it now is a change someone
/// made, and it is an error naming the component. The last component is
/// opened with `flags` (plus `O_NOFOLLOW|O_CLOEXEC`).
pub fn open_no_symlinks(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    use std::path::Component;
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => parts.push(n),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: not an absolute, resolved path", path.display()),
                ))
            }
        }
    }
    if !path.is_absolute() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not an absolute path", path.display()),
        ));
    }
    let root = cstr(b"/")?;
    // SAFETY: valid C string.
    let mut cur = own(check(unsafe {
        libc::open(
            root.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?);
    let mut shown = std::path::PathBuf::from("/");
    for (i, part) in parts.iter().enumerate() {
        shown.push(part);
        let last = i + 1 == parts.len();
        let n = cstr(part.as_bytes())?;
        let f = if last {
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC
        } else {
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC
        };
        // SAFETY: valid descriptor and C string.
        let rc = unsafe { libc::openat(cur.as_raw_fd(), n.as_ptr(), f) };
        match check(rc) {
            Ok(fd) => cur = own(fd),
            Err(e) => {
                // SAFETY: an all-zero stat is valid; fstatat writes one.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: valid descriptor, C string and struct.
                let is_link = unsafe {
                    libc::fstatat(
                        cur.as_raw_fd(),
                        n.as_ptr(),
                        &mut st,
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                } == 0
                    && st.st_mode & libc::S_IFMT == libc::S_IFLNK;
                if is_link {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{} is a symbolic link: not followed in a resource path",
                            shown.display()
                        ),
                    ));
                }
                return Err(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", shown.display()),
                ));
            }
        }
    }
    Ok(cur)
}

/// One entry of a directory listing: its name and `d_type` (a hint only:
/// the entry may be something else by the time it is opened).
pub type DirEntry = (Vec<u8>, u8);

/// The entries of an open directory (not `.` and `..`), read from the
/// descriptor, never by path.
pub fn list_dir(dir: &OwnedFd) -> io::Result<Vec<DirEntry>> {
    // fdopendir takes its descriptor over: give it a duplicate.
    // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor.
    let dup = check(unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: dup is a fresh directory descriptor; on success DIR owns it.
    let d = unsafe { libc::fdopendir(dup) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        drop(own(dup));
        return Err(e);
    }
    // The duplicate shares the file offset: start from the beginning.
    // SAFETY: d is a valid DIR stream.
    unsafe { libc::rewinddir(d) };
    let mut out = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; readdir sets it only on error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: d is a valid DIR stream, used by this thread only.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error().unwrap_or(0) == 0 {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: readdir returned a valid entry with a NUL-terminated name,
        // valid until the next readdir on d.
        let (name, kind) = unsafe {
            (
                CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes().to_vec(),
                (*ent).d_type,
            )
        };
        if name != b"." && name != b".." {
            out.push((name, kind));
        }
    };
    // SAFETY: d is valid and closed once (this also closes dup).
    unsafe { libc::closedir(d) };
    result.map(|()| out)
}

/// The target of the symlink an `O_PATH|O_NOFOLLOW` descriptor pins.
pub fn readlink_fd(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid descriptor, empty C string, writable buffer.
        let rc = unsafe {
            libc::readlinkat(
                fd,
                c"".as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_char,
                buf.len(),
            )
        };
        let n = check_size(rc)?;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        if buf.len() >= 1 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "symlink target longer than 1 MiB",
            ));
        }
        let need = buf.len() * 4;
        buf.resize(need, 0);
    }
}

/// All extended attributes (ACLs included) of the inode open as `fd`,
/// sorted by name; unsupported file systems give an empty list.
/// `flistxattr`/`fgetxattr` refuse an `O_PATH` descriptor (EBADF); for
/// those (symlinks, devices, fifos, sockets) the attributes are read
/// through `/proc/self/fd/N` with the *following* `listxattr`/`getxattr`:
/// the magic link leads to the pinned inode itself, the symlink and not
/// its target (checked on Linux 6.18: a `trusted.*` attribute set on a
/// symlink and on a fifo reads back this way, and `llistxattr` of the
/// magic link lists nothing, being the /proc link's own).
pub fn fd_xattrs(fd: RawFd) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let f = XattrFd(fd);
    match collect_xattrs(f.list_xattr(), |n| f.get_xattr(n)) {
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => {
            let p = proc_fd_path(&f);
            collect_xattrs(xattr::list_deref(&p), |n| xattr::get_deref(&p, n))
        }
        r => r,
    }
}

/// A descriptor the caller owns, lent to the `xattr` crate's descriptor
/// calls (`fgetxattr`, `flistxattr`, `fsetxattr`), which it makes through
/// rustix: no hand-written buffer loop or raw pointer here.
struct XattrFd(RawFd);

impl AsRawFd for XattrFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl xattr::FileExt for XattrFd {}

/// Every attribute of a listing, each read with `get` (see [`fd_xattrs`]);
/// one removed between the list and the get is left out.
fn collect_xattrs(
    names: io::Result<xattr::XAttrs>,
    get: impl Fn(&OsStr) -> io::Result<Option<Vec<u8>>>,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match names {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names.filter(|n| !n.is_empty()) {
        if let Some(v) = get(&name)? {
            out.push((name.into_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}

/// Size of the block device open as `fd` (BLKGETSIZE64).
pub fn block_device_size(fd: RawFd) -> io::Result<u64> {
    let mut size: u64 = 0;
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    // SAFETY: the ioctl writes one u64 into `size`.
    check(unsafe { libc::ioctl(fd, BLKGETSIZE64, &mut size as *mut u64) })?;
    Ok(size)
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() }
}

/// The effective group id.
pub fn egid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::getegid() }
}

/// True if process `pid` exists (it may belong to another user: EPERM
/// says it exists). A pid read from a damaged file may be 0 or above
/// `i32::MAX`, which `kill` takes for the caller's process group, another
/// group or every process (and would answer "alive" for ever): neither is
/// a process that could have written the file.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

// Descriptor-based calls for restore (issue #12, findings 3 and 5): every
// change restore makes to an entry goes through a descriptor of the inode
// it created, so a name swapped for a symlink by another user in between is
// never followed. An O_PATH descriptor (symlinks, devices, fifos, sockets:
// nothing restore may open for I/O) is used through its /proc/self/fd/N
// link, which the kernel resolves to the very inode the descriptor holds,
// never through another symlink.

/// `/proc/self/fd/N` of a descriptor: resolves to the inode `fd` holds.
pub fn proc_fd_path(fd: &impl AsRawFd) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// An `O_PATH|O_NOFOLLOW` descriptor of `name` in `dir`: it pins the inode
/// (a symlink itself, a device, a fifo) without opening it, so no device
/// is ever opened for reading (a tape would rewind) and no fifo waited on.
pub fn open_path_at(dir: &impl AsRawFd, name: &[u8]) -> io::Result<OwnedFd> {
    openat_flags(dir, name, libc::O_PATH | libc::O_NOFOLLOW)
}

/// Open directory `path` as an O_PATH descriptor (the start of a walk:
/// "/" or "."), refusing a final symlink.
pub fn open_path_dir(path: &Path) -> io::Result<OwnedFd> {
    open_flags(path, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
}

/// Open `name` in `dir` as an O_PATH directory descriptor, not following
/// a symlink: usable as the directory of *at() calls, and needs only
/// search permission, as a path walk does.
pub fn open_path_dir_at(dir: &OwnedFd, name: &[u8]) -> io::Result<OwnedFd> {
    openat_flags(
        dir,
        name,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )
}

/// fsync the directory an (O_PATH or open) descriptor holds.
pub fn fsync_dir_fd(fd: &impl AsRawFd) -> io::Result<()> {
    let p = cstr(proc_fd_path(fd).as_os_str().as_bytes())?;
    // SAFETY: valid C string; the descriptor is owned below.
    let raw = check(unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh descriptor.
    let f = unsafe { std::fs::File::from_raw_fd(raw) };
    f.sync_all()
}

/// fstat of a descriptor (O_PATH ones included).
pub fn fstat(fd: &impl AsRawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data; fstat fills it on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and a writable stat.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// lstat of `name` in `dir` (never follows a final symlink).
pub fn fstatat_nofollow(dir: &OwnedFd, name: &[u8]) -> io::Result<libc::stat> {
    let n = cstr(name)?;
    // SAFETY: as in fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, C string and a writable stat.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            n.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// chown of the inode a descriptor holds (an O_PATH descriptor of a
/// symlink changes the link itself).
pub fn fchown(fd: &impl AsRawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid descriptor and an empty C string with AT_EMPTY_PATH.
    check(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(|_| ())
}

/// chmod of the inode an open (not O_PATH) descriptor holds.
pub fn fchmod(fd: &impl AsRawFd, mode: u32) -> io::Result<()> {
    // SAFETY: valid descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(|_| ())
}

/// chmod of the inode an O_PATH descriptor holds (never a symlink: they
/// have no mode of their own, and callers skip them).
pub fn fchmod_path(fd: &impl AsRawFd, mode: u32) -> io::Result<()> {
    let p = cstr(proc_fd_path(fd).as_os_str().as_bytes())?;
    // SAFETY: valid C string.
    check(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

/// Set an extended attribute on the inode an open descriptor holds.
pub fn fset_xattr(fd: &impl AsRawFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    XattrFd(fd.as_raw_fd()).set_xattr(OsStr::from_bytes(name), value)
}

/// Set an extended attribute on the inode an O_PATH descriptor holds
/// (fsetxattr refuses O_PATH descriptors; the /proc link, followed with
/// `setxattr`, leads to that inode and no further).
pub fn fset_xattr_path(fd: &impl AsRawFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    xattr::set_deref(proc_fd_path(fd), OsStr::from_bytes(name), value)
}

/// Set atime and mtime of the inode an open descriptor holds.
pub fn futimens(fd: &impl AsRawFd, atime_ns: i64, mtime_ns: i64) -> io::Result<()> {
    let ts = [timespec(atime_ns), timespec(mtime_ns)];
    // SAFETY: valid descriptor and a two-element array.
    check(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map(|_| ())
}

/// Set atime and mtime of the inode an O_PATH descriptor holds (a
/// symlink's own times for a descriptor of a symlink).
pub fn futimens_path(fd: &impl AsRawFd, atime_ns: i64, mtime_ns: i64) -> io::Result<()> {
    let p = cstr(proc_fd_path(fd).as_os_str().as_bytes())?;
    let ts = [timespec(atime_ns), timespec(mtime_ns)];
    // SAFETY: valid C string and a two-element array.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), ts.as_ptr(), 0) }).map(|_| ())
}

/// Open for writing the inode an O_PATH descriptor holds, after the
/// caller checked with [`fstat`] what it is: no name is looked up again.
pub fn reopen_for_write(fd: &impl AsRawFd) -> io::Result<std::fs::File> {
    let p = cstr(proc_fd_path(fd).as_os_str().as_bytes())?;
    // SAFETY: valid C string; the returned descriptor is owned below.
    let raw = check(unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_WRONLY | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { std::fs::File::from_raw_fd(raw) })
}

/// Size of the block device or regular file open as `f`.
pub fn device_size_of(f: &std::fs::File) -> io::Result<u64> {
    let st = fstat(f)?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFBLK => {
            let mut size: u64 = 0;
            const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
            // SAFETY: the ioctl writes one u64 into `size`.
            check(unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) })?;
            Ok(size)
        }
        libc::S_IFREG => Ok(st.st_size as u64),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a block device or a regular file",
        )),
    }
}

/// Rename `old` in `old_dir` to `new` in `new_dir` (replacing `new`).
pub fn rename_at(old_dir: &OwnedFd, old: &[u8], new_dir: &OwnedFd, new: &[u8]) -> io::Result<()> {
    let o = cstr(old)?;
    let n = cstr(new)?;
    // SAFETY: valid C strings and descriptors.
    check(unsafe {
        libc::renameat(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
        )
    })
    .map(|_| ())
}

/// Remove the empty directory `name` in `dir`.
pub fn rmdir_at(dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), libc::AT_REMOVEDIR) }).map(|_| ())
}

/// The target of symlink `name` in `dir`.
pub fn readlink_at(dir: &OwnedFd, name: &[u8]) -> io::Result<Vec<u8>> {
    let n = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: valid descriptor, C string and a writable buffer.
    let len = check_size(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            n.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
        )
    })?;
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(fnmatch("*.o", b"a.o"));
        assert!(!fnmatch("*.o", b"a.c"));
        assert!(fnmatch("build/*", b"build/x"));
        assert!(!fnmatch("build/*", b"build/x/y"));
    }

    #[test]
    fn sparse_extents() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let mut f = std::fs::File::create(&p).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[1; 4096]).unwrap();
        f.set_len(4 << 20).unwrap();
        let ext = data_extents(f.as_raw_fd(), 4 << 20).unwrap();
        // Either the file system reports the hole or it reports all data.
        assert!(
            ext == vec![(1 << 20, (1 << 20) + 4096)] || ext == vec![(0, 4 << 20)],
            "{ext:?}"
        );
    }

    /// A file listed by a backup may be a FIFO by the time it is opened: the
    /// open must come back at once (a plain open waits for a writer), and
    /// what it opened must show as not a regular file.
    #[test]
    fn open_of_a_fifo_does_not_wait_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let f = crate::testkit::within(10, move || open_noatime(&p)).unwrap();
        let md = f.metadata().unwrap();
        assert!(!md.is_file() && std::os::unix::fs::FileTypeExt::is_fifo(&md.file_type()));
        // And a symlink is not followed.
        let l = dir.path().join("l");
        std::os::unix::fs::symlink("f", &l).unwrap();
        assert_eq!(
            open_noatime(&l).unwrap_err().raw_os_error(),
            Some(libc::ELOOP)
        );
    }

    fn ino(fd: RawFd) -> (u64, u64) {
        // SAFETY: the caller's descriptor outlives this call.
        let st = fstat(&unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }).unwrap();
        (st.st_dev, st.st_ino)
    }

    /// A directory swapped for a symlink after it was opened: the listing
    /// and every open come from the descriptor, so the walk stays in the
    /// directory it opened, and a symlink swapped in for a file is neither
    /// read nor followed.
    #[test]
    fn a_symlink_swapped_in_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        let other = t.path().join("other");
        std::fs::create_dir(&d).unwrap();
        std::fs::create_dir(&other).unwrap();
        std::fs::write(d.join("f"), b"mine").unwrap();
        std::fs::write(other.join("f"), b"secret").unwrap();
        let dfd = open_no_symlinks(&d, libc::O_RDONLY | libc::O_DIRECTORY).unwrap();
        // Swap: d becomes a symlink to other.
        std::fs::rename(&d, t.path().join("d.old")).unwrap();
        std::os::unix::fs::symlink(&other, &d).unwrap();
        let names = list_dir(&dfd).unwrap();
        assert_eq!(names, vec![(b"f".to_vec(), libc::DT_REG)]);
        let mut f = open_read_at(dfd.as_raw_fd(), b"f").unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s).unwrap();
        assert_eq!(s, "mine");
        // A path through the symlink is refused, naming the component.
        let e = open_no_symlinks(&d.join("f"), libc::O_RDONLY).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert!(e.to_string().contains(&*d.to_string_lossy()), "{e}");
        let e = open_no_symlinks(&d, libc::O_RDONLY | libc::O_DIRECTORY).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        // A file swapped for a symlink: not opened for reading, and its
        // O_PATH descriptor is the link itself.
        let old = t.path().join("d.old");
        std::fs::remove_file(old.join("f")).unwrap();
        std::os::unix::fs::symlink(other.join("f"), old.join("f")).unwrap();
        assert_eq!(
            open_read_at(dfd.as_raw_fd(), b"f")
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ELOOP)
        );
        let p = open_path_at(&dfd, b"f").unwrap();
        let st = fstat(&p).unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFLNK);
        assert_eq!(
            readlink_fd(p.as_raw_fd()).unwrap(),
            other.join("f").as_os_str().as_bytes()
        );
    }

    /// `reopen` opens the inode an O_PATH descriptor pins, even after its
    /// name was given to another file.
    #[test]
    fn reopen_opens_the_pinned_inode() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), b"first").unwrap();
        let dir = open_dir(t.path()).unwrap();
        let p = open_path_at(&dir, b"a").unwrap();
        std::fs::rename(t.path().join("a"), t.path().join("b")).unwrap();
        std::fs::write(t.path().join("a"), b"second").unwrap();
        let f = reopen(&p, false).unwrap();
        assert_eq!(ino(f.as_raw_fd()), ino(p.as_raw_fd()));
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(f), &mut s).unwrap();
        assert_eq!(s, "first");
        let d = reopen(&dir, true).unwrap();
        assert_eq!(ino(d.as_raw_fd()), ino(dir.as_raw_fd()));
    }

    /// Extended attributes through descriptors: fgetxattr on an open file,
    /// and on an O_PATH descriptor of a symlink and of a fifo (which
    /// flistxattr refuses) through /proc/self/fd/N — the link's and the
    /// fifo's own attributes, not the link target's. `trusted.*` (root
    /// only: the only namespace a symlink takes) is skipped when not root.
    #[test]
    fn xattrs_of_descriptors_and_o_path() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let link = t.path().join("l");
        std::os::unix::fs::symlink("f", &link).unwrap();
        let fifo = t.path().join("p");
        let c = cstr(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        if set_xattr(&file, b"user.k", b"file").is_err() {
            return; // no xattrs on this file system
        }
        let dir = open_dir(t.path()).unwrap();
        let f = open_read_at(dir.as_raw_fd(), b"f").unwrap();
        assert_eq!(
            fd_xattrs(f.as_raw_fd()).unwrap(),
            vec![(b"user.k".to_vec(), b"file".to_vec())]
        );
        if euid() != 0 {
            return;
        }
        set_xattr(&link, b"trusted.k", b"link").unwrap();
        set_xattr(&fifo, b"trusted.k", b"fifo").unwrap();
        for (name, want) in [(&b"l"[..], &b"link"[..]), (b"p", b"fifo")] {
            let p = open_path_at(&dir, name).unwrap();
            assert_eq!(
                fd_xattrs(p.as_raw_fd()).unwrap(),
                vec![(b"trusted.k".to_vec(), want.to_vec())],
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        // The link's attributes are its own: the target's user.k is not
        // among them (above), and the fifo was never opened (no writer).
    }

    /// Setting through descriptors changes the inode held and nothing a
    /// name leads to: fsetxattr on an open file, and on an O_PATH
    /// descriptor of a symlink the link's own attribute (root only:
    /// `trusted.*`), not its target's.
    #[test]
    fn xattrs_set_through_descriptors() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", t.path().join("l")).unwrap();
        let dir = open_dir(t.path()).unwrap();
        let f = open_read_at(dir.as_raw_fd(), b"f").unwrap();
        if fset_xattr(&f, b"user.k", b"v").is_err() {
            return; // no xattrs on this file system
        }
        let file_attrs = || fd_xattrs(f.as_raw_fd()).unwrap();
        assert_eq!(file_attrs(), vec![(b"user.k".to_vec(), b"v".to_vec())]);
        assert!(fset_xattr(&f, b"user.\0k", b"v").is_err());
        if euid() != 0 {
            return;
        }
        let l = open_path_at(&dir, b"l").unwrap();
        fset_xattr_path(&l, b"trusted.k", b"link").unwrap();
        assert_eq!(
            fd_xattrs(l.as_raw_fd()).unwrap(),
            vec![(b"trusted.k".to_vec(), b"link".to_vec())]
        );
        assert_eq!(file_attrs(), vec![(b"user.k".to_vec(), b"v".to_vec())]);
    }

    /// Only a pid that can name one live process is alive.
    #[test]
    fn pids_alive_and_impossible() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
        assert!(!pid_alive(i32::MAX as u32 + 1));
    }
}
