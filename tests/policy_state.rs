//! Errors that were swallowed (issue 13): a policy pass whose state cannot
//! be written fails before anything is backed up (else a time point would
//! run twice), and backups that cannot be listed fail a policy's point and
//! a backup, instead of being taken for an empty vault.

mod common;

use cbrfs::catalog::now_ns;
use cbrfs::engine::policy;
use common::store_with_daily_policy;

const DAY: i64 = 86_400 * 1_000_000_000;

/// Vault "v"'s `backups/` moved to `backups.real`, with a symlink to it in
/// its place (which the store does not follow); returns the real one.
fn backups_behind_a_symlink(store: &cbrfs::catalog::Store) -> std::path::PathBuf {
    let backups = store.vault_dir("v").join("backups");
    let aside = store.vault_dir("v").join("backups.real");
    std::fs::rename(&backups, &aside).unwrap();
    std::os::unix::fs::symlink(&aside, &backups).unwrap();
    aside
}

/// The state file cannot be written (a directory in its place): the pass
/// fails naming it and takes no backup, so no point can run twice; once
/// it can be written, the point runs, once.
#[test]
fn a_state_that_cannot_be_written_fails_the_pass_before_any_backup() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_daily_policy(dir.path(), "first");
    // A pass dated ahead keeps its state in policy-state-simulated.json.
    let state = store.vault_dir("v").join("policy-state-simulated.json");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("keep"), b"").unwrap();
    let at = now_ns() + 3 * DAY;
    let e = policy::run_due(&store, at).expect_err("the pass ignored its state write");
    assert!(
        e.to_string().contains("policy-state-simulated.json"),
        "the error does not name the state file: {e}"
    );
    assert_eq!(
        store.backup_names("v").unwrap().len(),
        1,
        "a backup ran whose time point was not recorded"
    );
    std::fs::remove_dir_all(&state).unwrap();
    let first = policy::run_due(&store, at).unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].outcome.starts_with("backed up"), "{first:?}");
    let again = policy::run_due(&store, at).unwrap();
    assert!(again.is_empty(), "the point ran twice: {again:?}");
    assert_eq!(store.backup_names("v").unwrap().len(), 2);
}

/// Backups that cannot be listed (a symlink in place of `backups/`) make
/// the point fail, naming the directory: they were taken for none, so the
/// backup would have been a full one and retention would have seen none.
#[test]
fn backups_that_cannot_be_listed_fail_the_point() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_daily_policy(dir.path(), "first");
    let aside = backups_behind_a_symlink(&store);
    let e = store.readable_backups("v").unwrap_err();
    assert!(e.to_string().contains("backups"), "{e}");
    let reports = policy::run_due(&store, now_ns() + 3 * DAY).unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(
        reports[0].outcome.starts_with("failed") && reports[0].outcome.contains("backups"),
        "{reports:?}"
    );
    assert_eq!(std::fs::read_dir(&aside).unwrap().count(), 1);
}

/// A backup builds on the vault's previous backups: when they cannot be
/// listed it fails, naming the directory, instead of taking the vault for
/// empty (a dry run, which does not clean the directory first, showed it).
#[test]
fn a_backup_whose_previous_backups_cannot_be_listed_fails() {
    use cbrfs::engine::backup::{self, BackupOptions};
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_daily_policy(dir.path(), "first");
    backups_behind_a_symlink(&store);
    let options = BackupOptions {
        dry_run: true,
        ..Default::default()
    };
    let e = match backup::prepare(&store, "v", options).and_then(|p| p.run()) {
        Ok(r) => panic!("the backup took the vault for empty: {r:?}"),
        Err(e) => e,
    };
    assert!(e.to_string().contains("backups"), "{e}");
}
