//! The write side of a vault's store: [`RepoWriter`] adds the blobs of one
//! backup run to packs and publishes the index naming them after the packs;
//! prune's commit and index repair (maintenance.rs) are the store's other
//! writes. Every one
//! keeps the order the readers rely on: a pack before the index naming it,
//! a new index before the deletion of what it replaces.

use super::compression::compress_blob;
use super::index::{self, IndexFile};
use super::pack::PackWriter;
use super::reader::Repo;
use super::storage::Storage;
use super::{BlobId, BlobKind, Compression, Location, PACK_TARGET};
use crate::error::{Error, IoContext, Result};
use std::sync::Arc;

/// Merge the indexes into one when a run ends with more than this many.
pub const MAX_INDEXES: usize = 16;

/// What adding a blob did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddOutcome {
    /// The blob's id.
    pub id: BlobId,
    /// True if the blob was new and stored; false if deduplicated.
    pub new: bool,
}

/// Counters of one writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Blobs stored.
    pub blobs_new: u64,
    /// Blobs found already stored.
    pub blobs_dedup: u64,
    /// Uncompressed bytes of the new blobs.
    pub raw_new: u64,
    /// Bytes of the sealed packs and index written.
    pub bytes_written: u64,
    /// Stored (compressed) bytes of the new blobs with their pack table
    /// entries, counted as they are added: what a part of a run added,
    /// without the packs' headers and footers and the index, which no one
    /// part owns.
    pub stored_new: u64,
}

/// Packs being sealed at once beside the writer: one sealing, one queued.
/// Bounds the memory of a run to four pack buffers.
const SEAL_QUEUE: usize = 1;

type Sealed = Result<(BlobId, u64, Vec<super::pack::PackEntry>)>;

/// Seals full packs on a thread of its own, so that the fsync and
/// read-back of a pack do not stall the threads that read and compress.
struct Sealer {
    tx: Option<std::sync::mpsc::SyncSender<PackWriter>>,
    rx: std::sync::mpsc::Receiver<Sealed>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Packs sent and not yet received back, and their bytes.
    queued: usize,
    queued_bytes: u64,
}

impl Sealer {
    fn start(storage: Arc<dyn Storage>) -> Result<Sealer> {
        let (tx, jobs) = std::sync::mpsc::sync_channel::<PackWriter>(SEAL_QUEUE);
        let (done, rx) = std::sync::mpsc::channel::<Sealed>();
        let thread = std::thread::Builder::new()
            .name("cbrfs-seal".into())
            .spawn(move || {
                for pack in jobs {
                    if done.send(pack.seal(&*storage)).is_err() {
                        return;
                    }
                }
            })
            .ctx(|| "start the pack sealer".to_string())?;
        Ok(Sealer {
            tx: Some(tx),
            rx,
            thread: Some(thread),
            queued: 0,
            queued_bytes: 0,
        })
    }

    /// Stop taking packs and wait for every one sent.
    fn drain(&mut self) -> Vec<Sealed> {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            // The thread only seals; a panic in it is a bug, reported as a
            // failed seal below (its pack never reaches the index).
            let _ = t.join();
        }
        let mut out: Vec<Sealed> = self.rx.try_iter().collect();
        if out.len() < self.queued {
            out.push(Err(Error::failed("the pack sealer stopped".to_string())));
        }
        self.queued = 0;
        self.queued_bytes = 0;
        out
    }
}

/// Adds blobs to a vault during one backup run. Blobs go to packs: data to
/// one, trees and chunk lists to another, so that reading a backup's
/// metadata (a mount's `find`, the next backup's comparison) touches few
/// pages. Full packs are sealed on a thread of their own. At
/// [`RepoWriter::finish`] the last packs are sealed and one index naming all
/// new blobs is written, after every pack it names is durable. Until then
/// no reader knows of the new blobs. The caller holds the vault's writer
/// lock for the writer's whole life.
pub struct RepoWriter<'r> {
    repo: &'r Repo,
    compress: bool,
    data: PackWriter,
    meta: PackWriter,
    sealer: Option<Sealer>,
    pending: std::collections::HashSet<BlobId>,
    sealed: Vec<(BlobId, Location)>,
    sealed_packs: Vec<BlobId>,
    finished: bool,
    stats: WriterStats,
    /// Why the writer refuses more blobs, once a seal failed.
    broken: Option<String>,
    /// Abort (with a no-space error) once written bytes would pass this.
    pub limit: Option<u64>,
    /// Count the blobs that would be added, and write nothing (a backup's
    /// `--dry-run`): no pack, no index.
    pub dry_run: bool,
    /// Index the packs sealed so far whenever this many bytes were sealed
    /// since the last such checkpoint: a backup killed or failed after it
    /// keeps them, and its retry deduplicates against them (issue #16).
    pub checkpoint_every: Option<u64>,
    /// Checkpoint as well once a pack was sealed this long after the last
    /// checkpoint (or the start): a slow backup keeps its work too.
    pub checkpoint_after: Option<std::time::Duration>,
    /// When the last checkpoint was written (or the writer made).
    last_checkpoint: std::time::Instant,
    /// Bytes sealed since the last checkpoint.
    since_checkpoint: u64,
    /// True once a checkpoint wrote an index.
    checkpointed: bool,
}

impl<'r> RepoWriter<'r> {
    /// A writer for `repo`; `compress` selects zstd.
    pub fn new(repo: &'r Repo, compress: bool) -> Self {
        RepoWriter {
            repo,
            compress,
            data: PackWriter::with_seal(repo.key.seal_key().cloned()),
            meta: PackWriter::with_seal(repo.key.seal_key().cloned()),
            sealer: None,
            pending: std::collections::HashSet::new(),
            sealed: Vec::new(),
            sealed_packs: Vec::new(),
            finished: false,
            stats: WriterStats::default(),
            broken: None,
            limit: None,
            dry_run: false,
            checkpoint_every: None,
            checkpoint_after: None,
            last_checkpoint: std::time::Instant::now(),
            since_checkpoint: 0,
            checkpointed: false,
        }
    }

    /// The repo written to.
    pub fn repo(&self) -> &'r Repo {
        self.repo
    }
    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    /// True if `id` is stored already or added in this run.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.pending.contains(id) || self.repo.lookup(id).is_some()
    }

    /// Add `data` as a blob of `kind`, unless it is stored already.
    pub fn add(&mut self, kind: BlobKind, data: &[u8]) -> Result<AddOutcome> {
        let id = self.repo.key.id(data);
        self.add_with_id(id, kind, data)
    }

    /// Add `data` whose id the caller computed with this vault's key.
    pub fn add_with_id(&mut self, id: BlobId, kind: BlobKind, data: &[u8]) -> Result<AddOutcome> {
        if self.contains(&id) {
            self.stats.blobs_dedup += 1;
            return Ok(AddOutcome { id, new: false });
        }
        self.store_blob(id, kind, data)
    }

    /// Store a blob that is in the index already, into a new pack (prune
    /// moving live blobs out of mostly dead packs); deduplicates only
    /// within this writer.
    pub fn copy(&mut self, id: BlobId, kind: BlobKind, data: &[u8]) -> Result<AddOutcome> {
        if self.pending.contains(&id) {
            return Ok(AddOutcome { id, new: false });
        }
        self.store_blob(id, kind, data)
    }

    fn store_blob(&mut self, id: BlobId, kind: BlobKind, data: &[u8]) -> Result<AddOutcome> {
        self.pending.insert(id);
        let compressed = if self.compress {
            compress_blob(data)
        } else {
            None
        };
        let compressed = compressed.as_deref().map(|c| (Compression::Zstd, c));
        self.append_reserved(id, kind, data, compressed)?;
        Ok(AddOutcome { id, new: true })
    }

    /// True if `id` is stored or being stored, counted as a deduplicated
    /// blob like [`RepoWriter::reserve`]'s; nothing is reserved when it is
    /// not (the caller then stores the bytes under the id it computes).
    pub fn known(&mut self, id: &BlobId) -> bool {
        let known = self.contains(id);
        if known {
            self.stats.blobs_dedup += 1;
        }
        known
    }

    /// Reserve `id` for a blob the caller will append with
    /// [`RepoWriter::append_reserved`]: true if it is new (and now
    /// reserved), false if stored or reserved already. Lets several threads
    /// compress outside the writer's lock while deduplicating exactly.
    pub fn reserve(&mut self, id: BlobId) -> bool {
        if self.known(&id) {
            return false;
        }
        self.pending.insert(id);
        true
    }

    /// True if this writer compresses (so callers compress before
    /// [`RepoWriter::append_reserved`]).
    pub fn compresses(&self) -> bool {
        self.compress
    }

    /// Append a reserved blob: its raw bytes and, if it paid, its
    /// compressed form and how it was compressed ([`compress_blob`]'s
    /// zstd, or a disk chunk's [`super::DiskCodec`]).
    pub fn append_reserved(
        &mut self,
        id: BlobId,
        kind: BlobKind,
        data: &[u8],
        compressed: Option<(Compression, &[u8])>,
    ) -> Result<()> {
        if let Some(why) = &self.broken {
            return Err(Error::failed(format!(
                "vault {}: the pack writer failed earlier ({why}) and refuses more blobs",
                self.repo.vault
            )));
        }
        let meta = kind != BlobKind::Data;
        if self.dry_run {
            // Reserved (in `pending`), so a second copy deduplicates as it
            // would; counted as stored; dropped.
            let stored = compressed.map_or(data.len(), |(_, c)| c.len());
            self.stats.stored_new += (stored + super::pack::ENTRY_LEN) as u64;
            self.stats.blobs_new += 1;
            self.stats.raw_new += data.len() as u64;
            return Ok(());
        }
        let pack = if meta { &mut self.meta } else { &mut self.data };
        let stored = match compressed {
            Some((how, c)) => {
                pack.add(id, kind, how, c, data.len() as u32)?;
                c.len()
            }
            None => {
                pack.add(id, kind, Compression::None, data, data.len() as u32)?;
                data.len()
            }
        };
        self.stats.stored_new += (stored + super::pack::ENTRY_LEN) as u64;
        self.stats.blobs_new += 1;
        self.stats.raw_new += data.len() as u64;
        if pack.len() >= PACK_TARGET {
            self.seal_pack(meta)?;
        }
        self.collect(false)
    }

    /// Hand the data (or metadata) pack to the sealer, if it holds blobs.
    fn seal_pack(&mut self, meta: bool) -> Result<()> {
        let len = if meta {
            self.meta.len()
        } else {
            self.data.len()
        } as u64;
        if (meta && self.meta.is_empty()) || (!meta && self.data.is_empty()) {
            return Ok(());
        }
        if let Some(limit) = self.limit {
            let queued = self.sealer.as_ref().map_or(0, |s| s.queued_bytes);
            if self.stats.bytes_written + queued + len > limit {
                self.broken = Some("the vault is full".to_string());
                return Err(Error::new(
                    crate::error::Kind::NoSpace,
                    format!(
                        "vault {}: the backup would exceed the vault's capacity",
                        self.repo.vault
                    ),
                )
                .code("BackupService.6114"));
            }
        }
        let fresh = PackWriter::with_seal(self.repo.key.seal_key().cloned());
        let pack = std::mem::replace(if meta { &mut self.meta } else { &mut self.data }, fresh);
        if self.sealer.is_none() {
            self.sealer = Some(Sealer::start(self.repo.storage.clone())?);
        }
        let Some(sealer) = self.sealer.as_mut() else {
            return Ok(());
        };
        let sent = sealer.tx.as_ref().map(|tx| tx.send(pack).is_ok());
        if sent == Some(true) {
            sealer.queued += 1;
            sealer.queued_bytes += len;
            Ok(())
        } else {
            // The sealer is gone: what it sealed and why it stopped come
            // back from collect.
            self.collect(true)?;
            self.broken = Some("the pack sealer stopped".to_string());
            Err(Error::failed(format!(
                "vault {}: the pack sealer stopped",
                self.repo.vault
            )))
        }
    }

    /// Take the packs sealed so far (all of them, stopping the sealer, if
    /// `all`); the first failure breaks the writer and is returned.
    fn collect(&mut self, all: bool) -> Result<()> {
        let Some(sealer) = self.sealer.as_mut() else {
            return Ok(());
        };
        let results: Vec<Sealed> = if all {
            sealer.drain()
        } else {
            let r: Vec<Sealed> = sealer.rx.try_iter().collect();
            sealer.queued -= r.len();
            r
        };
        let mut first_err = None;
        for r in results {
            match r {
                Ok((pack_id, size, entries)) => {
                    if let Some(s) = self.sealer.as_mut() {
                        s.queued_bytes = s.queued_bytes.saturating_sub(size);
                    }
                    self.stats.bytes_written += size;
                    self.since_checkpoint += size;
                    self.sealed_packs.push(pack_id);
                    self.sealed
                        .extend(index::entries_of_pack(pack_id, &entries));
                }
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        match first_err {
            // Not while draining (finish indexes everything; a dropped
            // writer is failing): only between blobs.
            None if !all && self.checkpoint_due() => self.checkpoint(),
            None => Ok(()),
            Some(e) => {
                self.broken = Some(e.to_string());
                Err(e.context(format!("vault {}", self.repo.vault)))
            }
        }
    }

    /// True if enough was sealed, or long enough ago, for a checkpoint.
    fn checkpoint_due(&self) -> bool {
        // Nothing sealed since the last one: nothing to keep (and no clock
        // read per blob).
        self.since_checkpoint > 0
            && (self
                .checkpoint_every
                .is_some_and(|every| self.since_checkpoint >= every)
                || self
                    .checkpoint_after
                    .is_some_and(|after| self.last_checkpoint.elapsed() >= after))
    }

    /// Write an index of the packs sealed so far (they are durable): from
    /// here they stay even if the run fails, and the next run finds their
    /// blobs. Their ids stay reserved in this run.
    fn checkpoint(&mut self) -> Result<()> {
        self.since_checkpoint = 0;
        self.last_checkpoint = std::time::Instant::now();
        if self.sealed.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.sealed);
        let (_, len) = index::write_index(&*self.repo.storage, entries, self.repo.key.seal_key())?;
        self.stats.bytes_written += len;
        self.sealed_packs.clear();
        self.checkpointed = true;
        Ok(())
    }

    /// Seal the last packs and wait for every seal.
    fn seal_all(&mut self) -> Result<()> {
        let r = self.seal_pack(false).and_then(|()| self.seal_pack(true));
        let c = self.collect(true);
        r.and(c)
    }

    /// Seal the last packs and write the index naming this run's blobs
    /// (after the packs are durable). Merges indexes when there are many.
    /// Returns the counters.
    pub fn finish(mut self) -> Result<WriterStats> {
        self.seal_all()?;
        if !self.sealed.is_empty() || self.checkpointed {
            if !self.sealed.is_empty() {
                let entries = std::mem::take(&mut self.sealed);
                let (_, len) =
                    index::write_index(&*self.repo.storage, entries, self.repo.key.seal_key())?;
                // From here the packs are named by a durable index: keep them.
                self.finished = true;
                self.stats.bytes_written += len;
            }
            self.repo.refresh()?;
            let indexes = self.repo.indexes();
            if indexes.len() > MAX_INDEXES {
                merge_indexes(self.repo, &indexes)?;
            }
        }
        self.finished = true;
        Ok(self.stats)
    }

    /// Seal the last packs and return the entries of every pack sealed,
    /// without writing an index (prune writes one index of everything).
    /// The packs stay only if the caller indexes them.
    pub fn finish_unindexed(mut self) -> Result<(Vec<(BlobId, Location)>, WriterStats)> {
        self.seal_all()?;
        self.finished = true;
        Ok((std::mem::take(&mut self.sealed), self.stats))
    }
}

impl Drop for RepoWriter<'_> {
    /// A writer dropped before [`RepoWriter::finish`] (an error, a full
    /// vault) removes the packs it sealed since its last checkpoint: no
    /// index names them, so nothing can use them, and a failed backup must
    /// give its space back (what a checkpoint indexed stays for the retry).
    fn drop(&mut self) {
        // Wait for the packs being sealed, so that they are removed too.
        let _ = self.collect(true);
        if self.finished {
            return;
        }
        for id in &self.sealed_packs {
            if let Err(e) = self.repo.storage.delete(&super::pack::pack_name(id)) {
                log::warn!(
                    "vault {}: cannot remove unused pack {id}: {e}",
                    self.repo.vault
                );
            }
        }
    }
}

/// Write one index holding every entry of `indexes`, then unlink them.
/// The merged index is durable before any old one goes, so every blob is
/// findable at every instant.
pub(crate) fn merge_indexes(repo: &Repo, indexes: &[Arc<IndexFile>]) -> Result<()> {
    let mut all = Vec::new();
    for i in indexes {
        all.extend(i.iter());
    }
    let (merged, _) = index::write_index(&*repo.storage, all, repo.key.seal_key())?;
    // Other hosts' cached listings must name the merged index before the
    // ones it replaces go (docs/FORMAT.md §19.4).
    repo.storage.publish()?;
    for i in indexes {
        if i.name() != merged {
            repo.storage
                .delete(i.name())
                .map_err(|e| e.context("remove merged index"))?;
        }
    }
    repo.refresh()
}

/// Bytes a pack of `blobs` blobs takes beyond their stored bytes: header,
/// blob table and footer.
pub fn pack_overhead(blobs: usize) -> u64 {
    (super::pack::HEADER_LEN + super::pack::FOOTER_LEN + blobs * super::pack::ENTRY_LEN) as u64
}

/// The size of the index that names `entries` distinct blobs in `packs`
/// packs.
pub fn index_size(packs: usize, entries: usize) -> u64 {
    index::index_len(packs, entries)
}

/// The sizes of the packs a [`RepoWriter`] fills with `moved` (copied in
/// this order): data and metadata blobs go to separate packs, each sealed
/// once it reaches [`PACK_TARGET`]. Assumes each blob keeps its stored
/// length (the same compression setting writes the same bytes).
pub fn pack_sizes_for(moved: &[(BlobId, Location)]) -> Vec<u64> {
    let empty = super::pack::HEADER_LEN as u64;
    let seal = |len: u64, n: u64| len + pack_overhead(n as usize) - empty;
    let mut sizes = Vec::new();
    // (payload bytes with header, blobs) of the data and the metadata pack.
    let mut open = [(empty, 0u64), (empty, 0u64)];
    for (_, loc) in moved {
        let which = usize::from(loc.kind != BlobKind::Data);
        let p = &mut open[which];
        p.0 += loc.stored_len as u64;
        p.1 += 1;
        if p.0 >= PACK_TARGET as u64 {
            sizes.push(seal(p.0, p.1));
            *p = (empty, 0);
        }
    }
    for (len, n) in open {
        if n > 0 {
            sizes.push(seal(len, n));
        }
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::reader::index_paths;
    use crate::store::LocalDir;
    use parking_lot::Mutex;
    use std::fs;
    use std::path::Path;

    /// Packs sealed past `checkpoint_every` are indexed during the run: a
    /// writer dropped afterwards (a failed or interrupted backup) leaves
    /// them, and their blobs read back and deduplicate.
    #[test]
    fn checkpoint_keeps_sealed_packs_of_a_dropped_writer() {
        let dir = tempfile::tempdir().unwrap();
        Repo::create(dir.path()).unwrap();
        let repo = Repo::open(dir.path(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, false);
        w.checkpoint_every = Some(1);
        let mut ids = Vec::new();
        // Seals finish on their own thread: add until one came back.
        for i in 0..400u32 {
            let mut data = vec![0u8; 1 << 20];
            data[..4].copy_from_slice(&i.to_le_bytes());
            ids.push(w.add(BlobKind::Data, &data).unwrap().id);
            if w.checkpointed {
                break;
            }
        }
        assert!(w.checkpointed, "no checkpoint after 400 MiB");
        drop(w);
        let repo = Repo::open(dir.path(), "v").unwrap();
        let kept: Vec<_> = ids.iter().filter(|id| repo.lookup(id).is_some()).collect();
        assert!(kept.len() >= 15, "only {} blobs kept", kept.len());
        for id in &kept {
            assert_eq!(repo.key().id(&repo.read_blob(id).unwrap()), **id);
        }
        let mut w = RepoWriter::new(&repo, false);
        let mut data = vec![0u8; 1 << 20];
        data[..4].copy_from_slice(&0u32.to_le_bytes());
        assert!(!w.add(BlobKind::Data, &data).unwrap().new);
    }

    /// A checkpoint is also due by time: with `checkpoint_after` zero the
    /// first sealed pack is indexed before the writer is dropped.
    #[test]
    fn checkpoint_by_time_keeps_the_first_sealed_pack() {
        let dir = tempfile::tempdir().unwrap();
        Repo::create(dir.path()).unwrap();
        let repo = Repo::open(dir.path(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, false);
        w.checkpoint_after = Some(std::time::Duration::ZERO);
        for i in 0..400u32 {
            let mut data = vec![0u8; 1 << 20];
            data[..4].copy_from_slice(&i.to_le_bytes());
            w.add(BlobKind::Data, &data).unwrap();
            if w.checkpointed {
                break;
            }
        }
        assert!(w.checkpointed, "no checkpoint by time");
        assert!(w.since_checkpoint < PACK_TARGET as u64 * 2);
        drop(w);
        assert!(!Repo::open(dir.path(), "v")
            .unwrap()
            .list_packs()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn write_dedupe_read_verify() {
        let dir = tempfile::tempdir().unwrap();
        Repo::create(dir.path()).unwrap();
        let repo = Repo::open(dir.path(), "v").unwrap();
        let data = vec![7u8; 100_000];
        let mut w = RepoWriter::new(&repo, true);
        let a = w.add(BlobKind::Data, &data).unwrap();
        assert!(a.new);
        let b = w.add(BlobKind::Data, &data).unwrap();
        assert!(!b.new);
        let s = w.finish().unwrap();
        assert_eq!(s.blobs_new, 1);
        assert_eq!(repo.read_blob(&a.id).unwrap(), data);
        // A second run dedupes against the index.
        let mut w = RepoWriter::new(&repo, true);
        assert!(!w.add(BlobKind::Data, &data).unwrap().new);
        assert_eq!(w.finish().unwrap().bytes_written, 0);
    }

    /// The sizes `pack_sizes_for` predicts for moved blobs are those of the
    /// packs a writer makes of them: data and metadata apart, sealed at
    /// the pack target (what made `prune --dry-run` exact, issue #16).
    #[test]
    fn predicted_pack_sizes_are_the_writers() {
        let dir = tempfile::tempdir().unwrap();
        Repo::create(dir.path()).unwrap();
        let repo = Repo::open(dir.path(), "v").unwrap();
        let mut w = RepoWriter::new(&repo, false);
        // 20 MiB of data (two data packs) and small metadata blobs between.
        for i in 0..20u32 {
            let mut data = vec![1u8; 1 << 20];
            data[..4].copy_from_slice(&i.to_le_bytes());
            w.copy(repo.key().id(&data), BlobKind::Data, &data).unwrap();
            let tree = format!("tree {i}").into_bytes();
            w.copy(repo.key().id(&tree), BlobKind::Tree, &tree).unwrap();
        }
        let (entries, _) = w.finish_unindexed().unwrap();
        let mut real: Vec<u64> = repo
            .list_packs()
            .unwrap()
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        let mut predicted = pack_sizes_for(&entries);
        real.sort();
        predicted.sort();
        assert_eq!(predicted, real);
        assert_eq!(real.len(), 3);
    }

    /// A storage that records the calls that change objects, in order.
    #[derive(Debug)]
    struct Recording {
        inner: LocalDir,
        ops: Mutex<Vec<String>>,
    }

    impl crate::testkit::Wrapper for Recording {
        fn inner(&self) -> &dyn Storage {
            &self.inner
        }
        fn put(&self, name: &str, data: &[u8]) -> Result<()> {
            self.ops.lock().push(format!("put {name}"));
            self.inner.put(name, data)
        }
        fn put_file(&self, name: &str, file: &std::fs::File, len: u64) -> Result<()> {
            self.ops.lock().push(format!("put {name}"));
            self.inner.put_file(name, file, len)
        }
        fn delete(&self, name: &str) -> Result<()> {
            self.ops.lock().push(format!("delete {name}"));
            self.inner.delete(name)
        }
    }

    /// Two runs, one blob each, through a recording storage that does not
    /// map (as an object store): the repo, the recorder and both blobs.
    fn two_runs(dir: &Path) -> (Repo, Arc<Recording>, BlobId, BlobId) {
        Repo::create(dir).unwrap();
        let rec = Arc::new(Recording {
            inner: LocalDir::new(dir),
            ops: Mutex::new(Vec::new()),
        });
        let repo = Repo::open_in(rec.clone(), "v").unwrap();
        let mut ids = Vec::new();
        for data in [&b"kept blob"[..], b"dead blob"] {
            let mut w = RepoWriter::new(&repo, false);
            ids.push(w.add(BlobKind::Data, data).unwrap().id);
            w.finish().unwrap();
        }
        rec.ops.lock().clear();
        (repo, rec, ids[0], ids[1])
    }

    /// Prune's commit publishes the new index before it deletes anything,
    /// deletes the old indexes before the dead packs, and keeps a dead
    /// pack that the new index names.
    #[test]
    fn prune_commit_publishes_the_index_before_any_delete() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, rec, kept, dead) = two_runs(dir.path());
        let kept_loc = repo.lookup(&kept).unwrap();
        let dead_loc = repo.lookup(&dead).unwrap();
        let old = repo.index_names().unwrap();
        assert_eq!(old.len(), 2);
        repo.commit_prune(vec![(kept, kept_loc)], &[dead_loc.pack, kept_loc.pack])
            .unwrap();
        let ops = rec.ops.lock().clone();
        let new = ops[0].strip_prefix("put ").unwrap_or_default().to_string();
        assert!(new.starts_with("index/"), "{ops:?}");
        // The kept blob's index may come out the same as one of the old
        // ones (same entries, same bytes): that one stays.
        let mut want: Vec<String> = old
            .iter()
            .filter(|n| **n != new)
            .map(|n| format!("delete {n}"))
            .collect();
        want.push(format!(
            "delete {}",
            super::super::pack::pack_name(&dead_loc.pack)
        ));
        let mut got = ops[1..].to_vec();
        got[..want.len() - 1].sort();
        assert_eq!(got, want);
        assert_eq!(repo.read_blob(&kept).unwrap(), b"kept blob");
        assert!(repo.read_blob(&dead).is_err());
        assert_eq!(repo.index_count(), 1);
    }

    /// Prune's first phase on a remote vault: the mark, then the new index,
    /// then the old indexes go; the dead pack stays. A writer no longer
    /// finds the dead blob (a new backup stores it again), while a reader
    /// still reads it: through the index it mapped before, and, once it
    /// re-listed the indexes, through the mark. The second phase deletes
    /// the pack, then the mark; after it the blob is gone.
    #[test]
    fn two_phase_prune_marks_then_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, rec, kept, dead) = two_runs(dir.path());
        // A reader on another host, its indexes mapped before the prune.
        let reader = Repo::open_in(rec.clone(), "v").unwrap();
        let kept_loc = repo.lookup(&kept).unwrap();
        let dead_loc = repo.lookup(&dead).unwrap();
        let old = repo.index_names().unwrap();
        let mark = repo
            .commit_prune_marked(vec![(kept, kept_loc)], &[dead_loc.pack], &[], 1_000)
            .unwrap()
            .expect("a mark is written");
        let ops = rec.ops.lock().clone();
        assert_eq!(ops[0], format!("put {mark}"), "{ops:?}");
        assert!(ops[1].starts_with("put index/"), "{ops:?}");
        let new = ops[1].strip_prefix("put ").unwrap_or_default().to_string();
        let mut deleted: Vec<&String> = ops[2..].iter().collect();
        deleted.sort();
        let want: Vec<String> = old
            .iter()
            .filter(|n| **n != new)
            .map(|n| format!("delete {n}"))
            .collect();
        assert_eq!(deleted, want.iter().collect::<Vec<_>>(), "{ops:?}");
        // The dead pack is still there, named by the mark only.
        let (marks, damaged) = repo.marks().unwrap();
        assert!(damaged.is_empty(), "{damaged:?}");
        assert_eq!(marks.len(), 1);
        assert_eq!(marks[0].marked_ns(), 1_000);
        assert!(marks[0].packs().contains(&dead_loc.pack));
        assert!(repo
            .list_packs()
            .unwrap()
            .iter()
            .any(|(p, _)| *p == dead_loc.pack));
        // A writer does not deduplicate against it: the blob is new again.
        let fresh = Repo::open_in(rec.clone(), "v").unwrap();
        assert!(fresh.lookup(&dead).is_none());
        let w = RepoWriter::new(&fresh, false);
        assert!(!w.contains(&dead));
        drop(w);
        // Readers: the old view, and a fresh one through the mark.
        assert_eq!(reader.read_blob(&dead).unwrap(), b"dead blob");
        reader.refresh().unwrap();
        assert!(reader.lookup(&dead).is_none(), "the old index is gone");
        assert_eq!(reader.read_blob(&dead).unwrap(), b"dead blob");
        assert_eq!(fresh.read_blob(&dead).unwrap(), b"dead blob");
        assert_eq!(fresh.read_blob(&kept).unwrap(), b"kept blob");
        // Phase two: the pack, then the mark.
        rec.ops.lock().clear();
        repo.delete_marked(&[dead_loc.pack], std::slice::from_ref(&mark))
            .unwrap();
        let ops = rec.ops.lock().clone();
        assert_eq!(
            ops,
            vec![
                format!("delete {}", super::super::pack::pack_name(&dead_loc.pack)),
                format!("delete {mark}")
            ]
        );
        let after = Repo::open_in(rec.clone(), "v").unwrap();
        assert!(after.read_blob(&dead).is_err());
        assert_eq!(after.read_blob(&kept).unwrap(), b"kept blob");
        assert!(after.marks().unwrap().0.is_empty());
    }

    /// A damaged mark is named, not fatal: the others are still read (prune
    /// then marks rather than deletes packs no index names, since they may
    /// be the damaged mark's).
    #[test]
    fn a_damaged_mark_is_reported_and_the_others_read() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _rec, kept, dead) = two_runs(dir.path());
        let kept_loc = repo.lookup(&kept).unwrap();
        let dead_loc = repo.lookup(&dead).unwrap();
        let first = repo
            .commit_prune_marked(vec![(kept, kept_loc)], &[dead_loc.pack], &[], 5)
            .unwrap()
            .unwrap();
        let (second, _) =
            super::super::marks::write_mark(&*repo.storage, 6, &[BlobId([1; 16])], vec![], None)
                .unwrap();
        let path = dir.path().join(&first);
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let (marks, damaged) = repo.marks().unwrap();
        assert_eq!(marks.len(), 1);
        assert_eq!(marks[0].name(), second);
        assert_eq!(damaged.len(), 1, "{damaged:?}");
        assert!(
            damaged[0].contains("vault v") && damaged[0].contains(&first),
            "{damaged:?}"
        );
    }

    /// Index repair rebuilds the index from the packs' tables, publishing
    /// it before it deletes the damaged one.
    #[test]
    fn rebuild_index_from_the_packs() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, rec, a, b) = two_runs(dir.path());
        let old = index_paths(&repo, dir.path());
        fs::write(&old[0], b"damaged").unwrap();
        let repo = Repo::open_in(rec.clone(), "v").unwrap();
        assert_eq!(repo.index_errors().len(), 1);
        let done = repo.rebuild_index().unwrap();
        assert_eq!((done.packs, done.blobs, done.indexes_replaced), (2, 2, 2));
        assert!(done.problems.is_empty(), "{:?}", done.problems);
        let ops = rec.ops.lock().clone();
        assert!(ops[0].starts_with("put index/"), "{ops:?}");
        assert!(
            ops[1..].iter().all(|o| o.starts_with("delete index/")),
            "{ops:?}"
        );
        assert!(repo.index_errors().is_empty());
        assert_eq!(repo.read_blob(&a).unwrap(), b"kept blob");
        assert_eq!(repo.read_blob(&b).unwrap(), b"dead blob");
    }

    #[test]
    fn many_runs_merge_indexes() {
        let dir = tempfile::tempdir().unwrap();
        Repo::create(dir.path()).unwrap();
        let repo = Repo::open(dir.path(), "v").unwrap();
        let mut ids = Vec::new();
        for i in 0..(MAX_INDEXES as u32 + 3) {
            let mut w = RepoWriter::new(&repo, true);
            ids.push(w.add(BlobKind::Data, &i.to_le_bytes()).unwrap().id);
            w.finish().unwrap();
        }
        assert!(repo.index_names().unwrap().len() <= MAX_INDEXES);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(repo.read_blob(id).unwrap(), (i as u32).to_le_bytes());
        }
    }
}
