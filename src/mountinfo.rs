//! The mounts of this process's mount namespace, from
//! `/proc/self/mountinfo`, as the backup walker needs them: which device
//! number is a FUSE file system that a user other than root mounted (its
//! daemon answers with whatever owner and mode it likes, setuid root
//! included), so a root backup does not descend into it; and which file
//! system is mounted at a path, as `cbrfs mount` and `umount` need it.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One mounted file system: its type and its super-block options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// `ext4`, `tmpfs`, `fuse.sshfs`, ...
    pub fstype: String,
    /// Mount point, `\040`-style escapes undone (its exact bytes).
    pub point: PathBuf,
    /// Super-block options (`rw,user_id=1000,group_id=1000`).
    pub super_opts: String,
}

impl Mount {
    /// A FUSE file system (`fuse`, `fuseblk`, `fuse.*`) whose `user_id`
    /// is not 0: a user's daemon decides what it shows.
    pub fn is_user_fuse(&self) -> bool {
        let fuse =
            self.fstype == "fuse" || self.fstype == "fuseblk" || self.fstype.starts_with("fuse.");
        fuse && self.user_id().is_none_or(|u| u != 0)
    }

    /// The `user_id=N` super option (FUSE's mounting user).
    pub fn user_id(&self) -> Option<u32> {
        self.super_opts
            .split(',')
            .find_map(|o| o.strip_prefix("user_id="))
            .and_then(|v| v.parse().ok())
    }
}

/// The mounts in mountinfo's order, each with its device number
/// (`major:minor`); several mounts (bind mounts) may share one.
#[derive(Clone, Debug, Default)]
pub struct MountTable {
    mounts: Vec<((u32, u32), Mount)>,
}

impl MountTable {
    /// This process's mounts; an unreadable `/proc` gives an empty table
    /// (and the walker then cannot tell mounts apart: it says so).
    pub fn read() -> std::io::Result<MountTable> {
        Ok(MountTable::parse(&std::fs::read_to_string(
            "/proc/self/mountinfo",
        )?))
    }

    /// Parse mountinfo text (proc(5)): `id parent major:minor root point
    /// options [optional fields...] - fstype source super_options`.
    /// Malformed lines are skipped.
    pub fn parse(text: &str) -> MountTable {
        let mut mounts = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            if sep < 6 || fields.len() < sep + 3 {
                continue;
            }
            let Some((maj, min)) = fields[2].split_once(':') else {
                continue;
            };
            let (Ok(maj), Ok(min)) = (maj.parse::<u32>(), min.parse::<u32>()) else {
                continue;
            };
            mounts.push((
                (maj, min),
                Mount {
                    fstype: fields[sep + 1].to_string(),
                    point: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
                    super_opts: fields.get(sep + 3).unwrap_or(&"").to_string(),
                },
            ));
        }
        MountTable { mounts }
    }

    /// The mounts of device `dev` (an `st_dev`).
    pub fn of_dev(&self, dev: u64) -> impl Iterator<Item = &Mount> {
        let want = (libc::major(dev), libc::minor(dev));
        self.mounts
            .iter()
            .filter(move |(d, _)| *d == want)
            .map(|(_, m)| m)
    }

    /// A user's FUSE mount on device `dev`, if it is one.
    pub fn user_fuse(&self, dev: u64) -> Option<&Mount> {
        self.of_dev(dev).find(|m| m.is_user_fuse())
    }

    /// The device number (`major`, `minor`) of the mount on top at
    /// `point`, an absolute path: the last one mounted there.
    pub fn top_dev_at(&self, point: &Path) -> Option<(u32, u32)> {
        self.mounts
            .iter()
            .rev()
            .find(|(_, m)| m.point == point)
            .map(|(d, _)| *d)
    }

    /// The first mount (in mountinfo's order) at `point`, an absolute path.
    pub fn at(&self, point: &Path) -> Option<&Mount> {
        self.mounts
            .iter()
            .map(|(_, m)| m)
            .find(|m| m.point == point)
    }
}

/// Undo mountinfo's octal escapes (`\040` for a space, `\012`, `\134`).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
25 22 0:22 / /tmp rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=1024k
40 22 0:45 / /home/alice/mnt rw,nosuid,nodev,relatime shared:30 - fuse.sshfs alice@host: rw,user_id=1000,group_id=1000,allow_other
41 22 0:46 / /srv/root\\040fuse rw,nosuid,nodev,relatime - fuse /dev/fuse rw,user_id=0,group_id=0
42 22 0:47 / /mnt/usb rw,relatime - fuseblk /dev/sdb1 rw,user_id=1001,group_id=1001
43 22 0:48 / /odd rw - fuse.x src rw
bad line
44 22 x:y / /broken rw - ext4 /dev/x rw
";

    fn dev(maj: u32, min: u32) -> u64 {
        libc::makedev(maj, min)
    }

    #[test]
    fn parses_types_points_and_options() {
        let t = MountTable::parse(SAMPLE);
        let first = |d| t.of_dev(d).next().unwrap();
        assert_eq!(first(dev(8, 1)).fstype, "ext4");
        assert_eq!(first(dev(0, 22)).point, Path::new("/tmp"));
        assert_eq!(first(dev(0, 46)).point, Path::new("/srv/root fuse"));
        assert_eq!(first(dev(0, 45)).user_id(), Some(1000));
        assert!(t.of_dev(dev(9, 9)).next().is_none());
        assert_eq!(t.at(Path::new("/srv/root fuse")).unwrap().fstype, "fuse");
        assert!(t.at(Path::new("/srv")).is_none());
    }

    #[test]
    fn a_users_fuse_mount_is_told_from_roots() {
        let t = MountTable::parse(SAMPLE);
        // A user's sshfs and a user's fuseblk: not descended into.
        assert_eq!(
            t.user_fuse(dev(0, 45)).map(|m| m.point.as_path()),
            Some(Path::new("/home/alice/mnt"))
        );
        assert!(t.user_fuse(dev(0, 47)).is_some());
        // Root's FUSE mount, and file systems that are not FUSE: walked.
        assert!(t.user_fuse(dev(0, 46)).is_none());
        assert!(t.user_fuse(dev(0, 22)).is_none());
        assert!(t.user_fuse(dev(8, 1)).is_none());
        // A FUSE mount that does not say who mounted it is not trusted.
        assert!(t.user_fuse(dev(0, 48)).is_some());
    }

    #[test]
    fn this_hosts_mountinfo_reads() {
        let t = MountTable::read().unwrap();
        let root = std::fs::metadata("/").unwrap();
        assert!(t
            .of_dev(std::os::unix::fs::MetadataExt::dev(&root))
            .next()
            .is_some());
    }
}
