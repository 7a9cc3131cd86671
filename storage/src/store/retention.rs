//! Retention: whole old segments go, by age and by disk-usage watermarks; above the hard
//! watermark appends are refused until usage falls again. Age is measured with the store's
//! [`StoreConfig::clock`](crate::StoreConfig::clock), against the records' store timestamps.

use ringmq_protocol::message::record::StoredRecord;

use super::MessageStore;
use crate::{
    StoreError,
    files::{remove_if_present, sync_dir},
    format::{CHUNK_HEADER_BYTES, COMMITLOG_DIR, CqEntry, segment_name},
    io::Storage,
};

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetentionReport {
    /// Commit-log segments removed (their start offsets).
    pub removed_segments: Vec<u64>,
    /// Disk usage measured at the end of the pass, percent.
    pub used_percent: f64,
    /// Whether appends are refused for lack of space.
    pub disk_full: bool,
}

impl<S: Storage> MessageStore<S> {
    /// The retention task: one pass at once, then one every `retention_check_interval`.
    pub(super) async fn run_retention(self) {
        loop {
            let stop = self.inner.stop.listen();
            if self.inner.state.borrow().is_closing() {
                return;
            }
            if let Err(err) = self.enforce_retention().await {
                tracing::warn!(%err, "retention pass failed");
            }
            if compio::time::timeout(self.inner.config.retention_check_interval, stop)
                .await
                .is_ok()
            {
                return;
            }
        }
    }

    /// Measures disk usage, updates the disk-full state and removes the segments that are too
    /// old or must go to get under the high watermark. The active segment is never removed.
    pub async fn enforce_retention(&self) -> Result<RetentionReport, StoreError> {
        let inner = &self.inner;
        let config = &inner.config;
        let mut report = RetentionReport::default();
        let mut used = self.measure_usage()?;
        let expire_before_ms = config
            .clock
            .now_ms()
            .saturating_sub(i64::try_from(config.retention.as_millis()).unwrap_or(i64::MAX));
        loop {
            let Some((oldest, next_start)) = inner.state.borrow().log().oldest_removable() else {
                break;
            };
            let over_high = used >= f64::from(config.high_watermark_percent);
            // A segment is as old as the newest record in it, which is older than the first
            // record of the next segment.
            let expired = match self.first_store_time(next_start).await {
                Some(next_first_ms) => next_first_ms < expire_before_ms,
                None => false,
            };
            if !over_high && !expired {
                break;
            }
            self.remove_oldest_segment().await?;
            tracing::info!(segment = %segment_name(oldest), over_high, expired, "removed commit-log segment");
            report.removed_segments.push(oldest);
            used = self.measure_usage()?;
        }
        report.used_percent = used;
        report.disk_full = self.inner.state.borrow().disk_full().is_some();
        Ok(report)
    }

    /// Reads disk usage and sets or clears the disk-full state; waiting appenders are woken
    /// when space comes back.
    fn measure_usage(&self) -> Result<f64, StoreError> {
        let inner = &self.inner;
        let usage = inner
            .storage
            .disk_usage(&inner.config.dir)
            .map_err(|e| StoreError::io("statvfs", &inner.config.dir, e))?;
        let used = usage.used_percent();
        let full = used >= f64::from(inner.config.hard_watermark_percent);
        let was_full = inner.state.borrow_mut().set_disk_full(full.then_some(used));
        if full && !was_full {
            tracing::error!(
                used_percent = used,
                "disk above the hard watermark; refusing appends"
            );
        } else if was_full && !full {
            tracing::info!(
                used_percent = used,
                "disk usage back under the hard watermark; accepting appends"
            );
            inner.progress.notify();
        }
        Ok(used)
    }

    /// Store time of the first record of the segment starting at `start`, if it has one.
    async fn first_store_time(&self, start: u64) -> Option<i64> {
        let position = start + CHUNK_HEADER_BYTES as u64;
        let record = self.read_message_at(position).await.ok()?;
        StoredRecord::decode(&record)
            .ok()
            .map(|(record, _)| record.store_timestamp_ms)
    }

    /// Removes the oldest segment and moves every queue's min offset past its records.
    async fn remove_oldest_segment(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let Some(segment) = inner.state.borrow_mut().log_mut().pop_oldest() else {
            return Ok(());
        };
        inner
            .watch
            .set_min_offset(inner.state.borrow().log().min_offset());
        let min_physical = segment.start() + inner.config.segment_bytes;
        // Queues first: once the segment is gone, nothing may point into it.
        let queues = self.queues();
        for (topic, queue_id) in queues {
            self.advance_queue_min(&topic, queue_id, min_physical)
                .await?;
        }
        inner
            .storage
            .remove(segment.path())
            .await
            .map_err(|e| StoreError::io("remove segment", segment.path(), e))?;
        sync_dir(&inner.storage, &inner.config.dir.join(COMMITLOG_DIR)).await
    }

    /// Moves a queue's min offset to its first entry at or past `min_physical` and removes the
    /// queue files that lie wholly below it.
    async fn advance_queue_min(
        &self,
        topic: &str,
        queue_id: i32,
        min_physical: u64,
    ) -> Result<(), StoreError> {
        let Some((mut low, mut high)) = self
            .inner
            .state
            .borrow()
            .queues()
            .get(topic, queue_id)
            .map(|q| (q.min_offset(), q.next_offset()))
        else {
            return Ok(());
        };
        // Binary search: the first entry whose record is at or past min_physical.
        let mut entries: Vec<CqEntry> = Vec::with_capacity(1);
        while low < high {
            let mid = low + (high - low) / 2;
            entries.clear();
            self.cq_entries(topic, queue_id, mid, mid + 1, &mut entries)
                .await?;
            match entries.first() {
                Some(entry) if entry.physical_offset < min_physical => low = mid + 1,
                _ => high = mid,
            }
        }
        let (remove, dir) = {
            let mut state = self.inner.state.borrow_mut();
            let Some(queue) = state.queues_mut().get_mut(topic, queue_id) else {
                return Ok(());
            };
            queue.advance_min(low);
            (queue.forget_files_below(low), queue.dir().to_path_buf())
        };
        for start in remove {
            let path = dir.join(segment_name(start));
            remove_if_present(&self.inner.storage, "remove consume queue", &path).await?;
        }
        Ok(())
    }
}
