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

/// Unmounting needs no store: it must work on a stale mount whatever
/// --store says, and must not create one.
pub(super) fn umount_cmd(a: &UmountArgs) -> Result<i32> {
    crate::fuse::umount(&a.mountpoint, a.lazy)?;
    println!("unmounted {}", a.mountpoint.display());
    Ok(0)
}
