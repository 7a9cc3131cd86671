//! Client registration (docs/protocol.md §3.7) and ordered-consumption locks (§3.10).

use std::{
    rc::Rc,
    time::{Duration, Instant},
};

use ringmq_protocol::{
    Command, ResponseCode,
    body::{
        self, CheckClientRequestBody, ConsumerListBody, HeartbeatData, LockBatchRequestBody,
        LockBatchResponseBody,
    },
    header::{GetConsumerListByGroupRequestHeader, UnregisterClientRequestHeader},
    topic::validate_topic,
};

use super::{Handled, bad_header, error, reply, send::ensure_topic, success};
use crate::{messages::Origin, shard::context::ShardCtx, topics};

/// Lease of a queue lock (RocketMQ `rocketmq.broker.rebalance.lockMaxLiveTime`: 60 s).
const LOCK_LEASE: Duration = Duration::from_secs(60);

pub(super) async fn heartbeat(ctx: &Rc<ShardCtx>, command: &Command, origin: &Origin) -> Handled {
    let data: HeartbeatData = match body::decode(&command.body, "HeartbeatData") {
        Ok(data) => data,
        Err(err) => {
            // The client cannot consume until a heartbeat is accepted: say why in the log too.
            tracing::warn!(%err, "heartbeat refused");
            return error(command, ResponseCode::SystemError, &err.to_string());
        }
    };
    for consumer in &data.consumer_data_set {
        if validate_topic(&topics::retry_topic(&consumer.group_name)).is_err() {
            return error(
                command,
                ResponseCode::SystemError,
                &format!("invalid consumer group name: {}", consumer.group_name),
            );
        }
        let retry = topics::single_queue_topic(&topics::retry_topic(&consumer.group_name));
        if let Err(reason) = ensure_topic(ctx, retry).await {
            return error(command, ResponseCode::SystemError, &reason.to_string());
        }
    }
    let channel = origin.channel;
    ctx.shared
        .with_clients(|clients| ((), clients.heartbeat(channel, &data, Instant::now())));
    success(command)
}

pub(super) fn unregister(ctx: &ShardCtx, command: &Command, origin: &Origin) -> Handled {
    let header: UnregisterClientRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return bad_header(command, &err),
    };
    let channel = origin.channel;
    ctx.shared.with_clients(|clients| {
        (
            (),
            clients.unregister(channel, header.producer_group, header.consumer_group),
        )
    });
    success(command)
}

pub(super) fn consumer_list(ctx: &ShardCtx, command: &Command) -> Handled {
    let header: GetConsumerListByGroupRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return bad_header(command, &err),
    };
    let ids = ctx
        .shared
        .with_clients(|clients| (clients.consumer_ids(header.consumer_group), Vec::new()));
    match ids {
        Some(consumer_id_list) if !consumer_id_list.is_empty() => {
            let body = body::to_vec(&ConsumerListBody { consumer_id_list });
            reply(command, ResponseCode::Success, None, &(), &body)
        }
        _ => error(
            command,
            ResponseCode::SystemError,
            &format!("no consumer for this group, {}", header.consumer_group),
        ),
    }
}

pub(super) fn lock(ctx: &ShardCtx, command: &Command) -> Handled {
    let request: LockBatchRequestBody = match body::decode(&command.body, "LockBatchRequestBody") {
        Ok(request) => request,
        Err(err) => return error(command, ResponseCode::SystemError, &err.to_string()),
    };
    let locked = ctx.shared.locks().lock(
        &request.consumer_group,
        &request.client_id,
        &request.mq_set,
        Instant::now(),
        LOCK_LEASE,
    );
    let body = body::to_vec(&LockBatchResponseBody {
        lock_ok_mq_set: locked,
    });
    reply(command, ResponseCode::Success, None, &(), &body)
}

pub(super) fn unlock(ctx: &ShardCtx, command: &Command) -> Handled {
    let request: LockBatchRequestBody = match body::decode(&command.body, "UnlockBatchRequestBody")
    {
        Ok(request) => request,
        Err(err) => return error(command, ResponseCode::SystemError, &err.to_string()),
    };
    ctx.shared
        .locks()
        .unlock(&request.consumer_group, &request.client_id, &request.mq_set);
    success(command)
}

/// CHECK_CLIENT_CONFIG: TAG subscriptions are fine; SQL92 filtering is not supported.
pub(super) fn check_client_config(command: &Command) -> Handled {
    let request: CheckClientRequestBody =
        match body::decode(&command.body, "CheckClientRequestBody") {
            Ok(request) => request,
            Err(err) => return error(command, ResponseCode::SystemError, &err.to_string()),
        };
    if request.subscription_data.is_tag_type() {
        success(command)
    } else {
        error(
            command,
            ResponseCode::SystemError,
            "The broker does not support consumer to filter message by SQL92",
        )
    }
}
