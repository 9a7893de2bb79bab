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
//!   then the error names the endpoint, the bucket and the object, and for
//!   the next 30 s requests fail at once (a command facing a dead endpoint
//!   ends after one request's retries, not after one per object).
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
//!
//! Files: `config.rs` (location, endpoint, credentials, retry policy: pure
//! parsing), `request.rs` (one request: send, read, classify, retry),
//! `multipart.rs` (large uploads), this file (the `Storage` operations).

mod config;
mod multipart;
mod request;

use config::check_key_path;
pub use config::{RetryPolicy, S3Config, S3Location};
use request::{header, xml_field, Class, Failure, FileRange, Payload};

use crate::error::{Error, Result};
use crate::store::storage::{ObjectInfo, Storage};
use base64::Engine as _;
use md5::{Digest, Md5};
use rusty_s3::{Bucket, S3Action, UrlStyle};
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

/// A store name handed to a [`Storage`] method, checked before it becomes
/// part of a key: the store's own rule (plain `[A-Za-z0-9._-]` components),
/// so that no name leaves the vault's prefix.
fn check_name(name: &str) -> Result<()> {
    crate::store::storage::check_name(name)
}

/// Requests and bytes an [`S3Storage`] has spent since it was made, or
/// an operation spent ([`S3Counters::since`]): what a backup record keeps
/// (docs/FORMAT.md §11.4, bincode: seven u64 in this order), what
/// `backup show --json` and the task log show (docs/JSON.md). Attempts
/// count, retries included: each is billed.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    bincode::Encode,
    bincode::Decode,
)]
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

    /// One line for people: `3 PUT, 12 GET, 0 LIST, 0 DELETE (1 retry);
    /// 1.2 MB up, 40 MB down`.
    pub fn summary(&self) -> String {
        format!(
            "{} PUT, {} GET, {} LIST, {} DELETE ({}); {} up, {} down",
            self.put_requests,
            self.get_requests,
            self.list_requests,
            self.delete_requests,
            crate::rules::count(self.retries, "retry", "retries"),
            crate::rules::human_bytes(self.bytes_up),
            crate::rules::human_bytes(self.bytes_down)
        )
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

/// How long the endpoint is taken for down after a request gave up: in the
/// meantime requests fail at once, naming the failure that gave up. A
/// restore walks on past a file it cannot read, a check past a pack: with
/// the endpoint gone, each would otherwise spend the whole retry policy
/// (about 25 s, or minutes against a stalled server) and the command would
/// take that time once per object. Short enough that a mount reads again
/// soon after an outage ends.
const DOWN_FOR: Duration = Duration::from_secs(30);

/// A vault's objects in an S3 bucket. Cheap to share between threads.
pub struct S3Storage {
    cfg: S3Config,
    bucket: Bucket,
    agent: ureq::Agent,
    counters: Counters,
    /// Until when the endpoint is taken for down, and the failure that
    /// gave up ([`DOWN_FOR`]).
    down: parking_lot::Mutex<Option<(Instant, String)>>,
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
            down: parking_lot::Mutex::new(None),
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

    /// Upload `payload` to `name` in one PUT with its MD5 (`md5` raw).
    fn put_once(&self, name: &str, payload: Payload<'_>, md5: [u8; 16]) -> Result<()> {
        let key = self.cfg.location.key(name);
        self.put_checked("PUT", name, &payload, md5, false, |md5_b64| {
            let mut action = self.bucket.put_object(Some(&self.cfg.credentials), &key);
            action
                .headers_mut()
                .insert("content-md5", md5_b64.to_string());
            action.sign(SIGN_TTL)
        })
        .map(|_| ())
    }

    /// The one PUT exchange of an upload — a whole object or one part of a
    /// multipart upload: `payload` sent with its `Content-MD5` to the URL
    /// `sign` makes (afresh at every attempt, from the base64 MD5), the
    /// answer's ETag compared with the MD5, retried as [`Self::retrying`]
    /// does. Returns the ETag; `need_etag` makes an answer without one a
    /// failure worth retrying (a part's ETag is needed to complete).
    fn put_checked(
        &self,
        op: &str,
        name: &str,
        payload: &Payload<'_>,
        md5: [u8; 16],
        need_etag: bool,
        sign: impl Fn(&str) -> Url,
    ) -> Result<Option<String>> {
        let md5_b64 = base64::engine::general_purpose::STANDARD.encode(md5);
        let md5_hex = hex(&md5);
        self.retrying(op, name, || {
            let url = sign(&md5_b64);
            let resp = self.exchange(
                Class::Put,
                http::Method::PUT,
                &url,
                &[("content-md5", md5_b64.clone())],
                payload,
            )?;
            if !resp.status().is_success() {
                return Err(self.status_failure(op, name, resp));
            }
            let etag = header(&resp, "etag");
            let sse = header(&resp, "x-amz-server-side-encryption");
            drop(self.read_body(resp, ERROR_BODY_LIMIT));
            check_etag(etag.as_deref(), sse.as_deref(), &md5_hex)?;
            if need_etag && etag.is_none() {
                return Err(Failure::Retry(format!("{op}: the server gave no ETag")));
            }
            Ok(etag)
        })
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

    fn requests(&self) -> Option<S3Counters> {
        Some(self.counters())
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
        self.get_at_most(name, u64::MAX)
    }

    fn get_at_most(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        check_name(name)?;
        let key = self.cfg.location.key(name);
        self.retrying("GET", name, || {
            let url = self
                .bucket
                .get_object(Some(&self.cfg.credentials), &key)
                .sign(SIGN_TTL);
            let resp = self.exchange(Class::Get, http::Method::GET, &url, &[], &Payload::None)?;
            match resp.status().as_u16() {
                // read_body's only final errors are of an oversized body:
                // said again naming the object.
                200 => match self.read_body(resp, limit) {
                    Err(Failure::Fatal(e)) if e.kind() == crate::error::Kind::Corrupt => Err(
                        Failure::Fatal(super::storage::too_big(&self.describe(), name, limit)),
                    ),
                    r => r.map(Some),
                },
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

/// An absent object: a not-found I/O error, which
/// [`crate::store::storage::is_absent`] tells apart from damage (readers
/// re-list instead of reporting a lost blob).
fn absent(what: &str) -> Error {
    Error::io(
        format!("object {what}"),
        std::io::Error::from(std::io::ErrorKind::NotFound),
    )
}

fn short(what: &str, size: u64, offset: u64, len: u64) -> Error {
    Error::corrupt(format!(
        "object {what} has {size} bytes, {len} were wanted at offset {offset}"
    ))
}

#[cfg(test)]
mod tests {
    use super::config::tests::{env, KEYS};
    use super::*;

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

    /// After one request gave up, the next fails at once without a request
    /// (a command facing a dead endpoint ends after one request's retries),
    /// and names its own object and the failure that gave up.
    #[test]
    fn a_request_that_gave_up_holds_the_endpoint_down() {
        // A port nothing listens on: every connection is refused (retried).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let ep = format!("http://127.0.0.1:{port}");
        let mut c = S3Config::from_lookup("s3://bkt/p", Some(&ep), env(KEYS)).unwrap();
        c.retry = RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        let s = S3Storage::new(c).unwrap();
        let e = s.get("index/aa.idx").unwrap_err().to_string();
        assert!(e.contains("gave up after 2 attempts"), "{e}");
        assert_eq!(s.counters().get_requests, 2);
        let start = Instant::now();
        let e = s.get("backups/b.bk").unwrap_err().to_string();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(s.counters().get_requests, 2, "no request while held down");
        assert!(e.contains("s3://bkt/p/backups/b.bk at "), "{e}");
        assert!(e.contains(&ep), "{e}");
        assert!(e.contains("not sent"), "{e}");
        assert!(e.contains("s3://bkt/p/index/aa.idx at "), "{e}");
        assert!(e.contains("gave up after 2 attempts"), "{e}");
    }

    /// A server answering every request once with `head` (status line and
    /// headers) then `body_len` bytes, then closing; its endpoint.
    fn one_answer(head: &'static str, body_len: usize) -> String {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { return };
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                let _ = c.write_all(head.as_bytes());
                let chunk = vec![b'{'; 64 * 1024];
                let mut left = body_len;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if c.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    left -= n;
                }
            }
        });
        ep
    }

    /// The small objects anyone with write access to the bucket may replace
    /// (`head`, `lease`) are read with a bound: an object announcing
    /// gigabytes is refused before its body is read, one sending more than
    /// the bound without saying its length is cut at one byte past it;
    /// either is a final error naming the object, not a retry.
    #[test]
    fn bounded_gets_refuse_oversized_objects_without_reading_them() {
        let storage = |ep: &str| {
            let mut c = S3Config::from_lookup("s3://bkt/p", Some(ep), env(KEYS)).unwrap();
            c.retry = RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
            };
            S3Storage::new(c).unwrap()
        };
        let s = storage(&one_answer(
            "HTTP/1.1 200 OK\r\nContent-Length: 17179869184\r\n\r\n",
            1 << 20,
        ));
        let e = s.get_at_most("head", 65536).unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::Corrupt, "{e}");
        assert!(e.to_string().contains("s3://bkt/p/head"), "{e}");
        assert!(e.to_string().contains("65536 bytes"), "{e}");
        assert_eq!(s.counters().get_requests, 1, "not retried");
        assert_eq!(s.counters().bytes_down, 0, "no byte read");
        let s = storage(&one_answer(
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
            8 << 20,
        ));
        let e = s.get_at_most("lease", 4096).unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::Corrupt, "{e}");
        assert!(e.to_string().contains("s3://bkt/p/lease"), "{e}");
        assert_eq!(s.counters().get_requests, 1, "not retried");
        assert!(
            s.counters().bytes_down <= 4097,
            "{}",
            s.counters().bytes_down
        );
        // Within the bound: read as by get.
        let s = storage(&one_answer(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
            3,
        ));
        assert_eq!(s.get_at_most("head", 3).unwrap().unwrap(), b"{{{");
    }

    #[test]
    fn names_are_checked() {
        for n in ["", "/abs", "a//b", "a/../b", "packs/", "x\u{1}"] {
            assert_eq!(check_name(n).unwrap_err().exit_code(), 2, "{n:?}");
        }
        check_name("packs/ab/0123.pack").unwrap();
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
