//! Single-message send and receive for smoke tests (`ringmq-admin send` / `consume`), built on
//! raw SEND_MESSAGE_V2 and PULL_MESSAGE requests: no retry, no fault avoidance, no rebalance.
//! Applications use the producer and the consumers; these exist so an operator can check a
//! topic end to end with nothing but the admin handle.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringmq_protocol::header::{SendMessageRequestHeader, SendMessageResponseHeader};
use ringmq_protocol::{RequestCode, ResponseCode};

use super::topics::ADMIN_GROUP;
use super::{read_addr, rpc};
use crate::error::{ClientError, Result};
use crate::instance::IoContext;
use crate::message::{Message, MessageQueue, ReceivedMessage, SendResult, SendStatus};

/// The template topic named in sends (brokers auto-create unknown topics from it, when allowed).
const TEMPLATE_TOPIC: &str = "TBW102";
/// Longest time one long-polling pull is held by the broker (brokers cap it lower still).
const MAX_SUSPEND: Duration = Duration::from_secs(15);

/// Where [`ConsumeOne`] starts in a queue the group has no committed offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeFrom {
    /// The oldest message still stored.
    First,
    /// The next message stored after the call starts.
    Last,
}

/// What [`Admin::consume_one`](super::Admin::consume_one) reads.
///
/// Every readable queue of the topic is long-polled at once, and the first message that arrives
/// is the answer. With a group, each queue starts at the group's committed offset (else at
/// `from`) and the message's queue is committed past it, so repeated calls walk the topic;
/// without one nothing is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumeOne {
    /// The topic.
    pub topic: String,
    /// The consumer group whose offsets are used and advanced, if any.
    pub group: Option<String>,
    /// Start of a queue without a committed offset.
    pub from: ConsumeFrom,
    /// How long to wait for a message.
    pub timeout: Duration,
}

impl ConsumeOne {
    /// Reads `topic` without a group, from `from`, waiting up to `timeout`.
    pub fn new(topic: impl Into<String>, from: ConsumeFrom, timeout: Duration) -> Self {
        Self {
            topic: topic.into(),
            group: None,
            from,
            timeout,
        }
    }

    /// Uses and advances `group`'s committed offsets.
    #[must_use]
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }
}

pub(super) async fn send(ctx: &IoContext, message: Message) -> Result<SendResult> {
    // Successive sends of one process go round the queues.
    static NEXT_QUEUE: AtomicUsize = AtomicUsize::new(0);
    if let Some(name) = message.reserved_property() {
        return Err(ClientError::InvalidArgument(format!(
            "property {name} is set by the client itself"
        )));
    }
    let route = ctx
        .routes
        .refresh(&ctx.pool, message.topic(), ctx.timeout())
        .await?;
    let queues = route.writable_queues();
    if queues.is_empty() {
        return Err(ClientError::NoQueue {
            topic: message.topic().to_owned(),
            what: "writable",
        });
    }
    // Offset by the process id, so one-send processes (the admin CLI) spread over the queues too.
    let turn = NEXT_QUEUE.fetch_add(1, Ordering::Relaxed) + std::process::id() as usize;
    let queue = queues[turn % queues.len()].clone();
    let addr = route
        .master_addr(&queue.broker_name)
        .ok_or_else(|| ClientError::NoQueue {
            topic: message.topic().to_owned(),
            what: "writable",
        })?
        .to_owned();
    let unique_id = unique_id(&ctx.client_id);
    let mut properties = String::new();
    message.write_properties(&unique_id, &mut properties);
    let header = SendMessageRequestHeader {
        producer_group: ADMIN_GROUP,
        topic: message.topic(),
        default_topic: TEMPLATE_TOPIC,
        default_topic_queue_nums: 4,
        queue_id: queue.queue_id,
        sys_flag: 0,
        born_timestamp_ms: now_ms(),
        flag: message.flag(),
        properties: Some(&properties),
        reconsume_times: Some(0),
        unit_mode: Some(false),
        max_reconsume_times: None,
        batch: Some(false),
        broker_name: Some(&queue.broker_name),
    };
    let code = RequestCode::SendMessageV2;
    let answer = ctx
        .pool
        .request(&addr, code, &header.v2(), message.body(), ctx.timeout())
        .await?;
    let status = match answer.response_code() {
        ResponseCode::Success => SendStatus::SendOk,
        ResponseCode::FlushDiskTimeout => SendStatus::FlushDiskTimeout,
        ResponseCode::FlushSlaveTimeout => SendStatus::FlushSlaveTimeout,
        ResponseCode::SlaveNotAvailable => SendStatus::SlaveNotAvailable,
        refused => {
            return Err(ClientError::broker(
                &addr,
                code,
                refused,
                answer.remark.as_deref(),
            ));
        }
    };
    let response: SendMessageResponseHeader<'_> = answer
        .header()
        .map_err(|error| ClientError::bad_field(&addr, code, &error))?;
    Ok(SendResult {
        status,
        msg_id: unique_id,
        offset_msg_id: response.msg_id.to_owned(),
        queue: MessageQueue {
            queue_id: response.queue_id,
            ..queue
        },
        queue_offset: response.queue_offset,
        region_id: response.msg_region.map(str::to_owned),
    })
}

pub(super) async fn commit(
    ctx: &IoContext,
    group: &str,
    queue: &MessageQueue,
    offset: i64,
) -> Result<()> {
    let route = ctx
        .routes
        .refresh(&ctx.pool, &queue.topic, ctx.timeout())
        .await?;
    let addr = route
        .master_addr(&queue.broker_name)
        .ok_or_else(|| {
            ClientError::InvalidArgument(format!(
                "broker group {} of topic {} has no master",
                queue.broker_name, queue.topic
            ))
        })?
        .to_owned();
    rpc::commit_offset(ctx, &addr, group, &queue.topic, queue.queue_id, offset).await
}

/// What one queue's reader reports.
type Found = Result<(MessageQueue, String, ReceivedMessage)>;

pub(super) async fn consume(
    ctx: &std::rc::Rc<IoContext>,
    request: &ConsumeOne,
) -> Result<Option<ReceivedMessage>> {
    let deadline = Instant::now() + request.timeout;
    let route = ctx
        .routes
        .refresh(&ctx.pool, &request.topic, ctx.timeout())
        .await?;
    let queues = route.readable_queues();
    if queues.is_empty() {
        return Err(ClientError::NoQueue {
            topic: request.topic.clone(),
            what: "readable",
        });
    }
    let (found_tx, found_rx) = flume::unbounded::<Found>();
    let mut readers = Vec::with_capacity(queues.len());
    for queue in queues {
        let Some(addr) = route.broker(&queue.broker_name).and_then(read_addr) else {
            continue;
        };
        let start = start_offset(ctx, addr, request, queue).await?;
        let reader = read_queue(
            std::rc::Rc::clone(ctx),
            queue.clone(),
            addr.to_owned(),
            start,
            deadline,
            found_tx.clone(),
        );
        readers.push(compio::runtime::spawn(reader));
    }
    drop(found_tx);
    let mut first_error = None;
    let found = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match compio::time::timeout(remaining, found_rx.recv_async()).await {
            Ok(Ok(Ok(found))) => break Some(found),
            Ok(Ok(Err(error))) => {
                first_error.get_or_insert(error);
            }
            // Every reader ended (the deadline passed, or they all failed).
            Ok(Err(_)) | Err(_) => break None,
        }
    };
    // Dropping the readers cancels their pulls still held by brokers.
    drop(readers);
    match found {
        Some((queue, addr, message)) => {
            if let Some(group) = &request.group {
                let next = message.queue_offset + 1;
                rpc::commit_offset(ctx, &addr, group, &queue.topic, queue.queue_id, next).await?;
            }
            Ok(Some(message))
        }
        None => first_error.map_or(Ok(None), Err),
    }
}

/// Where to read `queue` from: the group's committed offset, else the first or next offset.
async fn start_offset(
    ctx: &IoContext,
    addr: &str,
    request: &ConsumeOne,
    queue: &MessageQueue,
) -> Result<i64> {
    if let Some(group) = &request.group
        && let Some(committed) =
            rpc::committed_offset(ctx, addr, group, &queue.topic, queue.queue_id).await?
    {
        return Ok(committed);
    }
    let code = match request.from {
        ConsumeFrom::First => RequestCode::GetMinOffset,
        ConsumeFrom::Last => RequestCode::GetMaxOffset,
    };
    rpc::queue_offset(ctx, addr, code, &queue.topic, queue.queue_id).await
}

/// Long-polls one queue until a message arrives, the deadline passes or a request fails.
async fn read_queue(
    ctx: std::rc::Rc<IoContext>,
    queue: MessageQueue,
    addr: String,
    mut offset: i64,
    deadline: Instant,
    found: flume::Sender<Found>,
) {
    let group = ADMIN_GROUP;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return;
        }
        let suspend = remaining.min(MAX_SUSPEND);
        match rpc::pull(&ctx, &addr, group, &queue, offset, 1, suspend).await {
            Ok(pulled) => {
                if let Some(message) = pulled.messages.into_iter().next() {
                    let _ = found.send(Ok((queue, addr, message)));
                    return;
                }
                // Nothing yet, or the offset moved: continue where the broker says.
                offset = pulled.next_begin_offset;
            }
            Err(ClientError::Timeout { .. }) if Instant::now() >= deadline => return,
            Err(error) => {
                let _ = found.send(Err(error));
                return;
            }
        }
    }
}

/// A client-side unique message id (`UNIQ_KEY`, what Java returns as `msgId`): IPv4 address,
/// process id, a hash of the client id, the time in ms (low 32 bits) and a counter, as 32
/// upper-case hex characters (PROTOCOL.md §5.6; opaque to brokers).
fn unique_id(client_id: &str) -> String {
    static COUNTER: AtomicU16 = AtomicU16::new(0);
    let ip = client_id
        .split('@')
        .next()
        .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST);
    // FNV-1a of the client id: distinguishes instances of one process.
    let hash = client_id.bytes().fold(0x811c_9dc5_u32, |h, byte| {
        (h ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&ip.octets());
    bytes.extend_from_slice(&(std::process::id() as u16).to_be_bytes());
    bytes.extend_from_slice(&hash.to_be_bytes());
    bytes.extend_from_slice(&(now_ms() as u32).to_be_bytes());
    bytes.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    let mut id = String::with_capacity(32);
    for byte in bytes {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0xF)]));
    }
    id
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_ids_are_distinct_hex_of_the_documented_length() {
        let first = unique_id("10.1.2.3@42#0");
        let second = unique_id("10.1.2.3@42#0");
        assert_eq!(first.len(), 32);
        assert_ne!(first, second);
        assert!(first.starts_with("0A010203"), "{first}");
        assert!(
            first
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        );
    }
}
