//! Blocking request/response over a `std::net::TcpStream`, for tests, tools and benchmarks that
//! talk to a broker or NameServer without an async runtime. Behind the `blocking` cargo feature
//! (off by default, so the codec itself stays free of I/O).
//!
//! A [`Connection`] writes frames and reads them back with a deadline:
//!
//! - [`Connection::request`]: send a request and wait for the response with its opaque;
//! - [`Connection::send_request`] + [`Connection::wait_response`]: several requests in flight
//!   (pipelining), their responses claimed by opaque in any order;
//! - [`Connection::send_oneway`], [`Connection::send_frame`] (any head, e.g. a response from a
//!   fake server), [`Connection::write_raw`] (bytes that need not be a frame);
//! - [`Connection::read_frame`] (the next frame, with a timeout) and [`Connection::poll_frame`]
//!   (only what has already arrived).
//!
//! Frames that arrive while a response is awaited and are not it (requests the server sends on
//! its own, answers to other requests) are not dropped: they are kept, in arrival order, and
//! [`Connection::read_frame`] and [`Connection::poll_frame`] return them first.
//!
//! Failures are a [`ConnectionError`]: timeouts, a closed connection, other I/O errors and
//! undecodable frames are told apart, so a test can assert on which one happened.
//!
//! ```no_run
//! use std::time::Duration;
//! use ringmq_protocol::blocking::Connection;
//! use ringmq_protocol::header::GetRouteInfoRequestHeader;
//! use ringmq_protocol::{RequestCode, ResponseCode};
//!
//! # fn main() -> Result<(), ringmq_protocol::blocking::ConnectionError> {
//! let timeout = Duration::from_secs(5);
//! let mut namesrv = Connection::connect("127.0.0.1:9876", timeout)?;
//! let header = GetRouteInfoRequestHeader { topic: "TopicTest", accept_standard_json_only: None };
//! let answer = namesrv.request(RequestCode::GetRouteinfoByTopic, &header, &[], timeout)?;
//! assert!(matches!(
//!     answer.response_code(),
//!     ResponseCode::Success | ResponseCode::TopicNotExist
//! ));
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use crate::{
    Command, CommandHead, DecodeError, EncodeExt, FrameCodec, RequestCode, SerializeType,
    encode_frame,
};

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// Why a [`Connection`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The address did not resolve, or resolved to nothing.
    #[error("cannot resolve the address: {0}")]
    Resolve(#[source] io::Error),
    /// Every address it resolved to refused or timed out; the last attempt's error.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// Nothing (or not enough) arrived before the deadline. The connection is still usable.
    #[error("timed out")]
    Timeout,
    /// The peer closed the connection (end of stream, reset or broken pipe).
    #[error("connection closed by the peer")]
    Closed,
    /// Any other socket error.
    #[error("I/O error: {0}")]
    Io(#[source] io::Error),
    /// The peer sent bytes that do not decode. After a fatal one ([`DecodeError::is_fatal`]) the
    /// stream cannot be delimited any more; after a header error the bad frame was consumed and
    /// the connection can go on.
    #[error("undecodable frame: {0}")]
    Decode(#[from] DecodeError),
}

impl ConnectionError {
    /// Whether this is [`ConnectionError::Timeout`].
    pub const fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }

    /// Whether the connection is gone ([`ConnectionError::Closed`] or another socket error).
    pub const fn is_closed(&self) -> bool {
        matches!(self, Self::Closed | Self::Io(_))
    }
}

impl From<io::Error> for ConnectionError {
    fn from(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Self::Timeout,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Self::Closed,
            _ => Self::Io(error),
        }
    }
}

/// One blocking remoting connection. See the [module documentation](self).
pub struct Connection {
    stream: TcpStream,
    codec: FrameCodec,
    /// Bytes received and not yet decoded.
    input: BytesMut,
    /// Reused read buffer.
    chunk: Box<[u8]>,
    /// Header encoding of the requests this side sends.
    serialize_type: SerializeType,
    next_opaque: i32,
    /// Frames decoded while waiting for a response that were not it, in arrival order.
    kept: VecDeque<Command>,
    /// The peer ended the stream; only what is buffered is left.
    eof: bool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("local", &self.stream.local_addr().ok())
            .field("peer", &self.stream.peer_addr().ok())
            .field("serialize_type", &self.serialize_type)
            .field("buffered_bytes", &self.input.len())
            .field("kept_frames", &self.kept.len())
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to `addr`, trying each address it resolves to for at most `timeout`.
    pub fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> Result<Self, ConnectionError> {
        let mut last = None;
        for peer in addr.to_socket_addrs().map_err(ConnectionError::Resolve)? {
            match TcpStream::connect_timeout(&peer, timeout) {
                Ok(stream) => return Self::from_stream(stream),
                Err(source) => last = Some(ConnectionError::Connect { addr: peer, source }),
            }
        }
        Err(last.unwrap_or_else(|| {
            ConnectionError::Resolve(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the address resolves to nothing",
            ))
        }))
    }

    /// Wraps a connected stream (an accepted one, for a fake server), making it blocking with
    /// `TCP_NODELAY`.
    pub fn from_stream(stream: TcpStream) -> Result<Self, ConnectionError> {
        stream.set_nonblocking(false).map_err(ConnectionError::Io)?;
        stream.set_nodelay(true).map_err(ConnectionError::Io)?;
        Ok(Self {
            stream,
            codec: FrameCodec::default(),
            input: BytesMut::new(),
            chunk: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
            serialize_type: SerializeType::Json,
            next_opaque: 0,
            kept: VecDeque::new(),
            eof: false,
        })
    }

    /// Decodes incoming frames with `codec` (its frame size limit) instead of the default.
    #[must_use]
    pub fn with_codec(mut self, codec: FrameCodec) -> Self {
        self.codec = codec;
        self
    }

    /// The header encoding of requests sent from now on; JSON unless changed (every server
    /// reads it).
    pub const fn serialize_type(&self) -> SerializeType {
        self.serialize_type
    }

    pub const fn set_serialize_type(&mut self, serialize_type: SerializeType) {
        self.serialize_type = serialize_type;
    }

    /// The socket, for options or a shutdown this type does not wrap.
    pub const fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket; bytes received but not yet decoded are lost.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ConnectionError> {
        self.stream.local_addr().map_err(ConnectionError::Io)
    }

    pub fn peer_addr(&self) -> Result<SocketAddr, ConnectionError> {
        self.stream.peer_addr().map_err(ConnectionError::Io)
    }

    // --------------------------------------------------------------------------------------------
    // Sending

    /// Sends a request without waiting for its response; returns its opaque, for
    /// [`Connection::wait_response`].
    pub fn send_request(
        &mut self,
        code: RequestCode,
        header: &impl EncodeExt,
        body: &[u8],
    ) -> Result<i32, ConnectionError> {
        let opaque = self.take_opaque();
        let head = CommandHead::request(code, opaque, self.serialize_type);
        self.send_frame(&head, header, body)?;
        Ok(opaque)
    }

    /// Sends a oneway request (the server must not answer it); returns its opaque.
    pub fn send_oneway(
        &mut self,
        code: RequestCode,
        header: &impl EncodeExt,
        body: &[u8],
    ) -> Result<i32, ConnectionError> {
        let opaque = self.take_opaque();
        let head = CommandHead::oneway(code, opaque, self.serialize_type);
        self.send_frame(&head, header, body)?;
        Ok(opaque)
    }

    /// Sends one frame with exactly `head` (its opaque and serialize type included): a response,
    /// or a request built by hand.
    pub fn send_frame(
        &mut self,
        head: &CommandHead<'_>,
        header: &impl EncodeExt,
        body: &[u8],
    ) -> Result<(), ConnectionError> {
        let mut frame = BytesMut::new();
        encode_frame(head, header, body, &mut frame);
        self.write_raw(&frame)
    }

    /// Writes `bytes` as they are (a pre-encoded batch, or input that is not a frame at all).
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        self.stream.write_all(bytes).map_err(ConnectionError::from)
    }

    /// Closes the writing half: the peer reads end of stream, and can still answer.
    pub fn shutdown_write(&mut self) -> Result<(), ConnectionError> {
        self.stream
            .shutdown(Shutdown::Write)
            .map_err(ConnectionError::from)
    }

    /// Opaques count up from 1, wrapping.
    const fn take_opaque(&mut self) -> i32 {
        self.next_opaque = self.next_opaque.wrapping_add(1);
        self.next_opaque
    }

    // --------------------------------------------------------------------------------------------
    // Receiving

    /// Sends a request and waits up to `timeout` for its response (whatever its code).
    pub fn request(
        &mut self,
        code: RequestCode,
        header: &impl EncodeExt,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Command, ConnectionError> {
        let opaque = self.send_request(code, header, body)?;
        self.wait_response(opaque, timeout)
    }

    /// Waits up to `timeout` for the response with `opaque`. Other frames that arrive meanwhile
    /// are kept for [`Connection::read_frame`], and a later `wait_response` finds its response
    /// among them.
    pub fn wait_response(
        &mut self,
        opaque: i32,
        timeout: Duration,
    ) -> Result<Command, ConnectionError> {
        let is_it = |command: &Command| command.is_response() && command.opaque == opaque;
        if let Some(at) = self.kept.iter().position(is_it)
            && let Some(response) = self.kept.remove(at)
        {
            return Ok(response);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.decode()? {
                Some(command) if is_it(&command) => return Ok(command),
                Some(other) => self.kept.push_back(other),
                None => self.fill(deadline)?,
            }
        }
    }

    /// Drops the frames kept while waiting for responses; returns how many there were. A
    /// long-lived client that never reads the peer's own requests calls this after each
    /// request, so they cannot pile up.
    pub fn drop_kept(&mut self) -> usize {
        let dropped = self.kept.len();
        self.kept.clear();
        dropped
    }

    /// The next frame, waiting up to `timeout`: kept frames first, then the stream's.
    pub fn read_frame(&mut self, timeout: Duration) -> Result<Command, ConnectionError> {
        if let Some(command) = self.kept.pop_front() {
            return Ok(command);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(command) = self.decode()? {
                return Ok(command);
            }
            self.fill(deadline)?;
        }
    }

    /// The next frame if it has already arrived, without blocking. `Err(Closed)` only once
    /// every frame received before the end of the stream has been returned.
    pub fn poll_frame(&mut self) -> Result<Option<Command>, ConnectionError> {
        if let Some(command) = self.kept.pop_front() {
            return Ok(Some(command));
        }
        if let Some(command) = self.decode()? {
            return Ok(Some(command));
        }
        self.read_available()?;
        match self.decode()? {
            Some(command) => Ok(Some(command)),
            None if self.eof => Err(ConnectionError::Closed),
            None => Ok(None),
        }
    }

    /// Reads and drops `count` whole frames without decoding their headers (a load generator
    /// that only counts answers), waiting up to `timeout` in all. Kept frames count first.
    pub fn skip_frames(&mut self, count: usize, timeout: Duration) -> Result<(), ConnectionError> {
        let deadline = Instant::now() + timeout;
        let mut left = count;
        while left > 0 && self.kept.pop_front().is_some() {
            left -= 1;
        }
        while left > 0 {
            match self.codec.check(&self.input).map_err(DecodeError::from)? {
                Some(layout) => {
                    self.input.advance(layout.frame_bytes);
                    left -= 1;
                }
                None => self.fill(deadline)?,
            }
        }
        Ok(())
    }

    /// Reads and drops everything until the peer closes the connection: `true` once it has (or
    /// the socket failed), `false` if it is still open after `timeout`. Undecodable input is
    /// dropped too.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        self.kept.clear();
        self.input.clear();
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(()) => self.input.clear(),
                Err(error) => return !error.is_timeout(),
            }
        }
    }

    /// Takes the next whole frame off the input buffer.
    fn decode(&mut self) -> Result<Option<Command>, ConnectionError> {
        Ok(self.codec.decode(&mut self.input)?)
    }

    /// Reads once, waiting at most until `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), ConnectionError> {
        if self.eof {
            return Err(ConnectionError::Closed);
        }
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ConnectionError::Timeout);
            }
            self.stream
                .set_read_timeout(Some(remaining))
                .map_err(ConnectionError::Io)?;
            match self.stream.read(&mut self.chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Err(ConnectionError::Closed);
                }
                Ok(read) => {
                    self.input.extend_from_slice(&self.chunk[..read]);
                    return Ok(());
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Reads whatever has already arrived, without blocking; notes the end of the stream.
    fn read_available(&mut self) -> Result<(), ConnectionError> {
        if self.eof {
            return Ok(());
        }
        self.stream
            .set_nonblocking(true)
            .map_err(ConnectionError::Io)?;
        let result = loop {
            match self.stream.read(&mut self.chunk) {
                Ok(0) => {
                    self.eof = true;
                    break Ok(());
                }
                Ok(read) => self.input.extend_from_slice(&self.chunk[..read]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => break Err(ConnectionError::from(error)),
            }
        };
        self.stream
            .set_nonblocking(false)
            .map_err(ConnectionError::Io)?;
        result
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use super::*;
    use crate::ResponseCode;
    use crate::header::QueueRequestHeader;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A server thread on an ephemeral port that runs `serve` on its first connection.
    fn server(
        serve: impl FnOnce(Connection) + Send + 'static,
    ) -> (SocketAddr, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            serve(Connection::from_stream(stream).unwrap());
        });
        (addr, handle)
    }

    fn answer(connection: &mut Connection, request: &Command, remark: &str) {
        let head = CommandHead::response_to(request, ResponseCode::Success).with_remark(remark);
        connection.send_frame(&head, &(), &request.body).unwrap();
    }

    #[test]
    fn a_request_gets_its_answer_and_keeps_the_server_request_that_came_first() {
        let (addr, server) = server(|mut peer| {
            let request = peer.read_frame(TIMEOUT).unwrap();
            assert_eq!(request.request_code(), RequestCode::GetMaxOffset);
            assert_eq!(request.serialize_type, SerializeType::RocketMq);
            let header: QueueRequestHeader<'_> = request.header().unwrap();
            assert_eq!((header.topic, header.queue_id), ("T", 3));
            // A request of the server's own before the answer.
            peer.send_oneway(RequestCode::NotifyConsumerIdsChanged, &(), b"notify")
                .unwrap();
            answer(&mut peer, &request, "answer");
            assert!(peer.wait_closed(TIMEOUT));
        });
        let mut client = Connection::connect(addr, TIMEOUT).unwrap();
        client.set_serialize_type(SerializeType::RocketMq);
        let header = QueueRequestHeader {
            topic: "T",
            queue_id: 3,
        };
        let response = client
            .request(RequestCode::GetMaxOffset, &header, b"body", TIMEOUT)
            .unwrap();
        assert_eq!(response.remark.as_deref(), Some("answer"));
        assert_eq!(&response.body[..], b"body");
        let kept = client.poll_frame().unwrap().unwrap();
        assert!(kept.is_oneway());
        assert_eq!(&kept.body[..], b"notify");
        drop(client);
        server.join().unwrap();
    }

    #[test]
    fn pipelined_responses_are_claimed_by_opaque_in_any_order() {
        let (addr, server) = server(|mut peer| {
            let requests: Vec<Command> =
                (0..3).map(|_| peer.read_frame(TIMEOUT).unwrap()).collect();
            for request in requests.iter().rev() {
                answer(&mut peer, request, "");
            }
            assert!(peer.wait_closed(TIMEOUT));
        });
        let mut client = Connection::connect(addr, TIMEOUT).unwrap();
        let opaques: Vec<i32> = [b"a", b"b", b"c"]
            .iter()
            .map(|body| {
                client
                    .send_request(RequestCode::HeartBeat, &(), *body)
                    .unwrap()
            })
            .collect();
        for (opaque, body) in opaques.iter().zip([b"a", b"b", b"c"]) {
            let response = client.wait_response(*opaque, TIMEOUT).unwrap();
            assert_eq!(&response.body[..], body);
        }
        assert!(
            client.poll_frame().unwrap().is_none(),
            "nothing else arrived"
        );
        drop(client);
        server.join().unwrap();
    }

    #[test]
    fn silence_is_a_timeout_and_a_close_is_closed() {
        let (addr, server) = server(|mut peer| {
            let request = peer.read_frame(TIMEOUT).unwrap();
            // Not answered; wait for the client's second request, then close.
            let _second = peer.read_frame(TIMEOUT).unwrap();
            drop(request);
        });
        let mut client = Connection::connect(addr, TIMEOUT).unwrap();
        let error = client
            .request(RequestCode::HeartBeat, &(), &[], Duration::from_millis(100))
            .unwrap_err();
        assert!(error.is_timeout(), "{error}");
        let error = client
            .request(RequestCode::HeartBeat, &(), &[], TIMEOUT)
            .unwrap_err();
        assert!(error.is_closed(), "{error}");
        assert!(client.poll_frame().unwrap_err().is_closed());
        server.join().unwrap();
    }

    #[test]
    fn garbage_is_a_decode_error_and_frames_can_be_skipped() {
        let (addr, server) = server(|mut peer| {
            let request = peer.read_frame(TIMEOUT).unwrap();
            answer(&mut peer, &request, "one");
            answer(&mut peer, &request, "two");
            peer.write_raw(&[0xFF, 0xFF, 0xFF, 0xF0, 0, 0, 0, 0])
                .unwrap();
        });
        let mut client = Connection::connect(addr, TIMEOUT).unwrap();
        client
            .send_request(RequestCode::HeartBeat, &(), &[])
            .unwrap();
        client.skip_frames(2, TIMEOUT).unwrap();
        match client.read_frame(TIMEOUT) {
            Err(ConnectionError::Decode(error)) => assert!(error.is_fatal(), "{error}"),
            other => panic!("expected a decode error, got {other:?}"),
        }
        assert!(client.wait_closed(TIMEOUT));
        server.join().unwrap();
    }

    #[test]
    fn a_refused_connect_names_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        match Connection::connect(addr, TIMEOUT) {
            Err(ConnectionError::Connect { addr: tried, .. }) => assert_eq!(tried, addr),
            other => panic!("expected a connect error, got {other:?}"),
        }
    }
}
