//! Appends: records in, offsets assigned, bytes encoded into the open chunk, then a wait for
//! the acknowledgement the flush mode promises.

use ringmq_protocol::message::{body_crc, record::StoredRecord};

use super::MessageStore;
use crate::{
    StoreError, commitlog::NeedSegment, consume_queue::record_tags_hash, format::CqEntry,
    io::Storage,
};

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Queue offset of the first message; the others follow contiguously.
    pub queue_offset: u64,
    /// Physical offset of the first record; the others follow back to back, each
    /// `StoredRecord::encoded_len` bytes after the previous one.
    pub physical_offset: u64,
    /// Messages appended.
    pub message_count: u32,
    /// Bytes of records appended.
    pub record_bytes: u64,
    /// Store timestamp given to every record of the append.
    pub store_timestamp_ms: i64,
}

/// Why an append must retry.
#[derive(Debug)]
enum AppendRetry {
    NeedSegment,
    Failed(StoreError),
}

impl<S: Storage> MessageStore<S> {
    /// Appends one message. See [`MessageStore::append_batch`].
    pub async fn append(&self, record: &StoredRecord<'_>) -> Result<AppendResult, StoreError> {
        self.append_batch(std::slice::from_ref(record)).await
    }

    /// Appends messages of one queue (topic and queue id of the first record), back to back in
    /// one chunk. The store fills in queue offset, physical offset, store timestamp (from
    /// [`StoreConfig::clock`](crate::StoreConfig::clock)) and BODYCRC; every other field is
    /// stored as given.
    ///
    /// Resolves when the records are acknowledged under the store's
    /// [`FlushMode`](crate::FlushMode): written to the file (ASYNC_FLUSH) or covered by an
    /// fdatasync (SYNC_FLUSH). If the future is dropped early the records may still be stored.
    pub async fn append_batch(
        &self,
        records: &[StoredRecord<'_>],
    ) -> Result<AppendResult, StoreError> {
        let first = records.first().ok_or(StoreError::EmptyBatch)?;
        let mut total = 0usize;
        for record in records {
            record.validate()?;
            if record.topic != first.topic || record.queue_id != first.queue_id {
                return Err(StoreError::InvalidTopic(format!(
                    "a batch mixes queues: {}:{} and {}:{}",
                    first.topic, first.queue_id, record.topic, record.queue_id
                )));
            }
            total += record.encoded_len();
        }
        let (result, end) = loop {
            self.wait_for_room().await?;
            match self.try_append(records, total) {
                Ok(done) => break done,
                Err(AppendRetry::NeedSegment) => self.prepare_segment().await?,
                Err(AppendRetry::Failed(err)) => return Err(err),
            }
        };
        self.inner.work.notify();
        self.wait_confirmed(end).await?;
        Ok(result)
    }

    /// Backpressure: waits while more than `max_pending_bytes` are accepted and not yet
    /// written; fails at once when the store refuses writes.
    pub(super) async fn wait_for_room(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        loop {
            let progress = {
                let state = inner.state.borrow();
                state.check_writable(inner.config.hard_watermark_percent)?;
                if state.log().pending_bytes() < inner.config.max_pending_bytes {
                    return Ok(());
                }
                inner.progress.listen()
            };
            progress.await;
        }
    }

    /// The synchronous part of an append: offsets are assigned and the records encoded into the
    /// open chunk, all without yielding, so appends are ordered and never interleave. Returns
    /// the result and the end of the last record.
    fn try_append(
        &self,
        records: &[StoredRecord<'_>],
        total: usize,
    ) -> Result<(AppendResult, u64), AppendRetry> {
        let inner = &self.inner;
        let mut state = inner.state.borrow_mut();
        let (log, queues) = state.log_and_queues_mut();
        let max_record_bytes = log.max_record_bytes();
        if total > max_record_bytes {
            return Err(AppendRetry::Failed(StoreError::MessageTooLarge {
                bytes: total,
                max_bytes: max_record_bytes,
            }));
        }
        let Some(first) = records.first() else {
            return Err(AppendRetry::Failed(StoreError::EmptyBatch));
        };
        let queue = queues
            .get_or_create(first.topic, first.queue_id)
            .map_err(AppendRetry::Failed)?;
        let first_queue_offset = queue.next_offset();
        let position = match log.reserve(total) {
            Ok(position) => position,
            Err(NeedSegment) => return Err(AppendRetry::NeedSegment),
        };
        let store_timestamp_ms = inner.config.clock.now_ms();
        let mut physical_offset = position;
        let Some(buf) = log.chunk_buf() else {
            return Err(AppendRetry::Failed(StoreError::Closed));
        };
        for (queue_offset, record) in (first_queue_offset..).zip(records) {
            let mut stored = *record;
            stored.queue_offset = queue_offset as i64;
            stored.physical_offset = physical_offset as i64;
            stored.store_timestamp_ms = store_timestamp_ms;
            stored.body_crc = body_crc(record.body);
            let size = stored.encoded_len();
            // Validated before reserving: encoding cannot fail here.
            stored
                .encode(buf)
                .map_err(|e| AppendRetry::Failed(e.into()))?;
            queue.push(CqEntry {
                physical_offset,
                size: size as u32,
                tags_hash: record_tags_hash(record.properties),
            });
            physical_offset += size as u64;
        }
        Ok((
            AppendResult {
                queue_offset: first_queue_offset,
                physical_offset: position,
                message_count: records.len() as u32,
                record_bytes: total as u64,
                store_timestamp_ms,
            },
            physical_offset,
        ))
    }
}
