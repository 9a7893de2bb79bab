//! `cbrfs mount` and `cbrfs umount`.

use crate::catalog::Store;
use crate::error::{Error, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub(super) struct MountArgs {
    /// Where to mount.
    pub(super) mountpoint: PathBuf,
    /// Stay attached (for systemd) instead of serving in the background.
    #[arg(long)]
    pub(super) foreground: bool,
    /// Let other users read through the mount (their access is still
    /// checked against each file's permissions).
    #[arg(long)]
    pub(super) allow_other: bool,
    /// Mount noexec: no program kept in a backup can be run from the
    /// mount (it is always nosuid and nodev).
    #[arg(long)]
    pub(super) noexec: bool,
    /// How long a lookup inside a backup that mkdir started waits for it
    /// before failing with EAGAIN.
    #[arg(long, default_value = "5", value_name = "SECONDS")]
    pub(super) wait_seconds: f64,
    /// Mount over a non-empty directory, hiding its files while mounted
    /// (refused without this).
    #[arg(long)]
    pub(super) nonempty: bool,
}

#[derive(Args, Debug)]
pub(super) struct UmountArgs {
    /// The mount point.
    pub(super) mountpoint: PathBuf,
    /// Detach now even if busy; the mount goes when its last user leaves.
    /// Returns at once: the daemon serves those users until then (without
    /// it, umount returns once the daemon has exited).
    #[arg(long)]
    pub(super) lazy: bool,
}

pub(super) fn mount_cmd(store: &Store, a: MountArgs) -> Result<i32> {
    let MountArgs {
        mountpoint,
        foreground,
        allow_other,
        noexec,
        wait_seconds,
        nonempty,
    } = a;
    if !(0.0..=3600.0).contains(&wait_seconds) {
        return Err(Error::invalid(format!(
            "--wait-seconds {wait_seconds} is out of range: 0 to 3600"
        )));
    }
    if foreground {
        // This process serves the mount: before its threads start.
        limit_malloc_arenas();
    }
    crate::fuse::mount(
        store,
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

/// At most one glibc malloc arena per CPU for the mount's serving
/// process, instead of glibc's eight per CPU. Its worker and read-ahead
/// threads (6 or more) each took an arena of their own, and each arena
/// keeps a few hundred KiB of chunks that `malloc_trim` cannot give back
/// (live blocks pin them); no more threads than CPUs run at once, so more
/// arenas buy no less waiting. Measured on the benchmark's 1 GiB image
/// (issue 13; 5 mounts each, alternating, medians): RssAnon once the
/// mount released its read memory after a `cat` 2256 -> 1916 KiB (the
/// old code's 2.2 MiB), idle RSS unchanged (7752 -> 7732 KiB), the
/// daemon's CPU for the `cat` no higher (0.75 -> 0.62 s).
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cpus = libc::c_int::try_from(cpus).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt with a valid parameter; it only bounds arenas
        // created from now on.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cpus);
        }
    }
}

/// Unmounting needs no store: it must work on a stale mount whatever
/// --store says, and must not create one.
pub(super) fn umount_cmd(a: &UmountArgs) -> Result<i32> {
    crate::fuse::umount(&a.mountpoint, a.lazy)?;
    println!("unmounted {}", a.mountpoint.display());
    Ok(0)
}
