//! `cbrfs ls`, `cbrfs find` and `cbrfs diff`: look into backups without
//! mounting them.

use super::print_json;
use crate::catalog::Store;
use crate::engine::browse;
use crate::error::Result;
use crate::quote::{quote, quote_bytes};
use clap::Args;

#[derive(Args, Debug)]
pub(super) struct LsArgs {
    /// The vault.
    pub(super) vault: String,
    /// The backup ('latest': the newest).
    pub(super) backup: String,
    /// What to list, as in the mount: <resource>/sub/dir [default: the
    /// backup's resources].
    pub(super) path: Option<String>,
    /// Mode, owner, size and time, like 'ls -l'.
    #[arg(long, short = 'l')]
    pub(super) long: bool,
    /// Everything below PATH as well.
    #[arg(long, short = 'R')]
    pub(super) recursive: bool,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args, Debug)]
pub(super) struct FindArgs {
    /// The vault.
    pub(super) vault: String,
    /// A glob on the name (notes*.txt), or on the path when it has a
    /// '/' (home/*/notes.txt, relative to the resource or after its
    /// name as 'cbrfs ls' shows it).
    pub(super) pattern: String,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args, Debug)]
pub(super) struct DiffArgs {
    /// The vault.
    pub(super) vault: String,
    /// The older backup.
    pub(super) from: String,
    /// The newer backup ('latest': the newest).
    pub(super) to: String,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

/// One `ls -l`-style line of an entry: mode, uid, gid, size, mtime, path.
fn long_line(e: &browse::Entry) -> String {
    let mut line = format!(
        "{} {:>6} {:>6} {:>12} {} {}",
        browse::mode_string(e.node_kind, e.mode),
        e.uid,
        e.gid,
        e.size,
        e.mtime,
        quote_bytes(&e.raw_path)
    );
    if let Some(t) = &e.target {
        line.push_str(" -> ");
        line.push_str(&quote(t));
    }
    line
}

pub(super) fn ls_cmd(
    store: &Store,
    vault: &str,
    backup: &str,
    path: Option<&str>,
    long: bool,
    recursive: bool,
    json: bool,
) -> Result<i32> {
    let l = browse::ls(store, vault, backup, path, recursive)?;
    if json {
        print_json(&l)?;
        return Ok(0);
    }
    for e in &l.entries {
        if long {
            println!("{}", long_line(e));
        } else {
            println!("{}", quote_bytes(&e.raw_path));
        }
    }
    Ok(0)
}

pub(super) fn find_cmd(store: &Store, vault: &str, pattern: &str, json: bool) -> Result<i32> {
    let r = browse::find(store, vault, pattern)?;
    if json {
        print_json(&r)?;
    } else {
        for m in &r.matches {
            println!("{}  {}", m.backup, long_line(&m.entry));
        }
        if r.matches.is_empty() {
            println!("no entry matching {} in vault {vault}", quote(pattern));
        }
    }
    for e in &r.errors {
        eprintln!("cbrfs: error: {}", quote(e));
    }
    Ok(if r.errors.is_empty() { 0 } else { 1 })
}

pub(super) fn diff_cmd(
    store: &Store,
    vault: &str,
    from: &str,
    to: &str,
    json: bool,
) -> Result<i32> {
    let d = browse::diff(store, vault, from, to)?;
    if json {
        print_json(&d)?;
        return Ok(0);
    }
    for c in &d.changes {
        let sign = match c.change {
            "added" => "+",
            "removed" => "-",
            _ => "M",
        };
        let mut what: Vec<&str> = Vec::new();
        if c.content {
            what.push("content");
        }
        what.extend(c.metadata.iter().copied());
        if what.is_empty() {
            println!("{sign}    {}", quote_bytes(&c.raw_path));
        } else {
            println!(
                "{sign}    {}  ({})",
                quote_bytes(&c.raw_path),
                what.join(", ")
            );
        }
    }
    println!(
        "{} → {}: {} added, {} removed, {} changed",
        d.from, d.to, d.added, d.removed, d.changed
    );
    Ok(0)
}
