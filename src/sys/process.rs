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

/// Ask the kernel to back the spare capacity of `buf` (the part past its
/// length, whole pages only) with transparent huge pages where it can,
/// when they are on for such requests (`madvise` mode). A large buffer
/// that is filled once (a pack being written) then takes one page fault
/// per 2 MiB instead of one per 4 KiB. Only a hint: the buffer's contents
/// and its owner's view of it do not change, and a refusal (no THP in
/// this kernel) is ignored.
pub fn advise_huge_pages(buf: &mut Vec<u8>) {
    let page = 4096usize;
    let spare = buf.spare_capacity_mut();
    let start = spare.as_mut_ptr() as usize;
    let Some(end) = start.checked_add(spare.len()) else {
        return;
    };
    let (from, to) = (start.next_multiple_of(page), end & !(page - 1));
    if to <= from {
        return;
    }
    // SAFETY: [from, to) lies within `buf`'s allocation (its spare
    // capacity, rounded inward to whole pages), which `buf` owns and keeps
    // mapped while it lives; MADV_HUGEPAGE changes only how the kernel
    // backs those pages, never their contents or the mapping.
    unsafe {
        libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
    }
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
