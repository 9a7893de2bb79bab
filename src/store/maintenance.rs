//! The store's other writes, besides a backup run's ([`super::RepoWriter`]):
//! prune's commit (at once on a local vault, in two phases with marks on a
//! vault in a bucket) and the index rebuilt from the packs. Each keeps the
//! order readers rely on: a new index (and a mark) before the deletion of
//! what it replaces.

use super::index;
use super::pack::PackReader;
use super::reader::Repo;
use super::{BlobId, Location};
use crate::error::Result;

/// What [`Repo::rebuild_index`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IndexRebuild {
    /// Packs whose blob tables were read.
    pub packs: usize,
    /// Packs skipped (unreadable table) or indexed with a warning (bytes
    /// that do not hash to the name), each named in `problems`.
    pub damaged_packs: usize,
    /// Blobs in the rebuilt index.
    pub blobs: u64,
    /// Index files replaced.
    pub indexes_replaced: usize,
    /// What could not be used, or is doubtful.
    pub problems: Vec<String>,
}

impl Repo {
    /// Rebuild the vault's index from its packs: every sealed pack's blob
    /// table (checksummed) names its blobs, so a lost or damaged index
    /// loses nothing that is still in a pack. The new index is published
    /// before the old ones are deleted. The caller holds the vault's writer
    /// lock.
    pub fn rebuild_index(&self) -> Result<IndexRebuild> {
        let vault = &self.vault;
        let mut report = IndexRebuild::default();
        let mut entries = Vec::new();
        for (pack, _) in self.list_packs()? {
            let table = PackReader::open(&*self.storage, pack, self.key.seal_key())
                .and_then(|p| p.entries().map(|e| (p, e)));
            match table {
                Ok((p, es)) => {
                    // A sealed pack's table opened, so it is the pack's own;
                    // its blobs are authenticated when read.
                    if !p.sealed() && !p.verify_id() {
                        report.damaged_packs += 1;
                        report.problems.push(format!(
                            "vault {vault}: pack {pack} does not hash to its name: its blobs are indexed, and each is verified when read"
                        ));
                    }
                    report.packs += 1;
                    entries.extend(index::entries_of_pack(pack, &es));
                }
                Err(e) => {
                    report.damaged_packs += 1;
                    report.problems.push(e.to_string());
                }
            }
        }
        report.blobs = entries.len() as u64;
        let old = self.index_names()?;
        let (new, _) = index::write_index(&*self.storage, entries, self.key.seal_key())?;
        // Other hosts' cached listings name the new index before the old
        // ones go (docs/FORMAT.md §19.4).
        self.storage.publish()?;
        for f in old.iter().filter(|f| **f != new) {
            self.storage.delete(f)?;
            report.indexes_replaced += 1;
        }
        self.storage.publish()?;
        self.refresh()?;
        Ok(report)
    }

    /// Prune's commit, in the order that keeps every live blob findable at
    /// every instant: publish one index naming `keep` (the location of
    /// every live blob: in packs kept, and in the new packs a
    /// [`RepoWriter::finish_unindexed`] sealed), then delete the indexes
    /// mapped now (those the caller read), then the packs `dead`, except
    /// any that `keep` still names (a rewritten pack may come out as the
    /// same bytes). The caller holds the vault's writer lock.
    pub fn commit_prune(&self, keep: Vec<(BlobId, Location)>, dead: &[BlobId]) -> Result<()> {
        let live: std::collections::HashSet<BlobId> = keep.iter().map(|(_, l)| l.pack).collect();
        let old: Vec<String> = self
            .indexes()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        // 1. One index of every live blob, durable before anything goes.
        let (new, _) = index::write_index(&*self.storage, keep, self.key.seal_key())?;
        // Other hosts' cached listings name it before anything goes
        // (docs/FORMAT.md §19.4).
        self.storage.publish()?;
        // 2. The old indexes, then the dead packs: a reader that still maps
        // an old index and finds its pack gone re-lists and finds the new.
        self.retire(old.iter().map(String::as_str), &new, dead, &live)
    }

    /// The end of both prune commits, once the new index is out: delete
    /// the indexes `old` (but `new`), then the packs `dead` that no live
    /// blob is in, write the head again, and read the indexes anew.
    fn retire<'a>(
        &self,
        old: impl Iterator<Item = &'a str>,
        new: &str,
        dead: &[BlobId],
        live: &std::collections::HashSet<BlobId>,
    ) -> Result<()> {
        for f in old.filter(|f| *f != new) {
            self.storage.delete(f)?;
        }
        for p in dead.iter().filter(|p| !live.contains(p)) {
            self.storage
                .delete(&super::pack::pack_name(p))
                .map_err(|e| e.context(format!("vault {}: remove pack {p}", self.vault)))?;
        }
        self.storage.publish()?;
        self.refresh()?;
        self.drop_pack_cache();
        Ok(())
    }

    /// Prune's commit on a remote vault, the first of its two phases
    /// (issue 14): like [`Repo::commit_prune`], except that the packs
    /// `mark` are not deleted but named in a new mark made at `marked_ns`
    /// (with where the indexes mapped now put their blobs, for readers that
    /// still need them), which a later prune deletes after the grace
    /// period ([`Repo::delete_marked`]). The packs `delete_now` (no index
    /// named them: left by a failed backup) are deleted at once, except
    /// any `keep` names. In order: the mark, the new index, the old
    /// indexes, the packs of `delete_now`: a kill between any two steps
    /// leaves every live blob in an index, and every marked pack either
    /// still indexed or in the mark. Returns the mark's name, if one was
    /// written. The caller holds the vault's writer lock.
    pub fn commit_prune_marked(
        &self,
        keep: Vec<(BlobId, Location)>,
        mark: &[BlobId],
        delete_now: &[BlobId],
        marked_ns: i64,
    ) -> Result<Option<String>> {
        let live: std::collections::HashSet<BlobId> = keep.iter().map(|(_, l)| l.pack).collect();
        let mark: Vec<BlobId> = mark.iter().filter(|p| !live.contains(p)).copied().collect();
        let old = self.indexes();
        // Every blob the old indexes name at a place the new one does not
        // (dropped, or moved out of a rewritten pack), also in packs kept:
        // a reader of a backup deleted under it finds them in the mark. A
        // kept pack the mark names is never deleted for it (it is indexed).
        let kept: std::collections::HashSet<(BlobId, BlobId)> =
            keep.iter().map(|(id, l)| (*id, l.pack)).collect();
        let entries: Vec<(BlobId, Location)> = old
            .iter()
            .flat_map(|i| i.iter())
            .filter(|(id, l)| !kept.contains(&(*id, l.pack)))
            .collect();
        let mut mark_name = None;
        if !mark.is_empty() || !entries.is_empty() {
            let (name, _) = super::marks::write_mark(
                &*self.storage,
                marked_ns,
                &mark,
                entries,
                self.key.seal_key(),
            )
            .map_err(|e| e.context(format!("vault {}: write the prune mark", self.vault)))?;
            mark_name = Some(name);
        }
        let (new, _) = index::write_index(&*self.storage, keep, self.key.seal_key())?;
        // Other hosts' cached listings name the mark and the new index
        // before anything goes (docs/FORMAT.md §19.4).
        self.storage.publish()?;
        self.retire(old.iter().map(|i| i.name()), &new, delete_now, &live)?;
        Ok(mark_name)
    }

    /// The marks present now, read and checked, and a message for each
    /// one that cannot be read (its packs are then not known to be marked).
    pub fn marks(&self) -> Result<(Vec<super::Mark>, Vec<String>)> {
        let mut marks = Vec::new();
        let mut damaged = Vec::new();
        for n in super::marks::mark_names(&*self.storage)? {
            match super::Mark::open(&*self.storage, &n, self.key.seal_key()) {
                Ok(m) => marks.push(m),
                // Gone since the listing: another prune deleted it.
                Err(e) if super::storage::is_absent(&e) => {}
                Err(e) => damaged.push(e.context(format!("vault {}", self.vault)).to_string()),
            }
        }
        Ok((marks, damaged))
    }

    /// Prune's second phase: delete the marked packs `packs` (the caller
    /// chose those whose grace has passed and that no index names now),
    /// then the marks `marks` that named them. Packs first: a kill
    /// between leaves a mark naming packs already gone, which the next
    /// prune deletes again (deleting is idempotent). The caller holds the
    /// vault's writer lock.
    pub fn delete_marked(&self, packs: &[BlobId], marks: &[String]) -> Result<()> {
        for p in packs {
            self.storage
                .delete(&super::pack::pack_name(p))
                .map_err(|e| e.context(format!("vault {}: remove marked pack {p}", self.vault)))?;
        }
        for m in marks {
            self.storage
                .delete(m)
                .map_err(|e| e.context(format!("vault {}: remove prune mark {m}", self.vault)))?;
        }
        self.storage.publish()?;
        self.drop_pack_cache();
        Ok(())
    }
}
