//! Which backups a policy keeps: CBR's retention rules, validated, and the
//! pure selection of the backups to delete after a policy run.
//!
//! This module is pure: no I/O, no clock, no catalog. The caller lists the
//! vault's backups as [`Candidate`]s, passes the time and whether a backup of
//! the vault is running, and deletes what [`Selection::delete`] names.
//!
//! # Wiring
//!
//! ```
//! use cbrfs::policy::retention::{Candidate, Retention, RetentionArgs};
//! # fn main() -> cbrfs::error::Result<()> {
//! // `policy create ... --keep-last 7 --keep-daily 7 --keep-weekly 4 --timezone UTC+08:00`:
//! let args = RetentionArgs {
//!     keep_last: Some(7),
//!     keep_daily: Some(7),
//!     keep_weekly: Some(4),
//!     timezone: Some("UTC+08:00".into()),
//!     ..Default::default()
//! };
//! let retention = Retention::new(&args)?; // errors: BackupService.9900, exit 2
//! // Store `args` (it is serde-serializable) in the policy record; call
//! // `Retention::new` again when the record is loaded.
//!
//! // After a policy backup of a vault (only *available* backups listed):
//! let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
//! let backups = vec![
//!     Candidate { name: "autobk_a1b2".into(), created: t("2024-02-01T01:00:00Z"), automatic: true },
//!     Candidate { name: "manualbk_c3d4".into(), created: t("2023-01-01T00:00:00Z"), automatic: false },
//! ];
//! let sel = retention.select(&backups, t("2024-02-01T02:00:00Z"), false);
//! assert!(sel.delete.is_empty());
//! for (name, why) in sel.keep.iter().zip(&sel.reasons) {
//!     let why: Vec<String> = why.iter().map(|r| r.to_string()).collect();
//!     println!("keep {name}: {}", why.join(", "));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Rules (CBR's, with the limits checked by [`Retention::new`])
//!
//! - Exactly one base rule: keep the last N automatic backups (2–99,999),
//!   keep automatic backups for N days (2–99,999), or keep them forever.
//! - Long-term rules: keep the newest automatic backup of each of the last
//!   D days, W weeks, M months and Y years (each 0–100). Only with keep-last
//!   or keep-forever, and then a time zone ([`Zone`]) is required:
//!   days, weeks, months and years are those of the policy's time zone.
//!   In a zone with daylight saving a day is the local calendar day (23 or
//!   25 hours long on the days the clocks change).
//! - The kept set is the union of what every rule keeps. Manual backups are
//!   never deleted (and are not counted by any rule). The newest automatic
//!   backup is never deleted while a backup of the vault runs.
//!
//! # Semantics chosen where CBR is silent
//!
//! - **Long-term periods count periods that have backups**, as restic's
//!   `--keep-daily` (and borg's `--keep-daily`) do: going from the newest
//!   automatic backup to the oldest, the first backup of each new period is
//!   kept until D periods have been seen. Days without backups (a paused
//!   policy) do not use up the count, so `daily 7` always keeps 7 backups if
//!   there are 7 days with backups, however old. Like restic, these rules do
//!   not look at `now`.
//! - **Weeks are ISO weeks** (Monday to Sunday, numbered by ISO year).
//! - **A count of 0** is no rule: `keep-daily 0` is accepted with keep-days
//!   and needs no time zone.
//! - **keep-days N**: a backup expires N × 24 hours after its creation; it is
//!   kept while `now - created < N days` (also if it is dated in the future).
//! - **Newest / order**: backups are ordered by creation time, ties broken by
//!   name (the greater name counts as newer). Names are expected to be unique
//!   within the vault. [`Selection`] lists are newest first; the input order
//!   does not matter.
//! - **Busy vault**: "the newest backup is not deleted while a backup runs" is
//!   applied to the newest *automatic* backup (a manual one is never deleted
//!   anyway). The running backup itself must not be passed as a candidate:
//!   pass only finished (available) backups.

use std::fmt;

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::policy::schedule::Zone;

/// Maps a local date to its long-term period.
type PeriodOf = fn(Date) -> Period;

/// Smallest keep-last and keep-days value.
pub const KEEP_MIN: u64 = 2;
/// Largest keep-last and keep-days value.
pub const KEEP_MAX: u64 = 99_999;
/// Largest long-term count (daily, weekly, monthly, yearly).
pub const LONG_TERM_MAX: u64 = 100;

/// Retention as the user gives it (`policy create` options), unchecked.
/// Serializable so a policy record can store it as given; turn it into a
/// [`Retention`] with [`Retention::new`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionArgs {
    /// `--keep-last N`: keep the N newest automatic backups.
    pub keep_last: Option<u64>,
    /// `--keep-days N`: keep automatic backups for N days.
    pub keep_days: Option<u64>,
    /// `--keep-forever`: never delete automatic backups.
    pub keep_forever: bool,
    /// `--keep-daily D`: the newest backup of each of the last D days.
    pub keep_daily: Option<u64>,
    /// `--keep-weekly W`: the newest backup of each of the last W ISO weeks.
    pub keep_weekly: Option<u64>,
    /// `--keep-monthly M`: the newest backup of each of the last M months.
    pub keep_monthly: Option<u64>,
    /// `--keep-yearly Y`: the newest backup of each of the last Y years.
    pub keep_yearly: Option<u64>,
    /// `--timezone UTC+08:00`: the time zone of the long-term periods.
    pub timezone: Option<String>,
}

/// The base rule: one of keep-last, keep-days, forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Keep the N newest automatic backups (2–99,999).
    Last(u32),
    /// Keep automatic backups younger than N days (2–99,999).
    Days(u32),
    /// Keep every automatic backup.
    Forever,
}

/// The long-term counts (0: no such rule).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LongTerm {
    /// Newest backup of each of the last `daily` days that have backups.
    pub daily: u32,
    /// Newest backup of each of the last `weekly` ISO weeks that have backups.
    pub weekly: u32,
    /// Newest backup of each of the last `monthly` months that have backups.
    pub monthly: u32,
    /// Newest backup of each of the last `yearly` years that have backups.
    pub yearly: u32,
}

impl LongTerm {
    /// Whether no long-term rule is set (all counts 0).
    pub fn is_empty(&self) -> bool {
        *self == LongTerm::default()
    }
}

/// A period of the long-term rules, in the policy's time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    /// A calendar day.
    Day(Date),
    /// An ISO week: ISO year and week number 1–53.
    Week(i16, i8),
    /// A month: year and month 1–12.
    Month(i16, i8),
    /// A year.
    Year(i16),
}

impl Period {
    fn day(d: Date) -> Period {
        Period::Day(d)
    }
    fn week(d: Date) -> Period {
        let w = d.iso_week_date();
        Period::Week(w.year(), w.week())
    }
    fn month(d: Date) -> Period {
        Period::Month(d.year(), d.month())
    }
    fn year(d: Date) -> Period {
        Period::Year(d.year())
    }
}

impl fmt::Display for Period {
    /// `day 2024-02-01`, `week 2024-W05`, `month 2024-02`, `year 2024`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Day(d) => write!(f, "day {d}"),
            Period::Week(y, w) => write!(f, "week {y:04}-W{w:02}"),
            Period::Month(y, m) => write!(f, "month {y:04}-{m:02}"),
            Period::Year(y) => write!(f, "year {y:04}"),
        }
    }
}

/// Why a backup is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A manual backup: retention never deletes it.
    Manual,
    /// One of the last N automatic backups.
    Last(u32),
    /// Younger than N days.
    Within(u32),
    /// Retention is permanent.
    Forever,
    /// The newest automatic backup of a long-term period.
    Newest(Period),
    /// The newest automatic backup, while a backup of the vault runs.
    Busy,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Manual => f.write_str("manual backup"),
            Reason::Last(n) => write!(f, "one of the last {n}"),
            Reason::Within(n) => write!(f, "younger than {n} days"),
            Reason::Forever => f.write_str("kept forever"),
            Reason::Newest(p) => write!(f, "newest of {p}"),
            Reason::Busy => f.write_str("newest automatic backup while a backup runs"),
        }
    }
}

/// One backup of the vault, as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The backup's name (unique in the vault).
    pub name: String,
    /// When it was created.
    pub created: Timestamp,
    /// Made by a policy (`autobk_…`); manual backups are never deleted.
    pub automatic: bool,
}

/// The outcome of [`Retention::select`]: every candidate is in exactly one
/// of `keep` and `delete`, each list newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Names of the backups kept, newest first.
    pub keep: Vec<String>,
    /// Names of the backups to delete (all automatic), newest first.
    pub delete: Vec<String>,
    /// Why each kept backup is kept: `reasons[i]` is for `keep[i]`, never
    /// empty, in rule order (manual, base rule, daily, weekly, monthly,
    /// yearly, busy).
    pub reasons: Vec<Vec<Reason>>,
}

/// A policy's validated retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    keep: Keep,
    long_term: LongTerm,
    tz: Option<Zone>,
}

fn long_term_count(what: &str, v: Option<u64>) -> Result<u32> {
    match v {
        None => Ok(0),
        Some(n) if n <= LONG_TERM_MAX => Ok(n as u32),
        Some(n) => Err(Error::param(format!(
            "{what} {n} is out of range: a long-term count is 0-{LONG_TERM_MAX}"
        ))),
    }
}

impl Retention {
    /// Check the options and build the retention. Errors
    /// (`BackupService.9900`, exit code 2) say which rule is broken: none or
    /// several of keep-last/keep-days/keep-forever, a value out of range,
    /// long-term rules with keep-days, long-term rules without a time zone,
    /// or a time zone that is not `UTC±HH:MM`.
    pub fn new(args: &RetentionArgs) -> Result<Retention> {
        let mut given = Vec::new();
        if args.keep_last.is_some() {
            given.push("keep-last");
        }
        if args.keep_days.is_some() {
            given.push("keep-days");
        }
        if args.keep_forever {
            given.push("keep-forever");
        }
        match given.len() {
            0 => {
                return Err(Error::param(
                    "retention needs one of keep-last N, keep-days N or keep-forever",
                ))
            }
            1 => {}
            _ => {
                return Err(Error::param(format!(
                    "retention takes only one of keep-last, keep-days and keep-forever, not {}",
                    given.join(" and ")
                )))
            }
        }
        let range = |what: &str, unit: &str, n: u64| -> Result<u32> {
            if (KEEP_MIN..=KEEP_MAX).contains(&n) {
                Ok(n as u32)
            } else {
                Err(Error::param(format!(
                    "{what} {n} is out of range: {unit} {KEEP_MIN}-{KEEP_MAX}"
                )))
            }
        };
        let keep = match (args.keep_last, args.keep_days) {
            (Some(n), _) => Keep::Last(range("keep-last", "keep the last", n)?),
            (_, Some(n)) => Keep::Days(range("keep-days", "keep backups for days", n)?),
            _ => Keep::Forever,
        };
        let long_term = LongTerm {
            daily: long_term_count("keep-daily", args.keep_daily)?,
            weekly: long_term_count("keep-weekly", args.keep_weekly)?,
            monthly: long_term_count("keep-monthly", args.keep_monthly)?,
            yearly: long_term_count("keep-yearly", args.keep_yearly)?,
        };
        if !long_term.is_empty() && matches!(keep, Keep::Days(_)) {
            return Err(Error::param(
                "long-term retention (keep-daily/-weekly/-monthly/-yearly) goes with \
                 keep-last or keep-forever, not with keep-days",
            ));
        }
        let tz = args.timezone.as_deref().map(Zone::parse).transpose()?;
        if !long_term.is_empty() && tz.is_none() {
            return Err(Error::param(
                "long-term retention (keep-daily/-weekly/-monthly/-yearly) needs a time zone, \
                 e.g. timezone UTC+08:00",
            ));
        }
        Ok(Retention {
            keep,
            long_term,
            tz,
        })
    }

    /// The base rule.
    pub fn keep(&self) -> Keep {
        self.keep
    }

    /// The long-term counts.
    pub fn long_term(&self) -> LongTerm {
        self.long_term
    }

    /// The time zone, if one was given (always, when long-term rules are set).
    pub fn timezone(&self) -> Option<&Zone> {
        self.tz.as_ref()
    }

    /// The options that build this retention (canonical: zero counts and
    /// the time zone's spelling normalised).
    pub fn to_args(&self) -> RetentionArgs {
        let count = |n: u32| (n > 0).then_some(u64::from(n));
        RetentionArgs {
            keep_last: match self.keep {
                Keep::Last(n) => Some(u64::from(n)),
                _ => None,
            },
            keep_days: match self.keep {
                Keep::Days(n) => Some(u64::from(n)),
                _ => None,
            },
            keep_forever: self.keep == Keep::Forever,
            keep_daily: count(self.long_term.daily),
            keep_weekly: count(self.long_term.weekly),
            keep_monthly: count(self.long_term.monthly),
            keep_yearly: count(self.long_term.yearly),
            timezone: self.tz.as_ref().map(|z| z.to_string()),
        }
    }

    /// Choose which of a vault's backups to keep and which to delete, at
    /// time `now`, with `vault_busy` true while a backup of the vault runs.
    /// Pure and deterministic; see the module docs for the rules.
    pub fn select(&self, backups: &[Candidate], now: Timestamp, vault_busy: bool) -> Selection {
        let n = backups.len();
        // Newest first; ties by name, the greater counting as newer.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (&backups[a], &backups[b]);
            (b.created, &b.name).cmp(&(a.created, &a.name))
        });
        let autos: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| backups[i].automatic)
            .collect();
        let mut why: Vec<Vec<Reason>> = vec![Vec::new(); n];
        for (i, b) in backups.iter().enumerate() {
            if !b.automatic {
                why[i].push(Reason::Manual);
            }
        }
        match self.keep {
            Keep::Last(k) => {
                for &i in autos.iter().take(k as usize) {
                    why[i].push(Reason::Last(k));
                }
            }
            Keep::Days(d) => {
                let limit = SignedDuration::from_hours(24 * i64::from(d));
                for &i in &autos {
                    if now.duration_since(backups[i].created) < limit {
                        why[i].push(Reason::Within(d));
                    }
                }
            }
            Keep::Forever => {
                for &i in &autos {
                    why[i].push(Reason::Forever);
                }
            }
        }
        let tz = self.tz.as_ref().unwrap_or(&Zone::UTC);
        let rules: [(u32, PeriodOf); 4] = [
            (self.long_term.daily, Period::day),
            (self.long_term.weekly, Period::week),
            (self.long_term.monthly, Period::month),
            (self.long_term.yearly, Period::year),
        ];
        for (count, period_of) in rules {
            // restic's --keep-daily and friends: the first (newest) backup of
            // each period, for the `count` newest periods that have backups.
            let mut left = count;
            let mut last: Option<Period> = None;
            for &i in &autos {
                if left == 0 {
                    break;
                }
                let p = period_of(tz.to_datetime(backups[i].created).date());
                if last != Some(p) {
                    why[i].push(Reason::Newest(p));
                    last = Some(p);
                    left -= 1;
                }
            }
        }
        if vault_busy {
            if let Some(&i) = autos.first() {
                why[i].push(Reason::Busy);
            }
        }
        let mut sel = Selection::default();
        for i in order {
            let name = backups[i].name.clone();
            if why[i].is_empty() {
                sel.delete.push(name);
            } else {
                sel.keep.push(name);
                sel.reasons.push(std::mem::take(&mut why[i]));
            }
        }
        sel
    }
}

impl fmt::Display for Retention {
    /// The rules as options: `keep-last 7, keep-daily 7, timezone UTC+08:00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![match self.keep {
            Keep::Last(n) => format!("keep-last {n}"),
            Keep::Days(n) => format!("keep-days {n}"),
            Keep::Forever => "keep-forever".to_string(),
        }];
        let lt = self.long_term;
        for (what, n) in [
            ("keep-daily", lt.daily),
            ("keep-weekly", lt.weekly),
            ("keep-monthly", lt.monthly),
            ("keep-yearly", lt.yearly),
        ] {
            if n > 0 {
                parts.push(format!("{what} {n}"));
            }
        }
        if let Some(tz) = &self.tz {
            parts.push(format!("timezone {tz}"));
        }
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn auto(name: &str, created: &str) -> Candidate {
        Candidate {
            name: name.into(),
            created: ts(created),
            automatic: true,
        }
    }

    fn manual(name: &str, created: &str) -> Candidate {
        Candidate {
            automatic: false,
            ..auto(name, created)
        }
    }

    fn ret(args: RetentionArgs) -> Retention {
        Retention::new(&args).unwrap()
    }

    fn last(n: u64) -> RetentionArgs {
        RetentionArgs {
            keep_last: Some(n),
            ..Default::default()
        }
    }

    fn err(args: RetentionArgs) -> String {
        let e = Retention::new(&args).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.cbr_code(), Some("BackupService.9900"));
        e.to_string()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn validation() {
        let e = err(RetentionArgs::default());
        assert!(
            e.contains("needs one of keep-last N, keep-days N or keep-forever"),
            "{e}"
        );
        let e = err(RetentionArgs {
            keep_last: Some(3),
            keep_days: Some(3),
            ..Default::default()
        });
        assert!(
            e.contains(
                "only one of keep-last, keep-days and keep-forever, not keep-last and keep-days"
            ),
            "{e}"
        );
        let e = err(RetentionArgs {
            keep_days: Some(3),
            keep_forever: true,
            ..Default::default()
        });
        assert!(e.contains("not keep-days and keep-forever"), "{e}");
        for (n, ok) in [
            (0, false),
            (1, false),
            (2, true),
            (99_999, true),
            (100_000, false),
        ] {
            assert_eq!(Retention::new(&last(n)).is_ok(), ok, "keep-last {n}");
            let days = RetentionArgs {
                keep_days: Some(n),
                ..Default::default()
            };
            assert_eq!(Retention::new(&days).is_ok(), ok, "keep-days {n}");
        }
        let e = err(last(1));
        assert!(
            e.contains("keep-last 1 is out of range: keep the last 2-99999"),
            "{e}"
        );
        let e = err(last(100_000));
        assert!(e.contains("keep-last 100000 is out of range"), "{e}");
        let e = err(RetentionArgs {
            keep_days: Some(1),
            ..Default::default()
        });
        assert!(
            e.contains("keep-days 1 is out of range: keep backups for days 2-99999"),
            "{e}"
        );
        let tz = Some("UTC+08:00".to_string());
        let e = err(RetentionArgs {
            keep_daily: Some(101),
            timezone: tz.clone(),
            ..last(5)
        });
        assert!(
            e.contains("keep-daily 101 is out of range: a long-term count is 0-100"),
            "{e}"
        );
        for (field, name) in [(1, "keep-weekly"), (2, "keep-monthly"), (3, "keep-yearly")] {
            let mut a = RetentionArgs {
                timezone: tz.clone(),
                ..last(5)
            };
            match field {
                1 => a.keep_weekly = Some(101),
                2 => a.keep_monthly = Some(101),
                _ => a.keep_yearly = Some(101),
            }
            let e = err(a);
            assert!(e.contains(&format!("{name} 101 is out of range")), "{e}");
        }
        // 100 is the maximum, with keep-last or forever.
        ret(RetentionArgs {
            keep_daily: Some(100),
            keep_weekly: Some(100),
            keep_monthly: Some(100),
            keep_yearly: Some(100),
            timezone: tz.clone(),
            ..last(2)
        });
        ret(RetentionArgs {
            keep_forever: true,
            keep_yearly: Some(3),
            timezone: tz.clone(),
            ..Default::default()
        });
        // Long-term with keep-days is refused.
        let e = err(RetentionArgs {
            keep_days: Some(30),
            keep_weekly: Some(4),
            timezone: tz.clone(),
            ..Default::default()
        });
        assert!(
            e.contains("goes with keep-last or keep-forever, not with keep-days"),
            "{e}"
        );
        // ... but zero counts are no rule.
        ret(RetentionArgs {
            keep_days: Some(30),
            keep_weekly: Some(0),
            ..Default::default()
        });
        // Long-term without a time zone is refused.
        let e = err(RetentionArgs {
            keep_monthly: Some(12),
            ..last(7)
        });
        assert!(e.contains("needs a time zone"), "{e}");
        // A bad time zone.
        let e = err(RetentionArgs {
            keep_monthly: Some(12),
            timezone: Some("Europe/Atlantis".into()),
            ..last(7)
        });
        assert!(
            e.contains(r#"time zone "Europe/Atlantis" is unknown"#),
            "{e}"
        );
        let e = err(RetentionArgs {
            keep_monthly: Some(12),
            timezone: Some("UTC+8:0".into()),
            ..last(7)
        });
        assert!(e.contains(r#"time zone "UTC+8:0" is invalid"#), "{e}");
    }

    /// What `keep-last 2, keep-daily 2` in `tz` deletes of four backups
    /// around a daylight-saving change, newest first (keep-last keeps the
    /// newest two, c and d; keep-daily the newest of the two newest days).
    fn daily_two(tz: &str, times: [&str; 4]) -> Vec<String> {
        let r = ret(RetentionArgs {
            keep_daily: Some(2),
            timezone: Some(tz.into()),
            ..last(2)
        });
        let bs: Vec<Candidate> = ["a", "b", "c", "d"]
            .iter()
            .zip(times)
            .map(|(n, t)| auto(n, t))
            .collect();
        r.select(&bs, ts("2027-01-01T00:00:00Z"), false).delete
    }

    #[test]
    fn long_term_days_are_local_days_across_dst() {
        // Europe/Berlin, 2026-10-25 has 25 hours (CEST until 01:00Z, then
        // CET). b (00:30 CEST) and d (23:30 CET) are both on that day.
        let fall = [
            "2026-10-24T10:00:00Z", // a: 10-24 12:00 CEST
            "2026-10-24T22:30:00Z", // b: 10-25 00:30 CEST
            "2026-10-25T12:00:00Z", // c: 10-25 13:00 CET
            "2026-10-25T22:30:00Z", // d: 10-25 23:30 CET
        ];
        // Days 10-25 (newest d) and 10-24 (a): b goes.
        assert_eq!(daily_two("Europe/Berlin", fall), ["b"]);
        // Either fixed offset of the zone gets one end of the day wrong.
        assert_eq!(daily_two("UTC+02:00", fall), ["b", "a"]);
        assert_eq!(daily_two("UTC+01:00", fall), ["a"]);
        // 2026-03-29 has 23 hours (CET until 01:00Z, then CEST): b is the
        // day before in Berlin, but 03-29 at the summer offset.
        let spring = [
            "2026-03-28T11:00:00Z", // a: 03-28 12:00 CET
            "2026-03-28T22:30:00Z", // b: 03-28 23:30 CET
            "2026-03-29T10:00:00Z", // c: 03-29 12:00 CEST
            "2026-03-29T21:30:00Z", // d: 03-29 23:30 CEST
        ];
        assert_eq!(daily_two("Europe/Berlin", spring), ["a"]);
        assert_eq!(daily_two("UTC+02:00", spring), ["b"]);
        // America/New_York: 2026-03-08 (23 hours) and 2026-11-01 (25).
        let ny_spring = [
            "2026-03-07T17:00:00Z", // a: 03-07 12:00 EST
            "2026-03-08T04:30:00Z", // b: 03-07 23:30 EST
            "2026-03-08T16:00:00Z", // c: 03-08 12:00 EDT
            "2026-03-09T03:30:00Z", // d: 03-08 23:30 EDT
        ];
        assert_eq!(daily_two("America/New_York", ny_spring), ["a"]);
        assert_eq!(daily_two("UTC-04:00", ny_spring), ["b"]);
        let ny_fall = [
            "2026-10-31T16:00:00Z", // a: 10-31 12:00 EDT
            "2026-11-01T04:30:00Z", // b: 11-01 00:30 EDT
            "2026-11-01T17:00:00Z", // c: 11-01 12:00 EST
            "2026-11-02T04:30:00Z", // d: 11-01 23:30 EST
        ];
        assert_eq!(daily_two("America/New_York", ny_fall), ["b"]);
        assert_eq!(daily_two("UTC-04:00", ny_fall), ["b", "a"]);
    }

    #[test]
    fn long_term_weeks_months_years_in_a_zone() {
        // New Year's Eve 23:30 in Berlin is already 2027 in UTC+02:00, and
        // 2026-12-31 22:30Z is 2026-12-31 23:30 CET: still 2026.
        let r = ret(RetentionArgs {
            keep_yearly: Some(2),
            keep_monthly: Some(2),
            keep_weekly: Some(2),
            timezone: Some("Europe/Berlin".into()),
            ..last(2)
        });
        assert_eq!(r.timezone().unwrap().to_string(), "Europe/Berlin");
        assert_eq!(
            r.to_string(),
            "keep-last 2, keep-weekly 2, keep-monthly 2, keep-yearly 2, timezone Europe/Berlin"
        );
        assert_eq!(r.to_args().timezone.as_deref(), Some("Europe/Berlin"));
        let bs = [
            auto("a", "2026-12-30T12:00:00Z"), // Wed, Dec 2026
            auto("b", "2026-12-31T22:30:00Z"), // Thu 23:30 CET, Dec 2026
            auto("c", "2027-01-01T12:00:00Z"), // Fri, Jan 2027
            auto("d", "2027-01-02T12:00:00Z"), // Sat, Jan 2027
        ];
        let sel = r.select(&bs, ts("2027-01-03T00:00:00Z"), false);
        // Years 2027 (d) and 2026 (b); months Jan (d), Dec (b); one ISO
        // week (Mon 12-28 to Sun 01-03) holds all four: d. a goes.
        assert_eq!(sel.delete, ["a"]);
    }

    #[test]
    fn args_round_trip_and_display() {
        let r = ret(RetentionArgs {
            keep_daily: Some(7),
            keep_weekly: Some(0),
            keep_yearly: Some(2),
            timezone: Some("utc+8".into()),
            ..last(10)
        });
        assert_eq!(r.keep(), Keep::Last(10));
        assert_eq!(
            r.long_term(),
            LongTerm {
                daily: 7,
                weekly: 0,
                monthly: 0,
                yearly: 2
            }
        );
        assert_eq!(r.timezone().unwrap().to_string(), "UTC+08:00");
        assert_eq!(
            r.to_string(),
            "keep-last 10, keep-daily 7, keep-yearly 2, timezone UTC+08:00"
        );
        let a = r.to_args();
        assert_eq!(a.keep_weekly, None);
        assert_eq!(Retention::new(&a).unwrap(), r);
        let json = serde_json::to_string(&a).unwrap();
        let back: RetentionArgs = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        // Missing fields default (older records stay readable).
        let days: RetentionArgs = serde_json::from_str(r#"{"keep_days":30}"#).unwrap();
        assert_eq!(ret(days).keep(), Keep::Days(30));
        let f = ret(RetentionArgs {
            keep_forever: true,
            ..Default::default()
        });
        assert_eq!(f.to_string(), "keep-forever");
        assert_eq!(Retention::new(&f.to_args()).unwrap(), f);
    }

    #[test]
    fn keep_last_counts_automatic_backups_only() {
        let r = ret(last(2));
        let backups = vec![
            auto("a1", "2024-01-01T00:00:00Z"),
            auto("a2", "2024-01-02T00:00:00Z"),
            manual("m1", "2024-01-03T00:00:00Z"),
            auto("a3", "2024-01-04T00:00:00Z"),
            manual("m0", "2020-01-01T00:00:00Z"),
            manual("m2", "2024-01-05T00:00:00Z"),
        ];
        let s = r.select(&backups, ts("2024-01-06T00:00:00Z"), false);
        assert_eq!(s.keep, names(&["m2", "a3", "m1", "a2", "m0"]));
        assert_eq!(s.delete, names(&["a1"]));
        assert_eq!(
            s.reasons,
            vec![
                vec![Reason::Manual],
                vec![Reason::Last(2)],
                vec![Reason::Manual],
                vec![Reason::Last(2)],
                vec![Reason::Manual]
            ]
        );
        // Input order does not matter.
        let mut rev = backups.clone();
        rev.reverse();
        assert_eq!(r.select(&rev, ts("2024-01-06T00:00:00Z"), false), s);
        // Ties in time are broken by name.
        let tied = vec![
            auto("x", "2024-01-01T00:00:00Z"),
            auto("z", "2024-01-01T00:00:00Z"),
            auto("y", "2024-01-01T00:00:00Z"),
        ];
        let s = r.select(&tied, ts("2024-01-06T00:00:00Z"), false);
        assert_eq!(s.keep, names(&["z", "y"]));
        assert_eq!(s.delete, names(&["x"]));
        // Nothing to do on an empty vault.
        assert_eq!(
            r.select(&[], ts("2024-01-06T00:00:00Z"), true),
            Selection::default()
        );
    }

    #[test]
    fn keep_days_boundaries_and_busy() {
        let r = ret(RetentionArgs {
            keep_days: Some(2),
            ..Default::default()
        });
        let now = ts("2024-03-01T12:00:00Z");
        let backups = vec![
            auto("exactly-2d", "2024-02-28T12:00:00Z"),
            auto("just-under", "2024-02-28T12:00:00.001Z"),
            auto("old", "2024-02-01T00:00:00Z"),
            auto("future", "2024-03-02T00:00:00Z"),
            manual("old-manual", "2023-01-01T00:00:00Z"),
        ];
        let s = r.select(&backups, now, false);
        assert_eq!(s.keep, names(&["future", "just-under", "old-manual"]));
        assert_eq!(s.delete, names(&["exactly-2d", "old"]));
        assert_eq!(s.reasons[0], [Reason::Within(2)]);
        // A paused policy: everything automatic has expired. While a backup
        // runs, the newest automatic backup stays.
        let stale = vec![
            auto("a", "2024-01-01T00:00:00Z"),
            auto("b", "2024-01-02T00:00:00Z"),
            manual("m", "2024-01-03T00:00:00Z"),
        ];
        let s = r.select(&stale, now, false);
        assert_eq!(s.keep, names(&["m"]));
        assert_eq!(s.delete, names(&["b", "a"]));
        let s = r.select(&stale, now, true);
        assert_eq!(s.keep, names(&["m", "b"]));
        assert_eq!(s.reasons[1], [Reason::Busy]);
        assert_eq!(s.delete, names(&["a"]));
    }

    #[test]
    fn forever_keeps_everything() {
        let r = ret(RetentionArgs {
            keep_forever: true,
            ..Default::default()
        });
        let backups = vec![
            auto("a", "2000-01-01T00:00:00Z"),
            manual("m", "2001-01-01T00:00:00Z"),
        ];
        let s = r.select(&backups, ts("2024-01-01T00:00:00Z"), false);
        assert_eq!(s.keep, names(&["m", "a"]));
        assert!(s.delete.is_empty());
        assert_eq!(s.reasons, vec![vec![Reason::Manual], vec![Reason::Forever]]);
    }

    #[test]
    fn daily_in_the_policys_time_zone() {
        // UTC times and what day they are at UTC+08:00.
        let backups = vec![
            auto("a", "2024-02-01T01:00:00Z"), // Feb 1, 09:00
            auto("b", "2024-01-31T23:30:00Z"), // Feb 1, 07:30
            auto("c", "2024-01-31T10:00:00Z"), // Jan 31, 18:00
            auto("d", "2024-01-31T02:00:00Z"), // Jan 31, 10:00
            auto("e", "2024-01-30T20:00:00Z"), // Jan 31, 04:00
            auto("f", "2024-01-30T12:00:00Z"), // Jan 30, 20:00
            auto("g", "2024-01-29T12:00:00Z"), // Jan 29, 20:00
        ];
        let now = ts("2024-02-01T02:00:00Z");
        let args = |tz: &str| RetentionArgs {
            keep_daily: Some(3),
            timezone: Some(tz.into()),
            ..last(2)
        };
        let s = ret(args("UTC+08:00")).select(&backups, now, false);
        assert_eq!(s.keep, names(&["a", "b", "c", "f"]));
        assert_eq!(s.delete, names(&["d", "e", "g"]));
        assert_eq!(
            s.reasons[0],
            [
                Reason::Last(2),
                Reason::Newest(Period::Day(date(2024, 2, 1)))
            ]
        );
        assert_eq!(s.reasons[1], [Reason::Last(2)]);
        assert_eq!(
            s.reasons[2],
            [Reason::Newest(Period::Day(date(2024, 1, 31)))]
        );
        assert_eq!(s.reasons[2][0].to_string(), "newest of day 2024-01-31");
        // In UTC the 23:30 backup belongs to Jan 31 and is that day's newest.
        let s = ret(args("UTC")).select(&backups, now, false);
        assert_eq!(s.keep, names(&["a", "b", "e"]));
        assert_eq!(
            s.reasons[1],
            [
                Reason::Last(2),
                Reason::Newest(Period::Day(date(2024, 1, 31)))
            ]
        );
        // At UTC-05:00, a, b and c are Jan 31; d, e and f Jan 30; g Jan 29.
        let s = ret(args("UTC-05:00")).select(&backups, now, false);
        assert_eq!(s.keep, names(&["a", "b", "d", "g"]));
        assert_eq!(
            s.reasons[0][1],
            Reason::Newest(Period::Day(date(2024, 1, 31)))
        );
        assert_eq!(
            s.reasons[2],
            [Reason::Newest(Period::Day(date(2024, 1, 30)))]
        );
    }

    #[test]
    fn daily_counts_days_that_have_backups() {
        // restic's semantics: gaps do not use up the count.
        let backups = vec![
            auto("d10b", "2024-01-10T20:00:00Z"),
            auto("d10a", "2024-01-10T08:00:00Z"),
            auto("d05", "2024-01-05T08:00:00Z"),
            manual("m04", "2024-01-04T23:00:00Z"),
            auto("d04", "2024-01-04T08:00:00Z"),
            auto("d01", "2024-01-01T08:00:00Z"),
        ];
        let r = ret(RetentionArgs {
            keep_daily: Some(3),
            timezone: Some("UTC".into()),
            ..last(2)
        });
        let s = r.select(&backups, ts("2024-06-01T00:00:00Z"), false);
        // d10b and d10a by keep-last; days Jan 10, 5, 4 by daily (the manual
        // backup of Jan 4 does not count as that day's newest).
        assert_eq!(s.keep, names(&["d10b", "d10a", "d05", "m04", "d04"]));
        assert_eq!(s.delete, names(&["d01"]));
    }

    #[test]
    fn weekly_monthly_yearly_across_the_year_end() {
        // 2024-12-30 (Monday) starts ISO week 2025-W01.
        let backups = vec![
            auto("w02", "2025-01-06T10:00:00Z"),     // 2025-W02
            auto("w01-sun", "2025-01-05T10:00:00Z"), // 2025-W01
            auto("w01-tue", "2024-12-31T10:00:00Z"), // 2025-W01
            auto("w01-mon", "2024-12-30T10:00:00Z"), // 2025-W01
            auto("w52-sun", "2024-12-29T10:00:00Z"), // 2024-W52
            auto("w52-sat", "2024-12-28T10:00:00Z"), // 2024-W52
            auto("nov", "2024-11-15T10:00:00Z"),
            auto("y2023", "2023-06-01T10:00:00Z"),
            auto("y2022", "2022-06-01T10:00:00Z"),
        ];
        let now = ts("2025-01-07T00:00:00Z");
        let with = |f: fn(&mut RetentionArgs)| {
            let mut a = RetentionArgs {
                timezone: Some("UTC".into()),
                ..last(2)
            };
            f(&mut a);
            ret(a).select(&backups, now, false)
        };
        let s = with(|a| a.keep_weekly = Some(3));
        assert_eq!(s.keep, names(&["w02", "w01-sun", "w52-sun"]));
        assert_eq!(s.reasons[2], [Reason::Newest(Period::Week(2024, 52))]);
        assert_eq!(s.reasons[1][1].to_string(), "newest of week 2025-W01");
        let s = with(|a| a.keep_monthly = Some(3));
        assert_eq!(s.keep, names(&["w02", "w01-sun", "w01-tue", "nov"]));
        assert_eq!(s.reasons[2], [Reason::Newest(Period::Month(2024, 12))]);
        assert_eq!(s.reasons[3][0].to_string(), "newest of month 2024-11");
        let s = with(|a| a.keep_yearly = Some(3));
        assert_eq!(s.keep, names(&["w02", "w01-sun", "w01-tue", "y2023"]));
        assert_eq!(s.reasons[3][0].to_string(), "newest of year 2023");
        // All rules united.
        let s = with(|a| {
            a.keep_weekly = Some(3);
            a.keep_monthly = Some(3);
            a.keep_yearly = Some(4);
        });
        assert_eq!(
            s.keep,
            names(&["w02", "w01-sun", "w01-tue", "w52-sun", "nov", "y2023", "y2022"])
        );
        assert_eq!(s.delete, names(&["w01-mon", "w52-sat"]));
        // At UTC+14:00 every backup is 14 hours later on the wall clock:
        // "w01-sun" is Monday 2025-01-06 (W02), "w52-sun" Monday 2024-12-30
        // (W01) and "w52-sat" Sunday 2024-12-29, the newest of 2024-W52.
        let s = ret(RetentionArgs {
            keep_weekly: Some(3),
            timezone: Some("UTC+14:00".into()),
            ..last(2)
        })
        .select(&backups, now, false);
        assert_eq!(s.keep, names(&["w02", "w01-sun", "w01-tue", "w52-sat"]));
        assert_eq!(s.reasons[1], [Reason::Last(2)]);
        assert_eq!(s.reasons[2], [Reason::Newest(Period::Week(2025, 1))]);
        assert_eq!(s.reasons[3], [Reason::Newest(Period::Week(2024, 52))]);
    }

    #[test]
    fn monthly_and_yearly_in_the_policys_time_zone() {
        // Around the 2024/2025 year end, in UTC.
        let backups = vec![
            auto("jan2", "2025-01-02T00:00:00Z"),
            auto("ny-east", "2024-12-31T20:00:00Z"), // 2025-01-01 04:00 at UTC+08:00
            auto("dec31", "2024-12-31T10:00:00Z"),   // Dec 31 in both zones
            auto("ny-west", "2025-01-01T03:00:00Z"), // 2024-12-31 22:00 at UTC-05:00
            auto("dec15", "2024-12-15T12:00:00Z"),
            auto("nov30", "2024-11-30T20:00:00Z"), // Dec 1 04:00 at UTC+08:00
            auto("nov29", "2024-11-29T12:00:00Z"),
        ];
        let now = ts("2025-01-03T00:00:00Z");
        let sel = |tz: &str, monthly: u64, yearly: u64| {
            ret(RetentionArgs {
                keep_monthly: Some(monthly),
                keep_yearly: Some(yearly),
                timezone: Some(tz.into()),
                ..last(2)
            })
            .select(&backups, now, false)
        };
        // UTC+08:00: January 2025 {jan2, ny-west, ny-east}, December 2024
        // {dec31, dec15, nov30}, November {nov29}.
        let s = sel("UTC+08:00", 3, 0);
        assert_eq!(s.keep, names(&["jan2", "ny-west", "dec31", "nov29"]));
        assert_eq!(s.reasons[2], [Reason::Newest(Period::Month(2024, 12))]);
        assert_eq!(s.reasons[3], [Reason::Newest(Period::Month(2024, 11))]);
        // UTC-05:00: ny-west is 2024-12-31 local, the newest of December
        // and of 2024; nov30 is November there.
        let s = sel("UTC-05:00", 3, 2);
        assert_eq!(s.keep, names(&["jan2", "ny-west", "nov30"]));
        assert_eq!(
            s.reasons[1],
            [
                Reason::Last(2),
                Reason::Newest(Period::Month(2024, 12)),
                Reason::Newest(Period::Year(2024))
            ]
        );
        assert_eq!(s.reasons[2], [Reason::Newest(Period::Month(2024, 11))]);
        // In UTC, ny-west is January 2025 too; the newest of 2024 is
        // ny-east (Dec 31, 20:00).
        let s = sel("UTC", 0, 2);
        assert_eq!(s.keep, names(&["jan2", "ny-west", "ny-east"]));
        assert_eq!(s.reasons[2], [Reason::Newest(Period::Year(2024))]);
    }

    // ------------------------------------------------------------------
    // Property tests, against oracles written independently of `select`.

    fn newest_key(b: &Candidate) -> (Timestamp, String) {
        (b.created, b.name.clone())
    }

    /// Names of the automatic backups, newest first.
    fn autos_newest_first(bs: &[Candidate]) -> Vec<&Candidate> {
        let mut v: Vec<&Candidate> = bs.iter().filter(|b| b.automatic).collect();
        v.sort_by_key(|b| std::cmp::Reverse(newest_key(b)));
        v
    }

    /// What one long-term rule keeps: group by period key, take the `count`
    /// latest periods, the newest backup of each.
    fn oracle_periods<K: Ord>(
        bs: &[Candidate],
        count: u32,
        key: impl Fn(Date) -> K,
        tz: &Zone,
    ) -> BTreeSet<String> {
        let mut groups: BTreeMap<K, (Timestamp, String)> = BTreeMap::new();
        for b in bs.iter().filter(|b| b.automatic) {
            let k = key(tz.to_datetime(b.created).date());
            let e = groups.entry(k).or_insert_with(|| newest_key(b));
            if newest_key(b) > *e {
                *e = newest_key(b);
            }
        }
        groups
            .into_values()
            .rev()
            .take(count as usize)
            .map(|(_, n)| n)
            .collect()
    }

    /// Each single rule's picks.
    fn oracle_rules(r: &Retention, bs: &[Candidate], now: Timestamp) -> Vec<BTreeSet<String>> {
        let autos = autos_newest_first(bs);
        let base: BTreeSet<String> = match r.keep() {
            Keep::Last(n) => autos
                .iter()
                .take(n as usize)
                .map(|b| b.name.clone())
                .collect(),
            Keep::Days(d) => autos
                .iter()
                .filter(|b| (now.as_second() - b.created.as_second()) < i64::from(d) * 86_400)
                .map(|b| b.name.clone())
                .collect(),
            Keep::Forever => autos.iter().map(|b| b.name.clone()).collect(),
        };
        let tz = r.timezone().unwrap_or(&Zone::UTC);
        let lt = r.long_term();
        // Week key: the Monday that starts the week (not ISO numbering).
        let monday = |d: Date| {
            d.checked_sub(jiff::Span::new().days(i64::from(d.weekday().to_monday_zero_offset())))
                .unwrap()
        };
        vec![
            base,
            oracle_periods(bs, lt.daily, |d| d, tz),
            oracle_periods(bs, lt.weekly, monday, tz),
            oracle_periods(bs, lt.monthly, |d| (d.year(), d.month()), tz),
            oracle_periods(bs, lt.yearly, |d| d.year(), tz),
        ]
    }

    fn retention_strategy() -> impl Strategy<Value = RetentionArgs> {
        let lt = || prop_oneof![Just(None), (0u64..6).prop_map(Some)];
        (
            0u8..3,
            2u64..12,
            2u64..400,
            (lt(), lt(), lt(), lt()),
            -720i32..=840,
            // Some zones with daylight saving (north and south), too.
            prop_oneof![
                3 => Just(None),
                1 => prop_oneof![
                    Just("Europe/Berlin"),
                    Just("America/New_York"),
                    Just("Australia/Sydney")
                ]
                .prop_map(Some)
            ],
        )
            .prop_map(|(kind, n, days, (d, w, m, y), tz, named)| {
                let tz = named.map(String::from).unwrap_or_else(|| {
                    format!(
                        "UTC{}{:02}:{:02}",
                        if tz < 0 { '-' } else { '+' },
                        tz.abs() / 60,
                        tz.abs() % 60
                    )
                });
                let mut a = RetentionArgs {
                    timezone: Some(tz),
                    ..Default::default()
                };
                match kind {
                    0 => a.keep_last = Some(n),
                    1 => a.keep_days = Some(days),
                    _ => a.keep_forever = true,
                }
                if kind != 1 {
                    (a.keep_daily, a.keep_weekly, a.keep_monthly, a.keep_yearly) = (d, w, m, y);
                }
                a
            })
    }

    fn backups_strategy() -> impl Strategy<Value = Vec<Candidate>> {
        // Times over three years on an hour grid, or crowded into a few
        // hours (ties and same-day backups).
        let time = prop_oneof![0i64..(3 * 365 * 24), 0i64..6].prop_map(|h| h * 3600);
        proptest::collection::vec((time, any::<bool>(), 0u32..3), 0..40).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (secs, automatic, prefix))| Candidate {
                    // Names unique, not ordered like times.
                    name: format!("{}{i:02}", ["p", "a", "z"][prefix as usize]),
                    created: Timestamp::from_second(1_700_000_000 + secs).unwrap(),
                    automatic,
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn selection_properties(
            args in retention_strategy(),
            backups in backups_strategy(),
            now_h in 0i64..(4 * 365 * 24),
            busy in any::<bool>(),
        ) {
            let r = Retention::new(&args).unwrap();
            let now = Timestamp::from_second(1_700_000_000 + now_h * 3600).unwrap();
            let s = r.select(&backups, now, busy);

            // keep ∪ delete = input, disjoint; reasons parallel and non-empty.
            let keep: BTreeSet<String> = s.keep.iter().cloned().collect();
            let delete: BTreeSet<String> = s.delete.iter().cloned().collect();
            let all: BTreeSet<String> = backups.iter().map(|b| b.name.clone()).collect();
            prop_assert_eq!(keep.len(), s.keep.len());
            prop_assert_eq!(delete.len(), s.delete.len());
            prop_assert!(keep.is_disjoint(&delete));
            prop_assert_eq!(keep.union(&delete).cloned().collect::<BTreeSet<_>>(), all);
            prop_assert_eq!(s.reasons.len(), s.keep.len());
            prop_assert!(s.reasons.iter().all(|r| !r.is_empty()));

            // Manual backups are never deleted.
            for b in backups.iter().filter(|b| !b.automatic) {
                prop_assert!(keep.contains(&b.name), "manual {} deleted", b.name);
            }
            // The newest automatic backup is never deleted while busy.
            let autos = autos_newest_first(&backups);
            if busy {
                if let Some(b) = autos.first() {
                    prop_assert!(keep.contains(&b.name), "newest {} deleted while busy", b.name);
                }
            }
            // Kept ⊇ each rule's picks, and nothing else is kept.
            let mut expect: BTreeSet<String> =
                backups.iter().filter(|b| !b.automatic).map(|b| b.name.clone()).collect();
            for picks in oracle_rules(&r, &backups, now) {
                prop_assert!(picks.is_subset(&keep), "picks {:?} not kept {:?}", picks, keep);
                expect.extend(picks);
            }
            if busy {
                expect.extend(autos.first().map(|b| b.name.clone()));
            }
            prop_assert_eq!(&keep, &expect);

            // Both lists newest first; the result does not depend on input order.
            let by_name: BTreeMap<&str, &Candidate> =
                backups.iter().map(|b| (b.name.as_str(), b)).collect();
            for list in [&s.keep, &s.delete] {
                for w in list.windows(2) {
                    prop_assert!(newest_key(by_name[w[0].as_str()]) > newest_key(by_name[w[1].as_str()]));
                }
            }
            let mut rev = backups.clone();
            rev.reverse();
            prop_assert_eq!(r.select(&rev, now, busy), s);

            // Stable: a second pass at the same instant over what the
            // first kept deletes nothing.
            let kept: Vec<Candidate> =
                backups.iter().filter(|b| keep.contains(&b.name)).cloned().collect();
            let again = r.select(&kept, now, busy);
            prop_assert!(again.delete.is_empty(), "second pass deletes {:?}", again.delete);
        }
    }
}
