//! Topic rules of the broker: system topics, auto-creation from the template topic, the
//! retry/dead-letter topics (docs/protocol.md §3.4 "Broker-side send semantics", §3.7, §3.8) and
//! which shard owns a queue.
//!
//! The name rule itself and the reserved names live in `ringmq_protocol::topic` (clients, the
//! broker and the store must agree on them). Pure logic over a snapshot of the topic table; the
//! table itself is owned by shard 0's metadata service (`crate::metadata`), which persists it
//! and publishes new snapshots.

use std::collections::HashMap;

use ringmq_common::fnv1a_64;
use ringmq_protocol::{
    body::{DataVersion, TopicConfig, TopicConfigSerializeWrapper, perm},
    topic::{AUTO_CREATE_TEMPLATE, DLQ_PREFIX, RETRY_PREFIX},
};

/// What the data path needs of a topic's config: copied out of the snapshot without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLayout {
    pub perm: i32,
    pub read_queue_nums: i32,
    pub write_queue_nums: i32,
}

impl QueueLayout {
    pub fn of(config: &TopicConfig) -> Self {
        Self {
            perm: config.perm,
            read_queue_nums: config.read_queue_nums,
            write_queue_nums: config.write_queue_nums,
        }
    }
}

/// The broker's topics as every shard sees them.
#[derive(Debug, Clone, Default)]
pub struct TopicSnapshot {
    pub topics: HashMap<String, TopicConfig>,
    pub data_version: DataVersion,
}

impl TopicSnapshot {
    pub fn get(&self, topic: &str) -> Option<&TopicConfig> {
        self.topics.get(topic)
    }

    pub fn layout(&self, topic: &str) -> Option<QueueLayout> {
        self.topics.get(topic).map(QueueLayout::of)
    }

    /// The REGISTER_BROKER body's topic table.
    pub fn to_wrapper(&self) -> TopicConfigSerializeWrapper {
        TopicConfigSerializeWrapper {
            data_version: self.data_version,
            topic_config_table: self
                .topics
                .iter()
                .map(|(name, config)| (name.clone(), config.clone()))
                .collect(),
        }
    }
}

/// The retry topic of a consumer group.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_PREFIX}{group}")
}

/// The dead-letter topic of a consumer group.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

/// A topic with one read/write queue (retry and dead-letter topics).
pub fn single_queue_topic(topic: &str) -> TopicConfig {
    TopicConfig {
        topic_name: topic.to_owned(),
        read_queue_nums: 1,
        write_queue_nums: 1,
        perm: perm::READ | perm::WRITE,
        ..TopicConfig::default()
    }
}

/// The template topic as the broker creates it when auto-creation is on.
pub fn template_topic(queue_nums: i32) -> TopicConfig {
    TopicConfig {
        topic_name: AUTO_CREATE_TEMPLATE.to_owned(),
        read_queue_nums: queue_nums,
        write_queue_nums: queue_nums,
        perm: perm::READ | perm::WRITE | perm::INHERIT,
        ..TopicConfig::default()
    }
}

/// The config a send to the unknown `topic` creates, if it may create one: retry topics get one
/// queue; other topics inherit from `template` when it exists and carries the INHERIT bit, with
/// `min(requested queues, template write queues)` queues and the template's perm minus INHERIT.
pub fn auto_create_config(
    snapshot: &TopicSnapshot,
    topic: &str,
    template: &str,
    requested_queues: i32,
) -> Option<TopicConfig> {
    if topic.starts_with(RETRY_PREFIX) {
        return Some(single_queue_topic(topic));
    }
    let template = snapshot.get(template)?;
    if !perm::is_inherited(template.perm) {
        return None;
    }
    let queues = requested_queues.clamp(1, template.write_queue_nums.max(1));
    Some(TopicConfig {
        topic_name: topic.to_owned(),
        read_queue_nums: queues,
        write_queue_nums: queues,
        perm: template.perm & !perm::INHERIT,
        topic_filter_type: template.topic_filter_type,
        ..TopicConfig::default()
    })
}

/// Which shard owns queue `queue_id` of `topic`: a fixed function of the name, the queue and the
/// shard count, so every shard computes the same answer without asking. Consecutive queues of a
/// topic land on consecutive shards, which spreads a topic's load evenly.
pub fn owner_shard(topic: &str, queue_id: i32, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    // FNV-1a: stable across runs and builds (the store's layout depends on it; the outputs are
    // pinned by `owner_shard_is_pinned`). A negative queue id wraps to its u32 bit pattern.
    let hash = fnv1a_64(topic.as_bytes());
    (hash.wrapping_add(u64::from(queue_id as u32)) % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_creation_inherits_from_the_template() {
        let mut snapshot = TopicSnapshot::default();
        assert_eq!(
            auto_create_config(&snapshot, "t", AUTO_CREATE_TEMPLATE, 4),
            None
        );
        snapshot
            .topics
            .insert(AUTO_CREATE_TEMPLATE.into(), template_topic(8));
        let created = auto_create_config(&snapshot, "t", AUTO_CREATE_TEMPLATE, 16).unwrap();
        assert_eq!((created.read_queue_nums, created.write_queue_nums), (8, 8));
        assert_eq!(created.perm, perm::READ | perm::WRITE);
        let retry = auto_create_config(&snapshot, "%RETRY%g", "none", 4).unwrap();
        assert_eq!(retry.write_queue_nums, 1);
    }

    #[test]
    fn queues_spread_over_shards() {
        let mut counts = [0usize; 4];
        for queue in 0..8 {
            counts[owner_shard("BenchTopic", queue, 4)] += 1;
        }
        assert_eq!(counts, [2, 2, 2, 2]);
        assert_eq!(owner_shard("anything", 5, 1), 0);
    }

    /// Which shard owns a queue decides where its data lives on disk: these outputs were
    /// computed with the original hand-written FNV-1a loop and must never change.
    #[test]
    fn owner_shard_is_pinned() {
        for (topic, queue_id, shards, owner) in [
            ("TopicTest", 0, 2, 0),
            ("TopicTest", 3, 2, 1),
            ("TopicTest", 7, 4, 3),
            ("BenchTopic", 0, 4, 0),
            ("BenchTopic", 5, 4, 1),
            ("%RETRY%billing", 0, 3, 1),
            ("%DLQ%billing", 0, 3, 0),
            ("Orders", 1, 3, 0),
            ("Orders", 2, 8, 6),
            ("a", 0, 7, 5),
            ("", 0, 5, 2),
            ("TopicTest", -1, 3, 2),
            ("TopicTest", i32::MAX, 6, 3),
            ("x", 1023, 64, 6),
        ] {
            assert_eq!(
                owner_shard(topic, queue_id, shards),
                owner,
                "owner_shard({topic:?}, {queue_id}, {shards})"
            );
        }
    }
}
