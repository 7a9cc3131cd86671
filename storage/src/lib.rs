//! # ringmq-storage
//!
//! The broker's message store (docs/architecture.md §4-§5): one [`MessageStore`] per shard, holding a
//! segmented, append-only commit log of RocketMQ stored-message records, the consume queues
//! that index it by (topic, queue, offset), a checkpoint that bounds recovery, and retention.
//! Metadata (topic configs, consumer offsets) lives in [`metadata`].
//!
//! All file access goes through the I/O seam of [`io`]: [`io::UringStorage`] in production
//! (compio over io_uring, or its polling driver), [`io::MemStorage`] in crash tests.
//!
//! ## Durability contract
//!
//! - **SYNC_FLUSH** ([`FlushMode::Sync`]): [`MessageStore::append_batch`] resolves only after an
//!   fdatasync that covers the records has succeeded. Such records survive any crash (process
//!   or power) and are served intact after [`MessageStore::open`].
//! - **ASYNC_FLUSH** ([`FlushMode::Async`]): an append resolves once its records are written to
//!   the segment file (the page cache); they survive a process crash, and an fdatasync every
//!   [`StoreConfig::flush_interval`] (500 ms) bounds what a power loss can take.
//! - **Group commit**: while an fdatasync is in flight, appends collect in the next chunk and are
//!   written; when it completes, the next fdatasync, covering everything written so far, starts
//!   at once. One fsync thus acknowledges many appends.
//! - **Failure is sticky**: after a failed write or fdatasync the store refuses every further
//!   append with [`StoreError::WritesDisabled`] (the kernel may have dropped the dirty pages, so
//!   a retry could acknowledge data that is not on disk). Reopening recovers from what is on disk.
//! - **Visibility**: readers see exactly the acknowledged records: durable ones under
//!   SYNC_FLUSH, written ones under ASYNC_FLUSH. A consumer never reads a message that a crash
//!   could take back under SYNC_FLUSH.
//! - **Integrity**: the commit log is a run of chunks, each with a CRC32C over its records and a
//!   header CRC bound to its position (storage/FORMAT.md). Recovery verifies every chunk past the
//!   checkpoint and cuts the log at the first one that fails; reads check each record's framing
//!   against its consume-queue entry and never return garbage.
//! - **Disk full**: segments are preallocated, so a full disk shows up when a segment is
//!   created, not in the middle of one. Above the hard watermark appends fail with
//!   [`StoreError::DiskFull`], reads go on, and appends resume by themselves once usage falls.
//!
//! ## Modules and their dependencies
//!
//! Each module uses only modules on lower lines (and inside `recovery`, `a -> b`: a uses b);
//! nothing imports upward, so there is no cycle. `store/` is [`MessageStore`] split by concern;
//! all of its files share `store/mod.rs` (the handle and `Inner`, whose fields are private to
//! `store`), and the mutable state lives in `state.rs`, with private fields and methods.
//!
//! ```text
//! store::lifecycle  store::replica          open/close (-> recovery); a slave's side
//! store::append  store::checkpoint  store::retention
//! store::flush  store::read                 writer/flusher tasks; reads
//! store (mod.rs)                            MessageStore, Inner, fail, spare segments
//! ------------------------------------------------------------------------------------------
//! recovery (mod -> scan -> table)           files on disk -> LogState + Queues;
//!                                           table.rs: the pure decision table
//! state                                     StoreState: log, queues, failure, disk full
//! files  checkpoint  queues                 shared file steps; checkpoint document;
//!                                           queues by name + chunk indexing
//! error                                     StoreError (-> metadata's error)
//! commitlog  consume_queue  metadata  log_reader
//! format                                    every on-disk layout, checked at compile time
//! config  io  watch  signal  ack            leaves: no crate imports
//! ```

pub mod ack;
mod checkpoint;
mod commitlog;
mod config;
mod consume_queue;
mod error;
mod files;
pub mod format;
pub mod io;
mod log_reader;
pub mod metadata;
mod queues;
mod recovery;
pub mod signal;
mod state;
mod store;
mod watch;

pub use config::{FlushMode, MAX_SHARD, SHARD_SHIFT, StoreConfig};
pub use error::StoreError;
pub use log_reader::{ChunkRun, LogReadError, LogReader};
pub use store::{
    MessageStore,
    append::AppendResult,
    read::{QueueOffsets, ReadRequest, ReadResult, ReadStatus},
    retention::RetentionReport,
};
pub use watch::{LogWatch, Mark};
