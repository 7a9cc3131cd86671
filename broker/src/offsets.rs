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

    /// An empty offset table in memory (nothing is saved in these tests).
    fn empty_table() -> ConsumerOffsetTable<ringmq_storage::io::MemStorage> {
        compio::runtime::Runtime::new()
            .unwrap()
            .block_on(ConsumerOffsetTable::open(
                ringmq_storage::io::MemStorage::new(),
                "/offsets.json",
            ))
            .unwrap()
    }

    #[test]
    fn a_slave_takes_the_masters_offsets_except_pending_and_its_own() {
        let mut offsets = empty_table();
        offsets.commit("billing", "Orders", 0, 4);
        offsets.commit("billing", "Orders", 1, 30);
        offsets.commit("only-here", "Orders", 2, 8);
        let mut pending = empty_table();
        pending.commit("billing", "Orders", 1, 30);
        let master = table(&[("Orders@billing", &[(0, 10), (1, 20)])]);

        // Queue 1 has a commit the master has not taken: the master's older 20 must not win.
        assert_eq!(
            apply_master_offsets(&mut offsets, &master, &pending, 0, 1),
            1
        );
        assert_eq!(offsets.query("billing", "Orders", 0), Some(10));
        assert_eq!(offsets.query("billing", "Orders", 1), Some(30));
        assert_eq!(offsets.query("only-here", "Orders", 2), Some(8));

        // The master took 30; a commit of 31 arrived meanwhile and stays pending.
        pending.commit("billing", "Orders", 1, 31);
        let handed = table(&[("Orders@billing", &[(1, 30)])]);
        assert_eq!(forget_handed(&mut pending, &handed, 0, 1), 0);
        assert_eq!(pending.query("billing", "Orders", 1), Some(31));
        // Once the handed value is the pending one, it is forgotten and the master's applies.
        let handed = table(&[("Orders@billing", &[(1, 31)])]);
        assert_eq!(forget_handed(&mut pending, &handed, 0, 1), 1);
        assert!(pending.is_empty());
        let master = table(&[("Orders@billing", &[(0, 10), (1, 31)])]);
        offsets.commit("billing", "Orders", 1, 31);
        assert_eq!(
            apply_master_offsets(&mut offsets, &master, &pending, 0, 1),
            0
        );
        // Only the queues a shard owns are touched.
        let shards = 4;
        let owner = owner_shard("Orders", 0, shards);
        let other = (owner + 1) % shards;
        let master = table(&[("Orders@billing", &[(0, 99)])]);
        assert_eq!(
            apply_master_offsets(&mut offsets, &master, &pending, other, shards),
            0
        );
        assert_eq!(
            apply_master_offsets(&mut offsets, &master, &pending, owner, shards),
            1
        );
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
