//! Recovery: from the files a store left (cleanly or not) to the in-memory state it opens with.
//!
//! 1. Read the checkpoint and judge it against the segments found ([`CheckpointState`]).
//! 2. A trusted checkpoint's queues are loaded and their files trimmed to it; otherwise every
//!    queue is rebuilt from the whole log.
//! 3. From the checkpoint's offset (or the first segment), each chunk gets a
//!    [`table::ChunkVerdict`] and [`table::decide`] says what to do with it (`scan`).
//! 4. The log is cut where the scan ended, later segment files are removed, a store with no
//!    segment gets its first one, and the scanned tail is made durable.
//!
//! The checkpoint's promise (crate::checkpoint) is what keeps the scan short: only bytes past
//! its offset are read.

mod scan;
mod table;

use std::{collections::VecDeque, rc::Rc};

use crate::{
    StoreConfig, StoreError,
    checkpoint::Checkpoint,
    commitlog::{LogState, Segment},
    files::{create_segment, remove_if_present, sync_dir},
    format::{
        CHECKPOINT_FILE, COMMITLOG_DIR, CONSUMEQUEUE_DIR, CQ_ENTRY_BYTES, parse_segment_name,
    },
    io::{Storage, StorageFile},
    metadata::{MetadataError, MetadataFile},
    queues::Queues,
};
use scan::LogEnd;
use table::CheckpointFile;
pub(crate) use table::CheckpointState;

/// Recovers the store in `config.dir` (creating it if new): its commit log, ready for appends
/// at the recovered end, and its consume queues, holding every record below that end.
pub(crate) async fn recover<S: Storage>(
    storage: &S,
    config: &StoreConfig,
) -> Result<(LogState<S::File>, Queues<S::File>), StoreError> {
    let dir = &config.dir;
    for path in [dir, &dir.join(COMMITLOG_DIR), &dir.join(CONSUMEQUEUE_DIR)] {
        storage
            .create_dir_all(path)
            .await
            .map_err(|e| StoreError::io("create directory", path, e))?;
    }
    let (file, checkpoint) = load_checkpoint(storage, config).await?;
    let mut segments = load_segments(storage, config).await?;
    let first_segment = segments.front().map(|s| s.start());
    let bounds = first_segment.zip(segments.back().map(|s| s.start() + config.segment_bytes));
    let state = CheckpointState::classify(file, bounds, config.base_offset());
    let trusted = checkpoint.as_ref().filter(|_| state.trusted());
    let scan_from = trusted.map_or_else(
        || first_segment.unwrap_or(config.base_offset()),
        Checkpoint::log_offset,
    );
    // Rebuilding is worth a warning unless there is nothing to rebuild from: a new store.
    let warn_rebuild = checkpoint.is_some() || scan_from > config.base_offset();
    let mut queues = load_queues(storage, config, trusted, warn_rebuild).await?;
    let end = scan::scan_tail(config, &segments, scan_from, &mut queues, state).await?;
    if !segments.is_empty() {
        truncate_after(storage, config, &mut segments, end).await?;
    }
    if segments.is_empty() {
        let segment = create_segment(storage, config, config.base_offset()).await?;
        segments.push_back(Rc::new(segment));
    }
    // The scanned tail may only have been in the page cache: make it durable before a
    // checkpoint vouches for it.
    for segment in segments
        .iter()
        .filter(|s| s.start() + config.segment_bytes > scan_from)
    {
        segment
            .file()
            .sync_data()
            .await
            .map_err(|e| StoreError::io("fdatasync", segment.path(), e))?;
    }
    let log = LogState::new(
        config.segment_bytes,
        config.max_chunk_bytes,
        config.read_cache_bytes,
        segments,
        end.offset(),
    );
    Ok((log, queues))
}

/// Reads the checkpoint: what the file is, and the document when it verifies. Refuses a store
/// created with another layout.
async fn load_checkpoint<S: Storage>(
    storage: &S,
    config: &StoreConfig,
) -> Result<(CheckpointFile, Option<Checkpoint>), StoreError> {
    let dir = &config.dir;
    let mut checkpoint_file = MetadataFile::new(storage.clone(), dir.join(CHECKPOINT_FILE));
    let found: Checkpoint = match checkpoint_file.load().await {
        Ok(Some(found)) => found,
        Ok(None) => return Ok((CheckpointFile::Missing, None)),
        Err(MetadataError::Corrupt { path, reason }) => {
            tracing::warn!(path = %path.display(), %reason,
                    "checkpoint unreadable; rebuilding consume queues from the whole commit log");
            return Ok((CheckpointFile::Corrupt, None));
        }
        Err(err) => return Err(err.into()),
    };
    found.check_layout(config)?;
    if !found.clean_shutdown() {
        tracing::warn!(dir = %dir.display(), log_offset = found.log_offset(),
                "unclean shutdown detected; recovering the commit-log tail");
    }
    let file = CheckpointFile::Read {
        log_offset: found.log_offset(),
        clean_shutdown: found.clean_shutdown(),
    };
    Ok((file, Some(found)))
}

/// Opens the commit-log segments: a contiguous run from the oldest; files after a gap are
/// leftovers and removed.
async fn load_segments<S: Storage>(
    storage: &S,
    config: &StoreConfig,
) -> Result<VecDeque<Rc<Segment<S::File>>>, StoreError> {
    let log_dir = config.dir.join(COMMITLOG_DIR);
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
        segments.push_back(Rc::new(Segment::new(start, file, path)));
    }
    // Keep only a contiguous run: a gap means the later files are leftovers.
    let mut contiguous = segments.len().min(1);
    while contiguous < segments.len()
        && segments[contiguous].start() == segments[contiguous - 1].start() + config.segment_bytes
    {
        contiguous += 1;
    }
    let leftovers: Vec<_> = segments.drain(contiguous..).collect();
    for segment in leftovers {
        tracing::warn!(path = %segment.path().display(), "removing commit-log segment after a gap");
        remove_if_present(storage, "remove", segment.path()).await?;
    }

    Ok(segments)
}

/// Loads the consume queues a trusted checkpoint names and trims their files to it; removes
/// the files of those queues that lie wholly outside the checkpoint. Without a trusted
/// checkpoint every queue is rebuilt from the log.
async fn load_queues<S: Storage>(
    storage: &S,
    config: &StoreConfig,
    trusted: Option<&Checkpoint>,
    warn_rebuild: bool,
) -> Result<Queues<S::File>, StoreError> {
    let mut queues = Queues::new(&config.dir, config.cq_entries_per_file);
    let per_file = config.cq_entries_per_file;
    let Some(found) = trusted else {
        if warn_rebuild {
            // Consume-queue files of an unusable checkpoint are not removed: the queues are
            // rebuilt in memory from the log and the next checkpoint rewrites the same entries
            // in place; whatever lies past a queue's rebuilt end is never read and is cut at the
            // next open.
            tracing::warn!(dir = %config.dir.display(), "rebuilding every consume queue from the commit log");
        }
        return Ok(queues);
    };
    for queue in found.queues() {
        let (min_offset, next_offset) = (queue.min_offset(), queue.next_offset());
        let mut cq = queues.new_queue(queue.topic(), queue.queue_id(), min_offset, next_offset);
        let names = match storage.list_dir(cq.dir()).await {
            Ok(names) => names,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(StoreError::io("list", cq.dir(), err)),
        };
        for name in names {
            let Some(start) = parse_segment_name(&name) else {
                continue;
            };
            let path = cq.dir().join(&name);
            if start >= next_offset || start + per_file <= min_offset {
                remove_if_present(storage, "remove", &path).await?;
            } else if start + per_file > next_offset {
                // The file holding the end: cut entries the checkpoint does not vouch for.
                let file = storage
                    .open(&path, false)
                    .await
                    .map_err(|e| StoreError::io("open consume queue", &path, e))?;
                let keep = (next_offset - start) * CQ_ENTRY_BYTES as u64;
                let len = file
                    .len()
                    .await
                    .map_err(|e| StoreError::io("stat", &path, e))?;
                if len > keep {
                    file.truncate(keep)
                        .await
                        .map_err(|e| StoreError::io("truncate consume queue", &path, e))?;
                }
                cq.set_file(start, Some(file));
            } else {
                cq.set_file(start, None);
            }
        }
        queues.insert(cq);
    }
    Ok(queues)
}

/// Cuts the log at `end`: later segments are removed and, for [`LogEnd::Truncate`], the
/// segment holding the end is truncated there (and re-reserved), so no stale bytes past the
/// end can be read as chunks.
async fn truncate_after<S: Storage>(
    storage: &S,
    config: &StoreConfig,
    segments: &mut VecDeque<Rc<Segment<S::File>>>,
    end: LogEnd,
) -> Result<(), StoreError> {
    let offset = end.offset();
    while segments.len() > 1 && segments.back().is_some_and(|s| s.start() > offset) {
        if let Some(segment) = segments.pop_back() {
            remove_if_present(storage, "remove", segment.path()).await?;
        }
    }
    // A log that ends exactly at a segment boundary continues in a new segment.
    if let Some(last) = segments.back()
        && offset >= last.start() + config.segment_bytes
    {
        return Ok(());
    }
    let LogEnd::Truncate(_) = end else {
        return Ok(());
    };
    if let Some(last) = segments.back() {
        let (file, path) = (last.file(), last.path());
        file.truncate(offset - last.start())
            .await
            .map_err(|e| StoreError::io("truncate segment", path, e))?;
        if config.preallocate {
            file.allocate(config.segment_bytes)
                .await
                .map_err(|e| StoreError::io("allocate segment", path, e))?;
        }
        file.sync_data()
            .await
            .map_err(|e| StoreError::io("fdatasync", path, e))?;
    }
    sync_dir(storage, &config.dir.join(COMMITLOG_DIR)).await
}
