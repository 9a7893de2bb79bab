//! Check: the structure of every backup (records decode, every tree is
//! present and decodes, every chunk and chunk list is indexed, every indexed
//! pack exists and is well formed), and with `read_data` every blob of every
//! pack read and verified against its id. Damage is traced to the backups
//! and files it affects.

use super::progress::Progress;
use super::visit;
use crate::catalog::Store;
use crate::error::Result;
use crate::model::BackupRecord;
use crate::store::{BlobId, Repo};
use std::collections::{BTreeSet, HashSet};

/// What check found in one vault.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct VaultCheck {
    /// The vault.
    pub vault: String,
    /// Backups checked.
    pub backups: usize,
    /// Packs checked.
    pub packs: usize,
    /// Blobs read and verified (with `read_data`).
    pub blobs_read: u64,
    /// Bytes read and verified (with `read_data`).
    pub bytes_read: u64,
    /// Problems, each naming what is affected.
    pub problems: Vec<String>,
    /// Backups affected by a problem.
    pub damaged_backups: BTreeSet<String>,
}

/// Check `vault`, or every vault.
pub fn check(store: &Store, vault: Option<&str>, read_data: bool) -> Result<Vec<VaultCheck>> {
    check_with(store, vault, read_data, &Progress::default())
}

/// [`check`], counting in `progress` the stored bytes that `read_data`
/// reads (for a progress bar): each vault adds its total when opened.
pub fn check_with(
    store: &Store,
    vault: Option<&str>,
    read_data: bool,
    progress: &Progress,
) -> Result<Vec<VaultCheck>> {
    super::vault_targets(store, vault)?
        .iter()
        .map(|v| {
            let c = check_vault(store, v, read_data, progress)?;
            // For `cbrfs metrics`: when each vault was last checked, how.
            super::metrics::record_check(
                store,
                v,
                &super::metrics::LastCheck {
                    finished_ns: crate::catalog::now_ns(),
                    ok: c.problems.is_empty(),
                    read_data,
                    problems: c.problems.len(),
                },
            );
            Ok(c)
        })
        .collect()
}

fn check_vault(
    store: &Store,
    vault: &str,
    read_data: bool,
    progress: &Progress,
) -> Result<VaultCheck> {
    let mut out = VaultCheck {
        vault: vault.to_string(),
        ..Default::default()
    };
    // The vault's own record: settings and resources.
    if let Err(e) = store.vault(vault) {
        out.problems.push(e.to_string());
    }
    let repo = match store.repo(vault) {
        Ok(r) => r,
        Err(e) => {
            out.problems
                .push(format!("vault {vault}: store cannot be opened: {e}"));
            return Ok(out);
        }
    };
    // Indexes and packs.
    let mut bad_blobs: HashSet<BlobId> = HashSet::new();
    let mut packs: BTreeSet<BlobId> = BTreeSet::new();
    out.problems.extend(repo.index_errors());
    out.problems.extend(repo.verify_indexes());
    packs.extend(repo.indexed_packs());
    out.packs = packs.len();
    for p in &packs {
        match repo.check_pack(*p, read_data) {
            Ok(problems) => out.problems.extend(problems),
            Err(e) => {
                out.problems.push(e.to_string());
                mark_pack_bad(&repo, *p, &mut bad_blobs);
            }
        }
    }
    if read_data {
        let mut total = 0;
        repo.for_each_entry(|_, loc| total += u64::from(loc.stored_len));
        progress.add_total(total);
        repo.for_each_entry(|id, loc| {
            progress.add_read(u64::from(loc.stored_len));
            match repo.read_at(&id, &loc) {
                Ok(d) => {
                    out.blobs_read += 1;
                    out.bytes_read += d.len() as u64;
                }
                Err(e) => {
                    if bad_blobs.insert(id) {
                        out.problems.push(e.to_string());
                    }
                }
            }
        });
    }
    // Backups.
    // By name, so that a record that cannot be read is still listed among
    // the damaged backups.
    for name in store.backup_names(vault)? {
        match store.backup(vault, &name) {
            Ok(rec) => {
                out.backups += 1;
                check_backup(&repo, &rec, &bad_blobs, &mut out);
            }
            // Deleted since the listing: nothing to check.
            Err(e) if e.kind() == crate::error::Kind::NotFound => {}
            Err(e) => {
                out.problems.push(e.to_string());
                out.damaged_backups.insert(name);
            }
        }
    }
    Ok(out)
}

fn mark_pack_bad(repo: &Repo, pack: BlobId, bad: &mut HashSet<BlobId>) {
    repo.for_each_entry(|id, loc| {
        if loc.pack == pack {
            bad.insert(id);
        }
    });
}

/// Walk every blob of a backup once ([`visit::walk_resource`]); report
/// missing or damaged blobs with the file they belong to.
fn check_backup(repo: &Repo, rec: &BackupRecord, bad: &HashSet<BlobId>, out: &mut VaultCheck) {
    let mut problems = Vec::new();
    for part in &rec.resources {
        let mut v = CheckVisitor {
            repo,
            bad,
            prefix: format!(
                "vault {}, backup {}, resource {}",
                rec.vault, rec.name, part.name
            ),
            problems: &mut problems,
            last: None,
        };
        // A check visitor never stops the walk.
        let _ = visit::walk_resource(repo, part, &mut visit::Seen::default(), &mut v);
    }
    if !problems.is_empty() {
        out.damaged_backups.insert(rec.name.clone());
        out.problems.extend(problems);
    }
}

/// Check's side of the walk: every blob must be indexed and not in a
/// damaged pack; one problem per file or directory.
struct CheckVisitor<'a> {
    repo: &'a Repo,
    bad: &'a HashSet<BlobId>,
    prefix: String,
    problems: &'a mut Vec<String>,
    /// The path of the last problem, so that a file with many missing
    /// chunks is reported once.
    last: Option<String>,
}

impl CheckVisitor<'_> {
    fn report(&mut self, at: String, what: String) {
        if self.last.as_deref() == Some(at.as_str()) {
            return;
        }
        self.problems.push(format!("{}: {at}: {what}", self.prefix));
        self.last = Some(at);
    }
}

impl visit::Visitor for CheckVisitor<'_> {
    fn blob(&mut self, id: &BlobId, what: visit::Use, at: &dyn Fn() -> String) -> bool {
        if self.bad.contains(id) {
            let msg = match what {
                visit::Use::Tree => "directory is damaged".to_string(),
                _ => format!("file data is damaged (blob {id})"),
            };
            self.report(at(), msg);
            return false;
        }
        // `locate`, not `lookup`: a prune beside this check may have
        // rewritten the index that named the blob since the repo listed it.
        match self.repo.locate(id) {
            Ok(Some(_)) => {}
            Ok(None) => {
                self.report(at(), format!("blob {id} is missing"));
                return false;
            }
            Err(e) => {
                self.report(at(), format!("blob {id} cannot be located: {e}"));
                return false;
            }
        }
        true
    }

    fn damage(&mut self, at: String, what: String) -> Result<()> {
        self.report(at, what);
        Ok(())
    }
}

/// What a repair did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RepairReport {
    /// The vault.
    pub vault: String,
    /// Packs whose blob tables were read.
    pub packs: usize,
    /// Packs skipped because they are damaged (named in `problems`).
    pub damaged_packs: usize,
    /// Blobs in the rebuilt index.
    pub blobs: u64,
    /// Index files replaced.
    pub indexes_replaced: usize,
    /// What could not be used.
    pub problems: Vec<String>,
}

/// Rebuild the index of `vault`, or of every vault, one after the other
/// ([`repair`]), handing each report to `done` as it is made (so a caller
/// shows the vaults repaired before one that cannot be); the first vault
/// that cannot be repaired ends the run.
pub fn repair_vaults(
    store: &Store,
    vault: Option<&str>,
    mut done: impl FnMut(&RepairReport),
) -> Result<Vec<RepairReport>> {
    let mut out = Vec::new();
    for v in super::vault_targets(store, vault)? {
        let r = repair(store, &v)?;
        done(&r);
        out.push(r);
    }
    Ok(out)
}

/// Rebuild a vault's index from its packs: every sealed pack's blob table
/// (checksummed) names its blobs, so a lost or damaged index loses nothing
/// that is still in a pack. The new index is written before the old ones
/// are removed; runs under the vault's writer lock.
pub fn repair(store: &Store, vault: &str) -> Result<RepairReport> {
    store.vault(vault)?;
    let _lock = store.try_backup_lock(vault)?;
    let repo = store.repo(vault)?;
    let mut report = RepairReport {
        vault: vault.to_string(),
        ..Default::default()
    };
    let done = repo.rebuild_index()?;
    report.packs = done.packs;
    report.damaged_packs = done.damaged_packs;
    report.blobs = done.blobs;
    report.indexes_replaced = done.indexes_replaced;
    report.problems = done.problems;
    Ok(report)
}
