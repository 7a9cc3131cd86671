//! The checkpoint file's document (storage/FORMAT.md, "Metadata files"): the JSON payload of the
//! metadata file `checkpoint` in the store directory.
//!
//! It promises: every commit-log byte below `log_offset` (a chunk boundary) is durable, and each
//! listed queue's files hold exactly its entries below `next_offset`, synced. Recovery trusts
//! that and reads only what lies past `log_offset`, so reopen time depends on the checkpoint
//! interval, not on the size of the store.

use serde::{Deserialize, Serialize};

use crate::{StoreConfig, StoreError};

/// The checkpoint file's document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Checkpoint {
    shard: u16,
    segment_bytes: u64,
    cq_entries_per_file: u64,
    /// The store was closed cleanly after this checkpoint.
    clean_shutdown: bool,
    /// Commit-log offset (a chunk boundary) below which everything is durable and indexed.
    log_offset: u64,
    queues: Vec<QueueCheckpoint>,
}

/// One queue in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueCheckpoint {
    topic: String,
    queue_id: i32,
    min_offset: u64,
    next_offset: u64,
}

impl Checkpoint {
    /// A checkpoint of a store configured by `config`.
    pub fn new(
        config: &StoreConfig,
        clean_shutdown: bool,
        log_offset: u64,
        queues: Vec<QueueCheckpoint>,
    ) -> Self {
        Self {
            shard: config.shard,
            segment_bytes: config.segment_bytes,
            cq_entries_per_file: config.cq_entries_per_file,
            clean_shutdown,
            log_offset,
            queues,
        }
    }

    /// Whether the store was closed cleanly after this checkpoint.
    pub fn clean_shutdown(&self) -> bool {
        self.clean_shutdown
    }

    /// Below this offset everything is durable and indexed.
    pub fn log_offset(&self) -> u64 {
        self.log_offset
    }

    /// The queues and their offsets.
    pub fn queues(&self) -> &[QueueCheckpoint] {
        &self.queues
    }

    /// Refuses a checkpoint written by a store with another layout: shard number, segment size
    /// and consume-queue file size fix where every byte is, so they cannot change.
    pub fn check_layout(&self, config: &StoreConfig) -> Result<(), StoreError> {
        if self.shard == config.shard
            && self.segment_bytes == config.segment_bytes
            && self.cq_entries_per_file == config.cq_entries_per_file
        {
            return Ok(());
        }
        Err(StoreError::ConfigMismatch(format!(
            "{} was created with shard {}, segment size {} and {} entries per consume-queue file; \
                 opened with shard {}, segment size {} and {}",
            config.dir.display(),
            self.shard,
            self.segment_bytes,
            self.cq_entries_per_file,
            config.shard,
            config.segment_bytes,
            config.cq_entries_per_file
        )))
    }
}

impl QueueCheckpoint {
    /// A queue whose entries `[min_offset, next_offset)` are readable; those below
    /// `next_offset` are in its files once the checkpoint is written.
    pub fn new(topic: &str, queue_id: i32, min_offset: u64, next_offset: u64) -> Self {
        Self {
            topic: topic.to_owned(),
            queue_id,
            min_offset,
            next_offset,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The queue id.
    pub fn queue_id(&self) -> i32 {
        self.queue_id
    }

    /// First readable entry.
    pub fn min_offset(&self) -> u64 {
        self.min_offset
    }

    /// Entries below this are in the queue's files.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Takes the queue's min offset as it is once its entries are flushed: retention may have
    /// moved it since the snapshot, and the files are the truth.
    pub fn set_min_offset(&mut self, min_offset: u64) {
        self.min_offset = min_offset;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn json_matches_the_documented_shape() {
        let config = StoreConfig::new("/store");
        let checkpoint = Checkpoint::new(
            &config,
            false,
            123_456,
            vec![QueueCheckpoint::new("T", 0, 0, 42)],
        );
        let json = serde_json::to_string(&checkpoint).unwrap();
        assert_eq!(
            json,
            r#"{"shard":0,"segmentBytes":1073741824,"cqEntriesPerFile":300000,"cleanShutdown":false,"logOffset":123456,"queues":[{"topic":"T","queueId":0,"minOffset":0,"nextOffset":42}]}"#
        );
        assert_eq!(
            serde_json::from_str::<Checkpoint>(&json).unwrap(),
            checkpoint
        );
    }
}
