//! PULL_MESSAGE (docs/protocol.md §3.5): filtering by tags hash, the store-status mapping, the
//! commit-offset flag and long polling.

use std::{rc::Rc, time::Duration};

use bytes::BytesMut;
use ringmq_protocol::{
    Command, CommandHead, ResponseCode,
    body::perm,
    encode_frame_head,
    header::{PullMessageRequestHeader, PullMessageResponseHeader},
};
use ringmq_storage::{ReadRequest, ReadResult, ReadStatus};

use super::{Handled, bad_header, error};
use crate::{
    clients::Filter,
    config::BrokerRole,
    longpoll::Wake,
    messages::{FrameKind, Origin, Outbound},
    shard::context::ShardCtx,
    topics::QueueLayout,
};

/// Most messages one pull returns (RocketMQ `maxTransferCountOnMessageInMemory`).
const MAX_PULL_MESSAGES: i32 = 32;
/// Most bytes one pull returns (RocketMQ `maxTransferBytesOnMessageInMemory`).
const MAX_PULL_BYTES: u64 = 256 << 10;
/// Longest hold of a parked pull, whatever the client asks (clients time out at 30 s).
const MAX_SUSPEND: Duration = Duration::from_secs(25);

pub(super) async fn pull(ctx: &Rc<ShardCtx>, command: &Command, origin: &Origin) -> Handled {
    let header: PullMessageRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return bad_header(command, &err),
    };
    let Some(topic_config) = readable_layout(ctx, header.topic, header.queue_id) else {
        return error(
            command,
            ResponseCode::TopicNotExist,
            &format!("topic[{}] not exist, apply first please!", header.topic),
        );
    };
    if !perm::is_readable(topic_config.perm) {
        return error(
            command,
            ResponseCode::NoPermission,
            &format!("the topic[{}] pulling message is forbidden", header.topic),
        );
    }
    if header.queue_id < 0 || header.queue_id >= topic_config.read_queue_nums {
        return error(
            command,
            ResponseCode::SystemError,
            &format!(
                "queueId[{}] is illegal, topic:[{}] topicConfig.readQueueNums:[{}] consumer:[{}]",
                header.queue_id, header.topic, topic_config.read_queue_nums, origin.peer
            ),
        );
    }
    let filter = match subscription(ctx, command, &header) {
        Ok(filter) => filter,
        Err(answer) => return answer,
    };
    if header.has_commit_offset() && ctx.shared.config.broker_role != BrokerRole::Slave {
        ctx.commit_offset(
            header.consumer_group,
            header.topic,
            header.queue_id,
            header.commit_offset,
        );
    }
    let max_messages = header.max_msg_nums.clamp(1, MAX_PULL_MESSAGES) as u32;
    let max_bytes = header
        .max_msg_bytes
        .filter(|&b| b > 0)
        .map_or(MAX_PULL_BYTES, |b| (b as u64).min(MAX_PULL_BYTES));
    let offset = header.queue_offset.max(0) as u64;
    let request = ReadRequest {
        topic: header.topic,
        queue_id: header.queue_id,
        offset,
        max_messages,
        max_bytes,
        tags_hashes: filter.tags_hashes.as_deref(),
    };
    let mut result = match ctx.store.read(&request).await {
        Ok(result) => result,
        Err(err) => return error(command, ResponseCode::SystemError, &err.to_string()),
    };
    let is_slave = ctx.shared.config.broker_role == BrokerRole::Slave;
    if header.is_suspend()
        && (is_not_found(&result, header.queue_offset)
            || is_slave_behind(is_slave, &result, header.queue_offset))
    {
        let config = &ctx.shared.config;
        let hold = if config.long_polling {
            Duration::from_millis(header.suspend_timeout_ms.max(0) as u64).min(MAX_SUSPEND)
        } else {
            Duration::from_millis(config.short_polling_ms)
        };
        if !hold.is_zero() {
            let wake = ctx.longpoll.park(header.topic, header.queue_id, hold).await;
            if wake == Wake::Arrived || result.status == ReadStatus::NoSuchQueue {
                result = match ctx.store.read(&request).await {
                    Ok(result) => result,
                    Err(err) => return error(command, ResponseCode::SystemError, &err.to_string()),
                };
            }
        }
    }
    respond(ctx, command, header.queue_offset, result)
}

/// The layout a pull is checked against: the topic table's, or on a slave, for a queue its
/// store holds but its table does not list yet, one readable layout that covers the queue.
///
/// A slave learns the master's topic table only at its next metadata sync, but every message it
/// holds is one the master may already have acknowledged (SYNC_MASTER waits for exactly that):
/// the replicated log itself proves the queue exists, so the slave serves it at once rather
/// than answering TOPIC_NOT_EXIST until the sync (or, with the master dead, forever).
fn readable_layout(ctx: &ShardCtx, topic: &str, queue_id: i32) -> Option<QueueLayout> {
    let listed = ctx.topics.with(&ctx.shared.topics, |t| t.layout(topic));
    let covers = listed.is_some_and(|layout| queue_id >= 0 && queue_id < layout.read_queue_nums);
    if covers || ctx.shared.config.broker_role != BrokerRole::Slave {
        return listed;
    }
    ctx.store
        .queue_offsets(topic, queue_id)
        .map(|_| QueueLayout {
            perm: listed.map_or(perm::READ | perm::WRITE, |layout| layout.perm),
            read_queue_nums: queue_id + 1,
            write_queue_nums: queue_id + 1,
        })
        .or(listed)
}

/// The filter of this pull: its own expression, or the one its group registered by heartbeat.
fn subscription(
    ctx: &ShardCtx,
    command: &Command,
    header: &PullMessageRequestHeader<'_>,
) -> Result<Filter, Handled> {
    if header.has_subscription() {
        let expression = header.subscription.unwrap_or("*");
        return Filter::from_expression(expression, header.expression_type, header.sub_version)
            .ok_or_else(|| {
                error(
                    command,
                    ResponseCode::SystemError,
                    "The broker does not support consumer to filter message by SQL92",
                )
            });
    }
    let registered = ctx.subscriptions.with(&ctx.shared.subscriptions, |table| {
        table
            .get(header.consumer_group)
            .map(|topics| topics.get(header.topic).cloned())
    });
    match registered {
        None => Err(error(
            command,
            ResponseCode::SubscriptionNotExist,
            &format!(
                "the consumer's group info not exist, group: {}",
                header.consumer_group
            ),
        )),
        Some(None) => Err(error(
            command,
            ResponseCode::SubscriptionNotExist,
            &format!(
                "the consumer's subscription not exist, topic: {}",
                header.topic
            ),
        )),
        Some(Some(filter)) if filter.sub_version < header.sub_version => Err(error(
            command,
            ResponseCode::SubscriptionNotLatest,
            "the consumer's subscription not latest",
        )),
        Some(Some(filter)) => Ok(filter),
    }
}

/// A slave asked for an offset it does not hold yet: its copy is behind the master (whose
/// offset the consumer has). It parks and answers PULL_NOT_FOUND at the same offset, as for
/// "nothing new": never OFFSET_MOVED (RocketMQ's `offsetCheckInSlave=false`), and never an
/// immediate retry, which a consumer would repeat in a tight loop.
fn is_slave_behind(is_slave: bool, result: &ReadResult, requested: i64) -> bool {
    is_slave
        && match result.status {
            ReadStatus::OffsetOverflow => true,
            ReadStatus::NoSuchQueue | ReadStatus::NoMessageInQueue => requested > 0,
            _ => false,
        }
}

/// Whether the result maps to PULL_NOT_FOUND (the case a suspended pull parks on).
fn is_not_found(result: &ReadResult, requested: i64) -> bool {
    match result.status {
        ReadStatus::NoNewMessage => true,
        ReadStatus::NoSuchQueue | ReadStatus::NoMessageInQueue => requested == 0,
        _ => false,
    }
}

/// Which broker of the group the consumer should pull from next (docs/protocol.md §8.5): the
/// master (0), unless `slaveReadEnable` is on and the consumer reads far enough behind the
/// log's end that the master would rather it read from slave 1.
fn suggest_broker(ctx: &ShardCtx, result: &ReadResult) -> i64 {
    /// Where PHYSICALOFFSET sits in a stored record (docs/protocol.md §5.4).
    const PHYSICAL_OFFSET_AT: usize = 28;
    let config = &ctx.shared.config;
    if !config.slave_read_enable {
        return 0;
    }
    let Some(first) = result
        .records
        .first()
        .and_then(|r| r.get(PHYSICAL_OFFSET_AT..PHYSICAL_OFFSET_AT + 8))
    else {
        return 0;
    };
    let mut offset = [0u8; 8];
    offset.copy_from_slice(first);
    let behind = ctx
        .store
        .physical_range()
        .1
        .saturating_sub(u64::from_be_bytes(offset));
    i64::from(behind > config.slave_read_lag_bytes)
}

/// The PULL answer for a store result (the table of docs/protocol.md §3.5 step 4).
fn respond(ctx: &ShardCtx, command: &Command, requested: i64, result: ReadResult) -> Handled {
    let (code, next, remark) = match result.status {
        ReadStatus::Found => (ResponseCode::Success, result.next_offset as i64, "FOUND"),
        ReadStatus::NoMatchedMessage => (
            ResponseCode::PullRetryImmediately,
            result.next_offset as i64,
            "NO_MATCHED_MESSAGE",
        ),
        ReadStatus::NoSuchQueue | ReadStatus::NoMessageInQueue => {
            let remark = if result.status == ReadStatus::NoSuchQueue {
                "NO_MATCHED_LOGIC_QUEUE"
            } else {
                "NO_MESSAGE_IN_QUEUE"
            };
            if requested == 0 {
                (ResponseCode::PullNotFound, 0, remark)
            } else {
                (ResponseCode::PullOffsetMoved, 0, remark)
            }
        }
        ReadStatus::OffsetTooSmall => (
            ResponseCode::PullOffsetMoved,
            result.min_offset as i64,
            "OFFSET_TOO_SMALL",
        ),
        ReadStatus::NoNewMessage => (ResponseCode::PullNotFound, requested, "OFFSET_OVERFLOW_ONE"),
        ReadStatus::OffsetOverflow => (
            ResponseCode::PullOffsetMoved,
            result.max_offset as i64,
            "OFFSET_OVERFLOW_BADLY",
        ),
    };
    let is_slave = ctx.shared.config.broker_role == BrokerRole::Slave;
    let (code, next, remark) = if is_slave_behind(is_slave, &result, requested) {
        (ResponseCode::PullNotFound, requested, "SLAVE_BEHIND")
    } else {
        (code, next, remark)
    };
    let header = PullMessageResponseHeader {
        suggest_which_broker_id: suggest_broker(ctx, &result),
        next_begin_offset: next,
        min_offset: result.min_offset as i64,
        max_offset: result.max_offset as i64,
    };
    let body_bytes = result.record_bytes();
    let mut head = BytesMut::with_capacity(192);
    encode_frame_head(
        &CommandHead::response_to(command, code).with_remark(remark),
        &header,
        body_bytes,
        &mut head,
    );
    ctx.metrics()
        .messages_delivered_total
        .add(result.records.len() as u64);
    Handled::Reply(Outbound {
        head,
        body: result.records,
        kind: FrameKind::Response(code),
    })
}
