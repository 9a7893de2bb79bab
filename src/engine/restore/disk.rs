//! Disk restore: a disk backup written to a new image file, an empty file,
//! a block device, or (in place) its original disk.

use super::budget::{check_lists_within, chunks_within, Budget};
use super::target::{open_dir_path, split_target};
use super::RestoreStats;
use crate::engine::progress::Progress;
use crate::engine::reader::{self, ChunkCache};
use crate::error::{Error, IoContext, Result};
use crate::model::{BackupRecord, Node};
use crate::store::Repo;
use crate::sys;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Write a disk backup to `to`: a new image file (holes stay holes), an
/// existing empty file, or a block device at least as large. The original
/// disk only with `in_place`; an original image file is replaced whole
/// (written beside it, then renamed over it).
///
/// The target is opened without following a symlink (in place: no symlink
/// anywhere on its path), and an existing one must be a regular file or a
/// block device owned by root or by the user running restore: a file
/// another user made beforehand would let them read the restored disk.
// Each argument is a distinct input of the disk restore; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub(super) fn restore_disk(
    repo: &Repo,
    rec: &BackupRecord,
    node: &Node,
    source: &Path,
    to: &Path,
    in_place: bool,
    budget: &mut Budget,
    progress: &Progress,
) -> Result<RestoreStats> {
    let shown = to.display().to_string();
    budget.entry(&shown)?;
    budget.bytes(&shown, node.size)?;
    // The original is looked up only to compare identities (what is
    // written is always the descriptor opened below), and like every other
    // path it is walked from `/` with no symlink followed.
    let original = sys::open_no_symlinks(source, libc::O_PATH)
        .and_then(|fd| sys::fstat(&fd))
        .ok()
        .map(|st| (st.st_dev, st.st_ino, st.st_rdev));
    let (parent, base) = split_target(to)?;
    let pfd = open_dir_path(&parent, false, !in_place)?;
    let existing = match sys::open_path_at(&pfd, &base) {
        Ok(fd) => Some(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
        Err(e) => return Err(Error::io(format!("restore target {shown}"), e)),
    };
    let mut stats = RestoreStats::default();
    let Some(fd) = existing else {
        if in_place {
            return Err(Error::invalid(format!(
                "--in-place restores onto the original disk {}, and {shown} is not it",
                source.display()
            )));
        }
        let f = sys::create_file_at(&pfd, &base).ctx(|| format!("create {shown}"))?;
        if let Err(e) = write_disk(repo, rec, node, &f, to, false, &mut stats, progress) {
            // Never leave a partial image that looks like a restored disk.
            drop(f);
            let _ = sys::unlink_at(&pfd, &base);
            return Err(e);
        }
        stats.files = 1;
        return Ok(stats);
    };
    let st = sys::fstat(&fd).ctx(|| format!("stat {shown}"))?;
    let fmt = st.st_mode & libc::S_IFMT;
    if fmt == libc::S_IFLNK {
        return Err(Error::invalid(format!(
            "restore target {shown} is a symbolic link: restore writes a disk only to the file or device named, never through a link; give the path it leads to"
        )));
    }
    if fmt != libc::S_IFREG && fmt != libc::S_IFBLK {
        return Err(Error::invalid(format!(
            "restore target {shown} exists and is not a regular file or a block device: give a new image file name, an empty file or a block device"
        )));
    }
    let euid = sys::euid();
    if st.st_uid != 0 && st.st_uid != euid {
        return Err(Error::invalid(format!(
            "restore target {shown} is owned by uid {}: a disk is restored only onto a file or device owned by root or by the user running restore (uid {euid}), never into one another user made and can read",
            st.st_uid
        )));
    }
    let is_original = match original {
        Some(o) if fmt == libc::S_IFBLK => o.2 == st.st_rdev && o.2 != 0,
        Some(o) => (o.0, o.1) == (st.st_dev, st.st_ino),
        None => false,
    };
    if is_original && !in_place {
        return Err(Error::invalid(format!(
            "{shown} is the original disk of this backup: restoring over it needs --in-place"
        )));
    }
    if in_place && !is_original {
        return Err(Error::invalid(format!(
            "--in-place restores onto the original disk {}, and {shown} is not it",
            source.display()
        )));
    }
    if fmt == libc::S_IFBLK {
        let f = sys::reopen_for_write(&fd).ctx(|| format!("open {shown}"))?;
        let dev = sys::device_size_of(&f).ctx(|| format!("size of {shown}"))?;
        if dev < node.size {
            return Err(Error::invalid(format!(
                "target {shown} holds {dev} bytes, less than the disk's {} bytes",
                node.size
            )));
        }
        write_disk(repo, rec, node, &f, to, true, &mut stats, progress)?;
    } else if is_original {
        // Written beside the original, then renamed over it, both relative
        // to the one descriptor of their directory.
        let tmp = format!(
            ".{}.cbrfs-restore-{}",
            String::from_utf8_lossy(&base),
            crate::fsutil::random_suffix(6)
        )
        .into_bytes();
        let f = sys::create_file_at(&pfd, &tmp).ctx(|| format!("create beside {shown}"))?;
        let written =
            write_disk(repo, rec, node, &f, to, false, &mut stats, progress).and_then(|()| {
                sys::rename_at(&pfd, &tmp, &pfd, &base).ctx(|| format!("rename over {shown}"))
            });
        if let Err(e) = written {
            drop(f);
            let _ = sys::unlink_at(&pfd, &tmp);
            return Err(e);
        }
        sys::fsync_dir_fd(&pfd).ctx(|| format!("fsync the directory of {shown}"))?;
        stats
            .notes
            .push(format!("replaced {shown} with the backup's disk"));
    } else if st.st_size == 0 {
        let f = sys::reopen_for_write(&fd).ctx(|| format!("open {shown}"))?;
        write_disk(repo, rec, node, &f, to, false, &mut stats, progress)?;
    } else {
        return Err(Error::invalid(format!(
            "restore target {shown} exists: give a new image file name, an empty file or a block device"
        )));
    }
    stats.files = 1;
    Ok(stats)
}

/// Write a disk node's chunks into `f`; regions without chunks are zeroed
/// on a device, left as holes in a file. No chunk may reach past the
/// disk's recorded size.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_disk(
    repo: &Repo,
    rec: &BackupRecord,
    node: &Node,
    f: &std::fs::File,
    to: &Path,
    device: bool,
    stats: &mut RestoreStats,
    progress: &Progress,
) -> Result<()> {
    let shown = to.display().to_string();
    let cache = ChunkCache::new(16 << 20);
    let zeros = vec![0u8; 1 << 20];
    let zero = |from: u64, until: u64| -> Result<()> {
        let mut p = from;
        while p < until {
            let n = (until - p).min(zeros.len() as u64) as usize;
            f.write_all_at(&zeros[..n], p)
                .ctx(|| format!("write {}", to.display()))?;
            p += n as u64;
        }
        Ok(())
    };
    if !device {
        // Whatever the file held goes: the backup's holes must read as zeros.
        f.set_len(0).ctx(|| format!("truncate {}", to.display()))?;
    }
    check_lists_within(&shown, rec, node)?;
    let mut pos = 0u64;
    // Before a chunk is read or written: no chunk may reach past the
    // disk's recorded size. The first that does ends the chunks.
    let mut refused = None;
    let chunks = chunks_within(
        &shown,
        rec,
        node.size,
        reader::all_chunks(repo, node)?,
        &mut refused,
    );
    // The chunks are read, decrypted and verified on helper threads ahead
    // of the writes.
    reader::for_each_chunk(
        repo,
        &cache,
        chunks,
        reader::read_ahead_workers(node.size),
        reader::READ_AHEAD,
        |c, data| {
            let data = data.map_err(|e| {
                e.context(format!(
                    "{} (backup {}, offset {})",
                    to.display(),
                    rec.name,
                    c.offset
                ))
            })?;
            reader::check_chunk_len(repo, c, &data)
                .map_err(|e| e.context(format!("{} (backup {})", to.display(), rec.name)))?;
            if device {
                zero(pos, c.offset)?;
            }
            f.write_all_at(&data, c.offset)
                .ctx(|| format!("write {}", to.display()))?;
            stats.bytes += data.len() as u64;
            progress.add_done(data.len() as u64);
            // Saturating: a damaged chunk list may hold any offset.
            pos = c.offset.saturating_add(c.len as u64);
            Ok(())
        },
    )?;
    if let Some(e) = refused {
        return Err(e);
    }
    if device {
        zero(pos, node.size)?;
    } else {
        f.set_len(node.size)
            .ctx(|| format!("set size of {}", to.display()))?;
    }
    f.sync_all().ctx(|| format!("fsync {}", to.display()))
}
