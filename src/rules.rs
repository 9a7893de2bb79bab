//! CBR's rules for names, descriptions, tags and capacities, each with a
//! message that names the object and the rule.

use crate::error::{Error, Result};

/// Smallest vault capacity, GB.
pub const CAPACITY_MIN_GB: u64 = 10;
/// Largest vault capacity, GB.
pub const CAPACITY_MAX_GB: u64 = 10_485_760;
/// Bytes in one GB as CBR counts capacity (2^30).
pub const GB: u64 = 1 << 30;
/// Most tags on one vault.
pub const MAX_TAGS: usize = 10;
/// Most resources in one vault.
pub const MAX_RESOURCES: usize = 256;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 255;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Check a vault, backup, policy, server or resource name: 1–64 of
/// `[A-Za-z0-9_-]`. `what` is e.g. "vault name".
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0 || n > 64 || !name.chars().all(is_name_char) {
        return Err(Error::param(format!(
            "{what} {name:?} is invalid: it must be 1-64 characters of letters, digits, '_' and '-'"
        )));
    }
    Ok(())
}

/// Check a description: at most 255 characters.
pub fn check_description(what: &str, d: &str) -> Result<()> {
    let n = d.chars().count();
    if n > MAX_DESCRIPTION {
        return Err(Error::param(format!(
            "{what} description is {n} characters long: at most {MAX_DESCRIPTION} are allowed"
        )));
    }
    Ok(())
}

/// Parse and check one `KEY=VALUE` tag.
pub fn parse_tag(s: &str) -> Result<(String, String)> {
    let (k, v) = s.split_once('=').ok_or_else(|| {
        Error::param(format!(
            "tag {s:?} is invalid: write it as KEY=VALUE (the value may be empty)"
        ))
    })?;
    check_tag_key(k)?;
    let n = v.chars().count();
    if n > 43 || !v.chars().all(is_name_char) {
        return Err(Error::param(format!(
            "tag {k:?} has an invalid value {v:?}: a value is 0-43 characters of letters, digits, '_' and '-'"
        )));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Check a tag key: 1–36 of `[A-Za-z0-9_-]`.
pub fn check_tag_key(k: &str) -> Result<()> {
    let n = k.chars().count();
    if n == 0 || n > 36 || !k.chars().all(is_name_char) {
        return Err(Error::param(format!(
            "tag key {k:?} is invalid: a key is 1-36 characters of letters, digits, '_' and '-'"
        )));
    }
    Ok(())
}

/// Parse a capacity: a number with an optional unit GB or TB (also G, T,
/// GiB, TiB; case-insensitive); a bare number means GB. Returns GB.
pub fn parse_capacity(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        Error::param(format!(
            "capacity {s:?} is invalid: write a whole number of GB or TB, like 100GB, 2TB or 100"
        ))
        .code("BackupService.6101")
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let gb = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "g" | "gb" | "gib" => Some(n),
        "t" | "tb" | "tib" => n.checked_mul(1024),
        _ => return Err(bad()),
    };
    match gb {
        Some(gb) if (CAPACITY_MIN_GB..=CAPACITY_MAX_GB).contains(&gb) => Ok(gb),
        _ => Err(Error::param(format!(
            "capacity {s:?} is out of range: a vault's capacity is {CAPACITY_MIN_GB} GB to {CAPACITY_MAX_GB} GB"
        ))
        .code("BackupService.6101")),
    }
}

/// A count with its noun: `1 directory`, `2 directories`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Human form of a byte count: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(count(0, "directory", "directories"), "0 directories");
        assert_eq!(count(1, "directory", "directories"), "1 directory");
        assert_eq!(count(2, "backup", "backups"), "2 backups");
    }

    #[test]
    fn names() {
        assert!(check_name("vault name", "a").is_ok());
        assert!(check_name("vault name", &"a".repeat(64)).is_ok());
        assert!(check_name("vault name", &"a".repeat(65)).is_err());
        assert!(check_name("vault name", "").is_err());
        assert!(check_name("vault name", "a b").is_err());
        assert!(check_name("vault name", "é").is_err());
        let e = check_name("vault name", "a.b").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("vault name \"a.b\""));
    }

    #[test]
    fn capacities() {
        assert_eq!(parse_capacity("100GB").unwrap(), 100);
        assert_eq!(parse_capacity("2TB").unwrap(), 2048);
        assert_eq!(parse_capacity("10").unwrap(), 10);
        assert_eq!(parse_capacity("10485760").unwrap(), 10_485_760);
        for bad in [
            "9",
            "10485761",
            "0",
            "-5",
            "1.5TB",
            "100MB",
            "",
            "GB",
            "99999999999999999999",
        ] {
            let e = parse_capacity(bad).unwrap_err();
            assert_eq!(e.cbr_code(), Some("BackupService.6101"), "{bad}");
        }
    }

    #[test]
    fn tags() {
        assert_eq!(
            parse_tag("env=prod").unwrap(),
            ("env".into(), "prod".into())
        );
        assert_eq!(parse_tag("env=").unwrap(), ("env".into(), "".into()));
        assert!(parse_tag("env").is_err());
        assert!(parse_tag("=x").is_err());
        assert!(parse_tag(&format!("{}=x", "k".repeat(37))).is_err());
        assert!(parse_tag(&format!("k={}", "v".repeat(44))).is_err());
        assert!(parse_tag("k=a b").is_err());
    }

    #[test]
    fn descriptions() {
        assert!(check_description("vault", &"x".repeat(255)).is_ok());
        assert!(check_description("vault", &"x".repeat(256)).is_err());
    }
}
