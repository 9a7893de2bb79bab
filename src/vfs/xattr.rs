//! Extended attributes: a node's own, and the `user.cbrfs.*` status of
//! vaults and backups.

use super::running::RunState;
use super::{Entry, VResult, Vfs};
use crate::catalog;
use crate::model::Origin;

impl Vfs {
    pub(super) fn cbrfs_xattrs(&self, e: &Entry) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(String, String)> = Vec::new();
        match e {
            Entry::Vault(v) => {
                if let Ok(cfg) = self.store.vault(v) {
                    let used = self
                        .repo(v)
                        .ok()
                        .and_then(|r| r.used_bytes().ok())
                        .unwrap_or(0);
                    out.push(("type".into(), cfg.vault_type.as_str().into()));
                    out.push(("capacity".into(), format!("{}GB", cfg.capacity_gb)));
                    out.push(("used".into(), used.to_string()));
                    out.push(("description".into(), cfg.description.clone()));
                    out.push((
                        "tags".into(),
                        cfg.tags
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    ));
                    out.push(("resources".into(), cfg.resources.len().to_string()));
                }
            }
            Entry::Backup(v, b) => {
                let run = self.running(v, b);
                let state = run.as_ref().map(|r| r.state.lock().clone());
                match (&run, state) {
                    (Some(r), Some(RunState::Protecting)) => {
                        out.push(("status".into(), "protecting".into()));
                        out.push(("progress".into(), r.progress.percent().to_string()));
                        out.push(("created".into(), catalog::ns_to_rfc3339(r.started_ns)));
                        out.push(("files".into(), r.progress.files().to_string()));
                        out.push(("bytes_read".into(), r.progress.read().to_string()));
                    }
                    (Some(r), Some(RunState::Failed(why))) => {
                        out.push(("status".into(), "error".into()));
                        out.push(("progress".into(), r.progress.percent().to_string()));
                        out.push(("created".into(), catalog::ns_to_rfc3339(r.started_ns)));
                        out.push(("error".into(), why));
                    }
                    _ => {
                        if let Ok(c) = self.ctx(v, b) {
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
                            out.push((
                                "origin".into(),
                                match r.origin {
                                    Origin::Manual => "manual",
                                    Origin::Mount => "mount",
                                    Origin::Policy => "policy",
                                }
                                .into(),
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
        out.into_iter()
            .map(|(k, v)| (format!("user.cbrfs.{k}").into_bytes(), v.into_bytes()))
            .collect()
    }

    /// All xattrs of `ino`: a node's own, or a vault's or backup's
    /// `user.cbrfs.*`.
    pub fn xattrs(&self, ino: u64) -> VResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let (e, _) = self.entry(ino)?;
        Ok(match &e {
            Entry::Node { node, .. } => node
                .xattrs
                .iter()
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect(),
            _ => self.cbrfs_xattrs(&e),
        })
    }
}
