//! Metadata of the inode a descriptor holds: fstat, and restore's owner,
//! mode and times.
//!
//! Descriptor-based calls for restore (issue #12, findings 3 and 5): every
//! change restore makes to an entry goes through a descriptor of the inode
//! it created, so a name swapped for a symlink by another user in between is
//! never followed. An O_PATH descriptor (symlinks, devices, fifos, sockets:
//! nothing restore may open for I/O) is used through its /proc/self/fd/N
//! link, which the kernel resolves to the very inode the descriptor holds,
//! never through another symlink.

use super::{check, cstr, proc_fd_path};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

fn timespec(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as libc::c_long,
    }
}

/// fstat of a descriptor (O_PATH ones included).
pub fn fstat(fd: &impl AsRawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain old data; fstat fills it on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and a writable stat.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
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
