//! The bounds of a restore: no more entries and bytes than the backup
//! records, and no chunk beyond its file's recorded size.

use crate::engine::reader::Chunks;
use crate::error::{Error, Result};
use crate::model::ChunkRef;
use crate::model::{BackupRecord, Content, Node, ResourceBackup};

/// The most a restore of one resource may create: the totals its backup
/// recorded. A hostile or damaged store (trees shared many times over, a
/// chunk list far beyond its file) stops with an error naming the backup
/// instead of filling the disk.
#[derive(Clone, Debug)]
pub(super) struct Budget {
    pub(super) backup: String,
    pub(super) resource: String,
    pub(super) max_entries: u64,
    pub(super) max_bytes: u64,
    pub(super) entries: u64,
    pub(super) bytes: u64,
}

impl Budget {
    pub(super) fn of(rec: &BackupRecord, p: &ResourceBackup) -> Budget {
        let s = &p.stats;
        // The same bound as ls, find and diff: what the backup recorded.
        let max_entries = crate::engine::browse::recorded_entries(p);
        Budget {
            backup: rec.name.clone(),
            resource: p.name.clone(),
            max_entries,
            max_bytes: s.bytes_total,
            entries: 0,
            bytes: 0,
        }
    }

    /// Count one more entry at `shown`.
    pub(super) fn entry(&mut self, shown: &str) -> Result<()> {
        self.entries += 1;
        if self.entries > self.max_entries {
            return Err(Error::corrupt(format!(
                "backup {}, resource {}: restoring {shown} would create more than the {} entries the backup records (a damaged or hostile backup: a tree listed more than once?); restore stopped",
                self.backup, self.resource, self.max_entries
            )));
        }
        Ok(())
    }

    /// Count a file of `size` bytes at `shown`, before it is written.
    pub(super) fn bytes(&mut self, shown: &str, size: u64) -> Result<()> {
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > self.max_bytes {
            return Err(Error::corrupt(format!(
                "backup {}, resource {}: restoring {shown} would write more than the {} bytes the backup records (a damaged or hostile backup); restore stopped",
                self.backup, self.resource, self.max_bytes
            )));
        }
        Ok(())
    }
}

/// The error of a chunk that does not lie within its file's recorded size.
pub(super) fn check_chunk_within(
    shown: &str,
    rec: &BackupRecord,
    size: u64,
    offset: u64,
    len: u64,
) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::corrupt(format!(
            "{shown}: a chunk at offset {offset} of {len} bytes lies beyond the file's recorded size of {size} bytes (backup {}); nothing more is written",
            rec.name
        ))),
    }
}

/// The chunks of `chunks` up to the first that reaches past `size` (the
/// record's size of the file or disk), whose error is left in `refused`:
/// checked before a chunk is read or written, so helpers reading ahead read
/// none past it.
pub(super) fn chunks_within<'a>(
    shown: &'a str,
    rec: &'a BackupRecord,
    size: u64,
    chunks: Chunks,
    refused: &'a mut Option<Error>,
) -> impl Iterator<Item = ChunkRef> + Send + 'a {
    chunks
        .into_iter()
        .map_while(
            move |c| match check_chunk_within(shown, rec, size, c.offset, c.len as u64) {
                Ok(()) => Some(c),
                Err(e) => {
                    *refused = Some(e);
                    None
                }
            },
        )
        .fuse()
}

/// Check a node's chunk-list spans against its size before any list is
/// loaded: a list that claims to reach past the file is damage.
pub(super) fn check_lists_within(shown: &str, rec: &BackupRecord, n: &Node) -> Result<()> {
    if let Content::Lists(lists) = &n.content {
        for l in lists {
            check_chunk_within(shown, rec, n.size, l.offset, l.span)?;
        }
    }
    Ok(())
}
