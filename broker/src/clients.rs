//! Producer and consumer registrations (HEART_BEAT, UNREGISTER_CLIENT, closed connections),
//! the subscriptions pulls fall back on, and ordered-consumption queue locks.
//!
//! Control plane: a client heartbeats every 30 s, so this state sits behind one mutex in
//! [`crate::shared::BrokerShared`]. The only part the data path reads, the subscriptions, is
//! published as a [`SubscriptionTable`] snapshot that shards read without locking.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use ringmq_protocol::{
    body::{ConsumerData, HeartbeatData, MessageModel, MessageQueue, SubscriptionData},
    message::tags_hash,
};

/// A connection, broker-wide: the shard that accepted it and its number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId {
    pub shard: usize,
    pub connection: u64,
}

/// What a pull filters with: `None` = every message, else the tags hashes to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub tags_hashes: Option<Vec<i64>>,
    pub sub_version: i64,
    pub broadcasting: bool,
}

impl Filter {
    /// The filter of a tag expression (`*`, empty: all; else `A || B`). `None` when the
    /// expression type is not TAG (SQL92 filtering is not supported).
    pub fn from_expression(
        expression: &str,
        expression_type: Option<&str>,
        sub_version: i64,
    ) -> Option<Self> {
        if expression_type
            .is_some_and(|t| !t.eq_ignore_ascii_case(SubscriptionData::EXPRESSION_TAG))
        {
            return None;
        }
        let expression = expression.trim();
        let tags_hashes = if expression.is_empty() || expression == SubscriptionData::SUB_ALL {
            None
        } else {
            Some(
                expression
                    .split("||")
                    .map(str::trim)
                    .filter(|tag| !tag.is_empty())
                    .map(tags_hash)
                    .collect(),
            )
        };
        Some(Self {
            tags_hashes,
            sub_version,
            broadcasting: false,
        })
    }

    fn from_subscription(data: &SubscriptionData, model: MessageModel) -> Option<Self> {
        let mut filter = Self::from_expression(
            &data.sub_string,
            Some(&data.expression_type),
            data.sub_version,
        )?;
        filter.broadcasting = model == MessageModel::Broadcasting;
        Some(filter)
    }
}

/// Subscriptions registered by heartbeats: group -> topic -> filter.
pub type SubscriptionTable = HashMap<String, HashMap<String, Filter>>;

#[derive(Debug)]
struct Channel {
    client_id: String,
    last_seen: Instant,
}

#[derive(Debug, Default)]
struct ConsumerGroup {
    channels: BTreeMap<ChannelId, Channel>,
    /// Topic -> the subscription with the highest `subVersion` any member sent.
    subscriptions: BTreeMap<String, SubscriptionData>,
    model: MessageModel,
}

impl ConsumerGroup {
    fn client_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .channels
            .values()
            .map(|c| c.client_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// Merges one member's subscriptions into its group's, as RocketMQ's broker does: a new topic
/// is added; a subscription with a higher `subVersion` replaces the registered one and an older
/// one never does; topics the heartbeat no longer lists are removed. Members of one group stamp
/// their subscriptions with their own clocks (and again at every rebalance), so taking each
/// heartbeat as it comes would move the registered version back and forth: a pull carrying the
/// newer version is refused SUBSCRIPTION_NOT_LATEST until that member heartbeats again, and every
/// heartbeat would look like a change worth a rebalance of the whole group.
///
/// Returns (a topic was added or removed: the group must rebalance, a filter changed).
fn merge_subscriptions(
    registered: &mut BTreeMap<String, SubscriptionData>,
    sent: &[SubscriptionData],
) -> (bool, bool) {
    let mut topics_changed = false;
    let mut filters_changed = false;
    for subscription in sent {
        match registered.get_mut(&subscription.topic) {
            None => {
                registered.insert(subscription.topic.clone(), subscription.clone());
                topics_changed = true;
                filters_changed = true;
            }
            Some(old) if subscription.sub_version > old.sub_version => {
                // Published even when only the version moved: pulls compare it.
                *old = subscription.clone();
                filters_changed = true;
            }
            Some(_) => {}
        }
    }
    let before = registered.len();
    registered.retain(|topic, _| sent.iter().any(|s| &s.topic == topic));
    if registered.len() != before {
        topics_changed = true;
        filters_changed = true;
    }
    (topics_changed, filters_changed)
}

/// Tells the caller which channels must hear NOTIFY_CONSUMER_IDS_CHANGED for which group.
pub type Notifications = Vec<(String, Vec<ChannelId>)>;

/// Every registered client.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    consumers: HashMap<String, ConsumerGroup>,
    producers: HashMap<String, BTreeMap<ChannelId, Channel>>,
    subscriptions_changed: bool,
}

impl ClientRegistry {
    /// Applies a HEART_BEAT. Returns the groups whose members or subscriptions changed, with
    /// the channels to notify (every channel of the group, the sender included, as Java does).
    pub fn heartbeat(
        &mut self,
        channel: ChannelId,
        data: &HeartbeatData,
        now: Instant,
    ) -> Notifications {
        let mut notify = Vec::new();
        for consumer in &data.consumer_data_set {
            if self.register_consumer(channel, &data.client_id, consumer, now) {
                let group = &self.consumers[&consumer.group_name];
                notify.push((
                    consumer.group_name.clone(),
                    group.channels.keys().copied().collect(),
                ));
            }
        }
        for producer in &data.producer_data_set {
            self.producers
                .entry(producer.group_name.clone())
                .or_default()
                .insert(
                    channel,
                    Channel {
                        client_id: data.client_id.clone(),
                        last_seen: now,
                    },
                );
        }
        notify
    }

    /// True when the group's channel set or subscription set changed.
    fn register_consumer(
        &mut self,
        channel: ChannelId,
        client_id: &str,
        data: &ConsumerData,
        now: Instant,
    ) -> bool {
        let group = self.consumers.entry(data.group_name.clone()).or_default();
        let new_channel = if let Some(existing) = group.channels.get_mut(&channel) {
            existing.last_seen = now;
            false
        } else {
            group.channels.insert(
                channel,
                Channel {
                    client_id: client_id.to_owned(),
                    last_seen: now,
                },
            );
            true
        };
        let (topics_changed, filters_changed) =
            merge_subscriptions(&mut group.subscriptions, &data.subscription_data_set);
        let model_changed = group.model != data.message_model;
        group.model = data.message_model;
        if filters_changed || model_changed {
            self.subscriptions_changed = true;
        }
        new_channel || topics_changed
    }

    /// UNREGISTER_CLIENT: removes the channel from the named groups.
    pub fn unregister(
        &mut self,
        channel: ChannelId,
        producer_group: Option<&str>,
        consumer_group: Option<&str>,
    ) -> Notifications {
        if let Some(group) = producer_group.and_then(|g| self.producers.get_mut(g)) {
            group.remove(&channel);
        }
        let mut notify = Vec::new();
        if let Some(name) = consumer_group {
            self.remove_consumer_channel(name, channel, &mut notify);
        }
        notify
    }

    fn remove_consumer_channel(
        &mut self,
        name: &str,
        channel: ChannelId,
        notify: &mut Notifications,
    ) {
        let Some(group) = self.consumers.get_mut(name) else {
            return;
        };
        if group.channels.remove(&channel).is_none() {
            return;
        }
        if group.channels.is_empty() {
            self.consumers.remove(name);
            self.subscriptions_changed = true;
        } else {
            notify.push((name.to_owned(), group.channels.keys().copied().collect()));
        }
    }

    /// A connection closed: it leaves every group.
    pub fn connection_closed(&mut self, channel: ChannelId) -> Notifications {
        for group in self.producers.values_mut() {
            group.remove(&channel);
        }
        self.producers.retain(|_, group| !group.is_empty());
        let names: Vec<String> = self
            .consumers
            .iter()
            .filter(|(_, group)| group.channels.contains_key(&channel))
            .map(|(name, _)| name.clone())
            .collect();
        let mut notify = Vec::new();
        for name in names {
            self.remove_consumer_channel(&name, channel, &mut notify);
        }
        notify
    }

    /// Drops channels silent for longer than `expiry`; returns them and who to notify.
    pub fn expire(&mut self, now: Instant, expiry: Duration) -> (Vec<ChannelId>, Notifications) {
        let mut expired = Vec::new();
        for group in self.consumers.values() {
            for (id, channel) in &group.channels {
                if now.duration_since(channel.last_seen) > expiry {
                    expired.push(*id);
                }
            }
        }
        for group in self.producers.values_mut() {
            group.retain(|id, channel| {
                let keep = now.duration_since(channel.last_seen) <= expiry;
                if !keep {
                    expired.push(*id);
                }
                keep
            });
        }
        self.producers.retain(|_, group| !group.is_empty());
        expired.sort();
        expired.dedup();
        let mut notify = Vec::new();
        for id in &expired {
            let names: Vec<String> = self
                .consumers
                .iter()
                .filter(|(_, group)| group.channels.contains_key(id))
                .map(|(name, _)| name.clone())
                .collect();
            for name in names {
                self.remove_consumer_channel(&name, *id, &mut notify);
            }
        }
        (expired, notify)
    }

    /// The client ids of a group's live channels (GET_CONSUMER_LIST_BY_GROUP).
    pub fn consumer_ids(&self, group: &str) -> Option<Vec<String>> {
        self.consumers.get(group).map(ConsumerGroup::client_ids)
    }

    /// Counts for metrics: (consumer groups, producer groups).
    pub fn group_counts(&self) -> (usize, usize) {
        (self.consumers.len(), self.producers.len())
    }

    /// The subscription table, if it changed since the last call.
    pub fn take_subscriptions_if_changed(&mut self) -> Option<SubscriptionTable> {
        if !std::mem::take(&mut self.subscriptions_changed) {
            return None;
        }
        let mut table = SubscriptionTable::new();
        for (name, group) in &self.consumers {
            let topics = table.entry(name.clone()).or_default();
            for data in group.subscriptions.values() {
                if let Some(filter) = Filter::from_subscription(data, group.model) {
                    topics.insert(data.topic.clone(), filter);
                }
            }
        }
        Some(table)
    }
}

/// Ordered-consumption locks (LOCK_BATCH_MQ / UNLOCK_BATCH_MQ): a queue is held by one client
/// of a group for a lease, renewed by locking again (docs/protocol.md §3.10).
#[derive(Debug, Default)]
pub struct QueueLocks {
    /// (group, topic, broker, queue) -> (client id, lease end).
    held: HashMap<(String, String, String, i32), (String, Instant)>,
}

impl QueueLocks {
    /// Locks what it can for `client_id`; returns the queues it now holds.
    pub fn lock(
        &mut self,
        group: &str,
        client_id: &str,
        queues: &[MessageQueue],
        now: Instant,
        lease: Duration,
    ) -> Vec<MessageQueue> {
        let mut locked = Vec::new();
        for queue in queues {
            let key = (
                group.to_owned(),
                queue.topic.clone(),
                queue.broker_name.clone(),
                queue.queue_id,
            );
            let holder = self.held.get(&key);
            let free = holder.is_none_or(|(owner, until)| owner == client_id || *until <= now);
            if free {
                self.held.insert(key, (client_id.to_owned(), now + lease));
                locked.push(queue.clone());
            }
        }
        locked
    }

    /// Releases the queues `client_id` holds among `queues`.
    pub fn unlock(&mut self, group: &str, client_id: &str, queues: &[MessageQueue]) {
        for queue in queues {
            let key = (
                group.to_owned(),
                queue.topic.clone(),
                queue.broker_name.clone(),
                queue.queue_id,
            );
            if self
                .held
                .get(&key)
                .is_some_and(|(owner, _)| owner == client_id)
            {
                self.held.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_protocol::body::ProducerData;

    fn heartbeat(client: &str, group: &str, expression: &str) -> HeartbeatData {
        HeartbeatData {
            client_id: client.into(),
            consumer_data_set: vec![ConsumerData {
                group_name: group.into(),
                subscription_data_set: vec![SubscriptionData::from_tag_expression(
                    "T", expression, 1,
                )],
                ..ConsumerData::default()
            }],
            producer_data_set: vec![ProducerData {
                group_name: "P".into(),
            }],
            ..HeartbeatData::default()
        }
    }

    const A: ChannelId = ChannelId {
        shard: 0,
        connection: 1,
    };
    const B: ChannelId = ChannelId {
        shard: 1,
        connection: 7,
    };

    #[test]
    fn membership_changes_notify_the_group() {
        let mut registry = ClientRegistry::default();
        let now = Instant::now();
        let first = registry.heartbeat(A, &heartbeat("a", "G", "TagA"), now);
        assert_eq!(first, vec![("G".to_owned(), vec![A])]);
        assert!(
            registry
                .heartbeat(A, &heartbeat("a", "G", "TagA"), now)
                .is_empty(),
            "same heartbeat: no change"
        );
        let second = registry.heartbeat(B, &heartbeat("b", "G", "TagA"), now);
        assert_eq!(second, vec![("G".to_owned(), vec![A, B])]);
        assert_eq!(registry.consumer_ids("G").unwrap(), ["a", "b"]);
        let table = registry.take_subscriptions_if_changed().unwrap();
        assert_eq!(table["G"]["T"].tags_hashes, Some(vec![tags_hash("TagA")]));
        assert_eq!(
            registry.connection_closed(A),
            vec![("G".to_owned(), vec![B])]
        );
        assert_eq!(registry.unregister(B, Some("P"), Some("G")), vec![]);
        assert_eq!(registry.consumer_ids("G"), None);
    }

    fn versioned(client: &str, expression: &str, sub_version: i64) -> HeartbeatData {
        let mut data = heartbeat(client, "G", expression);
        data.consumer_data_set[0].subscription_data_set[0].sub_version = sub_version;
        data
    }

    /// Two members stamp the same subscription with different versions: the registered version
    /// only moves forward, and their alternating heartbeats are no reason to rebalance.
    #[test]
    fn members_heartbeats_never_move_the_subscription_version_back() {
        let mut registry = ClientRegistry::default();
        let now = Instant::now();
        registry.heartbeat(A, &versioned("a", "TagA", 200), now);
        registry.heartbeat(B, &versioned("b", "TagA", 100), now);
        registry.take_subscriptions_if_changed();
        for _ in 0..3 {
            assert!(
                registry
                    .heartbeat(B, &versioned("b", "TagA", 100), now)
                    .is_empty()
            );
            assert!(
                registry
                    .heartbeat(A, &versioned("a", "TagA", 200), now)
                    .is_empty()
            );
        }
        assert_eq!(
            registry.take_subscriptions_if_changed(),
            None,
            "nothing changed"
        );

        // A newer version (a rebalance, or a new expression) replaces the registered one.
        assert!(
            registry
                .heartbeat(B, &versioned("b", "TagB", 300), now)
                .is_empty()
        );
        let table = registry.take_subscriptions_if_changed().unwrap();
        assert_eq!(table["G"]["T"].sub_version, 300);
        assert_eq!(table["G"]["T"].tags_hashes, Some(vec![tags_hash("TagB")]));
        registry.heartbeat(A, &versioned("a", "TagA", 200), now);
        assert_eq!(registry.take_subscriptions_if_changed(), None);

        // A topic a member no longer subscribes is removed, and the group rebalances.
        let mut none = versioned("a", "TagA", 400);
        none.consumer_data_set[0].subscription_data_set.clear();
        assert_eq!(
            registry.heartbeat(A, &none, now),
            vec![("G".to_owned(), vec![A, B])]
        );
        assert!(registry.take_subscriptions_if_changed().unwrap()["G"].is_empty());
    }

    #[test]
    fn silent_channels_expire() {
        let mut registry = ClientRegistry::default();
        let start = Instant::now();
        registry.heartbeat(A, &heartbeat("a", "G", "*"), start);
        registry.heartbeat(
            B,
            &heartbeat("b", "G", "*"),
            start + Duration::from_secs(100),
        );
        let (expired, notify) =
            registry.expire(start + Duration::from_secs(130), Duration::from_secs(120));
        assert_eq!(expired, vec![A]);
        assert_eq!(notify, vec![("G".to_owned(), vec![B])]);
    }

    #[test]
    fn filters_follow_tag_expressions() {
        assert_eq!(
            Filter::from_expression("*", None, 0).unwrap().tags_hashes,
            None
        );
        assert_eq!(
            Filter::from_expression(" TagA || TagB ||", Some("TAG"), 0)
                .unwrap()
                .tags_hashes,
            Some(vec![tags_hash("TagA"), tags_hash("TagB")])
        );
        assert_eq!(Filter::from_expression("a > 1", Some("SQL92"), 0), None);
    }

    #[test]
    fn locks_are_exclusive_until_released_or_expired() {
        let mut locks = QueueLocks::default();
        let queue = MessageQueue {
            broker_name: "b".into(),
            queue_id: 0,
            topic: "T".into(),
        };
        let now = Instant::now();
        let lease = Duration::from_secs(60);
        assert_eq!(
            locks
                .lock("G", "a", std::slice::from_ref(&queue), now, lease)
                .len(),
            1
        );
        assert!(
            locks
                .lock("G", "b", std::slice::from_ref(&queue), now, lease)
                .is_empty()
        );
        assert_eq!(
            locks
                .lock("G", "b", std::slice::from_ref(&queue), now + lease, lease)
                .len(),
            1
        );
        locks.unlock("G", "b", std::slice::from_ref(&queue));
        assert_eq!(
            locks
                .lock("G", "a", std::slice::from_ref(&queue), now, lease)
                .len(),
            1
        );
    }
}
