//! `cbrfs server`: define, list, show, update and delete servers.

use super::print_json;
use crate::catalog::Store;
use crate::error::Result;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub(super) enum ServerCmd {
    /// Define a server from its members.
    #[command(group(clap::ArgGroup::new("members").required(true).multiple(true).args(["paths", "disks"])))]
    Define {
        /// Server name, 1-64 of [A-Za-z0-9_-].
        name: String,
        /// A directory member (repeatable).
        #[arg(long = "path", value_name = "DIR")]
        paths: Vec<PathBuf>,
        /// A disk member: block device or disk image (repeatable).
        #[arg(long = "disk", value_name = "PATH")]
        disks: Vec<PathBuf>,
        /// Shell command run before any member is read (freeze, dump).
        #[arg(long, value_name = "CMD")]
        pre_hook: Option<String>,
        /// Shell command run after the backup, also when it failed (thaw).
        #[arg(long, value_name = "CMD")]
        post_hook: Option<String>,
        /// Time limit of each hook.
        #[arg(long, value_name = "SECONDS")]
        hook_timeout: Option<u64>,
    },
    /// List servers.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one server.
    Show {
        /// The server.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add or remove members, change hooks.
    Update {
        /// The server.
        name: String,
        /// Add a directory member.
        #[arg(long = "add-path", value_name = "DIR")]
        add_paths: Vec<PathBuf>,
        /// Add a disk member.
        #[arg(long = "add-disk", value_name = "PATH")]
        add_disks: Vec<PathBuf>,
        /// Remove a member by name.
        #[arg(long = "remove", value_name = "MEMBER")]
        remove: Vec<String>,
        /// New pre-hook ('' removes it).
        #[arg(long, value_name = "CMD")]
        pre_hook: Option<String>,
        /// New post-hook ('' removes it).
        #[arg(long, value_name = "CMD")]
        post_hook: Option<String>,
        /// New hook time limit.
        #[arg(long, value_name = "SECONDS")]
        hook_timeout: Option<u64>,
    },
    /// Delete a server that no vault protects.
    Delete {
        /// The server.
        name: String,
    },
}

pub(super) fn server_cmd(store: &Store, cmd: ServerCmd) -> Result<i32> {
    use crate::engine::servers::{self, NewMember};
    let members = |paths: Vec<PathBuf>, disks: Vec<PathBuf>| -> Vec<NewMember> {
        paths
            .into_iter()
            .map(NewMember::Path)
            .chain(disks.into_iter().map(NewMember::Disk))
            .collect()
    };
    match cmd {
        ServerCmd::Define {
            name,
            paths,
            disks,
            pre_hook,
            post_hook,
            hook_timeout,
        } => {
            let s = servers::define(
                store,
                &name,
                &members(paths, disks),
                pre_hook,
                post_hook,
                hook_timeout,
            )?;
            println!("defined server {} with {} members", s.name, s.members.len());
        }
        ServerCmd::List { json } => {
            let all = servers::list(store)?;
            if json {
                print_json(&all)?;
            } else {
                println!("{:<24} {:>7}  {:<20} HOOKS", "NAME", "MEMBERS", "VAULT");
                for s in &all {
                    println!(
                        "{:<24} {:>7}  {:<20} {}",
                        s.name,
                        s.members.len(),
                        s.vault.as_deref().unwrap_or("-"),
                        match (&s.pre_hook, &s.post_hook) {
                            (None, None) => "none",
                            (Some(_), None) => "pre",
                            (None, Some(_)) => "post",
                            _ => "pre, post",
                        }
                    );
                }
            }
        }
        ServerCmd::Show { name, json } => {
            let s = servers::show(store, &name)?;
            if json {
                print_json(&s)?;
            } else {
                println!("server:       {}", s.name);
                println!("vault:        {}", s.vault.as_deref().unwrap_or("-"));
                println!("pre-hook:     {}", s.pre_hook.as_deref().unwrap_or("-"));
                println!("post-hook:    {}", s.post_hook.as_deref().unwrap_or("-"));
                println!("hook timeout: {} s", s.hook_timeout_s);
                println!("members:");
                for m in &s.members {
                    println!("  {:<20} {:<10} {}", m.name, m.kind, m.path);
                }
            }
        }
        ServerCmd::Update {
            name,
            add_paths,
            add_disks,
            remove,
            pre_hook,
            post_hook,
            hook_timeout,
        } => {
            let s = servers::update(
                store,
                &name,
                servers::ServerUpdate {
                    add: members(add_paths, add_disks),
                    remove,
                    pre_hook,
                    post_hook,
                    hook_timeout_s: hook_timeout,
                },
            )?;
            println!("updated server {} ({} members)", s.name, s.members.len());
        }
        ServerCmd::Delete { name } => {
            servers::delete(store, &name)?;
            println!("deleted server {name}");
        }
    }
    Ok(0)
}
