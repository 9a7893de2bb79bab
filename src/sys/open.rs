//! Opening files and directories by descriptor: `*at()` opens that never
//! follow a symlink, O_PATH descriptors that pin an inode without opening
//! it, reopening a pinned inode through `/proc/self/fd/N`, and the walk of
//! a resource path one component at a time.

use super::{check, cstr, own};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::*;

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
}
