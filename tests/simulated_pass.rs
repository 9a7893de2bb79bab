//! A simulated policy pass (`policy run-due --now` later than the clock)
//! changes no real state (issue #16): the real scheduler's state stays at
//! or before now, simulated passes follow on from each other, and the task
//! records of today survive.

mod common;

use cbrfs::catalog::now_ns;
use cbrfs::engine::policy;

const DAY: i64 = 86_400 * 1_000_000_000;

fn last_ns(path: &std::path::Path) -> Option<i64> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("last_ns")?.as_i64()
}

#[test]
fn a_pass_in_the_future_keeps_its_own_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::store_with_daily_policy(dir.path(), "today");

    let future = now_ns() + 40 * DAY;
    let first = policy::run_due(&store, future).unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].outcome.starts_with("backed up"), "{first:?}");
    let real_state = store.vault_dir("v").join("policy-state.json");
    let real = last_ns(&real_state);
    assert!(
        real.is_none_or(|t| t <= now_ns()),
        "the real scheduler's state moved to the simulated instant: {real:?}"
    );
    // A second simulated pass a day later runs the next point only: it
    // follows on from the first.
    let second = policy::run_due(&store, future + DAY).unwrap();
    assert_eq!(second.len(), 1, "{second:?}");
    assert!(second[0].outcome.starts_with("backed up"), "{second:?}");
    assert!(second[0].point > first[0].point, "{first:?} {second:?}");
    // A real pass now: the state it keeps is now, not 40 days ahead.
    policy::run_due(&store, now_ns()).unwrap();
    let real = last_ns(&real_state).unwrap();
    assert!(real <= now_ns() && real > now_ns() - DAY, "{real}");
    // Today's backup task survives the passes dated ahead.
    let tasks = cbrfs::tasks::list(&store).unwrap();
    assert!(
        tasks
            .iter()
            .any(|t| t.backup.as_deref() == Some("today") && t.task_type.as_str() == "backup"),
        "today's backup task was expired: {tasks:?}"
    );
}
