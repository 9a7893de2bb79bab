//! A vault's objects in an S3-compatible bucket (issue 14): [`S3Storage`]
//! implements [`Storage`] with synchronous HTTP requests.
//!
//! Requests are signed by `rusty-s3` (Sans-IO: it makes presigned URLs and
//! does no I/O) and sent by `ureq` on the calling thread, which fits the
//! thread-based engine; the tokio-based SDKs would pull a runtime in.
//!
//! What this module promises on top of S3's own guarantees:
//! - **All or nothing.** A single PUT, and a multipart upload's completion,
//!   publish an object atomically; a failed multipart upload is aborted.
//! - **Checked in transit.** Every upload carries `Content-MD5` (the server
//!   refuses a body that does not match), and the returned ETag is compared
//!   with the MD5 (for a multipart upload: per part, and the whole
//!   `md5(part md5s)-N`) where the server gives one; a multipart object's
//!   length is checked with HEAD after completion. Every download is checked
//!   against the length the server announced, and a range against the
//!   length asked for.
//! - **Bounded.** Connect, resolve and per-read/per-write timeouts, so that a
//!   stalled connection ends; 5xx, 429, timeouts and dropped connections are
//!   retried a bounded number of times with exponential backoff and jitter;
//!   then the error names the endpoint, the bucket and the object.
//! - **Secret.** The secret key is used to sign and nothing else: it is in
//!   no message, no `Debug` output and no log line; neither are signed URLs.
//! - **Counted.** Requests (PUT, GET, LIST, DELETE, attempts included) and
//!   bytes up and down, readable at any time with [`S3Storage::counters`],
//!   because users pay for them.
//!
//! Object names are the store's names (`packs/ab/<hex>.pack`, `index/…`)
//! under the vault's prefix: `s3://bucket/host1/home` keeps `vault.json` as
//! the key `host1/home/vault.json`. Requests are path-style
//! (`endpoint/bucket/key`), which every S3-compatible server accepts.

use crate::error::{Error, Result};
use crate::store::storage::{ObjectInfo, Storage};
use base64::Engine as _;
use md5::{Digest, Md5};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use ureq::http;
use url::Url;

/// How long a signed URL stays valid: longer than any one attempt (each
/// attempt signs afresh), short enough to be useless if it leaked.
const SIGN_TTL: Duration = Duration::from_secs(15 * 60);

/// Error bodies are read up to this size (they are a few hundred bytes).
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// S3 allows at most this many parts in one multipart upload.
const MAX_PARTS: u64 = 10_000;

/// S3's smallest part (all but the last).
const MIN_PART: u64 = 5 << 20;

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
    fn key(&self, name: &str) -> String {
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
fn check_key_path(p: &str) -> std::result::Result<(), String> {
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

/// A store name handed to a [`Storage`] method, checked before it becomes
/// part of a key.
fn check_name(name: &str) -> Result<()> {
    check_key_path(name).map_err(|why| Error::invalid(format!("object name {name} {why}")))
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
    fn delay(&self, attempt: u32) -> Duration {
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
    credentials: Credentials,
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
        Ok(S3Config {
            location,
            endpoint,
            region,
            credentials,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(60),
            multipart_threshold: 64 << 20,
            part_size: 16 << 20,
        })
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

/// Requests and bytes an [`S3Storage`] has spent since it was made.
/// Attempts count, retries included: each is billed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct S3Counters {
    /// PUT and POST requests (uploads, multipart create/part/complete/abort).
    pub put_requests: u64,
    /// GET and HEAD requests.
    pub get_requests: u64,
    /// LIST requests (one per page of 1,000 keys).
    pub list_requests: u64,
    /// DELETE requests.
    pub delete_requests: u64,
    /// Body bytes sent.
    pub bytes_up: u64,
    /// Body bytes received.
    pub bytes_down: u64,
    /// Attempts that were retries of a failed one.
    pub retries: u64,
}

impl S3Counters {
    /// What was spent between `earlier` and `self` (per operation).
    pub fn since(&self, earlier: &S3Counters) -> S3Counters {
        S3Counters {
            put_requests: self.put_requests.saturating_sub(earlier.put_requests),
            get_requests: self.get_requests.saturating_sub(earlier.get_requests),
            list_requests: self.list_requests.saturating_sub(earlier.list_requests),
            delete_requests: self.delete_requests.saturating_sub(earlier.delete_requests),
            bytes_up: self.bytes_up.saturating_sub(earlier.bytes_up),
            bytes_down: self.bytes_down.saturating_sub(earlier.bytes_down),
            retries: self.retries.saturating_sub(earlier.retries),
        }
    }
}

#[derive(Default)]
struct Counters {
    put: AtomicU64,
    get: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
    retries: AtomicU64,
}

/// Which counter a request goes to.
#[derive(Clone, Copy)]
enum Class {
    Put,
    Get,
    List,
    Delete,
}

/// A request's body.
enum Payload<'a> {
    None,
    Bytes(&'a [u8]),
    /// `len` bytes of `file` from `offset`.
    File {
        file: &'a File,
        offset: u64,
        len: u64,
    },
}

impl Payload<'_> {
    fn len(&self) -> u64 {
        match self {
            Payload::None => 0,
            Payload::Bytes(b) => b.len() as u64,
            Payload::File { len, .. } => *len,
        }
    }
}

/// Reads a byte range of a file with `pread`, so that a retry can send the
/// same bytes again without seeking a shared descriptor.
struct FileRange<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for FileRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            // The file is shorter than the caller said: fail rather than
            // let the server wait for bytes that never come.
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the local file ended before the length given",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// One attempt's outcome when it is not a success.
enum Failure {
    /// Worth another attempt (5xx, 429, timeout, dropped connection, a
    /// body cut short or damaged in transit).
    Retry(String),
    /// Final (4xx, bad data): no point in trying again.
    Fatal(Error),
}

/// A vault's objects in an S3 bucket. Cheap to share between threads.
pub struct S3Storage {
    cfg: S3Config,
    bucket: Bucket,
    agent: ureq::Agent,
    counters: Counters,
}

impl fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Storage")
            .field("location", &self.cfg.location.to_string())
            .field("endpoint", &self.cfg.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl S3Storage {
    /// A client for `cfg`. Makes no request.
    pub fn new(cfg: S3Config) -> Result<S3Storage> {
        if cfg.part_size < MIN_PART {
            return Err(Error::invalid(format!(
                "S3 part size {} is below S3's minimum of 5 MiB",
                cfg.part_size
            )));
        }
        let bucket = Bucket::new(
            cfg.endpoint.clone(),
            UrlStyle::Path,
            cfg.location.bucket.clone(),
            cfg.region.clone(),
        )
        .map_err(|e| Error::invalid(format!("S3 endpoint {}: {e}", cfg.endpoint)))?;
        let agent = ureq::Agent::config_builder()
            // Statuses are results to classify, not errors.
            .http_status_as_error(false)
            .timeout_resolve(Some(cfg.connect_timeout))
            .timeout_connect(Some(cfg.connect_timeout))
            .timeout_per_read(Some(cfg.io_timeout))
            .timeout_per_write(Some(cfg.io_timeout))
            // S3 answers, it does not redirect; a redirect would re-send
            // a signed request elsewhere.
            .max_redirects(0)
            .user_agent(concat!("cbrfs/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(S3Storage {
            cfg,
            bucket,
            agent,
            counters: Counters::default(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    /// Requests and bytes spent so far.
    pub fn counters(&self) -> S3Counters {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        S3Counters {
            put_requests: l(&c.put),
            get_requests: l(&c.get),
            list_requests: l(&c.list),
            delete_requests: l(&c.delete),
            bytes_up: l(&c.up),
            bytes_down: l(&c.down),
            retries: l(&c.retries),
        }
    }

    /// `s3://bucket/prefix/name at endpoint`: the object an error is about.
    fn what(&self, name: &str) -> String {
        format!(
            "s3://{}/{} at {}",
            self.cfg.location.bucket,
            self.cfg.location.key(name),
            self.endpoint_text()
        )
    }

    fn endpoint_text(&self) -> &str {
        self.cfg.endpoint.as_str().trim_end_matches('/')
    }

    /// Run `attempt` until it succeeds, fails for good, or the policy's
    /// attempts are spent; `op` and `name` make the final error's message.
    fn retrying<T>(
        &self,
        op: &str,
        name: &str,
        mut attempt: impl FnMut() -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        let start = Instant::now();
        let max = self.cfg.retry.max_attempts.max(1);
        let mut n = 1;
        loop {
            match attempt() {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(why)) => {
                    if n >= max {
                        return Err(Error::failed(format!(
                            "S3 {op} of {}: gave up after {n} attempt{} in {:.1} s; last: {why}",
                            self.what(name),
                            if n == 1 { "" } else { "s" },
                            start.elapsed().as_secs_f64()
                        )));
                    }
                    log::debug!("S3 {op} of {}: attempt {n} failed: {why}", self.what(name));
                    std::thread::sleep(self.cfg.retry.delay(n));
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            }
        }
    }

    /// One HTTP exchange, counted. Transport errors come back classified.
    fn exchange(
        &self,
        class: Class,
        method: http::Method,
        url: &Url,
        headers: &[(&str, String)],
        payload: &Payload<'_>,
    ) -> std::result::Result<http::Response<ureq::Body>, Failure> {
        let c = &self.counters;
        let counter = match class {
            Class::Put => &c.put,
            Class::Get => &c.get,
            Class::List => &c.list,
            Class::Delete => &c.delete,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut b = http::Request::builder().method(method).uri(url.as_str());
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        let sent = payload.len();
        let result = match payload {
            Payload::None => b
                .body(())
                .map_err(|e| Failure::Fatal(Error::failed(format!("S3 request: {e}"))))
                .and_then(|r| self.agent.run(r).map_err(transport)),
            Payload::Bytes(bytes) => b
                .header("content-length", bytes.len().to_string())
                .body(*bytes)
                .map_err(|e| Failure::Fatal(Error::failed(format!("S3 request: {e}"))))
                .and_then(|r| self.agent.run(r).map_err(transport)),
            Payload::File { file, offset, len } => {
                let mut reader = FileRange {
                    file,
                    pos: *offset,
                    end: offset + len,
                };
                // The length is set, so the body goes length-delimited
                // (S3 refuses chunked uploads without it).
                b.header("content-length", len.to_string())
                    .body(ureq::SendBody::from_reader(&mut reader))
                    .map_err(|e| Failure::Fatal(Error::failed(format!("S3 request: {e}"))))
                    .and_then(|r| self.agent.run(r).map_err(transport))
            }
        };
        c.up.fetch_add(sent, Ordering::Relaxed);
        result
    }

    /// Read a response body of at most `limit` bytes, counted; a body
    /// shorter than its Content-Length is a transport failure.
    fn read_body(
        &self,
        resp: http::Response<ureq::Body>,
        limit: u64,
    ) -> std::result::Result<Vec<u8>, Failure> {
        let announced = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = announced {
            if n > limit {
                return Err(Failure::Fatal(Error::corrupt(format!(
                    "response announces {n} bytes, more than the {limit} expected"
                ))));
            }
        }
        // Reserve what was announced, but never trust it for more than the
        // limit (checked above) nor beyond a sane first allocation.
        let mut buf = Vec::with_capacity(announced.unwrap_or(0).min(64 << 20) as usize);
        let mut reader = resp
            .into_body()
            .into_with_config()
            .limit(limit.saturating_add(1))
            .reader();
        let r = reader.read_to_end(&mut buf);
        self.counters
            .down
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        if let Err(e) = r {
            return Err(Failure::Retry(format!(
                "body cut short after {} bytes: {e}",
                buf.len()
            )));
        }
        if let Some(n) = announced {
            if buf.len() as u64 != n {
                return Err(Failure::Retry(format!(
                    "body has {} bytes, Content-Length said {n}",
                    buf.len()
                )));
            }
        }
        if buf.len() as u64 > limit {
            return Err(Failure::Fatal(Error::corrupt(format!(
                "response has more than the {limit} bytes expected"
            ))));
        }
        Ok(buf)
    }

    /// Classify an unexpected status: retry 5xx, 429 and 408, otherwise a
    /// final error naming the object and S3's error code.
    fn status_failure(&self, op: &str, name: &str, resp: http::Response<ureq::Body>) -> Failure {
        let status = resp.status().as_u16();
        let body = self.read_body(resp, ERROR_BODY_LIMIT).unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        let code = xml_field(&text, "Code");
        let msg = xml_field(&text, "Message");
        let detail = match (code.as_deref(), msg.as_deref()) {
            (Some(c), Some(m)) => format!("{status} {c}: {m}"),
            (Some(c), None) => format!("{status} {c}"),
            _ => format!("status {status}"),
        };
        if status >= 500 || status == 429 || status == 408 {
            return Failure::Retry(detail);
        }
        let what = self.what(name);
        Failure::Fatal(match (status, code.as_deref()) {
            (404, Some("NoSuchBucket")) => Error::not_found(format!(
                "S3 {op} of {what}: bucket {} does not exist",
                self.cfg.location.bucket
            )),
            (403, _) => Error::failed(format!(
                "S3 {op} of {what}: access denied ({detail}); check AWS_ACCESS_KEY_ID, \
                 AWS_SECRET_ACCESS_KEY and the bucket's policy"
            )),
            _ => Error::failed(format!("S3 {op} of {what}: {detail}")),
        })
    }

    /// Upload `payload` to `name` in one PUT with its MD5 (`md5` raw).
    fn put_once(&self, name: &str, payload: Payload<'_>, md5: [u8; 16]) -> Result<()> {
        let key = self.cfg.location.key(name);
        let md5_b64 = base64::engine::general_purpose::STANDARD.encode(md5);
        self.retrying("PUT", name, || {
            let mut action = self.bucket.put_object(Some(&self.cfg.credentials), &key);
            action.headers_mut().insert("content-md5", md5_b64.clone());
            let url = action.sign(SIGN_TTL);
            let resp = self.exchange(
                Class::Put,
                http::Method::PUT,
                &url,
                &[("content-md5", md5_b64.clone())],
                &payload,
            )?;
            if !resp.status().is_success() {
                return Err(self.status_failure("PUT", name, resp));
            }
            let etag = header(&resp, "etag");
            let sse = header(&resp, "x-amz-server-side-encryption");
            drop(self.read_body(resp, ERROR_BODY_LIMIT));
            check_etag(etag.as_deref(), sse.as_deref(), &hex(&md5))
        })
    }

    /// Upload `len` bytes of `file` in parts; abort the upload on failure.
    fn put_multipart(&self, name: &str, file: &File, len: u64) -> Result<()> {
        let key = self.cfg.location.key(name);
        let creds = Some(&self.cfg.credentials);
        let upload_id = self.retrying("multipart create", name, || {
            let url = self
                .bucket
                .create_multipart_upload(creds, &key)
                .sign(SIGN_TTL);
            let resp = self.exchange(Class::Put, http::Method::POST, &url, &[], &Payload::None)?;
            if !resp.status().is_success() {
                return Err(self.status_failure("multipart create", name, resp));
            }
            let body = self.read_body(resp, ERROR_BODY_LIMIT)?;
            let text = String::from_utf8_lossy(&body);
            rusty_s3::actions::CreateMultipartUpload::parse_response(&text)
                .map(|r| r.upload_id().to_string())
                .map_err(|e| {
                    Failure::Retry(format!("unreadable CreateMultipartUpload answer: {e}"))
                })
        })?;
        let result = self.upload_parts(name, &key, &upload_id, file, len);
        if result.is_err() {
            // Best effort, one try: parts left behind cost storage until
            // the bucket's lifecycle rule or the next prune removes them.
            let url = self
                .bucket
                .abort_multipart_upload(creds, &key, &upload_id)
                .sign(SIGN_TTL);
            if let Ok(resp) = self.exchange(
                Class::Delete,
                http::Method::DELETE,
                &url,
                &[],
                &Payload::None,
            ) {
                drop(self.read_body(resp, ERROR_BODY_LIMIT));
            }
        }
        result
    }

    fn upload_parts(
        &self,
        name: &str,
        key: &str,
        upload_id: &str,
        file: &File,
        len: u64,
    ) -> Result<()> {
        let creds = Some(&self.cfg.credentials);
        let part_size = self.cfg.part_size.max(len.div_ceil(MAX_PARTS));
        let parts = len.div_ceil(part_size);
        let mut etags = Vec::with_capacity(parts as usize);
        let mut md5s = Vec::with_capacity(parts as usize * 16);
        for i in 0..parts {
            let offset = i * part_size;
            let plen = part_size.min(len - offset);
            let md5 = file_md5(file, offset, plen)
                .map_err(|e| Error::io(format!("reading part {} of {name}", i + 1), e))?;
            md5s.extend_from_slice(&md5);
            let md5_b64 = base64::engine::general_purpose::STANDARD.encode(md5);
            // At most MAX_PARTS parts (part_size was chosen so): fits u16.
            let number = u16::try_from(i + 1)
                .map_err(|_| Error::failed(format!("{name}: more than {MAX_PARTS} parts")))?;
            let op = format!("PUT part {number}/{parts}");
            let etag = self.retrying(&op, name, || {
                let mut action = self.bucket.upload_part(creds, key, number, upload_id);
                action.headers_mut().insert("content-md5", md5_b64.clone());
                let url = action.sign(SIGN_TTL);
                let payload = Payload::File {
                    file,
                    offset,
                    len: plen,
                };
                let resp = self.exchange(
                    Class::Put,
                    http::Method::PUT,
                    &url,
                    &[("content-md5", md5_b64.clone())],
                    &payload,
                )?;
                if !resp.status().is_success() {
                    return Err(self.status_failure(&op, name, resp));
                }
                let etag = header(&resp, "etag");
                let sse = header(&resp, "x-amz-server-side-encryption");
                drop(self.read_body(resp, ERROR_BODY_LIMIT));
                check_etag(etag.as_deref(), sse.as_deref(), &hex(&md5))?;
                etag.ok_or_else(|| Failure::Retry("the server gave no ETag for the part".into()))
            })?;
            etags.push(etag);
        }
        let whole = format!("{}-{parts}", hex(&Md5::digest(&md5s)));
        let completed = self.retrying("multipart complete", name, || {
            let action = self.bucket.complete_multipart_upload(
                creds,
                key,
                upload_id,
                etags.iter().map(String::as_str),
            );
            let url = action.sign(SIGN_TTL);
            let body = action.body();
            let resp = self.exchange(
                Class::Put,
                http::Method::POST,
                &url,
                &[],
                &Payload::Bytes(body.as_bytes()),
            )?;
            if !resp.status().is_success() {
                return Err(self.status_failure("multipart complete", name, resp));
            }
            // S3 may answer 200 and report the failure in the body.
            let body = self.read_body(resp, ERROR_BODY_LIMIT)?;
            let text = String::from_utf8_lossy(&body);
            if text.contains("<Error>") {
                let code = xml_field(&text, "Code").unwrap_or_default();
                return match code.as_str() {
                    "InternalError" | "SlowDown" | "ServiceUnavailable" => {
                        Err(Failure::Retry(format!("multipart complete: {code}")))
                    }
                    _ => Err(Failure::Fatal(Error::failed(format!(
                        "S3 multipart complete of {}: {code}",
                        self.what(name)
                    )))),
                };
            }
            Ok(xml_field(&text, "ETag"))
        });
        let etag = match completed {
            Ok(etag) => etag,
            // A completion whose answer was lost and whose retry found the
            // upload gone (NoSuchUpload) may still have published: the
            // checks below decide.
            Err(e) => match self.head(name)? {
                Some((size, etag)) if size == len && etag_is(etag.as_deref(), &whole) => etag,
                _ => return Err(e),
            },
        };
        if let Some(got) = etag.as_deref().map(unquote) {
            if is_multipart_etag(got) && got != whole {
                return Err(Error::corrupt(format!(
                    "S3 multipart upload of {}: ETag {got}, expected {whole} from the parts sent",
                    self.what(name)
                )));
            }
        }
        match self.head(name)? {
            Some((size, _)) if size == len => Ok(()),
            Some((size, _)) => Err(Error::corrupt(format!(
                "S3 multipart upload of {}: the object has {size} bytes, {len} were sent",
                self.what(name)
            ))),
            None => Err(Error::failed(format!(
                "S3 multipart upload of {}: completed, but the object is absent",
                self.what(name)
            ))),
        }
    }

    /// Size and ETag of `name`, or None when absent.
    fn head(&self, name: &str) -> Result<Option<(u64, Option<String>)>> {
        let key = self.cfg.location.key(name);
        self.retrying("HEAD", name, || {
            let url = self
                .bucket
                .head_object(Some(&self.cfg.credentials), &key)
                .sign(SIGN_TTL);
            let resp = self.exchange(Class::Get, http::Method::HEAD, &url, &[], &Payload::None)?;
            if resp.status().as_u16() == 404 {
                return Ok(None);
            }
            if !resp.status().is_success() {
                return Err(self.status_failure("HEAD", name, resp));
            }
            let size = header(&resp, "content-length")
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Failure::Retry("HEAD answer without Content-Length".into()))?;
            Ok(Some((size, header(&resp, "etag"))))
        })
    }
}

/// A transport error as a retryable failure, described without the URL
/// (it carries a signature).
fn transport(e: ureq::Error) -> Failure {
    let why = match &e {
        ureq::Error::Io(io) => format!("connection: {io}"),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::Protocol(p) => format!("protocol: {p}"),
        ureq::Error::BadUri(_) => {
            return Failure::Fatal(Error::failed("S3 request: bad URI"));
        }
        other => {
            return Failure::Fatal(Error::failed(format!("S3 request: {other}")));
        }
    };
    Failure::Retry(why)
}

fn header(resp: &http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The text of the first `<tag>…</tag>` of an S3 XML answer.
fn xml_field(text: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    Some(
        text[start..end]
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">"),
    )
}

fn unquote(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

fn is_md5_etag(e: &str) -> bool {
    e.len() == 32 && e.bytes().all(|c| c.is_ascii_hexdigit())
}

fn is_multipart_etag(e: &str) -> bool {
    matches!(e.split_once('-'), Some((h, n)) if is_md5_etag(h) && n.bytes().all(|c| c.is_ascii_digit()))
}

fn etag_is(etag: Option<&str>, want: &str) -> bool {
    etag.map(unquote)
        .is_some_and(|e| e.eq_ignore_ascii_case(want))
}

/// Compare an upload's ETag with the MD5 sent, where the ETag is an MD5:
/// with SSE-KMS or SSE-C encryption it is not, and Content-MD5 (checked by
/// the server) is then the only check.
fn check_etag(
    etag: Option<&str>,
    sse: Option<&str>,
    md5_hex: &str,
) -> std::result::Result<(), Failure> {
    let Some(e) = etag.map(unquote) else {
        return Ok(());
    };
    let encrypted = sse.is_some_and(|s| s != "AES256");
    if !encrypted && is_md5_etag(e) && !e.eq_ignore_ascii_case(md5_hex) {
        return Err(Failure::Retry(format!(
            "the server's ETag {e} is not the MD5 {md5_hex} of the bytes sent"
        )));
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    crate::fsutil::hex(b)
}

/// MD5 of `len` bytes of `file` from `offset`.
fn file_md5(file: &File, offset: u64, len: u64) -> std::io::Result<[u8; 16]> {
    let mut h = Md5::new();
    let mut r = FileRange {
        file,
        pos: offset,
        end: offset + len,
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

impl Storage for S3Storage {
    fn describe(&self) -> String {
        self.cfg.location.to_string()
    }

    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        check_name(name)?;
        self.put_once(name, Payload::Bytes(data), Md5::digest(data).into())
    }

    fn put_file(&self, name: &str, file: &File, len: u64) -> Result<()> {
        check_name(name)?;
        if len > self.cfg.multipart_threshold {
            return self.put_multipart(name, file, len);
        }
        let md5 = file_md5(file, 0, len).map_err(|e| Error::io(format!("reading {name}"), e))?;
        self.put_once(
            name,
            Payload::File {
                file,
                offset: 0,
                len,
            },
            md5,
        )
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        check_name(name)?;
        let key = self.cfg.location.key(name);
        self.retrying("GET", name, || {
            let url = self
                .bucket
                .get_object(Some(&self.cfg.credentials), &key)
                .sign(SIGN_TTL);
            let resp = self.exchange(Class::Get, http::Method::GET, &url, &[], &Payload::None)?;
            match resp.status().as_u16() {
                200 => self.read_body(resp, u64::MAX).map(Some),
                404 => {
                    let f = self.status_failure("GET", name, resp);
                    match f {
                        // A missing bucket is an error; a missing object is None.
                        Failure::Fatal(e) if e.kind() == crate::error::Kind::NotFound => {
                            Err(Failure::Fatal(e))
                        }
                        _ => Ok(None),
                    }
                }
                _ => Err(self.status_failure("GET", name, resp)),
            }
        })
    }

    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        check_name(name)?;
        let end = offset.checked_add(len).ok_or_else(|| {
            Error::invalid(format!(
                "range of {name}: offset {offset} + length {len} overflows"
            ))
        })?;
        if len == 0 {
            // No Range header can ask for nothing: check the object is
            // there and long enough instead.
            return match self.head(name)? {
                Some((size, _)) if size >= offset => Ok(Vec::new()),
                Some((size, _)) => Err(short(&self.what(name), size, offset, len)),
                None => Err(absent(&self.what(name))),
            };
        }
        let key = self.cfg.location.key(name);
        let range = format!("bytes={offset}-{}", end - 1);
        self.retrying("GET range", name, || {
            let url = self
                .bucket
                .get_object(Some(&self.cfg.credentials), &key)
                .sign(SIGN_TTL);
            let resp = self.exchange(
                Class::Get,
                http::Method::GET,
                &url,
                &[("range", range.clone())],
                &Payload::None,
            )?;
            match resp.status().as_u16() {
                206 => {
                    // bytes a-b/total: a short object answers fewer bytes.
                    let total = header(&resp, "content-range")
                        .and_then(|v| v.rsplit_once('/').and_then(|(_, t)| t.parse::<u64>().ok()));
                    let body = self.read_body(resp, len)?;
                    if body.len() as u64 == len {
                        Ok(body)
                    } else {
                        Err(Failure::Fatal(short(
                            &self.what(name),
                            total.unwrap_or(offset + body.len() as u64),
                            offset,
                            len,
                        )))
                    }
                }
                // A server that ignores Range sends the whole object.
                200 => {
                    let body = self.read_body(resp, u64::MAX)?;
                    if (body.len() as u64) < end {
                        return Err(Failure::Fatal(short(
                            &self.what(name),
                            body.len() as u64,
                            offset,
                            len,
                        )));
                    }
                    Ok(body[offset as usize..end as usize].to_vec())
                }
                416 => {
                    let total = header(&resp, "content-range")
                        .and_then(|v| v.rsplit_once('/').and_then(|(_, t)| t.parse::<u64>().ok()));
                    drop(self.read_body(resp, ERROR_BODY_LIMIT));
                    Err(Failure::Fatal(short(
                        &self.what(name),
                        total.unwrap_or(0),
                        offset,
                        len,
                    )))
                }
                404 => match self.status_failure("GET range", name, resp) {
                    Failure::Fatal(e) if e.kind() == crate::error::Kind::NotFound => {
                        Err(Failure::Fatal(e))
                    }
                    _ => Err(Failure::Fatal(absent(&self.what(name)))),
                },
                _ => Err(self.status_failure("GET range", name, resp)),
            }
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        // An empty prefix lists the whole vault; otherwise the same rules
        // as a name, but a trailing '/' is the usual way to ask.
        if !prefix.is_empty() {
            check_key_path(prefix.strip_suffix('/').unwrap_or(prefix))
                .map_err(|why| Error::invalid(format!("list prefix {prefix} {why}")))?;
        }
        let full = self.cfg.location.key(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.retrying("LIST", prefix, || {
                let mut action = self.bucket.list_objects_v2(Some(&self.cfg.credentials));
                action.with_prefix(full.as_str());
                if let Some(t) = &token {
                    action.with_continuation_token(t.as_str());
                }
                let url = action.sign(SIGN_TTL);
                let resp =
                    self.exchange(Class::List, http::Method::GET, &url, &[], &Payload::None)?;
                if !resp.status().is_success() {
                    return Err(self.status_failure("LIST", prefix, resp));
                }
                let body = self.read_body(resp, 64 << 20)?;
                let text = String::from_utf8_lossy(&body);
                rusty_s3::actions::ListObjectsV2::parse_response(&text)
                    .map_err(|e| Failure::Retry(format!("unreadable ListObjectsV2 answer: {e}")))
            })?;
            for c in page.contents {
                // Keys outside the prefix would be a server bug; skip them
                // rather than hand the store a name it never wrote.
                if let Some(name) = c.key.strip_prefix(&self.cfg.location.prefix) {
                    if name.starts_with(prefix) {
                        out.push(ObjectInfo {
                            name: name.to_string(),
                            size: c.size,
                        });
                    }
                }
            }
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => {
                    if token.as_deref() == Some(t.as_str()) {
                        return Err(Error::failed(format!(
                            "S3 LIST of {}: the server repeated its continuation token",
                            self.what(prefix)
                        )));
                    }
                    token = Some(t);
                }
                _ => break,
            }
        }
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let key = self.cfg.location.key(name);
        self.retrying("DELETE", name, || {
            let url = self
                .bucket
                .delete_object(Some(&self.cfg.credentials), &key)
                .sign(SIGN_TTL);
            let resp = self.exchange(
                Class::Delete,
                http::Method::DELETE,
                &url,
                &[],
                &Payload::None,
            )?;
            let status = resp.status().as_u16();
            if resp.status().is_success() {
                drop(self.read_body(resp, ERROR_BODY_LIMIT));
                return Ok(());
            }
            match self.status_failure("DELETE", name, resp) {
                Failure::Fatal(e) if status == 404 && e.kind() != crate::error::Kind::NotFound => {
                    Ok(())
                }
                f => Err(f),
            }
        })
    }
}

fn absent(what: &str) -> Error {
    Error::not_found(format!("object {what} does not exist"))
}

fn short(what: &str, size: u64, offset: u64, len: u64) -> Error {
    Error::corrupt(format!(
        "object {what} has {size} bytes, {len} were wanted at offset {offset}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    const KEYS: &[(&str, &str)] = &[
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
    fn secrets_stay_out_of_debug_and_errors() {
        let c =
            S3Config::from_lookup("s3://bkt/p", Some("http://127.0.0.1:9000"), env(KEYS)).unwrap();
        let s = S3Storage::new(c.clone()).unwrap();
        for text in [format!("{c:?}"), format!("{s:?}")] {
            assert!(!text.contains("verysecretvalue"), "{text}");
            assert!(!text.contains("AKIDEXAMPLE"), "{text}");
        }
        let e = S3Config::from_lookup("s3://bkt", Some("http://AKID:hunter2@host:1"), env(KEYS))
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(e.exit_code(), 2);
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
    fn names_are_checked() {
        for n in ["", "/abs", "a//b", "a/../b", "packs/", "x\u{1}"] {
            assert_eq!(check_name(n).unwrap_err().exit_code(), 2, "{n:?}");
        }
        check_name("packs/ab/0123.pack").unwrap();
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

    #[test]
    fn etags_are_compared_only_when_they_are_md5s() {
        let md5 = hex(&Md5::digest(b"abc"));
        assert!(check_etag(Some(&format!("\"{md5}\"")), None, &md5).is_ok());
        assert!(check_etag(Some("\"00000000000000000000000000000000\""), None, &md5).is_err());
        // Not an MD5 (multipart, or SSE-KMS): nothing to compare.
        assert!(check_etag(Some("\"abc-2\""), None, &md5).is_ok());
        assert!(check_etag(
            Some("\"00000000000000000000000000000000\""),
            Some("aws:kms"),
            &md5
        )
        .is_ok());
        assert!(check_etag(None, None, &md5).is_ok());
        assert!(is_multipart_etag(&format!("{md5}-3")));
        assert!(!is_multipart_etag(&md5));
    }

    #[test]
    fn xml_fields_are_found() {
        let t = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>a &amp; b</Message></Error>";
        assert_eq!(xml_field(t, "Code").as_deref(), Some("SlowDown"));
        assert_eq!(xml_field(t, "Message").as_deref(), Some("a & b"));
        assert_eq!(xml_field(t, "Nope"), None);
    }
}
