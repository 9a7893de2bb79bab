//! `cbrfs restore`: restore a backup into a directory, a disk or in place.

use super::with_progress;
use crate::catalog::{self, Store};
use crate::engine::{browse, restore};
use crate::error::{Error, Result};
use crate::quote::quote;
use crate::rules::human_bytes;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub(super) struct RestoreArgs {
    /// The vault.
    vault: String,
    /// The backup.
    backup: String,
    /// Only this resource [default: all; several go to DIR/<resource>].
    #[arg(long)]
    resource: Option<String>,
    /// Target: an empty or new directory; for a disk, a new image file or
    /// a block device at least as large.
    #[arg(long, required_unless_present = "in_place")]
    to: Option<PathBuf>,
    /// Restore a disk or server onto its original disk and paths.
    #[arg(long)]
    in_place: bool,
    /// Restore into an existing directory that another user owns or that
    /// group or others may write (refused by default: whoever can rename
    /// entries there can race restore's chown and chmod).
    #[arg(long)]
    allow_untrusted_target: bool,
    /// Restore only what matches (repeatable): a path inside the backup
    /// (home/alice/notes.txt, relative to the resource or after its name as
    /// 'cbrfs ls' shows it) or a glob (*.txt on names, home/*/notes.txt on
    /// paths); parent directories are made with their recorded metadata.
    #[arg(long = "include", value_name = "PATH_OR_GLOB")]
    include: Vec<String>,
    /// Leave out what matches, and everything below it (repeatable).
    #[arg(long = "exclude", value_name = "GLOB")]
    exclude: Vec<String>,
}

pub(super) fn restore_cmd(store: &Store, r: RestoreArgs) -> Result<i32> {
    store.vault(&r.vault)?;
    let t0 = Instant::now();
    let to = match (&r.to, r.in_place) {
        (Some(t), _) => t.clone(),
        (None, _) => {
            // --in-place without --to: the disk's own source path.
            let rec = browse::resolve_backup(store, &r.vault, &r.backup)?;
            let res = r.resource.as_deref().ok_or_else(|| {
                Error::invalid("--in-place needs --resource: name the disk or server")
            })?;
            let part = rec
                .resources
                .iter()
                .find(|p| p.name == res)
                .ok_or_else(|| {
                    Error::not_found(format!("resource {res:?} is not in backup {}", r.backup))
                        .code("BackupService.6302")
                })?;
            match part.kind {
                crate::model::ResourceKind::Disk => {
                    PathBuf::from(String::from_utf8_lossy(&part.source).to_string())
                }
                _ => PathBuf::from("/"),
            }
        }
    };
    let task = crate::tasks::start(
        store,
        crate::tasks::TaskType::Restore,
        &r.vault,
        r.resource.as_deref(),
        Some(&r.backup),
        catalog::now_ns(),
    );
    let progress = crate::engine::progress::Progress::default();
    let result = with_progress(&progress, true, || {
        restore::restore_with_progress(
            store,
            &r.vault,
            &r.backup,
            r.resource.as_deref(),
            &to,
            &restore::RestoreOptions {
                in_place: r.in_place,
                allow_untrusted_target: r.allow_untrusted_target,
                include: r.include.clone(),
                exclude: r.exclude.clone(),
            },
            &progress,
        )
    });
    match &result {
        Ok(st) if !st.errors.is_empty() => task.failed(&Error::failed(format!(
            "{} entries could not be restored; first: {}",
            st.errors.len(),
            st.errors[0]
        ))),
        _ => task.finish(&result),
    }
    let stats = result?;
    for n in &stats.notes {
        println!("{}", quote(n));
    }
    println!(
        "restored {} files, {} directories, {} other entries, {} into {} in {:.2}s",
        stats.files,
        stats.dirs,
        stats.others,
        human_bytes(stats.bytes),
        to.display(),
        t0.elapsed().as_secs_f64()
    );
    if !stats.errors.is_empty() {
        for e in &stats.errors {
            eprintln!("cbrfs: error: {}", quote(&e.to_string()));
        }
        eprintln!(
            "cbrfs: error: {} entries could not be restored",
            stats.errors.len()
        );
        return Ok(1);
    }
    Ok(0)
}
