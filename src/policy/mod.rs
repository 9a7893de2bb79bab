//! Backup policies as pure rules: when a policy runs ([`schedule`], with its
//! rules' parse in `rule.rs` and time zones in `zone.rs`) and which backups
//! it keeps ([`retention`]). No I/O and no clock here; the engine
//! (`crate::engine::policy`) reads the catalog and the time and applies them.

pub mod retention;
mod rule;
pub mod schedule;
mod zone;
