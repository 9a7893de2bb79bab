//! A vault's capacity around a backup: auto-expand of a full vault (before
//! a backup starts and after one filled it) and the event recorded when
//! usage crosses the vault's threshold.

use super::Prepared;
use crate::catalog::{Store, VaultConfig};
use crate::error::Result;
use crate::rules;
use crate::tasks;

impl Prepared {
    /// After a backup: auto-expand a vault it filled, and record a crossing
    /// of the usage threshold.
    pub(super) fn after_capacity(&self, at: i64) {
        let vault = &self.vault.name;
        let Ok(used) = self.store.used_bytes(vault) else {
            return;
        };
        let cap = self.vault.capacity_bytes().max(1);
        if used >= cap && self.vault.auto_expand {
            if let Err(e) = expand(&self.store, vault, used, at) {
                log::warn!("vault {vault}: auto-expand failed: {e}");
            }
        }
        let cap = self
            .store
            .vault(vault)
            .map(|c| c.capacity_bytes())
            .unwrap_or(cap)
            .max(1);
        let before = (self.used_before as u128 * 100 / cap as u128) as u64;
        let after = (used as u128 * 100 / cap as u128) as u64;
        let t = self.vault.threshold as u64;
        if before < t && after >= t {
            let msg = format!(
                "vault {vault} usage is {after}% ({} of {} GB), past its {t}% threshold",
                rules::human_bytes(used),
                cap / rules::GB
            );
            capacity_event(&self.store, vault, msg, at);
        }
    }
}

/// Grow a full vault's capacity to 1.25× (auto-expand), recording it.
pub(super) fn expand(store: &Store, vault: &str, used: u64, at_ns: i64) -> Result<VaultConfig> {
    let _lock = store.lock()?;
    let mut cfg = store.vault(vault)?;
    let old = cfg.capacity_gb;
    let new = (old.saturating_mul(5).div_ceil(4)).clamp(old + 1, rules::CAPACITY_MAX_GB);
    if new <= old {
        return Ok(cfg);
    }
    cfg.capacity_gb = new;
    store.save_vault(&cfg)?;
    let msg = format!(
        "vault {vault} was full ({} used): capacity expanded from {old} GB to {new} GB",
        rules::human_bytes(used)
    );
    capacity_event(store, vault, msg, at_ns);
    Ok(cfg)
}

/// A threshold crossing or an automatic expansion of `vault`: logged as a
/// warning and recorded in the task log as a capacity task at `at_ns`.
fn capacity_event(store: &Store, vault: &str, msg: String, at_ns: i64) {
    log::warn!("{msg}");
    tasks::event(
        store,
        tasks::TaskType::Capacity,
        vault,
        tasks::TaskState::Success,
        msg,
        at_ns,
    );
}
