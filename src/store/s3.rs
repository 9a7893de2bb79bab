//! PLACEHOLDER until branch h5-s3 (the S3 client) is merged: the shape of
//! its API that `remote` uses. Replaced whole by h5-s3's s3.rs at merge.

use crate::error::{Error, Result};
use crate::store::storage::{ObjectInfo, Storage};
use std::fs::File;

/// `s3://BUCKET[/PREFIX]`.
#[derive(Clone, Debug)]
pub struct S3Location {
    /// Bucket.
    pub bucket: String,
    /// Prefix, empty or ending in `/`.
    pub prefix: String,
}

/// Configuration.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// Where.
    pub location: S3Location,
    /// Endpoint.
    pub endpoint: String,
}

impl S3Config {
    /// Placeholder.
    pub fn from_env(location: &str, endpoint: Option<&str>) -> Result<S3Config> {
        let rest = location.strip_prefix("s3://").ok_or_else(|| {
            Error::invalid(format!(
                "storage location {location}: expected s3://BUCKET[/PREFIX]"
            ))
        })?;
        let (b, p) = rest.split_once('/').unwrap_or((rest, ""));
        let p = p.trim_end_matches('/');
        Ok(S3Config {
            location: S3Location {
                bucket: b.to_string(),
                prefix: if p.is_empty() {
                    String::new()
                } else {
                    format!("{p}/")
                },
            },
            endpoint: endpoint
                .map(str::to_string)
                .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
                .unwrap_or_else(|| "https://s3.us-east-1.amazonaws.com".into()),
        })
    }
}

/// Placeholder.
#[derive(Debug)]
pub struct S3Storage;

impl S3Storage {
    /// Placeholder.
    pub fn new(_cfg: S3Config) -> Result<S3Storage> {
        Err(Error::failed("this build has no S3 client yet"))
    }
}

impl Storage for S3Storage {
    fn describe(&self) -> String {
        String::new()
    }
    fn put(&self, _: &str, _: &[u8]) -> Result<()> {
        Err(Error::failed("no S3 client"))
    }
    fn put_file(&self, _: &str, _: &File, _: u64) -> Result<()> {
        Err(Error::failed("no S3 client"))
    }
    fn get(&self, _: &str) -> Result<Option<Vec<u8>>> {
        Err(Error::failed("no S3 client"))
    }
    fn get_range(&self, _: &str, _: u64, _: u64) -> Result<Vec<u8>> {
        Err(Error::failed("no S3 client"))
    }
    fn list(&self, _: &str) -> Result<Vec<ObjectInfo>> {
        Err(Error::failed("no S3 client"))
    }
    fn delete(&self, _: &str) -> Result<()> {
        Err(Error::failed("no S3 client"))
    }
}
