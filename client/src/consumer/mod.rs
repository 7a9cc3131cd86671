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
//! tracking), `orderly` (queue locks), `consume` (the consume thread, send-backs and their
//! retry-topic fallback), `push` (builder, handle, `control`: rebalance/commits/locks,
//! `pull_loop`) and `pull` (the two consumers).
//!
//! ## Broker addresses
//!
//! Pulls go where the last pull answer of the queue suggested (`suggestWhichBrokerId`), else to
//! the master, else to any slave, so reading goes on while a master is down; offset queries go
//! to the master, else a slave; commits, locks and send-backs need the master. A missing address
//! refreshes the topic's route at most once per 3 s per topic.

mod consume;
mod offsets;
mod orderly;
mod process_queue;
mod pull;
mod pull_api;
mod push;
mod rebalance;

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use ringmq_protocol::body::{ConsumeFromWhere, MessageModel, SubscriptionData};
use ringmq_protocol::topic::{TOPIC_MAX_BYTES, is_valid_topic};

pub use pull::{PullConsumer, PullConsumerBuilder};
pub use push::{PushConsumer, PushConsumerBuilder};

use crate::error::{ClientError, Result};

use crate::instance::IoContext;
use crate::message::MessageQueue;

/// Prefix of a consumer group's retry topic: messages the group sent back for a later retry.
pub(crate) use ringmq_protocol::topic::RETRY_PREFIX as RETRY_TOPIC_PREFIX;

/// Redeliveries a concurrent consumer's message gets before the broker moves it to the group's
/// dead-letter queue (RocketMQ's default `maxReconsumeTimes`). Orderly consumers default to
/// unlimited local retries, as Java's do.
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
    /// The batch failed. A concurrent clustering consumer sends each message back to its
    /// broker, which redelivers it later through the group's retry topic (with
    /// `reconsume_times` one higher); after `max_reconsume_times` redeliveries (default 16) the
    /// broker moves it to the group's dead-letter queue. Should the broker refuse the send-back,
    /// the message is sent to the retry topic as a normal message (as Java's consumer does), and
    /// failing that it is handed to the handler again locally, with a growing pause.
    ///
    /// An orderly consumer instead retries the same batch after a pause, keeping the queue's
    /// order; by default forever (Java's default), else until `max_reconsume_times` local
    /// retries are used up, when the batch goes to the dead-letter queue and the queue moves on.
    ///
    /// A broadcasting consumer drops the batch with a warning, as Java's does: no member reads
    /// the retry topic in broadcasting mode, so a send-back would never be delivered.
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

/// Longest group name: its retry topic must fit the topic-name limit.
const MAX_GROUP_BYTES: usize = TOPIC_MAX_BYTES - RETRY_TOPIC_PREFIX.len();

/// Checks a consumer group name: what the broker accepts in `%RETRY%<group>`.
pub(crate) fn validate_group(group: &str) -> Result<()> {
    // A group is valid exactly when its retry topic is a valid topic name.
    let valid =
        !group.is_empty() && group.len() <= MAX_GROUP_BYTES && is_valid_topic(&retry_topic(group));
    if valid {
        Ok(())
    } else {
        Err(ClientError::InvalidArgument(format!(
            "consumer group {group:?} must be 1..={MAX_GROUP_BYTES} characters of [A-Za-z0-9_%|-]"
        )))
    }
}

/// Least time between two route refreshes of one topic forced by a missing broker address: a
/// broker group without a master (or gone from every route) must not make every failed pull,
/// commit or lock ask the NameServers again.
pub(crate) const ROUTE_REFRESH_MIN_GAP: Duration = Duration::from_secs(3);

thread_local! {
    /// When a consumer last forced a refresh of each topic's route, on this I/O thread (each
    /// client instance has an I/O thread of its own).
    static FORCED_REFRESHES: RefCell<HashMap<String, Instant>> = RefCell::new(HashMap::new());
}

/// Whether a forced refresh of `topic` is allowed now (and records it when it is).
fn may_refresh(topic: &str, now: Instant) -> bool {
    FORCED_REFRESHES.with(|refreshes| {
        let mut refreshes = refreshes.borrow_mut();
        if refreshes
            .get(topic)
            .is_some_and(|last| now.saturating_duration_since(*last) < ROUTE_REFRESH_MIN_GAP)
        {
            return false;
        }
        if refreshes.len() >= 4096 {
            refreshes
                .retain(|_, last| now.saturating_duration_since(*last) < ROUTE_REFRESH_MIN_GAP);
        }
        refreshes.insert(topic.to_owned(), now);
        true
    })
}

/// Which address of a broker group a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BrokerRole {
    /// The master only: offset commits, queue locks, send-backs (a slave refuses or ignores
    /// them).
    Master,
    /// Where to read: the suggested broker id when registered, else the master, else any slave
    /// (pulls, offset queries). See [`crate::route::RouteTable::subscribe_addr`].
    Read(Option<i64>),
}

/// The address of `queue`'s broker group for `role`: from the brokers learned from routes
/// (works while every NameServer is down), else from a fresh route of the queue's topic, at
/// most once per [`ROUTE_REFRESH_MIN_GAP`] per topic.
pub(crate) async fn broker_addr(
    ctx: &IoContext,
    queue: &MessageQueue,
    role: BrokerRole,
) -> Result<String> {
    let lookup = || match role {
        BrokerRole::Master => ctx.routes.master_addr(&queue.broker_name),
        BrokerRole::Read(suggested) => ctx.routes.subscribe_addr(&queue.broker_name, suggested),
    };
    if let Some(addr) = lookup() {
        return Ok(addr);
    }
    if may_refresh(&queue.topic, Instant::now()) {
        if let Err(error) = ctx
            .routes
            .refresh(&ctx.pool, &queue.topic, ctx.timeout())
            .await
        {
            tracing::debug!(topic = %queue.topic, %error, "route refresh for a broker address failed");
        }
        if let Some(addr) = lookup() {
            return Ok(addr);
        }
    }
    Err(ClientError::NoQueue {
        topic: queue.topic.clone(),
        what: if role == BrokerRole::Master {
            "writable"
        } else {
            "readable"
        },
    })
}

/// The master address of `queue`'s broker group (see [`broker_addr`]).
pub(crate) async fn master_addr(ctx: &IoContext, queue: &MessageQueue) -> Result<String> {
    broker_addr(ctx, queue, BrokerRole::Master).await
}

/// Runs `futures` concurrently on the current task; their outputs in input order.
pub(crate) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut waiting = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
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
