//! The task log: one record per operation (backup, restore, backup delete,
//! prune, vault delete, resource removal, policy run), as CBR keeps tasks.
//! Each is `STORE/tasks/<id>.json`, rewritten atomically as it progresses;
//! records older than 30 days are removed when a new task starts.
//!
//! A running task names its process; a task whose process is gone is shown
//! as failed, so a killed backup never stays "running" forever.

use crate::catalog::{self, Store};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How long task records are kept.
pub const KEEP_DAYS: i64 = 30;

crate::names::words! {
    /// What a task did: the `type` of its record, as `task list --type`
    /// takes it (`ALL` in the order `task list --help` shows them).
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum TaskType("task type") {
        /// A backup (also a refused or skipped one).
        Backup = "backup",
        /// A restore.
        Restore = "restore",
        /// `backup delete`.
        DeleteBackup = "delete_backup",
        /// `prune`.
        Prune = "prune",
        /// `vault delete`.
        DeleteVault = "delete_vault",
        /// `vault dissociate`.
        RemoveResource = "remove_resource",
        /// A policy's retention.
        Retention = "retention",
        /// A capacity warning or automatic expansion.
        Capacity = "capacity",
    }
}

crate::names::words! {
    /// Where a task is: the `status` of its record, as `task list --status`
    /// takes it (`ALL` in the order `task list --help` shows them).
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum TaskState("task status") {
        /// Started and not ended (failed when its process is gone).
        Running = "running",
        /// Ended well.
        Success = "success",
        /// Ended with an error.
        Failed = "failed",
        /// Not run (a missed or busy time point).
        Skipped = "skipped",
    }
}

/// One task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// Id: start time and a random suffix, sortable.
    pub id: String,
    /// What it did.
    #[serde(rename = "type")]
    pub task_type: TaskType,
    /// The vault.
    pub vault: String,
    /// The resource, if one.
    pub resource: Option<String>,
    /// The backup, if one.
    pub backup: Option<String>,
    /// Where it is.
    pub status: TaskState,
    /// 0–100.
    pub progress: u8,
    /// Start, RFC 3339.
    pub started: String,
    /// Start, ns since the epoch (for sorting and `--since`).
    pub started_ns: i64,
    /// End, RFC 3339.
    pub ended: Option<String>,
    /// CBR error code, when it failed.
    pub error_code: Option<String>,
    /// What went wrong, or what happened (skipped, warnings).
    pub message: Option<String>,
    /// Process running it.
    pub pid: u32,
    /// When the record was written, ns since the epoch by the real clock,
    /// also for a simulated pass (`policy run-due --now`), whose
    /// `started_ns` is the simulated instant: expiry counts from this, so
    /// a simulated instant never expires real records (issue #16). 0 in
    /// records of older versions, which then count from `started_ns`.
    #[serde(default)]
    pub recorded_ns: i64,
    /// Requests and bytes the task asked of its vault's bucket, in this
    /// process, up to its end: from the vault's open in the process for a
    /// command's first task of the vault (the head, key slots fetched on
    /// a cold cache and the writer lease are its own), else from the
    /// task's start ([`Store::task_requests_mark`]); absent for a local
    /// vault and while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<crate::model::Requests>,
}

fn dir(store: &Store) -> PathBuf {
    store.root().join("tasks")
}

fn save(store: &Store, t: &Task) -> Result<()> {
    fsutil::create_dir_all(&dir(store))?;
    let json = serde_json::to_vec_pretty(t)
        .map_err(|e| Error::failed(format!("encode task {}: {e}", t.id)))?;
    fsutil::write_atomic(&dir(store).join(format!("{}.json", t.id)), &json)
}

/// A task being recorded: start it, update its progress, end it.
pub struct TaskHandle {
    store: Store,
    task: Task,
    /// Where the task's count of requests to a remote vault's bucket
    /// starts ([`Store::task_requests_mark`]).
    requests_before: Option<crate::model::Requests>,
}

/// Start a task (status `running`) at time `at_ns` (now, or a policy
/// pass's `--now`), counting its requests to a remote vault's bucket from
/// [`Store::task_requests_mark`].
pub fn start(
    store: &Store,
    task_type: TaskType,
    vault: &str,
    resource: Option<&str>,
    backup: Option<&str>,
    at_ns: i64,
) -> TaskHandle {
    let mark = store.task_requests_mark(vault);
    start_counting(store, task_type, vault, resource, backup, at_ns, mark)
}

/// [`start`], counting the task's requests from `mark`: the
/// [`Store::task_requests_mark`] its operation took before it opened the
/// vault or took its lease (a backup records its task only once accepted).
pub fn start_counting(
    store: &Store,
    task_type: TaskType,
    vault: &str,
    resource: Option<&str>,
    backup: Option<&str>,
    at_ns: i64,
    mark: Option<crate::model::Requests>,
) -> TaskHandle {
    // Expiry by the real clock, never by a simulated `at_ns`.
    let real_ns = catalog::now_ns();
    purge(store, real_ns);
    let ts = jiff::Timestamp::from_nanosecond(at_ns as i128).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let id = format!(
        "{}-{}",
        ts.strftime("%Y%m%dT%H%M%S"),
        fsutil::random_suffix(6)
    );
    let task = Task {
        id,
        task_type,
        vault: vault.to_string(),
        resource: resource.map(str::to_string),
        backup: backup.map(str::to_string),
        status: TaskState::Running,
        progress: 0,
        started: catalog::ns_to_rfc3339(at_ns),
        started_ns: at_ns,
        ended: None,
        error_code: None,
        message: None,
        pid: std::process::id(),
        recorded_ns: real_ns,
        requests: None,
    };
    let h = TaskHandle {
        store: store.clone(),
        task,
        requests_before: mark,
    };
    if let Err(e) = save(store, &h.task) {
        log::warn!("task log: {e}");
    }
    h
}

impl TaskHandle {
    /// The task's id.
    pub fn id(&self) -> &str {
        &self.task.id
    }
    /// Record progress (0–100).
    pub fn progress(&mut self, p: u8) {
        if p != self.task.progress {
            self.task.progress = p.min(100);
            self.save_or_warn();
        }
    }
    /// Where the task's count of requests starts, for a backup record
    /// that counts the same requests ([`Store::task_requests_mark`]).
    pub fn requests_mark(&self) -> Option<crate::model::Requests> {
        self.requests_before
    }
    /// Name the backup (known only once it is accepted).
    pub fn set_backup(&mut self, b: &str) {
        self.task.backup = Some(b.to_string());
        self.save_or_warn();
    }
    /// End successfully, with an optional note.
    pub fn success(mut self, note: Option<String>) {
        self.task.status = TaskState::Success;
        self.task.progress = 100;
        self.task.message = note;
        self.end();
    }
    /// End as skipped, saying why.
    pub fn skipped(mut self, why: String) {
        self.task.status = TaskState::Skipped;
        self.task.message = Some(why);
        self.end();
    }
    /// End as failed with the error.
    pub fn failed(mut self, e: &Error) {
        self.task.status = TaskState::Failed;
        self.task.error_code = e.cbr_code().map(str::to_string);
        self.task.message = Some(e.to_string());
        self.end();
    }
    /// End from a result.
    pub fn finish<T>(self, r: &Result<T>) {
        match r {
            Ok(_) => self.success(None),
            Err(e) => self.failed(e),
        }
    }
    fn end(&mut self) {
        self.task.ended = Some(catalog::now_rfc3339());
        if let Some(before) = &self.requests_before {
            self.task.requests = self
                .store
                .vault_requests(&self.task.vault)
                .map(|now| now.since(before));
        }
        self.save_or_warn();
    }
    /// Write the task's record. The task log is a record of the work, not
    /// the work: a write that fails (a full disk) is logged with the task's
    /// id and does not fail the backup or restore it describes.
    fn save_or_warn(&self) {
        if let Err(e) = save(&self.store, &self.task) {
            log::warn!("task log: task {}: {e}", self.task.id);
        }
    }
}

/// Record a task that has already ended (an event: a skipped time point, a
/// capacity warning).
pub fn event(
    store: &Store,
    task_type: TaskType,
    vault: &str,
    status: TaskState,
    message: String,
    at_ns: i64,
) {
    let mut h = start(store, task_type, vault, None, None, at_ns);
    h.task.status = status;
    h.task.progress = 100;
    h.task.message = Some(message);
    h.end();
}

/// Every task, newest first. A running task whose process is gone is shown
/// as failed.
pub fn list(store: &Store) -> Result<Vec<Task>> {
    let d = dir(store);
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&d) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(format!("list {}", d.display()), e)),
    };
    for ent in rd {
        let ent = ent.ctx(|| format!("list {}", d.display()))?;
        let name = ent.file_name().to_string_lossy().to_string();
        if !name.ends_with(".json") || name.starts_with('.') {
            continue;
        }
        let data = match crate::fsutil::read_store_file(&ent.path()) {
            Ok(d) => d,
            // Vanished since the listing (a task file is replaced by rename).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                log::warn!("task log: {}: {e}", ent.path().display());
                continue;
            }
        };
        let Ok(mut t) = serde_json::from_slice::<Task>(&data) else {
            log::warn!("task log: {} is damaged", ent.path().display());
            continue;
        };
        if t.status == TaskState::Running && !crate::sys::pid_alive(t.pid) {
            t.status = TaskState::Failed;
            t.message = Some(format!(
                "its process {} ended before the task did (killed or crashed)",
                t.pid
            ));
        }
        out.push(t);
    }
    out.sort_by(|a, b| (b.started_ns, &b.id).cmp(&(a.started_ns, &a.id)));
    Ok(out)
}

/// Which tasks `task list` shows; every field given must match.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this vault.
    pub vault: Option<String>,
    /// Only this type.
    pub task_type: Option<TaskType>,
    /// Only this status.
    pub status: Option<TaskState>,
    /// Only tasks started at or after this instant, ns since the epoch.
    pub since_ns: Option<i64>,
}

impl Filter {
    /// A filter on vault, type and status as the user wrote them; a type
    /// or status that no task can have is refused (rather than matching
    /// nothing).
    pub fn new(
        vault: Option<String>,
        task_type: Option<String>,
        status: Option<String>,
    ) -> Result<Filter> {
        Ok(Filter {
            vault,
            task_type: task_type.as_deref().map(TaskType::parse).transpose()?,
            status: status.as_deref().map(TaskState::parse).transpose()?,
            since_ns: None,
        })
    }

    fn matches(&self, t: &Task) -> bool {
        self.vault.as_ref().is_none_or(|v| &t.vault == v)
            && self.task_type.is_none_or(|x| t.task_type == x)
            && self.status.is_none_or(|x| t.status == x)
            && self.since_ns.is_none_or(|s| t.started_ns >= s)
    }
}

/// The tasks `filter` lets through, newest first.
pub fn query(store: &Store, filter: &Filter) -> Result<Vec<Task>> {
    Ok(list(store)?
        .into_iter()
        .filter(|t| filter.matches(t))
        .collect())
}

/// The task `id`.
pub fn get(store: &Store, id: &str) -> Result<Task> {
    list(store)?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| Error::not_found(format!("task {id:?} does not exist")))
}

/// Remove records written more than [`KEEP_DAYS`] before `now_ns` (the
/// real clock): by `recorded_ns`, or `started_ns` in older records.
fn purge(store: &Store, now_ns: i64) {
    let limit = now_ns - KEEP_DAYS * 86_400 * 1_000_000_000;
    let Ok(tasks) = list(store) else { return };
    for t in tasks.iter().filter(|t| {
        let written = if t.recorded_ns > 0 {
            t.recorded_ns
        } else {
            t.started_ns
        };
        written < limit && t.status != TaskState::Running
    }) {
        let _ = std::fs::remove_file(dir(store).join(format!("{}.json", t.id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Task records keep their strings: each type and state is written as
    /// the name `--type`/`--status` take, and read back.
    #[test]
    fn task_types_and_states_keep_their_names() {
        for t in TaskType::ALL {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(serde_json::from_str::<TaskType>(&json).unwrap(), t);
            assert_eq!(TaskType::parse(t.as_str()).unwrap(), t);
        }
        for s in TaskState::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<TaskState>(&json).unwrap(), s);
            assert_eq!(TaskState::parse(s.as_str()).unwrap(), s);
        }
        let e = TaskType::parse("copy").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("\"copy\" is invalid"), "{e}");
        assert!(TaskState::parse("waiting").is_err());
    }
    use crate::testkit;
    use proptest::prelude::*;

    fn sample(pid: u32) -> Task {
        Task {
            id: "20261124T042516-abcdef".into(),
            task_type: TaskType::Backup,
            vault: "v".into(),
            resource: Some("r".into()),
            backup: Some("b".into()),
            status: TaskState::Running,
            progress: 40,
            started: "2026-11-24T04:25:16Z".into(),
            started_ns: 1_700_000_000_000_000_000,
            ended: None,
            error_code: Some("BackupService.6125".into()),
            message: Some("a message".into()),
            pid,
            recorded_ns: 0,
            requests: None,
        }
    }

    /// A simulated pass far in the future (`policy run-due --now 2030`)
    /// does not expire today's records: expiry counts from the real clock
    /// (issue #16). Records written 31 real days ago do go, also those of a
    /// simulated pass dated today; those of older versions (no
    /// `recorded_ns`) count from their start.
    #[test]
    fn expiry_counts_from_the_real_clock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("s")).unwrap();
        let day = 86_400 * 1_000_000_000i64;
        let now = catalog::now_ns();
        let mut today = sample(1);
        today.id = "today".into();
        today.status = TaskState::Success;
        today.started_ns = now;
        today.recorded_ns = now;
        let mut old_sim = today.clone();
        old_sim.id = "old-sim".into();
        old_sim.started_ns = now;
        old_sim.recorded_ns = now - 31 * day;
        let mut legacy = today.clone();
        legacy.id = "legacy".into();
        legacy.started_ns = now - 31 * day;
        legacy.recorded_ns = 0;
        for t in [&today, &old_sim, &legacy] {
            save(&store, t).unwrap();
        }
        // As `policy run-due --now` four years ahead starts its tasks.
        let t = start(
            &store,
            TaskType::Backup,
            "v",
            None,
            None,
            now + 4 * 365 * day,
        );
        drop(t);
        let mut ids: Vec<String> = list(&store).unwrap().into_iter().map(|t| t.id).collect();
        ids.sort();
        assert!(ids.contains(&"today".to_string()), "{ids:?}");
        assert!(!ids.contains(&"old-sim".to_string()), "{ids:?}");
        assert!(!ids.contains(&"legacy".to_string()), "{ids:?}");
        assert_eq!(ids.len(), 2, "{ids:?}");
    }

    /// A running task whose pid cannot be a live process (0 signals the
    /// caller's process group, a pid above i32::MAX a negative group or
    /// every process) is shown as failed, not as running forever.
    #[test]
    fn a_running_task_with_an_impossible_pid_is_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("s")).unwrap();
        for pid in [0, u32::MAX, i32::MAX as u32 + 1, std::process::id()] {
            save(&store, &sample(pid)).unwrap();
            let t = list(&store).unwrap().remove(0);
            let want = if pid == std::process::id() {
                TaskState::Running
            } else {
                TaskState::Failed
            };
            assert_eq!(t.status, want, "pid {pid}");
        }
    }

    /// Task files and a backup's status file, damaged or arbitrary, read as
    /// `task list` and `backup wait` read them: no panic, no large
    /// allocation, the damaged one skipped or read as a value that
    /// round-trips.
    #[test]
    fn fuzz_task_and_status_files() {
        let config = testkit::config(384);
        let secs = testkit::deadline(config.cases, 40);
        testkit::within(secs, move || {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::init(&dir.path().join("s")).unwrap();
            save(&store, &sample(std::process::id())).unwrap();
            let task_file = dir_of(&store).join("20261124T042516-abcdef.json");
            let good_task = std::fs::read(&task_file).unwrap();
            let status = crate::engine::status::Status {
                backup: "b".into(),
                status: crate::engine::status::RunStatus::Protecting,
                progress: 3,
                bytes_read: 1 << 40,
                files: 17,
                pid: 1,
                started: "2026-11-24T04:25:16Z".into(),
                error: None,
            };
            crate::engine::status::write(&store, "v", &status).unwrap();
            let status_file = store.vault_dir("v").join("running").join("b.json");
            let good_status = std::fs::read(&status_file).unwrap();
            let input = (
                any::<bool>(),
                prop_oneof![
                    3 => testkit::damages().prop_map(Ok),
                    1 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Err),
                ],
            );
            let mut runner = proptest::test_runner::TestRunner::new(config);
            runner
                .run(&input, |(task, how)| {
                    let good = if task { &good_task } else { &good_status };
                    let bytes = match how {
                        Ok(d) => testkit::apply(good, &d),
                        Err(raw) => raw,
                    };
                    let file = if task { &task_file } else { &status_file };
                    std::fs::write(file, &bytes).unwrap();
                    let ((tasks, st), largest) = testkit::largest_alloc(|| {
                        let tasks = list(&store).unwrap();
                        let _ = get(&store, "20261124T042516-abcdef");
                        let st = crate::engine::status::read(&store, "v", "b");
                        if let Some(s) = &st {
                            let _ = crate::sys::pid_alive(s.pid);
                        }
                        (tasks, st)
                    });
                    std::fs::write(file, good).unwrap();
                    prop_assert!(
                        largest <= 16 * bytes.len() + (64 << 10),
                        "{} bytes allocated {} at once",
                        bytes.len(),
                        largest
                    );
                    for t in tasks {
                        let again: Task =
                            serde_json::from_slice(&serde_json::to_vec(&t).unwrap()).unwrap();
                        prop_assert_eq!(again, t);
                    }
                    if let Some(s) = st {
                        let again: crate::engine::status::Status =
                            serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
                        prop_assert_eq!(again, s);
                    }
                    Ok(())
                })
                .unwrap();
        });
    }

    fn dir_of(store: &Store) -> PathBuf {
        dir(store)
    }
}
