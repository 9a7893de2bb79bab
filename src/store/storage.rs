//! The storage interface: names in, bytes out. (Placeholder with only the
//! agreed trait, so that the S3 backend compiles; the `store` engineer's
//! file replaces it at merge.)

use crate::error::Result;

pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
}

pub trait Storage: Send + Sync + std::fmt::Debug {
    /// For messages: a directory path or s3://bucket/prefix.
    fn describe(&self) -> String;
    /// Publish `data` under `name` so that any reader sees all of it or nothing (never a prefix).
    fn put(&self, name: &str, data: &[u8]) -> Result<()>;
    /// Publish the bytes of a finished local file (packs: avoids holding them in memory).
    fn put_file(&self, name: &str, file: &std::fs::File, len: u64) -> Result<()>;
    /// The whole object, or None when absent.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Exactly `len` bytes at `offset`; an error naming the object when absent or shorter.
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Every object whose name starts with `prefix` (e.g. "index/"), with sizes. May miss objects published moments ago on an object store.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Remove; absent is not an error.
    fn delete(&self, name: &str) -> Result<()>;
}
