//! A backup's directory: one entry per resource (a directory or server
//! resource's root, a disk's `<name>.img`). While a `mkdir` backup runs it
//! lists nothing yet (see `running`), and its `user.cbrfs.*` xattrs give
//! its status and progress.

use super::running::RunState;
use super::tree::TreeNode;
use super::{
    cbrfs_xattrs, Attr, BackupCtx, Child, Entry, EntryOps, LinkKey, Listing, VResult, Vfs,
};
use crate::catalog;
use crate::engine::status::RunStatus;
use std::sync::Arc;

/// The directory of backup `name` of `vault`.
#[derive(Clone)]
pub(super) struct BackupDir {
    pub(super) vault: String,
    pub(super) name: String,
}

impl BackupDir {
    pub(super) fn new(vault: &str, name: &str) -> BackupDir {
        BackupDir {
            vault: vault.to_string(),
            name: name.to_string(),
        }
    }

    /// The backup, opened, once it is available.
    fn open(&self, vfs: &Vfs) -> VResult<Arc<BackupCtx>> {
        vfs.check_available(&self.vault, &self.name)?;
        vfs.ctx(&self.vault, &self.name)
    }
}

/// The entry of resource `i` of backup `ctx`: its root node.
fn resource(ctx: &Arc<BackupCtx>, i: usize) -> Child {
    let root = ctx.record.resources[i].root_node();
    Child {
        name: root.name.clone(),
        entry: Entry::Node(TreeNode {
            ctx: ctx.clone(),
            res: i as u32,
            node: Arc::new(root.clone()),
        }),
        link: None,
    }
}

impl EntryOps for BackupDir {
    fn attr(&self, vfs: &Vfs) -> VResult<Attr> {
        if let Some(r) = vfs.running(&self.vault, &self.name) {
            if *r.state.lock() != RunState::Available {
                return Ok(vfs.dir_attr(0o555, r.started_ns));
            }
        }
        let c = vfs.ctx(&self.vault, &self.name)?;
        Ok(vfs.dir_attr(0o555, c.record.finished_ns))
    }

    fn lookup(&self, vfs: &Vfs, name: &[u8]) -> VResult<(Entry, Option<LinkKey>)> {
        let ctx = self.open(vfs)?;
        let i = ctx
            .record
            .resources
            .iter()
            .position(|r| r.root_node().name == name)
            .ok_or(libc::ENOENT)?;
        let c = resource(&ctx, i);
        Ok((c.entry, c.link))
    }

    fn list(&self, vfs: &Vfs, _own: bool) -> VResult<Listing> {
        let ctx = self.open(vfs)?;
        let children = (0..ctx.record.resources.len())
            .map(|i| resource(&ctx, i))
            .collect();
        Ok(Listing::made(None, children))
    }

    fn xattrs(&self, vfs: &Vfs) -> Vec<(Vec<u8>, Vec<u8>)> {
        let (v, b) = (&self.vault, &self.name);
        let mut out: Vec<(String, String)> = Vec::new();
        let run = vfs.running(v, b);
        let state = run.as_ref().map(|r| r.state.lock().clone());
        match (&run, state) {
            (Some(r), Some(RunState::Protecting)) => {
                out.push(("status".into(), RunStatus::Protecting.as_str().into()));
                out.push(("progress".into(), r.progress.percent().to_string()));
                out.push(("created".into(), catalog::ns_to_rfc3339(r.started_ns)));
                out.push(("files".into(), r.progress.files().to_string()));
                out.push(("bytes_read".into(), r.progress.read().to_string()));
            }
            (Some(r), Some(RunState::Failed(why))) => {
                out.push(("status".into(), RunStatus::Error.as_str().into()));
                out.push(("progress".into(), r.progress.percent().to_string()));
                out.push(("created".into(), catalog::ns_to_rfc3339(r.started_ns)));
                out.push(("error".into(), why));
            }
            _ => {
                if let Ok(c) = vfs.ctx(v, b) {
                    let r = &c.record;
                    out.push(("status".into(), "available".into()));
                    out.push(("progress".into(), "100".into()));
                    out.push(("created".into(), catalog::ns_to_rfc3339(r.started_ns)));
                    out.push(("finished".into(), catalog::ns_to_rfc3339(r.finished_ns)));
                    out.push(("size".into(), r.stats.bytes_total.to_string()));
                    out.push(("added".into(), r.stats.bytes_added.to_string()));
                    out.push((
                        "type".into(),
                        if r.full { "full" } else { "incremental" }.into(),
                    ));
                    out.push(("origin".into(), r.origin.as_str().into()));
                }
            }
        }
        cbrfs_xattrs(out)
    }
}
