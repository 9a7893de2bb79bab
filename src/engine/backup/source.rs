//! Opening a resource's entries safely: relative to their directory's
//! descriptor, never through a symlink, a device never opened; what is
//! recorded is what `fstat` of the final descriptor says. Also the
//! `CACHEDIR.TAG` test of `--exclude-caches`.

use crate::sys;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// What the walker opened for an entry: the one descriptor its metadata,
/// xattrs and (for a regular file) bytes all come from.
pub(super) enum Handle {
    Dir(OwnedFd),
    File(std::fs::File),
    /// Symlinks, devices, fifos and sockets: an `O_PATH` descriptor (or,
    /// where the listing said a regular file, the read-only one of what
    /// was there instead; it is never read).
    Other(OwnedFd),
}

impl Handle {
    pub(super) fn raw(&self) -> RawFd {
        match self {
            Handle::Dir(fd) | Handle::Other(fd) => fd.as_raw_fd(),
            Handle::File(f) => f.as_raw_fd(),
        }
    }
}

/// An entry opened, and what `fstat` of its descriptor says.
pub(super) struct Opened {
    pub(super) handle: Handle,
    pub(super) st: libc::stat,
}

impl Opened {
    /// Sort a descriptor by what fstat says it is.
    pub(super) fn of(fd: OwnedFd) -> std::io::Result<Opened> {
        let st = sys::fstat(&fd)?;
        let handle = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Handle::Dir(fd),
            libc::S_IFREG => Handle::File(std::fs::File::from(fd)),
            _ => Handle::Other(fd),
        };
        Ok(Opened { handle, st })
    }
}

/// Open entry `name` of the directory `dir`, never following a symlink,
/// and never by a path from `/`. The listing's `d_type` (`hint`) only
/// chooses the first try: a directory is opened `O_DIRECTORY`, a regular
/// file for reading (`sys::open_read_at`: no blocking on a fifo swapped
/// in, no controlling terminal); anything else, or an entry that is no
/// longer what the listing said, gets an `O_PATH` descriptor first — a
/// device is never opened (a tape would rewind) — and if fstat of that
/// says a directory or regular file, the same inode is opened through it
/// (`sys::reopen`). What is recorded is what the final descriptor is.
pub(super) fn open_entry(dir: &OwnedFd, name: &[u8], hint: u8) -> std::io::Result<Opened> {
    let not_that =
        |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR));
    match hint {
        libc::DT_DIR => match sys::open_dir_at(dir, name) {
            Ok(fd) => return Opened::of(fd),
            Err(e) if not_that(&e) => {}
            Err(e) => return Err(e),
        },
        libc::DT_REG => match sys::open_read_at(dir.as_raw_fd(), name) {
            Ok(f) => return Opened::of(OwnedFd::from(f)),
            Err(e) if not_that(&e) => {}
            Err(e) => return Err(e),
        },
        _ => {}
    }
    let p = sys::open_path_at(dir, name)?;
    let st = sys::fstat(&p)?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Opened::of(sys::reopen(&p, true)?),
        libc::S_IFREG => Opened::of(sys::reopen(&p, false)?),
        _ => Ok(Opened {
            handle: Handle::Other(p),
            st,
        }),
    }
}

/// The name of a cache directory's tag (<https://bford.info/cachedir/>).
pub(super) const CACHEDIR_TAG: &[u8] = b"CACHEDIR.TAG";
/// What a valid tag starts with.
pub(super) const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// True if entry `name` of `dir` is a regular file starting with the cache
/// directory signature (a symlink or a file without it is no tag).
pub(super) fn is_cache_tag(dir: &OwnedFd, name: &[u8], hint: u8) -> bool {
    let Ok(Opened {
        handle: Handle::File(f),
        ..
    }) = open_entry(dir, name, hint)
    else {
        return false;
    };
    let mut head = Vec::with_capacity(CACHEDIR_SIGNATURE.len());
    f.take(CACHEDIR_SIGNATURE.len() as u64)
        .read_to_end(&mut head)
        .is_ok()
        && head == CACHEDIR_SIGNATURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn kind_of(o: &Opened) -> (&'static str, u32) {
        let h = match o.handle {
            Handle::Dir(_) => "dir",
            Handle::File(_) => "file",
            Handle::Other(_) => "other",
        };
        (h, o.st.st_mode & libc::S_IFMT)
    }

    /// Whatever the listing's d_type said, what is recorded is what the
    /// open found: a symlink is never followed (nor opened as the
    /// directory it points to), a fifo where a file was listed is not
    /// waited on, and an entry opened through O_PATH and found to be a
    /// file or directory is opened as one — the same inode.
    #[test]
    fn open_entry_records_what_it_opened() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        std::fs::create_dir(p.join("dir")).unwrap();
        std::fs::write(p.join("file"), b"bytes").unwrap();
        std::os::unix::fs::symlink("dir", p.join("link")).unwrap();
        let c = sys::cstr(p.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let dir = sys::open_dir(p).unwrap();
        let open = |name: &[u8], hint: u8| {
            let dir = dir.try_clone().unwrap();
            let name = name.to_vec();
            crate::testkit::within(10, move || open_entry(&dir, &name, hint).unwrap())
        };
        // Listed as a directory, now a symlink to one: the link itself.
        let o = open(b"link", libc::DT_DIR);
        assert_eq!(kind_of(&o), ("other", libc::S_IFLNK));
        assert_eq!(sys::readlink_fd(o.handle.raw()).unwrap(), b"dir");
        // Listed as a file, now a fifo: not blocked on, not a file.
        assert_eq!(
            kind_of(&open(b"fifo", libc::DT_REG)),
            ("other", libc::S_IFIFO)
        );
        // Listed as a symlink, now a file or a directory: opened as such.
        let o = open(b"file", libc::DT_LNK);
        assert_eq!(kind_of(&o), ("file", libc::S_IFREG));
        let Handle::File(mut f) = o.handle else {
            unreachable!()
        };
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "bytes");
        assert_eq!(
            kind_of(&open(b"dir", libc::DT_UNKNOWN)),
            ("dir", libc::S_IFDIR)
        );
        assert_eq!(kind_of(&open(b"dir", libc::DT_REG)), ("dir", libc::S_IFDIR));
        assert_eq!(
            kind_of(&open(b"file", libc::DT_DIR)),
            ("file", libc::S_IFREG)
        );
    }
}
