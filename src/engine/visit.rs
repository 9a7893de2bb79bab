//! The walk over every blob a backup uses — trees, chunk lists, data
//! chunks — shared by check and prune, so that both read a backup the way
//! restore and the mount do: from each resource's root node
//! ([`ResourceBackup::root_node`]).
//!
//! A store is input: the walk is iterative (an explicit stack, so 10,000
//! levels of nesting cost no call stack), reads each tree and each chunk
//! list once however often it is referenced (shared subtrees cost what the
//! unique trees cost), and reports a tree that contains itself as damage
//! instead of walking it forever. Paths are kept as an arena of
//! (parent, name) and only spelt out for a report.

use super::reader;
use crate::error::Result;
use crate::model::{
    self, ChunkRef, Content, ListRef, Node, NodeKind, ResourceBackup, ResourceKind, Tree,
};
use crate::store::{BlobId, Repo};
use std::collections::{HashMap, HashSet};

/// What a blob is to the backup that uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// A directory's tree.
    Tree,
    /// A file's chunk-list blob.
    List,
    /// A file's data chunk.
    Chunk,
}

/// What a walk is told.
pub trait Visitor {
    /// A blob the resource uses, before the walk reads it; `at` spells the
    /// path it belongs to. Returning false skips it: a tree or list known
    /// to be damaged is not read (nor what it names).
    fn blob(&mut self, id: &BlobId, what: Use, at: &dyn Fn() -> String) -> bool;
    /// Damage at path `at`: a tree or list that cannot be read, a cycle,
    /// a directory without a tree. An error stops the walk (prune).
    fn damage(&mut self, at: String, what: String) -> Result<()>;
}

/// Trees and chunk lists walked already. Prune shares one across all
/// backups of a vault (a tree kept once is kept); check uses one per
/// backup, so damage in a shared tree is reported for each backup.
#[derive(Default)]
pub struct Seen {
    /// Tree → finished (false while its subtrees are being walked: meeting
    /// it again then is a cycle).
    trees: HashMap<BlobId, bool>,
    /// Chunk lists resolved, by (blob, span, count): a list's own check
    /// does not depend on where in a file it is.
    lists: HashSet<(BlobId, u64, u32)>,
}

enum Frame {
    /// Walk tree `id`, the directory at path index `at`.
    Enter(BlobId, usize),
    /// Tree `id` and everything under it is walked.
    Exit(BlobId),
}

/// Path arena: entry i is (parent index, name); entry 0 is the resource's
/// root.
struct Paths(Vec<(usize, Vec<u8>)>);

impl Paths {
    fn push(&mut self, parent: usize, name: &[u8]) -> usize {
        self.0.push((parent, name.to_vec()));
        self.0.len() - 1
    }
    /// `/a/b/name` for entry `i` (and `leaf` under it, if given).
    fn show(&self, mut i: usize, leaf: Option<&[u8]>) -> String {
        let mut parts: Vec<&[u8]> = leaf.into_iter().collect();
        while i != 0 {
            let (parent, name) = &self.0[i];
            parts.push(name);
            i = *parent;
        }
        if parts.is_empty() {
            return "/".to_string();
        }
        parts
            .iter()
            .rev()
            .map(|p| format!("/{}", String::from_utf8_lossy(p)))
            .collect()
    }
}

/// Where a walk reads trees and chunk lists: a vault's repository, or in
/// tests a map, which can hold what no store of keyed hashes can (a tree
/// that contains itself).
pub trait Blobs {
    /// Tree blob `id`, decoded and validated.
    fn tree(&self, id: &BlobId) -> Result<Tree>;
    /// The chunks of the list `l` references, checked against it.
    fn list(&self, l: &ListRef) -> Result<Vec<ChunkRef>>;
}

impl Blobs for Repo {
    fn tree(&self, id: &BlobId) -> Result<Tree> {
        self.read_blob(id).and_then(|b| model::decode_tree(&b))
    }
    fn list(&self, l: &ListRef) -> Result<Vec<ChunkRef>> {
        reader::load_list(self, l)
    }
}

/// Walk every blob resource `part` uses, telling `v`. Trees and lists in
/// `seen` are not walked again.
pub fn walk_resource(
    repo: &impl Blobs,
    part: &ResourceBackup,
    seen: &mut Seen,
    v: &mut impl Visitor,
) -> Result<()> {
    let mut paths = Paths(vec![(0, Vec::new())]);
    let root = part.root_node();
    if part.kind == ResourceKind::Disk {
        // A disk's node is in the record; `root` is a tree holding just
        // that node, kept and checked so that the two cannot disagree.
        let at = || "/".to_string();
        if v.blob(&part.root, Use::Tree, &at) && seen.trees.insert(part.root, true).is_none() {
            match read_tree(repo, &part.root) {
                Ok(t) if t.entries.len() == 1 && &t.entries[0] == root => {}
                Ok(_) => v.damage(
                    at(),
                    format!(
                        "the disk's root tree {} does not hold the record's node",
                        part.root
                    ),
                )?,
                Err(e) => v.damage(at(), format!("directory cannot be read: {e}"))?,
            }
        }
        return file(repo, root, &at, seen, v);
    }
    let mut stack = vec![Frame::Enter(part.root, 0)];
    while let Some(frame) = stack.pop() {
        let (id, at) = match frame {
            Frame::Exit(id) => {
                seen.trees.insert(id, true);
                continue;
            }
            Frame::Enter(id, at) => (id, at),
        };
        match seen.trees.get(&id) {
            Some(true) => continue,
            Some(false) => {
                v.damage(
                    paths.show(at, None),
                    format!("directory tree {id} contains itself"),
                )?;
                continue;
            }
            None => {}
        }
        if !v.blob(&id, Use::Tree, &|| paths.show(at, None)) {
            seen.trees.insert(id, true);
            continue;
        }
        let tree = match read_tree(repo, &id) {
            Ok(t) => t,
            Err(e) => {
                seen.trees.insert(id, true);
                v.damage(
                    paths.show(at, None),
                    format!("directory cannot be read: {e}"),
                )?;
                continue;
            }
        };
        seen.trees.insert(id, false);
        stack.push(Frame::Exit(id));
        // Reversed, so that entries are walked in name order.
        for n in tree.entries.iter().rev() {
            match n.kind {
                NodeKind::Dir => match n.subtree {
                    Some(s) => {
                        let i = paths.push(at, &n.name);
                        stack.push(Frame::Enter(s, i));
                    }
                    None => v.damage(
                        paths.show(at, Some(&n.name)),
                        "directory has no tree".to_string(),
                    )?,
                },
                NodeKind::File => file(repo, n, &|| paths.show(at, Some(&n.name)), seen, v)?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// What [`walk_nodes`] calls per entry: its path (spelt on demand) and
/// node; it returns whether to enter a directory.
pub type NodeFn<'a> = dyn FnMut(&dyn Fn() -> Vec<u8>, &Node) -> Result<bool> + 'a;

/// Walk every entry under tree `start` (every occurrence: a subtree
/// shared by two directories is listed under both), in name order, for
/// `ls`, `find` and `diff`. `f` gets the entry's path (spelt on demand,
/// relative to `start`, `/`-separated without a leading `/`) and node, and
/// says whether to enter it when it is a directory.
///
/// A store is input: the walk is iterative (an explicit stack; paths are an
/// arena, as in [`walk_resource`]), a tree inside itself is damage, and at
/// most `max_entries` entries are walked — the totals the backup recorded —
/// so a tree listed many times over cannot make a listing without end.
/// `what` names the backup and resource in messages.
pub fn walk_nodes(
    repo: &impl Blobs,
    start: BlobId,
    max_entries: u64,
    what: &str,
    f: &mut NodeFn<'_>,
) -> Result<()> {
    let mut paths = Paths(vec![(0, Vec::new())]);
    let spell = |paths: &Paths, i: usize, leaf: &[u8]| -> Vec<u8> {
        let mut parts: Vec<&[u8]> = vec![leaf];
        let mut i = i;
        while i != 0 {
            let (parent, name) = &paths.0[i];
            parts.push(name);
            i = *parent;
        }
        parts.reverse();
        parts.join(&b'/')
    };
    let mut on_path: HashSet<BlobId> = HashSet::new();
    let mut walked = 0u64;
    let mut stack = vec![Frame::Enter(start, 0)];
    while let Some(frame) = stack.pop() {
        let (id, at) = match frame {
            Frame::Exit(id) => {
                on_path.remove(&id);
                continue;
            }
            Frame::Enter(id, at) => (id, at),
        };
        let shown = || {
            let p = if at == 0 {
                Vec::new()
            } else {
                let (parent, name) = &paths.0[at];
                spell(&paths, *parent, name)
            };
            format!("/{}", crate::quote::quote_bytes(&p))
        };
        if !on_path.insert(id) {
            return Err(crate::error::Error::corrupt(format!(
                "{what}: {}: directory tree {id} contains itself (a damaged or hostile backup)",
                shown()
            )));
        }
        let tree = read_tree(repo, &id)
            .map_err(|e| e.context(format!("{what}: {}: directory cannot be read", shown())))?;
        stack.push(Frame::Exit(id));
        let mut children = Vec::new();
        for n in &tree.entries {
            walked += 1;
            if walked > max_entries {
                return Err(crate::error::Error::corrupt(format!(
                    "{what}: more than the {max_entries} entries the backup records (a damaged or hostile backup: a tree listed more than once?); stopped"
                )));
            }
            let descend = f(&|| spell(&paths, at, &n.name), n)?;
            if descend && n.kind == NodeKind::Dir {
                if let Some(s) = n.subtree {
                    children.push((s, n.name.clone()));
                }
            }
        }
        // Reversed, so that subdirectories are walked in name order.
        for (s, name) in children.into_iter().rev() {
            let i = paths.push(at, &name);
            stack.push(Frame::Enter(s, i));
        }
    }
    Ok(())
}

fn read_tree(repo: &impl Blobs, id: &BlobId) -> Result<Tree> {
    repo.tree(id)
}

/// A file's chunk lists and chunks. Its content's bounds were checked when
/// its tree (or record) was decoded; each list is checked against its
/// reference when it is loaded ([`reader::load_list`]).
fn file(
    repo: &impl Blobs,
    n: &Node,
    at: &dyn Fn() -> String,
    seen: &mut Seen,
    v: &mut impl Visitor,
) -> Result<()> {
    match &n.content {
        Content::None => {}
        Content::Chunks(cs) => {
            for c in cs {
                v.blob(&c.id, Use::Chunk, at);
            }
        }
        Content::Lists(ls) => {
            for l in ls {
                if !v.blob(&l.id, Use::List, at) || !seen.lists.insert((l.id, l.span, l.count)) {
                    continue;
                }
                match repo.list(l) {
                    Ok(cs) => {
                        for c in cs {
                            v.blob(&c.id, Use::Chunk, at);
                        }
                    }
                    Err(e) => v.damage(at(), format!("chunk list cannot be read: {e}"))?,
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::cell::Cell;

    /// Trees by id, counting reads.
    #[derive(Default)]
    struct Map {
        trees: HashMap<BlobId, Tree>,
        reads: Cell<usize>,
    }

    impl Map {
        /// Tree `id(i)` holds `entries`.
        fn put(&mut self, i: usize, entries: Vec<Node>) {
            self.trees.insert(id(i), Tree { entries });
        }

        /// 40 trees that each point twice at the next (2^40 paths), and
        /// an empty one at the bottom.
        fn doubling() -> Map {
            let mut m = Map::default();
            m.put(40, Vec::new());
            for i in (0..40).rev() {
                m.put(i, vec![dir("a", id(i + 1)), dir("b", id(i + 1))]);
            }
            m
        }
    }

    impl Blobs for Map {
        fn tree(&self, id: &BlobId) -> Result<Tree> {
            self.reads.set(self.reads.get() + 1);
            self.trees
                .get(id)
                .cloned()
                .ok_or_else(|| Error::corrupt(format!("no tree {id}")))
        }
        fn list(&self, l: &ListRef) -> Result<Vec<ChunkRef>> {
            Err(Error::corrupt(format!("no list {}", l.id)))
        }
    }

    #[derive(Default)]
    struct Log {
        blobs: usize,
        damage: Vec<String>,
    }

    impl Visitor for Log {
        fn blob(&mut self, _: &BlobId, _: Use, _: &dyn Fn() -> String) -> bool {
            self.blobs += 1;
            true
        }
        fn damage(&mut self, at: String, what: String) -> Result<()> {
            self.damage.push(format!("{at}: {what}"));
            Ok(())
        }
    }

    fn id(i: usize) -> BlobId {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        BlobId(b)
    }

    fn dir(name: &str, sub: BlobId) -> Node {
        Node {
            subtree: Some(sub),
            ..Node::new(name.as_bytes().to_vec(), NodeKind::Dir)
        }
    }

    fn resource(root: BlobId) -> ResourceBackup {
        ResourceBackup {
            name: "r".into(),
            kind: ResourceKind::Directory,
            source: Vec::new(),
            root,
            meta: dir("r", root),
            full: true,
            parent: None,
            stats: Default::default(),
            warnings: Vec::new(),
        }
    }

    fn walk(m: &Map, root: BlobId) -> Log {
        let mut log = Log::default();
        walk_resource(m, &resource(root), &mut Seen::default(), &mut log).unwrap();
        log
    }

    /// Finding 8: 40 trees that each point twice at the next are read 41
    /// times, not 2^40.
    #[test]
    fn shared_subtrees_are_read_once() {
        let m = Map::doubling();
        let log = walk(&m, id(0));
        assert_eq!(m.reads.get(), 41);
        assert_eq!(log.blobs, 41);
        assert!(log.damage.is_empty(), "{:?}", log.damage);
    }

    /// A tree that contains itself (directly or further down) is damage,
    /// named by its path, and the walk ends.
    #[test]
    fn cycles_are_damage() {
        let mut m = Map::default();
        m.put(0, vec![dir("a", id(1))]);
        m.put(1, vec![dir("b", id(0)), dir("c", id(1))]);
        let log = walk(&m, id(0));
        assert_eq!(m.reads.get(), 2);
        assert_eq!(log.damage.len(), 2, "{:?}", log.damage);
        assert!(
            log.damage[0].starts_with("/a/b: directory tree"),
            "{:?}",
            log.damage
        );
        assert!(
            log.damage[0].contains("contains itself"),
            "{:?}",
            log.damage
        );
        assert!(log.damage[1].starts_with("/a/c: "), "{:?}", log.damage);
    }

    /// 100,000 levels: no recursion, and the path of damage at the bottom
    /// is spelt out.
    #[test]
    fn deep_nesting_walks_without_recursion() {
        let n = 100_000;
        let mut m = Map::default();
        for i in 0..n {
            m.put(i, vec![dir("d", id(i + 1))]);
        }
        let log = walk(&m, id(0));
        assert_eq!(m.reads.get(), n + 1);
        assert_eq!(log.damage.len(), 1);
        assert!(
            log.damage[0].starts_with(&"/d".repeat(n)),
            "{}",
            &log.damage[0][..40]
        );
        assert!(log.damage[0].contains("directory cannot be read"));
    }

    fn names(m: &Map, root: BlobId, max: u64) -> Result<Vec<String>> {
        let mut out = Vec::new();
        walk_nodes(m, root, max, "backup b", &mut |p, _| {
            out.push(String::from_utf8_lossy(&p()).into_owned());
            Ok(true)
        })?;
        Ok(out)
    }

    /// `walk_nodes` lists a shared subtree under every name, in name
    /// order, stops at the recorded number of entries (a tree shared 2^40
    /// times is not listed 2^40 times), and calls a cycle damage.
    #[test]
    fn node_walk_is_bounded_and_finds_cycles() {
        let m = Map::doubling();
        let e = names(&m, id(38), 100).unwrap();
        assert_eq!(e, ["a", "b", "a/a", "a/b", "b/a", "b/b"]);
        let e = names(&m, id(0), 1000).unwrap_err();
        assert!(e.to_string().contains("more than the 1000 entries"), "{e}");
        let mut m = Map::default();
        m.put(0, vec![dir("a", id(1))]);
        m.put(1, vec![dir("b", id(0))]);
        let e = names(&m, id(0), 1000).unwrap_err();
        assert!(e.to_string().contains("/a/b: directory tree"), "{e}");
        assert!(e.to_string().contains("contains itself"), "{e}");
    }
}
