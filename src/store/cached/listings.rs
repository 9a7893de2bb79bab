//! This host's view of what the remote holds: the remote's `head`, the
//! listings kept current under it (`listings.json`, store/listing.rs),
//! the head this process owes after changing the remote, and the local
//! whole copies brought in line with a listing. The storage operations
//! (mod.rs) ask here whether a listing must go to the remote.

use super::CachedStorage;
use crate::error::Result;
use crate::store::listing::{Head, Listings, HEAD, HEAD_LIMIT, LISTINGS};
use crate::store::storage::{ObjectInfo, Storage};
use std::time::Instant;

/// A head as read from the remote: its bytes and what they say.
pub(super) type RemoteHead = (Vec<u8>, Head);

/// This process's view of the remote's listings.
#[derive(Default)]
pub(super) struct ListState {
    /// The listings and the head they are current under.
    pub(super) l: Listings,
    /// `l` was read from `listings.json` once.
    pub(super) loaded: bool,
    /// This process changed the remote since it last wrote the head: a
    /// head is owed (and `listings.json` says dirty).
    pub(super) changed: bool,
    /// [`CachedStorage::size_of`] listed once in this process already.
    pub(super) sized: bool,
    /// Every listing is asked of the remote ([`Storage::distrust_kept_listings`]).
    pub(super) fresh: bool,
    /// A change failed: the remote may be unreachable, and a head that
    /// [`Drop`] would owe is not worth a second round of retries (what
    /// the failed work left is unreferenced; `listings.json` stays dirty).
    pub(super) failed: bool,
    /// The remote's head as last read or written by this process, and
    /// when ([`CachedStorage::recent_head`]).
    pub(super) seen: Option<(Instant, Option<RemoteHead>)>,
}

impl CachedStorage {
    /// `listings.json`, if there is a readable one.
    pub(super) fn read_listings(&self) -> Option<Listings> {
        let d = self.home.get(LISTINGS).ok()??;
        serde_json::from_slice(&d).ok()
    }

    /// Keep `l` as `listings.json` (a cache: a failure is logged).
    pub(super) fn save_listings(&self, l: &Listings) {
        if let Ok(j) = serde_json::to_vec(l) {
            self.remember(&self.home, LISTINGS, &j);
        }
    }

    /// The remote's head: its bytes and what they say; None when there is
    /// none or it is not one this version reads (nothing is then cached).
    pub(super) fn remote_head(&self) -> Result<Option<RemoteHead>> {
        // Never more than a head's bytes: anyone who can write to the
        // bucket may put gigabytes under this name, read by every command.
        // An oversized head is no head (nothing is cached).
        let bytes = match self.remote.get_at_most(HEAD, HEAD_LIMIT as u64) {
            Err(e) if e.kind() == crate::error::Kind::Corrupt => {
                log::warn!("{e}");
                None
            }
            r => r?,
        };
        let head = bytes.and_then(|b| Head::parse(&b).map(|h| (b, h)));
        self.listing.lock().seen = Some((Instant::now(), head.clone()));
        Ok(head)
    }

    /// The remote's head for a listing: the one this process read or
    /// wrote less than its head TTL ago, else read now. A command lists
    /// several prefixes within a second, and each asked for the head (11
    /// GETs of it in an unchanged re-backup, measured); a long-lived
    /// reader (a mount) sees another host's backup at most a TTL later.
    /// Changing the remote asks afresh ([`CachedStorage::before_change`]
    /// calls [`CachedStorage::remote_head`]); so does a process told to
    /// distrust kept listings.
    pub(super) fn recent_head(&self) -> Result<Option<RemoteHead>> {
        {
            let st = self.listing.lock();
            if let Some((at, head)) = &st.seen {
                if !st.fresh && at.elapsed() < self.head_ttl {
                    return Ok(head.clone());
                }
            }
        }
        self.remote_head()
    }

    /// Make `st` the listings current under the remote head `head`: kept
    /// if they are, else those another process of this host saved under
    /// it, else none.
    pub(super) fn align(&self, st: &mut ListState, head: Option<&[u8]>) {
        if !st.loaded {
            st.loaded = true;
            st.l = self
                .read_listings()
                .filter(|l| !l.dirty)
                .unwrap_or_default();
        }
        let Some(head) = head else {
            // No head (yet): listings made now are kept only in memory,
            // never served; the head this process may write makes them
            // current (it holds the writer lock).
            if st.l.head.is_some() {
                st.l = Listings {
                    dirty: st.changed,
                    ..Listings::default()
                };
            }
            return;
        };
        if st.l.current_under(head) {
            return;
        }
        if let Some(f) = self.read_listings() {
            if !f.dirty && f.current_under(head) {
                st.l = f;
                st.l.dirty = st.changed;
                return;
            }
        }
        st.l = Listings {
            head: String::from_utf8(head.to_vec()).ok(),
            dirty: st.changed,
            ..Listings::default()
        };
    }

    /// Before this process's first change to the remote since its last
    /// head: check that its listings are the remote's (one GET; under the
    /// writer lock nobody else changes them after), and mark
    /// `listings.json` dirty, so that a kill before the head leaves
    /// listings nobody trusts.
    pub(super) fn before_change(&self, name: &str) {
        // Objects at the vault's root (`vault.json`, `key`, the writer's
        // `lease`) are in no listing the store asks for (they are read by
        // name): changing them owes no head.
        if !name.contains('/') || self.listing.lock().changed {
            return;
        }
        // Unknown (a failed GET): no listing is kept.
        let head = self.remote_head().ok().flatten();
        let mut st = self.listing.lock();
        self.align(&mut st, head.as_ref().map(|h| h.0.as_slice()));
        st.changed = true;
        st.l.dirty = true;
        self.save_listings(&st.l);
    }

    /// Write the remote's next head, announcing `added` and `removed`.
    pub(super) fn write_head(&self, added: &[&str], removed: &[&str]) -> Result<()> {
        let prev = self
            .listing
            .lock()
            .l
            .head
            .as_deref()
            .and_then(|t| Head::parse(t.as_bytes()));
        let bytes = Head::next(prev.as_ref(), added, removed).encode();
        self.failing(self.remote.put(HEAD, &bytes))?;
        let mut st = self.listing.lock();
        st.seen = Some((
            Instant::now(),
            Head::parse(&bytes).map(|h| (bytes.clone(), h)),
        ));
        st.l.head = String::from_utf8(bytes).ok();
        Ok(())
    }

    /// `r`, noting a failure (see [`ListState::failed`]).
    pub(super) fn failing<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.listing.lock().failed = true;
        }
        r
    }

    /// The head covering this process's changes is written: its listings
    /// are current and kept.
    pub(super) fn settle(&self) {
        let mut st = self.listing.lock();
        st.changed = false;
        st.l.dirty = false;
        self.save_listings(&st.l);
    }

    /// The size of object `name` from a listing (kept, or asked for).
    pub(super) fn size_of(&self, name: &str) -> Option<u64> {
        {
            let mut st = self.listing.lock();
            if let Some(s) = st.l.size_of(name) {
                return Some(s);
            }
            // At most one listing per process for this (a vault without a
            // head keeps none: it would be one LIST per file read).
            if st.sized {
                return None;
            }
            st.sized = true;
        }
        let (dir, _) = name.rsplit_once('/')?;
        let prefix = format!("{}/", dir.split('/').next()?);
        self.list(&prefix)
            .ok()?
            .into_iter()
            .find(|o| o.name == name)
            .map(|o| o.size)
    }

    /// Bring the local copies under `prefix` in line with listing
    /// `listed` of the remote: drop copies of objects no longer there (a
    /// key slot removed on another host is no longer offered), and
    /// fetch backup records not yet here (the mount finds backups by their
    /// local file). A copy dropped because the listing lagged is fetched
    /// again when read.
    pub(super) fn sync(&self, prefix: &str, listed: &[ObjectInfo]) {
        let Ok(local) = self.whole.list(prefix) else {
            return;
        };
        let remote: std::collections::HashSet<&str> =
            listed.iter().map(|o| o.name.as_str()).collect();
        let here: std::collections::HashSet<&str> = local.iter().map(|o| o.name.as_str()).collect();
        for o in &local {
            if !remote.contains(o.name.as_str()) {
                let _ = self.whole.delete(&o.name);
            }
        }
        if prefix == "backups/" {
            for o in listed {
                if !here.contains(o.name.as_str()) {
                    match self.remote.get(&o.name) {
                        Ok(Some(d)) => self.remember(&self.whole, &o.name, &d),
                        Ok(None) => {}
                        Err(e) => log::warn!("cache: fetch {}: {e}", o.name),
                    }
                }
            }
        }
    }
}
