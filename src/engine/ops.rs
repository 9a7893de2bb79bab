//! The engine calls of the verbs whose work is done in modules of their
//! own: `restore` (in [`super::restore`]) and `prune` (in [`super::prune`]).
//! Each call checks its input, resolves what the user left implicit,
//! records its task in the task log, runs, and returns a report; the CLI
//! only draws progress and prints. (Vault, backup-record, server, policy
//! and task verbs have their calls in their own modules: [`super::vaults`],
//! [`super::backups`], [`super::servers`], [`super::policy`],
//! [`crate::tasks`].)

use super::progress::Progress;
use super::restore::{self, RestoreOptions, RestoreStats};
use crate::catalog::{self, Store};
use crate::error::{Error, Result};
use crate::model::ResourceKind;
use std::path::PathBuf;

/// What `cbrfs restore` asks for.
#[derive(Clone, Debug, Default)]
pub struct RestoreRequest {
    /// The vault.
    pub vault: String,
    /// The backup (`latest`: the newest).
    pub backup: String,
    /// Only this resource.
    pub resource: Option<String>,
    /// The target; None only with `options.in_place`.
    pub to: Option<PathBuf>,
    /// In place, filters, target trust.
    pub options: RestoreOptions,
}

/// What a restore did.
#[derive(Debug)]
pub struct RestoreReport {
    /// Where it restored to (with --in-place and no --to: the disk's own
    /// path, or `/` for a server).
    pub target: PathBuf,
    /// Counters, failed entries and notes.
    pub stats: RestoreStats,
}

/// Where a restore writes: `--to`, or for `--in-place` without it the
/// resource's own place (a disk's source path, a server's `/`).
fn target(store: &Store, r: &RestoreRequest) -> Result<PathBuf> {
    if let Some(t) = &r.to {
        return Ok(t.clone());
    }
    if !r.options.in_place {
        return Err(Error::invalid("give --to DIR, or --in-place"));
    }
    let rec = super::browse::resolve_backup(store, &r.vault, &r.backup)?;
    let res = r
        .resource
        .as_deref()
        .ok_or_else(|| Error::invalid("--in-place needs --resource: name the disk or server"))?;
    let part = rec
        .resources
        .iter()
        .find(|p| p.name == res)
        .ok_or_else(|| {
            Error::not_found(format!("resource {res:?} is not in backup {}", r.backup))
                .code("BackupService.6302")
        })?;
    Ok(match part.kind {
        ResourceKind::Disk => PathBuf::from(String::from_utf8_lossy(&part.source).to_string()),
        _ => PathBuf::from("/"),
    })
}

/// Restore, recorded as a `restore` task. Entries that could not be
/// restored do not make the call fail (the rest is restored and they are
/// in the report), but they end the task as failed, naming the first.
pub fn restore(store: &Store, r: &RestoreRequest, progress: &Progress) -> Result<RestoreReport> {
    store.vault(&r.vault)?;
    let to = target(store, r)?;
    let task = crate::tasks::start(
        store,
        crate::tasks::TaskType::Restore,
        &r.vault,
        r.resource.as_deref(),
        Some(&r.backup),
        catalog::now_ns(),
    );
    let result = restore::restore_with_progress(
        store,
        &r.vault,
        &r.backup,
        r.resource.as_deref(),
        &to,
        &r.options,
        progress,
    );
    match &result {
        Ok(st) if !st.errors.is_empty() => task.failed(&Error::failed(format!(
            "{} entries could not be restored; first: {}",
            st.errors.len(),
            st.errors[0]
        ))),
        _ => task.finish(&result),
    }
    Ok(RestoreReport {
        target: to,
        stats: result?,
    })
}

/// The vaults `prune` works on: the one named (which must exist), or every
/// vault.
pub fn prune_targets(store: &Store, vault: Option<&str>) -> Result<Vec<String>> {
    match vault {
        Some(v) => {
            store.vault(v)?;
            Ok(vec![v.to_string()])
        }
        None => store.vault_names(),
    }
}

/// Prune one vault, recorded as a `prune` task unless it is a dry run
/// (which changes nothing).
pub fn prune_vault(
    store: &Store,
    vault: &str,
    dry_run: bool,
    threshold: u8,
    progress: &Progress,
) -> Result<super::prune::PruneReport> {
    let t = (!dry_run).then(|| {
        crate::tasks::start(
            store,
            crate::tasks::TaskType::Prune,
            vault,
            None,
            None,
            catalog::now_ns(),
        )
    });
    let r = super::prune::prune_with(store, vault, dry_run, threshold, progress);
    if let Some(t) = t {
        t.finish(&r);
    }
    r
}
