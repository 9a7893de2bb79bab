//! Multipart uploads of large files: parts read from the file by `pread`,
//! each MD5-checked, the whole checked by ETag and length, aborted on
//! failure so that nothing half-made is published.

use super::*;

impl S3Storage {
    /// Upload `len` bytes of `file` in parts; abort the upload on failure.
    pub(super) fn put_multipart(&self, name: &str, file: &File, len: u64) -> Result<()> {
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
            // At most MAX_PARTS parts (part_size was chosen so): fits u16.
            let number = u16::try_from(i + 1)
                .map_err(|_| Error::failed(format!("{name}: more than {MAX_PARTS} parts")))?;
            let payload = Payload::File {
                file,
                offset,
                len: plen,
            };
            let op = format!("PUT part {number}/{parts}");
            let etag = self
                .put_checked(&op, name, &payload, md5, true, |md5_b64| {
                    let mut action = self.bucket.upload_part(creds, key, number, upload_id);
                    action
                        .headers_mut()
                        .insert("content-md5", md5_b64.to_string());
                    action.sign(SIGN_TTL)
                })?
                .ok_or_else(|| Error::failed(format!("{op} of {}: no ETag", self.what(name))))?;
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
}
