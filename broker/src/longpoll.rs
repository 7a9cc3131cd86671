//! Long polling (docs/protocol.md §3.5 step 6): a pull that finds nothing parks on its queue until a
//! message is stored there or its suspend timeout passes.
//!
//! Per shard and lock-free: pulls of a queue run on the shard that owns it, and so do the sends
//! that wake them. A send wakes every pull parked on its queue; each re-reads once and answers.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    rc::Rc,
    time::Duration,
};

use ringmq_storage::signal::Signal;

#[derive(Debug, Default)]
struct Waiters {
    signal: Signal,
    parked: Cell<usize>,
}

/// The parked pulls of one shard, by queue.
#[derive(Debug, Default)]
pub(crate) struct LongPoll {
    queues: RefCell<HashMap<String, HashMap<i32, Rc<Waiters>>>>,
    parked: Cell<usize>,
}

/// Why a parked pull resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    Arrived,
    TimedOut,
}

impl LongPoll {
    /// Parks until a message is stored on (`topic`, `queue_id`) or `timeout` passes.
    ///
    /// The caller read the queue and found nothing with no `.await` between that read's
    /// completion and this call, so a store that happens after the read is always seen.
    pub(crate) async fn park(&self, topic: &str, queue_id: i32, timeout: Duration) -> Wake {
        let waiters = {
            let mut queues = self.queues.borrow_mut();
            let by_queue = match queues.get_mut(topic) {
                Some(found) => found,
                None => queues.entry(topic.to_owned()).or_default(),
            };
            Rc::clone(by_queue.entry(queue_id).or_default())
        };
        waiters.parked.set(waiters.parked.get() + 1);
        self.parked.set(self.parked.get() + 1);
        let listen = waiters.signal.listen();
        let wake = match compio::time::timeout(timeout, listen).await {
            Ok(()) => Wake::Arrived,
            Err(_) => Wake::TimedOut,
        };
        waiters.parked.set(waiters.parked.get() - 1);
        self.parked.set(self.parked.get() - 1);
        if waiters.parked.get() == 0 {
            // Forget the queue's waker list: a timed-out pull leaves its waker behind, and an
            // idle queue would otherwise collect them until its next message.
            let mut queues = self.queues.borrow_mut();
            if let Some(by_queue) = queues.get_mut(topic) {
                if by_queue
                    .get(&queue_id)
                    .is_some_and(|w| Rc::ptr_eq(w, &waiters))
                {
                    by_queue.remove(&queue_id);
                }
                if by_queue.is_empty() {
                    queues.remove(topic);
                }
            }
        }
        wake
    }

    /// A message was stored on (`topic`, `queue_id`): wake the pulls parked there.
    pub(crate) fn arrived(&self, topic: &str, queue_id: i32) {
        if self.parked.get() == 0 {
            return;
        }
        let queues = self.queues.borrow();
        if let Some(waiters) = queues.get(topic).and_then(|q| q.get(&queue_id)) {
            waiters.signal.notify();
        }
    }

    /// Pulls parked now.
    /// Wakes every parked pull (a slave learns of new messages by the chunk, not by queue).
    pub(crate) fn arrived_anywhere(&self) {
        if self.parked.get() == 0 {
            return;
        }
        for waiters in self.queues.borrow().values().flat_map(HashMap::values) {
            waiters.signal.notify();
        }
    }

    pub(crate) fn parked(&self) -> usize {
        self.parked.get()
    }
}
