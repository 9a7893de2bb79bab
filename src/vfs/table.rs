//! The inode table: inodes allocated on lookup and freed when the kernel
//! forgets them, one inode per hard-link group, and the hasher of the
//! numbers this module makes itself.

use super::{Entry, LinkKey, Name, VResult, Vfs, ROOT_INO};
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

pub(super) struct Inode {
    pub(super) entry: Entry,
    pub(super) parent: u64,
    pub(super) nlookup: u64,
    pub(super) keys: Vec<(u64, Name)>,
    pub(super) link: Option<LinkKey>,
    /// True once the file's content was handed to the kernel's page cache
    /// by [`Vfs::prefetch`] (a later open need not send it again).
    pub(super) stored: bool,
}

#[derive(Default)]
pub(super) struct Table {
    pub(super) next: u64,
    pub(super) by_ino: NumMap<u64, Inode>,
    /// Per parent inode, its children's names that have inodes.
    pub(super) by_key: NumMap<u64, HashMap<Name, u64>>,
    pub(super) links: HashMap<LinkKey, u64>,
}

impl Vfs {
    pub(super) fn entry(&self, ino: u64) -> VResult<(Entry, u64)> {
        let t = self.table.read();
        let i = t.by_ino.get(&ino).ok_or(libc::ENOENT)?;
        Ok((i.entry.clone(), i.parent))
    }

    /// Find or allocate the inode of `name` in `parent`; counts a lookup
    /// when `count` (lookup and readdirplus do; readdir does not).
    pub(super) fn intern(
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

    pub(super) fn forget_locked(t: &mut Table, ino: u64, n: u64) {
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

    /// Count one kernel lookup of `ino` (an entry sent by readdirplus).
    pub fn add_lookup(&self, ino: u64) {
        if let Some(i) = self.table.write().by_ino.get_mut(&ino) {
            i.nlookup += 1;
        }
    }
}
