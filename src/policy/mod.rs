//! Backup policies as pure rules: when a policy runs ([`schedule`]) and which
//! backups it keeps ([`retention`]). No I/O and no clock here; the engine
//! (`crate::engine::policy`) reads the catalog and the time and applies them.

pub mod retention;
pub mod schedule;
