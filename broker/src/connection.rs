//! One client connection on the shard that accepted it: a reader that decodes requests and
//! hands each to its handler (here or on the owning shard), and a writer that sends answers
//! back in batches as they complete, in any order (clients match them by opaque).
//!
//! Backpressure: at most `maxInflightPerConnection` requests of a connection are being handled
//! at once. At the limit the reader stops reading that socket until an answer is written, so a
//! client that sends faster than the broker stores (or never reads its answers) slows down
//! itself and nobody else.

use std::{
    cell::{Cell, RefCell},
    net::SocketAddr,
    rc::Rc,
    time::Instant,
};

use bytes::{Bytes, BytesMut};
use compio::{
    BufResult,
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use ringmq_protocol::{FrameCodec, SerializeType};
use ringmq_storage::signal::Signal;

use crate::{
    clients::ChannelId,
    handler,
    shard::ShardCtx,
    shared::{Origin, Outbound},
};

/// Iovecs per write: well under IOV_MAX (1024).
const MAX_IOVECS: usize = 512;

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
    fn new(id: u64, peer: SocketAddr) -> Self {
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

    pub(crate) fn inflight(&self) -> usize {
        self.inflight.get()
    }

    fn close(&self) {
        self.closed.set(true);
        self.writer_wake.notify();
        self.space.notify();
    }
}

/// Serves a connection until the peer closes it, sends something unreadable, or the shard stops.
pub(crate) async fn serve(ctx: Rc<ShardCtx>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let id = ctx.next_connection_id();
    let connection = Rc::new(Connection::new(id, peer));
    ctx.connections
        .borrow_mut()
        .insert(id, Rc::clone(&connection));
    let metrics = ctx.metrics();
    metrics.connections.add(1);
    let (reader, writer) = stream.into_split();
    let writer_task =
        compio::runtime::spawn(write_loop(Rc::clone(&ctx), Rc::clone(&connection), writer));
    read_loop(&ctx, &connection, reader).await;
    connection.close();
    let _ = writer_task.await;
    ctx.connections.borrow_mut().remove(&id);
    metrics.connections.sub(1);
    let channel = ChannelId {
        shard: ctx.id,
        connection: id,
    };
    ctx.shared
        .with_clients(|clients| ((), clients.connection_closed(channel)));
}

async fn read_loop(ctx: &Rc<ShardCtx>, connection: &Rc<Connection>, mut stream: TcpStream) {
    let codec = FrameCodec::new(ctx.max_frame_bytes());
    let max_inflight = ctx.shared.config.max_inflight_per_connection;
    let mut input = BytesMut::with_capacity(64 << 10);
    let metrics = ctx.metrics();
    loop {
        if input.capacity() - input.len() < 16 << 10 {
            input.reserve(64 << 10);
        }
        let BufResult(read, buf) = stream.append(input).await;
        input = buf;
        match read {
            Ok(0) => return,
            Ok(bytes) => metrics.bytes_received_total.add(bytes as u64),
            Err(err) => {
                tracing::debug!(peer = %connection.peer, %err, "read failed; closing");
                return;
            }
        }
        loop {
            let command = match codec.decode(&mut input) {
                Ok(Some(command)) => command,
                Ok(None) => break,
                Err(err) => {
                    // The stream cannot be resynchronised after a bad frame: close it, as
                    // RocketMQ does. Other connections are unaffected.
                    tracing::warn!(peer = %connection.peer, %err, "malformed frame; closing the connection");
                    return;
                }
            };
            if ctx.stopping() {
                return;
            }
            if command.is_response() {
                // Answers to our NOTIFY requests (sent oneway, so none are expected).
                continue;
            }
            connection.serialize_type.set(command.serialize_type);
            while connection.inflight.get() >= max_inflight {
                if connection.closed.get() {
                    return;
                }
                connection.space.listen().await;
            }
            if !command.is_oneway() {
                connection.inflight.set(connection.inflight.get() + 1);
                metrics.inflight_requests.add(1);
            }
            let origin = Origin {
                channel: ChannelId {
                    shard: ctx.id,
                    connection: connection.id,
                },
                peer: connection.peer,
                arrived: Instant::now(),
            };
            handler::dispatch(ctx, command, origin).await;
        }
    }
}

async fn write_loop(ctx: Rc<ShardCtx>, connection: Rc<Connection>, mut stream: TcpStream) {
    let metrics = ctx.metrics();
    let mut batch: Vec<Outbound> = Vec::new();
    let mut iovecs: Vec<Bytes> = Vec::new();
    loop {
        if connection.queued.borrow().is_empty() {
            if connection.closed.get() {
                return;
            }
            connection.writer_wake.listen().await;
            continue;
        }
        std::mem::swap(&mut batch, &mut *connection.queued.borrow_mut());
        let mut answered = 0;
        let mut pending = BytesMut::new();
        for frame in batch.drain(..) {
            answered += usize::from(frame.is_response);
            // Coalesce small frames into one buffer; large bodies go as their own iovecs.
            if pending.is_empty() {
                pending = frame.head;
            } else {
                pending.extend_from_slice(&frame.head);
            }
            if !frame.body.is_empty() {
                iovecs.push(std::mem::take(&mut pending).freeze());
                iovecs.extend(frame.body);
            }
            if iovecs.len() >= MAX_IOVECS && !write(&mut stream, &mut iovecs, metrics).await {
                connection.close();
                return;
            }
        }
        if !pending.is_empty() {
            iovecs.push(pending.freeze());
        }
        if !iovecs.is_empty() && !write(&mut stream, &mut iovecs, metrics).await {
            connection.close();
            return;
        }
        connection
            .inflight
            .set(connection.inflight.get() - answered);
        metrics.inflight_requests.sub(answered as i64);
        connection.space.notify();
    }
}

async fn write(
    stream: &mut TcpStream,
    iovecs: &mut Vec<Bytes>,
    metrics: &crate::metrics::ShardMetrics,
) -> bool {
    let bytes: usize = iovecs.iter().map(Bytes::len).sum();
    let result = if iovecs.len() == 1 {
        let buf = iovecs.pop().unwrap_or_default();
        stream.write_all(buf).await.0
    } else {
        let BufResult(result, mut returned) =
            stream.write_vectored_all(std::mem::take(iovecs)).await;
        returned.clear();
        *iovecs = returned;
        result
    };
    match result {
        Ok(()) => {
            metrics.bytes_sent_total.add(bytes as u64);
            true
        }
        Err(err) => {
            tracing::debug!(%err, "write failed; closing");
            false
        }
    }
}
