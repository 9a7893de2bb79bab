//! Backup records as `cbrfs backup list|show|delete` and the JSON output
//! see them: the typed report of a backup (the backup object of
//! docs/JSON.md), listing with damaged records named, and deletion recorded
//! as a task. Taking a backup is [`super::backup`]'s.

use super::status::{self, Status};
use crate::catalog::{self, Store};
use crate::error::{Error, Result};
use crate::model::{BackupRecord, BackupStats};
use serde::Serialize;

/// A committed backup, as reported.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct BackupReport {
    /// Name, unique in its vault.
    pub name: String,
    /// The vault.
    pub vault: String,
    /// Description.
    pub description: String,
    /// Always `available`: only committed backups have a record.
    pub status: String,
    /// `full` when every resource was read in full, else `incremental`.
    #[serde(rename = "type")]
    pub backup_type: String,
    /// `manual`, `mount` or `policy`.
    pub origin: String,
    /// The policy that made it.
    pub policy: Option<String>,
    /// Start, RFC 3339.
    pub started: String,
    /// Commit, RFC 3339.
    pub finished: String,
    /// From the exact nanosecond times.
    pub duration_ms: i64,
    /// Totals.
    pub stats: BackupStats,
    /// One per resource, by name.
    pub resources: Vec<ResourceBackupReport>,
    /// Set on the report of `backup create --dry-run` only (the field is
    /// absent otherwise, as docs/JSON.md says).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Encrypted: exactly when its vault is (chosen at the vault's
    /// creation, never changed; the record itself is sealed).
    pub encrypted: bool,
    /// The requests and bytes the backup asked of its vault's bucket, up
    /// to its record (`backup show` of a remote vault's backup; absent for
    /// a local vault, and for records made before they were kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<crate::model::Requests>,
}

/// One resource of a backup, as reported.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ResourceBackupReport {
    /// Resource name.
    pub name: String,
    /// Source path at backup time (not UTF-8: U+FFFD).
    pub source: String,
    /// The same as recorded, for text output, which shows bytes that are
    /// not UTF-8 as `\xNN` rather than U+FFFD.
    #[serde(skip)]
    pub source_bytes: Vec<u8>,
    /// `full` or `incremental`.
    #[serde(rename = "type")]
    pub backup_type: String,
    /// The backup this one was incremental to.
    pub parent: Option<String>,
    /// Root tree blob id, hex.
    pub root: String,
    /// This resource's counters.
    pub stats: BackupStats,
    /// Entries that could not be backed up.
    pub warnings: Vec<String>,
    /// A disk whose backed-up bytes start with a LUKS header: encrypted at
    /// the source. Set by `backup show` (it reads the disk's first chunk);
    /// false in lists and for directories and servers.
    pub encrypted_at_source: bool,
}

fn full_or_incremental(full: bool) -> String {
    if full { "full" } else { "incremental" }.to_string()
}

/// The report of a backup record.
pub fn report(b: &BackupRecord) -> BackupReport {
    BackupReport {
        name: b.name.clone(),
        vault: b.vault.clone(),
        description: b.description.clone(),
        status: "available".to_string(),
        backup_type: full_or_incremental(b.full),
        origin: b.origin.as_str().to_string(),
        policy: b.policy.clone(),
        started: catalog::ns_to_rfc3339(b.started_ns),
        finished: catalog::ns_to_rfc3339(b.finished_ns),
        duration_ms: (b.finished_ns - b.started_ns) / 1_000_000,
        stats: b.stats,
        resources: b
            .resources
            .iter()
            .map(|r| ResourceBackupReport {
                name: r.name.clone(),
                source: String::from_utf8_lossy(&r.source).to_string(),
                source_bytes: r.source.clone(),
                backup_type: full_or_incremental(r.full),
                parent: r.parent.clone(),
                root: r.root.to_hex(),
                stats: r.stats,
                warnings: r.warnings.clone(),
                encrypted_at_source: false,
            })
            .collect(),
        dry_run: false,
        encrypted: false,
        requests: None,
    }
}

/// What `backup list` found.
#[derive(Debug)]
pub struct BackupList {
    /// Readable backups: by vault name, then oldest first.
    pub backups: Vec<BackupReport>,
    /// One message per record that could not be read (it names the vault
    /// and the backup); the others are still listed.
    pub damaged: Vec<String>,
    /// Encrypted vaults left out of a listing of every vault because their
    /// key is not at hand (no password given, a wrong one): one message
    /// each, naming the vault and why. Naming the vault asks for it.
    pub locked: Vec<String>,
}

/// The backups of `vault`, or of every vault.
pub fn list(store: &Store, vault: Option<&str>) -> Result<BackupList> {
    let names = match vault {
        Some(v) => {
            store.vault(v)?;
            vec![v.to_string()]
        }
        None => store.vault_names()?,
    };
    let mut out = BackupList {
        backups: Vec::new(),
        damaged: Vec::new(),
        locked: Vec::new(),
    };
    for v in &names {
        let cfg = match vault {
            Some(_) => store.vault(v),
            None => store.vault_settings(v),
        };
        let encrypted = match cfg {
            Ok(c) => match c.locked {
                // One locked vault must not hide the others' backups.
                Some(why) => {
                    out.locked.push(why);
                    continue;
                }
                None => c.encrypted,
            },
            Err(e) if vault.is_none() => {
                out.damaged.push(e.to_string());
                continue;
            }
            Err(e) => return Err(e),
        };
        for r in store.backups(v)? {
            match r {
                Ok(b) => out.backups.push(BackupReport {
                    encrypted,
                    ..report(&b)
                }),
                Err(e) => out.damaged.push(e.to_string()),
            }
        }
    }
    Ok(out)
}

/// One backup.
pub fn show(store: &Store, vault: &str, backup: &str) -> Result<BackupReport> {
    let cfg = store.vault(vault)?;
    let (rec, requests) = store.backup_with_requests(vault, backup)?;
    let mut r = report(&rec);
    r.encrypted = cfg.encrypted;
    r.requests = requests;
    let disks: Vec<_> = rec
        .resources
        .iter()
        .filter(|p| p.kind == crate::model::ResourceKind::Disk)
        .collect();
    if !disks.is_empty() {
        let repo = store.repo(vault)?;
        for p in disks {
            let luks = crate::engine::luks::backup_is_luks(&repo, &p.meta).map_err(|e| {
                e.context(format!("vault {vault}, backup {backup}, disk {}", p.name))
            })?;
            if let Some(out) = r.resources.iter_mut().find(|x| x.name == p.name) {
                out.encrypted_at_source = luks;
            }
        }
    }
    Ok(r)
}

/// Delete a backup's record; its data goes with the next prune. Recorded
/// as a `delete_backup` task (also when refused, so the log shows the
/// attempt).
pub fn delete(store: &Store, vault: &str, backup: &str) -> Result<()> {
    store.vault(vault)?;
    let t = crate::tasks::start(
        store,
        crate::tasks::TaskType::DeleteBackup,
        vault,
        None,
        Some(backup),
        catalog::now_ns(),
    );
    let r = (|| {
        // A vault in a bucket: deleting a record is a writer's act there
        // (it writes the vault's head first, docs/FORMAT.md §19.4), so it
        // takes the writer lock and lease and waits for no other host's
        // writer. A local vault's record is one file, deleted as before.
        let _lock = match store.registration(vault)? {
            Some(_) => Some(store.try_backup_lock(vault)?),
            None => None,
        };
        store.delete_backup(vault, backup)
    })();
    t.finish(&r);
    r
}

/// Wait until backup `backup` of `vault` (e.g. one that mkdir started) is
/// committed, calling `on_status` with each status it reports meanwhile.
/// Fails when the backup failed, when the process running it died, when it
/// neither exists nor runs (BackupService.6200; a second's grace first, as
/// the mkdir's thread may not have written its first status yet), or when
/// `timeout` passed.
pub fn wait(
    store: &Store,
    vault: &str,
    backup: &str,
    timeout: Option<std::time::Duration>,
    mut on_status: impl FnMut(&Status),
) -> Result<()> {
    use std::time::{Duration, Instant};
    store.vault(vault)?;
    crate::rules::check_name("backup name", backup)?;
    // A timeout too long to add to the clock is no deadline at all.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut missing_since: Option<Instant> = None;
    loop {
        if store.backup_path(vault, backup).exists() {
            return Ok(());
        }
        match status::read(store, vault, backup) {
            Some(s) if s.status == status::RunStatus::Error => {
                return Err(Error::failed(format!(
                    "backup {backup} of vault {vault} failed: {}",
                    s.error.unwrap_or_default()
                )))
            }
            Some(s) if !crate::sys::pid_alive(s.pid) => {
                return Err(Error::failed(format!(
                    "backup {backup} of vault {vault} failed: its process {} ended before it was committed",
                    s.pid
                )))
            }
            Some(s) => on_status(&s),
            None => {
                let since = *missing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    return Err(Error::not_found(format!(
                        "backup {backup} of vault {vault} does not exist and is not running"
                    ))
                    .code("BackupService.6200"));
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::failed(format!(
                "backup {backup} of vault {vault} is still running after the timeout"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
