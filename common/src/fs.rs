//! Replacing a small file atomically and durably, with blocking `std::fs` calls.
//!
//! The steps: write a temporary beside the target, `fsync` it, rename it over the target, `fsync`
//! the directory. A crash at any point leaves the old file or the new one, never a mix; the
//! rename is durable once the directory sync returns. The store's metadata files follow the same
//! steps through the store's I/O seam, where faults can be injected.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically and durably, creating missing parent directories.
///
/// The temporary is `path` with `.tmp` appended; a leftover one from a crashed earlier write is
/// overwritten. On error the file at `path` is unchanged.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    fs::create_dir_all(&dir)?;
    let temp = temp_path(path);
    {
        let mut file = fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&temp, path)?;
    fs::File::open(&dir)?.sync_all()
}

/// The temporary a write of `path` goes through: `name.tmp` beside it.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn replaces_and_creates_parents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/offsets.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn leftover_temporary_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shards");
        fs::write(temp_path(&path), vec![b'x'; 4096]).unwrap();
        write_atomically(&path, b"2\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"2\n");
    }

    #[test]
    fn error_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomically(&path, b"old").unwrap();
        // The temporary's name is taken by a directory: the write fails before the rename.
        fs::create_dir(temp_path(&path)).unwrap();
        assert!(write_atomically(&path, b"new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }
}
