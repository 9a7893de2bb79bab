//! The `cbrfs` command line: parsing (clap), output (tables or `--json`),
//! and exit codes (0 ok, 1 operation failed, 2 bad usage or input).
//!
//! One file per subcommand, holding its clap arguments and its handler, as
//! restic's `cmd_<verb>.go`: `vault`, `backup`, `server`, `restore`,
//! `browse` (ls, find, diff), `check`, `prune`, `policy`, `task`, `mount`
//! (and umount), `init`, `metrics`, `completions`, `man`. This file holds
//! the top-level parser, the dispatch and the helpers they share.

mod backup;
mod browse;
mod check;
mod completions;
mod init;
mod keys;
mod man;
mod metrics;
mod mount;
mod policy;
mod prune;
mod restore;
mod server;
mod task;
mod vault;

use crate::catalog::{self, Store};
use crate::error::{Error, Result};
use crate::quote::quote;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Cloud Backup and Recovery for one Linux host, as a FUSE file system.
#[derive(Parser, Debug)]
#[command(name = "cbrfs", version, about, long_about = None)]
pub struct Cli {
    /// The store directory [default: $CBRFS_STORE, else /var/lib/cbrfs as
    /// root, else $XDG_DATA_HOME/cbrfs]
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Read the password of encrypted vaults from the first line of FILE
    /// (else $CBRFS_PASSWORD, else a prompt on a terminal; never an
    /// argument).
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Open encrypted vaults with the key file FILE instead of a password
    /// (its key-file slot: `vault key add --new-key-file`; `vault create
    /// --encrypt` makes slot 0 one): no argon2id, for scheduled and
    /// scripted commands. Wins over $CBRFS_PASSWORD.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        conflicts_with = "password_file"
    )]
    pub key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, list, show, update and delete vaults; associate resources.
    #[command(subcommand)]
    Vault(vault::VaultCmd),
    /// Take, list, show and delete backups.
    #[command(subcommand)]
    Backup(backup::BackupCmd),
    /// Define, list, show, update and delete servers (groups of directories
    /// and disks backed up together).
    #[command(subcommand)]
    Server(server::ServerCmd),
    /// Restore a backup into an empty or new directory.
    Restore(restore::RestoreArgs),
    /// List a backup's tree without mounting it.
    Ls(browse::LsArgs),
    /// In which backups of a vault a file exists, with its size and time.
    Find(browse::FindArgs),
    /// What changed between two backups: added, removed, changed entries.
    Diff(browse::DiffArgs),
    /// Verify the store: structure, and with --read-data every blob.
    Check(check::CheckArgs),
    /// Give back the space of deleted backups.
    Prune(prune::PruneArgs),
    /// Backup policies: schedules and retention applied to vaults.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// The task log: every backup, restore, delete and prune.
    #[command(subcommand)]
    Task(task::TaskCmd),
    /// Mount the store: every vault a directory, every backup a read-only
    /// tree; mkdir in a vault takes a backup.
    Mount(mount::MountArgs),
    /// Create an empty store (at --store, else the default); an existing
    /// store is left as it is.
    Init,
    /// Print Prometheus metrics (text format) for node_exporter's textfile
    /// collector: last successful backup of each resource, failures,
    /// capacity and use, last check.
    Metrics(metrics::MetricsArgs),
    /// Print a shell completion script to stdout, e.g.
    /// `source <(cbrfs completions bash)`.
    Completions(completions::CompletionsArgs),
    /// Write the man pages of cbrfs and of every subcommand into DIR
    /// (created if missing), as cbrfs.1, cbrfs-vault-create.1, ...
    Man(man::ManArgs),
    /// Unmount a cbrfs mount (also a stale one whose daemon died).
    Umount(mount::UmountArgs),
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
    // Before any command opens a vault: the one unlock (store::keyring)
    // reads it.
    crate::store::keyring::set_password_file(cli.password_file.clone());
    crate::store::keyring::set_key_file(cli.key_file.clone());
    match &cli.command {
        // Unmounting needs no store: it must work on a stale mount whatever
        // --store says, and must not create one. Completions and man pages
        // describe the program, not a store: they work on a build host.
        Command::Umount(a) => return mount::umount_cmd(a),
        Command::Completions(a) => return completions::completions_cmd(a),
        Command::Man(a) => return man::man_cmd(&a.dir),
        Command::Init => return init::init_cmd(&cli.store),
        _ => {}
    }
    // `vault create` and `vault attach` create a missing store, once their
    // settings are known to be valid: a refused command leaves no store
    // behind.
    let create = match &cli.command {
        Command::Vault(v) => v.creates_store()?,
        _ => false,
    };
    let store = open_store(&cli.store, create)?;
    match cli.command {
        Command::Vault(v) => vault::vault_cmd(&store, v),
        Command::Backup(b) => backup::backup_cmd(&store, b),
        Command::Server(c) => server::server_cmd(&store, c),
        Command::Policy(c) => policy::policy_cmd(&store, c),
        Command::Task(c) => task::task_cmd(&store, c),
        Command::Prune(a) => prune::prune_cmd(&store, a),
        Command::Restore(r) => restore::restore_cmd(&store, r),
        Command::Ls(browse::LsArgs {
            vault,
            backup,
            path,
            long,
            recursive,
            json,
        }) => browse::ls_cmd(
            &store,
            &vault,
            &backup,
            path.as_deref(),
            long,
            recursive,
            json,
        ),
        Command::Find(browse::FindArgs {
            vault,
            pattern,
            json,
        }) => browse::find_cmd(&store, &vault, &pattern, json),
        Command::Diff(browse::DiffArgs {
            vault,
            from,
            to,
            json,
        }) => browse::diff_cmd(&store, &vault, &from, &to, json),
        Command::Check(c) => check::check_cmd(&store, c),
        Command::Mount(a) => mount::mount_cmd(&store, a),
        Command::Metrics(a) => metrics::metrics_cmd(&store, a.output.as_deref()),
        // Handled above, before a store is opened.
        Command::Umount(_) | Command::Init | Command::Completions(_) | Command::Man(_) => Ok(0),
    }
}

/// Print an engine report as `--json` (docs/JSON.md): pretty, one value,
/// a newline. It goes through `serde_json::Value`, whose maps sort their
/// keys, because the documented form has its keys in alphabetical order at
/// every level, whatever order the report's fields are declared in.
fn print_json<T: serde::Serialize + ?Sized>(report: &T) -> Result<()> {
    let text = serde_json::to_value(report)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .map_err(|e| Error::failed(format!("encode the JSON output: {e}")))?;
    println!("{text}");
    Ok(())
}

/// The progress bar of every command that takes time: backup, restore,
/// check --read-data, prune, backup wait.
fn progress_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

/// Set by the first SIGINT or SIGTERM once [`catch_interrupts`] ran;
/// [`with_progress`] passes it on to the work as a request to stop.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    // Only async-signal-safe work here: an atomic, and _exit.
    if INTERRUPTED.swap(true, Ordering::Relaxed) {
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

/// Run `work` on the calling thread while a thread of its own follows
/// `progress`: it draws a bar when `show` is set and stderr is a terminal
/// (elsewhere — a pipe, a log, --json — nothing is drawn: no escape codes,
/// only the result lines), and passes an interrupt on (see
/// [`catch_interrupts`]). `work` gets no thread of its own here: a backup,
/// whose walk recurses, runs on the one thread with a deep stack that
/// `engine::backup::Prepared::start` makes; restore, check and prune walk
/// with explicit stacks (tests/restore_security.rs and
/// tests/crafted_store.rs run them 10,000 levels deep on 2 MiB threads).
fn with_progress<T>(
    progress: &crate::engine::progress::Progress,
    show: bool,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    /// Ends the follower however `work` ends, a panic included: the scope
    /// waits for the follower, which must not wait on.
    struct Stop<'a>(&'a AtomicBool, std::thread::Thread);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
            self.1.unpark();
        }
    }
    let bar = (show && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(progress.total());
        pb.set_style(progress_style());
        pb
    });
    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let follower = std::thread::Builder::new()
            .name("cbrfs-progress".into())
            .spawn_scoped(s, || {
                while !stop.load(Ordering::Relaxed) {
                    if INTERRUPTED.load(Ordering::Relaxed) {
                        progress.cancel();
                    }
                    if let Some(pb) = &bar {
                        pb.set_length(progress.total());
                        pb.set_position(progress.done());
                        // Only a backup counts files.
                        let files = progress.files();
                        if files > 0 {
                            pb.set_message(format!("{files} files"));
                        }
                    }
                    std::thread::park_timeout(Duration::from_millis(100));
                }
            })
            .map_err(|e| Error::io("start the progress thread", e))?;
        let _stop = Stop(&stop, follower.thread().clone());
        work()
    });
    if let Some(pb) = &bar {
        pb.finish_and_clear();
    }
    result
}
