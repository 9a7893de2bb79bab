//! A backup's directory: one entry per resource (a directory or server
//! resource's root, a disk's `<name>.img`). While a `mkdir` backup runs it
//! lists nothing yet (see `running`), and its `user.cbrfs.*` xattrs give
//! its status and progress.

use super::running::RunState;
use super::tree::TreeNode;
use super::{cbrfs_xattrs, Attr, BackupCtx, Child, Entry, EntryOps, Listing, VResult, Vfs};
use crate::catalog;
use crate::engine::status::RunStatus;
use std::sync::Arc;

/// The directory of backup `.1` of vault `.0` (one shared pair: an inode
/// keeps one, and [`super::Entry`] is as large as its largest kind).
#[derive(Clone)]
pub(super) struct BackupDir(Arc<(String, String)>);

impl BackupDir {
    pub(super) fn new(vault: &str, name: &str) -> BackupDir {
        BackupDir(Arc::new((vault.to_string(), name.to_string())))
    }

    pub(super) fn vault(&self) -> &str {
        &self.0 .0
    }

    pub(super) fn name(&self) -> &str {
        &self.0 .1
    }

    /// The backup, opened, once it is available.
    fn open(&self, vfs: &Vfs) -> VResult<Arc<BackupCtx>> {
        vfs.check_available(self.vault(), self.name())?;
        vfs.ctx(self.vault(), self.name())
    }
}

/// The entry of resource `i` of backup `ctx`: its root node.
fn resource(ctx: &Arc<BackupCtx>, i: usize) -> Child {
    let root = &ctx.roots[i];
    Child {
        name: root.name.clone(),
        entry: Entry::Node(TreeNode::root(ctx.clone(), i as u32)),
        link: None,
        attr: Some(super::node_attr(0, root)),
    }
}

impl EntryOps for BackupDir {
    fn attr(&self, vfs: &Vfs) -> VResult<Attr> {
        if let Some(r) = vfs.running(self.vault(), self.name()) {
            if *r.state.lock() != RunState::Available {
                return Ok(vfs.dir_attr(0o555, r.started_ns));
            }
        }
        let c = vfs.ctx(self.vault(), self.name())?;
        Ok(vfs.dir_attr(0o555, c.record.finished_ns))
    }

    fn lookup(&self, vfs: &Vfs, name: &[u8]) -> VResult<Child> {
        let ctx = self.open(vfs)?;
        let i = ctx
            .roots
            .iter()
            .position(|r| r.name == name)
            .ok_or(libc::ENOENT)?;
        Ok(resource(&ctx, i))
    }

    fn list(&self, vfs: &Vfs, _own: bool) -> VResult<Listing> {
        let ctx = self.open(vfs)?;
        let children = (0..ctx.roots.len()).map(|i| resource(&ctx, i)).collect();
        Ok(Listing::made(None, children))
    }

    fn xattrs(&self, vfs: &Vfs) -> VResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let (v, b) = (self.vault(), self.name());
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
        Ok(cbrfs_xattrs(out))
    }
}
