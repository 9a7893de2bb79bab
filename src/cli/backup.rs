//! `cbrfs backup`: take, list, show, delete and wait for backups.

use super::{catch_interrupts, print_json, with_progress};
use crate::catalog::Store;
use crate::engine::{backup, backup_records};
use crate::error::Result;
use crate::model::Origin;
use crate::quote::{quote, quote_bytes};
use crate::rules::{self, human_bytes};
use clap::Subcommand;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Subcommand, Debug)]
pub(super) enum BackupCmd {
    /// Back up every resource of a vault (or those named).
    Create {
        /// The vault.
        vault: String,
        /// Backup name [default: manualbk_XXXX].
        #[arg(long)]
        name: Option<String>,
        /// Description, at most 255 characters.
        #[arg(long, default_value = "")]
        description: String,
        /// Read every file again (deduplication still applies).
        #[arg(long)]
        full: bool,
        /// Only this resource (repeatable).
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Say what would be read and added (new chunks hashed and
        /// compressed, then dropped) and write nothing to the store.
        #[arg(long)]
        dry_run: bool,
    },
    /// List backups.
    List {
        /// Only this vault.
        vault: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one backup.
    Show {
        /// The vault.
        vault: String,
        /// The backup.
        backup: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a backup (its space comes back with prune).
    Delete {
        /// The vault.
        vault: String,
        /// The backup.
        backup: String,
    },
    /// Wait until a running backup (e.g. one started by mkdir) is available.
    Wait {
        /// The vault.
        vault: String,
        /// The backup.
        backup: String,
        /// Give up after this many seconds (exit 1) [default: wait on].
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
    },
}

pub(super) fn backup_cmd(store: &Store, cmd: BackupCmd) -> Result<i32> {
    match cmd {
        BackupCmd::Create {
            vault,
            name,
            description,
            full,
            resources,
            json,
            dry_run,
        } => {
            let t0 = Instant::now();
            let prepared = backup::prepare(
                store,
                &vault,
                backup::BackupOptions {
                    name,
                    description,
                    full,
                    resources,
                    origin: Some(Origin::Manual),
                    policy: None,
                    at_ns: None,
                    dry_run,
                },
            )?;
            let progress = prepared.progress.clone();
            if !dry_run {
                catch_interrupts();
            }
            let rec = with_progress(&progress, !json, || prepared.run());
            // Interrupted: one line saying what was kept, and the shell's
            // exit status for a death by SIGINT.
            let rec = match rec {
                Err(e) if progress.cancelled() => {
                    eprintln!("cbrfs: {e}");
                    return Ok(130);
                }
                r => r?,
            };
            if json {
                let mut report = backup_records::report(&rec);
                report.dry_run = dry_run;
                print_json(&report)?;
            } else {
                let s = &rec.stats;
                let kind = if rec.full { "full" } else { "incremental" };
                if dry_run {
                    println!(
                        "dry run of a backup of vault {} ({kind}): nothing was written",
                        rec.vault
                    );
                } else {
                    println!(
                        "backup {} of vault {} is available ({kind})",
                        rec.name, rec.vault
                    );
                }
                println!(
                    "files: {} new, {} changed, {} unchanged; {}, {} other",
                    s.files_new,
                    s.files_changed,
                    s.files_unchanged,
                    rules::count(s.dirs, "directory", "directories"),
                    s.others
                );
                if dry_run {
                    println!(
                        "would read {} of {}; would add {} in {} (compressed, before pack headers and the index); took {:.2}s",
                        human_bytes(s.bytes_read),
                        human_bytes(s.bytes_total),
                        human_bytes(s.bytes_added),
                        rules::count(s.blobs_new, "new blob", "new blobs"),
                        t0.elapsed().as_secs_f64()
                    );
                } else {
                    println!(
                        "read {} of {}; added {} to the vault; took {:.2}s",
                        human_bytes(s.bytes_read),
                        human_bytes(s.bytes_total),
                        human_bytes(s.bytes_added),
                        t0.elapsed().as_secs_f64()
                    );
                }
                for r in &rec.resources {
                    for w in &r.warnings {
                        eprintln!("warning: resource {}: {}", quote(&r.name), quote(w));
                    }
                }
                if !dry_run && s.errors > 0 {
                    eprintln!(
                        "warning: {} entries could not be backed up or changed while read (see above)",
                        s.errors
                    );
                }
            }
            // As restic: the backup is made, but it is not complete.
            if rec.stats.errors > 0 {
                return Ok(3);
            }
        }
        BackupCmd::List { vault, json } => {
            let l = backup_records::list(store, vault.as_deref())?;
            if json {
                print_json(&l.backups)?;
            } else {
                println!(
                    "{:<24} {:<20} {:<11} {:<7} {:<20} {:>9} {:>10} {:>10}",
                    "NAME", "VAULT", "TYPE", "ORIGIN", "CREATED", "FILES", "SIZE", "ADDED"
                );
                for b in &l.backups {
                    println!(
                        "{:<24} {:<20} {:<11} {:<7} {:<20} {:>9} {:>10} {:>10}",
                        quote(&b.name),
                        quote(&b.vault),
                        b.backup_type,
                        b.origin,
                        b.started,
                        b.stats.files_new + b.stats.files_changed + b.stats.files_unchanged,
                        human_bytes(b.stats.bytes_total),
                        human_bytes(b.stats.bytes_added)
                    );
                }
            }
            for d in &l.damaged {
                eprintln!("cbrfs: error: {}", quote(d));
            }
            for d in &l.locked {
                eprintln!("cbrfs: warning: skipped a locked vault: {}", quote(d));
            }
            if !l.damaged.is_empty() {
                return Ok(1);
            }
            // 3: a partial result, as for a backup that skipped entries.
            if !l.locked.is_empty() {
                return Ok(3);
            }
        }
        BackupCmd::Show {
            vault,
            backup,
            json,
        } => {
            let b = backup_records::show(store, &vault, &backup)?;
            if json {
                print_json(&b)?;
            } else {
                println!("backup:      {}", quote(&b.name));
                println!("vault:       {}", quote(&b.vault));
                println!("status:      {}", b.status);
                println!("type:        {}", b.backup_type);
                println!("origin:      {}", b.origin);
                println!("encrypted:   {}", if b.encrypted { "yes" } else { "no" });
                println!("description: {}", quote(&b.description));
                println!("started:     {}", b.started);
                println!("finished:    {}", b.finished);
                for r in &b.resources {
                    let s = &r.stats;
                    println!(
                        "resource {} ({}, {}): {} files new, {} changed, {} unchanged; read {} of {}",
                        quote(&r.name),
                        quote_bytes(&r.source_bytes),
                        r.backup_type,
                        s.files_new,
                        s.files_changed,
                        s.files_unchanged,
                        human_bytes(s.bytes_read),
                        human_bytes(s.bytes_total)
                    );
                    if r.encrypted_at_source {
                        println!("  encrypted at the source (LUKS)");
                    }
                    for w in &r.warnings {
                        println!("  warning: {}", quote(w));
                    }
                }
                println!("added:       {}", human_bytes(b.stats.bytes_added));
                if let Some(c) = &b.requests {
                    println!("requests:    {}", c.summary());
                }
            }
        }
        BackupCmd::Wait {
            vault,
            backup,
            timeout,
        } => return wait_cmd(store, &vault, &backup, timeout),
        BackupCmd::Delete { vault, backup } => {
            backup_records::delete(store, &vault, &backup)?;
            println!("deleted backup {backup} of vault {vault}; run prune to free its space");
        }
    }
    Ok(0)
}

/// Wait for a backup to become available, showing its progress.
pub(super) fn wait_cmd(
    store: &Store,
    vault: &str,
    backup: &str,
    timeout: Option<f64>,
) -> Result<i32> {
    // On a terminal a bar (with an ETA) follows the backup's status; the
    // status gives a percentage, so the bar counts percent.
    // Cleared also when the wait ends in an error, so that the message is
    // not written over a bar.
    struct Clear(Option<indicatif::ProgressBar>);
    impl Drop for Clear {
        fn drop(&mut self) {
            if let Some(pb) = &self.0 {
                pb.finish_and_clear();
            }
        }
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let pb = indicatif::ProgressBar::new(100);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}% ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    });
    let bar = Clear(bar);
    backup_records::wait(
        store,
        vault,
        backup,
        // --timeout inf or 1e300 means wait on, rather than a panic in
        // Duration's conversion.
        timeout.map(|t| Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::MAX)),
        |s| {
            if let Some(pb) = &bar.0 {
                pb.set_position(u64::from(s.progress));
                pb.set_message(format!(
                    "backup {backup}: {} files, {} read",
                    s.files,
                    human_bytes(s.bytes_read)
                ));
            }
        },
    )?;
    drop(bar);
    println!("backup {backup} of vault {vault} is available");
    Ok(0)
}
