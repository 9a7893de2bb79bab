//! "Encrypted at the source": a disk that starts with a LUKS header (CBR
//! reports the backups of encrypted disks as encrypted). A LUKS1 or LUKS2
//! header starts with the 6 bytes `LUKS\xba\xbe` at offset 0.

use crate::engine::reader::{ChunkCache, FileReader};
use crate::error::Result;
use crate::model::Node;
use crate::store::Repo;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The LUKS magic at offset 0 of a LUKS1 and a LUKS2 device.
pub const LUKS_MAGIC: &[u8; 6] = b"LUKS\xba\xbe";

/// True if `head` starts with the LUKS magic.
pub fn is_luks(head: &[u8]) -> bool {
    head.starts_with(LUKS_MAGIC)
}

/// True if the disk at `path` starts with a LUKS header now. Best effort
/// for a report: a source that cannot be read says no. Opened without
/// following a symlink and without blocking; only a block device or a
/// regular file (a disk image) is read, by the descriptor fstat checked.
pub fn source_is_luks(path: &Path) -> bool {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(_) => return false,
    };
    let ok = f
        .metadata()
        .map(|m| m.file_type().is_block_device() || m.is_file())
        .unwrap_or(false);
    let mut head = [0u8; 6];
    ok && f.read_exact_at(&mut head, 0).is_ok() && is_luks(&head)
}

/// True if the backed-up disk `node` starts with a LUKS header: read from
/// the backup's own bytes (its first chunk), so it says what the disk was
/// when it was backed up.
pub fn backup_is_luks(repo: &Repo, node: &Node) -> Result<bool> {
    let head = FileReader::new(node).read_at(repo, &ChunkCache::new(8 << 20), 0, 6)?;
    Ok(is_luks(&head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luks_magic_at_offset_zero_only() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("luks.img");
        let mut bytes = LUKS_MAGIC.to_vec();
        bytes.extend_from_slice(&[0, 2]);
        bytes.resize(4096, 0);
        std::fs::write(&img, &bytes).unwrap();
        assert!(source_is_luks(&img));
        let plain = dir.path().join("plain.img");
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        std::fs::write(&plain, &shifted).unwrap();
        assert!(!source_is_luks(&plain));
        // A symlink to a LUKS image is not followed.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&img, &link).unwrap();
        assert!(!source_is_luks(&link));
        assert!(!source_is_luks(&dir.path().join("absent")));
    }
}
