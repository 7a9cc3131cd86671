//! A connection's two loops on the shard that accepted it: a reader that decodes requests and
//! hands each to its handler (here or on the owning shard), and a writer that sends answers
//! back in batches as they complete, in any order (clients match them by opaque). The state the
//! loops share with the handlers is `crate::connection::Connection`.

use std::{net::SocketAddr, rc::Rc, time::Instant};

use bytes::{Bytes, BytesMut};
use compio::{
    BufResult,
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use ringmq_protocol::FrameCodec;

use super::context::ShardCtx;
use crate::{
    clients::ChannelId,
    connection::Connection,
    handler,
    messages::{Origin, Outbound},
    metrics::ShardMetrics,
};

/// Iovecs per write: well under IOV_MAX (1024).
const MAX_IOVECS: usize = 512;

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
            while connection.inflight() >= max_inflight {
                if connection.is_closed() {
                    return;
                }
                connection.space_freed().await;
            }
            if !command.is_oneway() {
                connection.request_started();
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
            while ctx.handoff.is_full() {
                ctx.handoff.room().await;
            }
            handler::dispatch(ctx, command, origin);
        }
    }
}

async fn write_loop(ctx: Rc<ShardCtx>, connection: Rc<Connection>, mut stream: TcpStream) {
    let metrics = ctx.metrics();
    let mut batch: Vec<Outbound> = Vec::new();
    let mut iovecs: Vec<Bytes> = Vec::new();
    loop {
        if !connection.has_queued() {
            if connection.is_closed() {
                return;
            }
            connection.queued_or_closed().await;
            continue;
        }
        connection.take_queued(&mut batch);
        let mut answered = 0;
        let mut heads_left: usize = batch.iter().map(|frame| frame.head.len()).sum();
        let mut pending = BytesMut::new();
        for frame in batch.drain(..) {
            answered += usize::from(frame.kind.is_response());
            heads_left -= frame.head.len();
            // Coalesce small frames into one buffer (grown at most once, to fit every head that
            // follows); large bodies go as their own iovecs.
            if pending.is_empty() {
                pending = frame.head;
                pending.reserve(heads_left);
            } else {
                pending.extend_from_slice(&frame.head);
            }
            if !frame.body.is_empty() {
                // `split` keeps the rest of the capacity for the heads that follow.
                iovecs.push(pending.split().freeze());
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
        connection.responses_written(answered);
        metrics.inflight_requests.sub(answered as i64);
    }
}

async fn write(stream: &mut TcpStream, iovecs: &mut Vec<Bytes>, metrics: &ShardMetrics) -> bool {
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
