//! The consume thread of a push consumer: where the user's handler runs, never on the I/O
//! thread.
//!
//! The pull tasks put messages into their queue's [`ProcessQueue`] and wake this thread with the
//! queue (at most one wake-up per queue is outstanding, see the process queue's token). The
//! thread serves the queues round-robin, one batch of up to `batch_size` messages of one queue
//! at a time, so a queue's messages reach the handler in offset order.
//!
//! Outcomes:
//! - Success: the batch's offsets are done.
//! - Retry, concurrent clustering consumer: the batch's messages are sent back to their broker
//!   concurrently (CONSUMER_SEND_MSG_BACK to the master), which stores a copy in the group's
//!   retry topic; a message the broker took is done. When the send-back fails (no master, the
//!   master refused or did not answer) the message is sent as a normal message to the group's
//!   retry topic on any writable broker (SEND_MESSAGE_V2 with the properties Java's fallback
//!   sets: `RETRY_TOPIC`, `ORIGIN_MESSAGE_ID`, reconsume times + 1, delay level 3 + reconsume
//!   times). A message neither way took stays in flight (its offset is not committed past) and
//!   is handed to the handler again after [`REDELIVER_DELAY`], doubling up to
//!   [`REDELIVER_DELAY_MAX`].
//! - Retry, broadcasting consumer: the batch is dropped with a warning (Java does the same: no
//!   member reads the retry topic in broadcasting mode).
//! - Retry, orderly consumer: the batch goes back to the head of its queue, which pauses for
//!   [`ORDERLY_RETRY_PAUSE`] while other queues go on; by default forever (Java's orderly
//!   default), else after `max_reconsume_times` failed attempts it is sent back with delay
//!   level -1, which puts it in the group's dead-letter queue, and the queue moves on.
//!
//! A handler that panics counts as Retry. Counters taken from the broker (`reconsume_times`)
//! saturate rather than overflow.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringmq_protocol::RequestCode;
use ringmq_protocol::header::{ConsumerSendMsgBackRequestHeader, SendMessageRequestHeader};
use ringmq_protocol::message::PropertiesWriter;
use ringmq_protocol::message::properties::keys;

use super::process_queue::ProcessQueue;
use ringmq_common::now_ms;

use super::{ConsumeContext, ConsumeOutcome, join_all, master_addr, retry_topic};
use crate::error::{ClientError, Result};
use crate::instance::{ClientInstance, IoContext};
use crate::message::{MessageQueue, ReceivedMessage};
use crate::remoting::expect_success;

/// Pause before a message whose send-back failed is handed to the handler again the first time;
/// it doubles with each further failure up to [`REDELIVER_DELAY_MAX`].
pub(crate) const REDELIVER_DELAY: Duration = Duration::from_secs(1);
/// Longest pause between local redeliveries of a message whose send-back keeps failing.
pub(crate) const REDELIVER_DELAY_MAX: Duration = Duration::from_secs(30);
/// Producer group of the fallback sends to the retry topic (Java's inner producer group).
const INNER_PRODUCER_GROUP: &str = "CLIENT_INNER_PRODUCER";
/// Highest delay level of the broker's default table (`messageDelayLevel`, 18 levels).
const MAX_DELAY_LEVEL: i32 = 18;
/// Pause of an orderly queue after its handler asked for a retry (RocketMQ
/// `suspendCurrentQueueTimeMillis`).
pub(crate) const ORDERLY_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How often an orderly queue whose lock is not (yet) held is looked at again.
const LOCK_RECHECK: Duration = Duration::from_millis(200);
/// Longest idle wait, so a stop request is seen even without a signal.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// What the I/O side sends the consume thread.
#[derive(Debug)]
pub(crate) enum Signal {
    /// The queue has pending messages (the sender took its token).
    Work(Arc<ProcessQueue>),
    /// Finish the batch in hand and exit.
    Stop,
}

/// What the consume thread needs to know about its consumer.
#[derive(Debug, Clone)]
pub(crate) struct ConsumeSettings {
    pub group: String,
    pub batch_size: usize,
    pub orderly: bool,
    /// Broadcasting mode: failed batches are dropped, not sent back.
    pub broadcasting: bool,
    /// Concurrent: the broker's redelivery limit sent with every send-back. Orderly: local
    /// retries of a batch before it goes to the dead-letter queue (`i32::MAX`: unlimited).
    pub max_reconsume_times: i32,
}

/// Something the consume thread does later.
#[derive(Debug)]
enum Delayed {
    /// Serve this queue again (its token is held meanwhile).
    Queue {
        due: Instant,
        queue: Arc<ProcessQueue>,
    },
    /// Hand these messages (still in flight) to the handler again.
    Batch {
        due: Instant,
        queue: Arc<ProcessQueue>,
        batch: Vec<ReceivedMessage>,
        attempt: u32,
    },
}

impl Delayed {
    const fn due(&self) -> Instant {
        match self {
            Self::Queue { due, .. } | Self::Batch { due, .. } => *due,
        }
    }
}

/// The consume thread's state.
pub(crate) struct ConsumeLoop<H> {
    handler: H,
    settings: ConsumeSettings,
    instance: ClientInstance,
    signals: flume::Receiver<Signal>,
    stopping: Arc<AtomicBool>,
    ready: VecDeque<Arc<ProcessQueue>>,
    delayed: Vec<Delayed>,
}

impl<H> ConsumeLoop<H>
where
    H: FnMut(&[ReceivedMessage], &ConsumeContext) -> ConsumeOutcome,
{
    pub(crate) const fn new(
        handler: H,
        settings: ConsumeSettings,
        instance: ClientInstance,
        signals: flume::Receiver<Signal>,
        stopping: Arc<AtomicBool>,
    ) -> Self {
        Self {
            handler,
            settings,
            instance,
            signals,
            stopping,
            ready: VecDeque::new(),
            delayed: Vec::new(),
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Serves queues until told to stop (or every sender is gone).
    pub(crate) fn run(mut self) {
        loop {
            if self.stopping() {
                return;
            }
            self.run_due();
            if !self.drain_signals() {
                return;
            }
            if let Some(queue) = self.ready.pop_front() {
                if !self.stopping() {
                    self.serve(queue);
                }
                continue;
            }
            let now = Instant::now();
            let wait = self
                .delayed
                .iter()
                .map(Delayed::due)
                .min()
                .map_or(IDLE_WAIT, |due| due.saturating_duration_since(now))
                .min(IDLE_WAIT);
            match self.signals.recv_timeout(wait) {
                Ok(Signal::Work(queue)) => self.ready.push_back(queue),
                Ok(Signal::Stop) | Err(flume::RecvTimeoutError::Disconnected) => return,
                Err(flume::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Moves waiting signals into the ready list; false on Stop.
    fn drain_signals(&mut self) -> bool {
        loop {
            match self.signals.try_recv() {
                Ok(Signal::Work(queue)) => self.ready.push_back(queue),
                Ok(Signal::Stop) | Err(flume::TryRecvError::Disconnected) => return false,
                Err(flume::TryRecvError::Empty) => return true,
            }
        }
    }

    /// Runs whatever delayed work is due.
    fn run_due(&mut self) {
        let now = Instant::now();
        if !self.delayed.iter().any(|delayed| delayed.due() <= now) {
            return;
        }
        let (due, later): (Vec<Delayed>, Vec<Delayed>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|delayed| delayed.due() <= now);
        self.delayed = later;
        for delayed in due {
            match delayed {
                Delayed::Queue { queue, .. } => self.ready.push_back(queue),
                Delayed::Batch {
                    queue,
                    batch,
                    attempt,
                    ..
                } => {
                    if !queue.is_dropped() && !self.stopping() {
                        self.consume_concurrently(&queue, batch, attempt);
                    }
                }
            }
        }
    }

    /// Serves one batch of `queue` (this thread holds its token).
    fn serve(&mut self, queue: Arc<ProcessQueue>) {
        if self.settings.orderly && !queue.is_dropped() && !queue.is_locked(Instant::now()) {
            self.delayed.push(Delayed::Queue {
                due: Instant::now() + LOCK_RECHECK,
                queue,
            });
            return;
        }
        let Some(batch) = queue.take_batch(self.settings.batch_size) else {
            return;
        };
        let parked = if self.settings.orderly {
            self.consume_orderly(&queue, batch)
        } else {
            self.consume_concurrently(&queue, batch, 0);
            false
        };
        if !parked && queue.keep_token() {
            self.ready.push_back(queue);
        }
    }

    /// Runs the handler; a panic counts as Retry.
    fn call(
        &mut self,
        queue: &ProcessQueue,
        batch: &[ReceivedMessage],
        attempt: u32,
    ) -> ConsumeOutcome {
        let context = ConsumeContext {
            queue: queue.queue().clone(),
            attempt,
            orderly: self.settings.orderly,
        };
        let handler = &mut self.handler;
        queue.set_consuming(true);
        let outcome = catch_unwind(AssertUnwindSafe(|| handler(batch, &context)));
        queue.set_consuming(false);
        outcome.unwrap_or_else(|_| {
            tracing::error!(
                group = %self.settings.group,
                queue = ?context.queue,
                "consume handler panicked; the batch is retried"
            );
            ConsumeOutcome::Retry
        })
    }

    fn consume_concurrently(
        &mut self,
        queue: &Arc<ProcessQueue>,
        batch: Vec<ReceivedMessage>,
        attempt: u32,
    ) {
        let outcome = self.call(queue, &batch, attempt);
        if queue.is_dropped() {
            // The queue moved to another member, which re-reads from the committed offset.
            return;
        }
        match outcome {
            ConsumeOutcome::Success => queue.done(batch.iter().map(|m| m.queue_offset)),
            ConsumeOutcome::Retry if self.settings.broadcasting => {
                tracing::warn!(
                    group = %self.settings.group,
                    queue = ?queue.queue(),
                    messages = batch.len(),
                    first_offset = batch.first().map(|m| m.queue_offset),
                    "broadcasting consumer: a failed batch is dropped, not retried"
                );
                queue.done(batch.iter().map(|m| m.queue_offset));
            }
            ConsumeOutcome::Retry => {
                let mut failed = self.send_back(queue, batch, 0);
                if !failed.is_empty() {
                    let due = Instant::now() + redeliver_delay(attempt);
                    tracing::warn!(
                        group = %self.settings.group,
                        queue = ?queue.queue(),
                        messages = failed.len(),
                        attempt,
                        "send-back failed; redelivering locally"
                    );
                    for message in &mut failed {
                        message.reconsume_times = message.reconsume_times.saturating_add(1);
                    }
                    self.delayed.push(Delayed::Batch {
                        due,
                        queue: Arc::clone(queue),
                        batch: failed,
                        attempt: attempt.saturating_add(1),
                    });
                }
            }
        }
    }

    /// Returns true when the queue's token is parked in the delayed list.
    fn consume_orderly(
        &mut self,
        queue: &Arc<ProcessQueue>,
        mut batch: Vec<ReceivedMessage>,
    ) -> bool {
        let attempt = queue.attempts();
        let outcome = self.call(queue, &batch, attempt);
        if queue.is_dropped() {
            return false;
        }
        match outcome {
            ConsumeOutcome::Success => {
                queue.reset_attempts();
                queue.done(batch.iter().map(|m| m.queue_offset));
                false
            }
            ConsumeOutcome::Retry => {
                let attempts = queue.bump_attempts();
                let limit = u32::try_from(self.settings.max_reconsume_times).unwrap_or(0);
                if attempts <= limit {
                    for message in &mut batch {
                        message.reconsume_times = message.reconsume_times.saturating_add(1);
                    }
                    queue.put_back(batch);
                } else if self.settings.broadcasting {
                    tracing::warn!(
                        group = %self.settings.group,
                        queue = ?queue.queue(),
                        attempts,
                        "orderly broadcasting batch failed every retry; dropping it"
                    );
                    queue.reset_attempts();
                    queue.done(batch.iter().map(|m| m.queue_offset));
                    return false;
                } else {
                    tracing::warn!(
                        group = %self.settings.group,
                        queue = ?queue.queue(),
                        attempts,
                        "orderly batch failed every retry; moving it to the dead-letter queue"
                    );
                    let failed = self.send_back(queue, batch, -1);
                    if failed.is_empty() {
                        queue.reset_attempts();
                        return false;
                    }
                    queue.put_back(failed);
                }
                self.delayed.push(Delayed::Queue {
                    due: Instant::now() + ORDERLY_RETRY_PAUSE,
                    queue: Arc::clone(queue),
                });
                true
            }
        }
    }

    /// Sends `batch` back (all messages concurrently, each with its fallback); marks the
    /// messages that were taken done and returns those that were not.
    fn send_back(
        &self,
        queue: &ProcessQueue,
        batch: Vec<ReceivedMessage>,
        delay_level: i32,
    ) -> Vec<ReceivedMessage> {
        let group = self.settings.group.clone();
        let target = queue.queue().clone();
        let max_reconsume_times = self.settings.max_reconsume_times;
        let outcome = self
            .instance
            .run(move |ctx| async move {
                let sends = batch
                    .iter()
                    .map(|message| {
                        send_back_or_resend(
                            &ctx,
                            &group,
                            &target,
                            message,
                            delay_level,
                            max_reconsume_times,
                        )
                    })
                    .collect();
                let results = join_all(sends).await;
                let mut failed = Vec::new();
                let mut sent = Vec::new();
                for (message, result) in batch.into_iter().zip(results) {
                    match result {
                        Ok(()) => sent.push(message.queue_offset),
                        Err(error) => {
                            tracing::debug!(%error, msg_id = %message.msg_id, "send-back failed");
                            failed.push(message);
                        }
                    }
                }
                Ok((sent, failed))
            })
            .wait();
        match outcome {
            Ok((sent, failed)) => {
                queue.done(sent);
                failed
            }
            // The I/O thread is gone: nothing was sent; the messages stay in flight.
            Err(_) => Vec::new(),
        }
    }
}

/// The pause before the local redelivery that follows failed attempt `attempt` (0-based).
pub(crate) fn redeliver_delay(attempt: u32) -> Duration {
    REDELIVER_DELAY
        .saturating_mul(1 << attempt.min(16))
        .min(REDELIVER_DELAY_MAX)
}

/// Sends one message back: CONSUMER_SEND_MSG_BACK to the master of the broker it was read
/// from, else (no master, refused, no answer) a normal send to the group's retry topic.
async fn send_back_or_resend(
    ctx: &IoContext,
    group: &str,
    queue: &MessageQueue,
    message: &ReceivedMessage,
    delay_level: i32,
    max_reconsume_times: i32,
) -> Result<()> {
    match send_back(ctx, group, queue, message, delay_level, max_reconsume_times).await {
        Ok(()) => Ok(()),
        Err(error) => {
            tracing::debug!(%error, msg_id = %message.msg_id, "send-back failed; sending to the retry topic");
            resend_to_retry_topic(ctx, group, queue, message, delay_level, max_reconsume_times)
                .await
        }
    }
}

/// CONSUMER_SEND_MSG_BACK for one message to the master of the broker it was read from.
/// `delay_level` 0 lets the broker choose the retry delay; -1 sends it to the dead-letter queue.
pub(crate) async fn send_back(
    ctx: &IoContext,
    group: &str,
    queue: &MessageQueue,
    message: &ReceivedMessage,
    delay_level: i32,
    max_reconsume_times: i32,
) -> Result<()> {
    let addr = master_addr(ctx, queue).await?;
    let origin_msg_id = message
        .property(keys::ORIGIN_MESSAGE_ID)
        .unwrap_or(&message.msg_id);
    let header = ConsumerSendMsgBackRequestHeader {
        offset: message.commit_log_offset,
        group,
        delay_level,
        origin_msg_id: Some(origin_msg_id),
        origin_topic: Some(&message.topic),
        unit_mode: Some(false),
        max_reconsume_times: Some(max_reconsume_times),
    };
    let answer = ctx
        .pool
        .request(
            &addr,
            RequestCode::ConsumerSendMsgBack,
            &header,
            &[],
            ctx.timeout(),
        )
        .await?;
    expect_success(answer, &addr, RequestCode::ConsumerSendMsgBack).map(drop)
}

/// The properties string and reconsume count of a message resent to the group's retry topic,
/// as Java's consumer builds it when CONSUMER_SEND_MSG_BACK fails: the original properties,
/// `RETRY_TOPIC` = the original topic, `ORIGIN_MESSAGE_ID` kept (or set to this message's id),
/// delay level 3 + reconsume times (capped at the broker's highest level; -1 stays -1: straight
/// to the dead-letter queue via a reconsume count past the limit), no transaction flag. The
/// reconsume count (one higher) and the limit travel in the send header, as Java's producer
/// moves them there from the properties.
pub(crate) fn retry_properties(message: &ReceivedMessage, delay_level: i32) -> (String, i32) {
    let reconsume_times = message.reconsume_times.max(0).saturating_add(1);
    let mut properties = message.properties.clone();
    let origin = message
        .property(keys::ORIGIN_MESSAGE_ID)
        .unwrap_or(&message.msg_id)
        .to_owned();
    properties.insert(keys::ORIGIN_MESSAGE_ID.to_owned(), origin);
    properties.insert(keys::RETRY_TOPIC.to_owned(), message.topic.clone());
    properties.remove(keys::TRAN_MSG);
    properties.remove(keys::RECONSUME_TIME);
    properties.remove(keys::MAX_RECONSUME_TIMES);
    if delay_level < 0 {
        properties.remove(keys::DELAY);
    } else {
        let level = if delay_level > 0 {
            delay_level
        } else {
            message.reconsume_times.max(0).saturating_add(3)
        };
        properties.insert(
            keys::DELAY.to_owned(),
            level.min(MAX_DELAY_LEVEL).to_string(),
        );
    }
    let mut out = String::new();
    let mut writer = PropertiesWriter::new(&mut out);
    for (name, value) in &properties {
        writer.put(name, value);
    }
    (out, reconsume_times)
}

/// Sends `message` as a normal message to the group's retry topic (the fallback of a failed
/// send-back). Prefers a broker group other than `failed_queue`'s, whose master just failed;
/// tries at most two broker groups.
async fn resend_to_retry_topic(
    ctx: &IoContext,
    group: &str,
    failed_queue: &MessageQueue,
    message: &ReceivedMessage,
    delay_level: i32,
    max_reconsume_times: i32,
) -> Result<()> {
    let topic = retry_topic(group);
    let route = ctx.routes.route(&ctx.pool, &topic, ctx.timeout()).await?;
    let queues = route.writable_queues();
    let (properties, reconsume_times) = retry_properties(message, delay_level);
    // Past the limit, reconsume times alone sends it to the dead-letter queue (delay -1).
    let reconsume_times = if delay_level < 0 {
        max_reconsume_times.saturating_add(1).max(reconsume_times)
    } else {
        reconsume_times
    };
    let mut brokers: Vec<&str> = Vec::new();
    for queue in queues {
        if !brokers.contains(&queue.broker_name.as_str()) {
            brokers.push(&queue.broker_name);
        }
    }
    brokers.sort_by_key(|name| *name == failed_queue.broker_name);
    let mut last_error = ClientError::NoQueue {
        topic: topic.clone(),
        what: "writable",
    };
    let spread = usize::try_from(message.queue_offset.unsigned_abs() % 1024).unwrap_or(0);
    for broker_name in brokers.into_iter().take(2) {
        let candidates: Vec<&MessageQueue> = queues
            .iter()
            .filter(|queue| queue.broker_name == broker_name)
            .collect();
        let Some(queue) = candidates.get(spread % candidates.len().max(1)) else {
            continue;
        };
        let Some(addr) = route.master_addr(broker_name).map(str::to_owned) else {
            continue;
        };
        let header = SendMessageRequestHeader {
            producer_group: INNER_PRODUCER_GROUP,
            topic: &topic,
            default_topic: crate::route::AUTO_CREATE_TOPIC,
            default_topic_queue_nums: 4,
            queue_id: queue.queue_id,
            sys_flag: 0,
            born_timestamp_ms: now_ms(),
            flag: message.flag,
            properties: Some(&properties),
            reconsume_times: Some(reconsume_times),
            unit_mode: Some(false),
            max_reconsume_times: Some(max_reconsume_times),
            batch: Some(false),
            broker_name: None,
        };
        let answer = ctx
            .pool
            .request(
                &addr,
                RequestCode::SendMessageV2,
                &header.v2(),
                &message.body,
                ctx.timeout(),
            )
            .await
            .and_then(|answer| expect_success(answer, &addr, RequestCode::SendMessageV2));
        match answer {
            Ok(_) => return Ok(()),
            Err(error) => last_error = error,
        }
    }
    Err(last_error)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use ringmq_protocol::message::Properties;

    use super::*;

    fn message(reconsume_times: i32) -> ReceivedMessage {
        let mut properties = BTreeMap::new();
        properties.insert(keys::TAGS.to_owned(), "a".to_owned());
        properties.insert(keys::UNIQ_KEY.to_owned(), "ID1".to_owned());
        properties.insert(keys::TRAN_MSG.to_owned(), "true".to_owned());
        ReceivedMessage {
            topic: "orders".into(),
            queue_id: 1,
            queue_offset: 5,
            commit_log_offset: 500,
            body: bytes::Bytes::from_static(b"x"),
            tags: Some("a".into()),
            keys: Vec::new(),
            properties,
            offset_msg_id: "OFF".into(),
            msg_id: "ID1".into(),
            born_timestamp_ms: 0,
            store_timestamp_ms: 0,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_host: "127.0.0.1:2".parse().unwrap(),
            reconsume_times,
            flag: 0,
        }
    }

    fn parse(properties: &str) -> BTreeMap<String, String> {
        Properties::new(properties)
            .iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()
    }

    #[test]
    fn fallback_retry_message_carries_what_java_sets() {
        let (properties, reconsume_times) = retry_properties(&message(2), 0);
        let properties = parse(&properties);
        assert_eq!(reconsume_times, 3);
        assert_eq!(properties[keys::RETRY_TOPIC], "orders");
        assert_eq!(properties[keys::ORIGIN_MESSAGE_ID], "ID1");
        assert_eq!(properties[keys::DELAY], "5", "3 + reconsume times");
        assert_eq!(properties[keys::TAGS], "a");
        assert_eq!(properties[keys::UNIQ_KEY], "ID1");
        assert!(!properties.contains_key(keys::TRAN_MSG));

        // A message already retried keeps its first id; the delay is capped; counts saturate.
        let mut again = message(i32::MAX);
        again
            .properties
            .insert(keys::ORIGIN_MESSAGE_ID.to_owned(), "FIRST".to_owned());
        let (properties, reconsume_times) = retry_properties(&again, 0);
        let properties = parse(&properties);
        assert_eq!(reconsume_times, i32::MAX);
        assert_eq!(properties[keys::ORIGIN_MESSAGE_ID], "FIRST");
        assert_eq!(properties[keys::DELAY], MAX_DELAY_LEVEL.to_string());

        let (properties, _) = retry_properties(&message(0), -1);
        assert!(!parse(&properties).contains_key(keys::DELAY));
    }

    /// A fake NameServer + broker on one address: routes every topic to broker "b" at itself,
    /// refuses CONSUMER_SEND_MSG_BACK, stores SEND_MESSAGE_V2, answers anything else with
    /// SUCCESS. Records every request. Serves until the test process ends (threads are idle
    /// once the client closes its connection).
    fn fake_broker() -> (String, Arc<std::sync::Mutex<Vec<ringmq_protocol::Command>>>) {
        use std::io::{Read, Write};

        use bytes::BytesMut;
        use ringmq_protocol::body::{self, BrokerData, QueueData, TopicRouteData, perm};
        use ringmq_protocol::{CommandHead, FrameCodec, ResponseCode, encode_frame};

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (route_addr, seen) = (addr.clone(), Arc::clone(&requests));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let (route_addr, seen) = (route_addr.clone(), Arc::clone(&seen));
                std::thread::spawn(move || {
                    let codec = FrameCodec::default();
                    let mut input = BytesMut::new();
                    let mut chunk = vec![0u8; 64 << 10];
                    while let Ok(read) = stream.read(&mut chunk) {
                        if read == 0 {
                            return;
                        }
                        input.extend_from_slice(&chunk[..read]);
                        while let Ok(Some(request)) = codec.decode(&mut input) {
                            seen.lock().unwrap().push(request.clone());
                            let mut body = Vec::new();
                            let code = match request.request_code() {
                                RequestCode::GetRouteinfoByTopic => {
                                    let mut broker = BrokerData {
                                        broker_name: "b".into(),
                                        cluster: "c".into(),
                                        ..BrokerData::default()
                                    };
                                    broker.broker_addrs.insert(0, route_addr.clone());
                                    body = body::to_vec(&TopicRouteData {
                                        broker_datas: vec![broker],
                                        queue_datas: vec![QueueData {
                                            broker_name: "b".into(),
                                            perm: perm::READ | perm::WRITE,
                                            read_queue_nums: 1,
                                            write_queue_nums: 1,
                                            topic_sys_flag: 0,
                                        }],
                                        ..TopicRouteData::default()
                                    });
                                    ResponseCode::Success
                                }
                                RequestCode::ConsumerSendMsgBack => ResponseCode::SystemError,
                                _ => ResponseCode::Success,
                            };
                            if request.is_oneway() {
                                continue;
                            }
                            let mut head = CommandHead::response_to(&request, code);
                            head.remark = Some("fake");
                            let mut out = BytesMut::new();
                            encode_frame(&head, &(), &body, &mut out);
                            if stream.write_all(&out).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, requests)
    }

    #[test]
    fn a_refused_send_back_falls_back_to_the_retry_topic() {
        use crate::config::ClientConfig;

        let (addr, requests) = fake_broker();
        let instance = ClientInstance::new(
            ClientConfig::new(&addr).with_request_timeout(Duration::from_secs(3)),
        )
        .unwrap();
        let queue = MessageQueue {
            broker_name: "b".into(),
            queue_id: 1,
            topic: "orders".into(),
        };
        let sent = instance
            .run(move |ctx| async move {
                send_back_or_resend(&ctx, "g", &queue, &message(1), 0, 16).await
            })
            .wait();
        instance.shutdown();
        sent.unwrap();
        let requests = requests.lock().unwrap().clone();
        let codes: Vec<RequestCode> = requests
            .iter()
            .map(ringmq_protocol::Command::request_code)
            .collect();
        assert!(
            codes.contains(&RequestCode::ConsumerSendMsgBack),
            "{codes:?}"
        );
        let send = requests
            .iter()
            .find(|r| r.request_code() == RequestCode::SendMessageV2)
            .expect("the fallback send");
        let header = SendMessageRequestHeader::from_command(send).unwrap();
        assert_eq!(header.topic, "%RETRY%g");
        assert_eq!(header.producer_group, INNER_PRODUCER_GROUP);
        assert_eq!(header.reconsume_times, Some(2));
        assert_eq!(header.max_reconsume_times, Some(16));
        let properties = parse(header.properties.unwrap());
        assert_eq!(properties[keys::RETRY_TOPIC], "orders");
        assert_eq!(properties[keys::DELAY], "4");
        assert_eq!(send.body.as_ref(), b"x");
    }

    #[test]
    fn local_redelivery_backs_off_up_to_a_cap() {
        assert_eq!(redeliver_delay(0), REDELIVER_DELAY);
        assert_eq!(redeliver_delay(1), REDELIVER_DELAY * 2);
        assert_eq!(redeliver_delay(40), REDELIVER_DELAY_MAX);
        assert_eq!(redeliver_delay(u32::MAX), REDELIVER_DELAY_MAX);
    }
}
