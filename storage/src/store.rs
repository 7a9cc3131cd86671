//! [`MessageStore`]: one shard's store. Appends, reads, lookups and the background tasks
//! (writer, flusher, checkpoint, retention) that move data from memory to disk.

use std::{
    cell::RefCell,
    collections::HashMap,
    path::{Path, PathBuf},
    rc::Rc,
    task::Poll,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::{Bytes, BytesMut};
use compio::runtime::JoinHandle;
use ringmq_protocol::message::{
    body_crc,
    record::{MAGIC_V1, MAGIC_V2, MIN_RECORD_BYTES, StoredRecord},
    tags_hash,
};

use crate::{
    FlushMode, StoreConfig, StoreError,
    commitlog::{LogState, NeedSegment, PendingWrite, Segment},
    consume_queue::ConsumeQueue,
    format::{CQ_ENTRY_BYTES, CqEntry, segment_name},
    io::{Storage, StorageFile},
    signal::Signal,
};

/// Consume-queue entries examined at most by one read (a read over a long run of filtered-out
/// messages returns early with the offset it reached).
const MAX_SCAN_ENTRIES: u64 = 2048;

/// Commit-log writes issued at once.
pub(crate) const MAX_WRITES_IN_FLIGHT: usize = 4;

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

/// Topics by name. FNV-1a instead of SipHash: names come from the broker's validated topic
/// table, not from an attacker choosing collisions, and the lookup runs on every append.
pub(crate) type QueueMap<F> =
    HashMap<Box<str>, Vec<Option<ConsumeQueue<F>>>, std::hash::BuildHasherDefault<Fnv1a>>;

/// 64-bit FNV-1a.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xCBF2_9CE4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3);
        }
    }
}

/// Mutable state of a store. Only touched in synchronous sections: never borrowed across an
/// `.await`.
#[derive(Debug)]
pub(crate) struct State<F> {
    pub log: LogState<F>,
    pub queues: QueueMap<F>,
    /// First fatal write failure: writes are refused from then on.
    pub failure: Option<String>,
    /// Disk usage above the hard watermark, when it is.
    pub disk_full: Option<f64>,
    pub closing: bool,
    /// Errors of segment creation not worth a sticky failure (ENOSPC), reported to appenders.
    pub segment_error: Option<String>,
}

impl<F: Clone> State<F> {
    pub fn queue(&self, topic: &str, queue_id: i32) -> Option<&ConsumeQueue<F>> {
        let index = usize::try_from(queue_id).ok()?;
        self.queues.get(topic)?.get(index)?.as_ref()
    }

    pub fn queue_mut(&mut self, topic: &str, queue_id: i32) -> Option<&mut ConsumeQueue<F>> {
        let index = usize::try_from(queue_id).ok()?;
        self.queues.get_mut(topic)?.get_mut(index)?.as_mut()
    }

    /// The queue, created empty if new.
    pub fn queue_or_create(
        &mut self,
        topic: &str,
        queue_id: i32,
        root: &Path,
        entries_per_file: u64,
    ) -> Result<&mut ConsumeQueue<F>, StoreError> {
        let index = usize::try_from(queue_id)
            .ok()
            .filter(|&i| i < 65_536)
            .ok_or_else(|| StoreError::InvalidTopic(format!("{topic} (queue id {queue_id})")))?;
        if !self.queues.contains_key(topic) {
            validate_topic(topic)?;
            self.queues.insert(topic.into(), Vec::new());
        }
        let slots = self
            .queues
            .get_mut(topic)
            .ok_or_else(|| StoreError::InvalidTopic(topic.to_owned()))?;
        if slots.len() <= index {
            slots.resize_with(index + 1, || None);
        }
        let slot = &mut slots[index];
        Ok(slot.get_or_insert_with(|| {
            ConsumeQueue::new(
                Rc::from(topic),
                queue_id,
                cq_dir(root, topic, queue_id),
                entries_per_file,
                0,
                0,
            )
        }))
    }

    /// What readers may see: acknowledged bytes.
    pub fn confirmed(&self, mode: FlushMode) -> u64 {
        match mode {
            FlushMode::Sync => self.log.durable,
            FlushMode::Async => self.log.written,
        }
    }

    pub fn check_writable(&self, hard_percent: u8) -> Result<(), StoreError> {
        if let Some(reason) = &self.failure {
            return Err(StoreError::WritesDisabled {
                reason: reason.clone(),
            });
        }
        if self.closing {
            return Err(StoreError::Closed);
        }
        if let Some(used_percent) = self.disk_full {
            return Err(StoreError::DiskFull {
                used_percent,
                limit_percent: hard_percent,
            });
        }
        Ok(())
    }
}

/// Topic names become directory names: refuse anything that is not RocketMQ's topic alphabet.
pub(crate) fn validate_topic(topic: &str) -> Result<(), StoreError> {
    let valid = !topic.is_empty()
        && topic.len() <= 255
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'%' | b'|' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidTopic(topic.to_owned()))
    }
}

pub(crate) fn cq_dir(root: &Path, topic: &str, queue_id: i32) -> PathBuf {
    root.join("consumequeue")
        .join(topic)
        .join(queue_id.to_string())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The tags hash of a record's properties (0 without TAGS), as the consume queue stores it.
///
/// A byte scan for `TAGS\u{1}` at a field start (the hot path runs this once per append); the
/// last occurrence wins, as in Java's map. Agrees with `Properties::get(TAGS)` (tested).
pub(crate) fn record_tags_hash(properties: &str) -> i64 {
    const NAME: &[u8] = b"TAGS\x01";
    let bytes = properties.as_bytes();
    let mut found: Option<&str> = None;
    let mut field_start = 0;
    while field_start < bytes.len() {
        let field_end = bytes[field_start..]
            .iter()
            .position(|&b| b == 2)
            .map_or(bytes.len(), |at| field_start + at);
        let field = &bytes[field_start..field_end];
        if field.len() > NAME.len() && field.starts_with(NAME) {
            // Both ends are ASCII separators, so the slice is on char boundaries.
            found = properties.get(field_start + NAME.len()..field_end);
        }
        field_start = field_end + 1;
    }
    found.map_or(0, tags_hash)
}

/// Shared by the store handle and its background tasks.
#[derive(Debug)]
pub(crate) struct Inner<S: Storage> {
    pub storage: S,
    pub config: StoreConfig,
    pub state: RefCell<State<S::File>>,
    /// New bytes to write (wakes the writer).
    pub work: Signal,
    /// written/durable advanced, a failure happened, space freed, a segment was prepared.
    pub progress: Signal,
    /// Someone wants an fdatasync now (checkpoint, close, SYNC_FLUSH writes).
    pub flush_request: Signal,
    /// Stops the periodic tasks.
    pub stop: Signal,
    pub tasks: RefCell<Vec<JoinHandle<()>>>,
    /// Appenders waiting for acknowledgement.
    pub acks: crate::ack::AckQueue,
    /// A checkpoint is being written (they must not overlap: one temporary file).
    pub checkpoint_busy: std::cell::Cell<bool>,
    /// Durations (µs) of recent fdatasync rounds, for the broker's flush-latency metric;
    /// bounded, drained by [`MessageStore::drain_sync_latencies_us`].
    pub sync_latencies_us: RefCell<Vec<u32>>,
    /// The log's marks for other threads (replication).
    pub watch: std::sync::Arc<crate::replica::LogWatch>,
}

/// Sync durations kept until drained (older ones are dropped once full).
pub(crate) const MAX_SYNC_SAMPLES: usize = 4096;

/// One shard's message store. Cheap to clone (a reference-counted handle); `!Send`: it belongs
/// to the shard thread that opened it.
#[derive(Debug)]
pub struct MessageStore<S: Storage> {
    pub(crate) inner: Rc<Inner<S>>,
}

impl<S: Storage> Clone for MessageStore<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<S: Storage> MessageStore<S> {
    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Appends one message. See [`MessageStore::append_batch`].
    pub async fn append(&self, record: &StoredRecord<'_>) -> Result<AppendResult, StoreError> {
        self.append_batch(std::slice::from_ref(record)).await
    }

    /// Appends messages of one queue (topic and queue id of the first record), back to back in
    /// one chunk. The store fills in queue offset, physical offset, store timestamp and BODYCRC;
    /// every other field is stored as given.
    ///
    /// Resolves when the records are acknowledged under the store's [`FlushMode`]: written to
    /// the file (ASYNC_FLUSH) or covered by an fdatasync (SYNC_FLUSH). If the future is dropped
    /// early the records may still be stored.
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
        let inner = &self.inner;
        let (result, end) = loop {
            // Backpressure: wait while the writer is behind by more than the limit.
            loop {
                let progress = {
                    let state = inner.state.borrow();
                    state.check_writable(inner.config.hard_watermark_percent)?;
                    if state.log.pending_bytes < inner.config.max_pending_bytes {
                        break;
                    }
                    inner.progress.listen()
                };
                progress.await;
            }
            match self.try_append(records, total) {
                Ok(done) => break done,
                Err(AppendRetry::NeedSegment) => self.prepare_segment().await?,
                Err(AppendRetry::Failed(err)) => return Err(err),
            }
        };
        inner.work.notify();
        self.wait_confirmed(end).await?;
        Ok(result)
    }

    /// The synchronous part of an append: offsets are assigned and the records encoded into the
    /// open chunk, all without yielding, so appends are ordered and never interleave.
    fn try_append(
        &self,
        records: &[StoredRecord<'_>],
        total: usize,
    ) -> Result<(AppendResult, u64), AppendRetry> {
        let inner = &self.inner;
        let config = &inner.config;
        let mut state = inner.state.borrow_mut();
        let state = &mut *state;
        let max_record_bytes = state.log.max_record_bytes();
        if total > max_record_bytes {
            return Err(AppendRetry::Failed(StoreError::MessageTooLarge {
                bytes: total,
                max_bytes: max_record_bytes,
            }));
        }
        let first = &records[0];
        let queue = state
            .queue_or_create(
                first.topic,
                first.queue_id,
                &config.dir,
                config.cq_entries_per_file,
            )
            .map_err(AppendRetry::Failed)?;
        let first_queue_offset = queue.next_offset();
        let position = match state.log.reserve(total) {
            Ok(position) => position,
            Err(NeedSegment) => return Err(AppendRetry::NeedSegment),
        };
        let store_timestamp_ms = now_ms();
        let mut physical_offset = position;
        let Some(buf) = state.log.chunk_buf() else {
            return Err(AppendRetry::Failed(StoreError::Closed));
        };
        let queue_index = first.queue_id as usize;
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
            if let Some(Some(queue)) = state
                .queues
                .get_mut(first.topic)
                .and_then(|slots| slots.get_mut(queue_index))
            {
                queue.push(CqEntry {
                    physical_offset,
                    size: size as u32,
                    tags_hash: record_tags_hash(record.properties),
                });
            }
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

    /// Waits until `end` is acknowledged, or fails if the log failed before getting there.
    pub(crate) async fn wait_confirmed(&self, end: u64) -> Result<(), StoreError> {
        let inner = &self.inner;
        std::future::poll_fn(|cx| {
            {
                let state = inner.state.borrow();
                if state.confirmed(inner.config.flush_mode) >= end {
                    return Poll::Ready(Ok(()));
                }
                if let Some(reason) = &state.failure {
                    return Poll::Ready(Err(StoreError::WritesDisabled {
                        reason: reason.clone(),
                    }));
                }
            }
            // Woken only by the ack queue (which removed the entry) or spuriously: register
            // again either way; a duplicate entry costs one extra wake.
            inner.acks.register(end, cx.waker().clone());
            if inner.config.flush_mode == FlushMode::Sync {
                inner.flush_request.notify();
            }
            Poll::Pending
        })
        .await
    }

    /// Wakes the appenders whose records are now acknowledged.
    pub(crate) fn wake_acknowledged(&self) {
        let confirmed = self
            .inner
            .state
            .borrow()
            .confirmed(self.inner.config.flush_mode);
        self.inner.acks.wake_up_to(confirmed);
    }

    /// Creates the next segment (or waits for the task already creating it).
    pub(crate) async fn prepare_segment(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let start = {
            let mut state = inner.state.borrow_mut();
            if state.log.spare_segment.is_some() {
                return Ok(());
            }
            if state.log.preparing_segment {
                None
            } else {
                state.log.preparing_segment = true;
                Some(state.log.next_segment_start())
            }
        };
        let Some(start) = start else {
            // Another task is creating it: wait for its outcome, then let the caller retry.
            inner.progress.listen().await;
            return Ok(());
        };
        let result = self.create_segment(start).await;
        let mut state = inner.state.borrow_mut();
        state.log.preparing_segment = false;
        let outcome = match result {
            Ok(segment) => {
                state.log.spare_segment = Some(Rc::new(segment));
                state.segment_error = None;
                Ok(())
            }
            Err(err) => {
                state.segment_error = Some(err.to_string());
                Err(err)
            }
        };
        drop(state);
        inner.progress.notify();
        outcome
    }

    pub(crate) async fn create_segment(&self, start: u64) -> Result<Segment<S::File>, StoreError> {
        let inner = &self.inner;
        let dir = inner.config.dir.join("commitlog");
        let path = dir.join(segment_name(start));
        let file = inner
            .storage
            .open(&path, true)
            .await
            .map_err(|e| StoreError::io("create segment", &path, e))?;
        if inner.config.preallocate
            && let Err(err) = file.allocate(inner.config.segment_bytes).await
        {
            // Leave no half-allocated segment behind: the next attempt starts afresh.
            let _ = inner.storage.remove(&path).await;
            return Err(StoreError::io("allocate segment", &path, err));
        }
        inner
            .storage
            .sync_dir(&dir)
            .await
            .map_err(|e| StoreError::io("sync directory", &dir, e))?;
        Ok(Segment { start, file, path })
    }

    /// Marks the store failed: every later write is refused and waiting appends wake up.
    pub(crate) fn fail(&self, reason: String) {
        tracing::error!(dir = %self.inner.config.dir.display(), %reason, "commit log failed; refusing writes");
        let mut state = self.inner.state.borrow_mut();
        if state.failure.is_none() {
            state.failure = Some(reason);
        }
        drop(state);
        self.inner.progress.notify();
        self.inner.acks.wake_all();
    }

    /// The writer task: issues pending chunks as writes, up to [`MAX_WRITES_IN_FLIGHT`] at a
    /// time, while appends keep filling the next chunk. Keeping several writes queued lets the
    /// kernel copy one chunk while the shard prepares the next (buffered writes to ext4 are
    /// served by an io_uring worker thread, and a queue of one would idle it between writes).
    pub(crate) async fn run_writer(self) {
        let inner = &self.inner;
        let mut writes: Vec<PendingWrite<S::File>> = Vec::new();
        loop {
            let wake = {
                let mut state = inner.state.borrow_mut();
                if state.failure.is_some() {
                    return;
                }
                let in_flight = state.log.in_flight();
                if state.log.has_pending() && in_flight < MAX_WRITES_IN_FLIGHT {
                    state.log.take_writes(&mut writes);
                    for write in &writes {
                        state.log.start_write(write.position);
                    }
                    None
                } else if state.closing && !state.log.has_pending() && in_flight == 0 {
                    return;
                } else {
                    Some(inner.work.listen())
                }
            };
            if let Some(wake) = wake {
                wake.await;
                continue;
            }
            for write in writes.drain(..) {
                compio::runtime::spawn(self.clone().write_chunk(write)).detach();
            }
        }
    }

    /// Writes one chunk and applies its completion.
    async fn write_chunk(self, write: PendingWrite<S::File>) {
        let inner = &self.inner;
        let at = write.position - write.segment.start;
        let file = write.segment.file.clone();
        let (result, bytes) = file.write_all_at(write.bytes, at).await;
        if let Err(err) = result {
            self.fail(format!(
                "write of {} bytes at {} to {} failed: {err}",
                bytes.len(),
                write.position,
                write.segment.path.display()
            ));
            inner.work.notify();
            return;
        }
        let (advanced, wants_spare) = {
            let mut state = inner.state.borrow_mut();
            let advanced = state.log.complete_write(PendingWrite {
                segment: write.segment,
                position: write.position,
                bytes,
            });
            if advanced {
                inner.watch.set_written(state.log.written);
            }
            (advanced, state.log.wants_spare())
        };
        if wants_spare {
            let store = self.clone();
            compio::runtime::spawn(async move {
                if let Err(err) = store.prepare_segment().await {
                    tracing::warn!(%err, "could not create the next commit-log segment");
                }
            })
            .detach();
        }
        inner.work.notify();
        if advanced {
            match inner.config.flush_mode {
                FlushMode::Async => {
                    self.wake_acknowledged();
                    inner.progress.notify();
                }
                FlushMode::Sync => inner.flush_request.notify(),
            }
        }
    }

    /// Hands the durations (µs) of the fdatasync rounds since the last call to `record`.
    pub fn drain_sync_latencies_us(&self, mut record: impl FnMut(u64)) {
        let mut samples = self.inner.sync_latencies_us.borrow_mut();
        for sample in samples.drain(..) {
            record(u64::from(sample));
        }
    }

    /// One fdatasync round: makes everything written so far durable. Returns false once the
    /// log has failed.
    pub(crate) async fn sync_written(&self) -> bool {
        let inner = &self.inner;
        let (target, dirty) = {
            let mut state = inner.state.borrow_mut();
            if state.failure.is_some() {
                return false;
            }
            if state.log.written <= state.log.durable {
                return true;
            }
            (state.log.written, state.log.take_dirty())
        };
        let started = std::time::Instant::now();
        for segment in dirty {
            if let Err(err) = segment.file.sync_data().await {
                self.fail(format!(
                    "fdatasync of {} failed: {err}",
                    segment.path.display()
                ));
                return false;
            }
        }
        let mut samples = inner.sync_latencies_us.borrow_mut();
        if samples.len() < MAX_SYNC_SAMPLES {
            samples.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
        }
        drop(samples);
        let mut state = inner.state.borrow_mut();
        state.log.durable = state.log.durable.max(target);
        inner.watch.set_durable(state.log.durable);
        drop(state);
        self.wake_acknowledged();
        inner.progress.notify();
        true
    }

    /// The flusher task. SYNC_FLUSH: group commit, an fdatasync starts as soon as the previous
    /// one ends if anything was written meanwhile. ASYNC_FLUSH: one every flush interval, or
    /// sooner when a checkpoint asks.
    pub(crate) async fn run_flusher(self) {
        let inner = &self.inner;
        loop {
            let wait = {
                let state = inner.state.borrow();
                if state.failure.is_some() {
                    return;
                }
                let idle = state.log.written <= state.log.durable;
                if idle && state.closing && !state.log.has_pending() {
                    return;
                }
                match inner.config.flush_mode {
                    FlushMode::Sync if idle => Some(inner.flush_request.listen()),
                    FlushMode::Sync => None,
                    FlushMode::Async => Some(inner.flush_request.listen()),
                }
            };
            if let Some(wait) = wait {
                if inner.config.flush_mode == FlushMode::Async {
                    self.wait_async_flush(wait).await;
                } else {
                    wait.await;
                }
            }
            if !self.sync_written().await {
                return;
            }
        }
    }

    /// ASYNC_FLUSH: waits until a sync is asked for, `flush_bytes` are written but not durable,
    /// or the flush interval has passed.
    async fn wait_async_flush(&self, requested: crate::signal::Listen<'_>) {
        let inner = &self.inner;
        let deadline = std::time::Instant::now() + inner.config.flush_interval;
        let mut requested = std::pin::pin!(requested);
        loop {
            let progress = {
                let state = inner.state.borrow();
                if state.log.written.saturating_sub(state.log.durable) >= inner.config.flush_bytes
                    || state.failure.is_some()
                {
                    return;
                }
                inner.progress.listen()
            };
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            if remaining.is_zero() {
                return;
            }
            let mut progress = std::pin::pin!(progress);
            let either = std::future::poll_fn(|cx| {
                if requested.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(true);
                }
                progress.as_mut().poll(cx).map(|()| false)
            });
            match compio::time::timeout(remaining, either).await {
                Ok(false) => {}
                Ok(true) | Err(_) => return,
            }
        }
    }

    /// Waits until everything appended so far is durable (seals the open chunk).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let target = {
            let mut state = inner.state.borrow_mut();
            state.log.seal();
            state.log.write_pos
        };
        inner.work.notify();
        loop {
            let (progress, ready) = {
                let state = inner.state.borrow();
                if state.log.durable >= target {
                    return Ok(());
                }
                if let Some(reason) = &state.failure {
                    return Err(StoreError::WritesDisabled {
                        reason: reason.clone(),
                    });
                }
                (inner.progress.listen(), state.log.written >= target)
            };
            if ready {
                inner.flush_request.notify();
            }
            progress.await;
        }
    }

    /// Reads `len` bytes of commit log at `position`: from the cache of recent chunks when it
    /// has them, otherwise from the segment file.
    pub(crate) async fn read_log(&self, position: u64, len: usize) -> Result<Bytes, StoreError> {
        let segment = {
            let state = self.inner.state.borrow();
            if let Some(bytes) = state.log.cached(position, len) {
                return Ok(bytes);
            }
            state
                .log
                .segment_of(position)
                .ok_or(StoreError::NoSuchMessage(position))?
        };
        let buf = BytesMut::with_capacity(len);
        let (result, buf) = segment
            .file
            .read_exact_at(buf, position - segment.start)
            .await;
        result.map_err(|e| StoreError::io("read commit log", &segment.path, e))?;
        Ok(buf.freeze())
    }

    /// The stored record at `physical_offset` (VIEW_MESSAGE_BY_ID), checked for framing.
    pub async fn read_message_at(&self, physical_offset: u64) -> Result<Bytes, StoreError> {
        {
            let state = self.inner.state.borrow();
            let confirmed = state.confirmed(self.inner.config.flush_mode);
            if physical_offset < state.log.min_offset() || physical_offset >= confirmed {
                return Err(StoreError::NoSuchMessage(physical_offset));
            }
        }
        let head = self.read_log(physical_offset, 8).await?;
        let size = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let magic = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
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
        let queue = state.queue(topic, queue_id)?;
        Some(QueueOffsets {
            min_offset: queue.min_offset,
            max_offset: queue.visible_next(confirmed),
        })
    }

    /// Every (topic, queue id) the store holds.
    pub fn queues(&self) -> Vec<(String, i32)> {
        let state = self.inner.state.borrow();
        let mut out: Vec<(String, i32)> = state
            .queues
            .iter()
            .flat_map(|(topic, slots)| {
                slots
                    .iter()
                    .flatten()
                    .map(move |queue| (topic.to_string(), queue.queue_id))
            })
            .collect();
        out.sort();
        out
    }

    /// First and one-past-last physical offsets held (acknowledged data).
    pub fn physical_range(&self) -> (u64, u64) {
        let state = self.inner.state.borrow();
        (
            state.log.min_offset(),
            state.confirmed(self.inner.config.flush_mode),
        )
    }

    /// The consume-queue entry at `offset`, from memory or from the queue's file.
    pub(crate) async fn cq_entries(
        &self,
        topic: &str,
        queue_id: i32,
        from: u64,
        upto: u64,
        out: &mut Vec<CqEntry>,
    ) -> Result<(), StoreError> {
        let (file_start, file_end, handle, path) = {
            let state = self.inner.state.borrow();
            let Some(queue) = state.queue(topic, queue_id) else {
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
            let file_end = (file_start + queue.entries_per_file)
                .min(mem_start)
                .min(upto);
            let handle = queue.files.get(&file_start).cloned();
            let path = queue.dir.join(segment_name(file_start));
            (file_start, file_end, handle, path)
        };
        let file = if let Some(Some(file)) = handle {
            file
        } else {
            let file = self
                .inner
                .storage
                .open(&path, false)
                .await
                .map_err(|e| StoreError::io("open consume queue", &path, e))?;
            let mut state = self.inner.state.borrow_mut();
            if let Some(queue) = state.queue_mut(topic, queue_id) {
                queue.files.insert(file_start, Some(file.clone()));
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
                .log
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
                && entries[last].physical_offset - run_end <= 64 << 10
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

    /// The first fatal failure, if the store refuses writes.
    pub fn failure(&self) -> Option<String> {
        self.inner.state.borrow().failure.clone()
    }

    /// Disk usage above the hard watermark, when appends are refused for it.
    pub fn disk_full(&self) -> Option<f64> {
        self.inner.state.borrow().disk_full
    }
}

/// Checks that `record` is a stored record of `size` bytes at `position`: a consume queue never
/// leads a reader to garbage.
fn check_record(record: &[u8], position: u64, size: u32, dir: &Path) -> Result<(), StoreError> {
    let ok = record.len() == size as usize
        && record.len() >= MIN_RECORD_BYTES
        && i32::from_be_bytes([record[0], record[1], record[2], record[3]]) == size as i32
        && matches!(
            u32::from_be_bytes([record[4], record[5], record[6], record[7]]),
            MAGIC_V1 | MAGIC_V2
        )
        && i64::from_be_bytes([
            record[28], record[29], record[30], record[31], record[32], record[33], record[34],
            record[35],
        ]) == position as i64;
    if ok {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            path: dir.to_path_buf(),
            reason: format!("no valid record of {size} bytes at physical offset {position}"),
        })
    }
}

/// Why an append must retry.
#[derive(Debug)]
enum AppendRetry {
    NeedSegment,
    Failed(StoreError),
}

#[cfg(test)]
mod tests {
    use ringmq_protocol::message::properties::{Properties, keys};

    use super::record_tags_hash;

    #[test]
    fn tags_hash_scan_agrees_with_the_properties_parser() {
        for text in [
            "",
            "TAGS\u{1}TagA",
            "KEYS\u{1}k\u{2}TAGS\u{1}TagA\u{2}WAIT\u{1}true\u{2}",
            "TAGS\u{1}first\u{2}TAGS\u{1}second",
            "XTAGS\u{1}no\u{2}",
            "TAGS\u{1}\u{2}",
            "TAGS",
            "KEYS\u{1}TAGS\u{1}x",
            "TAGS\u{1}标签\u{2}",
        ] {
            let expected = Properties::new(text)
                .get(keys::TAGS)
                .map_or(0, ringmq_protocol::message::tags_hash);
            assert_eq!(record_tags_hash(text), expected, "{text:?}");
        }
    }
}
