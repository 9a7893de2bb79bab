//! A policy's time zone: a fixed offset written CBR's way ([`UtcOffset`])
//! or an IANA zone ([`Zone`]), how wall-clock times map to instants in it,
//! and its parse. Used by the schedule (when a policy runs) and by
//! retention (whose days are the zone's days), both through
//! `crate::policy::schedule`, which re-exports it (it was defined there).

use std::fmt;
use std::str::FromStr;

use jiff::civil::DateTime;
use jiff::tz::Offset;
use jiff::Timestamp;

use crate::error::{Error, Result};

/// Smallest offset CBR offers (UTC−12:00), in minutes.
const OFFSET_MIN_MINUTES: i32 = -12 * 60;
/// Largest offset CBR offers (UTC+14:00), in minutes.
const OFFSET_MAX_MINUTES: i32 = 14 * 60;

/// A policy's time zone: a fixed offset from UTC, written CBR's way
/// (`UTC+08:00`, `UTC-05:30`, `UTC`), from UTC−12:00 to UTC+14:00.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UtcOffset {
    minutes: i16,
}

impl UtcOffset {
    /// UTC itself.
    pub const UTC: UtcOffset = UtcOffset { minutes: 0 };

    /// Parse a time zone. Accepted: `UTC`, `UTC+08:00`, `UTC-05:30`,
    /// `UTC+8`, `UTC+0800`, and the same without the `UTC` prefix or with
    /// `GMT` (case-insensitive). Errors name the text and the accepted forms.
    pub fn parse(s: &str) -> Result<UtcOffset> {
        Self::parse_inner(s.trim()).ok_or_else(|| {
            Error::param(format!(
                "time zone {s:?} is invalid: write UTC, UTC+08:00 or UTC-05:30 \
                 (a fixed offset from UTC-12:00 to UTC+14:00)"
            ))
        })
    }

    fn parse_inner(s: &str) -> Option<UtcOffset> {
        let upper = s.to_ascii_uppercase();
        let rest = upper
            .strip_prefix("UTC")
            .or_else(|| upper.strip_prefix("GMT"))
            .unwrap_or(&upper);
        if rest.is_empty() {
            // "UTC" alone (but not an empty string).
            return (!upper.is_empty()).then_some(UtcOffset::UTC);
        }
        let (sign, rest) = match rest.as_bytes()[0] {
            b'+' => (1, &rest[1..]),
            b'-' => (-1, &rest[1..]),
            _ => return None,
        };
        let digits = |t: &str| {
            (!t.is_empty() && t.len() <= 2 && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse::<i32>().ok())
                .flatten()
        };
        let (h, m) = if let Some((h, m)) = rest.split_once(':') {
            (
                digits(h)?,
                if m.len() == 2 {
                    digits(m)?
                } else {
                    return None;
                },
            )
        } else if rest.len() == 4 {
            (digits(rest.get(..2)?)?, digits(rest.get(2..)?)?)
        } else {
            (digits(rest)?, 0)
        };
        if m >= 60 {
            return None;
        }
        let total = sign * (h * 60 + m);
        if !(OFFSET_MIN_MINUTES..=OFFSET_MAX_MINUTES).contains(&total) {
            return None;
        }
        Some(UtcOffset {
            minutes: total as i16,
        })
    }

    /// Parse an optional time zone; none means UTC.
    pub fn parse_opt(s: Option<&str>) -> Result<UtcOffset> {
        s.map_or(Ok(UtcOffset::UTC), UtcOffset::parse)
    }

    /// The offset in minutes east of UTC.
    pub fn minutes(self) -> i32 {
        i32::from(self.minutes)
    }

    /// The offset as a `jiff` offset.
    pub fn to_jiff(self) -> Offset {
        Offset::from_seconds(self.minutes() * 60).expect("offset within ±14 h")
    }

    /// The civil (wall-clock) date and time of `t` in this time zone.
    pub fn to_datetime(self, t: Timestamp) -> DateTime {
        self.to_jiff().to_datetime(t)
    }

    /// The instant of a civil date and time in this time zone; `None` only
    /// at the ends of the representable range.
    pub fn to_timestamp(self, dt: DateTime) -> Option<Timestamp> {
        self.to_jiff().to_timestamp(dt).ok()
    }
}

impl fmt::Display for UtcOffset {
    /// CBR's spelling: `UTC+08:00`, `UTC-05:30`, `UTC+00:00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.minutes();
        let sign = if m < 0 { '-' } else { '+' };
        write!(f, "UTC{sign}{:02}:{:02}", m.abs() / 60, m.abs() % 60)
    }
}

impl FromStr for UtcOffset {
    type Err = Error;
    fn from_str(s: &str) -> Result<UtcOffset> {
        UtcOffset::parse(s)
    }
}

/// A policy's time zone (`--timezone`): a fixed offset written CBR's way
/// ([`UtcOffset`]), or an IANA time zone name (`Europe/Berlin`) whose rules,
/// daylight saving included, come from the system's time zone database
/// (`/usr/share/zoneinfo`, Debian package `tzdata`).
///
/// The system database rather than a copy built into the binary: time zone
/// rules change several times a year and the distribution updates them;
/// a built-in copy would keep the rules of the day cbrfs was built.
///
/// How wall-clock times map to instants (RFC 5545 §3.3.5, jiff's
/// "compatible" rule): a time in a spring-forward gap is read with the
/// offset before the gap, so it happens once, shifted later by the length of
/// the gap (02:30 on a day Europe/Berlin skips 02:00-03:00 is 03:30 CEST); a
/// time in a fall-back overlap is its first occurrence (02:30 CEST on the
/// day 02:00-03:00 happens twice), so it also happens once.
#[derive(Clone, Debug)]
pub enum Zone {
    /// `UTC`, `UTC+08:00`, `UTC-05:30`: no daylight saving.
    Fixed(UtcOffset),
    /// An IANA zone; `iana_name()` is always set.
    Named(jiff::tz::TimeZone),
}

/// Longest IANA name accepted (the longest in the database is 32 bytes).
const ZONE_NAME_MAX: usize = 64;

impl Zone {
    /// UTC itself (a policy without `--timezone`).
    pub const UTC: Zone = Zone::Fixed(UtcOffset::UTC);

    /// Parse a time zone: the fixed-offset forms of [`UtcOffset::parse`], or
    /// an IANA name known to the system's time zone database (matched
    /// without regard to case). Errors name the text and the accepted forms.
    pub fn parse(s: &str) -> Result<Zone> {
        let t = s.trim();
        if let Some(o) = UtcOffset::parse_inner(t) {
            return Ok(Zone::Fixed(o));
        }
        if looks_like_zone_name(t) {
            // jiff matches the name against the database's list of zones
            // (it never opens a path built from the name).
            if let Ok(tz) = jiff::tz::TimeZone::get(t) {
                if tz.iana_name().is_some() {
                    return Ok(Zone::Named(tz));
                }
            }
            return Err(Error::param(format!(
                "time zone {s:?} is unknown: it is not in the time zone database \
                 (/usr/share/zoneinfo, Debian package tzdata); write an IANA name like \
                 Europe/Berlin or America/New_York, or a fixed offset like UTC+08:00"
            )));
        }
        Err(Error::param(format!(
            "time zone {s:?} is invalid: write an IANA name like Europe/Berlin, or UTC, \
             UTC+08:00 or UTC-05:30 (a fixed offset from UTC-12:00 to UTC+14:00)"
        )))
    }

    /// Parse an optional time zone; none means UTC.
    pub fn parse_opt(s: Option<&str>) -> Result<Zone> {
        s.map_or(Ok(Zone::UTC), Zone::parse)
    }

    /// The zone as a `jiff` time zone.
    pub fn to_jiff(&self) -> jiff::tz::TimeZone {
        match self {
            Zone::Fixed(o) => jiff::tz::TimeZone::fixed(o.to_jiff()),
            Zone::Named(tz) => tz.clone(),
        }
    }

    /// The civil (wall-clock) date and time of `t` in this zone.
    pub fn to_datetime(&self, t: Timestamp) -> DateTime {
        match self {
            Zone::Fixed(o) => o.to_datetime(t),
            Zone::Named(tz) => tz.to_datetime(t),
        }
    }

    /// The instant of a civil date and time in this zone, by the rule in
    /// the type's docs (gap: shifted later; overlap: the first); `None` only
    /// at the ends of the representable range.
    pub fn to_timestamp(&self, dt: DateTime) -> Option<Timestamp> {
        match self {
            Zone::Fixed(o) => o.to_timestamp(dt),
            Zone::Named(tz) => tz.to_ambiguous_timestamp(dt).compatible().ok(),
        }
    }

    /// `t` in RFC 3339 with this zone's offset at that instant, e.g.
    /// `2026-03-29T03:30:00+02:00`.
    pub fn rfc3339(&self, t: Timestamp) -> String {
        let offset = match self {
            Zone::Fixed(o) => o.to_jiff(),
            Zone::Named(tz) => tz.to_offset(t),
        };
        t.display_with_offset(offset).to_string()
    }
}

/// Whether `s` can be an IANA name: ASCII letters, digits and `/_+-`,
/// starting with a letter, no empty part. Names of the database's own files
/// (`localtime`, the host's zone; `posixrules`) are not zones of their own.
fn looks_like_zone_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= ZONE_NAME_MAX
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b))
        && !s.split('/').any(str::is_empty)
        && !["localtime", "posixrules"]
            .iter()
            .any(|n| s.eq_ignore_ascii_case(n))
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        match (self, other) {
            (Zone::Fixed(a), Zone::Fixed(b)) => a == b,
            (Zone::Named(a), Zone::Named(b)) => a.iana_name() == b.iana_name(),
            _ => false,
        }
    }
}

impl Eq for Zone {}

impl fmt::Display for Zone {
    /// `UTC+08:00` for a fixed offset, the IANA name (the database's
    /// spelling) for a zone.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Fixed(o) => write!(f, "{o}"),
            Zone::Named(tz) => f.write_str(tz.iana_name().unwrap_or("?")),
        }
    }
}

impl FromStr for Zone {
    type Err = Error;
    fn from_str(s: &str) -> Result<Zone> {
        Zone::parse(s)
    }
}
