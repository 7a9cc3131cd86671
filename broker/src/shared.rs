//! State every thread of a broker shares.
//!
//! Shards never share their queues, stores or connections: anything for another shard travels
//! as a [`ShardMessage`] (`crate::messages`) over that shard's bounded inbox. What is shared here
//! is either read-mostly (published snapshots), control-plane behind a mutex (client
//! registrations, queue locks), or atomics (metrics, the stop flag).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::{
    clients::{ClientRegistry, Notifications, QueueLocks, SubscriptionTable},
    config::{BrokerConfig, BrokerRole},
    ha::{
        locator::MasterLocator,
        state::{ReplicaLag, ShardReplicas, SlaveProgress, WakeShard, replica_lag},
    },
    messages::{ShardMessage, TopicChange},
    metrics::BrokerMetrics,
    published::Published,
    topics::TopicSnapshot,
};

/// State shared by all threads of one broker.
///
/// Invariants: `inboxes`, `replicas` and `slave_progress` have one entry per shard, indexed by
/// shard id, for the broker's whole life (the shard count never changes while it runs, and the
/// store refuses to open with another one); so `inboxes[topics::owner_shard(..)]` and
/// `replicas[shard]` never go out of bounds.
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
            started_ms: ringmq_common::now_ms(),
            master: MasterLocator::new(config_ha),
            replicas: (0..shard_count).map(|_| ShardReplicas::default()).collect(),
            slave_progress: (0..shard_count).map(|_| SlaveProgress::default()).collect(),
        }
    }

    /// The replication lag of `shard`, whose log's written end is `written`.
    pub(crate) fn replica_lag(&self, shard: usize, written: u64) -> ReplicaLag {
        replica_lag(
            self.config.broker_role == BrokerRole::Slave,
            &self.slave_progress[shard],
            &self.replicas[shard],
            written,
            ringmq_common::now_ms(),
        )
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

/// The HA threads wake a shard through its inbox: at most one [`ShardMessage::ReplicaAcked`] is
/// queued at a time (`ShardReplicas` tracks that), and a full inbox loses the wake, which the
/// shard's 50 ms re-check makes up for.
impl WakeShard for flume::Sender<ShardMessage> {
    fn try_wake(&self) -> bool {
        self.try_send(ShardMessage::ReplicaAcked).is_ok()
    }
}
