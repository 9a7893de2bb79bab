//! What the mount keeps open between requests: the vaults (repositories),
//! the backups (records), and the decoded trees, the last bounded in bytes
//! (issue 17: bounded by count, a cache of 1024 trees of a million entries
//! each could hold gigabytes).
//!
//! Trees are cached by the vault they were read from (a number given to
//! each repository opened) and their id, not by backup: a directory that
//! did not change between backups is the same tree blob, decoded once for
//! all of them (a `find` across ten backups of an unchanged directory of a
//! million entries decodes it once).

use super::table::NumMap;
use super::{err_errno, BackupCtx, Dir, Vfs};
use crate::error::Kind;
use crate::model::{self, Content, Node, Tree};
use crate::store::{BlobId, Repo};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Identity of a file: a record or key replaced under the same name is a
/// different object (device, inode, mtime).
pub(super) type FileId = (u64, u64, i64);

fn file_id(p: &std::path::Path) -> Option<FileId> {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
}

/// An opened vault: which vault file, its number (trees are cached by
/// it), its repository.
pub(super) type OpenedRepo = (FileId, u64, Arc<Repo>);

/// Bytes of decoded trees kept: a directory being listed stays however
/// large it is (the newest tree, and the large tree last used, are never
/// evicted), the rest up to this.
pub const TREE_CACHE_BYTES: usize = 32 << 20;

/// Decoded trees by (repository number, tree id), least recently used
/// evicted first once their bytes pass the bound.
///
/// The large tree (over a quarter of the bound) used last is kept beside
/// the bound rather than in it: every readdir request in a directory reads
/// its parent's tree too (where the directory's own node is), and a small
/// parent decoded after a directory of a million entries (240 MB decoded)
/// evicted it, so that each request of `ls` decoded it again (a million
/// entries per hundred listed: `ls` had not ended after 6 minutes).
pub(super) struct TreeCache {
    map: NumMap<(u64, BlobId), Cached>,
    /// One shared id per tree for as long as an inode holds it, kept when
    /// its tree is evicted: the address of the id is the tree's identity in
    /// the inode table (a file of a tree several backups share is one
    /// inode, [`super::table::Key::Tree`]), so a tree decoded again must
    /// get the id it had.
    ids: NumMap<(u64, BlobId), Arc<BlobId>>,
    bytes: usize,
    cap: usize,
    tick: u64,
    /// The large tree used last: not evicted, not counted in the bound.
    large: Option<(u64, BlobId)>,
}

struct Cached {
    /// The tree's id, shared by the inodes of its entries.
    id: Arc<BlobId>,
    dir: Dir,
    bytes: usize,
    used: u64,
}

impl TreeCache {
    /// An empty cache of at most `cap` bytes (beside the newest tree).
    pub(super) fn new(cap: usize) -> TreeCache {
        TreeCache {
            map: NumMap::default(),
            ids: NumMap::default(),
            bytes: 0,
            cap,
            tick: 0,
            large: None,
        }
    }

    pub(super) fn get(&mut self, key: &(u64, BlobId)) -> Option<(Arc<BlobId>, Dir)> {
        self.tick += 1;
        let c = self.map.get_mut(key)?;
        c.used = self.tick;
        if c.bytes > self.cap / 4 {
            self.large = Some(*key);
        }
        Some((c.id.clone(), c.dir.clone()))
    }

    /// Bytes of the large tree kept beside the bound.
    fn large_bytes(&self) -> usize {
        self.large
            .and_then(|k| self.map.get(&k))
            .map_or(0, |c| c.bytes)
    }

    /// Keep `dir` under `key`; evicts the least recently used trees, down
    /// to three quarters of the bound (so that eviction, which sorts, runs
    /// once per quarter of the bound inserted, not at every insert).
    /// Returns the tree's shared id (the one kept already if another
    /// thread decoded the same tree meanwhile).
    pub(super) fn insert(&mut self, key: (u64, BlobId), dir: Dir) -> Arc<BlobId> {
        self.tick += 1;
        if let Some(c) = self.map.get(&key) {
            return c.id.clone();
        }
        let bytes = dir_bytes(&dir);
        let id = self
            .ids
            .entry(key)
            .or_insert_with(|| Arc::new(key.1))
            .clone();
        self.bytes += bytes;
        self.map.insert(
            key,
            Cached {
                id: id.clone(),
                dir,
                bytes,
                used: self.tick,
            },
        );
        if bytes > self.cap / 4 {
            self.large = Some(key);
        }
        if self.bytes - self.large_bytes() > self.cap {
            let large = self.large;
            let mut by_age: Vec<(u64, (u64, BlobId))> = self
                .map
                .iter()
                .filter(|(k, _)| **k != key && Some(**k) != large)
                .map(|(k, c)| (c.used, *k))
                .collect();
            by_age.sort_unstable();
            for (_, k) in by_age {
                if self.bytes - self.large_bytes() <= self.cap / 4 * 3 {
                    break;
                }
                if let Some(c) = self.map.remove(&k) {
                    self.bytes -= c.bytes;
                }
            }
            // Ids no inode holds any more (nor a tree kept: only this
            // map): once per eviction, so amortised over a quarter of the
            // bound's bytes decoded. Under the cache's lock, where alone
            // an id is cloned from this map, so a count of one stays one.
            self.ids.retain(|_, id| Arc::strong_count(id) > 1);
        }
        id
    }

    /// Ids kept (tests).
    #[cfg(test)]
    fn ids(&self) -> usize {
        self.ids.len()
    }

    /// Bytes of the trees kept (the large one included).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Heap bytes of a decoded tree: its nodes and what each owns, with a
/// malloc header per allocation (an estimate, within a few percent).
pub(super) fn dir_bytes(dir: &[Node]) -> usize {
    const MALLOC: usize = 16;
    let vec = |cap: usize, each: usize| {
        if cap == 0 {
            0
        } else {
            cap * each + MALLOC
        }
    };
    let mut total = 2 * MALLOC + std::mem::size_of::<Vec<Node>>() + 16;
    total += std::mem::size_of_val(dir);
    for n in dir {
        total += vec(n.name.capacity(), 1) + vec(n.target.capacity(), 1);
        total += vec(n.xattrs.capacity(), std::mem::size_of::<model::Xattr>());
        for x in &n.xattrs {
            total += vec(x.name.capacity(), 1) + vec(x.value.capacity(), 1);
        }
        total += match &n.content {
            Content::None => 0,
            Content::Chunks(c) => vec(c.capacity(), std::mem::size_of::<model::ChunkRef>()),
            Content::Lists(l) => vec(l.capacity(), std::mem::size_of::<model::ListRef>()),
        };
    }
    total
}

impl Vfs {
    /// The opened repository of `vault` and its number (a new number when
    /// the vault was replaced: trees are cached by it).
    pub(super) fn repo(&self, vault: &str) -> super::VResult<(u64, Arc<Repo>)> {
        // Which vault of this name (one deleted and made again is another):
        // its `key`, or an encrypted vault's `keys/` directory, or — an
        // encrypted vault in a bucket, whose key slots are not cached
        // here — its directory in the store (its inode: the directory
        // changes whenever an entry in it does).
        let dir = self.store.vault_dir(vault);
        let id = file_id(&dir.join("key"))
            .or_else(|| file_id(&dir.join("keys")))
            .or_else(|| {
                let (dev, ino, _) = file_id(&dir).filter(|_| dir.join("vault.json").exists())?;
                Some((dev, ino, 0))
            })
            .ok_or(libc::ENOENT)?;
        if let Some((rid, no, r)) = self.repos.lock().get(vault) {
            if *rid == id {
                return Ok((*no, r.clone()));
            }
        }
        let r = Arc::new(self.store.repo(vault).map_err(|e| {
            log::error!("open vault {vault}: {e}");
            err_errno(&e)
        })?);
        let no = self.next_ctx.fetch_add(1, Ordering::Relaxed);
        self.repos
            .lock()
            .insert(vault.to_string(), (id, no, r.clone()));
        Ok((no, r))
    }

    /// The opened backup `vault/name` (its record read once).
    pub(super) fn ctx(&self, vault: &str, name: &str) -> super::VResult<Arc<BackupCtx>> {
        let key = (vault.to_string(), name.to_string());
        let id = file_id(&self.store.backup_path(vault, name)).ok_or(libc::ENOENT)?;
        if let Some((cid, c)) = self.ctxs.lock().get(&key) {
            if *cid == id {
                return Ok(c.clone());
            }
        }
        let record = self.store.backup(vault, name).map_err(|e| {
            if e.kind() != Kind::NotFound {
                log::error!("{e}");
            }
            err_errno(&e)
        })?;
        let roots = Arc::new(
            record
                .resources
                .iter()
                .map(|r| r.root_node().clone())
                .collect(),
        );
        let ctx = Arc::new(BackupCtx {
            id: self.next_ctx.fetch_add(1, Ordering::Relaxed),
            vault: vault.to_string(),
            repo: std::sync::OnceLock::new(),
            record,
            roots,
        });
        self.ctxs.lock().insert(key, (id, ctx.clone()));
        Ok(ctx)
    }

    /// The opened vault of backup `ctx` and its number, opened at the
    /// first call (see [`BackupCtx`]'s `repo`).
    pub(super) fn ctx_repo<'c>(&self, ctx: &'c BackupCtx) -> super::VResult<&'c (u64, Arc<Repo>)> {
        if let Some(r) = ctx.repo.get() {
            return Ok(r);
        }
        let (no, repo) = self.repo(&ctx.vault)?;
        // The backup may name blobs in an index written after the repo was
        // opened.
        repo.refresh().map_err(|e| err_errno(&e))?;
        // Two first reads may race here: both got the same opened vault
        // from `repo`, and the one set first is kept.
        Ok(ctx.repo.get_or_init(|| (no, repo)))
    }

    /// The number of vaults opened (tests: listing opens none).
    pub fn opened_vaults(&self) -> usize {
        self.repos.lock().len()
    }

    /// Tree `id` of backup `ctx`'s vault, decoded (from the cache if it
    /// is there), with its id shared for the inodes of its entries.
    pub(super) fn tree(&self, ctx: &BackupCtx, id: &BlobId) -> super::VResult<(Arc<BlobId>, Dir)> {
        let (repo_no, repo) = self.ctx_repo(ctx)?;
        let key = (*repo_no, *id);
        if let Some(t) = self.trees.lock().get(&key) {
            return Ok(t);
        }
        let t: Tree = repo
            .read_blob(id)
            .and_then(|b| model::decode_tree(&b))
            .map_err(|e| {
                log::error!("vault {}, backup {}: {e}", ctx.vault, ctx.record.name);
                libc::EIO
            })?;
        let t: Dir = Arc::new(t.entries);
        let id = self.trees.lock().insert(key, t.clone());
        Ok((id, t))
    }

    /// Bytes of decoded trees cached (for tests and memory checks).
    pub fn tree_cache_bytes(&self) -> usize {
        self.trees.lock().bytes()
    }

    /// Keep at most `bytes` of decoded trees beside the newest one (the
    /// mount keeps [`TREE_CACHE_BYTES`]; tests make trees be read again).
    pub fn limit_tree_cache(&self, bytes: usize) {
        self.trees.lock().cap = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeKind;

    fn dir(n: usize, name_len: usize) -> Dir {
        Arc::new(
            (0..n)
                .map(|i| {
                    let mut name = format!("{i:08}").into_bytes();
                    name.resize(name_len.max(8), b'x');
                    Node::new(name, NodeKind::File)
                })
                .collect(),
        )
    }

    fn id(i: u8) -> BlobId {
        BlobId([i; 16])
    }

    /// The cache holds trees by their bytes: many small trees fit where
    /// a few large ones do not, the least recently used go first, and the
    /// total stays within the bound (but for the newest tree).
    #[test]
    fn tree_cache_evicts_by_bytes() {
        let small = dir(10, 8);
        let large = dir(1000, 64);
        let (s, l) = (dir_bytes(&small), dir_bytes(&large));
        assert!(l > 50 * s, "a large tree is {l} bytes, a small one {s}");
        let cap = 4 * l;
        let mut c = TreeCache::new(cap);
        // Forty small trees fit, as they would not by a count of four.
        for i in 0..40 {
            c.insert((1, id(i)), small.clone());
        }
        assert_eq!(c.bytes(), 40 * s);
        assert!(c.get(&(1, id(0))).is_some());
        // Large trees push the small ones out, least recently used first:
        // tree 0 was just used, so it outlives tree 1.
        for i in 100..104 {
            c.insert((1, id(i)), large.clone());
            assert!(c.bytes() <= cap, "{} bytes kept, bound {cap}", c.bytes());
        }
        assert!(c.get(&(1, id(1))).is_none(), "least recently used kept");
        assert!(c.get(&(1, id(103))).is_some(), "newest evicted");
        // A tree larger than the bound is kept beside it while it is the
        // large tree used last: a directory being listed is not decoded
        // again per call, though each call reads its (small) parent's tree
        // too; the others stay within the bound.
        let huge = dir(20_000, 64);
        let h = dir_bytes(&huge);
        assert!(h > cap);
        c.insert((2, id(1)), huge.clone());
        assert!(c.get(&(2, id(1))).is_some());
        assert!(
            c.bytes() >= h && c.bytes() <= h + cap,
            "{} bytes",
            c.bytes()
        );
        for i in 0..100 {
            c.insert((3, id(i)), small.clone());
            c.insert((3, id(100 + i)), large.clone());
            assert!(c.get(&(2, id(1))).is_some(), "huge evicted at {i}");
            assert!(
                c.bytes() <= h + cap,
                "{} bytes kept, bound {h} + {cap}",
                c.bytes()
            );
        }
        // Another large tree used takes its place; the first goes when
        // room is needed.
        let huge2 = dir(20_001, 64);
        c.insert((2, id(2)), huge2.clone());
        c.insert((3, id(250)), large.clone());
        assert!(c.get(&(2, id(1))).is_none(), "the older large tree kept");
        assert!(c.get(&(2, id(2))).is_some());
        assert!(c.bytes() <= dir_bytes(&huge2) + cap);
        // The same id in another vault is another tree.
        assert!(c.get(&(1, id(1))).is_none());
    }

    /// A tree decoded again after its eviction gets the id it had while an
    /// inode holds that id (the inode table knows a shared file by its
    /// address); an id nothing holds is let go at the next eviction.
    #[test]
    fn a_tree_keeps_its_id_across_eviction_while_held() {
        let large = dir(1000, 64);
        let cap = dir_bytes(&large);
        let mut c = TreeCache::new(cap);
        let held = c.insert((1, id(1)), large.clone());
        let dropped = c.insert((1, id(2)), large.clone());
        drop(dropped);
        c.insert((1, id(3)), large.clone());
        assert!(c.get(&(1, id(1))).is_none(), "tree 1 evicted");
        assert!(c.get(&(1, id(2))).is_none(), "tree 2 evicted");
        assert_eq!(c.ids(), 2, "ids of trees 1 (held) and 3 (kept)");
        let again = c.insert((1, id(1)), large.clone());
        assert!(Arc::ptr_eq(&held, &again), "tree 1 got a new id");
        assert_eq!(*c.insert((1, id(2)), large.clone()), id(2));
    }

    /// dir_bytes counts what a node owns, not only its fixed size.
    #[test]
    fn dir_bytes_counts_heap() {
        let a = dir(100, 8);
        let b = dir(100, 1000);
        assert!(dir_bytes(&b) >= dir_bytes(&a) + 100 * 990);
        assert!(dir_bytes(&a) >= 100 * std::mem::size_of::<Node>());
    }
}
