//! The walker's side of the readers: file reads handed out in batches and
//! taken back, and directories whose trees wait for their files, written
//! children before parents once complete.

use super::readers::{Done, FileState, Job, ReadError, BATCH_BYTES, BATCH_FILES};
use super::walker::Walker;
use crate::error::{Error, Result};
use crate::model::{NodeKind, Tree};
use std::path::Path;

/// A directory listed, whose tree waits for its files' reads and its
/// subdirectories' trees.
pub(super) struct PendingDir {
    pub(super) tree: Tree,
    /// File reads not yet back.
    pub(super) waiting: usize,
    /// Entries whose read failed (reported), left out of the tree.
    pub(super) failed: Vec<usize>,
    /// The entry whose subtree this is (pending directory, index), or none
    /// for a resource's root.
    pub(super) parent: Option<(u64, usize)>,
}

impl Walker<'_, '_> {
    pub(super) fn pending_dir(&mut self, id: u64) -> Result<&mut PendingDir> {
        self.pending
            .get_mut(&id)
            .ok_or_else(|| Error::failed(format!("internal: directory {id} is not pending")))
    }

    /// Hand a file to the readers; if too many are out, take some back.
    pub(super) fn submit(&mut self, job: Job) -> Result<()> {
        self.batch_bytes += job.listed.size;
        self.batch.push(job);
        self.inflight += 1;
        if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
            self.send_batch()?;
        }
        while self.inflight >= self.max_inflight {
            self.receive(true)?;
        }
        Ok(())
    }

    pub(super) fn send_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_bytes = 0;
        self.jobs
            .send(std::mem::take(&mut self.batch))
            .map_err(|_| Error::failed("the file readers stopped".to_string()))
    }

    /// Take back one batch of file reads (waiting for one if `block`), put
    /// them in their directories' trees, and write the trees now complete.
    /// False if none was ready.
    pub(super) fn receive(&mut self, block: bool) -> Result<bool> {
        let batch = if block {
            // What is waited for must have been sent.
            self.send_batch()?;
            self.done
                .recv()
                .map_err(|_| Error::failed("the file readers stopped".to_string()))?
        } else {
            match self.done.try_recv() {
                Ok(d) => d,
                Err(_) => return Ok(false),
            }
        };
        self.inflight -= batch.len();
        for d in batch {
            self.apply(d)?;
        }
        self.finish_ready()?;
        Ok(true)
    }

    /// Put one file read in its directory's tree.
    pub(super) fn apply(&mut self, d: Done) -> Result<()> {
        let Done {
            dir,
            idx,
            path,
            result,
        } = d;
        match result {
            Ok(read) => {
                self.stats.bytes_read += read.bytes;
                let content = self.content(&read.chunks)?;
                // Empty but under `--full`: no hashing per file otherwise.
                let recheck = !self.recheck.is_empty() && self.recheck.remove(&(dir, idx));
                let mut warns = Vec::new();
                let n = self
                    .pending_dir(dir)?
                    .tree
                    .entries
                    .get_mut(idx)
                    .ok_or_else(|| Error::failed(format!("internal: no entry {idx}")))?;
                let listed = FileState::of_node(n);
                let data_end = read
                    .chunks
                    .last()
                    .map_or(0, |c| c.offset.saturating_add(c.len as u64));
                // The size kept is what was read: a file that shrank while
                // (or before) it was read must not be restored at its old
                // size with zeros where its end was. Bytes read were the
                // file's when read, so the size never drops below them.
                // When its size moved during the read, a tail the read did
                // not reach is no hole to trust either: SEEK_HOLE put the
                // end where a truncation had it, and the file may have
                // grown again (past or short of its size at open) since.
                let shrank_to = match read.eof_at {
                    Some(e) => Some(e.max(data_end)),
                    None if read.after.size != n.size && data_end < n.size => Some(data_end),
                    None => None,
                };
                // The bytes came from the descriptor the metadata came from:
                // the same inode, whatever happened to its name meanwhile.
                // What can differ is its state, changed while it was read.
                let why = if let Some(to) = shrank_to.filter(|to| *to < n.size) {
                    Some(format!(
                        "shrank during the backup from {} to {} bytes",
                        n.size, to
                    ))
                } else if read.after != listed {
                    Some("changed during the backup".to_string())
                } else {
                    None
                };
                if let Some(to) = shrank_to {
                    n.size = n.size.min(to);
                }
                if let Some(why) = why {
                    warns.push(format!("{}: {why} (saved as read)", path.display()));
                }
                // `n.content` is still the previous backup's (see `node`):
                // same bytes, same chunks.
                let same = recheck.then_some(n.content == content);
                n.content = content;
                match same {
                    Some(true) => self.stats.files_unchanged += 1,
                    Some(false) => self.stats.files_changed += 1,
                    None => {}
                }
                for w in warns {
                    self.warn(w);
                }
            }
            Err(ReadError::Source(e)) => {
                if self.recheck.remove(&(dir, idx)) {
                    self.stats.files_changed += 1;
                }
                self.warn(e.to_string());
                self.pending_dir(dir)?.failed.push(idx);
            }
            Err(ReadError::Store(e)) => return Err(e),
            Err(ReadError::Stopped) => return Err(self.store_failure(&path)),
        }
        self.pending_dir(dir)?.waiting -= 1;
        Ok(())
    }

    /// The store error that stopped the readers, from the reads still out.
    pub(super) fn store_failure(&mut self, path: &Path) -> Error {
        while self.inflight > 0 {
            if self.send_batch().is_err() {
                break;
            }
            let Ok(batch) = self.done.recv() else { break };
            self.inflight -= batch.len();
            for d in batch {
                if let Err(ReadError::Store(e)) = d.result {
                    return e;
                }
            }
        }
        Error::failed(format!("{}: not read (the backup stopped)", path.display()))
    }

    /// Write the trees of the directories at the front of the order whose
    /// files are all back.
    pub(super) fn finish_ready(&mut self) -> Result<()> {
        while let Some(&id) = self.order.front() {
            if self.pending.get(&id).is_some_and(|p| p.waiting > 0) {
                return Ok(());
            }
            self.order.pop_front();
            let Some(mut pd) = self.pending.remove(&id) else {
                continue;
            };
            if !pd.failed.is_empty() {
                let mut keep = vec![true; pd.tree.entries.len()];
                for i in &pd.failed {
                    if let Some(k) = keep.get_mut(*i) {
                        *k = false;
                    }
                }
                let mut i = 0;
                pd.tree.entries.retain(|_| {
                    i += 1;
                    keep[i - 1]
                });
            }
            if let Some(e) = pd
                .tree
                .entries
                .iter()
                .find(|e| e.kind == NodeKind::Dir && e.subtree.is_none())
            {
                return Err(Error::failed(format!(
                    "internal: the tree of {} was not written before its parent's",
                    String::from_utf8_lossy(&e.name)
                )));
            }
            let blob = self.store_tree(pd.tree)?;
            match pd.parent {
                Some((p, idx)) => {
                    let entry = self
                        .pending
                        .get_mut(&p)
                        .and_then(|pp| pp.tree.entries.get_mut(idx))
                        .ok_or_else(|| {
                            Error::failed(format!(
                                "internal: directory {id} finished before its entry"
                            ))
                        })?;
                    entry.subtree = Some(blob);
                }
                None => {
                    self.roots.insert(id, blob);
                }
            }
        }
        Ok(())
    }

    /// Take back every read out and write every pending tree.
    pub(super) fn flush(&mut self) -> Result<()> {
        loop {
            while self.receive(false)? {}
            self.finish_ready()?;
            if self.order.is_empty() {
                return Ok(());
            }
            if self.inflight == 0 {
                return Err(Error::failed(
                    "internal: directories pending with no read out".to_string(),
                ));
            }
            self.receive(true)?;
        }
    }
}
