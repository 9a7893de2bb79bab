//! The enums of words (src/names.rs): serde writes each value as the word
//! of the enum's table, and a word not in it is refused with the message
//! the shell tests check.

use cbrfs::catalog::{Compression, MemberKind, VaultType};
use cbrfs::engine::status::RunStatus;
use cbrfs::error::Error;
use cbrfs::model::{Origin, ResourceKind};
use cbrfs::tasks::{TaskState, TaskType};

/// serde's word (what the files hold) is the table's, both ways, for every
/// value of every enum of words; `parse` takes each word back, and
/// `Display` shows it.
macro_rules! same_words {
    ($($t:ty),+) => {$(
        for v in <$t>::ALL {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.as_str()), "{}", stringify!($t));
            assert_eq!(serde_json::from_str::<$t>(&json).unwrap(), v);
            assert_eq!(<$t>::parse(v.as_str()).unwrap(), v);
            assert_eq!(v.to_string(), v.as_str());
        }
    )+};
}

#[test]
fn serde_writes_the_tables_words() {
    same_words!(
        VaultType,
        Compression,
        MemberKind,
        Origin,
        ResourceKind,
        TaskType,
        TaskState,
        RunStatus
    );
    // The words the files have always held, in the tables' order.
    let words = |all: &[&'static str]| all.join(" ");
    assert_eq!(
        words(&VaultType::ALL.map(VaultType::as_str)),
        "filesystem disk server"
    );
    assert_eq!(
        words(&Compression::ALL.map(Compression::as_str)),
        "zstd none"
    );
    assert_eq!(
        words(&MemberKind::ALL.map(MemberKind::as_str)),
        "directory disk"
    );
    assert_eq!(
        words(&Origin::ALL.map(Origin::as_str)),
        "manual mount policy"
    );
    assert_eq!(
        words(&ResourceKind::ALL.map(ResourceKind::as_str)),
        "directory disk server"
    );
    assert_eq!(
        words(&TaskType::ALL.map(TaskType::as_str)),
        "backup restore delete_backup prune delete_vault remove_resource retention capacity"
    );
    assert_eq!(
        words(&TaskState::ALL.map(TaskState::as_str)),
        "running success failed skipped"
    );
    assert_eq!(
        words(&RunStatus::ALL.map(RunStatus::as_str)),
        "protecting error"
    );
}

/// The errors tests/bad_input.sh, tests/tasks.sh and tests/engine.rs
/// check, word for word.
#[test]
fn a_word_not_in_the_table_is_refused_naming_the_words() {
    let msg = |e: Error| {
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.cbr_code(), Some("BackupService.9900"));
        e.to_string()
    };
    assert_eq!(
        msg(VaultType::parse("tape").unwrap_err()),
        "BackupService.9900: vault type \"tape\" is invalid: it is one of filesystem, disk, server"
    );
    assert_eq!(
        msg(Compression::parse("lz4").unwrap_err()),
        "BackupService.9900: compression \"lz4\" is invalid: it is zstd or none"
    );
    assert_eq!(
        msg(TaskType::parse("bogus").unwrap_err()),
        "BackupService.9900: task type \"bogus\" is invalid: it is one of backup, restore, \
         delete_backup, prune, delete_vault, remove_resource, retention, capacity"
    );
    assert_eq!(
        msg(TaskState::parse("done").unwrap_err()),
        "BackupService.9900: task status \"done\" is invalid: it is one of running, success, \
         failed, skipped"
    );
    // Other words a table gives parse too, and are not listed.
    assert_eq!(VaultType::parse("fs").unwrap(), VaultType::Filesystem);
    assert_eq!(
        VaultType::parse("file-system").unwrap(),
        VaultType::Filesystem
    );
    // A member is a directory or a disk, never a server.
    assert_eq!(MemberKind::from_name("server"), None);
    assert!(serde_json::from_str::<MemberKind>("\"server\"").is_err());
}
