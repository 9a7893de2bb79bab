//! The process: its effective ids, and whether another process is alive.

use std::io;

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() }
}

/// The effective group id.
pub fn egid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::getegid() }
}

/// True if process `pid` exists (it may belong to another user: EPERM
/// says it exists). A pid read from a damaged file may be 0 or above
/// `i32::MAX`, which `kill` takes for the caller's process group, another
/// group or every process (and would answer "alive" for ever): neither is
/// a process that could have written the file.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a pid that can name one live process is alive.
    #[test]
    fn pids_alive_and_impossible() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
        assert!(!pid_alive(i32::MAX as u32 + 1));
    }
}
