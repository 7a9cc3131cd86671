//! Why a broker could not start.

use std::{io, path::PathBuf};

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
