//! Shared by the client's integration tests: fake servers (a `std::net` listener thread per
//! server, a thread per connection, driven by the test) and bounded waits on a compio runtime.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ringmq_protocol::blocking::{Connection, ConnectionError};
use ringmq_protocol::body::{BrokerData, QueueData, TopicRouteData, perm};
use ringmq_protocol::{Command, CommandHead, EncodeExt, ResponseCode};

/// No client call may take longer than this, whatever it does.
pub const HANG_LIMIT: Duration = Duration::from_secs(20);
/// How long a fake server accepts connections and waits on a socket.
pub const SERVER_LIFETIME: Duration = Duration::from_secs(60);
/// Connections a fake server accepts at most.
pub const MAX_CONNECTIONS: usize = 16;

// ------------------------------------------------------------------------------------------------
/// One accepted connection of a fake server, reading the client's frames.
pub struct Peer {
    connection: Connection,
}

impl Peer {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            connection: Connection::from_stream(stream).expect("an accepted connection"),
        }
    }

    /// The socket, for a shutdown.
    pub fn stream(&self) -> &TcpStream {
        self.connection.stream()
    }

    /// The next frame from the client; `None` once it closed the connection (or went silent
    /// for [`SERVER_LIFETIME`]). Panics on a frame that does not decode.
    pub fn read(&mut self) -> Option<Command> {
        match self.connection.read_frame(SERVER_LIFETIME) {
            Ok(command) => Some(command),
            Err(ConnectionError::Decode(error)) => panic!("client frame: {error}"),
            Err(_) => None,
        }
    }

    /// The next request; panics when the client closed instead.
    pub fn request(&mut self) -> Command {
        self.read().expect("a request from the client")
    }

    pub fn write(&mut self, bytes: &[u8]) {
        // The client may already have given up on this connection.
        let _ignored = self.connection.write_raw(bytes);
    }

    /// Answers `request` with SUCCESS, echoing its body.
    pub fn echo(&mut self, request: &Command) {
        self.answer(request, ResponseCode::Success, None, &request.body.clone());
    }

    pub fn answer(
        &mut self,
        request: &Command,
        code: ResponseCode,
        remark: Option<&str>,
        answer_body: &[u8],
    ) {
        self.answer_with(request, code, remark, &(), answer_body);
    }

    /// Answers `request` with typed header fields.
    pub fn answer_with(
        &mut self,
        request: &Command,
        code: ResponseCode,
        remark: Option<&str>,
        header: &impl EncodeExt,
        answer_body: &[u8],
    ) {
        let mut head = CommandHead::response_to(request, code);
        head.remark = remark;
        // The client may already have given up on this connection.
        let _ignored = self.connection.send_frame(&head, header, answer_body);
    }

    /// Waits until the client closes the connection (bounded by [`SERVER_LIFETIME`]).
    pub fn drain(mut self) {
        while self.read().is_some() {}
    }

    /// Closes with a TCP reset (SO_LINGER 0).
    pub fn reset(self) {
        socket2::SockRef::from(self.connection.stream())
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(self.connection);
    }
}

/// A listener thread; each accepted connection is handed to `handler` (with its index) on a
/// thread of its own.
pub struct FakeServer {
    pub addr: String,
    accepted: Arc<AtomicUsize>,
}

impl FakeServer {
    pub fn start(handler: impl Fn(usize, Peer) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handler = Arc::new(handler);
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        thread::spawn(move || {
            let deadline = Instant::now() + SERVER_LIFETIME;
            while Instant::now() < deadline && count.load(Ordering::SeqCst) < MAX_CONNECTIONS {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let index = count.fetch_add(1, Ordering::SeqCst);
                        let handler = Arc::clone(&handler);
                        thread::spawn(move || handler(index, Peer::new(stream)));
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => break,
                }
            }
        });
        Self { addr, accepted }
    }

    /// A server that echoes every request's body on every connection.
    pub fn echo() -> Self {
        Self::start(|_, mut peer| {
            while let Some(request) = peer.read() {
                peer.echo(&request);
            }
        })
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// An address nothing listens on.
pub fn dead_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

pub fn block_on<F: Future>(future: F) -> F::Output {
    compio::runtime::Runtime::new()
        .expect("a compio runtime")
        .block_on(future)
}

/// Awaits `future`, panicking if it takes longer than [`HANG_LIMIT`].
pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    compio::time::timeout(HANG_LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {HANG_LIMIT:?}"))
}

/// A route of one topic to `broker-a` at `broker_addr` with four read/write queues.
pub fn route_data(broker_addr: &str) -> TopicRouteData {
    route_of(&[("broker-a", broker_addr)])
}

/// A route of one topic to each (broker name, master address), four read/write queues each.
pub fn route_of(brokers: &[(&str, &str)]) -> TopicRouteData {
    TopicRouteData {
        broker_datas: brokers
            .iter()
            .map(|(name, addr)| {
                let mut broker = BrokerData {
                    broker_name: (*name).to_owned(),
                    cluster: "DefaultCluster".into(),
                    ..BrokerData::default()
                };
                broker.broker_addrs.insert(0, (*addr).to_owned());
                broker
            })
            .collect(),
        queue_datas: brokers
            .iter()
            .map(|(name, _)| QueueData {
                broker_name: (*name).to_owned(),
                perm: perm::READ | perm::WRITE,
                read_queue_nums: 4,
                write_queue_nums: 4,
                topic_sys_flag: 0,
            })
            .collect(),
        ..TopicRouteData::default()
    }
}

/// A client handle that is dropped on a thread of its own when the test is panicking.
///
/// Why: dropping a producer or consumer wakes a task on the client's compio I/O thread, and
/// compio (0.19) aborts the whole process when a task is woken from a thread that is unwinding
/// (its schedule guard checks `thread::panicking()`). A failed assertion would then kill every
/// test of this file and print no process logs. Handles held here leave the panicking thread
/// first.
pub struct Handle<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> Handle<T> {
    pub const fn new(handle: T) -> Self {
        Self(Some(handle))
    }
}

impl<T: Send + 'static> std::ops::Deref for Handle<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<T: Send + 'static> Drop for Handle<T> {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            if thread::panicking() {
                let _joined = thread::spawn(move || drop(handle)).join();
            } else {
                drop(handle);
            }
        }
    }
}
