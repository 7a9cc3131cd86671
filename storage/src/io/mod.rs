//! The storage I/O seam: the only way the store touches files.
//!
//! Two implementations sit behind it: [`UringStorage`] (compio, io_uring with the polling driver
//! as fallback) for production and [`MemStorage`] (in memory, fault injecting) for crash tests.
//! Everything above this module is generic over [`Storage`] and cannot tell which one it runs on.
//!
//! Buffers are owned and handed back (`(result, buffer)`), because completion-based I/O needs
//! the kernel to own the memory while an operation is in flight.

mod memory;
mod uring;

use std::{io, path::Path};

use bytes::{Bytes, BytesMut};

pub use memory::{CrashMode, FaultPlan, MemStorage};
pub use uring::UringStorage;

/// Space on the filesystem that holds a path, as `statvfs` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Size of the filesystem in bytes.
    pub total_bytes: u64,
    /// Free bytes, including blocks reserved for root (`f_bfree`).
    pub free_bytes: u64,
    /// Bytes available to an unprivileged writer (`f_bavail`).
    pub available_bytes: u64,
}

impl DiskUsage {
    /// Used fraction in percent (0..=100), the number the watermarks are compared with: what
    /// `df` shows, `used / (used + available)` with `used = total - free`.
    ///
    /// Why not `(total - available) / total`: blocks reserved for root (or held back by a
    /// quota or a thin-provisioned volume) then count as used, and a filesystem with a large
    /// reserve reads as nearly full while it has room. Seen on a VM reporting 252 GB total,
    /// 202 GB free and 41 GB available: 84% by that formula (the brokers deleted segments at
    /// their 85% watermark), 55% by this one, as `df` shows it.
    pub fn used_percent(&self) -> f64 {
        let used = self.total_bytes.saturating_sub(self.free_bytes);
        let usable = used.saturating_add(self.available_bytes);
        if usable == 0 {
            return 0.0;
        }
        // Percent with two decimals, computed in integers: exact for any disk size.
        let basis_points = u128::from(used) * 10_000 / u128::from(usable);
        f64::from(basis_points as u32) / 100.0
    }
}

/// A filesystem: opens files and changes the namespace.
///
/// Namespace operations (create, rename, remove) are durable only after
/// [`Storage::sync_dir`] on the parent; file contents only after [`StorageFile::sync_data`].
#[allow(
    async_fn_in_trait,
    reason = "the store is single-threaded per shard: futures are !Send by design"
)]
pub trait Storage: Clone + std::fmt::Debug + 'static {
    /// An open file.
    type File: StorageFile;

    /// Opens `path` for reading and writing, creating it (empty) when `create` is set.
    async fn open(&self, path: &Path, create: bool) -> io::Result<Self::File>;
    /// Removes a file.
    async fn remove(&self, path: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Creates a directory and its parents.
    async fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    async fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Names of the files in a directory, sorted; `NotFound` when it does not exist.
    async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Space of the filesystem holding `path`.
    fn disk_usage(&self, path: &Path) -> io::Result<DiskUsage>;
}

/// An open file with positional I/O.
#[allow(
    async_fn_in_trait,
    reason = "the store is single-threaded per shard: futures are !Send by design"
)]
#[allow(
    clippy::len_without_is_empty,
    reason = "a file length, not a collection"
)]
pub trait StorageFile: Clone + std::fmt::Debug + 'static {
    /// Fills `buf`'s spare capacity (from `buf.len()` to `buf.capacity()`) from `pos`.
    /// `UnexpectedEof` when the file ends first.
    async fn read_exact_at(&self, buf: BytesMut, pos: u64) -> (io::Result<()>, BytesMut);
    /// Writes all of `buf` at `pos`.
    async fn write_all_at(&self, buf: Bytes, pos: u64) -> (io::Result<()>, Bytes);
    /// `fdatasync`: everything written before the call is durable when it returns `Ok`.
    async fn sync_data(&self) -> io::Result<()>;
    /// Reserves blocks for `[0, len)` so appends do not allocate (and cannot hit ENOSPC later).
    async fn allocate(&self, len: u64) -> io::Result<()>;
    /// Sets the file length.
    async fn truncate(&self, len: u64) -> io::Result<()>;
    /// Current file length.
    #[allow(
        clippy::len_without_is_empty,
        reason = "an async length is not a collection's len"
    )]
    async fn len(&self) -> io::Result<u64>;
}

#[cfg(test)]
mod disk_usage_tests {
    use super::DiskUsage;

    #[test]
    fn reserved_blocks_do_not_count_as_used() {
        let gib = 1 << 30;
        let usage = DiskUsage {
            total_bytes: 252 * gib,
            free_bytes: 202 * gib,
            available_bytes: 41 * gib,
        };
        assert!(
            (usage.used_percent() - 54.94).abs() < 0.01,
            "{}",
            usage.used_percent()
        );
        let full = DiskUsage {
            total_bytes: 100,
            free_bytes: 5,
            available_bytes: 0,
        };
        assert!((full.used_percent() - 100.0).abs() < f64::EPSILON);
        let plain = DiskUsage {
            total_bytes: 100,
            free_bytes: 10,
            available_bytes: 10,
        };
        assert!((plain.used_percent() - 90.0).abs() < f64::EPSILON);
    }
}
