//! The push consumer: a group member that finds its queues, pulls them with long polling and
//! calls a handler with the messages.
//!
//! Work split:
//! - the I/O thread runs one control task per consumer (first rebalance at start, then on
//!   NOTIFY_CONSUMER_IDS_CHANGED and every `rebalance_interval`; offset commits every
//!   `commit_interval`; orderly lock renewal every 20 s; shutdown) and one pull task per assigned
//!   queue;
//! - the consume thread (see [`super::consume`]) runs the handler.
//!
//! Nothing here fails hard when every NameServer is down: routes come from the cache, broker
//! addresses from the brokers learned from routes, so pulls, commits and rebalances (against the
//! brokers' member lists) go on.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use compio::runtime::JoinHandle;
use ringmq_protocol::body::{ConsumeType, ConsumerData};

use super::consume::{ConsumeLoop, ConsumeSettings, Signal};
use super::offsets::{self, LocalOffsetStore};
use super::process_queue::ProcessQueue;
use super::pull_api::{self, PullRequest, PullStatus};
use super::rebalance::{allocate_averagely, consumer_ids};
use super::{
    ConsumeContext, ConsumeMode, ConsumeOutcome, Either, StartPosition, Subscription, either,
    master_addr, now_ms, orderly, register_group, retry_topic, validate_group,
};
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::instance::{ClientInstance, IoContext};
use crate::message::{MessageQueue, ReceivedMessage};
use crate::notify::Notify;
use crate::route::TopicRoute;

/// Pause of a queue's pulls while its backlog is over the threshold (RocketMQ
/// `PULL_TIME_DELAY_MILLS_WHEN_FLOW_CONTROL`).
const FLOW_CONTROL_PAUSE: Duration = Duration::from_millis(50);
/// Pause after a failed pull.
const PULL_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// How often an orderly queue without its lock checks again before pulling.
const LOCK_WAIT: Duration = Duration::from_millis(500);
/// Orderly consumers re-lock their queues this often (RocketMQ `lockInterval`).
const LOCK_RENEW_INTERVAL: Duration = Duration::from_secs(20);
/// Next rebalance after one that could not finish (route or member list missing, lock refused).
const REBALANCE_RETRY: Duration = Duration::from_secs(3);
/// How long a dropped orderly queue waits for its running batch before it is unlocked.
const UNLOCK_WAIT: Duration = Duration::from_secs(1);

/// Builds and starts a [`PushConsumer`].
///
/// Defaults: clustering, [`StartPosition::Last`], pulls of 32 messages, handler batches of 1,
/// rebalance every 20 s, offset commits every 5 s, broker long-poll hold 15 s, not orderly,
/// pulls of a queue paused while 1000 of its messages are not done.
#[derive(Debug)]
#[must_use = "a builder does nothing until start is called"]
pub struct PushConsumerBuilder {
    namesrv_addrs: String,
    group: String,
    config: Option<ClientConfig>,
    instance: Option<ClientInstance>,
    subscriptions: Vec<(String, String)>,
    mode: ConsumeMode,
    start_position: StartPosition,
    batch_size: usize,
    pull_batch_size: u32,
    pull_threshold: usize,
    rebalance_interval: Duration,
    commit_interval: Duration,
    long_poll_timeout: Duration,
    orderly: bool,
    offset_store_dir: Option<PathBuf>,
    shutdown_timeout: Duration,
}

impl PushConsumerBuilder {
    fn new(namesrv_addrs: &str, group: &str) -> Self {
        Self {
            namesrv_addrs: namesrv_addrs.to_owned(),
            group: group.to_owned(),
            config: None,
            instance: None,
            subscriptions: Vec::new(),
            mode: ConsumeMode::Clustering,
            start_position: StartPosition::Last,
            batch_size: 1,
            pull_batch_size: 32,
            pull_threshold: 1000,
            rebalance_interval: Duration::from_secs(20),
            commit_interval: Duration::from_secs(5),
            long_poll_timeout: Duration::from_secs(15),
            orderly: false,
            offset_store_dir: None,
            shutdown_timeout: Duration::from_secs(30),
        }
    }

    /// Client settings for the consumer's own client instance (ignored with
    /// [`Self::instance`]). Default: [`ClientConfig::new`] of the NameServer addresses.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Shares an existing client instance (its I/O thread and connections) instead of starting
    /// one. A shared instance is not shut down with the consumer.
    pub fn instance(mut self, instance: ClientInstance) -> Self {
        self.instance = Some(instance);
        self
    }

    /// Subscribes to `topic` with a tag expression: `*` for every message, or tags separated by
    /// `||` (`"paid || refunded"`). Subscribing to a topic again replaces its expression.
    pub fn subscribe(mut self, topic: &str, tag_expression: &str) -> Self {
        self.subscriptions.retain(|(existing, _)| existing != topic);
        self.subscriptions
            .push((topic.to_owned(), tag_expression.to_owned()));
        self
    }

    /// Clustering (queues split between members) or broadcasting (every member reads all).
    pub const fn mode(mut self, mode: ConsumeMode) -> Self {
        self.mode = mode;
        self
    }

    /// Where the group starts a queue it has no committed offset for.
    pub const fn start_position(mut self, position: StartPosition) -> Self {
        self.start_position = position;
        self
    }

    /// Most messages (all of one queue) per handler call.
    pub const fn batch_size(mut self, messages: usize) -> Self {
        self.batch_size = messages;
        self
    }

    /// Most messages per pull (a RingMQ or RocketMQ broker returns at most 32).
    pub const fn pull_batch_size(mut self, messages: u32) -> Self {
        self.pull_batch_size = messages;
        self
    }

    /// Pulls of a queue pause while this many of its messages are pulled and not yet done
    /// (flow control; RocketMQ `pullThresholdForQueue`).
    pub const fn pull_threshold_per_queue(mut self, messages: usize) -> Self {
        self.pull_threshold = messages;
        self
    }

    /// How often queues are re-split even without a membership change notice.
    pub const fn rebalance_interval(mut self, interval: Duration) -> Self {
        self.rebalance_interval = interval;
        self
    }

    /// How often consumed offsets are committed.
    pub const fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// How long a broker may hold a pull while the queue has nothing new (long polling).
    pub const fn long_poll_timeout(mut self, timeout: Duration) -> Self {
        self.long_poll_timeout = timeout;
        self
    }

    /// Orderly consumption: queues are locked at the broker before they are pulled, and each
    /// queue's messages reach the handler strictly in order, one batch at a time.
    pub const fn orderly(mut self, orderly: bool) -> Self {
        self.orderly = orderly;
        self
    }

    /// Directory of a broadcasting consumer's offset file (default `~/.ringmq_offsets`); the
    /// file is `<dir>/<instance name or DEFAULT>/<group>/offsets.json`.
    pub fn offset_store_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.offset_store_dir = Some(dir.into());
        self
    }

    /// How long [`PushConsumer::shutdown`] waits for a running handler batch.
    pub const fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<()> {
        validate_group(&self.group)?;
        if self.subscriptions.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a push consumer needs at least one subscription".into(),
            ));
        }
        if let Some((topic, _)) = self
            .subscriptions
            .iter()
            .find(|(topic, _)| topic.is_empty())
        {
            return Err(ClientError::InvalidArgument(format!(
                "subscription topic {topic:?} is empty"
            )));
        }
        if self.batch_size == 0 || self.pull_batch_size == 0 || self.pull_threshold == 0 {
            return Err(ClientError::InvalidArgument(
                "batch_size, pull_batch_size and pull_threshold_per_queue must be at least 1"
                    .into(),
            ));
        }
        for (name, value) in [
            ("rebalance_interval", self.rebalance_interval),
            ("commit_interval", self.commit_interval),
        ] {
            if value.is_zero() {
                return Err(ClientError::InvalidArgument(format!(
                    "{name} must not be zero"
                )));
            }
        }
        Ok(())
    }

    /// Starts the consumer: joins the group, takes its share of the queues (the first rebalance
    /// runs before this returns) and starts pulling. `handler` runs on the consumer's own
    /// thread with batches of one queue's messages; see [`ConsumeOutcome`] for what its answer
    /// does.
    pub fn start<H>(self, handler: H) -> Result<PushConsumer>
    where
        H: FnMut(&[ReceivedMessage], &ConsumeContext) -> ConsumeOutcome + Send + 'static,
    {
        self.validate()?;
        let settings = Settings::from_builder(&self);
        let (instance, owns_instance) = if let Some(instance) = self.instance {
            (instance, false)
        } else {
            let config = self
                .config
                .unwrap_or_else(|| ClientConfig::new(&self.namesrv_addrs));
            (ClientInstance::new(config)?, true)
        };
        let result = start_on(
            &instance,
            settings,
            self.offset_store_dir,
            self.shutdown_timeout,
            handler,
        );
        match result {
            Ok(mut consumer) => {
                consumer.owns_instance = owns_instance;
                Ok(consumer)
            }
            Err(error) => {
                if owns_instance {
                    instance.shutdown();
                }
                Err(error)
            }
        }
    }
}

/// A running consumer's fixed settings, shared by its tasks.
#[derive(Debug)]
struct Settings {
    group: String,
    mode: ConsumeMode,
    start_position: StartPosition,
    /// The user's subscriptions, plus the group's retry topic in clustering mode.
    subscriptions: Vec<Subscription>,
    batch_size: usize,
    pull_batch_size: u32,
    pull_threshold: usize,
    rebalance_interval: Duration,
    commit_interval: Duration,
    long_poll_timeout: Duration,
    orderly: bool,
}

impl Settings {
    fn from_builder(builder: &PushConsumerBuilder) -> Self {
        let sub_version = now_ms();
        let group = &builder.group;
        let mut subscriptions: Vec<Subscription> = builder
            .subscriptions
            .iter()
            .map(|(topic, expression)| Subscription::new(topic, expression, sub_version))
            .collect();
        if builder.mode == ConsumeMode::Clustering {
            // Messages the group sends back come back through its retry topic.
            let retry = retry_topic(group);
            if !subscriptions.iter().any(|sub| sub.topic() == retry) {
                subscriptions.push(Subscription::new(&retry, "*", sub_version));
            }
        }
        Self {
            group: group.clone(),
            mode: builder.mode,
            start_position: builder.start_position,
            subscriptions,
            batch_size: builder.batch_size,
            pull_batch_size: builder.pull_batch_size,
            pull_threshold: builder.pull_threshold,
            rebalance_interval: builder.rebalance_interval,
            commit_interval: builder.commit_interval,
            long_poll_timeout: builder.long_poll_timeout,
            orderly: builder.orderly,
        }
    }

    fn consumer_data(&self) -> ConsumerData {
        ConsumerData {
            consume_from_where: self.start_position.consume_from_where(),
            consume_type: ConsumeType::Passively,
            group_name: self.group.clone(),
            message_model: self.mode.message_model(),
            subscription_data_set: self.subscriptions.iter().map(|s| s.data.clone()).collect(),
            unit_mode: false,
        }
    }

    fn subscription(&self, topic: &str) -> Option<&Subscription> {
        self.subscriptions.iter().find(|sub| sub.topic() == topic)
    }

    const fn clustering(&self) -> bool {
        matches!(self.mode, ConsumeMode::Clustering)
    }
}

/// State the user's handle and the I/O side share.
#[derive(Debug, Default)]
struct Shared {
    assigned: Mutex<Vec<MessageQueue>>,
    /// Set at shutdown: the consume thread takes no new batch.
    stopping: Arc<AtomicBool>,
}

/// Requests from the handle to the control task.
#[derive(Debug)]
enum Control {
    /// Stop every pull task (first shutdown step).
    StopPulls(flume::Sender<()>),
    /// Commit, unlock, leave the group, end (last shutdown step).
    Finish(flume::Sender<Result<()>>),
}

/// The consume thread, as the handle sees it.
#[derive(Debug)]
struct ConsumeThread {
    thread: std::thread::JoinHandle<()>,
    /// Disconnected once the thread has exited.
    exited: flume::Receiver<()>,
    signals: flume::Sender<Signal>,
}

/// A push consumer: a member of a consumer group that receives the messages of its share of the
/// subscribed topics' queues through a handler.
///
/// The handler runs on a thread of the consumer's own, with batches of up to `batch_size`
/// messages of one queue; returning [`ConsumeOutcome::Retry`] has the broker redeliver the
/// batch later (see [`ConsumeOutcome`]). Delivery is at least once: after a crash or a
/// rebalance, messages handled since the last offset commit are delivered again.
///
/// ```no_run
/// use ringmq_client::{ConsumeOutcome, PushConsumer};
///
/// # fn main() -> ringmq_client::Result<()> {
/// let consumer = PushConsumer::builder("127.0.0.1:9876", "order-auditors")
///     .subscribe("orders", "paid || refunded")
///     .batch_size(16)
///     .start(|messages, context| {
///         for message in messages {
///             println!("{:?} offset {}: {:?}", context.queue, message.queue_offset, message.body);
///         }
///         ConsumeOutcome::Success
///     })?;
/// println!("consuming {:?}", consumer.assigned_queues());
/// // ... later: commit the offsets and leave the group.
/// consumer.shutdown()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PushConsumer {
    instance: ClientInstance,
    owns_instance: bool,
    group: String,
    shared: Arc<Shared>,
    control: flume::Sender<Control>,
    consume_thread: Mutex<Option<ConsumeThread>>,
    shutdown_timeout: Duration,
    shut_down: AtomicBool,
}

impl PushConsumer {
    /// A builder for a consumer of `group` using the given NameServers (`host:port`, several
    /// separated by `;`).
    pub fn builder(namesrv_addrs: &str, group: &str) -> PushConsumerBuilder {
        PushConsumerBuilder::new(namesrv_addrs, group)
    }

    /// The queues this member currently consumes (the last rebalance's result), sorted.
    pub fn assigned_queues(&self) -> Vec<MessageQueue> {
        self.shared
            .assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Stops the consumer: stops pulling, waits (up to the shutdown timeout) for the batch the
    /// handler is running, commits the offsets, releases orderly queue locks, and leaves the
    /// group (the other members take over its queues from the committed offsets). Messages
    /// pulled but not yet handled are dropped; they are re-read from the committed offset.
    /// Idempotent: later calls return `Ok(())`. May be called from inside the handler (it then
    /// does not wait for the handler).
    pub fn shutdown(&self) -> Result<()> {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.shared.stopping.store(true, Ordering::Release);
        let (stopped_tx, stopped_rx) = flume::bounded(1);
        if self.control.send(Control::StopPulls(stopped_tx)).is_ok() {
            // Disconnected means the control task is gone (instance shut down): nothing to stop.
            let _ = stopped_rx.recv();
        }
        let thread = self
            .consume_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.signals.send(Signal::Stop);
            if thread.thread.thread().id() == std::thread::current().id() {
                // Called from the handler: the thread ends once the handler returns.
            } else {
                let exited = thread.exited.recv_timeout(self.shutdown_timeout);
                if let Err(flume::RecvTimeoutError::Disconnected) = exited {
                    let _ = thread.thread.join();
                } else {
                    tracing::warn!(
                        group = %self.group,
                        timeout = ?self.shutdown_timeout,
                        "the consume handler is still running; its batch will be redelivered"
                    );
                }
            }
        }
        let (finished_tx, finished_rx) = flume::bounded(1);
        let result = if self.control.send(Control::Finish(finished_tx)).is_ok() {
            finished_rx.recv().unwrap_or(Err(ClientError::Shutdown))
        } else {
            Err(ClientError::Shutdown)
        };
        if self.owns_instance {
            self.instance.shutdown();
        }
        result
    }
}

impl Drop for PushConsumer {
    fn drop(&mut self) {
        let this = &*self;
        let result = if std::thread::panicking() {
            // compio aborts the process when a thread that is unwinding wakes one of its tasks,
            // and the shutdown wakes the I/O thread: run it on a helper thread.
            std::thread::scope(|scope| {
                scope
                    .spawn(|| this.shutdown())
                    .join()
                    .unwrap_or(Err(ClientError::Shutdown))
            })
        } else {
            this.shutdown()
        };
        if let Err(error) = result {
            tracing::debug!(group = %self.group, %error, "consumer shutdown on drop");
        }
    }
}

/// Starts the consume thread and the I/O side on `instance`.
fn start_on<H>(
    instance: &ClientInstance,
    settings: Settings,
    offset_store_dir: Option<PathBuf>,
    shutdown_timeout: Duration,
    handler: H,
) -> Result<PushConsumer>
where
    H: FnMut(&[ReceivedMessage], &ConsumeContext) -> ConsumeOutcome + Send + 'static,
{
    let local = if settings.clustering() {
        None
    } else {
        let dir = offset_store_dir.unwrap_or_else(LocalOffsetStore::default_dir);
        let instance_name = instance
            .config()
            .instance_name
            .clone()
            .unwrap_or_else(|| "DEFAULT".to_owned());
        let path = LocalOffsetStore::path(&dir, &instance_name, &settings.group);
        Some(LocalOffsetStore::load(path, &settings.group)?)
    };
    let settings = Arc::new(settings);
    let shared = Arc::new(Shared::default());
    let (signals_tx, signals_rx) = flume::unbounded();
    let (control_tx, control_rx) = flume::unbounded();
    let (exited_tx, exited_rx) = flume::bounded::<()>(1);
    let consume = ConsumeLoop::new(
        handler,
        ConsumeSettings {
            group: settings.group.clone(),
            batch_size: settings.batch_size,
            orderly: settings.orderly,
        },
        instance.clone(),
        signals_rx,
        Arc::clone(&shared.stopping),
    );
    let thread = std::thread::Builder::new()
        .name(format!("ringmq-consume-{}", settings.group))
        .spawn(move || {
            let _exited = exited_tx;
            consume.run();
        })
        .map_err(|error| {
            ClientError::InvalidArgument(format!("cannot start the consume thread: {error}"))
        })?;
    let consume_thread = ConsumeThread {
        thread,
        exited: exited_rx,
        signals: signals_tx.clone(),
    };
    let io_settings = Arc::clone(&settings);
    let io_shared = Arc::clone(&shared);
    let started = instance
        .run(move |ctx| async move {
            PushIo::start(ctx, io_settings, io_shared, signals_tx, control_rx, local).await
        })
        .wait();
    if let Err(error) = started {
        shared.stopping.store(true, Ordering::Release);
        let _ = consume_thread.signals.send(Signal::Stop);
        let _ = consume_thread.thread.join();
        return Err(error);
    }
    Ok(PushConsumer {
        instance: instance.clone(),
        owns_instance: false,
        group: settings.group.clone(),
        shared,
        control: control_tx,
        consume_thread: Mutex::new(Some(consume_thread)),
        shutdown_timeout,
        shut_down: AtomicBool::new(false),
    })
}

/// An assigned queue on the I/O side.
#[derive(Debug)]
struct Assigned {
    queue: Arc<ProcessQueue>,
    /// The pull task; dropping it cancels the pull (even one parked at the broker).
    pull: Option<JoinHandle<()>>,
}

/// The consumer's state on the I/O thread.
struct PushIo {
    ctx: Rc<IoContext>,
    settings: Arc<Settings>,
    shared: Arc<Shared>,
    signals: flume::Sender<Signal>,
    queues: RefCell<BTreeMap<MessageQueue, Assigned>>,
    local: RefCell<Option<LocalOffsetStore>>,
    rebalance_wake: Rc<Notify>,
    /// Broker names this consumer's group was announced to.
    announced: RefCell<BTreeSet<String>>,
    /// Topics whose last rebalance failed (logged once per failure streak).
    failing_topics: RefCell<BTreeSet<String>>,
    /// Set by the first shutdown step: no new pulls, rebalances or commits.
    pulls_stopped: Cell<bool>,
}

impl PushIo {
    /// Joins the group, runs the first rebalance and starts the control task.
    async fn start(
        ctx: Rc<IoContext>,
        settings: Arc<Settings>,
        shared: Arc<Shared>,
        signals: flume::Sender<Signal>,
        control: flume::Receiver<Control>,
        local: Option<LocalOffsetStore>,
    ) -> Result<()> {
        register_group(&ctx, settings.consumer_data())?;
        let rebalance_wake = Rc::new(Notify::default());
        ctx.groups
            .borrow_mut()
            .rebalance
            .insert(settings.group.clone(), Rc::clone(&rebalance_wake));
        let io = Rc::new(Self {
            ctx: Rc::clone(&ctx),
            settings,
            shared,
            signals,
            queues: RefCell::new(BTreeMap::new()),
            local: RefCell::new(local),
            rebalance_wake,
            announced: RefCell::new(BTreeSet::new()),
            failing_topics: RefCell::new(BTreeSet::new()),
            pulls_stopped: Cell::new(false),
        });
        // Learn the brokers first so the heartbeat reaches them; a topic the NameServers do not
        // know yet is retried by the rebalances.
        for subscription in &io.settings.subscriptions {
            if let Err(error) = ctx
                .routes
                .route(&ctx.pool, subscription.topic(), ctx.timeout())
                .await
            {
                tracing::debug!(topic = subscription.topic(), %error, "no route yet");
            }
        }
        io.announce().await;
        let complete = io.rebalance().await;
        compio::runtime::spawn(Rc::clone(&io).control_loop(control, complete)).detach();
        Ok(())
    }

    /// Heartbeats every known broker (the instance's heartbeat carries every group) and notes
    /// which brokers have heard of this group.
    async fn announce(&self) {
        self.ctx.heartbeat_all().await;
        let mut announced = self.announced.borrow_mut();
        for broker in self.ctx.routes.brokers() {
            announced.insert(broker.broker_name);
        }
    }

    /// Heartbeats when `route` names a broker this group was not announced to yet: its member
    /// list must include this client before the allocation asks for it.
    async fn announce_to(&self, route: &TopicRoute) {
        let unknown = {
            let announced = self.announced.borrow();
            route
                .data
                .broker_datas
                .iter()
                .any(|broker| !announced.contains(&broker.broker_name))
        };
        if unknown {
            self.announce().await;
        }
    }

    /// The control task: rebalances, commits, lock renewals, shutdown.
    async fn control_loop(self: Rc<Self>, control: flume::Receiver<Control>, complete: bool) {
        let settings = Arc::clone(&self.settings);
        let now = Instant::now();
        let mut next_rebalance = now
            + if complete {
                settings.rebalance_interval
            } else {
                REBALANCE_RETRY.min(settings.rebalance_interval)
            };
        let mut next_commit = now + settings.commit_interval;
        let mut next_lock = now + LOCK_RENEW_INTERVAL;
        // Bounded by the instance's life: ends on Finish, a dropped handle, or instance stop.
        loop {
            if self.ctx.stopped.get() {
                return;
            }
            let mut deadline = next_rebalance.min(next_commit);
            if settings.orderly {
                deadline = deadline.min(next_lock);
            }
            if self.pulls_stopped.get() {
                // Shutting down: only the next control request matters (timers that are due
                // would otherwise fire again and again).
                deadline = Instant::now() + Duration::from_secs(3600);
            }
            match either(
                control.recv_async(),
                self.rebalance_wake.wait_until(deadline),
            )
            .await
            {
                Either::Left(Ok(Control::StopPulls(reply))) => {
                    self.stop_pulls();
                    let _ = reply.send(());
                }
                Either::Left(Ok(Control::Finish(reply))) => {
                    let result = self.finish().await;
                    let _ = reply.send(result);
                    return;
                }
                Either::Left(Err(_)) => {
                    // The handle is gone without a shutdown (it always shuts down on drop, so
                    // only a leaked handle gets here): leave the group cleanly anyway.
                    self.stop_pulls();
                    let _ = self.finish().await;
                    return;
                }
                Either::Right(notified) => {
                    if self.pulls_stopped.get() {
                        continue;
                    }
                    let now = Instant::now();
                    if notified || now >= next_rebalance {
                        let complete = self.rebalance().await;
                        let wait = if complete {
                            settings.rebalance_interval
                        } else {
                            REBALANCE_RETRY.min(settings.rebalance_interval)
                        };
                        next_rebalance = Instant::now() + wait;
                    }
                    if now >= next_commit {
                        if let Err(error) = self.commit_all().await {
                            tracing::debug!(group = %settings.group, %error, "offset commit incomplete");
                        }
                        next_commit = Instant::now() + settings.commit_interval;
                    }
                    if settings.orderly && now >= next_lock {
                        self.renew_locks().await;
                        next_lock = Instant::now() + LOCK_RENEW_INTERVAL;
                    }
                }
            }
        }
    }

    /// Recomputes this member's queues and applies the difference. True when every topic was
    /// allocated and every new queue started (else the caller retries soon).
    async fn rebalance(&self) -> bool {
        if self.pulls_stopped.get() {
            return true;
        }
        let ctx = &self.ctx;
        let settings = &self.settings;
        let mut wanted: BTreeSet<MessageQueue> = BTreeSet::new();
        let mut failed_topics: BTreeSet<String> = BTreeSet::new();
        for subscription in &settings.subscriptions {
            let topic = subscription.topic();
            match self.allocate(topic).await {
                Ok(queues) => {
                    if self.failing_topics.borrow_mut().remove(topic) {
                        tracing::info!(group = %settings.group, topic, "rebalance recovered");
                    }
                    wanted.extend(queues);
                }
                Err(error) => {
                    let first = self.failing_topics.borrow_mut().insert(topic.to_owned());
                    if first && !topic.starts_with(super::RETRY_TOPIC_PREFIX) {
                        tracing::warn!(group = %settings.group, topic, %error, "cannot rebalance topic; keeping its queues");
                    } else {
                        tracing::debug!(group = %settings.group, topic, %error, "cannot rebalance topic; keeping its queues");
                    }
                    failed_topics.insert(topic.to_owned());
                }
            }
        }
        let current: Vec<MessageQueue> = self.queues.borrow().keys().cloned().collect();
        let removed: Vec<MessageQueue> = current
            .iter()
            .filter(|queue| !wanted.contains(*queue) && !failed_topics.contains(&queue.topic))
            .cloned()
            .collect();
        let mut added: Vec<MessageQueue> = wanted
            .iter()
            .filter(|queue| !self.queues.borrow().contains_key(*queue))
            .cloned()
            .collect();
        for queue in &removed {
            self.remove_queue(queue).await;
        }
        let mut complete = failed_topics.is_empty();
        if settings.orderly && !added.is_empty() {
            let (granted, _) = orderly::lock(ctx, &settings.group, added.iter()).await;
            let before = added.len();
            added.retain(|queue| granted.contains(queue));
            if added.len() < before {
                tracing::debug!(group = %settings.group, refused = before - added.len(), "queue locks refused; retrying soon");
                complete = false;
            }
        }
        for queue in added {
            if self.pulls_stopped.get() {
                break;
            }
            match self.initial_offset(&queue).await {
                Ok(offset) => self.add_queue(queue, offset),
                Err(error) => {
                    tracing::warn!(group = %settings.group, ?queue, %error, "cannot read the queue's start offset; retrying soon");
                    complete = false;
                    if settings.orderly {
                        orderly::unlock(ctx, &settings.group, [&queue]).await;
                    }
                }
            }
        }
        self.publish_assignment();
        complete
    }

    /// This member's queues of `topic`.
    async fn allocate(&self, topic: &str) -> Result<Vec<MessageQueue>> {
        let ctx = &self.ctx;
        let route = ctx.routes.route(&ctx.pool, topic, ctx.timeout()).await?;
        let queues = route.readable_queues();
        if !self.settings.clustering() {
            return Ok(queues.to_vec());
        }
        self.announce_to(&route).await;
        let ids = match consumer_ids(ctx, &self.settings.group, &route).await {
            Ok(ids) => ids,
            Err(error) if !error.is_transport() => {
                // The broker does not list the group: it restarted or dropped this client's
                // connection since the last heartbeat. Announce again and ask once more.
                tracing::debug!(group = %self.settings.group, topic, %error, "member list refused; heartbeating");
                self.announce().await;
                consumer_ids(ctx, &self.settings.group, &route).await?
            }
            Err(error) => return Err(error),
        };
        if !ids.contains(&ctx.client_id) {
            tracing::debug!(group = %self.settings.group, topic, "this client is not in the group's member list yet");
        }
        Ok(allocate_averagely(queues, &ids, &ctx.client_id)
            .into_iter()
            .cloned()
            .collect())
    }

    async fn initial_offset(&self, queue: &MessageQueue) -> Result<i64> {
        if self.settings.clustering() {
            return offsets::initial_offset(
                &self.ctx,
                &self.settings.group,
                queue,
                self.settings.start_position,
            )
            .await;
        }
        let stored = self
            .local
            .borrow()
            .as_ref()
            .and_then(|store| store.get(queue));
        match stored {
            Some(offset) => Ok(offset),
            None => offsets::start_offset(&self.ctx, queue, self.settings.start_position).await,
        }
    }

    /// Starts consuming `queue` at `offset`.
    fn add_queue(&self, queue: MessageQueue, offset: i64) {
        let process_queue = Arc::new(ProcessQueue::new(queue.clone(), offset));
        if self.settings.orderly {
            process_queue.set_locked(true, Instant::now());
        }
        let pull = compio::runtime::spawn(pull_loop(
            Rc::clone(&self.ctx),
            Arc::clone(&self.settings),
            Arc::clone(&process_queue),
            self.signals.clone(),
        ));
        tracing::info!(group = %self.settings.group, ?queue, offset, "queue assigned");
        self.queues.borrow_mut().insert(
            queue,
            Assigned {
                queue: process_queue,
                pull: Some(pull),
            },
        );
    }

    /// Stops consuming `queue`: cancels its pull, drops its undelivered messages, commits its
    /// offset and (orderly) releases its lock.
    async fn remove_queue(&self, queue: &MessageQueue) {
        let Some(assigned) = self.queues.borrow_mut().remove(queue) else {
            return;
        };
        drop(assigned.pull);
        let process_queue = assigned.queue;
        process_queue.mark_dropped();
        let mut unlock = self.settings.orderly;
        if self.settings.orderly {
            // The batch in the handler must end before another member may take the queue.
            let deadline = Instant::now() + UNLOCK_WAIT;
            while process_queue.is_consuming() && Instant::now() < deadline {
                compio::time::sleep(Duration::from_millis(10)).await;
            }
            if process_queue.is_consuming() {
                tracing::warn!(group = %self.settings.group, ?queue, "handler still busy; the queue lock is left to expire");
                unlock = false;
            }
        }
        if let Err(error) = self
            .commit_queues(std::slice::from_ref(&process_queue))
            .await
        {
            tracing::warn!(group = %self.settings.group, ?queue, %error, "offset commit of a released queue failed");
        }
        if unlock {
            orderly::unlock(&self.ctx, &self.settings.group, [queue]).await;
        }
        tracing::info!(group = %self.settings.group, ?queue, "queue released");
    }

    fn publish_assignment(&self) {
        let queues: Vec<MessageQueue> = self.queues.borrow().keys().cloned().collect();
        *self
            .shared
            .assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = queues;
    }

    fn process_queues(&self) -> Vec<Arc<ProcessQueue>> {
        self.queues
            .borrow()
            .values()
            .map(|assigned| Arc::clone(&assigned.queue))
            .collect()
    }

    /// Commits the offsets of every assigned queue.
    async fn commit_all(&self) -> Result<()> {
        let queues = self.process_queues();
        self.commit_queues(&queues).await
    }

    /// Commits the committable offsets of `queues` that changed since their last commit: to
    /// their brokers (clustering; a broker that fails to answer is skipped for the rest of the
    /// round) or to the local file (broadcasting). Returns the first failure.
    async fn commit_queues(&self, queues: &[Arc<ProcessQueue>]) -> Result<()> {
        if !self.settings.clustering() {
            return self.commit_local(queues).await;
        }
        let mut first_error = None;
        let mut unreachable: BTreeSet<String> = BTreeSet::new();
        for process_queue in queues {
            let queue = process_queue.queue();
            if unreachable.contains(&queue.broker_name) {
                continue;
            }
            let Some(offset) = process_queue.commit_candidate() else {
                continue;
            };
            match offsets::update(&self.ctx, &self.settings.group, queue, offset).await {
                Ok(()) => process_queue.mark_committed(offset),
                Err(error) => {
                    if error.is_transport() {
                        unreachable.insert(queue.broker_name.clone());
                    }
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Writes the local offset file (off the I/O thread) with the offsets of `queues`.
    async fn commit_local(&self, queues: &[Arc<ProcessQueue>]) -> Result<()> {
        let (path, bytes) = {
            let mut local = self.local.borrow_mut();
            let Some(store) = local.as_mut() else {
                return Ok(());
            };
            let mut changed = false;
            for process_queue in queues {
                if let Some(offset) = process_queue.commit_candidate() {
                    store.set(process_queue.queue(), offset);
                    changed = true;
                }
            }
            if !changed {
                return Ok(());
            }
            store.snapshot()
        };
        let written = compio::runtime::spawn_blocking(move || {
            offsets::write_file(&path, &bytes).map_err(|error| (path, error))
        })
        .await;
        match written {
            Ok(Ok(())) => {
                for process_queue in queues {
                    process_queue.mark_committed(process_queue.committable());
                }
                Ok(())
            }
            Ok(Err((path, error))) => Err(ClientError::InvalidArgument(format!(
                "cannot write local offset file {}: {error}",
                path.display()
            ))),
            Err(_) => Err(ClientError::Shutdown),
        }
    }

    /// Re-locks every assigned queue (orderly). A queue its broker refused is paused until a
    /// later renewal succeeds; a broker that did not answer leaves its locks as they were (they
    /// stay valid for 30 s).
    async fn renew_locks(&self) {
        let queues: Vec<MessageQueue> = self.queues.borrow().keys().cloned().collect();
        let (granted, answered) =
            orderly::lock(&self.ctx, &self.settings.group, queues.iter()).await;
        let now = Instant::now();
        for process_queue in self.process_queues() {
            let queue = process_queue.queue();
            if granted.contains(queue) {
                process_queue.set_locked(true, now);
            } else if answered.contains(&queue.broker_name) {
                if process_queue.is_locked(now) {
                    tracing::warn!(group = %self.settings.group, ?queue, "queue lock lost");
                }
                process_queue.set_locked(false, now);
            }
        }
    }

    /// First shutdown step: cancels every pull; the queues stay so the batch in the handler can
    /// still complete.
    fn stop_pulls(&self) {
        self.pulls_stopped.set(true);
        for assigned in self.queues.borrow_mut().values_mut() {
            drop(assigned.pull.take());
        }
    }

    /// Last shutdown step: commit, unlock, leave the group.
    async fn finish(&self) -> Result<()> {
        self.pulls_stopped.set(true);
        let queues = self.process_queues();
        for process_queue in &queues {
            process_queue.mark_dropped();
        }
        let committed = self.commit_queues(&queues).await;
        if self.settings.orderly {
            let locked: Vec<MessageQueue> = queues
                .iter()
                .filter(|queue| !queue.is_consuming())
                .map(|queue| queue.queue().clone())
                .collect();
            orderly::unlock(&self.ctx, &self.settings.group, locked.iter()).await;
        }
        self.queues.borrow_mut().clear();
        self.publish_assignment();
        // Out of the heartbeat first, so no heartbeat re-announces the group after the
        // unregister below.
        {
            let mut groups = self.ctx.groups.borrow_mut();
            groups.consumers.remove(&self.settings.group);
            groups.rebalance.remove(&self.settings.group);
        }
        self.ctx.unregister(None, Some(&self.settings.group)).await;
        tracing::info!(group = %self.settings.group, "consumer stopped");
        committed
    }
}

/// Pulls one queue until it is dropped: long polls, hands what it finds to the consume thread,
/// and pauses while the queue's backlog is over the threshold (or, orderly, while its lock is
/// not held).
async fn pull_loop(
    ctx: Rc<IoContext>,
    settings: Arc<Settings>,
    queue: Arc<ProcessQueue>,
    signals: flume::Sender<Signal>,
) {
    let Some(subscription) = settings.subscription(&queue.queue().topic).cloned() else {
        return;
    };
    let mut failing = false;
    // Bounded by the queue's life: every iteration awaits a pull or a pause, and the task is
    // cancelled when the queue is dropped.
    loop {
        if queue.is_dropped() || ctx.stopped.get() {
            return;
        }
        if queue.backlog() >= settings.pull_threshold {
            if !ctx.tick(FLOW_CONTROL_PAUSE).await {
                return;
            }
            continue;
        }
        if settings.orderly && !queue.is_locked(Instant::now()) {
            if !ctx.tick(LOCK_WAIT).await {
                return;
            }
            continue;
        }
        let offset = queue.next_offset();
        let result = async {
            let addr = master_addr(&ctx, queue.queue()).await?;
            let request = PullRequest {
                group: &settings.group,
                queue: queue.queue(),
                offset,
                max_messages: settings.pull_batch_size,
                commit_offset: settings.clustering().then(|| queue.committable()),
                suspend: Some(settings.long_poll_timeout),
                expression: subscription.expression(),
                sub_version: subscription.data.sub_version,
            };
            pull_api::pull(&ctx, &addr, &request).await
        }
        .await;
        match result {
            Ok(result) => {
                if failing {
                    tracing::info!(group = %settings.group, queue = ?queue.queue(), "pulls work again");
                    failing = false;
                }
                match result.status {
                    PullStatus::Found(messages) => {
                        let kept: Vec<ReceivedMessage> = messages
                            .into_iter()
                            .filter(|message| subscription.matches(message.tags.as_deref()))
                            .collect();
                        if queue.put(kept, result.next_begin_offset)
                            && signals.send(Signal::Work(Arc::clone(&queue))).is_err()
                        {
                            return;
                        }
                    }
                    PullStatus::NoNewMessage | PullStatus::NoMatchedMessage => {
                        queue.advance(result.next_begin_offset);
                    }
                    PullStatus::OffsetMoved => {
                        tracing::warn!(
                            group = %settings.group,
                            queue = ?queue.queue(),
                            offset,
                            next = result.next_begin_offset,
                            min = result.min_offset,
                            max = result.max_offset,
                            "pull offset is outside the queue; continuing at the broker's offset"
                        );
                        queue.advance(result.next_begin_offset);
                    }
                }
            }
            Err(error) => {
                if !failing && !error.is_transport() {
                    tracing::warn!(group = %settings.group, queue = ?queue.queue(), %error, "pull failed");
                } else {
                    tracing::debug!(group = %settings.group, queue = ?queue.queue(), %error, "pull failed");
                }
                failing = true;
                if !ctx.tick(PULL_ERROR_PAUSE).await {
                    return;
                }
            }
        }
    }
}
