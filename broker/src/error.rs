//! Errors: why a broker could not start ([`BrokerError`], public), and the typed failures that
//! cross shard boundaries inside it (topic-table edits, appends on another shard, a shard's
//! start-up). Modules with failures of their own keep their enums beside their code
//! (`rpc::RpcError`, `ha::slave::ReplicationError`, `ha::master::Refusal`,
//! `ha::metadata_sync::SyncError`).
//!
//! The `Display` texts are what clients read in remarks and operators in logs: changing one is a
//! behaviour change.

use std::{io, path::PathBuf};

use ringmq_storage::{StoreError, metadata::MetadataError};
use thiserror::Error;

use crate::config::ConfigError;

/// A failure to start (or cleanly stop) the broker.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BrokerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the store at {dir} was created with shards={recorded}; this broker is configured with \
         shards={configured}. Queue ownership depends on the shard count: start with --shards {recorded}"
    )]
    ShardCountMismatch {
        dir: PathBuf,
        recorded: usize,
        configured: usize,
    },
    /// `reason` is the shard's typed start-up failure, rendered (the field stays a `String` so
    /// the public API does not expose the broker's internal error types).
    #[error("shard {shard} failed to start: {reason}")]
    Shard { shard: usize, reason: String },
}

impl BrokerError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// Why a shard thread could not start serving (reported to `Broker::start` over the shard's
/// ready channel).
#[derive(Debug, Error)]
pub(crate) enum ShardStartError {
    #[error("cannot start the shard's runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("cannot open the store: {0}")]
    OpenStore(#[source] StoreError),
    #[error("cannot load consumer offsets: {0}")]
    LoadOffsets(#[source] MetadataError),
    #[error(transparent)]
    TopicTable(#[from] TopicTableError),
    #[error("cannot register a listener: {0}")]
    Listener(#[source] io::Error),
}

/// Why shard 0 could not open the broker-wide topic table.
#[derive(Debug, Error)]
pub(crate) enum TopicTableError {
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot load the topic table: {0}")]
    Load(#[source] MetadataError),
    #[error("cannot save the topic table: {0}")]
    Save(#[source] MetadataError),
}

/// Why a change to the topic table did not happen. Handlers answer it with SYSTEM_ERROR and
/// this text as the remark.
#[derive(Debug, Error)]
pub(crate) enum TopicEditError {
    /// The table's writer could not persist the change; the table is unchanged.
    #[error("cannot save the topic table: {0}")]
    Save(#[source] MetadataError),
    /// The writer (shard 0) is gone: the broker is stopping.
    #[error("the broker is stopping")]
    Stopping,
    /// The writer reported success but the new snapshot lacks the topic (a concurrent delete).
    #[error("topic[{0}] was not created")]
    NotCreated(String),
}

/// Why a record built on one shard was not appended by the shard owning its queue.
#[derive(Debug, Error)]
pub(crate) enum AppendError {
    /// Its topic could not be created.
    #[error(transparent)]
    Topic(#[from] TopicEditError),
    /// The owning shard's store refused it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The owning shard is gone: the broker is stopping.
    #[error("the broker is stopping")]
    Stopping,
}
