//! What a slave's store does (docs/architecture.md §6): take a master's chunks exactly as the
//! master wrote them, at the same physical offsets, and move an empty store's start to the
//! master's oldest segment. The master side reads with crate::log_reader and publishes its
//! marks through crate::watch.
//!
//! Every replicated chunk is verified before anything of it is stored: its position-bound
//! header CRC, its payload CRC, each record's framing, offsets and topic name, and that its
//! records continue their queues. A peer whose log diverged is caught at the first chunk.

use std::{rc::Rc, sync::Arc};

use bytes::Bytes;
use ringmq_protocol::message::record::StoredRecord;

use super::MessageStore;
use crate::{
    SHARD_SHIFT, StoreError,
    commitlog::NeedSegment,
    files::create_segment,
    format::{CHUNK_HEADER_BYTES, ChunkHeader, read_chunk_header},
    io::Storage,
    queues::{QUEUE_ID_LIMIT, check_topic},
    watch::LogWatch,
};

impl<S: Storage> MessageStore<S> {
    /// Waits until everything below `end` is acknowledged (readable): written under
    /// ASYNC_FLUSH, durable under SYNC_FLUSH. A slave wakes its parked pulls after it.
    pub async fn wait_acknowledged(&self, end: u64) -> Result<(), StoreError> {
        self.wait_confirmed(end).await
    }

    /// The log's marks, shared with other threads.
    pub fn watch(&self) -> Arc<LogWatch> {
        Arc::clone(&self.inner.watch)
    }

    /// One past the last byte accepted (appended or replicated, written or not): where a slave
    /// asks its master to continue.
    pub fn log_end(&self) -> u64 {
        // A segment closed by an end marker, or with no room for a header, is done: the log
        // continues at the next segment's start, even before that segment exists (creating it
        // may have failed on a full disk; the master streams from there).
        self.inner.state.borrow().log().end()
    }

    /// Whether the store holds no byte of log and no queue: a new store, or one moved by
    /// [`MessageStore::start_at`] that has received nothing since.
    pub fn is_pristine(&self) -> bool {
        let state = self.inner.state.borrow();
        let log = state.log();
        log.write_pos() == log.min_offset()
            && log.segment_count() <= 1
            && !log.has_pending()
            && log.in_flight() == 0
            && state.queues().is_empty()
    }

    /// Moves a pristine store (see [`MessageStore::is_pristine`]) to start at `position`, a
    /// segment start of this shard: a new slave copies its master from the master's oldest
    /// segment, at the same physical offsets.
    pub async fn start_at(&self, position: u64) -> Result<(), StoreError> {
        let inner = &self.inner;
        let config = &inner.config;
        let base = config.base_offset();
        if position < base
            || (position - base) % config.segment_bytes != 0
            || position >> SHARD_SHIFT != base >> SHARD_SHIFT
        {
            return Err(StoreError::ReplicaRefused(format!(
                "{position} is not a segment start of shard {}",
                config.shard
            )));
        }
        if !self.is_pristine() {
            return Err(StoreError::ReplicaRefused(
                "only an empty store can move its start".into(),
            ));
        }
        if position == self.log_end() {
            return Ok(());
        }
        let segment = create_segment(&inner.storage, config, position).await?;
        let old = inner
            .state
            .borrow_mut()
            .log_mut()
            .restart_at(Rc::new(segment), position);
        for segment in old {
            inner
                .storage
                .remove(segment.path())
                .await
                .map_err(|e| StoreError::io("remove segment", segment.path(), e))?;
        }
        inner.watch.reset(position);
        tracing::info!(dir = %config.dir.display(), position, "empty store now starts at its master's oldest segment");
        self.checkpoint(false).await
    }

    /// Takes commit-log chunks exactly as the master wrote them, starting at `position` (this
    /// log's end, or the next segment's start when this segment is done), verifies every chunk
    /// (position-bound header CRC, payload CRC, each record's framing, offsets and topic name),
    /// indexes their records in the consume queues and queues the bytes for writing at the
    /// same offsets. Returns the new end once the bytes are queued; [`LogWatch`] shows when
    /// they are written or durable.
    ///
    /// Chunks before a bad one are kept; the bad one and everything after it are refused with
    /// [`StoreError::ReplicaRefused`], and the store stays as it was before that chunk.
    pub async fn replicate(&self, position: u64, data: Bytes) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let mut at = 0usize;
        let mut position = position;
        loop {
            // Backpressure, as for appends.
            self.wait_for_room().await?;
            match self.replicate_some(&mut position, &data, &mut at) {
                Ok(()) => {
                    inner.work.notify();
                    return Ok(position);
                }
                Err(ReplicaStep::NeedSegment) => {
                    inner.work.notify();
                    self.prepare_segment().await?;
                }
                Err(ReplicaStep::Backpressure) => inner.work.notify(),
                Err(ReplicaStep::Refused(reason)) => {
                    inner.work.notify();
                    return Err(StoreError::ReplicaRefused(reason));
                }
            }
        }
    }

    /// The synchronous part of [`MessageStore::replicate`]: as many chunks as fit without
    /// waiting. Advances `position` and `at` over what it took.
    fn replicate_some(
        &self,
        position: &mut u64,
        data: &Bytes,
        at: &mut usize,
    ) -> Result<(), ReplicaStep> {
        let inner = &self.inner;
        let config = &inner.config;
        let mut state = inner.state.borrow_mut();
        let (log, queues) = state.log_and_queues_mut();
        if log.has_open_chunk() {
            return Err(ReplicaStep::Refused(
                "the store has local appends: a slave's log only takes replicated chunks".into(),
            ));
        }
        loop {
            let write_pos = log.write_pos();
            let active_end = log.next_segment_start();
            if *position == active_end && log.active_segment_done() {
                // The master went on to its next segment: after an end marker, or from a tail
                // too short for one (or a full segment, after a restart).
                log.roll_replica()
                    .map_err(|NeedSegment| ReplicaStep::NeedSegment)?;
                continue;
            }
            if *position != write_pos {
                return Err(ReplicaStep::Refused(format!(
                    "data for physical offset {position} but this log ends at {write_pos}"
                )));
            }
            if *at >= data.len() {
                return Ok(());
            }
            if log.pending_bytes() >= config.max_pending_bytes {
                return Err(ReplicaStep::Backpressure);
            }
            let rest = &data[*at..];
            let header = read_chunk_header(rest, write_pos).map_err(|fault| {
                ReplicaStep::Refused(format!("no valid chunk header at {write_pos} ({fault:?})"))
            })?;
            let (chunk_len, end_marker) = match header {
                ChunkHeader::End => (CHUNK_HEADER_BYTES, true),
                ChunkHeader::Records {
                    payload_bytes,
                    payload_crc,
                } => {
                    let len = CHUNK_HEADER_BYTES + payload_bytes as usize;
                    let Some(payload) = rest.get(CHUNK_HEADER_BYTES..len) else {
                        return Err(ReplicaStep::Refused(format!(
                            "chunk at {write_pos} of {len} bytes is cut short at {} bytes",
                            rest.len()
                        )));
                    };
                    if crc32c::crc32c(payload) != payload_crc {
                        return Err(ReplicaStep::Refused(format!(
                            "chunk at {write_pos}: payload CRC mismatch"
                        )));
                    }
                    check_replica_records(payload).map_err(ReplicaStep::Refused)?;
                    (len, false)
                }
            };
            if write_pos + chunk_len as u64 > active_end {
                return Err(ReplicaStep::Refused(format!(
                    "chunk at {write_pos} of {chunk_len} bytes crosses the segment end {active_end}"
                )));
            }
            if !end_marker
                && queues
                    .dispatch_chunk(
                        &rest[CHUNK_HEADER_BYTES..chunk_len],
                        write_pos + CHUNK_HEADER_BYTES as u64,
                    )
                    .is_err()
            {
                return Err(ReplicaStep::Refused(format!(
                    "chunk at {write_pos}: records do not continue their queues"
                )));
            }
            log.push_raw(data.slice(*at..*at + chunk_len));
            *at += chunk_len;
            *position = write_pos + chunk_len as u64;
            if end_marker {
                // The master continues in its next segment; so does this log (above).
                *position = active_end;
                log.end_segment();
            }
        }
    }
}

/// Outcome of [`MessageStore::replicate_some`] when it stops before the end of the data.
enum ReplicaStep {
    NeedSegment,
    Backpressure,
    Refused(String),
}

/// Checks what [`Queues::check_chunk`](crate::queues::Queues::check_chunk) does not: names
/// that become directories, and queue ids in range.
fn check_replica_records(payload: &[u8]) -> Result<(), String> {
    let mut at = 0;
    while at < payload.len() {
        let (record, size) = StoredRecord::decode(&payload[at..])
            .map_err(|e| format!("malformed record in a replicated chunk: {e}"))?;
        check_topic(record.topic).map_err(|e| e.to_string())?;
        if !(0..QUEUE_ID_LIMIT).contains(&record.queue_id) {
            return Err(format!("queue id {} out of range", record.queue_id));
        }
        at += size;
    }
    Ok(())
}
