//! Thin, safe wrappers over the Linux calls std does not offer: extended
//! attributes, SEEK_DATA/SEEK_HOLE, fnmatch, and *at() calls for restore.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

/// All extended attributes of `path` (not following a final symlink),
/// sorted by name. Unsupported file systems give an empty list.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: p is a valid C string; the buffer is writable for its length.
        let rc = unsafe {
            libc::llistxattr(
                p.as_ptr(),
                names.as_mut_ptr() as *mut libc::c_char,
                names.len(),
            )
        };
        match check_size(rc) {
            Ok(n) => break n,
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        match get_xattr(&p, name)? {
            Some(v) => out.push((name.to_vec(), v)),
            None => continue, // removed between list and get
        }
    }
    out.sort();
    Ok(out)
}

fn get_xattr(p: &CStr, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let n = cstr(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid C strings; the buffer is writable for its length.
        let rc = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                n.as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        match check_size(rc) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(Some(buf));
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                let need = buf.len() * 4;
                buf.resize(need, 0)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Set an extended attribute on `path` without following a final symlink.
pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let p = cstr(path.as_os_str().as_bytes())?;
    let n = cstr(name)?;
    // SAFETY: valid C strings and a readable value buffer.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            0,
        )
    })
    .map(|_| ())
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

/// Open a directory for *at() calls, refusing to follow a symlink.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let p = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: valid C string; the returned descriptor is owned below.
    let fd = check(unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open `name` in `dir` as a directory, not following symlinks.
pub fn open_dir_at(dir: &OwnedFd, name: &[u8]) -> io::Result<OwnedFd> {
    let n = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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

/// chown without following a final symlink.
pub fn chown_at(dir: &OwnedFd, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid C string and descriptor.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            n.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
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

/// Set atime and mtime of `name` in `dir` without following a symlink.
pub fn utimens_at(dir: &OwnedFd, name: &[u8], atime_ns: i64, mtime_ns: i64) -> io::Result<()> {
    let n = cstr(name)?;
    let ts = [timespec(atime_ns), timespec(mtime_ns)];
    // SAFETY: valid C string, descriptor and a two-element array.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            n.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(|_| ())
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

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() }
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

/// Open `name` in `dir` as an O_PATH descriptor, not following a symlink
/// (a symlink gives a descriptor of the link itself).
pub fn open_path_at(dir: &OwnedFd, name: &[u8]) -> io::Result<OwnedFd> {
    let n = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open directory `path` as an O_PATH descriptor (the start of a walk:
/// "/" or "."), refusing a final symlink.
pub fn open_path_dir(path: &Path) -> io::Result<OwnedFd> {
    let p = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: valid C string; the returned descriptor is owned below.
    let fd = check(unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open `name` in `dir` as an O_PATH directory descriptor, not following
/// a symlink: usable as the directory of *at() calls, and needs only
/// search permission, as a path walk does.
pub fn open_path_dir_at(dir: &OwnedFd, name: &[u8]) -> io::Result<OwnedFd> {
    let n = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
    let n = cstr(name)?;
    // SAFETY: valid descriptor, C string and a readable value buffer.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            0,
        )
    })
    .map(|_| ())
}

/// Set an extended attribute on the inode an O_PATH descriptor holds
/// (fsetxattr refuses O_PATH descriptors; the /proc link does not).
pub fn fset_xattr_path(fd: &impl AsRawFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    let p = cstr(proc_fd_path(fd).as_os_str().as_bytes())?;
    let n = cstr(name)?;
    // SAFETY: valid C strings and a readable value buffer.
    check(unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            0,
        )
    })
    .map(|_| ())
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
}
