//! What shards send each other: the messages of a shard's inbox and the values they carry.
//!
//! A leaf module: it names no shard internals (no context, no run loop, no handler), so anything
//! that talks to a shard can depend on it without depending on the shard. Shards never share
//! their queues, stores or connections; whatever one shard needs from another travels as a
//! [`ShardMessage`] over the target's bounded inbox (`BrokerShared::inboxes`).

use std::{net::SocketAddr, sync::Arc, time::Instant};

use bytes::{Bytes, BytesMut};
use ringmq_protocol::{
    Command, RequestCode, ResponseCode,
    body::{ConsumerOffsetTable as ConsumerOffsetBody, TopicConfig},
};

use crate::{
    clients::ChannelId,
    error::{AppendError, TopicEditError},
};

/// One encoded frame to write on a connection: the head (and small bodies) in `head`, large
/// bodies (PULL records, straight from the store's cache) as separate buffers written with a
/// vectored write, so record bytes are never copied on their way out.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub head: BytesMut,
    pub body: Vec<Bytes>,
    /// What the frame is: the answer to a request read from the connection, or a request the
    /// broker initiates.
    pub kind: FrameKind,
}

/// Whether an [`Outbound`] frame answers a request, and its code (the wire number is already
/// encoded in `head`; this copy is for metrics and the connection's in-flight count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// Answers a request read from the connection: writing it frees an in-flight slot.
    Response(ResponseCode),
    /// A request the broker sends (NOTIFY_CONSUMER_IDS_CHANGED): no slot to free.
    Request(RequestCode),
}

impl FrameKind {
    /// Whether the frame answers a request read from the connection.
    #[inline]
    pub(crate) const fn is_response(self) -> bool {
        matches!(self, Self::Response(_))
    }
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

/// Where an [`OwnedRecord`] was stored: (queue offset, physical offset).
pub(crate) type Appended = (u64, i64);

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

/// Requests and answers one shard gathered for another during one turn of its runtime
/// (`crate::handoff`), handed over as one inbox message.
#[derive(Debug, Default)]
pub(crate) struct HandoffBatch {
    /// Requests for queues (or messages) the receiving shard owns, read on the sender's
    /// connections, in the order they were read.
    pub requests: Vec<(Command, Origin)>,
    /// Frames for the receiving shard's connections: (connection id, frame).
    pub deliveries: Vec<(u64, Outbound)>,
}

impl HandoffBatch {
    pub(crate) fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.deliveries.is_empty()
    }
}

/// What shards send each other.
#[derive(Debug)]
pub(crate) enum ShardMessage {
    /// Requests for this shard's queues and answers for its connections, from another shard.
    Handoff(HandoffBatch),
    /// Send NOTIFY_CONSUMER_IDS_CHANGED for `group` on one of this shard's connections.
    Notify { connection: u64, group: String },
    /// QUERY_MESSAGE's search of the queues of `topic` this shard owns.
    QueryKey {
        query: KeyQuery,
        reply: flume::Sender<Vec<Bytes>>,
    },
    /// Append a record built elsewhere; where it went (or why not) is sent back.
    Append {
        record: OwnedRecord,
        reply: flume::Sender<Result<Appended, AppendError>>,
    },
    /// A slave acknowledged more of this shard's log: wake the SYNC_MASTER sends it covers.
    ReplicaAcked,
    /// GET_ALL_CONSUMER_OFFSET's part from this shard: a copy of its committed offsets.
    CollectOffsets {
        reply: flume::Sender<ConsumerOffsetBody>,
    },
    /// A slave's metadata sync: the offsets consumers committed to this shard that the master
    /// has not taken yet.
    CollectSlaveCommits {
        reply: flume::Sender<ConsumerOffsetBody>,
    },
    /// A slave's metadata sync: forget the commits the master took (`handed`), then take the
    /// master's offsets of the queues this shard owns (all shards get the same tables); the
    /// number of offsets that changed is sent back.
    ApplyMasterOffsets {
        offsets: Arc<ConsumerOffsetBody>,
        handed: Arc<ConsumerOffsetBody>,
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
    pub reply: flume::Sender<Result<(), TopicEditError>>,
}
