//! Where a remote vault lives (issue 14): the `--storage s3://…` setting
//! as the catalog records it, and opening it as a cached [`Storage`].
//!
//! The record holds the endpoint, the bucket and the prefix, never a
//! secret: credentials come from the environment at every command
//! (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, or a profile).

use super::cached::{CachedStorage, DEFAULT_CACHE_BYTES, HEAD_TTL};
use super::storage::Storage;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// A vault kept in an S3 bucket, as `vault.json` records it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RemoteConfig {
    /// `http(s)://host[:port]` of the S3 service.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The key prefix of the vault's objects: empty, or ending in `/`.
    pub prefix: String,
    /// Bound of this host's cache of data ranges, bytes.
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: u64,
    /// Other names the vault had (a `vault attach --name` renames it on
    /// one host): backup records made under them are this vault's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

fn default_cache_bytes() -> u64 {
    DEFAULT_CACHE_BYTES
}

impl RemoteConfig {
    /// Parse `--storage s3://BUCKET[/PREFIX]`, `--s3-endpoint` (else
    /// `AWS_ENDPOINT_URL`) and `--cache-size`. Bad input is exit 2 naming
    /// the rule.
    pub fn from_args(
        url: &str,
        endpoint: Option<&str>,
        cache_size: Option<&str>,
    ) -> Result<RemoteConfig> {
        let cfg = super::s3::S3Config::from_env(url, endpoint)?;
        let cache_bytes = match cache_size {
            None => DEFAULT_CACHE_BYTES,
            Some(s) => parse_size(s)?,
        };
        let mut endpoint = cfg.endpoint.to_string();
        while endpoint.ends_with('/') {
            endpoint.pop();
        }
        Ok(RemoteConfig {
            endpoint,
            bucket: cfg.location.bucket.clone(),
            prefix: cfg.location.prefix.clone(),
            cache_bytes,
            aliases: Vec::new(),
        })
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        let p = self.prefix.trim_end_matches('/');
        if p.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{p}", self.bucket)
        }
    }

    /// The bucket itself, uncached.
    pub fn open_remote(&self) -> Result<Arc<dyn Storage>> {
        let cfg = super::s3::S3Config::from_env(&self.url(), Some(&self.endpoint))?;
        Ok(Arc::new(super::s3::S3Storage::new(cfg)?))
    }

    /// The vault, cached in its local directory `home`.
    pub fn open(&self, home: &Path) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(
            CachedStorage::new(self.open_remote()?, home, self.cache_bytes).with_head_ttl(HEAD_TTL),
        ))
    }
}

/// A cache size: a number of bytes with an optional unit (KB, MB, GB, TB,
/// powers of 1024; KiB… too), at least 16 MiB.
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(format!(
            "cache size {}: expected a size such as 512MB or 4GB, at least 16MB",
            crate::quote::quote(s)
        ))
    };
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mul: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(bad()),
    };
    let v = n.checked_mul(mul).ok_or_else(bad)?;
    if v < 16 << 20 {
        return Err(bad());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes() {
        assert_eq!(parse_size("4GB").unwrap(), 4 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("16777216").unwrap(), 16 << 20);
        for bad in ["", "GB", "1MB", "-5GB", "5XB", "99999999999999999999TB"] {
            let e = parse_size(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("cache size"), "{e}");
        }
    }

    #[test]
    fn the_record_holds_no_secret() {
        let r = RemoteConfig {
            endpoint: "http://127.0.0.1:8333".into(),
            bucket: "b".into(),
            prefix: "host1/home/".into(),
            cache_bytes: 1 << 30,
            aliases: vec![],
        };
        assert_eq!(r.url(), "s3://b/host1/home");
        let j = serde_json::to_string(&r).unwrap();
        assert!(!j.to_lowercase().contains("secret"), "{j}");
    }
}
