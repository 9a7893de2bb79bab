//! Server resources: the pre- and post-hooks around a backup of every
//! member into one tree, and the member list kept in the record.

use super::walker::Walker;
use super::Prepared;
use crate::catalog::{self, MemberKind};
use crate::engine::servers;
use crate::error::{Error, Result};
use crate::model::{self, Node, NodeKind, Tree};
use std::path::Path;

impl Prepared {
    /// Back up a server: the pre-hook, every member (directories as trees,
    /// disks as `<member>.img`) into one tree, then the post-hook, which runs
    /// whether or not the members were read. Returns the server's root node
    /// and its member list encoded for the record's `source`
    /// (`kind NUL name NUL path NUL` per member).
    pub(super) fn server(
        &self,
        w: &mut Walker<'_, '_>,
        server: &catalog::ServerConfig,
        exclude: &[String],
        prev: Option<&Node>,
    ) -> Result<(Node, Vec<u8>)> {
        let env = |hook: &str, result: &str| {
            vec![
                ("CBRFS_VAULT", self.vault.name.clone()),
                ("CBRFS_BACKUP", self.name.clone()),
                ("CBRFS_SERVER", server.name.clone()),
                ("CBRFS_HOOK", hook.to_string()),
                ("CBRFS_RESULT", result.to_string()),
            ]
        };
        let timeout = std::time::Duration::from_secs(server.hook_timeout_s.max(1));
        let pre = match &server.pre_hook {
            Some(h) => servers::run_hook(h, timeout, &env("pre", ""))
                .map(|_| ())
                .map_err(|e| e.context(format!("server {}: pre-hook", server.name))),
            None => Ok(()),
        };
        let result = pre.and_then(|()| self.server_members(w, server, exclude, prev));
        // The post-hook runs whatever happened: after a failed pre-hook too,
        // since it may have to undo part of it (thaw a file system).
        if let Some(h) = &server.post_hook {
            let r = if result.is_ok() { "success" } else { "failure" };
            if let Err(e) = servers::run_hook(h, timeout, &env("post", r)) {
                w.warn(format!("server {}: post-hook: {e}", server.name));
            }
        }
        result
    }

    pub(super) fn server_members(
        &self,
        w: &mut Walker<'_, '_>,
        server: &catalog::ServerConfig,
        exclude: &[String],
        prev: Option<&Node>,
    ) -> Result<(Node, Vec<u8>)> {
        let prev_tree = match prev {
            Some(p) if !w.full => p.subtree.and_then(|id| w.load_tree(&id).ok()),
            _ => None,
        };
        let mut tree = Tree::default();
        let mut source = Vec::new();
        for m in server.members.iter().filter(|m| !exclude.contains(&m.name)) {
            let entry_name = servers::entry_name(m);
            let prev_node = prev_tree
                .as_ref()
                .and_then(|t| t.find(entry_name.as_bytes()));
            let node = if m.kind == MemberKind::Disk {
                w.disk(Path::new(&m.path), entry_name.into_bytes(), prev_node)?
            } else {
                w.resource_dir(&entry_name, &m.path, prev_node)?
            };
            tree.entries.push(node);
            for f in [
                m.kind.as_str().as_bytes(),
                m.name.as_bytes(),
                m.path.as_bytes(),
            ] {
                source.extend_from_slice(f);
                source.push(0);
            }
        }
        tree.entries.sort_by(|a, b| a.name.cmp(&b.name));
        // A server defined before member names were checked against each
        // other may still have two members with one entry name: such a
        // tree could never be read back, so the backup fails here instead.
        model::validate_tree(&tree).map_err(|e| {
            Error::conflict(format!(
                "server {}: its members cannot be backed up together ({e}); rename or remove one with 'cbrfs server update'",
                server.name
            ))
        })?;
        let root = w.store_tree(tree)?;
        let mut meta = Node::new(server.name.as_bytes().to_vec(), NodeKind::Dir);
        meta.mode = 0o755;
        meta.nlink = 2;
        meta.mtime_ns = catalog::now_ns();
        meta.ctime_ns = meta.mtime_ns;
        meta.subtree = Some(root);
        Ok((meta, source))
    }
}

/// Members of a server backup from its record's `source` field:
/// `(kind, name, path)`.
pub fn server_members(source: &[u8]) -> Vec<(String, String, String)> {
    let fields: Vec<String> = source
        .split(|b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).to_string())
        .collect();
    fields
        .chunks_exact(3)
        .map(|c| (c[0].clone(), c[1].clone(), c[2].clone()))
        .collect()
}
