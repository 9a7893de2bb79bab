//! The storage interface: the one way the store reaches a vault's files.
//!
//! A vault is a set of named objects: `/`-separated names relative to the
//! vault's root, such as `packs/ab/<hex>.pack`, `index/<hex>.idx`,
//! `backups/<name>.bk`, `vault.json` and `key`. An implementation keeps
//! them somewhere: a local directory ([`super::local::LocalDir`]) or an
//! object store. The store asks only for what an object store can give
//! (names in, bytes out), so that one store and one engine serve every
//! backend; a backend that can do better (the local directory maps packs
//! into memory) says so through a method with a default.
//!
//! # What an implementation must promise
//!
//! - **Atomic publish.** After [`Storage::put`] (or [`Storage::put_file`])
//!   returns, the object holds all of `data`, durably; before, a reader sees
//!   the old object or none, never a prefix or a mix. A failed or killed put
//!   leaves no visible object (at worst a temporary one that
//!   [`Storage::remove_stale_temps`] removes). Write ordering — packs before
//!   the index naming them, indexes before the backup record — rests on
//!   this: each object the store publishes is complete before the next one
//!   that refers to it.
//! - **Verified writes.** What `put` published reads back as `data`: the
//!   local directory re-reads the file before renaming it into place; an
//!   object store checks a checksum of the upload.
//! - **Read-after-write for a name.** A `get` or `get_range` of a name whose
//!   `put` returned sees those bytes (objects are never rewritten with other
//!   bytes: packs and indexes are named by their content).
//! - **Listing may lag.** [`Storage::list`] may miss an object published
//!   moments ago, and may still show one deleted moments ago (an object
//!   store's listing is eventually consistent). Readers therefore treat a
//!   listed object that is gone as stale, not as damage, and re-list before
//!   calling a blob lost.
//! - **Deletes are idempotent and durable.** Deleting an absent object is
//!   not an error; once `delete` returns, the object stays gone. A reader
//!   that already holds an object's bytes (a mapped pack) keeps them.
//! - **Absence is told apart.** `get` returns `None` for an absent object;
//!   `get_range` and `map` fail with an error for which [`is_absent`] is true,
//!   so that a reader can re-list instead of reporting damage.
//! - **No link is followed.** A local backend opens every object without
//!   following a symbolic link and refuses what is not a regular file (a
//!   FIFO, a device), naming it; the store is input (docs/SECURITY.md).
//!
//! Locks (`backup.lock`) are not vault data and stay on the local host; a
//! vault in a bucket also has a writer lease there, the object `lease`
//! (store/lease.rs).

use crate::error::{Error, Result};
use std::fmt;
use std::fs::File;

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectInfo {
    /// Its name, relative to the vault's root.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Where a vault's objects are kept. See the module docs for what every
/// implementation promises.
pub trait Storage: Send + Sync + fmt::Debug {
    /// For messages: a directory path or s3://bucket/prefix.
    fn describe(&self) -> String;
    /// Publish `data` under `name` so that any reader sees all of it or nothing (never a prefix).
    fn put(&self, name: &str, data: &[u8]) -> Result<()>;
    /// Publish the bytes of a finished local file (packs: avoids holding them in memory).
    fn put_file(&self, name: &str, file: &File, len: u64) -> Result<()>;
    /// The whole object, or None when absent.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Exactly `len` bytes at `offset`; an error naming the object when absent or shorter.
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Every object whose name starts with `prefix` (e.g. "index/"), with sizes. May miss objects published moments ago on an object store.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Remove; absent is not an error.
    fn delete(&self, name: &str) -> Result<()>;

    /// The object mapped into memory, for a backend that can (a local
    /// file): `Ok(None)` means "cannot map, use `get` or `get_range`". An
    /// absent object is an error for which [`is_absent`] is true. The
    /// caller promises what the store's objects promise: they are never
    /// modified in place, so the mapping stays valid (an unlink keeps it).
    fn map(&self, name: &str) -> Result<Option<memmap2::Mmap>> {
        let _ = name;
        Ok(None)
    }

    /// Remove the temporary objects a killed writer left (a local
    /// directory's `.tmp-*` files); returns how many. Call only while
    /// holding the vault's writer lock.
    fn remove_stale_temps(&self) -> Result<usize> {
        Ok(0)
    }

    /// [`Storage::put`] of an object that will be read whole and often (a
    /// pack of trees and chunk lists only, which its writer knows even
    /// where the pack's table is sealed): a caching backend keeps a local
    /// copy of the bytes it just published, so that the first read after
    /// a backup (its record, `backup show`, the next browse) does not
    /// download them again. The copy is verified on every read like any
    /// cached pack. Others: a plain `put`.
    fn put_kept(&self, name: &str, data: &[u8]) -> Result<()> {
        self.put(name, data)
    }

    /// A hint that object `name` will be read whole and often (a pack of
    /// trees and chunk lists): a caching backend keeps a whole local copy,
    /// so that [`Storage::map`] maps it and browsing never waits on the
    /// network again. Others do nothing.
    fn keep_whole(&self, name: &str) -> Result<()> {
        let _ = name;
        Ok(())
    }

    /// Drop any local copy of object `name` (whole or ranges) because its
    /// bytes failed verification; true if there was one, so that the
    /// caller reads again from the source instead of reporting damage.
    fn forget_cached(&self, name: &str) -> bool {
        let _ = name;
        false
    }

    /// Requests and bytes spent on a billed remote so far by this process
    /// (an S3 bucket), or None for a backend that bills nothing (a local
    /// directory): no figures rather than zeros that would mean "free".
    fn requests(&self) -> Option<super::s3::S3Counters> {
        None
    }

    /// A writer (holding the vault's writer lock) has made changes that
    /// readers elsewhere must see before it deletes what they may still
    /// use, or at the end of its work: a caching backend publishes the
    /// vault's head (docs/FORMAT.md §19.4), so that other hosts' cached
    /// listings are known stale. Others do nothing.
    fn publish(&self) -> Result<()> {
        Ok(())
    }

    /// A hint that `bytes` of object `name` (a data pack) are about to be
    /// read by range: a caching backend fetches the whole object once
    /// when that is most of it (docs/FORMAT.md §19.2). Never an error:
    /// the reads themselves report what is wrong.
    fn will_read(&self, name: &str, bytes: u64) {
        let _ = (name, bytes);
    }

    /// A hint that a reader which reads each data pack's bytes once, in
    /// order (a restore), starts (`on`) or ends: while one runs, a caching
    /// backend holds the data ranges it fetches in bounded memory instead
    /// of writing them into its cache on disk (docs/FORMAT.md §19.2).
    /// Calls pair up ([`super::Repo::reading_once`]). Others do nothing.
    fn reading_once(&self, on: bool) {
        let _ = on;
    }

    /// The whole object if it has at most `limit` bytes, None when absent;
    /// a larger one is an error of kind Corrupt naming it. For the small
    /// objects at a bucket's root that anyone who can write to the bucket
    /// may replace (`head`, `lease`): an object store reads no more than
    /// `limit` + 1 bytes of it, so a hostile multi-gigabyte object costs
    /// no memory (docs/SECURITY.md). This default reads it whole first: a
    /// backend of the host's own files may keep it; a wrapper or a remote
    /// backend must not.
    /// From now on in this process, every [`Storage::list`] asks the
    /// source, never a listing kept under an unchanged head: for prune,
    /// which deletes what no index it sees names. A stale or replayed
    /// `head` (anyone who can write to the bucket can put an old one back)
    /// would otherwise hide a newer backup's index and record from it, and
    /// that backup's packs would be deleted as orphans. Others do nothing.
    fn distrust_kept_listings(&self) {}

    fn get_at_most(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        at_most(self.get(name)?, name, limit, || self.describe())
    }
}

/// `got` (object `name`, read whole) if it has at most `limit` bytes,
/// else the [`too_big`] error naming it in `at()`: the default of
/// [`Storage::get_at_most`].
pub fn at_most(
    got: Option<Vec<u8>>,
    name: &str,
    limit: u64,
    at: impl FnOnce() -> String,
) -> Result<Option<Vec<u8>>> {
    match got {
        Some(b) if b.len() as u64 > limit => Err(too_big(&at(), name, limit)),
        b => Ok(b),
    }
}

/// The error for object `name` of `at` (a directory or bucket) larger than
/// `limit` bytes, named as [`object_label`] names it.
pub fn too_big(at: &str, name: &str, limit: u64) -> Error {
    let sep = if at.ends_with('/') { "" } else { "/" };
    Error::corrupt(format!(
        "{at}{sep}{name} is damaged: it has more than the {limit} bytes such an object may have"
    ))
}

/// An object's bytes as a reader holds them: mapped where the backend can
/// map (a local file: no copy, pages shared with the page cache), read
/// into memory otherwise.
pub enum ObjectBytes {
    /// Mapped by [`Storage::map`].
    Mapped(memmap2::Mmap),
    /// Read by [`Storage::get`].
    Read(Vec<u8>),
}

impl std::ops::Deref for ObjectBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ObjectBytes::Mapped(m) => m,
            ObjectBytes::Read(v) => v,
        }
    }
}

/// The whole of object `name`, mapped if `storage` can map it. An absent
/// object is an error for which [`is_absent`] is true.
pub fn load(storage: &dyn Storage, name: &str) -> Result<ObjectBytes> {
    if let Some(m) = storage.map(name)? {
        return Ok(ObjectBytes::Mapped(m));
    }
    match storage.get(name)? {
        Some(v) => Ok(ObjectBytes::Read(v)),
        None => Err(absent(storage, name)),
    }
}

/// The error for an absent object: kind "not found" in the OS sense, so
/// that [`is_absent`] tells it from damage.
pub fn absent(storage: &dyn Storage, name: &str) -> Error {
    Error::io(
        format!("open {}", object_label(storage, name)),
        std::io::Error::from(std::io::ErrorKind::NotFound),
    )
}

/// True if `e` says an object is absent (it vanished or never was).
pub fn is_absent(e: &Error) -> bool {
    e.os_error().map(|o| o.kind()) == Some(std::io::ErrorKind::NotFound)
}

/// How messages name object `name` of `storage`: its path for a local
/// directory, its URL for an object store.
pub fn object_label(storage: &dyn Storage, name: &str) -> String {
    let base = storage.describe();
    if base.ends_with('/') {
        format!("{base}{name}")
    } else {
        format!("{base}/{name}")
    }
}

/// Refuse a name that is not a plain relative object name: `/`-separated
/// components of `[A-Za-z0-9._-]`, none empty and none starting with `.`
/// (so no `..`, no hidden temporary files, no absolute path). Names come
/// from the store itself (hashes, validated backup names), so a refusal is
/// a bug or a hostile listing, never user input to correct.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.split('/').all(|c| {
            !c.is_empty()
                && !c.starts_with('.')
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "store object name {} is not a relative name of [A-Za-z0-9._-] components",
            crate::quote::quote(name)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_plain_relative_names() {
        for good in ["key", "vault.json", "index/ab.idx", "packs/ab/abcd.pack"] {
            check_name(good).unwrap();
        }
        for bad in [
            "",
            "/key",
            "index/",
            "a//b",
            "../key",
            "index/../key",
            "index/.tmp-1",
            "a b",
            "a\nb",
        ] {
            let e = check_name(bad).unwrap_err();
            assert!(e.to_string().contains("store object name"), "{bad:?}: {e}");
        }
    }
}
