//! Target safety: the way to a restore target is walked from `/` with no
//! symlink followed (root's own aside), and a target directory must be
//! new, or empty and trusted; directories restore makes are checked to be
//! its own.

use crate::error::{Error, IoContext, Result};
use crate::sys;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// A target path as its parent directory and its last component, which
/// must be a name (not `/`, `.` or `..`).
pub(super) fn split_target(to: &Path) -> Result<(PathBuf, Vec<u8>)> {
    let base = match to.components().next_back() {
        Some(Component::Normal(n)) => n.as_bytes().to_vec(),
        _ => {
            return Err(Error::invalid(format!(
                "restore target {} does not end in a name: give a new or empty directory such as /tmp/restore",
                to.display()
            )))
        }
    };
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, base))
}

/// Open directory `path` one component at a time from `/` (or the working
/// directory), each with O_NOFOLLOW|O_DIRECTORY, so that no symlink is
/// followed on the way. With `create`, missing directories are made
/// (0755). With `root_links`, a symlink owned by root (`/var/run`) is
/// resolved by this walk itself, since only root can have made it; any
/// other symlink is an error naming it.
pub(super) fn open_dir_path(path: &Path, create: bool, root_links: bool) -> Result<OwnedFd> {
    let start = |abs: bool| -> Result<(OwnedFd, PathBuf)> {
        let p = if abs { Path::new("/") } else { Path::new(".") };
        // O_PATH: a walk needs only search permission on the way.
        let fd = sys::open_path_dir(p).ctx(|| format!("open {}", p.display()))?;
        Ok((fd, p.to_path_buf()))
    };
    let mut queue: VecDeque<OsString> = VecDeque::new();
    let push_all = |q: &mut VecDeque<OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => q.push_front(n.to_os_string()),
                Component::ParentDir => q.push_front(OsString::from("..")),
                _ => {}
            }
        }
    };
    push_all(&mut queue, path);
    let (mut cur, mut shown) = start(path.is_absolute())?;
    let mut links = 0;
    while let Some(name) = queue.pop_front() {
        let nb = name.as_bytes();
        let next = shown.join(&name);
        match sys::open_path_dir_at(&cur, nb) {
            Ok(fd) => {
                cur = fd;
                shown = next;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                match sys::mkdir_at(&cur, nb, 0o755) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(Error::io(format!("create {}", next.display()), e)),
                }
                // Opened again without following: a symlink put there in
                // between is refused like any other.
                queue.push_front(name);
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                let st =
                    sys::fstatat_nofollow(&cur, nb).ctx(|| format!("stat {}", next.display()))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                    return Err(Error::invalid(format!(
                        "{} is not a directory",
                        next.display()
                    )));
                }
                if !root_links || st.st_uid != 0 {
                    return Err(Error::invalid(format!(
                        "{} is a symbolic link (owned by uid {}): restore follows no symlink on the way to its target; give the path it leads to",
                        next.display(),
                        st.st_uid
                    )));
                }
                links += 1;
                if links > 40 {
                    return Err(Error::invalid(format!(
                        "{}: too many symbolic links on the way",
                        path.display()
                    )));
                }
                let target = PathBuf::from(OsString::from_vec(
                    sys::readlink_at(&cur, nb).ctx(|| format!("read link {}", next.display()))?,
                ));
                if target.is_absolute() {
                    (cur, shown) = start(true)?;
                }
                push_all(&mut queue, &target);
            }
            Err(e) => return Err(Error::io(format!("open {}", next.display()), e)),
        }
    }
    Ok(cur)
}

/// Make directory `name` in `dir` (0700) and open it, checking that what
/// was opened is a directory restore just made (a directory owned by the
/// user running restore), not one somebody put there in between.
pub(super) fn make_dir_at(dir: &OwnedFd, name: &[u8], shown: &str) -> Result<OwnedFd> {
    sys::mkdir_at(dir, name, 0o700).ctx(|| format!("{shown}: mkdir"))?;
    let fd = sys::open_dir_at(dir, name).ctx(|| format!("{shown}: open"))?;
    let st = sys::fstat(&fd).ctx(|| format!("{shown}: stat"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR || st.st_uid != sys::euid() {
        return Err(Error::failed(format!(
            "{shown}: the directory restore made was replaced by another (owner uid {}) before it was opened; not restored into",
            st.st_uid
        )));
    }
    Ok(fd)
}

/// An opened restore target directory.
pub(super) struct Target {
    pub(super) fd: OwnedFd,
    /// Restore made it (it did not exist).
    pub(super) created: bool,
}

/// The target must be absent (it is created, mode 0700 until the root's
/// metadata is applied at the end) or an empty directory owned by the user
/// running restore that group and others cannot write, unless
/// `allow_untrusted`: in a directory another user can write, they could
/// rename what restore creates.
pub(super) fn prepare_target(to: &Path, allow_untrusted: bool) -> Result<Target> {
    let shown = to.display().to_string();
    let (parent, base) = split_target(to)?;
    let pfd = open_dir_path(&parent, true, true)?;
    let st = match sys::fstatat_nofollow(&pfd, &base) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            let fd = make_dir_at(&pfd, &base, &format!("restore target {shown}"))?;
            return Ok(Target { fd, created: true });
        }
        Err(e) => return Err(Error::io(format!("restore target {shown}"), e)),
        Ok(st) => st,
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(Error::invalid(format!(
            "restore target {shown} exists and is not a directory: give an empty or new directory"
        )));
    }
    let fd = sys::open_dir_at(&pfd, &base).ctx(|| format!("open restore target {shown}"))?;
    // The checks are on the descriptor restore goes on to use.
    let st = sys::fstat(&fd).ctx(|| format!("stat restore target {shown}"))?;
    let euid = sys::euid();
    let mode = st.st_mode & 0o7777;
    if !allow_untrusted && (st.st_uid != euid || mode & 0o022 != 0) {
        return Err(Error::invalid(format!(
            "restore target {shown} is owned by uid {} with mode {mode:04o}: restore writes only into a directory owned by the user running it (uid {euid}) that group and others cannot write, since whoever can rename entries there could redirect restore's chown and chmod; give --allow-untrusted-target to restore there anyway",
            st.st_uid
        )));
    }
    let mut rd =
        std::fs::read_dir(sys::proc_fd_path(&fd)).ctx(|| format!("read restore target {shown}"))?;
    if rd.next().is_some() {
        return Err(Error::invalid(format!(
            "restore target {shown} is not empty: give an empty or new directory"
        )));
    }
    Ok(Target { fd, created: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk to a target refuses a symlink on the way, names it, and
    /// follows one only when told and only when root owns it.
    #[test]
    fn the_walk_to_a_target_follows_no_users_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("x")).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = open_dir_path(&link.join("x"), false, false).unwrap_err();
        assert!(
            e.to_string().contains(&link.display().to_string())
                && e.to_string().contains("symbolic link"),
            "{e}"
        );
        assert_eq!(e.exit_code(), 2);
        // Made by the user running the test: followed only if that is root.
        let followed = open_dir_path(&link.join("x"), false, true);
        assert_eq!(followed.is_ok(), sys::euid() == 0, "{:?}", followed.err());
        if sys::euid() == 0 {
            let c = std::ffi::CString::new(link.as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::lchown(c.as_ptr(), 65534, 65534) }, 0);
            let e = open_dir_path(&link.join("x"), false, true).unwrap_err();
            assert!(e.to_string().contains("uid 65534"), "{e}");
        }
        // Missing directories are made on the way, never through a link.
        let fd = open_dir_path(&real.join("a/b"), true, false).unwrap();
        assert!(sys::fstat(&fd).is_ok() && real.join("a/b").is_dir());
    }
}
