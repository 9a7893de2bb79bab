//! One S3 request: sending it (counted), reading its answer (length
//! checked), classifying what went wrong (retry or give up), and retrying
//! with backoff. The operations in `mod.rs` and `multipart.rs` build on it.

use super::*;

/// No attempt of one request starts later than this after its first: the
/// attempts against a stalled server each last the whole I/O timeout (60 s
/// by default), and eight of them would hold a command for eight minutes.
/// Answers that fail at once (503, resets) spend the attempts long before.
const RETRY_BUDGET: Duration = Duration::from_secs(120);

/// Which counter a request goes to.
#[derive(Clone, Copy)]
pub(super) enum Class {
    Put,
    Get,
    List,
    Delete,
}

/// A request's body.
pub(super) enum Payload<'a> {
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
    pub(super) fn len(&self) -> u64 {
        match self {
            Payload::None => 0,
            Payload::Bytes(b) => b.len() as u64,
            Payload::File { len, .. } => *len,
        }
    }
}

/// Reads a byte range of a file with `pread`, so that a retry can send the
/// same bytes again without seeking a shared descriptor.
pub(super) struct FileRange<'a> {
    pub(super) file: &'a File,
    pub(super) pos: u64,
    pub(super) end: u64,
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
pub(super) enum Failure {
    /// Worth another attempt (5xx, 429, timeout, dropped connection, a
    /// body cut short or damaged in transit).
    Retry(String),
    /// Final (4xx, bad data): no point in trying again.
    Fatal(Error),
}

impl S3Storage {
    /// Run `attempt` until it succeeds, fails for good, or the policy's
    /// attempts are spent; `op` and `name` make the final error's message.
    pub(super) fn retrying<T>(
        &self,
        op: &str,
        name: &str,
        mut attempt: impl FnMut() -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        if let Some(earlier) = self.held_down() {
            return Err(Error::failed(format!(
                "S3 {op} of {}: not sent, the endpoint failed a request less than {} s ago: {earlier}",
                self.what(name),
                DOWN_FOR.as_secs()
            )));
        }
        let start = Instant::now();
        let max = self.cfg.retry.max_attempts.max(1);
        let mut n = 1;
        loop {
            match attempt() {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(why)) => {
                    let delay = self.cfg.retry.delay(n);
                    if n >= max || start.elapsed() + delay > RETRY_BUDGET {
                        let msg = format!(
                            "S3 {op} of {}: gave up after {n} attempt{} in {:.1} s; last: {why}",
                            self.what(name),
                            if n == 1 { "" } else { "s" },
                            start.elapsed().as_secs_f64()
                        );
                        *self.down.lock() = Some((Instant::now() + DOWN_FOR, msg.clone()));
                        return Err(Error::failed(msg));
                    }
                    log::debug!("S3 {op} of {}: attempt {n} failed: {why}", self.what(name));
                    std::thread::sleep(delay);
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            }
        }
    }

    /// The failure that gave up, while the endpoint is taken for down.
    fn held_down(&self) -> Option<String> {
        match &*self.down.lock() {
            Some((until, why)) if Instant::now() < *until => Some(why.clone()),
            _ => None,
        }
    }

    /// One HTTP exchange, counted. Transport errors come back classified.
    pub(super) fn exchange(
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
        let mut b = http::Request::builder()
            .method(method.clone())
            .uri(url.as_str());
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        let sent = payload.len();
        let started = Instant::now();
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
        // Per request, for finding where a command's time goes
        // (`RUST_LOG=cbrfs::store::s3=debug`): the URL's path only, never
        // its query (the signature).
        if log::log_enabled!(log::Level::Debug) {
            let status = match &result {
                Ok(r) => r.status().as_u16().to_string(),
                Err(Failure::Retry(why)) => why.clone(),
                Err(Failure::Fatal(e)) => e.to_string(),
            };
            log::debug!(
                "S3 {method} {}: {status}, {sent} bytes up, answer in {:.1} ms",
                url.path(),
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
        result
    }

    /// Read a response body of at most `limit` bytes, counted; a body
    /// shorter than its Content-Length is a transport failure.
    pub(super) fn read_body(
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
        // At most one byte past the limit is read: a longer body (no
        // Content-Length, or a false one) is then refused as oversized
        // below, not retried as cut short by the reader's own limit.
        let mut reader = resp
            .into_body()
            .into_with_config()
            .limit(u64::MAX)
            .reader()
            .take(limit.saturating_add(1));
        let started = Instant::now();
        let r = reader.read_to_end(&mut buf);
        log::debug!(
            "S3 body: {} bytes down in {:.1} ms",
            buf.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
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
    pub(super) fn status_failure(
        &self,
        op: &str,
        name: &str,
        resp: http::Response<ureq::Body>,
    ) -> Failure {
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
}

/// A transport error as a retryable failure, described without the URL
/// (it carries a signature).
pub(super) fn transport(e: ureq::Error) -> Failure {
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

pub(super) fn header(resp: &http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The text of the first `<tag>…</tag>` of an S3 XML answer.
pub(super) fn xml_field(text: &str, tag: &str) -> Option<String> {
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
