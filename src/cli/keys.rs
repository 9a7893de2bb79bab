//! `cbrfs vault key`: add, list and remove the passwords (key slots) of an
//! encrypted vault.

use super::print_json;
use crate::catalog::Store;
use crate::engine::keys;
use crate::error::Result;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub(super) enum KeyCmd {
    /// Add a password or a key file: the vault is opened with what opens
    /// it now (--key-file, --password-file, $CBRFS_PASSWORD or the
    /// terminal); the new password comes from --new-password-file or the
    /// terminal, a new key file from --new-key-file.
    Add {
        /// The vault.
        vault: String,
        /// Read the new password from the first line of FILE.
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        /// Add a key-file slot opened by the whole of FILE (32 bytes to 1
        /// MiB of random bytes, e.g. `head -c 64 /dev/urandom`): for
        /// scheduled and scripted commands (`--key-file FILE`), which then
        /// skip argon2id's time and 64 MiB.
        #[arg(long, value_name = "FILE", conflicts_with = "new_password_file")]
        new_key_file: Option<PathBuf>,
    },
    /// List the key slots (no password needed).
    List {
        /// The vault.
        vault: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a key slot; the last working one is never removed.
    Remove {
        /// The vault.
        vault: String,
        /// The slot's number, as `vault key list` shows it.
        slot: u32,
    },
}

pub(super) fn key_cmd(store: &Store, cmd: KeyCmd) -> Result<i32> {
    match cmd {
        KeyCmd::Add {
            vault,
            new_password_file,
            new_key_file,
        } => {
            let new = match &new_key_file {
                Some(f) => keys::NewSecret::KeyFile(f),
                None => keys::NewSecret::Password(new_password_file.as_deref()),
            };
            let n = keys::add(store, &vault, new)?;
            println!("added key slot {n} to vault {vault}");
        }
        KeyCmd::List { vault, json } => {
            let slots = keys::list(store, &vault)?;
            if json {
                print_json(&serde_json::json!({ "vault": vault, "slots": slots }))?;
            } else {
                println!("{:<5} {:<9} {:<24} STATE", "SLOT", "KDF", "PARAMETERS");
                for s in &slots {
                    let (kdf, params) = match &s.header {
                        Some(h) => (
                            match h.kdf {
                                crate::crypto::slot::Kdf::Argon2id => "argon2id",
                                crate::crypto::slot::Kdf::KeyFile => "key file",
                            },
                            h.params.map_or("-".to_string(), |p| {
                                format!("m={} KiB, t={}, p={}", p.m_kib, p.t, p.p)
                            }),
                        ),
                        None => ("-", "-".to_string()),
                    };
                    let state = s
                        .problem
                        .as_deref()
                        .map_or("ok".to_string(), |p| crate::quote::quote(p).into_owned());
                    println!("{:<5} {:<9} {:<24} {state}", s.number, kdf, params);
                }
            }
        }
        KeyCmd::Remove { vault, slot } => {
            keys::remove(store, &vault, slot)?;
            println!("removed key slot {slot} from vault {vault}");
        }
    }
    Ok(0)
}
