//! `cbrfs task`: the task log.

use super::print_json;
use crate::catalog::Store;
use crate::error::Result;
use crate::quote::quote;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(super) enum TaskCmd {
    /// List tasks of the last 30 days, newest first.
    List {
        /// Only this vault.
        #[arg(long)]
        vault: Option<String>,
        /// Only this type: backup, restore, delete_backup, prune, delete_vault,
        /// remove_resource, retention, capacity.
        #[arg(long = "type", value_name = "TYPE")]
        task_type: Option<String>,
        /// Only this status: running, success, failed, skipped.
        #[arg(long)]
        status: Option<String>,
        /// Only tasks started at or after this time (RFC 3339 or a date).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one task.
    Show {
        /// The task id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn task_cmd(store: &Store, cmd: TaskCmd) -> Result<i32> {
    use crate::tasks;
    match cmd {
        TaskCmd::List {
            vault,
            task_type,
            status,
            since,
            json,
        } => {
            let mut filter = tasks::Filter::new(vault, task_type, status)?;
            filter.since_ns = since
                .as_deref()
                .map(crate::engine::policy::parse_instant)
                .transpose()?;
            let all = tasks::query(store, &filter)?;
            if json {
                print_json(&all)?;
            } else {
                println!(
                    "{:<28} {:<15} {:<16} {:<22} {:<8} {:>4}  {:<20} MESSAGE",
                    "ID", "TYPE", "VAULT", "BACKUP", "STATUS", "%", "STARTED"
                );
                for t in &all {
                    println!(
                        "{:<28} {:<15} {:<16} {:<22} {:<8} {:>4}  {:<20} {}",
                        // Task files are store input: quote what they say.
                        quote(&t.id),
                        t.task_type.as_str(),
                        quote(&t.vault),
                        quote(t.backup.as_deref().or(t.resource.as_deref()).unwrap_or("-")),
                        t.status.as_str(),
                        t.progress,
                        quote(&t.started),
                        quote(t.message.as_deref().unwrap_or(""))
                    );
                }
            }
        }
        TaskCmd::Show { id, json } => {
            let t = tasks::get(store, &id)?;
            if json {
                print_json(&t)?;
            } else {
                println!("task:     {}", quote(&t.id));
                println!("type:     {}", t.task_type);
                println!("vault:    {}", quote(&t.vault));
                println!("resource: {}", quote(t.resource.as_deref().unwrap_or("-")));
                println!("backup:   {}", quote(t.backup.as_deref().unwrap_or("-")));
                println!("status:   {} ({}%)", t.status, t.progress);
                println!("started:  {}", quote(&t.started));
                println!("ended:    {}", quote(t.ended.as_deref().unwrap_or("-")));
                if let Some(c) = &t.error_code {
                    println!("code:     {}", quote(c));
                }
                if let Some(m) = &t.message {
                    println!("message:  {}", quote(m));
                }
            }
        }
    }
    Ok(0)
}
