//! In-place restore of a server backup: every member onto its original
//! path, directories restored beside the original and renamed over it.

use super::budget::Budget;
use super::disk::restore_disk;
use super::target::{make_dir_at, open_dir_path, split_target};
use super::tree::Restorer;
use super::RestoreStats;
use crate::catalog::MemberKind;
use crate::engine::progress::Progress;
use crate::error::{Error, IoContext, Result};
use crate::model::{self, BackupRecord, ResourceBackup};
use crate::store::Repo;
use crate::sys;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, PathBuf};

/// Restore every member of a server backup onto its original path: disks
/// in place; a directory is restored beside the original, which is then
/// moved aside (`<path>.cbrfs-replaced-XXXX`) and replaced by a rename.
/// Each path is opened from `/` one component at a time, and a symlink on
/// the way is an error naming it: the record's paths are not trusted to
/// lead where they did at backup time.
pub(super) fn restore_server_in_place(
    repo: &Repo,
    rec: &BackupRecord,
    part: &ResourceBackup,
    progress: &Progress,
) -> Result<RestoreStats> {
    let tree = model::decode_tree(&repo.read_blob(&part.root)?)?;
    let mut total = RestoreStats::default();
    let mut budget = Budget::of(rec, part);
    for (kind, name, path) in crate::engine::backup::server_members(&part.source) {
        // The record's member list is store input: a kind it does not name
        // was taken for a directory; it is damage.
        let kind = MemberKind::from_name(&kind).ok_or_else(|| {
            Error::corrupt(format!(
                "backup {}: server member {name} has the unknown kind {kind:?}",
                rec.name
            ))
        })?;
        let entry = if kind == MemberKind::Disk {
            format!("{name}.img")
        } else {
            name.clone()
        };
        let node = tree.find(entry.as_bytes()).ok_or_else(|| {
            Error::corrupt(format!(
                "backup {}: server member {name} is missing from its tree",
                rec.name
            ))
        })?;
        let path = PathBuf::from(path);
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(Error::corrupt(format!(
                "backup {}: server member {name} has the path {}, not an absolute path without '..'",
                rec.name,
                path.display()
            )));
        }
        if kind == MemberKind::Disk {
            let s = restore_disk(repo, rec, node, &path, &path, true, &mut budget, progress)?;
            total.bytes += s.bytes;
            total.files += 1;
            total.notes.extend(s.notes);
            continue;
        }
        let (parent, base) = split_target(&path)?;
        let pfd = open_dir_path(&parent, true, false)?;
        let suffix = crate::fsutil::random_suffix(6);
        let base_s = String::from_utf8_lossy(&base).to_string();
        let fresh = format!(".{base_s}.cbrfs-restore-{suffix}").into_bytes();
        let fresh_shown = parent.join(OsString::from_vec(fresh.clone()));
        let fd = make_dir_at(&pfd, &fresh, &fresh_shown.display().to_string())?;
        let root_fd = fd.try_clone().ctx(|| "dup target".to_string())?;
        budget.entry(&path.display().to_string())?;
        let mut r = Restorer::new(repo, rec, fd, &fresh_shown, budget.clone());
        r.progress = Some(progress);
        r.threads = super::pool::thread_count()?;
        match node.subtree {
            Some(sub) => {
                r.restore_tree(root_fd, sub, Vec::new(), Some(node.clone()), true)?;
            }
            None => r.dir_metadata(&root_fd, node, b"")?,
        }
        budget = r.budget.clone();
        if sys::fstatat_nofollow(&pfd, &base).is_ok() {
            let aside = format!("{base_s}.cbrfs-replaced-{suffix}").into_bytes();
            sys::rename_at(&pfd, &base, &pfd, &aside)
                .ctx(|| format!("move {} aside", path.display()))?;
            total.notes.push(format!(
                "moved the previous {} to {}",
                path.display(),
                parent.join(OsString::from_vec(aside)).display()
            ));
        }
        sys::rename_at(&pfd, &fresh, &pfd, &base)
            .ctx(|| format!("put the restored {} in place", path.display()))?;
        sys::fsync_dir_fd(&pfd).ctx(|| format!("fsync {}", parent.display()))?;
        total.files += r.stats.files;
        total.dirs += r.stats.dirs;
        total.others += r.stats.others;
        total.bytes += r.stats.bytes;
        total.errors.extend(r.stats.errors);
    }
    Ok(total)
}
