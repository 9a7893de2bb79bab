//! The `cbrfs` command line: parsing (clap), output (tables or `--json`),
//! and exit codes (0 ok, 1 operation failed, 2 bad usage or input).

use crate::catalog::{self, Store, VaultConfig, VaultType};
use crate::engine::{backup, browse, check, restore, vaults};
use crate::error::{Error, Result};
use crate::model::{BackupRecord, Origin};
use crate::quote::{quote, quote_bytes};
use crate::rules::{self, human_bytes};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Cloud Backup and Recovery for one Linux host, as a FUSE file system.
#[derive(Parser, Debug)]
#[command(name = "cbrfs", version, about, long_about = None)]
pub struct Cli {
    /// The store directory [default: $CBRFS_STORE, else /var/lib/cbrfs as
    /// root, else $XDG_DATA_HOME/cbrfs]
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, list, show, update and delete vaults; associate resources.
    #[command(subcommand)]
    Vault(VaultCmd),
    /// Take, list, show and delete backups.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// Define, list, show, update and delete servers (groups of directories
    /// and disks backed up together).
    #[command(subcommand)]
    Server(ServerCmd),
    /// Restore a backup into an empty or new directory.
    Restore(RestoreArgs),
    /// List a backup's tree without mounting it.
    Ls {
        /// The vault.
        vault: String,
        /// The backup ('latest': the newest).
        backup: String,
        /// What to list, as in the mount: <resource>/sub/dir [default: the
        /// backup's resources].
        path: Option<String>,
        /// Mode, owner, size and time, like 'ls -l'.
        #[arg(long, short = 'l')]
        long: bool,
        /// Everything below PATH as well.
        #[arg(long, short = 'R')]
        recursive: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// In which backups of a vault a file exists, with its size and time.
    Find {
        /// The vault.
        vault: String,
        /// A glob on the name (notes*.txt), or on the path when it has a
        /// '/' (home/*/notes.txt, relative to the resource or after its
        /// name as 'cbrfs ls' shows it).
        pattern: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What changed between two backups: added, removed, changed entries.
    Diff {
        /// The vault.
        vault: String,
        /// The older backup.
        from: String,
        /// The newer backup ('latest': the newest).
        to: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify the store: structure, and with --read-data every blob.
    Check(CheckArgs),
    /// Give back the space of deleted backups.
    Prune {
        /// Only this vault [default: every vault].
        vault: Option<String>,
        /// Say what would be freed, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Rewrite a pack when less than this share of it (%) is still used.
        #[arg(long, default_value_t = crate::engine::prune::REPACK_THRESHOLD, value_name = "PERCENT")]
        repack_threshold: u8,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Backup policies: schedules and retention applied to vaults.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// The task log: every backup, restore, delete and prune.
    #[command(subcommand)]
    Task(TaskCmd),
    /// Mount the store: every vault a directory, every backup a read-only
    /// tree; mkdir in a vault takes a backup.
    Mount {
        /// Where to mount.
        mountpoint: PathBuf,
        /// Stay attached (for systemd) instead of serving in the background.
        #[arg(long)]
        foreground: bool,
        /// Let other users read through the mount (their access is still
        /// checked against each file's permissions).
        #[arg(long)]
        allow_other: bool,
        /// Mount noexec: no program kept in a backup can be run from the
        /// mount (it is always nosuid and nodev).
        #[arg(long)]
        noexec: bool,
        /// How long a lookup inside a backup that mkdir started waits for it
        /// before failing with EAGAIN.
        #[arg(long, default_value = "5", value_name = "SECONDS")]
        wait_seconds: f64,
        /// Mount over a non-empty directory, hiding its files while mounted
        /// (refused without this).
        #[arg(long)]
        nonempty: bool,
    },
    /// Create an empty store (at --store, else the default); an existing
    /// store is left as it is.
    Init,
    /// Print Prometheus metrics (text format) for node_exporter's textfile
    /// collector: last successful backup of each resource, failures,
    /// capacity and use, last check.
    Metrics {
        /// Write to FILE atomically (a temporary file renamed into place,
        /// mode 0644) instead of stdout; name it *.prom for the collector.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print a shell completion script to stdout, e.g.
    /// `source <(cbrfs completions bash)`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages of cbrfs and of every subcommand into DIR
    /// (created if missing), as cbrfs.1, cbrfs-vault-create.1, ...
    Man {
        /// The directory, e.g. /usr/local/share/man/man1.
        dir: PathBuf,
    },
    /// Unmount a cbrfs mount (also a stale one whose daemon died).
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
        /// Detach now even if busy; the mount goes when its last user leaves.
        #[arg(long)]
        lazy: bool,
    },
}

#[derive(Subcommand, Debug)]
enum VaultCmd {
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

#[derive(Subcommand, Debug)]
enum BackupCmd {
    /// Back up every resource of a vault (or those named).
    Create {
        /// The vault.
        vault: String,
        /// Backup name [default: manualbk_XXXX].
        #[arg(long)]
        name: Option<String>,
        /// Description, at most 255 characters.
        #[arg(long, default_value = "")]
        description: String,
        /// Read every file again (deduplication still applies).
        #[arg(long)]
        full: bool,
        /// Only this resource (repeatable).
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Say what would be read and added (new chunks hashed and
        /// compressed, then dropped) and write nothing to the store.
        #[arg(long)]
        dry_run: bool,
    },
    /// List backups.
    List {
        /// Only this vault.
        vault: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one backup.
    Show {
        /// The vault.
        vault: String,
        /// The backup.
        backup: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a backup (its space comes back with prune).
    Delete {
        /// The vault.
        vault: String,
        /// The backup.
        backup: String,
    },
    /// Wait until a running backup (e.g. one started by mkdir) is available.
    Wait {
        /// The vault.
        vault: String,
        /// The backup.
        backup: String,
        /// Give up after this many seconds (exit 1) [default: wait on].
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
    },
}

#[derive(Subcommand, Debug)]
enum ServerCmd {
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

#[derive(Args, Debug)]
struct RestoreArgs {
    /// The vault.
    vault: String,
    /// The backup.
    backup: String,
    /// Only this resource [default: all; several go to DIR/<resource>].
    #[arg(long)]
    resource: Option<String>,
    /// Target: an empty or new directory; for a disk, a new image file or
    /// a block device at least as large.
    #[arg(long, required_unless_present = "in_place")]
    to: Option<PathBuf>,
    /// Restore a disk or server onto its original disk and paths.
    #[arg(long)]
    in_place: bool,
    /// Restore into an existing directory that another user owns or that
    /// group or others may write (refused by default: whoever can rename
    /// entries there can race restore's chown and chmod).
    #[arg(long)]
    allow_untrusted_target: bool,
    /// Restore only what matches (repeatable): a path inside the backup
    /// (home/alice/notes.txt, relative to the resource or after its name as
    /// 'cbrfs ls' shows it) or a glob (*.txt on names, home/*/notes.txt on
    /// paths); parent directories are made with their recorded metadata.
    #[arg(long = "include", value_name = "PATH_OR_GLOB")]
    include: Vec<String>,
    /// Leave out what matches, and everything below it (repeatable).
    #[arg(long = "exclude", value_name = "GLOB")]
    exclude: Vec<String>,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Only this vault.
    vault: Option<String>,
    /// Also read and verify every blob.
    #[arg(long)]
    read_data: bool,
    /// Rebuild each vault's index from its packs (after an index was lost
    /// or damaged), then check.
    #[arg(long)]
    repair: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Parse the arguments, run the command, and return the exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    init_logging(&cli);
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cbrfs: error: {}", quote(&e.to_string()));
            e.exit_code()
        }
    }
}

/// Logs go to stderr (`RUST_LOG`, default warn), except in a mount daemon,
/// which has no terminal: there they go to `STORE/logs/mount.log` (default
/// info).
fn init_logging(cli: &Cli) {
    let daemon = matches!(cli.command, Command::Mount { .. }) && crate::fuse::is_daemon_child();
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(if daemon {
            "info"
        } else {
            "warn"
        }));
    // Log lines name files, vaults and backups from sources and stores
    // other users write: quote their control characters (issue #12,
    // finding 10); otherwise env_logger's own layout.
    b.format(|buf, record| {
        use std::io::Write;
        writeln!(
            buf,
            "[{} {:<5} {}] {}",
            buf.timestamp(),
            record.level(),
            record.target(),
            quote(&record.args().to_string())
        )
    });
    if daemon {
        let dir = cli
            .store
            .clone()
            .unwrap_or_else(catalog::default_store_path)
            .join("logs");
        let _ = crate::fsutil::create_dir_all(&dir);
        // The log names vaults, backups and paths: private like every
        // store file (0600), also when an older cbrfs created it 0644.
        if let Ok(f) = crate::fsutil::open_private_append(&dir.join("mount.log")) {
            b.target(env_logger::Target::Pipe(Box::new(f)));
        }
    }
    let _ = b.try_init();
}

/// Open the store the command names. Only commands that create something
/// (`init`, `vault create`) create a missing store; every other command
/// says there is none, and where the path came from when `--store` was
/// omitted, so that a mistyped path or an unset `$CBRFS_STORE` is seen
/// rather than silently given a new empty store (issue #16).
fn open_store(cli_store: &Option<PathBuf>, create: bool) -> Result<Store> {
    let p = cli_store
        .clone()
        .unwrap_or_else(catalog::default_store_path);
    if create {
        return Store::init(&p);
    }
    Store::open(&p).map_err(|e| {
        if cli_store.is_some() || e.kind() != crate::error::Kind::Invalid {
            return e;
        }
        let from = if std::env::var_os("CBRFS_STORE").is_some() {
            "$CBRFS_STORE"
        } else {
            "the default store, as --store and $CBRFS_STORE are not set"
        };
        Error::invalid(format!("{e}; {} is {from}", p.display()))
    })
}

fn dispatch(cli: Cli) -> Result<i32> {
    match &cli.command {
        // Unmounting needs no store: it must work on a stale mount whatever
        // --store says, and must not create one. Completions and man pages
        // describe the program, not a store: they work on a build host.
        Command::Umount { mountpoint, lazy } => {
            crate::fuse::umount(mountpoint, *lazy)?;
            println!("unmounted {}", mountpoint.display());
            return Ok(0);
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "cbrfs",
                &mut std::io::stdout(),
            );
            return Ok(0);
        }
        Command::Man { dir } => return man_cmd(dir),
        Command::Init => {
            let p = cli
                .store
                .clone()
                .unwrap_or_else(catalog::default_store_path);
            let existed = p.join("cbrfs-store.json").exists();
            let store = Store::init(&p)?;
            println!(
                "{} cbrfs store at {}",
                if existed { "existing" } else { "created" },
                quote(&store.root().display().to_string())
            );
            return Ok(0);
        }
        _ => {}
    }
    // `vault create` creates a missing store, once its settings are known
    // to be valid: a refused command leaves no store behind.
    let mut create = false;
    if let Command::Vault(VaultCmd::Create {
        name,
        vault_type,
        capacity,
        description,
        tags,
        compression,
    }) = &cli.command
    {
        vaults::prepare(vaults::NewVault {
            name: name.clone(),
            vault_type: VaultType::parse(vault_type)?,
            capacity: capacity.clone(),
            description: description.clone(),
            tags: tags.clone(),
            compression: compression.clone(),
        })?;
        create = true;
    }
    let store = open_store(&cli.store, create)?;
    match cli.command {
        Command::Vault(v) => vault_cmd(&store, v),
        Command::Backup(b) => backup_cmd(&store, b),
        Command::Server(c) => server_cmd(&store, c),
        Command::Policy(c) => policy_cmd(&store, c),
        Command::Task(c) => task_cmd(&store, c),
        Command::Prune {
            vault,
            dry_run,
            repack_threshold,
            json,
        } => prune_cmd(&store, vault, dry_run, repack_threshold, json),
        Command::Restore(r) => restore_cmd(&store, r),
        Command::Ls {
            vault,
            backup,
            path,
            long,
            recursive,
            json,
        } => ls_cmd(
            &store,
            &vault,
            &backup,
            path.as_deref(),
            long,
            recursive,
            json,
        ),
        Command::Find {
            vault,
            pattern,
            json,
        } => find_cmd(&store, &vault, &pattern, json),
        Command::Diff {
            vault,
            from,
            to,
            json,
        } => diff_cmd(&store, &vault, &from, &to, json),
        Command::Check(c) => check_cmd(&store, c),
        Command::Mount {
            mountpoint,
            foreground,
            allow_other,
            noexec,
            wait_seconds,
            nonempty,
        } => {
            if !(0.0..=3600.0).contains(&wait_seconds) {
                return Err(Error::invalid(format!(
                    "--wait-seconds {wait_seconds} is out of range: 0 to 3600"
                )));
            }
            crate::fuse::mount(
                &store,
                &mountpoint,
                &crate::fuse::MountOptions {
                    foreground,
                    allow_other,
                    noexec,
                    wait: Duration::from_secs_f64(wait_seconds),
                    nonempty,
                },
            )?;
            Ok(0)
        }
        Command::Metrics { output } => metrics_cmd(&store, output.as_deref()),
        // Handled above, before a store is opened.
        Command::Umount { .. }
        | Command::Init
        | Command::Completions { .. }
        | Command::Man { .. } => Ok(0),
    }
}

/// Write a man page for the command and each of its subcommands (the
/// hidden ones and `help` excepted) into `dir`.
fn man_cmd(dir: &std::path::Path) -> Result<i32> {
    fn pages(cmd: clap::Command, dir: &std::path::Path, n: &mut usize) -> Result<()> {
        for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
            pages(sub.clone(), dir, n)?;
        }
        // Subcommands have no version of their own: name the program's.
        let man = clap_mangen::Man::new(cmd)
            .source(format!("cbrfs {}", env!("CARGO_PKG_VERSION")))
            .manual("cbrfs manual");
        let mut page = Vec::new();
        man.render(&mut page)
            .map_err(|e| Error::io(format!("render man page {}", man.get_filename()), e))?;
        // Not clap_mangen's generate_to, which opens the final path and
        // follows a symlink there: a temporary file renamed into place.
        crate::fsutil::write_atomic_public(&dir.join(man.get_filename()), &page)?;
        *n += 1;
        Ok(())
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("create {}", quote(&dir.display().to_string())), e))?;
    let mut cmd = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    // build() gives each subcommand its full name (cbrfs-vault-create).
    cmd.build();
    let mut n = 0;
    pages(cmd, dir, &mut n)?;
    println!(
        "wrote {n} man pages to {}",
        quote(&dir.display().to_string())
    );
    Ok(0)
}

/// Print the metrics, or write them atomically to `output`.
fn metrics_cmd(store: &Store, output: Option<&std::path::Path>) -> Result<i32> {
    let text = crate::engine::metrics::render(&crate::engine::metrics::collect(store)?);
    match output {
        Some(f) => crate::fsutil::write_atomic_public(f, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(0)
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// The JSON form of a vault (documented in docs/JSON.md).
pub fn vault_json(store: &Store, v: &VaultConfig) -> serde_json::Value {
    let used = store
        .repo(&v.name)
        .and_then(|r| r.used_bytes())
        .unwrap_or(0);
    let backups = store.backup_names(&v.name).map(|b| b.len()).unwrap_or(0);
    json!({
        "name": v.name,
        "type": v.vault_type.as_str(),
        "capacity_gb": v.capacity_gb,
        "used_bytes": used,
        "description": v.description,
        "tags": v.tags.iter().map(|(k, val)| json!({"key": k, "value": val})).collect::<Vec<_>>(),
        "compression": v.compression,
        "created": v.created,
        "backups": backups,
        "free_bytes": v.capacity_bytes().saturating_sub(used),
        "policy": v.policy,
        "auto_expand": v.auto_expand,
        "threshold_percent": v.threshold,
        "resources": v.resources.iter().map(|r| json!({
            "name": r.name, "kind": r.kind, "path": r.path,
            "excludes": r.excludes, "size_bytes": r.size, "added": r.added,
            "one_file_system": r.one_file_system,
            "exclude_caches": r.exclude_caches,
            "exclude_if_present": r.exclude_if_present,
        })).collect::<Vec<_>>(),
    })
}

fn vault_matches(v: &VaultConfig, filters: &[(String, Option<String>)]) -> bool {
    filters.iter().all(|(k, val)| {
        v.tags
            .iter()
            .any(|(tk, tv)| tk == k && val.as_ref().is_none_or(|x| x == tv))
    })
}

fn vault_cmd(store: &Store, cmd: VaultCmd) -> Result<i32> {
    match cmd {
        VaultCmd::Create {
            name,
            vault_type,
            capacity,
            description,
            tags,
            compression,
        } => {
            let v = vaults::create(
                store,
                vaults::NewVault {
                    name,
                    vault_type: VaultType::parse(&vault_type)?,
                    capacity,
                    description,
                    tags,
                    compression,
                },
            )?;
            println!(
                "created vault {} ({}, {} GB)",
                v.name,
                v.vault_type.as_str(),
                v.capacity_gb
            );
        }
        VaultCmd::List { tags, json } => {
            let mut filters = Vec::new();
            for t in &tags {
                match t.split_once('=') {
                    Some(_) => {
                        let (k, v) = crate::rules::parse_tag(t)?;
                        filters.push((k, Some(v)));
                    }
                    None => {
                        crate::rules::check_tag_key(t)?;
                        filters.push((t.clone(), None));
                    }
                }
            }
            let (all, damaged) = store.vaults_and_damage()?;
            for e in &damaged {
                eprintln!("cbrfs: error: {}", quote(&e.to_string()));
            }
            let vs: Vec<_> = all
                .into_iter()
                .filter(|v| vault_matches(v, &filters))
                .collect();
            if json {
                print_json(&json!(vs
                    .iter()
                    .map(|v| vault_json(store, v))
                    .collect::<Vec<_>>()));
            } else {
                println!(
                    "{:<24} {:<10} {:>10} {:>10} {:>9} {:>7}  TAGS",
                    "NAME", "TYPE", "CAPACITY", "USED", "RESOURCES", "BACKUPS"
                );
                for v in &vs {
                    let j = vault_json(store, v);
                    println!(
                        "{:<24} {:<10} {:>10} {:>10} {:>9} {:>7}  {}",
                        v.name,
                        v.vault_type.as_str(),
                        human_bytes(v.capacity_bytes()),
                        human_bytes(j["used_bytes"].as_u64().unwrap_or(0)),
                        v.resources.len(),
                        j["backups"],
                        quote(
                            &v.tags
                                .iter()
                                .map(|(k, val)| format!("{k}={val}"))
                                .collect::<Vec<_>>()
                                .join(",")
                        )
                    );
                }
            }
            if !damaged.is_empty() {
                return Ok(1);
            }
        }
        VaultCmd::Show { name, json } => {
            let v = store.vault(&name)?;
            let j = vault_json(store, &v);
            if json {
                print_json(&j);
            } else {
                let used = j["used_bytes"].as_u64().unwrap_or(0);
                println!("vault:       {}", v.name);
                println!("type:        {}", v.vault_type.as_str());
                // One unit for capacity, use and free: a capacity of 10 GB
                // is 10 × 2^30 bytes (rules::GB).
                println!("capacity:    {}", human_bytes(v.capacity_bytes()));
                println!(
                    "used:        {} ({:.2}%)",
                    human_bytes(used),
                    used as f64 * 100.0 / v.capacity_bytes().max(1) as f64
                );
                println!(
                    "free:        {}",
                    human_bytes(v.capacity_bytes().saturating_sub(used))
                );
                // vault.json is store input: quote what it says.
                println!("description: {}", quote(&v.description));
                println!("compression: {}", v.compression);
                println!("created:     {}", v.created);
                println!("backups:     {}", j["backups"]);
                let tags: Vec<String> =
                    v.tags.iter().map(|(k, val)| format!("{k}={val}")).collect();
                println!("tags:        {}", quote(&tags.join(", ")));
                println!(
                    "auto-expand: {}; usage threshold {}%",
                    if v.auto_expand { "on" } else { "off" },
                    v.threshold
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
                        quote(&r.kind),
                        quote(&r.path),
                        human_bytes(r.size),
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
        VaultCmd::Delete { name, force } => {
            store.vault(&name)?;
            let n = store.backup_names(&name)?.len();
            if n > 0 && !force {
                return Err(Error::conflict(format!(
                    "vault {name} holds {n} backups: deleting it deletes them; add --force to do so"
                ))
                .code("BackupService.7301"));
            }
            let t =
                crate::tasks::start(store, "delete_vault", &name, None, None, catalog::now_ns());
            let r = store.delete_vault(&name);
            t.finish(&r);
            r?;
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
            mut excludes,
            one_file_system,
            exclude_files,
            exclude_caches,
            exclude_if_present,
        } => {
            // clap's `requires` does not hold a flag that is only a bool
            // back: say it here rather than ignore the option silently.
            if path.is_none()
                && (exclude_caches || !exclude_if_present.is_empty() || !exclude_files.is_empty())
            {
                return Err(Error::invalid(
                    "--exclude-file, --exclude-caches and --exclude-if-present apply to a directory resource (--path)",
                ));
            }
            for f in &exclude_files {
                excludes.extend(vaults::read_exclude_file(f)?);
            }
            let r = match (path, disk, server) {
                (Some(p), _, _) => {
                    let opts = vaults::DirOptions {
                        excludes,
                        one_file_system,
                        exclude_caches,
                        exclude_if_present,
                    };
                    vaults::associate_dir(store, &vault, &p, name, opts)?
                }
                (_, Some(d), _) => vaults::associate_disk(store, &vault, &d, name)?,
                (_, _, Some(sv)) => {
                    if name.is_some() {
                        return Err(Error::invalid(
                            "--name does not apply to a server: the resource takes the server's name",
                        ));
                    }
                    vaults::associate_server_with(
                        store,
                        &vault,
                        &sv,
                        exclude_members,
                        one_file_system,
                    )?
                }
                _ => return Err(Error::invalid("give --path, --disk or --server")),
            };
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
            let t = crate::tasks::start(
                store,
                "remove_resource",
                &vault,
                Some(&resource),
                None,
                catalog::now_ns(),
            );
            let r = vaults::dissociate(store, &vault, &resource, force);
            t.finish(&r);
            let deleted = r?;
            println!(
                "dissociated resource {resource} from vault {vault}; deleted {} that held only it",
                rules::count(deleted.len() as u64, "backup", "backups")
            );
        }
    }
    Ok(0)
}

/// The JSON form of a backup (documented in docs/JSON.md).
/// Set by the first SIGINT or SIGTERM during `backup create`.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    // Only async-signal-safe work here: an atomic, and _exit.
    if INTERRUPTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        // A second signal: the user does not want to wait for the
        // checkpoint.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) }
    }
}

/// Turn SIGINT and SIGTERM into a request to stop that keeps the work done
/// (see `backup create`); a second one exits at once.
fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only touches an atomic and
        // calls _exit.
        unsafe {
            libc::signal(sig, on_interrupt as *const () as libc::sighandler_t);
        }
    }
}

pub fn backup_json(b: &BackupRecord) -> serde_json::Value {
    let stats = |s: &crate::model::BackupStats| {
        json!({
            "files_new": s.files_new, "files_changed": s.files_changed,
            "files_unchanged": s.files_unchanged, "dirs": s.dirs, "others": s.others,
            "bytes_read": s.bytes_read, "bytes_total": s.bytes_total,
            "blobs_new": s.blobs_new, "bytes_added": s.bytes_added, "errors": s.errors,
        })
    };
    json!({
        "name": b.name,
        "vault": b.vault,
        "description": b.description,
        "status": "available",
        "type": if b.full { "full" } else { "incremental" },
        "origin": match b.origin { Origin::Manual => "manual", Origin::Mount => "mount", Origin::Policy => "policy" },
        "policy": b.policy,
        "started": catalog::ns_to_rfc3339(b.started_ns),
        "finished": catalog::ns_to_rfc3339(b.finished_ns),
        "duration_ms": (b.finished_ns - b.started_ns) / 1_000_000,
        "stats": stats(&b.stats),
        "resources": b.resources.iter().map(|r| json!({
            "name": r.name,
            "source": String::from_utf8_lossy(&r.source),
            "type": if r.full { "full" } else { "incremental" },
            "parent": r.parent,
            "root": r.root.to_hex(),
            "stats": stats(&r.stats),
            "warnings": r.warnings,
        })).collect::<Vec<_>>(),
    })
}

fn backup_cmd(store: &Store, cmd: BackupCmd) -> Result<i32> {
    match cmd {
        BackupCmd::Create {
            vault,
            name,
            description,
            full,
            resources,
            json,
            dry_run,
        } => {
            let t0 = Instant::now();
            let prepared = backup::prepare(
                store,
                &vault,
                backup::BackupOptions {
                    name,
                    description,
                    full,
                    resources,
                    origin: Some(Origin::Manual),
                    policy: None,
                    at_ns: None,
                    dry_run,
                },
            )
            .inspect_err(|e| backup::record_refusal(store, &vault, None, e, catalog::now_ns()))?;
            let progress = prepared.progress.clone();
            if !dry_run {
                catch_interrupts();
            }
            let bar = (!json && std::io::stderr().is_terminal()).then(|| {
                let pb = indicatif::ProgressBar::new(progress.total());
                pb.set_style(progress_style());
                pb
            });
            let rec = prepared.start(|result| result).and_then(|h| {
                while !h.is_finished() {
                    if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
                        progress.cancel();
                    }
                    if let Some(pb) = &bar {
                        pb.set_length(progress.total());
                        pb.set_position(progress.done());
                        pb.set_message(format!("{} files", progress.files()));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                if let Some(pb) = &bar {
                    pb.finish_and_clear();
                }
                h.join()
                    .map_err(|_| Error::failed("the backup thread panicked"))?
            });
            // Interrupted: one line saying what was kept, and the shell's
            // exit status for a death by SIGINT.
            let rec = match rec {
                Err(e) if progress.cancelled() => {
                    eprintln!("cbrfs: {e}");
                    return Ok(130);
                }
                r => r?,
            };
            if json && dry_run {
                let mut j = backup_json(&rec);
                j["dry_run"] = json!(true);
                print_json(&j);
            } else if json {
                print_json(&backup_json(&rec));
            } else {
                let s = &rec.stats;
                let kind = if rec.full { "full" } else { "incremental" };
                if dry_run {
                    println!(
                        "dry run of a backup of vault {} ({kind}): nothing was written",
                        rec.vault
                    );
                } else {
                    println!(
                        "backup {} of vault {} is available ({kind})",
                        rec.name, rec.vault
                    );
                }
                println!(
                    "files: {} new, {} changed, {} unchanged; {}, {} other",
                    s.files_new,
                    s.files_changed,
                    s.files_unchanged,
                    rules::count(s.dirs, "directory", "directories"),
                    s.others
                );
                if dry_run {
                    println!(
                        "would read {} of {}; would add {} in {} (compressed, before pack headers and the index); took {:.2}s",
                        human_bytes(s.bytes_read),
                        human_bytes(s.bytes_total),
                        human_bytes(s.bytes_added),
                        rules::count(s.blobs_new, "new blob", "new blobs"),
                        t0.elapsed().as_secs_f64()
                    );
                } else {
                    println!(
                        "read {} of {}; added {} to the vault; took {:.2}s",
                        human_bytes(s.bytes_read),
                        human_bytes(s.bytes_total),
                        human_bytes(s.bytes_added),
                        t0.elapsed().as_secs_f64()
                    );
                }
                for r in &rec.resources {
                    for w in &r.warnings {
                        eprintln!("warning: resource {}: {}", quote(&r.name), quote(w));
                    }
                }
                if !dry_run && s.errors > 0 {
                    eprintln!(
                        "warning: {} entries could not be backed up or changed while read (see above)",
                        s.errors
                    );
                }
            }
            // As restic: the backup is made, but it is not complete.
            if rec.stats.errors > 0 {
                return Ok(3);
            }
        }
        BackupCmd::List { vault, json } => {
            let names = match &vault {
                Some(v) => {
                    store.vault(v)?;
                    vec![v.clone()]
                }
                None => store.vault_names()?,
            };
            let mut all = Vec::new();
            let mut damaged = Vec::new();
            for v in &names {
                for r in store.backups(v)? {
                    match r {
                        Ok(b) => all.push(b),
                        Err(e) => damaged.push(e.to_string()),
                    }
                }
            }
            if json {
                print_json(&json!(all.iter().map(backup_json).collect::<Vec<_>>()));
            } else {
                println!(
                    "{:<24} {:<20} {:<11} {:<7} {:<20} {:>9} {:>10} {:>10}",
                    "NAME", "VAULT", "TYPE", "ORIGIN", "CREATED", "FILES", "SIZE", "ADDED"
                );
                for b in &all {
                    let j = backup_json(b);
                    println!(
                        "{:<24} {:<20} {:<11} {:<7} {:<20} {:>9} {:>10} {:>10}",
                        quote(&b.name),
                        quote(&b.vault),
                        j["type"].as_str().unwrap_or(""),
                        j["origin"].as_str().unwrap_or(""),
                        j["started"].as_str().unwrap_or(""),
                        b.stats.files_new + b.stats.files_changed + b.stats.files_unchanged,
                        human_bytes(b.stats.bytes_total),
                        human_bytes(b.stats.bytes_added)
                    );
                }
            }
            for d in &damaged {
                eprintln!("cbrfs: error: {}", quote(d));
            }
            if !damaged.is_empty() {
                return Ok(1);
            }
        }
        BackupCmd::Show {
            vault,
            backup,
            json,
        } => {
            store.vault(&vault)?;
            let b = store.backup(&vault, &backup)?;
            let j = backup_json(&b);
            if json {
                print_json(&j);
            } else {
                println!("backup:      {}", quote(&b.name));
                println!("vault:       {}", quote(&b.vault));
                println!("status:      available");
                println!("type:        {}", j["type"].as_str().unwrap_or(""));
                println!("origin:      {}", j["origin"].as_str().unwrap_or(""));
                println!("description: {}", quote(&b.description));
                println!("started:     {}", j["started"].as_str().unwrap_or(""));
                println!("finished:    {}", j["finished"].as_str().unwrap_or(""));
                for r in &b.resources {
                    let s = &r.stats;
                    println!(
                        "resource {} ({}, {}): {} files new, {} changed, {} unchanged; read {} of {}",
                        quote(&r.name),
                        quote_bytes(&r.source),
                        if r.full { "full" } else { "incremental" },
                        s.files_new,
                        s.files_changed,
                        s.files_unchanged,
                        human_bytes(s.bytes_read),
                        human_bytes(s.bytes_total)
                    );
                    for w in &r.warnings {
                        println!("  warning: {}", quote(w));
                    }
                }
                println!("added:       {}", human_bytes(b.stats.bytes_added));
            }
        }
        BackupCmd::Wait {
            vault,
            backup,
            timeout,
        } => return wait_cmd(store, &vault, &backup, timeout),
        BackupCmd::Delete { vault, backup } => {
            store.vault(&vault)?;
            let t = crate::tasks::start(
                store,
                "delete_backup",
                &vault,
                None,
                Some(&backup),
                catalog::now_ns(),
            );
            let r = store.delete_backup(&vault, &backup);
            t.finish(&r);
            r?;
            println!("deleted backup {backup} of vault {vault}; run prune to free its space");
        }
    }
    Ok(0)
}

/// The progress bar of every command that takes time: backup, restore,
/// check --read-data, prune, backup wait.
fn progress_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

/// Run `work` on a thread of its own while, when stderr is a terminal and
/// `show` is set, a progress bar follows `progress`. Elsewhere (a pipe, a
/// log, --json) nothing is drawn: no escape codes, only the result lines.
fn with_progress<T: Send>(
    progress: &crate::engine::progress::Progress,
    show: bool,
    work: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let bar = (show && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(progress.total());
        pb.set_style(progress_style());
        pb
    });
    std::thread::scope(|s| {
        // As backup's: deep trees recurse.
        let h = std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn_scoped(s, work)
            .map_err(|e| Error::io("start a worker thread", e))?;
        while !h.is_finished() {
            if let Some(pb) = &bar {
                pb.set_length(progress.total());
                pb.set_position(progress.done());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(pb) = &bar {
            pb.finish_and_clear();
        }
        h.join()
            .map_err(|_| Error::failed("the worker thread panicked"))?
    })
}

/// Wait for a backup to become available, showing its progress.
fn wait_cmd(store: &Store, vault: &str, backup: &str, timeout: Option<f64>) -> Result<i32> {
    use crate::engine::status;
    store.vault(vault)?;
    crate::rules::check_name("backup name", backup)?;
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
    // On a terminal a bar (with an ETA) follows the backup's status; the
    // status gives a percentage, so the bar counts percent.
    // Cleared also when the wait ends in an error, so that the message is
    // not written over a bar.
    struct Clear(Option<indicatif::ProgressBar>);
    impl Drop for Clear {
        fn drop(&mut self) {
            if let Some(pb) = &self.0 {
                pb.finish_and_clear();
            }
        }
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let pb = indicatif::ProgressBar::new(100);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}% ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    });
    let bar = Clear(bar);
    let bar = &bar.0;
    let mut missing_since: Option<Instant> = None;
    loop {
        if store.backup_path(vault, backup).exists() {
            if let Some(pb) = bar {
                pb.finish_and_clear();
            }
            println!("backup {backup} of vault {vault} is available");
            return Ok(0);
        }
        match status::read(store, vault, backup) {
            Some(s) if s.status == "error" => {
                return Err(Error::failed(format!(
                    "backup {backup} of vault {vault} failed: {}",
                    s.error.unwrap_or_default()
                )))
            }
            Some(s) if !status::alive(s.pid) => {
                return Err(Error::failed(format!(
                    "backup {backup} of vault {vault} failed: its process {} ended before it was committed",
                    s.pid
                )))
            }
            Some(s) => {
                if let Some(pb) = bar {
                    pb.set_position(u64::from(s.progress));
                    pb.set_message(format!(
                        "backup {backup}: {} files, {} read",
                        s.files,
                        human_bytes(s.bytes_read)
                    ));
                }
            }
            None => {
                // Not yet visible (the mkdir's thread may not have written
                // its first status): allow a second before saying no.
                let since = *missing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    return Err(Error::not_found(format!(
                        "backup {backup} of vault {vault} does not exist and is not running"
                    ))
                    .code("BackupService.6200"));
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::failed(format!(
                "backup {backup} of vault {vault} is still running after the timeout"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The JSON form of a server (documented in docs/JSON.md).
pub fn server_json(store: &Store, s: &crate::catalog::ServerConfig) -> serde_json::Value {
    let vault = store
        .vault_of_path("server", &s.name)
        .ok()
        .flatten()
        .map(|(v, _)| v);
    json!({
        "name": s.name,
        "members": s.members.iter().map(|m| json!({"name": m.name, "kind": m.kind, "path": m.path})).collect::<Vec<_>>(),
        "pre_hook": s.pre_hook,
        "post_hook": s.post_hook,
        "hook_timeout_s": s.hook_timeout_s,
        "created": s.created,
        "vault": vault,
    })
}

fn server_cmd(store: &Store, cmd: ServerCmd) -> Result<i32> {
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
            let all = store.servers()?;
            if json {
                print_json(&json!(all
                    .iter()
                    .map(|s| server_json(store, s))
                    .collect::<Vec<_>>()));
            } else {
                println!("{:<24} {:>7}  {:<20} HOOKS", "NAME", "MEMBERS", "VAULT");
                for s in &all {
                    let j = server_json(store, s);
                    println!(
                        "{:<24} {:>7}  {:<20} {}",
                        s.name,
                        s.members.len(),
                        j["vault"].as_str().unwrap_or("-"),
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
            let s = store.server(&name)?;
            let j = server_json(store, &s);
            if json {
                print_json(&j);
            } else {
                println!("server:       {}", s.name);
                println!("vault:        {}", j["vault"].as_str().unwrap_or("-"));
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

fn restore_cmd(store: &Store, r: RestoreArgs) -> Result<i32> {
    store.vault(&r.vault)?;
    let t0 = Instant::now();
    let to = match (&r.to, r.in_place) {
        (Some(t), _) => t.clone(),
        (None, _) => {
            // --in-place without --to: the disk's own source path.
            let rec = browse::resolve_backup(store, &r.vault, &r.backup)?;
            let res = r.resource.as_deref().ok_or_else(|| {
                Error::invalid("--in-place needs --resource: name the disk or server")
            })?;
            let part = rec
                .resources
                .iter()
                .find(|p| p.name == res)
                .ok_or_else(|| {
                    Error::not_found(format!("resource {res:?} is not in backup {}", r.backup))
                        .code("BackupService.6302")
                })?;
            match part.kind {
                crate::model::ResourceKind::Disk => {
                    PathBuf::from(String::from_utf8_lossy(&part.source).to_string())
                }
                _ => PathBuf::from("/"),
            }
        }
    };
    let task = crate::tasks::start(
        store,
        "restore",
        &r.vault,
        r.resource.as_deref(),
        Some(&r.backup),
        catalog::now_ns(),
    );
    let progress = crate::engine::progress::Progress::default();
    let result = with_progress(&progress, true, || {
        restore::restore_with_progress(
            store,
            &r.vault,
            &r.backup,
            r.resource.as_deref(),
            &to,
            &restore::RestoreOptions {
                in_place: r.in_place,
                allow_untrusted_target: r.allow_untrusted_target,
                include: r.include.clone(),
                exclude: r.exclude.clone(),
            },
            &progress,
        )
    });
    match &result {
        Ok(st) if !st.errors.is_empty() => task.failed(&Error::failed(format!(
            "{} entries could not be restored; first: {}",
            st.errors.len(),
            st.errors[0]
        ))),
        _ => task.finish(&result),
    }
    let stats = result?;
    for n in &stats.notes {
        println!("{}", quote(n));
    }
    println!(
        "restored {} files, {} directories, {} other entries, {} into {} in {:.2}s",
        stats.files,
        stats.dirs,
        stats.others,
        human_bytes(stats.bytes),
        to.display(),
        t0.elapsed().as_secs_f64()
    );
    if !stats.errors.is_empty() {
        for e in &stats.errors {
            eprintln!("cbrfs: error: {}", quote(&e.to_string()));
        }
        eprintln!(
            "cbrfs: error: {} entries could not be restored",
            stats.errors.len()
        );
        return Ok(1);
    }
    Ok(0)
}

/// One `ls -l`-style line of an entry: mode, uid, gid, size, mtime, path.
fn long_line(e: &browse::Entry) -> String {
    let mut line = format!(
        "{} {:>6} {:>6} {:>12} {} {}",
        browse::mode_string(e.node_kind, e.mode),
        e.uid,
        e.gid,
        e.size,
        e.mtime,
        quote_bytes(&e.raw_path)
    );
    if let Some(t) = &e.target {
        line.push_str(" -> ");
        line.push_str(&quote(t));
    }
    line
}

fn ls_cmd(
    store: &Store,
    vault: &str,
    backup: &str,
    path: Option<&str>,
    long: bool,
    recursive: bool,
    json: bool,
) -> Result<i32> {
    let l = browse::ls(store, vault, backup, path, recursive)?;
    if json {
        print_json(&serde_json::to_value(&l).map_err(|e| Error::failed(e.to_string()))?);
        return Ok(0);
    }
    for e in &l.entries {
        if long {
            println!("{}", long_line(e));
        } else {
            println!("{}", quote_bytes(&e.raw_path));
        }
    }
    Ok(0)
}

fn find_cmd(store: &Store, vault: &str, pattern: &str, json: bool) -> Result<i32> {
    let r = browse::find(store, vault, pattern)?;
    if json {
        print_json(&serde_json::to_value(&r).map_err(|e| Error::failed(e.to_string()))?);
    } else {
        for m in &r.matches {
            println!("{}  {}", m.backup, long_line(&m.entry));
        }
        if r.matches.is_empty() {
            println!("no entry matching {} in vault {vault}", quote(pattern));
        }
    }
    for e in &r.errors {
        eprintln!("cbrfs: error: {}", quote(e));
    }
    Ok(if r.errors.is_empty() { 0 } else { 1 })
}

fn diff_cmd(store: &Store, vault: &str, from: &str, to: &str, json: bool) -> Result<i32> {
    let d = browse::diff(store, vault, from, to)?;
    if json {
        print_json(&serde_json::to_value(&d).map_err(|e| Error::failed(e.to_string()))?);
        return Ok(0);
    }
    for c in &d.changes {
        let sign = match c.change {
            "added" => "+",
            "removed" => "-",
            _ => "M",
        };
        let mut what: Vec<&str> = Vec::new();
        if c.content {
            what.push("content");
        }
        what.extend(c.metadata.iter().copied());
        if what.is_empty() {
            println!("{sign}    {}", quote_bytes(&c.raw_path));
        } else {
            println!(
                "{sign}    {}  ({})",
                quote_bytes(&c.raw_path),
                what.join(", ")
            );
        }
    }
    println!(
        "{} → {}: {} added, {} removed, {} changed",
        d.from, d.to, d.added, d.removed, d.changed
    );
    Ok(0)
}

fn check_cmd(store: &Store, c: CheckArgs) -> Result<i32> {
    if c.repair {
        let names = match &c.vault {
            Some(v) => vec![v.clone()],
            None => store.vault_names()?,
        };
        for v in &names {
            let r = check::repair(store, v)?;
            eprintln!(
                "vault {}: index rebuilt from {} packs ({} blobs); {} index files replaced; {} damaged packs",
                r.vault, r.packs, r.blobs, r.indexes_replaced, r.damaged_packs
            );
            for p in &r.problems {
                eprintln!("  {}", quote(p));
            }
        }
    }
    let progress = crate::engine::progress::Progress::default();
    // Only --read-data takes long enough to need a bar.
    let reports = with_progress(&progress, c.read_data && !c.json, || {
        check::check_with(store, c.vault.as_deref(), c.read_data, &progress)
    })?;
    let bad = reports.iter().any(|r| !r.problems.is_empty());
    if c.json {
        print_json(&json!(reports));
    } else {
        for r in &reports {
            if r.problems.is_empty() {
                println!(
                    "vault {}: ok: {} backups, {} packs{}",
                    r.vault,
                    r.backups,
                    r.packs,
                    if c.read_data {
                        format!(
                            ", {} blobs ({}) read and verified",
                            r.blobs_read,
                            human_bytes(r.bytes_read)
                        )
                    } else {
                        String::new()
                    }
                );
            } else {
                println!("vault {}: {} problems", r.vault, r.problems.len());
                for p in &r.problems {
                    println!("  {}", quote(p));
                }
                for b in &r.damaged_backups {
                    println!("  damaged backup: {}", quote(b));
                }
            }
        }
    }
    Ok(if bad { 1 } else { 0 })
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
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
struct PolicyArgs {
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

/// The JSON form of a policy (documented in docs/JSON.md).
pub fn policy_json(store: &Store, p: &crate::catalog::PolicyConfig) -> serde_json::Value {
    let vaults: Vec<String> = store
        .vaults()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| v.policy.as_deref() == Some(&p.name))
        .map(|v| v.name)
        .collect();
    // The next time points in UTC (`next`, the machine form) and in the
    // policy's zone with that instant's offset (`next_local`).
    let (zone, next): (Option<crate::policy::schedule::Zone>, Vec<jiff::Timestamp>) =
        crate::engine::policy::validate(p)
            .ok()
            .map(|(sched, _)| {
                let mut out = Vec::new();
                let mut t = jiff::Timestamp::now();
                for _ in 0..5 {
                    match sched.next_after(t) {
                        Some(n) => {
                            out.push(n);
                            t = n;
                        }
                        None => break,
                    }
                }
                (Some(sched.timezone().clone()), out)
            })
            .unwrap_or_default();
    let next_local: Vec<String> = zone
        .as_ref()
        .map(|z| next.iter().map(|t| z.rfc3339(*t)).collect())
        .unwrap_or_default();
    let next: Vec<String> = next.iter().map(|t| t.to_string()).collect();
    json!({
        "name": p.name,
        "enabled": p.enabled,
        "schedules": p.schedules,
        "retention": p.retention,
        "full_every": p.full_every,
        "created": p.created,
        "vaults": vaults,
        "timezone": zone.map(|z| z.to_string()),
        "next": next,
        "next_local": next_local,
    })
}

fn parse_instant(s: &str) -> Result<i64> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_nanosecond() as i64);
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        if let Ok(z) = d.to_zoned(jiff::tz::TimeZone::UTC) {
            return Ok(z.timestamp().as_nanosecond() as i64);
        }
    }
    Err(Error::param(format!(
        "time {s:?} is invalid: write RFC 3339, like 2027-01-01T22:00:00Z or 2027-01-01T22:00:00+08:00, or a date 2027-01-01"
    )))
}

fn policy_cmd(store: &Store, cmd: PolicyCmd) -> Result<i32> {
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
            let all = store.policies()?;
            if json {
                print_json(&json!(all
                    .iter()
                    .map(|p| policy_json(store, p))
                    .collect::<Vec<_>>()));
            } else {
                println!(
                    "{:<20} {:<8} {:<20} {:<25} SCHEDULES",
                    "NAME", "ENABLED", "VAULTS", "NEXT"
                );
                for p in &all {
                    let j = policy_json(store, p);
                    println!(
                        "{:<20} {:<8} {:<20} {:<25} {}",
                        p.name,
                        if p.enabled { "yes" } else { "no" },
                        j["vaults"]
                            .as_array()
                            .map(|v| v
                                .iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join(","))
                            .unwrap_or_default(),
                        j["next_local"][0].as_str().unwrap_or("-"),
                        p.schedules.join(" + ")
                    );
                }
            }
        }
        PolicyCmd::Show { name, json } => {
            let p = store.policy(&name)?;
            let j = policy_json(store, &p);
            if json {
                print_json(&j);
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
                println!(
                    "vaults:     {}",
                    j["vaults"]
                        .as_array()
                        .map(|v| v
                            .iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                );
                // In the policy's zone, which the schedule's hours are in.
                println!("next runs ({}):", j["timezone"].as_str().unwrap_or("UTC"));
                for n in j["next_local"].as_array().cloned().unwrap_or_default() {
                    println!("  {}", n.as_str().unwrap_or(""));
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
                Some(t) => parse_instant(&t)?,
                None => catalog::now_ns(),
            };
            let reports = policy::run_due(store, now_ns)?;
            if json {
                print_json(&json!(reports));
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

fn prune_cmd(
    store: &Store,
    vault: Option<String>,
    dry_run: bool,
    threshold: u8,
    json: bool,
) -> Result<i32> {
    let names = match vault {
        Some(v) => {
            store.vault(&v)?;
            vec![v]
        }
        None => store.vault_names()?,
    };
    let mut reports = Vec::new();
    // A vault that cannot be pruned now (busy, damaged) does not keep the
    // others from being pruned; it is named at the end.
    let mut errors = Vec::new();
    for v in &names {
        let t = (!dry_run)
            .then(|| crate::tasks::start(store, "prune", v, None, None, catalog::now_ns()));
        let progress = crate::engine::progress::Progress::default();
        let r = with_progress(&progress, !dry_run && !json, || {
            crate::engine::prune::prune_with(store, v, dry_run, threshold, &progress)
        });
        if let Some(t) = t {
            t.finish(&r);
        }
        match r {
            Ok(rep) => reports.push(rep),
            Err(e) => errors.push(e),
        }
    }
    if json {
        print_json(&json!(reports));
    } else {
        for r in &reports {
            println!(
                "vault {}: {} {} ({} -> {}); {} packs removed, {} rewritten, {} left by failed backups; {} unused blobs dropped, {} moved",
                r.vault,
                if r.dry_run { "would free" } else { "freed" },
                human_bytes(r.bytes_before.saturating_sub(r.bytes_after)),
                human_bytes(r.bytes_before),
                human_bytes(r.bytes_after),
                r.packs_removed,
                r.packs_rewritten,
                r.orphan_packs,
                r.blobs_removed,
                r.blobs_moved
            );
        }
    }
    let mut code = 0;
    for e in &errors {
        eprintln!("cbrfs: error: {}", quote(&e.to_string()));
        code = code.max(e.exit_code());
    }
    Ok(code)
}

#[derive(Subcommand, Debug)]
enum TaskCmd {
    /// List tasks of the last 30 days, newest first.
    List {
        /// Only this vault.
        #[arg(long)]
        vault: Option<String>,
        /// Only this type: backup, restore, delete_backup, prune, delete_vault,
        /// remove_resource, retention, capacity.
        #[arg(long = "type", value_name = "TYPE")]
        task_type: Option<String>,
        /// Only this status: waiting, running, success, failed, skipped, timeout.
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

fn task_cmd(store: &Store, cmd: TaskCmd) -> Result<i32> {
    use crate::tasks;
    match cmd {
        TaskCmd::List {
            vault,
            task_type,
            status,
            since,
            json,
        } => {
            if let Some(t) = &task_type {
                if !tasks::TYPES.contains(&t.as_str()) {
                    return Err(Error::param(format!(
                        "task type {t:?} is invalid: it is one of {}",
                        tasks::TYPES.join(", ")
                    )));
                }
            }
            if let Some(st) = &status {
                if !tasks::STATES.contains(&st.as_str()) {
                    return Err(Error::param(format!(
                        "task status {st:?} is invalid: it is one of {}",
                        tasks::STATES.join(", ")
                    )));
                }
            }
            let since_ns = since.as_deref().map(parse_instant).transpose()?;
            let all: Vec<_> = tasks::list(store)?
                .into_iter()
                .filter(|t| vault.as_ref().is_none_or(|v| &t.vault == v))
                .filter(|t| task_type.as_ref().is_none_or(|x| &t.task_type == x))
                .filter(|t| status.as_ref().is_none_or(|x| &t.status == x))
                .filter(|t| since_ns.is_none_or(|s| t.started_ns >= s))
                .collect();
            if json {
                print_json(&json!(all));
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
                        quote(&t.task_type),
                        quote(&t.vault),
                        quote(t.backup.as_deref().or(t.resource.as_deref()).unwrap_or("-")),
                        quote(&t.status),
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
                print_json(&json!(t));
            } else {
                println!("task:     {}", quote(&t.id));
                println!("type:     {}", quote(&t.task_type));
                println!("vault:    {}", quote(&t.vault));
                println!("resource: {}", quote(t.resource.as_deref().unwrap_or("-")));
                println!("backup:   {}", quote(t.backup.as_deref().unwrap_or("-")));
                println!("status:   {} ({}%)", quote(&t.status), t.progress);
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
