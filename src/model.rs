//! The serialized types: trees, nodes, chunk lists and backup records. This
//! is the one place that encodes and decodes them (bincode 2.0.1, standard
//! config: little-endian varints), each behind a format-version byte.
//!
//! bincode encodes enum variants by position and struct fields in order:
//! never reorder a variant or a field; add new ones at the end of a new
//! format version.

use crate::error::{Error, Result};
use crate::store::BlobId;
use bincode::{Decode, Encode};

/// Version byte in front of every tree and chunk-list blob.
pub const BLOB_FORMAT: u8 = 1;
/// Version of the backup record.
pub const RECORD_FORMAT: u32 = 1;
/// Magic of a backup record file.
pub const RECORD_MAGIC: &[u8; 8] = b"CBRBKUP1";
/// Largest allocation a decoder may make, against hostile input.
const DECODE_LIMIT: usize = 1 << 30;
/// A file with more chunks than this keeps its chunk list in separate
/// chunk-list blobs instead of inline in its tree.
pub const INLINE_CHUNKS: usize = 32;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Type of a file-system entry. Encoded by position: never reorder.
#[derive(Encode, Decode, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

impl NodeKind {
    /// The `S_IFMT` bits of this kind.
    pub fn ifmt(self) -> u32 {
        match self {
            NodeKind::File => libc::S_IFREG,
            NodeKind::Dir => libc::S_IFDIR,
            NodeKind::Symlink => libc::S_IFLNK,
            NodeKind::CharDev => libc::S_IFCHR,
            NodeKind::BlockDev => libc::S_IFBLK,
            NodeKind::Fifo => libc::S_IFIFO,
            NodeKind::Socket => libc::S_IFSOCK,
        }
    }
    /// The kind of an `st_mode`.
    pub fn from_mode(mode: u32) -> Option<NodeKind> {
        match mode & libc::S_IFMT {
            libc::S_IFREG => Some(NodeKind::File),
            libc::S_IFDIR => Some(NodeKind::Dir),
            libc::S_IFLNK => Some(NodeKind::Symlink),
            libc::S_IFCHR => Some(NodeKind::CharDev),
            libc::S_IFBLK => Some(NodeKind::BlockDev),
            libc::S_IFIFO => Some(NodeKind::Fifo),
            libc::S_IFSOCK => Some(NodeKind::Socket),
            _ => None,
        }
    }
}

/// One chunk of a file at a logical offset; bytes between chunks are holes.
#[derive(Encode, Decode, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    /// The data blob.
    pub id: BlobId,
    /// Offset of the chunk's first byte in the file.
    pub offset: u64,
    /// Length of the chunk.
    pub len: u32,
}

/// One entry of a chunk-list blob, positioned relative to the previous
/// entry so that a change early in a file does not rewrite later lists.
#[derive(Encode, Decode, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelChunk {
    /// The data blob.
    pub id: BlobId,
    /// Hole bytes between the previous chunk's end (or the list's start) and
    /// this chunk.
    pub gap: u64,
    /// Length of the chunk.
    pub len: u32,
}

/// A chunk-list blob's place in a file.
#[derive(Encode, Decode, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListRef {
    /// The chunk-list blob.
    pub id: BlobId,
    /// File offset where the list's span starts.
    pub offset: u64,
    /// Bytes the list spans (chunks and holes between them).
    pub span: u64,
    /// Number of chunks in the list.
    pub count: u32,
}

/// Where a file's bytes are.
#[derive(Encode, Decode, Clone, Debug, PartialEq, Eq, Default)]
pub enum Content {
    /// No data (not a file, or only holes).
    #[default]
    None,
    /// Chunks listed in the tree itself (small files).
    Chunks(Vec<ChunkRef>),
    /// Chunk lists stored as separate blobs (large files).
    Lists(Vec<ListRef>),
}

/// An extended attribute.
#[derive(Encode, Decode, Clone, Debug, PartialEq, Eq)]
pub struct Xattr {
    /// Full name, e.g. `user.foo` or `system.posix_acl_access`.
    pub name: Vec<u8>,
    /// Raw value.
    pub value: Vec<u8>,
}

/// One directory entry with everything needed to restore it.
#[derive(Encode, Decode, Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Entry name (any bytes but `/` and NUL, not `.` or `..`).
    pub name: Vec<u8>,
    /// Type.
    pub kind: NodeKind,
    /// Permission bits with setuid, setgid and sticky (`st_mode & 07777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status-change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Size in bytes (files: content length; symlinks: target length).
    pub size: u64,
    /// 512-byte blocks the entry took at the source (`st_blocks`), so that
    /// `du` through the mount matches the source.
    pub blocks: u64,
    /// Link count at the source.
    pub nlink: u32,
    /// Hard-link identity: names of one inode share a non-zero group.
    pub link_group: u64,
    /// Source inode number (for change detection).
    pub inode: u64,
    /// Source device (for change detection).
    pub dev: u64,
    /// Device number of a char/block device.
    pub rdev: u64,
    /// Symlink target.
    pub target: Vec<u8>,
    /// Extended attributes, sorted by name (POSIX ACLs included).
    pub xattrs: Vec<Xattr>,
    /// File content.
    pub content: Content,
    /// A directory's tree blob.
    pub subtree: Option<BlobId>,
}

impl Node {
    /// A node of `kind` named `name` with everything else zero.
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Node {
        Node {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            size: 0,
            blocks: 0,
            nlink: 1,
            link_group: 0,
            inode: 0,
            dev: 0,
            rdev: 0,
            target: Vec::new(),
            xattrs: Vec::new(),
            content: Content::None,
            subtree: None,
        }
    }
}

/// One directory: its entries sorted by name.
#[derive(Encode, Decode, Clone, Debug, PartialEq, Eq, Default)]
pub struct Tree {
    /// Entries, sorted by name bytes, unique.
    pub entries: Vec<Node>,
}

impl Tree {
    /// Binary search for `name`.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.entries
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// Check a decoded tree's invariants: sorted unique names that are safe as
/// path components. A tree that breaks them is damaged or hostile.
pub fn validate_tree(tree: &Tree) -> Result<()> {
    for (i, n) in tree.entries.iter().enumerate() {
        if !is_safe_name(&n.name) {
            return Err(Error::corrupt(format!(
                "tree entry has an unsafe name {:?}",
                String::from_utf8_lossy(&n.name)
            )));
        }
        if i > 0 && tree.entries[i - 1].name >= n.name {
            return Err(Error::corrupt("tree entries are not sorted and unique"));
        }
    }
    Ok(())
}

/// A name that is one path component: non-empty, no `/` or NUL, not `.`/`..`.
pub fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
        && name.len() <= 4096
}

/// Encode a tree blob.
pub fn encode_tree(tree: &Tree) -> Vec<u8> {
    encode_blob(tree)
}

/// Decode and validate a tree blob.
pub fn decode_tree(data: &[u8]) -> Result<Tree> {
    let t: Tree = decode_blob(data, "tree")?;
    validate_tree(&t)?;
    Ok(t)
}

/// Encode a chunk-list blob.
pub fn encode_chunk_list(list: &[RelChunk]) -> Vec<u8> {
    encode_blob(&list.to_vec())
}

/// Decode a chunk-list blob.
pub fn decode_chunk_list(data: &[u8]) -> Result<Vec<RelChunk>> {
    decode_blob(data, "chunk list")
}

fn encode_blob<T: Encode>(v: &T) -> Vec<u8> {
    let mut out = vec![BLOB_FORMAT];
    // Encoding into a Vec cannot fail for these types.
    out.extend(bincode::encode_to_vec(v, config()).unwrap_or_default());
    out
}

fn decode_blob<T: Decode<()>>(data: &[u8], what: &str) -> Result<T> {
    match data.split_first() {
        Some((&BLOB_FORMAT, rest)) => {
            let (v, used) = bincode::decode_from_slice(rest, config())
                .map_err(|e| Error::corrupt(format!("{what} blob does not decode: {e}")))?;
            if used != rest.len() {
                return Err(Error::corrupt(format!("{what} blob has trailing bytes")));
            }
            Ok(v)
        }
        Some((v, _)) => Err(Error::corrupt(format!(
            "{what} blob has unknown format version {v}"
        ))),
        None => Err(Error::corrupt(format!("{what} blob is empty"))),
    }
}

/// How a backup was started. Encoded by position: never reorder.
#[derive(Encode, Decode, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `cbrfs backup create`.
    Manual,
    /// `mkdir` in the mount.
    Mount,
    /// A backup policy.
    Policy,
}

/// Kind of resource. Encoded by position: never reorder.
#[derive(Encode, Decode, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// A directory tree.
    Directory,
    /// A block device or disk image.
    Disk,
    /// A server: members that are directories and disks.
    Server,
}

/// Counters of a backup (or of one resource in it).
#[derive(Encode, Decode, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackupStats {
    /// Files not in the previous backup.
    pub files_new: u64,
    /// Files whose size, mtime, ctime or inode changed (read again).
    pub files_changed: u64,
    /// Files reused from the previous backup without reading.
    pub files_unchanged: u64,
    /// Directories.
    pub dirs: u64,
    /// Other entries (symlinks, devices, fifos, sockets).
    pub others: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Logical size of all files.
    pub bytes_total: u64,
    /// Blobs stored by this backup.
    pub blobs_new: u64,
    /// Bytes this backup added to the vault (packs and index).
    pub bytes_added: u64,
    /// Entries that could not be read (reported, skipped).
    pub errors: u64,
}

impl BackupStats {
    /// Add `o` to `self`.
    pub fn add(&mut self, o: &BackupStats) {
        self.files_new += o.files_new;
        self.files_changed += o.files_changed;
        self.files_unchanged += o.files_unchanged;
        self.dirs += o.dirs;
        self.others += o.others;
        self.bytes_read += o.bytes_read;
        self.bytes_total += o.bytes_total;
        self.blobs_new += o.blobs_new;
        self.bytes_added += o.bytes_added;
        self.errors += o.errors;
    }
}

/// One resource's part of a backup.
#[derive(Encode, Decode, Clone, Debug, PartialEq, Eq)]
pub struct ResourceBackup {
    /// The resource's name in the vault.
    pub name: String,
    /// Its kind.
    pub kind: ResourceKind,
    /// Source path at the time of the backup.
    pub source: Vec<u8>,
    /// Root tree blob.
    pub root: BlobId,
    /// The root directory's own metadata (name is the resource's name).
    pub meta: Node,
    /// True if every file was read (first backup, or `--full`).
    pub full: bool,
    /// The backup this one was incremental to, if any.
    pub parent: Option<String>,
    /// Counters.
    pub stats: BackupStats,
    /// Entries that could not be backed up, with why (first 100).
    pub warnings: Vec<String>,
}

/// A completed backup: written last, atomically, after every blob it needs
/// is durable and indexed.
#[derive(Encode, Decode, Clone, Debug, PartialEq, Eq)]
pub struct BackupRecord {
    /// Backup name, unique in its vault.
    pub name: String,
    /// The vault.
    pub vault: String,
    /// Description (≤ 255 characters).
    pub description: String,
    /// How it was started.
    pub origin: Origin,
    /// The policy that made it, for automatic backups.
    pub policy: Option<String>,
    /// True if every resource was backed up in full.
    pub full: bool,
    /// Start, ns since the epoch.
    pub started_ns: i64,
    /// End, ns since the epoch.
    pub finished_ns: i64,
    /// Per-resource parts, sorted by name.
    pub resources: Vec<ResourceBackup>,
    /// Totals.
    pub stats: BackupStats,
}

/// Encode a backup record file: magic | format u32 LE | length u32 LE |
/// bincode payload | XXH3-64 of payload (u64 LE).
pub fn encode_record(r: &BackupRecord) -> Vec<u8> {
    let payload = bincode::encode_to_vec(r, config()).unwrap_or_default();
    let mut out = Vec::with_capacity(payload.len() + 24);
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&RECORD_FORMAT.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
    out
}

/// Decode and verify a backup record file.
pub fn decode_record(data: &[u8]) -> Result<BackupRecord> {
    if data.len() < 24 || &data[..8] != RECORD_MAGIC {
        return Err(Error::corrupt(
            "backup record has a bad magic or is too short",
        ));
    }
    let format = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if format != RECORD_FORMAT {
        return Err(Error::corrupt(format!(
            "backup record has unknown format {format}"
        )));
    }
    let len = u32::from_le_bytes([data[12], data[13], data[14], data[15]]) as usize;
    if data.len() != 16 + len + 8 {
        return Err(Error::corrupt("backup record length does not match"));
    }
    let payload = &data[16..16 + len];
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&data[16 + len..]);
    if xxhash_rust::xxh3::xxh3_64(payload) != u64::from_le_bytes(sum) {
        return Err(Error::corrupt("backup record checksum mismatch"));
    }
    let (r, used): (BackupRecord, usize) = bincode::decode_from_slice(payload, config())
        .map_err(|e| Error::corrupt(format!("backup record does not decode: {e}")))?;
    if used != len {
        return Err(Error::corrupt("backup record has trailing bytes"));
    }
    validate_record(&r)?;
    Ok(r)
}

/// Check a decoded record's names: restore and the mount use the backup's
/// and each resource's name as a path component, so a damaged or hostile
/// record must not smuggle in `..` or a `/` (restore promises to write
/// nothing outside its target).
pub fn validate_record(r: &BackupRecord) -> Result<()> {
    if !is_safe_name(r.name.as_bytes()) {
        return Err(Error::corrupt(format!(
            "backup record has an unsafe backup name {:?}",
            r.name
        )));
    }
    for (i, p) in r.resources.iter().enumerate() {
        if !is_safe_name(p.name.as_bytes()) {
            return Err(Error::corrupt(format!(
                "backup record has an unsafe resource name {:?}",
                p.name
            )));
        }
        if r.resources[..i].iter().any(|q| q.name == p.name) {
            return Err(Error::corrupt(format!(
                "backup record names resource {:?} twice",
                p.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_tree() -> Tree {
        let mut f = Node::new(b"a file".to_vec(), NodeKind::File);
        f.size = 10;
        f.content = Content::Chunks(vec![ChunkRef {
            id: BlobId([3; 16]),
            offset: 0,
            len: 10,
        }]);
        f.xattrs.push(Xattr {
            name: b"user.x".to_vec(),
            value: b"1".to_vec(),
        });
        let mut d = Node::new(b"dir".to_vec(), NodeKind::Dir);
        d.subtree = Some(BlobId([9; 16]));
        Tree {
            entries: vec![f, d],
        }
    }

    #[test]
    fn tree_round_trip() {
        let t = sample_tree();
        assert_eq!(decode_tree(&encode_tree(&t)).unwrap(), t);
    }

    #[test]
    fn unsorted_or_unsafe_trees_are_refused() {
        let mut t = sample_tree();
        t.entries.reverse();
        assert!(decode_tree(&encode_tree(&t)).is_err());
        let mut t = sample_tree();
        t.entries[0].name = b"..".to_vec();
        assert!(decode_tree(&encode_tree(&t)).is_err());
        let mut t = sample_tree();
        t.entries[0].name = b"a/b".to_vec();
        assert!(decode_tree(&encode_tree(&t)).is_err());
    }

    #[test]
    fn record_checksum_guards() {
        let r = BackupRecord {
            name: "b".into(),
            vault: "v".into(),
            description: String::new(),
            origin: Origin::Manual,
            policy: None,
            full: true,
            started_ns: 1,
            finished_ns: 2,
            resources: vec![],
            stats: BackupStats::default(),
        };
        let mut bytes = encode_record(&r);
        assert_eq!(decode_record(&bytes).unwrap(), r);
        let n = bytes.len();
        bytes[n - 9] ^= 1;
        assert!(decode_record(&bytes).is_err());
    }

    #[test]
    fn records_with_unsafe_names_are_refused() {
        let part = |name: &str| ResourceBackup {
            name: name.into(),
            kind: ResourceKind::Directory,
            source: b"/src".to_vec(),
            root: BlobId([1; 16]),
            meta: Node::new(name.as_bytes().to_vec(), NodeKind::Dir),
            full: true,
            parent: None,
            stats: BackupStats::default(),
            warnings: vec![],
        };
        let rec = |name: &str, parts: Vec<ResourceBackup>| BackupRecord {
            name: name.into(),
            vault: "v".into(),
            description: String::new(),
            origin: Origin::Manual,
            policy: None,
            full: true,
            started_ns: 1,
            finished_ns: 2,
            resources: parts,
            stats: BackupStats::default(),
        };
        let ok = rec("b", vec![part("a"), part("c")]);
        assert_eq!(decode_record(&encode_record(&ok)).unwrap(), ok);
        for bad in [
            rec("b", vec![part("..")]),
            rec("b", vec![part("x/../../etc")]),
            rec("b", vec![part("a"), part("a")]),
            rec("../b", vec![part("a")]),
        ] {
            assert!(decode_record(&encode_record(&bad)).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_tree(&data);
            let _ = decode_chunk_list(&data);
            let _ = decode_record(&data);
            let mut with_version = vec![BLOB_FORMAT];
            with_version.extend_from_slice(&data);
            let _ = decode_tree(&with_version);
            let _ = decode_chunk_list(&with_version);
        }
    }
}
