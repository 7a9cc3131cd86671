//! Checkpoints: make everything appended durable, write the consume-queue entries to their
//! files, then record the point in the checkpoint file (crate::checkpoint states its promise).
//! A periodic task does this every `checkpoint_interval`, which bounds recovery's scan.

use std::path::PathBuf;

use super::{Inner, MessageStore};
use crate::{
    StoreError,
    checkpoint::{Checkpoint, QueueCheckpoint},
    files::sync_dir,
    format::{CHECKPOINT_FILE, CQ_ENTRY_BYTES, segment_name},
    io::{Storage, StorageFile},
    metadata::MetadataFile,
    queues::cq_dir,
};

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

impl<S: Storage> MessageStore<S> {
    /// The checkpoint task: one checkpoint every interval until the store stops or fails.
    pub(super) async fn run_checkpointer(self) {
        loop {
            let stop = self.inner.stop.listen();
            if self.inner.state.borrow().is_closing() {
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
                if self.inner.state.borrow().has_failed() {
                    return;
                }
            }
        }
    }

    /// Makes everything appended so far durable, writes the consume-queue entries to their
    /// files and records the point in the checkpoint file. Checkpoints never overlap (they
    /// share one temporary file): a second caller waits for the first.
    pub(super) async fn checkpoint(&self, clean_shutdown: bool) -> Result<(), StoreError> {
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
            state.log_mut().seal();
            let snapshot: Vec<QueueCheckpoint> = state
                .queues()
                .iter()
                .map(|queue| {
                    QueueCheckpoint::new(
                        queue.topic(),
                        queue.queue_id(),
                        queue.min_offset(),
                        queue.next_offset(),
                    )
                })
                .collect();
            (state.log().write_pos(), snapshot)
        };
        self.flush().await?;
        let mut dirty: Vec<(S::File, PathBuf)> = Vec::new();
        for queue in &snapshot {
            let work = {
                let state = inner.state.borrow();
                match state.queues().get(queue.topic(), queue.queue_id()) {
                    Some(cq) => cq.unflushed(queue.next_offset()),
                    None => continue,
                }
            };
            for (file_start, first_offset, bytes) in work {
                let file = self
                    .cq_file(queue.topic(), queue.queue_id(), file_start)
                    .await?;
                let path = cq_dir(&inner.config.dir, queue.topic(), queue.queue_id())
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
                if let Some(cq) = state.queues_mut().get_mut(queue.topic(), queue.queue_id()) {
                    cq.mark_flushed(queue.next_offset(), keep);
                    // Retention may have moved min since the snapshot; the file is the truth.
                    queue.set_min_offset(cq.min_offset());
                }
            }
        }
        let checkpoint = Checkpoint::new(&inner.config, clean_shutdown, log_offset, snapshot);
        let mut file = MetadataFile::new(
            inner.storage.clone(),
            inner.config.dir.join(CHECKPOINT_FILE),
        );
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
        let open = inner
            .state
            .borrow()
            .queues()
            .get(topic, queue_id)
            .and_then(|q| q.open_file(file_start));
        if let Some(file) = open {
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
        sync_dir(&inner.storage, &dir).await?;
        if let Some(queue) = inner
            .state
            .borrow_mut()
            .queues_mut()
            .get_mut(topic, queue_id)
        {
            queue.set_file(file_start, Some(file.clone()));
        }
        Ok(file)
    }
}
