//! Directory contents through a descriptor of the directory: listing,
//! lstat of an entry, and creating, linking, renaming and removing entries
//! by name in it (restore's side of the descriptor rule).

use super::{check, check_size, cstr, own};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Create a new directory `name` in `dir` (fails if anything exists there).
pub fn mkdir_at(dir: &OwnedFd, name: &[u8], mode: u32) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode as libc::mode_t) }).map(|_| ())
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
