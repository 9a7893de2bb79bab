//! The `cbrfs` binary: a thin shell around [`cbrfs::cli`].

fn main() {
    // A closed pipe (`cbrfs backup list | head`) is a normal stop, not a panic.
    // SAFETY: setting a signal disposition at start-up, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(cbrfs::cli::run());
}
