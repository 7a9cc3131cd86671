//! The broker's blocking remoting client: one request at a time over one connection, for the
//! side threads that talk to other servers a few times a minute (NameServer registration, a
//! slave's metadata sync). No runtime: a slow or dead peer blocks only the calling thread, never
//! a shard.
//!
//! Frames, deadlines and errors are `ringmq_protocol::blocking`'s, the one home of blocking
//! request/response. What this adds is the broker's policy: its time limits ([`Timeouts`]), a
//! frame-size limit per use, and dropping whatever the peer sends besides the answer, since
//! these connections live as long as the broker and nobody reads the peer's own requests.

use std::time::Duration;

use ringmq_protocol::{
    Command, EncodeExt, FrameCodec, RequestCode,
    blocking::{Connection, ConnectionError},
};

/// Why a request got no answer. A failed client should be dropped: after an error its stream
/// may hold half a frame.
pub(crate) type RpcError = ConnectionError;

/// How long a client may wait, and for how much.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// To establish the connection.
    pub connect: Duration,
    /// For each write on the socket.
    pub write: Duration,
    /// For the whole answer to one request, from the moment it is sent: a peer that trickles
    /// bytes (or keeps sending requests of its own) cannot hold the caller longer.
    pub answer: Duration,
}

/// One blocking connection to a remoting server. Requests carry JSON headers (every server
/// accepts them); answers are matched by opaque.
#[derive(Debug)]
pub(crate) struct RpcClient {
    connection: Connection,
    timeouts: Timeouts,
}

impl RpcClient {
    /// Connects to `addr` (`host:port`; each address it resolves to in turn). Answers larger
    /// than `max_frame_bytes` are refused as undecodable.
    pub(crate) fn connect(
        addr: &str,
        timeouts: Timeouts,
        max_frame_bytes: usize,
    ) -> Result<Self, RpcError> {
        let connection = Connection::connect(addr, timeouts.connect)?
            .with_codec(FrameCodec::new(max_frame_bytes));
        connection
            .stream()
            .set_write_timeout(Some(timeouts.write))
            .map_err(RpcError::Io)?;
        Ok(Self {
            connection,
            timeouts,
        })
    }

    /// Sends a request and waits for its answer (whatever its response code) until the answer
    /// deadline. Frames the peer sent meanwhile that are not the answer are dropped.
    pub(crate) fn request(
        &mut self,
        code: RequestCode,
        header: &impl EncodeExt,
        body: &[u8],
    ) -> Result<Command, RpcError> {
        let answer = self
            .connection
            .request(code, header, body, self.timeouts.answer);
        self.connection.drop_kept();
        answer
    }

    /// Whether the peer closed the connection (or it broke), seen without blocking and without
    /// taking anything from it: a kept connection to a server that restarted shows up here,
    /// before a request on it would fail.
    pub(crate) fn peer_closed(&self) -> bool {
        let stream = self.connection.stream();
        if stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let closed = match stream.peek(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(err) => err.kind() != std::io::ErrorKind::WouldBlock,
        };
        stream.set_nonblocking(false).is_err() || closed
    }
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, thread::JoinHandle, time::Instant};

    use ringmq_protocol::{CommandHead, ResponseCode, SerializeType};

    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        connect: Duration::from_secs(3),
        write: Duration::from_secs(3),
        answer: Duration::from_secs(3),
    };

    /// A one-connection server: `answer` sends what it likes for each request; it returns the
    /// codes of the requests it saw once the client closes.
    fn server(
        answer: impl Fn(&mut Connection, &Command) + Send + 'static,
    ) -> (String, JoinHandle<Vec<RequestCode>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut peer = Connection::from_stream(stream).unwrap();
            let mut seen = Vec::new();
            while let Ok(request) = peer.read_frame(Duration::from_secs(10)) {
                seen.push(request.request_code());
                answer(&mut peer, &request);
            }
            seen
        });
        (addr, thread)
    }

    #[test]
    fn answers_are_matched_by_opaque_and_other_frames_dropped() {
        let (addr, peer) = server(|peer, request| {
            // A request of the server's own, then a stale answer, then the real one.
            let own = CommandHead::request(
                RequestCode::NotifyConsumerIdsChanged,
                77,
                SerializeType::Json,
            );
            peer.send_frame(&own, &(), &[]).unwrap();
            let mut stale = CommandHead::response_to(request, ResponseCode::SystemError);
            stale.opaque = request.opaque.wrapping_add(100);
            peer.send_frame(&stale, &(), &[]).unwrap();
            let real = CommandHead::response_to(request, ResponseCode::Success);
            peer.send_frame(&real, &(), &[]).unwrap();
        });
        let mut client = RpcClient::connect(&addr, TIMEOUTS, 1 << 20).unwrap();
        for _ in 0..2 {
            let answer = client
                .request(RequestCode::GetAllTopicConfig, &(), &[])
                .unwrap();
            assert_eq!(answer.response_code(), ResponseCode::Success);
        }
        assert_eq!(client.connection.drop_kept(), 0, "nothing left behind");
        drop(client);
        assert_eq!(peer.join().unwrap().len(), 2);
    }

    #[test]
    fn a_silent_peer_fails_the_request_at_the_deadline() {
        let (addr, peer) = server(|_, _| {});
        let timeouts = Timeouts {
            answer: Duration::from_millis(200),
            ..TIMEOUTS
        };
        let mut client = RpcClient::connect(&addr, timeouts, 1 << 20).unwrap();
        let started = Instant::now();
        let err = client
            .request(RequestCode::GetAllTopicConfig, &(), &[])
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(client);
        peer.join().unwrap();
    }

    #[test]
    fn a_closed_peer_is_seen_without_a_request() {
        let (addr, peer) = server(|_, _| {});
        let mut client = RpcClient::connect(&addr, TIMEOUTS, 1 << 20).unwrap();
        assert!(!client.peer_closed(), "an open, silent peer");
        assert!(!client.peer_closed(), "asking twice changes nothing");
        // The server ends its side once it reads the end of the client's.
        client.connection.shutdown_write().unwrap();
        peer.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !client.peer_closed() {
            assert!(Instant::now() < deadline, "the close was never seen");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_peer_that_hangs_up_or_is_down_is_an_error() {
        let (addr, peer) = server(|_, _| {});
        let mut client = RpcClient::connect(&addr, TIMEOUTS, 1 << 20).unwrap();
        client.connection.shutdown_write().unwrap();
        peer.join().unwrap();
        let err = client
            .request(RequestCode::GetAllTopicConfig, &(), &[])
            .unwrap_err();
        assert!(err.is_closed(), "{err}");

        let down = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let err = RpcClient::connect(&down, TIMEOUTS, 1 << 20).unwrap_err();
        assert!(matches!(err, RpcError::Connect { .. }), "{err}");
    }
}
