//! Backup policies: create, update, delete, apply, remove, and one pass of
//! the scheduler (`run_due`), which backs up the vaults whose time points
//! came, applies retention to their automatic backups, and prunes.
//!
//! A pass is cheap when nothing is due; the mount daemon runs one every 30
//! seconds and `cbrfs policy run-due` runs one for cron or a systemd timer.
//! Passes are serialised by `STORE/scheduler.lock`, and each vault records
//! the last instant a pass looked at (`vaults/<v>/policy-state.json`), so a
//! time point runs once however many schedulers there are. The instant is
//! recorded before the backup starts: a pass that cannot write it fails,
//! naming the file, and backs up nothing.

use super::backup::{self, BackupOptions};
use super::prune;
use crate::catalog::{self, PolicyConfig, Store};
use crate::error::{Error, Kind, Result};
use crate::fsutil::{self, Flock};
use crate::model::Origin;
use crate::policy::retention::{Candidate, Retention, RetentionArgs};
use crate::policy::schedule::{self, Schedule};
use crate::rules;
use crate::tasks;
use serde::{Deserialize, Serialize};

/// Most policies in a store.
pub const MAX_POLICIES: usize = 32;

/// Settings of a policy, as the CLI gives them.
#[derive(Clone, Debug, Default)]
pub struct PolicySpec {
    /// RRULE schedules.
    pub schedules: Vec<String>,
    /// Retention (and the time zone).
    pub retention: RetentionArgs,
    /// Force a full backup after N incrementals (-1 never).
    pub full_every: Option<i64>,
    /// Disabled: no automatic backups.
    pub disabled: bool,
}

/// Validate a policy's schedule and retention together.
pub fn validate(p: &PolicyConfig) -> Result<(Schedule, Retention)> {
    let retention = Retention::new(&p.retention)?;
    let sched = Schedule::parse(&p.schedules, p.retention.timezone.as_deref())?.with_anchor(
        jiff::Timestamp::from_nanosecond(p.created_ns as i128)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    );
    Ok((sched, retention))
}

/// A policy as `policy list` and `policy show` report it (docs/JSON.md).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct PolicyReport {
    /// Policy name.
    pub name: String,
    /// False: no automatic backups.
    pub enabled: bool,
    /// The RRULEs.
    pub schedules: Vec<String>,
    /// Retention and the time zone, as stored.
    pub retention: RetentionArgs,
    /// Full backup after N incrementals (-1 never, 0 always).
    pub full_every: i32,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Vaults it is applied to.
    pub vaults: Vec<String>,
    /// The zone of the schedule; None when the stored policy no longer
    /// validates.
    pub timezone: Option<String>,
    /// The next five time points after now, RFC 3339 in UTC.
    pub next: Vec<String>,
    /// The same instants with the offset of `timezone` at each.
    pub next_local: Vec<String>,
}

/// The report of a policy at `now`: the vaults it is applied to and its
/// next time points.
pub fn report(store: &Store, p: &PolicyConfig, now: jiff::Timestamp) -> PolicyReport {
    // A damaged vault record cannot say whether it has this policy: the
    // report lists the readable ones (`vault list` names the damage).
    let vaults: Vec<String> = store
        .vaults()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| v.policy.as_deref() == Some(&p.name))
        .map(|v| v.name)
        .collect();
    // A stored policy that no longer validates (edited by hand, or a time
    // zone gone from the system's database) is still shown, without its
    // next runs.
    let (zone, next): (Option<schedule::Zone>, Vec<jiff::Timestamp>) = validate(p)
        .ok()
        .map(|(sched, _)| {
            let mut out = Vec::new();
            let mut t = now;
            for _ in 0..5 {
                match sched.next_after(t) {
                    Some(n) => {
                        out.push(n);
                        t = n;
                    }
                    None => break,
                }
            }
            (Some(sched.timezone().clone()), out)
        })
        .unwrap_or_default();
    let next_local: Vec<String> = zone
        .as_ref()
        .map(|z| next.iter().map(|t| z.rfc3339(*t)).collect())
        .unwrap_or_default();
    PolicyReport {
        name: p.name.clone(),
        enabled: p.enabled,
        schedules: p.schedules.clone(),
        retention: p.retention.clone(),
        full_every: p.full_every,
        created: p.created.clone(),
        vaults,
        timezone: zone.map(|z| z.to_string()),
        next: next.iter().map(|t| t.to_string()).collect(),
        next_local,
    }
}

/// Every policy, by name.
pub fn list(store: &Store) -> Result<Vec<PolicyReport>> {
    let now = jiff::Timestamp::now();
    Ok(store
        .policies()?
        .iter()
        .map(|p| report(store, p, now))
        .collect())
}

/// One policy.
pub fn show(store: &Store, name: &str) -> Result<PolicyReport> {
    Ok(report(store, &store.policy(name)?, jiff::Timestamp::now()))
}

/// An instant as `--now` and `--since` take it: RFC 3339, or a date (its
/// midnight UTC). Returns ns since the epoch.
pub fn parse_instant(s: &str) -> Result<i64> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_nanosecond() as i64);
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        if let Ok(z) = d.to_zoned(jiff::tz::TimeZone::UTC) {
            return Ok(z.timestamp().as_nanosecond() as i64);
        }
    }
    Err(Error::param(format!(
        "time {s:?} is invalid: write RFC 3339, like 2027-01-01T22:00:00Z or 2027-01-01T22:00:00+08:00, or a date 2027-01-01"
    )))
}

/// Create a policy (default name `policy_XXXX`).
pub fn create(store: &Store, name: Option<String>, spec: PolicySpec) -> Result<PolicyConfig> {
    let name = name.unwrap_or_else(|| format!("policy_{}", fsutil::random_suffix(4)));
    rules::check_name("policy name", &name)?;
    if spec.schedules.is_empty() {
        return Err(Error::param("a policy needs at least one --schedule RRULE"));
    }
    let now = catalog::now_ns();
    let p = PolicyConfig {
        format: catalog::CATALOG_FORMAT,
        name: name.clone(),
        schedules: spec.schedules,
        retention: spec.retention,
        full_every: schedule::check_full_every(spec.full_every.unwrap_or(-1))?,
        enabled: !spec.disabled,
        created: catalog::ns_to_rfc3339(now),
        created_ns: now,
    };
    validate(&p)?;
    let _lock = store.lock()?;
    let all = store.policies()?;
    if all.iter().any(|x| x.name == name) {
        return Err(Error::conflict(format!("policy {name:?} already exists")));
    }
    if all.len() >= MAX_POLICIES {
        return Err(Error::param(format!(
            "there are {MAX_POLICIES} policies, the most a store holds: delete one first"
        ))
        .code("BackupService.6001"));
    }
    store.save_policy(&p)?;
    Ok(p)
}

/// Changes to a policy; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default)]
pub struct PolicyUpdate {
    /// Replace the schedules.
    pub schedules: Option<Vec<String>>,
    /// Replace the retention.
    pub retention: Option<RetentionArgs>,
    /// New full-every.
    pub full_every: Option<i64>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

/// Update a policy.
pub fn update(store: &Store, name: &str, u: PolicyUpdate) -> Result<PolicyConfig> {
    let _lock = store.lock()?;
    let mut p = store.policy(name)?;
    if let Some(s) = u.schedules.filter(|s| !s.is_empty()) {
        p.schedules = s;
    }
    if let Some(r) = u.retention {
        p.retention = r;
    }
    if let Some(f) = u.full_every {
        p.full_every = schedule::check_full_every(f)?;
    }
    if let Some(e) = u.enabled {
        p.enabled = e;
    }
    validate(&p)?;
    store.save_policy(&p)?;
    Ok(p)
}

/// Delete a policy; vaults it was applied to keep their backups and lose
/// the policy.
pub fn delete(store: &Store, name: &str) -> Result<Vec<String>> {
    let _lock = store.lock()?;
    store.policy(name)?;
    let mut freed = Vec::new();
    for mut v in store.vaults()? {
        if v.policy.as_deref() == Some(name) {
            v.policy = None;
            store.save_vault(&v)?;
            freed.push(v.name);
        }
    }
    store.delete_policy(name)?;
    Ok(freed)
}

/// Apply a policy to a vault (one policy per vault).
pub fn apply(store: &Store, policy: &str, vault: &str) -> Result<()> {
    let _lock = store.lock()?;
    store.policy(policy)?;
    let mut v = store.vault(vault)?;
    if let Some(old) = &v.policy {
        if old != policy {
            return Err(Error::conflict(format!(
                "vault {vault} already has policy {old}: a vault takes one policy; 'cbrfs policy remove {vault}' first"
            )));
        }
        return Ok(());
    }
    v.policy = Some(policy.to_string());
    v.policy_applied_ns = catalog::now_ns();
    store.save_vault(&v)?;
    let _ = std::fs::remove_file(state_path(store, vault));
    let _ = std::fs::remove_file(simulated_state_path(store, vault));
    Ok(())
}

/// Remove a vault's policy.
pub fn remove(store: &Store, vault: &str) -> Result<String> {
    let _lock = store.lock()?;
    let mut v = store.vault(vault)?;
    let p = v.policy.take().ok_or_else(|| {
        Error::not_found(format!("vault {vault} has no policy")).code("BackupService.6000")
    })?;
    store.save_vault(&v)?;
    Ok(p)
}

#[derive(Serialize, Deserialize, Default, Debug, PartialEq, Eq)]
struct State {
    policy: String,
    last_ns: i64,
    /// Incremental backups of the vault since its last full one, counted
    /// up to the backup started at `counted_ns` (0: not counted yet).
    /// Retention may delete the full backup, so the records alone cannot
    /// tell when the next one is due.
    #[serde(default)]
    since_full: u64,
    #[serde(default)]
    counted_ns: i64,
}

impl State {
    /// Count the vault's backups newer than those counted so far (all of
    /// them the first time).
    fn count(&mut self, records: &[crate::model::BackupRecord]) {
        if self.counted_ns == 0 {
            self.since_full = records.iter().rev().take_while(|r| !r.full).count() as u64;
            self.counted_ns = records.last().map_or(0, |r| r.started_ns);
            return;
        }
        let counted = self.counted_ns;
        for r in records.iter().filter(|r| r.started_ns > counted) {
            // Saturating: the count comes from a file a crash or a hand may
            // have damaged.
            self.since_full = if r.full {
                0
            } else {
                self.since_full.saturating_add(1)
            };
            self.counted_ns = r.started_ns;
        }
    }
}

fn state_path(store: &Store, vault: &str) -> std::path::PathBuf {
    store.vault_dir(vault).join("policy-state.json")
}

/// Where a simulated pass (`policy run-due --now` later than the real
/// clock) keeps its state: were it in `policy-state.json`, the real
/// scheduler would take every time point before the simulated instant as
/// done, and back up nothing until then (issue #16).
fn simulated_state_path(store: &Store, vault: &str) -> std::path::PathBuf {
    store.vault_dir(vault).join("policy-state-simulated.json")
}

/// The state a pass left for `policy` in `path`; absent, undecodable or
/// another policy's means none (every point since the policy was applied
/// is looked at, nothing counted).
fn read_state(path: &std::path::Path, policy: &str) -> State {
    crate::fsutil::read_store_file(path)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .filter(|s: &State| s.policy == policy)
        .unwrap_or_default()
}

/// What one pass did for one vault.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    /// The vault.
    pub vault: String,
    /// The policy.
    pub policy: String,
    /// The time point acted on.
    pub point: String,
    /// `backed up NAME`, `skipped: why`, `failed: why`.
    pub outcome: String,
    /// Backups deleted by retention.
    pub expired: Vec<String>,
    /// Bytes prune gave back.
    pub freed: u64,
}

/// One scheduler pass at `now_ns`. Returns what it did; a pass another
/// scheduler is running is skipped (empty report).
pub fn run_due(store: &Store, now_ns: i64) -> Result<Vec<PassReport>> {
    let Some(_pass) = Flock::try_lock(&store.root().join("scheduler.lock"), true)? else {
        return Ok(Vec::new());
    };
    let now = jiff::Timestamp::from_nanosecond(now_ns as i128)
        .map_err(|e| Error::invalid(format!("time {now_ns}: {e}")))?;
    // A pass as of an instant the real clock has not reached is a
    // simulation: it keeps its own state (see simulated_state_path).
    let simulated = now_ns > catalog::now_ns();
    let mut out = Vec::new();
    for v in store.vaults()? {
        let Some(pname) = v.policy.clone() else {
            continue;
        };
        let p = match store.policy(&pname) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("vault {}: {e}", v.name);
                continue;
            }
        };
        let real_state = state_path(store, &v.name);
        let sim_state = simulated_state_path(store, &v.name);
        let mut state = read_state(&real_state, &pname);
        if simulated {
            // Simulated passes follow on from each other and from the real
            // passes, whichever went further.
            let sim = read_state(&sim_state, &pname);
            if sim.last_ns > state.last_ns {
                state = sim;
            }
        }
        let state_file = if simulated { &sim_state } else { &real_state };
        // The first pass counts from when the policy was applied (or from
        // just before `now` when `now` is earlier, as a simulated pass may be).
        let from_ns = if state.last_ns > 0 {
            state.last_ns
        } else if v.policy_applied_ns < now_ns {
            v.policy_applied_ns
        } else {
            now_ns - 1
        };
        state.policy = pname.clone();
        // A state that cannot be written fails the pass: were it ignored,
        // the next pass would take the same time points as not done.
        let save_state = |s: &mut State, last: i64| -> Result<()> {
            s.last_ns = last;
            let json = serde_json::to_vec(&*s)
                .map_err(|e| Error::failed(format!("encode policy state: {e}")))?;
            fsutil::write_atomic(state_file, &json)
                .map_err(|e| e.context(format!("vault {}: policy state", v.name)))
        };
        if now_ns <= from_ns || !p.enabled {
            save_state(&mut state, now_ns.max(from_ns))?;
            continue;
        }
        let (sched, retention) = match validate(&p) {
            Ok(x) => x,
            Err(e) => {
                log::warn!("policy {pname}: {e}");
                continue;
            }
        };
        let from = jiff::Timestamp::from_nanosecond(from_ns as i128).unwrap_or(now);
        let points = sched.points_between(from, now);
        let Some(last) = points.last().copied() else {
            save_state(&mut state, now_ns)?;
            continue;
        };
        // Points the scheduler was not running for are recorded as missed;
        // only the newest runs.
        for missed in &points[..points.len() - 1] {
            tasks::event(
                store,
                tasks::TaskType::Backup,
                &v.name,
                tasks::TaskState::Skipped,
                format!("policy {pname}: time point {missed} was missed (no scheduler ran then)"),
                missed.as_nanosecond() as i64,
            );
        }
        let point_ns = last.as_nanosecond() as i64;
        // The points are taken before the backup starts, so that a time
        // point runs once: a pass that cannot record it backs up nothing.
        save_state(&mut state, now_ns)?;
        let report = run_point(store, &v.name, &p, &retention, point_ns, &mut state);
        // Records the backups counted since the claim above.
        save_state(&mut state, now_ns)?;
        out.push(report);
    }
    Ok(out)
}

/// Back up a vault for a policy's time point, then apply retention.
fn run_point(
    store: &Store,
    vault: &str,
    p: &PolicyConfig,
    retention: &Retention,
    at_ns: i64,
    state: &mut State,
) -> PassReport {
    let mut report = PassReport {
        vault: vault.to_string(),
        policy: p.name.clone(),
        point: catalog::ns_to_rfc3339(at_ns),
        outcome: String::new(),
        expired: Vec::new(),
        freed: 0,
    };
    let records = match store.readable_backups(vault) {
        Ok(r) => r,
        Err(e) => {
            backup::record_refusal(store, vault, None, &e, at_ns);
            report.outcome = format!("failed: {e}");
            return report;
        }
    };
    state.count(&records);
    let full = !records.is_empty() && schedule::full_backup_due(p.full_every, state.since_full);
    let prepared = backup::prepare(
        store,
        vault,
        BackupOptions {
            origin: Some(Origin::Policy),
            policy: Some(p.name.clone()),
            full,
            at_ns: Some(at_ns),
            description: format!("policy {}", p.name),
            ..Default::default()
        },
    );
    // A refusal is in the task log already: `prepare` records it (a busy
    // vault as a skipped time point).
    let prepared = match prepared {
        Ok(x) => x,
        Err(e) if e.kind() == Kind::Busy => {
            report.outcome = format!("skipped: {e}");
            return report;
        }
        Err(e) => {
            report.outcome = format!("failed: {e}");
            return report;
        }
    };
    let name = prepared.name().to_string();
    match prepared.run() {
        Ok(_) => {
            report.outcome = format!("backed up {name}");
            // Counted before retention may delete it. Backups that cannot
            // be listed now are counted by a later pass (from counted_ns).
            match store.readable_backups(vault) {
                Ok(records) => state.count(&records),
                Err(e) => log::warn!("vault {vault}: backups not counted: {e}"),
            }
        }
        Err(e) => {
            report.outcome = format!("failed: {e}");
            return report;
        }
    }
    match expire(store, vault, retention, at_ns) {
        Ok((gone, freed)) => {
            report.expired = gone;
            report.freed = freed;
        }
        Err(e) => log::warn!("vault {vault}: retention: {e}"),
    }
    report
}

/// Apply retention to a vault's automatic backups at `now_ns`; prune if
/// any was deleted. Returns the deleted names and the bytes freed.
pub fn expire(
    store: &Store,
    vault: &str,
    retention: &Retention,
    now_ns: i64,
) -> Result<(Vec<String>, u64)> {
    let candidates: Vec<Candidate> = store
        .readable_backups(vault)?
        .iter()
        .map(|r| Candidate {
            name: r.name.clone(),
            created: jiff::Timestamp::from_nanosecond(r.started_ns as i128)
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            automatic: r.origin == Origin::Policy,
        })
        .collect();
    let busy = Flock::try_lock(&store.vault_dir(vault).join("backup.lock"), true)?.is_none();
    let now =
        jiff::Timestamp::from_nanosecond(now_ns as i128).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let sel = retention.select(&candidates, now, busy);
    let mut gone = Vec::new();
    for name in &sel.delete {
        let t = tasks::start(
            store,
            tasks::TaskType::DeleteBackup,
            vault,
            None,
            Some(name),
            now_ns,
        );
        let r = store.delete_backup(vault, name);
        let ok = r.is_ok();
        t.finish(&r);
        if ok {
            gone.push(name.clone());
        }
    }
    let mut freed = 0;
    if !gone.is_empty() {
        let t = tasks::start(store, tasks::TaskType::Prune, vault, None, None, now_ns);
        let r = prune::prune(store, vault, false, prune::REPACK_THRESHOLD);
        if let Ok(rep) = &r {
            freed = rep.bytes_before.saturating_sub(rep.bytes_after);
        }
        t.finish(&r);
    }
    if !gone.is_empty() {
        let msg = format!(
            "retention expired {} backups: {}",
            gone.len(),
            gone.join(", ")
        );
        tasks::event(
            store,
            tasks::TaskType::Retention,
            vault,
            tasks::TaskState::Success,
            msg,
            now_ns,
        );
    }
    Ok((gone, freed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackupRecord, BackupStats};
    use crate::testkit;
    use proptest::prelude::*;

    fn record(started_ns: i64, full: bool) -> BackupRecord {
        BackupRecord {
            name: format!("b{started_ns}"),
            vault: "v".into(),
            description: String::new(),
            origin: Origin::Policy,
            policy: Some("p".into()),
            full,
            started_ns,
            finished_ns: started_ns,
            resources: vec![],
            stats: BackupStats::default(),
        }
    }

    /// A policy file as written before IANA names were accepted (a fixed
    /// offset) still reads and validates, and keeps its stored string; an
    /// IANA name validates into the named zone.
    #[test]
    fn policy_files_with_either_zone_form_validate() {
        let old = r#"{"format": 1, "name": "p", "schedules": ["FREQ=DAILY;BYHOUR=22;BYMINUTE=0"],
            "retention": {"keep_last": 7, "keep_daily": 7, "timezone": "UTC+08:00"},
            "full_every": -1, "enabled": true, "created": "2024-01-30T12:00:00Z",
            "created_ns": 1706616000000000000}"#;
        let p: PolicyConfig = serde_json::from_str(old).unwrap();
        let (sched, retention) = validate(&p).unwrap();
        assert_eq!(sched.timezone().to_string(), "UTC+08:00");
        assert_eq!(retention.timezone().unwrap().to_string(), "UTC+08:00");
        assert_eq!(p.retention.timezone.as_deref(), Some("UTC+08:00"));
        let mut berlin = p.clone();
        berlin.retention.timezone = Some("Europe/Berlin".into());
        let (sched, _) = validate(&berlin).unwrap();
        assert_eq!(sched.timezone().to_string(), "Europe/Berlin");
        // 22:00 in Berlin on 2026-03-29 is CEST (20:00Z), the day before
        // CET (21:00Z).
        let t: jiff::Timestamp = "2026-03-28T12:00:00Z".parse().unwrap();
        let next = sched.points_between(t, "2026-03-30T00:00:00Z".parse().unwrap());
        let next: Vec<String> = next.iter().map(|t| t.to_string()).collect();
        assert_eq!(next, ["2026-03-28T21:00:00Z", "2026-03-29T20:00:00Z"]);
        let mut bad = p;
        bad.retention.timezone = Some("Europe/Atlantis".into());
        let e = validate(&bad).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("\"Europe/Atlantis\" is unknown"),
            "{e}"
        );
    }

    /// policy-state.json, damaged or arbitrary, read as a pass reads it and
    /// counted against backups: no panic (a count at u64::MAX overflowed
    /// in debug builds), and what is read round-trips.
    #[test]
    fn fuzz_policy_state() {
        let config = testkit::config(512);
        let secs = testkit::deadline(config.cases, 20);
        testkit::within(secs, move || {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("policy-state.json");
            let good = serde_json::to_vec(&State {
                policy: "p".into(),
                last_ns: 1_800_000_000_000_000_000,
                since_full: u64::MAX,
                counted_ns: 5,
            })
            .unwrap();
            let input = (
                prop_oneof![
                    3 => testkit::damages().prop_map(Ok),
                    1 => proptest::collection::vec(any::<u8>(), 0..120).prop_map(Err),
                ],
                proptest::collection::vec((any::<i64>(), any::<bool>()), 0..6),
                -1i32..3,
            );
            let mut runner = proptest::test_runner::TestRunner::new(config);
            runner
                .run(&input, |(how, recs, full_every)| {
                    let bytes = match how {
                        Ok(d) => testkit::apply(&good, &d),
                        Err(raw) => raw,
                    };
                    std::fs::write(&path, &bytes).unwrap();
                    let (mut state, largest) = testkit::largest_alloc(|| read_state(&path, "p"));
                    prop_assert!(largest <= 16 * bytes.len() + (64 << 10));
                    let again: State =
                        serde_json::from_slice(&serde_json::to_vec(&state).unwrap()).unwrap();
                    prop_assert_eq!(&again, &state);
                    let mut records: Vec<BackupRecord> =
                        recs.iter().map(|(t, f)| record(*t, *f)).collect();
                    records.sort_by_key(|r| r.started_ns);
                    state.count(&records);
                    let _ = schedule::full_backup_due(full_every, state.since_full);
                    state.count(&records);
                    Ok(())
                })
                .unwrap();
        });
    }

    #[test]
    fn a_count_at_its_largest_saturates() {
        let mut s = State {
            policy: "p".into(),
            last_ns: 0,
            since_full: u64::MAX,
            counted_ns: 1,
        };
        s.count(&[record(2, false), record(3, false)]);
        assert_eq!(s.since_full, u64::MAX);
        s.count(&[record(4, true)]);
        assert_eq!(s.since_full, 0);
    }
}
