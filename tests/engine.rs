//! The engine's verb calls, in process, without root, FUSE or the CLI: each
//! refuses bad input with an error of the kind that maps to exit code 2,
//! records its task with its final state, and returns the typed report
//! that `--json` prints (docs/JSON.md).

mod common;

use cbrfs::catalog::{now_ns, Store, VaultType};
use cbrfs::engine::{backup_records, check, policy, prune, restore, servers, vaults};
use cbrfs::error::{Error, Kind};
use cbrfs::policy::retention::RetentionArgs;
use cbrfs::tasks;
use common::{filesystem_vault, take_backup};
use std::path::{Path, PathBuf};

const DAY: i64 = 86_400 * 1_000_000_000;

/// A store in a temporary directory, with a source tree `src` beside it.
fn setup() -> (tempfile::TempDir, Store, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    std::fs::write(src.join("sub/b.bin"), common::pseudo_random(70_000, 7)).unwrap();
    let store = Store::init(&dir.path().join("store")).unwrap();
    (dir, store, src)
}

/// Assert `r` failed with `kind`, exit code 2 (bad input, no such object,
/// conflict), and a message containing `says`.
fn refused<T: std::fmt::Debug>(r: Result<T, Error>, kind: Kind, says: &str) -> Error {
    let e = r.expect_err("accepted");
    assert_eq!(e.kind(), kind, "{e}");
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains(says), "{e:?} does not say {says:?}");
    e
}

/// The (type, status) of every task of `vault`, oldest first.
fn task_log(store: &Store, vault: &str) -> Vec<(String, String)> {
    let mut f = tasks::Filter::new(Some(vault.into()), None, None).unwrap();
    f.since_ns = None;
    let mut all: Vec<_> = tasks::query(store, &f)
        .unwrap()
        .into_iter()
        .map(|t| (t.task_type.to_string(), t.status.to_string()))
        .collect();
    all.reverse();
    all
}

fn new_vault(name: &str, capacity: &str, tags: &[&str], compression: &str) -> vaults::NewVault {
    vaults::NewVault {
        name: Some(name.into()),
        vault_type: VaultType::Filesystem,
        capacity: capacity.into(),
        description: String::new(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        compression: compression.into(),
        encrypt: false,
    }
}

/// A server vault "sv" that protects server `server`.
fn server_vault(store: &Store, server: &str) {
    vaults::create(
        store,
        vaults::NewVault {
            vault_type: VaultType::Server,
            ..new_vault("sv", "20GB", &[], "zstd")
        },
    )
    .unwrap();
    vaults::associate(
        store,
        "sv",
        vaults::Associate {
            server: Some(server.into()),
            ..Default::default()
        },
    )
    .unwrap();
}

fn associate(store: &Store, vault: &str, src: &Path) {
    vaults::associate(
        store,
        vault,
        vaults::Associate {
            path: Some(src.to_path_buf()),
            name: Some("src".into()),
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn vault_create_update_delete_refuse_bad_input() {
    let (_d, store, src) = setup();
    refused(
        vaults::create(&store, new_vault("bad name", "20GB", &[], "zstd")),
        Kind::Invalid,
        "vault name",
    );
    refused(
        vaults::create(&store, new_vault("v", "5GB", &[], "zstd")),
        Kind::Invalid,
        "5GB",
    );
    refused(
        vaults::create(&store, new_vault("v", "20GB", &[], "lz4")),
        Kind::Invalid,
        "compression \"lz4\" is invalid",
    );
    refused(
        vaults::create(&store, new_vault("v", "20GB", &["k=1", "k=2"], "zstd")),
        Kind::Invalid,
        "given twice",
    );
    assert!(vaults::list(&store, &[]).unwrap().vaults.is_empty());

    let v = vaults::create(&store, new_vault("v", "20GB", &["env=prod"], "none")).unwrap();
    assert_eq!(v.capacity_gb, 20);
    refused(
        vaults::create(&store, new_vault("v", "20GB", &[], "zstd")),
        Kind::Conflict,
        "v",
    );
    let shrink = vaults::VaultUpdate {
        capacity: Some("10GB".into()),
        ..Default::default()
    };
    let e = refused(
        vaults::update(&store, "v", shrink),
        Kind::Invalid,
        "expanded",
    );
    assert_eq!(e.cbr_code(), Some("BackupService.6101"));
    let threshold = vaults::VaultUpdate {
        threshold: Some(0),
        ..Default::default()
    };
    refused(
        vaults::update(&store, "v", threshold),
        Kind::Invalid,
        "1 to 100",
    );
    refused(
        vaults::update(&store, "nope", Default::default()),
        Kind::NotFound,
        "nope",
    );
    // A refused update changed nothing.
    assert_eq!(vaults::show(&store, "v").unwrap().capacity_gb, 20);

    // Options that do not apply to what is associated are refused, not
    // ignored.
    refused(
        vaults::associate(
            &store,
            "v",
            vaults::Associate {
                disk: Some(src.join("a.txt")),
                exclude_caches: true,
                ..Default::default()
            },
        ),
        Kind::Invalid,
        "apply to a directory resource",
    );
    associate(&store, "v", &src);
    take_backup(&store, "v", "b1");

    // A vault holding backups goes only with force, and the deletion is a
    // task.
    let e = refused(
        vaults::delete(&store, "v", false),
        Kind::Conflict,
        "--force",
    );
    assert_eq!(e.cbr_code(), Some("BackupService.7301"));
    assert_eq!(vaults::delete(&store, "v", true).unwrap(), 1);
    refused(vaults::show(&store, "v"), Kind::NotFound, "v");
    assert_eq!(
        task_log(&store, "v").last().unwrap(),
        &("delete_vault".to_string(), "success".to_string())
    );
}

#[test]
fn vault_list_filters_by_tag_and_reports_what_json_prints() {
    let (_d, store, src) = setup();
    vaults::create(
        &store,
        new_vault("a", "20GB", &["env=prod", "team=x"], "zstd"),
    )
    .unwrap();
    vaults::create(&store, new_vault("b", "30GB", &["env=test"], "none")).unwrap();
    associate(&store, "a", &src);
    let names = |tags: &[&str]| -> Vec<String> {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        vaults::list(&store, &tags)
            .unwrap()
            .vaults
            .into_iter()
            .map(|v| v.name)
            .collect()
    };
    assert_eq!(names(&[]), ["a", "b"]);
    assert_eq!(names(&["env"]), ["a", "b"]);
    assert_eq!(names(&["env=prod"]), ["a"]);
    assert_eq!(names(&["env=prod", "team"]), ["a"]);
    assert!(names(&["nope"]).is_empty());
    refused(
        vaults::list(&store, &["bad key=1".into()]),
        Kind::Invalid,
        "tag",
    );

    let a = vaults::show(&store, "a").unwrap();
    let j = serde_json::to_value(&a).unwrap();
    let mut keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "auto_expand",
            "backups",
            "capacity_gb",
            "compression",
            "created",
            "description",
            "encrypted",
            "free_bytes",
            "name",
            "policy",
            "resources",
            "tags",
            "threshold_percent",
            "type",
            "used_bytes"
        ]
    );
    assert_eq!(j["type"], "filesystem");
    assert_eq!(
        j["tags"][1],
        serde_json::json!({"key": "team", "value": "x"})
    );
    assert_eq!(j["resources"][0]["name"], "src");
    assert_eq!(j["resources"][0]["size_bytes"], 70_005);
    assert_eq!(a.free_bytes, a.capacity_bytes() - a.used_bytes);
}

#[test]
fn backup_list_show_restore_delete_round_trip() {
    let (d, store, src) = setup();
    filesystem_vault(&store, "v", "", "zstd");
    associate(&store, "v", &src);
    take_backup(&store, "v", "b1");
    std::fs::write(src.join("a.txt"), b"alpha, changed").unwrap();
    take_backup(&store, "v", "b2");

    let l = backup_records::list(&store, Some("v")).unwrap();
    assert!(l.damaged.is_empty());
    let names: Vec<&str> = l.backups.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["b1", "b2"]);
    refused(
        backup_records::list(&store, Some("nope")),
        Kind::NotFound,
        "nope",
    );

    let b2 = backup_records::show(&store, "v", "b2").unwrap();
    assert_eq!(b2.status, "available");
    assert_eq!(b2.backup_type, "incremental");
    assert_eq!(b2.origin, "manual");
    assert_eq!(b2.resources[0].parent.as_deref(), Some("b1"));
    assert_eq!(b2.stats.files_changed, 1);
    let j = serde_json::to_value(&b2).unwrap();
    assert!(j.get("dry_run").is_none(), "dry_run only on a dry run: {j}");
    assert!(j["resources"][0].get("source_bytes").is_none(), "{j}");
    assert_eq!(j["resources"][0]["type"], "incremental");
    refused(
        backup_records::show(&store, "v", "nope"),
        Kind::NotFound,
        "nope",
    );

    // Restore b1 ("latest" is b2) and find the first contents.
    let to = d.path().join("restored");
    let progress = cbrfs::engine::progress::Progress::default();
    let req = restore::RestoreRequest {
        vault: "v".into(),
        backup: "b1".into(),
        to: Some(to.clone()),
        ..Default::default()
    };
    let r = restore::run(&store, &req, &progress).unwrap();
    assert_eq!(r.target, to);
    assert!(r.stats.errors.is_empty(), "{:?}", r.stats.errors);
    assert_eq!(r.stats.files, 2);
    assert_eq!(std::fs::read(to.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(
        std::fs::read(to.join("sub/b.bin")).unwrap(),
        common::pseudo_random(70_000, 7)
    );
    // A restore into a non-empty directory is refused, and the refusal is
    // a failed task.
    refused(restore::run(&store, &req, &progress), Kind::Invalid, "");

    backup_records::delete(&store, "v", "b1").unwrap();
    refused(
        backup_records::delete(&store, "v", "b1"),
        Kind::NotFound,
        "b1",
    );
    let names: Vec<String> = backup_records::list(&store, None)
        .unwrap()
        .backups
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["b2"]);

    let log = task_log(&store, "v");
    let want: Vec<(&str, &str)> = vec![
        ("backup", "success"),
        ("backup", "success"),
        ("restore", "success"),
        ("restore", "failed"),
        ("delete_backup", "success"),
        ("delete_backup", "failed"),
    ];
    let got: Vec<(&str, &str)> = log.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(got, want);
}

#[test]
fn prune_and_check_report_and_record_their_tasks() {
    let (_d, store, src) = setup();
    filesystem_vault(&store, "v", "", "none");
    associate(&store, "v", &src);
    take_backup(&store, "v", "b1");
    std::fs::write(src.join("sub/b.bin"), common::pseudo_random(90_000, 8)).unwrap();
    take_backup(&store, "v", "b2");
    backup_records::delete(&store, "v", "b1").unwrap();

    assert_eq!(cbrfs::engine::vault_targets(&store, None).unwrap(), ["v"]);
    refused(
        cbrfs::engine::vault_targets(&store, Some("nope")),
        Kind::NotFound,
        "nope",
    );
    let progress = cbrfs::engine::progress::Progress::default();
    let dry = prune::prune_vault(&store, "v", true, 20, &progress).unwrap();
    assert!(dry.dry_run);
    assert!(dry.bytes_after < dry.bytes_before, "{dry:?}");
    let real = prune::prune_vault(&store, "v", false, 20, &progress).unwrap();
    assert!(!real.dry_run);
    assert_eq!(
        real.bytes_after, dry.bytes_after,
        "the dry run predicted it"
    );
    refused(
        prune::prune_vault(&store, "v", false, 101, &progress),
        Kind::Invalid,
        "101",
    );
    // The dry run changed nothing and is no task; the real prune and the
    // refused one are.
    let log = task_log(&store, "v");
    let prunes: Vec<&str> = log
        .iter()
        .filter(|(t, _)| t == "prune")
        .map(|(_, s)| s.as_str())
        .collect();
    assert_eq!(prunes, ["success", "failed"]);

    let reports = check::check(&store, None, true).unwrap();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].problems.is_empty(), "{:?}", reports[0].problems);
    assert_eq!(reports[0].backups, 1);
    assert!(reports[0].blobs_read > 0);
}

#[test]
fn repair_rebuilds_a_lost_index_of_the_vaults_asked_for() {
    let (d, store, src) = setup();
    filesystem_vault(&store, "v", "", "none");
    filesystem_vault(&store, "w", "", "none");
    associate(&store, "v", &src);
    take_backup(&store, "v", "b1");
    // The index is lost: check says so, repair rebuilds it from the packs.
    let index = d.path().join("store/vaults/v/index");
    for e in std::fs::read_dir(&index).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let before = check::check(&store, Some("v"), false).unwrap();
    assert!(!before[0].problems.is_empty(), "a lost index went unseen");

    refused(
        check::repair_vaults(&store, Some("nope"), |_| {
            panic!("repaired a vault that is not there")
        }),
        Kind::NotFound,
        "nope",
    );
    let mut seen = Vec::new();
    let reports = check::repair_vaults(&store, None, |r| seen.push(r.vault.clone())).unwrap();
    assert_eq!(
        seen,
        ["v", "w"],
        "every vault, each reported as it was done"
    );
    assert_eq!(reports.len(), 2);
    assert!(
        reports[0].blobs > 0 && reports[0].problems.is_empty(),
        "{:?}",
        reports[0]
    );
    assert_eq!(reports[1].blobs, 0);
    let after = check::check(&store, None, true).unwrap();
    assert!(after.iter().all(|r| r.problems.is_empty()), "{after:?}");
}

#[test]
fn policy_report_and_a_due_pass() {
    let (_d, store, src) = setup();
    filesystem_vault(&store, "v", "", "none");
    associate(&store, "v", &src);
    let spec = |schedule: &str| policy::PolicySpec {
        schedules: vec![schedule.into()],
        retention: RetentionArgs {
            keep_last: Some(2),
            timezone: Some("UTC+08:00".into()),
            ..Default::default()
        },
        full_every: None,
        disabled: false,
    };
    refused(
        policy::create(&store, Some("p".into()), spec("FREQ=SOMETIMES")),
        Kind::Invalid,
        "",
    );
    policy::create(
        &store,
        Some("p".into()),
        spec("FREQ=DAILY;BYHOUR=3;BYMINUTE=0"),
    )
    .unwrap();
    refused(policy::apply(&store, "p", "nope"), Kind::NotFound, "nope");
    policy::apply(&store, "p", "v").unwrap();

    let p = policy::show(&store, "p").unwrap();
    assert_eq!(p.vaults, ["v"]);
    assert_eq!(p.timezone.as_deref(), Some("UTC+08:00"));
    assert_eq!(p.next.len(), 5);
    assert!(
        p.next_local[0].ends_with("03:00:00+08:00"),
        "{:?}",
        p.next_local
    );
    assert_eq!(policy::list(&store).unwrap(), [p]);

    let reports = policy::run_due(&store, now_ns() + 2 * DAY).unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].outcome.starts_with("backed up "), "{reports:?}");
    let made = backup_records::list(&store, Some("v")).unwrap().backups;
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].origin, "policy");
    assert_eq!(made[0].policy.as_deref(), Some("p"));
    assert!(task_log(&store, "v").contains(&("backup".into(), "success".into())));
}

#[test]
fn task_filters_refuse_what_no_task_has() {
    let (_d, store, _src) = setup();
    refused(
        tasks::Filter::new(None, Some("nope".into()), None),
        Kind::Invalid,
        "task type \"nope\" is invalid",
    );
    refused(
        tasks::Filter::new(None, None, Some("done".into())),
        Kind::Invalid,
        "task status \"done\" is invalid",
    );
    refused(
        policy::parse_instant("yesterday"),
        Kind::Invalid,
        "RFC 3339",
    );
    assert_eq!(
        policy::parse_instant("1970-01-02").unwrap(),
        DAY,
        "a date is its midnight UTC"
    );
    filesystem_vault(&store, "v", "", "none");
    refused(vaults::delete(&store, "nope", true), Kind::NotFound, "nope");
    vaults::delete(&store, "v", false).unwrap();
    let mut f =
        tasks::Filter::new(None, Some("delete_vault".into()), Some("success".into())).unwrap();
    assert_eq!(tasks::query(&store, &f).unwrap().len(), 1);
    f.since_ns = Some(now_ns() + DAY);
    assert!(tasks::query(&store, &f).unwrap().is_empty());
}

#[test]
fn servers_report_their_vault() {
    let (_d, store, src) = setup();
    servers::define(
        &store,
        "s1",
        &[servers::NewMember::Path(src.clone())],
        Some("true".into()),
        None,
        Some(5),
    )
    .unwrap();
    refused(
        servers::define(&store, "s2", &[], None, None, None),
        Kind::Invalid,
        "",
    );
    let before = servers::show(&store, "s1").unwrap();
    assert_eq!(before.vault, None);
    server_vault(&store, "s1");
    let all = servers::list(&store).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].vault.as_deref(), Some("sv"));
    assert_eq!(all[0].members[0].kind, "directory");
    assert_eq!(all[0].hook_timeout_s, 5);
    refused(servers::show(&store, "nope"), Kind::NotFound, "nope");
}

#[test]
fn backup_wait_follows_the_status_file() {
    use cbrfs::engine::status::{self, RunStatus, Status};
    use std::time::Duration;
    let (_d, store, src) = setup();
    filesystem_vault(&store, "v", "", "none");
    associate(&store, "v", &src);
    take_backup(&store, "v", "done");
    backup_records::wait(&store, "v", "done", None, |_| panic!("no status")).unwrap();
    refused(
        backup_records::wait(&store, "v", "bad name", None, |_| {}),
        Kind::Invalid,
        "backup name",
    );
    let e = refused(
        backup_records::wait(&store, "v", "ghost", None, |_| {}),
        Kind::NotFound,
        "does not exist and is not running",
    );
    assert_eq!(e.cbr_code(), Some("BackupService.6200"));

    let running = |status_: RunStatus, pid: u32, error: Option<&str>| Status {
        backup: "b".into(),
        status: status_,
        progress: 40,
        bytes_read: 1,
        files: 2,
        pid,
        started: "2026-11-24T04:25:16Z".into(),
        error: error.map(str::to_string),
    };
    status::write(
        &store,
        "v",
        &running(RunStatus::Protecting, std::process::id(), None),
    )
    .unwrap();
    let mut seen = Vec::new();
    let e = backup_records::wait(&store, "v", "b", Some(Duration::from_millis(250)), |s| {
        seen.push(s.progress)
    })
    .unwrap_err();
    assert_eq!(e.exit_code(), 1, "{e}");
    assert!(e.to_string().contains("after the timeout"), "{e}");
    assert!(
        !seen.is_empty() && seen.iter().all(|p| *p == 40),
        "{seen:?}"
    );
    // A timeout too long for the clock is no deadline, not a panic: the
    // backup's failure ends the wait.
    status::write(
        &store,
        "v",
        &running(RunStatus::Error, std::process::id(), Some("disk gone")),
    )
    .unwrap();
    let e = backup_records::wait(&store, "v", "b", Some(Duration::MAX), |_| {}).unwrap_err();
    assert!(e.to_string().contains("failed: disk gone"), "{e}");
    status::write(&store, "v", &running(RunStatus::Protecting, 0, None)).unwrap();
    let e = backup_records::wait(&store, "v", "b", None, |_| {}).unwrap_err();
    assert!(e.to_string().contains("its process 0 ended"), "{e}");
}

#[test]
fn dissociate_takes_the_resource_out_of_its_backups_only_with_force() {
    let (d, store, src) = setup();
    filesystem_vault(&store, "v", "", "none");
    associate(&store, "v", &src);
    let other = d.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("o"), b"o").unwrap();
    vaults::associate(
        &store,
        "v",
        vaults::Associate {
            path: Some(other),
            name: Some("other".into()),
            ..Default::default()
        },
    )
    .unwrap();
    take_backup(&store, "v", "both");
    refused(
        vaults::dissociate(&store, "v", "nope", true),
        Kind::NotFound,
        "nope",
    );
    let e = refused(
        vaults::dissociate(&store, "v", "other", false),
        Kind::Conflict,
        "add --force",
    );
    assert_eq!(e.cbr_code(), Some("BackupService.7301"));
    // With force: the backup keeps its other resource, so it stays.
    assert!(vaults::dissociate(&store, "v", "other", true)
        .unwrap()
        .is_empty());
    let b = backup_records::show(&store, "v", "both").unwrap();
    let names: Vec<&str> = b.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["src"]);
    // The last resource goes with the backups that held only it.
    assert_eq!(
        vaults::dissociate(&store, "v", "src", true).unwrap(),
        ["both"]
    );
    assert!(backup_records::list(&store, Some("v"))
        .unwrap()
        .backups
        .is_empty());
    let removals: Vec<String> = task_log(&store, "v")
        .into_iter()
        .filter(|(t, _)| t == "remove_resource")
        .map(|(_, s)| s)
        .collect();
    assert_eq!(removals, ["failed", "failed", "success", "success"]);
}

#[test]
fn policy_and_server_changes_refuse_bad_input() {
    let (_d, store, src) = setup();
    filesystem_vault(&store, "v", "", "none");
    let spec = policy::PolicySpec {
        schedules: vec!["FREQ=DAILY;BYHOUR=1;BYMINUTE=0".into()],
        retention: RetentionArgs {
            keep_days: Some(7),
            ..Default::default()
        },
        full_every: None,
        disabled: false,
    };
    policy::create(&store, Some("p".into()), spec.clone()).unwrap();
    refused(
        policy::create(&store, Some("p".into()), spec),
        Kind::Conflict,
        "p",
    );
    refused(
        policy::update(
            &store,
            "p",
            policy::PolicyUpdate {
                full_every: Some(-5),
                ..Default::default()
            },
        ),
        Kind::Invalid,
        "",
    );
    refused(
        policy::update(&store, "nope", Default::default()),
        Kind::NotFound,
        "nope",
    );
    let e = refused(policy::remove(&store, "v"), Kind::NotFound, "has no policy");
    assert_eq!(e.cbr_code(), Some("BackupService.6000"));
    policy::apply(&store, "p", "v").unwrap();
    assert!(
        !policy::update(
            &store,
            "p",
            policy::PolicyUpdate {
                enabled: Some(false),
                ..Default::default()
            }
        )
        .unwrap()
        .enabled
    );
    assert_eq!(policy::delete(&store, "p").unwrap(), ["v"]);
    assert_eq!(vaults::show(&store, "v").unwrap().policy, None);
    refused(policy::show(&store, "p"), Kind::NotFound, "p");

    // The same server twice: the second is a conflict.
    let define_s = || {
        servers::define(
            &store,
            "s",
            &[servers::NewMember::Path(src.clone())],
            None,
            None,
            None,
        )
    };
    define_s().unwrap();
    refused(define_s(), Kind::Conflict, "s");
    server_vault(&store, "s");
    refused(
        servers::delete(&store, "s"),
        Kind::Conflict,
        "dissociate it first",
    );
    vaults::dissociate(&store, "sv", "s", false).unwrap();
    servers::delete(&store, "s").unwrap();
    assert!(servers::list(&store).unwrap().is_empty());
}
