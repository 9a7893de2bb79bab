//! The inode table: inodes allocated on lookup and freed when the kernel
//! forgets them, one inode per hard-link group, and the hasher of the
//! numbers this module makes itself.
//!
//! The kernel may hold millions of inodes (every entry a `find` or `ls`
//! listed, until memory pressure makes it forget them), so an inode costs
//! little: its entry (32 bytes: where its node is, not the node), its
//! parent, its lookup count and two flags, 48 bytes, in one map by
//! number; a node of a backup is found by its parent's number and its
//! position (24 bytes in a second map), not by its name, which the tree
//! holds. With the maps' free slots (a hash table grows by doubling),
//! about 125 bytes per inode, at most 190 (issue 17: at most 200; the
//! size test below). A file (not a directory, not a hard link) is found
//! by its tree and position instead, whatever its parent: every backup
//! that shares the tree shares the inode, so walking ten backups of an
//! unchanged directory holds its files once ([`Key::Tree`]).
//! The few vaults, backups and `latest` links are found by name; hard
//! links' other names and link keys are in side tables.

use super::{Entry, LinkKey, VResult, Vfs, ROOT_INO};
use std::collections::HashMap;

/// Hashes the numbers this module makes itself (inode numbers, file
/// handles, backup context ids; keyed blob ids) with one
/// multiply per word: SipHash's resistance to chosen keys buys nothing for
/// keys no one else chooses, and it was a fifth of the daemon's
/// instructions in `find`. Names, which come from backups, keep SipHash.
#[derive(Default, Clone, Copy)]
pub(super) struct NumHasher(u64);

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

pub(super) type NumMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<NumHasher>>;

/// An inode.
pub(super) struct Inode {
    pub(super) entry: Entry,
    pub(super) parent: u64,
    /// Lookups the kernel holds. 32 bits (saturating), which keeps the
    /// inode in 48 bytes: the kernel forgets an inode's whole count at
    /// once when it drops it, and 4 billion lookups of one inode without
    /// that take days of requests (an undercount would only end in
    /// ENOENT for that inode).
    pub(super) nlookup: u32,
    /// True once the file's content was handed to the kernel's page cache
    /// by [`Vfs::prefetch`] (a later open need not send it again).
    pub(super) stored: bool,
    /// A hard link's inode: its link key and other names are in
    /// [`Table::linked`].
    pub(super) linked: bool,
}

/// How a directory finds a child's inode: by position (a node of a
/// backup) or by name (a vault, a backup, `latest`); or, whatever the
/// directory, by its tree and position (a file of a backup's tree).
#[derive(Clone, Copy)]
pub(super) enum Key<'a> {
    At(u32),
    Name(&'a [u8]),
    /// A node that is not a directory nor a hard link, by its tree (the
    /// address of the tree's shared id, [`tree_key`]) and position: one
    /// inode for every backup whose tree this is. A directory unchanged
    /// across ten backups is one tree blob, so a `find` through the ten
    /// makes its files' inodes once, not ten times (issue 17: the
    /// daemon's memory flat across backups; the kernel's too, one inode
    /// with ten names, as a hard link is). A directory cannot be shared
    /// (the kernel keeps one name per directory inode and would move it
    /// from backup to backup), nor a hard link (its other names are
    /// those of its own backup).
    Tree(u64, u32),
}

/// The key of tree `id` in [`Table::at`]: its id's address (the id is
/// kept while an inode holds it, and no other tree has that address
/// meanwhile), with the top bit set, which no inode number has (they count
/// up from 2) and no user-space address has (at most 57 bits), so that
/// trees' keys never meet parents' keys.
pub(super) fn tree_key(id: &std::sync::Arc<crate::store::BlobId>) -> u64 {
    std::sync::Arc::as_ptr(id) as usize as u64 | 1 << 63
}

#[derive(Default)]
pub(super) struct Table {
    pub(super) next: u64,
    pub(super) by_ino: NumMap<u64, Inode>,
    /// Nodes of backups by (parent inode, position), or by (tree key,
    /// position) for those found by [`Key::Tree`].
    pub(super) at: NumMap<(u64, u32), u64>,
    /// Vaults, backups and `latest` by parent inode and name.
    pub(super) named: NumMap<u64, HashMap<Box<[u8]>, u64>>,
    pub(super) links: HashMap<LinkKey, u64>,
    /// Hard-linked inodes: their link key and their other names.
    pub(super) linked: NumMap<u64, (LinkKey, Vec<(u64, u32)>)>,
}

impl Table {
    pub(super) fn find(&self, parent: u64, key: Key) -> Option<u64> {
        match key {
            Key::At(i) => self.at.get(&(parent, i)).copied(),
            Key::Tree(tree, i) => self.at.get(&(tree, i)).copied(),
            Key::Name(n) => self.named.get(&parent)?.get(n).copied(),
        }
    }

    fn insert_key(&mut self, parent: u64, key: Key, ino: u64) {
        match key {
            Key::At(i) => {
                self.at.insert((parent, i), ino);
            }
            Key::Tree(tree, i) => {
                self.at.insert((tree, i), ino);
            }
            Key::Name(n) => {
                self.named.entry(parent).or_default().insert(n.into(), ino);
            }
        }
    }

    fn remove_key(&mut self, parent: u64, key: Key) {
        match key {
            Key::At(i) => {
                self.at.remove(&(parent, i));
            }
            Key::Tree(tree, i) => {
                self.at.remove(&(tree, i));
            }
            Key::Name(n) => {
                if let Some(m) = self.named.get_mut(&parent) {
                    m.remove(n);
                    if m.is_empty() {
                        self.named.remove(&parent);
                    }
                }
            }
        }
    }
}

/// Give a table's free slots back once it is less than an eighth full.
fn shrink<K: Eq + std::hash::Hash, V>(m: &mut NumMap<K, V>) {
    if m.capacity() > 4096 && m.len() < m.capacity() / 8 {
        m.shrink_to(m.len() * 2);
    }
}

impl Vfs {
    pub(super) fn entry(&self, ino: u64) -> VResult<(Entry, u64)> {
        let t = self.table.read();
        let i = t.by_ino.get(&ino).ok_or(libc::ENOENT)?;
        Ok((i.entry.clone(), i.parent))
    }

    /// Find or allocate the inode of child `entry` of `parent` (with
    /// hard-link key `link`); counts a lookup when `count` (lookup and
    /// readdirplus do; readdir does not).
    pub(super) fn intern(
        &self,
        parent: u64,
        entry: Entry,
        link: Option<LinkKey>,
        count: bool,
    ) -> u64 {
        let Some(key) = entry.key() else {
            return ROOT_INO;
        };
        let mut t = self.table.write();
        let ino = match t.find(parent, key) {
            Some(ino) => ino,
            None => match link.and_then(|l| t.links.get(&l).copied()) {
                // Another name of a hard-linked inode already known (links
                // are nodes of a backup: found by position).
                Some(ino) => {
                    if let (Key::At(i), Some(l)) = (key, t.linked.get_mut(&ino)) {
                        l.1.push((parent, i));
                    }
                    t.insert_key(parent, key, ino);
                    ino
                }
                None => {
                    let ino = t.next;
                    t.next += 1;
                    t.insert_key(parent, key, ino);
                    if let Some(l) = link {
                        t.links.insert(l, ino);
                        t.linked.insert(ino, (l, Vec::new()));
                    }
                    t.by_ino.insert(
                        ino,
                        Inode {
                            entry,
                            parent,
                            nlookup: 0,
                            stored: false,
                            linked: link.is_some(),
                        },
                    );
                    ino
                }
            },
        };
        if count {
            if let Some(i) = t.by_ino.get_mut(&ino) {
                i.nlookup = i.nlookup.saturating_add(1);
            }
        }
        ino
    }

    /// The kernel forgot `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        Self::forget_locked(&mut self.table.write(), ino, n);
    }

    pub(super) fn forget_locked(t: &mut Table, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let gone = match t.by_ino.get_mut(&ino) {
            Some(i) => {
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                i.nlookup = i.nlookup.saturating_sub(n);
                i.nlookup == 0
            }
            None => false,
        };
        if !gone {
            return;
        }
        let Some(i) = t.by_ino.remove(&ino) else {
            return;
        };
        if let Some(key) = i.entry.key() {
            t.remove_key(i.parent, key);
        }
        if i.linked {
            if let Some((l, others)) = t.linked.remove(&ino) {
                t.links.remove(&l);
                for (p, at) in others {
                    t.remove_key(p, Key::At(at));
                }
            }
        }
        // The kernel dropped most of what it held (memory pressure): the
        // tables give their free slots back, so that memory follows the
        // inodes held rather than their peak. Only after an eightfold
        // drop, to twice what is left: amortised, each forget pays O(1).
        shrink(&mut t.by_ino);
        shrink(&mut t.at);
    }

    /// Number of inodes held (for tests and memory checks).
    pub fn inode_count(&self) -> usize {
        self.table.read().by_ino.len()
    }

    /// Count one kernel lookup of `ino` (an entry sent by readdirplus).
    pub fn add_lookup(&self, ino: u64) {
        if let Some(i) = self.table.write().by_ino.get_mut(&ino) {
            i.nlookup = i.nlookup.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an inode the kernel holds costs (issue 17: at most 200 bytes):
    /// its slot in `by_ino` (number and inode) and in `at` (parent,
    /// position, number), each divided by the worst fill of a hash table
    /// that grows by doubling (7/16, just after it grew), plus one control
    /// byte per slot of each. The entry, as large as its largest kind,
    /// stays within 32 bytes, the inode within 48.
    #[test]
    fn an_inode_costs_at_most_200_bytes() {
        use std::mem::size_of;
        assert!(
            size_of::<Entry>() <= 32,
            "Entry is {} bytes",
            size_of::<Entry>()
        );
        assert!(
            size_of::<Inode>() <= 48,
            "Inode is {} bytes",
            size_of::<Inode>()
        );
        let by_ino = size_of::<(u64, Inode)>() + 1;
        let at = size_of::<((u64, u32), u64)>() + 1;
        let worst = (by_ino + at) * 16 / 7;
        assert!(worst <= 200, "an inode costs up to {worst} bytes");
    }

    /// A table the kernel mostly emptied gives its slots back; one still
    /// well used keeps them (no rehash at every forget).
    #[test]
    fn tables_shrink_after_the_kernel_forgets() {
        let mut m: NumMap<u64, u64> = (0..100_000).map(|i| (i, i)).collect();
        let full = m.capacity();
        for i in 0..50_000 {
            m.remove(&i);
            shrink(&mut m);
        }
        assert_eq!(m.capacity(), full, "half full: kept");
        for i in 50_000..99_000 {
            m.remove(&i);
            shrink(&mut m);
        }
        assert!(
            m.capacity() < full / 8,
            "{} slots for {}",
            m.capacity(),
            m.len()
        );
        assert_eq!(m.len(), 1000);
    }
}
