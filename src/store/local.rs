//! [`LocalDir`]: a vault's objects as files under one local directory, the
//! layout cbrfs has always used (`<root>/packs/ab/<hex>.pack`, ...).
//!
//! Publishing is the durable atomic replace of [`crate::fsutil`]: a
//! temporary file in the final directory, written, fsynced, read back and
//! compared, renamed into place, and the directory fsynced. Reading opens
//! files `O_NOFOLLOW|O_NONBLOCK` and uses them only if `fstat` says they are
//! regular ([`crate::fsutil::open_store_file`]); every directory on the way
//! from the root is checked to be a real directory, not a symlink to one.
//! Packs and indexes are memory-mapped ([`Storage::map`]): reading a blob
//! is a copy out of the page cache, as before the storage interface.

use super::storage::{self, ObjectInfo, Storage};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, TempFile};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A vault's objects in a local directory.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    /// The objects under `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> LocalDir {
        LocalDir { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of object `name`, after checking the name and that every
    /// directory from the root to the object's is a real directory (a
    /// symlink planted in place of `index/` would lead every reader into
    /// someone else's files). A missing directory is not an error here:
    /// opening the object then says "not found".
    fn path(&self, name: &str) -> Result<PathBuf> {
        storage::check_name(name)?;
        let mut dir = self.root.clone();
        let mut parts: Vec<&str> = name.split('/').collect();
        parts.pop();
        for d in std::iter::once(None).chain(parts.iter().map(Some)) {
            if let Some(part) = d {
                dir.push(part);
            }
            match fsutil::ensure_real_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(Error::io(dir.display().to_string(), e)),
            }
        }
        Ok(self.root.join(name))
    }

    /// Create the directories object `name` lives in. A directory made
    /// here is fsynced into its parent, so that the object's own entry,
    /// fsynced at publish, is reachable after a crash (a new `packs/ab/`
    /// must be durable in `packs/` before the index naming its pack).
    fn make_parents(&self, dest: &Path) -> Result<PathBuf> {
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        let mut missing = Vec::new();
        let mut d = dir.as_path();
        while d.starts_with(&self.root) && fs::symlink_metadata(d).is_err() {
            missing.push(d.to_path_buf());
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        if !missing.is_empty() {
            fsutil::create_dir_all(&dir)?;
            for m in missing.iter().rev() {
                if let Some(parent) = m.parent() {
                    fsutil::sync_dir(parent)?;
                }
            }
        }
        Ok(dir)
    }

    /// Write `fill`'s bytes to a temporary file beside `name`, check that
    /// they read back as `check` says, and rename it into place durably.
    fn publish(
        &self,
        name: &str,
        fill: impl FnOnce(&mut File) -> std::io::Result<()>,
        check: impl FnOnce(File) -> std::io::Result<bool>,
    ) -> Result<()> {
        let dest = self.path(name)?;
        let dir = self.make_parents(&dest)?;
        let mut tmp = TempFile::new_in(&dir)?;
        fill(tmp.file()).ctx(|| format!("write {}", dest.display()))?;
        // Re-read what was written before it becomes visible: an object is
        // never trusted on the word of a write(2) alone. The read comes from
        // the page cache whether or not an fsync came first, so the one
        // fsync is the commit's (a second one cost a disk flush per pack).
        let rf = File::open(tmp.path()).ctx(|| format!("re-open {}", tmp.path().display()))?;
        if !check(rf).ctx(|| format!("re-read {}", tmp.path().display()))? {
            return Err(Error::corrupt(format!(
                "{} read back differently from what was written",
                dest.display()
            )));
        }
        tmp.commit(&dest)
    }

    /// Publish `data` as `name` for a cache: a temporary file renamed into
    /// place (atomic: a reader sees the old entry, none, or all of the new
    /// one), without the fsyncs and the read-back of [`Storage::put`]. Only
    /// for copies whose every read is verified (a cache's entries: a torn
    /// one after a crash is refused there and fetched again).
    pub fn put_unsynced(&self, name: &str, data: &[u8]) -> Result<()> {
        let dest = self.path(name)?;
        let dir = self.make_parents(&dest)?;
        let mut tmp = TempFile::new_in(&dir)?;
        tmp.file()
            .write_all(data)
            .ctx(|| format!("write {}", tmp.path().display()))?;
        tmp.commit_unsynced(&dest)
    }

    /// Every `.tmp-*` file directly in `dir`, removed.
    fn remove_temps_in(dir: &Path) -> Result<usize> {
        match fsutil::ensure_real_dir(dir) {
            Ok(()) => fsutil::remove_stale_temps(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io(dir.display().to_string(), e)),
        }
    }
}

impl Storage for LocalDir {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.publish(name, |f| f.write_all(data), |f| reads_back_as(f, data))
    }

    fn put_file(&self, name: &str, file: &File, len: u64) -> Result<()> {
        let have = file
            .metadata()
            .ctx(|| format!("stat the file to publish as {name}"))?
            .len();
        if have != len {
            return Err(Error::failed(format!(
                "the file to publish as {name} has {have} bytes, expected {len}"
            )));
        }
        let sum_of = |f: &File| -> std::io::Result<(u64, u64)> {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut at = 0u64;
            while at < len {
                let want = buf.len().min((len - at) as usize);
                let n = f.read_at(&mut buf[..want], at)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                at += n as u64;
            }
            Ok((at, h.digest()))
        };
        let (_, want) = sum_of(file).ctx(|| format!("read the file to publish as {name}"))?;
        self.publish(
            name,
            |out| {
                let mut src = file.try_clone()?;
                std::io::Seek::seek(&mut src, std::io::SeekFrom::Start(0))?;
                let n = std::io::copy(&mut src.take(len), out)?;
                if n == len {
                    Ok(())
                } else {
                    Err(std::io::Error::other(format!("copied {n} bytes of {len}")))
                }
            },
            |f| Ok(sum_of(&f)? == (len, want) && f.metadata()?.len() == len),
        )
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(name)?;
        match fsutil::read_store_file(&path) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let path = self.path(name)?;
        let file = fsutil::open_store_file(&path).ctx(|| format!("open {}", path.display()))?;
        let size = file
            .metadata()
            .ctx(|| format!("stat {}", path.display()))?
            .len();
        // Checked before anything is allocated: `len` may come from a
        // damaged index.
        match offset.checked_add(len) {
            Some(end) if end <= size => {}
            _ => {
                return Err(Error::corrupt(format!(
                    "{} has {size} bytes: no {len} bytes at offset {offset}",
                    path.display()
                )))
            }
        }
        let mut out = vec![0u8; len as usize];
        file.read_exact_at(&mut out, offset)
            .ctx(|| format!("read {}", path.display()))?;
        Ok(out)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        // The deepest directory the prefix names is walked; entries below
        // it are matched against the whole prefix.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let mut top = self.root.clone();
        if !dir_part.is_empty() {
            // Checks the directories on the way, as for an object in it.
            top = self.path(&format!("{dir_part}/x"))?;
            top.pop();
        } else {
            self.path("x")?;
        }
        let mut out = Vec::new();
        let mut stack = vec![(top, dir_part.to_string())];
        while let Some((dir, rel)) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
            };
            for ent in rd {
                let ent = ent.ctx(|| format!("list {}", dir.display()))?;
                // Not valid names (temporary `.tmp-*` files, `.deleting-*`,
                // names not UTF-8) are no objects.
                let Some(base) = ent.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let name = if rel.is_empty() {
                    base
                } else {
                    format!("{rel}/{base}")
                };
                if storage::check_name(&name).is_err() {
                    continue;
                }
                // lstat: a symlink is listed as itself (opening it is then
                // refused, naming it), never followed into a directory.
                let meta = ent
                    .metadata()
                    .ctx(|| format!("stat {}", ent.path().display()))?;
                if meta.is_dir() {
                    if name.starts_with(prefix) || prefix.starts_with(&format!("{name}/")) {
                        stack.push((ent.path(), name));
                    }
                } else if name.starts_with(prefix) {
                    out.push(ObjectInfo {
                        name,
                        size: meta.len(),
                    });
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("remove {}", path.display()), e)),
        }
        match path.parent() {
            Some(dir) => fsutil::sync_dir(dir),
            None => Ok(()),
        }
    }

    fn map(&self, name: &str) -> Result<Option<memmap2::Mmap>> {
        let path = self.path(name)?;
        let file = fsutil::open_store_file(&path).ctx(|| format!("open {}", path.display()))?;
        // SAFETY: the store's objects are published whole by rename and
        // never modified or truncated afterwards (truncating a mapped file
        // would kill readers with SIGBUS); removal keeps the mapping valid.
        let map = unsafe { memmap2::Mmap::map(&file) }.ctx(|| format!("map {}", path.display()))?;
        Ok(Some(map))
    }

    fn remove_stale_temps(&self) -> Result<usize> {
        // The directories a writer (backup, prune, repair) publishes into
        // while holding the writer lock; not the root, where `vault.json`
        // is written under the catalog lock instead.
        let mut n = Self::remove_temps_in(&self.root.join("index"))?;
        n += Self::remove_temps_in(&self.root.join("backups"))?;
        let packs = self.root.join("packs");
        // Refuses a symlinked packs/ before its entries are read.
        n += Self::remove_temps_in(&packs)?;
        let rd = match fs::read_dir(&packs) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(n),
            Err(e) => return Err(Error::io(format!("list {}", packs.display()), e)),
        };
        for sub in rd {
            let sub = sub.ctx(|| format!("list {}", packs.display()))?;
            // lstat: a symlink among the fan-out directories is not entered.
            if sub.file_type().is_ok_and(|t| t.is_dir()) {
                n += Self::remove_temps_in(&sub.path())?;
            }
        }
        Ok(n)
    }
}

/// True if `f` holds exactly `want`. Compares a megabyte at a time, so a
/// pack's check does not double the memory of the pack being published.
fn reads_back_as(mut f: File, want: &[u8]) -> std::io::Result<bool> {
    let mut buf = vec![0u8; (1 << 20).min(want.len() + 1)];
    let mut pos = 0;
    loop {
        let n = match f.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(pos == want.len());
        }
        if pos + n > want.len() || buf[..n] != want[pos..pos + n] {
            return Ok(false);
        }
        pos += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, LocalDir) {
        let t = tempfile::tempdir().unwrap();
        let s = LocalDir::new(t.path().join("vault"));
        (t, s)
    }

    #[test]
    fn put_get_list_delete() {
        let (_t, s) = dir();
        assert_eq!(s.get("key").unwrap(), None);
        s.put("key", b"secret").unwrap();
        s.put("packs/ab/ab01.pack", b"pack bytes").unwrap();
        s.put("packs/cd/cd02.pack", b"other").unwrap();
        s.put("index/01.idx", b"i").unwrap();
        assert_eq!(s.get("key").unwrap().unwrap(), b"secret");
        let names = |p: &str| -> Vec<(String, u64)> {
            s.list(p)
                .unwrap()
                .into_iter()
                .map(|o| (o.name, o.size))
                .collect()
        };
        assert_eq!(
            names("packs/"),
            [
                ("packs/ab/ab01.pack".to_string(), 10),
                ("packs/cd/cd02.pack".to_string(), 5)
            ]
        );
        assert_eq!(names("packs/ab/"), [("packs/ab/ab01.pack".to_string(), 10)]);
        assert_eq!(names("index/"), [("index/01.idx".to_string(), 1)]);
        assert!(names("backups/").is_empty());
        s.delete("packs/ab/ab01.pack").unwrap();
        // Absent is fine, twice.
        s.delete("packs/ab/ab01.pack").unwrap();
        s.delete("never/was").unwrap();
        assert_eq!(names("packs/").len(), 1);
        // A replace is whole.
        s.put("key", b"new").unwrap();
        assert_eq!(s.get("key").unwrap().unwrap(), b"new");
    }

    /// Publish is atomic: the object appears only by rename, and a put
    /// that fails leaves neither the object nor its temporary file.
    #[test]
    fn publish_is_atomic_and_leaves_no_temporary() {
        let (_t, s) = dir();
        s.put("index/aa.idx", &vec![7u8; 3 << 20]).unwrap();
        let files: Vec<_> = fs::read_dir(s.root().join("index"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files, ["aa.idx"]);
        // A file whose length is not what the caller says is refused, and
        // nothing is published.
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"twelve bytes").unwrap();
        let e = s.put_file("index/bb.idx", &f, 99).unwrap_err();
        assert!(e.to_string().contains("index/bb.idx"), "{e}");
        assert_eq!(s.list("index/").unwrap().len(), 1);
        s.put_file("index/bb.idx", &f, 12).unwrap();
        assert_eq!(s.get("index/bb.idx").unwrap().unwrap(), b"twelve bytes");
        // A stale temporary file (a killed writer) is not an object, and
        // is removed by remove_stale_temps.
        fs::write(s.root().join("index/.tmp-dead"), b"half").unwrap();
        s.put("packs/ab/ab.pack", b"p").unwrap();
        fs::write(s.root().join("packs/ab/.tmp-dead"), b"half").unwrap();
        assert_eq!(s.list("index/").unwrap().len(), 2);
        assert_eq!(s.remove_stale_temps().unwrap(), 2);
        assert_eq!(s.remove_stale_temps().unwrap(), 0);
    }

    #[test]
    fn get_range_is_bounded_by_the_object() {
        let (_t, s) = dir();
        s.put("packs/00/00.pack", b"0123456789").unwrap();
        assert_eq!(s.get_range("packs/00/00.pack", 2, 3).unwrap(), b"234");
        assert_eq!(s.get_range("packs/00/00.pack", 10, 0).unwrap(), b"");
        for (off, len) in [(8, 3), (11, 0), (u64::MAX, 2), (0, u64::MAX)] {
            let e = s.get_range("packs/00/00.pack", off, len).unwrap_err();
            assert!(e.to_string().contains("00.pack"), "{e}");
        }
        let e = s.get_range("packs/00/01.pack", 0, 1).unwrap_err();
        assert!(storage::is_absent(&e), "{e}");
        assert!(e.to_string().contains("01.pack"), "{e}");
        let e = s.map("packs/00/01.pack").unwrap_err();
        assert!(storage::is_absent(&e), "{e}");
        assert_eq!(
            &s.map("packs/00/00.pack").unwrap().unwrap()[..],
            b"0123456789"
        );
    }

    /// A symlink planted in place of an object or of one of the vault's
    /// directories is refused, naming it, never followed.
    #[test]
    fn planted_symlinks_are_refused() {
        let (t, s) = dir();
        s.put("index/aa.idx", b"real").unwrap();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("bb.idx"), b"theirs").unwrap();
        std::os::unix::fs::symlink(outside.join("bb.idx"), s.root().join("index/bb.idx")).unwrap();
        // Listed as itself (so that reading it names it) ...
        assert_eq!(s.list("index/").unwrap().len(), 2);
        for e in [
            s.get("index/bb.idx").unwrap_err(),
            s.get_range("index/bb.idx", 0, 1).unwrap_err(),
            s.map("index/bb.idx").unwrap_err(),
        ] {
            let m = e.to_string();
            assert!(m.contains("bb.idx") && m.contains("symbolic link"), "{m}");
        }
        // ... and a directory swapped for a link is refused as a whole.
        fs::rename(s.root().join("index"), t.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, s.root().join("index")).unwrap();
        for e in [
            s.get("index/bb.idx").unwrap_err(),
            s.list("index/").unwrap_err(),
            s.put("index/cc.idx", b"x").unwrap_err(),
        ] {
            let m = e.to_string();
            assert!(m.contains("index") && m.contains("symbolic link"), "{m}");
        }
        assert!(!outside.join("cc.idx").exists());
        // A hostile name is refused before any path is made of it.
        assert!(s.get("../outside/bb.idx").is_err());
    }
}
