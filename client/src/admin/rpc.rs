//! The requests the admin operations are made of, one function per command, each turning a
//! refusal into [`ClientError::Broker`] (code and remark kept) and an undecodable answer into
//! [`ClientError::BadResponse`].

use std::collections::BTreeMap;
use std::time::Duration;

use ringmq_protocol::body::{self, ClusterInfo, KvTable};
use ringmq_protocol::header::{
    OffsetResponseHeader, PullMessageRequestHeader, QueryConsumerOffsetRequestHeader,
    QueueRequestHeader, pull_sys_flag,
};
use ringmq_protocol::{Command, EncodeExt, RequestCode, ResponseCode};
use serde::de::DeserializeOwned;

use crate::error::{ClientError, Result};
use crate::instance::IoContext;
use crate::message::{MessageDecodeError, MessageQueue, ReceivedMessage};
use crate::remoting::expect_success;

/// Sends a request to `addr` and insists on SUCCESS.
pub(super) async fn call<E: EncodeExt>(
    ctx: &IoContext,
    addr: &str,
    code: RequestCode,
    header: &E,
    request_body: &[u8],
) -> Result<Command> {
    call_with_timeout(ctx, addr, code, header, request_body, ctx.timeout()).await
}

/// [`call`] with an explicit limit (long-polling pulls wait longer than a request).
pub(super) async fn call_with_timeout<E: EncodeExt>(
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
pub(super) fn json<T: DeserializeOwned>(
    answer: &Command,
    addr: &str,
    code: RequestCode,
    name: &'static str,
) -> Result<T> {
    body::decode(&answer.body, name).map_err(|error| ClientError::bad_body(addr, code, &error))
}

/// Asks the NameServers (failing over between them) and insists on SUCCESS; the answer and the
/// address of the NameServer that gave it.
pub(super) async fn namesrv_call<E: EncodeExt>(
    ctx: &IoContext,
    code: RequestCode,
    header: &E,
) -> Result<(String, Command)> {
    let (addr, answer) = ctx
        .routes
        .namesrv_request(
            &ctx.pool,
            code,
            header,
            &[],
            std::time::Instant::now() + ctx.timeout(),
        )
        .await?;
    let answer = expect_success(answer, &addr, code)?;
    Ok((addr, answer))
}

/// GET_BROKER_CLUSTER_INFO from any NameServer.
pub(super) async fn cluster_info(ctx: &IoContext) -> Result<ClusterInfo> {
    let code = RequestCode::GetBrokerClusterInfo;
    let (addr, answer) = namesrv_call(ctx, code, &()).await?;
    json(&answer, &addr, code, "ClusterInfo")
}

/// GET_BROKER_RUNTIME_INFO: the broker's statistics table.
pub(super) async fn runtime_info(ctx: &IoContext, addr: &str) -> Result<BTreeMap<String, String>> {
    let code = RequestCode::GetBrokerRuntimeInfo;
    let answer = call(ctx, addr, code, &(), &[]).await?;
    let table: KvTable = json(&answer, addr, code, "KvTable")?;
    Ok(table.table)
}

/// GET_MIN_OFFSET or GET_MAX_OFFSET of one queue.
pub(super) async fn queue_offset(
    ctx: &IoContext,
    addr: &str,
    code: RequestCode,
    topic: &str,
    queue_id: i32,
) -> Result<i64> {
    let answer = call(
        ctx,
        addr,
        code,
        &QueueRequestHeader { topic, queue_id },
        &[],
    )
    .await?;
    let header: OffsetResponseHeader = answer
        .header()
        .map_err(|error| ClientError::bad_field(addr, code, &error))?;
    Ok(header.offset)
}

/// QUERY_CONSUMER_OFFSET: the group's committed offset, `None` when it has none.
///
/// The request asks the broker not to invent 0 for a group that never committed
/// (`setZeroIfNotFound=false`); brokers that ignore the field answer 0 for a queue whose first
/// message is still stored, which reads as "committed at 0", the same thing for progress.
pub(super) async fn committed_offset(
    ctx: &IoContext,
    addr: &str,
    group: &str,
    topic: &str,
    queue_id: i32,
) -> Result<Option<i64>> {
    let code = RequestCode::QueryConsumerOffset;
    let header = QueryConsumerOffsetRequestHeader {
        consumer_group: group,
        topic,
        queue_id,
        set_zero_if_not_found: Some(false),
    };
    let answer = ctx
        .pool
        .request(addr, code, &header, &[], ctx.timeout())
        .await?;
    if answer.response_code() == ResponseCode::QueryNotFound {
        return Ok(None);
    }
    let answer = expect_success(answer, addr, code)?;
    let header: OffsetResponseHeader = answer
        .header()
        .map_err(|error| ClientError::bad_field(addr, code, &error))?;
    Ok((header.offset >= 0).then_some(header.offset))
}

/// One PULL_MESSAGE of at most `max_messages` from `offset`, answered at once (no long
/// polling), with its own subscription (`*`, so no heartbeat is needed) and committing
/// nothing.
///
/// PULL_NOT_FOUND, PULL_RETRY_IMMEDIATELY and PULL_OFFSET_MOVED are answers, not errors: they
/// come back as no message.
pub(super) async fn pull(
    ctx: &IoContext,
    addr: &str,
    group: &str,
    queue: &MessageQueue,
    offset: i64,
    max_messages: i32,
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
    let answer = ctx
        .pool
        .request(addr, code, &header, &[], ctx.timeout())
        .await?;
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

/// The stored records of a PULL_MESSAGE, VIEW_MESSAGE_BY_ID or QUERY_MESSAGE answer.
pub(super) fn messages(
    answer: &Command,
    addr: &str,
    code: RequestCode,
) -> Result<Vec<ReceivedMessage>> {
    ReceivedMessage::decode_all(&answer.body).map_err(|error| match error {
        MessageDecodeError::Record(error) => ClientError::bad_record(addr, code, &error),
        other => ClientError::bad_response(addr, code, other.to_string()),
    })
}
