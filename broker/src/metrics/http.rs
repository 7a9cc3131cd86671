//! The HTTP endpoint Prometheus scrapes (`GET /metrics`), hand-written over std sockets.
//!
//! See the module doc of `crate::metrics` for why this is not an HTTP crate.

use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use super::catalogue::BrokerMetrics;

/// Longest request head (request line plus headers) the server reads; longer gets 431.
const HEAD_LIMIT_BYTES: usize = 8 * 1024;
/// Time a client has to send its whole request head; slower gets 408. A total deadline, not a
/// per-read timeout, so trickling one byte at a time cannot hold the server either.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a client has to accept the whole response.
const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// After answering, how long the server waits for the client to close (see `close_gracefully`).
const DRAIN_TIMEOUT: Duration = Duration::from_millis(250);
/// After answering, how many unread request bytes the server discards at most.
const DRAIN_LIMIT_BYTES: usize = 64 * 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// How long `shutdown` waits to connect to its own listener to wake the accept loop.
const WAKE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The HTTP endpoint Prometheus scrapes: `GET /metrics` on a side thread named `metrics-http`.
///
/// It serves one connection at a time with blocking std sockets. That is enough for a scraper
/// (one request every few seconds) and keeps it off the shards' io_uring runtimes entirely. A
/// bad client cannot stall it for long: the request head is capped at 8 KiB and must arrive
/// within 2 s, the response must be accepted within 2 s, and every connection is closed after
/// one response (`Connection: close`).
///
/// `shutdown` (or drop) stops the thread and joins it; a scrape in progress finishes first.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `listen` and starts serving `metrics`.
    pub fn start(listen: SocketAddr, metrics: Arc<BrokerMetrics>) -> io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new().name("metrics-http".into()).spawn({
            let stop = Arc::clone(&stop);
            move || serve(&listener, &metrics, &stop)
        })?;
        tracing::info!(%local_addr, "metrics endpoint listening");
        Ok(Self {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (useful when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, waits for a scrape in progress, and joins the thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        // The thread is blocked in `accept`; a connection of our own wakes it and it sees the
        // flag. (Closing the listener from here would not wake a blocked `accept` portably.)
        let mut wake_addr = self.local_addr;
        if wake_addr.ip().is_unspecified() {
            wake_addr.set_ip(match wake_addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        if let Err(error) = TcpStream::connect_timeout(&wake_addr, WAKE_CONNECT_TIMEOUT) {
            // Joining now could block forever; the thread exits at its next connection.
            tracing::warn!(%wake_addr, %error, "cannot wake the metrics thread; leaving it detached");
            return;
        }
        if thread.join().is_err() {
            tracing::error!("the metrics thread panicked");
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The accept loop. Buffers are allocated once and reused for every scrape.
fn serve(listener: &TcpListener, metrics: &BrokerMetrics, stop: &AtomicBool) {
    let mut head = [0_u8; HEAD_LIMIT_BYTES];
    let mut body = String::new();
    let mut response = Vec::new();
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Acquire) {
            return;
        }
        match accepted {
            Ok((mut stream, peer)) => {
                let served =
                    serve_connection(&mut stream, metrics, &mut head, &mut body, &mut response);
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "metrics connection failed");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "metrics accept failed");
                thread::sleep(ACCEPT_ERROR_BACKOFF);
            }
        }
    }
}

/// What the server answers to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// 200 with the metrics; no body for HEAD.
    Metrics { include_body: bool },
    /// 400: the request line is not `METHOD SP /target SP HTTP/1.x`.
    BadRequest,
    /// 404: any path but `/metrics`.
    NotFound,
    /// 405: `/metrics` with a method other than GET or HEAD.
    MethodNotAllowed,
    /// 408: the head did not arrive within `REQUEST_READ_TIMEOUT`.
    RequestTimeout,
    /// 431: the head is longer than `HEAD_LIMIT_BYTES`.
    HeadTooLarge,
}

fn serve_connection(
    stream: &mut TcpStream,
    metrics: &BrokerMetrics,
    head: &mut [u8; HEAD_LIMIT_BYTES],
    body: &mut String,
    response: &mut Vec<u8>,
) -> io::Result<()> {
    let Some(reply) = read_request(stream, head)? else {
        // The client closed before sending a whole head: nobody to answer.
        return Ok(());
    };
    body.clear();
    response.clear();
    let (status, content_type) = match reply {
        Reply::Metrics { .. } => {
            metrics.render(body);
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8")
        }
        Reply::BadRequest => ("400 Bad Request", "text/plain; charset=utf-8"),
        Reply::NotFound => ("404 Not Found", "text/plain; charset=utf-8"),
        Reply::MethodNotAllowed => ("405 Method Not Allowed", "text/plain; charset=utf-8"),
        Reply::RequestTimeout => ("408 Request Timeout", "text/plain; charset=utf-8"),
        Reply::HeadTooLarge => (
            "431 Request Header Fields Too Large",
            "text/plain; charset=utf-8",
        ),
    };
    if !matches!(reply, Reply::Metrics { .. }) {
        body.push_str(status);
        body.push('\n');
    }
    write!(
        response,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    )?;
    if reply == Reply::MethodNotAllowed {
        response.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    response.extend_from_slice(b"\r\n");
    if !matches!(
        reply,
        Reply::Metrics {
            include_body: false
        }
    ) {
        response.extend_from_slice(body.as_bytes());
    }
    // One buffer, one write: a separate small head write could wait on Nagle + delayed ACK.
    write_all_before(stream, response, Instant::now() + RESPONSE_WRITE_TIMEOUT)?;
    close_gracefully(stream);
    Ok(())
}

/// Reads the request head into `head` and decides the reply; `None` if the client closed first.
fn read_request(
    stream: &mut TcpStream,
    head: &mut [u8; HEAD_LIMIT_BYTES],
) -> io::Result<Option<Reply>> {
    let deadline = Instant::now() + REQUEST_READ_TIMEOUT;
    let mut filled = 0;
    loop {
        if let Some(reply) = examine_head(&head[..filled]) {
            return Ok(Some(reply));
        }
        if filled == head.len() {
            return Ok(Some(Reply::HeadTooLarge));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(Some(Reply::RequestTimeout));
        }
        stream.set_read_timeout(Some(remaining))?;
        match stream.read(&mut head[filled..]) {
            Ok(0) => return Ok(None),
            Ok(read) => filled += read,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Some(Reply::RequestTimeout));
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

/// Decides the reply from the bytes read so far, or `None` to read more.
///
/// A request line with a byte that cannot appear in one (control characters, non-ASCII: say a
/// TLS handshake) or that is complete but malformed is refused at once, without waiting for the
/// rest of the head. Otherwise the whole head is read before answering, so that closing the
/// connection does not discard unread request bytes and reset it.
fn examine_head(bytes: &[u8]) -> Option<Reply> {
    let line_end = bytes.iter().position(|&byte| byte == b'\n');
    let line = &bytes[..line_end.unwrap_or(bytes.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.iter().all(|&byte| (0x20..0x7f).contains(&byte)) {
        return Some(Reply::BadRequest);
    }
    // Without a line end the request line is not complete yet: read more.
    line_end?;
    let Some(request_line) = RequestLine::parse(line) else {
        return Some(Reply::BadRequest);
    };
    let head_complete = bytes.windows(4).any(|window| window == b"\r\n\r\n")
        || bytes.windows(2).any(|window| window == b"\n\n");
    head_complete.then(|| request_line.reply())
}

/// `METHOD SP request-target SP HTTP-version`, borrowed from the head buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RequestLine<'a> {
    method: &'a str,
    /// The path, without query string.
    path: &'a str,
}

impl<'a> RequestLine<'a> {
    /// Parses a request line (printable ASCII, CR LF already stripped).
    fn parse(line: &'a [u8]) -> Option<Self> {
        let line = std::str::from_utf8(line).ok()?;
        let mut parts = line.split(' ');
        let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || method.is_empty()
            || !method.bytes().all(is_token_byte)
            || !matches!(version, "HTTP/1.0" | "HTTP/1.1")
        {
            return None;
        }
        // Origin form (`/metrics?x`), or absolute form (`http://host:port/metrics`), which an
        // HTTP/1.1 server must accept too.
        let target = match target.strip_prefix("http://") {
            Some(rest) => rest.find('/').map_or("/", |slash| &rest[slash..]),
            None => target,
        };
        if !target.starts_with('/') {
            return None;
        }
        let path = target.split_once('?').map_or(target, |(path, _query)| path);
        Some(Self { method, path })
    }

    fn reply(self) -> Reply {
        match (self.path, self.method) {
            ("/metrics", "GET") => Reply::Metrics { include_body: true },
            ("/metrics", "HEAD") => Reply::Metrics {
                include_body: false,
            },
            ("/metrics", _) => Reply::MethodNotAllowed,
            _ => Reply::NotFound,
        }
    }
}

/// RFC 9110 `tchar`: what a method name may contain.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// `write_all` with a deadline for the whole buffer rather than per write call.
fn write_all_before(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client did not accept the response in time",
            ));
        }
        stream.set_write_timeout(Some(remaining))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Half-closes, then discards what the client still sends until it closes (bounded in time and
/// bytes). Closing a socket with unread input makes the kernel send RST, and a client that gets
/// RST may lose the response it has not read yet, which matters for 400 and 431 answers given
/// before the whole request was read. Failures here are irrelevant: the response is sent.
fn close_gracefully(stream: &mut TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut scratch = [0_u8; 4096];
    let mut discarded = 0;
    while discarded < DRAIN_LIMIT_BYTES {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() || stream.set_read_timeout(Some(remaining)).is_err() {
            return;
        }
        match stream.read(&mut scratch) {
            Ok(0) => return,
            Ok(read) => discarded += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::metrics::{
        RequestKind,
        test_support::{metrics, sample},
    };

    #[test]
    fn request_lines_parse_and_route() {
        let route = |line: &str| RequestLine::parse(line.as_bytes()).map(RequestLine::reply);
        assert_eq!(
            route("GET /metrics HTTP/1.1"),
            Some(Reply::Metrics { include_body: true })
        );
        assert_eq!(
            route("GET /metrics?name[]=x HTTP/1.0"),
            Some(Reply::Metrics { include_body: true })
        );
        assert_eq!(
            route("GET http://localhost:9100/metrics HTTP/1.1"),
            Some(Reply::Metrics { include_body: true })
        );
        assert_eq!(
            route("HEAD /metrics HTTP/1.1"),
            Some(Reply::Metrics {
                include_body: false
            })
        );
        assert_eq!(
            route("DELETE /metrics HTTP/1.1"),
            Some(Reply::MethodNotAllowed)
        );
        assert_eq!(route("GET /metrics/ HTTP/1.1"), Some(Reply::NotFound));
        assert_eq!(route("POST /other HTTP/1.1"), Some(Reply::NotFound));
        for malformed in [
            "",
            "GET",
            "GET /metrics",
            "GET /metrics HTTP/2.0",
            "GET  /metrics HTTP/1.1",
            "GET /metrics HTTP/1.1 extra",
            "GET metrics HTTP/1.1",
            "G(T /metrics HTTP/1.1",
        ] {
            assert_eq!(route(malformed), None, "{malformed:?}");
        }
    }

    struct HttpReply {
        status: u16,
        head: String,
        body: String,
    }

    fn exchange(addr: SocketAddr, request: &[u8]) -> HttpReply {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("no end of head");
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .expect("no status line")
            .parse()
            .unwrap();
        HttpReply {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }

    fn header<'a>(reply: &'a HttpReply, name: &str) -> Option<&'a str> {
        reply.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(": ")?;
            key.eq_ignore_ascii_case(name).then_some(value)
        })
    }

    fn start_server(metrics: &Arc<BrokerMetrics>) -> MetricsServer {
        MetricsServer::start("127.0.0.1:0".parse().unwrap(), Arc::clone(metrics)).unwrap()
    }

    #[test]
    fn scrape_over_http_returns_the_counters() {
        let metrics = Arc::new(metrics(2));
        metrics.shard(1).request(RequestKind::Heartbeat).add(42);
        metrics.shard(0).messages_stored_total.add(9);
        let server = start_server(&metrics);

        let reply = exchange(
            server.local_addr(),
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
        );
        assert_eq!(reply.status, 200, "{}", reply.head);
        assert_eq!(
            header(&reply, "Content-Type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert_eq!(header(&reply, "Connection"), Some("close"));
        assert_eq!(
            header(&reply, "Content-Length"),
            Some(reply.body.len().to_string().as_str())
        );
        assert_eq!(
            sample(
                &reply.body,
                "ringmq_requests_total{shard=\"1\",kind=\"heartbeat\"}"
            ),
            Some(42.0)
        );
        assert_eq!(
            sample(&reply.body, "ringmq_messages_stored_total{shard=\"0\"}"),
            Some(9.0)
        );

        // A later scrape sees later increments; HTTP/1.0 and HEAD work too.
        metrics.shard(1).request(RequestKind::Heartbeat).inc();
        let reply = exchange(server.local_addr(), b"GET /metrics HTTP/1.0\r\n\r\n");
        assert_eq!(reply.status, 200);
        assert_eq!(
            sample(
                &reply.body,
                "ringmq_requests_total{shard=\"1\",kind=\"heartbeat\"}"
            ),
            Some(43.0)
        );
        let reply = exchange(server.local_addr(), b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(reply.status, 200);
        assert!(reply.body.is_empty());
        let length: usize = header(&reply, "Content-Length").unwrap().parse().unwrap();
        assert!(length > 0);
        server.shutdown();
    }

    #[test]
    fn other_paths_methods_and_bad_requests_get_errors_and_the_server_keeps_serving() {
        let metrics = Arc::new(metrics(1));
        let server = start_server(&metrics);
        let addr = server.local_addr();

        assert_eq!(exchange(addr, b"GET /other HTTP/1.1\r\n\r\n").status, 404);
        let reply = exchange(
            addr,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert_eq!(reply.status, 405);
        assert_eq!(header(&reply, "Allow"), Some("GET, HEAD"));
        assert_eq!(exchange(addr, b"GARBAGE\r\n\r\n").status, 400);
        // A TLS ClientHello is refused at its first byte, without waiting for a line end.
        assert_eq!(exchange(addr, b"\x16\x03\x01\x02\x00\x01\x00").status, 400);
        // A head past 8 KiB.
        let mut long = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
        long.resize(HEAD_LIMIT_BYTES + 1_024, b'a');
        assert_eq!(exchange(addr, &long).status, 431);

        let reply = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(reply.status, 200);
        assert!(
            reply
                .body
                .contains("# TYPE ringmq_requests_total counter\n")
        );
        server.shutdown();
    }

    #[test]
    fn a_client_that_connects_and_sends_nothing_gets_408_and_does_not_stall_the_server() {
        let metrics = Arc::new(metrics(1));
        let server = start_server(&metrics);
        let addr = server.local_addr();
        let mut silent = TcpStream::connect(addr).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // Queued behind the silent client, served once its 2 s run out.
        assert_eq!(exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").status, 200);
        let mut raw = Vec::new();
        silent.read_to_end(&mut raw).unwrap();
        assert!(raw.starts_with(b"HTTP/1.1 408 "), "{raw:?}");
        server.shutdown();
    }

    #[test]
    fn shutdown_joins_promptly_and_closes_the_port() {
        let metrics = Arc::new(metrics(1));
        let server = start_server(&metrics);
        let addr = server.local_addr();
        assert_eq!(exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").status, 200);

        let started = Instant::now();
        server.shutdown();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(TcpStream::connect(addr).is_err());

        // Dropping also stops it.
        let server = start_server(&metrics);
        let addr = server.local_addr();
        drop(server);
        assert!(TcpStream::connect(addr).is_err());
    }
}
