//! Typed requests: one function per broker or NameServer command the client sends outside the
//! send and pull hot paths, shared by the admin, the producer and (to switch) the consumers.
//!
//! Each takes the I/O context, the address to ask (broker requests) or a deadline (NameServer
//! requests, which fail over between NameServers), its arguments and a timeout, and returns a
//! typed result. Mapping, the same everywhere: a refusal is [`ClientError::Broker`] with the
//! answer's code and remark; an answer that does not decode is [`ClientError::BadResponse`];
//! transport failures come from the connection layer as they are.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringmq_protocol::body::{self, ClusterInfo, KvTable, TopicList};
use ringmq_protocol::header::{
    CreateTopicRequestHeader, DeleteTopicFromNamesrvRequestHeader, DeleteTopicRequestHeader,
    OffsetResponseHeader, PullMessageRequestHeader, QueryConsumerOffsetRequestHeader,
    QueryMessageRequestHeader, QueueRequestHeader, SearchOffsetRequestHeader,
    UpdateConsumerOffsetRequestHeader, ViewMessageRequestHeader, pull_sys_flag,
};
use ringmq_protocol::{Command, EncodeExt, RequestCode, ResponseCode};
use serde::de::DeserializeOwned;

use crate::error::{ClientError, Result};
use crate::instance::IoContext;
use crate::message::{MessageDecodeError, MessageQueue, ReceivedMessage};
use crate::remoting::expect_success;

/// Sends a request to `addr` and insists on SUCCESS.
pub(crate) async fn call<E: EncodeExt>(
    ctx: &IoContext,
    addr: &str,
    code: RequestCode,
    header: &E,
    request_body: &[u8],
    timeout: Duration,
) -> Result<Command> {
    let answer = ctx
        .pool
        .request(addr, code, header, request_body, timeout)
        .await?;
    expect_success(answer, addr, code)
}

/// Decodes a JSON body; `name` names the type in the error.
pub(crate) fn json<T: DeserializeOwned>(
    answer: &Command,
    addr: &str,
    code: RequestCode,
    name: &'static str,
) -> Result<T> {
    body::decode(&answer.body, name).map_err(|error| ClientError::bad_body(addr, code, &error))
}

/// Reads the `offset` field of an offset answer.
fn offset_of(answer: &Command, addr: &str, code: RequestCode) -> Result<i64> {
    let header: OffsetResponseHeader = answer
        .header()
        .map_err(|error| ClientError::bad_field(addr, code, &error))?;
    Ok(header.offset)
}

/// Asks the NameServers (failing over between them, all by `deadline`) and insists on
/// SUCCESS; the answer and the address of the NameServer that gave it.
pub(crate) async fn namesrv_call<E: EncodeExt>(
    ctx: &IoContext,
    code: RequestCode,
    header: &E,
    deadline: Instant,
) -> Result<(String, Command)> {
    let (addr, answer) = ctx
        .routes
        .namesrv_request(&ctx.pool, code, header, &[], deadline)
        .await?;
    let answer = expect_success(answer, &addr, code)?;
    Ok((addr, answer))
}

/// GET_BROKER_CLUSTER_INFO from any NameServer.
pub(crate) async fn cluster_info(ctx: &IoContext, timeout: Duration) -> Result<ClusterInfo> {
    let code = RequestCode::GetBrokerClusterInfo;
    let (addr, answer) = namesrv_call(ctx, code, &(), Instant::now() + timeout).await?;
    json(&answer, &addr, code, "ClusterInfo")
}

/// GET_ALL_TOPIC_LIST_FROM_NAMESERVER from any NameServer: sorted, once each.
pub(crate) async fn topic_list(ctx: &IoContext, timeout: Duration) -> Result<Vec<String>> {
    let code = RequestCode::GetAllTopicListFromNameserver;
    let (addr, answer) = namesrv_call(ctx, code, &(), Instant::now() + timeout).await?;
    let mut list: TopicList = json(&answer, &addr, code, "TopicList")?;
    list.topic_list.sort();
    list.topic_list.dedup();
    Ok(list.topic_list)
}

/// GET_BROKER_RUNTIME_INFO: the broker's statistics table.
pub(crate) async fn broker_runtime_info(
    ctx: &IoContext,
    addr: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, String>> {
    let code = RequestCode::GetBrokerRuntimeInfo;
    let answer = call(ctx, addr, code, &(), &[], timeout).await?;
    let table: KvTable = json(&answer, addr, code, "KvTable")?;
    Ok(table.table)
}

/// UPDATE_AND_CREATE_TOPIC on one broker.
pub(crate) async fn create_topic(
    ctx: &IoContext,
    addr: &str,
    header: &CreateTopicRequestHeader<'_>,
    timeout: Duration,
) -> Result<()> {
    call(
        ctx,
        addr,
        RequestCode::UpdateAndCreateTopic,
        header,
        &[],
        timeout,
    )
    .await
    .map(drop)
}

/// DELETE_TOPIC_IN_BROKER on one broker.
pub(crate) async fn delete_topic_in_broker(
    ctx: &IoContext,
    addr: &str,
    topic: &str,
    timeout: Duration,
) -> Result<()> {
    let header = DeleteTopicRequestHeader { topic };
    call(
        ctx,
        addr,
        RequestCode::DeleteTopicInBroker,
        &header,
        &[],
        timeout,
    )
    .await
    .map(drop)
}

/// DELETE_TOPIC_IN_NAMESRV on one NameServer (they do not share state: ask each).
pub(crate) async fn delete_topic_in_namesrv(
    ctx: &IoContext,
    addr: &str,
    topic: &str,
    cluster: Option<&str>,
    timeout: Duration,
) -> Result<()> {
    let header = DeleteTopicFromNamesrvRequestHeader {
        topic,
        cluster_name: cluster,
    };
    call(
        ctx,
        addr,
        RequestCode::DeleteTopicInNamesrv,
        &header,
        &[],
        timeout,
    )
    .await
    .map(drop)
}

/// The smallest offset still stored in a queue (GET_MIN_OFFSET).
pub(crate) async fn min_offset(
    ctx: &IoContext,
    addr: &str,
    topic: &str,
    queue_id: i32,
    timeout: Duration,
) -> Result<i64> {
    queue_end(
        ctx,
        addr,
        RequestCode::GetMinOffset,
        topic,
        queue_id,
        timeout,
    )
    .await
}

/// A queue's end: the offset its next stored message gets (GET_MAX_OFFSET).
pub(crate) async fn max_offset(
    ctx: &IoContext,
    addr: &str,
    topic: &str,
    queue_id: i32,
    timeout: Duration,
) -> Result<i64> {
    queue_end(
        ctx,
        addr,
        RequestCode::GetMaxOffset,
        topic,
        queue_id,
        timeout,
    )
    .await
}

/// GET_MIN_OFFSET or GET_MAX_OFFSET: same header, same answer.
async fn queue_end(
    ctx: &IoContext,
    addr: &str,
    code: RequestCode,
    topic: &str,
    queue_id: i32,
    timeout: Duration,
) -> Result<i64> {
    let header = QueueRequestHeader { topic, queue_id };
    let answer = call(ctx, addr, code, &header, &[], timeout).await?;
    offset_of(&answer, addr, code)
}

/// The offset of the first message stored at or after `timestamp_ms`
/// (SEARCH_OFFSET_BY_TIMESTAMP).
pub(crate) async fn search_offset(
    ctx: &IoContext,
    addr: &str,
    queue: &MessageQueue,
    timestamp_ms: i64,
    timeout: Duration,
) -> Result<i64> {
    let code = RequestCode::SearchOffsetByTimestamp;
    let header = SearchOffsetRequestHeader {
        topic: &queue.topic,
        queue_id: queue.queue_id,
        timestamp_ms,
    };
    let answer = call(ctx, addr, code, &header, &[], timeout).await?;
    offset_of(&answer, addr, code)
}

/// What QUERY_CONSUMER_OFFSET should answer for a group that never committed on a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfNotCommitted {
    /// QUERY_NOT_FOUND (`setZeroIfNotFound=false`): for tools reporting progress, where "no
    /// commit" and "committed at 0" differ.
    NotFound,
    /// The broker's default (the field left out): offset 0 when the queue's first message is
    /// still stored (in memory), else QUERY_NOT_FOUND — what Java's consumers ask, so a new
    /// group on a young topic starts at its beginning.
    BrokerDefault,
}

/// The group's committed offset of a queue (QUERY_CONSUMER_OFFSET); `None` when it has none
/// (QUERY_NOT_FOUND, or a stored negative offset: ali-ons may commit -1).
pub(crate) async fn query_consumer_offset(
    ctx: &IoContext,
    addr: &str,
    group: &str,
    queue: &MessageQueue,
    if_not_committed: IfNotCommitted,
    timeout: Duration,
) -> Result<Option<i64>> {
    let code = RequestCode::QueryConsumerOffset;
    let header = QueryConsumerOffsetRequestHeader {
        consumer_group: group,
        topic: &queue.topic,
        queue_id: queue.queue_id,
        set_zero_if_not_found: match if_not_committed {
            IfNotCommitted::NotFound => Some(false),
            IfNotCommitted::BrokerDefault => None,
        },
    };
    let answer = ctx.pool.request(addr, code, &header, &[], timeout).await?;
    if answer.response_code() == ResponseCode::QueryNotFound {
        return Ok(None);
    }
    let answer = expect_success(answer, addr, code)?;
    let offset = offset_of(&answer, addr, code)?;
    Ok((offset >= 0).then_some(offset))
}

/// Stores the group's offset of a queue (UPDATE_CONSUMER_OFFSET; the queue's master).
pub(crate) async fn update_consumer_offset(
    ctx: &IoContext,
    addr: &str,
    group: &str,
    queue: &MessageQueue,
    offset: i64,
    timeout: Duration,
) -> Result<()> {
    let header = UpdateConsumerOffsetRequestHeader {
        consumer_group: group,
        topic: &queue.topic,
        queue_id: queue.queue_id,
        commit_offset: offset,
        only_forward: None,
    };
    call(
        ctx,
        addr,
        RequestCode::UpdateConsumerOffset,
        &header,
        &[],
        timeout,
    )
    .await
    .map(drop)
}

/// One PULL_MESSAGE of at most `max_messages` from `offset`, answered at once (no long
/// polling), with its own subscription (`*`, so no heartbeat is needed) and committing
/// nothing: for tools, not consumers.
///
/// PULL_NOT_FOUND, PULL_RETRY_IMMEDIATELY and PULL_OFFSET_MOVED are answers, not errors: they
/// come back as no message.
pub(crate) async fn pull_now(
    ctx: &IoContext,
    addr: &str,
    group: &str,
    queue: &MessageQueue,
    offset: i64,
    max_messages: i32,
    timeout: Duration,
) -> Result<Vec<ReceivedMessage>> {
    let code = RequestCode::PullMessage;
    let header = PullMessageRequestHeader {
        consumer_group: group,
        topic: &queue.topic,
        queue_id: queue.queue_id,
        queue_offset: offset,
        max_msg_nums: max_messages,
        sys_flag: pull_sys_flag::build(false, false, true),
        commit_offset: 0,
        suspend_timeout_ms: 0,
        subscription: Some("*"),
        sub_version: 0,
        expression_type: Some("TAG"),
        max_msg_bytes: None,
    };
    let answer = ctx.pool.request(addr, code, &header, &[], timeout).await?;
    match answer.response_code() {
        ResponseCode::Success => messages(&answer, addr, code),
        ResponseCode::PullNotFound
        | ResponseCode::PullRetryImmediately
        | ResponseCode::PullOffsetMoved => Ok(Vec::new()),
        refused => Err(ClientError::broker(
            addr,
            code,
            refused,
            answer.remark.as_deref(),
        )),
    }
}

/// The message stored at commit-log offset `commit_log_offset` of the broker at `addr`
/// (VIEW_MESSAGE_BY_ID).
pub(crate) async fn view_message(
    ctx: &IoContext,
    addr: &str,
    commit_log_offset: i64,
    timeout: Duration,
) -> Result<ReceivedMessage> {
    let code = RequestCode::ViewMessageById;
    let header = ViewMessageRequestHeader {
        offset: commit_log_offset,
    };
    let answer = call(ctx, addr, code, &header, &[], timeout).await?;
    messages(&answer, addr, code)?
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::bad_response(addr, code, "SUCCESS without a message"))
}

/// The messages one broker's index finds for a key (QUERY_MESSAGE); none is an empty list.
/// The index answers by hash: callers re-check the key.
pub(crate) async fn query_message(
    ctx: &IoContext,
    addr: &str,
    header: &QueryMessageRequestHeader<'_>,
    timeout: Duration,
) -> Result<Vec<ReceivedMessage>> {
    let code = RequestCode::QueryMessage;
    let answer = ctx.pool.request(addr, code, header, &[], timeout).await?;
    if answer.response_code() == ResponseCode::QueryNotFound {
        return Ok(Vec::new());
    }
    let answer = expect_success(answer, addr, code)?;
    messages(&answer, addr, code)
}

/// The stored records of a PULL_MESSAGE, VIEW_MESSAGE_BY_ID or QUERY_MESSAGE answer.
pub(crate) fn messages(
    answer: &Command,
    addr: &str,
    code: RequestCode,
) -> Result<Vec<ReceivedMessage>> {
    ReceivedMessage::decode_all(&answer.body).map_err(|error| match error {
        MessageDecodeError::Record(error) => ClientError::bad_record(addr, code, &error),
        other => ClientError::bad_response(addr, code, other.to_string()),
    })
}
