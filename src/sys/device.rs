//! Sizes and data extents: regular files and block devices
//! (BLKGETSIZE64), and the holes of sparse files (SEEK_DATA/SEEK_HOLE);
//! reads that leave nothing in the page cache (RWF_DONTCACHE).

use super::{check, fstat, open_no_symlinks};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

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

/// Size of the regular file or block device at the resolved path `path`
/// (as resources are stored), opened with no symlink followed (see
/// [`open_no_symlinks`]) and sized from that descriptor's fstat. The open
/// does not block: a FIFO put there is an error, not a wait for a writer.
pub fn device_size(path: &Path) -> io::Result<u64> {
    let fd = open_no_symlinks(path, libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK)?;
    device_size_of(&std::fs::File::from(fd))
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

/// Size of the block device or regular file open as `f`.
pub fn device_size_of(f: &std::fs::File) -> io::Result<u64> {
    let st = fstat(f)?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFBLK => block_device_size(f.as_raw_fd()),
        libc::S_IFREG => Ok(st.st_size as u64),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a block device or a regular file",
        )),
    }
}

/// `pread` of `buf.len()` bytes at `pos` with RWF_DONTCACHE (Linux 6.14):
/// a buffered read, with the kernel's read-ahead, whose pages are dropped
/// from the page cache once copied out (pages that were cached before
/// stay). Returns the bytes read (0 at the end of the file); a kernel or
/// file system without it answers EOPNOTSUPP.
pub fn pread_uncached(fd: &impl AsRawFd, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let pos = i64::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: one iovec over `buf`, which lives for the call; the kernel
    // writes at most `buf.len()` bytes into it.
    let n = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, pos, libc::RWF_DONTCACHE) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A regular file is sized; a symlink to it, a directory and a FIFO
    /// are errors, and the FIFO's open does not wait for a writer.
    #[test]
    fn device_size_follows_no_symlink_and_waits_for_no_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        std::fs::write(&file, vec![1u8; 12_345]).unwrap();
        assert_eq!(device_size(&file).unwrap(), 12_345);
        let link = dir.path().join("link.img");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(device_size(&link).is_err(), "a symlink was followed");
        assert!(device_size(dir.path()).is_err(), "a directory was sized");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(device_size(&fifo).is_err()));
        let refused = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("device_size of a FIFO waited for a writer");
        assert!(refused, "a FIFO was sized");
    }
}
