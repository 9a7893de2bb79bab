//! The engine call of `cbrfs restore`: checks its input, resolves what the
//! user left implicit (the `--in-place` target), records its task in the
//! task log, runs the restore, and returns a report; the CLI only draws
//! progress and prints.

use super::{restore_with_progress, RestoreOptions, RestoreStats};
use crate::catalog::{self, Store};
use crate::engine::progress::Progress;
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
    let rec = crate::engine::browse::resolve_backup(store, &r.vault, &r.backup)?;
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
pub fn run(store: &Store, r: &RestoreRequest, progress: &Progress) -> Result<RestoreReport> {
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
    let result = restore_with_progress(
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
