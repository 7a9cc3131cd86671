//! Topic administration, runtime info and message lookups (docs/protocol.md §3.11).

use std::{collections::BTreeMap, rc::Rc};

use bytes::{Bytes, BytesMut};
use ringmq_protocol::{
    Command, CommandHead, ResponseCode,
    body::{self, KvTable, TopicConfig, TopicFilterType, perm},
    encode_frame_head,
    header::{
        CreateTopicRequestHeader, DeleteTopicRequestHeader, QueryMessageRequestHeader,
        QueryMessageResponseHeader, ViewMessageRequestHeader,
    },
    message::{Properties, StoredRecord, properties::keys},
    topic::{AUTO_CREATE_TEMPLATE, validate_topic},
};
use ringmq_storage::{ReadRequest, ReadStatus};

use super::{Handled, bad_header, error, reply, success};
use crate::{
    config::BrokerRole,
    messages::{FrameKind, KeyQuery, Outbound, ShardMessage},
    metadata,
    shard::context::ShardCtx,
    topics::owner_shard,
};

/// Most matches QUERY_MESSAGE returns for a unique-key query (RocketMQ `defaultQueryMaxNum`).
const DEFAULT_QUERY_MAX: usize = 32;
/// Most messages one QUERY_MESSAGE examines per queue: without a key index the search scans
/// the queue from the first message stored after `beginTimestamp`.
const MAX_SCAN_PER_QUEUE: u64 = 200_000;

/// The refusal of a topic create or delete (`verb`) the broker cannot do: on a slave (topics
/// change on the master), for an invalid name, or for the auto-creation template TBW102
/// (without it auto-creation stops, and changing it is a system-topic conflict in RocketMQ).
fn refuse_topic_edit(
    ctx: &ShardCtx,
    command: &Command,
    topic: &str,
    verb: &str,
) -> Option<Handled> {
    if ctx.shared.config.broker_role == BrokerRole::Slave {
        return Some(error(
            command,
            ResponseCode::SystemError,
            &format!("the broker is a slave: topics are {verb} on its master"),
        ));
    }
    if let Err(invalid) = validate_topic(topic) {
        return Some(error(
            command,
            ResponseCode::SystemError,
            &invalid.to_string(),
        ));
    }
    if topic == AUTO_CREATE_TEMPLATE {
        return Some(error(
            command,
            ResponseCode::SystemError,
            &format!("The topic[{topic}] is conflict with system topic."),
        ));
    }
    None
}

pub(super) async fn create_topic(ctx: &ShardCtx, command: &Command) -> Handled {
    let header: CreateTopicRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return bad_header(command, &err),
    };
    if let Some(refused) = refuse_topic_edit(ctx, command, header.topic, "created") {
        return refused;
    }
    if !(1..=1024).contains(&header.read_queue_nums)
        || !(1..=1024).contains(&header.write_queue_nums)
    {
        return error(
            command,
            ResponseCode::SystemError,
            "readQueueNums and writeQueueNums must be between 1 and 1024",
        );
    }
    let Some(filter_type) = TopicFilterType::from_name(header.topic_filter_type) else {
        return error(
            command,
            ResponseCode::SystemError,
            &format!("unknown topicFilterType {}", header.topic_filter_type),
        );
    };
    let config = TopicConfig {
        topic_name: header.topic.to_owned(),
        read_queue_nums: header.read_queue_nums,
        write_queue_nums: header.write_queue_nums,
        perm: header.perm & (perm::READ | perm::WRITE | perm::INHERIT | perm::PRIORITY),
        topic_filter_type: filter_type,
        topic_sys_flag: header.topic_sys_flag.unwrap_or(0),
        order: header.order,
    };
    match metadata::apply(&ctx.shared, config).await {
        Ok(()) => success(command),
        Err(reason) => error(command, ResponseCode::SystemError, &reason.to_string()),
    }
}

/// DELETE_TOPIC_IN_BROKER (215): removes the topic's config, persists the table and re-registers
/// with the NameServers (which keep the topic's queue data until DELETE_TOPIC_IN_NAMESRV).
/// Stored messages are not deleted: see `crate::metadata`. An unknown topic is a success, as in
/// RocketMQ, so a delete can be repeated after a partial failure.
pub(super) async fn delete_topic(ctx: &ShardCtx, command: &Command) -> Handled {
    let header: DeleteTopicRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return bad_header(command, &err),
    };
    if let Some(refused) = refuse_topic_edit(ctx, command, header.topic, "deleted") {
        return refused;
    }
    match metadata::delete(&ctx.shared, header.topic).await {
        Ok(()) => success(command),
        Err(reason) => error(command, ResponseCode::SystemError, &reason.to_string()),
    }
}

pub(super) fn all_topic_config(ctx: &ShardCtx, command: &Command) -> Handled {
    let wrapper = ctx.topics().to_wrapper();
    reply(
        command,
        ResponseCode::Success,
        None,
        &(),
        &body::to_vec(&wrapper),
    )
}

/// GET_ALL_CONSUMER_OFFSET (43): every shard's committed offsets merged into one table (a
/// slave's metadata sync reads it, docs/protocol.md §8.6). Each queue's offsets live on one shard
/// only, so the merge never has two values for one queue. Refused rather than answered in part
/// when a shard cannot answer (the broker stopping): a partial table would read as offsets
/// that do not exist.
pub(super) async fn all_consumer_offset(ctx: &ShardCtx, command: &Command) -> Handled {
    let mut merged = ctx.offsets.borrow().to_body();
    let mut answers = Vec::with_capacity(ctx.shared.shard_count());
    for (shard, inbox) in ctx.shared.inboxes.iter().enumerate() {
        if shard == ctx.id {
            continue;
        }
        let (reply, answer) = flume::bounded(1);
        if inbox
            .send_async(ShardMessage::CollectOffsets { reply })
            .await
            .is_err()
        {
            return error(command, ResponseCode::SystemError, "the broker is stopping");
        }
        answers.push(answer);
    }
    for answer in answers {
        let Ok(part) = answer.recv_async().await else {
            return error(command, ResponseCode::SystemError, "the broker is stopping");
        };
        for (key, queues) in part.offset_table {
            merged.offset_table.entry(key).or_default().extend(queues);
        }
    }
    reply(
        command,
        ResponseCode::Success,
        None,
        &(),
        &body::to_vec(&merged),
    )
}

pub(super) fn runtime_info(ctx: &ShardCtx, command: &Command) -> Handled {
    let metrics = &ctx.shared.metrics;
    let stored: u64 = metrics
        .shards
        .iter()
        .map(|s| s.messages_stored_total.get())
        .sum();
    let delivered: u64 = metrics
        .shards
        .iter()
        .map(|s| s.messages_delivered_total.get())
        .sum();
    let (min_offset, max_offset) = ctx.store.physical_range();
    let config = &ctx.shared.config;
    let mut table = BTreeMap::new();
    let mut put = |key: &str, value: String| {
        table.insert(key.to_owned(), value);
    };
    put(
        "brokerVersion",
        ringmq_protocol::command::CURRENT_VERSION.to_string(),
    );
    put("brokerVersionDesc", "V4_9_8".into());
    put("ringmqVersion", env!("CARGO_PKG_VERSION").into());
    put("bootTimestamp", ctx.shared.started_ms.to_string());
    put("msgPutTotalTodayNow", stored.to_string());
    put("msgGetTotalTodayNow", delivered.to_string());
    put("shards", ctx.shared.shard_count().to_string());
    put("brokerRole", config.broker_role.as_str().into());
    put(
        "flushDiskType",
        match config.flush_mode {
            ringmq_storage::FlushMode::Sync => "SYNC_FLUSH".into(),
            ringmq_storage::FlushMode::Async => "ASYNC_FLUSH".into(),
        },
    );
    put("commitLogMinOffset", min_offset.to_string());
    put("commitLogMaxOffset", max_offset.to_string());
    put("topics", ctx.topics().topics.len().to_string());
    if let Some(ratio) = ctx.store.disk_full() {
        put("commitLogDiskRatio", format!("{ratio:.4}"));
    }
    // Replication, per shard as the gauges sampled it (every 500 ms), and summed up.
    let shards = &ctx.shared.metrics.shards;
    let per_shard: Vec<String> = shards
        .iter()
        .enumerate()
        .map(|(id, s)| {
            format!(
                "{id}:{}:{}:{}",
                s.replica_slaves.get(),
                s.replica_lag_bytes.get(),
                s.replica_lag_ms.get()
            )
        })
        .collect();
    put("haShards", per_shard.join(","));
    let fewest = shards
        .iter()
        .map(|s| s.replica_slaves.get())
        .min()
        .unwrap_or(0);
    let lag_bytes = shards
        .iter()
        .map(|s| s.replica_lag_bytes.get())
        .max()
        .unwrap_or(0);
    let lag_ms = shards
        .iter()
        .map(|s| s.replica_lag_ms.get())
        .max()
        .unwrap_or(0);
    if config.broker_role == BrokerRole::Slave {
        put(
            "haMasterAddress",
            ctx.shared.master.ha_addr().unwrap_or_default(),
        );
        put("haConnectedToMaster", (fewest > 0).to_string());
    } else {
        put("haConnectedSlaves", fewest.to_string());
        let slaves: Vec<String> = ctx
            .shared
            .replicas
            .iter()
            .enumerate()
            .flat_map(|(shard, replicas)| {
                replicas
                    .slaves()
                    .into_iter()
                    .map(move |(id, peer, acked)| format!("{shard}:{id}@{peer}:{acked}"))
            })
            .collect();
        put("haSlaves", slaves.join(","));
    }
    put("haLagBytes", lag_bytes.to_string());
    put("haLagMs", lag_ms.to_string());
    let body = body::to_vec(&KvTable { table });
    reply(command, ResponseCode::Success, None, &(), &body)
}

pub(super) async fn view_message(ctx: &ShardCtx, command: &Command) -> Handled {
    let header: ViewMessageRequestHeader = match command.header() {
        Ok(header) => header,
        Err(err) => return bad_header(command, &err),
    };
    let found = if super::shard_of_offset(header.offset, ctx.shared.shard_count()) == Some(ctx.id) {
        ctx.store.read_message_at(header.offset as u64).await.ok()
    } else {
        None
    };
    match found {
        Some(record) => with_records(command, ResponseCode::Success, &(), vec![record]),
        None => error(
            command,
            ResponseCode::SystemError,
            &format!("can not find message by the offset, {}", header.offset),
        ),
    }
}

fn with_records<E: ringmq_protocol::EncodeExt>(
    command: &Command,
    code: ResponseCode,
    ext: &E,
    records: Vec<Bytes>,
) -> Handled {
    let bytes = records.iter().map(Bytes::len).sum();
    let mut head = BytesMut::with_capacity(160);
    encode_frame_head(
        &CommandHead::response_to(command, code),
        ext,
        bytes,
        &mut head,
    );
    Handled::Reply(Outbound {
        head,
        body: records,
        kind: FrameKind::Response(code),
    })
}

/// QUERY_MESSAGE by key: every shard searches the queues of the topic it owns.
pub(super) async fn query_message(ctx: &ShardCtx, command: &Command) -> Handled {
    let header: QueryMessageRequestHeader<'_> = match command.header() {
        Ok(header) => header,
        Err(err) => return bad_header(command, &err),
    };
    let unique = header.unique_key_query == Some(true);
    let max_messages = if unique {
        DEFAULT_QUERY_MAX
    } else {
        header.max_num.clamp(1, 64 * DEFAULT_QUERY_MAX as i32) as usize
    };
    let query = KeyQuery {
        topic: header.topic.to_owned(),
        key: header.key.to_owned(),
        unique,
        begin_ms: header.begin_timestamp_ms,
        end_ms: header.end_timestamp_ms,
        max_messages,
    };
    let mut answers = Vec::new();
    for inbox in &ctx.shared.inboxes {
        let (reply, answer) = flume::bounded(1);
        if inbox
            .send_async(ShardMessage::QueryKey {
                query: query.clone(),
                reply,
            })
            .await
            .is_ok()
        {
            answers.push(answer);
        }
    }
    let mut records = Vec::new();
    for answer in answers {
        if let Ok(found) = answer.recv_async().await {
            records.extend(found);
        }
    }
    records.truncate(max_messages);
    if records.is_empty() {
        return error(
            command,
            ResponseCode::QueryNotFound,
            &format!(
                "can not find message, maybe time range not correct, key: {}",
                header.key
            ),
        );
    }
    let header = QueryMessageResponseHeader {
        index_last_update_timestamp_ms: ringmq_common::now_ms(),
        index_last_update_phyoffset: 0,
    };
    with_records(command, ResponseCode::Success, &header, records)
}

/// This shard's part of a QUERY_MESSAGE: the matching messages of its queues of the topic.
pub(crate) async fn query_key_here(
    ctx: Rc<ShardCtx>,
    query: KeyQuery,
    reply: flume::Sender<Vec<Bytes>>,
) {
    let mut found = Vec::new();
    let queues = ctx
        .topics
        .with(&ctx.shared.topics, |t| {
            t.get(&query.topic)
                .map(|c| c.read_queue_nums.max(c.write_queue_nums))
        })
        .unwrap_or(0);
    let shards = ctx.shared.shard_count();
    'queues: for queue_id in (0..queues).filter(|&q| owner_shard(&query.topic, q, shards) == ctx.id)
    {
        let Some(offsets) = ctx.store.queue_offsets(&query.topic, queue_id) else {
            continue;
        };
        let mut offset = match ctx
            .store
            .search_offset_by_time(&query.topic, queue_id, query.begin_ms)
            .await
        {
            Ok(Some(found)) => found.saturating_sub(1).max(offsets.min_offset),
            _ => offsets.min_offset,
        };
        let stop = offsets.max_offset.min(offset + MAX_SCAN_PER_QUEUE);
        while offset < stop {
            let request = ReadRequest {
                topic: &query.topic,
                queue_id,
                offset,
                max_messages: 256,
                max_bytes: 4 << 20,
                tags_hashes: None,
            };
            let Ok(result) = ctx.store.read(&request).await else {
                break;
            };
            if result.status != ReadStatus::Found || result.next_offset <= offset {
                break;
            }
            for record in &result.records {
                let Ok((decoded, _)) = StoredRecord::decode(record) else {
                    continue;
                };
                if decoded.store_timestamp_ms > query.end_ms {
                    continue 'queues;
                }
                if decoded.store_timestamp_ms >= query.begin_ms
                    && matches_key(decoded.properties(), &query)
                {
                    found.push(record.clone());
                    if found.len() >= query.max_messages {
                        break 'queues;
                    }
                }
            }
            offset = result.next_offset;
        }
    }
    let _ = reply.send(found);
}

fn matches_key(properties: Properties<'_>, query: &KeyQuery) -> bool {
    if query.unique {
        return properties.get(keys::UNIQ_KEY) == Some(query.key.as_str());
    }
    properties
        .get(keys::KEYS)
        .is_some_and(|keys| keys.split(' ').any(|k| k == query.key))
}
