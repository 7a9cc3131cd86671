//! Consumer offsets and queue offsets (docs/protocol.md §3.6). All run on the shard owning the queue.

use ringmq_protocol::{
    Command, ResponseCode,
    header::{
        GetEarliestMsgStoretimeResponseHeader, OffsetResponseHeader,
        QueryConsumerOffsetRequestHeader, QueueRequestHeader, SearchOffsetRequestHeader,
        UpdateConsumerOffsetRequestHeader,
    },
};

use super::{Handled, bad_header, error, reply, success};
use crate::shard::context::ShardCtx;

fn offset_answer(command: &Command, offset: i64) -> Handled {
    reply(
        command,
        ResponseCode::Success,
        None,
        &OffsetResponseHeader { offset },
        &[],
    )
}

pub(super) fn query_consumer_offset(ctx: &ShardCtx, command: &Command) -> Handled {
    let header: QueryConsumerOffsetRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return bad_header(command, &err),
    };
    let committed = ctx
        .offsets
        .borrow()
        .query(header.consumer_group, header.topic, header.queue_id)
        .filter(|&offset| offset >= 0);
    if let Some(offset) = committed {
        return offset_answer(command, offset);
    }
    // No committed offset: a queue that still holds its first message starts the group at 0
    // (RocketMQ's rule); otherwise the client decides (QUERY_NOT_FOUND).
    let min_offset = ctx
        .store
        .queue_offsets(header.topic, header.queue_id)
        .map_or(0, |offsets| offsets.min_offset);
    if min_offset == 0 && header.set_zero_if_not_found != Some(false) {
        return offset_answer(command, 0);
    }
    error(
        command,
        ResponseCode::QueryNotFound,
        "Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first",
    )
}

pub(super) fn update_consumer_offset(ctx: &ShardCtx, command: &Command) -> Handled {
    let header: UpdateConsumerOffsetRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return bad_header(command, &err),
    };
    ctx.commit_client_offset(
        header.consumer_group,
        header.topic,
        header.queue_id,
        header.commit_offset,
        header.only_forward == Some(true),
    );
    success(command)
}

pub(super) fn max_offset(ctx: &ShardCtx, command: &Command) -> Handled {
    let header: QueueRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return bad_header(command, &err),
    };
    let offsets = ctx.store.queue_offsets(header.topic, header.queue_id);
    offset_answer(command, offsets.map_or(0, |o| o.max_offset as i64))
}

pub(super) fn min_offset(ctx: &ShardCtx, command: &Command) -> Handled {
    let header: QueueRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return bad_header(command, &err),
    };
    let offsets = ctx.store.queue_offsets(header.topic, header.queue_id);
    offset_answer(command, offsets.map_or(0, |o| o.min_offset as i64))
}

pub(super) async fn search_offset(ctx: &ShardCtx, command: &Command) -> Handled {
    let header: SearchOffsetRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return bad_header(command, &err),
    };
    match ctx
        .store
        .search_offset_by_time(header.topic, header.queue_id, header.timestamp_ms)
        .await
    {
        Ok(found) => offset_answer(command, found.map_or(0, |o| o as i64)),
        Err(err) => error(command, ResponseCode::SystemError, &err.to_string()),
    }
}

pub(super) async fn earliest_store_time(ctx: &ShardCtx, command: &Command) -> Handled {
    let header: QueueRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return bad_header(command, &err),
    };
    match ctx
        .store
        .earliest_store_time(header.topic, header.queue_id)
        .await
    {
        Ok(time) => reply(
            command,
            ResponseCode::Success,
            None,
            &GetEarliestMsgStoretimeResponseHeader {
                timestamp_ms: time.unwrap_or(-1),
            },
            &[],
        ),
        Err(err) => error(command, ResponseCode::SystemError, &err.to_string()),
    }
}
