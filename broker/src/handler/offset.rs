//! Consumer offsets and queue offsets (docs/protocol.md §3.6). All run on the shard owning the queue.

use ringmq_protocol::{
    Command, ResponseCode,
    body::ConsumerOffsetTable as ConsumerOffsetBody,
    header::{
        GetEarliestMsgStoretimeResponseHeader, OffsetResponseHeader,
        QueryConsumerOffsetRequestHeader, QueueRequestHeader, SearchOffsetRequestHeader,
        UpdateConsumerOffsetRequestHeader,
    },
};

use super::{Handled, bad_header, error, reply, success};
use crate::{shard::ShardCtx, topics::owner_shard};

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
    ctx.commit_offset(
        header.consumer_group,
        header.topic,
        header.queue_id,
        header.commit_offset,
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

/// A slave's metadata sync on this shard: the master's committed offset replaces this shard's
/// for every queue it owns; returns how many offsets changed.
///
/// Offsets the master lacks are kept: the master is the only writer of offsets, but a consumer
/// may have committed to this slave while the master was down, and forgetting that commit would
/// rewind the group. Only changed entries are committed, so an unchanged sync leaves the table
/// clean and the persister idle.
pub(crate) fn apply_master_offsets(ctx: &ShardCtx, master: &ConsumerOffsetBody) -> usize {
    let mut changed = 0;
    for entry in owned_entries(master, ctx.id, ctx.shared.shard_count()) {
        let current = ctx
            .offsets
            .borrow()
            .query(entry.group, entry.topic, entry.queue_id);
        if current != Some(entry.offset) {
            ctx.commit_offset(entry.group, entry.topic, entry.queue_id, entry.offset);
            changed += 1;
        }
    }
    changed
}

/// One committed offset of an offset table, its `"topic@group"` key split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OffsetEntry<'a> {
    topic: &'a str,
    group: &'a str,
    queue_id: i32,
    offset: i64,
}

/// The entries of `table` for the queues shard `shard` of `shards` owns. A key without `@` names
/// no group and is skipped. Splitting at the first `@` is exact even for a group name holding
/// `@`: the offset table joins the parts again into the same key.
fn owned_entries(
    table: &ConsumerOffsetBody,
    shard: usize,
    shards: usize,
) -> impl Iterator<Item = OffsetEntry<'_>> {
    table
        .offset_table
        .iter()
        .filter_map(|(key, queues)| key.split_once('@').map(|parts| (parts, queues)))
        .flat_map(|((topic, group), queues)| {
            queues.iter().map(move |(&queue_id, &offset)| OffsetEntry {
                topic,
                group,
                queue_id,
                offset,
            })
        })
        .filter(move |entry| owner_shard(entry.topic, entry.queue_id, shards) == shard)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn table(entries: &[(&str, &[(i32, i64)])]) -> ConsumerOffsetBody {
        ConsumerOffsetBody {
            offset_table: entries
                .iter()
                .map(|(key, queues)| ((*key).to_owned(), queues.iter().copied().collect()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn every_entry_goes_to_exactly_its_owner_shard() {
        let master = table(&[
            ("Orders@billing", &[(0, 5), (1, 7), (2, 9), (3, 11)]),
            ("Orders@audit", &[(0, 1)]),
            ("%RETRY%billing@billing", &[(0, 3)]),
        ]);
        let shards = 3;
        let mut seen = Vec::new();
        for shard in 0..shards {
            for entry in owned_entries(&master, shard, shards) {
                assert_eq!(owner_shard(entry.topic, entry.queue_id, shards), shard);
                seen.push(entry);
            }
        }
        seen.sort_by_key(|e| (e.topic, e.group, e.queue_id));
        let expected = [
            ("%RETRY%billing", "billing", 0, 3),
            ("Orders", "audit", 0, 1),
            ("Orders", "billing", 0, 5),
            ("Orders", "billing", 1, 7),
            ("Orders", "billing", 2, 9),
            ("Orders", "billing", 3, 11),
        ]
        .map(|(topic, group, queue_id, offset)| OffsetEntry {
            topic,
            group,
            queue_id,
            offset,
        });
        assert_eq!(seen, expected);
    }

    #[test]
    fn keys_split_at_the_first_at_sign_and_keys_without_one_are_skipped() {
        let master = table(&[("t@g@x", &[(0, 4)]), ("no-group", &[(0, 9)])]);
        let entries: Vec<_> = owned_entries(&master, 0, 1).collect();
        assert_eq!(
            entries,
            [OffsetEntry {
                topic: "t",
                group: "g@x",
                queue_id: 0,
                offset: 4
            }]
        );
    }
}
