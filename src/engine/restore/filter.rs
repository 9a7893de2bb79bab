//! `--include` and `--exclude`: which entries of a backup a restore picks.

use super::join;
use crate::error::{Error, Result};
use crate::model::{Node, NodeKind};
use crate::sys;

/// `--include` and `--exclude` globs. A glob without a `/` matches an
/// entry's name; with a `/`, its path relative to the resource
/// (`home/alice/notes.txt`) or the same path after the resource's name, as
/// `ls` shows it (`data/home/alice/notes.txt`); a leading `/` is ignored.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub(super) include: Vec<String>,
    pub(super) exclude: Vec<String>,
    /// Includes that matched an entry, by index.
    pub(super) matched: Vec<bool>,
    /// The resource being restored: its root's name, and whether restore
    /// paths start with it (several resources, each in `to/<resource>`).
    pub(super) resource: Vec<u8>,
    pub(super) prefixed: bool,
}

/// What a filter says of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pick {
    /// Restore it and everything below it (bar exclusions).
    Whole,
    /// A directory that may hold included entries: made, entered, and
    /// removed again if nothing in it is restored.
    Parent,
    /// Leave it out.
    Skip,
}

pub(super) fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

impl Filter {
    /// Check the globs: not empty, no NUL, no `..` component.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter> {
        for (flag, g) in include
            .iter()
            .map(|g| ("--include", g))
            .chain(exclude.iter().map(|g| ("--exclude", g)))
        {
            let t = g.trim_start_matches('/');
            if t.is_empty() || g.contains('\0') || t.split('/').any(|c| c == "..") {
                return Err(Error::param(format!(
                    "{flag} {g:?} is invalid: give a name glob (*.txt) or a path inside the backup (home/alice/notes.txt), without '..'"
                )));
            }
        }
        // `home/alice/` is the directory `home/alice`.
        let trim = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|g| g.trim_end_matches('/').to_string())
                .collect()
        };
        Ok(Filter {
            include: trim(include),
            exclude: trim(exclude),
            matched: vec![false; include.len()],
            resource: Vec::new(),
            prefixed: false,
        })
    }

    pub(super) fn active(&self) -> bool {
        !self.include.is_empty() || !self.exclude.is_empty()
    }

    /// The entry's path relative to its resource, and after its
    /// resource's name, from its restore path `rel`.
    pub(super) fn paths(&self, rel: &[u8]) -> (Vec<u8>, Vec<u8>) {
        if self.prefixed {
            let inner = match rel.iter().position(|b| *b == b'/') {
                Some(i) => rel[i + 1..].to_vec(),
                None => Vec::new(),
            };
            (inner, rel.to_vec())
        } else {
            (rel.to_vec(), join(&self.resource, rel))
        }
    }

    pub(super) fn matches(g: &str, inner: &[u8], full: &[u8], name: &[u8]) -> bool {
        if g.contains('/') {
            let g = g.trim_start_matches('/');
            sys::fnmatch(g, inner) || sys::fnmatch(g, full)
        } else {
            sys::fnmatch(g, name)
        }
    }

    /// Whether a directory at `path` may hold entries `g` matches: its
    /// components match the glob's first ones.
    pub(super) fn may_hold(g: &str, path: &[u8]) -> bool {
        if !g.contains('/') {
            return true;
        }
        let gs: Vec<&str> = g.trim_start_matches('/').split('/').collect();
        if path.is_empty() {
            return true;
        }
        let ps: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
        ps.len() < gs.len() && ps.iter().zip(&gs).all(|(p, g)| sys::fnmatch(g, p))
    }

    /// What to do with entry `n` at restore path `rel`, whose parent is
    /// restored whole (`whole`) or only as a parent.
    pub(super) fn pick(&mut self, rel: &[u8], n: &Node, whole: bool) -> Pick {
        if !self.active() {
            return Pick::Whole;
        }
        let (inner, full) = self.paths(rel);
        if self
            .exclude
            .iter()
            .any(|g| Self::matches(g, &inner, &full, &n.name))
        {
            return Pick::Skip;
        }
        if whole || self.include.is_empty() {
            return Pick::Whole;
        }
        let mut hit = false;
        for (i, g) in self.include.iter().enumerate() {
            if Self::matches(g, &inner, &full, &n.name) {
                self.matched[i] = true;
                hit = true;
            }
        }
        if hit {
            return Pick::Whole;
        }
        let may = n.kind == NodeKind::Dir
            && self
                .include
                .iter()
                .any(|g| Self::may_hold(g, &inner) || Self::may_hold(g, &full));
        if may {
            Pick::Parent
        } else {
            Pick::Skip
        }
    }
}
