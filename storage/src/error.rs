//! The store's typed errors.

use std::{io, path::PathBuf};

use thiserror::Error;

/// Why an operation on the message store failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// An earlier write or fsync failed; the store refuses writes until it is reopened, because
    /// after a failed fsync the kernel may have dropped the dirty pages and retrying would
    /// acknowledge data that is not on disk.
    #[error("the commit log refuses writes after an earlier failure: {reason}")]
    WritesDisabled {
        /// The first failure.
        reason: String,
    },
    /// Disk usage is above the hard watermark; reads keep working and writes resume by
    /// themselves once retention or the operator frees space.
    #[error(
        "disk full: {used_percent:.1}% used on the store's filesystem (hard limit {limit_percent}%)"
    )]
    DiskFull {
        /// Usage when last measured.
        used_percent: f64,
        /// The configured hard watermark.
        limit_percent: u8,
    },
    /// A record does not fit in a segment.
    #[error("message of {bytes} bytes is larger than the store accepts ({max_bytes})")]
    MessageTooLarge {
        /// Encoded record size.
        bytes: usize,
        /// Largest record size accepted.
        max_bytes: usize,
    },
    /// The record could not be encoded (topic or properties too long).
    #[error("invalid message: {0}")]
    InvalidMessage(#[from] ringmq_protocol::RecordError),
    /// A topic name outside RocketMQ's rule (`ringmq_protocol::topic::validate_topic`: it
    /// becomes a directory name), a queue id out of range, or a batch mixing queues.
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    /// A batch with no messages.
    #[error("empty batch")]
    EmptyBatch,
    /// On-disk data failed verification where it must be valid (checkpoint, a record that a
    /// consume queue points at).
    #[error("corrupt store data in {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No record starts at the given physical offset.
    #[error("no message at physical offset {0}")]
    NoSuchMessage(u64),
    /// The store was opened with a different layout than it was created with.
    #[error("store configuration mismatch: {0}")]
    ConfigMismatch(String),
    /// A metadata file (checkpoint) could not be read or written.
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    /// Replicated data was refused: it does not continue this log, fails verification, or asks
    /// for something only an empty store can do. Nothing of the refused part was stored.
    #[error("replication refused: {0}")]
    ReplicaRefused(String),
    /// The store has been closed.
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the error means "the disk has no room": the broker answers such sends with a
    /// service-not-available code rather than a system error.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::DiskFull { .. } => true,
            Self::Io { source, .. } => source.raw_os_error() == Some(28),
            _ => false,
        }
    }
}
