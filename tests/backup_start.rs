//! A backup's start, whoever asks for it (`backup create`, the mount's
//! `mkdir`, a policy pass): the engine records a refused backup in the task
//! log itself, and a status file that cannot be written is logged without
//! failing the backup.

mod common;

use cbrfs::catalog::Store;
use cbrfs::engine::backup::{self, BackupOptions};
use cbrfs::engine::vaults;
use cbrfs::error::Kind;
use cbrfs::model::Origin;
use cbrfs::tasks::{self, Task, TaskState, TaskType};
use common::{filesystem_vault, take_backup};
use std::sync::Mutex;

/// The log lines of this test binary, kept to be read by the tests.
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            LINES
                .lock()
                .unwrap()
                .push(format!("{} {}", r.level(), r.args()));
        }
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

fn capture_log() {
    // Once per binary; the tests of this file share it.
    if log::set_logger(&CAPTURE).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// A store with vault `v` holding one resource.
fn store_with_vault(dir: &std::path::Path) -> Store {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"some bytes").unwrap();
    let store = Store::init(&dir.join("store")).unwrap();
    filesystem_vault(&store, "v", "", "zstd");
    vaults::associate_path(&store, "v", &src, Some("data".into()), vec![]).unwrap();
    store
}

fn backup_tasks(store: &Store) -> Vec<Task> {
    let mut t: Vec<Task> = tasks::list(store)
        .unwrap()
        .into_iter()
        .filter(|t| t.task_type == TaskType::Backup)
        .collect();
    t.sort_by_key(|t| t.started_ns);
    t
}

fn opts(origin: Origin, name: Option<&str>) -> BackupOptions {
    BackupOptions {
        name: name.map(str::to_string),
        origin: Some(origin),
        ..Default::default()
    }
}

/// Each caller only calls `prepare`; the refusal is in the task log with
/// the fields each caller recorded before: no backup named for `backup
/// create`, the directory's name for `mkdir`, the time point for a policy,
/// whose busy vault is a skipped point rather than a failure.
#[test]
fn a_refused_backup_is_recorded_by_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_vault(dir.path());
    take_backup(&store, "v", "b1");
    let before = backup_tasks(&store).len();

    // The name is taken: refused as `backup create` and as `mkdir`.
    let e = backup::prepare(&store, "v", opts(Origin::Manual, Some("b1"))).err();
    assert_eq!(e.map(|e| e.kind()), Some(Kind::Conflict));
    let e = backup::prepare(&store, "v", opts(Origin::Mount, Some("b1"))).err();
    assert_eq!(e.map(|e| e.kind()), Some(Kind::Conflict));
    let t = backup_tasks(&store);
    assert_eq!(t.len(), before + 2, "{t:#?}");
    let (manual, mount) = (&t[before], &t[before + 1]);
    for r in [manual, mount] {
        assert_eq!(r.status, TaskState::Failed);
        assert_eq!(r.vault, "v");
        assert!(
            r.message
                .as_deref()
                .unwrap_or("")
                .contains("already exists"),
            "{r:?}"
        );
    }
    assert_eq!(manual.backup, None);
    assert_eq!(mount.backup.as_deref(), Some("b1"));

    // The vault is busy: a failure for `backup create`, with CBR's code; a
    // skipped time point for a policy, dated at the point.
    let lock = store.try_backup_lock("v").unwrap();
    let e = backup::prepare(&store, "v", opts(Origin::Manual, None)).err();
    assert_eq!(e.map(|e| e.kind()), Some(Kind::Busy));
    let point = 1_700_000_000_000_000_000;
    let e = backup::prepare(
        &store,
        "v",
        BackupOptions {
            policy: Some("nightly".into()),
            at_ns: Some(point),
            ..opts(Origin::Policy, None)
        },
    )
    .err()
    .expect("refused: the vault is busy");
    assert_eq!(e.kind(), Kind::Busy);
    let why = "policy nightly: time point skipped: the vault's previous backup is still running";
    assert_eq!(e.to_string(), why);
    drop(lock);
    let t = backup_tasks(&store);
    assert_eq!(t.len(), before + 4, "{t:#?}");
    let busy = t
        .iter()
        .find(|t| t.status == TaskState::Failed && t.error_code.is_some());
    let busy = busy.expect("the busy refusal of backup create");
    assert_eq!(busy.error_code.as_deref(), Some("BackupService.6125"));
    assert_eq!(busy.backup, None);
    let skipped: Vec<&Task> = t
        .iter()
        .filter(|t| t.status == TaskState::Skipped)
        .collect();
    assert_eq!(skipped.len(), 1, "{t:#?}");
    assert_eq!(skipped[0].message.as_deref(), Some(why));
    assert_eq!(skipped[0].started_ns, point);

    // A vault that does not exist gets no task.
    let e = backup::prepare(&store, "nope", opts(Origin::Manual, None)).err();
    assert_eq!(e.map(|e| e.kind()), Some(Kind::NotFound));
    assert!(tasks::list(&store)
        .unwrap()
        .iter()
        .all(|t| t.vault != "nope"));
}

/// The status file cannot be written (its directory is a file here, as a
/// full disk would refuse it): the backup still succeeds, and the log says
/// so once, not at every rewrite; the status it could not remove is
/// logged too.
#[test]
fn a_status_file_that_cannot_be_written_is_logged_and_the_backup_succeeds() {
    capture_log();
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_vault(dir.path());
    std::fs::write(store.vault_dir("v").join("running"), b"in the way").unwrap();
    let rec = take_backup(&store, "v", "b1");
    assert_eq!(rec.name, "b1");
    assert!(store.backup_path("v", "b1").exists());
    let lines: Vec<String> = LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("backup b1"))
        .cloned()
        .collect();
    let not_written = lines
        .iter()
        .filter(|l| l.starts_with("WARN") && l.contains("status file of backup b1 is not written"))
        .count();
    // Written when the backup was accepted and again when it started:
    // one line.
    assert_eq!(not_written, 1, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with("WARN")
            && l.contains("status file of committed backup b1 is not removed")),
        "{lines:#?}"
    );
}
