//! Restore: recreate a resource's tree in an empty or new directory with
//! contents, modes, owners (as root), times, xattrs, symlinks, hard links,
//! devices, fifos and holes.
//!
//! Safety (issue #12): restore runs as root into directories other users
//! may reach, from stores that may be hostile.
//! - Every entry is created relative to a descriptor of its parent
//!   directory that restore itself created, with O_EXCL/O_NOFOLLOW, and its
//!   owner, mode, xattrs and times are set through a descriptor of the very
//!   inode restore created (checked with fstat), never by name: an entry
//!   swapped for a symlink by another user is never followed.
//! - A target directory another user owns or may write is refused unless
//!   the user says so ([`RestoreOptions::allow_untrusted_target`]); the
//!   paths to targets and in-place originals are opened component by
//!   component without following symlinks.
//! - A restore writes no more than the backup records: no file beyond its
//!   recorded size, no more entries and bytes than the record's totals, no
//!   tree inside itself; the walk is iterative, so nesting depth is bounded
//!   by descriptors, not by the stack.
//!
//! This file owns the restore call: which resources, which way (tree, disk,
//! server in place), and the report. The parts: `target` (the way to the
//! target and its checks), `tree` (the walk of a tree), `entry` (one entry
//! and its metadata), `filter` (`--include`, `--exclude`), `budget` (the
//! record's bounds), `disk` (disk restore), `server` (server in place).

mod budget;
mod disk;
mod entry;
mod filter;
mod pool;
mod request;
mod server;
mod target;
mod tree;

pub use request::{run, RestoreReport, RestoreRequest};

use super::progress::Progress;
use crate::catalog::Store;
use crate::error::{Error, IoContext, Result};
use crate::model::{BackupRecord, ResourceBackup, ResourceKind};
use crate::store::Repo;
use crate::sys;
use budget::Budget;
use disk::restore_disk;
use filter::{is_glob, Filter, Pick};
use server::restore_server_in_place;
use std::path::{Path, PathBuf};
use target::prepare_target;
use tree::Restorer;

/// What a restore did.
#[derive(Debug, Default, Clone)]
pub struct RestoreStats {
    /// Files written.
    pub files: u64,
    /// Directories made.
    pub dirs: u64,
    /// Other entries made.
    pub others: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Entries that failed, with why.
    pub errors: Vec<String>,
    /// What was done besides writing the target (files moved aside).
    pub notes: Vec<String>,
}

/// How to restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Restore onto the resource's original disk or paths.
    pub in_place: bool,
    /// Restore into an existing target directory that another user owns or
    /// that group or others may write. Refused by default: whoever can
    /// rename entries there can race restore's chown and chmod.
    pub allow_untrusted_target: bool,
    /// Restore only entries matching one of these (and everything below
    /// them, and their parent directories); empty: everything.
    pub include: Vec<String>,
    /// Leave out entries matching one of these, and everything below them.
    pub exclude: Vec<String>,
}

/// Restore `resource` (or every resource) of `backup` into `to`.
/// With one directory or server resource its tree goes into `to`; a disk
/// resource goes to the image file or block device `to`; with several
/// resources each goes into `to/<resource>` (disks as `<resource>.img`).
pub fn restore(
    store: &Store,
    vault: &str,
    backup: &str,
    resource: Option<&str>,
    to: &Path,
) -> Result<RestoreStats> {
    restore_with(
        store,
        vault,
        backup,
        resource,
        to,
        &RestoreOptions::default(),
    )
}

/// [`restore`] with options.
pub fn restore_with(
    store: &Store,
    vault: &str,
    backup: &str,
    resource: Option<&str>,
    to: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    restore_with_progress(
        store,
        vault,
        backup,
        resource,
        to,
        opts,
        &Progress::default(),
    )
}

/// [`restore_with`], counting in `progress` the bytes written against the
/// bytes the backup recorded (for a progress bar).
pub fn restore_with_progress(
    store: &Store,
    vault: &str,
    backup: &str,
    resource: Option<&str>,
    to: &Path,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreStats> {
    // `latest`: the newest backup, as for ls and diff.
    let rec = super::browse::resolve_backup(store, vault, backup)?;
    let parts: Vec<_> = match resource {
        Some(r) => vec![rec.resources.iter().find(|p| p.name == r).ok_or_else(|| {
            Error::not_found(format!(
                "resource {r:?} is not in backup {backup} of vault {vault}"
            ))
            .code("BackupService.6302")
        })?],
        None => rec.resources.iter().collect(),
    };
    progress.add_total(parts.iter().map(|p| p.stats.bytes_total).sum());
    let repo = store.repo(vault)?;
    // A restore reads each data range once: a remote vault holds what it
    // fetches in memory instead of writing it into its cache on disk.
    let _once = repo.reading_once();
    let mut filter = Filter::new(&opts.include, &opts.exclude)?;
    if filter.active() {
        if opts.in_place || parts.iter().any(|p| p.kind == ResourceKind::Disk) {
            return Err(Error::invalid(
                "--include and --exclude choose files of a file-system or server backup restored into a directory (--to DIR); a disk is restored whole",
            ));
        }
        check_includes(&repo, &rec, &parts, &opts.include)?;
    }
    if parts.len() == 1 {
        let p = parts[0];
        match p.kind {
            ResourceKind::Disk => {
                let source = PathBuf::from(String::from_utf8_lossy(&p.source).to_string());
                let mut budget = Budget::of(&rec, p);
                return restore_disk(
                    &repo,
                    &rec,
                    &p.meta,
                    &source,
                    to,
                    opts.in_place,
                    &mut budget,
                    progress,
                );
            }
            ResourceKind::Server if opts.in_place => {
                return restore_server_in_place(&repo, &rec, p, progress);
            }
            ResourceKind::Directory if opts.in_place => {
                return Err(Error::invalid(
                    "--in-place is for disks and servers; a file-system backup is restored into a new or empty directory (--to DIR)",
                ));
            }
            _ => {}
        }
    } else if opts.in_place {
        return Err(Error::invalid(
            "--in-place needs --resource: name the disk or server to restore onto its original",
        ));
    }
    let target = prepare_target(to, opts.allow_untrusted_target)?;
    let root_fd = target.fd.try_clone().ctx(|| "dup target".to_string())?;
    let mut r = Restorer::new(&repo, &rec, target.fd, to, Budget::of(&rec, parts[0]));
    filter.resource = parts[0].meta.name.clone();
    filter.prefixed = parts.len() > 1;
    r.filter = filter;
    r.progress = Some(progress);
    r.threads = pool::thread_count()?;
    if parts.len() == 1 {
        // The target itself takes the resource root's metadata at the end,
        // through its own descriptor; the filter picks what goes in it.
        r.restore_tree(
            root_fd,
            parts[0].root,
            Vec::new(),
            Some(parts[0].meta.clone()),
            false,
        )?;
    } else {
        for p in parts {
            // Hard-link groups are numbered per resource, and each
            // resource is bounded by its own recorded totals.
            r.links.clear();
            r.budget = Budget::of(&rec, p);
            let name = p.meta.name.clone();
            r.filter.resource = name.clone();
            let pick = r.filter.pick(&name, &p.meta, false);
            if pick == Pick::Skip {
                continue;
            }
            match r.entry(&root_fd, &p.meta, &name) {
                Ok(Some((fd, id))) => {
                    let kept = r.restore_tree(
                        fd,
                        id,
                        name.clone(),
                        Some(p.meta.clone()),
                        pick == Pick::Whole,
                    )?;
                    if !kept && sys::rmdir_at(&root_fd, &name).is_ok() {
                        // Nothing of this resource was included.
                        r.stats.dirs -= 1;
                    }
                }
                Ok(None) => {}
                Err(e) if r.is_fatal(&e) => return Err(e),
                Err(e) => r.failed_entry(e),
            }
        }
        if target.created {
            // Made 0700 so that nobody could enter it during the restore;
            // with several resources it has no recorded metadata of its own.
            sys::fchmod(&root_fd, 0o755).ctx(|| format!("chmod {}", to.display()))?;
        }
    }
    for (g, m) in r.filter.include.iter().zip(&r.filter.matched) {
        if !m {
            r.stats.errors.push(format!(
                "--include {}: no entry of backup {} matches it",
                crate::quote::quote(g),
                rec.name
            ));
        }
    }
    Ok(r.stats)
}

/// Every `--include` that is a path, not a glob, must name an entry of
/// the backup (relative to the resource, or after its name), checked
/// before anything is written: a mistyped path is bad input, not an empty
/// restore.
fn check_includes(
    repo: &Repo,
    rec: &BackupRecord,
    parts: &[&ResourceBackup],
    include: &[String],
) -> Result<()> {
    for g in include.iter().filter(|g| !is_glob(g) && g.contains('/')) {
        let comps: Vec<String> = g
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        // Relative to the resource first (one resource), then as `ls`
        // shows it: after the resource's name.
        let mut tries: Vec<Vec<String>> = Vec::new();
        if parts.len() == 1 {
            let name = String::from_utf8_lossy(&parts[0].meta.name).into_owned();
            tries.push(std::iter::once(name).chain(comps.iter().cloned()).collect());
        }
        tries.push(comps);
        let mut first_err = None;
        let mut found = false;
        for t in &tries {
            let t: Vec<&str> = t.iter().map(String::as_str).collect();
            match super::browse::lookup(repo, rec, &t) {
                Ok(_) => {
                    found = true;
                    break;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if !found {
            if let Some(e) = first_err {
                return Err(e.context(format!("--include {}", crate::quote::quote(g))));
            }
        }
    }
    Ok(())
}

/// `rel/name`, or `name` at the root.
fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        name.to_vec()
    } else {
        [rel, b"/", name].concat()
    }
}
