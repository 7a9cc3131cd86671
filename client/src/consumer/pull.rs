//! The pull consumer: the caller picks the queues, polls them, moves the read positions and
//! commits them when it chooses.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ringmq_protocol::body::{ConsumeType, ConsumerData, MessageModel};

use super::pull_api::{self, PullRequest, PullStatus};
use super::{
    BrokerRole, StartPosition, Subscription, broker_addr, offsets, register_group, validate_group,
};
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::instance::{ClientInstance, IoContext, Pending};
use crate::message::{MessageQueue, ReceivedMessage};
use crate::notify::Notify;
use compio::runtime::JoinHandle;

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
                id: NEXT_PULL_CONSUMER_ID.fetch_add(1, Ordering::Relaxed),
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
    /// Bumped by every call of the consumer's user that may move or read positions (poll,
    /// seek, assign, commit, shutdown): a poll whose caller went on to another call is stale
    /// and hands nothing out.
    generation: u64,
    /// Assigned queues, in assignment order.
    assigned: Vec<MessageQueue>,
    /// Next offset to read, per assigned queue.
    positions: HashMap<MessageQueue, i64>,
    /// Where the next poll starts its round-robin.
    cursor: usize,
}

#[derive(Debug)]
struct PullShared {
    /// Identifies the consumer's I/O-side state (see [`PullIo`]).
    id: u64,
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

    /// Starts a new call of the user: earlier polls still running become stale.
    fn next_generation(&self) -> u64 {
        let mut state = self.state();
        state.generation = state.generation.wrapping_add(1);
        state.generation
    }
}

/// Source of [`PullShared::id`].
static NEXT_PULL_CONSUMER_ID: AtomicU64 = AtomicU64::new(1);

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
        shared.next_generation();
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
                PullIo::of(shared.id).retain(&state.assigned);
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

    /// Returns the messages the assigned queues have, waiting up to `timeout` for the first
    /// (an empty list once it passed). Each queue has one long-polling pull at its broker at a
    /// time, kept across polls: a pull's answer waits in the consumer (one per queue) until a
    /// poll hands it out, and only then does the queue's position move past its messages.
    /// Queues take turns being first in the result. Fails only when no queue is assigned, or
    /// when every queue's pulls are failing at the end of `timeout`.
    ///
    /// Dropping the returned [`Pending`] while it waits takes nothing as soon as the consumer
    /// is called again (poll, seek, assign, commit); only messages that arrive between the drop
    /// and that next call are handed to the dropped poll and skipped by the positions.
    pub fn poll(&self, timeout: Duration) -> Pending<Vec<ReceivedMessage>> {
        let shared = Arc::clone(&self.shared);
        let generation = shared.next_generation();
        self.instance
            .run(move |ctx| async move { poll(&ctx, &shared, timeout, generation).await })
    }

    /// Sets the next offset read from `queue` (an assigned queue); the queue's pulled and not
    /// yet returned messages are discarded.
    pub fn seek(&self, queue: &MessageQueue, offset: i64) -> Pending<()> {
        let shared = Arc::clone(&self.shared);
        shared.next_generation();
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
                    PullIo::of(shared.id).discard(&queue);
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
        shared.next_generation();
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
        self.shared.next_generation();
        let id = self.shared.id;
        let left = self
            .instance
            .run(move |ctx| async move {
                PullIo::remove(id);
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

/// How long the broker may hold a pull of a queue that has nothing new. Pulls outlive the
/// `poll` that started them (their answer waits in the consumer for the next `poll`), so this is
/// independent of the poll timeout.
const LONG_POLL_SUSPEND: Duration = Duration::from_secs(15);

thread_local! {
    /// The I/O-side state of every pull consumer of this I/O thread's client instance, by id.
    static PULL_IO: RefCell<HashMap<u64, Rc<PullIo>>> = RefCell::new(HashMap::new());
}

/// A finished pull of one queue, waiting for a `poll` to hand it out.
#[derive(Debug)]
struct Fetched {
    /// The offset after the pull (the position once this result is handed out).
    next: i64,
    messages: Vec<ReceivedMessage>,
}

/// One assigned queue's pull on the I/O side: at most one in flight per queue, across polls.
#[derive(Debug)]
struct Slot {
    /// The position the pull read from; a result only applies while the position is still this.
    from: i64,
    /// The pull task; dropping it cancels the pull.
    _task: Option<JoinHandle<()>>,
    /// The pull's answer, once it came.
    result: Option<Result<Fetched>>,
    /// After a failure: when the queue may be pulled again.
    retry_at: Option<Instant>,
}

/// A pull consumer's pulls, on the I/O thread.
#[derive(Debug, Default)]
struct PullIo {
    slots: RefCell<HashMap<MessageQueue, Slot>>,
    /// Broker id each queue's last pull answer suggested.
    suggested: RefCell<HashMap<MessageQueue, i64>>,
    /// The latest failure per queue, cleared by a successful pull.
    failing: RefCell<HashMap<MessageQueue, ClientError>>,
    /// Woken whenever a pull finishes.
    wake: Notify,
}

impl PullIo {
    /// The state of consumer `id` on this thread (created on first use).
    fn of(id: u64) -> Rc<Self> {
        PULL_IO.with(|all| Rc::clone(all.borrow_mut().entry(id).or_default()))
    }

    /// Forgets consumer `id`: cancels its pulls.
    fn remove(id: u64) {
        let io = PULL_IO.with(|all| all.borrow_mut().remove(&id));
        if let Some(io) = io {
            io.slots.borrow_mut().clear();
        }
    }

    /// Drops the pulls (and buffered results) of queues not in `assigned`.
    fn retain(&self, assigned: &[MessageQueue]) {
        self.slots
            .borrow_mut()
            .retain(|queue, _| assigned.contains(queue));
        self.failing
            .borrow_mut()
            .retain(|queue, _| assigned.contains(queue));
    }

    /// Drops `queue`'s pull and buffered result (seek).
    fn discard(&self, queue: &MessageQueue) {
        self.slots.borrow_mut().remove(queue);
    }

    /// Starts a pull of `queue` from `from` (replacing any slot of the queue).
    fn start(
        self: &Rc<Self>,
        ctx: &Rc<IoContext>,
        shared: &Arc<PullShared>,
        queue: &MessageQueue,
        from: i64,
    ) {
        let suggested = self.suggested.borrow().get(queue).copied();
        let task = compio::runtime::spawn(pull_once(
            Rc::clone(ctx),
            Arc::clone(shared),
            Rc::downgrade(self),
            queue.clone(),
            from,
            suggested,
        ));
        self.slots.borrow_mut().insert(
            queue.clone(),
            Slot {
                from,
                _task: Some(task),
                result: None,
                retry_at: None,
            },
        );
    }
}

/// One pull of `queue` from `from`; stores its answer in the queue's slot and wakes the polls.
async fn pull_once(
    ctx: Rc<IoContext>,
    shared: Arc<PullShared>,
    io: Weak<PullIo>,
    queue: MessageQueue,
    from: i64,
    suggested: Option<i64>,
) {
    let result = async {
        let addr = broker_addr(&ctx, &queue, BrokerRole::Read(suggested)).await?;
        let request = PullRequest {
            group: &shared.group,
            queue: &queue,
            offset: from,
            max_messages: shared.pull_batch_size,
            commit_offset: None,
            suspend: Some(LONG_POLL_SUSPEND),
            expression: "*",
            sub_version: 0,
        };
        pull_api::pull(&ctx, &addr, &request).await
    }
    .await;
    let Some(io) = io.upgrade() else {
        return;
    };
    let (result, retry_at) = match result {
        Ok(result) => {
            io.suggested
                .borrow_mut()
                .insert(queue.clone(), result.suggested_broker_id);
            io.failing.borrow_mut().remove(&queue);
            let next = result.next_begin_offset;
            let messages = match result.status {
                PullStatus::Found(messages) => messages,
                PullStatus::OffsetMoved => {
                    tracing::warn!(
                        group = %shared.group,
                        ?queue,
                        offset = from,
                        next,
                        "pull offset is outside the queue; continuing at the broker's offset"
                    );
                    Vec::new()
                }
                PullStatus::NoNewMessage | PullStatus::NoMatchedMessage => Vec::new(),
            };
            (Ok(Fetched { next, messages }), None)
        }
        Err(error) => {
            tracing::debug!(group = %shared.group, ?queue, %error, "poll pull failed");
            io.suggested.borrow_mut().remove(&queue);
            io.failing.borrow_mut().insert(queue.clone(), error.clone());
            (Err(error), Some(Instant::now() + POLL_ERROR_PAUSE))
        }
    };
    if let Some(slot) = io.slots.borrow_mut().get_mut(&queue)
        && slot.from == from
        && slot.result.is_none()
    {
        slot.result = Some(result);
        slot.retry_at = retry_at;
    }
    io.wake.notify();
}

/// One poll: hands out the buffered results of the assigned queues (round-robin from the
/// cursor), keeps one pull in flight per queue, and waits for the next result until
/// `deadline`. Positions move only together with the messages returned, and only while this
/// poll is the latest call of the consumer's user (`generation`): a poll whose caller stopped
/// waiting and called the consumer again takes nothing.
async fn poll(
    ctx: &Rc<IoContext>,
    shared: &Arc<PullShared>,
    timeout: Duration,
    generation: u64,
) -> Result<Vec<ReceivedMessage>> {
    let io = PullIo::of(shared.id);
    let deadline = Instant::now() + timeout;
    // Bounded by the deadline: every round either returns or waits for a pull or the deadline;
    // and by the count, for rounds that only move positions.
    for _ in 0..100_000 {
        let (order, positions) = {
            let state = shared.state();
            if state.generation != generation {
                return Ok(Vec::new());
            }
            if state.assigned.is_empty() {
                return Err(ClientError::InvalidArgument(
                    "poll needs assigned queues (see assign)".into(),
                ));
            }
            let count = state.assigned.len();
            let cursor = state.cursor % count;
            let order: Vec<MessageQueue> = (0..count)
                .map(|i| state.assigned[(cursor + i) % count].clone())
                .collect();
            (order, state.positions.clone())
        };
        io.retain(&order);
        let now = Instant::now();
        let mut finished: Vec<(MessageQueue, i64, Fetched)> = Vec::new();
        let mut restart: Vec<(MessageQueue, i64)> = Vec::new();
        let mut wake_at = deadline;
        for queue in &order {
            let Some(&position) = positions.get(queue) else {
                continue;
            };
            let mut slots = io.slots.borrow_mut();
            match slots.get_mut(queue) {
                None => restart.push((queue.clone(), position)),
                Some(slot) if slot.from != position => restart.push((queue.clone(), position)),
                Some(slot) => match slot.result.take() {
                    None => {}
                    Some(Ok(fetched)) => finished.push((queue.clone(), slot.from, fetched)),
                    Some(Err(error)) => {
                        let retry_at = slot.retry_at.unwrap_or(now);
                        if retry_at <= now {
                            restart.push((queue.clone(), position));
                        } else {
                            slot.result = Some(Err(error));
                            wake_at = wake_at.min(retry_at);
                        }
                    }
                },
            }
        }
        // Hand out what arrived, in round-robin order; positions move with the messages.
        let mut messages = Vec::new();
        {
            let mut state = shared.state();
            if state.generation != generation {
                // Superseded: put the results back for the next poll.
                let mut slots = io.slots.borrow_mut();
                for (queue, _, fetched) in finished {
                    if let Some(slot) = slots.get_mut(&queue) {
                        slot.result = Some(Ok(fetched));
                    }
                }
                return Ok(Vec::new());
            }
            for (queue, from, mut fetched) in finished {
                if let Some(position) = state.positions.get_mut(&queue)
                    && *position == from
                {
                    *position = fetched.next;
                    messages.append(&mut fetched.messages);
                    restart.push((queue, fetched.next));
                }
            }
            if !messages.is_empty() {
                let count = state.assigned.len().max(1);
                state.cursor = (state.cursor % count + 1) % count;
            }
        }
        for (queue, from) in restart {
            io.start(ctx, shared, &queue, from);
        }
        if !messages.is_empty() {
            return Ok(messages);
        }
        if Instant::now() >= deadline {
            let failing = io.failing.borrow();
            if !order.is_empty() && order.iter().all(|queue| failing.contains_key(queue)) {
                if let Some(error) = order.iter().find_map(|queue| failing.get(queue)) {
                    return Err(error.clone());
                }
            }
            return Ok(Vec::new());
        }
        io.wake.wait_until(wake_at).await;
    }
    Ok(Vec::new())
}
