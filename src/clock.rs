//! Wall-clock time as the catalog and the store's leases record it:
//! nanoseconds since the epoch, shown as RFC 3339 (UTC). A module of its
//! own, below both, so the store needs nothing of the catalog (which
//! opens the store): the module graph stays without a cycle
//! (tests/architecture.rs).

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Nanoseconds since the epoch now.
pub fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// RFC 3339 of ns since the epoch.
pub fn ns_to_rfc3339(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(ns as i128)
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_else(|_| ns.to_string())
}
