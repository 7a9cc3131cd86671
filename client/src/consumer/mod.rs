//! Consumers: a pull consumer the caller drives ([`PullConsumer`]: assign queues, poll, seek,
//! commit) and a push-style consumer that does everything itself ([`PushConsumer`]: group
//! membership, queue rebalancing, long-polling pulls, a handler called with batches, offset
//! commits, retries).
//!
//! ## Threads
//!
//! Every network call runs on the client instance's I/O thread (see [`crate::ClientInstance`]):
//! pulls, rebalances, offset commits and queue locks are tasks there. User code never runs on
//! that thread: a push consumer hands its messages to a consume thread of its own, where the
//! handler runs, so a slow handler delays only its own consumer and never the connections.
//!
//! ## Delivery guarantee
//!
//! At least once. A queue's committed offset is the smallest offset whose message is not yet
//! done (handled successfully, or sent back to the broker for a later retry), so a crash or a
//! rebalance makes the next owner re-read from there: messages may be seen twice, never skipped.
//!
//! Module layout: `pull_api` (the PULL_MESSAGE exchange), `offsets` (broker and local offset
//! stores, start positions), `rebalance` (queue allocation), `process_queue` (per-queue in-flight
//! tracking), `orderly` (queue locks), `consume` (the consume thread), `push` and `pull` (the two
//! consumers).

mod consume;
mod offsets;
mod orderly;
mod process_queue;
mod pull;
mod pull_api;
mod push;
mod rebalance;

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use ringmq_protocol::body::{ConsumeFromWhere, MessageModel, SubscriptionData};

pub use pull::{PullConsumer, PullConsumerBuilder};
pub use push::{PushConsumer, PushConsumerBuilder};

use crate::error::{ClientError, Result};
use crate::instance::IoContext;
use crate::message::MessageQueue;

/// Prefix of a consumer group's retry topic: messages the group sent back for a later retry.
pub(crate) const RETRY_TOPIC_PREFIX: &str = "%RETRY%";

/// Deliveries a message gets before the broker moves it to the group's dead-letter queue
/// (RocketMQ's default `maxReconsumeTimes`).
pub(crate) const MAX_RECONSUME_TIMES: i32 = 16;

/// The retry topic of `group`.
pub(crate) fn retry_topic(group: &str) -> String {
    format!("{RETRY_TOPIC_PREFIX}{group}")
}

/// Where a consumer group starts reading a queue for which it has no committed offset.
///
/// A committed offset always wins: the start position only matters the first time a group
/// reads a queue. Note RocketMQ's rule, which RingMQ brokers follow too: a queue that still
/// holds its very first message answers offset 0 for a group that never committed, so a new
/// group reads such a queue from the start whatever its start position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartPosition {
    /// The oldest message still stored.
    First,
    /// Only messages stored from now on (the queue's current end).
    #[default]
    Last,
    /// The first message stored at or after this wall-clock time, in ms since the Unix epoch.
    Timestamp(i64),
}

impl StartPosition {
    /// The heartbeat's name for it.
    pub(crate) const fn consume_from_where(self) -> ConsumeFromWhere {
        match self {
            Self::First => ConsumeFromWhere::ConsumeFromFirstOffset,
            Self::Last => ConsumeFromWhere::ConsumeFromLastOffset,
            Self::Timestamp(_) => ConsumeFromWhere::ConsumeFromTimestamp,
        }
    }
}

/// How the members of a push consumer group share the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConsumeMode {
    /// The queues are split between the members: each message goes to one member. Offsets are
    /// committed to the brokers.
    #[default]
    Clustering,
    /// Every member reads every queue: each message goes to every member. Offsets are kept in a
    /// local file per member.
    Broadcasting,
}

impl ConsumeMode {
    pub(crate) const fn message_model(self) -> MessageModel {
        match self {
            Self::Clustering => MessageModel::Clustering,
            Self::Broadcasting => MessageModel::Broadcasting,
        }
    }
}

/// What a push consumer's handler says about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumeOutcome {
    /// Every message of the batch is done; its offsets may be committed.
    Success,
    /// The batch failed. A concurrent consumer sends each message back to its broker, which
    /// redelivers it later through the group's retry topic (with `reconsume_times` one higher).
    /// An orderly consumer instead retries the same batch after a pause, keeping the queue's
    /// order, and only sends it back once the retries are used up.
    Retry,
}

/// What a push consumer's handler learns about the batch it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumeContext {
    /// The queue the batch was read from (for redelivered messages: the group's retry queue;
    /// each message's `topic` is still the original one).
    pub queue: MessageQueue,
    /// How often this batch was handed to the handler before (local retries: an orderly
    /// consumer's retries, or a redelivery after a failed send-back).
    pub attempt: u32,
    /// Whether the consumer is orderly (one batch of a queue at a time, strictly in order).
    pub orderly: bool,
}

impl ConsumeContext {
    /// A context for a first delivery from `queue`, for calling a handler in the user's own
    /// tests.
    ///
    /// ```
    /// use ringmq_client::{ConsumeContext, MessageQueue};
    ///
    /// let context = ConsumeContext::new(MessageQueue {
    ///     broker_name: "broker-a".into(),
    ///     queue_id: 0,
    ///     topic: "orders".into(),
    /// });
    /// assert_eq!(context.attempt, 0);
    /// ```
    pub const fn new(queue: MessageQueue) -> Self {
        Self {
            queue,
            attempt: 0,
            orderly: false,
        }
    }
}

/// The current wall-clock time in ms since the Unix epoch (subscription versions).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// A subscription as the consumer uses it: the heartbeat form and the expression pulls carry.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub data: SubscriptionData,
}

impl Subscription {
    pub(crate) fn new(topic: &str, expression: &str, sub_version: i64) -> Self {
        Self {
            data: SubscriptionData::from_tag_expression(topic, expression, sub_version),
        }
    }

    pub(crate) fn topic(&self) -> &str {
        &self.data.topic
    }

    /// The expression pulls carry (`*` for all).
    pub(crate) fn expression(&self) -> &str {
        if self.data.is_all() {
            SubscriptionData::SUB_ALL
        } else {
            &self.data.sub_string
        }
    }

    /// Whether a message with `tags` matches. The broker filters by the tags' hash codes;
    /// this second check drops the rare message whose different tag has a colliding hash.
    pub(crate) fn matches(&self, tags: Option<&str>) -> bool {
        self.data.is_all() || tags.is_some_and(|tag| self.data.tags_set.iter().any(|t| t == tag))
    }
}

/// Longest group name: its retry topic must fit the broker's 127-byte topic limit.
const MAX_GROUP_BYTES: usize = 127 - RETRY_TOPIC_PREFIX.len();

/// Checks a consumer group name: what the broker accepts in `%RETRY%<group>`.
pub(crate) fn validate_group(group: &str) -> Result<()> {
    let valid = !group.is_empty()
        && group.len() <= MAX_GROUP_BYTES
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'%' || b == b'|');
    if valid {
        Ok(())
    } else {
        Err(ClientError::InvalidArgument(format!(
            "consumer group {group:?} must be 1..={MAX_GROUP_BYTES} characters of [A-Za-z0-9_%|-]"
        )))
    }
}

/// The master address of `broker_name`: from the brokers learned from routes (works while every
/// NameServer is down), else from a fresh route of `topic`.
pub(crate) async fn master_addr(ctx: &IoContext, queue: &MessageQueue) -> Result<String> {
    if let Some(addr) = ctx.routes.master_addr(&queue.broker_name) {
        return Ok(addr);
    }
    let route = ctx
        .routes
        .refresh(&ctx.pool, &queue.topic, ctx.timeout())
        .await?;
    route
        .master_addr(&queue.broker_name)
        .map(str::to_owned)
        .ok_or_else(|| ClientError::NoQueue {
            topic: queue.topic.clone(),
            what: "readable",
        })
}

/// Which of two futures finished first.
pub(crate) enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Runs two futures until the first finishes (the other is dropped). `left` is polled first.
pub(crate) async fn either<A: Future, B: Future>(
    left: A,
    right: B,
) -> Either<A::Output, B::Output> {
    let mut left = pin!(left);
    let mut right = pin!(right);
    poll_fn(|cx| {
        if let Poll::Ready(value) = left.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(value));
        }
        if let Poll::Ready(value) = right.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(value));
        }
        Poll::Pending
    })
    .await
}

/// Registers `data` as this client's member of its group, refusing a second consumer of the
/// same group in one client instance (brokers would see one member, not two).
pub(crate) fn register_group(
    ctx: &Rc<IoContext>,
    data: ringmq_protocol::body::ConsumerData,
) -> Result<()> {
    let mut groups = ctx.groups.borrow_mut();
    if groups.consumers.contains_key(&data.group_name) {
        return Err(ClientError::InvalidArgument(format!(
            "consumer group {} already has a consumer in this client instance",
            data.group_name
        )));
    }
    groups.consumers.insert(data.group_name.clone(), data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_match_tags_exactly() {
        let all = Subscription::new("t", "*", 1);
        assert!(all.matches(None));
        assert!(all.matches(Some("x")));
        assert_eq!(all.expression(), "*");
        let some = Subscription::new("t", "a || b", 1);
        assert!(some.matches(Some("a")));
        assert!(some.matches(Some("b")));
        assert!(!some.matches(Some("c")));
        assert!(!some.matches(None));
        assert_eq!(some.expression(), "a || b");
    }

    #[test]
    fn handles_are_send_and_sync() {
        const fn send_sync<T: Send + Sync>() {}
        send_sync::<PushConsumer>();
        send_sync::<PullConsumer>();
    }

    #[test]
    fn group_names_are_checked() {
        assert!(validate_group("orders-consumers_1").is_ok());
        assert!(validate_group("").is_err());
        assert!(validate_group("has space").is_err());
        assert!(validate_group(&"g".repeat(300)).is_err());
        assert_eq!(retry_topic("g"), "%RETRY%g");
    }
}
