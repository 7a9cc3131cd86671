//! Read-only lookups: consumer progress and messages by id or key.

use std::collections::BTreeSet;

use ringmq_protocol::header::QueryMessageRequestHeader;
use ringmq_protocol::message::OffsetMessageId;

use super::topics::{self, queues_of};
use super::{ConsumerProgress, QueueProgress};
use crate::error::{ClientError, Result};
use crate::instance::IoContext;
use crate::message::ReceivedMessage;
use crate::route::TopicRoute;
use crate::rpc::{self, IfNotCommitted};

pub(super) async fn consumer_progress(
    ctx: &IoContext,
    group: &str,
    topic: &str,
) -> Result<ConsumerProgress> {
    if group.trim().is_empty() {
        return Err(ClientError::InvalidArgument(
            "the group name is empty".into(),
        ));
    }
    let route = TopicRoute::new(topic, topics::route(ctx, topic).await?);
    let mut queues = Vec::new();
    for (queue, addr) in queues_of(&route, |data| data.read_queue_nums) {
        let timeout = ctx.timeout();
        let max_offset = rpc::max_offset(ctx, &addr, topic, queue.queue_id, timeout).await?;
        // NotFound: a group that never committed shows as such, not as "committed at 0".
        let committed = rpc::query_consumer_offset(
            ctx,
            &addr,
            group,
            &queue,
            IfNotCommitted::NotFound,
            timeout,
        )
        .await?;
        let lag = if let Some(committed) = committed {
            lag(max_offset, committed)
        } else {
            let min_offset = rpc::min_offset(ctx, &addr, topic, queue.queue_id, timeout).await?;
            lag(max_offset, min_offset)
        };
        queues.push(QueueProgress {
            queue,
            broker_addr: addr,
            broker_offset: max_offset,
            committed_offset: committed,
            lag,
        });
    }
    Ok(ConsumerProgress {
        group: group.to_owned(),
        topic: topic.to_owned(),
        total_lag: queues.iter().map(|queue| queue.lag).sum(),
        queues,
    })
}

/// Messages between `from` and `max_offset`; never negative (a committed offset ahead of the
/// queue, after a reset, is no lag).
fn lag(max_offset: i64, from: i64) -> i64 {
    max_offset.saturating_sub(from).max(0)
}

pub(super) async fn message_by_id(ctx: &IoContext, offset_msg_id: &str) -> Result<ReceivedMessage> {
    let id: OffsetMessageId = offset_msg_id.trim().parse().map_err(|error| {
        ClientError::InvalidArgument(format!(
            "{offset_msg_id:?} is not an offset message id: {error}"
        ))
    })?;
    let addr = id.store_host.to_string();
    rpc::view_message(ctx, &addr, id.commit_log_offset, ctx.timeout()).await
}

/// What [`messages_by_key`] looks for.
#[derive(Debug)]
pub(super) struct KeyQuery {
    pub topic: String,
    pub key: String,
    pub max_messages: usize,
    pub begin_ms: i64,
    pub end_ms: i64,
}

pub(super) async fn messages_by_key(
    ctx: &IoContext,
    query: &KeyQuery,
) -> Result<Vec<ReceivedMessage>> {
    if query.key.is_empty() || query.max_messages == 0 {
        return Err(ClientError::InvalidArgument(
            "the key must not be empty and at least one message must be asked for".into(),
        ));
    }
    let route = TopicRoute::new(&query.topic, topics::route(ctx, &query.topic).await?);
    // One request per broker group: QUERY_MESSAGE searches every queue of the topic there.
    let addrs: BTreeSet<String> = queues_of(&route, |_| 1)
        .into_iter()
        .map(|(_, addr)| addr)
        .collect();
    let header = QueryMessageRequestHeader {
        topic: &query.topic,
        key: &query.key,
        max_num: i32::try_from(query.max_messages).unwrap_or(i32::MAX),
        begin_timestamp_ms: query.begin_ms,
        end_timestamp_ms: query.end_ms,
        unique_key_query: None,
    };
    let mut found = Vec::new();
    for addr in &addrs {
        found.extend(rpc::query_message(ctx, addr, &header, ctx.timeout()).await?);
    }
    Ok(merge(found, query))
}

/// Keeps the messages that really carry the key in the time range (an index answers by hash, so
/// clients re-check, as RocketMQ's do), once each, oldest first, at most `max_messages`.
fn merge(mut found: Vec<ReceivedMessage>, query: &KeyQuery) -> Vec<ReceivedMessage> {
    found.retain(|message| {
        message.topic == query.topic
            && message.keys.contains(&query.key)
            && (query.begin_ms..=query.end_ms).contains(&message.store_timestamp_ms)
    });
    found.sort_by(|a, b| {
        (a.store_timestamp_ms, &a.offset_msg_id).cmp(&(b.store_timestamp_ms, &b.offset_msg_id))
    });
    found.dedup_by(|a, b| a.offset_msg_id == b.offset_msg_id);
    found.truncate(query.max_messages);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, keys: &[&str], stored_ms: i64) -> ReceivedMessage {
        ReceivedMessage {
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            offset_msg_id: id.into(),
            msg_id: id.into(),
            store_timestamp_ms: stored_ms,
            ..ReceivedMessage::for_test(0, 0)
        }
    }

    #[test]
    fn key_results_are_rechecked_deduplicated_ordered_and_capped() {
        let query = KeyQuery {
            topic: "t".into(),
            key: "k".into(),
            max_messages: 2,
            begin_ms: 10,
            end_ms: 100,
        };
        let found = vec![
            message("C", &["k"], 30),
            message("A", &["x", "k"], 20),
            message("B", &["kk"], 25),
            message("A", &["x", "k"], 20),
            message("D", &["k"], 5),
            message("E", &["k"], 40),
        ];
        let ids: Vec<_> = merge(found, &query)
            .into_iter()
            .map(|m| m.offset_msg_id)
            .collect();
        assert_eq!(ids, ["A", "C"]);
    }

    #[test]
    fn lag_is_never_negative() {
        assert_eq!(lag(10, 4), 6);
        assert_eq!(lag(10, 12), 0);
    }
}
