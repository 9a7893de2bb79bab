//! `cbrfs metrics`: Prometheus metrics for node_exporter's textfile
//! collector.

use crate::catalog::Store;
use crate::error::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(super) struct MetricsArgs {
    /// Write to FILE atomically (a temporary file renamed into place,
    /// mode 0644) instead of stdout; name it *.prom for the collector.
    #[arg(long, value_name = "FILE")]
    pub(super) output: Option<PathBuf>,
}

/// Print the metrics, or write them atomically to `output`. Exit 3 (a
/// partial result) when an encrypted vault was left out as locked.
pub(super) fn metrics_cmd(store: &Store, output: Option<&std::path::Path>) -> Result<i32> {
    let (families, locked) = crate::engine::metrics::collect(store)?;
    let text = crate::engine::metrics::render(&families);
    match output {
        Some(f) => crate::fsutil::write_atomic_public(f, text.as_bytes())?,
        None => print!("{text}"),
    }
    for why in &locked {
        eprintln!(
            "cbrfs: warning: skipped a locked vault: {}",
            crate::quote::quote(why)
        );
    }
    Ok(if locked.is_empty() { 0 } else { 3 })
}
