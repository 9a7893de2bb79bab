//! What a resource's data takes, for the capacity rule: a directory tree's
//! files, a disk's size, a server's members. Below both `vaults` and
//! `servers`, which use neither each other for it (a server's size summed
//! its members with the vaults' tree walk, and vaults asked servers for a
//! server's size: a cycle).

use crate::catalog::{MemberKind, ServerConfig};
use std::path::Path;

/// Sum of the apparent sizes of the files under `dir` (what a resource's
/// data takes, for the capacity rule). Walked as the backup walks: from
/// directory descriptors, each subdirectory opened relative to its parent
/// with no symlink followed, each entry stat'ed relative to its directory,
/// so a directory swapped for a symlink while it runs is not followed.
pub fn tree(dir: &Path) -> u64 {
    use std::sync::Arc;
    let mut total = 0u64;
    let Ok(root) = crate::sys::open_no_symlinks(dir, libc::O_RDONLY | libc::O_DIRECTORY) else {
        return 0;
    };
    // Directories to list; each is opened when its turn comes, so the
    // descriptors held stay few whatever the tree's breadth.
    let mut stack: Vec<(Arc<std::os::fd::OwnedFd>, Vec<u8>)> = Vec::new();
    let mut list = |fd: Arc<std::os::fd::OwnedFd>,
                    stack: &mut Vec<(Arc<std::os::fd::OwnedFd>, Vec<u8>)>| {
        let Ok(entries) = crate::sys::list_dir(&fd) else {
            return;
        };
        for (name, _) in entries {
            let Ok(st) = crate::sys::fstatat_nofollow(&fd, &name) else {
                continue;
            };
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => stack.push((fd.clone(), name)),
                libc::S_IFREG => total = total.saturating_add(st.st_size as u64),
                _ => {}
            }
        }
    };
    list(Arc::new(root), &mut stack);
    while let Some((parent, name)) = stack.pop() {
        if let Ok(fd) = crate::sys::open_dir_at(&parent, &name) {
            list(Arc::new(fd), &mut stack);
        }
    }
    total
}

/// Total size of a server's members (apparent), leaving out `exclude`.
pub fn server(s: &ServerConfig, exclude: &[String]) -> u64 {
    s.members
        .iter()
        .filter(|m| !exclude.contains(&m.name))
        .map(|m| match m.kind {
            MemberKind::Disk => crate::sys::device_size(Path::new(&m.path)).unwrap_or(0),
            MemberKind::Directory => tree(Path::new(&m.path)),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resource's size counts its regular files, at any depth, and never
    /// what a symlink in it points to (a user's link to /usr must not
    /// count /usr against the vault's capacity).
    #[test]
    fn tree_counts_files_and_follows_no_symlink() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let other = t.path().join("other");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(src.join("top"), vec![1u8; 100]).unwrap();
        std::fs::write(src.join("a/b/deep"), vec![1u8; 23]).unwrap();
        std::fs::write(other.join("big"), vec![1u8; 10_000]).unwrap();
        std::os::unix::fs::symlink(&other, src.join("a/link")).unwrap();
        std::os::unix::fs::symlink(other.join("big"), src.join("filelink")).unwrap();
        assert_eq!(tree(&src), 123);
        // A path that is itself a symlink is not walked either.
        std::os::unix::fs::symlink(&other, t.path().join("via")).unwrap();
        assert_eq!(tree(&t.path().join("via")), 0);
    }
}
