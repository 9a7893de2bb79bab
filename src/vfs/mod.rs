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

use crate::catalog::{self, Store};
use crate::engine::backup::{self, BackupOptions};
use crate::engine::progress::Progress;
use crate::engine::reader::{ChunkCache, FileReader};
use crate::error::{Error, Kind};
use crate::model::{self, BackupRecord, Node, NodeKind, Origin, Tree};
use crate::rules;
use crate::store::{BlobId, Repo};
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Hard-link identity: (backup context, resource, link group).
type LinkKey = (u64, u32, u64);

/// Hashes the numbers this module makes itself (inode numbers, file
/// handles, backup context ids; keyed blob ids) with one
/// multiply per word: SipHash's resistance to chosen keys buys nothing for
/// keys no one else chooses, and it was a fifth of the daemon's
/// instructions in `find`. Names, which come from backups, keep SipHash.
#[derive(Default, Clone, Copy)]
struct NumHasher(u64);

impl std::hash::Hasher for NumHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(n.into());
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type NumMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<NumHasher>>;

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

/// The state of a backup started by `mkdir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Running.
    Protecting,
    /// Done and committed.
    Available,
    /// Failed, with why.
    Failed(String),
}

/// A backup started in this mount.
pub struct Running {
    progress: Arc<Progress>,
    state: Mutex<RunState>,
    started_ns: i64,
}

/// A backup opened for reading.
pub struct BackupCtx {
    id: u64,
    vault: String,
    repo: Arc<Repo>,
    record: BackupRecord,
}

#[derive(Clone)]
enum Entry {
    Root,
    Vault(String),
    Latest(String),
    Backup(String, String),
    Node {
        ctx: Arc<BackupCtx>,
        res: u32,
        node: Arc<Node>,
    },
}

struct Inode {
    entry: Entry,
    parent: u64,
    nlookup: u64,
    keys: Vec<(u64, Name)>,
    link: Option<LinkKey>,
    /// True once the file's content was handed to the kernel's page cache
    /// by [`Vfs::prefetch`] (a later open need not send it again).
    stored: bool,
}

#[derive(Default)]
struct Table {
    next: u64,
    by_ino: NumMap<u64, Inode>,
    /// Per parent inode, its children's names that have inodes.
    by_key: NumMap<u64, HashMap<Name, u64>>,
    links: HashMap<LinkKey, u64>,
}

struct Waiter {
    key: (String, String),
    deadline: Instant,
    then: Box<dyn FnOnce(VResult<()>) + Send>,
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

/// An open file.
pub struct OpenFile {
    ctx: Arc<BackupCtx>,
    reader: FileReader,
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
    waiters: Mutex<Vec<Waiter>>,
    wake: Condvar,
    files: Mutex<NumMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    next_ctx: AtomicU64,
    mounted_ns: i64,
    /// Reads since the waiter thread last looked (for trimming memory).
    reads: AtomicU64,
    /// True once memory was trimmed after the last burst of reads.
    trimmed: std::sync::atomic::AtomicBool,
}

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

/// Files up to this size are read whole when opened, for the kernel's page
/// cache (see [`Vfs::prefetch`]): the kernel's first readahead of such a
/// file would ask for all of it anyway.
pub const PREFETCH_MAX: u64 = 128 << 10;

/// Most decoded trees kept.
const TREE_CACHE: usize = 1024;

fn err_errno(e: &Error) -> Errno {
    e.errno()
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
            waiters: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            files: Mutex::new(NumMap::default()),
            next_fh: AtomicU64::new(1),
            next_ctx: AtomicU64::new(1),
            mounted_ns: catalog::now_ns(),
            reads: AtomicU64::new(0),
            trimmed: std::sync::atomic::AtomicBool::new(true),
        });
        vfs.table.write().by_ino.insert(
            ROOT_INO,
            Inode {
                entry: Entry::Root,
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

    fn entry(&self, ino: u64) -> VResult<(Entry, u64)> {
        let t = self.table.read();
        let i = t.by_ino.get(&ino).ok_or(libc::ENOENT)?;
        Ok((i.entry.clone(), i.parent))
    }

    /// Find or allocate the inode of `name` in `parent`; counts a lookup
    /// when `count` (lookup and readdirplus do; readdir does not).
    fn intern(
        &self,
        parent: u64,
        name: &[u8],
        entry: Entry,
        link: Option<LinkKey>,
        count: bool,
    ) -> u64 {
        let mut t = self.table.write();
        let known = t.by_key.get(&parent).and_then(|m| m.get(name)).copied();
        let ino = match known {
            Some(ino) => ino,
            None => {
                let key: Name = name.into();
                match link.and_then(|l| t.links.get(&l).copied()) {
                    // Another name of a hard-linked inode already known.
                    Some(ino) => {
                        if let Some(i) = t.by_ino.get_mut(&ino) {
                            i.keys.push((parent, key.clone()));
                        }
                        t.by_key.entry(parent).or_default().insert(key, ino);
                        ino
                    }
                    None => {
                        let ino = t.next;
                        t.next += 1;
                        t.by_key.entry(parent).or_default().insert(key.clone(), ino);
                        if let Some(l) = link {
                            t.links.insert(l, ino);
                        }
                        t.by_ino.insert(
                            ino,
                            Inode {
                                entry,
                                parent,
                                nlookup: 0,
                                keys: vec![(parent, key)],
                                link,
                                stored: false,
                            },
                        );
                        ino
                    }
                }
            }
        };
        if count {
            if let Some(i) = t.by_ino.get_mut(&ino) {
                i.nlookup += 1;
            }
        }
        ino
    }

    /// The kernel forgot `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        Self::forget_locked(&mut self.table.write(), ino, n);
    }

    fn forget_locked(t: &mut Table, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let gone = match t.by_ino.get_mut(&ino) {
            Some(i) => {
                i.nlookup = i.nlookup.saturating_sub(n);
                i.nlookup == 0
            }
            None => false,
        };
        if gone {
            if let Some(i) = t.by_ino.remove(&ino) {
                for (p, k) in i.keys {
                    if let Some(m) = t.by_key.get_mut(&p) {
                        m.remove(&k);
                        if m.is_empty() {
                            t.by_key.remove(&p);
                        }
                    }
                }
                if let Some(l) = i.link {
                    t.links.remove(&l);
                }
            }
        }
    }

    /// Number of inodes held (for tests and memory checks).
    pub fn inode_count(&self) -> usize {
        self.table.read().by_ino.len()
    }

    fn repo(&self, vault: &str) -> VResult<Arc<Repo>> {
        let id = file_id(&self.store.vault_dir(vault).join("key")).ok_or(libc::ENOENT)?;
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

    /// The mkdir backup `vault/name` while it is protecting or failed.
    /// Once its record exists it is available, whatever the backup thread
    /// has still to do after the commit (the record is the commit point,
    /// and `cbrfs backup wait` goes by it).
    fn running(&self, vault: &str, name: &str) -> Option<Arc<Running>> {
        let r = self
            .running
            .lock()
            .get(&(vault.to_string(), name.to_string()))
            .cloned()?;
        if *r.state.lock() == RunState::Protecting && self.store.backup_path(vault, name).exists() {
            return None;
        }
        Some(r)
    }

    fn vault_exists(&self, name: &str) -> bool {
        rules::check_name("vault name", name).is_ok()
            && self.store.vault_dir(name).join("vault.json").exists()
    }

    fn backup_exists(&self, vault: &str, name: &str) -> bool {
        rules::check_name("backup name", name).is_ok()
            && (self.running(vault, name).is_some() || self.store.backup_path(vault, name).exists())
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

    fn dir_attr(&self, ino: u64, perm: u32, mtime_ns: i64) -> Attr {
        Attr {
            ino,
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
    fn live_attr(&self, ino: u64, vault: Option<&str>, names: &[String]) -> VResult<Attr> {
        if vault.is_some_and(|v| !self.vault_exists(v)) {
            return Err(libc::ENOENT);
        }
        Ok(self.dir_attr(ino, 0o755, self.live_mtime(vault, names)))
    }

    /// The vault whose listing `e` is: Some(None) for the root, Some(vault)
    /// for a vault's directory, None for the rest.
    fn live_of(e: &Entry) -> Option<Option<&str>> {
        match e {
            Entry::Root => Some(None),
            Entry::Vault(v) => Some(Some(v.as_str())),
            _ => None,
        }
    }

    fn attr_of(&self, ino: u64, e: &Entry) -> VResult<Attr> {
        match e {
            Entry::Root | Entry::Vault(_) => {
                let vault = Self::live_of(e).flatten();
                self.live_attr(ino, vault, &self.live_names(vault)?)
            }
            Entry::Latest(v) => {
                let target = self.latest(v).ok_or(libc::ENOENT)?;
                let mut a = self.dir_attr(ino, 0o777, self.mounted_ns);
                a.kind = NodeKind::Symlink;
                a.nlink = 1;
                a.size = target.len() as u64;
                Ok(a)
            }
            Entry::Backup(v, b) => {
                if let Some(r) = self.running(v, b) {
                    if *r.state.lock() != RunState::Available {
                        return Ok(self.dir_attr(ino, 0o555, r.started_ns));
                    }
                }
                let c = self.ctx(v, b)?;
                Ok(self.dir_attr(ino, 0o555, c.record.finished_ns))
            }
            Entry::Node { node, .. } => Ok(node_attr(ino, node)),
        }
    }

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> VResult<Attr> {
        let (e, _) = self.entry(ino)?;
        self.attr_of(ino, &e)
    }

    /// True if entries inside `ino` must wait for a running backup; gives
    /// the backup's key.
    pub fn pending(&self, ino: u64) -> Option<(String, String)> {
        let (e, _) = self.entry(ino).ok()?;
        if let Entry::Backup(v, b) = e {
            let r = self.running(&v, &b)?;
            if *r.state.lock() == RunState::Protecting {
                return Some((v, b));
            }
        }
        None
    }

    /// Call `then` once backup `key` is no longer running: `Ok` if it is
    /// available, EIO if it failed, EAGAIN if the wait bound passes first.
    pub fn wait(&self, key: (String, String), then: Box<dyn FnOnce(VResult<()>) + Send>) {
        let state = self.running(&key.0, &key.1).map(|r| r.state.lock().clone());
        match state {
            Some(RunState::Protecting) => {
                self.waiters.lock().push(Waiter {
                    key,
                    deadline: Instant::now() + self.opts.wait,
                    then,
                });
                self.wake.notify_all();
            }
            Some(RunState::Failed(_)) => then(Err(libc::EIO)),
            _ => then(Ok(())),
        }
    }

    /// Look up `name` in `parent`, counting a lookup.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> VResult<Attr> {
        let (pe, _) = self.entry(parent)?;
        let sname = std::str::from_utf8(name).unwrap_or("");
        let (entry, link) = match &pe {
            Entry::Root => {
                if !self.vault_exists(sname) {
                    return Err(libc::ENOENT);
                }
                (Entry::Vault(sname.to_string()), None)
            }
            Entry::Vault(v) => {
                if name == b"latest" {
                    self.latest(v).ok_or(libc::ENOENT)?;
                    (Entry::Latest(v.clone()), None)
                } else if self.backup_exists(v, sname) {
                    (Entry::Backup(v.clone(), sname.to_string()), None)
                } else {
                    return Err(libc::ENOENT);
                }
            }
            Entry::Backup(v, b) => {
                self.check_available(v, b)?;
                let ctx = self.ctx(v, b)?;
                let i = ctx
                    .record
                    .resources
                    .iter()
                    .position(|r| r.root_node().name == name)
                    .ok_or(libc::ENOENT)?;
                let node = Arc::new(ctx.record.resources[i].root_node().clone());
                (
                    Entry::Node {
                        ctx,
                        res: i as u32,
                        node,
                    },
                    None,
                )
            }
            Entry::Node { ctx, res, node } => {
                if node.kind != NodeKind::Dir {
                    return Err(libc::ENOTDIR);
                }
                let tree = self.tree(ctx, &node.subtree.ok_or(libc::EIO)?)?;
                let child = find_in(&tree, name).ok_or(libc::ENOENT)?;
                let link = (child.link_group != 0).then_some((ctx.id, *res, child.link_group));
                (
                    Entry::Node {
                        ctx: ctx.clone(),
                        res: *res,
                        node: child,
                    },
                    link,
                )
            }
            Entry::Latest(_) => return Err(libc::ENOTDIR),
        };
        let ino = self.intern(parent, name, entry.clone(), link, true);
        let e = self.entry(ino)?.0;
        self.attr_of(ino, &e).inspect_err(|_| self.forget(ino, 1))
    }

    fn check_available(&self, vault: &str, backup: &str) -> VResult<()> {
        match self.running(vault, backup).map(|r| r.state.lock().clone()) {
            Some(RunState::Protecting) => Err(libc::EAGAIN),
            Some(RunState::Failed(_)) => Err(libc::EIO),
            _ => Ok(()),
        }
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
        // The root's or a vault's listing, read once for its entries and
        // for its own mtime.
        let live = Self::live_of(&e);
        let live_names = match live {
            Some(vault) => self.live_names(vault)?,
            None => Vec::new(),
        };
        if offset < 1 {
            let attr = match live {
                Some(vault) => self.live_attr(ino, vault, &live_names)?,
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
        let mut children: Vec<(Vec<u8>, Entry, Option<LinkKey>)> = Vec::new();
        match &e {
            Entry::Root => {
                for v in live_names {
                    children.push((v.as_bytes().to_vec(), Entry::Vault(v), None));
                }
            }
            Entry::Vault(v) => {
                for b in live_names {
                    children.push((b.as_bytes().to_vec(), Entry::Backup(v.clone(), b), None));
                }
                if self.latest(v).is_some() {
                    children.push((b"latest".to_vec(), Entry::Latest(v.clone()), None));
                }
            }
            Entry::Backup(v, b) => {
                self.check_available(v, b)?;
                let ctx = self.ctx(v, b)?;
                for (i, r) in ctx.record.resources.iter().enumerate() {
                    let node = Arc::new(r.root_node().clone());
                    children.push((
                        r.root_node().name.clone(),
                        Entry::Node {
                            ctx: ctx.clone(),
                            res: i as u32,
                            node,
                        },
                        None,
                    ));
                }
            }
            Entry::Node { ctx, res, node } => {
                if node.kind != NodeKind::Dir {
                    return Err(libc::ENOTDIR);
                }
                let tree = self.tree(ctx, &node.subtree.ok_or(libc::EIO)?)?;
                for (i, child) in tree.iter().enumerate().skip(skip) {
                    let link = (child.link_group != 0).then_some((ctx.id, *res, child.link_group));
                    let entry = Entry::Node {
                        ctx: ctx.clone(),
                        res: *res,
                        node: child.clone(),
                    };
                    let cino = self.intern(ino, &child.name, entry, link, false);
                    let attr = node_attr(cino, child);
                    let name = child.name.clone();
                    if !each(3 + i as u64, DirEntry { name, attr }) {
                        break;
                    }
                }
                return Ok(());
            }
            Entry::Latest(_) => return Err(libc::ENOTDIR),
        }
        for (i, (name, entry, link)) in children.into_iter().enumerate().skip(skip) {
            let cino = self.intern(ino, &name, entry.clone(), link, false);
            match self.attr_of(cino, &entry) {
                Ok(attr) => {
                    if !each(3 + i as u64, DirEntry { name, attr }) {
                        break;
                    }
                }
                // Vanished between listing and stat: leave it out.
                Err(_) => self.forget(cino, 0),
            }
        }
        Ok(())
    }

    /// Count one kernel lookup of `ino` (an entry sent by readdirplus).
    pub fn add_lookup(&self, ino: u64) {
        if let Some(i) = self.table.write().by_ino.get_mut(&ino) {
            i.nlookup += 1;
        }
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: u64) -> VResult<Vec<u8>> {
        match self.entry(ino)?.0 {
            Entry::Latest(v) => self.latest(&v).map(|n| n.into_bytes()).ok_or(libc::ENOENT),
            Entry::Node { node, .. } if node.kind == NodeKind::Symlink => Ok(node.target.clone()),
            _ => Err(libc::EINVAL),
        }
    }

    /// Open a file for reading; any write access is EROFS.
    pub fn open(&self, ino: u64, flags: i32) -> VResult<u64> {
        let acc = flags & libc::O_ACCMODE;
        if acc != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(libc::EROFS);
        }
        match self.entry(ino)?.0 {
            Entry::Node { ctx, node, .. } if node.kind == NodeKind::File => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                let reader = FileReader::new(&node);
                self.files
                    .lock()
                    .insert(fh, Arc::new(OpenFile { ctx, reader }));
                Ok(fh)
            }
            Entry::Node { .. } => Err(libc::EACCES),
            _ => Err(libc::EISDIR),
        }
    }

    /// The whole content of small file `ino`, for the adapter to put into
    /// the kernel's page cache (with FUSE_NOTIFY_STORE) before it answers
    /// the file's open, so that reading it costs no request (and no
    /// attribute refresh: the kernel marks atime stale after every read
    /// request it sends). `None` for an empty or large file, one handed
    /// over before, or one that cannot be read: reads then go through
    /// [`Vfs::read`], which reports damage as EIO.
    pub fn prefetch(&self, ino: u64) -> Option<Vec<u8>> {
        let (ctx, node) = {
            let mut t = self.table.write();
            let i = t.by_ino.get_mut(&ino)?;
            let Entry::Node { ctx, node, .. } = &i.entry else {
                return None;
            };
            if i.stored || node.kind != NodeKind::File || node.size == 0 || node.size > PREFETCH_MAX
            {
                return None;
            }
            i.stored = true;
            (ctx.clone(), node.clone())
        };
        FileReader::new(&node)
            .read_whole(&ctx.repo)
            .inspect_err(|e| log::debug!("backup {}: prefetch: {e}", ctx.record.name))
            .ok()
    }

    /// The kernel refused the content of `ino` handed over by
    /// [`Vfs::prefetch`]: a later open may try again.
    pub fn unstore(&self, ino: u64) {
        if let Some(i) = self.table.write().by_ino.get_mut(&ino) {
            i.stored = false;
        }
    }

    /// Close a file.
    pub fn release(&self, fh: u64) {
        self.files.lock().remove(&fh);
    }

    fn file(&self, fh: u64) -> VResult<Arc<OpenFile>> {
        self.files.lock().get(&fh).cloned().ok_or(libc::EBADF)
    }

    /// Read `size` bytes at `offset`. Damaged data is EIO, never wrong bytes.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> VResult<Vec<u8>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let f = self.file(fh)?;
        f.reader
            .read_at(&f.ctx.repo, &self.cache, offset, size as usize)
            .map_err(|e| {
                log::error!("backup {}: read: {e}", f.ctx.record.name);
                libc::EIO
            })
    }

    /// SEEK_DATA / SEEK_HOLE.
    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> VResult<i64> {
        let f = self.file(fh)?;
        let size = f.reader.size();
        if offset < 0 {
            return Err(libc::EINVAL);
        }
        let off = offset as u64;
        if off >= size {
            return Err(libc::ENXIO);
        }
        let next = f
            .reader
            .next_data(&f.ctx.repo, off)
            .map_err(|_| libc::EIO)?;
        match whence {
            libc::SEEK_DATA => match next {
                Some((s, _)) => Ok(s as i64),
                None => Err(libc::ENXIO),
            },
            libc::SEEK_HOLE => match next {
                Some((s, e)) if s <= off => Ok(e as i64),
                _ => Ok(off as i64),
            },
            _ => Err(libc::EINVAL),
        }
    }

    fn cbrfs_xattrs(&self, e: &Entry) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(String, String)> = Vec::new();
        match e {
            Entry::Vault(v) => {
                if let Ok(cfg) = self.store.vault(v) {
                    let used = self
                        .repo(v)
                        .ok()
                        .and_then(|r| r.used_bytes().ok())
                        .unwrap_or(0);
                    out.push(("type".into(), cfg.vault_type.as_str().into()));
                    out.push(("capacity".into(), format!("{}GB", cfg.capacity_gb)));
                    out.push(("used".into(), used.to_string()));
                    out.push(("description".into(), cfg.description.clone()));
                    out.push((
                        "tags".into(),
                        cfg.tags
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    ));
                    out.push(("resources".into(), cfg.resources.len().to_string()));
                }
            }
            Entry::Backup(v, b) => {
                let run = self.running(v, b);
                let state = run.as_ref().map(|r| r.state.lock().clone());
                match (&run, state) {
                    (Some(r), Some(RunState::Protecting)) => {
                        out.push(("status".into(), "protecting".into()));
                        out.push(("progress".into(), r.progress.percent().to_string()));
                        out.push(("created".into(), catalog::ns_to_rfc3339(r.started_ns)));
                        out.push(("files".into(), r.progress.files().to_string()));
                        out.push(("bytes_read".into(), r.progress.read().to_string()));
                    }
                    (Some(r), Some(RunState::Failed(why))) => {
                        out.push(("status".into(), "error".into()));
                        out.push(("progress".into(), r.progress.percent().to_string()));
                        out.push(("created".into(), catalog::ns_to_rfc3339(r.started_ns)));
                        out.push(("error".into(), why));
                    }
                    _ => {
                        if let Ok(c) = self.ctx(v, b) {
                            let r = &c.record;
                            out.push(("status".into(), "available".into()));
                            out.push(("progress".into(), "100".into()));
                            out.push(("created".into(), catalog::ns_to_rfc3339(r.started_ns)));
                            out.push(("finished".into(), catalog::ns_to_rfc3339(r.finished_ns)));
                            out.push(("size".into(), r.stats.bytes_total.to_string()));
                            out.push(("added".into(), r.stats.bytes_added.to_string()));
                            out.push((
                                "type".into(),
                                if r.full { "full" } else { "incremental" }.into(),
                            ));
                            out.push((
                                "origin".into(),
                                match r.origin {
                                    Origin::Manual => "manual",
                                    Origin::Mount => "mount",
                                    Origin::Policy => "policy",
                                }
                                .into(),
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
        out.into_iter()
            .map(|(k, v)| (format!("user.cbrfs.{k}").into_bytes(), v.into_bytes()))
            .collect()
    }

    /// All xattrs of `ino`: a node's own, or a vault's or backup's
    /// `user.cbrfs.*`.
    pub fn xattrs(&self, ino: u64) -> VResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let (e, _) = self.entry(ino)?;
        Ok(match &e {
            Entry::Node { node, .. } => node
                .xattrs
                .iter()
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect(),
            _ => self.cbrfs_xattrs(&e),
        })
    }

    /// `statfs`: total capacity and use of all vaults, in 4 KiB blocks.
    pub fn statfs(&self) -> (u64, u64, u64) {
        let mut cap = 0u64;
        let mut used = 0u64;
        let mut files = 0u64;
        for v in self.store.vaults().unwrap_or_default() {
            cap += v.capacity_bytes();
            used += self
                .repo(&v.name)
                .ok()
                .and_then(|r| r.used_bytes().ok())
                .unwrap_or(0);
            files += self
                .store
                .backup_names(&v.name)
                .map(|b| b.len() as u64)
                .unwrap_or(0);
        }
        (cap / 4096, cap.saturating_sub(used) / 4096, files)
    }

    /// `mkdir` in a vault: accept a backup named `name` and run it on its
    /// own thread. Returns the new directory's attributes at once.
    pub fn mkdir(self: &Arc<Self>, parent: u64, name: &[u8]) -> VResult<Attr> {
        let (pe, _) = self.entry(parent)?;
        let vault = match pe {
            Entry::Root => return Err(libc::EPERM),
            Entry::Vault(v) => v,
            _ => return Err(libc::EROFS),
        };
        let sname = match std::str::from_utf8(name) {
            Ok(s) => s.to_string(),
            Err(_) => return Err(libc::EINVAL),
        };
        let key = (vault.clone(), sname.clone());
        if let Some(r) = self.running(&vault, &sname) {
            if !matches!(*r.state.lock(), RunState::Failed(_)) {
                log::warn!("mkdir {vault}/{sname}: a backup of that name exists");
                return Err(libc::EEXIST);
            }
        }
        let prepared = backup::prepare(
            &self.store,
            &vault,
            BackupOptions {
                name: Some(sname.clone()),
                origin: Some(Origin::Mount),
                ..Default::default()
            },
        )
        .map_err(|e| {
            log::warn!("mkdir {vault}/{sname}: backup refused: {e}");
            backup::record_refusal(&self.store, &vault, Some(&sname), &e, catalog::now_ns());
            err_errno(&e)
        })?;
        let run = Arc::new(Running {
            progress: prepared.progress.clone(),
            state: Mutex::new(RunState::Protecting),
            started_ns: catalog::now_ns(),
        });
        self.running.lock().insert(key.clone(), run.clone());
        log::info!("mkdir {vault}/{sname}: backup accepted");
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("backup-{vault}-{sname}"))
            .stack_size(256 << 20)
            .spawn(move || {
                let result = prepared.run();
                let state = match &result {
                    Ok(_) => {
                        log::info!("backup {}/{} is available", key.0, key.1);
                        RunState::Available
                    }
                    Err(e) => {
                        log::error!("backup {}/{} failed: {e}", key.0, key.1);
                        RunState::Failed(e.to_string())
                    }
                };
                *run.state.lock() = state.clone();
                if state == RunState::Available {
                    me.running.lock().remove(&key);
                }
                me.finish_waiters(
                    &key,
                    if state == RunState::Available {
                        Ok(())
                    } else {
                        Err(libc::EIO)
                    },
                );
            });
        if let Err(e) = spawned {
            log::error!(
                "mkdir {}/{}: cannot start the backup thread: {e}",
                vault,
                sname
            );
            self.running.lock().remove(&(vault.clone(), sname.clone()));
            return Err(libc::EAGAIN);
        }
        let ino = self.intern(
            parent,
            name,
            Entry::Backup(vault.clone(), sname),
            None,
            true,
        );
        Ok(self.dir_attr(ino, 0o555, catalog::now_ns()))
    }

    fn finish_waiters(&self, key: &(String, String), result: VResult<()>) {
        let ready: Vec<Waiter> = {
            let mut w = self.waiters.lock();
            let (ready, rest): (Vec<_>, Vec<_>) = w.drain(..).partition(|x| &x.key == key);
            *w = rest;
            ready
        };
        for w in ready {
            (w.then)(result);
        }
    }

    /// `rmdir`: backups are deleted with the CLI, never through the mount.
    pub fn rmdir(&self, parent: u64) -> Errno {
        match self.entry(parent).map(|e| e.0) {
            Ok(Entry::Root) | Ok(Entry::Vault(_)) => libc::EPERM,
            _ => libc::EROFS,
        }
    }

    /// Any other change (create, unlink, rename, setattr, xattrs...).
    pub fn modify(&self, ino: u64) -> Errno {
        match self.entry(ino).map(|e| e.0) {
            Ok(Entry::Root) | Ok(Entry::Vault(_)) => libc::EPERM,
            _ => libc::EROFS,
        }
    }

    /// Backups running in this mount, for a clean shutdown.
    pub fn running_count(&self) -> usize {
        self.running
            .lock()
            .values()
            .filter(|r| *r.state.lock() == RunState::Protecting)
            .count()
    }

    /// Time since the mount started (for attributes).
    pub fn mounted_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.mounted_ns.max(0) as u64)
    }
}

/// Answers parked requests whose wait bound passed.
fn reaper(vfs: std::sync::Weak<Vfs>) {
    loop {
        let Some(v) = vfs.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<Waiter> = {
            let mut w = v.waiters.lock();
            let (expired, rest): (Vec<_>, Vec<_>) = w.drain(..).partition(|x| x.deadline <= now);
            *w = rest;
            expired
        };
        for w in expired {
            log::info!(
                "backup {}/{} still running: a request got EAGAIN",
                w.key.0,
                w.key.1
            );
            (w.then)(Err(libc::EAGAIN));
        }
        // Give memory freed by a burst of reads back to the system once the
        // mount is quiet: glibc keeps freed chunks in per-thread arenas, so
        // an idle mount would otherwise keep its peak size.
        let reads = v.reads.swap(0, Ordering::Relaxed);
        if reads == 0 && !v.trimmed.swap(true, Ordering::Relaxed) {
            // SAFETY: malloc_trim only releases free memory.
            unsafe { libc::malloc_trim(0) };
        } else if reads > 0 {
            v.trimmed.store(false, Ordering::Relaxed);
        }
        let next = v.waiters.lock().iter().map(|w| w.deadline).min();
        let mut guard = v.waiters.lock();
        let timeout = next
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(500))
            .min(Duration::from_millis(500));
        v.wake.wait_for(&mut guard, timeout);
        drop(guard);
        drop(v);
    }
}

/// Attributes of a node of a backup.
pub fn node_attr(ino: u64, n: &Node) -> Attr {
    Attr {
        ino,
        kind: n.kind,
        perm: n.mode & 0o7777,
        nlink: n.nlink.max(1),
        uid: n.uid,
        gid: n.gid,
        size: n.size,
        blocks: n.blocks,
        mtime_ns: n.mtime_ns,
        ctime_ns: n.ctime_ns,
        rdev: n.rdev,
        immutable: true,
    }
}
