//! When a backup policy runs: CBR's RRULE subset, parsed, validated and
//! evaluated in the policy's time zone. Also the policy's time zone type
//! ([`Zone`]: an IANA zone or a fixed [`UtcOffset`], shared with
//! [`crate::policy::retention`]) and the
//! `full_backup_interval` rule ([`check_full_every`], [`full_backup_due`]).
//!
//! This module is pure: no I/O, no clock. The caller passes the time.
//!
//! # Wiring
//!
//! ```
//! use cbrfs::policy::schedule::{check_full_every, Schedule};
//! # fn main() -> cbrfs::error::Result<()> {
//! // `policy create --schedule ... [--timezone ...] [--full-every N]`:
//! let rules = vec!["FREQ=DAILY;INTERVAL=3;BYHOUR=1;BYMINUTE=0".to_string()];
//! let created: jiff::Timestamp = "2024-01-30T12:00:00Z".parse().unwrap();
//! let sched = Schedule::parse(&rules, Some("UTC+08:00"))?.with_anchor(created);
//! let full_every = check_full_every(-1)?;
//! # let _ = full_every;
//! // Store the rule strings, the time zone and the creation time; parse
//! // again when the policy is loaded (parsing is cheap and re-validates).
//!
//! // The scheduler (`run-due`): which points fell since the last pass?
//! let last_pass: jiff::Timestamp = "2024-02-01T00:00:00Z".parse().unwrap();
//! let now: jiff::Timestamp = "2024-02-03T00:00:00Z".parse().unwrap();
//! let due = sched.points_between(last_pass, now);
//! assert_eq!(due.len(), 1); // 2024-02-02 01:00 at UTC+08:00
//! assert_eq!(due[0].to_string(), "2024-02-01T17:00:00Z");
//! // And when is the next one?
//! assert_eq!(sched.next_after(now).unwrap().to_string(), "2024-02-04T17:00:00Z");
//! # Ok(())
//! # }
//! ```
//!
//! # The accepted subset
//!
//! A schedule is one or more rules; each rule is `KEY=VALUE` parts joined by
//! `;`, with an optional `RRULE:` prefix. Keys and values are
//! case-insensitive; empty parts (a trailing `;`) are ignored; a key may
//! appear once.
//!
//! | key | values | notes |
//! |---|---|---|
//! | `FREQ` | `DAILY`, `WEEKLY` | required |
//! | `INTERVAL` | 1–30 for `DAILY`; only 1 for `WEEKLY` | default 1 |
//! | `BYDAY` | list of `MO`…`SU` | required for `WEEKLY`, refused for `DAILY` |
//! | `BYHOUR` | list of 0–23 | required |
//! | `BYMINUTE` | list of 0–59 | default 0 |
//!
//! Any other key (`COUNT`, `UNTIL`, `BYMONTH`, `DTSTART`, …) is refused.
//! A rule's time points are every `BYHOUR` × `BYMINUTE` pair (RFC 5545), on
//! every day the rule is active.
//!
//! # Semantics chosen where CBR is silent
//!
//! - **Time zone**: an IANA zone (`Europe/Berlin`) or a fixed offset
//!   (`UTC+08:00`), see [`Zone`]; none means UTC. `BYHOUR`/`BYMINUTE` are
//!   wall-clock times in that zone and days are its local days. Where
//!   daylight saving changes the clock, every time point still runs once:
//!   one in a spring-forward gap runs once, shifted later by the length of
//!   the gap (02:30 becomes 03:30 summer time: RFC 5545 reads it with the
//!   offset before the gap; Vixie cron likewise runs such a job once, right
//!   after the jump);
//!   one in a fall-back overlap runs at its first occurrence only. Two
//!   points that land on the same instant (02:00 shifted onto 03:00) are
//!   one run.
//! - **"At least one hour apart"** is checked on the wall clock: on a
//!   spring-forward day two points can be closer in real time (01:30 and
//!   03:00 around a 02:00 jump are 30 minutes apart); a point that comes
//!   while the previous run still goes is skipped, as always.
//! - **INTERVAL anchor**: a daily rule with `INTERVAL=N` is active on the
//!   anchor day and every N-th day from it (also before it, so the pattern is
//!   purely periodic). The anchor is the policy's creation date in its time
//!   zone, set with [`Schedule::with_anchor`]; without it, 1970-01-01. All
//!   rules of a schedule share the anchor.
//! - **Weekly INTERVAL**: only 1 (CBR defines INTERVAL for daily rules only;
//!   every second week would need an anchor week, which CBR has no field for).
//! - **"At most 24 time points a day, at least one hour apart"** holds for
//!   the union of all rules, checked exactly where it does not depend on the
//!   anchor: any two distinct time points that can ever occur, also across
//!   midnight (23:30 and 00:10 the next day are 40 minutes apart), must be at
//!   least 60 minutes apart. Two rules that produce the same instant
//!   (a daily 22:00 and a Monday 22:00) are fine: the union is a set, the
//!   point runs once. A daily rule whose INTERVAL is a multiple of 7 is
//!   assumed able to fall on any weekday when it is compared with a weekly
//!   rule, since the weekday depends on the anchor. The gap rule implies the
//!   24-a-day rule; the latter is also checked per rule for a clearer message.
//! - Duplicate values in a list (`BYHOUR=1,1`) and duplicate rules are merged.

use std::fmt;

use jiff::civil::Date;
use jiff::Timestamp;

use crate::error::{Error, Result};

use super::rule::check_gaps;
pub use super::rule::{Freq, Rule, MAX_DAILY_INTERVAL, MAX_POINTS_PER_DAY, MIN_GAP_MINUTES};
pub use super::zone::{UtcOffset, Zone};

/// Smallest `full_backup_interval` (−1: never force a full backup).
pub const FULL_EVERY_MIN: i64 = -1;
/// Largest `full_backup_interval`.
pub const FULL_EVERY_MAX: i64 = 100;

// ---------------------------------------------------------------------------
// Full backups

/// Check a policy's `full_backup_interval` (`--full-every N`): −1 to 100.
/// −1 never forces a full backup; 0 makes every backup full; N forces a full
/// backup after N incremental ones (see [`full_backup_due`]).
pub fn check_full_every(n: i64) -> Result<i32> {
    if !(FULL_EVERY_MIN..=FULL_EVERY_MAX).contains(&n) {
        return Err(Error::param(format!(
            "full-every {n} is out of range: it is -1 (never force a full backup) \
             or 0-100 (a full backup after that many incremental ones)"
        )));
    }
    Ok(n as i32)
}

/// Whether a policy run must make a full backup, given the policy's
/// `full_every` (checked by [`check_full_every`]) and how many incremental
/// backups of the resource followed its last full one. (The first backup of
/// a resource is full in any case; that is the engine's concern.)
pub fn full_backup_due(full_every: i32, incrementals_since_full: u64) -> bool {
    match full_every {
        n if n < 0 => false,
        n => incrementals_since_full >= n as u64,
    }
}

// ---------------------------------------------------------------------------
// Schedule

/// A policy's validated schedule: its rules, time zone and interval anchor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    rules: Vec<Rule>,
    tz: Zone,
    anchor: Date,
}

impl Schedule {
    /// Parse and validate the rules of a policy (`--schedule`, at least one)
    /// in the time zone `tz` (none: UTC). The anchor of `INTERVAL` rules is
    /// 1970-01-01 until [`Schedule::with_anchor`] sets it.
    ///
    /// Errors (`BackupService.9900`, exit code 2) name the rule and the
    /// problem, e.g. `schedule "FREQ=HOURLY": FREQ must be DAILY or WEEKLY`.
    pub fn parse<S: AsRef<str>>(rules: &[S], tz: Option<&str>) -> Result<Schedule> {
        let tz = Zone::parse_opt(tz)?;
        if rules.is_empty() {
            return Err(Error::param(
                "a policy needs at least one schedule, e.g. FREQ=DAILY;BYHOUR=22;BYMINUTE=0",
            ));
        }
        let mut parsed: Vec<Rule> = Vec::new();
        for r in rules {
            let rule = Rule::parse(r.as_ref())?;
            let canon = rule.to_string();
            if !parsed.iter().any(|p| p.to_string() == canon) {
                parsed.push(rule);
            }
        }
        check_gaps(&parsed)?;
        Ok(Schedule {
            rules: parsed,
            tz,
            anchor: jiff::civil::date(1970, 1, 1),
        })
    }

    /// Anchor `INTERVAL` rules at the date of `created` (the policy's
    /// creation time) in the schedule's time zone: an every-3-days rule is
    /// active on that date, three days later, and so on.
    pub fn with_anchor(mut self, created: Timestamp) -> Schedule {
        self.anchor = self.tz.to_datetime(created).date();
        self
    }

    /// Anchor `INTERVAL` rules at a civil date.
    pub fn with_anchor_date(mut self, day: Date) -> Schedule {
        self.anchor = day;
        self
    }

    /// The anchor day of `INTERVAL` rules.
    pub fn anchor(&self) -> Date {
        self.anchor
    }

    /// The time zone the rules are evaluated in.
    pub fn timezone(&self) -> &Zone {
        &self.tz
    }

    /// The rules, in the order given, duplicates merged.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first time point strictly after `t`; `None` only at the end of
    /// the representable time range.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        // In a zone with daylight saving a time point in a gap is shifted
        // later (see [`Zone`]), so a day's point may fall after points of
        // the next day (a gap over midnight, or a skipped day): start the
        // day before `t`'s and, once a day has a point after `t`, also look
        // at the day after it.
        let mut day = self.tz.to_datetime(t).date().yesterday().ok()?;
        // A daily rule is active at least every 30 days, a weekly one every 7:
        // the day of `t` and the 31 after it always hold the next point.
        for _ in 0..=MAX_DAILY_INTERVAL + 2 {
            if let Some(best) = self.first_on(day, t) {
                let next_day = day.tomorrow().ok().and_then(|d| self.first_on(d, t));
                return Some(next_day.map_or(best, |n| n.min(best)));
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    /// The earliest time point of local day `day` strictly after `t`.
    fn first_on(&self, day: Date, t: Timestamp) -> Option<Timestamp> {
        let mut best: Option<Timestamp> = None;
        for rule in self.rules.iter().filter(|r| r.active_on(day, self.anchor)) {
            for &m in &rule.times {
                let dt = day.at((m / 60) as i8, (m % 60) as i8, 0, 0);
                let Some(ts) = self.tz.to_timestamp(dt) else {
                    continue;
                };
                if ts > t && best.is_none_or(|b| ts < b) {
                    best = Some(ts);
                }
            }
        }
        best
    }

    /// The time points in `(from, to]`, oldest first (empty if `to <= from`).
    /// A `run-due` pass gives the time of its previous pass and now; one or
    /// more points mean a run is due (CBR runs once and skips points that
    /// fall while a run is still going).
    pub fn points_between(&self, from: Timestamp, to: Timestamp) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let mut t = from;
        while let Some(next) = self.next_after(t) {
            if next > to {
                break;
            }
            out.push(next);
            t = next;
        }
        out
    }
}

impl fmt::Display for Schedule {
    /// The canonical rules joined by `" | "`, then the time zone.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{r}")?;
        }
        write!(f, " ({})", self.tz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rule::WEEKDAYS;
    use jiff::civil::{date, Weekday};
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sched(rules: &[&str]) -> Schedule {
        Schedule::parse(rules, None).unwrap()
    }

    fn err(rules: &[&str], tz: Option<&str>) -> String {
        let e = Schedule::parse(rules, tz).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.cbr_code(), Some("BackupService.9900"));
        e.to_string()
    }

    fn nexts(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = ts(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_after(t).unwrap();
            out.push(t.to_string());
        }
        out
    }

    #[test]
    fn daily_across_month_boundary() {
        let s = sched(&["FREQ=DAILY;BYHOUR=22;BYMINUTE=30"]);
        assert_eq!(
            nexts(&s, "2024-01-30T23:00:00Z", 3),
            [
                "2024-01-31T22:30:00Z",
                "2024-02-01T22:30:00Z",
                "2024-02-02T22:30:00Z"
            ]
        );
        // Strictly after: a point at t itself is not "next".
        assert_eq!(
            s.next_after(ts("2024-01-31T22:30:00Z")).unwrap(),
            ts("2024-02-01T22:30:00Z")
        );
        assert_eq!(
            s.next_after(ts("2024-01-31T22:29:59.999Z")).unwrap(),
            ts("2024-01-31T22:30:00Z")
        );
    }

    #[test]
    fn daily_across_year_boundary_and_leap_day() {
        let s = sched(&["RRULE:FREQ=DAILY;BYHOUR=0,12"]);
        assert_eq!(
            nexts(&s, "2023-12-31T06:00:00Z", 3),
            [
                "2023-12-31T12:00:00Z",
                "2024-01-01T00:00:00Z",
                "2024-01-01T12:00:00Z"
            ]
        );
        assert_eq!(
            nexts(&s, "2024-02-28T13:00:00Z", 3),
            [
                "2024-02-29T00:00:00Z",
                "2024-02-29T12:00:00Z",
                "2024-03-01T00:00:00Z"
            ]
        );
        // 2023 has no leap day.
        assert_eq!(
            nexts(&s, "2023-02-28T13:00:00Z", 1),
            ["2023-03-01T00:00:00Z"]
        );
    }

    #[test]
    fn weekly_byday() {
        // CBR's example. 2024-01-29 is a Monday.
        let s = sched(&["FREQ=WEEKLY;BYDAY=MO,WE,FR;BYHOUR=22;BYMINUTE=00"]);
        assert_eq!(
            nexts(&s, "2024-01-29T23:00:00Z", 4),
            [
                "2024-01-31T22:00:00Z",
                "2024-02-02T22:00:00Z",
                "2024-02-05T22:00:00Z",
                "2024-02-07T22:00:00Z"
            ]
        );
        // Across the year: 2024-12-30 is a Monday, 2025-01-01 a Wednesday.
        assert_eq!(
            nexts(&s, "2024-12-28T00:00:00Z", 3),
            [
                "2024-12-30T22:00:00Z",
                "2025-01-01T22:00:00Z",
                "2025-01-03T22:00:00Z"
            ]
        );
        // A Sunday-only rule waits most of a week.
        let su = sched(&["freq=weekly;byday=su;byhour=3"]);
        assert_eq!(
            nexts(&su, "2024-03-03T03:00:00Z", 1),
            ["2024-03-10T03:00:00Z"]
        );
    }

    #[test]
    fn interval_every_three_days() {
        let s = Schedule::parse(&["FREQ=DAILY;INTERVAL=3;BYHOUR=2"], None)
            .unwrap()
            .with_anchor(ts("2024-01-29T10:00:00Z"));
        assert_eq!(s.anchor(), date(2024, 1, 29));
        // The anchor day's 02:00 has passed; then every third day, across
        // the end of January and of February (leap year).
        assert_eq!(
            nexts(&s, "2024-01-29T10:00:00Z", 4),
            [
                "2024-02-01T02:00:00Z",
                "2024-02-04T02:00:00Z",
                "2024-02-07T02:00:00Z",
                "2024-02-10T02:00:00Z"
            ]
        );
        assert_eq!(
            nexts(&s, "2024-02-26T00:00:00Z", 3),
            [
                "2024-02-28T02:00:00Z",
                "2024-03-02T02:00:00Z",
                "2024-03-05T02:00:00Z"
            ]
        );
        // Across the year: 2024-12-29 is anchor + 335 = 3 * 111 + 2 days,
        // so the next interval day is 2024-12-30, then 2025-01-02.
        assert_eq!(
            nexts(&s, "2024-12-29T00:00:00Z", 2),
            ["2024-12-30T02:00:00Z", "2025-01-02T02:00:00Z"]
        );
        // Before the anchor the pattern continues backwards.
        assert_eq!(
            nexts(&s, "2024-01-24T00:00:00Z", 1),
            ["2024-01-26T02:00:00Z"]
        );
        // INTERVAL=30, the maximum.
        let s30 = Schedule::parse(&["FREQ=DAILY;INTERVAL=30;BYHOUR=5"], None)
            .unwrap()
            .with_anchor_date(date(2024, 1, 1));
        assert_eq!(
            nexts(&s30, "2024-01-01T06:00:00Z", 2),
            ["2024-01-31T05:00:00Z", "2024-03-01T05:00:00Z"]
        );
    }

    #[test]
    fn multi_rule() {
        // Weekdays at 22:00, Sundays at 04:00 and 16:00, and every other day
        // at 10:00 anchored on Friday 2024-01-26.
        let s = Schedule::parse(
            &[
                "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=22",
                "FREQ=WEEKLY;BYDAY=SU;BYHOUR=4,16",
                "FREQ=DAILY;INTERVAL=2;BYHOUR=10",
            ],
            None,
        )
        .unwrap()
        .with_anchor_date(date(2024, 1, 26));
        assert_eq!(
            nexts(&s, "2024-01-26T23:00:00Z", 7),
            [
                "2024-01-28T04:00:00Z", // Sunday
                "2024-01-28T10:00:00Z", // interval day (anchor + 2)
                "2024-01-28T16:00:00Z",
                "2024-01-29T22:00:00Z", // Monday
                "2024-01-30T10:00:00Z", // interval
                "2024-01-30T22:00:00Z",
                "2024-01-31T22:00:00Z",
            ]
        );
        // Across the month end: Feb 1 is an interval day and a Thursday.
        assert_eq!(
            nexts(&s, "2024-01-31T22:00:00Z", 3),
            [
                "2024-02-01T10:00:00Z",
                "2024-02-01T22:00:00Z",
                "2024-02-02T22:00:00Z"
            ]
        );
        // Across the year end: 2024-12-31 is a Tuesday and an interval day.
        assert_eq!(
            nexts(&s, "2024-12-31T11:00:00Z", 3),
            [
                "2024-12-31T22:00:00Z",
                "2025-01-01T22:00:00Z",
                "2025-01-02T10:00:00Z"
            ]
        );
        // The same instant from two rules is one point.
        let dup = sched(&[
            "FREQ=DAILY;BYHOUR=22",
            "FREQ=WEEKLY;BYDAY=MO;BYHOUR=22;BYMINUTE=0",
        ]);
        assert_eq!(
            dup.points_between(ts("2024-01-28T00:00:00Z"), ts("2024-01-30T00:00:00Z")),
            [ts("2024-01-28T22:00:00Z"), ts("2024-01-29T22:00:00Z")]
        );
    }

    #[test]
    fn utc_offset_evaluation() {
        // A daily 01:00 at UTC+08:00 is 17:00 UTC the day before.
        let s = Schedule::parse(&["FREQ=DAILY;BYHOUR=1;BYMINUTE=0"], Some("UTC+08:00")).unwrap();
        assert_eq!(
            nexts(&s, "2024-12-31T12:00:00Z", 2),
            ["2024-12-31T17:00:00Z", "2025-01-01T17:00:00Z"]
        );
        // Weekly Monday 01:00 at UTC+08:00 is Sunday 17:00 UTC.
        let w = Schedule::parse(&["FREQ=WEEKLY;BYDAY=MO;BYHOUR=1"], Some("UTC+08:00")).unwrap();
        assert_eq!(
            nexts(&w, "2024-01-01T00:00:00Z", 1),
            ["2024-01-07T17:00:00Z"]
        );
        // A negative offset with minutes: 23:00 at UTC-05:30 is 04:30 UTC.
        let n = Schedule::parse(&["FREQ=DAILY;BYHOUR=23"], Some("UTC-05:30")).unwrap();
        assert_eq!(
            nexts(&n, "2024-02-28T05:00:00Z", 1),
            ["2024-02-29T04:30:00Z"]
        );
        // Interval anchor is the creation date in the zone: created at
        // 2024-01-31T20:00Z is 2024-02-01 at UTC+08:00.
        let i = Schedule::parse(&["FREQ=DAILY;INTERVAL=2;BYHOUR=9"], Some("UTC+08:00"))
            .unwrap()
            .with_anchor(ts("2024-01-31T20:00:00Z"));
        assert_eq!(i.anchor(), date(2024, 2, 1));
        assert_eq!(
            nexts(&i, "2024-01-31T20:00:00Z", 2),
            ["2024-02-01T01:00:00Z", "2024-02-03T01:00:00Z"]
        );
    }

    #[test]
    fn weekly_and_interval_in_a_time_zone_across_the_year_end() {
        // Monday 01:00 at UTC+08:00 is Sunday 17:00 UTC: the local weekday
        // counts. 2024-12-30 and 2025-01-06 are Mondays.
        let w = Schedule::parse(&["FREQ=WEEKLY;BYDAY=MO;BYHOUR=1"], Some("UTC+08:00")).unwrap();
        assert_eq!(
            nexts(&w, "2024-12-25T00:00:00Z", 2),
            ["2024-12-29T17:00:00Z", "2025-01-05T17:00:00Z"]
        );
        // Friday 22:00 at UTC-05:00 is Saturday 03:00 UTC; 2025-01-03 is a
        // Friday.
        let f = Schedule::parse(&["FREQ=WEEKLY;BYDAY=FR;BYHOUR=22"], Some("UTC-05:00")).unwrap();
        assert_eq!(
            nexts(&f, "2024-12-28T02:59:59Z", 3),
            [
                "2024-12-28T03:00:00Z",
                "2025-01-04T03:00:00Z",
                "2025-01-11T03:00:00Z"
            ]
        );
        // Every 4 days at 06:00, UTC+08:00, anchored on 2024-12-25 local
        // (created 2024-12-24T20:00Z): Dec 25, 29, Jan 2, 6.
        let i = Schedule::parse(&["FREQ=DAILY;INTERVAL=4;BYHOUR=6"], Some("UTC+08:00"))
            .unwrap()
            .with_anchor(ts("2024-12-24T20:00:00Z"));
        assert_eq!(i.anchor(), date(2024, 12, 25));
        assert_eq!(
            nexts(&i, "2024-12-24T20:00:00Z", 4),
            [
                "2024-12-24T22:00:00Z",
                "2024-12-28T22:00:00Z",
                "2025-01-01T22:00:00Z",
                "2025-01-05T22:00:00Z"
            ]
        );
    }

    #[test]
    fn a_month_of_a_multi_rule_schedule() {
        // tests/policy.sh's schedule: daily 01:00 and 13:00, Sundays 19:00,
        // at UTC+08:00. December 2024 (local) has 31 days and 5 Sundays.
        let s = Schedule::parse(
            &["FREQ=DAILY;BYHOUR=1,13", "FREQ=WEEKLY;BYDAY=SU;BYHOUR=19"],
            Some("UTC+08:00"),
        )
        .unwrap();
        let dec = s.points_between(ts("2024-11-30T16:00:00Z"), ts("2024-12-31T16:00:00Z"));
        assert_eq!(dec.len(), 31 * 2 + 5);
        assert_eq!(dec[0], ts("2024-11-30T17:00:00Z")); // Dec 1, 01:00 local
        assert_eq!(dec[2], ts("2024-12-01T11:00:00Z")); // Sunday Dec 1, 19:00
        assert_eq!(*dec.last().unwrap(), ts("2024-12-31T05:00:00Z")); // Dec 31, 13:00
                                                                      // The next point is the first of 2025, local time.
        assert_eq!(
            s.next_after(*dec.last().unwrap()).unwrap(),
            ts("2024-12-31T17:00:00Z")
        );
        // February 2025 (local): 28 days, 4 Sundays.
        let feb = s.points_between(ts("2025-01-31T16:00:00Z"), ts("2025-02-28T16:00:00Z"));
        assert_eq!(feb.len(), 28 * 2 + 4);
    }

    #[test]
    fn points_between_is_half_open() {
        let s = sched(&["FREQ=DAILY;BYHOUR=0,6,12,18"]);
        let p = s.points_between(ts("2024-01-31T00:00:00Z"), ts("2024-02-01T00:00:00Z"));
        assert_eq!(
            p,
            [
                ts("2024-01-31T06:00:00Z"),
                ts("2024-01-31T12:00:00Z"),
                ts("2024-01-31T18:00:00Z"),
                ts("2024-02-01T00:00:00Z")
            ]
        );
        assert!(s
            .points_between(ts("2024-02-01T00:00:00Z"), ts("2024-02-01T00:00:00Z"))
            .is_empty());
        assert!(s
            .points_between(ts("2024-02-01T05:00:00Z"), ts("2024-02-01T01:00:00Z"))
            .is_empty());
    }

    #[test]
    fn parsing_forms_and_canonical_text() {
        let s = sched(&[" rrule:freq=weekly;byday=fr,mo,mo;byhour=18,6;BYMINUTE=05; "]);
        assert_eq!(
            s.rules()[0].to_string(),
            "FREQ=WEEKLY;BYDAY=MO,FR;BYHOUR=6,18;BYMINUTE=5"
        );
        assert_eq!(s.rules()[0].times(), [(6, 5), (18, 5)]);
        assert_eq!(s.rules()[0].weekdays(), [Weekday::Monday, Weekday::Friday]);
        assert_eq!(s.rules()[0].freq(), Freq::Weekly);
        let d = sched(&["FREQ=DAILY;INTERVAL=3;BYHOUR=1"]);
        assert_eq!(
            d.rules()[0].to_string(),
            "FREQ=DAILY;INTERVAL=3;BYHOUR=1;BYMINUTE=0"
        );
        assert_eq!(d.rules()[0].interval(), 3);
        assert_eq!(d.rules()[0].weekdays().len(), 7);
        assert_eq!(d.timezone(), &Zone::UTC);
        // Duplicate rules merge.
        let two = sched(&[
            "FREQ=DAILY;BYHOUR=1",
            "RRULE:FREQ=DAILY;BYHOUR=01;BYMINUTE=00",
        ]);
        assert_eq!(two.rules().len(), 1);
        assert_eq!(
            two.to_string(),
            "FREQ=DAILY;BYHOUR=1;BYMINUTE=0 (UTC+00:00)"
        );
        // 24 points a day, one hour apart, is the maximum and is fine.
        let all: Vec<String> = (0..24).map(|h| h.to_string()).collect();
        sched(&[format!("FREQ=DAILY;BYHOUR={};BYMINUTE=59", all.join(",")).as_str()]);
        // WEEKLY;INTERVAL=1 is accepted.
        sched(&["FREQ=WEEKLY;INTERVAL=1;BYDAY=SA;BYHOUR=3"]);
    }

    #[test]
    fn validation_errors() {
        let e = err(&["FREQ=HOURLY"], None);
        assert!(
            e.contains(r#"schedule "FREQ=HOURLY": FREQ must be DAILY or WEEKLY"#),
            "{e}"
        );
        let e = err(&["FREQ=DAILY;INTERVAL=31;BYHOUR=1"], None);
        assert!(e.contains("INTERVAL=31 is out of range"), "{e}");
        let e = err(&["FREQ=DAILY;INTERVAL=0;BYHOUR=1"], None);
        assert!(e.contains("INTERVAL=0 is out of range"), "{e}");
        let e = err(&["FREQ=DAILY;INTERVAL=x;BYHOUR=1"], None);
        assert!(e.contains("not a number"), "{e}");
        let e = err(&["FREQ=WEEKLY;INTERVAL=2;BYDAY=MO;BYHOUR=1"], None);
        assert!(
            e.contains("INTERVAL=2 is not supported with FREQ=WEEKLY"),
            "{e}"
        );
        let e = err(&["FREQ=DAILY;BYHOUR=24"], None);
        assert!(
            e.contains("BYHOUR=24 is out of range: hours are 0-23"),
            "{e}"
        );
        let e = err(&["FREQ=DAILY;BYHOUR=1;BYMINUTE=60"], None);
        assert!(e.contains("BYMINUTE=60 is out of range"), "{e}");
        let e = err(&["FREQ=DAILY;BYHOUR=-1"], None);
        assert!(e.contains("not a number"), "{e}");
        let e = err(&["FREQ=DAILY;BYHOUR=1,,2"], None);
        assert!(e.contains("empty item"), "{e}");
        let e = err(&["FREQ=WEEKLY;BYDAY=XX;BYHOUR=1"], None);
        assert!(e.contains(r#"BYDAY value "XX" is not a weekday"#), "{e}");
        let e = err(&["FREQ=WEEKLY;BYDAY=1MO;BYHOUR=1"], None);
        assert!(e.contains("is not a weekday"), "{e}");
        let e = err(&["FREQ=WEEKLY;BYHOUR=1"], None);
        assert!(e.contains("FREQ=WEEKLY needs BYDAY"), "{e}");
        let e = err(&["FREQ=DAILY;BYDAY=MO;BYHOUR=1"], None);
        assert!(e.contains("BYDAY goes with FREQ=WEEKLY only"), "{e}");
        let e = err(&["FREQ=DAILY"], None);
        assert!(e.contains("BYHOUR is required"), "{e}");
        let e = err(&["BYHOUR=1"], None);
        assert!(e.contains("FREQ is required"), "{e}");
        let e = err(&["FREQ=DAILY;BYHOUR=1;COUNT=3"], None);
        assert!(e.contains("unknown key COUNT"), "{e}");
        let e = err(&["FREQ=DAILY;BYHOUR=1;DTSTART=20240101"], None);
        assert!(e.contains("unknown key DTSTART"), "{e}");
        let e = err(&["FREQ=DAILY;FREQ=DAILY;BYHOUR=1"], None);
        assert!(e.contains("FREQ is given twice"), "{e}");
        let e = err(&["FREQ=DAILY;BYHOUR"], None);
        assert!(e.contains(r#""BYHOUR" is not KEY=VALUE"#), "{e}");
        let e = err(&["  "], None);
        assert!(e.contains("the rule is empty"), "{e}");
        let e = err(&["RRULE:"], None);
        assert!(e.contains("the rule is empty"), "{e}");
        let none: [&str; 0] = [];
        let e = err(&none, None);
        assert!(e.contains("at least one schedule"), "{e}");
        let e = err(&["FREQ=DAILY;BYHOUR=1"], Some("Asia/Atlantis"));
        assert!(e.contains(r#"time zone "Asia/Atlantis" is unknown"#), "{e}");
        let e = err(&["FREQ=DAILY;BYHOUR=1"], Some("UTC+25:00"));
        assert!(e.contains(r#"time zone "UTC+25:00" is invalid"#), "{e}");
    }

    #[test]
    fn too_many_points_and_too_close() {
        // 25+ points in one rule.
        let e = err(&["FREQ=DAILY;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23;BYMINUTE=0,30"], None);
        assert!(e.contains("48 time points a day"), "{e}");
        assert!(e.contains("at most 24"), "{e}");
        // Two points 30 minutes apart in one rule.
        let e = err(&["FREQ=DAILY;BYHOUR=6;BYMINUTE=0,30"], None);
        assert!(e.contains("06:00 and 06:30 are 30 minutes apart"), "{e}");
        assert!(e.contains("at least one hour apart"), "{e}");
        // ... and across two rules.
        let e = err(
            &["FREQ=DAILY;BYHOUR=6", "FREQ=DAILY;BYHOUR=5;BYMINUTE=30"],
            None,
        );
        assert!(
            e.contains(r#"schedules "FREQ=DAILY;BYHOUR=6" and "FREQ=DAILY;BYHOUR=5;BYMINUTE=30""#),
            "{e}"
        );
        assert!(e.contains("05:30 and 06:00 are 30 minutes apart"), "{e}");
        // 24 hourly points plus one more anywhere: too many for one day.
        let all: Vec<String> = (0..24).map(|h| h.to_string()).collect();
        let hourly = format!("FREQ=DAILY;BYHOUR={}", all.join(","));
        let e = err(
            &[
                hourly.as_str(),
                "FREQ=WEEKLY;BYDAY=TU;BYHOUR=12;BYMINUTE=20",
            ],
            None,
        );
        assert!(e.contains("12:00 and 12:20 are 20 minutes apart"), "{e}");
        // Across midnight, in one rule and across rules.
        sched(&["FREQ=DAILY;BYHOUR=0,23;BYMINUTE=30"]); // exactly 60 minutes
        let e = err(
            &[
                "FREQ=DAILY;BYHOUR=23;BYMINUTE=30",
                "FREQ=DAILY;BYHOUR=0;BYMINUTE=10",
            ],
            None,
        );
        assert!(
            e.contains("23:30 and 00:10 the next day are 40 minutes apart"),
            "{e}"
        );
        let e = err(
            &[
                "FREQ=WEEKLY;BYDAY=SU;BYHOUR=23;BYMINUTE=30",
                "FREQ=WEEKLY;BYDAY=MO;BYHOUR=0",
            ],
            None,
        );
        assert!(
            e.contains("23:30 and 00:00 the next day are 30 minutes apart"),
            "{e}"
        );
    }

    #[test]
    fn close_points_on_days_that_never_meet_are_fine() {
        // Monday 10:00 and Tuesday 10:30: never less than a day apart.
        sched(&[
            "FREQ=WEEKLY;BYDAY=MO;BYHOUR=10",
            "FREQ=WEEKLY;BYDAY=TU;BYHOUR=10;BYMINUTE=30",
        ]);
        // Saturday 23:30 and Monday 00:00 (not Sunday).
        sched(&[
            "FREQ=WEEKLY;BYDAY=SA;BYHOUR=23;BYMINUTE=30",
            "FREQ=WEEKLY;BYDAY=MO;BYHOUR=0",
        ]);
        // Two every-other-day rules never meet on adjacent days.
        sched(&[
            "FREQ=DAILY;INTERVAL=2;BYHOUR=23;BYMINUTE=30",
            "FREQ=DAILY;INTERVAL=2;BYHOUR=0",
        ]);
        // 23:00 then 00:00 the next day is exactly one hour: allowed.
        sched(&["FREQ=DAILY;BYHOUR=0,23"]);
        // But every-other-day vs every-third-day can be adjacent days.
        let e = err(
            &[
                "FREQ=DAILY;INTERVAL=2;BYHOUR=23;BYMINUTE=30",
                "FREQ=DAILY;INTERVAL=3;BYHOUR=0",
            ],
            None,
        );
        assert!(e.contains("the next day are 30 minutes apart"), "{e}");
        // A weekly rule against an every-7-days rule: the weekday of the
        // interval days depends on the anchor, so it is refused.
        let e = err(
            &[
                "FREQ=DAILY;INTERVAL=7;BYHOUR=10",
                "FREQ=WEEKLY;BYDAY=MO;BYHOUR=10;BYMINUTE=30",
            ],
            None,
        );
        assert!(e.contains("30 minutes apart"), "{e}");
    }

    #[test]
    fn time_zones() {
        let p = |s: &str| UtcOffset::parse(s).map(|z| z.to_string());
        assert_eq!(p("UTC").unwrap(), "UTC+00:00");
        assert_eq!(p("utc+08:00").unwrap(), "UTC+08:00");
        assert_eq!(p("UTC-05:30").unwrap(), "UTC-05:30");
        assert_eq!(p("UTC+8").unwrap(), "UTC+08:00");
        assert_eq!(p("UTC+0545").unwrap(), "UTC+05:45");
        assert_eq!(p("+09:30").unwrap(), "UTC+09:30");
        assert_eq!(p("GMT-3").unwrap(), "UTC-03:00");
        assert_eq!(p("UTC+14:00").unwrap(), "UTC+14:00");
        assert_eq!(p("UTC-12:00").unwrap(), "UTC-12:00");
        for bad in [
            "",
            "UTC+15:00",
            "UTC-12:30",
            "UTC+08:60",
            "UTC+8:0",
            "UTC8",
            "UTC+",
            "CST",
            "UTC+08:00:00",
            "UTC+123",
        ] {
            let e = UtcOffset::parse(bad).unwrap_err();
            assert_eq!(e.cbr_code(), Some("BackupService.9900"), "{bad}");
            assert!(e.to_string().contains("is invalid"), "{bad}");
        }
        assert_eq!("UTC+08:00".parse::<UtcOffset>().unwrap().minutes(), 480);
        assert_eq!(UtcOffset::parse_opt(None).unwrap(), UtcOffset::UTC);
        let z = UtcOffset::parse("UTC+08:00").unwrap();
        assert_eq!(
            z.to_datetime(ts("2024-01-31T23:30:00Z")),
            date(2024, 2, 1).at(7, 30, 0, 0)
        );
    }

    fn zoned(rules: &[&str], tz: &str) -> Schedule {
        Schedule::parse(rules, Some(tz)).unwrap()
    }

    #[test]
    fn iana_zone_names() {
        let p = |s: &str| Zone::parse(s).map(|z| z.to_string());
        assert_eq!(p("Europe/Berlin").unwrap(), "Europe/Berlin");
        // Case does not matter; the database's spelling is kept.
        assert_eq!(p(" america/new_york ").unwrap(), "America/New_York");
        assert_eq!(p("Asia/Shanghai").unwrap(), "Asia/Shanghai");
        // The fixed forms stay fixed offsets (no zone lookup).
        assert_eq!(Zone::parse("UTC").unwrap(), Zone::UTC);
        assert_eq!(
            Zone::parse("UTC+08:00").unwrap(),
            Zone::Fixed(UtcOffset::parse("UTC+08:00").unwrap())
        );
        assert_ne!(Zone::parse("Europe/Berlin").unwrap(), Zone::UTC);
        for unknown in ["Mars/Olympus_Mons", "Europe/Atlantis", "CST"] {
            let e = Zone::parse(unknown).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(
                e.to_string()
                    .contains(&format!("time zone {unknown:?} is unknown")),
                "{e}"
            );
        }
        // Not names at all, and the database's own files: refused before
        // any lookup.
        for bad in [
            "../etc/passwd",
            "/usr/share/zoneinfo/UTC",
            "Europe//Berlin",
            "Europe/",
            "localtime",
            "posixrules",
            "Europe/Berlin;x",
            "Europe/Ber lin",
        ] {
            let e = Zone::parse(bad).unwrap_err();
            assert!(e.to_string().contains("is invalid"), "{bad}: {e}");
        }
        // RFC 3339 in the zone: the offset of that instant.
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        assert_eq!(
            berlin.rfc3339(ts("2026-03-29T00:30:00Z")),
            "2026-03-29T01:30:00+01:00"
        );
        assert_eq!(
            berlin.rfc3339(ts("2026-03-29T01:30:00Z")),
            "2026-03-29T03:30:00+02:00"
        );
        assert_eq!(
            Zone::parse("UTC-05:30")
                .unwrap()
                .rfc3339(ts("2024-01-01T00:00:00Z")),
            "2023-12-31T18:30:00-05:30"
        );
    }

    /// The points of (from, to] of a schedule at every hour in
    /// Europe/Berlin, checked to fall on the local day `day` and to
    /// increase.
    fn berlin_hourly(from: &str, to: &str, day: jiff::civil::Date) -> Vec<Timestamp> {
        let all: Vec<String> = (0..24).map(|h| h.to_string()).collect();
        let hourly = format!("FREQ=DAILY;BYHOUR={}", all.join(","));
        let h = zoned(&[hourly.as_str()], "Europe/Berlin");
        let points = h.points_between(ts(from), ts(to));
        let berlin = h.timezone();
        assert!(
            points.iter().all(|p| berlin.to_datetime(*p).date() == day),
            "{points:?} not all on {day}"
        );
        assert!(points.windows(2).all(|w| w[0] < w[1]), "{points:?}");
        points
    }

    #[test]
    fn dst_spring_forward_europe_berlin() {
        // 2026-03-29: at 02:00 CET (01:00Z) the clocks go to 03:00 CEST.
        let s = zoned(&["FREQ=DAILY;BYHOUR=2;BYMINUTE=30"], "Europe/Berlin");
        // 02:30 does not exist that day: it runs once, an hour later by the
        // wall clock (03:30 CEST), the same instant as 02:30 CET.
        assert_eq!(
            nexts(&s, "2026-03-27T12:00:00Z", 4),
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:30:00Z", // 03:30 CEST (02:30 skipped)
                "2026-03-30T00:30:00Z", // 02:30 CEST
                "2026-03-31T00:30:00Z",
            ]
        );
        assert_eq!(
            s.points_between(ts("2026-03-28T12:00:00Z"), ts("2026-03-29T12:00:00Z")),
            [ts("2026-03-29T01:30:00Z")]
        );
        // Hourly: the local day has 23 hours; 02:00 shifts onto 03:00 and
        // the two run once.
        let day = berlin_hourly(
            "2026-03-28T22:59:59Z",
            "2026-03-29T21:59:59Z",
            date(2026, 3, 29),
        );
        assert_eq!(day.len(), 23, "{day:?}");
        assert_eq!(day[1], ts("2026-03-29T00:00:00Z")); // 01:00 CET
        assert_eq!(day[2], ts("2026-03-29T01:00:00Z")); // 03:00 CEST
        assert_eq!(day[3], ts("2026-03-29T02:00:00Z")); // 04:00 CEST
                                                        // The day before and after have 24 points.
        let before = berlin_hourly(
            "2026-03-27T22:59:59Z",
            "2026-03-28T22:59:59Z",
            date(2026, 3, 28),
        );
        assert_eq!(before.len(), 24);
        let after = berlin_hourly(
            "2026-03-29T21:59:59Z",
            "2026-03-30T21:59:59Z",
            date(2026, 3, 30),
        );
        assert_eq!(after.len(), 24);
        // A weekly Sunday 02:00 point moves to 03:00 CEST on that Sunday.
        let w = zoned(&["FREQ=WEEKLY;BYDAY=SU;BYHOUR=2"], "Europe/Berlin");
        assert_eq!(
            nexts(&w, "2026-03-22T12:00:00Z", 2),
            ["2026-03-29T01:00:00Z", "2026-04-05T00:00:00Z"]
        );
    }

    #[test]
    fn dst_fall_back_europe_berlin() {
        // 2026-10-25: at 03:00 CEST (01:00Z) the clocks go back to 02:00
        // CET, so 02:00-03:00 happens twice.
        let s = zoned(&["FREQ=DAILY;BYHOUR=2;BYMINUTE=30"], "Europe/Berlin");
        // 02:30 runs once, at its first occurrence (CEST), not again an
        // hour later.
        assert_eq!(
            nexts(&s, "2026-10-23T12:00:00Z", 4),
            [
                "2026-10-24T00:30:00Z", // 02:30 CEST
                "2026-10-25T00:30:00Z", // 02:30 CEST, the first of two
                "2026-10-26T01:30:00Z", // 02:30 CET
                "2026-10-27T01:30:00Z",
            ]
        );
        assert_eq!(
            s.points_between(ts("2026-10-24T12:00:00Z"), ts("2026-10-25T12:00:00Z")),
            [ts("2026-10-25T00:30:00Z")]
        );
        // A pass between the two occurrences does not run it again.
        assert!(s
            .points_between(ts("2026-10-25T00:45:00Z"), ts("2026-10-25T23:00:00Z"))
            .is_empty());
        // Hourly: the local day has 25 hours and 24 points, each once.
        let day = berlin_hourly(
            "2026-10-24T21:59:59Z",
            "2026-10-25T22:59:59Z",
            date(2026, 10, 25),
        );
        assert_eq!(day.len(), 24, "{day:?}");
        assert_eq!(day[2], ts("2026-10-25T00:00:00Z")); // 02:00 CEST
        assert_eq!(day[3], ts("2026-10-25T02:00:00Z")); // 03:00 CET
    }

    #[test]
    fn dst_america_new_york() {
        // 2026-03-08 (a Sunday): 02:00 EST (07:00Z) becomes 03:00 EDT.
        let s = zoned(&["FREQ=DAILY;BYHOUR=2;BYMINUTE=30"], "America/New_York");
        assert_eq!(
            nexts(&s, "2026-03-06T12:00:00Z", 3),
            [
                "2026-03-07T07:30:00Z", // 02:30 EST
                "2026-03-08T07:30:00Z", // 03:30 EDT (02:30 skipped)
                "2026-03-09T06:30:00Z", // 02:30 EDT
            ]
        );
        // 2026-11-01 (a Sunday): 02:00 EDT (06:00Z) becomes 01:00 EST, so
        // 01:00-02:00 happens twice; Sunday 01:30 runs once, at 01:30 EDT.
        let w = zoned(
            &["FREQ=WEEKLY;BYDAY=SU;BYHOUR=1;BYMINUTE=30"],
            "America/New_York",
        );
        assert_eq!(
            nexts(&w, "2026-10-30T00:00:00Z", 2),
            ["2026-11-01T05:30:00Z", "2026-11-08T06:30:00Z"]
        );
        assert_eq!(
            w.points_between(ts("2026-11-01T00:00:00Z"), ts("2026-11-02T00:00:00Z")),
            [ts("2026-11-01T05:30:00Z")]
        );
        // An every-2-days rule counts local days across both changes.
        let i = zoned(&["FREQ=DAILY;INTERVAL=2;BYHOUR=23"], "America/New_York")
            .with_anchor(ts("2026-03-07T12:00:00Z"));
        assert_eq!(i.anchor(), date(2026, 3, 7));
        assert_eq!(
            nexts(&i, "2026-03-07T12:00:00Z", 2),
            ["2026-03-08T04:00:00Z", "2026-03-10T03:00:00Z"] // 23:00 EST, EDT
        );
    }

    #[test]
    fn a_skipped_day_runs_once() {
        // Pacific/Apia skipped 2011-12-30 (from UTC-10 to UTC+14): that
        // day's 10:00 shifts a day later, onto 2011-12-31 10:00, and the
        // two are one point.
        let s = zoned(&["FREQ=DAILY;BYHOUR=10"], "Pacific/Apia");
        assert_eq!(
            nexts(&s, "2011-12-29T00:00:00Z", 3),
            [
                "2011-12-29T20:00:00Z", // 12-29 10:00 -10
                "2011-12-30T20:00:00Z", // 12-31 10:00 +14 (and 12-30's)
                "2011-12-31T20:00:00Z", // 2012-01-01 10:00 +14
            ]
        );
    }

    #[test]
    fn a_gap_over_midnight_keeps_the_order() {
        // A made-up zone (POSIX TZ) whose clocks jump two hours, from 23:00
        // to 01:00 the next day, on 2026-03-29. That day's 23:30 shifts to
        // 01:30 the next day, after the next day's 01:00: both run, in
        // order (looking at one day only would skip 01:00).
        let mut s = sched(&["FREQ=DAILY;BYHOUR=23;BYMINUTE=30", "FREQ=DAILY;BYHOUR=1"]);
        s.tz = Zone::Named(jiff::tz::TimeZone::posix("AAA0BBB-2,M3.5.0/23,M10.5.0/3").unwrap());
        assert_eq!(
            nexts(&s, "2026-03-29T12:00:00Z", 4),
            [
                "2026-03-29T23:00:00Z", // 03-30 01:00 +02
                "2026-03-29T23:30:00Z", // 03-29 23:30, in the gap
                "2026-03-30T21:30:00Z", // 03-30 23:30 +02
                "2026-03-30T23:00:00Z", // 03-31 01:00 +02
            ]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// In zones with daylight saving, over a year: points strictly
        /// increase, each local day holds exactly its distinct wall-clock
        /// instants, and passes split anywhere see each point once.
        #[test]
        fn zoned_schedules_run_each_point_once(
            rules in proptest::collection::vec(rule_strategy(), 1..3),
            zone in prop_oneof![
                Just("Europe/Berlin"),
                Just("America/New_York"),
                Just("Australia/Sydney"),
                Just("Australia/Lord_Howe"),
            ],
            anchor_day in 0i64..3000,
            // Within [from, to]: 2026 has 365 days (a split past `to`
            // would count points after `to` in the first half).
            split in 0i64..=(365 * 86_400),
        ) {
            let parsed = Schedule::parse(&rules, Some(zone));
            prop_assume!(parsed.is_ok());
            let anchor = date(2000, 1, 1).checked_add(jiff::Span::new().days(anchor_day)).unwrap();
            let s = parsed.unwrap().with_anchor_date(anchor);
            let from = ts("2026-01-01T00:00:00Z");
            let to = ts("2027-01-01T00:00:00Z");
            let pts = s.points_between(from, to);
            prop_assert!(pts.windows(2).all(|w| w[0] < w[1]));
            prop_assert_eq!(&pts, &brute_force_points(&s, anchor, from, to));
            let t = Timestamp::from_second(from.as_second() + split).unwrap();
            prop_assert_eq!(&split_at(&s, from, t, to), &pts);
        }
    }

    #[test]
    fn full_every() {
        assert_eq!(check_full_every(-1).unwrap(), -1);
        assert_eq!(check_full_every(0).unwrap(), 0);
        assert_eq!(check_full_every(100).unwrap(), 100);
        for bad in [-2, 101, i64::MIN, i64::MAX] {
            let e = check_full_every(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e
                .to_string()
                .contains(&format!("full-every {bad} is out of range")));
        }
        assert!(!full_backup_due(-1, 1_000_000));
        assert!(full_backup_due(0, 0));
        assert!(!full_backup_due(5, 4));
        assert!(full_backup_due(5, 5));
    }

    /// The oracle of the property tests: every time of every rule active
    /// on every local day that can hold a point of (from, to], by brute
    /// force, in order. The day before `from`'s counts: a time in a gap
    /// shifts later, possibly onto the next day.
    fn brute_force_points(
        s: &Schedule,
        anchor: jiff::civil::Date,
        from: Timestamp,
        to: Timestamp,
    ) -> Vec<Timestamp> {
        let tz = s.timezone();
        let mut expect = std::collections::BTreeSet::new();
        let mut d = tz.to_datetime(from).date().yesterday().unwrap();
        while d <= tz.to_datetime(to).date() {
            for r in s.rules().iter().filter(|r| r.active_on(d, anchor)) {
                for (h, m) in r.times() {
                    let t = tz.to_timestamp(d.at(h as i8, m as i8, 0, 0)).unwrap();
                    if t > from && t <= to {
                        expect.insert(t);
                    }
                }
            }
            d = d.tomorrow().unwrap();
        }
        expect.into_iter().collect()
    }

    /// The points of two passes, (from, t] then (t, to].
    fn split_at(s: &Schedule, from: Timestamp, t: Timestamp, to: Timestamp) -> Vec<Timestamp> {
        let mut both = s.points_between(from, t);
        both.extend(s.points_between(t, to));
        both
    }

    /// A random rule in the accepted subset (possibly invalid as a set).
    fn rule_strategy() -> impl Strategy<Value = String> {
        // Biased to small intervals, midnight and round minutes, so that
        // close time points (valid or not) are common.
        let hours =
            proptest::collection::btree_set(prop_oneof![Just(0u8), Just(23), 0u8..24], 1..4);
        let minute = prop_oneof![Just(0u8), Just(30), 0u8..60];
        let interval = prop_oneof![1u32..=4, 1u32..=30];
        prop_oneof![
            (interval, hours.clone(), minute.clone()).prop_map(|(i, h, m)| format!(
                "FREQ=DAILY;INTERVAL={i};BYHOUR={};BYMINUTE={m}",
                h.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )),
            (
                proptest::collection::btree_set(0usize..7, 1..4),
                hours,
                minute
            )
                .prop_map(|(d, h, m)| format!(
                    "FREQ=WEEKLY;BYDAY={};BYHOUR={};BYMINUTE={m}",
                    d.iter().map(|&x| WEEKDAYS[x]).collect::<Vec<_>>().join(","),
                    h.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Whatever passes validation really has its points at least an
        /// hour apart, at most 24 a day, on the rules' days and times; and
        /// `next_after` finds the first point after any instant.
        #[test]
        fn valid_schedules_keep_their_promises(
            rules in proptest::collection::vec(rule_strategy(), 1..4),
            tz in -720i32..=840,
            anchor_day in 0i64..3000,
            start in 1_500_000_000i64..1_800_000_000,
            probe in 0i64..(400 * 86_400),
        ) {
            let tz = format!("UTC{}{:02}:{:02}", if tz < 0 { '-' } else { '+' }, tz.abs() / 60, tz.abs() % 60);
            let parsed = Schedule::parse(&rules, Some(&tz));
            prop_assume!(parsed.is_ok());
            let s = parsed.unwrap();
            let anchor = date(2000, 1, 1).checked_add(jiff::Span::new().days(anchor_day)).unwrap();
            let s = s.with_anchor_date(anchor);
            let from = Timestamp::from_second(start).unwrap();
            let to = Timestamp::from_second(start + 400 * 86_400).unwrap();
            let pts = s.points_between(from, to);
            prop_assert!(!pts.is_empty());
            for w in pts.windows(2) {
                prop_assert!(w[1].duration_since(w[0]).as_mins() >= 60, "{} {}", w[0], w[1]);
            }
            let mut per_day = std::collections::BTreeMap::new();
            for p in &pts {
                prop_assert!(*p > from && *p <= to);
                let local = s.timezone().to_datetime(*p);
                *per_day.entry(local.date()).or_insert(0usize) += 1;
                let hm = (local.hour() as u8, local.minute() as u8);
                prop_assert!(local.second() == 0);
                prop_assert!(s.rules().iter().any(|r| r.active_on(local.date(), anchor) && r.times().contains(&hm)));
            }
            prop_assert!(per_day.values().all(|&n| n <= MAX_POINTS_PER_DAY));
            prop_assert_eq!(&pts, &brute_force_points(&s, anchor, from, to));
            // next_after from an arbitrary instant is the first point after it.
            let t = Timestamp::from_second(start + probe).unwrap();
            if let Some(e) = pts.iter().find(|p| **p > t) {
                prop_assert_eq!(s.next_after(t), Some(*e));
            }
            // Passes at any instants see every point once: the points of
            // (from, t] and (t, to] are those of (from, to].
            if t < to {
                prop_assert_eq!(&split_at(&s, from, t, to), &pts);
            }
        }
    }
}
