//! Durable file-system primitives: atomic replace, directory fsync, private
//! modes (files 0600, directories 0700), random names.
//!
//! Every file the store writes goes through [`write_atomic`] or a
//! [`TempFile`]: written under a temporary name, fsynced, renamed into place,
//! and the directory fsynced, so a crash leaves either the old or the new
//! file, never a torn one.

use crate::error::{Error, IoContext, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of every file in the store.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory in the store.
pub const DIR_MODE: u32 = 0o700;

/// Create `dir` and its missing parents with mode 0700.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .ctx(|| format!("create directory {}", dir.display()))
}

/// Flags of every open of a store file: a symlink planted in the store is
/// not followed (`ELOOP`), a FIFO or device does not block the open
/// (`O_NONBLOCK`), and no child inherits the descriptor.
const STORE_OPEN_FLAGS: libc::c_int = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;

/// What a file type is, for messages.
fn file_type_name(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

/// The error for a store path that is not a regular file: its kind is
/// `InvalidData`, so that callers keep telling it from "not found".
fn not_regular(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("is {what}, not a regular file: refusing to use it"),
    )
}

/// Turn `ELOOP` from `O_NOFOLLOW` into the words a user needs.
fn nofollow_error(e: std::io::Error) -> std::io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        not_regular("a symbolic link")
    } else {
        e
    }
}

/// Refuse `file` unless `fstat` says it is a regular file.
fn ensure_regular(file: &File) -> std::io::Result<()> {
    let ft = file.metadata()?.file_type();
    if ft.is_file() {
        Ok(())
    } else {
        Err(not_regular(file_type_name(&ft)))
    }
}

/// Open a store file (pack, index, record, key, JSON record, status, task)
/// for reading. The store is input, maybe written by someone else: a
/// symlink is refused rather than followed, a FIFO or device neither
/// blocks nor is read (issue #12, finding 11), and what `fstat` says is not
/// a regular file is refused. The error keeps `NotFound` for a missing file;
/// callers add the file's name.
pub fn open_store_file(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(STORE_OPEN_FLAGS)
        .open(path)
        .map_err(nofollow_error)?;
    ensure_regular(&file)?;
    Ok(file)
}

/// The whole of a store file, opened as [`open_store_file`] does.
pub fn read_store_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = open_store_file(path)?;
    let mut out = Vec::new();
    file.read_to_end(&mut out)?;
    Ok(out)
}

/// A store file as UTF-8 text, opened as [`open_store_file`] does.
pub fn read_store_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_store_file(path)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Refuse `dir` unless it is a real directory (not a symlink to one): the
/// store's directories are walked by path, and a planted link would lead
/// every reader elsewhere. A missing `dir` is `NotFound`.
pub fn ensure_real_dir(dir: &Path) -> std::io::Result<()> {
    let ft = fs::symlink_metadata(dir)?.file_type();
    if ft.is_dir() {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "is {}, not a directory: refusing to use it",
                file_type_name(&ft)
            ),
        ))
    }
}

/// Open (creating it 0600 if missing) a private file to append to, such as
/// `logs/mount.log`. The file is made 0600 also when it exists with another
/// mode (an older cbrfs created the log 0644); symlinks and non-regular
/// files are refused as by [`open_store_file`].
pub fn open_private_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .custom_flags(STORE_OPEN_FLAGS)
        .open(path)
        .map_err(nofollow_error)?;
    ensure_regular(&file)?;
    if file.metadata()?.permissions().mode() & 0o7777 != FILE_MODE {
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// fsync a directory so that renames and unlinks in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    // O_DIRECTORY|O_NOFOLLOW: a FIFO or symlink planted in place of a store
    // directory is refused instead of blocking the open or being followed.
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | STORE_OPEN_FLAGS)
        .open(dir)
        .map_err(nofollow_error)
        .and_then(|f| f.sync_all())
        .ctx(|| format!("fsync directory {}", dir.display()))
}

/// `n` random bytes from the operating system.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // getrandom only fails when the OS has no entropy source at all; a
    // predictable secret would be worse than stopping.
    getrandom::getrandom(&mut buf).expect("the operating system's random source failed");
    buf
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parse lower- or upper-case hex; `None` if malformed.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `n` random characters of `[0-9a-z]`, for default names like `vault_XXXX`.
pub fn random_suffix(n: usize) -> String {
    const CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    random_bytes(n)
        .iter()
        .map(|b| CHARS[*b as usize % CHARS.len()] as char)
        .collect()
}

/// A file being written under a temporary name in its final directory.
/// [`TempFile::commit`] makes it durable and renames it into place; dropping
/// it uncommitted removes it, so a failed write leaves nothing behind.
pub struct TempFile {
    file: Option<File>,
    tmp: PathBuf,
}

impl TempFile {
    /// Start a temporary file in `dir` (mode 0600), named `.tmp-<random>`.
    pub fn new_in(dir: &Path) -> Result<Self> {
        let tmp = dir.join(format!(".tmp-{}", hex(&random_bytes(8))));
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .ctx(|| format!("create {}", tmp.display()))?;
        Ok(TempFile {
            file: Some(file),
            tmp,
        })
    }
    /// The open file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("TempFile used after commit")
    }
    /// The temporary path.
    pub fn path(&self) -> &Path {
        &self.tmp
    }
    /// fsync, rename to `dest` (same directory), fsync the directory.
    pub fn commit(mut self, dest: &Path) -> Result<()> {
        let file = self.file.take().expect("TempFile committed twice");
        file.sync_all()
            .ctx(|| format!("fsync {}", self.tmp.display()))?;
        drop(file);
        self.rename_to(dest)?;
        if let Some(parent) = dest.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// Rename to `dest` (same directory) without any fsync: for a cache
    /// entry, whose every read is verified, so that a crash leaving it torn
    /// or empty costs a download, never wrong bytes (an fsync per entry
    /// made a cold restore wait on the disk once per megabyte).
    pub fn commit_unsynced(mut self, dest: &Path) -> Result<()> {
        drop(self.file.take());
        self.rename_to(dest)
    }

    /// Rename the (closed) temporary file to `dest`; from then on Drop
    /// must not remove anything.
    fn rename_to(&mut self, dest: &Path) -> Result<()> {
        fs::rename(&self.tmp, dest)
            .ctx(|| format!("rename {} to {}", self.tmp.display(), dest.display()))?;
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Replace `dest` atomically and durably with `data` (mode 0600).
pub fn write_atomic(dest: &Path, data: &[u8]) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = TempFile::new_in(dir)?;
    tmp.file()
        .write_all(data)
        .ctx(|| format!("write {}", tmp.path().display()))?;
    tmp.commit(dest)
}

/// Replace `dest` atomically and durably with `data`, readable by all
/// (0644): for files outside the store that other programs read, such as
/// man pages and the metrics file node_exporter's textfile collector reads
/// as its own user. A symlink at `dest` is replaced, not followed.
pub fn write_atomic_public(dest: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // A bare file name is in the working directory (and "" cannot be
    // opened to fsync it).
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(name) = dest.file_name() else {
        return Err(Error::invalid(format!(
            "{} does not name a file",
            dest.display()
        )));
    };
    let mut tmp = TempFile::new_in(dir)?;
    tmp.file()
        .write_all(data)
        .ctx(|| format!("write {}", tmp.path().display()))?;
    // fchmod on the descriptor: no path is resolved again.
    tmp.file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .ctx(|| format!("chmod {}", tmp.path().display()))?;
    tmp.commit(&dir.join(name))
}

/// Remove stale `.tmp-*` files left in `dir` by a killed writer.
/// Only call this while holding the lock that excludes that writer.
pub fn remove_stale_temps(dir: &Path) -> Result<usize> {
    let mut n = 0;
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(crate::error::Error::io(
                format!("list {}", dir.display()),
                e,
            ))
        }
    };
    for ent in rd {
        let ent = ent.ctx(|| format!("list {}", dir.display()))?;
        if ent.file_name().as_encoded_bytes().starts_with(b".tmp-") {
            fs::remove_file(ent.path()).ctx(|| format!("remove {}", ent.path().display()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// An advisory lock (flock) on a lock file; released on drop or when the
/// process dies, so a killed process never leaves a stale lock.
pub struct Flock {
    _file: File,
}

impl Flock {
    fn open(path: &Path) -> Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .custom_flags(STORE_OPEN_FLAGS)
            .open(path)
            .map_err(nofollow_error)
            .ctx(|| format!("open lock file {}", path.display()))?;
        ensure_regular(&file).ctx(|| format!("open lock file {}", path.display()))?;
        Ok(file)
    }

    fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
        // SAFETY: flock on a valid, owned file descriptor.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(file), op) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Try to take the lock; `Ok(None)` if another process holds it.
    pub fn try_lock(path: &Path, exclusive: bool) -> Result<Option<Flock>> {
        let file = Self::open(path)?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        } | libc::LOCK_NB;
        match Self::flock(&file, op) {
            Ok(()) => Ok(Some(Flock { _file: file })),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(crate::error::Error::io(
                format!("lock {}", path.display()),
                e,
            )),
        }
    }

    /// Take the lock, waiting for it.
    pub fn lock(path: &Path, exclusive: bool) -> Result<Flock> {
        let file = Self::open(path)?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        loop {
            match Self::flock(&file, op) {
                Ok(()) => return Ok(Flock { _file: file }),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(crate::error::Error::io(
                        format!("lock {}", path.display()),
                        e,
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&b), "0001abff");
        assert_eq!(unhex("0001abff").unwrap(), b);
        assert!(unhex("0g").is_none());
        assert!(unhex("abc").is_none());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Finding 11 of issue #12: a FIFO, a symlink or a directory in place
    /// of a store file is refused at once, naming what it is; a missing file
    /// stays "not found".
    #[test]
    fn store_files_that_are_not_regular_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("real"), b"data").unwrap();
        assert_eq!(read_store_file(&d.join("real")).unwrap(), b"data");
        let fifo = std::ffi::CString::new(d.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
        fs::create_dir(d.join("dir")).unwrap();
        for (name, what) in [
            ("fifo", "a FIFO"),
            ("link", "a symbolic link"),
            ("dir", "a directory"),
        ] {
            let e = read_store_file(&d.join(name)).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{name}: {e}");
            assert!(e.to_string().contains(what), "{name}: {e}");
        }
        let e = open_store_file(&d.join("missing")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(ensure_real_dir(&d.join("dir")).is_ok());
        std::os::unix::fs::symlink(d.join("dir"), d.join("dirlink")).unwrap();
        assert!(ensure_real_dir(&d.join("dirlink")).is_err());
        assert!(Flock::try_lock(&d.join("fifo"), true).is_err());
        assert!(sync_dir(&d.join("fifo")).is_err());
    }

    #[test]
    fn private_append_makes_the_file_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        fs::write(&p, b"old\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        open_private_append(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        std::os::unix::fs::symlink(&p, dir.path().join("link")).unwrap();
        assert!(open_private_append(&dir.path().join("link")).is_err());
    }

    #[test]
    fn dropped_temp_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut t = TempFile::new_in(dir.path()).unwrap();
            t.file().write_all(b"x").unwrap();
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
