//! The `cbrfs` binary: a thin shell around [`cbrfs::cli`].

fn main() {
    // A closed pipe (`cbrfs backup list | head`) is a normal stop, not a panic.
    // SAFETY: setting a signal disposition at start-up, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    raise_fd_limit();
    fix_mmap_threshold();
    std::process::exit(cbrfs::cli::run());
}

/// Restore keeps one descriptor per directory level open (so no path is
/// resolved twice and no planted symlink is followed), and the mount keeps
/// packs and indexes mapped: raise the soft limit on open files to the hard
/// limit, as a deep tree (1,000 levels) needs more than the usual 1,024.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Allocations of 256 KiB or more get pages of their own, returned to the
/// system when freed. glibc's default raises that threshold to the size of
/// any such block freed, up to 32 MiB: once a 21 MiB pack buffer was freed,
/// the readers' megabyte buffers came from per-thread arenas that keep what
/// they free. A first backup of a kernel tree (78,579 files) peaked at
/// 260 MB resident with the default and 91 MB with this.
fn fix_mmap_threshold() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt at start-up, before any thread allocates.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}
