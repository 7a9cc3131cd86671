//! [`LogWatch`]: the log's marks published for other threads. The broker's replication runs
//! on side threads (docs/architecture.md §6); this is how they see the shard's log move without
//! touching the shard.

use std::{
    sync::{
        Condvar, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

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
