//! In-process tests of the mount's tree (src/vfs/): the same code the
//! FUSE adapter calls, without a kernel mount.

mod common;

use cbrfs::catalog::Store;
use cbrfs::engine::vaults;
use cbrfs::quote::quote_bytes;
use cbrfs::vfs::{Vfs, VfsOptions, IMPLICIT_MAX, ROOT_INO};
use common::{filesystem_vault, pseudo_random, take_backup};
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::Duration;

struct Fixture {
    _dir: tempfile::TempDir,
    src: std::path::PathBuf,
    store: Store,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    // Over 32 chunks, so its chunk list is stored in chunk-list blobs.
    std::fs::write(src.join("big"), pseudo_random(48 << 20, 1)).unwrap();
    std::fs::write(src.join("small"), b"hello").unwrap();
    std::fs::write(src.join("sub/deeper/mid"), pseudo_random(3 << 20, 2)).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    let mut f = std::fs::File::create(src.join("sparse")).unwrap();
    f.seek(SeekFrom::Start(8 << 20)).unwrap();
    f.write_all(&pseudo_random(100_000, 3)).unwrap();
    f.set_len(32 << 20).unwrap();
    std::os::unix::fs::symlink("small", src.join("link")).unwrap();
    std::fs::hard_link(src.join("small"), src.join("hardlink")).unwrap();
    for i in 0..300 {
        std::fs::write(src.join(format!("sub/f{i:03}")), format!("{i}")).unwrap();
    }
    let store = Store::init(&dir.path().join("store")).unwrap();
    filesystem_vault(&store, "v", "", "zstd");
    vaults::associate_path(&store, "v", &src, Some("src".into()), vec![]).unwrap();
    take_backup(&store, "v", "b1");
    Fixture {
        _dir: dir,
        src,
        store,
    }
}

fn vfs(f: &Fixture) -> Arc<Vfs> {
    Vfs::new(
        f.store.clone(),
        VfsOptions {
            wait: Duration::from_millis(300),
            uid: 0,
            gid: 0,
        },
    )
}

fn walk(v: &Vfs, path: &str) -> u64 {
    let mut ino = ROOT_INO;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = v.lookup(ino, part.as_bytes()).unwrap().ino;
    }
    ino
}

fn read_all(v: &Vfs, ino: u64) -> Vec<u8> {
    let fh = v.open(ino, libc::O_RDONLY).unwrap();
    let mut out = Vec::new();
    loop {
        let d = v.read(fh, out.len() as u64, 1 << 20).unwrap();
        if d.is_empty() {
            break;
        }
        out.extend(d);
    }
    v.release(fh);
    out
}

#[test]
fn random_offset_reads_match_the_source() {
    let f = fixture();
    let v = vfs(&f);
    for name in ["big", "sparse", "sub/deeper/mid", "small", "empty"] {
        let src = std::fs::read(f.src.join(name)).unwrap();
        let ino = walk(&v, &format!("v/b1/src/{name}"));
        assert_eq!(v.getattr(ino).unwrap().size, src.len() as u64, "{name}");
        assert_eq!(read_all(&v, ino), src, "{name}");
        let fh = v.open(ino, libc::O_RDONLY).unwrap();
        let mut x = 12345u64;
        for _ in 0..300 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let off = if src.is_empty() {
                0
            } else {
                (x >> 16) % (src.len() as u64 + 10)
            };
            let len = ((x >> 40) % (3 << 20)) as u32;
            let got = v.read(fh, off, len).unwrap();
            let s = (off as usize).min(src.len());
            let e = (s + len as usize).min(src.len());
            assert_eq!(got, &src[s..e], "{name} at {off}+{len}");
        }
        v.release(fh);
    }
}

/// Listing a vault and a backup's resources opens no vault: they come
/// from the backup records, so a mount that is only listed maps no index
/// (nor decrypts an encrypted vault's). The first tree read opens it,
/// once for every backup of the vault.
#[test]
fn listing_a_backup_opens_its_vault_only_when_a_tree_is_read() {
    let f = fixture();
    take_backup(&f.store, "v", "b2");
    let v = vfs(&f);
    let names: Vec<Vec<u8>> = v
        .readdir(walk(&v, "v"), 0)
        .unwrap()
        .into_iter()
        .map(|e| e.1.name)
        .collect();
    assert!(names.contains(&b"b1".to_vec()) && names.contains(&b"latest".to_vec()));
    let b1 = v.readdir(walk(&v, "v/b1"), 0).unwrap();
    assert!(b1.iter().any(|e| e.1.name == b"src"));
    let src = walk(&v, "v/b1/src");
    assert!(v.getattr(src).is_ok());
    assert!(v.xattrs(walk(&v, "v/b1")).unwrap().len() > 3);
    assert_eq!(v.opened_vaults(), 0);
    assert_eq!(read_all(&v, walk(&v, "v/b1/src/small")), b"hello");
    assert_eq!(v.opened_vaults(), 1);
    assert_eq!(read_all(&v, walk(&v, "v/b2/src/small")), b"hello");
    assert_eq!(v.opened_vaults(), 1);
}

/// Random reads of a file decode only the chunks they read (issue 17: a
/// random 4 KiB read must not pay for decoding its neighbours): reads a
/// few MiB apart, none where the last ended, queue no read-ahead; a
/// stream of reads that continue each other does, from its second read.
#[test]
fn random_reads_read_nothing_ahead_and_a_stream_does() {
    let f = fixture();
    let v = vfs(&f);
    let src = std::fs::read(f.src.join("big")).unwrap();
    let ino = walk(&v, "v/b1/src/big");
    let fh = v.open(ino, libc::O_RDONLY).unwrap();
    // One byte each: within one chunk, so not even a request of several
    // chunks is spread over the helpers.
    let mib = 1usize << 20;
    for off in [
        20 * mib,
        22 * mib,
        19 * mib + 4096,
        23 * mib + 5000,
        21 * mib + 777,
        24 * mib,
        18 * mib + 3,
        20 * mib + 600_000,
    ] {
        assert_eq!(v.read(fh, off as u64, 1).unwrap(), &src[off..off + 1]);
    }
    assert_eq!(v.read_ahead_jobs(), 0, "random reads read ahead");
    let mut off = 30 * mib;
    for i in 0..8 {
        let got = v.read(fh, off as u64, 128 << 10).unwrap();
        assert!(got == src[off..off + (128 << 10)], "at {off}");
        off += 128 << 10;
        if i == 1 {
            // The stream's first window is twice the request (256 KiB):
            // at most a chunk or two of this file's (256 KiB to 4 MiB),
            // not the whole 8 MiB window at once.
            let jobs = v.read_ahead_jobs();
            assert!(jobs <= 2, "{jobs} jobs for a new stream");
        }
    }
    assert!(v.read_ahead_jobs() > 2, "the stream's window did not grow");
    v.release(fh);
}

/// A stream of requests of several chunks each reads nothing ahead: the
/// kernel keeps several in flight and each is decoded straight into its
/// reply (issue 17); the bytes are the file's.
#[test]
fn a_stream_of_requests_of_several_chunks_reads_nothing_ahead() {
    let f = fixture();
    let v = vfs(&f);
    let src = std::fs::read(f.src.join("big")).unwrap();
    let ino = walk(&v, "v/b1/src/big");
    let fh = v.open(ino, libc::O_RDONLY).unwrap();
    // 12 MiB requests: more than the largest chunk (4 MiB) twice over.
    let req = 12usize << 20;
    let mut off = 0;
    while off < src.len() {
        let got = v.read(fh, off as u64, req as u32).unwrap();
        assert!(got == src[off..(off + req).min(src.len())], "at {off}");
        off += req;
    }
    assert_eq!(v.read_ahead_jobs(), 0, "read ahead");
    v.release(fh);
}

#[test]
fn holes_seek_data_and_hole() {
    let f = fixture();
    let v = vfs(&f);
    let ino = walk(&v, "v/b1/src/sparse");
    let fh = v.open(ino, libc::O_RDONLY).unwrap();
    let data = v.lseek(fh, 0, libc::SEEK_DATA).unwrap();
    assert!(((8 << 20) - 4096..=8 << 20).contains(&data), "{data}");
    let hole = v.lseek(fh, data, libc::SEEK_HOLE).unwrap();
    assert!(
        ((8 << 20) + 100_000..=(8 << 20) + 200_000).contains(&hole),
        "{hole}"
    );
    assert_eq!(v.lseek(fh, 0, libc::SEEK_HOLE).unwrap(), 0);
    assert_eq!(v.lseek(fh, hole + 1, libc::SEEK_DATA), Err(libc::ENXIO));
    assert_eq!(v.lseek(fh, 32 << 20, libc::SEEK_DATA), Err(libc::ENXIO));
}

#[test]
fn tree_listing_links_and_xattrs() {
    let f = fixture();
    let v = vfs(&f);
    let root = v.readdir(ROOT_INO, 0).unwrap();
    let names: Vec<_> = root.iter().map(|(_, e)| e.name.clone()).collect();
    assert_eq!(names, vec![b".".to_vec(), b"..".to_vec(), b"v".to_vec()]);
    let vault = walk(&v, "v");
    let names: Vec<_> = v
        .readdir(vault, 0)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.name)
        .collect();
    assert_eq!(
        names,
        vec![
            b".".to_vec(),
            b"..".to_vec(),
            b"b1".to_vec(),
            b"latest".to_vec()
        ]
    );
    assert_eq!(v.readlink(walk(&v, "v/latest")).unwrap(), b"b1");
    let a = v.lookup(walk(&v, "v/b1/src"), b"small").unwrap();
    let b = v.lookup(walk(&v, "v/b1/src"), b"hardlink").unwrap();
    assert_eq!(a.ino, b.ino, "hard links share one inode");
    assert_eq!(a.nlink, 2);
    assert_eq!(v.readlink(walk(&v, "v/b1/src/link")).unwrap(), b"small");
    let xs = v.xattrs(walk(&v, "v/b1")).unwrap();
    let status = xs.iter().find(|(n, _)| n == b"user.cbrfs.status").unwrap();
    assert_eq!(status.1, b"available");
    assert_eq!(
        v.lookup(walk(&v, "v/b1/src"), b"nope").unwrap_err(),
        libc::ENOENT
    );
}

#[test]
fn readdir_resumes_at_any_offset() {
    let f = fixture();
    let v = vfs(&f);
    let sub = walk(&v, "v/b1/src/sub");
    let all = v.readdir(sub, 0).unwrap();
    assert_eq!(all.len(), 2 + 301);
    for cut in [1u64, 2, 3, 50, 302, 303] {
        let rest = v.readdir(sub, cut).unwrap();
        let expect: Vec<_> = all
            .iter()
            .filter(|(p, _)| *p > cut)
            .map(|(_, e)| e.name.clone())
            .collect();
        let got: Vec<_> = rest.iter().map(|(_, e)| e.name.clone()).collect();
        assert_eq!(got, expect, "offset {cut}");
    }
}

/// A listing in pieces, as the kernel asks for it (a buffer's worth per
/// call), makes only the entries it hands over: each call costs what it
/// lists, not every entry after its offset (quadratic in a big directory).
#[test]
fn readdir_each_makes_only_what_it_hands_over() {
    let f = fixture();
    let v = vfs(&f);
    let sub = walk(&v, "v/b1/src/sub");
    let before = v.inode_count();
    let mut offset = 0;
    let mut names = Vec::new();
    let mut sent = Vec::new();
    loop {
        let mut got = 0;
        let mut last = offset;
        v.readdir_each(sub, offset, |pos, e| {
            if got == 10 {
                // "The buffer is full": this one was made but not sent.
                v.forget(e.attr.ino, 0);
                return false;
            }
            got += 1;
            last = pos;
            if e.name != b"." && e.name != b".." {
                sent.push(e.attr.ino);
            }
            names.push(e.name.clone());
            true
        })
        .unwrap();
        // The entries sent so far are held (as readdirplus holds them),
        // and nothing else was made.
        assert_eq!(v.inode_count(), before + sent.len(), "offset {offset}");
        if got == 0 {
            break;
        }
        offset = last;
    }
    for ino in sent {
        v.forget(ino, 0);
    }
    assert_eq!(v.inode_count(), before);
    let all: Vec<_> = v
        .readdir(sub, 0)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.name)
        .collect();
    assert_eq!(names, all);
    assert_eq!(names.len(), 2 + 301);
}

#[test]
fn forget_releases_inodes() {
    let f = fixture();
    let v = vfs(&f);
    let before = v.inode_count();
    // One lookup of each component, as the kernel would make.
    let mut path = vec![ROOT_INO];
    for part in ["v", "b1", "src", "sub"] {
        let ino = v
            .lookup(*path.last().unwrap(), part.as_bytes())
            .unwrap()
            .ino;
        path.push(ino);
    }
    let sub = *path.last().unwrap();
    let entries = v.readdir(sub, 0).unwrap();
    for (_, e) in &entries {
        if e.name != b"." && e.name != b".." {
            v.forget(e.attr.ino, 0);
        }
    }
    assert_eq!(
        v.inode_count(),
        before + 4,
        "readdir without plus keeps no inodes"
    );
    // readdirplus: the kernel counts one lookup per entry it received.
    let entries = v.readdir(sub, 0).unwrap();
    for (_, e) in &entries[2..] {
        v.add_lookup(e.attr.ino);
    }
    assert_eq!(v.inode_count(), before + 4 + 301);
    for (_, e) in &entries[2..] {
        v.forget(e.attr.ino, 1);
    }
    for ino in path.iter().skip(1).rev() {
        v.forget(*ino, 1);
    }
    assert_eq!(v.inode_count(), before);
}

#[test]
fn writes_are_refused() {
    let f = fixture();
    let v = vfs(&f);
    let ino = walk(&v, "v/b1/src/small");
    assert_eq!(v.open(ino, libc::O_WRONLY), Err(libc::EROFS));
    assert_eq!(v.open(ino, libc::O_RDWR), Err(libc::EROFS));
    assert_eq!(
        v.open(ino, libc::O_RDONLY | libc::O_TRUNC),
        Err(libc::EROFS)
    );
    assert_eq!(v.modify(walk(&v, "v/b1/src")), libc::EROFS);
    assert_eq!(v.rmdir(walk(&v, "v")), libc::EPERM);
    assert_eq!(v.rmdir(walk(&v, "v/b1/src")), libc::EROFS);
    assert_eq!(v.mkdir(ROOT_INO, b"x").unwrap_err(), libc::EPERM);
    assert_eq!(v.mkdir(walk(&v, "v/b1"), b"x").unwrap_err(), libc::EROFS);
}

#[test]
fn mkdir_runs_a_backup_and_waiters_are_answered() {
    let f = fixture();
    let v = vfs(&f);
    let vault = walk(&v, "v");
    assert_eq!(v.mkdir(vault, b"bad name").unwrap_err(), libc::EINVAL);
    assert_eq!(v.mkdir(vault, b"b1").unwrap_err(), libc::EEXIST);
    let a = v.mkdir(vault, b"m1").unwrap();
    assert_eq!(v.mkdir(vault, b"m1").unwrap_err(), libc::EEXIST);
    let (tx, rx) = std::sync::mpsc::channel();
    match v.pending(a.ino) {
        Some(key) => v.wait(key, Box::new(move |r| tx.send(r).unwrap())),
        None => tx.send(Ok(())).unwrap(),
    }
    // Either the backup finished within the bound or the waiter got EAGAIN.
    let r = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(r == Ok(()) || r == Err(libc::EAGAIN), "{r:?}");
    // Wait for it through the store, as `backup wait` does.
    for _ in 0..600 {
        if f.store.backup_path("v", "m1").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let src = v.lookup(a.ino, b"src").unwrap();
    let small = v.lookup(src.ino, b"small").unwrap();
    assert_eq!(read_all(&v, small.ino), b"hello");
    let rec = f.store.backup("v", "m1").unwrap();
    assert_eq!(rec.origin, cbrfs::model::Origin::Mount);
}

#[test]
fn an_empty_vault_refuses_mkdir_with_enoent() {
    let f = fixture();
    filesystem_vault(&f.store, "empty", "", "none");
    let v = vfs(&f);
    let e = walk(&v, "empty");
    assert_eq!(v.mkdir(e, b"x").unwrap_err(), libc::ENOENT);
}

#[test]
fn reads_without_an_open_keep_a_bounded_read_state() {
    // The kernel opens files without asking (FUSE_NO_OPEN_SUPPORT): reads
    // come by inode, their state is kept for the most recent inodes only
    // and goes when reads stop.
    let f = fixture();
    let v = vfs(&f);
    let mid = walk(&v, "v/b1/src/sub/deeper/mid");
    let src = std::fs::read(f.src.join("sub/deeper/mid")).unwrap();
    let fh = v.implicit_handle(mid).unwrap();
    assert_eq!(v.implicit_handle(mid).unwrap(), fh, "one handle per inode");
    assert_eq!(v.read(fh, 4096, 100).unwrap(), &src[4096..4196]);
    assert_eq!(v.implicit_count(), 1);
    // Only files: the checks of an open.
    let dir = walk(&v, "v/b1/src/sub");
    assert_eq!(v.implicit_handle(dir), Err(libc::EACCES));
    assert_eq!(v.implicit_count(), 1);
    for i in 0..IMPLICIT_MAX + 10 {
        let ino = walk(&v, &format!("v/b1/src/sub/f{i:03}"));
        let h = v.implicit_handle(ino).unwrap();
        assert_eq!(v.read(h, 0, 10).unwrap(), format!("{i}").as_bytes());
    }
    assert_eq!(v.implicit_count(), IMPLICIT_MAX);
    assert_eq!(v.read(fh, 0, 1), Err(libc::EBADF), "the oldest was closed");
    // Read again, the inode gets a handle again.
    let fh2 = v.implicit_handle(mid).unwrap();
    assert_eq!(v.read(fh2, 0, 100).unwrap(), &src[..100]);
    // Reads stop: the mount's reaper drops the read state.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while v.implicit_count() > 0 {
        assert!(std::time::Instant::now() < deadline, "read state kept");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(v.read(fh2, 0, 1), Err(libc::EBADF));
}

#[test]
fn a_small_file_read_hands_over_the_small_files_after_it() {
    let f = fixture();
    let v = vfs(&f);
    let n = cbrfs::vfs::AFTER_FILES;
    // The kernel holds the inodes of sub's first entries (as after a
    // readdirplus): "deeper", then f000, f001, ...
    let inos: Vec<u64> = (0..=n + 4)
        .map(|i| walk(&v, &format!("v/b1/src/sub/f{i:03}")))
        .collect();
    let got = v.prefetch_after(inos[0]);
    let want: Vec<(u64, Vec<u8>)> = (1..=n)
        .map(|i| (inos[i], format!("{i}").into_bytes()))
        .collect();
    assert_eq!(got, want);
    // Once each: the next read hands over the rest the kernel holds.
    let got: Vec<u64> = v
        .prefetch_after(inos[0])
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(got, inos[n + 1..].to_vec());
    assert!(v.prefetch_after(inos[0]).is_empty());
    // A large file's read hands over nothing.
    let mid = walk(&v, "v/b1/src/sub/deeper/mid");
    assert!(v.prefetch_after(mid).is_empty());
}

#[test]
fn small_files_are_handed_over_one_by_one_as_they_are_read() {
    // The copy reads the next file a few round trips after the first:
    // each file goes to the kernel before the one after it is read, not
    // once the whole batch is.
    let f = fixture();
    let v = vfs(&f);
    let inos: Vec<u64> = (0..3)
        .map(|i| walk(&v, &format!("v/b1/src/sub/f{i:03}")))
        .collect();
    let mut seen = Vec::new();
    v.prefetch_after_each(inos[0], |ino, data| {
        if ino == inos[1] {
            // The file after it is not read yet: it can still be taken.
            assert_eq!(v.prefetch(inos[2]).as_deref(), Some(&b"2"[..]));
        }
        seen.push((ino, data.to_vec()));
    });
    assert_eq!(seen, vec![(inos[1], b"1".to_vec())]);
}

#[test]
fn a_hand_over_goes_into_the_first_directory_after_the_file() {
    // src: big, empty, hardlink, link, small, sparse, sub; sub: deeper,
    // f000, ... A copy reading "small" goes into "sub" next and reads its
    // files before anything after "sub": they are handed over with the
    // read of "small", one level deep ("deeper"'s own files are not).
    let f = fixture();
    let v = vfs(&f);
    let small = walk(&v, "v/b1/src/small");
    walk(&v, "v/b1/src/sparse");
    let sub = walk(&v, "v/b1/src/sub");
    walk(&v, "v/b1/src/sub/deeper");
    let inos: Vec<u64> = (0..3)
        .map(|i| walk(&v, &format!("v/b1/src/sub/f{i:03}")))
        .collect();
    assert!(sub > small);
    let got = v.prefetch_after(small);
    let want: Vec<(u64, Vec<u8>)> = (0..3)
        .map(|i| (inos[i], format!("{i}").into_bytes()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn prefetch_hands_over_small_files_once() {
    let f = fixture();
    let v = vfs(&f);
    let small = walk(&v, "v/b1/src/small");
    let fh = v.open(small, libc::O_RDONLY).unwrap();
    assert_eq!(v.prefetch(small).as_deref(), Some(&b"hello"[..]));
    // Once handed to the kernel, a later open of the same inode does not
    // send it again; reads still work.
    let fh2 = v.open(small, libc::O_RDONLY).unwrap();
    assert_eq!(v.prefetch(small), None);
    assert_eq!(v.read(fh2, 0, 100).unwrap(), b"hello");
    v.release(fh);
    v.release(fh2);
    // A hard link is the same inode.
    let hard = walk(&v, "v/b1/src/hardlink");
    assert_eq!(hard, small);
    // Empty and large files are read on request.
    for name in ["empty", "sub/deeper/mid", "big"] {
        let ino = walk(&v, &format!("v/b1/src/{name}"));
        let fh = v.open(ino, libc::O_RDONLY).unwrap();
        assert_eq!(v.prefetch(ino), None, "{name}");
        v.release(fh);
    }
    for i in [0, 150, 299] {
        let ino = walk(&v, &format!("v/b1/src/sub/f{i:03}"));
        let fh = v.open(ino, libc::O_RDONLY).unwrap();
        assert_eq!(v.prefetch(ino), Some(format!("{i}").into_bytes()));
        v.release(fh);
    }
    assert_eq!(
        read_all(&v, small),
        std::fs::read(f.src.join("small")).unwrap()
    );

    // A refused store lets a later open try again.
    let f001 = walk(&v, "v/b1/src/sub/f001");
    assert_eq!(v.prefetch(f001), Some(b"1".to_vec()));
    assert_eq!(v.prefetch(f001), None);
    v.unstore(f001);
    assert_eq!(v.prefetch(f001), Some(b"1".to_vec()));
}

/// An inode keeps where its node is, not the node (issue 17: memory per
/// inode): with the tree cache bounded to one tree, every other tree is
/// read again when asked for, and attributes, lookups, listings, links,
/// xattrs and reads stay right.
#[test]
fn nodes_are_found_again_after_their_trees_are_evicted() {
    let f = fixture();
    let v = vfs(&f);
    v.limit_tree_cache(1);
    let src = walk(&v, "v/b1/src");
    let sub = walk(&v, "v/b1/src/sub");
    let listed = v.readdir(sub, 0).unwrap();
    let inos: Vec<_> = listed[2..].iter().map(|(_, e)| e.attr.ino).collect();
    for ino in &inos {
        v.add_lookup(*ino);
    }
    // Another tree read between: sub's tree is evicted (the cache holds
    // the newest tree alone), and read again below.
    let mid = walk(&v, "v/b1/src/sub/deeper/mid");
    // The same walk with the mount's bound keeps all three trees.
    let w = vfs(&f);
    w.readdir(walk(&w, "v/b1/src/sub"), 0).unwrap();
    walk(&w, "v/b1/src/sub/deeper/mid");
    assert!(v.tree_cache_bytes() < w.tree_cache_bytes() / 2);
    for (_, e) in &listed[2..] {
        assert_eq!(v.getattr(e.attr.ino).unwrap(), e.attr);
    }
    assert!(v.tree_cache_bytes() < w.tree_cache_bytes());
    let f150 = listed
        .iter()
        .find(|(_, e)| e.name == b"f150")
        .map(|(_, e)| e.attr.ino)
        .unwrap();
    let fh = v.open(f150, libc::O_RDONLY).unwrap();
    assert_eq!(v.read(fh, 0, 100).unwrap(), b"150");
    v.release(fh);
    assert_eq!(
        read_all(&v, mid),
        std::fs::read(f.src.join("sub/deeper/mid")).unwrap()
    );
    // A lookup of a listed name finds the inode the listing made.
    assert_eq!(v.lookup(sub, b"f150").unwrap().ino, f150);
    assert_eq!(
        v.lookup(src, b"small").unwrap().ino,
        walk(&v, "v/b1/src/hardlink")
    );
    assert_eq!(v.readlink(walk(&v, "v/b1/src/link")).unwrap(), b"small");
    let small = walk(&v, "v/b1/src/small");
    assert_eq!(read_all(&v, small), b"hello");
    // Forgetting everything leaves only the path's inodes.
    for ino in inos {
        v.forget(ino, 1);
    }
    assert!(v.xattrs(walk(&v, "v/b1")).unwrap().len() > 3);
}

/// Trees are cached by vault and id, not by backup: a directory that did
/// not change between two backups is decoded once for both (a `find`
/// across ten backups of a directory of a million entries decodes it
/// once), and the root says how many inodes are held.
#[test]
fn a_tree_two_backups_share_is_cached_once() {
    let f = fixture();
    take_backup(&f.store, "v", "b2");
    let v = vfs(&f);
    let a = walk(&v, "v/b1/src/sub");
    v.readdir(a, 0).unwrap();
    let after_one = v.tree_cache_bytes();
    let b = walk(&v, "v/b2/src/sub");
    assert_ne!(a, b, "each backup's directory is its own inode");
    v.readdir(b, 0).unwrap();
    assert_eq!(v.tree_cache_bytes(), after_one);
    let root = v.xattrs(ROOT_INO).unwrap();
    let inodes = root
        .iter()
        .find(|(n, _)| n == b"user.cbrfs.inodes")
        .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        .unwrap();
    assert_eq!(inodes, v.inode_count().to_string());
}

/// A file of a tree two backups share is one inode (issue 17: a `find`
/// through ten backups of an unchanged directory keeps its files' inodes
/// once, in the daemon and in the kernel), as a hard link's names are;
/// directories and hard links stay one inode per backup, a changed tree's
/// files are new inodes, and the inode lives until every backup's names
/// of it are forgotten.
#[test]
fn a_file_two_backups_share_is_one_inode() {
    let f = fixture();
    take_backup(&f.store, "v", "b2");
    std::fs::write(f.src.join("sub/f007"), b"changed").unwrap();
    take_backup(&f.store, "v", "b3");
    let v = vfs(&f);
    let before = v.inode_count();
    // As readdirplus hands entries to the kernel: each counted once.
    let list = |path: &str| -> Vec<(Vec<u8>, u64, bool)> {
        let dir = walk(&v, path);
        v.readdir(dir, 0).unwrap()[2..]
            .iter()
            .map(|(_, e)| {
                v.add_lookup(e.attr.ino);
                let is_dir = e.attr.kind == cbrfs::model::NodeKind::Dir;
                (e.name.clone(), e.attr.ino, is_dir)
            })
            .collect()
    };
    let one = list("v/b1/src/sub");
    let held = v.inode_count();
    let trees = v.tree_cache_bytes();
    let two = list("v/b2/src/sub");
    // (If this fails, b2's trees are not b1's: the test's premise, not
    // the sharing, is what broke.)
    assert_eq!(
        v.tree_cache_bytes(),
        trees,
        "b2's src and sub are b1's trees"
    );
    assert_eq!(one.len(), 301);
    assert_eq!(one.len(), two.len());
    for ((name, a, dir), (_, b, _)) in one.iter().zip(&two) {
        if *dir {
            assert_ne!(
                a,
                b,
                "{}: a directory is one inode per backup",
                quote_bytes(name)
            );
        } else {
            assert_eq!(
                a,
                b,
                "{}: one inode for both backups ({:?} and {:?})",
                quote_bytes(name),
                v.getattr(*a),
                v.getattr(*b)
            );
        }
    }
    // b2's walk added its path (b2, src, sub) and sub/deeper only.
    assert_eq!(v.inode_count(), held + 4);
    // The same attributes and bytes through either backup's name.
    let (f150_1, f150_2) = (walk(&v, "v/b1/src/sub/f150"), walk(&v, "v/b2/src/sub/f150"));
    assert_eq!(f150_1, f150_2);
    assert_eq!(read_all(&v, f150_2), b"150");
    // A tree that changed (b3's sub: f007 was rewritten) is other inodes,
    // even for the files that did not change.
    let three = list("v/b3/src/sub");
    for ((name, a, _), (_, c, _)) in one.iter().zip(&three) {
        assert_ne!(a, c, "{}: b3's sub is another tree", quote_bytes(name));
    }
    let f007 = walk(&v, "v/b3/src/sub/f007");
    assert_eq!(read_all(&v, f007), b"changed");
    // A hard link keeps its own backup's names: one inode per backup.
    let (h1, h2) = (walk(&v, "v/b1/src/hardlink"), walk(&v, "v/b2/src/hardlink"));
    assert_ne!(h1, h2);
    assert_eq!(walk(&v, "v/b1/src/small"), h1);
    assert_eq!(walk(&v, "v/b2/src/small"), h2);
    // Forgetting b1's names keeps the files b2's names hold.
    for (_, ino, _) in &one {
        v.forget(*ino, 1);
    }
    assert_eq!(walk(&v, "v/b2/src/sub/f150"), f150_2, "kept for b2");
    v.forget(f150_2, 1);
    assert_eq!(v.getattr(f150_2).unwrap().size, 3);
    for (_, ino, _) in two.iter().chain(&three) {
        v.forget(*ino, 1);
    }
    // walk() counted lookups of f150 (3, one forgotten), f007 and the
    // links: all that is left beside the paths.
    for (ino, n) in [(f150_1, 2), (f007, 1), (h1, 2), (h2, 2)] {
        v.forget(ino, n);
    }
    assert!(v.getattr(f150_2).is_err(), "forgotten by every name");
    // Left: the walked paths (v; b1, b2, b3; each one's src and sub).
    assert_eq!(v.inode_count(), before + 10);
}
