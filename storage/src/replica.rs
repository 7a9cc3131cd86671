//! What replication needs from a store (docs/architecture.md §6). The broker's replication runs on side
//! threads, so everything a *master* needs is `Send`: [`LogWatch`] publishes the log's marks
//! and wakes waiting threads, [`LogReader`] reads whole chunks straight from the segment
//! files. A *slave* writes through its shard: [`MessageStore::replicate`] takes chunks exactly
//! as the master wrote them and puts them at the same physical offsets.
//!
//! Chunks are the unit on the wire: each carries its own CRC and a header CRC bound to its
//! position (FORMAT.md), so a slave verifies everything it receives before writing it, and a
//! peer whose log diverged is caught at the first chunk header.

use std::{
    fs::File,
    os::unix::fs::FileExt,
    path::PathBuf,
    sync::{
        Condvar, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use ringmq_protocol::message::record::StoredRecord;

use crate::{
    MessageStore, StoreConfig, StoreError,
    commitlog::NeedSegment,
    format::{CHUNK_HEADER_BYTES, ChunkHeader, HeaderFault, read_chunk_header, segment_name},
    io::Storage,
    store::validate_topic,
};

/// Bytes of log compared by [`LogReader::tail_fingerprint`].
const TAIL_FINGERPRINT_BYTES: u64 = 4096;

/// The log's marks, readable from any thread, with a way to wait for them to move.
///
/// Invariant: each mark only grows while the store is open (`min_offset` with retention,
/// the others with writes), and `written` is always a chunk boundary.
#[derive(Debug)]
pub struct LogWatch {
    written: AtomicU64,
    durable: AtomicU64,
    min_offset: AtomicU64,
    /// Threads inside [`LogWatch::wait_past`]: the store takes the lock to wake them only
    /// when there are any, so with no replication the data path never touches it.
    waiters: AtomicUsize,
    lock: Mutex<()>,
    moved: Condvar,
}

/// Which mark of a [`LogWatch`] to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Bytes in the segment files (page cache).
    Written,
    /// Bytes an fdatasync covered.
    Durable,
}

impl LogWatch {
    pub(crate) fn new(end: u64, min_offset: u64) -> Self {
        Self {
            written: AtomicU64::new(end),
            durable: AtomicU64::new(end),
            min_offset: AtomicU64::new(min_offset),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            moved: Condvar::new(),
        }
    }

    /// End of the bytes written to the segment files (a chunk boundary).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// End of the bytes an fdatasync covered.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    /// First physical offset still stored (retention moves it).
    pub fn min_offset(&self) -> u64 {
        self.min_offset.load(Ordering::SeqCst)
    }

    /// The value of `mark`.
    pub fn get(&self, mark: Mark) -> u64 {
        match mark {
            Mark::Written => self.written(),
            Mark::Durable => self.durable(),
        }
    }

    /// Blocks the calling thread until `mark` is past `offset` or `timeout` has passed; returns
    /// the mark's value. For side threads only: never call it on a shard.
    pub fn wait_past(&self, mark: Mark, offset: u64, timeout: Duration) -> u64 {
        let value = self.get(mark);
        if value > offset {
            return value;
        }
        let deadline = Instant::now() + timeout;
        // SeqCst on both sides: either the store sees this waiter and notifies under the lock,
        // or this thread sees the store's new value below.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let value = loop {
            let value = self.get(mark);
            let now = Instant::now();
            if value > offset || now >= deadline {
                break value;
            }
            guard = self
                .moved
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        value
    }

    /// Wakes every waiting thread (also used when the store closes).
    pub fn wake(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.moved.notify_all();
        }
    }

    pub(crate) fn set_written(&self, end: u64) {
        self.written.fetch_max(end, Ordering::SeqCst);
        self.wake();
    }

    pub(crate) fn set_durable(&self, end: u64) {
        self.durable.fetch_max(end, Ordering::SeqCst);
        self.wake();
    }

    pub(crate) fn set_min_offset(&self, min: u64) {
        self.min_offset.store(min, Ordering::SeqCst);
    }

    /// A store that starts over at `position` (an empty slave adopting its master's start).
    pub(crate) fn reset(&self, position: u64) {
        self.written.store(position, Ordering::SeqCst);
        self.durable.store(position, Ordering::SeqCst);
        self.min_offset.store(position, Ordering::SeqCst);
        self.wake();
    }
}

/// Why [`LogReader::read_chunks`] could not read.
#[derive(Debug, thiserror::Error)]
pub enum LogReadError {
    /// The segment is gone: retention removed it (a reader behind the log's start).
    #[error("segment {path} is gone (removed by retention?): {source}")]
    SegmentGone {
        /// The segment file.
        path: PathBuf,
        /// The open error.
        source: std::io::Error,
    },
    /// Reading failed.
    #[error("read {path}: {source}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// No valid chunk header at the position: it is not a chunk boundary of this log (the
    /// peer's log diverged from this one) or the data is damaged.
    #[error("no chunk starts at physical offset {0} of this log")]
    NotAChunk(u64),
}

/// Where a [`LogReader::read_chunks`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRun {
    /// Physical offset of the first byte read (the `from` asked for).
    pub position: u64,
    /// Bytes appended to the output.
    pub bytes: usize,
    /// Where the next read starts: right after the last chunk, or the next segment's start
    /// once this one ended (end marker, or a tail too short for a header).
    pub next: u64,
}

/// Reads whole commit-log chunks from the segment files with plain `pread`, for a thread that
/// is not the store's shard (replication). It reads only below a [`LogWatch::written`] mark
/// the caller passes: those bytes are complete in the files and never change.
#[derive(Debug)]
pub struct LogReader {
    dir: PathBuf,
    segment_bytes: u64,
    base: u64,
    open: Option<(u64, File)>,
}

impl LogReader {
    /// A reader of the store configured by `config`.
    pub fn new(config: &StoreConfig) -> Self {
        Self {
            dir: config.dir.join("commitlog"),
            segment_bytes: config.segment_bytes,
            base: config.base_offset(),
            open: None,
        }
    }

    /// Start of the segment holding `position`.
    pub fn segment_start(&self, position: u64) -> u64 {
        let local = position.saturating_sub(self.base);
        self.base + local / self.segment_bytes * self.segment_bytes
    }

    /// Appends to `out` the whole chunks from `from` (a chunk boundary) up to `upto` (a written
    /// mark), at most about `max_bytes` (at least one chunk when one is there), never past the
    /// end of `from`'s segment.
    pub fn read_chunks(
        &mut self,
        from: u64,
        upto: u64,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<ChunkRun, LogReadError> {
        let segment_start = self.segment_start(from);
        let segment_end = segment_start + self.segment_bytes;
        let empty = ChunkRun {
            position: from,
            bytes: 0,
            next: from,
        };
        if from >= upto {
            return Ok(empty);
        }
        if segment_end - from < CHUNK_HEADER_BYTES as u64 {
            // Too short for a header: the log continues in the next segment.
            return Ok(ChunkRun {
                next: segment_end,
                ..empty
            });
        }
        // A segment file may be shorter than a segment (not preallocated): past its end the log
        // is zeros, i.e. this segment is done.
        let file_end = segment_start + self.file_len(segment_start)?;
        if file_end.saturating_sub(from) < CHUNK_HEADER_BYTES as u64 {
            return Ok(ChunkRun {
                next: segment_end,
                ..empty
            });
        }
        let limit = upto.min(segment_end).min(file_end);
        let want = ((limit - from) as usize).min(max_bytes.max(CHUNK_HEADER_BYTES));
        let start_len = out.len();
        self.read_at(segment_start, from, want, out)?;
        // `kept`: `out` holds whole chunks from `from` up to here.
        let mut kept = from;
        let mut next = from;
        loop {
            let at = start_len + (kept - from) as usize;
            if out.len() - at < CHUNK_HEADER_BYTES {
                break;
            }
            match read_chunk_header(&out[at..], kept) {
                Ok(ChunkHeader::End) => {
                    kept += CHUNK_HEADER_BYTES as u64;
                    next = segment_end;
                    break;
                }
                Ok(ChunkHeader::Records { payload_bytes, .. }) => {
                    let chunk_end = kept + CHUNK_HEADER_BYTES as u64 + u64::from(payload_bytes);
                    if chunk_end > limit {
                        // Below a written mark every chunk is whole: this one is not a chunk.
                        if kept == from {
                            return Err(LogReadError::NotAChunk(kept));
                        }
                        break;
                    }
                    let have = (out.len() - at) as u64;
                    if chunk_end - kept > have {
                        if kept != from {
                            break;
                        }
                        // The first chunk is larger than the read: read the rest of it.
                        let read_to = from + (out.len() - start_len) as u64;
                        self.read_at(segment_start, read_to, (chunk_end - read_to) as usize, out)?;
                    }
                    kept = chunk_end;
                    next = chunk_end;
                    if kept >= limit {
                        break;
                    }
                }
                Err(HeaderFault::Zeroed | HeaderFault::Invalid) => {
                    return Err(LogReadError::NotAChunk(kept));
                }
            }
        }
        let bytes = (kept - from) as usize;
        out.truncate(start_len + bytes);
        Ok(ChunkRun {
            position: from,
            bytes,
            next,
        })
    }

    /// A fingerprint of the log's last bytes before `end`: (length, CRC32C) of up to 4 KiB
    /// ending at `end`, within the segment holding `end - 1`; `None` when nothing precedes
    /// `end` (the shard's first byte, or a segment start whose predecessor is gone).
    /// Master and slave compare theirs before streaming: equal chunk boundaries alone do not
    /// prove equal logs (a master that lost its tail in a crash and wrote new records in its
    /// place can end a chunk at the same offset), equal bytes do.
    pub fn tail_fingerprint(&mut self, end: u64) -> Result<Option<(u32, u32)>, LogReadError> {
        if end <= self.base {
            return Ok(None);
        }
        let segment_start = self.segment_start(end - 1);
        let from = end
            .saturating_sub(TAIL_FINGERPRINT_BYTES)
            .max(segment_start);
        let mut bytes = Vec::with_capacity((end - from) as usize);
        let file_end = match self.file_len(segment_start) {
            Ok(len) => segment_start + len,
            // At a segment start whose predecessor retention removed there is nothing before
            // `end` to compare: the log begins there.
            Err(LogReadError::SegmentGone { .. }) if self.segment_start(end) == end => {
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        // Bytes past the file's end are zeros, as a preallocated file would hold.
        let in_file = end.min(file_end).saturating_sub(from) as usize;
        if in_file > 0 {
            self.read_at(segment_start, from, in_file, &mut bytes)?;
        }
        bytes.resize((end - from) as usize, 0);
        Ok(Some((bytes.len() as u32, crc32c::crc32c(&bytes))))
    }

    fn file_len(&mut self, segment_start: u64) -> Result<u64, LogReadError> {
        self.open_segment(segment_start)?;
        let path = self.dir.join(segment_name(segment_start));
        let Some((_, file)) = &self.open else {
            return Ok(0);
        };
        file.metadata()
            .map(|m| m.len())
            .map_err(|source| LogReadError::Io { path, source })
    }

    fn open_segment(&mut self, segment_start: u64) -> Result<(), LogReadError> {
        if self
            .open
            .as_ref()
            .is_none_or(|(start, _)| *start != segment_start)
        {
            let path = self.dir.join(segment_name(segment_start));
            let file = File::open(&path).map_err(|source| LogReadError::SegmentGone {
                path: path.clone(),
                source,
            })?;
            self.open = Some((segment_start, file));
        }
        Ok(())
    }

    fn read_at(
        &mut self,
        segment_start: u64,
        position: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), LogReadError> {
        let path = self.dir.join(segment_name(segment_start));
        self.open_segment(segment_start)?;
        let Some((_, file)) = &self.open else {
            return Ok(());
        };
        let at = out.len();
        out.resize(at + len, 0);
        file.read_exact_at(&mut out[at..], position - segment_start)
            .map_err(|source| {
                out.truncate(at);
                LogReadError::Io { path, source }
            })
    }
}

impl<S: Storage> MessageStore<S> {
    /// Waits until everything below `end` is acknowledged (readable): written under
    /// ASYNC_FLUSH, durable under SYNC_FLUSH. A slave wakes its parked pulls after it.
    pub async fn wait_acknowledged(&self, end: u64) -> Result<(), StoreError> {
        self.wait_confirmed(end).await
    }

    /// The log's marks, shared with other threads.
    pub fn watch(&self) -> std::sync::Arc<LogWatch> {
        std::sync::Arc::clone(&self.inner.watch)
    }

    /// One past the last byte accepted (appended or replicated, written or not): where a slave
    /// asks its master to continue.
    pub fn log_end(&self) -> u64 {
        let state = self.inner.state.borrow();
        let (write_pos, active_end) = (state.log.write_pos, state.log.next_segment_start());
        // A segment closed by an end marker, or with no room for a header, is done: the log
        // continues at the next segment's start, even before that segment exists (creating it
        // may have failed on a full disk; the master streams from there).
        if state.log.segment_ended || active_end - write_pos < CHUNK_HEADER_BYTES as u64 {
            active_end
        } else {
            write_pos
        }
    }

    /// Whether the store holds no byte of log and no queue: a new store, or one moved by
    /// [`MessageStore::start_at`] that has received nothing since.
    pub fn is_pristine(&self) -> bool {
        let state = self.inner.state.borrow();
        state.log.write_pos == state.log.min_offset()
            && state.log.segments.len() <= 1
            && !state.log.has_pending()
            && state.log.in_flight() == 0
            && state.queues.is_empty()
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
            || position >> crate::SHARD_SHIFT != base >> crate::SHARD_SHIFT
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
        let segment = self.create_segment(position).await?;
        let old = {
            let mut state = inner.state.borrow_mut();
            let mut old: Vec<_> = state.log.segments.drain(..).collect();
            old.extend(state.log.spare_segment.take());
            state.log.restart_at(std::rc::Rc::new(segment), position);
            old
        };
        for segment in old {
            inner
                .storage
                .remove(&segment.path)
                .await
                .map_err(|e| StoreError::io("remove segment", &segment.path, e))?;
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
        let state = &mut *state;
        if state.log.has_open_chunk() {
            return Err(ReplicaStep::Refused(
                "the store has local appends: a slave's log only takes replicated chunks".into(),
            ));
        }
        loop {
            let write_pos = state.log.write_pos;
            let active_end = state.log.next_segment_start();
            if *position == active_end
                && (state.log.segment_ended || active_end - write_pos < CHUNK_HEADER_BYTES as u64)
            {
                // The master went on to its next segment: after an end marker, or from a tail
                // too short for one (or a full segment, after a restart).
                state
                    .log
                    .roll_replica()
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
            if state.log.pending_bytes >= config.max_pending_bytes {
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
                && !crate::recovery::dispatch_chunk(
                    &rest[CHUNK_HEADER_BYTES..chunk_len],
                    write_pos + CHUNK_HEADER_BYTES as u64,
                    config,
                    &mut state.queues,
                )
            {
                return Err(ReplicaStep::Refused(format!(
                    "chunk at {write_pos}: records do not continue their queues"
                )));
            }
            state.log.push_raw(data.slice(*at..*at + chunk_len));
            *at += chunk_len;
            *position = write_pos + chunk_len as u64;
            if end_marker {
                // The master continues in its next segment; so does this log (above).
                *position = active_end;
                state.log.segment_ended = true;
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

/// Checks what [`crate::recovery::dispatch_chunk`] does not: names that become directories.
fn check_replica_records(payload: &[u8]) -> Result<(), String> {
    let mut at = 0;
    while at < payload.len() {
        let (record, size) = StoredRecord::decode(&payload[at..])
            .map_err(|e| format!("malformed record in a replicated chunk: {e}"))?;
        validate_topic(record.topic).map_err(|e| e.to_string())?;
        if !(0..65_536).contains(&record.queue_id) {
            return Err(format!("queue id {} out of range", record.queue_id));
        }
        at += size;
    }
    Ok(())
}
