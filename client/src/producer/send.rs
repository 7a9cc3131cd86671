//! The producer's work on the client I/O thread: routes, queue selection, the retry loop,
//! encoding SEND_MESSAGE_V2 / SEND_BATCH_MESSAGE straight into the connection's output buffer,
//! and reading the answer.
//!
//! Per-producer state ([`State`]: round-robin cursors, fault tracker, id generator, the reused
//! properties buffer) lives in a thread-local registry on the I/O thread, keyed by producer id,
//! so nothing on the hot path takes a lock. Invariants:
//! - `RefCell` borrows of the state never cross an `.await`: the properties buffer is only
//!   borrowed inside the synchronous encode callback of [`Connection::request_with`];
//! - a message's body is copied once, from [`Message::body`] into the connection's buffer;
//! - every attempt is bounded by what is left of the send's budget.
//!
//! [`Connection::request_with`]: crate::remoting::Connection::request_with

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use ringmq_protocol::header::{SendMessageRequestHeader, SendMessageResponseHeader};
use ringmq_protocol::message::BatchMessage;
use ringmq_protocol::message::batch::BATCH_ENTRY_FIXED_BYTES;
use ringmq_protocol::message::properties::{MAX_PROPERTIES_BYTES, keys};
use ringmq_protocol::{
    Command, CommandHead, RequestCode, ResponseCode, encode_frame, encode_frame_head,
};

use super::builder::Settings;
use super::fault::{FaultTracker, Outcome};
use super::select::select_queue;
use super::unique_id::UniqueIdGenerator;
use crate::error::{ClientError, Result};
use crate::instance::IoContext;
use crate::message::{Message, MessageQueue, SendResult, SendStatus};
use crate::route::TopicRoute;

/// The auto-creation template topic (Java's `TopicValidator.AUTO_CREATE_TOPIC_KEY_TOPIC`).
pub(crate) const AUTO_CREATE_TOPIC: &str = "TBW102";
/// Queues of a topic the broker auto-creates (Java's `defaultTopicQueueNums`).
pub(crate) const DEFAULT_TOPIC_QUEUE_NUMS: i32 = 4;
/// Longest topic name (the broker's and Java's limit).
const MAX_TOPIC_BYTES: usize = 127;
/// Prefix of consumer retry topics, which batches may not target.
const RETRY_TOPIC_PREFIX: &str = "%RETRY%";

static NEXT_PRODUCER_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The state of every producer whose sends ran on this (I/O) thread, by producer id.
    static STATES: RefCell<HashMap<u64, Rc<State>>> = RefCell::new(HashMap::new());
}

/// The part of a producer every thread sees.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Key of the producer's [`State`] on the I/O thread.
    pub id: u64,
    pub settings: Settings,
    /// Set by `shutdown` (or drop); later sends fail with [`ClientError::Shutdown`].
    pub shut_down: AtomicBool,
    /// Writable queues per topic, as this producer's sends last saw them: lets a selector run
    /// on the caller's thread instead of the I/O thread. Updated only when a route changes.
    queues: Mutex<HashMap<String, Arc<[MessageQueue]>>>,
}

impl Shared {
    pub fn new(settings: Settings) -> Self {
        Self {
            id: NEXT_PRODUCER_ID.fetch_add(1, Ordering::Relaxed),
            settings,
            shut_down: AtomicBool::new(false),
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// The writable queues last seen for `topic`, if there are any.
    pub fn writable_queues(&self, topic: &str) -> Option<Arc<[MessageQueue]>> {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .filter(|queues| !queues.is_empty())
            .cloned()
    }

    fn publish_queues(&self, topic: &str, queues: &[MessageQueue]) {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned(), queues.into());
    }
}

/// One topic as this producer sends to it.
#[derive(Debug)]
struct TopicState {
    /// Round-robin position; starts at a random queue so producers do not all begin on queue 0.
    cursor: usize,
    /// The route last seen (pointer comparison detects a refreshed route).
    route: Option<Rc<TopicRoute>>,
}

/// A producer's I/O-thread state.
#[derive(Debug)]
struct State {
    shared: Arc<Shared>,
    faults: FaultTracker,
    ids: UniqueIdGenerator,
    /// Reused for every message's properties string.
    properties: RefCell<String>,
    topics: RefCell<HashMap<String, TopicState>>,
    /// Topics with a forced route refresh in flight.
    refreshing: RefCell<HashSet<String>>,
    /// Broker groups already sent a heartbeat because a route named them.
    heartbeated: RefCell<HashSet<String>>,
}

impl State {
    /// The state of `shared`'s producer, created on first use; `Shutdown` once shut down.
    fn get(ctx: &IoContext, shared: &Arc<Shared>) -> Result<Rc<Self>> {
        if shared.shut_down.load(Ordering::Acquire) {
            return Err(ClientError::Shutdown);
        }
        Ok(STATES.with(|states| {
            Rc::clone(
                states
                    .borrow_mut()
                    .entry(shared.id)
                    .or_insert_with(|| Rc::new(Self::new(ctx, shared))),
            )
        }))
    }

    fn new(ctx: &IoContext, shared: &Arc<Shared>) -> Self {
        // The client id is `ip@instance`; the id generator wants the ip.
        let ip = ctx
            .client_id
            .split('@')
            .next()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Self {
            faults: FaultTracker::new(shared.settings.fault_tiers.clone()),
            ids: UniqueIdGenerator::new(ip),
            shared: Arc::clone(shared),
            properties: RefCell::new(String::with_capacity(256)),
            topics: RefCell::new(HashMap::new()),
            refreshing: RefCell::new(HashSet::new()),
            heartbeated: RefCell::new(HashSet::new()),
        }
    }

    fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// Notes the route a send uses and returns the topic's round-robin position. A route not
    /// seen before is published for caller-side selectors, and brokers it names for the first
    /// time get a heartbeat (so they know the producer group before its first message).
    fn on_route(&self, ctx: &Rc<IoContext>, topic: &str, route: &Rc<TopicRoute>) -> usize {
        let mut topics = self.topics.borrow_mut();
        if !topics.contains_key(topic) {
            let start = std::collections::hash_map::RandomState::new().hash_one(topic) as usize;
            topics.insert(
                topic.to_owned(),
                TopicState {
                    cursor: start,
                    route: None,
                },
            );
        }
        let Some(entry) = topics.get_mut(topic) else {
            return 0;
        };
        let cursor = entry.cursor;
        entry.cursor = cursor.wrapping_add(1);
        if entry
            .route
            .as_ref()
            .is_some_and(|seen| Rc::ptr_eq(seen, route))
        {
            return cursor;
        }
        entry.route = Some(Rc::clone(route));
        drop(topics);
        self.shared.publish_queues(topic, route.writable_queues());
        let mut heartbeated = self.heartbeated.borrow_mut();
        let mut new_broker = false;
        for broker in &route.data.broker_datas {
            if !heartbeated.contains(&broker.broker_name) {
                heartbeated.insert(broker.broker_name.clone());
                new_broker = true;
            }
        }
        drop(heartbeated);
        if new_broker {
            let ctx = Rc::clone(ctx);
            compio::runtime::spawn(async move { ctx.heartbeat_all().await }).detach();
        }
        cursor
    }

    /// Picks the queue of an attempt.
    fn select<'r>(
        &self,
        route: &'r TopicRoute,
        cursor: usize,
        avoid: Option<&str>,
    ) -> Option<&'r MessageQueue> {
        let now = Instant::now();
        let check = self.settings().fault_avoidance && self.faults.any_unavailable(now);
        select_queue(route.writable_queues(), cursor, avoid, |broker| {
            !check || self.faults.is_available(broker, now)
        })
    }

    /// Reports an attempt to the fault tracker (when fault avoidance is on).
    fn record(&self, broker: &str, latency: Duration, outcome: Outcome) {
        if self.settings().fault_avoidance {
            self.faults.record(broker, latency, outcome, Instant::now());
        }
    }

    /// Re-fetches `topic`'s route in the background after a failed attempt (one refresh per
    /// topic at a time). Not awaited: the retry goes on with the cached route and the fault
    /// tracker, and the next send sees the fresh route.
    fn schedule_refresh(self: &Rc<Self>, ctx: &Rc<IoContext>, topic: &str) {
        if self.refreshing.borrow().contains(topic) {
            return;
        }
        self.refreshing.borrow_mut().insert(topic.to_owned());
        let (ctx, state, topic) = (Rc::clone(ctx), Rc::clone(self), topic.to_owned());
        compio::runtime::spawn(async move {
            if let Err(error) = ctx.routes.refresh(&ctx.pool, &topic, ctx.timeout()).await {
                tracing::debug!(topic, %error, "route refresh after a failed send failed");
            }
            state.refreshing.borrow_mut().remove(&topic);
        })
        .detach();
    }

    /// Writes `message`'s properties once to check they fit a record (the length is an i16).
    fn check_properties(&self, message: &Message, unique_id: &str) -> Result<usize> {
        let mut properties = self.properties.borrow_mut();
        message.write_properties(unique_id, &mut properties);
        if properties.len() > MAX_PROPERTIES_BYTES {
            return Err(ClientError::InvalidArgument(format!(
                "message properties take {} bytes; at most {MAX_PROPERTIES_BYTES} fit",
                properties.len()
            )));
        }
        Ok(properties.len())
    }
}

/// One message and its id.
#[derive(Debug)]
struct Single {
    message: Message,
    unique_id: String,
}

/// What one send carries: one message or a batch, with the ids generated for it (kept across
/// retries, so a retried message keeps its `UNIQ_KEY`, as in Java).
#[derive(Debug)]
enum Payload {
    Single(Single),
    Batch {
        messages: Vec<Message>,
        /// Every message's id, `,`-joined: the batch's `msg_id` as Java reports it.
        unique_ids: String,
    },
}

impl Payload {
    fn topic(&self) -> &str {
        match self {
            Self::Single(single) => single.message.topic(),
            Self::Batch { messages, .. } => messages.first().map_or("", Message::topic),
        }
    }

    const fn code(&self) -> RequestCode {
        match self {
            Self::Single(_) => RequestCode::SendMessageV2,
            Self::Batch { .. } => RequestCode::SendBatchMessage,
        }
    }

    fn into_msg_id(self) -> String {
        match self {
            Self::Single(single) => single.unique_id,
            Self::Batch { unique_ids, .. } => unique_ids,
        }
    }

    /// Appends the request frame to `out`. Runs synchronously inside the connection's enqueue,
    /// so the properties buffer borrow ends before any `.await`.
    fn encode(&self, state: &State, queue_id: i32, head: &CommandHead<'_>, out: &mut BytesMut) {
        let mut properties = state.properties.borrow_mut();
        match self {
            Self::Single(Single { message, unique_id }) => {
                message.write_properties(unique_id, &mut properties);
                let header = request_header(
                    state.settings(),
                    message,
                    queue_id,
                    Some(&properties),
                    false,
                );
                encode_frame(head, &header.v2(), message.body(), out);
            }
            Self::Batch {
                messages,
                unique_ids,
            } => {
                // Two passes over the properties (they are cheap to write): the frame's length
                // prefix needs the body length before the body is written.
                let id_len = state.ids.id_len();
                let mut body_bytes = 0;
                for (index, message) in messages.iter().enumerate() {
                    message.write_properties(batch_id(unique_ids, index, id_len), &mut properties);
                    body_bytes += BATCH_ENTRY_FIXED_BYTES + message.body().len() + properties.len();
                }
                let Some(first) = messages.first() else {
                    return;
                };
                let header = request_header(state.settings(), first, queue_id, None, true);
                encode_frame_head(head, &header.v2(), body_bytes, out);
                for (index, message) in messages.iter().enumerate() {
                    message.write_properties(batch_id(unique_ids, index, id_len), &mut properties);
                    let entry = BatchMessage {
                        flag: message.flag(),
                        body: message.body(),
                        properties: &properties,
                    };
                    // Cannot fail: `validate_batch` checked every length this could refuse.
                    let encoded = entry.encode(out);
                    debug_assert!(
                        encoded.is_ok(),
                        "batch entry limits checked before encoding"
                    );
                }
            }
        }
    }
}

/// The `index`th id of a `,`-joined list of ids of `id_len` characters.
fn batch_id(unique_ids: &str, index: usize, id_len: usize) -> &str {
    let start = index * (id_len + 1);
    unique_ids.get(start..start + id_len).unwrap_or_default()
}

/// The send header Java's producer writes: auto-creation template TBW102 with 4 queues,
/// reconsume times 0, not unit mode.
fn request_header<'a>(
    settings: &'a Settings,
    message: &'a Message,
    queue_id: i32,
    properties: Option<&'a str>,
    batch: bool,
) -> SendMessageRequestHeader<'a> {
    SendMessageRequestHeader {
        producer_group: &settings.group,
        topic: message.topic(),
        default_topic: AUTO_CREATE_TOPIC,
        default_topic_queue_nums: DEFAULT_TOPIC_QUEUE_NUMS,
        queue_id,
        sys_flag: 0,
        born_timestamp_ms: now_ms(),
        flag: message.flag(),
        properties,
        reconsume_times: Some(0),
        unit_mode: Some(false),
        max_reconsume_times: None,
        batch: Some(batch),
        broker_name: None,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Whether a failed attempt is worth another broker: transport failures, and the refusals Java's
/// producer retries (TOPIC_NOT_EXIST, SERVICE_NOT_AVAILABLE, SYSTEM_ERROR, NO_PERMISSION,
/// NO_BUYER_ID, NOT_IN_CURRENT_UNIT) plus SYSTEM_BUSY. An undecodable success answer is not: the
/// message was stored, and a retry would duplicate it.
pub(crate) fn is_retryable(error: &ClientError) -> bool {
    error.is_transport()
        || matches!(error, ClientError::Broker { code, .. } if code.is_retryable_send_error())
}

/// Registers the producer group on the instance (refused if it already holds it, as Java does).
pub(crate) fn register(ctx: &IoContext, group: String) -> Result<()> {
    let mut groups = ctx.groups.borrow_mut();
    if groups.producers.contains(&group) {
        return Err(ClientError::InvalidArgument(format!(
            "producer group {group} is already registered on this client instance"
        )));
    }
    groups.producers.insert(group);
    Ok(())
}

/// Forgets the producer: drops its state, removes its group, tells the brokers (best effort).
pub(crate) async fn release(ctx: Rc<IoContext>, shared: Arc<Shared>) -> Result<()> {
    STATES.with(|states| states.borrow_mut().remove(&shared.id));
    let group = &shared.settings.group;
    ctx.groups.borrow_mut().producers.remove(group);
    ctx.unregister(Some(group), None).await;
    Ok(())
}

/// A topic name the broker would accept (checked here so a bad name fails at once instead of
/// being retried on every broker as the SYSTEM_ERROR the broker answers).
fn validate_topic(topic: &str) -> Result<()> {
    let problem = if topic.is_empty() {
        "is empty"
    } else if topic.len() > MAX_TOPIC_BYTES {
        "is longer than 127 bytes"
    } else if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-'))
    {
        "has characters outside [%|a-zA-Z0-9_-]"
    } else if topic == AUTO_CREATE_TOPIC {
        "is the auto-creation template"
    } else {
        return Ok(());
    };
    Err(ClientError::InvalidArgument(format!(
        "topic {topic:?} {problem}"
    )))
}

/// Checks what can be checked without the broker: topic, reserved property names, body size.
fn validate_message(message: &Message, settings: &Settings) -> Result<()> {
    validate_topic(message.topic())?;
    if let Some(name) = message.reserved_property() {
        return Err(ClientError::InvalidArgument(format!(
            "property {name} is reserved; set it through its own Message method"
        )));
    }
    if message.body().len() > settings.max_message_bytes {
        return Err(ClientError::InvalidArgument(format!(
            "message body of {} bytes is over the {} byte limit",
            message.body().len(),
            settings.max_message_bytes
        )));
    }
    Ok(())
}

/// Java's batch rules: not empty, one topic, no delay level, not a retry topic, one WAIT value.
fn validate_batch(messages: &[Message], settings: &Settings) -> Result<()> {
    let Some(first) = messages.first() else {
        return Err(ClientError::InvalidArgument(
            "a batch needs a message".into(),
        ));
    };
    for message in messages {
        validate_message(message, settings)?;
        let problem = if message.topic() != first.topic() {
            "messages of one batch must share a topic"
        } else if message.delay_level() > 0 {
            "delay levels are not supported in batches"
        } else if message.topic().starts_with(RETRY_TOPIC_PREFIX) {
            "retry topics are not supported in batches"
        } else if message.wait_store_ok() != first.wait_store_ok() {
            "messages of one batch must share wait_store_ok"
        } else {
            continue;
        };
        return Err(ClientError::InvalidArgument(problem.into()));
    }
    Ok(())
}

/// `topic`'s route for sending. A topic no NameServer knows is sent on the brokers of the
/// auto-creation template TBW102, with at most 4 queues per broker, which then create it (Java's
/// `DefaultMQProducerImpl.tryToFindTopicPublishInfo`). The derived route is cached under the
/// topic until a NameServer knows the real one.
async fn publish_route(ctx: &IoContext, topic: &str, timeout: Duration) -> Result<Rc<TopicRoute>> {
    let deadline = Instant::now() + timeout;
    match ctx.routes.route(&ctx.pool, topic, timeout).await {
        Err(ClientError::TopicNotFound { .. }) => {}
        found => return found,
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let template = match ctx.routes.route(&ctx.pool, AUTO_CREATE_TOPIC, left).await {
        Ok(template) => template,
        Err(ClientError::TopicNotFound { .. }) => {
            return Err(ClientError::TopicNotFound {
                topic: topic.to_owned(),
            });
        }
        Err(error) => return Err(error),
    };
    let mut data = template.data.clone();
    for queues in &mut data.queue_datas {
        let count = DEFAULT_TOPIC_QUEUE_NUMS.min(queues.read_queue_nums);
        queues.read_queue_nums = count;
        queues.write_queue_nums = count;
    }
    tracing::debug!(
        topic,
        "no route; sending on the brokers of {AUTO_CREATE_TOPIC}"
    );
    Ok(ctx.routes.store(topic, data))
}

/// One attempt: connect (or reuse the connection), write the request, wait for the answer,
/// all within `timeout`.
async fn attempt(
    ctx: &IoContext,
    state: &State,
    payload: &Payload,
    queue: &MessageQueue,
    addr: &str,
    timeout: Duration,
) -> Result<SendResult> {
    let code = payload.code();
    let deadline = Instant::now() + timeout;
    let connection = compio::time::timeout(timeout, ctx.pool.get(addr))
        .await
        .map_err(|_| ClientError::Timeout {
            addr: addr.to_owned(),
            code,
            timeout,
        })??;
    let serialize_type = connection.serialize_type();
    let left = deadline.saturating_duration_since(Instant::now());
    let answer = connection
        .request_with(code, left, |opaque, out| {
            let head = CommandHead::request(code, opaque, serialize_type);
            payload.encode(state, queue.queue_id, &head, out);
        })
        .await?;
    read_answer(&answer, addr, code, queue)
}

/// A send's answer: stored (with how) or the broker's refusal.
fn read_answer(
    answer: &Command,
    addr: &str,
    request: RequestCode,
    queue: &MessageQueue,
) -> Result<SendResult> {
    let status = match answer.response_code() {
        ResponseCode::Success => SendStatus::SendOk,
        ResponseCode::FlushDiskTimeout => SendStatus::FlushDiskTimeout,
        ResponseCode::FlushSlaveTimeout => SendStatus::FlushSlaveTimeout,
        ResponseCode::SlaveNotAvailable => SendStatus::SlaveNotAvailable,
        refused => {
            return Err(ClientError::broker(
                addr,
                request,
                refused,
                answer.remark.as_deref(),
            ));
        }
    };
    let header: SendMessageResponseHeader<'_> = answer
        .header()
        .map_err(|error| ClientError::bad_field(addr, request, &error))?;
    Ok(SendResult {
        status,
        msg_id: String::new(),
        offset_msg_id: header.msg_id.to_owned(),
        queue: MessageQueue {
            broker_name: queue.broker_name.clone(),
            queue_id: header.queue_id,
            topic: queue.topic.clone(),
        },
        queue_offset: header.queue_offset,
        region_id: header.msg_region.map(str::to_owned),
    })
}

/// Sends with failover: up to `1 + retries` attempts within `send_timeout`, each on a queue
/// chosen by [`State::select`] (another broker group than the last failure when there is one).
async fn send_with_failover(
    ctx: &Rc<IoContext>,
    state: &Rc<State>,
    payload: Payload,
) -> Result<SendResult> {
    let settings = state.settings();
    let deadline = Instant::now() + settings.send_timeout;
    let topic = payload.topic();
    let mut failed_broker: Option<String> = None;
    let mut last_error = None;
    let mut attempts = 0;
    for _ in 0..=settings.retries {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let route = match publish_route(ctx, topic, left).await {
            Ok(route) => route,
            Err(error) if attempts == 0 => return Err(error),
            Err(error) => {
                last_error = Some(error);
                break;
            }
        };
        let cursor = state.on_route(ctx, topic, &route);
        let queue = state
            .select(&route, cursor, failed_broker.as_deref())
            .ok_or_else(|| no_writable_queue(topic))?;
        let addr = route
            .master_addr(&queue.broker_name)
            .ok_or_else(|| no_writable_queue(topic))?;
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = left.min(ctx.config.request_timeout);
        let began = Instant::now();
        let result = attempt(ctx, state, &payload, queue, addr, timeout).await;
        let latency = began.elapsed();
        match result {
            Ok(mut result) => {
                state.record(&queue.broker_name, latency, Outcome::Answered);
                result.msg_id = payload.into_msg_id();
                return Ok(result);
            }
            Err(error) => {
                let retryable = is_retryable(&error);
                let outcome = if retryable {
                    Outcome::Isolate
                } else {
                    Outcome::Answered
                };
                state.record(&queue.broker_name, latency, outcome);
                state.schedule_refresh(ctx, topic);
                if !retryable {
                    return Err(error);
                }
                tracing::debug!(
                    topic,
                    broker = %queue.broker_name,
                    attempt = attempts,
                    %error,
                    "send attempt failed"
                );
                failed_broker = Some(queue.broker_name.clone());
                last_error = Some(error);
            }
        }
    }
    let last = last_error.unwrap_or_else(|| ClientError::Timeout {
        addr: String::new(),
        code: payload.code(),
        timeout: settings.send_timeout,
    });
    Err(ClientError::RetriesExhausted {
        topic: topic.to_owned(),
        attempts,
        last: Box::new(last),
    })
}

fn no_writable_queue(topic: &str) -> ClientError {
    ClientError::NoQueue {
        topic: topic.to_owned(),
        what: "writable",
    }
}

/// One attempt on a given queue (no failover), ending by `deadline`.
async fn send_once(
    ctx: &Rc<IoContext>,
    state: &Rc<State>,
    route: &TopicRoute,
    payload: Payload,
    queue: &MessageQueue,
    deadline: Instant,
) -> Result<SendResult> {
    let topic = payload.topic();
    let addr = route
        .master_addr(&queue.broker_name)
        .map(str::to_owned)
        .or_else(|| ctx.routes.master_addr(&queue.broker_name))
        .ok_or_else(|| no_writable_queue(topic))?;
    let left = deadline.saturating_duration_since(Instant::now());
    match attempt(ctx, state, &payload, queue, &addr, left).await {
        Ok(mut result) => {
            result.msg_id = payload.into_msg_id();
            Ok(result)
        }
        Err(error) => {
            state.schedule_refresh(ctx, topic);
            Err(error)
        }
    }
}

/// Checks a single message and gives it its id.
fn prepare(state: &State, message: Message) -> Result<Single> {
    validate_message(&message, state.settings())?;
    identify(state, message)
}

/// Gives a checked message its id; its properties must fit a record. Writing them is the exact
/// check, done only when a cheap upper bound does not already prove they fit.
fn identify(state: &State, message: Message) -> Result<Single> {
    let unique_id = state.ids.next_id();
    if properties_len_bound(&message, &unique_id) > MAX_PROPERTIES_BYTES {
        state.check_properties(&message, &unique_id)?;
    }
    Ok(Single { message, unique_id })
}

/// At least the length of the properties string [`Message::write_properties`] writes: every
/// entry it may write, at its longest, plus its two separator characters.
fn properties_len_bound(message: &Message, unique_id: &str) -> usize {
    let entry = |name: &str, value_len: usize| name.len() + value_len + 2;
    let keys_len = message.keys().iter().map(|key| key.len() + 1).sum();
    let user: usize = message
        .properties()
        .iter()
        .map(|(name, value)| entry(name, value.len()))
        .sum();
    entry(keys::TAGS, message.tags().map_or(0, str::len))
        + entry(keys::KEYS, keys_len)
        + entry(keys::DELAY, 10)
        + entry(keys::WAIT, 5)
        + entry(keys::UNIQ_KEY, unique_id.len())
        + user
}

/// `Producer::send`.
pub(crate) async fn send(
    ctx: Rc<IoContext>,
    shared: Arc<Shared>,
    message: Message,
) -> Result<SendResult> {
    let state = State::get(&ctx, &shared)?;
    let single = prepare(&state, message)?;
    send_with_failover(&ctx, &state, Payload::Single(single)).await
}

/// `Producer::send_batch`.
pub(crate) async fn send_batch(
    ctx: Rc<IoContext>,
    shared: Arc<Shared>,
    messages: Vec<Message>,
) -> Result<SendResult> {
    let state = State::get(&ctx, &shared)?;
    validate_batch(&messages, state.settings())?;
    let id_len = state.ids.id_len();
    let mut unique_ids = String::with_capacity(messages.len() * (id_len + 1));
    let mut body_bytes = 0;
    for (index, message) in messages.iter().enumerate() {
        if index > 0 {
            unique_ids.push(',');
        }
        state.ids.append_id(&mut unique_ids);
        let properties = state.check_properties(message, batch_id(&unique_ids, index, id_len))?;
        body_bytes += BATCH_ENTRY_FIXED_BYTES + message.body().len() + properties;
    }
    if body_bytes > state.settings().max_message_bytes {
        return Err(ClientError::InvalidArgument(format!(
            "batch body of {body_bytes} bytes is over the {} byte limit",
            state.settings().max_message_bytes
        )));
    }
    send_with_failover(
        &ctx,
        &state,
        Payload::Batch {
            messages,
            unique_ids,
        },
    )
    .await
}

/// `Producer::send_to_queue`.
pub(crate) async fn send_to_queue(
    ctx: Rc<IoContext>,
    shared: Arc<Shared>,
    message: Message,
    queue: MessageQueue,
) -> Result<SendResult> {
    let state = State::get(&ctx, &shared)?;
    if queue.topic != message.topic() {
        return Err(ClientError::InvalidArgument(format!(
            "message topic {} differs from the queue's topic {}",
            message.topic(),
            queue.topic
        )));
    }
    let single = prepare(&state, message)?;
    let timeout = state.settings().send_timeout;
    let deadline = Instant::now() + timeout;
    let route = publish_route(&ctx, &queue.topic, timeout).await?;
    state.on_route(&ctx, &queue.topic, &route);
    send_once(
        &ctx,
        &state,
        &route,
        Payload::Single(single),
        &queue,
        deadline,
    )
    .await
}

/// `Producer::send_with_selector` when the caller could not run the selector (first send to
/// the topic): it runs here, once the route is known.
pub(crate) async fn send_selected<S>(
    ctx: Rc<IoContext>,
    shared: Arc<Shared>,
    message: Message,
    selector: S,
) -> Result<SendResult>
where
    S: FnOnce(&[MessageQueue], &Message) -> usize,
{
    let state = State::get(&ctx, &shared)?;
    validate_message(&message, state.settings())?;
    let topic = message.topic();
    let timeout = state.settings().send_timeout;
    let deadline = Instant::now() + timeout;
    let route = publish_route(&ctx, topic, timeout).await?;
    state.on_route(&ctx, topic, &route);
    let queues = route.writable_queues();
    if queues.is_empty() {
        return Err(no_writable_queue(topic));
    }
    // User code on the I/O thread: a panic must not take the thread down.
    let index = std::panic::catch_unwind(AssertUnwindSafe(|| selector(queues, &message)))
        .map_err(|_| ClientError::InvalidArgument("the queue selector panicked".into()))?;
    let queue = queues[index % queues.len()].clone();
    let single = identify(&state, message)?;
    send_once(
        &ctx,
        &state,
        &route,
        Payload::Single(single),
        &queue,
        deadline,
    )
    .await
}

/// `Producer::send_oneway`: one attempt, done once the request is queued on the connection.
pub(crate) async fn send_oneway(
    ctx: Rc<IoContext>,
    shared: Arc<Shared>,
    message: Message,
) -> Result<()> {
    let state = State::get(&ctx, &shared)?;
    let Single { message, unique_id } = prepare(&state, message)?;
    let topic = message.topic();
    let settings = state.settings();
    let deadline = Instant::now() + settings.send_timeout;
    let route = publish_route(&ctx, topic, settings.send_timeout).await?;
    let cursor = state.on_route(&ctx, topic, &route);
    let queue = state
        .select(&route, cursor, None)
        .ok_or_else(|| no_writable_queue(topic))?;
    let addr = route
        .master_addr(&queue.broker_name)
        .ok_or_else(|| no_writable_queue(topic))?;
    let began = Instant::now();
    let left = deadline.saturating_duration_since(began);
    let queued = match compio::time::timeout(left, ctx.pool.get(addr)).await {
        Ok(Ok(connection)) => {
            // Synchronous from here: the properties borrow ends before any `.await`.
            let mut properties = state.properties.borrow_mut();
            message.write_properties(&unique_id, &mut properties);
            let header =
                request_header(settings, &message, queue.queue_id, Some(&properties), false);
            connection.oneway(RequestCode::SendMessageV2, &header.v2(), message.body())
        }
        Ok(Err(error)) => Err(error),
        Err(_) => Err(ClientError::Timeout {
            addr: addr.to_owned(),
            code: RequestCode::SendMessageV2,
            timeout: left,
        }),
    };
    if queued.is_err() {
        state.record(&queue.broker_name, began.elapsed(), Outcome::Isolate);
        state.schedule_refresh(&ctx, topic);
    }
    queued
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_protocol::message::{BatchIter, Properties};
    use ringmq_protocol::{FrameCodec, SerializeType, header::SendKeys};

    fn settings() -> Settings {
        Settings {
            group: "g".into(),
            send_timeout: Duration::from_secs(3),
            retries: 2,
            fault_avoidance: true,
            fault_tiers: super::super::fault::default_tiers(),
            max_message_bytes: 64,
        }
    }

    fn state() -> State {
        State {
            shared: Arc::new(Shared::new(settings())),
            faults: FaultTracker::new(Vec::new()),
            ids: UniqueIdGenerator::new("10.0.0.1".parse().unwrap()),
            properties: RefCell::new(String::new()),
            topics: RefCell::new(HashMap::new()),
            refreshing: RefCell::new(HashSet::new()),
            heartbeated: RefCell::new(HashSet::new()),
        }
    }

    fn decode(out: &BytesMut) -> Command {
        let mut buffer = out.clone();
        let command = FrameCodec::default().decode(&mut buffer).unwrap().unwrap();
        assert!(buffer.is_empty(), "exactly one frame");
        command
    }

    #[test]
    fn retryable_codes_are_javas_plus_system_busy() {
        let retryable = [1, 2, 14, 16, 17, 204, 205];
        for code in (0..=300).chain([-1, 1000]) {
            let error = ClientError::broker(
                "b:1",
                RequestCode::SendMessageV2,
                ResponseCode::from_i32(code),
                None,
            );
            assert_eq!(
                is_retryable(&error),
                retryable.contains(&code),
                "code {code}"
            );
        }
        assert!(is_retryable(&ClientError::lost("b:1", "reset")));
        assert!(is_retryable(&ClientError::Timeout {
            addr: "b:1".into(),
            code: RequestCode::SendMessageV2,
            timeout: Duration::from_secs(1),
        }));
        assert!(!is_retryable(&ClientError::bad_response(
            "b:1",
            RequestCode::SendMessageV2,
            "no queueId"
        )));
    }

    #[test]
    fn single_send_is_a_v2_frame_with_every_field() {
        let state = state();
        for serialize_type in [SerializeType::RocketMq, SerializeType::Json] {
            let message = Message::new("orders", "body!")
                .with_tags("paid")
                .with_keys(["k1", "k2"])
                .with_flag(7)
                .with_property("region", "eu");
            let payload = Payload::Single(prepare(&state, message).unwrap());
            let head = CommandHead::request(RequestCode::SendMessageV2, 42, serialize_type);
            let mut out = BytesMut::new();
            payload.encode(&state, 3, &head, &mut out);
            let command = decode(&out);
            assert_eq!(command.request_code(), RequestCode::SendMessageV2);
            assert_eq!(command.serialize_type, serialize_type);
            assert_eq!(command.opaque, 42);
            assert!(command.ext.contains("a"), "one-letter V2 keys");
            let header =
                SendMessageRequestHeader::from_ext_with(&command.ext, SendKeys::V2).unwrap();
            assert_eq!(header.producer_group, "g");
            assert_eq!(header.topic, "orders");
            assert_eq!(header.default_topic, "TBW102");
            assert_eq!(header.default_topic_queue_nums, 4);
            assert_eq!(header.queue_id, 3);
            assert_eq!(header.flag, 7);
            assert!(!header.is_batch());
            assert!((header.born_timestamp_ms - now_ms()).abs() < 60_000);
            let properties = Properties::new(header.properties.unwrap());
            assert_eq!(properties.get("TAGS"), Some("paid"));
            assert_eq!(properties.get("KEYS"), Some("k1 k2"));
            assert_eq!(properties.get("region"), Some("eu"));
            let Payload::Single(Single { unique_id, .. }) = &payload else {
                panic!("single");
            };
            assert_eq!(properties.get("UNIQ_KEY"), Some(unique_id.as_str()));
            assert_eq!(&command.body[..], b"body!");
        }
    }

    #[test]
    fn batch_frame_carries_each_message_with_its_own_id() {
        let state = state();
        let messages = vec![
            Message::new("t", "one").with_tags("a"),
            Message::new("t", "two").with_flag(2),
        ];
        validate_batch(&messages, state.settings()).unwrap();
        let id_len = state.ids.id_len();
        let mut unique_ids = String::new();
        state.ids.append_id(&mut unique_ids);
        unique_ids.push(',');
        state.ids.append_id(&mut unique_ids);
        let payload = Payload::Batch {
            messages,
            unique_ids: unique_ids.clone(),
        };
        let head = CommandHead::request(RequestCode::SendBatchMessage, 1, SerializeType::RocketMq);
        let mut out = BytesMut::new();
        payload.encode(&state, 0, &head, &mut out);
        let command = decode(&out);
        assert_eq!(command.request_code(), RequestCode::SendBatchMessage);
        let header = SendMessageRequestHeader::from_command(&command).unwrap();
        assert!(header.is_batch());
        assert_eq!(header.topic, "t");
        let entries: Vec<_> = BatchIter::new(&command.body)
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].body, b"one");
        assert_eq!(entries[1].flag, 2);
        for (index, entry) in entries.iter().enumerate() {
            assert_eq!(
                Properties::new(entry.properties).get("UNIQ_KEY"),
                Some(batch_id(&unique_ids, index, id_len))
            );
        }
        assert_eq!(payload.into_msg_id().split(',').count(), 2);
    }

    #[test]
    fn invalid_messages_are_refused_before_sending() {
        let settings = settings();
        let refused = |message: Message| {
            matches!(
                validate_message(&message, &settings),
                Err(ClientError::InvalidArgument(_))
            )
        };
        assert!(refused(Message::new("", "b")));
        assert!(refused(Message::new("a b", "b")));
        assert!(refused(Message::new("t".repeat(128), "b")));
        assert!(refused(Message::new("TBW102", "b")));
        assert!(refused(
            Message::new("t", "b").with_property("UNIQ_KEY", "x")
        ));
        assert!(refused(Message::new("t", vec![0u8; 65])));
        assert!(!refused(Message::new("t", vec![0u8; 64])));

        let batch_refused = |messages: &[Message]| validate_batch(messages, &settings).is_err();
        assert!(batch_refused(&[]));
        assert!(batch_refused(&[
            Message::new("a", "1"),
            Message::new("b", "2")
        ]));
        assert!(batch_refused(&[Message::new("a", "1").with_delay_level(2)]));
        assert!(batch_refused(&[Message::new("%RETRY%g", "1")]));
        assert!(batch_refused(&[
            Message::new("a", "1"),
            Message::new("a", "2").with_wait_store_ok(false)
        ]));
        assert!(!batch_refused(&[
            Message::new("a", "1"),
            Message::new("a", "2")
        ]));

        let state = state();
        let huge = Message::new("t", "b").with_property("big", "v".repeat(MAX_PROPERTIES_BYTES));
        assert!(state.check_properties(&huge, "id").is_err());
    }

    #[test]
    fn properties_bound_is_never_below_the_written_length() {
        let state = state();
        let messages = [
            Message::new("t", "b"),
            Message::new("t", "b")
                .with_tags("tag")
                .with_keys(["a", "bb", "ccc"])
                .with_delay_level(18)
                .with_wait_store_ok(false)
                .with_property("x", "y")
                .with_property("long", "v".repeat(1000)),
        ];
        for message in messages {
            let id = state.ids.next_id();
            let written = state.check_properties(&message, &id).unwrap();
            assert!(properties_len_bound(&message, &id) >= written);
        }
        // Too long: refused by the exact check the bound triggers.
        let huge = Message::new("t", "b").with_property("big", "v".repeat(MAX_PROPERTIES_BYTES));
        assert!(matches!(
            identify(&state, huge),
            Err(ClientError::InvalidArgument(_))
        ));
    }

    #[test]
    fn answers_map_to_results_or_refusals() {
        let queue = MessageQueue {
            broker_name: "broker-a".into(),
            queue_id: 0,
            topic: "t".into(),
        };
        let request = Command::request(RequestCode::SendMessageV2, 5);
        let answer = |code: ResponseCode, header: Option<SendMessageResponseHeader<'_>>| {
            let mut head = CommandHead::response_to(&request, code);
            head.remark = Some("why");
            let mut out = BytesMut::new();
            match header {
                Some(header) => encode_frame(&head, &header, &[], &mut out),
                None => encode_frame(&head, &(), &[], &mut out),
            }
            decode(&out)
        };
        let header = SendMessageResponseHeader {
            msg_id: "0A00000100002A9F0000000000000000",
            queue_id: 2,
            queue_offset: 17,
            transaction_id: None,
            msg_region: Some("DefaultRegion"),
            trace_on: Some("true"),
        };
        for (code, status) in [
            (ResponseCode::Success, SendStatus::SendOk),
            (ResponseCode::FlushDiskTimeout, SendStatus::FlushDiskTimeout),
            (
                ResponseCode::FlushSlaveTimeout,
                SendStatus::FlushSlaveTimeout,
            ),
            (
                ResponseCode::SlaveNotAvailable,
                SendStatus::SlaveNotAvailable,
            ),
        ] {
            let result = read_answer(
                &answer(code, Some(header)),
                "b:1",
                RequestCode::SendMessageV2,
                &queue,
            )
            .unwrap();
            assert_eq!(result.status, status);
            assert_eq!(result.offset_msg_id, header.msg_id);
            assert_eq!((result.queue.queue_id, result.queue_offset), (2, 17));
            assert_eq!(result.queue.broker_name, "broker-a");
            assert_eq!(result.region_id.as_deref(), Some("DefaultRegion"));
        }
        let refused = read_answer(
            &answer(ResponseCode::MessageIllegal, None),
            "b:1",
            RequestCode::SendMessageV2,
            &queue,
        )
        .unwrap_err();
        assert_eq!(refused.response_code(), Some(ResponseCode::MessageIllegal));
        assert_eq!(refused.remark(), Some("why"));
        let undecodable = read_answer(
            &answer(ResponseCode::Success, None),
            "b:1",
            RequestCode::SendMessageV2,
            &queue,
        )
        .unwrap_err();
        assert!(
            matches!(undecodable, ClientError::BadResponse { .. }),
            "{undecodable}"
        );
    }
}
