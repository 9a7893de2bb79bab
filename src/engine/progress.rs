//! Live counters of a running operation, updated by the engine and polled by
//! whoever shows them (a progress bar, `user.cbrfs.progress`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Counters of one backup or restore.
#[derive(Debug, Default)]
pub struct Progress {
    total: AtomicU64,
    done: AtomicU64,
    read: AtomicU64,
    files: AtomicU64,
    finished: AtomicBool,
    /// Set when the user interrupted the work (SIGINT, SIGTERM).
    cancel: AtomicBool,
}

impl Progress {
    /// Counters for work of about `total` bytes.
    pub fn new(total: u64) -> Self {
        Progress {
            total: AtomicU64::new(total),
            ..Default::default()
        }
    }
    /// More work found on the way (check learns each vault's size only
    /// when it opens it).
    pub fn add_total(&self, n: u64) {
        self.total.fetch_add(n, Relaxed);
    }
    /// Ask the work to stop (the user interrupted it).
    pub fn cancel(&self) {
        self.cancel.store(true, Relaxed);
    }
    /// True once [`Progress::cancel`] was called.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Relaxed)
    }
    /// Bytes read from the source (also counts as done).
    pub fn add_read(&self, n: u64) {
        self.read.fetch_add(n, Relaxed);
        self.done.fetch_add(n, Relaxed);
    }
    /// Bytes accounted for without reading (unchanged files).
    pub fn add_done(&self, n: u64) {
        self.done.fetch_add(n, Relaxed);
    }
    /// One more file handled.
    pub fn add_file(&self) {
        self.files.fetch_add(1, Relaxed);
    }
    /// Mark the work complete.
    pub fn finish(&self) {
        self.finished.store(true, Relaxed);
    }
    /// Estimated total bytes.
    pub fn total(&self) -> u64 {
        self.total.load(Relaxed).max(self.done.load(Relaxed))
    }
    /// Bytes handled.
    pub fn done(&self) -> u64 {
        self.done.load(Relaxed)
    }
    /// Bytes read.
    pub fn read(&self) -> u64 {
        self.read.load(Relaxed)
    }
    /// Files handled.
    pub fn files(&self) -> u64 {
        self.files.load(Relaxed)
    }
    /// Percent complete, 0–100 (100 only when finished).
    pub fn percent(&self) -> u8 {
        if self.finished.load(Relaxed) {
            return 100;
        }
        let t = self.total();
        if t == 0 {
            return 0;
        }
        ((self.done() as u128 * 99 / t as u128) as u8).min(99)
    }
}
