//! SEND_MESSAGE, SEND_MESSAGE_V2, SEND_BATCH_MESSAGE (docs/protocol.md §3.4) and
//! CONSUMER_SEND_MSG_BACK (§3.8).

use std::{fmt::Write as _, net::SocketAddr, rc::Rc};

use bytes::Bytes;
use ringmq_protocol::{
    Command, ResponseCode,
    body::{TopicConfig, perm},
    header::{
        ConsumerSendMsgBackRequestHeader, SendMessageRequestHeader, SendMessageResponseHeader,
    },
    message::{
        BatchIter, MessageMagic, OffsetMessageId, Properties, PropertiesWriter, StoredRecord,
        properties::{NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR, keys},
        sys_flag,
    },
    topic::{RETRY_PREFIX, is_send_allowed, validate_topic},
};
use ringmq_storage::{AppendResult, StoreError};

use super::{Handled, bad_header, error, reply};
use crate::{
    config::BrokerRole,
    error::{AppendError, TopicEditError},
    ha::shard_side::wait_for_slave,
    messages::{Appended, Origin, OwnedRecord, ShardMessage},
    metadata,
    shard::context::ShardCtx,
    topics::{self, QueueLayout, owner_shard},
};

/// RocketMQ's default `retryMaxTimes` of a subscription group.
const DEFAULT_MAX_RECONSUME_TIMES: i32 = 16;
/// Region reported in send responses (Java's default `regionId`).
const REGION: &str = "DefaultRegion";

/// Finds (or auto-creates) the topic a request names. `Err` is the answer to send.
pub(super) async fn resolve_topic(
    ctx: &ShardCtx,
    command: &Command,
    topic: &str,
    template: &str,
    requested_queues: i32,
) -> Result<QueueLayout, Handled> {
    if let Some(config) = ctx.topics.with(&ctx.shared.topics, |t| t.layout(topic)) {
        return Ok(config);
    }
    Box::pin(create_on_send(
        ctx,
        command,
        topic,
        template,
        requested_queues,
    ))
    .await
}

/// The cold half of [`resolve_topic`]: auto-creation (boxed, so the send future stays small).
async fn create_on_send(
    ctx: &ShardCtx,
    command: &Command,
    topic: &str,
    template: &str,
    requested_queues: i32,
) -> Result<QueueLayout, Handled> {
    let creatable = if ctx.shared.config.auto_create_topic || topic.starts_with(RETRY_PREFIX) {
        let snapshot = ctx.topics();
        topics::auto_create_config(&snapshot, topic, template, requested_queues)
    } else {
        None
    };
    let Some(config) = creatable else {
        return Err(error(
            command,
            ResponseCode::TopicNotExist,
            &format!("topic[{topic}] not exist, apply first please!"),
        ));
    };
    ensure_topic(ctx, config)
        .await
        .map_err(|reason| error(command, ResponseCode::SystemError, &reason.to_string()))
}

/// Creates `config` unless its topic exists; returns the topic's config.
pub(super) async fn ensure_topic(
    ctx: &ShardCtx,
    config: TopicConfig,
) -> Result<QueueLayout, TopicEditError> {
    if let Some(existing) = ctx
        .topics
        .with(&ctx.shared.topics, |t| t.layout(&config.topic_name))
    {
        return Ok(existing);
    }
    let name = config.topic_name.clone();
    metadata::apply(&ctx.shared, config).await?;
    ctx.topics
        .with(&ctx.shared.topics, |t| t.layout(&name))
        .ok_or(TopicEditError::NotCreated(name))
}

pub(super) async fn send(ctx: &Rc<ShardCtx>, mut command: Command, origin: &Origin) -> Handled {
    let header = match SendMessageRequestHeader::from_command(&command) {
        Ok(header) => header,
        Err(err) => return bad_header(&command, &err),
    };
    let config = &ctx.shared.config;
    if config.broker_role == BrokerRole::Slave {
        // RocketMQ's store answers a put on a slave with SERVICE_NOT_AVAILABLE (§8.4), which
        // clients retry on another broker.
        return error(
            &command,
            ResponseCode::ServiceNotAvailable,
            "the broker is a slave: send messages to its master",
        );
    }
    if let Err(invalid) = validate_topic(header.topic) {
        return error(&command, ResponseCode::SystemError, &invalid.to_string());
    }
    if !is_send_allowed(header.topic) {
        return error(
            &command,
            ResponseCode::NoPermission,
            &format!("Sending message to topic[{}] is forbidden.", header.topic),
        );
    }
    if let Some((code, reason)) = unsupported_feature(&header) {
        return error(
            &command,
            code,
            &format!("the broker[{}] {reason}", config.broker_name),
        );
    }
    let topic_config = match resolve_topic(
        ctx,
        &command,
        header.topic,
        header.default_topic,
        header.default_topic_queue_nums,
    )
    .await
    {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    if !perm::is_writeable(topic_config.perm) {
        return error(
            &command,
            ResponseCode::NoPermission,
            &format!("the topic[{}] sending message is forbidden", header.topic),
        );
    }
    let queue_count = topic_config
        .read_queue_nums
        .max(topic_config.write_queue_nums);
    let mut queue_id = header.queue_id;
    if queue_id < 0 {
        queue_id = pick_queue(ctx, header.topic, topic_config.write_queue_nums);
    }
    if queue_id >= queue_count || queue_id < 0 {
        return error(
            &command,
            ResponseCode::SystemError,
            &format!(
                "request queueId[{}] is illegal, {:?} Producer: {}",
                header.queue_id, topic_config, origin.peer
            ),
        );
    }
    let owner = owner_shard(header.topic, queue_id, ctx.shared.shard_count());
    if owner != ctx.id {
        if queue_id != header.queue_id {
            let key = if command.ext.contains("e") {
                "e"
            } else {
                "queueId"
            };
            command.ext.insert(key, &queue_id.to_string());
        }
        ctx.handoff.request(owner, command, origin.clone());
        return Handled::Forwarded;
    }
    store_send(ctx, &command, &header, queue_id, origin).await
}

/// A send asking for a feature this broker does not implement yet, with the answer it gets.
///
/// Stored as an ordinary message, a half message would be delivered before its commit (and after
/// a rollback) and a delayed one at once; the sender is told instead and nothing is stored. The
/// transaction refusal is RocketMQ's own (`rejectTransactionMessage`: NO_PERMISSION). A delay on
/// a retry topic is accepted: it is a consumer's retry back-off (delivered at once, §3.8).
fn unsupported_feature(
    header: &SendMessageRequestHeader<'_>,
) -> Option<(ResponseCode, &'static str)> {
    if sys_flag::transaction_type(header.sys_flag) == sys_flag::TRANSACTION_PREPARED {
        return Some((
            ResponseCode::NoPermission,
            "sending transaction message is forbidden: transactional messages are not supported yet",
        ));
    }
    let properties = header.properties.unwrap_or_default();
    // A substring test first keeps the common send free of a property scan.
    if properties.contains(keys::DELAY) && !header.topic.starts_with(RETRY_PREFIX) {
        let level = Properties::new(properties).get(keys::DELAY);
        if level
            .and_then(|level| level.trim().parse::<i32>().ok())
            .unwrap_or(0)
            > 0
        {
            return Some((
                ResponseCode::MessageIllegal,
                "cannot store a delayed message: delay levels are not supported yet",
            ));
        }
    }
    None
}

/// Picks a writable queue for a send that leaves the choice to the broker, preferring queues
/// this shard owns (no hand-off).
fn pick_queue(ctx: &ShardCtx, topic: &str, write_queues: i32) -> i32 {
    let write_queues = write_queues.max(1);
    let start = ctx.queue_cursor.get();
    ctx.queue_cursor.set(start.wrapping_add(1));
    let shards = ctx.shared.shard_count();
    (0..write_queues)
        .map(|step| ((i64::from(start) + i64::from(step)) % i64::from(write_queues)) as i32)
        .find(|&queue| owner_shard(topic, queue, shards) == ctx.id)
        .unwrap_or((start % write_queues as u32) as i32)
}

async fn store_send(
    ctx: &Rc<ShardCtx>,
    command: &Command,
    header: &SendMessageRequestHeader<'_>,
    queue_id: i32,
    origin: &Origin,
) -> Handled {
    let config = &ctx.shared.config;
    // A retry topic message that has used up its attempts goes to the dead-letter topic.
    if let Some(group) = header.topic.strip_prefix(RETRY_PREFIX) {
        let max = header
            .max_reconsume_times
            .unwrap_or(DEFAULT_MAX_RECONSUME_TIMES);
        if header.reconsume_times.unwrap_or(0) >= max && !header.is_batch() {
            return Box::pin(dead_letter_send(ctx, command, header, group, origin)).await;
        }
    }
    let cluster = config.cluster_name.as_str();
    let store_host = ctx.shared.store_host;
    let result = if header.is_batch() {
        // Every message's properties in one buffer: two allocations per batch, not one per
        // message.
        let mut properties = String::new();
        let mut ends = Vec::new();
        for message in BatchIter::new(&command.body) {
            let message = match message {
                Ok(message) => message,
                Err(err) => {
                    return error(
                        command,
                        ResponseCode::MessageIllegal,
                        &format!("bad batch body: {err}"),
                    );
                }
            };
            if message.body.len() > config.max_message_bytes {
                return too_large(command, message.body.len(), config.max_message_bytes);
            }
            append_broker_properties(
                &mut properties,
                message.properties,
                header.properties,
                cluster,
            );
            ends.push(properties.len());
        }
        if ends.is_empty() {
            return error(command, ResponseCode::MessageIllegal, "empty batch");
        }
        let mut start = 0;
        let records: Vec<StoredRecord<'_>> = BatchIter::new(&command.body)
            .flatten()
            .zip(&ends)
            .map(|(message, &end)| {
                let props = &properties[start..end];
                start = end;
                StoredRecord {
                    flag: message.flag,
                    body: message.body,
                    properties: props,
                    ..record_template(header, queue_id, origin.peer, store_host)
                }
            })
            .collect();
        ctx.store
            .append_batch(&records)
            .await
            .map(|result| (result, lengths(&records)))
    } else {
        if command.body.len() > config.max_message_bytes {
            return too_large(command, command.body.len(), config.max_message_bytes);
        }
        let properties = with_broker_properties(header.properties.unwrap_or(""), None, cluster);
        let record = StoredRecord {
            flag: header.flag,
            body: &command.body,
            properties: &properties,
            ..record_template(header, queue_id, origin.peer, store_host)
        };
        ctx.store
            .append(&record)
            .await
            .map(|result| (result, Vec::new()))
    };
    match result {
        Ok((appended, lengths)) => {
            ctx.longpoll.arrived(header.topic, queue_id);
            ctx.metrics()
                .messages_stored_total
                .add(u64::from(appended.message_count));
            let mut code = ResponseCode::Success;
            if config.broker_role == BrokerRole::SyncMaster && waits_for_store(header) {
                let end = appended.physical_offset + appended.record_bytes;
                if let Err(slave_code) = Box::pin(wait_for_slave(ctx, end)).await {
                    ctx.metrics().slave_wait_failures_total.inc();
                    code = slave_code;
                }
            }
            send_response(ctx, command, queue_id, &appended, &lengths, code)
        }
        Err(err) => store_error(command, &err),
    }
}

fn lengths(records: &[StoredRecord<'_>]) -> Vec<u64> {
    records.iter().map(|r| r.encoded_len() as u64).collect()
}

/// The fields every record of a send shares; the store fills offsets, time and CRC.
fn record_template<'a>(
    header: &SendMessageRequestHeader<'a>,
    queue_id: i32,
    born_host: SocketAddr,
    store_host: SocketAddr,
) -> StoredRecord<'a> {
    StoredRecord {
        magic: MessageMagic::for_topic(header.topic),
        body_crc: 0,
        queue_id,
        flag: header.flag,
        queue_offset: 0,
        physical_offset: 0,
        sys_flag: header.sys_flag,
        born_timestamp_ms: header.born_timestamp_ms,
        born_host,
        store_timestamp_ms: 0,
        store_host,
        reconsume_times: header.reconsume_times.unwrap_or(0),
        prepared_transaction_offset: 0,
        body: &[],
        topic: header.topic,
        properties: "",
    }
}

/// A message's properties as stored: its own, the batch-level ones, and `CLUSTER`.
fn with_broker_properties(own: &str, batch_level: Option<&str>, cluster: &str) -> String {
    let mut out = String::with_capacity(own.len() + batch_level.map_or(0, str::len) + 32);
    append_broker_properties(&mut out, own, batch_level, cluster);
    out
}

/// Appends one message's stored properties to `out` (which may hold earlier messages'): the
/// message's own, the batch-level ones it does not override, and `CLUSTER`.
fn append_broker_properties(out: &mut String, own: &str, batch_level: Option<&str>, cluster: &str) {
    let start = out.len();
    out.push_str(own);
    let put = |out: &mut String, name: &str, value: &str| {
        let clean = |text: &str| {
            !text.is_empty() && !text.contains([NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR])
        };
        if !clean(name) || !clean(value) || Properties::new(own).get(name).is_some() {
            return;
        }
        if out.len() > start && !out.ends_with(PROPERTY_SEPARATOR) {
            out.push(PROPERTY_SEPARATOR);
        }
        out.push_str(name);
        out.push(NAME_VALUE_SEPARATOR);
        out.push_str(value);
    };
    if let Some(batch_level) = batch_level {
        for (name, value) in Properties::new(batch_level).iter() {
            put(out, name, value);
        }
    }
    put(out, keys::CLUSTER, cluster);
}

fn too_large(command: &Command, bytes: usize, max: usize) -> Handled {
    error(
        command,
        ResponseCode::MessageIllegal,
        &format!("the message body size over max value, MAX: {max}, got {bytes}"),
    )
}

/// Maps a store failure to what clients understand (docs/protocol.md §3.4).
pub(super) fn store_error(command: &Command, err: &StoreError) -> Handled {
    match err {
        StoreError::DiskFull { .. } | StoreError::WritesDisabled { .. } | StoreError::Closed => {
            error(
                command,
                ResponseCode::ServiceNotAvailable,
                &format!("service not available now: {err}"),
            )
        }
        StoreError::MessageTooLarge { .. }
        | StoreError::InvalidMessage(_)
        | StoreError::InvalidTopic { .. } => {
            error(command, ResponseCode::MessageIllegal, &err.to_string())
        }
        _ if err.is_disk_full() => error(
            command,
            ResponseCode::ServiceNotAvailable,
            &format!("service not available now: {err}"),
        ),
        _ => error(command, ResponseCode::SystemError, &err.to_string()),
    }
}

/// Whether the producer waits for the store (`WAIT` is not `false`): only then does a
/// SYNC_MASTER send wait for a slave (docs/protocol.md §8.4).
fn waits_for_store(header: &SendMessageRequestHeader<'_>) -> bool {
    header
        .properties
        .is_none_or(|properties| Properties::new(properties).get(keys::WAIT) != Some("false"))
}

/// The answer to a stored send: SUCCESS, or the SYNC_MASTER outcome (`code`) with the same
/// header, since the message is stored on the master either way.
fn send_response(
    ctx: &ShardCtx,
    command: &Command,
    queue_id: i32,
    appended: &AppendResult,
    lengths: &[u64],
    code: ResponseCode,
) -> Handled {
    let store_host = ctx.shared.store_host;
    let mut msg_id = String::with_capacity(33 * lengths.len().max(1));
    let id = |offset: u64| OffsetMessageId {
        store_host,
        commit_log_offset: offset as i64,
    };
    if lengths.is_empty() {
        id(appended.physical_offset).write_hex(&mut msg_id);
    } else {
        let mut offset = appended.physical_offset;
        for (index, length) in lengths.iter().enumerate() {
            if index > 0 {
                msg_id.push(',');
            }
            id(offset).write_hex(&mut msg_id);
            offset += length;
        }
    }
    let header = SendMessageResponseHeader {
        msg_id: &msg_id,
        queue_id,
        queue_offset: appended.queue_offset as i64,
        transaction_id: None,
        msg_region: Some(REGION),
        trace_on: Some("true"),
    };
    let remark = match code {
        ResponseCode::FlushSlaveTimeout => Some("no slave acknowledged the message in time"),
        ResponseCode::SlaveNotAvailable => Some("no slave is connected and caught up"),
        _ => None,
    };
    reply(command, code, remark, &header, &[])
}

/// A `%RETRY%` send past its attempts: store it in the group's dead-letter topic instead.
async fn dead_letter_send(
    ctx: &ShardCtx,
    command: &Command,
    header: &SendMessageRequestHeader<'_>,
    group: &str,
    origin: &Origin,
) -> Handled {
    let record = OwnedRecord {
        topic: topics::dlq_topic(group),
        queue_id: 0,
        flag: header.flag,
        sys_flag: header.sys_flag,
        born_timestamp_ms: header.born_timestamp_ms,
        born_host: origin.peer,
        reconsume_times: header.reconsume_times.unwrap_or(0),
        body: command.body.clone(),
        properties: with_broker_properties(
            header.properties.unwrap_or(""),
            None,
            &ctx.shared.config.cluster_name,
        ),
    };
    match store_elsewhere(ctx, record).await {
        Ok((queue_offset, physical_offset)) => {
            let mut msg_id = String::new();
            let _ = write!(
                msg_id,
                "{}",
                OffsetMessageId {
                    store_host: ctx.shared.store_host,
                    commit_log_offset: physical_offset,
                }
            );
            let header = SendMessageResponseHeader {
                msg_id: &msg_id,
                queue_id: 0,
                queue_offset: queue_offset as i64,
                transaction_id: None,
                msg_region: Some(REGION),
                trace_on: Some("true"),
            };
            reply(command, ResponseCode::Success, None, &header, &[])
        }
        Err(reason) => error(command, ResponseCode::SystemError, &reason.to_string()),
    }
}

/// Creates the record's topic if needed (one queue) and appends it on the shard owning its
/// queue. Returns (queue offset, physical offset).
async fn store_elsewhere(ctx: &ShardCtx, record: OwnedRecord) -> Result<Appended, AppendError> {
    ensure_topic(ctx, topics::single_queue_topic(&record.topic)).await?;
    let owner = owner_shard(&record.topic, record.queue_id, ctx.shared.shard_count());
    let (reply, answer) = flume::bounded(1);
    ctx.shared.inboxes[owner]
        .send_async(ShardMessage::Append { record, reply })
        .await
        .map_err(|_| AppendError::Stopping)?;
    answer
        .recv_async()
        .await
        .map_err(|_| AppendError::Stopping)?
}

/// Appends a record another shard built (runs on the owner of its queue).
pub(crate) async fn append_owned(
    ctx: Rc<ShardCtx>,
    record: OwnedRecord,
    reply: flume::Sender<Result<Appended, AppendError>>,
) {
    let stored = StoredRecord {
        magic: MessageMagic::for_topic(&record.topic),
        body_crc: 0,
        queue_id: record.queue_id,
        flag: record.flag,
        queue_offset: 0,
        physical_offset: 0,
        sys_flag: record.sys_flag,
        born_timestamp_ms: record.born_timestamp_ms,
        born_host: record.born_host,
        store_timestamp_ms: 0,
        store_host: ctx.shared.store_host,
        reconsume_times: record.reconsume_times,
        prepared_transaction_offset: 0,
        body: &record.body,
        topic: &record.topic,
        properties: &record.properties,
    };
    let result = match ctx.store.append(&stored).await {
        Ok(appended) => {
            ctx.longpoll.arrived(&record.topic, record.queue_id);
            ctx.metrics().messages_stored_total.inc();
            Ok((appended.queue_offset, appended.physical_offset as i64))
        }
        Err(err) => Err(AppendError::Store(err)),
    };
    let _ = reply.send(result);
}

/// CONSUMER_SEND_MSG_BACK: runs on the shard whose log holds the message; stores a copy in the
/// group's retry topic, or its dead-letter topic once the attempts are used up.
///
/// Delay levels are not scheduled (there is no SCHEDULE_TOPIC timer yet): the retry copy is
/// consumable at once.
pub(super) async fn send_back(ctx: &ShardCtx, command: &Command) -> Handled {
    let header: ConsumerSendMsgBackRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return bad_header(command, &err),
    };
    if ctx.shared.config.broker_role == BrokerRole::Slave {
        return error(
            command,
            ResponseCode::SlaveNotAvailable,
            "the broker is a slave",
        );
    }
    let bytes: Bytes = match ctx.store.read_message_at(header.offset.max(0) as u64).await {
        Ok(bytes) => bytes,
        Err(err) => {
            return error(
                command,
                ResponseCode::SystemError,
                &format!("look message by offset failed, {}: {err}", header.offset),
            );
        }
    };
    let Ok((original, _)) = StoredRecord::decode(&bytes) else {
        return error(
            command,
            ResponseCode::SystemError,
            "the stored message does not decode",
        );
    };
    let max = header
        .max_reconsume_times
        .unwrap_or(DEFAULT_MAX_RECONSUME_TIMES);
    let dead = original.reconsume_times >= max || header.delay_level < 0;
    let topic = if dead {
        topics::dlq_topic(header.group)
    } else {
        topics::retry_topic(header.group)
    };
    let own = original.properties();
    let mut properties = original.properties.to_owned();
    if own.get(keys::RETRY_TOPIC).is_none() {
        PropertiesWriter::new(&mut properties).put(keys::RETRY_TOPIC, original.topic);
    }
    if own.get(keys::ORIGIN_MESSAGE_ID).is_none() {
        let origin_id = header.origin_msg_id.map_or_else(
            || {
                OffsetMessageId {
                    store_host: original.store_host,
                    commit_log_offset: original.physical_offset,
                }
                .to_string()
            },
            str::to_owned,
        );
        PropertiesWriter::new(&mut properties).put(keys::ORIGIN_MESSAGE_ID, &origin_id);
    }
    let record = OwnedRecord {
        topic,
        queue_id: 0,
        flag: original.flag,
        sys_flag: original.sys_flag,
        born_timestamp_ms: original.born_timestamp_ms,
        born_host: original.born_host,
        reconsume_times: original.reconsume_times + 1,
        body: bytes.slice_ref(original.body),
        properties,
    };
    match store_elsewhere(ctx, record).await {
        Ok(_) => super::success(command),
        Err(reason) => error(command, ResponseCode::SystemError, &reason.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_properties_follow_the_message_and_batch_level_ones() {
        assert_eq!(with_broker_properties("", None, "C"), "CLUSTER\u{1}C");
        assert_eq!(
            with_broker_properties("TAGS\u{1}a\u{2}", Some("WAIT\u{1}false"), "C"),
            "TAGS\u{1}a\u{2}WAIT\u{1}false\u{2}CLUSTER\u{1}C"
        );
        let mut batch = String::new();
        append_broker_properties(&mut batch, "KEYS\u{1}k", None, "C");
        let first = batch.len();
        append_broker_properties(&mut batch, "", Some("WAIT\u{1}true"), "C");
        assert_eq!(&batch[..first], "KEYS\u{1}k\u{2}CLUSTER\u{1}C");
        assert_eq!(&batch[first..], "WAIT\u{1}true\u{2}CLUSTER\u{1}C");
        assert_eq!(
            with_broker_properties("CLUSTER\u{1}X", None, "C"),
            "CLUSTER\u{1}X",
            "a message's own value wins"
        );
    }
}
