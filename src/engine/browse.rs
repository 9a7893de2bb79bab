//! Browsing backups without mounting: `ls` (a backup's tree), `find` (in
//! which backups a path exists) and `diff` (what changed between two
//! backups), as restic's commands of the same names.
//!
//! Paths are spelt as in the mount: `<resource>/sub/dir`. Every walk is
//! [`visit::walk_nodes`] (iterative, cycle-checked, bounded by the entries
//! the backup records), so a hostile store cannot make a listing without
//! end; `diff` compares tree ids first and never reads a subtree whose id
//! is the same in both backups.

use super::visit::{self, Blobs};
use crate::catalog::{self, Store};
use crate::error::{Error, Result};
use crate::model::{BackupRecord, Content, Node, NodeKind, ResourceBackup, ResourceKind, Tree};
use crate::store::BlobId;
use serde::Serialize;
use std::collections::BTreeMap;

/// What orders backups for `latest`, the newest (ties by name): one dated
/// later than the real clock `now_ns` (made by `policy run-due --now` in
/// the future) ranks below every backup dated now or earlier, so a
/// simulated pass never moves `latest` away from real backups. The mount,
/// `ls`, `diff` and `restore` all use it.
pub fn latest_key(started_ns: i64, now_ns: i64) -> (bool, i64) {
    (started_ns <= now_ns, started_ns)
}

/// Backup `name` of `vault`; `latest` is the newest readable backup by
/// [`latest_key`], then name, as in the mount.
pub fn resolve_backup(store: &Store, vault: &str, name: &str) -> Result<BackupRecord> {
    store.vault(vault)?;
    if name != "latest" {
        return store.backup(vault, name);
    }
    let now = crate::catalog::now_ns();
    store
        .backups(vault)?
        .into_iter()
        .filter_map(|r| r.ok())
        .max_by(|a, b| {
            (latest_key(a.started_ns, now), &a.name).cmp(&(latest_key(b.started_ns, now), &b.name))
        })
        .ok_or_else(|| {
            Error::not_found(format!(
                "vault {vault} has no backups: 'latest' names the newest one"
            ))
            .code("BackupService.6200")
        })
}

/// The most entries a walk of resource `p` may meet: what its backup
/// recorded (directories, files, other entries, a server's members — a
/// server's member roots are entries of its tree, not counted by the
/// backup — and the root).
pub fn recorded_entries(p: &ResourceBackup) -> u64 {
    let s = &p.stats;
    let members = match p.kind {
        ResourceKind::Server => super::backup::server_members(&p.source).len() as u64,
        _ => 0,
    };
    [
        s.dirs,
        s.files_new,
        s.files_changed,
        s.files_unchanged,
        s.others,
        members,
        1,
    ]
    .iter()
    .fold(0u64, |a, b| a.saturating_add(*b))
}

/// One entry of a backup, as `ls` and `find` show it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Entry {
    /// `<resource>/sub/name` (bytes that are not UTF-8 shown as U+FFFD; the
    /// text form quotes them).
    pub path: String,
    /// file, dir, symlink, chardev, blockdev, fifo or socket.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (files; 0 otherwise).
    pub size: u64,
    /// Modification time, RFC 3339.
    pub mtime: String,
    /// A symlink's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The raw path, for quoting.
    #[serde(skip)]
    pub raw_path: Vec<u8>,
    /// Modification time, ns since the epoch.
    #[serde(skip)]
    pub mtime_ns: i64,
    /// The kind, for the text form.
    #[serde(skip)]
    pub node_kind: NodeKind,
}

/// The name of a kind in listings and JSON.
pub fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::CharDev => "chardev",
        NodeKind::BlockDev => "blockdev",
        NodeKind::Fifo => "fifo",
        NodeKind::Socket => "socket",
    }
}

/// `drwxr-xr-x` of a kind and permission bits, as `ls -l`.
pub fn mode_string(k: NodeKind, mode: u32) -> String {
    let t = match k {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::CharDev => 'c',
        NodeKind::BlockDev => 'b',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    for (i, special, set, unset) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (mode >> i) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (mode & special != 0, bits & 1 != 0) {
            (true, true) => set,
            (true, false) => unset,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn entry(path: Vec<u8>, n: &Node) -> Entry {
    Entry {
        path: String::from_utf8_lossy(&path).into_owned(),
        kind: kind_name(n.kind),
        mode: n.mode & 0o7777,
        uid: n.uid,
        gid: n.gid,
        size: n.size,
        mtime: catalog::ns_to_rfc3339(n.mtime_ns),
        target: (n.kind == NodeKind::Symlink)
            .then(|| String::from_utf8_lossy(&n.target).into_owned()),
        raw_path: path,
        mtime_ns: n.mtime_ns,
        node_kind: n.kind,
    }
}

fn join(base: &[u8], rel: &[u8]) -> Vec<u8> {
    if base.is_empty() {
        rel.to_vec()
    } else if rel.is_empty() {
        base.to_vec()
    } else {
        [base, b"/", rel].concat()
    }
}

/// What `ls` lists.
#[derive(Debug, Serialize)]
pub struct Listing {
    /// The vault.
    pub vault: String,
    /// The backup (`latest` resolved to its name).
    pub backup: String,
    /// The path listed (`""` for the backup's top: its resources).
    pub path: String,
    /// The entries, each directory's in name order.
    pub entries: Vec<Entry>,
}

fn what(rec: &BackupRecord, p: &ResourceBackup) -> String {
    format!(
        "vault {}, backup {}, resource {}",
        rec.vault, rec.name, p.name
    )
}

/// List `path` (`<resource>/sub/dir`, or the resources when empty) of
/// `backup`; with `recursive`, everything below it.
pub fn ls(
    store: &Store,
    vault: &str,
    backup: &str,
    path: Option<&str>,
    recursive: bool,
) -> Result<Listing> {
    let rec = resolve_backup(store, vault, backup)?;
    let repo = store.repo(vault)?;
    let comps: Vec<&str> = path
        .unwrap_or("")
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if let Some(c) = comps.iter().find(|c| **c == "..") {
        return Err(Error::param(format!(
            "path {:?}: '{c}' is not allowed; give a path inside the backup as <resource>/sub/dir",
            path.unwrap_or("")
        )));
    }
    let mut out = Listing {
        vault: vault.to_string(),
        backup: rec.name.clone(),
        path: comps.join("/"),
        entries: Vec::new(),
    };
    if comps.is_empty() {
        for p in &rec.resources {
            let root = p.root_node();
            out.entries.push(entry(root.name.clone(), root));
            if recursive {
                if let (NodeKind::Dir, Some(t)) = (root.kind, root.subtree) {
                    list_tree(&repo, &rec, p, t, &root.name, true, &mut out.entries)?;
                }
            }
        }
        return Ok(out);
    }
    let (p, at, node) = lookup(&repo, &rec, &comps)?;
    match (node.kind, node.subtree) {
        (NodeKind::Dir, Some(t)) => list_tree(&repo, &rec, p, t, &at, recursive, &mut out.entries)?,
        (NodeKind::Dir, None) => {}
        _ => out.entries.push(entry(at, &node)),
    }
    Ok(out)
}

/// The entry at path `comps` (`<resource>`, then names) of backup `rec`:
/// its resource, its path and its node. One tree is read per component.
pub fn lookup<'r>(
    repo: &impl Blobs,
    rec: &'r BackupRecord,
    comps: &[&str],
) -> Result<(&'r ResourceBackup, Vec<u8>, Node)> {
    let Some((first, rest)) = comps.split_first() else {
        return Err(Error::param(format!(
            "backup {}: an empty path names no entry; give <resource>/sub/path",
            rec.name
        )));
    };
    let vault = &rec.vault;
    let p = rec
        .resources
        .iter()
        .find(|p| p.root_node().name == first.as_bytes())
        .ok_or_else(|| {
            let names: Vec<String> = rec
                .resources
                .iter()
                .map(|p| String::from_utf8_lossy(&p.root_node().name).into_owned())
                .collect();
            Error::not_found(format!(
                "backup {} of vault {vault} has no resource {first:?} (a path starts with one of: {})",
                rec.name,
                names.join(", ")
            ))
        })?;
    let mut node = p.root_node().clone();
    let mut at = first.as_bytes().to_vec();
    for c in rest {
        let tree = match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(t)) => read_tree(repo, rec, p, &t, &at)?,
            _ => {
                return Err(Error::not_found(format!(
                    "backup {}: {} is not a directory, so it has no entry {c:?}",
                    rec.name,
                    crate::quote::quote_bytes(&at)
                )))
            }
        };
        node = tree.find(c.as_bytes()).cloned().ok_or_else(|| {
            Error::not_found(format!(
                "backup {}: {} has no entry {c:?}",
                rec.name,
                crate::quote::quote_bytes(&at)
            ))
        })?;
        at = join(&at, c.as_bytes());
    }
    Ok((p, at, node))
}

fn read_tree(
    repo: &impl Blobs,
    rec: &BackupRecord,
    p: &ResourceBackup,
    id: &BlobId,
    at: &[u8],
) -> Result<Tree> {
    repo.tree(id).map_err(|e| {
        e.context(format!(
            "{}: {}: directory cannot be read",
            what(rec, p),
            crate::quote::quote_bytes(at)
        ))
    })
}

fn list_tree(
    repo: &impl Blobs,
    rec: &BackupRecord,
    p: &ResourceBackup,
    tree: BlobId,
    base: &[u8],
    recursive: bool,
    out: &mut Vec<Entry>,
) -> Result<()> {
    visit::walk_nodes(
        repo,
        tree,
        recorded_entries(p),
        &what(rec, p),
        &mut |rel, n| {
            out.push(entry(join(base, &rel()), n));
            Ok(recursive)
        },
    )
}

/// One backup holding an entry that `find` matched.
#[derive(Debug, Serialize)]
pub struct Found {
    /// The backup.
    pub backup: String,
    /// When it started, RFC 3339.
    pub time: String,
    /// The entry.
    #[serde(flatten)]
    pub entry: Entry,
}

/// What `find` found.
#[derive(Debug, Serialize)]
pub struct FindReport {
    /// The vault.
    pub vault: String,
    /// The pattern.
    pub pattern: String,
    /// Matches, oldest backup first, each backup's in walk order.
    pub matches: Vec<Found>,
    /// Backups or trees that could not be read (the rest was searched).
    pub errors: Vec<String>,
}

/// True when `pattern` matches the entry at `rel` (relative to its
/// resource `resource`) named `name`: a glob with a `/` on the path (a
/// leading `/` ignored), relative to the resource or after its name as
/// `ls` shows it; else on the name — as backup's `--exclude`.
pub fn glob_matches(
    pattern: &str,
    resource: &[u8],
    rel: &dyn Fn() -> Vec<u8>,
    name: &[u8],
) -> bool {
    if pattern.contains('/') {
        let p = pattern.trim_start_matches('/');
        let rel = rel();
        crate::sys::fnmatch(p, &rel) || crate::sys::fnmatch(p, &join(resource, &rel))
    } else {
        crate::sys::fnmatch(pattern, name)
    }
}

/// In which backups of `vault` an entry matching `pattern` exists.
pub fn find(store: &Store, vault: &str, pattern: &str) -> Result<FindReport> {
    store.vault(vault)?;
    if pattern.is_empty() || pattern.contains('\0') {
        return Err(Error::param(format!(
            "pattern {pattern:?} is invalid: give a glob on a name (*.txt) or on a path relative to the resource (home/*/notes.txt)"
        )));
    }
    let repo = store.repo(vault)?;
    let mut out = FindReport {
        vault: vault.to_string(),
        pattern: pattern.to_string(),
        matches: Vec::new(),
        errors: Vec::new(),
    };
    for r in store.backups(vault)? {
        let rec = match r {
            Ok(r) => r,
            Err(e) => {
                out.errors.push(e.to_string());
                continue;
            }
        };
        let time = catalog::ns_to_rfc3339(rec.started_ns);
        for p in &rec.resources {
            let root = p.root_node();
            let (NodeKind::Dir, Some(t)) = (root.kind, root.subtree) else {
                continue;
            };
            let base = root.name.clone();
            let walked = visit::walk_nodes(
                &repo,
                t,
                recorded_entries(p),
                &what(&rec, p),
                &mut |rel, n| {
                    if glob_matches(pattern, &base, rel, &n.name) {
                        out.matches.push(Found {
                            backup: rec.name.clone(),
                            time: time.clone(),
                            entry: entry(join(&base, &rel()), n),
                        });
                    }
                    Ok(true)
                },
            );
            if let Err(e) = walked {
                out.errors.push(e.to_string());
            }
        }
    }
    Ok(out)
}

/// One difference between two backups.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Change {
    /// `<resource>/sub/name`.
    pub path: String,
    /// added, removed or changed.
    pub change: &'static str,
    /// The entry's type (in the newer backup, unless removed).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// For `changed`: the content differs (other chunks, or another
    /// symlink target).
    pub content: bool,
    /// For `changed`: the metadata that differs, of mode, uid, gid, size,
    /// mtime.
    pub metadata: Vec<&'static str>,
    /// The raw path, for quoting.
    #[serde(skip)]
    pub raw_path: Vec<u8>,
}

/// What `diff` found.
#[derive(Debug, Serialize)]
pub struct DiffReport {
    /// The vault.
    pub vault: String,
    /// The older backup.
    pub from: String,
    /// The newer backup.
    pub to: String,
    /// Every difference, in walk order.
    pub changes: Vec<Change>,
    /// Counts of added, removed and changed entries.
    pub added: u64,
    /// Entries only in `from`.
    pub removed: u64,
    /// Entries in both that differ.
    pub changed: u64,
    /// Directories whose tree is the same blob in both, not read.
    pub trees_skipped: u64,
}

/// What `diff` compares: (tree in from, tree in to, path), a missing side
/// an empty tree.
type Pair = (Option<BlobId>, Option<BlobId>, Vec<u8>);

/// The differences between backups `b1` and `b2` of `vault`.
pub fn diff(store: &Store, vault: &str, b1: &str, b2: &str) -> Result<DiffReport> {
    let a = resolve_backup(store, vault, b1)?;
    let b = resolve_backup(store, vault, b2)?;
    let repo = store.repo(vault)?;
    diff_records(&repo, &a, &b)
}

/// [`diff`] of two records of one vault, reading trees from `repo`.
pub fn diff_records(repo: &impl Blobs, a: &BackupRecord, b: &BackupRecord) -> Result<DiffReport> {
    let vault = &a.vault;
    let mut d = Differ {
        repo,
        out: DiffReport {
            vault: vault.to_string(),
            from: a.name.clone(),
            to: b.name.clone(),
            changes: Vec::new(),
            added: 0,
            removed: 0,
            changed: 0,
            trees_skipped: 0,
        },
        budget: 0,
        what: format!("vault {vault}, backups {} and {}", a.name, b.name),
    };
    // Resources by their root's name, as paths start.
    let mut names: BTreeMap<Vec<u8>, (Option<&ResourceBackup>, Option<&ResourceBackup>)> =
        BTreeMap::new();
    for p in &a.resources {
        names.entry(p.root_node().name.clone()).or_default().0 = Some(p);
        d.budget = d.budget.saturating_add(recorded_entries(p));
    }
    for p in &b.resources {
        names.entry(p.root_node().name.clone()).or_default().1 = Some(p);
        d.budget = d.budget.saturating_add(recorded_entries(p));
    }
    let mut stack: Vec<Pair> = Vec::new();
    for (name, (pa, pb)) in names {
        d.node(
            &name,
            pa.map(|p| p.root_node()),
            pb.map(|p| p.root_node()),
            &mut stack,
        )?;
        // Iterative: each pair of differing trees is compared once, and
        // its differing subdirectories are pushed; the budget bounds it.
        while let Some((ta, tb, at)) = stack.pop() {
            let ea = d.tree(ta, &at)?;
            let eb = d.tree(tb, &at)?;
            let mut merged: BTreeMap<&[u8], (Option<&Node>, Option<&Node>)> = BTreeMap::new();
            for n in &ea.entries {
                merged.entry(&n.name).or_default().0 = Some(n);
            }
            for n in &eb.entries {
                merged.entry(&n.name).or_default().1 = Some(n);
            }
            let mut pushed = Vec::new();
            for (name, (na, nb)) in merged {
                d.node(&join(&at, name), na, nb, &mut pushed)?;
            }
            // Reversed: subdirectories are compared in name order.
            stack.extend(pushed.into_iter().rev());
        }
    }
    Ok(d.out)
}

struct Differ<'a, R: Blobs> {
    repo: &'a R,
    out: DiffReport,
    /// Entries that may still be met: both records' totals.
    budget: u64,
    what: String,
}

impl<R: Blobs> Differ<'_, R> {
    fn spend(&mut self) -> Result<()> {
        match self.budget.checked_sub(1) {
            Some(b) => {
                self.budget = b;
                Ok(())
            }
            None => Err(Error::corrupt(format!(
                "{}: more entries than the backups record (a damaged or hostile backup: a tree listed more than once?); diff stopped",
                self.what
            ))),
        }
    }

    fn tree(&self, id: Option<BlobId>, at: &[u8]) -> Result<Tree> {
        match id {
            None => Ok(Tree::default()),
            Some(id) => self.repo.tree(&id).map_err(|e| {
                e.context(format!(
                    "{}: {}: directory cannot be read",
                    self.what,
                    crate::quote::quote_bytes(at)
                ))
            }),
        }
    }

    fn push(
        &mut self,
        path: &[u8],
        change: &'static str,
        n: &Node,
        content: bool,
        metadata: Vec<&'static str>,
    ) {
        match change {
            "added" => self.out.added += 1,
            "removed" => self.out.removed += 1,
            _ => self.out.changed += 1,
        }
        self.out.changes.push(Change {
            path: String::from_utf8_lossy(path).into_owned(),
            change,
            kind: kind_name(n.kind),
            content,
            metadata,
            raw_path: path.to_vec(),
        });
    }

    /// An entry only in one backup, and everything below it.
    fn whole(&mut self, path: &[u8], change: &'static str, n: &Node) -> Result<()> {
        self.spend()?;
        self.push(path, change, n, false, Vec::new());
        if let (NodeKind::Dir, Some(t)) = (n.kind, n.subtree) {
            let mut below = Vec::new();
            visit::walk_nodes(self.repo, t, self.budget, &self.what, &mut |rel, n| {
                below.push((join(path, &rel()), n.clone()));
                Ok(true)
            })?;
            self.budget = self.budget.saturating_sub(below.len() as u64);
            for (p, n) in below {
                self.push(&p, change, &n, false, Vec::new());
            }
        }
        Ok(())
    }

    /// Compare the entry at `path` in both backups; differing
    /// subdirectories go on `stack`.
    fn node(
        &mut self,
        path: &[u8],
        a: Option<&Node>,
        b: Option<&Node>,
        stack: &mut Vec<Pair>,
    ) -> Result<()> {
        let (a, b) = match (a, b) {
            (None, None) => return Ok(()),
            (Some(a), None) => return self.whole(path, "removed", a),
            (None, Some(b)) => return self.whole(path, "added", b),
            (Some(a), Some(b)) => (a, b),
        };
        if a.kind != b.kind {
            self.whole(path, "removed", a)?;
            return self.whole(path, "added", b);
        }
        self.spend()?;
        let content = match a.kind {
            NodeKind::File => !same_content(&a.content, &b.content),
            NodeKind::Symlink => a.target != b.target,
            NodeKind::CharDev | NodeKind::BlockDev => a.rdev != b.rdev,
            _ => false,
        };
        let mut metadata = Vec::new();
        if a.mode & 0o7777 != b.mode & 0o7777 {
            metadata.push("mode");
        }
        if a.uid != b.uid {
            metadata.push("uid");
        }
        if a.gid != b.gid {
            metadata.push("gid");
        }
        if a.kind == NodeKind::File && a.size != b.size {
            metadata.push("size");
        }
        if a.mtime_ns != b.mtime_ns {
            metadata.push("mtime");
        }
        if content || !metadata.is_empty() {
            self.push(path, "changed", b, content, metadata);
        }
        if a.kind == NodeKind::Dir {
            if a.subtree == b.subtree {
                self.out.trees_skipped += 1;
            } else {
                stack.push((a.subtree, b.subtree, path.to_vec()));
            }
        }
        Ok(())
    }
}

/// Whether two files' content references name the same chunks at the same
/// places (ids compared, never bytes).
fn same_content(a: &Content, b: &Content) -> bool {
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backup dated in the future (a simulated policy pass) is `latest`
    /// only when no backup is dated now or earlier; among the rest, the
    /// newest wins.
    #[test]
    fn latest_passes_over_future_dated_backups() {
        let now = 1_000;
        let mut keys = [
            (latest_key(5_000, now), "simulated"),
            (latest_key(900, now), "real2"),
            (latest_key(100, now), "real1"),
        ];
        keys.sort();
        assert_eq!(keys.last().map(|k| k.1), Some("real2"));
        assert!(latest_key(5_000, now) < latest_key(100, now));
        // With only future-dated backups, the newest of them.
        assert!(latest_key(6_000, now) > latest_key(5_000, now));
    }

    #[test]
    fn mode_strings_are_ls_l() {
        assert_eq!(mode_string(NodeKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(NodeKind::File, 0o4644), "-rwSr--r--");
        assert_eq!(mode_string(NodeKind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(NodeKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(NodeKind::Symlink, 0o777), "lrwxrwxrwx");
    }
}
