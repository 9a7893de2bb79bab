//! Extended attributes (ACLs included) read and set through descriptors,
//! with the `xattr` crate: the descriptor calls for an open file, and for
//! an O_PATH descriptor the following calls on its `/proc/self/fd/N` link,
//! which leads to the pinned inode itself (a symlink's own attributes).

use super::proc_fd_path;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use xattr::FileExt as _;

/// Set an extended attribute on `path` without following a final symlink
/// (`lsetxattr`).
pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    xattr::set(path, OsStr::from_bytes(name), value)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::*;

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
}
