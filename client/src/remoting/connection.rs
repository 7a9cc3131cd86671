//! One multiplexed remoting connection: many requests in flight, answers matched by `opaque`.
//!
//! A connection lives on one runtime thread (it is `!Send`) and is two tasks: a writer that
//! sends everything queued since its last write in one `write` call, and a reader that takes
//! frames off the socket in large chunks and hands each response to the request waiting on its
//! opaque. Requests the server starts (NOTIFY_CONSUMER_IDS_CHANGED, CHECK_TRANSACTION_STATE,
//! ...) go to the connection's [`InboundHandler`].
//!
//! Invariants:
//! - every request is in `pending` from the moment its frame is queued until its answer is
//!   taken, it times out, or its future is dropped (a guard removes it), so late answers are
//!   recognised and dropped;
//! - once the connection fails, `closed` holds the reason, every pending request is completed
//!   with it, and no new request is accepted: a failure never leaves a caller waiting;
//! - `RefCell` borrows never cross an `.await`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use compio::BufResult;
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use compio::runtime::JoinHandle;
use ringmq_protocol::frame::LENGTH_PREFIX_BYTES;
use ringmq_protocol::{
    Command, CommandHead, EncodeExt, FrameCodec, RequestCode, ResponseCode, SerializeType,
    encode_frame,
};

use crate::error::{ClientError, Result};
use crate::notify::Notify;

/// Bytes asked of each socket read: large, so one read carries many responses.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// Most buffer growth one read may ask for.
const MAX_READ_RESERVE_BYTES: usize = 4 << 20;

/// Most bytes queued for the writer; past it requests are refused (a peer that stopped reading
/// must not make the client buffer without bound).
pub const MAX_QUEUED_OUT_BYTES: usize = 64 << 20;

/// Default largest frame accepted from a server.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 << 20;

/// Longest the timeout sweeper sleeps when no request is due sooner.
const IDLE_SWEEP: Duration = Duration::from_secs(1);

/// Settings shared by every connection of a pool.
#[derive(Clone)]
pub struct ConnectionOptions {
    /// Longest wait for a TCP connect.
    pub connect_timeout: Duration,
    /// Largest frame accepted from the peer.
    pub max_frame_bytes: usize,
    /// Header encoding of requests: binary ("ROCKETMQ") by default, JSON on request.
    pub serialize_type: SerializeType,
    /// Receives requests the server sends on this connection.
    pub inbound: Option<Rc<dyn InboundHandler>>,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            serialize_type: SerializeType::RocketMq,
            inbound: None,
        }
    }
}

impl std::fmt::Debug for ConnectionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("serialize_type", &self.serialize_type)
            .field("inbound", &self.inbound.is_some())
            .finish()
    }
}

/// Handles requests a server sends to the client (they arrive on the client's connections).
pub trait InboundHandler {
    /// Called on the connection's thread for every request frame. A handler that answers a
    /// non-oneway request uses [`Connection::respond`].
    fn on_request(&self, connection: &Rc<Connection>, request: Command);
}

/// One request's slot: its answer once it arrives, the task to wake, and when it times out.
#[derive(Debug)]
struct Waiter {
    answer: Option<Result<Command>>,
    waker: Option<Waker>,
    code: RequestCode,
    timeout: Duration,
    deadline: Instant,
}

/// Hashes opaques (sequential integers) with one multiplication: SipHash showed in profiles,
/// and an identity hash would leave hashbrown's tag bits all equal.
#[derive(Debug, Default, Clone, Copy)]
struct OpaqueHasher(u64);

impl Hasher for OpaqueHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8 | u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_i32(&mut self, value: i32) {
        self.0 =
            u64::from(u32::from_ne_bytes(value.to_ne_bytes())).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type PendingMap = HashMap<i32, Waiter, BuildHasherDefault<OpaqueHasher>>;

#[derive(Debug)]
struct State {
    /// Frames queued for the writer.
    out: BytesMut,
    pending: PendingMap,
    next_opaque: i32,
    /// When the timeout sweeper will next look; a request due earlier wakes it.
    next_sweep: Instant,
    /// Why the connection ended; `None` while it is usable.
    closed: Option<ClientError>,
}

/// A multiplexed connection to one server. Cheap to share (`Rc`); every method is callable from
/// any task of the thread that opened it.
pub struct Connection {
    addr: String,
    peer: SocketAddr,
    serialize_type: SerializeType,
    state: RefCell<State>,
    writer_wake: Notify,
    sweeper_wake: Notify,
    inbound: Option<Rc<dyn InboundHandler>>,
    tasks: RefCell<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// Resolves `host:port` to its first address.
pub fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|error| ClientError::connect(addr, &error))?
        .next()
        .ok_or_else(|| ClientError::Connect {
            addr: addr.to_owned(),
            reason: "resolves to no address".into(),
        })
}

impl Connection {
    /// Opens a connection to `addr` (`host:port`) and starts its reader and writer tasks on the
    /// current runtime.
    pub async fn connect(addr: &str, options: &ConnectionOptions) -> Result<Rc<Self>> {
        let peer = resolve(addr)?;
        let stream = compio::time::timeout(options.connect_timeout, TcpStream::connect(peer))
            .await
            .map_err(|_| ClientError::Connect {
                addr: addr.to_owned(),
                reason: format!("no answer within {:?}", options.connect_timeout),
            })?
            .map_err(|error| ClientError::connect(addr, &error))?;
        // Requests are written in whole batches; Nagle would only delay them.
        stream
            .set_nodelay(true)
            .map_err(|error| ClientError::connect(addr, &error))?;
        let connection = Rc::new(Self {
            addr: addr.to_owned(),
            peer,
            serialize_type: options.serialize_type,
            state: RefCell::new(State {
                out: BytesMut::with_capacity(16 << 10),
                pending: PendingMap::default(),
                next_opaque: 1,
                next_sweep: Instant::now() + IDLE_SWEEP,
                closed: None,
            }),
            writer_wake: Notify::default(),
            sweeper_wake: Notify::default(),
            inbound: options.inbound.clone(),
            tasks: RefCell::new(Vec::new()),
        });
        let (read_half, write_half) = stream.into_split();
        let codec = FrameCodec::new(options.max_frame_bytes);
        let reader = compio::runtime::spawn(read_loop(Rc::clone(&connection), read_half, codec));
        let writer = compio::runtime::spawn(write_loop(Rc::clone(&connection), write_half));
        let sweeper = compio::runtime::spawn(sweep_loop(Rc::clone(&connection)));
        connection
            .tasks
            .borrow_mut()
            .extend([reader, writer, sweeper]);
        tracing::debug!(addr, %peer, "connected");
        Ok(connection)
    }

    /// The `host:port` this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The resolved peer address.
    pub const fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The header encoding this connection's requests use.
    pub const fn serialize_type(&self) -> SerializeType {
        self.serialize_type
    }

    /// Whether the connection has failed or been closed.
    pub fn is_closed(&self) -> bool {
        self.state.borrow().closed.is_some()
    }

    /// Requests awaiting an answer.
    pub fn pending(&self) -> usize {
        self.state.borrow().pending.len()
    }

    /// Sends a request with a typed header and waits up to `timeout` for its answer. The answer
    /// is returned whatever its code; see [`expect_success`].
    pub async fn request<E: EncodeExt>(
        &self,
        code: RequestCode,
        header: &E,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Command> {
        let serialize_type = self.serialize_type;
        self.request_with(code, timeout, |opaque, out| {
            encode_frame(
                &CommandHead::request(code, opaque, serialize_type),
                header,
                body,
                out,
            );
        })
        .await
    }

    /// Sends a request the caller encodes itself: `encode` appends one complete frame carrying
    /// the given opaque to the output buffer (pre-encoded templates patch it in place). Waits up
    /// to `timeout` for the answer.
    pub async fn request_with(
        &self,
        code: RequestCode,
        timeout: Duration,
        encode: impl FnOnce(i32, &mut BytesMut),
    ) -> Result<Command> {
        let opaque = self.enqueue(encode, Some((code, timeout)))?;
        let _guard = PendingGuard {
            connection: self,
            opaque,
        };
        // No timer per request: the sweeper completes overdue requests with a timeout.
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            // Only the guard removes the entry; a missing one would be a bug, not a hang.
            let Some(waiter) = state.pending.get_mut(&opaque) else {
                return Poll::Ready(Err(ClientError::lost(&self.addr, "request slot vanished")));
            };
            if let Some(answer) = waiter.answer.take() {
                Poll::Ready(answer)
            } else {
                waiter.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Queues a oneway request (no answer is expected or awaited).
    pub fn oneway<E: EncodeExt>(&self, code: RequestCode, header: &E, body: &[u8]) -> Result<()> {
        let serialize_type = self.serialize_type;
        self.enqueue(
            |opaque, out| {
                encode_frame(
                    &CommandHead::oneway(code, opaque, serialize_type),
                    header,
                    body,
                    out,
                );
            },
            None,
        )
        .map(drop)
    }

    /// Queues the answer to a server's request (same opaque and header encoding as the request).
    pub fn respond<E: EncodeExt>(
        &self,
        request: &Command,
        code: ResponseCode,
        remark: Option<&str>,
        header: &E,
        body: &[u8],
    ) {
        let mut head = CommandHead::response_to(request, code);
        head.remark = remark;
        let mut state = self.state.borrow_mut();
        if state.closed.is_none() {
            encode_frame(&head, header, body, &mut state.out);
            drop(state);
            self.writer_wake.notify();
        }
    }

    /// Closes the connection: pending requests fail with `reason`, both tasks stop.
    pub fn close(&self, reason: &str) {
        self.fail(ClientError::lost(&self.addr, reason));
        // Dropping a compio task handle cancels the task (the reader may be parked in a read).
        drop(std::mem::take(&mut *self.tasks.borrow_mut()));
    }

    /// Assigns an opaque, lets `encode` write the frame, and registers a waiter when the
    /// request expects an answer (`awaited`: its code and timeout).
    fn enqueue(
        &self,
        encode: impl FnOnce(i32, &mut BytesMut),
        awaited: Option<(RequestCode, Duration)>,
    ) -> Result<i32> {
        let mut state = self.state.borrow_mut();
        if let Some(reason) = &state.closed {
            return Err(reason.clone());
        }
        if state.out.len() >= MAX_QUEUED_OUT_BYTES {
            return Err(ClientError::Overloaded {
                addr: self.addr.clone(),
                queued_bytes: state.out.len(),
            });
        }
        let mut opaque = state.next_opaque;
        while state.pending.contains_key(&opaque) {
            opaque = opaque.wrapping_add(1);
        }
        state.next_opaque = opaque.wrapping_add(1);
        encode(opaque, &mut state.out);
        let mut wake_sweeper = false;
        if let Some((code, timeout)) = awaited {
            let deadline = Instant::now() + timeout;
            wake_sweeper = deadline < state.next_sweep;
            state.pending.insert(
                opaque,
                Waiter {
                    answer: None,
                    waker: None,
                    code,
                    timeout,
                    deadline,
                },
            );
        }
        drop(state);
        self.writer_wake.notify();
        if wake_sweeper {
            self.sweeper_wake.notify();
        }
        Ok(opaque)
    }

    /// Completes every overdue request with a timeout; returns when the next one is due.
    fn sweep(&self, now: Instant) -> Instant {
        let mut state = self.state.borrow_mut();
        let mut next = now + IDLE_SWEEP;
        let mut wakers = Vec::new();
        for waiter in state.pending.values_mut() {
            if waiter.answer.is_some() {
                continue;
            }
            if waiter.deadline <= now {
                waiter.answer = Some(Err(ClientError::Timeout {
                    addr: self.addr.clone(),
                    code: waiter.code,
                    timeout: waiter.timeout,
                }));
                wakers.extend(waiter.waker.take());
            } else {
                next = next.min(waiter.deadline);
            }
        }
        state.next_sweep = next;
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
        next
    }

    /// Marks the connection failed (first reason wins) and completes every pending request.
    fn fail(&self, reason: ClientError) {
        let mut state = self.state.borrow_mut();
        if state.closed.is_none() {
            tracing::debug!(addr = %self.addr, %reason, "connection closed");
            state.closed = Some(reason.clone());
        }
        let reason = state.closed.clone().unwrap_or(reason);
        let mut wakers = Vec::new();
        for waiter in state.pending.values_mut() {
            if waiter.answer.is_none() {
                waiter.answer = Some(Err(reason.clone()));
                wakers.extend(waiter.waker.take());
            }
        }
        state.out.clear();
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
        self.writer_wake.notify();
    }

    /// Hands a decoded frame to its waiter or to the inbound handler.
    fn dispatch(self: &Rc<Self>, command: Command) {
        if !command.is_response() {
            match &self.inbound {
                Some(handler) => handler.on_request(self, command),
                None if command.is_oneway() => {}
                None => self.respond(
                    &command,
                    ResponseCode::RequestCodeNotSupported,
                    Some("this client does not serve requests"),
                    &(),
                    &[],
                ),
            }
            return;
        }
        let mut state = self.state.borrow_mut();
        if let Some(waiter) = state.pending.get_mut(&command.opaque) {
            let waker = waiter.waker.take();
            waiter.answer = Some(Ok(command));
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
        } else {
            tracing::debug!(
                addr = %self.addr,
                opaque = command.opaque,
                "answer to a request that timed out or was abandoned; dropped"
            );
        }
    }
}

/// Removes a request's waiter when its future ends for any reason (answer, timeout, drop).
struct PendingGuard<'a> {
    connection: &'a Connection,
    opaque: i32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.connection
            .state
            .borrow_mut()
            .pending
            .remove(&self.opaque);
    }
}

/// Reads frames until the peer closes, the socket fails, or a frame cannot be decoded.
async fn read_loop(connection: Rc<Connection>, mut stream: TcpStream, codec: FrameCodec) {
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let reason = 'read: loop {
        loop {
            match codec.decode(&mut input) {
                Ok(Some(command)) => connection.dispatch(command),
                Ok(None) => break,
                // A header we cannot read may have been an answer someone waits for, and we
                // cannot know whose: close rather than leave that caller to its timeout.
                Err(error) => break 'read protocol_error(&connection.addr, error),
            }
        }
        reserve_for_read(&mut input, codec);
        let BufResult(read, buffer) = stream.append(input).await;
        input = buffer;
        match read {
            Ok(0) => break ClientError::lost(&connection.addr, "closed by the peer"),
            Ok(_) => {}
            Err(error) => break io_lost(&connection.addr, &error),
        }
    };
    connection.fail(reason);
}

fn io_lost(addr: &str, error: &io::Error) -> ClientError {
    ClientError::lost(addr, error.to_string())
}

/// Makes room for the next read: at least a chunk, or the rest of a large frame whose start is
/// already buffered.
fn reserve_for_read(input: &mut BytesMut, codec: FrameCodec) {
    let mut frame_rest = 0;
    if let Some(prefix) = input.get(..LENGTH_PREFIX_BYTES) {
        let length = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if let Ok(length) = usize::try_from(length) {
            let frame = length + LENGTH_PREFIX_BYTES;
            if frame <= codec.max_frame_bytes() {
                frame_rest = frame.saturating_sub(input.len());
            }
        }
    }
    // Grown in steps, never by more than MAX_READ_RESERVE_BYTES at once: memory follows the
    // bytes that really arrive, not what a length prefix claims.
    let frame_rest = frame_rest.min(MAX_READ_RESERVE_BYTES);
    let spare = input.capacity() - input.len();
    if spare < READ_CHUNK_BYTES / 4 || spare < frame_rest {
        input.reserve(READ_CHUNK_BYTES.max(frame_rest));
    }
}

/// Times requests out: sleeps until the earliest deadline (an earlier request wakes it), then
/// completes the overdue ones. One timer per connection instead of one per request.
async fn sweep_loop(connection: Rc<Connection>) {
    let mut next = Instant::now() + IDLE_SWEEP;
    while !connection.is_closed() {
        connection.sweeper_wake.wait_until(next).await;
        next = connection.sweep(Instant::now());
    }
}

/// Returns `Pending` once (waking itself), so the tasks already runnable run first.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

/// Writes whatever is queued, one `write` per batch, until the connection closes.
async fn write_loop(connection: Rc<Connection>, mut stream: TcpStream) {
    let mut spare = BytesMut::with_capacity(16 << 10);
    loop {
        let batch = {
            let mut state = connection.state.borrow_mut();
            if state.closed.is_some() {
                return;
            }
            if state.out.is_empty() {
                None
            } else {
                Some(std::mem::replace(
                    &mut state.out,
                    std::mem::take(&mut spare),
                ))
            }
        };
        let Some(batch) = batch else {
            connection.writer_wake.wait().await;
            // Woken by the first request of a burst (a read that completed many requests wakes
            // all their tasks at once): step behind the tasks already runnable so the rest of
            // the burst joins this write instead of costing one write each.
            yield_now().await;
            continue;
        };
        let BufResult(written, mut buffer) = stream.write_all(batch).await;
        if let Err(error) = written {
            connection.fail(io_lost(&connection.addr, &error));
            return;
        }
        buffer.clear();
        spare = buffer;
    }
}

/// The answer's code when it is SUCCESS, a [`ClientError::Broker`] otherwise.
pub fn expect_success(answer: Command, addr: &str, request: RequestCode) -> Result<Command> {
    if answer.response_code() == ResponseCode::Success {
        Ok(answer)
    } else {
        Err(ClientError::broker(
            addr,
            request,
            answer.response_code(),
            answer.remark.as_deref(),
        ))
    }
}

/// The protocol error wrapped for callers.
pub(crate) fn protocol_error(addr: &str, error: ringmq_protocol::DecodeError) -> ClientError {
    ClientError::Protocol {
        addr: addr.to_owned(),
        source: Arc::new(error),
    }
}
