//! Store configuration.

use std::{path::PathBuf, time::Duration};

use ringmq_common::Clock;

/// When an append is acknowledged (RocketMQ's `flushDiskType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// Acknowledge after an fdatasync covers the record (group commit).
    Sync,
    /// Acknowledge once the record is written to the file; fdatasync every
    /// [`StoreConfig::flush_interval`].
    Async,
}

/// Bits of a physical offset that hold the shard number: offsets are unique across the shards
/// of one broker, so a message id (store host + physical offset) names one record.
pub const SHARD_SHIFT: u32 = 48;

/// The largest shard number: the shard lives in bits 48..63 and offsets stay positive `i64`.
pub const MAX_SHARD: u16 = (1 << 15) - 1;

/// Configuration of one shard's store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of this shard's commit log, consume queues and checkpoint.
    pub dir: PathBuf,
    /// Shard number; the high bits of every physical offset this store assigns.
    pub shard: u16,
    /// Commit-log segment size (RocketMQ `mappedFileSizeCommitLog`, default 1 GiB).
    pub segment_bytes: u64,
    /// Consume-queue entries per consume-queue file (RocketMQ default 300,000 = 6,000,000 bytes).
    pub cq_entries_per_file: u64,
    /// Flush mode.
    pub flush_mode: FlushMode,
    /// `ASYNC_FLUSH` fdatasync period (RocketMQ `flushIntervalCommitLog`, 500 ms).
    pub flush_interval: Duration,
    /// `ASYNC_FLUSH`: also fdatasync as soon as this many bytes are written but not yet durable.
    /// Small, frequent syncs keep each one short; one sync of everything written in 500 ms
    /// (tens of MB at full speed) stalls writes to the file for tens of milliseconds.
    pub flush_bytes: u64,
    /// How often consume queues are flushed and the checkpoint written. Recovery scans at most
    /// what was appended in this interval, so it bounds restart time.
    pub checkpoint_interval: Duration,
    /// Largest chunk (one write) in bytes; a larger open chunk is sealed and a new one started.
    pub max_chunk_bytes: usize,
    /// Bytes appended but not yet written beyond which appends wait for the writer.
    pub max_pending_bytes: usize,
    /// Bytes of recently written commit log kept in memory for tail reads.
    pub read_cache_bytes: usize,
    /// Consume-queue entries per queue kept in memory for tail reads.
    pub cq_cache_entries: usize,
    /// Age after which whole segments are deleted (RocketMQ `fileReservedTime`, 72 h).
    pub retention: Duration,
    /// Disk usage (percent) above which the oldest segments are deleted whatever their age.
    pub high_watermark_percent: u8,
    /// Disk usage (percent) above which appends fail with [`crate::StoreError::DiskFull`].
    pub hard_watermark_percent: u8,
    /// How often retention and the disk watermarks are checked.
    pub retention_check_interval: Duration,
    /// Reserve each segment's blocks when it is created (fallocate), so an append can never
    /// hit ENOSPC in the middle of a segment.
    pub preallocate: bool,
    /// Wall-clock time: the store timestamp of appended records and the age retention compares
    /// against. [`Clock::system`] by default; a test sets a [`Clock::manual`] and moves it
    /// instead of sleeping.
    pub clock: Clock,
}

impl StoreConfig {
    /// Defaults of the design for a store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            shard: 0,
            segment_bytes: 1 << 30,
            cq_entries_per_file: 300_000,
            flush_mode: FlushMode::Async,
            flush_interval: Duration::from_millis(500),
            flush_bytes: 4 << 20,
            checkpoint_interval: Duration::from_secs(1),
            max_chunk_bytes: 4 << 20,
            max_pending_bytes: 32 << 20,
            read_cache_bytes: 64 << 20,
            cq_cache_entries: 1024,
            retention: Duration::from_secs(72 * 3600),
            high_watermark_percent: 85,
            hard_watermark_percent: 90,
            retention_check_interval: Duration::from_secs(10),
            preallocate: true,
            clock: Clock::system(),
        }
    }

    /// First physical offset of this shard.
    pub const fn base_offset(&self) -> u64 {
        (self.shard as u64) << SHARD_SHIFT
    }
}
