//! `cbrfs vault`: create, list, show, update and delete vaults; associate
//! and dissociate resources.

use super::print_json;
use crate::catalog::{Store, VaultType};
use crate::engine::vaults;
use crate::error::Result;
use crate::quote::quote;
use crate::rules::{self, human_bytes};
use crate::store::RemoteConfig;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub(super) enum VaultCmd {
    /// Create a vault.
    Create {
        /// Vault name, 1-64 of [A-Za-z0-9_-] [default: vault_XXXX]
        name: Option<String>,
        /// What the vault protects.
        #[arg(long = "type", value_name = "filesystem|disk|server")]
        vault_type: String,
        /// Capacity: 10GB to 10485760GB, like 100GB or 2TB (a bare number is GB).
        // Hyphen values reach the capacity rule, whose message says what a
        // capacity is, instead of clap's "unexpected argument '-5'".
        #[arg(long, allow_hyphen_values = true)]
        capacity: String,
        /// Description, at most 255 characters.
        #[arg(long, default_value = "")]
        description: String,
        /// A tag KEY=VALUE (up to 10).
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Blob compression.
        #[arg(long, default_value = "zstd", value_name = "zstd|none")]
        compression: String,
        /// Keep the vault in an S3 bucket (credentials from AWS_ACCESS_KEY_ID
        /// and AWS_SECRET_ACCESS_KEY); this store keeps a cache.
        #[arg(long, value_name = "s3://BUCKET[/PREFIX]")]
        storage: Option<String>,
        /// The S3 service's URL [default: AWS_ENDPOINT_URL, else AWS].
        #[arg(long, value_name = "URL", requires = "storage")]
        s3_endpoint: Option<String>,
        /// Bound of this host's cache of data read from the bucket.
        #[arg(long, value_name = "SIZE", requires = "storage")]
        cache_size: Option<String>,
        /// Encrypt the vault (chosen now, never changed): the password
        /// comes from --password-file, $CBRFS_PASSWORD or the terminal;
        /// with --key-file the first key slot is that key file's instead.
        /// A vault with --storage is encrypted unless --no-encrypt.
        #[arg(long)]
        encrypt: bool,
        /// Keep a vault with --storage unencrypted: whoever runs the
        /// bucket can then read its backups (a warning says so).
        #[arg(long, conflicts_with = "encrypt")]
        no_encrypt: bool,
    },
    /// Register a vault kept in an S3 bucket in this store and build its
    /// cache from the bucket alone: a new host reaches the backups of one
    /// that is gone.
    Attach {
        /// Where the vault is.
        #[arg(value_name = "s3://BUCKET[/PREFIX]")]
        storage: String,
        /// The S3 service's URL [default: AWS_ENDPOINT_URL, else AWS].
        #[arg(long, value_name = "URL")]
        s3_endpoint: Option<String>,
        /// The vault's name here [default: its name in the bucket].
        #[arg(long)]
        name: Option<String>,
        /// Bound of this host's cache of data read from the bucket.
        #[arg(long, value_name = "SIZE")]
        cache_size: Option<String>,
    },
    /// List vaults.
    List {
        /// Only vaults with this tag (KEY=VALUE, or KEY for any value).
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one vault.
    Show {
        /// The vault.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a vault's capacity (expand only), description or tags.
    Update {
        /// The vault.
        name: String,
        /// New capacity (larger than the current one).
        #[arg(long, allow_hyphen_values = true)]
        capacity: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
        /// Set a tag KEY=VALUE.
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Remove a tag.
        #[arg(long = "untag", value_name = "KEY")]
        untag: Vec<String>,
        /// Grow the capacity to 1.25x when the vault is full.
        #[arg(long, conflicts_with = "no_auto_expand")]
        auto_expand: bool,
        /// Stop growing the capacity automatically.
        #[arg(long)]
        no_auto_expand: bool,
        /// Usage (1-100 %) past which a warning and a task are recorded.
        #[arg(long, value_name = "PERCENT")]
        threshold: Option<u8>,
    },
    /// Key slots of an encrypted vault: add, list, remove passwords.
    #[command(subcommand)]
    Key(super::keys::KeyCmd),
    /// Delete a vault with all its backups.
    Delete {
        /// The vault.
        name: String,
        /// Also when it holds backups.
        #[arg(long)]
        force: bool,
    },
    /// Associate a resource with a vault: a directory, a disk or a server.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["path", "disk", "server"])))]
    Associate {
        /// The vault.
        vault: String,
        /// A directory tree (filesystem vaults).
        #[arg(long)]
        path: Option<PathBuf>,
        /// A block device or raw disk image (disk vaults).
        #[arg(long)]
        disk: Option<PathBuf>,
        /// A server defined with 'cbrfs server define' (server vaults).
        #[arg(long)]
        server: Option<String>,
        /// Leave this member of the server out (repeatable).
        #[arg(long = "exclude-member", value_name = "MEMBER", requires = "server")]
        exclude_members: Vec<String>,
        /// Resource name [default: the directory's name].
        #[arg(long)]
        name: Option<String>,
        /// Leave out entries matching a glob (a name, or a path relative to
        /// the resource when it has a '/').
        #[arg(long = "exclude", value_name = "GLOB", requires = "path")]
        excludes: Vec<String>,
        /// Stay on the directory's file system (each directory member's,
        /// for a server): a mount inside it is kept as an empty directory.
        #[arg(long = "one-file-system", conflicts_with = "disk")]
        one_file_system: bool,
        /// Read exclude globs from FILE, one a line ('#' starts a comment);
        /// they are stored with the resource (repeatable).
        #[arg(long = "exclude-file", value_name = "FILE", requires = "path")]
        exclude_files: Vec<PathBuf>,
        /// Leave out the contents of directories holding a CACHEDIR.TAG
        /// with the standard signature (the tag itself is kept).
        #[arg(long = "exclude-caches", requires = "path")]
        exclude_caches: bool,
        /// Leave out the contents of directories holding an entry named
        /// NAME (the entry itself is kept; repeatable).
        #[arg(long = "exclude-if-present", value_name = "NAME", requires = "path")]
        exclude_if_present: Vec<String>,
    },
    /// Dissociate a resource; its backups in the vault are deleted, as in CBR.
    Dissociate {
        /// The vault.
        vault: String,
        /// The resource.
        resource: String,
        /// Also when backups hold it (its part of them is deleted).
        #[arg(long)]
        force: bool,
    },
}

/// Whether `vault create` encrypts: remote vaults (`--storage`) unless
/// `--no-encrypt`, since the bucket is run by someone else; local vaults
/// only with `--encrypt` (issue 15). clap refuses both flags together.
pub(super) fn encrypts(encrypt: bool, no_encrypt: bool, remote: bool) -> bool {
    encrypt || (remote && !no_encrypt)
}

impl VaultCmd {
    /// Whether the command creates a missing store (`vault create`, and
    /// `vault attach`, which is how a new host starts), its settings
    /// checked first: a refused command leaves no store behind.
    pub(super) fn creates_store(&self) -> Result<bool> {
        match self {
            VaultCmd::Create { .. } => {
                if let Some((new, _)) = self.new_vault()? {
                    vaults::prepare(new)?;
                }
                Ok(true)
            }
            VaultCmd::Attach {
                storage,
                s3_endpoint,
                cache_size,
                ..
            } => {
                RemoteConfig::from_args(storage, s3_endpoint.as_deref(), cache_size.as_deref())?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// `vault create`'s arguments as the engine takes them: the new vault,
    /// and the bucket that keeps it (None: this store). The one place they
    /// are read, for the check before the store exists and for the
    /// creation; None for any other command.
    fn new_vault(&self) -> Result<Option<(vaults::NewVault, Option<RemoteConfig>)>> {
        let VaultCmd::Create {
            name,
            vault_type,
            capacity,
            description,
            tags,
            compression,
            storage,
            s3_endpoint,
            cache_size,
            encrypt,
            no_encrypt,
        } = self
        else {
            return Ok(None);
        };
        // The location is checked first, then the settings in their
        // order: the first error a user sees is the same whichever check
        // runs.
        let remote = storage
            .as_deref()
            .map(|url| RemoteConfig::from_args(url, s3_endpoint.as_deref(), cache_size.as_deref()))
            .transpose()?;
        let new = vaults::NewVault {
            name: name.clone(),
            vault_type: VaultType::parse(vault_type)?,
            capacity: capacity.clone(),
            description: description.clone(),
            tags: tags.clone(),
            compression: compression.clone(),
            encrypt: encrypts(*encrypt, *no_encrypt, storage.is_some()),
        };
        Ok(Some((new, remote)))
    }
}

pub(super) fn vault_cmd(store: &Store, cmd: VaultCmd) -> Result<i32> {
    match cmd {
        VaultCmd::Create { .. } => {
            let Some((new, remote)) = cmd.new_vault()? else {
                return Ok(0);
            };
            let v = match remote {
                None => vaults::create(store, new)?,
                Some(r) => vaults::create_remote(store, new, r)?,
            };
            if let (Some(r), false) = (&v.storage, v.encrypted) {
                eprintln!(
                    "cbrfs: warning: vault {} is not encrypted (--no-encrypt): whoever runs or \
                     can read the bucket {} can read its backups, their file names and paths",
                    v.name,
                    quote(&r.url())
                );
            }
            println!(
                "created vault {} ({}, {} GB{})",
                v.name,
                v.vault_type.as_str(),
                v.capacity_gb,
                if v.encrypted { ", encrypted" } else { "" }
            );
        }
        VaultCmd::Attach {
            storage,
            s3_endpoint,
            name,
            cache_size,
        } => {
            let r =
                RemoteConfig::from_args(&storage, s3_endpoint.as_deref(), cache_size.as_deref())?;
            let v = store.attach_vault(&r, name.as_deref())?;
            let n = store.backup_names(&v.name)?.len();
            println!(
                "attached vault {} ({}, {} GB) from {}: {}",
                v.name,
                v.vault_type.as_str(),
                v.capacity_gb,
                r.url(),
                rules::count(n as u64, "backup", "backups")
            );
        }
        VaultCmd::List { tags, json } => {
            let l = vaults::list(store, &tags)?;
            for e in &l.damaged {
                eprintln!("cbrfs: error: {}", quote(&e.to_string()));
            }
            if json {
                print_json(&l.vaults)?;
            } else {
                println!(
                    "{:<24} {:<10} {:>10} {:>10} {:>9} {:>7}  TAGS",
                    "NAME", "TYPE", "CAPACITY", "USED", "RESOURCES", "BACKUPS"
                );
                for v in &l.vaults {
                    // A locked vault's resources and tags are sealed:
                    // unknown, not none.
                    let (resources, tags) = match &v.locked {
                        Some(_) => ("-".to_string(), "(locked)".to_string()),
                        None => (
                            v.resources.len().to_string(),
                            quote(
                                &v.tags
                                    .iter()
                                    .map(|t| format!("{}={}", t.key, t.value))
                                    .collect::<Vec<_>>()
                                    .join(","),
                            )
                            .into_owned(),
                        ),
                    };
                    println!(
                        "{:<24} {:<10} {:>10} {:>10} {:>9} {:>7}  {}",
                        v.name,
                        v.vault_type,
                        human_bytes(v.capacity_bytes()),
                        human_bytes(v.used_bytes),
                        resources,
                        v.backups,
                        tags
                    );
                }
            }
            if !l.damaged.is_empty() {
                return Ok(1);
            }
        }
        VaultCmd::Key(k) => return super::keys::key_cmd(store, k),
        VaultCmd::Show { name, json } => {
            let v = vaults::show(store, &name)?;
            if json {
                print_json(&v)?;
            } else {
                let used = v.used_bytes;
                let capacity = v.capacity_bytes();
                println!("vault:       {}", v.name);
                println!("type:        {}", v.vault_type);
                // One unit for capacity, use and free: a capacity of 10 GB
                // is 10 × 2^30 bytes (rules::GB).
                println!("capacity:    {}", human_bytes(capacity));
                println!(
                    "used:        {} ({:.2}%)",
                    human_bytes(used),
                    used as f64 * 100.0 / capacity.max(1) as f64
                );
                println!(
                    "free:        {}",
                    human_bytes(capacity.saturating_sub(used))
                );
                // vault.json is store input: quote what it says.
                println!("description: {}", quote(&v.description));
                println!("compression: {}", v.compression);
                if let Some(r) = &v.storage {
                    // vault.json is store input: quoted.
                    println!(
                        "storage:     {} at {} (cache {})",
                        quote(&r.url),
                        quote(&r.endpoint),
                        human_bytes(r.cache_bytes)
                    );
                }
                println!("encrypted:   {}", if v.encrypted { "yes" } else { "no" });
                println!("created:     {}", v.created);
                println!("backups:     {}", v.backups);
                let tags: Vec<String> = v
                    .tags
                    .iter()
                    .map(|t| format!("{}={}", t.key, t.value))
                    .collect();
                println!("tags:        {}", quote(&tags.join(", ")));
                println!(
                    "auto-expand: {}; usage threshold {}%",
                    if v.auto_expand { "on" } else { "off" },
                    v.threshold_percent
                );
                println!("policy:      {}", v.policy.as_deref().unwrap_or("-"));
                let alone =
                    crate::engine::prune::exclusive_bytes(store, &v.name).unwrap_or_default();
                if !alone.is_empty() {
                    println!(
                        "backups (bytes each alone holds, freed if it is deleted and pruned):"
                    );
                    for (b, n) in &alone {
                        println!("  {b:<30} {}", human_bytes(*n));
                    }
                }
                println!("resources:");
                for r in &v.resources {
                    println!(
                        "  {:<20} {:<10} {} ({}){}{}{}{}",
                        quote(&r.name),
                        r.kind.as_str(),
                        quote(&r.path),
                        human_bytes(r.size_bytes),
                        if r.excludes.is_empty() {
                            String::new()
                        } else {
                            format!(" excluding {}", quote(&r.excludes.join(" ")))
                        },
                        if r.one_file_system {
                            ", one file system"
                        } else {
                            ""
                        },
                        if r.exclude_caches {
                            ", caches excluded"
                        } else {
                            ""
                        },
                        if r.exclude_if_present.is_empty() {
                            String::new()
                        } else {
                            format!(
                                ", excluding directories holding {}",
                                quote(&r.exclude_if_present.join(" "))
                            )
                        }
                    );
                    if r.encrypted_at_source {
                        println!("    encrypted at the source (LUKS)");
                    }
                }
            }
        }
        VaultCmd::Update {
            name,
            capacity,
            description,
            tags,
            untag,
            auto_expand,
            no_auto_expand,
            threshold,
        } => {
            let v = vaults::update(
                store,
                &name,
                vaults::VaultUpdate {
                    capacity,
                    description,
                    tags,
                    untag,
                    auto_expand: match (auto_expand, no_auto_expand) {
                        (true, _) => Some(true),
                        (_, true) => Some(false),
                        _ => None,
                    },
                    threshold,
                },
            )?;
            println!("updated vault {} ({} GB)", v.name, v.capacity_gb);
        }
        VaultCmd::Delete { name, force: _ } if store.registration(&name)?.is_some() => {
            // A remote vault's backups are in its bucket, which other
            // hosts may use: only this store's registration and cache go.
            let url = store
                .registration(&name)?
                .map(|r| r.url())
                .unwrap_or_default();
            store.vault_settings(&name)?;
            store.delete_vault(&name)?;
            println!(
                "removed vault {name} from this store; its backups stay in {}",
                quote(&url)
            );
        }
        VaultCmd::Delete { name, force } => {
            let n = vaults::delete(store, &name, force)?;
            println!(
                "deleted vault {name} and its {}",
                rules::count(n as u64, "backup", "backups")
            );
        }
        VaultCmd::Associate {
            vault,
            path,
            disk,
            server,
            exclude_members,
            name,
            excludes,
            one_file_system,
            exclude_files,
            exclude_caches,
            exclude_if_present,
        } => {
            let r = vaults::associate(
                store,
                &vault,
                vaults::Associate {
                    path,
                    disk,
                    server,
                    exclude_members,
                    name,
                    excludes,
                    exclude_files,
                    one_file_system,
                    exclude_caches,
                    exclude_if_present,
                },
            )?;
            println!(
                "associated {} with vault {vault} as resource {} ({})",
                r.path,
                r.name,
                human_bytes(r.size)
            );
        }
        VaultCmd::Dissociate {
            vault,
            resource,
            force,
        } => {
            let deleted = vaults::dissociate(store, &vault, &resource, force)?;
            println!(
                "dissociated resource {resource} from vault {vault}; deleted {} that held only it",
                rules::count(deleted.len() as u64, "backup", "backups")
            );
        }
    }
    Ok(0)
}
