//! Consumer-offset rules that more than one part of the broker applies: which entries of an
//! offset table a shard owns, and how a slave takes its master's offsets and hands over the
//! ones committed to it (docs/protocol.md §8.6). The handlers (GET_ALL_CONSUMER_OFFSET's answer) and the shard's run loop (a metadata
//! sync's ApplyMasterOffsets) both come here, so neither reaches into the other.

use ringmq_protocol::body::ConsumerOffsetTable as ConsumerOffsetBody;
use ringmq_storage::{io::Storage, metadata::ConsumerOffsetTable};

use crate::topics::owner_shard;

/// A slave's metadata sync on one shard: the master's committed offset replaces the shard's for
/// every queue shard `shard` of `shards` owns, except where `pending` holds a commit made to
/// this slave that the master has not taken yet; returns how many offsets changed.
///
/// A consumer may commit to a slave while its master is down. Such a commit is handed to the
/// master (only forward) before the master's table is taken, so the master's offset is then at
/// least as far; one made after the hand-over started is still pending and stays until the next
/// round. Offsets the master lacks are kept too. Only changed entries are committed, so an
/// unchanged sync leaves the table as it was (and the caller's persister idle when this
/// returns 0).
pub(crate) fn apply_master_offsets<S: Storage>(
    table: &mut ConsumerOffsetTable<S>,
    master: &ConsumerOffsetBody,
    pending: &ConsumerOffsetTable<S>,
    shard: usize,
    shards: usize,
) -> usize {
    let mut changed = 0;
    for entry in owned_entries(master, shard, shards) {
        if pending
            .query(entry.group, entry.topic, entry.queue_id)
            .is_some()
        {
            continue;
        }
        if table.query(entry.group, entry.topic, entry.queue_id) != Some(entry.offset) {
            table.commit(entry.group, entry.topic, entry.queue_id, entry.offset);
            changed += 1;
        }
    }
    changed
}

/// Forgets the commits of `handed` (those the master took) that `pending` still holds with the
/// same offset, among the queues shard `shard` of `shards` owns; returns how many it forgot.
pub(crate) fn forget_handed<S: Storage>(
    pending: &mut ConsumerOffsetTable<S>,
    handed: &ConsumerOffsetBody,
    shard: usize,
    shards: usize,
) -> usize {
    owned_entries(handed, shard, shards)
        .filter(|entry| pending.forget(entry.group, entry.topic, entry.queue_id, entry.offset))
        .count()
}

/// Every committed offset of `table`, in key order: what a slave hands to its master.
pub(crate) fn entries(table: &ConsumerOffsetBody) -> impl Iterator<Item = (&str, &str, i32, i64)> {
    all_entries(table).map(|entry| (entry.group, entry.topic, entry.queue_id, entry.offset))
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
    all_entries(table)
        .filter(move |entry| owner_shard(entry.topic, entry.queue_id, shards) == shard)
}

/// Every entry of `table` whose key names a group.
fn all_entries(table: &ConsumerOffsetBody) -> impl Iterator<Item = OffsetEntry<'_>> {
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
