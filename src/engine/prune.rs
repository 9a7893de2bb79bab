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
//! On a **remote vault** (a bucket several hosts read) prune runs in two
//! phases (issue 14): the packs no index needs any more are not deleted but
//! *marked* (a mark object names them with the time: store::marks), and a
//! later prune deletes them once the grace period (`--grace`, default 24 h,
//! like kopia's; rustic waits 23 h) has passed since the marking. A mount on
//! another host that mapped an older index keeps reading them meanwhile:
//! the packs are still there, and the mark tells where the blobs of a
//! backup deleted under it are. Packs no index ever named (left by a failed
//! backup) are deleted at once: no reader can know of them. A local vault
//! deletes at once (a local mount keeps mapped packs after an unlink).
//!
//! Why a marked pack is never needed by a newer backup: the new index
//! names no blob of a marked pack, and writers deduplicate only against
//! the indexes (never the marks), so a backup that meets such a blob again
//! stores it again, in a new pack. A marked pack that an index names again
//! (the same bytes stored again make the same pack name, in a clear vault)
//! is never deleted: the second phase deletes only packs no index names
//! and no mark still within its grace names.
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
use std::time::Duration;

/// Default: rewrite a pack when less than this share (%) of it is live.
pub const REPACK_THRESHOLD: u8 = 50;

/// How long a pack marked by prune on a remote vault is kept before a
/// later prune deletes it, unless `--grace` or [`GRACE_ENV`] says
/// otherwise: longer than any reader's view of the indexes (kopia waits
/// 24 h, rustic 23 h).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// The environment variable that sets the grace period when `--grace` is
/// not given (tests, and prunes a policy runs).
pub const GRACE_ENV: &str = "CBRFS_PRUNE_GRACE";

/// Parse a grace period such as `24h`, `90m`, `1h30m`, `30s` or `0`,
/// given by `source` (the option or variable, named in the error: exit 2).
pub fn parse_grace(text: &str, source: &str) -> Result<Duration> {
    let bad = || {
        Error::param(format!(
            "{source} {}: expected a duration that is not negative, such as 24h, 90m, 1h30m or 30s",
            crate::quote::quote(text)
        ))
    };
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let d: jiff::SignedDuration = t.parse().map_err(|_| bad())?;
    if d.is_negative() {
        return Err(bad());
    }
    Duration::try_from(d).map_err(|_| bad())
}

/// The grace period when no `--grace` is given: [`GRACE_ENV`] if set
/// (checked), else [`DEFAULT_GRACE`].
pub fn default_grace() -> Result<Duration> {
    match std::env::var(GRACE_ENV) {
        Ok(v) => parse_grace(&v, GRACE_ENV),
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_GRACE),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::param(format!(
            "{GRACE_ENV} is not UTF-8: expected a duration such as 24h"
        ))),
    }
}

/// What a prune is asked to do.
#[derive(Clone, Copy, Debug)]
pub struct PruneOptions {
    /// Say what would be done, change nothing.
    pub dry_run: bool,
    /// Rewrite a pack when less than this share (%) of it is live.
    pub threshold: u8,
    /// Remote vaults: delete a marked pack only this long after marking.
    pub grace: Duration,
}

impl PruneOptions {
    /// Options with the default grace period ([`default_grace`]).
    pub fn new(dry_run: bool, threshold: u8) -> Result<PruneOptions> {
        Ok(PruneOptions {
            dry_run,
            threshold,
            grace: default_grace()?,
        })
    }
}

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
    /// True for a remote vault: packs no index needs are marked, and
    /// deleted by a later prune once the grace period has passed.
    pub two_phase: bool,
    /// The grace period, seconds (remote vaults).
    pub grace_secs: u64,
    /// Packs this prune marked for deletion (remote vaults), and their
    /// bytes: still in the bucket until a prune after the grace period.
    pub packs_marked: usize,
    /// Bytes of the packs marked.
    pub bytes_marked: u64,
    /// Packs this prune deleted, and their bytes: on a local vault every
    /// pack it gave back; on a remote one the packs no index ever named
    /// and the packs marked by an earlier prune whose grace has passed.
    pub packs_deleted: usize,
    /// Bytes of the packs deleted.
    pub bytes_deleted: u64,
    /// Packs marked by earlier prunes still within their grace period,
    /// and their bytes.
    pub packs_waiting: usize,
    /// Bytes of the packs waiting.
    pub bytes_waiting: u64,
    /// Marks that could not be read, each with why (their packs are then
    /// marked again rather than deleted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Marks dated in the future (beyond clock skew) that this prune
    /// dated anew, now (remote vaults; docs/FORMAT.md §19.6).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub marks_redated: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Prune vault `vault` (with the default grace period). Refuses to run
/// beside a backup, and refuses when a backup cannot be read (it could not
/// tell which blobs that backup needs).
pub fn prune(store: &Store, vault: &str, dry_run: bool, threshold: u8) -> Result<PruneReport> {
    prune_opts(
        store,
        vault,
        &PruneOptions::new(dry_run, threshold)?,
        &Progress::default(),
    )
}

/// [`prune`] with every option given, counting in `progress` the live
/// bytes it copies out of mostly dead packs, the part that takes time (for
/// a progress bar).
pub fn prune_opts(
    store: &Store,
    vault: &str,
    opts: &PruneOptions,
    progress: &Progress,
) -> Result<PruneReport> {
    let PruneOptions {
        dry_run,
        threshold,
        grace,
    } = *opts;
    if threshold > 100 {
        return Err(Error::param(format!(
            "repack threshold {threshold} is out of range: 0 to 100 (%)"
        )));
    }
    store.vault(vault)?;
    let _lock = store.try_backup_lock(vault)?;
    let two_phase = store.registration(vault)?.is_some();
    // Prune deletes what no index it sees names: it sees the bucket's own
    // listings, never ones kept under a head that may be stale or replayed
    // (Storage::distrust_kept_listings).
    store.vault_storage(vault)?.distrust_kept_listings();
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
        two_phase,
        grace_secs: if two_phase { grace.as_secs() } else { 0 },
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
    // The marks of earlier prunes: those within their grace period name
    // packs that wait; the others' packs are deleted now. A local vault
    // deletes at once (its marks come only from a copy of a bucket).
    let (marks, problems) = repo.marks()?;
    for p in &problems {
        log::warn!("prune of vault {vault}: {p}");
    }
    report.problems = problems;
    let now = catalog::now_ns();
    let mut waiting: HashSet<BlobId> = HashSet::new();
    let mut expired: HashSet<BlobId> = HashSet::new();
    let mut expired_marks: Vec<String> = Vec::new();
    let mut redated = 0;
    for m in &marks {
        use crate::store::marks::{phase, Phase};
        match phase(m.marked_ns(), now, grace, two_phase) {
            Phase::Waiting => waiting.extend(m.packs()),
            Phase::Expired => {
                expired.extend(m.packs());
                expired_marks.push(m.name().to_string());
            }
            Phase::FutureDated => {
                // A clock gone wrong or a planted mark: dated anew, now.
                log::warn!(
                    "prune of vault {vault}: mark {} is dated {}, in the future: dated anew now, its packs wait the grace period from now",
                    m.name(),
                    catalog::ns_to_rfc3339(m.marked_ns())
                );
                if !dry_run {
                    m.redate(&**repo.storage(), now, repo.key().seal_key())
                        .map_err(|e| {
                            e.context(format!("vault {vault}: date mark {} anew", m.name()))
                        })?;
                }
                redated += 1;
                waiting.extend(m.packs());
            }
        }
    }
    report.marks_redated = redated;
    if redated > 0 && !dry_run {
        // Other hosts' kept listings of the marks (docs/FORMAT.md §19.4).
        repo.storage().publish()?;
    }
    let mut remove: Vec<BlobId> = Vec::new();
    let mut rewrite: Vec<BlobId> = Vec::new();
    let mut keep_entries: Vec<(BlobId, Location)> = Vec::new();
    // Packs no index names that a mark whose grace passed names, and no
    // mark within its grace: deleted in the second phase.
    let mut delete_marked: Vec<BlobId> = Vec::new();
    for (pack, size) in &on_disk {
        match per_pack.get(pack) {
            None if waiting.contains(pack) => {
                report.packs_waiting += 1;
                report.bytes_waiting += size;
            }
            None if expired.contains(pack) => {
                report.packs_deleted += 1;
                report.bytes_deleted += size;
                delete_marked.push(*pack);
            }
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
    // Which packs this run marks and which it deletes: on a remote vault
    // the packs indexes named are marked, the orphans deleted (marked too
    // when a mark cannot be read: an orphan may be one of its packs); on
    // a local vault all are deleted.
    let orphans: HashSet<BlobId> = remove
        .iter()
        .filter(|p| !per_pack.contains_key(p))
        .copied()
        .collect();
    let (mark, delete_now): (Vec<BlobId>, Vec<BlobId>) = if two_phase {
        remove
            .iter()
            .chain(&rewrite)
            .copied()
            .partition(|p| !orphans.contains(p) || !report.problems.is_empty())
    } else {
        (Vec::new(), remove.iter().chain(&rewrite).copied().collect())
    };
    let size_of = |ps: &[BlobId]| ps.iter().filter_map(|p| on_disk.get(p)).sum::<u64>();
    report.packs_marked = mark.len();
    report.bytes_marked = size_of(&mark);
    report.packs_deleted += delete_now.len();
    report.bytes_deleted += size_of(&delete_now);
    let nothing_to_do = remove.is_empty() && rewrite.is_empty() && report.blobs_removed == 0;
    // The first phase (a new index; packs marked or deleted) only when it
    // changes something; the second whenever a mark's grace has passed.
    let first_phase = !(nothing_to_do && index_files <= 1);
    if !first_phase {
        let deleted = size_of(&delete_marked);
        report.bytes_after = report.bytes_before.saturating_sub(deleted);
        if !dry_run && !expired_marks.is_empty() {
            repo.delete_marked(&delete_marked, &expired_marks)?;
            report.bytes_after = repo.used_bytes()?;
        }
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
        // Marked packs stay in the bucket until a later prune; packs of
        // marks whose grace passed are not among the kept ones.
        report.bytes_after = kept_bytes
            + new_packs.iter().sum::<u64>()
            + index_bytes
            + report.bytes_marked
            + report.bytes_waiting;
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
    // the old indexes and the dead packs, in that order; on a remote vault
    // it marks the packs indexes named instead of deleting them.
    if two_phase {
        repo.commit_prune_marked(keep_entries, &mark, &delete_now, now)?;
    } else {
        repo.commit_prune(keep_entries, &delete_now)?;
    }
    // 3. The second phase: packs marked long enough ago, then their marks.
    repo.delete_marked(&delete_marked, &expired_marks)?;
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

/// Prune one vault (with the default grace period), recorded as a `prune`
/// task unless it is a dry run (which changes nothing).
pub fn prune_vault(
    store: &Store,
    vault: &str,
    dry_run: bool,
    threshold: u8,
    progress: &Progress,
) -> Result<PruneReport> {
    prune_vault_opts(
        store,
        vault,
        &PruneOptions::new(dry_run, threshold)?,
        progress,
    )
}

/// [`prune_vault`] with every option given. The task's message says what
/// was marked and deleted.
pub fn prune_vault_opts(
    store: &Store,
    vault: &str,
    opts: &PruneOptions,
    progress: &Progress,
) -> Result<PruneReport> {
    let t = (!opts.dry_run).then(|| {
        crate::tasks::start(
            store,
            crate::tasks::TaskType::Prune,
            vault,
            None,
            None,
            catalog::now_ns(),
        )
    });
    let r = prune_opts(store, vault, opts, progress);
    if let Some(t) = t {
        match &r {
            Ok(rep) => t.success(Some(rep.summary())),
            Err(_) => t.finish(&r),
        }
    }
    r
}

impl PruneReport {
    /// One line of what was marked, deleted and left waiting, for the
    /// task log and the table.
    pub fn summary(&self) -> String {
        let hb = crate::rules::human_bytes;
        let mut s = format!(
            "{} packs deleted ({})",
            self.packs_deleted,
            hb(self.bytes_deleted)
        );
        if self.two_phase {
            s.push_str(&format!(
                ", {} packs marked ({}) for deletion after {}, {} marked earlier waiting ({})",
                self.packs_marked,
                hb(self.bytes_marked),
                grace_text(self.grace_secs),
                self.packs_waiting,
                hb(self.bytes_waiting)
            ));
            if self.marks_redated > 0 {
                s.push_str(&format!(
                    ", {} dated in the future, dated anew",
                    crate::rules::count(self.marks_redated as u64, "mark", "marks")
                ));
            }
        }
        s
    }
}

/// A grace period for people: `24h`, `90m`, `45s`.
fn grace_text(secs: u64) -> String {
    if secs >= 3600 && secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs >= 60 && secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grace periods people write are taken; anything else (negative, no
    /// unit, words) is exit 2 naming where it came from and the rule.
    #[test]
    fn grace_periods_parse_or_are_refused_naming_the_option() {
        for (text, secs) in [
            ("24h", 86_400),
            ("90m", 5_400),
            ("1h30m", 5_400),
            ("30s", 30),
            ("0", 0),
            ("0s", 0),
            (" 2h ", 7_200),
        ] {
            assert_eq!(
                parse_grace(text, "--grace").unwrap(),
                Duration::from_secs(secs),
                "{text}"
            );
        }
        for text in ["", "-1h", "soon", "12", "1 fortnight", "h"] {
            let e = parse_grace(text, "--grace").unwrap_err();
            assert_eq!(e.exit_code(), 2, "{text}");
            let m = e.to_string();
            assert!(m.contains("--grace") && m.contains("not negative"), "{m}");
        }
        assert_eq!(grace_text(86_400), "24h");
        assert_eq!(grace_text(90), "90s");
        assert_eq!(grace_text(120), "2m");
    }
}
