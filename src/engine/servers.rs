//! Servers: named groups of members (directory trees and disks) backed up
//! together in one run, with hooks that make the backup application
//! consistent (freeze or dump before, thaw after).

use crate::catalog::{self, Member, MemberKind, ServerConfig, Store};
use crate::error::{Error, IoContext, Result};
use crate::model::ResourceKind;
use crate::rules;
use serde::Serialize;
use std::io::Read;
use std::time::{Duration, Instant};

/// Default time limit of a hook.
pub const HOOK_TIMEOUT_S: u64 = 600;

/// A server as `server list` and `server show` report it (docs/JSON.md).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ServerReport {
    /// Server name.
    pub name: String,
    /// Members, in the order given.
    pub members: Vec<MemberReport>,
    /// Hook run before any member is read.
    pub pre_hook: Option<String>,
    /// Hook run after the backup.
    pub post_hook: Option<String>,
    /// Time limit of each hook, seconds.
    pub hook_timeout_s: u64,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The vault protecting the server.
    pub vault: Option<String>,
}

/// A member of a server, as reported.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct MemberReport {
    /// Name, unique in the server.
    pub name: String,
    /// `directory` or `disk`.
    pub kind: String,
    /// Source path.
    pub path: String,
}

/// The report of a server, with the vault that protects it.
pub fn report(store: &Store, s: &ServerConfig) -> ServerReport {
    // A store whose vault records cannot be read shows no vault rather
    // than failing the listing; `check` names the damage.
    let vault = store
        .vault_of_path(crate::model::ResourceKind::Server, &s.name)
        .ok()
        .flatten()
        .map(|(v, _)| v);
    ServerReport {
        name: s.name.clone(),
        members: s
            .members
            .iter()
            .map(|m| MemberReport {
                name: m.name.clone(),
                kind: m.kind.to_string(),
                path: m.path.clone(),
            })
            .collect(),
        pre_hook: s.pre_hook.clone(),
        post_hook: s.post_hook.clone(),
        hook_timeout_s: s.hook_timeout_s,
        created: s.created.clone(),
        vault,
    }
}

/// Every server, by name.
pub fn list(store: &Store) -> Result<Vec<ServerReport>> {
    Ok(store.servers()?.iter().map(|s| report(store, s)).collect())
}

/// One server.
pub fn show(store: &Store, name: &str) -> Result<ServerReport> {
    Ok(report(store, &store.server(name)?))
}

/// A member to add: `--path DIR` or `--disk PATH`.
#[derive(Clone, Debug)]
pub enum NewMember {
    /// A directory tree.
    Path(std::path::PathBuf),
    /// A block device or disk image.
    Disk(std::path::PathBuf),
}

fn member(store: &Store, m: &NewMember) -> Result<Member> {
    let (p, kind) = match m {
        NewMember::Path(p) => (p, MemberKind::Directory),
        NewMember::Disk(p) => (p, MemberKind::Disk),
    };
    let abs = std::fs::canonicalize(p)
        .map_err(|e| Error::invalid(format!("server member {}: {e}", p.display())))?;
    let path = abs
        .to_str()
        .ok_or_else(|| {
            Error::invalid(format!(
                "server member {} is not valid UTF-8",
                abs.display()
            ))
        })?
        .to_string();
    if abs.starts_with(store.root()) {
        return Err(Error::invalid(format!(
            "server member {path} is inside the cbrfs store"
        )));
    }
    match kind {
        MemberKind::Directory if !abs.is_dir() => {
            return Err(Error::invalid(format!(
                "server member {path} (--path) is not a directory"
            )))
        }
        MemberKind::Disk => {
            crate::sys::device_size(&abs)
                .map_err(|e| Error::invalid(format!("server member {path} (--disk): {e}")))?;
        }
        _ => {}
    }
    let mut name = abs
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "root".into());
    // A disk shows as `<member>.img`: `vol.img` stays `vol.img`.
    if kind == MemberKind::Disk {
        if let Some(stem) = name.strip_suffix(".img").filter(|s| !s.is_empty()) {
            name = stem.to_string();
        }
    }
    // Members are named after their file name (`vol.img`, `etc`), which is
    // what the mount and a restore show: a file-name rule, not CBR's.
    if !crate::model::is_safe_name(name.as_bytes()) || name.len() > 255 {
        return Err(Error::param(format!(
            "server member {path}: its name {name:?} cannot be a file name"
        )));
    }
    Ok(Member { name, kind, path })
}

/// The name a member has in its server's backup tree (and so in the mount
/// and in a restore): a disk is `<name>.img`.
pub fn entry_name(m: &Member) -> String {
    if m.kind == MemberKind::Disk {
        format!("{}.img", m.name)
    } else {
        m.name.clone()
    }
}

fn check_members(name: &str, members: &[Member]) -> Result<()> {
    if members.is_empty() {
        return Err(Error::param(format!(
            "server {name} has no members: give at least one --path or --disk"
        ))
        .code("BackupService.7108"));
    }
    for (i, m) in members.iter().enumerate() {
        if members[..i].iter().any(|o| o.name == m.name) {
            return Err(Error::conflict(format!(
                "server {name}: two members are named {:?} (members are named after their last path component)",
                m.name
            ))
            .code("BackupService.6104"));
        }
        // A disk member shows as `<name>.img` in the backup's tree: a
        // directory member of that name would be a second entry of the same
        // name, a tree that no command can read.
        if let Some(o) = members[..i].iter().find(|o| entry_name(o) == entry_name(m)) {
            return Err(Error::conflict(format!(
                "server {name}: members {} ({}) and {} ({}) would both show as {:?}",
                o.path,
                o.kind,
                m.path,
                m.kind,
                entry_name(m)
            ))
            .code("BackupService.6104"));
        }
        if members[..i].iter().any(|o| o.path == m.path) {
            return Err(
                Error::conflict(format!("server {name}: {} is given twice", m.path))
                    .code("BackupService.6104"),
            );
        }
    }
    Ok(())
}

/// Define a server.
pub fn define(
    store: &Store,
    name: &str,
    members: &[NewMember],
    pre_hook: Option<String>,
    post_hook: Option<String>,
    hook_timeout_s: Option<u64>,
) -> Result<ServerConfig> {
    rules::check_name("server name", name)?;
    let members = members
        .iter()
        .map(|m| member(store, m))
        .collect::<Result<Vec<_>>>()?;
    check_members(name, &members)?;
    let timeout = hook_timeout_s.unwrap_or(HOOK_TIMEOUT_S);
    if timeout == 0 || timeout > 86_400 {
        return Err(Error::param(format!(
            "hook timeout {timeout} s is out of range: 1 to 86400"
        )));
    }
    let _lock = store.lock()?;
    if store.server(name).is_ok() {
        return Err(Error::conflict(format!("server {name:?} already exists")));
    }
    let s = ServerConfig {
        format: catalog::CATALOG_FORMAT,
        name: name.to_string(),
        members,
        pre_hook: pre_hook.filter(|h| !h.is_empty()),
        post_hook: post_hook.filter(|h| !h.is_empty()),
        hook_timeout_s: timeout,
        created: catalog::now_rfc3339(),
    };
    store.save_server(&s)?;
    Ok(s)
}

/// Changes to a server.
#[derive(Clone, Debug, Default)]
pub struct ServerUpdate {
    /// Members to add.
    pub add: Vec<NewMember>,
    /// Member names to remove.
    pub remove: Vec<String>,
    /// New pre-hook (empty string removes it).
    pub pre_hook: Option<String>,
    /// New post-hook (empty string removes it).
    pub post_hook: Option<String>,
    /// New hook time limit.
    pub hook_timeout_s: Option<u64>,
}

/// Update a server: a member added here is in the next backup of every
/// vault that protects the server.
pub fn update(store: &Store, name: &str, u: ServerUpdate) -> Result<ServerConfig> {
    let new: Vec<Member> = u
        .add
        .iter()
        .map(|m| member(store, m))
        .collect::<Result<_>>()?;
    let _lock = store.lock()?;
    let mut s = store.server(name)?;
    for r in &u.remove {
        if !s.members.iter().any(|m| &m.name == r) {
            return Err(Error::not_found(format!(
                "server {name} has no member {r:?}"
            )));
        }
        s.members.retain(|m| &m.name != r);
    }
    s.members.extend(new);
    check_members(name, &s.members)?;
    if let Some(h) = u.pre_hook {
        s.pre_hook = Some(h).filter(|h| !h.is_empty());
    }
    if let Some(h) = u.post_hook {
        s.post_hook = Some(h).filter(|h| !h.is_empty());
    }
    if let Some(t) = u.hook_timeout_s {
        if t == 0 || t > 86_400 {
            return Err(Error::param(format!(
                "hook timeout {t} s is out of range: 1 to 86400"
            )));
        }
        s.hook_timeout_s = t;
    }
    store.save_server(&s)?;
    Ok(s)
}

/// Delete a server that no vault protects.
pub fn delete(store: &Store, name: &str) -> Result<()> {
    let _lock = store.lock()?;
    store.server(name)?;
    if let Some((vault, _)) = store.vault_of_path(ResourceKind::Server, name)? {
        return Err(Error::conflict(format!(
            "server {name} is associated with vault {vault}: dissociate it first"
        )));
    }
    store.delete_server(name)
}

/// Run a hook with `sh -c`, its environment telling it what is happening,
/// under a time limit; its output (stdout and stderr, first 4 KiB) comes
/// back either way. On timeout its whole process group is killed.
pub fn run_hook(cmd: &str, timeout: Duration, env: &[(&str, String)]) -> Result<String> {
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().ctx(|| format!("run hook {cmd:?}"))?;
    // Read both pipes on threads so a chatty hook cannot block on a full pipe.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut b);
        }
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut b);
        }
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().ctx(|| format!("wait for hook {cmd:?}"))? {
            Some(st) => break Some(st),
            None if Instant::now() >= deadline => {
                // SAFETY: signalling the hook's own process group.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut output = t_out.join().unwrap_or_default();
    output.extend(t_err.join().unwrap_or_default());
    output.truncate(4096);
    let text = String::from_utf8_lossy(&output).trim().to_string();
    match status {
        Some(st) if st.success() => Ok(text),
        Some(st) => Err(Error::failed(format!(
            "hook {cmd:?} failed ({st}): {}",
            if text.is_empty() { "no output" } else { &text }
        ))),
        None => Err(Error::failed(format!(
            "hook {cmd:?} did not finish within {} s and was killed: {}",
            timeout.as_secs(),
            if text.is_empty() { "no output" } else { &text }
        ))),
    }
}
