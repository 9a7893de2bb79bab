//! `cbrfs policy`: backup policies (schedules and retention) and the
//! scheduler pass `run-due`.

use super::print_json;
use crate::catalog::{self, Store};
use crate::error::Result;
use crate::rules::human_bytes;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub(super) enum PolicyCmd {
    /// Create a policy.
    #[command(group(clap::ArgGroup::new("keep").required(true).args(["keep_last", "keep_days", "keep_forever"])))]
    Create {
        /// Policy name, 1-64 of [A-Za-z0-9_-] [default: policy_XXXX].
        name: Option<String>,
        #[command(flatten)]
        spec: PolicyArgs,
    },
    /// List policies.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one policy with its next time points.
    Show {
        /// The policy.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a policy (options as for create; those given replace).
    Update {
        /// The policy.
        name: String,
        #[command(flatten)]
        spec: PolicyArgs,
        /// Enable automatic backups.
        #[arg(long, conflicts_with = "disabled")]
        enable: bool,
    },
    /// Delete a policy (the backups it made are kept).
    Delete {
        /// The policy.
        name: String,
    },
    /// Apply a policy to a vault (one policy per vault).
    Apply {
        /// The policy.
        policy: String,
        /// The vault.
        vault: String,
    },
    /// Remove a vault's policy.
    Remove {
        /// The vault.
        vault: String,
    },
    /// Run one scheduler pass: back up vaults whose time came, expire old
    /// automatic backups, prune (for cron or a systemd timer).
    RunDue {
        /// Rehearse the pass as of this instant (RFC 3339, e.g.
        /// 2027-01-01T22:00:00Z): it really backs up, dated then. A pass
        /// later than the clock keeps its own scheduler state, and neither
        /// moves `latest` nor expires task records (they count by the clock).
        #[arg(long, value_name = "TIMESTAMP")]
        now: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Default)]
pub(super) struct PolicyArgs {
    /// An RRULE: FREQ=DAILY|WEEKLY;BYDAY=MO,..;BYHOUR=..;BYMINUTE=..;INTERVAL=.. (repeatable).
    #[arg(long = "schedule", value_name = "RRULE")]
    schedules: Vec<String>,
    /// Keep the last N automatic backups (2-99999).
    #[arg(long, value_name = "N")]
    keep_last: Option<u64>,
    /// Keep automatic backups for N days (2-99999).
    #[arg(long, value_name = "N")]
    keep_days: Option<u64>,
    /// Keep automatic backups forever.
    #[arg(long)]
    keep_forever: bool,
    /// Also keep the newest backup of each of the last D days (0-100).
    #[arg(long, value_name = "D")]
    keep_daily: Option<u64>,
    /// ... of each of the last W weeks (0-100).
    #[arg(long, value_name = "W")]
    keep_weekly: Option<u64>,
    /// ... of each of the last M months (0-100).
    #[arg(long, value_name = "M")]
    keep_monthly: Option<u64>,
    /// ... of each of the last Y years (0-100).
    #[arg(long, value_name = "Y")]
    keep_yearly: Option<u64>,
    /// Time zone of the schedule and of the long-term rules: an IANA name
    /// like Europe/Berlin (daylight saving followed), or UTC, UTC+08:00,
    /// UTC-05:30 [default: UTC].
    #[arg(long, value_name = "TZ")]
    timezone: Option<String>,
    /// Force a full backup after N incremental ones (-1 never, 0 always).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    full_every: Option<i64>,
    /// No automatic backups until enabled.
    #[arg(long)]
    disabled: bool,
}

impl PolicyArgs {
    fn touches_retention(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_days.is_some()
            || self.keep_forever
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || self.timezone.is_some()
    }

    /// Retention from these flags over `base` (what a policy has now).
    fn retention(
        &self,
        base: &crate::policy::retention::RetentionArgs,
    ) -> crate::policy::retention::RetentionArgs {
        let mut r = base.clone();
        if self.keep_last.is_some() || self.keep_days.is_some() || self.keep_forever {
            r.keep_last = self.keep_last;
            r.keep_days = self.keep_days;
            r.keep_forever = self.keep_forever;
        }
        for (flag, slot) in [
            (self.keep_daily, &mut r.keep_daily),
            (self.keep_weekly, &mut r.keep_weekly),
            (self.keep_monthly, &mut r.keep_monthly),
            (self.keep_yearly, &mut r.keep_yearly),
        ] {
            if flag.is_some() {
                *slot = flag;
            }
        }
        if self.timezone.is_some() {
            r.timezone = self.timezone.clone();
        }
        r
    }
}

pub(super) fn policy_cmd(store: &Store, cmd: PolicyCmd) -> Result<i32> {
    use crate::engine::policy;
    match cmd {
        PolicyCmd::Create { name, spec } => {
            let p = policy::create(
                store,
                name,
                policy::PolicySpec {
                    schedules: spec.schedules.clone(),
                    retention: spec.retention(&Default::default()),
                    full_every: spec.full_every,
                    disabled: spec.disabled,
                },
            )?;
            let r = crate::policy::retention::Retention::new(&p.retention)?;
            println!(
                "created policy {} ({}; {})",
                p.name,
                p.schedules.join(" + "),
                r
            );
        }
        PolicyCmd::List { json } => {
            let all = policy::list(store)?;
            if json {
                print_json(&all)?;
            } else {
                println!(
                    "{:<20} {:<8} {:<20} {:<25} SCHEDULES",
                    "NAME", "ENABLED", "VAULTS", "NEXT"
                );
                for p in &all {
                    println!(
                        "{:<20} {:<8} {:<20} {:<25} {}",
                        p.name,
                        if p.enabled { "yes" } else { "no" },
                        p.vaults.join(","),
                        p.next_local.first().map(String::as_str).unwrap_or("-"),
                        p.schedules.join(" + ")
                    );
                }
            }
        }
        PolicyCmd::Show { name, json } => {
            let p = policy::show(store, &name)?;
            if json {
                print_json(&p)?;
            } else {
                let r = crate::policy::retention::Retention::new(&p.retention)?;
                println!("policy:     {}", p.name);
                println!("enabled:    {}", if p.enabled { "yes" } else { "no" });
                println!("schedules:  {}", p.schedules.join(" + "));
                println!("retention:  {r}");
                println!(
                    "full every: {}",
                    if p.full_every < 0 {
                        "never".to_string()
                    } else {
                        format!("{} incrementals", p.full_every)
                    }
                );
                println!("vaults:     {}", p.vaults.join(", "));
                // In the policy's zone, which the schedule's hours are in.
                println!("next runs ({}):", p.timezone.as_deref().unwrap_or("UTC"));
                for n in &p.next_local {
                    println!("  {n}");
                }
            }
        }
        PolicyCmd::Update { name, spec, enable } => {
            let current = store.policy(&name)?;
            let p = policy::update(
                store,
                &name,
                policy::PolicyUpdate {
                    schedules: (!spec.schedules.is_empty()).then(|| spec.schedules.clone()),
                    retention: spec
                        .touches_retention()
                        .then(|| spec.retention(&current.retention)),
                    full_every: spec.full_every,
                    enabled: match (enable, spec.disabled) {
                        (true, _) => Some(true),
                        (_, true) => Some(false),
                        _ => None,
                    },
                },
            )?;
            println!("updated policy {}", p.name);
        }
        PolicyCmd::Delete { name } => {
            let vaults = policy::delete(store, &name)?;
            println!(
                "deleted policy {name}; its backups are kept{}",
                if vaults.is_empty() {
                    String::new()
                } else {
                    format!("; removed from {}", vaults.join(", "))
                }
            );
        }
        PolicyCmd::Apply { policy: p, vault } => {
            policy::apply(store, &p, &vault)?;
            println!("applied policy {p} to vault {vault}");
        }
        PolicyCmd::Remove { vault } => {
            let p = policy::remove(store, &vault)?;
            println!("removed policy {p} from vault {vault}");
        }
        PolicyCmd::RunDue { now, json } => {
            let now_ns = match now {
                Some(t) => policy::parse_instant(&t)?,
                None => catalog::now_ns(),
            };
            let reports = policy::run_due(store, now_ns)?;
            if json {
                print_json(&reports)?;
            } else if reports.is_empty() {
                println!("nothing due at {}", catalog::ns_to_rfc3339(now_ns));
            } else {
                for r in &reports {
                    println!(
                        "vault {} (policy {}, {}): {}",
                        r.vault, r.policy, r.point, r.outcome
                    );
                    if !r.expired.is_empty() {
                        println!(
                            "  expired {}; freed {}",
                            r.expired.join(", "),
                            human_bytes(r.freed)
                        );
                    }
                }
            }
            if reports.iter().any(|r| r.outcome.starts_with("failed")) {
                return Ok(1);
            }
        }
    }
    Ok(0)
}
