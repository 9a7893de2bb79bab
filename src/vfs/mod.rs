//! The virtual tree the mount shows, built without FUSE types so that it can
//! be tested in process: vaults, backups, resources, and the entries of each
//! backup's trees, with inode numbers, attributes, xattrs, reads, holes, and
//! backups started by `mkdir`.
//!
//! ```text
//! /<vault>/<backup>/<resource>/...   a resource's tree as it was
//! /<vault>/latest -> <backup>        the newest available backup
//! ```
//!
//! Inodes are allocated on lookup and freed when the kernel forgets them, so
//! memory follows what is in use, not the store's size. Trees are read
//! lazily through the mapped packs and cached by id.
//!
//! A backup started by `mkdir` runs on its own thread. Until it is
//! available, a lookup or readdir inside it is parked (its reply kept, no
//! worker thread held) and answered when the backup ends, or with EAGAIN
//! after the wait bound: fuser does not pass interrupts on, and a request
//! never answered would make its process unkillable.
//!
//! This file owns the tree's shape (the kinds of entries, the caches of
//! opened vaults, backups and trees) and the operations that walk it:
//! attributes, lookup, readdir, each one piece of code over what an
//! entry's kind answers (`EntryOps`). One file per kind, as restic's
//! `internal/fuse`: `root`, `vault`, `latest`, `backup_dir` and `tree` (the
//! entries of a backup's trees). The other parts: `table` (the inode
//! table), `running` (backups started by `mkdir`), `file` (reads of open
//! files).

mod backup_dir;
mod file;
mod latest;
mod root;
mod running;
mod table;
mod tree;
mod vault;

pub use file::{OpenFile, PREFETCH_MAX, READ_IDLE};
pub use running::{RunState, Running};
pub use tree::node_attr;

use crate::catalog::{self, Store};
use crate::engine::reader::ChunkCache;
use crate::error::{Error, Kind};
use crate::model::{self, BackupRecord, Node, NodeKind, Tree};
use crate::rules;
use crate::store::{BlobId, Repo};
use backup_dir::BackupDir;
use latest::Latest;
use parking_lot::{Condvar, Mutex, RwLock};
use root::Root;
use running::{reaper, Waiter};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use table::{Inode, NumMap, Table};
use tree::TreeNode;
use vault::VaultDir;

/// Hard-link identity: (backup context, resource, link group).
type LinkKey = (u64, u32, u64);

/// An entry name, shared by the maps of the inode table.
type Name = Arc<[u8]>;

/// A decoded directory: its entries in name order, each shared with the
/// inodes made of it (an inode holds its node, not a copy).
type Dir = Arc<Vec<Arc<Node>>>;

fn find_in(dir: &[Arc<Node>], name: &[u8]) -> Option<Arc<Node>> {
    dir.binary_search_by(|n| n.name.as_slice().cmp(name))
        .ok()
        .map(|i| dir[i].clone())
}

/// Inode of the mount's root.
pub const ROOT_INO: u64 = 1;
/// An errno.
pub type Errno = i32;
/// Result of a VFS operation.
pub type VResult<T> = std::result::Result<T, Errno>;

/// Attributes of an entry, independent of FUSE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Type.
    pub kind: NodeKind,
    /// Permission bits with setuid, setgid, sticky.
    pub perm: u32,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size.
    pub size: u64,
    /// 512-byte blocks.
    pub blocks: u64,
    /// Modification time, ns.
    pub mtime_ns: i64,
    /// Change time, ns.
    pub ctime_ns: i64,
    /// Device number.
    pub rdev: u64,
    /// True inside a backup: never changes, so the kernel may cache it long.
    pub immutable: bool,
}

/// One directory entry for readdir.
#[derive(Clone, Debug)]
pub struct DirEntry {
    /// Name.
    pub name: Vec<u8>,
    /// Attributes (inode number included).
    pub attr: Attr,
}

/// A backup opened for reading.
pub struct BackupCtx {
    id: u64,
    vault: String,
    repo: Arc<Repo>,
    record: BackupRecord,
}

/// An entry of the mount, by kind.
#[derive(Clone)]
enum Entry {
    Root(Root),
    Vault(VaultDir),
    Latest(Latest),
    Backup(BackupDir),
    Node(TreeNode),
}

impl Entry {
    /// What this entry answers: the one place that tells the kinds apart.
    fn ops(&self) -> &dyn EntryOps {
        match self {
            Entry::Root(k) => k,
            Entry::Vault(k) => k,
            Entry::Latest(k) => k,
            Entry::Backup(k) => k,
            Entry::Node(k) => k,
        }
    }

    /// The root or a vault's directory: made by the CLI, never written
    /// through the mount (EPERM rather than EROFS).
    fn is_live(&self) -> bool {
        matches!(self, Entry::Root(_) | Entry::Vault(_))
    }
}

/// What each kind of entry answers, in its own file: lookup, readdir and
/// getattr call these and do not tell the kinds apart.
trait EntryOps {
    /// The entry's attributes; the caller sets the inode number.
    fn attr(&self, vfs: &Vfs) -> VResult<Attr>;
    /// Child `name` of a directory, and its hard-link key.
    fn lookup(&self, _vfs: &Vfs, _name: &[u8]) -> VResult<(Entry, Option<LinkKey>)> {
        Err(libc::ENOTDIR)
    }
    /// A directory's children in name order; with `own`, its attributes
    /// too when listing gives them (see [`Listing::Made`]).
    fn list(&self, _vfs: &Vfs, _own: bool) -> VResult<Listing> {
        Err(libc::ENOTDIR)
    }
    /// A symlink's target.
    fn readlink(&self, _vfs: &Vfs) -> VResult<Vec<u8>> {
        Err(libc::EINVAL)
    }
    /// Extended attributes.
    fn xattrs(&self, _vfs: &Vfs) -> Vec<(Vec<u8>, Vec<u8>)> {
        Vec::new()
    }
}

/// A child of a directory, as lookup and readdir make it.
struct Child {
    name: Vec<u8>,
    entry: Entry,
    link: Option<LinkKey>,
}

/// A directory's children.
enum Listing {
    /// Made at once (vaults, backups, resources: few), with the
    /// directory's own attributes when listing gave them: a live
    /// directory's mtime comes from the names it lists.
    Made(Option<Attr>, Vec<Child>),
    /// A directory of a backup's tree, whose children are made as they
    /// are handed over.
    Tree(TreeNode, Dir),
}

impl Listing {
    fn made(own: Option<Attr>, children: Vec<Child>) -> Listing {
        Listing::Made(own, children)
    }

    /// The directory's own attributes, if listing gave them.
    fn own(&self) -> Option<Attr> {
        match self {
            Listing::Made(own, _) => own.clone(),
            Listing::Tree(..) => None,
        }
    }

    /// The children from position `skip`, with their positions.
    fn children(self, skip: usize) -> Box<dyn Iterator<Item = (usize, Child)>> {
        match self {
            Listing::Made(_, v) => Box::new(v.into_iter().enumerate().skip(skip)),
            Listing::Tree(node, dir) => Box::new(node.children(dir, skip)),
        }
    }
}

/// `user.cbrfs.<key>` xattrs of a vault or backup from `(key, value)`.
fn cbrfs_xattrs(pairs: Vec<(String, String)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    pairs
        .into_iter()
        .map(|(k, v)| (format!("user.cbrfs.{k}").into_bytes(), v.into_bytes()))
        .collect()
}

/// Settings of a mount.
#[derive(Clone, Debug)]
pub struct VfsOptions {
    /// How long a lookup or readdir inside a running backup waits.
    pub wait: Duration,
    /// Owner shown for vault and backup directories.
    pub uid: u32,
    /// Group shown for vault and backup directories.
    pub gid: u32,
}

/// The mount's tree.
pub struct Vfs {
    store: Store,
    opts: VfsOptions,
    table: RwLock<Table>,
    repos: Mutex<HashMap<String, (FileId, Arc<Repo>)>>,
    ctxs: Mutex<HashMap<BackupKey, (FileId, Arc<BackupCtx>)>>,
    trees: Mutex<NumMap<(u64, BlobId), Dir>>,
    cache: ChunkCache,
    running: Mutex<HashMap<(String, String), Arc<Running>>>,
    /// Shared with the reaper thread, which waits on them without keeping
    /// the tree alive (it holds the tree weakly).
    waiters: Arc<Mutex<Vec<Waiter>>>,
    wake: Arc<Condvar>,
    files: Mutex<NumMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    next_ctx: AtomicU64,
    mounted_ns: i64,
    /// Reads since the waiter thread last looked (for trimming memory).
    reads: AtomicU64,
    /// True once memory was trimmed after the last burst of reads.
    trimmed: std::sync::atomic::AtomicBool,
    /// When each vault in a bucket last had its backups listed for a
    /// lookup of a name not cached here ([`Vfs::backup_exists`]).
    listed: Mutex<HashMap<String, std::time::Instant>>,
}

/// A lookup of a backup not cached here lists a vault in a bucket at most
/// this often (a shell probing names must not cost a LIST each).
const RELIST_EVERY: Duration = Duration::from_secs(2);

/// A backup by vault and name.
type BackupKey = (String, String);

/// Identity of a file: a record or key replaced under the same name is a
/// different object (device, inode, mtime).
type FileId = (u64, u64, i64);

fn file_id(p: &std::path::Path) -> Option<FileId> {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
}

/// Most decoded trees kept.
const TREE_CACHE: usize = 1024;

fn err_errno(e: &Error) -> Errno {
    e.errno()
}

impl Drop for Vfs {
    /// No read-ahead of this tree's outlives it (engine::reader).
    fn drop(&mut self) {
        self.cache.wait_idle();
    }
}

impl Vfs {
    /// A tree over `store`; starts the thread that answers parked requests.
    pub fn new(store: Store, opts: VfsOptions) -> Arc<Vfs> {
        let vfs = Arc::new(Vfs {
            store,
            opts,
            table: RwLock::new(Table {
                next: ROOT_INO + 1,
                ..Default::default()
            }),
            repos: Mutex::new(HashMap::new()),
            ctxs: Mutex::new(HashMap::new()),
            trees: Mutex::new(NumMap::default()),
            cache: ChunkCache::new(32 << 20),
            running: Mutex::new(HashMap::new()),
            waiters: Arc::new(Mutex::new(Vec::new())),
            wake: Arc::new(Condvar::new()),
            files: Mutex::new(NumMap::default()),
            next_fh: AtomicU64::new(1),
            next_ctx: AtomicU64::new(1),
            mounted_ns: catalog::now_ns(),
            reads: AtomicU64::new(0),
            trimmed: std::sync::atomic::AtomicBool::new(true),
            listed: Mutex::new(HashMap::new()),
        });
        vfs.table.write().by_ino.insert(
            ROOT_INO,
            Inode {
                entry: Entry::Root(Root),
                parent: ROOT_INO,
                nlookup: 1,
                keys: Vec::new(),
                link: None,
                stored: false,
            },
        );
        let weak = Arc::downgrade(&vfs);
        let _ = std::thread::Builder::new()
            .name("cbrfs-waiters".into())
            .spawn(move || reaper(weak));
        vfs
    }

    /// The store shown.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn repo(&self, vault: &str) -> VResult<Arc<Repo>> {
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
        if let Some((rid, r)) = self.repos.lock().get(vault) {
            if *rid == id {
                return Ok(r.clone());
            }
        }
        let r = Arc::new(self.store.repo(vault).map_err(|e| {
            log::error!("open vault {vault}: {e}");
            err_errno(&e)
        })?);
        self.repos.lock().insert(vault.to_string(), (id, r.clone()));
        Ok(r)
    }

    /// The opened backup `vault/name` (its record read once).
    fn ctx(&self, vault: &str, name: &str) -> VResult<Arc<BackupCtx>> {
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
        let repo = self.repo(vault)?;
        // The backup may name blobs in an index written after the repo was
        // opened.
        repo.refresh().map_err(|e| err_errno(&e))?;
        let ctx = Arc::new(BackupCtx {
            id: self.next_ctx.fetch_add(1, Ordering::Relaxed),
            vault: vault.to_string(),
            repo,
            record,
        });
        self.ctxs.lock().insert(key, (id, ctx.clone()));
        Ok(ctx)
    }

    fn tree(&self, ctx: &BackupCtx, id: &BlobId) -> VResult<Dir> {
        let key = (ctx.id, *id);
        if let Some(t) = self.trees.lock().get(&key) {
            return Ok(t.clone());
        }
        let t: Tree = ctx
            .repo
            .read_blob(id)
            .and_then(|b| model::decode_tree(&b))
            .map_err(|e| {
                log::error!("vault {}, backup {}: {e}", ctx.vault, ctx.record.name);
                libc::EIO
            })?;
        let t: Dir = Arc::new(t.entries.into_iter().map(Arc::new).collect());
        let mut cache = self.trees.lock();
        if cache.len() >= TREE_CACHE {
            cache.clear();
        }
        cache.insert(key, t.clone());
        Ok(t)
    }

    fn vault_exists(&self, name: &str) -> bool {
        rules::check_name("vault name", name).is_ok()
            && self.store.vault_dir(name).join("vault.json").exists()
    }

    fn backup_exists(&self, vault: &str, name: &str) -> bool {
        if rules::check_name("backup name", name).is_err() {
            return false;
        }
        if self.running(vault, name).is_some() || self.store.backup_path(vault, name).exists() {
            return true;
        }
        // A vault in a bucket: another host may have made the backup since
        // this one last listed it; a listing fetches new records.
        self.relist_remote(vault) && self.store.backup_path(vault, name).exists()
    }

    /// List the backups of `vault` if it is kept in a bucket and was not
    /// listed for a lookup in the last [`RELIST_EVERY`]; true if listed.
    fn relist_remote(&self, vault: &str) -> bool {
        if !matches!(self.store.registration(vault), Ok(Some(_))) {
            return false;
        }
        {
            let mut listed = self.listed.lock();
            let now = std::time::Instant::now();
            if listed
                .get(vault)
                .is_some_and(|t| now.duration_since(*t) < RELIST_EVERY)
            {
                return false;
            }
            listed.insert(vault.to_string(), now);
        }
        self.store.backup_names(vault).is_ok()
    }

    /// The newest available backup of a vault.
    /// The newest backup of the vault. One dated later than the real clock
    /// was made by a simulated pass (`policy run-due --now`): it is passed
    /// over while any backup is dated now or earlier, so a simulation never
    /// moves `latest` away from the real backups (issue #16).
    fn latest(&self, vault: &str) -> Option<String> {
        let names = self.store.backup_names(vault).ok()?;
        let now = catalog::now_ns();
        let mut best: Option<((bool, i64), String)> = None;
        for n in names {
            if let Ok(c) = self.ctx(vault, &n) {
                let k = (
                    crate::engine::browse::latest_key(c.record.started_ns, now),
                    n,
                );
                if best.as_ref().is_none_or(|b| k > *b) {
                    best = Some(k);
                }
            }
        }
        best.map(|(_, n)| n)
    }

    /// Attributes of a directory of the mount's own (the root, a vault, a
    /// backup); the caller sets the inode number.
    fn dir_attr(&self, perm: u32, mtime_ns: i64) -> Attr {
        Attr {
            ino: 0,
            kind: NodeKind::Dir,
            perm,
            nlink: 2,
            uid: self.opts.uid,
            gid: self.opts.gid,
            size: 0,
            blocks: 0,
            mtime_ns,
            ctime_ns: mtime_ns,
            rdev: 0,
            immutable: false,
        }
    }

    /// The names the root lists (vaults) or a vault lists (its backups,
    /// those a mkdir started included), sorted.
    fn live_names(&self, vault: Option<&str>) -> VResult<Vec<String>> {
        match vault {
            None => self.store.vault_names().map_err(|e| err_errno(&e)),
            Some(v) => {
                let mut names = self.store.backup_names(v).map_err(|e| err_errno(&e))?;
                for (rv, rb) in self.running.lock().keys() {
                    if rv == v && !names.contains(rb) {
                        names.push(rb.clone());
                    }
                }
                names.sort();
                Ok(names)
            }
        }
    }

    /// The mtime of the root (`vault` None) or of a vault's directory: it
    /// changes whenever the listing does. The kernel caches every
    /// directory's listing (the mount opts out of OPENDIR) and, with
    /// FUSE_AUTO_INVAL_DATA, drops a listing once the directory's mtime
    /// differs from the one it was cached under; these directories change
    /// when the CLI makes or deletes a vault or a backup. The newest
    /// change of the store files behind the listing, with its last six
    /// digits of nanoseconds replaced by a hash of the names listed: two
    /// listings made within one tick of the file system's clock still
    /// differ.
    fn live_mtime(&self, vault: Option<&str>, names: &[String]) -> i64 {
        let ns = |p: PathBuf| {
            std::fs::metadata(p).map_or(0, |m| m.mtime() * 1_000_000_000 + m.mtime_nsec())
        };
        let base = match vault {
            None => names
                .iter()
                .map(|v| ns(self.store.vault_dir(v).join("vault.json")))
                .chain([ns(self.store.root().join("vaults")), self.mounted_ns])
                .max()
                .unwrap_or(0),
            Some(v) => {
                let d = self.store.vault_dir(v);
                ns(d.join("vault.json")).max(ns(d.join("backups")))
            }
        };
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for n in names {
            h.update(n.as_bytes());
            h.update(&[0]);
        }
        base - base.rem_euclid(1_000_000) + (h.digest() % 1_000_000) as i64
    }

    /// Attributes of the root (`vault` None) or of a vault's directory,
    /// whose listing is `names` (from [`Vfs::live_names`]).
    fn live_attr(&self, vault: Option<&str>, names: &[String]) -> VResult<Attr> {
        if vault.is_some_and(|v| !self.vault_exists(v)) {
            return Err(libc::ENOENT);
        }
        Ok(self.dir_attr(0o755, self.live_mtime(vault, names)))
    }

    /// Attributes of entry `e` as inode `ino`.
    fn attr_of(&self, ino: u64, e: &Entry) -> VResult<Attr> {
        let mut a = e.ops().attr(self)?;
        a.ino = ino;
        Ok(a)
    }

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> VResult<Attr> {
        let (e, _) = self.entry(ino)?;
        self.attr_of(ino, &e)
    }

    /// Look up `name` in `parent`, counting a lookup.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> VResult<Attr> {
        let (pe, _) = self.entry(parent)?;
        let (entry, link) = pe.ops().lookup(self, name)?;
        let ino = self.intern(parent, name, entry, link, true);
        let e = self.entry(ino)?.0;
        self.attr_of(ino, &e).inspect_err(|_| self.forget(ino, 1))
    }

    /// The entries of directory `ino` after position `offset`, each with
    /// its position (1 is ".", 2 is "..", then the entries in name order).
    /// Inodes are allocated uncounted: the caller counts, with
    /// [`Vfs::add_lookup`], the entries the kernel received through
    /// readdirplus, and releases the rest with [`Vfs::forget`]`(ino, 0)`.
    /// All of them: for tests; the mount uses [`Vfs::readdir_each`].
    pub fn readdir(&self, ino: u64, offset: u64) -> VResult<Vec<(u64, DirEntry)>> {
        let mut out = Vec::new();
        self.readdir_each(ino, offset, |pos, e| {
            out.push((pos, e));
            true
        })?;
        Ok(out)
    }

    /// [`Vfs::readdir`], one entry at a time: `each(position, entry)`
    /// returns false to stop (the kernel's buffer is full). An entry is
    /// made (its inode allocated) only when it is handed over, so a
    /// listing in many calls costs the entries listed, not the entries
    /// after the offset at every call (which made `ls` of a directory of
    /// a million entries quadratic).
    pub fn readdir_each(
        &self,
        ino: u64,
        offset: u64,
        mut each: impl FnMut(u64, DirEntry) -> bool,
    ) -> VResult<()> {
        let (e, parent) = self.entry(ino)?;
        // A live directory's listing is read once, for its entries and for
        // its own mtime.
        let listing = e.ops().list(self, offset < 1)?;
        if offset < 1 {
            let attr = match listing.own() {
                Some(mut a) => {
                    a.ino = ino;
                    a
                }
                None => self.attr_of(ino, &e)?,
            };
            if !each(
                1,
                DirEntry {
                    name: b".".to_vec(),
                    attr,
                },
            ) {
                return Ok(());
            }
        }
        if offset < 2 {
            let attr = match self.entry(parent) {
                Ok((pe, _)) => self.attr_of(parent, &pe)?,
                Err(_) => self.attr_of(ino, &e)?,
            };
            if !each(
                2,
                DirEntry {
                    name: b"..".to_vec(),
                    attr,
                },
            ) {
                return Ok(());
            }
        }
        let skip = offset.saturating_sub(2) as usize;
        for (i, Child { name, entry, link }) in listing.children(skip) {
            // Vanished between listing and stat: left out.
            let Ok(mut attr) = entry.ops().attr(self) else {
                continue;
            };
            attr.ino = self.intern(ino, &name, entry, link, false);
            if !each(3 + i as u64, DirEntry { name, attr }) {
                break;
            }
        }
        Ok(())
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: u64) -> VResult<Vec<u8>> {
        self.entry(ino)?.0.ops().readlink(self)
    }

    /// All xattrs of `ino`: a node's own, or a vault's or backup's
    /// `user.cbrfs.*`.
    pub fn xattrs(&self, ino: u64) -> VResult<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.entry(ino)?.0.ops().xattrs(self))
    }

    /// `statfs`: total capacity and use of all vaults, in 4 KiB blocks.
    pub fn statfs(&self) -> (u64, u64, u64) {
        let mut cap = 0u64;
        let mut used = 0u64;
        let mut files = 0u64;
        for v in self.store.vaults().unwrap_or_default() {
            cap += v.capacity_bytes();
            used += self.store.used_bytes(&v.name).unwrap_or(0);
            files += self
                .store
                .backup_names(&v.name)
                .map(|b| b.len() as u64)
                .unwrap_or(0);
        }
        (cap / 4096, cap.saturating_sub(used) / 4096, files)
    }

    /// `rmdir`: backups are deleted with the CLI, never through the mount.
    pub fn rmdir(&self, parent: u64) -> Errno {
        match self.entry(parent) {
            Ok((e, _)) if e.is_live() => libc::EPERM,
            _ => libc::EROFS,
        }
    }

    /// Any other change (create, unlink, rename, setattr, xattrs...).
    pub fn modify(&self, ino: u64) -> Errno {
        match self.entry(ino) {
            Ok((e, _)) if e.is_live() => libc::EPERM,
            _ => libc::EROFS,
        }
    }
}
