//! [`MessageStore`]: one shard's store. This file holds the handle, what its parts share
//! ([`Inner`]) and the few steps every part needs (failing the log, preparing the next
//! segment); each concern has its own file, listed so that each uses only this file and files
//! before it in the list (nothing calls back):
//!
//! - `flush`: the writer and flusher tasks that move appended bytes to the files and to disk,
//!   and the waits on their progress.
//! - `read`: reads, lookups and the store's physical view.
//! - `append`: appends, from records to an acknowledgement (uses `flush`).
//! - `checkpoint`: consume-queue flushes and checkpoints, and their periodic task (uses
//!   `flush`).
//! - `retention`: removing old segments, and the disk watermarks (uses `read`).
//! - `lifecycle`: open (recovery itself is `crate::recovery`) and close (starts and stops the
//!   tasks of `flush`, `checkpoint` and `retention`).
//! - `replica`: what a slave's store does: take a master's chunks, move its start (uses
//!   `append`'s backpressure, `flush`, `checkpoint`).

pub(crate) mod append;
mod checkpoint;
mod flush;
mod lifecycle;
pub(crate) mod read;
mod replica;
pub(crate) mod retention;

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    sync::Arc,
};

use compio::runtime::JoinHandle;

use crate::{
    StoreConfig, StoreError,
    ack::AckQueue,
    commitlog::{LogState, SpareClaim},
    files::create_segment,
    io::Storage,
    queues::Queues,
    signal::Signal,
    state::StoreState,
    watch::LogWatch,
};

/// Shared by the store handle and its background tasks.
///
/// Its fields are private to `store` and its files; `state` is only borrowed in synchronous
/// sections, never across an `.await`.
#[derive(Debug)]
struct Inner<S: Storage> {
    storage: S,
    config: StoreConfig,
    state: RefCell<StoreState<S::File>>,
    /// New bytes to write (wakes the writer).
    work: Signal,
    /// written/durable advanced, a failure happened, space freed, a segment was prepared, a
    /// checkpoint ended.
    progress: Signal,
    /// Someone wants an fdatasync now (checkpoint, close, SYNC_FLUSH writes).
    flush_request: Signal,
    /// Stops the periodic tasks.
    stop: Signal,
    tasks: RefCell<Vec<JoinHandle<()>>>,
    /// Appenders waiting for acknowledgement.
    acks: AckQueue,
    /// A checkpoint is being written (they must not overlap: one temporary file).
    checkpoint_busy: Cell<bool>,
    /// Durations (µs) of recent fdatasync rounds, for the broker's flush-latency metric;
    /// bounded by `flush::MAX_SYNC_SAMPLES`, drained by
    /// [`MessageStore::drain_sync_latencies_us`].
    sync_latencies_us: RefCell<Vec<u32>>,
    /// The log's marks for other threads (replication).
    watch: Arc<LogWatch>,
}

/// One shard's message store. Cheap to clone (a reference-counted handle); `!Send`: it belongs
/// to the shard thread that opened it.
#[derive(Debug)]
pub struct MessageStore<S: Storage> {
    inner: Rc<Inner<S>>,
}

impl<S: Storage> Clone for MessageStore<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<S: Storage> MessageStore<S> {
    /// A store over recovered state; no task runs yet.
    fn from_recovered(
        storage: S,
        config: StoreConfig,
        log: LogState<S::File>,
        queues: Queues<S::File>,
    ) -> Self {
        let watch = Arc::new(LogWatch::new(log.write_pos(), log.min_offset()));
        Self {
            inner: Rc::new(Inner {
                storage,
                config,
                state: RefCell::new(StoreState::new(log, queues)),
                work: Signal::default(),
                progress: Signal::default(),
                flush_request: Signal::default(),
                stop: Signal::default(),
                tasks: RefCell::new(Vec::new()),
                acks: AckQueue::default(),
                checkpoint_busy: Cell::new(false),
                sync_latencies_us: RefCell::new(Vec::new()),
                watch,
            }),
        }
    }

    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The first fatal failure, if the store refuses writes.
    pub fn failure(&self) -> Option<String> {
        self.inner.state.borrow().failure().map(str::to_owned)
    }

    /// Disk usage above the hard watermark, when appends are refused for it.
    pub fn disk_full(&self) -> Option<f64> {
        self.inner.state.borrow().disk_full()
    }

    /// Marks the store failed: every later write is refused and waiting appends wake up.
    fn fail(&self, reason: String) {
        tracing::error!(dir = %self.inner.config.dir.display(), %reason, "commit log failed; refusing writes");
        self.inner.state.borrow_mut().fail(reason);
        self.inner.progress.notify();
        self.inner.acks.wake_all();
    }

    /// Creates the next segment (or waits for the task already creating it). A failure here
    /// (ENOSPC, typically) is the caller's error, not a sticky failure of the log.
    async fn prepare_segment(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let claim = inner.state.borrow_mut().log_mut().claim_spare();
        let start = match claim {
            SpareClaim::Ready => return Ok(()),
            SpareClaim::Busy => {
                // Another task is creating it: wait for its outcome, then let the caller retry.
                inner.progress.listen().await;
                return Ok(());
            }
            SpareClaim::Create(start) => start,
        };
        let result = create_segment(&inner.storage, &inner.config, start).await;
        let (segment, outcome) = match result {
            Ok(segment) => (Some(Rc::new(segment)), Ok(())),
            Err(err) => (None, Err(err)),
        };
        inner.state.borrow_mut().log_mut().spare_created(segment);
        inner.progress.notify();
        outcome
    }
}
