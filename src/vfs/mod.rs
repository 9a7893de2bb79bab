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
//! memory follows what is in use, not the store's size; an inode keeps
//! where its node is, not the node (at most 200 bytes each, issue 17).
//! Trees are read lazily through the mapped packs and cached by vault and
//! id, up to a number of bytes.
//!
//! A backup started by `mkdir` runs on its own thread. Until it is
//! available, a lookup or readdir inside it is parked (its reply kept, no
//! worker thread held) and answered when the backup ends, or with EAGAIN
//! after the wait bound: fuser does not pass interrupts on, and a request
//! never answered would make its process unkillable.
//!
//! This file owns the tree's shape (the kinds of entries) and the
//! operations that walk it: attributes, lookup, readdir, each one piece of
//! code over what an entry's kind answers (`EntryOps`). One file per kind,
//! as restic's `internal/fuse`: `root` (with the vaults' listings), `vault`,
//! `latest`, `backup_dir` and `tree` (the entries of a backup's trees).
//! The other parts: `table` (the inode table), `cache` (opened vaults,
//! backups and decoded trees), `running` (backups started by `mkdir`),
//! `file` (reads of open files), `implicit` (reads without an OPEN).

mod backup_dir;
mod cache;
mod file;
mod implicit;
mod latest;
mod root;
mod running;
mod table;
mod tree;
mod vault;

pub use cache::TREE_CACHE_BYTES;
pub use file::{OpenFile, PREFETCH_MAX, READ_IDLE};
pub use implicit::{AFTER_BYTES, AFTER_FILES, IMPLICIT_MAX};
pub use running::{RunState, Running};
pub use tree::node_attr;

use crate::catalog::{self, Store};
use crate::engine::reader::ChunkCache;
use crate::error::Error;
use crate::model::{BackupRecord, Node, NodeKind};
use crate::store::Repo;
use backup_dir::BackupDir;
use cache::{FileId, OpenedRepo, TreeCache};
use latest::Latest;
use parking_lot::{Condvar, Mutex, RwLock};
use root::Root;
use running::{reaper, Waiter};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use table::{Inode, NumMap, Table};
use tree::TreeNode;
use vault::VaultDir;

/// Hard-link identity: (backup context, resource, link group).
type LinkKey = (u64, u32, u64);

/// A decoded directory: its entries in name order. Inodes do not hold it
/// (they hold where their node is: [`tree::TreeNode`]), so the tree cache
/// alone decides how many are kept.
type Dir = Arc<Vec<Node>>;

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
    /// The opened vault its trees and files are read from, and its number
    /// (trees are cached by it: a tree several backups share is decoded
    /// once). Opened at the first read of a tree or a file
    /// ([`Vfs::ctx_repo`]), not when the backup is: listing a backup's
    /// resources needs only its record, so a mount that is only listed
    /// maps no index, nor decrypts an encrypted vault's (which stays in
    /// memory whole once read: 1.8 MB for 232 MiB of /usr/share).
    repo: std::sync::OnceLock<(u64, Arc<Repo>)>,
    record: BackupRecord,
    /// Its resources' root nodes (from the record), kept as a tree's
    /// nodes are, so that every node of a backup is found one way.
    roots: Dir,
}

/// An entry of the mount, by kind. Every inode keeps one: small (32
/// bytes), so that an inode costs under 200 bytes (issue 17).
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

    /// How this entry's parent finds it in the inode table: a node of a
    /// backup by its position (a tree's entry, or a backup's resource; a
    /// file by its tree and position, whatever the parent: [`TreeNode::key`]),
    /// a vault, backup or `latest` by its name. The root has no parent.
    fn key(&self) -> Option<table::Key<'_>> {
        match self {
            Entry::Root(_) => None,
            Entry::Vault(VaultDir(v)) => Some(table::Key::Name(v.as_bytes())),
            Entry::Latest(_) => Some(table::Key::Name(b"latest")),
            Entry::Backup(b) => Some(table::Key::Name(b.name().as_bytes())),
            Entry::Node(t) => Some(t.key()),
        }
    }
}

/// What each kind of entry answers, in its own file: lookup, readdir and
/// getattr call these and do not tell the kinds apart.
trait EntryOps {
    /// The entry's attributes; the caller sets the inode number.
    fn attr(&self, vfs: &Vfs) -> VResult<Attr>;
    /// Child `name` of a directory.
    fn lookup(&self, _vfs: &Vfs, _name: &[u8]) -> VResult<Child> {
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
    fn xattrs(&self, _vfs: &Vfs) -> VResult<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(Vec::new())
    }
}

/// A child of a directory, as lookup and readdir make it.
struct Child {
    name: Vec<u8>,
    entry: Entry,
    /// Its hard-link key: names with one key share an inode.
    link: Option<LinkKey>,
    /// Its attributes, when making it gave them (a backup's node: read
    /// from the tree at hand rather than found again).
    attr: Option<Attr>,
}

impl Child {
    /// A child whose attributes are asked of its entry.
    fn of(name: Vec<u8>, entry: Entry) -> Child {
        Child {
            name,
            entry,
            link: None,
            attr: None,
        }
    }
}

/// A directory's children.
enum Listing {
    /// Made at once (vaults, backups, resources: few), with the
    /// directory's own attributes when listing gave them: a live
    /// directory's mtime comes from the names it lists.
    Made(Option<Attr>, Vec<Child>),
    /// A directory of a backup's tree (its tree's id and entries), whose
    /// children are made as they are handed over.
    Tree(TreeNode, Arc<crate::store::BlobId>, Dir),
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
            Listing::Tree(node, id, dir) => Box::new(node.children(id, dir, skip)),
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
    repos: Mutex<HashMap<String, OpenedRepo>>,
    ctxs: Mutex<HashMap<BackupKey, (FileId, Arc<BackupCtx>)>>,
    trees: Mutex<TreeCache>,
    cache: ChunkCache,
    running: Mutex<HashMap<(String, String), Arc<Running>>>,
    /// Shared with the reaper thread, which waits on them without keeping
    /// the tree alive (it holds the tree weakly).
    waiters: Arc<Mutex<Vec<Waiter>>>,
    wake: Arc<Condvar>,
    files: Mutex<NumMap<u64, Arc<OpenFile>>>,
    /// Handles of files read without an OPEN (implicit.rs).
    implicit: Mutex<implicit::Implicit>,
    next_fh: AtomicU64,
    /// Numbers of opened backups and vaults.
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

/// A backup by vault and name.
type BackupKey = (String, String);

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
            trees: Mutex::new(TreeCache::new(TREE_CACHE_BYTES)),
            cache: ChunkCache::new(32 << 20),
            running: Mutex::new(HashMap::new()),
            waiters: Arc::new(Mutex::new(Vec::new())),
            wake: Arc::new(Condvar::new()),
            files: Mutex::new(NumMap::default()),
            implicit: Mutex::new(implicit::Implicit::default()),
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
                stored: false,
                linked: false,
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
        let Child {
            entry, link, attr, ..
        } = pe.ops().lookup(self, name)?;
        let ino = self.intern(parent, entry, link, true);
        // Another name of a hard-linked inode answers with the inode's
        // own entry's attributes, as every name of it must.
        let attr = match attr {
            Some(a) if link.is_none() => Ok(a),
            _ => self.entry(ino).and_then(|(e, _)| e.ops().attr(self)),
        };
        attr.map(|a| Attr { ino, ..a })
            .inspect_err(|_| self.forget(ino, 1))
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
        for (i, c) in listing.children(skip) {
            // Vanished between listing and stat: left out.
            let Ok(mut attr) = c.attr.map_or_else(|| c.entry.ops().attr(self), Ok) else {
                continue;
            };
            let name = c.name;
            attr.ino = self.intern(ino, c.entry, c.link, false);
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
        self.entry(ino)?.0.ops().xattrs(self)
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
