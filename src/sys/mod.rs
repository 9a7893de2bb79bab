//! Thin, safe wrappers over the Linux calls std does not offer, one file
//! per responsibility: opening by descriptor (`open`), directory contents
//! (`dir`), extended attributes (`xattrs`), an inode's metadata (`meta`),
//! sizes, extents and uncached reads (`device`) and the process
//! (`process`). Every call that names a file takes a directory descriptor
//! and never follows a symlink (docs/SECURITY.md); callers use them as
//! `sys::name`.

mod device;
mod dir;
mod meta;
mod open;
mod process;
mod xattrs;

pub use device::*;
pub use dir::*;
pub use meta::*;
pub use open::*;
pub use process::*;
pub use xattrs::*;

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

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

fn own(fd: libc::c_int) -> OwnedFd {
    // SAFETY: callers pass a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
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
}
