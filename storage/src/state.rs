//! [`StoreState`]: everything of one shard's store that changes, in one place.
//!
//! It is owned by the store's `RefCell` and only touched in synchronous sections, never borrowed
//! across an `.await`: each method is one step that cannot be interleaved with another task's.

use crate::{FlushMode, StoreError, commitlog::LogState, queues::Queues};

/// Mutable state of a store.
///
/// Invariants: once `failure` is set it never changes (the first failure is the one reported);
/// once `closing` is set it stays set.
#[derive(Debug)]
pub(crate) struct StoreState<F> {
    log: LogState<F>,
    queues: Queues<F>,
    /// First fatal write failure: writes are refused from then on.
    failure: Option<String>,
    /// Disk usage (percent) when above the hard watermark.
    disk_full: Option<f64>,
    closing: bool,
}

impl<F: Clone> StoreState<F> {
    /// A healthy, open store's state.
    pub fn new(log: LogState<F>, queues: Queues<F>) -> Self {
        Self {
            log,
            queues,
            failure: None,
            disk_full: None,
            closing: false,
        }
    }

    /// The commit log.
    pub fn log(&self) -> &LogState<F> {
        &self.log
    }

    /// The commit log.
    pub fn log_mut(&mut self) -> &mut LogState<F> {
        &mut self.log
    }

    /// The consume queues.
    pub fn queues(&self) -> &Queues<F> {
        &self.queues
    }

    /// The consume queues.
    pub fn queues_mut(&mut self) -> &mut Queues<F> {
        &mut self.queues
    }

    /// Both at once, for a step that indexes what it appends (an append, a replicated chunk).
    pub fn log_and_queues_mut(&mut self) -> (&mut LogState<F>, &mut Queues<F>) {
        (&mut self.log, &mut self.queues)
    }

    /// What readers may see: acknowledged bytes (durable under SYNC_FLUSH, written under
    /// ASYNC_FLUSH).
    pub fn confirmed(&self, mode: FlushMode) -> u64 {
        match mode {
            FlushMode::Sync => self.log.durable(),
            FlushMode::Async => self.log.written(),
        }
    }

    /// Refuses writes after a failure, once closing, or while the disk is full.
    pub fn check_writable(&self, hard_percent: u8) -> Result<(), StoreError> {
        self.check_not_failed()?;
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

    /// [`StoreError::WritesDisabled`] once the log has failed.
    pub fn check_not_failed(&self) -> Result<(), StoreError> {
        match &self.failure {
            Some(reason) => Err(StoreError::WritesDisabled {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The first fatal failure, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Whether a fatal failure happened.
    pub fn has_failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Records a fatal failure; only the first one is kept.
    pub fn fail(&mut self, reason: String) {
        if self.failure.is_none() {
            self.failure = Some(reason);
        }
    }

    /// Whether the store is closing.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Marks the store closing: appends are refused from now on.
    pub fn set_closing(&mut self) {
        self.closing = true;
    }

    /// Disk usage (percent) while above the hard watermark.
    pub fn disk_full(&self) -> Option<f64> {
        self.disk_full
    }

    /// Sets or clears the disk-full state; returns whether it was set before.
    pub fn set_disk_full(&mut self, used_percent: Option<f64>) -> bool {
        std::mem::replace(&mut self.disk_full, used_percent).is_some()
    }
}
