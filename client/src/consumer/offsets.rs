//! Consumer offsets: the broker-side store (clustering and pull consumers), the local file store
//! (broadcasting consumers), and where a queue without a committed offset starts.
//!
//! An offset is always the **next** offset to consume (docs/protocol.md §3.6).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{BrokerRole, RETRY_TOPIC_PREFIX, StartPosition, broker_addr, master_addr};
use crate::error::{ClientError, Result};
use crate::instance::IoContext;
use crate::message::MessageQueue;
use crate::rpc::{self, IfNotCommitted};

/// Where the single-offset reads of `queue` go: its master, or a slave while the group has no
/// master (it holds the queue and a synced copy of the group offsets).
async fn read_addr(ctx: &IoContext, queue: &MessageQueue) -> Result<String> {
    broker_addr(ctx, queue, BrokerRole::Read(None)).await
}

/// The group's committed offset of `queue` (QUERY_CONSUMER_OFFSET); `None` when it has none.
/// Asked the way Java's consumers ask (the broker's default for a group that never committed).
pub(crate) async fn query(
    ctx: &IoContext,
    group: &str,
    queue: &MessageQueue,
) -> Result<Option<i64>> {
    let addr = read_addr(ctx, queue).await?;
    rpc::query_consumer_offset(
        ctx,
        &addr,
        group,
        queue,
        IfNotCommitted::BrokerDefault,
        ctx.timeout(),
    )
    .await
}

/// Stores the group's offset of `queue` at its master (UPDATE_CONSUMER_OFFSET). Only the master:
/// a slave's offsets are overwritten by its next sync from the master, so a commit there would
/// be lost (Java's `updateConsumeOffsetToBroker` also asks for the master only). Without a master
/// the commit fails and the next commit round tries again.
pub(crate) async fn update(
    ctx: &IoContext,
    group: &str,
    queue: &MessageQueue,
    offset: i64,
) -> Result<()> {
    let addr = master_addr(ctx, queue).await?;
    rpc::update_consumer_offset(ctx, &addr, group, queue, offset, ctx.timeout()).await
}

/// The queue's smallest stored offset (GET_MIN_OFFSET).
pub(crate) async fn min_offset(ctx: &IoContext, queue: &MessageQueue) -> Result<i64> {
    let addr = read_addr(ctx, queue).await?;
    rpc::min_offset(ctx, &addr, &queue.topic, queue.queue_id, ctx.timeout()).await
}

/// The queue's end: the offset the next stored message gets (GET_MAX_OFFSET).
pub(crate) async fn max_offset(ctx: &IoContext, queue: &MessageQueue) -> Result<i64> {
    let addr = read_addr(ctx, queue).await?;
    rpc::max_offset(ctx, &addr, &queue.topic, queue.queue_id, ctx.timeout()).await
}

/// The offset of the first message stored at `timestamp_ms` (SEARCH_OFFSET_BY_TIMESTAMP).
pub(crate) async fn search_offset(
    ctx: &IoContext,
    queue: &MessageQueue,
    timestamp_ms: i64,
) -> Result<i64> {
    let addr = read_addr(ctx, queue).await?;
    rpc::search_offset(ctx, &addr, queue, timestamp_ms, ctx.timeout()).await
}

/// Where to start `queue` when the group has no committed offset for it. Retry topics follow
/// RocketMQ: from the last position they start at 0 (a retry message is never old news), from a
/// timestamp at the end.
pub(crate) async fn start_offset(
    ctx: &IoContext,
    queue: &MessageQueue,
    position: StartPosition,
) -> Result<i64> {
    let retry = queue.topic.starts_with(RETRY_TOPIC_PREFIX);
    match position {
        StartPosition::First => min_offset(ctx, queue).await,
        StartPosition::Last if retry => Ok(0),
        StartPosition::Last => max_offset(ctx, queue).await,
        StartPosition::Timestamp(_) if retry => max_offset(ctx, queue).await,
        StartPosition::Timestamp(ms) => search_offset(ctx, queue, ms).await,
    }
}

/// The offset a group reads `queue` from: its committed offset, else its start position.
pub(crate) async fn initial_offset(
    ctx: &IoContext,
    group: &str,
    queue: &MessageQueue,
    position: StartPosition,
) -> Result<i64> {
    match query(ctx, group, queue).await? {
        Some(offset) => Ok(offset),
        None => start_offset(ctx, queue, position).await,
    }
}

/// One entry of the local offset file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OffsetEntry {
    topic: String,
    broker_name: String,
    queue_id: i32,
    offset: i64,
}

/// The local offset file's content.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OffsetFile {
    group: String,
    offsets: Vec<OffsetEntry>,
}

/// A broadcasting consumer's offsets, kept in a JSON file of its own (each member reads every
/// queue, so the group has no shared progress at the brokers). Written whole to a temporary file
/// that is synced and then renamed over the old one, so a crash leaves either the old or the new
/// content, never a torn file.
///
/// The file is `<dir>/<instance>/<group>/offsets.json` (Java keeps
/// `~/.rocketmq_offsets/<clientId>/<group>/offsets.json`): two broadcasting members of a group
/// on one host need different instance names or directories.
#[derive(Debug, Clone)]
pub(crate) struct LocalOffsetStore {
    path: PathBuf,
    group: String,
    offsets: BTreeMap<MessageQueue, i64>,
}

impl LocalOffsetStore {
    /// The default directory: `~/.ringmq_offsets` (the system temp directory without a home).
    pub(crate) fn default_dir() -> PathBuf {
        std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .map_or_else(std::env::temp_dir, PathBuf::from)
            .join(".ringmq_offsets")
    }

    /// The file of `group` for instance `instance` under `dir`.
    pub(crate) fn path(dir: &Path, instance: &str, group: &str) -> PathBuf {
        dir.join(instance).join(group).join("offsets.json")
    }

    /// Loads the file at `path` (a missing file is an empty store). A file that does not parse
    /// is an error rather than a silent restart from the start position, which could skip
    /// messages.
    pub(crate) fn load(path: PathBuf, group: &str) -> Result<Self> {
        let offsets = match fs::read(&path) {
            Ok(bytes) => {
                let file: OffsetFile = serde_json::from_slice(&bytes).map_err(|error| {
                    ClientError::InvalidArgument(format!(
                        "local offset file {} is unreadable ({error}); remove it to start over",
                        path.display()
                    ))
                })?;
                file.offsets
                    .into_iter()
                    .map(|entry| {
                        (
                            MessageQueue {
                                broker_name: entry.broker_name,
                                queue_id: entry.queue_id,
                                topic: entry.topic,
                            },
                            entry.offset,
                        )
                    })
                    .collect()
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(error) => {
                return Err(ClientError::InvalidArgument(format!(
                    "cannot read local offset file {}: {error}",
                    path.display()
                )));
            }
        };
        Ok(Self {
            path,
            group: group.to_owned(),
            offsets,
        })
    }

    /// The stored offset of `queue`.
    pub(crate) fn get(&self, queue: &MessageQueue) -> Option<i64> {
        self.offsets.get(queue).copied()
    }

    /// Records `offset` for `queue` (in memory; [`Self::snapshot`] + [`write_atomically`] persist).
    pub(crate) fn set(&mut self, queue: &MessageQueue, offset: i64) {
        self.offsets.insert(queue.clone(), offset);
    }

    /// The path and bytes to write, so the write itself can run off the I/O thread.
    pub(crate) fn snapshot(&self) -> (PathBuf, Vec<u8>) {
        let file = OffsetFile {
            group: self.group.clone(),
            offsets: self
                .offsets
                .iter()
                .map(|(queue, &offset)| OffsetEntry {
                    topic: queue.topic.clone(),
                    broker_name: queue.broker_name.clone(),
                    queue_id: queue.queue_id,
                    offset,
                })
                .collect(),
        };
        // Serializing plain strings and integers cannot fail.
        let bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        (self.path.clone(), bytes)
    }
}

pub(crate) use ringmq_common::fs::write_atomically;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn queue(topic: &str, id: i32) -> MessageQueue {
        MessageQueue {
            broker_name: "broker-a".into(),
            queue_id: id,
            topic: topic.into(),
        }
    }

    #[test]
    fn local_offsets_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = LocalOffsetStore::path(dir.path(), "DEFAULT", "g");
        let mut store = LocalOffsetStore::load(path.clone(), "g").unwrap();
        assert_eq!(store.get(&queue("t", 0)), None, "a missing file is empty");
        store.set(&queue("t", 0), 5);
        store.set(&queue("t", 1), 7);
        store.set(&queue("u", 0), 0);
        let (target, bytes) = store.snapshot();
        write_atomically(&target, &bytes).unwrap();
        // A second write replaces the first whole.
        store.set(&queue("t", 0), 6);
        let (target, bytes) = store.snapshot();
        write_atomically(&target, &bytes).unwrap();
        assert!(!target.with_extension("json.tmp").exists());

        let loaded = LocalOffsetStore::load(path.clone(), "g").unwrap();
        assert_eq!(loaded.get(&queue("t", 0)), Some(6));
        assert_eq!(loaded.get(&queue("t", 1)), Some(7));
        assert_eq!(loaded.get(&queue("u", 0)), Some(0));
        assert_eq!(loaded.get(&queue("u", 1)), None);

        fs::write(&path, b"{torn").unwrap();
        assert!(matches!(
            LocalOffsetStore::load(path, "g"),
            Err(ClientError::InvalidArgument(_))
        ));
    }
}
