//! Reads: a queue's messages (PULL), a record by physical offset (VIEW_MESSAGE_BY_ID), offsets
//! and store times of queues, and the store's physical range.
//!
//! Readers see exactly the acknowledged records (lib.rs, "Visibility"), and every record
//! returned is checked against the consume-queue entry that led to it: a reader never gets
//! garbage.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use ringmq_protocol::message::record::{MAGIC_V1, MAGIC_V2, MIN_RECORD_BYTES, StoredRecord};

use super::MessageStore;
use crate::{
    StoreError,
    format::{
        CQ_ENTRY_BYTES, CqEntry, RECORD_PREFIX_BYTES, record_physical_offset, record_prefix,
        segment_name,
    },
    io::{Storage, StorageFile},
};

/// Consume-queue entries examined at most by one read (a read over a long run of filtered-out
/// messages returns early with the offset it reached).
const MAX_SCAN_ENTRIES: u64 = 2048;

/// Records of one segment read with one I/O when they lie at most this far apart.
const MAX_READ_GAP_BYTES: u64 = 64 << 10;

/// A read of a consume queue.
#[derive(Debug, Clone, Copy)]
pub struct ReadRequest<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Queue id.
    pub queue_id: i32,
    /// First queue offset wanted.
    pub offset: u64,
    /// Most messages to return.
    pub max_messages: u32,
    /// Most bytes of records to return (at least one record is returned if any matches).
    pub max_bytes: u64,
    /// Only messages whose tags hash is in this set (None: every message).
    pub tags_hashes: Option<&'a [i64]>,
}

/// Outcome of a read, in RocketMQ's terms (`GetMessageStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// Records were found.
    Found,
    /// The offset is the queue's max: nothing new yet (a pull parks here).
    NoNewMessage,
    /// Entries were examined but none matched the tag filter; `next_offset` skips them.
    NoMatchedMessage,
    /// The offset is below the queue's min (retention deleted it): the consumer must move.
    OffsetTooSmall,
    /// The offset is past the queue's max: the consumer must move.
    OffsetOverflow,
    /// The queue has never had a message.
    NoMessageInQueue,
    /// The store has no such queue.
    NoSuchQueue,
}

impl ReadStatus {
    /// Whether the consumer's offset is invalid and it should use `next_offset`
    /// (PULL_OFFSET_MOVED).
    pub const fn offset_moved(self) -> bool {
        matches!(self, Self::OffsetTooSmall | Self::OffsetOverflow)
    }
}

/// Result of [`MessageStore::read`].
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// What happened.
    pub status: ReadStatus,
    /// Matching records, each one whole stored record (docs/protocol.md §5.4); concatenated they
    /// are a PULL response body.
    pub records: Vec<Bytes>,
    /// Offset to read from next.
    pub next_offset: u64,
    /// Queue's min offset.
    pub min_offset: u64,
    /// Queue's max offset (one past the newest readable message).
    pub max_offset: u64,
}

impl ReadResult {
    /// Bytes of all records.
    pub fn record_bytes(&self) -> usize {
        self.records.iter().map(Bytes::len).sum()
    }
}

/// Offsets of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOffsets {
    /// First readable offset.
    pub min_offset: u64,
    /// One past the newest readable message.
    pub max_offset: u64,
}

impl<S: Storage> MessageStore<S> {
    /// Reads `len` bytes of commit log at `position`: from the cache of recent chunks when it
    /// has them, otherwise from the segment file.
    async fn read_log(&self, position: u64, len: usize) -> Result<Bytes, StoreError> {
        let segment = {
            let state = self.inner.state.borrow();
            if let Some(bytes) = state.log().cached(position, len) {
                return Ok(bytes);
            }
            state
                .log()
                .segment_of(position)
                .ok_or(StoreError::NoSuchMessage(position))?
        };
        let buf = BytesMut::with_capacity(len);
        let (result, buf) = segment
            .file()
            .read_exact_at(buf, position - segment.start())
            .await;
        result.map_err(|e| StoreError::io("read commit log", segment.path(), e))?;
        Ok(buf.freeze())
    }

    /// The stored record at `physical_offset` (VIEW_MESSAGE_BY_ID), checked for framing.
    pub async fn read_message_at(&self, physical_offset: u64) -> Result<Bytes, StoreError> {
        {
            let state = self.inner.state.borrow();
            let confirmed = state.confirmed(self.inner.config.flush_mode);
            if physical_offset < state.log().min_offset() || physical_offset >= confirmed {
                return Err(StoreError::NoSuchMessage(physical_offset));
            }
        }
        let head = self.read_log(physical_offset, RECORD_PREFIX_BYTES).await?;
        let Some((size, magic)) = record_prefix(&head) else {
            return Err(StoreError::NoSuchMessage(physical_offset));
        };
        if (magic != MAGIC_V1 && magic != MAGIC_V2) || (size as usize) < MIN_RECORD_BYTES {
            return Err(StoreError::NoSuchMessage(physical_offset));
        }
        let record = self.read_log(physical_offset, size as usize).await?;
        check_record(
            &record,
            physical_offset,
            size as u32,
            &self.inner.config.dir,
        )?;
        Ok(record)
    }

    /// Min and max offsets of a queue as readers see them; `None` if the queue does not exist.
    pub fn queue_offsets(&self, topic: &str, queue_id: i32) -> Option<QueueOffsets> {
        let state = self.inner.state.borrow();
        let confirmed = state.confirmed(self.inner.config.flush_mode);
        let queue = state.queues().get(topic, queue_id)?;
        Some(QueueOffsets {
            min_offset: queue.min_offset(),
            max_offset: queue.visible_next(confirmed),
        })
    }

    /// Every (topic, queue id) the store holds.
    pub fn queues(&self) -> Vec<(String, i32)> {
        let state = self.inner.state.borrow();
        let mut out: Vec<(String, i32)> = state
            .queues()
            .iter()
            .map(|queue| (queue.topic().to_owned(), queue.queue_id()))
            .collect();
        out.sort();
        out
    }

    /// First and one-past-last physical offsets held (acknowledged data).
    pub fn physical_range(&self) -> (u64, u64) {
        let state = self.inner.state.borrow();
        (
            state.log().min_offset(),
            state.confirmed(self.inner.config.flush_mode),
        )
    }

    /// Appends to `out` the consume-queue entries of `[from, upto)` that one step can get: from
    /// memory, or from the one queue file holding `from`. Nothing for an unknown queue.
    pub(super) async fn cq_entries(
        &self,
        topic: &str,
        queue_id: i32,
        from: u64,
        upto: u64,
        out: &mut Vec<CqEntry>,
    ) -> Result<(), StoreError> {
        let (file_start, file_end, handle, path) = {
            let state = self.inner.state.borrow();
            let Some(queue) = state.queues().get(topic, queue_id) else {
                return Ok(());
            };
            let mem_start = queue.mem_start();
            if from >= mem_start {
                for offset in from..upto {
                    if let Some(entry) = queue.in_memory(offset) {
                        out.push(entry);
                    }
                }
                return Ok(());
            }
            let file_start = queue.file_start(from);
            let file_end = (file_start + queue.entries_per_file())
                .min(mem_start)
                .min(upto);
            let handle = queue.open_file(file_start);
            let path = queue.dir().join(segment_name(file_start));
            (file_start, file_end, handle, path)
        };
        let file = if let Some(file) = handle {
            file
        } else {
            let file = self
                .inner
                .storage
                .open(&path, false)
                .await
                .map_err(|e| StoreError::io("open consume queue", &path, e))?;
            let mut state = self.inner.state.borrow_mut();
            if let Some(queue) = state.queues_mut().get_mut(topic, queue_id) {
                queue.set_file(file_start, Some(file.clone()));
            }
            file
        };
        let count = (file_end - from) as usize;
        let buf = BytesMut::with_capacity(count * CQ_ENTRY_BYTES);
        let (result, buf) = file
            .read_exact_at(buf, (from - file_start) * CQ_ENTRY_BYTES as u64)
            .await;
        result.map_err(|e| StoreError::io("read consume queue", &path, e))?;
        for raw in buf.chunks_exact(CQ_ENTRY_BYTES) {
            let mut entry = [0u8; CQ_ENTRY_BYTES];
            entry.copy_from_slice(raw);
            match CqEntry::decode(&entry) {
                Some(entry) => out.push(entry),
                None => {
                    return Err(StoreError::Corrupt {
                        path,
                        reason: "zeroed consume-queue entry below the flushed mark".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Reads messages of a queue: the records a PULL returns, with offsets and status.
    pub async fn read(&self, request: &ReadRequest<'_>) -> Result<ReadResult, StoreError> {
        let Some(QueueOffsets {
            min_offset,
            max_offset,
        }) = self.queue_offsets(request.topic, request.queue_id)
        else {
            return Ok(ReadResult {
                status: ReadStatus::NoSuchQueue,
                records: Vec::new(),
                next_offset: 0,
                min_offset: 0,
                max_offset: 0,
            });
        };
        let mut result = ReadResult {
            status: ReadStatus::Found,
            records: Vec::new(),
            next_offset: request.offset,
            min_offset,
            max_offset,
        };
        let offset = request.offset;
        let early = if max_offset == 0 {
            Some((ReadStatus::NoMessageInQueue, 0))
        } else if offset < min_offset {
            Some((ReadStatus::OffsetTooSmall, min_offset))
        } else if offset == max_offset {
            Some((ReadStatus::NoNewMessage, offset))
        } else if offset > max_offset {
            Some((ReadStatus::OffsetOverflow, max_offset))
        } else {
            None
        };
        if let Some((status, next)) = early {
            result.status = status;
            result.next_offset = next;
            return Ok(result);
        }
        let upto = max_offset.min(offset + MAX_SCAN_ENTRIES);
        let mut entries = Vec::new();
        let mut from = offset;
        while from < upto && entries.len() < MAX_SCAN_ENTRIES as usize {
            let before = entries.len();
            self.cq_entries(request.topic, request.queue_id, from, upto, &mut entries)
                .await?;
            if entries.len() == before {
                break;
            }
            from += (entries.len() - before) as u64;
        }
        let max_messages = request.max_messages.max(1) as usize;
        let mut bytes = 0u64;
        let mut next = offset;
        let mut selected: Vec<CqEntry> = Vec::new();
        for entry in &entries {
            if selected.len() >= max_messages
                || (!selected.is_empty() && bytes + u64::from(entry.size) > request.max_bytes)
            {
                break;
            }
            next += 1;
            if let Some(wanted) = request.tags_hashes
                && !wanted.contains(&entry.tags_hash)
            {
                continue;
            }
            bytes += u64::from(entry.size);
            selected.push(*entry);
        }
        result.next_offset = next;
        if selected.is_empty() {
            result.status = ReadStatus::NoMatchedMessage;
            return Ok(result);
        }
        self.fetch_records(&selected, &mut result.records).await?;
        Ok(result)
    }

    /// Reads the records of `entries`: each from the cache of recent chunks when it is there
    /// (no copy, no I/O), the others with one read per run of neighbours in one segment.
    async fn fetch_records(
        &self,
        entries: &[CqEntry],
        out: &mut Vec<Bytes>,
    ) -> Result<(), StoreError> {
        let dir = &self.inner.config.dir;
        let segment_bytes = self.inner.config.segment_bytes;
        let mut index = 0;
        while index < entries.len() {
            let cached = self
                .inner
                .state
                .borrow()
                .log()
                .cached(entries[index].physical_offset, entries[index].size as usize);
            if let Some(record) = cached {
                check_record(
                    &record,
                    entries[index].physical_offset,
                    entries[index].size,
                    dir,
                )?;
                out.push(record);
                index += 1;
                continue;
            }
            let run_start = entries[index].physical_offset;
            let segment_end = run_start - run_start % segment_bytes + segment_bytes;
            let mut run_end = entries[index].end();
            let mut last = index + 1;
            while last < entries.len()
                && entries[last].physical_offset >= run_end
                && entries[last].physical_offset - run_end <= MAX_READ_GAP_BYTES
                && entries[last].end() <= segment_end
            {
                run_end = entries[last].end();
                last += 1;
            }
            let run = self
                .read_log(run_start, (run_end - run_start) as usize)
                .await?;
            for entry in &entries[index..last] {
                let from = (entry.physical_offset - run_start) as usize;
                let record = run.slice(from..from + entry.size as usize);
                check_record(&record, entry.physical_offset, entry.size, dir)?;
                out.push(record);
            }
            index = last;
        }
        Ok(())
    }

    /// Store timestamp of the record at a queue offset.
    async fn store_time_at(
        &self,
        topic: &str,
        queue_id: i32,
        offset: u64,
    ) -> Result<i64, StoreError> {
        let mut entries = Vec::with_capacity(1);
        self.cq_entries(topic, queue_id, offset, offset + 1, &mut entries)
            .await?;
        let entry = entries.first().ok_or(StoreError::NoSuchMessage(offset))?;
        let record = self.read_message_at(entry.physical_offset).await?;
        let (decoded, _) = StoredRecord::decode(&record).map_err(|e| StoreError::Corrupt {
            path: self.inner.config.dir.clone(),
            reason: format!("record at {}: {e}", entry.physical_offset),
        })?;
        Ok(decoded.store_timestamp_ms)
    }

    /// SEARCH_OFFSET_BY_TIMESTAMP: the first queue offset whose message was stored at or after
    /// `timestamp_ms`; the max offset when every message is older; `None` for an unknown queue.
    pub async fn search_offset_by_time(
        &self,
        topic: &str,
        queue_id: i32,
        timestamp_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let Some(QueueOffsets {
            min_offset,
            max_offset,
        }) = self.queue_offsets(topic, queue_id)
        else {
            return Ok(None);
        };
        let (mut low, mut high) = (min_offset, max_offset);
        while low < high {
            let mid = low + (high - low) / 2;
            if self.store_time_at(topic, queue_id, mid).await? < timestamp_ms {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        Ok(Some(low))
    }

    /// GET_EARLIEST_MSG_STORETIME: store time of the queue's oldest message.
    pub async fn earliest_store_time(
        &self,
        topic: &str,
        queue_id: i32,
    ) -> Result<Option<i64>, StoreError> {
        match self.queue_offsets(topic, queue_id) {
            Some(offsets) if offsets.max_offset > offsets.min_offset => self
                .store_time_at(topic, queue_id, offsets.min_offset)
                .await
                .map(Some),
            _ => Ok(None),
        }
    }
}

/// Checks that `record` is a stored record of `size` bytes at `position`: a consume queue never
/// leads a reader to garbage.
fn check_record(record: &[u8], position: u64, size: u32, dir: &Path) -> Result<(), StoreError> {
    let ok = record.len() == size as usize
        && record.len() >= MIN_RECORD_BYTES
        && record_prefix(record).is_some_and(|(total, magic)| {
            total == size as i32 && matches!(magic, MAGIC_V1 | MAGIC_V2)
        })
        && record_physical_offset(record) == Some(position as i64);
    if ok {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            path: dir.to_path_buf(),
            reason: format!("no valid record of {size} bytes at physical offset {position}"),
        })
    }
}
