//! The flush pipeline: the writer task moves sealed chunks into the segment files, the flusher
//! task makes them durable (group commit under SYNC_FLUSH, periodic under ASYNC_FLUSH), and
//! appenders wait here for the mark their flush mode acknowledges.
//!
//! Marks only grow: `durable <= written <= write_pos` (crate::commitlog). A failed write or
//! fdatasync fails the store for good (lib.rs, "Failure is sticky").

use std::{pin::pin, task::Poll, time::Instant};

use super::MessageStore;
use crate::{
    FlushMode, StoreError,
    commitlog::PendingWrite,
    io::{Storage, StorageFile},
    signal::Listen,
};

/// Commit-log writes issued at once.
const MAX_WRITES_IN_FLIGHT: usize = 4;

/// Sync durations kept until drained (older ones are dropped once full).
const MAX_SYNC_SAMPLES: usize = 4096;

impl<S: Storage> MessageStore<S> {
    /// Waits until `end` is acknowledged, or fails if the log failed before getting there.
    pub(super) async fn wait_confirmed(&self, end: u64) -> Result<(), StoreError> {
        let inner = &self.inner;
        std::future::poll_fn(|cx| {
            {
                let state = inner.state.borrow();
                if state.confirmed(inner.config.flush_mode) >= end {
                    return Poll::Ready(Ok(()));
                }
                if let Err(err) = state.check_not_failed() {
                    return Poll::Ready(Err(err));
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
    fn wake_acknowledged(&self) {
        let confirmed = self
            .inner
            .state
            .borrow()
            .confirmed(self.inner.config.flush_mode);
        self.inner.acks.wake_up_to(confirmed);
    }

    /// The writer task: issues pending chunks as writes, up to [`MAX_WRITES_IN_FLIGHT`] at a
    /// time, while appends keep filling the next chunk. Keeping several writes queued lets the
    /// kernel copy one chunk while the shard prepares the next (buffered writes to ext4 are
    /// served by an io_uring worker thread, and a queue of one would idle it between writes).
    pub(super) async fn run_writer(self) {
        let inner = &self.inner;
        let mut writes: Vec<PendingWrite<S::File>> = Vec::new();
        loop {
            let wake = {
                let mut state = inner.state.borrow_mut();
                if state.has_failed() {
                    return;
                }
                let closing = state.is_closing();
                let log = state.log_mut();
                let in_flight = log.in_flight();
                if log.has_pending() && in_flight < MAX_WRITES_IN_FLIGHT {
                    log.take_writes(&mut writes);
                    for write in &writes {
                        log.start_write(write.position());
                    }
                    None
                } else if closing && !log.has_pending() && in_flight == 0 {
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
    async fn write_chunk(self, mut write: PendingWrite<S::File>) {
        let inner = &self.inner;
        let file = write.segment().file().clone();
        let (result, bytes) = file
            .write_all_at(write.take_bytes(), write.file_offset())
            .await;
        if let Err(err) = result {
            self.fail(format!(
                "write of {} bytes at {} to {} failed: {err}",
                bytes.len(),
                write.position(),
                write.segment().path().display()
            ));
            inner.work.notify();
            return;
        }
        write.restore_bytes(bytes);
        let (advanced, wants_spare) = {
            let mut state = inner.state.borrow_mut();
            let log = state.log_mut();
            let advanced = log.complete_write(write);
            if advanced {
                inner.watch.set_written(log.written());
            }
            (advanced, log.wants_spare())
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
    async fn sync_written(&self) -> bool {
        let inner = &self.inner;
        let (target, dirty) = {
            let mut state = inner.state.borrow_mut();
            if state.has_failed() {
                return false;
            }
            let log = state.log_mut();
            if log.written() <= log.durable() {
                return true;
            }
            (log.written(), log.take_dirty())
        };
        let started = Instant::now();
        for segment in dirty {
            if let Err(err) = segment.file().sync_data().await {
                self.fail(format!(
                    "fdatasync of {} failed: {err}",
                    segment.path().display()
                ));
                return false;
            }
        }
        let mut samples = inner.sync_latencies_us.borrow_mut();
        if samples.len() < MAX_SYNC_SAMPLES {
            samples.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
        }
        drop(samples);
        let durable = inner.state.borrow_mut().log_mut().mark_durable(target);
        inner.watch.set_durable(durable);
        self.wake_acknowledged();
        inner.progress.notify();
        true
    }

    /// The flusher task. SYNC_FLUSH: group commit, an fdatasync starts as soon as the previous
    /// one ends if anything was written meanwhile. ASYNC_FLUSH: one every flush interval, or
    /// sooner when a checkpoint asks.
    pub(super) async fn run_flusher(self) {
        let inner = &self.inner;
        loop {
            let wait = {
                let state = inner.state.borrow();
                if state.has_failed() {
                    return;
                }
                let log = state.log();
                let idle = log.written() <= log.durable();
                if idle && state.is_closing() && !log.has_pending() {
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
    async fn wait_async_flush(&self, requested: Listen<'_>) {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.config.flush_interval;
        let mut requested = pin!(requested);
        loop {
            let progress = {
                let state = inner.state.borrow();
                let log = state.log();
                if log.written().saturating_sub(log.durable()) >= inner.config.flush_bytes
                    || state.has_failed()
                {
                    return;
                }
                inner.progress.listen()
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return;
            }
            let mut progress = pin!(progress);
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
            let log = state.log_mut();
            log.seal();
            log.write_pos()
        };
        inner.work.notify();
        loop {
            let (progress, ready) = {
                let state = inner.state.borrow();
                if state.log().durable() >= target {
                    return Ok(());
                }
                state.check_not_failed()?;
                (inner.progress.listen(), state.log().written() >= target)
            };
            if ready {
                inner.flush_request.notify();
            }
            progress.await;
        }
    }
}
