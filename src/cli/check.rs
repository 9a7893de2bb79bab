//! `cbrfs check`: verify the store, and with --repair rebuild indexes.

use super::{print_json, with_progress};
use crate::catalog::Store;
use crate::engine::check;
use crate::error::Result;
use crate::quote::quote;
use crate::rules::human_bytes;
use clap::Args;

#[derive(Args, Debug)]
pub(super) struct CheckArgs {
    /// Only this vault.
    vault: Option<String>,
    /// Also read and verify every blob.
    #[arg(long)]
    read_data: bool,
    /// Rebuild each vault's index from its packs (after an index was lost
    /// or damaged), then check.
    #[arg(long)]
    repair: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn check_cmd(store: &Store, c: CheckArgs) -> Result<i32> {
    if c.repair {
        let names = match &c.vault {
            Some(v) => vec![v.clone()],
            None => store.vault_names()?,
        };
        for v in &names {
            let r = check::repair(store, v)?;
            eprintln!(
                "vault {}: index rebuilt from {} packs ({} blobs); {} index files replaced; {} damaged packs",
                r.vault, r.packs, r.blobs, r.indexes_replaced, r.damaged_packs
            );
            for p in &r.problems {
                eprintln!("  {}", quote(p));
            }
        }
    }
    let progress = crate::engine::progress::Progress::default();
    // Only --read-data takes long enough to need a bar.
    let reports = with_progress(&progress, c.read_data && !c.json, || {
        check::check_with(store, c.vault.as_deref(), c.read_data, &progress)
    })?;
    let bad = reports.iter().any(|r| !r.problems.is_empty());
    if c.json {
        print_json(&reports)?;
    } else {
        for r in &reports {
            if r.problems.is_empty() {
                println!(
                    "vault {}: ok: {} backups, {} packs{}",
                    r.vault,
                    r.backups,
                    r.packs,
                    if c.read_data {
                        format!(
                            ", {} blobs ({}) read and verified",
                            r.blobs_read,
                            human_bytes(r.bytes_read)
                        )
                    } else {
                        String::new()
                    }
                );
            } else {
                println!("vault {}: {} problems", r.vault, r.problems.len());
                for p in &r.problems {
                    println!("  {}", quote(p));
                }
                for b in &r.damaged_backups {
                    println!("  damaged backup: {}", quote(b));
                }
            }
        }
    }
    Ok(if bad { 1 } else { 0 })
}
