//! Metrics for monitoring: what `cbrfs metrics` prints in the Prometheus
//! text exposition format (version 0.0.4), for node_exporter's textfile
//! collector. Backups fail silently unless someone looks: these are the
//! numbers an alert needs (time of the last successful backup of each
//! resource, failures in the task log, capacity and use, the last check).
//!
//! Also the record of the last check of each vault, `STORE/checks/<vault>.json`,
//! which `check` writes and the metrics read.

use crate::catalog::Store;
use crate::error::Result;
use crate::fsutil;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// One metric family: a name, its help, and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Metric name, `cbrfs_...`.
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The `# TYPE`: `gauge` (every value here can go down: the task log
    /// expires, usage shrinks after prune).
    pub kind: &'static str,
    /// Samples, each with its labels.
    pub samples: Vec<Sample>,
}

/// One sample of a family.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Label names and values (values escaped only when rendered).
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

/// The result of the last check of a vault, as `check` records it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LastCheck {
    /// When the check ended, ns since the epoch.
    pub finished_ns: i64,
    /// True when it found no problem.
    pub ok: bool,
    /// True when every blob was read (`--read-data`).
    pub read_data: bool,
    /// How many problems it found.
    pub problems: usize,
}

fn checks_dir(store: &Store) -> PathBuf {
    store.root().join("checks")
}

/// Record the result of a check of `vault`. A failure to record is logged,
/// not returned: the check itself is what the user asked for.
pub fn record_check(store: &Store, vault: &str, c: &LastCheck) {
    let dir = checks_dir(store);
    let r = fsutil::create_dir_all(&dir).and_then(|_| {
        fsutil::write_atomic(
            &dir.join(format!("{vault}.json")),
            &serde_json::to_vec_pretty(c).unwrap_or_default(),
        )
    });
    if let Err(e) = r {
        log::warn!("could not record the check of vault {vault}: {e}");
    }
}

/// The last recorded check of `vault`, if any (a damaged record counts as
/// none: the metric is then absent, which an alert can catch).
pub fn last_check(store: &Store, vault: &str) -> Option<LastCheck> {
    let data = fsutil::read_store_file(&checks_dir(store).join(format!("{vault}.json"))).ok()?;
    serde_json::from_slice(&data).ok()
}

fn secs(ns: i64) -> f64 {
    ns as f64 / 1e9
}

fn family(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        help,
        kind: "gauge",
        samples: Vec::new(),
    }
}

/// Collect the metrics of every vault of the store, and one message per
/// encrypted vault left out because its key is not at hand (it still has
/// its capacity, use and `cbrfs_vault_locked` 1; its backups are sealed).
pub fn collect(store: &Store) -> Result<(Vec<Family>, Vec<String>)> {
    let mut last_ts = family(
        "cbrfs_last_success_timestamp_seconds",
        "Time the last successful backup of the resource finished (0 if it has none).",
    );
    let mut last_dur = family(
        "cbrfs_last_success_duration_seconds",
        "How long the last successful backup of the resource took.",
    );
    let mut last_added = family(
        "cbrfs_last_success_added_bytes",
        "Bytes the last successful backup of the resource added to the vault.",
    );
    let mut backups = family("cbrfs_backups", "Backups in the vault that can be read.");
    let mut failures = family(
        "cbrfs_backup_failures",
        "Failed backups of the vault in the task log (which keeps 30 days).",
    );
    let mut capacity = family("cbrfs_vault_capacity_bytes", "Capacity of the vault.");
    let mut used = family(
        "cbrfs_vault_used_bytes",
        "Bytes the vault's packs and indexes take.",
    );
    let mut check_ts = family(
        "cbrfs_last_check_timestamp_seconds",
        "Time the last check of the vault finished.",
    );
    let mut check_ok = family(
        "cbrfs_last_check_success",
        "1 if the last check of the vault found no problem, else 0.",
    );
    let mut check_rd = family(
        "cbrfs_last_check_read_data",
        "1 if the last check of the vault read every blob (--read-data), else 0.",
    );

    let mut failed_by_vault: BTreeMap<String, u64> = BTreeMap::new();
    for t in crate::tasks::list(store)? {
        if t.task_type == crate::tasks::TaskType::Backup
            && t.status == crate::tasks::TaskState::Failed
        {
            *failed_by_vault.entry(t.vault).or_default() += 1;
        }
    }

    let mut locked_vault = family(
        "cbrfs_vault_locked",
        "1 if the vault is encrypted and its key was not at hand (no or a wrong password): its backup metrics are missing.",
    );
    let mut locked = Vec::new();

    let (vaults, damaged) = store.vaults_and_damage()?;
    for e in damaged {
        // A damaged vault record must not hide the other vaults' metrics.
        log::warn!("{e}");
    }
    for v in &vaults {
        let vl = || vec![("vault", v.name.clone())];
        locked_vault.samples.push(Sample {
            labels: vl(),
            value: if v.locked.is_some() { 1.0 } else { 0.0 },
        });
        // One locked vault must not hide the others' metrics: its backup
        // records are sealed, its clear settings still count.
        let records: Vec<_> = match &v.locked {
            Some(why) => {
                locked.push(why.clone());
                Vec::new()
            }
            None => store
                .backups(&v.name)?
                .into_iter()
                .filter_map(|r| r.ok())
                .collect(),
        };
        if v.locked.is_none() {
            backups.samples.push(Sample {
                labels: vl(),
                value: records.len() as f64,
            });
        }
        for res in &v.resources {
            let labels = vec![("vault", v.name.clone()), ("resource", res.name.clone())];
            // The newest backup holding the resource (a backup may cover
            // only some resources: `--resource`).
            let newest = records
                .iter()
                .filter_map(|b| {
                    b.resources
                        .iter()
                        .find(|r| r.name == res.name)
                        .map(|r| (b, r))
                })
                .max_by_key(|(b, _)| (b.finished_ns, b.started_ns));
            match newest {
                Some((b, r)) => {
                    last_ts.samples.push(Sample {
                        labels: labels.clone(),
                        value: secs(b.finished_ns),
                    });
                    last_dur.samples.push(Sample {
                        labels: labels.clone(),
                        value: secs(b.finished_ns.saturating_sub(b.started_ns)),
                    });
                    // Per-resource counters when the backup has them; a
                    // backup of one resource has them in its totals.
                    let added = if b.resources.len() == 1 {
                        b.stats.bytes_added
                    } else {
                        r.stats.bytes_added
                    };
                    last_added.samples.push(Sample {
                        labels,
                        value: added as f64,
                    });
                }
                // 0, not absent: "no backup for 26 h" then also fires for
                // a resource that was never backed up.
                None => last_ts.samples.push(Sample { labels, value: 0.0 }),
            }
        }
        failures.samples.push(Sample {
            labels: vl(),
            value: failed_by_vault.get(&v.name).copied().unwrap_or(0) as f64,
        });
        capacity.samples.push(Sample {
            labels: vl(),
            value: v.capacity_bytes() as f64,
        });
        match store.used_bytes(&v.name) {
            Ok(u) => used.samples.push(Sample {
                labels: vl(),
                value: u as f64,
            }),
            Err(e) => log::warn!("vault {}: usage unknown: {e}", v.name),
        }
        // A record older than the vault is of an earlier vault of the
        // same name (records are not removed with their vault). `created`
        // is rounded to the nearest second: allow one.
        let created_ns = v
            .created
            .parse::<jiff::Timestamp>()
            .map(|t| (t.as_nanosecond() as i64).saturating_sub(1_000_000_000))
            .unwrap_or(i64::MIN);
        if let Some(c) = last_check(store, &v.name).filter(|c| c.finished_ns >= created_ns) {
            check_ts.samples.push(Sample {
                labels: vl(),
                value: secs(c.finished_ns),
            });
            check_ok.samples.push(Sample {
                labels: vl(),
                value: if c.ok { 1.0 } else { 0.0 },
            });
            check_rd.samples.push(Sample {
                labels: vl(),
                value: if c.read_data { 1.0 } else { 0.0 },
            });
        }
    }
    Ok((
        vec![
            last_ts,
            last_dur,
            last_added,
            backups,
            failures,
            capacity,
            used,
            check_ts,
            check_ok,
            check_rd,
            locked_vault,
        ],
        locked,
    ))
}

/// Escape a label value as the exposition format requires: backslash,
/// double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Escape `# HELP` text: backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The families in the text exposition format: `# HELP` and `# TYPE`
/// before each family's samples, one family's samples together.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for s in &f.samples {
            out.push_str(f.name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            // f64's Display never uses an exponent and prints integers
            // without a fraction; both parse as Prometheus floats.
            let _ = writeln!(out, " {}", s.value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("a\nb"), "a\\nb");
        assert_eq!(escape_label("plain_name-1"), "plain_name-1");
    }

    #[test]
    fn render_writes_help_type_and_samples() {
        let f = Family {
            name: "cbrfs_x",
            help: "X.",
            kind: "gauge",
            samples: vec![Sample {
                labels: vec![("vault", "v\"1".into()), ("resource", "r".into())],
                value: 1764143181.5,
            }],
        };
        assert_eq!(
            render(&[f]),
            "# HELP cbrfs_x X.\n# TYPE cbrfs_x gauge\ncbrfs_x{vault=\"v\\\"1\",resource=\"r\"} 1764143181.5\n"
        );
    }

    #[test]
    fn integers_render_without_fraction_or_exponent() {
        let f = Family {
            name: "cbrfs_y",
            help: "Y.",
            kind: "gauge",
            samples: vec![Sample {
                labels: vec![],
                value: 10737418240.0,
            }],
        };
        assert!(render(&[f]).ends_with("cbrfs_y 10737418240\n"));
    }
}
