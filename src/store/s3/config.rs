//! Where a vault lives in S3 and how to reach it: `s3://BUCKET[/PREFIX]`,
//! the endpoint, region and credentials from the environment, and the
//! retry policy. Pure parsing: nothing here makes a request.

use crate::error::{Error, Result};
use rusty_s3::Credentials;
use std::fmt;
use std::time::Duration;
use url::Url;

/// `s3://BUCKET[/PREFIX]`: where a vault lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket's name.
    pub bucket: String,
    /// The key prefix of every object of the vault: empty, or ending in `/`.
    pub prefix: String,
}

impl S3Location {
    /// Parse `s3://BUCKET[/PREFIX]`. The bucket must follow S3's naming
    /// rules (3-63 of `a-z 0-9 . -`, starting and ending with a letter or
    /// digit); the prefix is `/`-separated components, none empty, `.` or
    /// `..`, without control characters. A trailing `/` is allowed.
    pub fn parse(s: &str) -> Result<S3Location> {
        let bad = |why: &str| Error::invalid(format!("storage location {s}: {why}"));
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| bad("expected s3://BUCKET[/PREFIX]"))?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p),
            None => (rest, ""),
        };
        check_bucket(bucket).map_err(|why| bad(&why))?;
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            check_key_path(prefix).map_err(|why| bad(&format!("prefix {why}")))?;
            format!("{prefix}/")
        };
        // S3 keys are at most 1024 bytes; leave room for the store's names.
        if prefix.len() > 512 {
            return Err(bad("prefix longer than 512 bytes"));
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix,
        })
    }

    /// The object key of store name `name`.
    pub(super) fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.prefix.strip_suffix('/').unwrap_or(&self.prefix);
        if p.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{p}", self.bucket)
        }
    }
}

/// S3's bucket naming rules, as a reason when broken.
fn check_bucket(b: &str) -> std::result::Result<(), String> {
    if b.len() < 3 || b.len() > 63 {
        return Err(format!(
            "bucket name has {} characters, S3 allows 3 to 63",
            b.len()
        ));
    }
    if !b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
    {
        return Err("bucket name may hold only a-z, 0-9, '.' and '-'".into());
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !alnum(b.as_bytes()[0]) || !alnum(b.as_bytes()[b.len() - 1]) {
        return Err("bucket name must start and end with a letter or digit".into());
    }
    if b.contains("..") {
        return Err("bucket name must not hold '..'".into());
    }
    Ok(())
}

/// A `/`-separated key path (a prefix or a store name), as a reason when
/// bad: components non-empty, not `.` or `..`, no control characters.
pub(super) fn check_key_path(p: &str) -> std::result::Result<(), String> {
    if p.is_empty() {
        return Err("is empty".into());
    }
    if p.chars().any(|c| c.is_control()) {
        return Err("holds a control character".into());
    }
    for c in p.split('/') {
        match c {
            "" => return Err("has an empty component (a leading, trailing or double '/')".into()),
            "." | ".." => return Err(format!("has a '{c}' component")),
            _ => {}
        }
    }
    Ok(())
}

/// Bounded retries: how many attempts, and the backoff between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (the first included); at least 1.
    pub max_attempts: u32,
    /// The delay before the second attempt; doubled for each further one.
    pub base_delay: Duration,
    /// The longest delay between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts, 200 ms doubling to at most 10 s: about 25 s of backoff
    /// in all, enough for a gateway restart, short enough to fail clearly.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The pause before attempt `attempt + 1` (`attempt` >= 1): exponential,
    /// capped, with "equal jitter" (half fixed, half random) so that many
    /// clients retrying together spread out.
    pub(super) fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let d = exp.min(self.max_delay);
        let mut b = [0u8; 8];
        // No randomness at all is still a correct (if less spread) backoff.
        let r = match getrandom::getrandom(&mut b) {
            Ok(()) => u64::from_le_bytes(b),
            Err(_) => 0,
        };
        let frac = (r >> 11) as f64 / (1u64 << 53) as f64;
        d / 2 + d.mul_f64(frac / 2.0)
    }
}

/// Everything [`S3Storage`] needs: where, who, and how patiently.
#[derive(Clone)]
pub struct S3Config {
    /// Bucket and prefix.
    pub location: S3Location,
    /// `http(s)://host[:port]`, no path, no credentials.
    pub endpoint: Url,
    /// The signing region.
    pub region: String,
    pub(super) credentials: Credentials,
    /// Retries of one request.
    pub retry: RetryPolicy,
    /// Time to open a connection (resolve included).
    pub connect_timeout: Duration,
    /// Longest silence on an open connection, each read or write.
    pub io_timeout: Duration,
    /// `put_file` uploads in parts above this size.
    pub multipart_threshold: u64,
    /// The size of each part (the last may be smaller); at least 5 MiB.
    pub part_size: u64,
}

impl fmt::Debug for S3Config {
    // By hand: the credentials stay out (rusty-s3 hides the secret too,
    // but the access key id is no one's business in a log either).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("location", &self.location.to_string())
            .field("endpoint", &self.endpoint.as_str())
            .field("region", &self.region)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// A configuration from the process environment: endpoint `endpoint`
    /// or `AWS_ENDPOINT_URL` (else AWS's regional endpoint), region
    /// `AWS_REGION` (default us-east-1), credentials from
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (`AWS_SESSION_TOKEN`), or
    /// the `AWS_PROFILE` (default `default`) profile of the shared
    /// credentials file (`AWS_SHARED_CREDENTIALS_FILE`, `~/.aws/credentials`).
    pub fn from_env(location: &str, endpoint: Option<&str>) -> Result<S3Config> {
        Self::from_lookup(location, endpoint, |k| std::env::var(k).ok())
    }

    /// As [`S3Config::from_env`], reading variables through `env` (tests
    /// pass their own instead of changing the process environment).
    pub fn from_lookup(
        location: &str,
        endpoint: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<S3Config> {
        let location = S3Location::parse(location)?;
        let var = |k: &str| env(k).filter(|v| !v.is_empty());
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_string());
        if region.len() > 64
            || !region
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            return Err(Error::invalid(format!(
                "region {region} (AWS_REGION): expected lower-case letters, digits and '-'"
            )));
        }
        let endpoint = match endpoint
            .map(str::to_string)
            .or_else(|| var("AWS_ENDPOINT_URL"))
        {
            Some(e) => parse_endpoint(&e)?,
            None => parse_endpoint(&format!("https://s3.{region}.amazonaws.com"))?,
        };
        let credentials = credentials_from(&var)?;
        let io_timeout = match var(TIMEOUT_ENV) {
            None => Duration::from_secs(60),
            Some(v) => parse_timeout(&v)?,
        };
        Ok(S3Config {
            location,
            endpoint,
            region,
            credentials,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10).min(io_timeout),
            io_timeout,
            multipart_threshold: 64 << 20,
            part_size: 16 << 20,
        })
    }
}

/// The variable that shortens (or lengthens) the longest silence allowed
/// on a connection, in seconds [default 60, at most 3600]: a gateway on the
/// local network may be declared stalled sooner than a distant service, and
/// the fault tests need a stall found in seconds, not minutes.
pub const TIMEOUT_ENV: &str = "CBRFS_S3_TIMEOUT";

/// `CBRFS_S3_TIMEOUT`'s value: whole seconds, 1 to 3600.
fn parse_timeout(v: &str) -> Result<Duration> {
    match v.trim().parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(Error::invalid(format!(
            "{TIMEOUT_ENV} {}: expected whole seconds from 1 to 3600",
            crate::quote::quote(v)
        ))),
    }
}

/// Check an endpoint URL. Its text is not echoed when it carries a
/// user name or password: that may be a secret.
fn parse_endpoint(e: &str) -> Result<Url> {
    let bad = |why: &str| Error::invalid(format!("S3 endpoint {e}: {why}"));
    let url = Url::parse(e).map_err(|err| bad(&err.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid(
            "S3 endpoint: must not carry a user name or password; \
             give credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ));
    }
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad("expected http:// or https://"));
    }
    if url.host_str().is_none() {
        return Err(bad("has no host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "expected scheme://host[:port], without a path or query",
        ));
    }
    Ok(url)
}

/// Credentials from the variables, else from the shared credentials file.
fn credentials_from(var: &dyn Fn(&str) -> Option<String>) -> Result<Credentials> {
    match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(k), Some(s)) => {
            return Ok(match var("AWS_SESSION_TOKEN") {
                Some(t) => Credentials::new_with_token(k, s, t),
                None => Credentials::new(k, s),
            })
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::invalid(
                "S3 credentials: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither",
            ))
        }
        (None, None) => {}
    }
    let explicit = var("AWS_PROFILE");
    let profile = explicit.clone().unwrap_or_else(|| "default".into());
    let path = match var("AWS_SHARED_CREDENTIALS_FILE") {
        Some(p) => p,
        None => match var("HOME") {
            Some(h) => format!("{h}/.aws/credentials"),
            None => String::new(),
        },
    };
    let none = || {
        Error::invalid(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             or AWS_PROFILE with a shared credentials file",
        )
    };
    if path.is_empty() {
        return Err(none());
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            return Err(none())
        }
        Err(e) => return Err(Error::io(format!("S3 credentials file {path}"), e)),
    };
    let (k, s, t) = profile_keys(&text, &profile);
    match (k, s) {
        (Some(k), Some(s)) => Ok(match t {
            Some(t) => Credentials::new_with_token(k, s, t),
            None => Credentials::new(k, s),
        }),
        _ => Err(Error::invalid(format!(
            "S3 credentials file {path}: profile [{profile}] has no aws_access_key_id and aws_secret_access_key"
        ))),
    }
}

/// The access key, secret and token of `[profile]` in a shared credentials
/// file (INI: `[name]` sections of `key = value` lines, `#`/`;` comments).
fn profile_keys(text: &str, profile: &str) -> (Option<String>, Option<String>, Option<String>) {
    let (mut k, mut s, mut t) = (None, None, None);
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(sec) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = sec.trim() == profile;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim().to_string();
            match key.trim() {
                "aws_access_key_id" => k = Some(value),
                "aws_secret_access_key" => s = Some(value),
                "aws_session_token" => t = Some(value),
                _ => {}
            }
        }
    }
    (k, s, t)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::collections::HashMap;

    pub(in crate::store::s3) fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    pub(in crate::store::s3) const KEYS: &[(&str, &str)] = &[
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "verysecretvalue"),
    ];

    #[test]
    fn location_parses_bucket_and_prefix() {
        let l = S3Location::parse("s3://backups/host1/home").unwrap();
        assert_eq!(l.bucket, "backups");
        assert_eq!(l.prefix, "host1/home/");
        assert_eq!(l.key("vault.json"), "host1/home/vault.json");
        assert_eq!(l.to_string(), "s3://backups/host1/home");
        let l = S3Location::parse("s3://backups/").unwrap();
        assert_eq!(l.prefix, "");
        assert_eq!(l.to_string(), "s3://backups");
        assert_eq!(S3Location::parse("s3://b-1.x/p/").unwrap().prefix, "p/");
    }

    #[test]
    fn location_refuses_bad_input_as_invalid() {
        for (s, why) in [
            ("backups/x", "expected s3://"),
            ("s3://", "3 to 63"),
            ("s3://ab", "3 to 63"),
            ("s3://Backups", "a-z"),
            ("s3://-backup", "start and end"),
            ("s3://back..up", "'..'"),
            ("s3://bucket//x", "empty component"),
            ("s3://bucket/a/../b", "'..' component"),
            ("s3://bucket/a/./b", "'.' component"),
            ("s3://bucket/a\nb", "control"),
        ] {
            let e = S3Location::parse(s).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{s}");
            assert!(e.to_string().contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn config_reads_env_with_defaults() {
        let c =
            S3Config::from_lookup("s3://bkt/p", Some("http://127.0.0.1:9000"), env(KEYS)).unwrap();
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.endpoint.as_str(), "http://127.0.0.1:9000/");
        let mut pairs = KEYS.to_vec();
        pairs.push(("AWS_ENDPOINT_URL", "https://s3.example.net"));
        pairs.push(("AWS_REGION", "eu-west-3"));
        let c = S3Config::from_lookup("s3://bkt", None, env(&pairs)).unwrap();
        assert_eq!(c.endpoint.host_str(), Some("s3.example.net"));
        assert_eq!(c.region, "eu-west-3");
        let c = S3Config::from_lookup("s3://bkt", None, env(KEYS)).unwrap();
        assert_eq!(c.endpoint.host_str(), Some("s3.us-east-1.amazonaws.com"));
        // The explicit endpoint wins over the variable.
        let c = S3Config::from_lookup("s3://bkt", Some("http://h:1"), env(&pairs)).unwrap();
        assert_eq!(c.endpoint.host_str(), Some("h"));
    }

    #[test]
    fn timeout_comes_from_the_environment_and_is_checked() {
        let c = S3Config::from_lookup("s3://bkt", Some("http://h:1"), env(KEYS)).unwrap();
        assert_eq!(c.io_timeout, Duration::from_secs(60));
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        let mut pairs = KEYS.to_vec();
        pairs.push((TIMEOUT_ENV, "2"));
        let c = S3Config::from_lookup("s3://bkt", Some("http://h:1"), env(&pairs)).unwrap();
        assert_eq!(c.io_timeout, Duration::from_secs(2));
        // Connecting never waits longer than a silence is allowed to last.
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        for bad in ["0", "3601", "soon", "-1", "1.5"] {
            let mut pairs = KEYS.to_vec();
            pairs.push((TIMEOUT_ENV, bad));
            let e = S3Config::from_lookup("s3://bkt", Some("http://h:1"), env(&pairs)).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(e.to_string().contains("CBRFS_S3_TIMEOUT"), "{bad}: {e}");
        }
    }

    #[test]
    fn config_refuses_bad_endpoints_regions_and_half_credentials() {
        for ep in ["ftp://h", "http://h/path", "http://h/?x=1", "not a url"] {
            let e = S3Config::from_lookup("s3://bkt", Some(ep), env(KEYS)).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{ep}: {e}");
            assert!(e.to_string().contains("endpoint"), "{ep}: {e}");
        }
        let mut pairs = KEYS.to_vec();
        pairs.push(("AWS_REGION", "EU West"));
        let e = S3Config::from_lookup("s3://bkt", Some("http://h"), env(&pairs)).unwrap_err();
        assert!(e.to_string().contains("AWS_REGION"), "{e}");
        let e = S3Config::from_lookup("s3://bkt", Some("http://h"), env(&KEYS[..1])).unwrap_err();
        assert!(e.to_string().contains("both"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = S3Config::from_lookup(
            "s3://bkt",
            Some("http://h"),
            env(&[("HOME", "/nonexistent")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no S3 credentials"), "{e}");
    }

    #[test]
    fn credentials_come_from_the_profile_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n\
             # a comment\n[work]\naws_access_key_id=WORK\naws_secret_access_key = worksecret\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = S3Config::from_lookup(
            "s3://bkt",
            Some("http://h"),
            env(&[("AWS_SHARED_CREDENTIALS_FILE", p), ("AWS_PROFILE", "work")]),
        )
        .unwrap();
        assert_eq!(c.credentials.key(), "WORK");
        assert_eq!(c.credentials.secret(), "worksecret");
        let c = S3Config::from_lookup(
            "s3://bkt",
            Some("http://h"),
            env(&[("AWS_SHARED_CREDENTIALS_FILE", p)]),
        )
        .unwrap();
        assert_eq!(c.credentials.key(), "DEF");
        let e = S3Config::from_lookup(
            "s3://bkt",
            Some("http://h"),
            env(&[("AWS_SHARED_CREDENTIALS_FILE", p), ("AWS_PROFILE", "gone")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("[gone]"), "{e}");
        assert!(!e.to_string().contains("defsecret"), "{e}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (30, 1000),
        ] {
            let d = p.delay(attempt);
            let full = Duration::from_millis(full);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
    }
}
