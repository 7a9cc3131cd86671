//! The state of one shard and its accessors: what a handler may touch.
//!
//! This module knows nothing of the run loop (`super::run`) or the handlers; it depends only on
//! leaves (`crate::messages`, `crate::connection`, `crate::offsets`, ...) and on the broker's
//! shared state. Every field is owned by the shard's thread (`!Send`), so interior mutability is
//! `Cell`/`RefCell`, and a `RefCell` is never borrowed across an `.await`.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    rc::Rc,
    sync::Arc,
};

use ringmq_protocol::{
    CommandHead, RequestCode, body::ConsumerOffsetTable as ConsumerOffsetBody, encode_frame_head,
    header::NotifyConsumerIdsChangedRequestHeader,
};
use ringmq_storage::{
    MessageStore, ack::AckQueue, io::UringStorage, metadata::ConsumerOffsetTable,
};

use crate::{
    clients::SubscriptionTable,
    config::BrokerRole,
    connection::Connection,
    handoff::Handoff,
    longpoll::LongPoll,
    messages::{FrameKind, Outbound},
    metrics::ShardMetrics,
    offsets,
    published::LocalView,
    shared::BrokerShared,
    topics::TopicSnapshot,
};

/// The state of one shard.
///
/// Invariants: `id < shared.shard_count()`; `offsets` holds only queues this shard owns
/// (`topics::owner_shard`), since every offset query and commit of a queue is routed to its
/// owner; `connections` holds exactly the connections this shard accepted and still serves.
pub(crate) struct ShardCtx {
    pub id: usize,
    pub shared: Arc<BrokerShared>,
    pub store: MessageStore<UringStorage>,
    /// Committed consumer offsets of the queues this shard owns (queries and commits of a
    /// queue are routed to its owner, so this is the only copy).
    pub offsets: RefCell<ConsumerOffsetTable<UringStorage>>,
    /// `offsets` changed since the persister last saved it.
    offsets_dirty: Cell<bool>,
    /// Offsets consumers committed to this shard while it serves as a slave, until its
    /// metadata sync has handed them to the master (`crate::ha::metadata_sync`); saved beside
    /// `offsets`, so a slave restarted while its master is down still hands them over.
    pub slave_commits: RefCell<ConsumerOffsetTable<UringStorage>>,
    /// `slave_commits` changed since the persister last saved it.
    slave_commits_dirty: Cell<bool>,
    pub topics: LocalView<TopicSnapshot>,
    pub subscriptions: LocalView<SubscriptionTable>,
    pub connections: RefCell<HashMap<u64, Rc<Connection>>>,
    next_connection: Cell<u64>,
    pub longpoll: LongPoll,
    /// Rotates the queue picked for sends that leave the choice to the broker.
    pub queue_cursor: Cell<u32>,
    /// Set once by [`ShardCtx::begin_stop`]; never cleared.
    stopping: Cell<bool>,
    /// SYNC_MASTER sends waiting for a slave to hold their bytes.
    pub slave_waiters: AckQueue,
    /// Requests and answers gathered for other shards (`crate::handoff`).
    pub handoff: Handoff,
}

impl std::fmt::Debug for ShardCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardCtx")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ShardCtx {
    /// The state of shard `id` over its opened store and offset table.
    pub(crate) fn new(
        id: usize,
        shared: Arc<BrokerShared>,
        store: MessageStore<UringStorage>,
        offsets: ConsumerOffsetTable<UringStorage>,
        slave_commits: ConsumerOffsetTable<UringStorage>,
    ) -> Self {
        Self {
            id,
            topics: LocalView::new(&shared.topics),
            subscriptions: LocalView::new(&shared.subscriptions),
            handoff: Handoff::new(shared.shard_count()),
            shared,
            store,
            offsets: RefCell::new(offsets),
            offsets_dirty: Cell::new(false),
            slave_commits: RefCell::new(slave_commits),
            slave_commits_dirty: Cell::new(false),
            connections: RefCell::new(HashMap::new()),
            next_connection: Cell::new(1),
            longpoll: LongPoll::default(),
            queue_cursor: Cell::new(id as u32),
            stopping: Cell::new(false),
            slave_waiters: AckQueue::default(),
        }
    }

    pub(crate) fn metrics(&self) -> &ShardMetrics {
        &self.shared.metrics.shards[self.id]
    }

    pub(crate) fn next_connection_id(&self) -> u64 {
        let id = self.next_connection.get();
        self.next_connection.set(id + 1);
        id
    }

    /// Whether the shard quiesces: it accepts and reads no new requests.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Starts quiescing (the broker's graceful stop).
    pub(crate) fn begin_stop(&self) {
        self.stopping.set(true);
    }

    /// Largest request frame: RocketMQ's 16 MiB, or a message of the maximum size plus generous
    /// room for headers when that is more. A frame between the two reaches the send handler,
    /// which refuses the message with MESSAGE_ILLEGAL; only a larger one closes the connection
    /// (and fails every request in flight on it).
    pub(crate) fn max_frame_bytes(&self) -> usize {
        (self.shared.config.max_message_bytes + (1 << 20))
            .max(ringmq_protocol::frame::DEFAULT_MAX_FRAME_BYTES)
    }

    pub(crate) fn topics(&self) -> Arc<TopicSnapshot> {
        self.topics.get(&self.shared.topics)
    }

    pub(crate) fn commit_offset(&self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        self.offsets
            .borrow_mut()
            .commit(group, topic, queue_id, offset);
        self.offsets_dirty.set(true);
    }

    /// UPDATE_CONSUMER_OFFSET: commits `offset`, unless `only_forward` and the group's offset
    /// is already there or beyond. On a slave the commit is also kept for the master.
    pub(crate) fn commit_client_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
        offset: i64,
        only_forward: bool,
    ) {
        if only_forward
            && self
                .offsets
                .borrow()
                .query(group, topic, queue_id)
                .is_some_and(|committed| committed >= offset)
        {
            return;
        }
        self.commit_offset(group, topic, queue_id, offset);
        if self.shared.config.broker_role == BrokerRole::Slave {
            self.slave_commits
                .borrow_mut()
                .commit(group, topic, queue_id, offset);
            self.slave_commits_dirty.set(true);
        }
    }

    /// Whether the offsets changed since the last call (which clears the flag): the persister
    /// saves them then, and calls [`ShardCtx::mark_offsets_dirty`] when the save fails.
    pub(crate) fn take_offsets_dirty(&self) -> bool {
        self.offsets_dirty.replace(false)
    }

    pub(crate) fn mark_offsets_dirty(&self) {
        self.offsets_dirty.set(true);
    }

    /// [`ShardCtx::take_offsets_dirty`] of `slave_commits`.
    pub(crate) fn take_slave_commits_dirty(&self) -> bool {
        self.slave_commits_dirty.replace(false)
    }

    pub(crate) fn mark_slave_commits_dirty(&self) {
        self.slave_commits_dirty.set(true);
    }

    /// A slave's metadata sync: forgets the commits in `handed` (the master took them), then
    /// takes the master's offsets of the queues this shard owns, except those with a commit
    /// still to hand over (`crate::offsets::apply_master_offsets`); returns how many changed.
    pub(crate) fn apply_master_offsets(
        &self,
        master: &ConsumerOffsetBody,
        handed: &ConsumerOffsetBody,
    ) -> usize {
        let shards = self.shared.shard_count();
        let mut pending = self.slave_commits.borrow_mut();
        if offsets::forget_handed(&mut pending, handed, self.id, shards) > 0 {
            self.slave_commits_dirty.set(true);
        }
        let changed = offsets::apply_master_offsets(
            &mut self.offsets.borrow_mut(),
            master,
            &pending,
            self.id,
            shards,
        );
        if changed > 0 {
            self.offsets_dirty.set(true);
        }
        changed
    }

    /// Hands a frame to one of this shard's connections (dropped if it is gone).
    pub(crate) fn deliver_local(&self, connection: u64, frame: Outbound) {
        let target = self.connections.borrow().get(&connection).cloned();
        if let Some(target) = target {
            target.send(frame);
        }
    }

    /// Writes NOTIFY_CONSUMER_IDS_CHANGED (oneway) on one of this shard's connections.
    pub(crate) fn notify_consumer_ids_changed(&self, connection: u64, group: &str) {
        let target = self.connections.borrow().get(&connection).cloned();
        let Some(target) = target else { return };
        let head = CommandHead::oneway(
            RequestCode::NotifyConsumerIdsChanged,
            target.next_opaque(),
            target.serialize_type.get(),
        );
        let mut frame = bytes::BytesMut::with_capacity(128);
        encode_frame_head(
            &head,
            &NotifyConsumerIdsChangedRequestHeader {
                consumer_group: group,
            },
            0,
            &mut frame,
        );
        target.send(Outbound {
            head: frame,
            body: Vec::new(),
            kind: FrameKind::Request(RequestCode::NotifyConsumerIdsChanged),
        });
    }
}
