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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::{net::SocketAddr, time::Instant};

    use bytes::BytesMut;
    use ringmq_protocol::{Command, RequestCode, ResponseCode};

    use super::*;
    use crate::{clients::ChannelId, messages::FrameKind};

    fn origin(connection: u64) -> Origin {
        Origin {
            channel: ChannelId {
                shard: 0,
                connection,
            },
            peer: SocketAddr::from(([127, 0, 0, 1], 4000)),
            arrived: Instant::now(),
        }
    }

    fn frame() -> Outbound {
        Outbound {
            head: BytesMut::new(),
            body: Vec::new(),
            kind: FrameKind::Response(ResponseCode::Success),
        }
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        compio::runtime::Runtime::new().unwrap().block_on(future)
    }

    #[test]
    fn one_message_per_destination_carries_everything_gathered_in_order() {
        block_on(async {
            let (senders, receivers): (Vec<_>, Vec<_>) =
                (0..3).map(|_| flume::bounded::<ShardMessage>(8)).unzip();
            let handoff = std::rc::Rc::new(Handoff::new(3));
            for opaque in 0..5 {
                handoff.request(
                    1,
                    Command::request(RequestCode::SendMessageV2, opaque),
                    origin(7),
                );
            }
            handoff.deliver(2, 9, frame());
            handoff.deliver(1, 3, frame());
            let sender = {
                let handoff = std::rc::Rc::clone(&handoff);
                compio::runtime::spawn(async move { handoff.run(&senders).await })
            };

            let Ok(ShardMessage::Handoff(to_one)) = receivers[1].recv_async().await else {
                panic!("shard 1 got no hand-off");
            };
            let opaques: Vec<i32> = to_one.requests.iter().map(|(c, _)| c.opaque).collect();
            assert_eq!(opaques, [0, 1, 2, 3, 4], "requests keep their order");
            assert_eq!(to_one.deliveries.len(), 1);
            assert_eq!(to_one.deliveries[0].0, 3);
            let Ok(ShardMessage::Handoff(to_two)) = receivers[2].recv_async().await else {
                panic!("shard 2 got no hand-off");
            };
            assert!(to_two.requests.is_empty());
            assert_eq!(to_two.deliveries[0].0, 9);
            assert!(
                receivers[1].is_empty() && receivers[2].is_empty(),
                "one message each"
            );
            assert!(
                receivers[0].is_empty(),
                "nothing for the sending shard itself"
            );
            drop(sender);
        });
    }

    #[test]
    fn readers_wait_for_room_once_the_bound_is_reached() {
        block_on(async {
            let (sender_end, receiver) = flume::bounded::<ShardMessage>(1);
            let inboxes = vec![sender_end.clone(), sender_end];
            let handoff = std::rc::Rc::new(Handoff::new(2));
            for opaque in 0..MAX_QUEUED as i32 {
                assert!(!handoff.is_full());
                handoff.request(
                    1,
                    Command::request(RequestCode::PullMessage, opaque),
                    origin(1),
                );
            }
            assert!(handoff.is_full(), "full at the bound");
            let room = handoff.room();
            let sender = {
                let handoff = std::rc::Rc::clone(&handoff);
                compio::runtime::spawn(async move { handoff.run(&inboxes).await })
            };
            room.await;
            assert!(!handoff.is_full(), "the sender took everything");
            let Ok(ShardMessage::Handoff(batch)) = receiver.recv_async().await else {
                panic!("no hand-off");
            };
            assert_eq!(batch.requests.len(), MAX_QUEUED);
            drop(sender);
        });
    }
}
