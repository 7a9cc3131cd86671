//! The consume queues of one store, by topic and queue id, and the one rule by which a chunk of
//! the commit log is indexed into them (appends index their own records; recovery and
//! replication index chunks through [`Queues::check_chunk`] and [`Queues::index_chunk`]).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    rc::Rc,
};

use ringmq_common::FnvBuildHasher;
use ringmq_protocol::message::record::StoredRecord;

use crate::{
    StoreError,
    consume_queue::{ConsumeQueue, record_tags_hash},
    format::{CONSUMEQUEUE_DIR, CqEntry},
};

/// Queue ids are below this (RocketMQ's queue numbers are far smaller; the bound keeps a
/// hostile id from growing a topic's slot vector without limit).
pub(crate) const QUEUE_ID_LIMIT: i32 = 65_536;

/// Slots of one topic, indexed by queue id.
type Slots<F> = Vec<Option<ConsumeQueue<F>>>;

/// Every consume queue of a store.
///
/// Invariant: every topic key has at least one queue (keys are only inserted together with a
/// queue), so the map is empty exactly when the store has no queue.
#[derive(Debug)]
pub(crate) struct Queues<F> {
    /// By topic. FNV-1a instead of SipHash: names are validated before they get here, not
    /// chosen by an attacker for collisions, and the lookup runs on every append.
    by_topic: HashMap<Box<str>, Slots<F>, FnvBuildHasher>,
    /// The store directory (queues live in `consumequeue/<topic>/<queueId>` under it).
    root: PathBuf,
    entries_per_file: u64,
}

/// Why the records of a chunk cannot be indexed. The chunk is then refused whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordMismatch {
    /// A record does not decode.
    Malformed,
    /// A record's PHYSICALOFFSET is not where it lies, or its QUEUEOFFSET or QUEUEID is
    /// negative.
    WrongOffsets,
    /// A record does not continue its consume queue.
    QueueGap {
        /// The queue's next offset.
        expected: u64,
        /// The record's queue offset.
        found: u64,
    },
}

/// A chunk payload that [`Queues::check_chunk`] accepted; only [`Queues::index_chunk`] takes
/// it, so a chunk is never indexed unchecked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckedChunk<'a> {
    payload: &'a [u8],
    /// Physical offset of the payload's first byte.
    position: u64,
}

impl<F: Clone> Queues<F> {
    /// No queues, for a store in `root` with `entries_per_file` entries per queue file.
    pub fn new(root: &Path, entries_per_file: u64) -> Self {
        Self {
            by_topic: HashMap::default(),
            root: root.to_path_buf(),
            entries_per_file,
        }
    }

    /// An empty queue of this store whose next entry gets `next_offset` (not yet inserted).
    pub fn new_queue(
        &self,
        topic: &str,
        queue_id: i32,
        min_offset: u64,
        next_offset: u64,
    ) -> ConsumeQueue<F> {
        ConsumeQueue::new(
            Rc::from(topic),
            queue_id,
            cq_dir(&self.root, topic, queue_id),
            self.entries_per_file,
            min_offset,
            next_offset,
        )
    }

    /// The queue, if it exists.
    pub fn get(&self, topic: &str, queue_id: i32) -> Option<&ConsumeQueue<F>> {
        let index = usize::try_from(queue_id).ok()?;
        self.by_topic.get(topic)?.get(index)?.as_ref()
    }

    /// The queue, if it exists.
    pub fn get_mut(&mut self, topic: &str, queue_id: i32) -> Option<&mut ConsumeQueue<F>> {
        let index = usize::try_from(queue_id).ok()?;
        self.by_topic.get_mut(topic)?.get_mut(index)?.as_mut()
    }

    /// The queue, created empty if new. A new topic must pass RocketMQ's topic rule (its name
    /// becomes a directory) and the queue id must be in `0..QUEUE_ID_LIMIT`.
    pub fn get_or_create(
        &mut self,
        topic: &str,
        queue_id: i32,
    ) -> Result<&mut ConsumeQueue<F>, StoreError> {
        if !(0..QUEUE_ID_LIMIT).contains(&queue_id) {
            return Err(StoreError::InvalidTopic(format!(
                "{topic} (queue id {queue_id})"
            )));
        }
        if !self.by_topic.contains_key(topic) {
            check_topic(topic)?;
        }
        self.get_or_create_unchecked(topic, queue_id)
            .ok_or_else(|| StoreError::InvalidTopic(topic.to_owned()))
    }

    /// The queue, created empty if new, without checking the name: for records that are in
    /// the log already (recovery) or were checked before (replication). `None` only for a
    /// negative queue id.
    fn get_or_create_unchecked(
        &mut self,
        topic: &str,
        queue_id: i32,
    ) -> Option<&mut ConsumeQueue<F>> {
        let index = usize::try_from(queue_id).ok()?;
        // Look up before inserting: building the key allocates, the lookup does not.
        if !self.by_topic.contains_key(topic) {
            self.by_topic.insert(topic.into(), Vec::new());
        }
        let slots = self.by_topic.get_mut(topic)?;
        if slots.len() <= index {
            slots.resize_with(index + 1, || None);
        }
        Some(slots[index].get_or_insert_with(|| {
            ConsumeQueue::new(
                Rc::from(topic),
                queue_id,
                cq_dir(&self.root, topic, queue_id),
                self.entries_per_file,
                0,
                0,
            )
        }))
    }

    /// Puts `queue` in its slot (recovery from a checkpoint), replacing what was there.
    pub fn insert(&mut self, queue: ConsumeQueue<F>) {
        let index = usize::try_from(queue.queue_id()).unwrap_or(0);
        if !self.by_topic.contains_key(queue.topic()) {
            self.by_topic.insert(queue.topic().into(), Vec::new());
        }
        if let Some(slots) = self.by_topic.get_mut(queue.topic()) {
            if slots.len() <= index {
                slots.resize_with(index + 1, || None);
            }
            slots[index] = Some(queue);
        }
    }

    /// Every queue, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &ConsumeQueue<F>> {
        self.by_topic
            .values()
            .flat_map(|slots| slots.iter().flatten())
    }

    /// Whether the store has no queue.
    pub fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }

    /// Checks the records of a chunk whose payload CRC verified, against the queues, changing
    /// nothing: framing, each record's physical offset (where it lies: `position` is the
    /// payload's first byte), and that each record continues its queue (tracked across the
    /// chunk's own records, since one chunk may hold several of a queue). A queue that never
    /// held anything starts wherever its first record is.
    pub fn check_chunk<'p>(
        &self,
        payload: &'p [u8],
        position: u64,
    ) -> Result<CheckedChunk<'p>, RecordMismatch> {
        let mut next_of: Vec<(&str, i32, u64)> = Vec::new();
        let mut at = 0;
        while at < payload.len() {
            let Ok((record, size)) = StoredRecord::decode(&payload[at..]) else {
                return Err(RecordMismatch::Malformed);
            };
            if record.physical_offset as u64 != position + at as u64
                || record.queue_offset < 0
                || record.queue_id < 0
            {
                return Err(RecordMismatch::WrongOffsets);
            }
            let queue_offset = record.queue_offset as u64;
            let known = next_of.iter_mut().find(|(topic, queue_id, _)| {
                *topic == record.topic && *queue_id == record.queue_id
            });
            let expected = if let Some((_, _, next)) = known {
                Some(std::mem::replace(next, queue_offset + 1))
            } else {
                next_of.push((record.topic, record.queue_id, queue_offset + 1));
                self.get(record.topic, record.queue_id)
                    .filter(|queue| !queue.is_untouched())
                    .map(ConsumeQueue::next_offset)
            };
            if let Some(expected) = expected
                && expected != queue_offset
            {
                tracing::warn!(
                    topic = record.topic,
                    queue_id = record.queue_id,
                    expected,
                    found = queue_offset,
                    "record does not continue its consume queue"
                );
                return Err(RecordMismatch::QueueGap {
                    expected,
                    found: queue_offset,
                });
            }
            at += size;
        }
        Ok(CheckedChunk { payload, position })
    }

    /// Appends the consume-queue entries of a chunk [`Queues::check_chunk`] accepted, with no
    /// change to the queues in between.
    pub fn index_chunk(&mut self, chunk: CheckedChunk<'_>) {
        let CheckedChunk {
            payload,
            mut position,
        } = chunk;
        let mut at = 0;
        while at < payload.len() {
            let Ok((record, size)) = StoredRecord::decode(&payload[at..]) else {
                // check_chunk decoded these very bytes.
                debug_assert!(false, "index_chunk on a chunk check_chunk did not accept");
                return;
            };
            let Some(queue) = self.get_or_create_unchecked(record.topic, record.queue_id) else {
                // check_chunk refused negative queue ids.
                debug_assert!(false, "index_chunk on a chunk check_chunk did not accept");
                return;
            };
            let queue_offset = record.queue_offset as u64;
            if queue.next_offset() != queue_offset {
                // check_chunk let a record jump only onto a queue that never held anything.
                debug_assert!(queue.is_untouched());
                queue.restart_at(queue_offset);
            }
            queue.push(CqEntry {
                physical_offset: position,
                size: size as u32,
                tags_hash: record_tags_hash(record.properties),
            });
            at += size;
            position += size as u64;
        }
    }

    /// Checks a chunk and, when it passes, indexes it: all of its records or none.
    pub fn dispatch_chunk(&mut self, payload: &[u8], position: u64) -> Result<(), RecordMismatch> {
        let chunk = self.check_chunk(payload, position)?;
        self.index_chunk(chunk);
        Ok(())
    }
}

/// `<root>/consumequeue/<topic>/<queueId>`.
pub(crate) fn cq_dir(root: &Path, topic: &str, queue_id: i32) -> PathBuf {
    root.join(CONSUMEQUEUE_DIR)
        .join(topic)
        .join(queue_id.to_string())
}

/// RocketMQ's topic rule ([`ringmq_protocol::topic::validate_topic`]) as a store error: a name
/// that passes is a safe single directory name.
pub(crate) fn check_topic(topic: &str) -> Result<(), StoreError> {
    ringmq_protocol::topic::validate_topic(topic)
        .map_err(|_| StoreError::InvalidTopic(topic.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

    use ringmq_protocol::message::record::MessageMagic;

    use super::*;

    const HOST: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 10911));

    /// A chunk payload at physical offset `position` holding records of `(topic, queue id,
    /// queue offset)`.
    fn payload(position: u64, records: &[(&str, i32, i64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(topic, queue_id, queue_offset) in records {
            let record = StoredRecord {
                magic: MessageMagic::V1,
                body_crc: 0,
                queue_id,
                flag: 0,
                queue_offset,
                physical_offset: (position + out.len() as u64) as i64,
                sys_flag: 0,
                born_timestamp_ms: 0,
                born_host: HOST,
                store_timestamp_ms: 0,
                store_host: HOST,
                reconsume_times: 0,
                prepared_transaction_offset: 0,
                body: b"body",
                topic,
                properties: "TAGS\u{1}t\u{2}",
            };
            record.encode(&mut out).unwrap();
        }
        out
    }

    fn queues() -> Queues<()> {
        Queues::new(Path::new("/store"), 16)
    }

    fn next(queues: &Queues<()>, topic: &str, queue_id: i32) -> Option<(u64, u64)> {
        queues
            .get(topic, queue_id)
            .map(|q| (q.min_offset(), q.next_offset()))
    }

    #[test]
    fn a_chunk_is_indexed_whole_and_continues_its_queues() {
        let mut queues = queues();
        let first = payload(100, &[("T", 0, 0), ("T", 1, 0), ("T", 0, 1)]);
        queues.dispatch_chunk(&first, 100).unwrap();
        assert_eq!(next(&queues, "T", 0), Some((0, 2)));
        assert_eq!(next(&queues, "T", 1), Some((0, 1)));
        let entry = queues.get("T", 0).unwrap().in_memory(1).unwrap();
        assert_eq!(entry.physical_offset, 100 + 2 * (first.len() as u64 / 3));

        let at = 100 + first.len() as u64;
        let gap = payload(at, &[("T", 0, 2), ("T", 1, 5)]);
        assert_eq!(
            queues.dispatch_chunk(&gap, at),
            Err(RecordMismatch::QueueGap {
                expected: 1,
                found: 5
            })
        );
        // Nothing of the refused chunk was indexed, not even its first record.
        assert_eq!(next(&queues, "T", 0), Some((0, 2)));
    }

    #[test]
    fn a_queue_that_never_held_anything_starts_at_its_first_record() {
        let mut queues = queues();
        queues
            .dispatch_chunk(&payload(0, &[("T", 3, 7)]), 0)
            .unwrap();
        assert_eq!(next(&queues, "T", 3), Some((7, 8)));
    }

    #[test]
    fn misplaced_or_malformed_records_refuse_the_whole_chunk() {
        let mut queues = queues();
        let records = payload(0, &[("T", 0, 0), ("T", -1, 0)]);
        assert_eq!(
            queues.dispatch_chunk(&records, 0),
            Err(RecordMismatch::WrongOffsets)
        );
        assert_eq!(
            queues.dispatch_chunk(&payload(0, &[("T", 0, 0)]), 8),
            Err(RecordMismatch::WrongOffsets)
        );
        let mut torn = payload(0, &[("T", 0, 0)]);
        torn.truncate(torn.len() - 1);
        assert_eq!(
            queues.dispatch_chunk(&torn, 0),
            Err(RecordMismatch::Malformed)
        );
        assert!(queues.is_empty());
    }

    #[test]
    fn new_queues_follow_rocketmqs_topic_rule_and_queue_id_range() {
        let mut queues = queues();
        for (topic, queue_id) in [("a.b", 0), ("a/b", 0), ("", 0), ("T", -1), ("T", 65_536)] {
            assert!(
                matches!(
                    queues.get_or_create(topic, queue_id),
                    Err(StoreError::InvalidTopic(_))
                ),
                "{topic:?} {queue_id}"
            );
        }
        assert!(queues.is_empty());
        let queue = queues.get_or_create("%RETRY%g", 65_535).unwrap();
        assert_eq!(queue.dir(), Path::new("/store/consumequeue/%RETRY%g/65535"));
        assert_eq!(queues.iter().count(), 1);
    }
}
