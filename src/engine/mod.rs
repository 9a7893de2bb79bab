//! The engine: backup, restore, check and vault operations. No FUSE and no
//! clap here; the CLI and the mount call into it.

pub mod backup;
pub mod backups;
pub mod browse;
pub mod check;
pub mod keys;
pub mod luks;
pub mod metrics;
pub mod policy;
pub mod progress;
pub mod prune;
pub mod reader;
pub mod restore;
pub mod scheduler;
pub mod servers;
pub mod sizes;
pub mod status;
pub mod vaults;
pub mod visit;
