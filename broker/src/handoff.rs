//! Cross-shard hand-offs, batched: requests read here for queues another shard owns, and
//! answers computed here for connections another shard holds.
//!
//! Every message through a shard's inbox may wake that shard's thread (a syscall and, when the
//! thread sleeps, a context switch on both sides). Sending each forwarded request and each
//! answer on its own made a broker with two shards spend twice the CPU per message of a broker
//! with one. So a shard gathers what it has for each other shard in [`Handoff`] while its tasks
//! run, and one sender task ([`Handoff::run`]) hands each destination everything gathered as
//! one [`ShardMessage::Handoff`]. The sender is woken by the first item and, since a woken task
//! runs after the tasks already runnable, it sends only once every reader that had input and
//! every append the last fsync acknowledged have added theirs: one wake per turn of the
//! runtime and destination, not one per request.
//!
//! Order: requests of one connection for one owner keep their order (one queue per
//! destination, one inbox); answers may travel in any order (clients match them by opaque).
//!
//! Bound: at most [`MAX_QUEUED`] items wait here; past that a reader waits for
//! [`Handoff::room`] before reading on, which is how a full inbox of the owner pauses the
//! connections that feed it (oneway requests are not bounded by the in-flight limit).

use std::cell::{Cell, RefCell};

use ringmq_protocol::Command;
use ringmq_storage::signal::{Listen, Signal};

use crate::messages::{HandoffBatch, Origin, Outbound, ShardMessage};

/// Items (requests and answers) gathered for other shards before readers must wait.
pub(crate) const MAX_QUEUED: usize = 4096;

/// What one shard has gathered for the others, and the wakes of its sender task.
///
/// Invariant: `queued` is the number of items in `batches`; `batches[s]` is empty for
/// `s == own shard`.
#[derive(Debug)]
pub(crate) struct Handoff {
    batches: RefCell<Vec<HandoffBatch>>,
    queued: Cell<usize>,
    ready: Signal,
    room: Signal,
}

impl Handoff {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            batches: RefCell::new((0..shards).map(|_| HandoffBatch::default()).collect()),
            queued: Cell::new(0),
            ready: Signal::default(),
            room: Signal::default(),
        }
    }

    /// Queues a request for the shard owning its queue.
    pub(crate) fn request(&self, shard: usize, command: Command, origin: Origin) {
        self.push(shard, |batch| batch.requests.push((command, origin)));
    }

    /// Queues an answer for a connection of `shard`.
    pub(crate) fn deliver(&self, shard: usize, connection: u64, frame: Outbound) {
        self.push(shard, |batch| batch.deliveries.push((connection, frame)));
    }

    fn push(&self, shard: usize, add: impl FnOnce(&mut HandoffBatch)) {
        let mut batches = self.batches.borrow_mut();
        let Some(batch) = batches.get_mut(shard) else {
            return;
        };
        add(batch);
        drop(batches);
        let queued = self.queued.get();
        self.queued.set(queued + 1);
        if queued == 0 {
            self.ready.notify();
        }
    }

    /// Whether readers must wait for [`Handoff::room`] before queuing more.
    pub(crate) fn is_full(&self) -> bool {
        self.queued.get() >= MAX_QUEUED
    }

    /// Resolves when the sender has taken what was queued.
    pub(crate) fn room(&self) -> Listen<'_> {
        self.room.listen()
    }

    /// The sender task: hands each destination what was gathered for it, as one message,
    /// whenever something was gathered. Waits while a destination's inbox is full (items keep
    /// gathering meanwhile, up to the bound). Runs until the shard's runtime drops it.
    pub(crate) async fn run(&self, inboxes: &[flume::Sender<ShardMessage>]) {
        let mut taken: Vec<(usize, HandoffBatch)> = Vec::new();
        loop {
            if self.queued.get() == 0 {
                self.ready.listen().await;
                continue;
            }
            for (shard, batch) in self.batches.borrow_mut().iter_mut().enumerate() {
                if !batch.is_empty() {
                    taken.push((shard, std::mem::take(batch)));
                }
            }
            self.queued.set(0);
            self.room.notify();
            for (shard, batch) in taken.drain(..) {
                let Some(inbox) = inboxes.get(shard) else {
                    continue;
                };
                if inbox
                    .send_async(ShardMessage::Handoff(batch))
                    .await
                    .is_err()
                {
                    tracing::debug!(shard, "shard stopped; hand-off dropped");
                }
            }
        }
    }
}
