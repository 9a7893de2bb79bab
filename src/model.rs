//! The serialized types: trees, nodes, chunk lists and backup records. This
//! is the one place that encodes and decodes them (bincode 2.0.1, standard
//! config: little-endian varints), each behind a format-version byte.
//!
//! bincode encodes enum variants by position and struct fields in order:
//! never reorder a variant or a field; add new ones at the end of a new
//! format version.
//!
//! It is one file of some 750 lines on purpose: every encoded type, its
//! encoder, its decoder and the bounds checks made where it is decoded
//! are read together, in the order docs/FORMAT.md gives them.

use crate::error::{Error, Result};
use crate::rules;
use crate::store::BlobId;
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Version byte in front of every tree and chunk-list blob.
pub const BLOB_FORMAT: u8 = 1;
/// Version of the backup record.
pub const RECORD_FORMAT: u32 = 1;
/// Version of a backup record that also keeps the requests its backup
/// made of a billed remote (an S3 bucket): format 1's payload followed by
/// the counters (docs/FORMAT.md §11.4). Records of local vaults stay
/// format 1, byte for byte. (2 is the sealed envelope of an encrypted
/// vault's record, whose plaintext is a format 1 or 3 record.)
pub const RECORD_FORMAT_REQUESTS: u32 = 3;
/// Magic of a backup record file (defined with the record's envelope in
/// the store, which seals records of encrypted vaults without knowing
/// their payload).
pub use crate::store::keyring::RECORD_MAGIC;
/// Requests and bytes of a billed remote.
pub use crate::store::s3::S3Counters as Requests;
/// Largest allocation a decoder may make, against hostile input.
const DECODE_LIMIT: usize = 1 << 30;
/// The decode limit of an input of n bytes is the smallest of a few fixed
/// limits (bincode takes its limit as a constant) at or above n × this.
/// bincode counts, while decoding, the in-memory size of every value
/// decoded so far (at most 8 per input byte: a u64 read from a 1-byte
/// varint) plus, for each vector being decoded, its length × its element's
/// size before the elements are read. An element takes at least
/// size_of / 24 input bytes (`Xattr`: 48 bytes in memory, 2 encoded when
/// empty; a `String`: 24 and 1; `Node`: 208 and 18), so a valid input
/// never claims more than 24 × its length and 32 leaves a margin
/// (`decode_limit_fits_dense_values` tests it). A hostile length field
/// then makes the decoder allocate at most 4 × 32 × the input's length,
/// not 1 GiB.
const LIMIT_PER_BYTE: usize = 32;

/// bincode's decode of `bytes` with a limit in proportion to its length
/// (see [`LIMIT_PER_BYTE`]).
fn decode_bounded<T: Decode<()>>(
    bytes: &[u8],
) -> std::result::Result<(T, usize), bincode::error::DecodeError> {
    let need = bytes.len().saturating_mul(LIMIT_PER_BYTE);
    macro_rules! tiers {
        ($($limit:expr),*) => {$(
            if need <= $limit {
                return bincode::decode_from_slice(
                    bytes,
                    bincode::config::standard().with_limit::<{ $limit }>(),
                );
            }
        )*};
    }
    tiers!(
        1 << 16,
        1 << 18,
        1 << 20,
        1 << 22,
        1 << 24,
        1 << 26,
        1 << 28
    );
    bincode::decode_from_slice(bytes, config())
}
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
/// path components, and every node's own fields (see [`validate_node`]).
/// A tree that breaks them is damaged or hostile. Errors name the entry.
pub fn validate_tree(tree: &Tree) -> Result<()> {
    for (i, n) in tree.entries.iter().enumerate() {
        validate_node(n)?;
        if i > 0 && tree.entries[i - 1].name >= n.name {
            return Err(Error::corrupt(format!(
                "tree entries {:?} and {:?} are not sorted and unique",
                String::from_utf8_lossy(&tree.entries[i - 1].name),
                String::from_utf8_lossy(&n.name)
            )));
        }
    }
    Ok(())
}

/// Check one node as decoded: its name is one path component, only a
/// directory points at a tree, only a file has content, and its content
/// lies within its size ([`validate_content`]). Errors name the entry.
pub fn validate_node(n: &Node) -> Result<()> {
    let shown = || String::from_utf8_lossy(&n.name).into_owned();
    if !is_safe_name(&n.name) {
        return Err(Error::corrupt(format!(
            "entry {:?} has an unsafe name (empty, `.`, `..`, or with `/` or NUL)",
            shown()
        )));
    }
    if n.subtree.is_some() && n.kind != NodeKind::Dir {
        return Err(Error::corrupt(format!(
            "entry {:?} is a {:?} with a directory tree",
            shown(),
            n.kind
        )));
    }
    if n.kind != NodeKind::File && n.content != Content::None {
        return Err(Error::corrupt(format!(
            "entry {:?} is a {:?} with file content",
            shown(),
            n.kind
        )));
    }
    validate_content(n.size, &n.content).map_err(|e| e.context(format!("entry {:?}", shown())))
}

/// The one bounds check of a file's content reference, made where a tree
/// is decoded so that no reader trusts a length it did not check: chunks
/// (and chunk lists) are in offset order, do not overlap, are at least one
/// byte long, and end within the file's `size`; a list counts at least one
/// chunk and spans at least one byte per chunk. So a file never names more
/// chunks than it has bytes, and nothing past its end is written or read.
/// A chunk list's blob is checked against its reference by
/// [`resolve_list`] when it is loaded.
pub fn validate_content(size: u64, content: &Content) -> Result<()> {
    // (offset, length) of each piece, in file order.
    let mut end = 0u64;
    let mut piece = |what: &str, offset: u64, len: u64| -> Result<()> {
        let stop = offset.checked_add(len).filter(|e| *e <= size);
        match stop {
            Some(e) if len > 0 && offset >= end => {
                end = e;
                Ok(())
            }
            _ => Err(Error::corrupt(format!(
                "{what} at offset {offset} of {len} bytes does not fit a file of {size} bytes after the previous one (ending at {end})"
            ))),
        }
    };
    match content {
        Content::None => Ok(()),
        Content::Chunks(cs) => cs
            .iter()
            .try_for_each(|c| piece("chunk", c.offset, c.len as u64)),
        Content::Lists(ls) => ls.iter().try_for_each(|l| {
            if l.count == 0 || (l.count as u64) > l.span {
                return Err(Error::corrupt(format!(
                    "chunk list {} claims {} chunks in {} bytes",
                    l.id, l.count, l.span
                )));
            }
            piece("chunk list", l.offset, l.span)
        }),
    }
}

/// The absolute chunks of chunk-list blob `rel`, loaded for reference `l`
/// (whose bounds [`validate_content`] checked): the blob must hold exactly
/// `l.count` chunks of at least one byte that, with their gaps, span
/// exactly `l.span` bytes. Errors name the list.
pub fn resolve_list(l: &ListRef, rel: &[RelChunk]) -> Result<Vec<ChunkRef>> {
    if rel.len() != l.count as usize {
        return Err(Error::corrupt(format!(
            "chunk list {} holds {} chunks, its file expects {}",
            l.id,
            rel.len(),
            l.count
        )));
    }
    let mut out = Vec::with_capacity(rel.len());
    let mut used = 0u64;
    for r in rel {
        let next = used
            .checked_add(r.gap)
            .and_then(|o| o.checked_add(r.len as u64).map(|e| (o, e)))
            .filter(|(_, e)| *e <= l.span && r.len > 0);
        let Some((start, stop)) = next else {
            return Err(Error::corrupt(format!(
                "chunk list {} has a chunk outside its span of {} bytes (gap {}, length {}, after {} bytes)",
                l.id, l.span, r.gap, r.len, used
            )));
        };
        let offset = l.offset.checked_add(start).ok_or_else(|| {
            Error::corrupt(format!(
                "chunk list {} overflows at offset {}",
                l.id, l.offset
            ))
        })?;
        out.push(ChunkRef {
            id: r.id,
            offset,
            len: r.len,
        });
        used = stop;
    }
    if used != l.span {
        return Err(Error::corrupt(format!(
            "chunk list {} spans {used} bytes, its file expects {}",
            l.id, l.span
        )));
    }
    Ok(out)
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
pub fn encode_tree(tree: &Tree) -> Result<Vec<u8>> {
    encode_blob(tree, "tree")
}

/// Decode and validate a tree blob.
pub fn decode_tree(data: &[u8]) -> Result<Tree> {
    let t: Tree = decode_blob(data, "tree")?;
    validate_tree(&t)?;
    Ok(t)
}

/// Encode a chunk-list blob.
pub fn encode_chunk_list(list: &[RelChunk]) -> Result<Vec<u8>> {
    encode_blob(&list.to_vec(), "chunk list")
}

/// Decode a chunk-list blob.
pub fn decode_chunk_list(data: &[u8]) -> Result<Vec<RelChunk>> {
    decode_blob(data, "chunk list")
}

/// bincode cannot fail to encode these types into a Vec today; if a field
/// ever makes it fail, the error stops the writer instead of an empty blob
/// being stored in place of the data.
fn encode_blob<T: Encode>(v: &T, what: &str) -> Result<Vec<u8>> {
    let payload = bincode::encode_to_vec(v, config())
        .map_err(|e| Error::failed(format!("{what} blob does not encode: {e}")))?;
    let mut out = vec![BLOB_FORMAT];
    out.extend(payload);
    Ok(out)
}

fn decode_blob<T: Decode<()>>(data: &[u8], what: &str) -> Result<T> {
    match data.split_first() {
        Some((&BLOB_FORMAT, rest)) => {
            let (v, used) = decode_bounded(rest)
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

crate::names::words! {
    /// How a backup was started. Encoded by position in records: never
    /// reorder. In JSON (serde) and text: `manual`, `mount`, `policy`.
    #[derive(Encode, Decode, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Origin("origin") {
        /// `cbrfs backup create`.
        Manual = "manual",
        /// `mkdir` in the mount.
        Mount = "mount",
        /// A backup policy.
        Policy = "policy",
    }
}

crate::names::words! {
    /// Kind of resource. Encoded by position in records: never reorder. In
    /// the catalog's JSON (serde) and text: `directory`, `disk`, `server`.
    #[derive(Encode, Decode, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum ResourceKind("resource kind") {
        /// A directory tree.
        Directory = "directory",
        /// A block device or disk image.
        Disk = "disk",
        /// A server: members that are directories and disks.
        Server = "server",
    }
}

/// Counters of a backup (or of one resource in it).
/// Serialized as the `stats` object of `backup show --json` too
/// (docs/JSON.md).
#[derive(Encode, Decode, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
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
/// bincode payload | XXH3-64 of payload (u64 LE). An error, not a record
/// with an empty or cut length, when the payload does not encode or does
/// not fit its 32-bit length.
pub fn encode_record(r: &BackupRecord) -> Result<Vec<u8>> {
    encode_record_with(r, None)
}

/// [`encode_record`], keeping `requests` (the backup's requests of a
/// billed remote) after the record in a format-3 payload; without them,
/// format 1.
pub fn encode_record_with(r: &BackupRecord, requests: Option<&Requests>) -> Result<Vec<u8>> {
    let fail = |e: bincode::error::EncodeError| {
        Error::failed(format!("backup record {:?} does not encode: {e}", r.name))
    };
    let mut payload = bincode::encode_to_vec(r, config()).map_err(fail)?;
    let format = match requests {
        None => RECORD_FORMAT,
        Some(c) => {
            payload.extend(bincode::encode_to_vec(c, config()).map_err(fail)?);
            RECORD_FORMAT_REQUESTS
        }
    };
    let len =
        record_len(payload.len()).map_err(|e| e.context(format!("backup record {:?}", r.name)))?;
    let mut out = Vec::with_capacity(payload.len() + 24);
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&format.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
    Ok(out)
}

/// The length field of a record payload of `len` bytes (it was cast with
/// `as u32`, which would have written a record no reader accepts).
fn record_len(len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| {
        Error::failed(format!(
            "its payload of {len} bytes is longer than a record holds (4 GiB)"
        ))
    })
}

/// Decode and verify a backup record file.
pub fn decode_record(data: &[u8]) -> Result<BackupRecord> {
    decode_record_with(data).map(|(r, _)| r)
}

/// Decode and verify a backup record file, with the requests its backup
/// made of a billed remote when the record keeps them (format 3).
pub fn decode_record_with(data: &[u8]) -> Result<(BackupRecord, Option<Requests>)> {
    if data.len() < 24 || &data[..8] != RECORD_MAGIC {
        return Err(Error::corrupt(
            "backup record has a bad magic or is too short",
        ));
    }
    let format = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if format != RECORD_FORMAT && format != RECORD_FORMAT_REQUESTS {
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
    let (r, mut used): (BackupRecord, usize) = decode_bounded(payload)
        .map_err(|e| Error::corrupt(format!("backup record does not decode: {e}")))?;
    let mut requests = None;
    if format == RECORD_FORMAT_REQUESTS {
        let (c, n): (Requests, usize) = decode_bounded(&payload[used..]).map_err(|e| {
            Error::corrupt(format!("backup record's request counts do not decode: {e}"))
        })?;
        requests = Some(c);
        used += n;
    }
    if used != len {
        return Err(Error::corrupt("backup record has trailing bytes"));
    }
    validate_record(&r)?;
    Ok((r, requests))
}

/// Check a decoded record: restore and the mount use the backup's name
/// and each resource's root node name as path components, and every
/// command reads a resource from its root node, so a damaged or hostile
/// record must not smuggle in `..` or a `/` (restore promises to write
/// nothing outside its target), nor a `root` that says something else than
/// the root node (check and prune would then keep and verify other trees
/// than the ones restore and the mount read). Names follow CBR's name rule
/// ([`crate::rules::check_name`]), as when they were made.
pub fn validate_record(r: &BackupRecord) -> Result<()> {
    let name = |what: &str, n: &str| {
        rules::check_name(what, n)
            .map_err(|e| Error::corrupt(format!("backup record {:?}: {e}", r.name)))
    };
    name("backup name", &r.name)?;
    name("vault name", &r.vault)?;
    if let Some(p) = &r.policy {
        name("policy name", p)?;
    }
    for (i, p) in r.resources.iter().enumerate() {
        name("resource name", &p.name)?;
        if let Some(parent) = &p.parent {
            name("parent backup name", parent)?;
        }
        if i > 0 && r.resources[i - 1].name >= p.name {
            return Err(Error::corrupt(format!(
                "backup record {:?}: resources {:?} and {:?} are not sorted and unique",
                r.name,
                r.resources[i - 1].name,
                p.name
            )));
        }
        let shown = |what: String| {
            Error::corrupt(format!(
                "backup record {:?}, resource {:?}: {what}",
                r.name, p.name
            ))
        };
        validate_node(&p.meta).map_err(|e| shown(format!("root node: {e}")))?;
        let m = &p.meta;
        let fits = match p.kind {
            // A directory's root node is the resource's own directory; a
            // server's is named after the server (a CBR name).
            ResourceKind::Directory => {
                m.kind == NodeKind::Dir && m.name == p.name.as_bytes() && m.subtree == Some(p.root)
            }
            ResourceKind::Server => {
                m.kind == NodeKind::Dir
                    && std::str::from_utf8(&m.name)
                        .is_ok_and(|n| rules::check_name("server name", n).is_ok())
                    && m.subtree == Some(p.root)
            }
            // A disk is a file `<resource>.img`; `root` is a tree holding
            // just that node (check compares them).
            ResourceKind::Disk => {
                m.kind == NodeKind::File && m.name == format!("{}.img", p.name).as_bytes()
            }
        };
        if !fits {
            return Err(shown(format!(
                "its root node ({:?} {:?}, tree {}) does not match a {:?} resource whose root is {}",
                m.kind,
                String::from_utf8_lossy(&m.name),
                m.subtree.map_or("none".to_string(), |s| s.to_string()),
                p.kind,
                p.root
            )));
        }
        // Restore of several resources and the mount show the root nodes
        // side by side, by name.
        if let Some(q) = r.resources[..i].iter().find(|q| q.meta.name == m.name) {
            return Err(shown(format!(
                "its root node has the name {:?} of resource {:?}'s",
                String::from_utf8_lossy(&m.name),
                q.name
            )));
        }
    }
    Ok(())
}

impl ResourceBackup {
    /// The node every command reads this resource from: the root
    /// directory (its `subtree` is `root`) of a directory or server, the
    /// file node of a disk. [`validate_record`] made sure it agrees with
    /// `root`. Check, prune, restore and the mount all start here.
    pub fn root_node(&self) -> &Node {
        &self.meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record payload past the 32-bit length field is an error naming
    /// its size (the length was cast, cut to its low bits).
    #[test]
    fn a_record_longer_than_its_length_field_is_an_error() {
        assert_eq!(record_len(u32::MAX as usize).unwrap(), u32::MAX);
        let e = record_len(u32::MAX as usize + 1).unwrap_err();
        assert!(e.to_string().contains("4294967296 bytes"), "{e}");
    }

    /// The catalog's and the JSON output's strings of kinds and origins.
    #[test]
    fn kinds_and_origins_keep_their_names() {
        for k in [
            ResourceKind::Directory,
            ResourceKind::Disk,
            ResourceKind::Server,
        ] {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{k}\""));
            assert_eq!(serde_json::from_str::<ResourceKind>(&json).unwrap(), k);
        }
        for o in [Origin::Manual, Origin::Mount, Origin::Policy] {
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("\"{o}\""));
            assert_eq!(serde_json::from_str::<Origin>(&json).unwrap(), o);
        }
        assert!(serde_json::from_str::<ResourceKind>("\"tape\"").is_err());
    }
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
        assert_eq!(decode_tree(&encode_tree(&t).unwrap()).unwrap(), t);
    }

    #[test]
    fn unsorted_or_unsafe_trees_are_refused() {
        let mut t = sample_tree();
        t.entries.reverse();
        assert!(decode_tree(&encode_tree(&t).unwrap()).is_err());
        let mut t = sample_tree();
        t.entries[0].name = b"..".to_vec();
        assert!(decode_tree(&encode_tree(&t).unwrap()).is_err());
        let mut t = sample_tree();
        t.entries[0].name = b"a/b".to_vec();
        assert!(decode_tree(&encode_tree(&t).unwrap()).is_err());
    }

    /// A record with the requests of its backup is format 3 and reads
    /// back with them; without, format 1 as before; cut counts are
    /// damage, and a format-3 record still reads as a record.
    #[test]
    fn records_keep_their_requests_in_format_3() {
        let r = testkit::record(vec![]);
        let c = Requests {
            put_requests: 3,
            get_requests: 5,
            list_requests: 0,
            delete_requests: 1,
            bytes_up: 1 << 20,
            bytes_down: 77,
            retries: 2,
        };
        let plain = encode_record(&r).unwrap();
        assert_eq!(plain[8], 1);
        assert_eq!(decode_record_with(&plain).unwrap(), (r.clone(), None));
        let with = encode_record_with(&r, Some(&c)).unwrap();
        assert_eq!(with[8], 3);
        assert_eq!(&with[16..plain.len() - 8], &plain[16..plain.len() - 8]);
        assert_eq!(decode_record_with(&with).unwrap(), (r.clone(), Some(c)));
        assert_eq!(decode_record(&with).unwrap(), r);
        // The counts cut off (length and checksum made to match).
        let payload = &with[16..with.len() - 9];
        let mut cut = with[..12].to_vec();
        cut.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        cut.extend_from_slice(payload);
        cut.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
        let e = decode_record_with(&cut).unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::Corrupt, "{e}");
        // A format-1 record with counts appended is trailing bytes.
        let mut one = with.clone();
        one[8] = 1;
        assert!(decode_record(&one).is_err());
    }

    #[test]
    fn record_checksum_guards() {
        let r = testkit::record(vec![]);
        let mut bytes = encode_record(&r).unwrap();
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
            meta: Node {
                subtree: Some(BlobId([1; 16])),
                ..Node::new(name.as_bytes().to_vec(), NodeKind::Dir)
            },
            full: true,
            parent: None,
            stats: BackupStats::default(),
            warnings: vec![],
        };
        let rec = |name: &str, parts: Vec<ResourceBackup>| BackupRecord {
            name: name.into(),
            ..testkit::record(parts)
        };
        let ok = rec("b", vec![part("a"), part("c")]);
        assert_eq!(decode_record(&encode_record(&ok).unwrap()).unwrap(), ok);
        // Finding 4: a root node whose name escapes, or names that break
        // CBR's name rule, anywhere in the record.
        let with_meta_name = |n: &[u8]| {
            let mut p = part("a");
            p.meta.name = n.to_vec();
            rec("b", vec![p])
        };
        let mut bad_vault = rec("b", vec![part("a")]);
        bad_vault.vault = "../v".into();
        let mut bad_parent = part("a");
        bad_parent.parent = Some("../x".into());
        let mut bad_policy = rec("b", vec![part("a")]);
        bad_policy.policy = Some(String::new());
        let mut bad_meta_child = part("a");
        bad_meta_child.meta.kind = NodeKind::File;
        bad_meta_child.meta.subtree = None;
        for bad in [
            rec("b", vec![part("..")]),
            rec("b", vec![part("x/../../etc")]),
            rec("b", vec![part("a"), part("a")]),
            rec("b", vec![part("c"), part("a")]),
            rec("../b", vec![part("a")]),
            rec("b.x", vec![part("a")]),
            rec("", vec![part("a")]),
            with_meta_name(b"../../escaped-file"),
            with_meta_name(b"a/b"),
            with_meta_name(b"."),
            with_meta_name(b".."),
            with_meta_name(b""),
            with_meta_name(b"a\0b"),
            with_meta_name(b"other"),
            bad_vault,
            rec("b", vec![bad_parent]),
            bad_policy,
            rec("b", vec![bad_meta_child]),
        ] {
            let err = decode_record(&encode_record(&bad).unwrap()).expect_err(&format!("{bad:?}"));
            // The error names the backup.
            assert!(err.to_string().contains("backup record"), "{err}");
        }
    }

    /// Finding 9: `root` and the root node's tree are one thing; a record
    /// in which they disagree (check and prune would keep one tree,
    /// restore and the mount read the other) does not decode.
    #[test]
    fn records_whose_root_and_root_node_disagree_are_refused() {
        let mut meta = Node::new(b"a".to_vec(), NodeKind::Dir);
        meta.subtree = Some(BlobId([2; 16]));
        let part = ResourceBackup {
            name: "a".into(),
            kind: ResourceKind::Directory,
            source: b"/src".to_vec(),
            root: BlobId([1; 16]),
            meta,
            full: true,
            parent: None,
            stats: BackupStats::default(),
            warnings: vec![],
        };
        let mut r = testkit::record(vec![part]);
        let err = decode_record(&encode_record(&r).unwrap()).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        r.resources[0].meta.subtree = None;
        assert!(decode_record(&encode_record(&r).unwrap()).is_err());
        r.resources[0].meta.subtree = Some(BlobId([1; 16]));
        assert_eq!(decode_record(&encode_record(&r).unwrap()).unwrap(), r);
        // A disk is the file `<name>.img`, without a tree.
        r.resources[0].kind = ResourceKind::Disk;
        assert!(decode_record(&encode_record(&r).unwrap()).is_err());
        r.resources[0].meta = Node::new(b"a.img".to_vec(), NodeKind::File);
        assert_eq!(decode_record(&encode_record(&r).unwrap()).unwrap(), r);
        r.resources[0].meta.name = b"a".to_vec();
        assert!(decode_record(&encode_record(&r).unwrap()).is_err());
    }

    /// Finding 8: a file's content lies within its size, in order, every
    /// piece at least a byte; a chunk-list blob agrees with its reference.
    #[test]
    fn content_out_of_bounds_is_refused() {
        let id = BlobId([5; 16]);
        let file = |size: u64, content: Content| Tree {
            entries: vec![Node {
                size,
                content,
                ..Node::new(b"f".to_vec(), NodeKind::File)
            }],
        };
        let chunk = |offset: u64, len: u32| ChunkRef { id, offset, len };
        let list = |offset: u64, span: u64, count: u32| ListRef {
            id,
            offset,
            span,
            count,
        };
        let ok = file(10, Content::Chunks(vec![chunk(0, 4), chunk(6, 4)]));
        assert_eq!(decode_tree(&encode_tree(&ok).unwrap()).unwrap(), ok);
        for bad in [
            // A 1-byte file naming 2 GiB.
            file(1, Content::Chunks(vec![chunk(0, 1), chunk(1, u32::MAX)])),
            file(1, Content::Lists(vec![list(0, 2 << 30, 1000)])),
            file(10, Content::Chunks(vec![chunk(0, 4), chunk(2, 4)])),
            file(10, Content::Chunks(vec![chunk(6, 4), chunk(0, 4)])),
            file(10, Content::Chunks(vec![chunk(0, 0)])),
            file(u64::MAX, Content::Chunks(vec![chunk(u64::MAX, 2)])),
            file(100, Content::Lists(vec![list(0, 5, 6)])),
            file(100, Content::Lists(vec![list(0, 5, 0)])),
            file(100, Content::Lists(vec![list(0, 50, 5), list(40, 50, 5)])),
            Tree {
                entries: vec![Node {
                    subtree: Some(id),
                    ..Node::new(b"f".to_vec(), NodeKind::File)
                }],
            },
            Tree {
                entries: vec![Node {
                    size: 10,
                    content: Content::Chunks(vec![chunk(0, 4)]),
                    ..Node::new(b"d".to_vec(), NodeKind::Dir)
                }],
            },
        ] {
            let err = decode_tree(&encode_tree(&bad).unwrap()).expect_err(&format!("{bad:?}"));
            assert!(err.to_string().contains("entry \""), "{err}");
        }
        let rel = |gap: u64, len: u32| RelChunk { id, gap, len };
        let l = list(100, 10, 2);
        let cs = resolve_list(&l, &[rel(1, 4), rel(1, 4)]).unwrap();
        assert_eq!(cs, vec![chunk(101, 4), chunk(106, 4)]);
        for bad in [
            vec![rel(1, 4)],
            vec![rel(1, 4), rel(1, 4), rel(0, 0)],
            vec![rel(1, 4), rel(2, 4)],
            vec![rel(0, 4), rel(0, 4)],
            vec![rel(0, 0), rel(0, 10)],
            vec![rel(u64::MAX, 4), rel(0, 4)],
        ] {
            let err = resolve_list(&l, &bad).expect_err(&format!("{bad:?}"));
            assert!(err.to_string().contains(&id.to_string()), "{err}");
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

    // ---- fuzzing the decoders (see crate::testkit) ----

    use crate::testkit::{self, Damage};

    fn blob_id() -> impl Strategy<Value = BlobId> {
        any::<[u8; 16]>().prop_map(BlobId)
    }

    /// Content as a backup writes it: pieces in order, not overlapping, at
    /// least a byte long (the node's size is raised to cover them).
    fn content() -> impl Strategy<Value = Content> {
        let chunk = (blob_id(), 0u64..1 << 40, 1u32..=u32::MAX);
        let list = (blob_id(), 0u64..1 << 40, 1u32..=u32::MAX, 0u64..1 << 40);
        prop_oneof![
            Just(Content::None),
            proptest::collection::vec(chunk, 0..6).prop_map(|cs| {
                let mut pos = 0u64;
                Content::Chunks(
                    cs.into_iter()
                        .map(|(id, gap, len)| {
                            let offset = pos + gap;
                            pos = offset + len as u64;
                            ChunkRef { id, offset, len }
                        })
                        .collect(),
                )
            }),
            proptest::collection::vec(list, 0..4).prop_map(|ls| {
                let mut pos = 0u64;
                Content::Lists(
                    ls.into_iter()
                        .map(|(id, gap, count, extra)| {
                            let offset = pos + gap;
                            let span = count as u64 + extra;
                            pos = offset + span;
                            ListRef {
                                id,
                                offset,
                                span,
                                count,
                            }
                        })
                        .collect(),
                )
            }),
        ]
    }

    /// Where `c` ends.
    fn content_end(c: &Content) -> u64 {
        match c {
            Content::None => 0,
            Content::Chunks(cs) => cs.last().map_or(0, |c| c.offset + c.len as u64),
            Content::Lists(ls) => ls.last().map_or(0, |l| l.offset + l.span),
        }
    }

    fn node_kind() -> impl Strategy<Value = NodeKind> {
        prop_oneof![
            Just(NodeKind::File),
            Just(NodeKind::Dir),
            Just(NodeKind::Symlink),
            Just(NodeKind::CharDev),
            Just(NodeKind::BlockDev),
            Just(NodeKind::Fifo),
            Just(NodeKind::Socket),
        ]
    }

    /// A node with any field values (its name is set by the caller).
    fn node() -> impl Strategy<Value = Node> {
        let xattr = (
            proptest::collection::vec(any::<u8>(), 0..12),
            proptest::collection::vec(any::<u8>(), 0..12),
        )
            .prop_map(|(name, value)| Xattr { name, value });
        (
            (node_kind(), any::<u32>(), any::<u32>(), any::<u32>()),
            (any::<i64>(), any::<i64>(), any::<u64>(), any::<u64>()),
            (
                any::<u32>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
            ),
            proptest::collection::vec(any::<u8>(), 0..16),
            proptest::collection::vec(xattr, 0..3),
            content(),
            proptest::option::of(blob_id()),
        )
            .prop_map(
                |(
                    (kind, mode, uid, gid),
                    (mtime_ns, ctime_ns, size, blocks),
                    (nlink, link_group, inode, dev, rdev),
                    target,
                    xattrs,
                    content,
                    subtree,
                )| Node {
                    name: Vec::new(),
                    kind,
                    mode,
                    uid,
                    gid,
                    mtime_ns,
                    ctime_ns,
                    size,
                    blocks,
                    nlink,
                    link_group,
                    inode,
                    dev,
                    rdev,
                    target,
                    xattrs,
                    content,
                    subtree,
                },
            )
            .prop_map(|mut n| {
                // Only a directory has a tree, only a file has content,
                // which lies within its size.
                if n.kind != NodeKind::Dir {
                    n.subtree = None;
                }
                if n.kind != NodeKind::File {
                    n.content = Content::None;
                }
                n.size = n.size.max(content_end(&n.content));
                n
            })
    }

    /// A valid tree: safe, sorted, unique names.
    fn tree() -> impl Strategy<Value = Tree> {
        let name = proptest::collection::vec(1u8..=255, 1..12)
            .prop_filter("safe name", |n| is_safe_name(n));
        proptest::collection::btree_map(name, node(), 0..8).prop_map(|m| Tree {
            entries: m
                .into_iter()
                .map(|(name, mut n)| {
                    n.name = name;
                    n
                })
                .collect(),
        })
    }

    fn chunk_list() -> impl Strategy<Value = Vec<RelChunk>> {
        proptest::collection::vec(
            (blob_id(), any::<u64>(), any::<u32>()).prop_map(|(id, gap, len)| RelChunk {
                id,
                gap,
                len,
            }),
            0..40,
        )
    }

    fn stats() -> impl Strategy<Value = BackupStats> {
        any::<[u64; 10]>().prop_map(|v| BackupStats {
            files_new: v[0],
            files_changed: v[1],
            files_unchanged: v[2],
            dirs: v[3],
            others: v[4],
            bytes_read: v[5],
            bytes_total: v[6],
            blobs_new: v[7],
            bytes_added: v[8],
            errors: v[9],
        })
    }

    fn record() -> impl Strategy<Value = BackupRecord> {
        let part = (
            "[a-z]{1,8}",
            prop_oneof![
                Just(ResourceKind::Directory),
                Just(ResourceKind::Disk),
                Just(ResourceKind::Server)
            ],
            proptest::collection::vec(any::<u8>(), 0..20),
            blob_id(),
            node(),
            any::<bool>(),
            proptest::option::of("[a-z]{1,8}"),
            stats(),
            proptest::collection::vec(".{0,20}", 0..3),
        )
            .prop_map(
                |(name, kind, source, root, mut meta, full, parent, stats, warnings)| {
                    // The root node as a backup makes it (the name is
                    // fixed up with the resource's below).
                    meta.kind = match kind {
                        ResourceKind::Disk => NodeKind::File,
                        _ => NodeKind::Dir,
                    };
                    meta.subtree = (kind != ResourceKind::Disk).then_some(root);
                    if kind != ResourceKind::Disk {
                        meta.content = Content::None;
                    }
                    ResourceBackup {
                        name,
                        kind,
                        source,
                        root,
                        meta,
                        full,
                        parent,
                        stats,
                        warnings,
                    }
                },
            );
        (
            "[a-z_]{1,10}",
            ".{0,30}",
            prop_oneof![
                Just(Origin::Manual),
                Just(Origin::Mount),
                Just(Origin::Policy)
            ],
            proptest::option::of("[a-z]{1,8}"),
            any::<bool>(),
            any::<i64>(),
            any::<i64>(),
            proptest::collection::btree_map("[a-z]{1,8}", part, 0..3),
            stats(),
        )
            .prop_map(
                |(
                    name,
                    description,
                    origin,
                    policy,
                    full,
                    started_ns,
                    finished_ns,
                    parts,
                    stats,
                )| {
                    BackupRecord {
                        name,
                        vault: "v".into(),
                        description,
                        origin,
                        policy,
                        full,
                        started_ns,
                        finished_ns,
                        resources: parts
                            .into_iter()
                            .map(|(n, mut p)| {
                                p.meta.name = match p.kind {
                                    ResourceKind::Disk => format!("{n}.img").into_bytes(),
                                    _ => n.clone().into_bytes(),
                                };
                                p.name = n;
                                p
                            })
                            .collect(),
                        stats,
                    }
                },
            )
    }

    /// The most a decode of `n` input bytes may allocate at once: the
    /// decode limit's largest tier for n (4 × 32 × n), or 64 KiB, with
    /// room for error messages.
    fn alloc_bound(n: usize) -> usize {
        (n * LIMIT_PER_BYTE * 4).max(1 << 16) + (16 << 10)
    }

    /// What a damaged tree or chunk list may decode to: no checksum guards
    /// them here (their blob's keyed id does, in the store), so a damaged
    /// encoding may decode, but only to a value that encodes and decodes
    /// back to itself, and a tree only to a valid one.
    fn check_tree_decode(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
        let (r, largest) = testkit::largest_alloc(|| decode_tree(bytes));
        prop_assert!(
            largest <= alloc_bound(bytes.len()),
            "decoding {} bytes allocated {} at once",
            bytes.len(),
            largest
        );
        if let Ok(t) = r {
            prop_assert!(validate_tree(&t).is_ok());
            prop_assert_eq!(decode_tree(&encode_tree(&t).unwrap()).ok(), Some(t));
        }
        Ok(())
    }

    fn check_list_decode(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
        let (r, largest) = testkit::largest_alloc(|| decode_chunk_list(bytes));
        prop_assert!(
            largest <= alloc_bound(bytes.len()),
            "decoding {} bytes allocated {} at once",
            bytes.len(),
            largest
        );
        if let Ok(l) = r {
            prop_assert_eq!(
                decode_chunk_list(&encode_chunk_list(&l).unwrap()).ok(),
                Some(l)
            );
        }
        Ok(())
    }

    /// Run `test` over `strategy()` on a thread with a deadline.
    fn fuzz<S: Strategy + 'static>(
        name: &'static str,
        default_cases: u32,
        strategy: impl FnOnce() -> S + Send + 'static,
        test: impl Fn(S::Value) -> std::result::Result<(), TestCaseError> + Send + 'static,
    ) where
        S::Value: std::fmt::Debug,
    {
        let config = testkit::config(default_cases);
        let secs = testkit::deadline(config.cases, 20);
        testkit::within(secs, move || {
            let mut runner = proptest::test_runner::TestRunner::new(config);
            if let Err(e) = runner.run(&strategy(), test) {
                panic!("{name}: {e}");
            }
        });
    }

    /// Fuzz one blob type: a value round-trips through its encoding, and
    /// `check` holds for that encoding damaged.
    fn fuzz_blob<S, T>(
        name: &'static str,
        strategy: fn() -> S,
        encode: fn(&T) -> Result<Vec<u8>>,
        decode: fn(&[u8]) -> Result<T>,
        check: fn(&[u8]) -> std::result::Result<(), TestCaseError>,
    ) where
        S: Strategy<Value = T> + 'static,
        T: std::fmt::Debug + PartialEq + 'static,
    {
        fuzz(
            name,
            512,
            move || (strategy(), testkit::damages()),
            move |(v, damages)| {
                let good = encode(&v).unwrap();
                prop_assert_eq!(decode(&good).ok(), Some(v));
                check(&testkit::apply(&good, &damages))
            },
        );
    }

    #[test]
    fn fuzz_tree_blobs() {
        fuzz_blob(
            "tree blobs",
            tree,
            encode_tree,
            decode_tree,
            check_tree_decode,
        );
    }

    #[test]
    fn fuzz_chunk_list_blobs() {
        fuzz_blob(
            "chunk-list blobs",
            chunk_list,
            |l| encode_chunk_list(l),
            decode_chunk_list,
            check_list_decode,
        );
    }

    #[test]
    fn fuzz_records() {
        fuzz(
            "backup records",
            512,
            || (record(), testkit::damages()),
            |(r, damages)| {
                let good = encode_record(&r).unwrap();
                prop_assert_eq!(decode_record(&good).ok(), Some(r.clone()));
                let bad = testkit::apply(&good, &damages);
                let (got, largest) = testkit::largest_alloc(|| decode_record(&bad));
                prop_assert!(
                    largest <= alloc_bound(bad.len()),
                    "{} bytes allocated {}",
                    bad.len(),
                    largest
                );
                // Every byte of a record is checked (magic, format, length,
                // the payload by its checksum): damage is always refused.
                if bad != good {
                    prop_assert!(got.is_err(), "damaged record decoded: {:?}", got);
                }
                // The payload alone, re-sealed with a valid checksum:
                // bincode's own checks must refuse or round-trip.
                if bad.len() > 24 {
                    let payload = &bad[16..bad.len() - 8];
                    let mut resealed = Vec::new();
                    resealed.extend_from_slice(RECORD_MAGIC);
                    resealed.extend_from_slice(&RECORD_FORMAT.to_le_bytes());
                    resealed.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                    resealed.extend_from_slice(payload);
                    resealed.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
                    let (got, largest) = testkit::largest_alloc(|| decode_record(&resealed));
                    prop_assert!(
                        largest <= alloc_bound(resealed.len()),
                        "{} bytes allocated {}",
                        resealed.len(),
                        largest
                    );
                    if let Ok(r) = got {
                        prop_assert!(validate_record(&r).is_ok());
                        prop_assert_eq!(decode_record(&encode_record(&r).unwrap()).ok(), Some(r));
                    }
                }
                Ok(())
            },
        );
    }

    #[test]
    fn fuzz_arbitrary_bytes() {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..2048);
        fuzz("arbitrary bytes", 1024, bytes, |data| {
            let mut blob = vec![BLOB_FORMAT];
            blob.extend_from_slice(&data);
            check_tree_decode(&data)?;
            check_tree_decode(&blob)?;
            check_list_decode(&data)?;
            check_list_decode(&blob)?;
            let (r, largest) = testkit::largest_alloc(|| decode_record(&data));
            prop_assert!(largest <= alloc_bound(data.len()));
            prop_assert!(r.is_err());
            Ok(())
        });
    }

    /// Length fields set to the largest values they can hold, in a blob of a
    /// few bytes: the decoder must refuse without allocating for them.
    #[test]
    fn hostile_lengths_allocate_little() {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for len in [
            vec![0xfb, 0xff, 0xff],
            vec![0xfc, 0xff, 0xff, 0xff, 0xff],
            vec![0xfc, 0x00, 0x00, 0x00, 0x40],
            vec![0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            vec![0xfd, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00],
        ] {
            // A tree of that many nodes, a node named with that many bytes,
            // a chunk list of that many entries.
            cases.push([&[BLOB_FORMAT][..], &len].concat());
            cases.push([&[BLOB_FORMAT, 1][..], &len, &[0u8; 8]].concat());
        }
        for c in &cases {
            let (r, largest) = testkit::largest_alloc(|| decode_tree(c));
            assert!(r.is_err());
            assert!(largest <= 1 << 17, "{c:x?}: allocated {largest}");
            let (r, largest) = testkit::largest_alloc(|| decode_chunk_list(c));
            assert!(r.is_err());
            assert!(largest <= 1 << 17, "{c:x?}: allocated {largest}");
        }
    }

    /// The densest valid encodings (elements whose in-memory size is
    /// largest against their encoded size), sized so that the input's
    /// length × LIMIT_PER_BYTE is just under a limit tier, decode: the
    /// bounded limit never refuses a valid blob.
    #[test]
    fn decode_limit_fits_dense_values() {
        use std::mem::size_of;
        // The ratios LIMIT_PER_BYTE's margin rests on.
        assert!(size_of::<Xattr>() <= 24 * 2);
        assert!(size_of::<String>() <= 24);
        assert!(size_of::<Node>() <= 24 * 18, "{}", size_of::<Node>());
        assert!(size_of::<ChunkRef>() <= 24 * 18);
        assert!(size_of::<RelChunk>() <= 24 * 18);
        assert!(size_of::<ListRef>() <= 24 * 19);
        assert!(
            size_of::<ResourceBackup>() <= 24 * 51,
            "{}",
            size_of::<ResourceBackup>()
        );
        let tier = 1usize << 20;
        let target = tier / LIMIT_PER_BYTE - 64;
        // One node with only empty xattrs (2 bytes each).
        let mut n = Node::new(b"x".to_vec(), NodeKind::File);
        n.xattrs = vec![
            Xattr {
                name: vec![],
                value: vec![]
            };
            target / 2 - 20
        ];
        let t = Tree { entries: vec![n] };
        let enc = encode_tree(&t).unwrap();
        assert!(enc.len() * LIMIT_PER_BYTE <= tier && enc.len() * LIMIT_PER_BYTE > tier / 2);
        assert_eq!(decode_tree(&enc).unwrap(), t);
        // Many minimal nodes.
        let mut entries = Vec::new();
        let mut i = 0u32;
        loop {
            let name = format!("{i:05}").into_bytes();
            entries.push(Node::new(name, NodeKind::Fifo));
            i += 1;
            if encode_tree(&Tree {
                entries: entries.clone(),
            })
            .unwrap()
            .len()
                + 25
                > target
            {
                break;
            }
        }
        let t = Tree { entries };
        let enc = encode_tree(&t).unwrap();
        assert!(enc.len() * LIMIT_PER_BYTE <= tier);
        assert_eq!(decode_tree(&enc).unwrap(), t);
        // A record of empty warnings (1 byte each, 24 in memory).
        let part = ResourceBackup {
            name: "r".into(),
            kind: ResourceKind::Directory,
            source: vec![],
            root: BlobId::default(),
            meta: Node {
                subtree: Some(BlobId::default()),
                ..Node::new(b"r".to_vec(), NodeKind::Dir)
            },
            full: true,
            parent: None,
            stats: BackupStats::default(),
            warnings: vec![String::new(); target - 100],
        };
        let r = BackupRecord {
            name: "b".into(),
            vault: "v".into(),
            description: String::new(),
            origin: Origin::Manual,
            policy: None,
            full: true,
            started_ns: 0,
            finished_ns: 0,
            resources: vec![part],
            stats: BackupStats::default(),
        };
        let enc = encode_record(&r).unwrap();
        assert!((enc.len() - 24) * LIMIT_PER_BYTE <= tier);
        assert_eq!(decode_record(&enc).unwrap(), r);
    }

    #[test]
    fn damage_helpers_are_used() {
        // The record fuzz relies on a damage changing the bytes; make sure
        // the common ones do.
        let good = encode_record(&testkit::record(vec![])).unwrap();
        for d in [
            Damage::Flip(3, 1),
            Damage::Truncate(5),
            Damage::Extend(vec![0]),
        ] {
            assert!(decode_record(&testkit::apply(&good, &[d])).is_err());
        }
    }
}
