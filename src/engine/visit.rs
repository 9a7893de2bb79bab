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
use crate::model::{self, Content, Node, NodeKind, ResourceBackup, ResourceKind};
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

/// Walk every blob resource `part` uses, telling `v`. Trees and lists in
/// `seen` are not walked again.
pub fn walk_resource(
    repo: &Repo,
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

fn read_tree(repo: &Repo, id: &BlobId) -> Result<model::Tree> {
    repo.read_blob(id).and_then(|b| model::decode_tree(&b))
}

/// A file's chunk lists and chunks. Its content's bounds were checked when
/// its tree (or record) was decoded; each list is checked against its
/// reference when it is loaded ([`reader::load_list`]).
fn file(
    repo: &Repo,
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
                match reader::load_list(repo, l) {
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
