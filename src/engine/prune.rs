//! Prune: give back the space of deleted backups. Packs no backup uses are
//! removed; packs mostly unused are rewritten (their live blobs copied into
//! new packs) and removed.
//!
//! # What may run beside what
//!
//! | running \ beside | mount reads                 | backup (CLI, mkdir, policy) | prune |
//! |------------------|-----------------------------|-----------------------------|-------|
//! | prune            | yes (1)                     | no: both take `backup.lock` exclusively; the second is refused (BackupService.6125) | no (same lock) |
//!
//! (1) Why reads stay correct: prune writes the new packs and then one new
//! index naming every live blob, durably, before it removes any old index
//! or pack. A reader that mapped a pack keeps a valid mapping after the
//! unlink (packs are never truncated). A reader whose mapped index names a
//! pack prune removed fails to open it, re-lists the indexes and finds the
//! blob in the new index ([`crate::store::Repo::read_at`]). Every blob read
//! is verified against its id, so no path returns wrong bytes.
//!
//! Why no chunk a backup counts on disappears: a backup holds `backup.lock`
//! from before it looks up its first blob until its record is written, and
//! prune runs only while holding the same lock, after the last record is
//! written. A crash of prune at any instant leaves every blob findable:
//! before the new index, the old ones still name the old packs; after it,
//! the old indexes only duplicate entries; leftover packs are removed by
//! the next prune.

use super::progress::Progress;
use super::visit;
use crate::catalog::{self, Store};
use crate::error::{Error, Result};
use crate::model::BackupRecord;
use crate::store::{BlobId, Location, Repo, RepoWriter};
use std::collections::{HashMap, HashSet};

/// Default: rewrite a pack when less than this share (%) of it is live.
pub const REPACK_THRESHOLD: u8 = 50;

/// Add every blob backup `rec` uses (trees, chunk lists, chunks) to `out`,
/// by the walk check uses ([`visit::walk_resource`]). Trees in `seen` were
/// walked already (by this or another backup). Any damage is an error:
/// prune cannot tell which blobs a backup it cannot read needs.
pub fn backup_blobs(
    repo: &Repo,
    rec: &BackupRecord,
    seen: &mut visit::Seen,
    out: &mut HashSet<BlobId>,
) -> Result<()> {
    struct Keep<'a>(&'a mut HashSet<BlobId>);
    impl visit::Visitor for Keep<'_> {
        fn blob(&mut self, id: &BlobId, _: visit::Use, _: &dyn Fn() -> String) -> bool {
            self.0.insert(*id);
            true
        }
        fn damage(&mut self, at: String, what: String) -> Result<()> {
            Err(Error::corrupt(format!("{at}: {what}")))
        }
    }
    for part in &rec.resources {
        visit::walk_resource(repo, part, seen, &mut Keep(out)).map_err(|e| {
            e.context(format!(
                "vault {}, backup {}, resource {}",
                rec.vault, rec.name, part.name
            ))
        })?;
    }
    Ok(())
}

/// Every indexed blob with one location each (the first index wins), and
/// how many index files were read.
fn indexed(repo: &Repo) -> (HashMap<BlobId, Location>, usize) {
    let mut map = HashMap::new();
    repo.for_each_entry(|id, loc| {
        map.entry(id).or_insert(loc);
    });
    (map, repo.index_count())
}

/// What prune did (or would do, with `dry_run`).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneReport {
    /// The vault.
    pub vault: String,
    /// Backups whose blobs were kept.
    pub backups: usize,
    /// Packs removed whole.
    pub packs_removed: usize,
    /// Packs rewritten.
    pub packs_rewritten: usize,
    /// Packs no index named (left by a failed or killed backup), removed.
    pub orphan_packs: usize,
    /// Blobs no backup uses, dropped.
    pub blobs_removed: u64,
    /// Live blobs copied into new packs.
    pub blobs_moved: u64,
    /// Bytes the vault took before.
    pub bytes_before: u64,
    /// Bytes it takes after.
    pub bytes_after: u64,
    /// True if nothing was changed.
    pub dry_run: bool,
}

/// Prune vault `vault`. Refuses to run beside a backup, and refuses when a
/// backup cannot be read (it could not tell which blobs that backup needs).
pub fn prune(store: &Store, vault: &str, dry_run: bool, threshold: u8) -> Result<PruneReport> {
    prune_with(store, vault, dry_run, threshold, &Progress::default())
}

/// [`prune`], counting in `progress` the live bytes it copies out of
/// mostly dead packs, the part that takes time (for a progress bar).
pub fn prune_with(
    store: &Store,
    vault: &str,
    dry_run: bool,
    threshold: u8,
    progress: &Progress,
) -> Result<PruneReport> {
    if threshold > 100 {
        return Err(Error::param(format!(
            "repack threshold {threshold} is out of range: 0 to 100 (%)"
        )));
    }
    store.vault(vault)?;
    let _lock = store.try_backup_lock(vault)?;
    let repo = store.repo(vault)?;
    // Never remove packs while an index cannot be read: the packs it names
    // would look unused, and some may hold blobs live backups need.
    let damaged = repo.index_errors();
    if !damaged.is_empty() {
        return Err(Error::corrupt(format!(
            "prune of vault {vault} refused: {} (run 'cbrfs check')",
            damaged.join("; ")
        )));
    }
    if !dry_run {
        repo.remove_stale_temps()?;
    }
    let mut report = PruneReport {
        vault: vault.to_string(),
        dry_run,
        bytes_before: repo.used_bytes()?,
        ..Default::default()
    };
    let mut live = HashSet::new();
    let mut seen = visit::Seen::default();
    for rec in store.backups(vault)? {
        let rec = rec.map_err(|e| {
            e.context(format!(
                "prune of vault {vault} refused: a backup record cannot be read (run 'cbrfs check')"
            ))
        })?;
        backup_blobs(&repo, &rec, &mut seen, &mut live).map_err(|e| {
            e.context(format!(
                "prune of vault {vault} refused: backup {} cannot be read (run 'cbrfs check')",
                rec.name
            ))
        })?;
        report.backups += 1;
    }
    let (locations, index_files) = indexed(&repo);
    // A blob a backup uses that no index names (an index file lost) may
    // still be in a pack that now looks orphaned: removing that pack would
    // turn a repairable store into lost data.
    let unindexed = live.iter().filter(|id| !locations.contains_key(id)).count();
    if unindexed > 0 {
        return Err(Error::corrupt(format!(
            "prune of vault {vault} refused: {unindexed} blobs its backups use are in no index (run 'cbrfs check')"
        )));
    }
    // Live and total bytes per indexed pack.
    let mut per_pack: HashMap<BlobId, (u64, Vec<(BlobId, Location)>)> = HashMap::new();
    for (id, loc) in &locations {
        let e = per_pack.entry(loc.pack).or_default();
        if live.contains(id) {
            e.0 += loc.stored_len as u64;
            e.1.push((*id, *loc));
        } else {
            report.blobs_removed += 1;
        }
    }
    let on_disk: HashMap<BlobId, u64> = repo.list_packs()?.into_iter().collect();
    let mut remove: Vec<BlobId> = Vec::new();
    let mut rewrite: Vec<BlobId> = Vec::new();
    let mut keep_entries: Vec<(BlobId, Location)> = Vec::new();
    for (pack, size) in &on_disk {
        match per_pack.get(pack) {
            None => {
                report.orphan_packs += 1;
                remove.push(*pack);
            }
            Some((0, _)) => {
                report.packs_removed += 1;
                remove.push(*pack);
            }
            Some((live_bytes, entries)) => {
                // A pack holding no byte that its live blobs, their table
                // entries and the header and footer do not need has nothing
                // to give back, however small its blobs are beside its table
                // and footer: rewritten, it would come out the same pack.
                let needed = crate::store::pack_overhead(entries.len()) + live_bytes;
                if *size > needed
                    && (*live_bytes as u128) * 100 < (*size as u128) * threshold as u128
                {
                    report.packs_rewritten += 1;
                    rewrite.push(*pack);
                } else {
                    keep_entries.extend(entries.iter().copied());
                }
            }
        }
    }
    let nothing_to_do = remove.is_empty() && rewrite.is_empty() && report.blobs_removed == 0;
    if nothing_to_do && index_files <= 1 {
        report.bytes_after = report.bytes_before;
        return Ok(report);
    }
    if dry_run {
        // The figure the real run would reach, computed the way it writes:
        // the packs kept, the new packs the moved blobs fill, and the one
        // index replacing all others (merging indexes frees bytes too, which
        // an estimate from the packs alone missed: issue #16).
        let moved: Vec<(BlobId, Location)> = rewrite
            .iter()
            .flat_map(|p| per_pack[p].1.iter().copied())
            .collect();
        report.blobs_moved = moved.len() as u64;
        let new_packs = crate::store::pack_sizes_for(&moved);
        let kept_packs: HashSet<BlobId> = keep_entries.iter().map(|(_, l)| l.pack).collect();
        let kept_bytes: u64 = kept_packs.iter().filter_map(|p| on_disk.get(p)).sum();
        let index_bytes = crate::store::index_size(
            kept_packs.len() + new_packs.len(),
            keep_entries.len() + moved.len(),
        );
        report.bytes_after = kept_bytes + new_packs.iter().sum::<u64>() + index_bytes;
        return Ok(report);
    }
    // 1. Copy the live blobs of mostly dead packs into new packs.
    let cfg = store.vault(vault)?;
    let mut writer = RepoWriter::new(&repo, cfg.compress());
    progress.add_total(rewrite.iter().map(|p| per_pack[p].0).sum());
    for p in &rewrite {
        for (id, loc) in &per_pack[p].1 {
            progress.add_done(u64::from(loc.stored_len));
            let data = repo.read_at(id, loc)?;
            writer.copy(*id, loc.kind, &data)?;
            report.blobs_moved += 1;
        }
    }
    let (moved, _) = writer.finish_unindexed()?;
    keep_entries.extend(moved);
    // 2. The store publishes one index of every live blob, then deletes
    // the old indexes and the dead packs, in that order.
    remove.extend(rewrite.iter().copied());
    repo.commit_prune(keep_entries, &remove)?;
    report.bytes_after = repo.used_bytes()?;
    Ok(report)
}

/// For each backup of a vault, the stored bytes only it uses: what
/// deleting it (and pruning) would free. Oldest first.
pub fn exclusive_bytes(store: &Store, vault: &str) -> Result<Vec<(String, u64)>> {
    let repo = store.repo(vault)?;
    let (locations, _) = indexed(&repo);
    let mut sets = Vec::new();
    let mut count: HashMap<BlobId, u32> = HashMap::new();
    for rec in store.backups(vault)?.into_iter().flatten() {
        let mut set = HashSet::new();
        backup_blobs(&repo, &rec, &mut visit::Seen::default(), &mut set)?;
        for id in &set {
            *count.entry(*id).or_default() += 1;
        }
        sets.push((rec.name.clone(), set));
    }
    Ok(sets
        .into_iter()
        .map(|(name, set)| {
            let bytes = set
                .iter()
                .filter(|id| count.get(id) == Some(&1))
                .filter_map(|id| locations.get(id))
                .map(|l| l.stored_len as u64)
                .sum();
            (name, bytes)
        })
        .collect())
}

/// Prune one vault, recorded as a `prune` task unless it is a dry run
/// (which changes nothing).
pub fn prune_vault(
    store: &Store,
    vault: &str,
    dry_run: bool,
    threshold: u8,
    progress: &Progress,
) -> Result<PruneReport> {
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
    let r = prune_with(store, vault, dry_run, threshold, progress);
    if let Some(t) = t {
        t.finish(&r);
    }
    r
}
