//! The pull consumer: the caller picks the queues, polls them, moves the read positions and
//! commits them when it chooses.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ringmq_protocol::body::{ConsumeType, ConsumerData, MessageModel};

use super::pull_api::{self, PullRequest, PullStatus};
use super::{StartPosition, Subscription, master_addr, offsets, register_group, validate_group};
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::instance::{ClientInstance, IoContext, Pending};
use crate::message::{MessageQueue, ReceivedMessage};

/// Pause of one queue's polling after a failed pull.
const POLL_ERROR_PAUSE: Duration = Duration::from_millis(500);

/// Builds a [`PullConsumer`].
#[derive(Debug)]
#[must_use = "a builder does nothing until build is called"]
pub struct PullConsumerBuilder {
    namesrv_addrs: String,
    group: String,
    config: Option<ClientConfig>,
    instance: Option<ClientInstance>,
    start_position: StartPosition,
    pull_batch_size: u32,
}

impl PullConsumerBuilder {
    /// Client settings for the consumer's own client instance (ignored with
    /// [`Self::instance`]).
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Shares an existing client instance instead of starting one (not shut down with the
    /// consumer).
    pub fn instance(mut self, instance: ClientInstance) -> Self {
        self.instance = Some(instance);
        self
    }

    /// Where an assigned queue starts when the group has no committed offset for it (default
    /// [`StartPosition::Last`]).
    pub const fn start_position(mut self, position: StartPosition) -> Self {
        self.start_position = position;
        self
    }

    /// Most messages one queue contributes to a poll (default 32, the broker's limit).
    pub const fn pull_batch_size(mut self, messages: u32) -> Self {
        self.pull_batch_size = messages;
        self
    }

    /// Creates the consumer and registers its group with this client's heartbeats.
    pub fn build(self) -> Result<PullConsumer> {
        validate_group(&self.group)?;
        if self.pull_batch_size == 0 {
            return Err(ClientError::InvalidArgument(
                "pull_batch_size must be at least 1".into(),
            ));
        }
        let (instance, owns_instance) = if let Some(instance) = self.instance {
            (instance, false)
        } else {
            let config = self
                .config
                .unwrap_or_else(|| ClientConfig::new(&self.namesrv_addrs));
            (ClientInstance::new(config)?, true)
        };
        let data = consumer_data(&self.group, &[]);
        let registered = instance
            .run(move |ctx| async move { register_group(&ctx, data) })
            .wait();
        if let Err(error) = registered {
            if owns_instance {
                instance.shutdown();
            }
            return Err(error);
        }
        Ok(PullConsumer {
            instance,
            owns_instance,
            shared: Arc::new(PullShared {
                group: self.group,
                start_position: self.start_position,
                pull_batch_size: self.pull_batch_size,
                state: Mutex::new(PullState::default()),
            }),
            shut_down: AtomicBool::new(false),
        })
    }
}

/// The heartbeat entry of a pull consumer: actively consuming, one `*` subscription per topic.
fn consumer_data(group: &str, topics: &[String]) -> ConsumerData {
    ConsumerData {
        consume_type: ConsumeType::Actively,
        group_name: group.to_owned(),
        message_model: MessageModel::Clustering,
        subscription_data_set: topics
            .iter()
            .map(|topic| Subscription::new(topic, "*", 0).data)
            .collect(),
        ..ConsumerData::default()
    }
}

#[derive(Debug, Default)]
struct PullState {
    /// Assigned queues, in assignment order.
    assigned: Vec<MessageQueue>,
    /// Next offset to read, per assigned queue.
    positions: HashMap<MessageQueue, i64>,
    /// Where the next poll starts its round-robin.
    cursor: usize,
}

#[derive(Debug)]
struct PullShared {
    group: String,
    start_position: StartPosition,
    pull_batch_size: u32,
    state: Mutex<PullState>,
}

impl PullShared {
    fn state(&self) -> MutexGuard<'_, PullState> {
        // Never held across an await or user code; a poisoned lock still holds valid data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A pull consumer: reads the queues it is given, from positions it controls.
///
/// [`assign`](Self::assign) sets the queues (each starts at the group's committed offset, or at
/// the start position when the group has none), [`poll`](Self::poll) long-polls them all and
/// returns as soon as any has messages, advancing the positions past what it returns;
/// [`seek`](Self::seek) moves a position and [`commit`](Self::commit) stores the positions at the
/// brokers as the group's offsets. Nothing is committed implicitly.
///
/// ```no_run
/// use std::time::Duration;
/// use ringmq_client::{PullConsumer, StartPosition};
///
/// # fn main() -> ringmq_client::Result<()> {
/// let consumer = PullConsumer::builder("127.0.0.1:9876", "nightly-export")
///     .start_position(StartPosition::First)
///     .build()?;
/// let queues = consumer.queues("orders").wait()?;
/// consumer.assign(queues).wait()?;
/// loop {
///     let messages = consumer.poll(Duration::from_secs(5)).wait()?;
///     if messages.is_empty() {
///         break;
///     }
///     for message in &messages {
///         println!("{} {:?}", message.queue_offset, message.body);
///     }
///     consumer.commit().wait()?;
/// }
/// consumer.shutdown();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PullConsumer {
    instance: ClientInstance,
    owns_instance: bool,
    shared: Arc<PullShared>,
    shut_down: AtomicBool,
}

/// What one queue's poll task reports.
#[derive(Debug)]
enum QueuePoll {
    /// The position moved from `from` to `next`, with these messages (maybe none).
    Moved {
        queue: MessageQueue,
        from: i64,
        next: i64,
        messages: Vec<ReceivedMessage>,
    },
    /// A pull of the queue failed (the task pauses and tries again).
    Failed(MessageQueue, ClientError),
}

impl PullConsumer {
    /// A builder for a consumer of `group` using the given NameServers (`host:port`, several
    /// separated by `;`).
    pub fn builder(namesrv_addrs: &str, group: &str) -> PullConsumerBuilder {
        PullConsumerBuilder {
            namesrv_addrs: namesrv_addrs.to_owned(),
            group: group.to_owned(),
            config: None,
            instance: None,
            start_position: StartPosition::Last,
            pull_batch_size: 32,
        }
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.shared.group
    }

    /// The readable queues of `topic`, sorted by broker and queue id.
    pub fn queues(&self, topic: &str) -> Pending<Vec<MessageQueue>> {
        let topic = topic.to_owned();
        self.instance.run(move |ctx| async move {
            let route = ctx.routes.route(&ctx.pool, &topic, ctx.timeout()).await?;
            if route.readable_queues().is_empty() {
                return Err(ClientError::NoQueue {
                    topic,
                    what: "readable",
                });
            }
            Ok(route.readable_queues().to_vec())
        })
    }

    /// Replaces the assigned queues. A queue already assigned keeps its position; a new one
    /// starts at the group's committed offset, or at the start position when there is none.
    /// On failure nothing changes.
    pub fn assign(&self, queues: Vec<MessageQueue>) -> Pending<()> {
        let shared = Arc::clone(&self.shared);
        self.instance.run(move |ctx| async move {
            let mut unique: Vec<MessageQueue> = Vec::with_capacity(queues.len());
            for queue in queues {
                if !unique.contains(&queue) {
                    unique.push(queue);
                }
            }
            let mut positions = HashMap::with_capacity(unique.len());
            for queue in &unique {
                let known = shared.state().positions.get(queue).copied();
                let offset = match known {
                    Some(offset) => offset,
                    None => {
                        offsets::initial_offset(&ctx, &shared.group, queue, shared.start_position)
                            .await?
                    }
                };
                positions.insert(queue.clone(), offset);
            }
            let mut topics: Vec<String> = unique.iter().map(|queue| queue.topic.clone()).collect();
            topics.sort();
            topics.dedup();
            {
                let mut state = shared.state();
                state.assigned = unique;
                state.positions = positions;
                state.cursor = 0;
            }
            let data = consumer_data(&shared.group, &topics);
            ctx.groups
                .borrow_mut()
                .consumers
                .insert(shared.group.clone(), data);
            ctx.heartbeat_all().await;
            Ok(())
        })
    }

    /// Long-polls every assigned queue at once and returns as soon as any has messages (with
    /// whatever the others returned by then), or an empty list once `timeout` has passed. The
    /// positions of the queues whose messages are returned move past them. Queues take turns
    /// being first in the result. Fails only when no queue is assigned, or when every queue's
    /// pulls failed for the whole `timeout`.
    ///
    /// Dropping the returned [`Pending`] before it completes loses the messages it would have
    /// returned from the positions (not from the committed offsets): seek back if that
    /// matters.
    pub fn poll(&self, timeout: Duration) -> Pending<Vec<ReceivedMessage>> {
        let shared = Arc::clone(&self.shared);
        self.instance
            .run(move |ctx| async move { poll(&ctx, &shared, timeout).await })
    }

    /// Sets the next offset read from `queue` (an assigned queue).
    pub fn seek(&self, queue: &MessageQueue, offset: i64) -> Pending<()> {
        let shared = Arc::clone(&self.shared);
        let queue = queue.clone();
        self.instance.run(move |_ctx| async move {
            if offset < 0 {
                return Err(ClientError::InvalidArgument(format!(
                    "cannot seek to negative offset {offset}"
                )));
            }
            let mut state = shared.state();
            match state.positions.get_mut(&queue) {
                Some(position) => {
                    *position = offset;
                    Ok(())
                }
                None => Err(ClientError::InvalidArgument(format!(
                    "queue {queue:?} is not assigned"
                ))),
            }
        })
    }

    /// The next offset read from `queue`; `None` when it is not assigned.
    pub fn position(&self, queue: &MessageQueue) -> Option<i64> {
        self.shared.state().positions.get(queue).copied()
    }

    /// Stores the position of every assigned queue as the group's offset at the queue's broker.
    /// Every queue is tried; the first failure is returned.
    pub fn commit(&self) -> Pending<()> {
        let shared = Arc::clone(&self.shared);
        self.instance.run(move |ctx| async move {
            let positions: Vec<(MessageQueue, i64)> = {
                let state = shared.state();
                state
                    .assigned
                    .iter()
                    .filter_map(|queue| Some((queue.clone(), *state.positions.get(queue)?)))
                    .collect()
            };
            let mut first_error = None;
            for (queue, offset) in positions {
                if let Err(error) = offsets::update(&ctx, &shared.group, &queue, offset).await {
                    first_error.get_or_insert(error);
                }
            }
            first_error.map_or(Ok(()), Err)
        })
    }

    /// The group's committed offset of `queue` at its broker; `None` when it has none.
    pub fn committed(&self, queue: &MessageQueue) -> Pending<Option<i64>> {
        let shared = Arc::clone(&self.shared);
        let queue = queue.clone();
        self.instance
            .run(move |ctx| async move { offsets::query(&ctx, &shared.group, &queue).await })
    }

    /// Leaves the group (positions are not committed: call [`Self::commit`] first) and stops
    /// the consumer's own client instance. Idempotent.
    pub fn shutdown(&self) {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        let group = self.shared.group.clone();
        let left = self
            .instance
            .run(move |ctx| async move {
                let registered = ctx.groups.borrow_mut().consumers.remove(&group).is_some();
                if registered {
                    ctx.unregister(None, Some(&group)).await;
                }
                Ok(())
            })
            .wait();
        if let Err(error) = left {
            tracing::debug!(group = %self.shared.group, %error, "pull consumer shutdown");
        }
        if self.owns_instance {
            self.instance.shutdown();
        }
    }
}

impl Drop for PullConsumer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // compio aborts the process when a thread that is unwinding wakes one of its tasks,
            // and the shutdown wakes the I/O thread: run it on a helper thread.
            let this = &*self;
            std::thread::scope(|scope| {
                let _ = scope.spawn(|| this.shutdown()).join();
            });
        } else {
            self.shutdown();
        }
    }
}

/// One poll: a long-polling task per assigned queue, the first messages win.
async fn poll(
    ctx: &Rc<IoContext>,
    shared: &Arc<PullShared>,
    timeout: Duration,
) -> Result<Vec<ReceivedMessage>> {
    let start: Vec<(MessageQueue, i64)> = {
        let mut state = shared.state();
        if state.assigned.is_empty() {
            return Err(ClientError::InvalidArgument(
                "poll needs assigned queues (see assign)".into(),
            ));
        }
        let count = state.assigned.len();
        let cursor = state.cursor % count;
        state.cursor = (cursor + 1) % count;
        (0..count)
            .filter_map(|i| {
                let queue = &state.assigned[(cursor + i) % count];
                Some((queue.clone(), *state.positions.get(queue)?))
            })
            .collect()
    };
    let deadline = Instant::now() + timeout;
    let (reports_tx, reports_rx) = flume::unbounded();
    let tasks: Vec<_> = start
        .iter()
        .map(|(queue, offset)| {
            compio::runtime::spawn(poll_queue(
                Rc::clone(ctx),
                Arc::clone(shared),
                queue.clone(),
                *offset,
                deadline,
                reports_tx.clone(),
            ))
        })
        .collect();
    drop(reports_tx);
    let mut reports = Vec::new();
    let mut failing: HashMap<MessageQueue, ClientError> = HashMap::new();
    let mut found = false;
    // Bounded by the deadline (and by every task ending, which disconnects the channel).
    while !found {
        match compio::time::timeout_at(deadline, reports_rx.recv_async()).await {
            Ok(Ok(report)) => {
                if let QueuePoll::Moved { messages, .. } = &report {
                    found = !messages.is_empty();
                }
                record(report, &mut reports, &mut failing);
            }
            Ok(Err(_)) | Err(_) => break,
        }
    }
    // Take whatever the other queues already returned, then cancel their pulls.
    while let Ok(report) = reports_rx.try_recv() {
        record(report, &mut reports, &mut failing);
    }
    drop(tasks);
    if !found && !failing.is_empty() && failing.len() == start.len() {
        return Err(failing
            .into_values()
            .next()
            .unwrap_or(ClientError::Shutdown));
    }
    // Apply in round-robin order; a queue sought meanwhile keeps the sought position.
    let mut messages = Vec::new();
    let mut state = shared.state();
    for (queue, _) in &start {
        for (moved_queue, from, next, batch) in &mut reports {
            if moved_queue != queue {
                continue;
            }
            if let Some(position) = state.positions.get_mut(queue)
                && *position == *from
            {
                *position = *next;
                messages.append(batch);
            }
        }
    }
    Ok(messages)
}

type Moved = (MessageQueue, i64, i64, Vec<ReceivedMessage>);

/// Files a queue's report: position moves in order, the latest failure per queue.
fn record(
    report: QueuePoll,
    reports: &mut Vec<Moved>,
    failing: &mut HashMap<MessageQueue, ClientError>,
) {
    match report {
        QueuePoll::Moved {
            queue,
            from,
            next,
            messages,
        } => {
            failing.remove(&queue);
            reports.push((queue, from, next, messages));
        }
        QueuePoll::Failed(queue, error) => {
            failing.insert(queue, error);
        }
    }
}

/// Pulls one queue until it finds messages or `deadline` passes. Every position change is
/// reported (with its messages, if any), so the poll can apply it.
async fn poll_queue(
    ctx: Rc<IoContext>,
    shared: Arc<PullShared>,
    queue: MessageQueue,
    mut offset: i64,
    deadline: Instant,
    reports: flume::Sender<QueuePoll>,
) {
    // Bounded by the deadline: every iteration ends in a pull limited by the remaining time or
    // a pause.
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return;
        }
        let result = async {
            let addr = master_addr(&ctx, &queue).await?;
            let request = PullRequest {
                group: &shared.group,
                queue: &queue,
                offset,
                max_messages: shared.pull_batch_size,
                commit_offset: None,
                suspend: Some(remaining),
                expression: "*",
                sub_version: 0,
            };
            pull_api::pull(&ctx, &addr, &request).await
        }
        .await;
        match result {
            Ok(result) => {
                let next = result.next_begin_offset;
                let messages = match result.status {
                    PullStatus::Found(messages) => messages,
                    PullStatus::OffsetMoved => {
                        tracing::warn!(
                            group = %shared.group,
                            ?queue,
                            offset,
                            next,
                            "pull offset is outside the queue; continuing at the broker's offset"
                        );
                        Vec::new()
                    }
                    PullStatus::NoNewMessage | PullStatus::NoMatchedMessage => Vec::new(),
                };
                let found = !messages.is_empty();
                if next != offset || found {
                    let report = QueuePoll::Moved {
                        queue: queue.clone(),
                        from: offset,
                        next,
                        messages,
                    };
                    if reports.send(report).is_err() {
                        return;
                    }
                    offset = next;
                }
                if found {
                    return;
                }
            }
            Err(error) => {
                tracing::debug!(group = %shared.group, ?queue, %error, "poll pull failed");
                if reports
                    .send(QueuePoll::Failed(queue.clone(), error))
                    .is_err()
                {
                    return;
                }
                let pause =
                    POLL_ERROR_PAUSE.min(deadline.saturating_duration_since(Instant::now()));
                compio::time::sleep(pause).await;
            }
        }
    }
}
