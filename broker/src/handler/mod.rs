//! Request handling: where a request runs (routing), the handlers, and how answers travel back.
//!
//! A request that names a queue (send, pull, offsets) runs on the shard owning that queue; one
//! naming a message by physical offset runs on the shard whose log holds it; everything else
//! runs where it arrived. Requests for another shard, and answers for connections another shard
//! holds, go through the shard's batched hand-off (`crate::handoff`), whose bound pauses the
//! readers that feed a slow owner (backpressure) instead of growing a queue.

mod admin;
mod client;
mod offset;
mod pull;
mod send;

use std::rc::Rc;

use bytes::BytesMut;
use ringmq_protocol::{
    Command, CommandHead, EncodeExt, RequestCode, ResponseCode, encode_frame_head,
    header::{
        ConsumerSendMsgBackRequestHeader, PullMessageRequestHeader,
        QueryConsumerOffsetRequestHeader, QueueRequestHeader, SearchOffsetRequestHeader,
        SendMessageRequestHeader, UpdateConsumerOffsetRequestHeader, ViewMessageRequestHeader,
    },
};
use ringmq_storage::SHARD_SHIFT;

pub(crate) use admin::query_key_here;
pub(crate) use send::append_owned;

use crate::{
    messages::{FrameKind, Origin, Outbound},
    metrics::RequestKind,
    shard::context::ShardCtx,
    topics::owner_shard,
};

/// What a handler did with its request.
#[derive(Debug)]
pub(crate) enum Handled {
    /// The answer to send back.
    Reply(Outbound),
    /// Passed to the owning shard, which answers.
    Forwarded,
    /// A oneway request: nothing to send.
    NoReply,
}

/// Routes a request read on this shard: hands it to its owner, or runs it here.
pub(crate) fn dispatch(ctx: &Rc<ShardCtx>, command: Command, origin: Origin) {
    match owner(ctx, &command) {
        Some(shard) if shard != ctx.id => ctx.handoff.request(shard, command, origin),
        _ => spawn_request(ctx, command, origin),
    }
}

/// Runs a request on this shard in a task of its own.
///
/// Sends and pulls get futures sized for their own handler, so a send does not carry the size
/// of the largest handler. Each future is boxed before it is spawned: the runtime moves a task's
/// future several times on its way into the task slab, and a send's is kilobytes, so one copy
/// into the box replaces several (the moves were a few percent of a send's CPU in profiles).
pub(crate) fn spawn_request(ctx: &Rc<ShardCtx>, command: Command, origin: Origin) {
    let ctx = Rc::clone(ctx);
    let task = match command.request_code() {
        RequestCode::SendMessage | RequestCode::SendMessageV2 | RequestCode::SendBatchMessage => {
            compio::runtime::spawn(Box::pin(async move {
                let request = RequestInfo::of(&command);
                let handled = send::send(&ctx, command, &origin).await;
                answer(&ctx, &origin, request, handled);
            }))
        }
        RequestCode::PullMessage => compio::runtime::spawn(Box::pin(async move {
            let request = RequestInfo::of(&command);
            let handled = pull::pull(&ctx, &command, &origin).await;
            answer(&ctx, &origin, request, handled);
        })),
        _ => compio::runtime::spawn(Box::pin(async move {
            let request = RequestInfo::of(&command);
            let handled = handle(&ctx, command, &origin).await;
            answer(&ctx, &origin, request, handled);
        })),
    };
    task.detach();
}

/// What the answer to a request needs from it once the handler has consumed it.
#[derive(Debug, Clone, Copy)]
struct RequestInfo {
    oneway: bool,
    kind: RequestKind,
    opaque: i32,
    serialize_type: ringmq_protocol::SerializeType,
}

impl RequestInfo {
    fn of(command: &Command) -> Self {
        Self {
            oneway: command.is_oneway(),
            kind: kind_of(command.request_code()),
            opaque: command.opaque,
            serialize_type: command.serialize_type,
        }
    }
}

/// Counts a handled request and sends its answer back to its connection, on whichever shard.
fn answer(ctx: &ShardCtx, origin: &Origin, request: RequestInfo, handled: Handled) {
    let RequestInfo {
        oneway,
        kind,
        opaque,
        serialize_type,
    } = request;
    let frame = match handled {
        Handled::Reply(frame) => frame,
        Handled::Forwarded => return,
        Handled::NoReply if oneway => return,
        Handled::NoReply => {
            // Every two-way request gets exactly one answer: the connection counts them.
            tracing::error!(?kind, "a handler gave no answer to a two-way request");
            let head = CommandHead {
                code: ResponseCode::SystemError.as_i32(),
                language: ringmq_protocol::LanguageCode::Java,
                version: ringmq_protocol::command::CURRENT_VERSION,
                opaque,
                flag: ringmq_protocol::command::FLAG_RESPONSE,
                remark: Some("internal error: no answer"),
                serialize_type,
            };
            let mut buf = BytesMut::new();
            encode_frame_head(&head, &(), 0, &mut buf);
            Outbound {
                head: buf,
                body: Vec::new(),
                kind: FrameKind::Response(ResponseCode::SystemError),
            }
        }
    };
    let metrics = ctx.metrics();
    metrics.request(kind).inc();
    if let FrameKind::Response(code) = frame.kind
        && is_error(code)
    {
        metrics.request_errors_total.inc();
    }
    let elapsed = origin.arrived.elapsed();
    match kind {
        RequestKind::Send | RequestKind::SendBatch => metrics.send_latency.record(elapsed),
        RequestKind::Pull => metrics.pull_latency.record(elapsed),
        _ => {}
    }
    if oneway {
        return;
    }
    deliver(ctx, origin, frame);
}

/// Sends an answer to the connection the request came from, on whichever shard that is.
pub(crate) fn deliver(ctx: &ShardCtx, origin: &Origin, frame: Outbound) {
    if origin.channel.shard == ctx.id {
        ctx.deliver_local(origin.channel.connection, frame);
    } else {
        ctx.handoff
            .deliver(origin.channel.shard, origin.channel.connection, frame);
    }
}

/// The shard a request must run on, when it is bound to a queue or a message and its header
/// reads; `None` runs it where it arrived (which also answers a bad header there).
fn owner(ctx: &ShardCtx, command: &Command) -> Option<usize> {
    let shards = ctx.shared.shard_count();
    if shards == 1 {
        return None;
    }
    let queue = |topic: &str, queue_id: i32| Some(owner_shard(topic, queue_id, shards));
    match command.request_code() {
        RequestCode::SendMessage | RequestCode::SendMessageV2 | RequestCode::SendBatchMessage => {
            let header = SendMessageRequestHeader::from_command(command).ok()?;
            // A negative queue id (broker's choice) or an unknown topic is settled here first.
            if header.queue_id < 0 {
                return None;
            }
            ctx.topics
                .with(&ctx.shared.topics, |t| t.get(header.topic).is_some())
                .then_some(())?;
            queue(header.topic, header.queue_id)
        }
        RequestCode::PullMessage => {
            let header: PullMessageRequestHeader<'_> = command.header().ok()?;
            queue(header.topic, header.queue_id)
        }
        RequestCode::QueryConsumerOffset => {
            let header: QueryConsumerOffsetRequestHeader<'_> = command.header().ok()?;
            queue(header.topic, header.queue_id)
        }
        RequestCode::UpdateConsumerOffset => {
            let header: UpdateConsumerOffsetRequestHeader<'_> = command.header().ok()?;
            queue(header.topic, header.queue_id)
        }
        RequestCode::GetMaxOffset
        | RequestCode::GetMinOffset
        | RequestCode::GetEarliestMsgStoretime => {
            let header: QueueRequestHeader<'_> = command.header().ok()?;
            queue(header.topic, header.queue_id)
        }
        RequestCode::SearchOffsetByTimestamp => {
            let header: SearchOffsetRequestHeader<'_> = command.header().ok()?;
            queue(header.topic, header.queue_id)
        }
        RequestCode::ViewMessageById => {
            let header: ViewMessageRequestHeader = command.header().ok()?;
            shard_of_offset(header.offset, shards)
        }
        RequestCode::ConsumerSendMsgBack => {
            let header: ConsumerSendMsgBackRequestHeader<'_> = command.header().ok()?;
            shard_of_offset(header.offset, shards)
        }
        _ => None,
    }
}

/// The shard whose commit log holds `offset` (physical offsets carry it in their high bits).
pub(crate) fn shard_of_offset(offset: i64, shards: usize) -> Option<usize> {
    let shard = (offset.max(0) as u64 >> SHARD_SHIFT) as usize;
    (shard < shards).then_some(shard)
}

/// Runs a request. Every spawned request carries this future, so the cold handlers are boxed:
/// the task stays the size of the send path instead of the largest handler.
async fn handle(ctx: &Rc<ShardCtx>, command: Command, origin: &Origin) -> Handled {
    match command.request_code() {
        RequestCode::SendMessage | RequestCode::SendMessageV2 | RequestCode::SendBatchMessage => {
            send::send(ctx, command, origin).await
        }
        RequestCode::PullMessage => pull::pull(ctx, &command, origin).await,
        RequestCode::ConsumerSendMsgBack => Box::pin(send::send_back(ctx, &command)).await,
        RequestCode::QueryConsumerOffset => offset::query_consumer_offset(ctx, &command),
        RequestCode::UpdateConsumerOffset => offset::update_consumer_offset(ctx, &command),
        RequestCode::GetMaxOffset => offset::max_offset(ctx, &command),
        RequestCode::GetMinOffset => offset::min_offset(ctx, &command),
        RequestCode::SearchOffsetByTimestamp => {
            Box::pin(offset::search_offset(ctx, &command)).await
        }
        RequestCode::GetEarliestMsgStoretime => {
            Box::pin(offset::earliest_store_time(ctx, &command)).await
        }
        RequestCode::HeartBeat => Box::pin(client::heartbeat(ctx, &command, origin)).await,
        RequestCode::UnregisterClient => client::unregister(ctx, &command, origin),
        RequestCode::GetConsumerListByGroup => client::consumer_list(ctx, &command),
        RequestCode::LockBatchMq => client::lock(ctx, &command),
        RequestCode::UnlockBatchMq => client::unlock(ctx, &command),
        RequestCode::CheckClientConfig => client::check_client_config(&command),
        RequestCode::UpdateAndCreateTopic => Box::pin(admin::create_topic(ctx, &command)).await,
        RequestCode::DeleteTopicInBroker => Box::pin(admin::delete_topic(ctx, &command)).await,
        RequestCode::GetAllTopicConfig => admin::all_topic_config(ctx, &command),
        RequestCode::GetAllConsumerOffset => {
            Box::pin(admin::all_consumer_offset(ctx, &command)).await
        }
        RequestCode::GetBrokerRuntimeInfo => admin::runtime_info(ctx, &command),
        RequestCode::ViewMessageById => Box::pin(admin::view_message(ctx, &command)).await,
        RequestCode::QueryMessage => Box::pin(admin::query_message(ctx, &command)).await,
        _ => error(
            &command,
            ResponseCode::RequestCodeNotSupported,
            &format!(" request type {} not supported", command.code),
        ),
    }
}

fn kind_of(code: RequestCode) -> RequestKind {
    match code {
        RequestCode::SendMessage | RequestCode::SendMessageV2 => RequestKind::Send,
        RequestCode::SendBatchMessage => RequestKind::SendBatch,
        RequestCode::PullMessage => RequestKind::Pull,
        RequestCode::HeartBeat | RequestCode::UnregisterClient => RequestKind::Heartbeat,
        RequestCode::QueryConsumerOffset
        | RequestCode::UpdateConsumerOffset
        | RequestCode::GetMaxOffset
        | RequestCode::GetMinOffset
        | RequestCode::SearchOffsetByTimestamp
        | RequestCode::GetEarliestMsgStoretime => RequestKind::Offset,
        RequestCode::UpdateAndCreateTopic
        | RequestCode::DeleteTopicInBroker
        | RequestCode::GetAllTopicConfig
        | RequestCode::GetAllConsumerOffset
        | RequestCode::GetBrokerRuntimeInfo
        | RequestCode::ViewMessageById
        | RequestCode::QueryMessage => RequestKind::Admin,
        _ => RequestKind::Other,
    }
}

/// Bytes reserved for an answer's frame head: covers a send answer's JSON header.
const REPLY_HEAD_BYTES: usize = 384;

/// An answer with header fields and a body copied into the frame.
pub(crate) fn reply<E: EncodeExt>(
    command: &Command,
    code: ResponseCode,
    remark: Option<&str>,
    ext: &E,
    body: &[u8],
) -> Handled {
    // Room for a JSON send answer (~300 bytes) without growing: a realloc per answer showed
    // up in profiles.
    let mut head =
        BytesMut::with_capacity(REPLY_HEAD_BYTES + remark.map_or(0, str::len) + body.len());
    let mut response = CommandHead::response_to(command, code);
    response.remark = remark;
    encode_frame_head(&response, ext, body.len(), &mut head);
    head.extend_from_slice(body);
    Handled::Reply(Outbound {
        head,
        body: Vec::new(),
        kind: FrameKind::Response(code),
    })
}

/// Whether a response code reports a failure (pull statuses and "not found" are answers).
fn is_error(code: ResponseCode) -> bool {
    !matches!(
        code,
        ResponseCode::Success
            | ResponseCode::PullNotFound
            | ResponseCode::PullRetryImmediately
            | ResponseCode::PullOffsetMoved
            | ResponseCode::QueryNotFound
    )
}

/// A SUCCESS answer with no header fields or body.
pub(crate) fn success(command: &Command) -> Handled {
    if command.is_oneway() {
        return Handled::NoReply;
    }
    reply(command, ResponseCode::Success, None, &(), &[])
}

/// An error answer.
pub(crate) fn error(command: &Command, code: ResponseCode, remark: &str) -> Handled {
    if command.is_oneway() {
        tracing::debug!(code = %code, remark, "error on a oneway request");
        return Handled::NoReply;
    }
    reply(command, code, Some(remark), &(), &[])
}

/// The error answer for a header that does not read (names the field).
pub(crate) fn bad_header(command: &Command, err: &ringmq_protocol::FieldError) -> Handled {
    error(command, ResponseCode::SystemError, &err.to_string())
}
