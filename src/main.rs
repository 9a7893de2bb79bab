//! The `cbrfs` binary: a thin shell around [`cbrfs::cli`].

fn main() {
    // A closed pipe (`cbrfs backup list | head`) is a normal stop, not a panic.
    // SAFETY: setting a signal disposition at start-up, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    raise_fd_limit();
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
