//! Mounting and unmounting: the mount point's checks, the daemon child and
//! its readiness pipe (or the foreground session), the fuser session with
//! its options, the signal thread that unmounts cleanly, and `umount`.

use super::CbrFs;
use crate::catalog::Store;
use crate::error::{Error, IoContext, Result};
use crate::mountinfo::MountTable;
use crate::vfs::{Vfs, VfsOptions};
use fuser::MountOption;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Stay attached (for systemd); otherwise return once ready.
    pub foreground: bool,
    /// Let other users in (`allow_other`; needs `user_allow_other` in
    /// /etc/fuse.conf for non-root).
    pub allow_other: bool,
    /// Mount `noexec`: no program in a backup can be run from the mount.
    pub noexec: bool,
    /// How long a lookup inside a running mkdir backup waits.
    pub wait: Duration,
    /// Mount over a non-empty directory (its contents are hidden while
    /// mounted); refused otherwise.
    pub nonempty: bool,
}

/// Environment variable carrying the readiness pipe to a daemon child.
const READY_FD: &str = "CBRFS_READY_FD";

/// Why a mount point cannot be used, in words that say what to do.
/// A non-empty directory is refused unless `nonempty`: the mount would hide
/// its files without a word (issue #16).
fn check_mountpoint(mp: &Path, nonempty: bool) -> Result<()> {
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::failed(
            "/dev/fuse is missing: load the fuse module ('modprobe fuse'), or give the container the device ('--device /dev/fuse')",
        ));
    }
    match std::fs::metadata(mp) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(Error::failed(format!(
            "{} is a stale mount (transport endpoint is not connected): its daemon died; run 'cbrfs umount {}' (or 'fusermount3 -u {}') and mount again",
            mp.display(),
            mp.display(),
            mp.display()
        ))),
        Err(e) => Err(Error::invalid(format!("mount point {}: {e}", mp.display()))),
        Ok(m) if !m.is_dir() => Err(Error::invalid(format!(
            "mount point {} is not a directory",
            mp.display()
        ))),
        Ok(_) if is_mounted(mp) => Err(Error::conflict(format!(
            "{} is already a mount point: unmount it first ('cbrfs umount {}')",
            mp.display(),
            mp.display()
        ))),
        Ok(_) if !nonempty => {
            let mut entries = std::fs::read_dir(mp)
                .map_err(|e| Error::invalid(format!("mount point {}: {e}", mp.display())))?;
            if entries.next().is_some() {
                return Err(Error::invalid(format!(
                    "mount point {} is not empty: mounting would hide its files; use an empty directory, or --nonempty to mount over them",
                    mp.display()
                )));
            }
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

/// The mounts of this process; an unreadable mountinfo reads as none.
fn mounts() -> MountTable {
    MountTable::read().unwrap_or_default()
}

fn absolute(mp: &Path) -> PathBuf {
    // A stale mount cannot be canonicalised: fall back to joining the cwd.
    std::fs::canonicalize(mp).unwrap_or_else(|_| {
        if mp.is_absolute() {
            mp.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(mp)
        }
    })
}

fn is_mounted(mp: &Path) -> bool {
    mounts().at(&absolute(mp)).is_some()
}

/// Mount the store at `mp`. Without `foreground`, a daemon child serves the
/// mount and this returns once the mount answers, or with the child's error.
pub fn mount(store: &Store, mp: &Path, opts: &MountOptions) -> Result<()> {
    // A bad thread count is the caller's error, told here (exit 2), not
    // by a daemon that has already left its terminal.
    mount_threads()?;
    check_mountpoint(mp, opts.nonempty)?;
    // Encrypted vaults' passwords are asked here, once each, on a terminal:
    // the daemon has none (src/engine/keys.rs).
    let keys = crate::engine::keys::ask_for_mount(store)?;
    if !opts.foreground {
        return spawn_daemon(store, mp, opts, &keys);
    }
    serve(store, mp, opts)
}

/// The variable naming the descriptor on which a mount daemon reads the
/// master keys its parent unlocked at a prompt (a pipe: never an argument
/// or a variable's value, which other processes may read).
const KEYS_FD: &str = "CBRFS_MOUNT_KEYS_FD";

/// A pipe holding `text` whose read end survives exec (no `O_CLOEXEC`,
/// cleared in the child only) and is returned; the text is at most a few
/// KiB, below a pipe's buffer, so writing it before the child runs cannot
/// block.
fn pipe_with(text: &[u8]) -> Result<std::os::fd::OwnedFd> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("create a pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors from pipe2.
    let rd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[0]) };
    let mut wr = unsafe { std::fs::File::from_raw_fd(fds[1]) };
    wr.write_all(text)
        .ctx(|| "hand the unlocked keys to the mount daemon".to_string())?;
    Ok(rd)
}

/// In a mount daemon: remember the keys the parent sent ([`KEYS_FD`]).
fn receive_keys(store: &Store) {
    if !is_daemon_child() {
        return;
    }
    let Some(fd) = std::env::var(KEYS_FD)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    std::env::remove_var(KEYS_FD);
    // SAFETY: the descriptor was handed to us by the parent for this.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut text = zeroize::Zeroizing::new(String::new());
    if f.read_to_string(&mut text).is_ok() {
        crate::engine::keys::remember_for_mount(store, &text);
    }
}

fn spawn_daemon(
    store: &Store,
    mp: &Path,
    opts: &MountOptions,
    keys: &[(String, crate::engine::keys::MountKey)],
) -> Result<()> {
    let keys_rd = if keys.is_empty() {
        None
    } else {
        Some(pipe_with(
            crate::engine::keys::keys_for_mount(keys).as_bytes(),
        )?)
    };
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("create a pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors from pipe2.
    let mut rd = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let wr = unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[1]) };
    let exe = std::env::current_exe().ctx(|| "find the cbrfs executable".to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--store")
        .arg(store.root())
        .arg("mount")
        .arg(absolute(mp))
        .arg("--foreground")
        .arg("--wait-seconds")
        .arg(opts.wait.as_secs_f64().to_string());
    if opts.allow_other {
        cmd.arg("--allow-other");
    }
    if opts.noexec {
        cmd.arg("--noexec");
    }
    if opts.nonempty {
        cmd.arg("--nonempty");
    }
    // Encrypted vaults: the daemon reads the same password file (absolute,
    // as the daemon's working directory may differ); CBRFS_PASSWORD is
    // inherited with the environment.
    if let Some(p) = crate::store::keyring::password_file() {
        cmd.arg("--password-file").arg(absolute(&p));
    }
    // Likewise the key file (key-file slots, no argon2id in the daemon).
    if let Some(p) = crate::store::keyring::key_file() {
        cmd.arg("--key-file").arg(absolute(&p));
    }
    let wr_raw = wr.into_raw_fd();
    let keys_raw = keys_rd.map(|k| k.into_raw_fd());
    if let Some(k) = keys_raw {
        cmd.env(KEYS_FD, k.to_string());
    }
    cmd.env(READY_FD, wr_raw.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls: setsid
    // and fcntl to let the write end survive exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            let flags = libc::fcntl(wr_raw, libc::F_GETFD);
            libc::fcntl(wr_raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            if let Some(k) = keys_raw {
                let flags = libc::fcntl(k, libc::F_GETFD);
                libc::fcntl(k, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
            Ok(())
        });
    }
    let child = cmd.spawn().ctx(|| "start the mount daemon".to_string());
    // SAFETY: we own wr_raw (and keys_raw); the child has its own copies now.
    unsafe { libc::close(wr_raw) };
    if let Some(k) = keys_raw {
        // SAFETY: as above.
        unsafe { libc::close(k) };
    }
    let mut child = child?;
    let mut msg = String::new();
    let _ = rd.read_to_string(&mut msg);
    if msg.trim() == "ok" {
        println!(
            "mounted {} at {} (daemon pid {}); unmount with 'cbrfs umount {}'",
            store.root().display(),
            mp.display(),
            child.id(),
            mp.display()
        );
        return Ok(());
    }
    let _ = child.wait();
    Err(Error::failed(if msg.trim().is_empty() {
        format!(
            "the mount daemon exited before the mount was ready; see {}",
            store.root().join("logs/mount.log").display()
        )
    } else {
        msg.trim().to_string()
    }))
}

fn tell_parent(msg: &str) {
    if let Some(fd) = std::env::var(READY_FD)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        // SAFETY: the descriptor was handed to us by the parent for this.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        let _ = f.write_all(msg.as_bytes());
        std::env::remove_var(READY_FD);
    }
}

/// True when this process is a mount daemon started by [`mount`].
pub fn is_daemon_child() -> bool {
    std::env::var_os(READY_FD).is_some()
}

fn serve(store: &Store, mp: &Path, opts: &MountOptions) -> Result<()> {
    receive_keys(store);
    // argon2id of each encrypted vault overlaps the session's start-up.
    crate::engine::keys::unlock_ahead_for_mount(store);
    let vfs = Vfs::new(
        store.clone(),
        VfsOptions {
            wait: opts.wait,
            uid: crate::sys::euid(),
            gid: crate::sys::egid(),
        },
    );
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        MountOption::FSName(format!("cbrfs:{}", store.root().display())),
        MountOption::Subtype("cbrfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        // A backup keeps setuid programs and device nodes as they were, also
        // after they were removed or patched at the source: through the mount
        // they must never run with their owner's privileges nor open a
        // device (issue #12, finding 2). Always, whatever the options.
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if opts.noexec {
        cfg.mount_options.push(MountOption::NoExec);
    }
    if opts.allow_other {
        cfg.acl = fuser::SessionACL::All;
    }
    cfg.n_threads = Some(mount_threads()?);
    cfg.clone_fd = true;
    let notifier = Arc::new(std::sync::OnceLock::new());
    let fs = CbrFs {
        vfs: vfs.clone(),
        notifier: notifier.clone(),
        no_opendir: false,
        no_open: false,
        allow_other: opts.allow_other,
    };
    // Signals: SIGTERM/SIGINT unmount cleanly. Block them here so every
    // thread inherits the mask, and wait for them on one thread.
    block_signals();
    let session = match fuser::Session::new(fs, mp, &cfg) {
        Ok(s) => s,
        Err(e) => {
            let err = Error::io(format!("mount {}", mp.display()), e);
            tell_parent(&format!("cbrfs: error: {err}\n"));
            return Err(err);
        }
    };
    let _ = notifier.set(session.notifier());
    let mp_abs = absolute(mp);
    // After the kernel's INIT is answered: the answer sets the read-ahead
    // to the smaller of what it was and the daemon's max_readahead (which
    // the kernel caps at the 128 KiB it offers). A stat of the mount point
    // waits for that answer (the kernel holds every request until INIT is
    // done), and is then answered by this daemon's session.
    let knob_mp = mp_abs.clone();
    let _ = std::thread::Builder::new()
        .name("cbrfs-read-ahead".into())
        .spawn(move || {
            let _ = std::fs::metadata(&knob_mp);
            raise_read_ahead(&knob_mp);
        });
    spawn_signal_thread(mp_abs.clone());
    crate::engine::scheduler::spawn(store.clone());
    log::info!("mounted {} at {}", store.root().display(), mp_abs.display());
    tell_parent("ok\n");
    let r = session.run();
    let running = vfs.running_count();
    if running > 0 {
        log::warn!("unmounted with {running} mkdir backups running: they are abandoned, nothing of them is committed");
    }
    log::info!("unmounted {}", mp_abs.display());
    r.ctx(|| format!("serve {}", mp_abs.display()))
}

/// The kernel's read-ahead on the mount, KiB. FUSE starts every mount at
/// the default 128 KiB whatever max_readahead the daemon asks, so a
/// sequential reader's requests stay at 128 KiB, a round trip (two
/// wake-ups and a reply) each (issue 17). With a larger window the kernel
/// sends requests of up to max_pages (1 MiB, from fuse/mod.rs's MAX_READ)
/// and keeps the next one in flight.
const READ_AHEAD_KB: u64 = 1024;

/// Raise the mount's read-ahead (its backing device's `read_ahead_kb` in
/// sysfs) to [`READ_AHEAD_KB`]; root only, and never lowered. The device
/// is found in mountinfo, not by a stat of the mount point: that would be
/// a request to this daemon, which does not answer yet. A failure only
/// costs speed: logged.
fn raise_read_ahead(mp: &Path) {
    if crate::sys::euid() != 0 {
        return;
    }
    let Some((major, minor)) = mounts().top_dev_at(mp) else {
        log::info!(
            "read-ahead left as it is: {} not in mountinfo",
            mp.display()
        );
        return;
    };
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    let now = std::fs::read_to_string(&knob)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    if now.is_some_and(|n| n >= READ_AHEAD_KB) {
        return;
    }
    if let Err(e) = std::fs::write(&knob, READ_AHEAD_KB.to_string()) {
        log::info!("read-ahead left as it is: {knob}: {e}");
    }
}

/// The mount's worker threads: 4, or `CBRFS_MOUNT_THREADS` (1 to 64),
/// which scripts/fuse-requests.sh sets to measure what the count costs.
/// Each request wakes the idle thread that has waited longest (the
/// kernel's exclusive wait queue is first in, first out), so with more
/// threads than cores a request often wakes a thread that is cold on
/// another core: under load (other work on both cores) one LISTXATTR round
/// trip took a median of 103 us with 4 threads, 35 us with 2. On the idle
/// 2-core host, though, `cp -a` of the kernel tree out of the mount took
/// 22.9 and 22.9 s with 4 threads against 23.5 and 24.1 s with 2
/// (alternating runs, page cache dropped): with nothing else to run, more
/// requests in flight win, so the default stays 4 (issue 17).
fn mount_threads() -> Result<usize> {
    match std::env::var("CBRFS_MOUNT_THREADS") {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=64).contains(&n) => Ok(n),
            _ => Err(Error::invalid(format!(
                "CBRFS_MOUNT_THREADS={}: give a number of mount threads from 1 to 64",
                crate::quote::quote(&v)
            ))),
        },
        Err(_) => Ok(4),
    }
}

/// The signals that unmount cleanly: SIGTERM, SIGINT, SIGHUP.
fn unmount_signals() -> libc::sigset_t {
    // SAFETY: a zeroed sigset_t is emptied and filled by libc before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

fn block_signals() {
    let set = unmount_signals();
    // SAFETY: applying a valid signal mask to this thread.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn spawn_signal_thread(mp: PathBuf) {
    let _ = std::thread::Builder::new()
        .name("cbrfs-signals".into())
        .spawn(move || {
            let set = unmount_signals();
            // SAFETY: waiting on the signals blocked in every thread.
            unsafe {
                let mut sig = 0;
                libc::sigwait(&set, &mut sig);
                log::info!("signal {sig}: unmounting {}", mp.display());
            }
            let _ = unmount_path(&mp, true);
        });
}

fn unmount_path(mp: &Path, lazy: bool) -> Result<()> {
    if crate::sys::euid() == 0 {
        let c =
            crate::sys::cstr(mp.as_os_str().as_bytes()).map_err(|e| Error::io("mount point", e))?;
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: valid C string.
        if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EBUSY) => Error::failed(format!(
                "{} is busy: a process uses it (see 'fuser -m {}'); close it, or use 'cbrfs umount --lazy'",
                mp.display(),
                mp.display()
            )),
            _ => Error::io(format!("unmount {}", mp.display()), e),
        });
    }
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd
        .arg(mp)
        .output()
        .ctx(|| "run fusermount3 (install the fuse3 package)".to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::failed(format!(
            "unmount {}: {}",
            mp.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Unmount a cbrfs mount, also a stale one whose daemon died; waits until
/// the mount is gone.
pub fn umount(mp: &Path, lazy: bool) -> Result<()> {
    let abs = absolute(mp);
    let table = mounts();
    let Some(fstype) = table.at(&abs).map(|m| &m.fstype) else {
        return Err(Error::invalid(format!("{} is not mounted", mp.display())));
    };
    if !fstype.starts_with("fuse") {
        return Err(Error::invalid(format!(
            "{} is a {fstype} mount, not a cbrfs one",
            mp.display()
        )));
    }
    let stale =
        matches!(std::fs::metadata(&abs), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN));
    unmount_path(&abs, lazy || stale)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while is_mounted(&abs) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
