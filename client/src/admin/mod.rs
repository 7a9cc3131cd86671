//! Cluster administration: topics, routes, cluster and broker state, consumer progress and
//! message lookups, in the spirit of RocketMQ's `MQAdminExt`.
//!
//! Every operation runs on the client instance's I/O thread and returns a [`Pending`]: await it
//! on any runtime or block on it with [`Pending::wait`]. A broker or NameServer refusal comes
//! back as [`ClientError::Broker`](crate::ClientError::Broker) with the server's response code
//! and remark unchanged; a topic no NameServer routes is
//! [`ClientError::TopicNotFound`](crate::ClientError::TopicNotFound).
//!
//! Operations that touch several servers (create on a cluster, delete, status, progress, query
//! by key) ask them one after the other and stop at the first failure, naming its server; the
//! ones that change state are idempotent, so a failed run can simply be repeated.

mod queries;
mod topics;

use std::collections::BTreeMap;

use ringmq_protocol::body::{ClusterInfo, TopicRouteData, perm};
use serde::Serialize;

use crate::config::ClientConfig;
use crate::error::Result;
use crate::instance::{ClientInstance, Pending};
use crate::message::{MessageQueue, ReceivedMessage};
use crate::rpc;

/// A topic's settings for [`Admin::create_topic`] and [`Admin::update_topic`].
///
/// ```
/// use ringmq_client::admin::TopicSpec;
///
/// let spec = TopicSpec::new("orders").with_queues(4, 4).with_order(true);
/// assert_eq!((spec.read_queues, spec.write_queues, spec.perm), (4, 4, 6));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name (`^[%|a-zA-Z0-9_-]+$`, at most 127 bytes; the broker checks).
    pub name: String,
    /// Queues consumers read (1..=1024 on RingMQ).
    pub read_queues: i32,
    /// Queues producers write (1..=1024 on RingMQ).
    pub write_queues: i32,
    /// Permission bits: 4 read, 2 write (6 = read-write, the default).
    pub perm: i32,
    /// Whether the topic is for ordered messages (stored with the topic config; the broker does
    /// not enforce anything with it).
    pub order: bool,
}

impl TopicSpec {
    /// A read-write topic with 8 read and 8 write queues (mqadmin's defaults).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            read_queues: 8,
            write_queues: 8,
            perm: perm::READ | perm::WRITE,
            order: false,
        }
    }

    /// Sets the read and write queue counts.
    #[must_use]
    pub const fn with_queues(mut self, read_queues: i32, write_queues: i32) -> Self {
        self.read_queues = read_queues;
        self.write_queues = write_queues;
        self
    }

    /// Sets the permission bits (4 read, 2 write).
    #[must_use]
    pub const fn with_perm(mut self, perm: i32) -> Self {
        self.perm = perm;
        self
    }

    /// Marks the topic as ordered.
    #[must_use]
    pub const fn with_order(mut self, order: bool) -> Self {
        self.order = order;
        self
    }
}

/// Where [`Admin::create_topic`] creates a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicTarget {
    /// Every master of the named cluster, as GET_BROKER_CLUSTER_INFO lists them.
    Cluster(String),
    /// One broker, by `host:port`.
    Broker(String),
}

/// One queue of [`Admin::topic_status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// The queue.
    pub queue: MessageQueue,
    /// The broker asked (the group's master when it has one).
    pub broker_addr: String,
    /// Offset of the oldest message still stored.
    pub min_offset: i64,
    /// Offset the next message will get (exclusive upper bound).
    pub max_offset: i64,
    /// Store time of the newest message, ms since the epoch; `None` for an empty queue or one
    /// the broker does not let the admin read.
    pub last_store_timestamp_ms: Option<i64>,
}

/// One queue of a [`ConsumerProgress`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueProgress {
    /// The queue.
    pub queue: MessageQueue,
    /// The broker asked (the group's master when it has one).
    pub broker_addr: String,
    /// The queue's max offset (the next message's offset).
    pub broker_offset: i64,
    /// The group's committed offset (the next message it will consume); `None` when it never
    /// committed one for this queue.
    pub committed_offset: Option<i64>,
    /// Messages stored and not yet consumed: `broker_offset - committed_offset`, or every
    /// message still stored (`broker_offset - min offset`) when nothing was committed.
    pub lag: i64,
}

/// A consumer group's progress on one topic ([`Admin::consumer_progress`]).
///
/// Computed from GET_MAX_OFFSET and QUERY_CONSUMER_OFFSET per queue: RingMQ brokers have no
/// GET_CONSUME_STATS, and this works on any RocketMQ broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerProgress {
    /// The consumer group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// Every readable queue of the topic, by broker name then queue id.
    pub queues: Vec<QueueProgress>,
    /// Sum of the queues' lag.
    pub total_lag: i64,
}

/// The administration handle. Cheap to clone; clones share the client instance.
///
/// ```no_run
/// use ringmq_client::{ClientConfig, admin::{Admin, TopicSpec, TopicTarget}};
///
/// let admin = Admin::new(ClientConfig::new("127.0.0.1:9876"))?;
/// let brokers = admin
///     .create_topic(TopicSpec::new("orders").with_queues(4, 4), TopicTarget::Cluster("DefaultCluster".into()))
///     .wait()?;
/// println!("created on {brokers:?}; topics: {:?}", admin.topic_list().wait()?);
/// # Ok::<(), ringmq_client::ClientError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Admin {
    instance: ClientInstance,
}

impl Admin {
    /// Starts a client instance of its own for `config`.
    pub fn new(config: ClientConfig) -> Result<Self> {
        Ok(Self::with_instance(ClientInstance::new(config)?))
    }

    /// Works through an existing client instance (shared with producers and consumers).
    pub const fn with_instance(instance: ClientInstance) -> Self {
        Self { instance }
    }

    /// The client instance this handle uses.
    pub const fn instance(&self) -> &ClientInstance {
        &self.instance
    }

    /// Creates `spec.name` (UPDATE_AND_CREATE_TOPIC) on every master of a cluster or on one
    /// broker; the addresses of the brokers that now have it. Creating an existing topic
    /// replaces its settings, as [`update_topic`](Self::update_topic) does. A cluster unknown to
    /// the NameServers, or one without a master, is an `InvalidArgument`.
    ///
    /// ```no_run
    /// # use ringmq_client::{ClientConfig, admin::{Admin, TopicSpec, TopicTarget}};
    /// # let admin = Admin::new(ClientConfig::new("127.0.0.1:9876"))?;
    /// admin.create_topic(TopicSpec::new("orders"), TopicTarget::Broker("127.0.0.1:10911".into())).wait()?;
    /// # Ok::<(), ringmq_client::ClientError>(())
    /// ```
    pub fn create_topic(&self, spec: TopicSpec, target: TopicTarget) -> Pending<Vec<String>> {
        self.instance
            .run(move |ctx| async move { topics::create(&ctx, &spec, &target).await })
    }

    /// Changes a topic's queue counts, permission or order flag: the same request as
    /// [`create_topic`](Self::create_topic), named for what the caller means.
    ///
    /// ```no_run
    /// # use ringmq_client::{ClientConfig, admin::{Admin, TopicSpec, TopicTarget}};
    /// # let admin = Admin::new(ClientConfig::new("127.0.0.1:9876"))?;
    /// let read_only = TopicSpec::new("orders").with_perm(4);
    /// admin.update_topic(read_only, TopicTarget::Cluster("DefaultCluster".into())).wait()?;
    /// # Ok::<(), ringmq_client::ClientError>(())
    /// ```
    pub fn update_topic(&self, spec: TopicSpec, target: TopicTarget) -> Pending<Vec<String>> {
        self.create_topic(spec, target)
    }

    /// Deletes `topic` from a cluster: DELETE_TOPIC_IN_BROKER on every master of `cluster`, then
    /// DELETE_TOPIC_IN_NAMESRV (for that cluster) on every NameServer. The brokers keep the
    /// messages already stored (RingMQ: until retention removes them); deleting a topic that
    /// does not exist succeeds.
    ///
    /// ```no_run
    /// # use ringmq_client::{ClientConfig, admin::Admin};
    /// # let admin = Admin::new(ClientConfig::new("127.0.0.1:9876"))?;
    /// admin.delete_topic("orders", "DefaultCluster").wait()?;
    /// # Ok::<(), ringmq_client::ClientError>(())
    /// ```
    pub fn delete_topic(&self, topic: &str, cluster: &str) -> Pending<()> {
        let (topic, cluster) = (topic.to_owned(), cluster.to_owned());
        self.instance
            .run(move |ctx| async move { topics::delete(&ctx, &topic, &cluster).await })
    }

    /// Every topic the NameServers know (GET_ALL_TOPIC_LIST_FROM_NAMESERVER), sorted.
    ///
    /// ```no_run
    /// # use ringmq_client::{ClientConfig, admin::Admin};
    /// # let admin = Admin::new(ClientConfig::new("127.0.0.1:9876"))?;
    /// for topic in admin.topic_list().wait()? {
    ///     println!("{topic}");
    /// }
    /// # Ok::<(), ringmq_client::ClientError>(())
    /// ```
    pub fn topic_list(&self) -> Pending<Vec<String>> {
        self.instance
            .run(|ctx| async move { topics::list(&ctx).await })
    }

    /// The topic's route as a NameServer has it now (not the client's cache).
    ///
    /// ```no_run
    /// # use ringmq_client::{ClientConfig, admin::Admin};
    /// # let admin = Admin::new(ClientConfig::new("127.0.0.1:9876"))?;
    /// let route = admin.topic_route("orders").wait()?;
    /// println!("{} broker groups", route.broker_datas.len());
    /// # Ok::<(), ringmq_client::ClientError>(())
    /// ```
    pub fn topic_route(&self, topic: &str) -> Pending<TopicRouteData> {
        let topic = topic.to_owned();
        self.instance
            .run(move |ctx| async move { topics::route(&ctx, &topic).await })
    }

    /// Per queue of the topic (every queue of every broker group in its route): min and max
    /// offset and the newest message's store time.
    ///
    /// ```no_run
    /// # use ringmq_client::{ClientConfig, admin::Admin};
    /// # let admin = Admin::new(ClientConfig::new("127.0.0.1:9876"))?;
    /// for queue in admin.topic_status("orders").wait()? {
    ///     println!("{}#{}: {} messages", queue.queue.broker_name, queue.queue.queue_id, queue.max_offset - queue.min_offset);
    /// }
    /// # Ok::<(), ringmq_client::ClientError>(())
    /// ```
    pub fn topic_status(&self, topic: &str) -> Pending<Vec<QueueStatus>> {
        let topic = topic.to_owned();
        self.instance
            .run(move |ctx| async move { topics::status(&ctx, &topic).await })
    }

    /// Every broker group and cluster the NameServers know (GET_BROKER_CLUSTER_INFO).
    ///
    /// ```no_run
    /// # use ringmq_client::{ClientConfig, admin::Admin};
    /// # let admin = Admin::new(ClientConfig::new("127.0.0.1:9876"))?;
    /// let info = admin.cluster_info().wait()?;
    /// for (cluster, brokers) in &info.cluster_addr_table {
    ///     println!("{cluster}: {brokers:?}");
    /// }
    /// # Ok::<(), ringmq_client::ClientError>(())
    /// ```
    pub fn cluster_info(&self) -> Pending<ClusterInfo> {
        self.instance
            .run(|ctx| async move { rpc::cluster_info(&ctx, ctx.timeout()).await })
    }

    /// A broker's statistics table (GET_BROKER_RUNTIME_INFO), by `host:port`.
    ///
    /// ```no_run
    /// # use ringmq_client::{ClientConfig, admin::Admin};
    /// # let admin = Admin::new(ClientConfig::new("127.0.0.1:9876"))?;
    /// let stats = admin.broker_runtime_info("127.0.0.1:10911").wait()?;
    /// println!("version {:?}", stats.get("brokerVersionDesc"));
    /// # Ok::<(), ringmq_client::ClientError>(())
    /// ```
    pub fn broker_runtime_info(&self, addr: &str) -> Pending<BTreeMap<String, String>> {
        let addr = addr.to_owned();
        self.instance.run(move |ctx| async move {
            rpc::broker_runtime_info(&ctx, &addr, ctx.timeout()).await
        })
    }

    /// A consumer group's progress on `topic`: per readable queue, the broker's max offset, the
    /// group's committed offset and the lag; and the total lag.
    ///
    /// ```no_run
    /// # use ringmq_client::{ClientConfig, admin::Admin};
    /// # let admin = Admin::new(ClientConfig::new("127.0.0.1:9876"))?;
    /// let progress = admin.consumer_progress("order-processors", "orders").wait()?;
    /// println!("{} messages behind", progress.total_lag);
    /// # Ok::<(), ringmq_client::ClientError>(())
    /// ```
    pub fn consumer_progress(&self, group: &str, topic: &str) -> Pending<ConsumerProgress> {
        let (group, topic) = (group.to_owned(), topic.to_owned());
        self.instance
            .run(move |ctx| async move { queries::consumer_progress(&ctx, &group, &topic).await })
    }

    /// The message with this offset message id (`SendResult::offset_msg_id`,
    /// `ReceivedMessage::offset_msg_id`): the id names the storing broker and the commit-log
    /// offset, so this asks that broker directly (VIEW_MESSAGE_BY_ID). An id that does not
    /// parse is an `InvalidArgument`; a broker that has no message there refuses (RocketMQ
    /// answers SYSTEM_ERROR).
    ///
    /// ```no_run
    /// # use ringmq_client::{ClientConfig, admin::Admin};
    /// # let admin = Admin::new(ClientConfig::new("127.0.0.1:9876"))?;
    /// let message = admin.message_by_id("7F00000100002A9F0000000000000000").wait()?;
    /// println!("{}#{} at {}", message.topic, message.queue_id, message.queue_offset);
    /// # Ok::<(), ringmq_client::ClientError>(())
    /// ```
    pub fn message_by_id(&self, offset_msg_id: &str) -> Pending<ReceivedMessage> {
        let id = offset_msg_id.to_owned();
        self.instance
            .run(move |ctx| async move { queries::message_by_id(&ctx, &id).await })
    }

    /// Messages of `topic` whose keys include `key`, stored between `begin_ms` and `end_ms`
    /// (ms since the epoch, inclusive): QUERY_MESSAGE to the master of every broker group of
    /// the topic, results merged, re-checked against the key, ordered by store time, at most
    /// `max_messages`. No match is an empty list.
    ///
    /// ```no_run
    /// # use ringmq_client::{ClientConfig, admin::Admin};
    /// # let admin = Admin::new(ClientConfig::new("127.0.0.1:9876"))?;
    /// let found = admin.messages_by_key("orders", "order-42", 32, 0, i64::MAX).wait()?;
    /// println!("{} messages", found.len());
    /// # Ok::<(), ringmq_client::ClientError>(())
    /// ```
    pub fn messages_by_key(
        &self,
        topic: &str,
        key: &str,
        max_messages: usize,
        begin_ms: i64,
        end_ms: i64,
    ) -> Pending<Vec<ReceivedMessage>> {
        let query = queries::KeyQuery {
            topic: topic.to_owned(),
            key: key.to_owned(),
            max_messages,
            begin_ms,
            end_ms,
        };
        self.instance
            .run(move |ctx| async move { queries::messages_by_key(&ctx, &query).await })
    }
}
