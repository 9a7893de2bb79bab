//! `cbrfs prune`: give back the space of deleted backups.

use super::{print_json, with_progress};
use crate::catalog::Store;
use crate::engine::prune::{self, PruneOptions};
use crate::error::Result;
use crate::quote::quote;
use crate::rules::human_bytes;
use clap::Args;

#[derive(Args, Debug)]
pub(super) struct PruneArgs {
    /// Only this vault [default: every vault].
    pub(super) vault: Option<String>,
    /// Say what would be freed, change nothing.
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Rewrite a pack when less than this share of it (%) is still used.
    #[arg(long, default_value_t = crate::engine::prune::REPACK_THRESHOLD, value_name = "PERCENT")]
    pub(super) repack_threshold: u8,
    /// Remote vaults: packs no backup needs are marked, and deleted by a
    /// later prune once this long has passed since (readers on other hosts
    /// may still read them) [default: $CBRFS_PRUNE_GRACE, else 24h].
    #[arg(long, value_name = "DURATION")]
    pub(super) grace: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

pub(super) fn prune_cmd(store: &Store, args: PruneArgs) -> Result<i32> {
    // Checked before any vault is touched: a bad value is exit 2 naming
    // the option (or the variable) and the rule.
    let grace = match &args.grace {
        Some(g) => prune::parse_grace(g, "--grace")?,
        None => prune::default_grace()?,
    };
    let opts = PruneOptions {
        dry_run: args.dry_run,
        threshold: args.repack_threshold,
        grace,
    };
    let names = crate::engine::vault_targets(store, args.vault.as_deref())?;
    let mut reports = Vec::new();
    // A vault that cannot be pruned now (busy, damaged) does not keep the
    // others from being pruned; it is named at the end.
    let mut errors = Vec::new();
    for v in &names {
        let progress = crate::engine::progress::Progress::default();
        let r = with_progress(&progress, !opts.dry_run && !args.json, || {
            prune::prune_vault_opts(store, v, &opts, &progress)
        });
        match r {
            Ok(rep) => reports.push(rep),
            Err(e) => errors.push(e),
        }
    }
    if args.json {
        print_json(&reports)?;
    } else {
        for r in &reports {
            println!(
                "vault {}: {} {} ({} -> {}); {} packs {}, {} rewritten, {} left by failed backups; {} unused blobs dropped, {} moved",
                r.vault,
                if r.dry_run { "would free" } else { "freed" },
                human_bytes(r.bytes_before.saturating_sub(r.bytes_after)),
                human_bytes(r.bytes_before),
                human_bytes(r.bytes_after),
                r.packs_removed,
                // On a remote vault they are marked, not yet removed.
                if r.two_phase { "unused" } else { "removed" },
                r.packs_rewritten,
                r.orphan_packs,
                r.blobs_removed,
                r.blobs_moved
            );
            println!(
                "vault {}: {}{}",
                r.vault,
                if r.dry_run { "would be: " } else { "" },
                r.summary()
            );
        }
    }
    let mut code = 0;
    for e in &errors {
        eprintln!("cbrfs: error: {}", quote(&e.to_string()));
        code = code.max(e.exit_code());
    }
    Ok(code)
}
