//! `cbrfs restore`: restore a backup into a directory, a disk or in place.

use super::with_progress;
use crate::catalog::Store;
use crate::engine::ops;
use crate::engine::restore::RestoreOptions;
use crate::error::Result;
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
    let t0 = Instant::now();
    let request = ops::RestoreRequest {
        vault: r.vault,
        backup: r.backup,
        resource: r.resource,
        to: r.to,
        options: RestoreOptions {
            in_place: r.in_place,
            allow_untrusted_target: r.allow_untrusted_target,
            include: r.include,
            exclude: r.exclude,
        },
    };
    let progress = crate::engine::progress::Progress::default();
    let report = with_progress(&progress, true, || ops::restore(store, &request, &progress))?;
    let stats = &report.stats;
    for n in &stats.notes {
        println!("{}", quote(n));
    }
    println!(
        "restored {} files, {} directories, {} other entries, {} into {} in {:.2}s",
        stats.files,
        stats.dirs,
        stats.others,
        human_bytes(stats.bytes),
        report.target.display(),
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
