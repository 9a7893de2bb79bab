//! A vault's storage fenced by its writer lease (store/lease.rs): writes
//! stop once this process's lease is lost or could not be renewed in time;
//! reads pass through.

use super::lease::Fence;
use super::storage::{ObjectInfo, Storage};
use crate::error::Result;
use std::fs::File;
use std::sync::Arc;

/// A remote vault's storage whose writes stop when this process's writer
/// lease is lost or could not be renewed in time ([`Fence`]). Reads pass
/// through untouched. It forwards every method of [`Storage`], those with
/// a default too: a method added to the trait must be forwarded here, or
/// remote vaults silently get the default (`fenced_forwards_every_method`).
#[derive(Debug)]
pub struct Fenced {
    inner: Arc<dyn Storage>,
    fence: Arc<Fence>,
}

impl Fenced {
    /// `inner`, fenced by `fence`.
    pub fn new(inner: Arc<dyn Storage>, fence: Arc<Fence>) -> Fenced {
        Fenced { inner, fence }
    }
}

impl Storage for Fenced {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.fence.check(name, false)?;
        self.inner.put(name, data)
    }
    fn put_file(&self, name: &str, file: &File, len: u64) -> Result<()> {
        self.fence.check(name, false)?;
        self.inner.put_file(name, file, len)
    }
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get(name)
    }
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.get_range(name, offset, len)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn delete(&self, name: &str) -> Result<()> {
        self.fence.check(name, true)?;
        self.inner.delete(name)
    }
    fn map(&self, name: &str) -> Result<Option<memmap2::Mmap>> {
        self.inner.map(name)
    }
    fn remove_stale_temps(&self) -> Result<usize> {
        self.fence.check(super::lease::TEMPORARIES, true)?;
        self.inner.remove_stale_temps()
    }
    fn put_kept(&self, name: &str, data: &[u8]) -> Result<()> {
        self.fence.check(name, false)?;
        self.inner.put_kept(name, data)
    }
    fn keep_whole(&self, name: &str) -> Result<()> {
        self.inner.keep_whole(name)
    }
    fn forget_cached(&self, name: &str) -> bool {
        self.inner.forget_cached(name)
    }
    fn requests(&self) -> Option<super::s3::S3Counters> {
        self.inner.requests()
    }
    fn publish(&self) -> Result<()> {
        // Writes the head (docs/FORMAT.md §19.4): a write like any other.
        self.fence.check(super::listing::HEAD, false)?;
        self.inner.publish()
    }
    fn will_read(&self, name: &str, bytes: u64) {
        self.inner.will_read(name, bytes)
    }
    fn reading_once(&self, on: bool) {
        self.inner.reading_once(on)
    }
    fn get_at_most(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        self.inner.get_at_most(name, limit)
    }
    fn distrust_kept_listings(&self) {
        self.inner.distrust_kept_listings()
    }
}
