//! A blocking remoting client: one request at a time over one `std::net::TcpStream`, for the
//! broker's side threads that talk to other servers a few times a minute (NameServer
//! registration, a slave's metadata sync). No runtime: a slow or dead peer blocks only the
//! calling thread, never a shard.
//!
//! It depends on nothing in the broker (only `ringmq_protocol`, `bytes`, `std` and
//! `thiserror`), so moving it into the protocol crate behind a feature is a move, not a rewrite.
//!
//! Time limits ([`Timeouts`]): connecting has its own limit; every read and write has the I/O
//! limit; and the whole wait for one answer has a deadline, so a peer that trickles bytes (or
//! keeps sending requests of its own) cannot hold the caller longer than that.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use bytes::BytesMut;
use ringmq_protocol::{
    Command, CommandHead, DecodeError, EncodeExt, FrameCodec, RequestCode, SerializeType,
    encode_frame,
};
use thiserror::Error;

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// How long a client may wait, and for how much.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// To establish the connection.
    pub connect: Duration,
    /// For each read and each write on the socket.
    pub io: Duration,
    /// For the whole answer to one request, from the moment it is sent.
    pub answer: Duration,
}

/// Why a request got no answer. A failed client should be dropped: after an error its stream
/// may hold half a frame, so the next request would read garbage.
#[derive(Debug, Error)]
pub(crate) enum RpcError {
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("socket options: {0}")]
    SocketOptions(#[source] io::Error),
    #[error("write: {0}")]
    Write(#[source] io::Error),
    #[error("read: {0}")]
    Read(#[source] io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("no answer within {0:?}")]
    Deadline(Duration),
    #[error("bad answer: {0}")]
    Decode(#[source] DecodeError),
}

/// One blocking connection to a remoting server. Requests carry JSON headers (every server
/// accepts them); answers are matched by opaque, and requests the server sends meanwhile are
/// skipped.
#[derive(Debug)]
pub(crate) struct RpcClient {
    stream: TcpStream,
    codec: FrameCodec,
    /// Bytes read and not yet decoded.
    input: BytesMut,
    /// The frame being sent (kept to reuse its allocation).
    output: BytesMut,
    opaque: i32,
    timeouts: Timeouts,
}

impl RpcClient {
    /// Connects to `addr` (`host:port`; the first address it resolves to). Answers larger than
    /// `max_frame_bytes` are refused as undecodable.
    pub(crate) fn connect(
        addr: &str,
        timeouts: Timeouts,
        max_frame_bytes: usize,
    ) -> Result<Self, RpcError> {
        let target: SocketAddr = addr
            .to_socket_addrs()
            .map_err(|source| RpcError::Resolve {
                addr: addr.to_owned(),
                source,
            })?
            .next()
            .ok_or_else(|| RpcError::NoAddress(addr.to_owned()))?;
        let stream =
            TcpStream::connect_timeout(&target, timeouts.connect).map_err(RpcError::Connect)?;
        stream
            .set_read_timeout(Some(timeouts.io))
            .and_then(|()| stream.set_write_timeout(Some(timeouts.io)))
            .map_err(RpcError::SocketOptions)?;
        // Latency only: a failure here costs nothing but Nagle's delay.
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            codec: FrameCodec::new(max_frame_bytes),
            input: BytesMut::new(),
            output: BytesMut::new(),
            opaque: 0,
            timeouts,
        })
    }

    /// Sends a request and waits for its answer (whatever its response code) until the answer
    /// deadline.
    pub(crate) fn request(
        &mut self,
        code: RequestCode,
        header: &impl EncodeExt,
        body: &[u8],
    ) -> Result<Command, RpcError> {
        let opaque = self.next_opaque();
        self.send(
            &CommandHead::request(code, opaque, SerializeType::Json),
            header,
            body,
        )?;
        self.answer(opaque, Instant::now() + self.timeouts.answer)
    }

    /// Sends a oneway request: no answer is expected or read.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "part of the client's API for its move to the protocol crate; no broker \
                      thread sends oneway requests today"
        )
    )]
    pub(crate) fn oneway(
        &mut self,
        code: RequestCode,
        header: &impl EncodeExt,
        body: &[u8],
    ) -> Result<(), RpcError> {
        let opaque = self.next_opaque();
        self.send(
            &CommandHead::oneway(code, opaque, SerializeType::Json),
            header,
            body,
        )
    }

    fn next_opaque(&mut self) -> i32 {
        self.opaque = self.opaque.wrapping_add(1);
        self.opaque
    }

    fn send(
        &mut self,
        head: &CommandHead<'_>,
        header: &impl EncodeExt,
        body: &[u8],
    ) -> Result<(), RpcError> {
        self.output.clear();
        encode_frame(head, header, body, &mut self.output);
        self.stream.write_all(&self.output).map_err(RpcError::Write)
    }

    /// Reads until the answer to `opaque`, each read limited by the I/O timeout and `deadline`.
    fn answer(&mut self, opaque: i32, deadline: Instant) -> Result<Command, RpcError> {
        let mut chunk = vec![0_u8; READ_CHUNK_BYTES];
        loop {
            match self.codec.decode(&mut self.input) {
                Ok(Some(command)) if command.is_response() && command.opaque == opaque => {
                    return Ok(command);
                }
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(err) => return Err(RpcError::Decode(err)),
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(RpcError::Deadline(self.timeouts.answer));
            }
            self.stream
                .set_read_timeout(Some(remaining.min(self.timeouts.io)))
                .map_err(RpcError::SocketOptions)?;
            let read = match self.stream.read(&mut chunk) {
                Ok(0) => return Err(RpcError::Closed),
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(RpcError::Read(err)),
            };
            self.input.extend_from_slice(&chunk[..read]);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, thread::JoinHandle};

    use ringmq_protocol::{ResponseCode, command::FLAG_ONEWAY};

    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        connect: Duration::from_secs(3),
        io: Duration::from_secs(3),
        answer: Duration::from_secs(3),
    };

    /// A one-connection server: for each request, `answer` says what to send back (`None`:
    /// nothing); it returns the requests it saw when the client closes.
    fn server(
        answer: impl Fn(&Command) -> Option<Vec<u8>> + Send + 'static,
    ) -> (String, JoinHandle<Vec<(RequestCode, i32)>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let codec = FrameCodec::default();
            let mut input = BytesMut::new();
            let mut seen = Vec::new();
            let mut chunk = [0_u8; 4096];
            loop {
                while let Some(request) = codec.decode(&mut input).unwrap() {
                    seen.push((request.request_code(), request.flag));
                    if let Some(frame) = answer(&request) {
                        stream.write_all(&frame).unwrap();
                    }
                }
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => return seen,
                    Ok(read) => input.extend_from_slice(&chunk[..read]),
                }
            }
        });
        (addr, thread)
    }

    fn frame(head: &CommandHead<'_>) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_frame(head, &(), &[], &mut out);
        out.to_vec()
    }

    #[test]
    fn answers_are_matched_by_opaque_and_server_requests_skipped() {
        let (addr, peer) = server(|request| {
            // A request of the server's own, then a stale answer, then the real one.
            let mut out = frame(&CommandHead::request(
                RequestCode::NotifyConsumerIdsChanged,
                77,
                SerializeType::Json,
            ));
            let mut stale = CommandHead::response_to(request, ResponseCode::SystemError);
            stale.opaque = request.opaque.wrapping_add(100);
            out.extend(frame(&stale));
            out.extend(frame(&CommandHead::response_to(
                request,
                ResponseCode::Success,
            )));
            Some(out)
        });
        let mut client = RpcClient::connect(&addr, TIMEOUTS, 1 << 20).unwrap();
        for _ in 0..2 {
            let answer = client
                .request(RequestCode::GetAllTopicConfig, &(), &[])
                .unwrap();
            assert_eq!(answer.response_code(), ResponseCode::Success);
        }
        client
            .oneway(RequestCode::UnregisterClient, &(), &[])
            .unwrap();
        drop(client);
        let seen = peer.join().unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[2].0, RequestCode::UnregisterClient);
        assert_ne!(seen[2].1 & FLAG_ONEWAY, 0, "sent as oneway");
    }

    #[test]
    fn a_silent_peer_fails_the_request_at_the_deadline() {
        let (addr, peer) = server(|_| None);
        let timeouts = Timeouts {
            answer: Duration::from_millis(200),
            ..TIMEOUTS
        };
        let mut client = RpcClient::connect(&addr, timeouts, 1 << 20).unwrap();
        let started = Instant::now();
        let err = client
            .request(RequestCode::GetAllTopicConfig, &(), &[])
            .unwrap_err();
        assert!(
            matches!(err, RpcError::Deadline(_) | RpcError::Read(_)),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(client);
        peer.join().unwrap();
    }

    #[test]
    fn a_peer_that_hangs_up_or_is_down_is_an_error() {
        let (addr, peer) = server(|_| None);
        let mut client = RpcClient::connect(&addr, TIMEOUTS, 1 << 20).unwrap();
        client.stream.shutdown(std::net::Shutdown::Write).unwrap();
        peer.join().unwrap();
        let err = client
            .request(RequestCode::GetAllTopicConfig, &(), &[])
            .unwrap_err();
        assert!(
            matches!(
                err,
                RpcError::Closed | RpcError::Write(_) | RpcError::Read(_)
            ),
            "{err}"
        );

        let down = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let err = RpcClient::connect(&down, TIMEOUTS, 1 << 20).unwrap_err();
        assert!(err.to_string().starts_with("connect:"), "{err}");
    }
}
