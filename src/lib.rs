//! cbrfs: Huawei Cloud Backup and Recovery (CBR) on one Linux host, as a
//! FUSE file system.
//!
//! Layers, bottom up: [`store`] (packs and indexes), [`chunker`], [`model`]
//! (serialized types), [`catalog`] (vaults and resources), [`engine`]
//! (backup, restore, check), and on top the CLI and the mount.

pub mod catalog;
pub mod chunker;
pub mod cli;
pub mod clock;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod fsutil;
pub mod fuse;
pub mod model;
pub mod mountinfo;
pub mod names;
pub mod policy;
pub mod quote;
pub mod rules;
pub mod store;
pub mod sys;
pub mod tasks;
#[cfg(test)]
mod testkit;
pub mod vfs;
