//! Restore against hostile targets and hostile backups (issue #12,
//! findings 3, 5 and restore's share of 8): nothing outside the target
//! changes when entries are swapped for symlinks during a restore, targets
//! another user controls are refused, and a crafted backup cannot make
//! restore write more than it records or overflow its stack.
//!
//! Most tests need root (chown, other users' files); they say so and pass
//! when run by another user.

mod common;

use cbrfs::catalog::Store;
use cbrfs::engine::restore::{self, RestoreOptions};
use cbrfs::engine::vaults;
use cbrfs::error::Kind;
use cbrfs::model::{self, BackupRecord, ChunkRef, Content, Node, NodeKind, RelChunk, Tree};
use cbrfs::store::{BlobId, BlobKind, RepoWriter};
use common::{filesystem_vault, take_backup};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn is_root() -> bool {
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: needs root");
    }
    root
}

/// A store with vault "v" holding backup "b1" of `src` (resource "src").
fn backed_up(dir: &Path, src: &Path) -> Store {
    let store = Store::init(&dir.join("store")).unwrap();
    filesystem_vault(&store, "v", "", "none");
    vaults::associate_path(&store, "v", src, Some("src".into()), vec![]).unwrap();
    take_backup(&store, "v", "b1");
    store
}

/// Save a copy of backup `from` named `name`, whose only resource gets the
/// root tree and totals `edit` gives it; blobs are written through the
/// model's own encoders.
fn craft(
    store: &Store,
    from: &str,
    name: &str,
    edit: impl FnOnce(&mut RepoWriter, &mut BackupRecord),
) {
    let repo = store.repo("v").unwrap();
    let mut rec = store.backup("v", from).unwrap();
    let mut w = RepoWriter::new(&repo, false);
    edit(&mut w, &mut rec);
    w.finish().unwrap();
    rec.name = name.into();
    store.save_backup(&rec).unwrap();
}

/// `dir/src` holding the one file `name`, backed up as by [`backed_up`].
fn one_file_backed_up(dir: &Path, name: &str, data: &[u8]) -> Store {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join(name), data).unwrap();
    backed_up(dir, &src)
}

fn put_tree(w: &mut RepoWriter, entries: Vec<Node>) -> BlobId {
    let tree = Tree { entries };
    w.add(BlobKind::Tree, &model::encode_tree(&tree).unwrap())
        .unwrap()
        .id
}

fn set_root(rec: &mut BackupRecord, root: BlobId) {
    let part = &mut rec.resources[0];
    part.root = root;
    part.meta.subtree = Some(root);
}

fn dir_node(name: &str, sub: BlobId) -> Node {
    let mut n = Node::new(name.as_bytes().to_vec(), NodeKind::Dir);
    n.mode = 0o755;
    n.subtree = Some(sub);
    n
}

/// While restore writes setuid-root programs into the target, a thread
/// keeps replacing each new entry with a symlink to a file outside the
/// target. Restore must set owner and mode on what it created, never on
/// what a symlink points at: the file outside keeps its owner, mode and
/// bytes, and no file anywhere is setuid with bytes restore did not write.
#[test]
fn symlink_swaps_during_restore_change_nothing_outside() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..150 {
        let p = if i % 2 == 0 {
            src.join(format!("prog{i}"))
        } else {
            src.join("sub").join(format!("prog{i}"))
        };
        std::fs::write(&p, common::pseudo_random(64 << 10, i)).unwrap();
        std::os::unix::fs::chown(&p, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o4755)).unwrap();
    }
    // A sub-directory whose recorded owner is someone else: after restore
    // sets its owner the attacker could rename inside it too.
    std::os::unix::fs::chown(src.join("sub"), Some(4242), Some(4242)).unwrap();
    std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let store = backed_up(dir.path(), &src);
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"the victim's own bytes").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = std::fs::metadata(&victim).unwrap();

    for round in 0..3 {
        let out = dir.path().join(format!("out{round}"));
        std::fs::create_dir(&out).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, out, victim) = (stop.clone(), out.clone(), victim.clone());
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for d in [out.clone(), out.join("sub")] {
                        let Ok(rd) = std::fs::read_dir(&d) else {
                            continue;
                        };
                        for e in rd.flatten() {
                            let p = e.path();
                            let Ok(md) = std::fs::symlink_metadata(&p) else {
                                continue;
                            };
                            if md.is_file() && std::fs::remove_file(&p).is_ok() {
                                let _ = std::os::unix::fs::symlink(&victim, &p);
                                swaps += 1;
                            }
                        }
                    }
                }
                swaps
            })
        };
        let r = restore::restore(&store, "v", "b1", None, &out);
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        eprintln!(
            "round {round}: {swaps} swaps, restore: {:?}",
            r.as_ref().map(|s| s.errors.len())
        );
        let after = std::fs::metadata(&victim).unwrap();
        assert_eq!(
            (after.mode(), after.uid(), after.gid(), after.len()),
            (before.mode(), before.uid(), before.gid(), before.len()),
            "round {round}: the file outside the target changed"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"the victim's own bytes");
        // Every setuid file in the target holds bytes of the backup.
        for e in walk(&out) {
            let md = std::fs::symlink_metadata(&e).unwrap();
            if md.is_file() && md.mode() & 0o4000 != 0 {
                let name = e.file_name().unwrap().to_string_lossy().to_string();
                let i: u64 = name.trim_start_matches("prog").parse().unwrap();
                assert_eq!(
                    std::fs::read(&e).unwrap(),
                    common::pseudo_random(64 << 10, i),
                    "{}",
                    e.display()
                );
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// A target directory another user owns, or that others may write, is
/// refused unless the user says so; the message names target, owner, mode.
#[test]
fn a_target_another_user_controls_is_refused_without_the_flag() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = one_file_backed_up(dir.path(), "f", b"data");

    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let e = restore::restore(&store, "v", "b1", None, &theirs).unwrap_err();
    assert_eq!(e.kind(), Kind::Invalid);
    assert_eq!(e.exit_code(), 2);
    let msg = e.to_string();
    assert!(
        msg.contains(&theirs.display().to_string())
            && msg.contains("uid 65534")
            && msg.contains("--allow-untrusted-target"),
        "{msg}"
    );
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0);

    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = restore::restore(&store, "v", "b1", None, &open).unwrap_err();
    assert!(e.to_string().contains("0777"), "{e}");

    let opts = RestoreOptions {
        allow_untrusted_target: true,
        ..Default::default()
    };
    for t in [&theirs, &open] {
        let s = restore::restore_with(&store, "v", "b1", None, t, &opts).unwrap();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(std::fs::read(t.join("f")).unwrap(), b"data");
    }

    // A new target is made by restore, closed to others while it works.
    let fresh = dir.path().join("a/b/fresh");
    restore::restore(&store, "v", "b1", None, &fresh).unwrap();
    assert_eq!(std::fs::read(fresh.join("f")).unwrap(), b"data");
}

/// A disk restore writes only to a new file it creates, or to an existing
/// empty file or block device owned by root or the user: not to a file
/// another user made, a symlink, or a fifo.
#[test]
fn a_disk_restore_refuses_targets_others_made() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, common::pseudo_random(1 << 20, 7)).unwrap();
    let store = Store::init(&dir.path().join("store")).unwrap();
    vaults::create(
        &store,
        vaults::NewVault {
            name: Some("v".into()),
            vault_type: cbrfs::catalog::VaultType::Disk,
            capacity: "10GB".into(),
            description: String::new(),
            tags: vec![],
            compression: "none".into(),
            encrypt: false,
        },
    )
    .unwrap();
    vaults::associate_disk(&store, "v", &img, Some("d".into())).unwrap();
    take_backup(&store, "v", "b1");
    let restore_to = |to: &Path| restore::restore(&store, "v", "b1", Some("d"), to);

    // Pre-created, empty, by another user: they could read the disk.
    let theirs = dir.path().join("theirs.img");
    std::fs::write(&theirs, b"").unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let e = restore_to(&theirs).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("uid 65534"), "{e}");
    assert_eq!(std::fs::metadata(&theirs).unwrap().len(), 0);

    // A symlink to a file elsewhere.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::write(&elsewhere, b"").unwrap();
    let link = dir.path().join("link.img");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let e = restore_to(&link).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert_eq!(std::fs::metadata(&elsewhere).unwrap().len(), 0);

    // A fifo: refused at once, not waited on.
    let fifo = dir.path().join("fifo.img");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    let e = restore_to(&fifo).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");

    // An empty file of root's, and a new file, are fine.
    let mine = dir.path().join("mine.img");
    std::fs::write(&mine, b"").unwrap();
    restore_to(&mine).unwrap();
    assert_eq!(std::fs::read(&mine).unwrap(), std::fs::read(&img).unwrap());
    let new = dir.path().join("new.img");
    restore_to(&new).unwrap();
    assert_eq!(std::fs::read(&new).unwrap(), std::fs::read(&img).unwrap());
}

/// A 1-byte file whose chunk list names 2 GiB (inline, and as a chunk-list
/// blob): restore reports the file and writes nothing beyond its size
/// (whether restore's own check or the tree decoder's stops it).
#[test]
fn a_one_byte_file_with_a_two_gib_chunk_list_writes_nothing_big() {
    let dir = tempfile::tempdir().unwrap();
    let store = one_file_backed_up(dir.path(), "small", b"x");
    const MIB: u64 = 1 << 20;
    craft(&store, "b1", "inline", |w, rec| {
        let data = w.add(BlobKind::Data, &vec![7u8; MIB as usize]).unwrap().id;
        let mut n = Node::new(b"small".to_vec(), NodeKind::File);
        n.mode = 0o644;
        n.size = 1;
        n.content = Content::Chunks(
            (0..2048)
                .map(|i| ChunkRef {
                    id: data,
                    offset: i * MIB,
                    len: MIB as u32,
                })
                .collect(),
        );
        let root = put_tree(w, vec![n]);
        set_root(rec, root);
    });
    craft(&store, "b1", "lists", |w, rec| {
        let data = w.add(BlobKind::Data, &vec![7u8; MIB as usize]).unwrap().id;
        let list: Vec<RelChunk> = (0..2048)
            .map(|_| RelChunk {
                id: data,
                gap: 0,
                len: MIB as u32,
            })
            .collect();
        let lid = w
            .add(
                BlobKind::ChunkList,
                &model::encode_chunk_list(&list).unwrap(),
            )
            .unwrap()
            .id;
        let mut n = Node::new(b"small".to_vec(), NodeKind::File);
        n.mode = 0o644;
        n.size = 1;
        n.content = Content::Lists(vec![model::ListRef {
            id: lid,
            offset: 0,
            span: 1,
            count: 2048,
        }]);
        let root = put_tree(w, vec![n]);
        set_root(rec, root);
    });
    for b in ["inline", "lists"] {
        let out = dir.path().join(format!("out-{b}"));
        let s = restore::restore(&store, "v", b, None, &out).unwrap();
        assert!(s.bytes < MIB, "{b}: {} bytes written", s.bytes);
        assert!(
            s.errors
                .iter()
                // Refused where the tree is decoded (a chunk that "does not
                // fit", a list that "claims" more chunks than its span) or,
                // past that, where restore writes ("beyond").
                .any(|e| {
                    e.contains("small")
                        && ["beyond", "does not fit", "claims"]
                            .iter()
                            .any(|w| e.contains(w))
                }),
            "{b}: {:?}",
            s.errors
        );
        // Nothing of size is on disk.
        let used: u64 = walk(&out)
            .iter()
            .map(|p| std::fs::symlink_metadata(p).unwrap().blocks() * 512)
            .sum();
        assert!(used < MIB, "{b}: {used} bytes on disk");
    }
}

/// 40 trees each pointing twice at the next would make 2^40 directories:
/// restore stops, naming the backup, once it passes the record's totals.
#[test]
fn shared_subtrees_stop_at_the_recorded_totals() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    let store = backed_up(dir.path(), &src);
    craft(&store, "b1", "shared", |w, rec| {
        let mut t = put_tree(w, vec![]);
        for _ in 0..40 {
            t = put_tree(w, vec![dir_node("a", t), dir_node("b", t)]);
        }
        set_root(rec, t);
    });
    let out = dir.path().join("out");
    let r = cbrfs_within(
        30,
        move |store: Store, out: PathBuf| {
            restore::restore(&store, "v", "shared", None, &out).map(|s| s.dirs)
        },
        store,
        out.clone(),
    );
    let e = r.unwrap_err();
    assert!(
        e.to_string().contains("backup shared") && e.to_string().contains("more than"),
        "{e}"
    );
    assert!(walk(&out).len() < 100);
}

/// Run `f(store, out)` on a thread, failing the test after `secs`.
fn cbrfs_within<R: Send + 'static>(
    secs: u64,
    f: impl FnOnce(Store, PathBuf) -> R + Send + 'static,
    store: Store,
    out: PathBuf,
) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f(store, out));
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .expect("restore did not finish in time")
}

/// 10,000 levels of nesting restore on a thread with the default 2 MiB
/// stack and the default open-file limit: no stack overflow, no running
/// out of descriptors.
#[test]
fn ten_thousand_levels_restore_without_overflowing_the_stack() {
    // No raised open-file limit: restore keeps a bounded window of the
    // path's directories open, whatever the depth.
    let dir = tempfile::tempdir().unwrap();
    let store = one_file_backed_up(dir.path(), "leaf", b"bottom");
    const LEVELS: u64 = 10_000;
    craft(&store, "b1", "deep", |w, rec| {
        let root = rec.resources[0].root;
        let mut t = root; // the real tree with "leaf"
        for _ in 0..LEVELS {
            t = put_tree(w, vec![dir_node("d", t)]);
        }
        set_root(rec, t);
        rec.resources[0].stats.dirs = LEVELS;
    });
    let out = dir.path().join("out");
    let r = cbrfs_within(
        300,
        move |store: Store, out: PathBuf| {
            restore::restore(&store, "v", "deep", None, &out).map(|s| (s.dirs, s.files, s.errors))
        },
        store,
        out,
    );
    let (dirs, files, errors) = r.unwrap();
    assert!(errors.is_empty(), "{:?}", &errors[..errors.len().min(3)]);
    assert_eq!((dirs, files), (LEVELS, 1));
}

/// In-place restore writes to the paths in the record: they are followed
/// from `/` one component at a time, and a symlink on the way (here the
/// member's parent directory, replaced after the backup by a link to
/// another directory) is an error naming it, with nothing written there.
#[test]
fn an_in_place_path_through_a_symlink_is_refused() {
    if !is_root() {
        return;
    }
    use cbrfs::engine::servers::{self, NewMember};
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir_all(real.join("app")).unwrap();
    std::fs::write(real.join("app/f"), b"orig").unwrap();
    std::fs::write(real.join("vol.img"), common::pseudo_random(64 << 10, 3)).unwrap();
    let store = Store::init(&dir.path().join("store")).unwrap();
    servers::define(
        &store,
        "srv",
        &[
            NewMember::Path(real.join("app")),
            NewMember::Disk(real.join("vol.img")),
        ],
        None,
        None,
        None,
    )
    .unwrap();
    vaults::create(
        &store,
        vaults::NewVault {
            name: Some("v".into()),
            vault_type: cbrfs::catalog::VaultType::Server,
            capacity: "10GB".into(),
            description: String::new(),
            tags: vec![],
            compression: "none".into(),
            encrypt: false,
        },
    )
    .unwrap();
    vaults::associate_server(&store, "v", "srv", vec![]).unwrap();
    take_backup(&store, "v", "b1");
    let in_place = RestoreOptions {
        in_place: true,
        ..Default::default()
    };

    let moved = dir.path().join("moved");
    std::fs::rename(&real, &moved).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("vol.img"), b"").unwrap();
    std::os::unix::fs::symlink(&elsewhere, &real).unwrap();
    let e = restore::restore_with(&store, "v", "b1", Some("srv"), Path::new("/"), &in_place)
        .unwrap_err();
    assert!(
        e.to_string().contains(&real.display().to_string())
            && e.to_string().contains("symbolic link"),
        "{e}"
    );
    assert_eq!(e.exit_code(), 2);
    let names: Vec<_> = std::fs::read_dir(&elsewhere)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("vol.img")]);
    assert_eq!(
        std::fs::metadata(elsewhere.join("vol.img")).unwrap().len(),
        0
    );

    // The real directory back in its place: the same restore works.
    std::fs::remove_file(&real).unwrap();
    std::fs::rename(&moved, &real).unwrap();
    std::fs::write(real.join("app/f"), b"changed").unwrap();
    let s =
        restore::restore_with(&store, "v", "b1", Some("srv"), Path::new("/"), &in_place).unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(std::fs::read(real.join("app/f")).unwrap(), b"orig");
}

/// Entries named `..`-something in a crafted tree are never created
/// outside the target, whichever layer refuses them.
#[test]
fn entries_with_escaping_names_stay_inside_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let store = one_file_backed_up(dir.path(), "f", b"x");
    craft(&store, "b1", "escape", |w, rec| {
        let mut f = Node::new(b"../escaped".to_vec(), NodeKind::File);
        f.mode = 0o644;
        let mut d = Node::new(b"..".to_vec(), NodeKind::Dir);
        d.mode = 0o755;
        let root = put_tree(w, vec![f, d]);
        set_root(rec, root);
        rec.resources[0].stats.files_new = 10;
        rec.resources[0].stats.dirs = 10;
    });
    let out = dir.path().join("deeper/out");
    let s = restore::restore(&store, "v", "escape", None, &out).unwrap();
    assert!(!s.errors.is_empty());
    assert!(!dir.path().join("deeper/escaped").exists());
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}
