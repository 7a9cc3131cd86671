//! One client connection's state, shared by its reader, its writer (`crate::shard`'s
//! connection loops) and the handlers answering it: the frames queued for writing, the count of
//! requests in flight, and the wakes between them.
//!
//! Backpressure: at most `maxInflightPerConnection` requests of a connection are being handled
//! at once. At the limit the reader stops reading that socket until an answer is written, so a
//! client that sends faster than the broker stores (or never reads its answers) slows down
//! itself and nobody else.
//!
//! Invariant: `inflight` counts the two-way requests read and not yet answered; every such
//! request gets exactly one [`FrameKind::Response`] frame (`crate::handler::run` makes sure),
//! and the writer subtracts each one it writes.

use std::{
    cell::{Cell, RefCell},
    net::SocketAddr,
};

use ringmq_protocol::SerializeType;
use ringmq_storage::signal::{Listen, Signal};

#[cfg(doc)]
use crate::messages::FrameKind;
use crate::messages::Outbound;

/// A connection's state shared by its reader, its writer and the handlers answering it.
#[derive(Debug)]
pub(crate) struct Connection {
    pub id: u64,
    pub peer: SocketAddr,
    queued: RefCell<Vec<Outbound>>,
    writer_wake: Signal,
    inflight: Cell<usize>,
    space: Signal,
    closed: Cell<bool>,
    /// Header encoding of the client's last request: broker-initiated requests use it, so a
    /// JSON-only client (ali-ons) is never sent a binary header.
    pub serialize_type: Cell<SerializeType>,
    next_opaque: Cell<i32>,
}

impl Connection {
    pub(crate) fn new(id: u64, peer: SocketAddr) -> Self {
        Self {
            id,
            peer,
            queued: RefCell::new(Vec::new()),
            writer_wake: Signal::default(),
            inflight: Cell::new(0),
            space: Signal::default(),
            closed: Cell::new(false),
            serialize_type: Cell::new(SerializeType::Json),
            next_opaque: Cell::new(1),
        }
    }

    /// Queues a frame for the writer (dropped if the connection is gone).
    pub(crate) fn send(&self, frame: Outbound) {
        if self.closed.get() {
            return;
        }
        self.queued.borrow_mut().push(frame);
        self.writer_wake.notify();
    }

    /// An opaque for a broker-initiated request.
    pub(crate) fn next_opaque(&self) -> i32 {
        let opaque = self.next_opaque.get();
        self.next_opaque.set(opaque.wrapping_add(1));
        opaque
    }

    /// Two-way requests read and not yet answered.
    #[inline]
    pub(crate) fn inflight(&self) -> usize {
        self.inflight.get()
    }

    /// The reader took a two-way request.
    #[inline]
    pub(crate) fn request_started(&self) {
        self.inflight.set(self.inflight.get() + 1);
    }

    /// The writer wrote `answered` responses: frees their slots and wakes a waiting reader.
    #[inline]
    pub(crate) fn responses_written(&self, answered: usize) {
        self.inflight.set(self.inflight.get() - answered);
        self.space.notify();
    }

    /// Resolves when an answer is written or the connection closes (the reader waits here at
    /// the in-flight limit).
    #[inline]
    pub(crate) fn space_freed(&self) -> Listen<'_> {
        self.space.listen()
    }

    /// Whether any frame waits for the writer.
    #[inline]
    pub(crate) fn has_queued(&self) -> bool {
        !self.queued.borrow().is_empty()
    }

    /// Moves the queued frames into `batch` (which must be empty), leaving `batch`'s old
    /// allocation as the new queue: no allocation per batch.
    #[inline]
    pub(crate) fn take_queued(&self, batch: &mut Vec<Outbound>) {
        std::mem::swap(batch, &mut *self.queued.borrow_mut());
    }

    /// Resolves when a frame is queued or the connection closes (the writer waits here).
    #[inline]
    pub(crate) fn queued_or_closed(&self) -> Listen<'_> {
        self.writer_wake.listen()
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Marks the connection closed and wakes its reader and writer.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        self.writer_wake.notify();
        self.space.notify();
    }
}
