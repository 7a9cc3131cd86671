//! Opening a store: checkpoint, consume-queue trim, scan of the commit-log tail, truncation of
//! a torn or corrupt tail. And writing checkpoints, which is what keeps that scan short.
//!
//! The checkpoint promises: every commit-log byte below `log_offset` is durable and every
//! consume-queue entry of those bytes is in the queue files (synced), `next_offset` entries per
//! queue. Recovery trusts that and reads only what lies past `log_offset`, so reopen time
//! depends on the checkpoint interval, not on the size of the store.

use std::{cell::RefCell, collections::VecDeque, path::Path, rc::Rc};

use bytes::BytesMut;
use ringmq_protocol::message::record::StoredRecord;
use serde::{Deserialize, Serialize};

use crate::{
    MessageStore, StoreConfig, StoreError,
    commitlog::{LogState, Segment},
    consume_queue::ConsumeQueue,
    format::{
        CHUNK_HEADER_BYTES, CQ_ENTRY_BYTES, ChunkHeader, CqEntry, HeaderFault, parse_segment_name,
        read_chunk_header, segment_name,
    },
    io::{Storage, StorageFile},
    metadata::{MetadataError, MetadataFile},
    signal::Signal,
    store::{Inner, QueueMap, State, cq_dir, record_tags_hash},
};

/// Bytes read at a time while scanning the tail.
const SCAN_BLOCK_BYTES: usize = 8 << 20;

/// The checkpoint file's document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Checkpoint {
    pub shard: u16,
    pub segment_bytes: u64,
    pub cq_entries_per_file: u64,
    /// The store was closed cleanly after this checkpoint.
    pub clean_shutdown: bool,
    /// Commit-log offset (a chunk boundary) below which everything is durable and indexed.
    pub log_offset: u64,
    pub queues: Vec<QueueCheckpoint>,
}

/// One queue in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueCheckpoint {
    pub topic: String,
    pub queue_id: i32,
    pub min_offset: u64,
    pub next_offset: u64,
}

/// Marks a checkpoint in progress; clears the mark and wakes waiters when dropped.
struct CheckpointGuard<'a, S: Storage> {
    inner: &'a Inner<S>,
}

impl<'a, S: Storage> CheckpointGuard<'a, S> {
    fn take(inner: &'a Inner<S>) -> Self {
        inner.checkpoint_busy.set(true);
        Self { inner }
    }
}

impl<S: Storage> Drop for CheckpointGuard<'_, S> {
    fn drop(&mut self) {
        self.inner.checkpoint_busy.set(false);
        self.inner.progress.notify();
    }
}

/// How a scan of the commit-log tail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanEnd {
    /// Zeroes: nothing written past here.
    Clean,
    /// A torn or corrupt chunk, or a record that does not fit the queues.
    Corrupt,
}

impl<S: Storage> MessageStore<S> {
    /// Opens (or creates) the store in `config.dir`, recovers it and starts its background
    /// tasks on the current compio runtime.
    pub async fn open(storage: S, config: StoreConfig) -> Result<Self, StoreError> {
        let dir = config.dir.clone();
        let log_dir = dir.join("commitlog");
        for path in [&dir, &log_dir, &dir.join("consumequeue")] {
            storage
                .create_dir_all(path)
                .await
                .map_err(|e| StoreError::io("create directory", path, e))?;
        }
        let checkpoint = load_checkpoint(&storage, &config).await?;
        let mut segments = load_segments(&storage, &config).await?;
        let clean = checkpoint.as_ref().is_some_and(|c| c.clean_shutdown);
        let scan_from = scan_start(&config, checkpoint.as_ref(), &segments);
        let queues = load_queues(&storage, &config, checkpoint.as_ref(), scan_from).await?;
        let mut state = State {
            log: LogState::new(
                config.segment_bytes,
                config.max_chunk_bytes,
                config.read_cache_bytes,
                VecDeque::new(),
                scan_from,
            ),
            queues,
            failure: None,
            disk_full: None,
            closing: false,
            segment_error: None,
        };
        let (end, how) = scan_tail(&config, &segments, scan_from, &mut state.queues).await?;
        if !segments.is_empty() {
            // After a clean shutdown the log ends in zeros; anything else (an unclean shutdown,
            // or damage found even after a clean one) is cut so no stale byte past the end can
            // ever be read as a chunk.
            let cut = !clean || how == ScanEnd::Corrupt;
            truncate_after(&storage, &config, &mut segments, end, cut).await?;
        }
        state.log = LogState::new(
            config.segment_bytes,
            config.max_chunk_bytes,
            config.read_cache_bytes,
            segments,
            end,
        );
        let min_offset = state.log.min_offset();
        let store = Self {
            inner: Rc::new(Inner {
                storage,
                config,
                state: RefCell::new(state),
                work: Signal::default(),
                progress: Signal::default(),
                flush_request: Signal::default(),
                stop: Signal::default(),
                tasks: RefCell::new(Vec::new()),
                acks: crate::ack::AckQueue::default(),
                checkpoint_busy: std::cell::Cell::new(false),
                sync_latencies_us: RefCell::new(Vec::new()),
                watch: std::sync::Arc::new(crate::replica::LogWatch::new(end, min_offset)),
            }),
        };
        if store.inner.state.borrow().log.segments.is_empty() {
            let segment = store
                .create_segment(store.inner.config.base_offset())
                .await?;
            store
                .inner
                .state
                .borrow_mut()
                .log
                .segments
                .push_back(Rc::new(segment));
        }
        // The scanned tail may only have been in the page cache: make it durable before a
        // checkpoint vouches for it.
        let tail_segments: Vec<_> = store
            .inner
            .state
            .borrow()
            .log
            .segments
            .iter()
            .filter(|s| s.start + store.inner.config.segment_bytes > scan_from)
            .cloned()
            .collect();
        for segment in tail_segments {
            segment
                .file
                .sync_data()
                .await
                .map_err(|e| StoreError::io("fdatasync", &segment.path, e))?;
        }
        store.spawn_tasks();
        store.checkpoint(false).await?;
        Ok(store)
    }

    fn spawn_tasks(&self) {
        let mut tasks = self.inner.tasks.borrow_mut();
        tasks.push(compio::runtime::spawn(self.clone().run_writer()));
        tasks.push(compio::runtime::spawn(self.clone().run_flusher()));
        tasks.push(compio::runtime::spawn(self.clone().run_checkpointer()));
        tasks.push(compio::runtime::spawn(self.clone().run_retention()));
    }

    async fn run_checkpointer(self) {
        loop {
            let stop = self.inner.stop.listen();
            if self.inner.state.borrow().closing {
                return;
            }
            if compio::time::timeout(self.inner.config.checkpoint_interval, stop)
                .await
                .is_ok()
            {
                return;
            }
            if let Err(err) = self.checkpoint(false).await {
                tracing::warn!(%err, "checkpoint failed; will retry");
                if self.inner.state.borrow().failure.is_some() {
                    return;
                }
            }
        }
    }

    /// Makes everything appended so far durable, writes the consume-queue entries to their
    /// files and records the point in the checkpoint file.
    pub(crate) async fn checkpoint(&self, clean_shutdown: bool) -> Result<(), StoreError> {
        let inner = &self.inner;
        while inner.checkpoint_busy.get() {
            inner.progress.listen().await;
        }
        // Released on every exit, including the future being dropped mid-checkpoint.
        let _busy = CheckpointGuard::take(inner);
        self.checkpoint_now(clean_shutdown).await
    }

    async fn checkpoint_now(&self, clean_shutdown: bool) -> Result<(), StoreError> {
        let inner = &self.inner;
        let (log_offset, mut snapshot) = {
            let mut state = inner.state.borrow_mut();
            state.log.seal();
            let snapshot: Vec<QueueCheckpoint> = state
                .queues
                .values()
                .flat_map(|slots| slots.iter().flatten())
                .map(|queue| QueueCheckpoint {
                    topic: queue.topic.to_string(),
                    queue_id: queue.queue_id,
                    min_offset: queue.min_offset,
                    next_offset: queue.next_offset(),
                })
                .collect();
            (state.log.write_pos, snapshot)
        };
        self.flush().await?;
        let mut dirty: Vec<(S::File, std::path::PathBuf)> = Vec::new();
        for queue in &snapshot {
            let work = {
                let state = inner.state.borrow();
                match state.queue(&queue.topic, queue.queue_id) {
                    Some(cq) => cq.unflushed(queue.next_offset),
                    None => continue,
                }
            };
            for (file_start, first_offset, bytes) in work {
                let file = self
                    .cq_file(&queue.topic, queue.queue_id, file_start)
                    .await?;
                let path = cq_dir(&inner.config.dir, &queue.topic, queue.queue_id)
                    .join(segment_name(file_start));
                let at = (first_offset - file_start) * CQ_ENTRY_BYTES as u64;
                let (result, _) = file.write_all_at(bytes.into(), at).await;
                result.map_err(|e| StoreError::io("write consume queue", &path, e))?;
                dirty.push((file, path));
            }
        }
        for (file, path) in &dirty {
            file.sync_data()
                .await
                .map_err(|e| StoreError::io("fdatasync consume queue", path, e))?;
        }
        {
            let mut state = inner.state.borrow_mut();
            let keep = inner.config.cq_cache_entries;
            for queue in &mut snapshot {
                if let Some(cq) = state.queue_mut(&queue.topic, queue.queue_id) {
                    cq.mark_flushed(queue.next_offset, keep);
                    // Retention may have moved min since the snapshot; the file is the truth.
                    queue.min_offset = cq.min_offset;
                }
            }
        }
        let checkpoint = Checkpoint {
            shard: inner.config.shard,
            segment_bytes: inner.config.segment_bytes,
            cq_entries_per_file: inner.config.cq_entries_per_file,
            clean_shutdown,
            log_offset,
            queues: snapshot,
        };
        let mut file =
            MetadataFile::new(inner.storage.clone(), inner.config.dir.join("checkpoint"));
        file.store(&checkpoint).await.map_err(StoreError::from)
    }

    /// The consume-queue file of `topic:queue_id` starting at `file_start`, created if needed.
    async fn cq_file(
        &self,
        topic: &str,
        queue_id: i32,
        file_start: u64,
    ) -> Result<S::File, StoreError> {
        let inner = &self.inner;
        if let Some(Some(file)) = inner
            .state
            .borrow()
            .queue(topic, queue_id)
            .and_then(|q| q.files.get(&file_start).cloned())
        {
            return Ok(file);
        }
        let dir = cq_dir(&inner.config.dir, topic, queue_id);
        inner
            .storage
            .create_dir_all(&dir)
            .await
            .map_err(|e| StoreError::io("create directory", &dir, e))?;
        let path = dir.join(segment_name(file_start));
        let file = inner
            .storage
            .open(&path, true)
            .await
            .map_err(|e| StoreError::io("create consume queue", &path, e))?;
        inner
            .storage
            .sync_dir(&dir)
            .await
            .map_err(|e| StoreError::io("sync directory", &dir, e))?;
        if let Some(queue) = inner.state.borrow_mut().queue_mut(topic, queue_id) {
            queue.files.insert(file_start, Some(file.clone()));
        }
        Ok(file)
    }

    /// Stops the background tasks after making everything durable and writing a clean
    /// checkpoint. Appends after this fail with [`StoreError::Closed`].
    pub async fn close(self) -> Result<(), StoreError> {
        let result = self.checkpoint(true).await;
        self.inner.state.borrow_mut().closing = true;
        self.inner.stop.notify();
        self.inner.work.notify();
        self.inner.flush_request.notify();
        self.inner.progress.notify();
        self.inner.acks.wake_all();
        let tasks: Vec<_> = self.inner.tasks.borrow_mut().drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
        result
    }
}

/// Reads the checkpoint; `None` when there is none or it is unreadable (then the whole log is
/// scanned). Refuses a store created with another layout.
async fn load_checkpoint<S: Storage>(
    storage: &S,
    config: &StoreConfig,
) -> Result<Option<Checkpoint>, StoreError> {
    let dir = &config.dir;
    let mut checkpoint_file = MetadataFile::new(storage.clone(), dir.join("checkpoint"));
    let checkpoint: Option<Checkpoint> = match checkpoint_file.load().await {
        Ok(found) => found,
        Err(MetadataError::Corrupt { path, reason }) => {
            tracing::warn!(path = %path.display(), %reason,
                    "checkpoint unreadable; rebuilding consume queues from the whole commit log");
            None
        }
        Err(err) => return Err(err.into()),
    };
    if let Some(found) = &checkpoint {
        if found.shard != config.shard
            || found.segment_bytes != config.segment_bytes
            || found.cq_entries_per_file != config.cq_entries_per_file
        {
            return Err(StoreError::ConfigMismatch(format!(
                "{} was created with shard {}, segment size {} and {} entries per consume-queue file; \
                     opened with shard {}, segment size {} and {}",
                dir.display(),
                found.shard,
                found.segment_bytes,
                found.cq_entries_per_file,
                config.shard,
                config.segment_bytes,
                config.cq_entries_per_file
            )));
        }
        if !found.clean_shutdown {
            tracing::warn!(dir = %dir.display(), log_offset = found.log_offset,
                    "unclean shutdown detected; recovering the commit-log tail");
        }
    }

    Ok(checkpoint)
}

/// Opens the commit-log segments: a contiguous run from the oldest; files after a gap are
/// leftovers and removed.
async fn load_segments<S: Storage>(
    storage: &S,
    config: &StoreConfig,
) -> Result<VecDeque<Rc<Segment<S::File>>>, StoreError> {
    let log_dir = config.dir.join("commitlog");
    let names = storage
        .list_dir(&log_dir)
        .await
        .map_err(|e| StoreError::io("list", &log_dir, e))?;
    let mut segments = VecDeque::new();
    for name in names {
        let Some(start) = parse_segment_name(&name) else {
            continue;
        };
        let path = log_dir.join(&name);
        if start < config.base_offset()
            || (start - config.base_offset()) % config.segment_bytes != 0
        {
            return Err(StoreError::ConfigMismatch(format!(
                "segment {} does not belong to shard {} with segment size {}",
                path.display(),
                config.shard,
                config.segment_bytes
            )));
        }
        let file = storage
            .open(&path, false)
            .await
            .map_err(|e| StoreError::io("open segment", &path, e))?;
        segments.push_back(Rc::new(Segment { start, file, path }));
    }
    // Keep only a contiguous run: a gap means the later files are leftovers.
    let mut contiguous = segments.len().min(1);
    while contiguous < segments.len()
        && segments[contiguous].start == segments[contiguous - 1].start + config.segment_bytes
    {
        contiguous += 1;
    }
    let leftovers: Vec<_> = segments.drain(contiguous..).collect();
    for segment in leftovers {
        tracing::warn!(path = %segment.path.display(), "removing commit-log segment after a gap");
        remove(storage, &segment.path).await?;
    }

    Ok(segments)
}

async fn remove<S: Storage>(storage: &S, path: &Path) -> Result<(), StoreError> {
    match storage.remove(path).await {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(StoreError::io("remove", path, err)),
    }
}

/// Loads the consume queues named in the checkpoint and trims their files to it; removes the
/// files of queues the checkpoint does not know (they are rebuilt from the commit log).
async fn load_queues<S: Storage>(
    storage: &S,
    config: &StoreConfig,
    checkpoint: Option<&Checkpoint>,
    scan_from: u64,
) -> Result<QueueMap<S::File>, StoreError> {
    let mut queues: QueueMap<S::File> = QueueMap::default();
    let per_file = config.cq_entries_per_file;
    if let Some(found) = checkpoint.filter(|c| c.log_offset == scan_from) {
        for queue in &found.queues {
            let dir = cq_dir(&config.dir, &queue.topic, queue.queue_id);
            let mut cq = ConsumeQueue::new(
                Rc::from(queue.topic.as_str()),
                queue.queue_id,
                dir,
                per_file,
                queue.min_offset,
                queue.next_offset,
            );
            let names = match storage.list_dir(&cq.dir).await {
                Ok(names) => names,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(err) => return Err(StoreError::io("list", &cq.dir, err)),
            };
            for name in names {
                let Some(start) = parse_segment_name(&name) else {
                    continue;
                };
                let path = cq.dir.join(&name);
                if start >= queue.next_offset || start + per_file <= queue.min_offset {
                    remove(storage, &path).await?;
                } else {
                    if start + per_file > queue.next_offset {
                        // The file holding the end: cut entries the checkpoint does not vouch for.
                        let file = storage
                            .open(&path, false)
                            .await
                            .map_err(|e| StoreError::io("open consume queue", &path, e))?;
                        let keep = (queue.next_offset - start) * CQ_ENTRY_BYTES as u64;
                        let len = file
                            .len()
                            .await
                            .map_err(|e| StoreError::io("stat", &path, e))?;
                        if len > keep {
                            file.truncate(keep)
                                .await
                                .map_err(|e| StoreError::io("truncate consume queue", &path, e))?;
                        }
                        cq.files.insert(start, Some(file));
                        continue;
                    }
                    cq.files.insert(start, None);
                }
            }
            let index = usize::try_from(queue.queue_id).unwrap_or(0);
            let slots = queues.entry(queue.topic.as_str().into()).or_default();
            if slots.len() <= index {
                slots.resize_with(index + 1, || None);
            }
            slots[index] = Some(cq);
        }
    } else if checkpoint.is_some() || scan_from > config.base_offset() {
        // Consume-queue files of an unusable checkpoint are not removed: the queues are rebuilt
        // in memory from the log and the next checkpoint rewrites the same entries in place;
        // whatever lies past a queue's rebuilt end is never read and is cut at the next open.
        tracing::warn!(dir = %config.dir.display(), "rebuilding every consume queue from the commit log");
    }
    Ok(queues)
}

/// Where recovery starts reading the log: the checkpoint's offset when it lies within the
/// segments found, else the first segment (or the shard's base for a new store).
fn scan_start<F>(
    config: &StoreConfig,
    checkpoint: Option<&Checkpoint>,
    segments: &VecDeque<Rc<Segment<F>>>,
) -> u64 {
    let first_segment = segments.front().map(|s| s.start);
    let log_end = segments.back().map(|s| s.start + config.segment_bytes);
    match (checkpoint, first_segment) {
        // A checkpoint past every segment (an empty replica moved to an earlier start crashed
        // before its new checkpoint) vouches for nothing here.
        (Some(found), Some(first))
            if found.log_offset >= first && log_end.is_some_and(|end| found.log_offset <= end) =>
        {
            found.log_offset
        }
        (_, Some(first)) => first,
        (_, None) => config.base_offset(),
    }
}

/// Scans chunks from `from` to the end of the log, verifying CRCs and dispatching records to
/// the consume queues. Returns the end of the last valid chunk.
async fn scan_tail<F: StorageFile>(
    config: &StoreConfig,
    segments: &VecDeque<Rc<Segment<F>>>,
    from: u64,
    queues: &mut QueueMap<F>,
) -> Result<(u64, ScanEnd), StoreError> {
    let Some(first) = segments
        .iter()
        .position(|s| from < s.start + config.segment_bytes)
    else {
        return Ok((from, ScanEnd::Clean));
    };
    let mut how = ScanEnd::Clean;
    let mut position = from.max(segments[first].start);
    let mut scanned_bytes = 0u64;
    for (index, segment) in segments.iter().enumerate().skip(first) {
        if index > first {
            position = segment.start;
        }
        let file_len = segment
            .file
            .len()
            .await
            .map_err(|e| StoreError::io("stat", &segment.path, e))?;
        let segment_end = segment.start + config.segment_bytes.min(file_len);
        let mut block = BytesMut::new();
        let mut block_start = position;
        let outcome = loop {
            if segment_end.saturating_sub(position) < CHUNK_HEADER_BYTES as u64 {
                break None; // the segment is full: continue in the next one
            }
            // Make sure the header is in the block.
            let need_header = position + CHUNK_HEADER_BYTES as u64;
            if need_header > block_start + block.len() as u64 {
                block_start = position;
                block = read_block(segment, position, SCAN_BLOCK_BYTES, segment_end).await?;
            }
            let at = (position - block_start) as usize;
            let header = match read_chunk_header(&block[at..], position) {
                Ok(header) => header,
                Err(HeaderFault::Zeroed) => break Some(ScanEnd::Clean),
                Err(HeaderFault::Invalid) => break Some(ScanEnd::Corrupt),
            };
            let (payload_bytes, payload_crc) = match header {
                ChunkHeader::End => break None,
                ChunkHeader::Records {
                    payload_bytes,
                    payload_crc,
                } => (u64::from(payload_bytes), payload_crc),
            };
            let chunk_end = position + CHUNK_HEADER_BYTES as u64 + payload_bytes;
            if chunk_end > segment_end {
                break Some(ScanEnd::Corrupt);
            }
            if chunk_end > block_start + block.len() as u64 {
                block_start = position;
                let len = (chunk_end - position) as usize;
                block =
                    read_block(segment, position, len.max(SCAN_BLOCK_BYTES), segment_end).await?;
            }
            let at = (position - block_start) as usize + CHUNK_HEADER_BYTES;
            let payload = &block[at..at + payload_bytes as usize];
            if crc32c::crc32c(payload) != payload_crc {
                break Some(ScanEnd::Corrupt);
            }
            if !dispatch_chunk(
                payload,
                position + CHUNK_HEADER_BYTES as u64,
                config,
                queues,
            ) {
                break Some(ScanEnd::Corrupt);
            }
            scanned_bytes += chunk_end - position;
            position = chunk_end;
        };
        match outcome {
            None => {
                if index + 1 == segments.len() {
                    // The last segment is full and no next one exists yet.
                    position = segment.start + config.segment_bytes;
                }
            }
            Some(end) => {
                if end == ScanEnd::Corrupt {
                    tracing::warn!(path = %segment.path.display(), position,
                        "torn or corrupt commit-log tail; truncating it");
                }
                how = end;
                break;
            }
        }
    }
    tracing::info!(
        from,
        to = position,
        scanned_bytes,
        "commit-log tail recovered"
    );
    Ok((position, how))
}

async fn read_block<F: StorageFile>(
    segment: &Segment<F>,
    position: u64,
    len: usize,
    segment_end: u64,
) -> Result<BytesMut, StoreError> {
    let len = len.min((segment_end - position) as usize);
    let buf = BytesMut::with_capacity(len);
    let (result, buf) = segment
        .file
        .read_exact_at(buf, position - segment.start)
        .await;
    result.map_err(|e| StoreError::io("read commit log", &segment.path, e))?;
    Ok(buf)
}

/// Parses the records of one verified chunk and appends their consume-queue entries. False if
/// a record is malformed or does not continue its queue: the chunk is treated as corrupt.
pub(crate) fn dispatch_chunk<F: Clone>(
    payload: &[u8],
    mut position: u64,
    config: &StoreConfig,
    queues: &mut QueueMap<F>,
) -> bool {
    // Validate the whole chunk before dispatching any of it, so a bad chunk adds nothing:
    // framing, physical offsets, and that each record continues its queue (tracked across the
    // chunk's own records, since one chunk may hold several of a queue).
    let mut next_of: Vec<(&str, i32, u64)> = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let Ok((record, size)) = StoredRecord::decode(&payload[at..]) else {
            return false;
        };
        if record.physical_offset as u64 != position + at as u64 || record.queue_offset < 0 {
            return false;
        }
        let queue_offset = record.queue_offset as u64;
        let known = next_of
            .iter_mut()
            .find(|(topic, queue_id, _)| *topic == record.topic && *queue_id == record.queue_id);
        let expected = if let Some((_, _, next)) = known {
            Some(std::mem::replace(next, queue_offset + 1))
        } else {
            let existing = usize::try_from(record.queue_id)
                .ok()
                .and_then(|index| queues.get(record.topic)?.get(index)?.as_ref())
                // A queue that never held anything starts wherever its first record is.
                .filter(|q| !(q.next_offset() == q.min_offset && q.files.is_empty()))
                .map(ConsumeQueue::next_offset);
            next_of.push((record.topic, record.queue_id, queue_offset + 1));
            existing
        };
        if expected.is_some_and(|expected| expected != queue_offset) {
            tracing::warn!(
                topic = record.topic,
                queue_id = record.queue_id,
                expected,
                found = queue_offset,
                "record does not continue its consume queue"
            );
            return false;
        }
        at += size;
    }
    let mut at = 0;
    let mut state_queues = StateQueues { queues, config };
    while at < payload.len() {
        let Ok((record, size)) = StoredRecord::decode(&payload[at..]) else {
            return false;
        };
        let Some(queue) = state_queues.get(record.topic, record.queue_id) else {
            return false;
        };
        let queue_offset = record.queue_offset as u64;
        if queue.next_offset() != queue_offset {
            if queue.next_offset() == queue.min_offset && queue.files.is_empty() {
                queue.restart_at(queue_offset);
            } else {
                tracing::warn!(
                    topic = record.topic,
                    queue_id = record.queue_id,
                    expected = queue.next_offset(),
                    found = queue_offset,
                    "record does not continue its consume queue"
                );
                return false;
            }
        }
        queue.push(CqEntry {
            physical_offset: position,
            size: size as u32,
            tags_hash: record_tags_hash(record.properties),
        });
        at += size;
        position += size as u64;
    }
    true
}

struct StateQueues<'a, F> {
    queues: &'a mut QueueMap<F>,
    config: &'a StoreConfig,
}

impl<F: Clone> StateQueues<'_, F> {
    fn get(&mut self, topic: &str, queue_id: i32) -> Option<&mut ConsumeQueue<F>> {
        let index = usize::try_from(queue_id).ok()?;
        let slots = self.queues.entry(topic.into()).or_default();
        if slots.len() <= index {
            slots.resize_with(index + 1, || None);
        }
        Some(slots[index].get_or_insert_with(|| {
            ConsumeQueue::new(
                Rc::from(topic),
                queue_id,
                cq_dir(&self.config.dir, topic, queue_id),
                self.config.cq_entries_per_file,
                0,
                0,
            )
        }))
    }
}

/// Cuts the log at `end`: later segments are removed and, when `cut`, the segment holding the
/// end is truncated there (and re-reserved), so no stale bytes past the end can be read as
/// chunks.
async fn truncate_after<S: Storage>(
    storage: &S,
    config: &StoreConfig,
    segments: &mut VecDeque<Rc<Segment<S::File>>>,
    end: u64,
    cut: bool,
) -> Result<(), StoreError> {
    while segments.len() > 1 && segments.back().is_some_and(|s| s.start > end) {
        if let Some(segment) = segments.pop_back() {
            remove(storage, &segment.path).await?;
        }
    }
    // A log that ends exactly at a segment boundary continues in a new segment.
    if let Some(last) = segments.back()
        && end >= last.start + config.segment_bytes
    {
        return Ok(());
    }
    if !cut {
        return Ok(());
    }
    if let Some(last) = segments.back() {
        let keep = end - last.start;
        last.file
            .truncate(keep)
            .await
            .map_err(|e| StoreError::io("truncate segment", &last.path, e))?;
        if config.preallocate {
            last.file
                .allocate(config.segment_bytes)
                .await
                .map_err(|e| StoreError::io("allocate segment", &last.path, e))?;
        }
        last.file
            .sync_data()
            .await
            .map_err(|e| StoreError::io("fdatasync", &last.path, e))?;
    }
    let log_dir = config.dir.join("commitlog");
    storage
        .sync_dir(&log_dir)
        .await
        .map_err(|e| StoreError::io("sync directory", &log_dir, e))
}
