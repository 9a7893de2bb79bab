//! The head of a remote vault, and this host's cached listings of it
//! (docs/FORMAT.md §19.4): how a cache knows with one GET that the
//! listings it holds are still the bucket's, so that an unchanged
//! re-backup makes no LIST.
//!
//! A writer (holding the vault's writer lock, so no other writer races
//! it) writes the object `head` after it changed the vault: just before it
//! puts or deletes a backup record (the head announces the record), before
//! it deletes what readers elsewhere may still use, and at the end of its
//! work ([`super::storage::Storage::publish`]). Every head's bytes differ
//! (a sequence number and a random nonce). A cache keeps the head's bytes
//! beside its listings: a GET of `head` that returns the same bytes means
//! no writer changed the vault since, so the listings are current; other
//! bytes, or no head (a vault last written by an older cbrfs), and a
//! prefix is listed again.
//!
//! What a cached listing may lack is bounded by this order: a writer
//! killed before its head leaves objects no head covers, and those are
//! only packs and indexes no record uses yet (the record always comes
//! after a head announcing it). A listing made under a head that does not
//! show the records the head announces (the listing lagged, or the writer
//! died between its head and its record) is used but not kept.

use super::storage::ObjectInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The head object's name in the vault.
pub const HEAD: &str = "head";
/// The head's `format`.
pub const HEAD_FORMAT: u32 = 1;
/// Largest head accepted (one announces at most a few records' names).
pub const HEAD_LIMIT: usize = 64 * 1024;
/// This host's cached listings, in the vault's local directory.
pub const LISTINGS: &str = "listings.json";

/// The head object (JSON).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// [`HEAD_FORMAT`].
    pub format: u32,
    /// One more than the head it replaced (for people: caches compare
    /// the whole bytes).
    pub seq: u64,
    /// 16 random hex digits: no two heads are alike, even from two
    /// histories of the same prefix.
    pub nonce: String,
    /// Objects put right after this head (a backup record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    /// Objects deleted right after this head (a backup record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

impl Head {
    /// A head from its bytes; None for anything else (bytes of another
    /// format, damage, an oversized object): then nothing is cached.
    pub fn parse(bytes: &[u8]) -> Option<Head> {
        if bytes.len() > HEAD_LIMIT {
            return None;
        }
        let h: Head = serde_json::from_slice(bytes).ok()?;
        (h.format == HEAD_FORMAT).then_some(h)
    }

    /// The head that follows `prev` (None: the vault's first), announcing
    /// `added` and `removed`.
    pub fn next(prev: Option<&Head>, added: &[&str], removed: &[&str]) -> Head {
        let mut nonce = [0u8; 8];
        // A nonce that failed to be random is still a new head for this
        // host (the sequence number moved on).
        let _ = getrandom::getrandom(&mut nonce);
        Head {
            format: HEAD_FORMAT,
            seq: prev.map_or(1, |p| p.seq.saturating_add(1)),
            nonce: crate::fsutil::hex(&nonce),
            added: added.iter().map(|s| s.to_string()).collect(),
            removed: removed.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings and numbers always encodes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// True if `listed`, a listing of `prefix` made under this head,
    /// shows what the head announces there: every object added, none
    /// removed. A listing that does not is not kept.
    pub fn shown_by(&self, prefix: &str, listed: &[ObjectInfo]) -> bool {
        let has = |n: &str| listed.iter().any(|o| o.name == n);
        self.added
            .iter()
            .filter(|n| n.starts_with(prefix))
            .all(|n| has(n))
            && !self
                .removed
                .iter()
                .filter(|n| n.starts_with(prefix))
                .any(|n| has(n))
    }
}

/// Listings by prefix, current under one head (the `listings.json` file).
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct Listings {
    /// The head's bytes (a head is JSON text) under which these listings
    /// are current; None: none are.
    pub head: Option<String>,
    /// Set before this host's first change to the vault and cleared when
    /// its head is written: a file left dirty (a writer killed) is not
    /// trusted.
    pub dirty: bool,
    /// Prefix → names and sizes, sorted by name.
    pub lists: BTreeMap<String, Vec<(String, u64)>>,
}

impl Listings {
    /// True if these listings are current under the head of bytes `head`.
    pub fn current_under(&self, head: &[u8]) -> bool {
        self.head.as_deref().map(str::as_bytes) == Some(head)
    }

    /// The listing of `prefix`, if kept.
    pub fn get(&self, prefix: &str) -> Option<Vec<ObjectInfo>> {
        self.lists.get(prefix).map(|l| {
            l.iter()
                .map(|(name, size)| ObjectInfo {
                    name: name.clone(),
                    size: *size,
                })
                .collect()
        })
    }

    /// Keep `listed` as the listing of `prefix`.
    pub fn insert(&mut self, prefix: &str, listed: &[ObjectInfo]) {
        let mut l: Vec<(String, u64)> = listed.iter().map(|o| (o.name.clone(), o.size)).collect();
        l.sort();
        self.lists.insert(prefix.to_string(), l);
    }

    /// Roll the listings forward: this host put `name` with `size` bytes
    /// (Some), or deleted it (None).
    pub fn changed(&mut self, name: &str, size: Option<u64>) {
        for (prefix, l) in self.lists.iter_mut() {
            if !name.starts_with(prefix.as_str()) {
                continue;
            }
            match l.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
                Ok(i) => match size {
                    Some(s) => l[i].1 = s,
                    None => {
                        l.remove(i);
                    }
                },
                Err(i) => {
                    if let Some(s) = size {
                        l.insert(i, (name.to_string(), s));
                    }
                }
            }
        }
    }

    /// The size of `name` in a kept listing, if one holds it.
    pub fn size_of(&self, name: &str) -> Option<u64> {
        self.lists
            .iter()
            .filter(|(p, _)| name.starts_with(p.as_str()))
            .find_map(|(_, l)| {
                l.binary_search_by(|(n, _)| n.as_str().cmp(name))
                    .ok()
                    .map(|i| l[i].1)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(names: &[&str]) -> Vec<ObjectInfo> {
        names
            .iter()
            .map(|n| ObjectInfo {
                name: n.to_string(),
                size: 1,
            })
            .collect()
    }

    #[test]
    fn heads_differ_and_parse_back() {
        let a = Head::next(None, &["backups/b.bk"], &[]);
        let b = Head::next(Some(&a), &[], &[]);
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_ne!(a.encode(), b.encode());
        assert_eq!(Head::parse(&a.encode()), Some(a.clone()));
        assert_eq!(
            Head::parse(b"{\"format\": 2, \"seq\": 1, \"nonce\": \"\"}"),
            None
        );
        assert_eq!(Head::parse(b"not json"), None);
        assert_eq!(Head::parse(&vec![b' '; HEAD_LIMIT + 1]), None);
        // What it announces must show in a listing made under it.
        assert!(a.shown_by("backups/", &info(&["backups/b.bk"])));
        assert!(!a.shown_by("backups/", &info(&["backups/a.bk"])));
        assert!(a.shown_by("index/", &info(&[])));
        let gone = Head::next(Some(&b), &[], &["backups/b.bk"]);
        assert!(!gone.shown_by("backups/", &info(&["backups/b.bk"])));
        assert!(gone.shown_by("backups/", &info(&[])));
    }

    #[test]
    fn listings_roll_forward() {
        let mut l = Listings::default();
        l.insert("index/", &info(&["index/b.idx", "index/a.idx"]));
        l.changed("index/c.idx", Some(7));
        l.changed("index/a.idx", None);
        l.changed("packs/00/x.pack", Some(3));
        let names: Vec<String> = l
            .get("index/")
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["index/b.idx", "index/c.idx"]);
        assert_eq!(l.size_of("index/c.idx"), Some(7));
        assert_eq!(l.size_of("packs/00/x.pack"), None);
        assert!(l.get("packs/").is_none());
    }
}
