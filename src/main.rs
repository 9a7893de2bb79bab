//! The `cbrfs` binary: a thin shell around [`cbrfs::cli`].

fn main() {
    // A closed pipe (`cbrfs backup list | head`) is a normal stop, not a panic.
    // SAFETY: setting a signal disposition at start-up, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    std::process::exit(cbrfs::cli::run());
}
