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
    // Signals: SIGTERM/SIGINT/SIGHUP unmount cleanly. Blocked before the
    // first thread starts, so that every thread inherits the mask and one
    // waits for them: a thread started before (the vfs's read-ahead
    // helpers, the unlock ahead) took SIGTERM's default action and killed
    // the daemon, leaving a stale mount (tests/mount.sh, "SIGTERM unmounts
    // the daemon's own mount").
    block_signals();
    // Browsing, mkdir backups and policy passes share this process: each
    // task counts its requests from its own start.
    store.serve_many();
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
    // Before mounting, while `mp` is still the directory under the mount:
    // `cbrfs umount` waits for this hold to go (at this process's exit).
    hold_mountpoint(mp);
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
    let own = OwnMount::of(&session, &mp_abs);
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
    spawn_signal_thread(mp_abs.clone(), own);
    crate::engine::scheduler::spawn(store.clone());
    log::info!("mounted {} at {}", store.root().display(), mp_abs.display());
    // fuser unmounts its mount point by path when its session ends, after
    // asking whether its connection still lives; in 0.18 that check reads
    // the kernel's answer backwards (an ended connection counts as
    // mounted), so an exiting daemon unmounted whatever was mounted there
    // then: a newer mount (issue 13; tests/mount.sh, "the new mount
    // survives the old daemon's exit"). The session runs on fuser's thread
    // with the mount's handle taken out and never dropped (the process
    // ends after it); this daemon unmounts only its own mount, on a signal
    // ([`OwnMount`]).
    let mut bg = session
        .spawn()
        .ctx(|| format!("serve {}", mp_abs.display()))?;
    let done = std::thread::Builder::new()
        .spawn(|| Ok(()))
        .ctx(|| format!("serve {}", mp_abs.display()))?;
    let serving = std::mem::replace(&mut bg.guard, done);
    std::mem::forget(bg);
    tell_parent("ok\n");
    let r = serving
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the FUSE session thread panicked")));
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
/// and keeps the next one in flight. 4 MiB: four such requests in flight,
/// decoded by the mount's threads side by side, each straight into its
/// reply (vfs/file.rs reads nothing ahead for them). Against 1 MiB with
/// the daemon's own read-ahead, the daemon's CPU for a cold `cat` of the
/// binaries image fell 12-13 %, for a `cp` 14-23 %, for a `cat` of the
/// kernel-text image 14-18 % (docs/bench/session12-mnt.md).
const READ_AHEAD_KB: u64 = 4096;

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

fn spawn_signal_thread(mp: PathBuf, own: Option<OwnMount>) {
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
            let r = match &own {
                Some(own) => own.unmount(&mp),
                // Its identity unknown (logged at mount): by the path, as
                // before.
                None => unmount_path(&mp, true),
            };
            if let Err(e) = r {
                log::warn!("{e}");
            }
        });
}

/// The mount this daemon serves, told apart from any other mount at the
/// same place: a daemon whose mount was unmounted (lazily, and still
/// serving its last users) or is being torn down must never unmount a
/// newer mount made there since (issue 13: an immediate re-mount was
/// unmounted by the exiting daemon).
struct OwnMount {
    /// A second descriptor of the session's `/dev/fuse` connection: it
    /// reports an error once the kernel has ended the connection (the
    /// mount's super block is gone).
    fuse: std::os::fd::OwnedFd,
    /// The mount's device number while it lives: unique among live
    /// mounts' super blocks, and reused only after this one is gone.
    dev: (u32, u32),
}

impl OwnMount {
    /// The mount just made at `mp` by `session`. Its device is read
    /// without a request to this daemon, which does not serve yet
    /// (`AT_STATX_DONT_SYNC`: the root's attributes as the kernel holds
    /// them). None, logged, if either cannot be had.
    fn of<FS: fuser::Filesystem>(session: &fuser::Session<FS>, mp: &Path) -> Option<OwnMount> {
        use std::os::fd::AsFd;
        let fuse = session.as_fd().try_clone_to_owned();
        let dev = crate::sys::open_path_dir(mp).and_then(|fd| statx_dev(&fd));
        match (fuse, dev) {
            (Ok(fuse), Ok(dev)) => Some(OwnMount { fuse, dev }),
            (Err(e), _) | (_, Err(e)) => {
                log::warn!(
                    "{}: this mount's identity is unknown ({e}): a signal unmounts whatever is mounted there",
                    mp.display()
                );
                None
            }
        }
    }

    /// The kernel has not ended this mount's connection: its super block,
    /// and so its device number, are still its own.
    fn alive(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut p = libc::pollfd {
            fd: self.fuse.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        !(n == 1 && p.revents & (libc::POLLERR | libc::POLLNVAL) != 0)
    }

    /// Unmount (lazily) the mount at `mp` if it is this daemon's; another
    /// mount there is left alone. The mount on top at `mp` is pinned by a
    /// descriptor before it is compared, and (as root) unmounted through
    /// that descriptor, so what is unmounted is what was compared.
    fn unmount(&self, mp: &Path) -> Result<()> {
        let fd = crate::sys::open_path_dir(mp)
            .map_err(|e| Error::io(format!("unmount {}", mp.display()), e))?;
        let dev = statx_dev(&fd).map_err(|e| Error::io(format!("unmount {}", mp.display()), e))?;
        // Alive after the descriptor was taken: the pinned mount with this
        // daemon's device is this daemon's super block.
        if !self.alive() {
            log::info!(
                "{}: this mount's connection has ended: nothing to unmount",
                mp.display()
            );
            return Ok(());
        }
        if dev != self.dev {
            log::info!(
                "{}: the mount there now is not this daemon's (device {}:{}, ours {}:{}): left alone",
                mp.display(),
                dev.0,
                dev.1,
                self.dev.0,
                self.dev.1
            );
            return Ok(());
        }
        if crate::sys::euid() == 0 {
            let pinned = crate::sys::proc_fd_path(&fd);
            match unmount_path(&pinned, true) {
                Err(e) if !pinned.exists() => {
                    // No /proc: by the path, just compared.
                    log::debug!("unmount through {}: {e}", pinned.display());
                    unmount_path(mp, true)
                }
                r => r,
            }
        } else {
            // fusermount3 takes a path: the compare above narrows the race
            // to the instant between the two.
            drop(fd);
            unmount_path(mp, true)
        }
    }
}

/// The device (`major`, `minor`) of the file `fd` holds, from the inode
/// as the kernel has it: no request to a FUSE daemon (this one may not
/// serve yet).
fn statx_dev(fd: &impl std::os::fd::AsRawFd) -> std::io::Result<(u32, u32)> {
    // SAFETY: a zeroed statx is a valid buffer for the call to fill.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, empty C string with AT_EMPTY_PATH, and a
    // buffer of the right type.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE,
            &mut st,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.stx_dev_major, st.stx_dev_minor))
}

/// How long `cbrfs umount` waits for the daemon that served the mount to
/// exit once the mount is gone (it finishes the requests under way, which
/// a bucket's timeouts bound).
const DAEMON_EXIT_WAIT: Duration = Duration::from_secs(10);

/// In a mount daemon, before it mounts: a shared `flock` on the mount
/// point (the directory the mount will cover), held until this process
/// exits (the descriptor is never closed: the kernel drops the lock when
/// the process's descriptors go). `cbrfs umount` takes the lock exclusively
/// once the mount is gone, and so returns only when the daemon has exited
/// (issue 13). Shared: a daemon still serving a lazily unmounted mount and
/// the daemon of a newer mount there both hold it. A failure (a directory
/// this user may not read) only costs that wait: logged.
fn hold_mountpoint(mp: &Path) {
    let fd = match crate::sys::open_dir(mp) {
        Ok(fd) => fd,
        Err(e) => {
            log::info!(
                "{}: not held ({e}): 'cbrfs umount' will not wait for this daemon",
                mp.display()
            );
            return;
        }
    };
    use std::os::fd::{AsRawFd, IntoRawFd};
    // An umount's exclusive hold lasts an instant: a few tries.
    for _ in 0..200 {
        // SAFETY: flock on a valid descriptor.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
            let _ = fd.into_raw_fd();
            return;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            log::info!("{}: not held ({e})", mp.display());
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    log::info!("{}: not held (locked by another process)", mp.display());
}

/// After the mount at `mp` is gone: wait until no daemon holds its mount
/// point ([`hold_mountpoint`]), at most [`DAEMON_EXIT_WAIT`]. A mount point
/// that cannot be opened (another user's) is not waited for.
fn wait_for_daemons(mp: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let Ok(dir) = crate::sys::open_dir(mp) else {
        return Ok(());
    };
    let deadline = std::time::Instant::now() + DAEMON_EXIT_WAIT;
    loop {
        // SAFETY: flock on a valid descriptor; released when `dir` closes.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            let pids = crate::sys::fstat(&dir)
                .map(|st| flock_holders(st.st_dev, st.st_ino))
                .unwrap_or_default();
            let who = if pids.is_empty() {
                "the daemon that served it".to_string()
            } else {
                format!(
                    "its daemon (pid {})",
                    pids.iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(Error::failed(format!(
                "{} is unmounted, but {who} is still running after {} s (finishing requests under way, or serving a mount unmounted with --lazy until its last user leaves); a new mount there is safe: a daemon never unmounts a mount not its own",
                mp.display(),
                DAEMON_EXIT_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The processes holding a `flock` on the file with device `dev` and inode
/// `ino`, from `/proc/locks` (`ID: FLOCK ADVISORY READ PID MA:MI:INO 0
/// EOF`, device numbers in hex); none if it cannot be read.
fn flock_holders(dev: u64, ino: u64) -> Vec<u32> {
    let want = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut pids: Vec<u32> = text
        .lines()
        .filter(|l| l.contains(" FLOCK ") && !l.contains("->"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let at = f.iter().position(|t| *t == want)?;
            f.get(at.checked_sub(1)?)?.parse().ok()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
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
/// the mount is gone and, unless `lazy`, until the daemon that served it
/// has exited (at most [`DAEMON_EXIT_WAIT`]: then an error naming it).
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
    // A lazy unmount leaves the daemon serving its last users: not waited
    // for. Otherwise, return once the daemon has exited, so that a mount
    // made right after meets no exiting daemon.
    if lazy || is_mounted(&abs) {
        return Ok(());
    }
    wait_for_daemons(&abs)
}
