//! State every thread of a broker shares, and the messages shards send each other.
//!
//! Shards never share their queues, stores or connections: anything for another shard travels
//! as a [`ShardMessage`] over that shard's bounded inbox. What is shared here is either
//! read-mostly (published snapshots), control-plane behind a mutex (client registrations,
//! queue locks), or atomics (metrics, the stop flag).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use bytes::{Bytes, BytesMut};
use ringmq_protocol::{
    Command,
    body::{ConsumerOffsetTable as ConsumerOffsetBody, TopicConfig},
};

use crate::{
    clients::{ChannelId, ClientRegistry, Notifications, QueueLocks, SubscriptionTable},
    config::BrokerConfig,
    ha::{
        locator::MasterLocator,
        state::{ShardReplicas, SlaveProgress},
    },
    metrics::BrokerMetrics,
    published::Published,
    topics::TopicSnapshot,
};

/// One encoded frame to write on a connection: the head (and small bodies) in `head`, large
/// bodies (PULL records, straight from the store's cache) as separate buffers written with a
/// vectored write, so record bytes are never copied on their way out.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub head: BytesMut,
    pub body: Vec<Bytes>,
    /// Whether this answers a request read from the connection (it frees an in-flight slot).
    pub is_response: bool,
    /// The response code (for metrics), or the request code of a broker-initiated request.
    pub code: i32,
}

/// Where the answer to a request goes.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub channel: ChannelId,
    pub peer: SocketAddr,
    pub arrived: Instant,
}

/// A record to append on the shard owning its queue, built by another shard (message resent
/// for retry, dead-lettered).
#[derive(Debug)]
pub(crate) struct OwnedRecord {
    pub topic: String,
    pub queue_id: i32,
    pub flag: i32,
    pub sys_flag: i32,
    pub born_timestamp_ms: i64,
    pub born_host: SocketAddr,
    pub reconsume_times: i32,
    pub body: Bytes,
    pub properties: String,
}

/// A search for messages by key (QUERY_MESSAGE).
#[derive(Debug, Clone)]
pub(crate) struct KeyQuery {
    pub topic: String,
    pub key: String,
    /// Match the UNIQ_KEY property instead of KEYS.
    pub unique: bool,
    pub begin_ms: i64,
    pub end_ms: i64,
    pub max_messages: usize,
}

/// What shards send each other.
///
/// Not boxed although `Request` is large (a decoded command keeps its header fields inline):
/// moving ~600 bytes through the queue is cheaper than an allocation per forwarded request.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum ShardMessage {
    /// A request for a queue (or message) this shard owns, read on another shard's connection.
    Request { command: Command, origin: Origin },
    /// A frame for one of this shard's connections.
    Deliver { connection: u64, frame: Outbound },
    /// Send NOTIFY_CONSUMER_IDS_CHANGED for `group` on one of this shard's connections.
    Notify { connection: u64, group: String },
    /// QUERY_MESSAGE's search of the queues of `topic` this shard owns.
    QueryKey {
        query: KeyQuery,
        reply: flume::Sender<Vec<Bytes>>,
    },
    /// Append a record built elsewhere; the result (queue offset, or why not) is sent back.
    Append {
        record: OwnedRecord,
        reply: flume::Sender<Result<(u64, i64), String>>,
    },
    /// A slave acknowledged more of this shard's log: wake the SYNC_MASTER sends it covers.
    ReplicaAcked,
    /// GET_ALL_CONSUMER_OFFSET's part from this shard: a copy of its committed offsets.
    CollectOffsets {
        reply: flume::Sender<ConsumerOffsetBody>,
    },
    /// A slave's metadata sync: take the master's offsets of the queues this shard owns (all
    /// shards get the same table); the number of offsets that changed is sent back.
    ApplyMasterOffsets {
        offsets: Arc<ConsumerOffsetBody>,
        reply: flume::Sender<usize>,
    },
    /// Quiesce: stop accepting and reading requests, report once the shard's connections have
    /// nothing in flight, keep serving forwarded requests.
    Stop,
    /// Every shard has drained: flush, checkpoint and end the thread.
    Close,
}

/// What a [`TopicChange`] does to the topic table.
#[derive(Debug)]
pub(crate) enum TopicEdit {
    /// Create the topic, or replace its config.
    Upsert(TopicConfig),
    /// Remove the topic's config (DELETE_TOPIC_IN_BROKER); removing an unknown topic is a no-op.
    Delete(String),
    /// Make the table exactly these topics (a slave copying its master's table), in one save;
    /// the template topic stays while auto-creation is on. Re-registers only if it changed.
    ReplaceAll(Vec<TopicConfig>),
}

/// A change to the broker-wide topic table, handled by its one writer (shard 0).
#[derive(Debug)]
pub(crate) struct TopicChange {
    pub edit: TopicEdit,
    pub reply: flume::Sender<Result<(), String>>,
}

/// State shared by all threads of one broker.
#[derive(Debug)]
pub(crate) struct BrokerShared {
    pub config: BrokerConfig,
    /// `brokerIP1:listenPort`: written into every record and message id.
    pub store_host: SocketAddr,
    pub inboxes: Vec<flume::Sender<ShardMessage>>,
    pub topic_changes: flume::Sender<TopicChange>,
    pub topics: Published<TopicSnapshot>,
    pub subscriptions: Published<SubscriptionTable>,
    clients: Mutex<ClientRegistry>,
    locks: Mutex<QueueLocks>,
    pub metrics: Arc<BrokerMetrics>,
    /// Wakes the NameServer registration thread (topics changed, or stopping).
    pub register_now: flume::Sender<()>,
    stop: AtomicBool,
    pub started_ms: i64,
    /// Slaves: where the master is.
    pub master: MasterLocator,
    /// Masters: per shard, the connected slaves and what they hold.
    pub replicas: Vec<ShardReplicas>,
    /// Slaves: per shard, the state of replication from the master.
    pub slave_progress: Vec<SlaveProgress>,
}

impl BrokerShared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: BrokerConfig,
        store_host: SocketAddr,
        inboxes: Vec<flume::Sender<ShardMessage>>,
        topic_changes: flume::Sender<TopicChange>,
        metrics: Arc<BrokerMetrics>,
        register_now: flume::Sender<()>,
    ) -> Self {
        let config_ha = config.ha_master_address.clone();
        let shard_count = inboxes.len();
        Self {
            config,
            store_host,
            inboxes,
            topic_changes,
            topics: Published::new(TopicSnapshot::default()),
            subscriptions: Published::new(SubscriptionTable::new()),
            clients: Mutex::new(ClientRegistry::default()),
            locks: Mutex::new(QueueLocks::default()),
            metrics,
            register_now,
            stop: AtomicBool::new(false),
            started_ms: crate::now_ms(),
            master: MasterLocator::new(config_ha),
            replicas: (0..shard_count).map(|_| ShardReplicas::default()).collect(),
            slave_progress: (0..shard_count).map(|_| SlaveProgress::default()).collect(),
        }
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.inboxes.len()
    }

    /// Runs `change` on the client registry, then publishes the subscriptions if they changed
    /// and hands out the notifications it asked for.
    pub(crate) fn with_clients<R>(
        &self,
        change: impl FnOnce(&mut ClientRegistry) -> (R, Notifications),
    ) -> R {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let (result, notify) = change(&mut clients);
        if let Some(table) = clients.take_subscriptions_if_changed() {
            self.subscriptions.publish(table);
        }
        let (consumer_groups, producer_groups) = clients.group_counts();
        drop(clients);
        self.metrics.consumer_groups.set(consumer_groups as i64);
        self.metrics.producer_groups.set(producer_groups as i64);
        self.notify(notify);
        result
    }

    /// Sends NOTIFY_CONSUMER_IDS_CHANGED to each channel (through the shard owning it).
    /// Best effort, as in RocketMQ: a full inbox drops the notification (clients also
    /// rebalance every 20 s).
    fn notify(&self, notify: Notifications) {
        for (group, channels) in notify {
            for channel in channels {
                if let Some(inbox) = self.inboxes.get(channel.shard) {
                    let _ = inbox.try_send(ShardMessage::Notify {
                        connection: channel.connection,
                        group: group.clone(),
                    });
                }
            }
        }
    }

    pub(crate) fn locks(&self) -> MutexGuard<'_, QueueLocks> {
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn set_stopping(&self) -> bool {
        self.stop.swap(true, Ordering::AcqRel)
    }
}
