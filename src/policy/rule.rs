//! One rule of a policy's schedule (CBR's RRULE subset, see
//! [`crate::policy::schedule`] for the accepted keys and the semantics):
//! its parse and validation, the days it is active on, and the rule that
//! the time points of all rules are at least an hour apart.

use std::fmt;

use jiff::civil::{Date, Weekday};
use jiff::Unit;

use crate::error::{Error, Result};

/// At most this many time points a day.
pub const MAX_POINTS_PER_DAY: usize = 24;
/// Two time points are at least this many minutes apart.
pub const MIN_GAP_MINUTES: i32 = 60;
/// Largest `INTERVAL` of a daily rule (days).
pub const MAX_DAILY_INTERVAL: u32 = 30;

const MINUTES_PER_DAY: i32 = 24 * 60;

/// How often a rule repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Freq {
    /// Every `INTERVAL` days.
    Daily,
    /// On the `BYDAY` weekdays of every week.
    Weekly,
}

impl fmt::Display for Freq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Freq::Daily => "DAILY",
            Freq::Weekly => "WEEKLY",
        })
    }
}

pub(super) const WEEKDAYS: [&str; 7] = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];

/// One validated rule of a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    text: String,
    freq: Freq,
    interval: u32,
    /// Bit i set: active on weekday i (0 = Monday). All bits for daily.
    days: u8,
    hours: Vec<u8>,
    minutes: Vec<u8>,
    /// Minutes after local midnight, sorted, distinct.
    pub(super) times: Vec<i32>,
}

impl Rule {
    /// Parse and check one rule; errors name the rule and what is wrong.
    pub fn parse(text: &str) -> Result<Rule> {
        parse_rule(text).map_err(|why| Error::param(format!("schedule {text:?}: {why}")))
    }

    /// The rule as the user wrote it.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// `FREQ`.
    pub fn freq(&self) -> Freq {
        self.freq
    }

    /// `INTERVAL` in days (1 for weekly rules).
    pub fn interval(&self) -> u32 {
        self.interval
    }

    /// The weekdays the rule is active on, Monday first (all seven for a
    /// daily rule, which is active on every `INTERVAL`-th day).
    pub fn weekdays(&self) -> Vec<Weekday> {
        (0..7)
            .filter(|i| self.days & (1 << i) != 0)
            .map(|i| Weekday::from_monday_zero_offset(i).expect("0..7"))
            .collect()
    }

    /// The rule's time points of a day as (hour, minute), sorted.
    pub fn times(&self) -> Vec<(u8, u8)> {
        self.times
            .iter()
            .map(|&m| ((m / 60) as u8, (m % 60) as u8))
            .collect()
    }

    /// Whether the rule is active on `day`, given the schedule's anchor day.
    pub(super) fn active_on(&self, day: Date, anchor: Date) -> bool {
        match self.freq {
            Freq::Weekly => self.days & (1 << day.weekday().to_monday_zero_offset()) != 0,
            Freq::Daily => {
                self.interval == 1
                    || days_between(anchor, day).rem_euclid(i64::from(self.interval)) == 0
            }
        }
    }
}

impl fmt::Display for Rule {
    /// The canonical form, e.g. `FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=22;BYMINUTE=0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FREQ={}", self.freq)?;
        if self.interval != 1 {
            write!(f, ";INTERVAL={}", self.interval)?;
        }
        if self.freq == Freq::Weekly {
            let days: Vec<&str> = (0..7)
                .filter(|i| self.days & (1 << i) != 0)
                .map(|i| WEEKDAYS[i])
                .collect();
            write!(f, ";BYDAY={}", days.join(","))?;
        }
        let list = |v: &[u8]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(
            f,
            ";BYHOUR={};BYMINUTE={}",
            list(&self.hours),
            list(&self.minutes)
        )
    }
}

/// Days from `a` to `b` (negative if `b` is earlier).
fn days_between(a: Date, b: Date) -> i64 {
    a.until((Unit::Day, b))
        .map(|s| i64::from(s.get_days()))
        .unwrap_or(0)
}

fn parse_list(key: &str, value: &str, max: u32, unit: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("{key}={value} has an empty item"));
        }
        if !item.bytes().all(|b| b.is_ascii_digit()) || item.len() > 4 {
            return Err(format!("{key} value {item:?} is not a number of {unit}"));
        }
        let n: u32 = item.parse().map_err(|_| format!("{key} {item:?}"))?;
        if n > max {
            return Err(format!("{key}={n} is out of range: {unit} are 0-{max}"));
        }
        out.push(n as u8);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn parse_rule(text: &str) -> Result<Rule, String> {
    let mut body = text.trim();
    if body
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("RRULE:"))
    {
        body = body[6..].trim();
    }
    let mut freq = None;
    let mut interval = None;
    let mut byday = None;
    let mut byhour = None;
    let mut byminute = None;
    let mut seen: Vec<String> = Vec::new();
    for part in body.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
        let key = key.trim().to_ascii_uppercase();
        let value = value.trim();
        if seen.contains(&key) {
            return Err(format!("{key} is given twice"));
        }
        seen.push(key.clone());
        match key.as_str() {
            "FREQ" => {
                freq = Some(match value.to_ascii_uppercase().as_str() {
                    "DAILY" => Freq::Daily,
                    "WEEKLY" => Freq::Weekly,
                    _ => return Err("FREQ must be DAILY or WEEKLY".into()),
                })
            }
            "INTERVAL" => {
                if value.is_empty() || value.len() > 6 || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(format!("INTERVAL {value:?} is not a number of days"));
                }
                interval = Some(value.parse::<u32>().map_err(|e| e.to_string())?);
            }
            "BYDAY" => {
                let mut mask = 0u8;
                for item in value.split(',') {
                    let item = item.trim().to_ascii_uppercase();
                    let i = WEEKDAYS.iter().position(|d| *d == item).ok_or_else(|| {
                        format!(
                            "BYDAY value {item:?} is not a weekday: use MO, TU, WE, TH, FR, SA, SU"
                        )
                    })?;
                    mask |= 1 << i;
                }
                byday = Some(mask);
            }
            "BYHOUR" => byhour = Some(parse_list("BYHOUR", value, 23, "hours")?),
            "BYMINUTE" => byminute = Some(parse_list("BYMINUTE", value, 59, "minutes")?),
            _ => {
                return Err(format!(
                    "unknown key {key}: a schedule takes FREQ, INTERVAL, BYDAY, BYHOUR and BYMINUTE"
                ))
            }
        }
    }
    if seen.is_empty() {
        return Err("the rule is empty: write e.g. FREQ=DAILY;BYHOUR=22;BYMINUTE=0".into());
    }
    let freq = freq.ok_or("FREQ is required (FREQ=DAILY or FREQ=WEEKLY)")?;
    let interval = interval.unwrap_or(1);
    let days = match freq {
        Freq::Daily => {
            if !(1..=MAX_DAILY_INTERVAL).contains(&interval) {
                return Err(format!(
                    "INTERVAL={interval} is out of range: a daily schedule repeats every 1-{MAX_DAILY_INTERVAL} days"
                ));
            }
            if byday.is_some() {
                return Err(
                    "BYDAY goes with FREQ=WEEKLY only: for some days of the week write FREQ=WEEKLY;BYDAY=..."
                        .into(),
                );
            }
            0x7f
        }
        Freq::Weekly => {
            if interval != 1 {
                return Err(format!(
                    "INTERVAL={interval} is not supported with FREQ=WEEKLY: a weekly schedule runs every week (INTERVAL=1)"
                ));
            }
            byday.ok_or("FREQ=WEEKLY needs BYDAY (e.g. BYDAY=MO,WE,FR)")?
        }
    };
    let hours = byhour.ok_or("BYHOUR is required (e.g. BYHOUR=22)")?;
    let minutes = byminute.unwrap_or_else(|| vec![0]);
    let n = hours.len() * minutes.len();
    if n > MAX_POINTS_PER_DAY {
        return Err(format!(
            "{n} time points a day (BYHOUR x BYMINUTE): at most {MAX_POINTS_PER_DAY} are allowed"
        ));
    }
    let mut times: Vec<i32> = hours
        .iter()
        .flat_map(|&h| {
            minutes
                .iter()
                .map(move |&m| i32::from(h) * 60 + i32::from(m))
        })
        .collect();
    times.sort_unstable();
    Ok(Rule {
        text: text.to_string(),
        freq,
        interval,
        days,
        hours,
        minutes,
        times,
    })
}

/// Whether some day `d` can have rule `a` active on `d` and rule `b` active
/// on `d + delta` (`delta` 0 or 1), whatever the anchor (see the module
/// docs: conservative only where the answer depends on the anchor).
fn can_follow(a: &Rule, b: &Rule, delta: i64) -> bool {
    match (a.freq, b.freq) {
        (Freq::Weekly, Freq::Weekly) => (0..7)
            .any(|i| a.days & (1 << i) != 0 && b.days & (1 << ((i + delta as usize) % 7)) != 0),
        // Both count days from the same anchor: d ≡ 0 (mod ia) and
        // d + delta ≡ 0 (mod ib) has a solution iff gcd(ia, ib) | delta.
        (Freq::Daily, Freq::Daily) => delta % gcd(a.interval, b.interval) as i64 == 0,
        // The weekday of an interval day depends on the anchor: assume any.
        _ => true,
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn hhmm(m: i32) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// The "at least one hour apart" rule over all pairs of rules (a rule with
/// itself too), on the same day and across midnight.
pub(super) fn check_gaps(rules: &[Rule]) -> Result<()> {
    for (i, a) in rules.iter().enumerate() {
        for (j, b) in rules.iter().enumerate() {
            for delta in [0i64, 1] {
                if !can_follow(a, b, delta) {
                    continue;
                }
                for &ta in &a.times {
                    for &tb in &b.times {
                        let gap = (delta as i32) * MINUTES_PER_DAY + tb - ta;
                        if gap == 0 || gap.abs() >= MIN_GAP_MINUTES {
                            continue;
                        }
                        let (first, second) = if gap > 0 { (ta, tb) } else { (tb, ta) };
                        let which = if i == j {
                            format!("schedule {:?}", a.text)
                        } else {
                            format!("schedules {:?} and {:?}", a.text, b.text)
                        };
                        let next_day = if delta == 1 { " the next day" } else { "" };
                        return Err(Error::param(format!(
                            "{which}: time points {} and {}{next_day} are {} minutes apart: \
                             time points must be at least one hour apart (at most {MAX_POINTS_PER_DAY} a day)",
                            hhmm(first),
                            hhmm(second),
                            gap.abs()
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}
