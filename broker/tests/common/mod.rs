//! The `ringmq-broker` binary under test, and a blocking remoting client that drives it.
//!
//! [`BrokerProcess`] starts the real binary on a fresh store directory with ephemeral ports and
//! learns its addresses from the lines it prints on stdout. [`Client`] speaks the protocol over a
//! plain `TcpStream`: it matches responses to requests by opaque, and queues the requests the
//! broker sends on its own (NOTIFY_CONSUMER_IDS_CHANGED) so a test can read them later. Every
//! wait has a deadline; nothing sleeps to wait for something to happen.
//!
//! Only processes started here are ever signalled, by their PID, and only while they are still
//! unreaped children (so the PID cannot have been reused).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fs::File,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command as Process, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::BytesMut;
use ringmq_protocol::{
    Command, CommandHead, DecodeError, EncodeExt, ExtFields, FrameCodec, RequestCode, ResponseCode,
    SerializeType,
    body::{
        self, ConsumeFromWhere, ConsumeType, ConsumerData, ConsumerListBody, HeartbeatData,
        KvTable, LockBatchRequestBody, LockBatchResponseBody, MessageModel, MessageQueue,
        SubscriptionData, TopicRouteData,
    },
    encode_frame,
    header::{
        ConsumerSendMsgBackRequestHeader, CreateTopicRequestHeader,
        GetConsumerListByGroupRequestHeader, GetEarliestMsgStoretimeResponseHeader,
        GetRouteInfoRequestHeader, OffsetResponseHeader, PullMessageRequestHeader,
        PullMessageResponseHeader, QueryConsumerOffsetRequestHeader, QueryMessageRequestHeader,
        QueueRequestHeader, SearchOffsetRequestHeader, SendMessageRequestHeader,
        SendMessageResponseHeader, UnregisterClientRequestHeader,
        UpdateConsumerOffsetRequestHeader, ViewMessageRequestHeader, pull_sys_flag,
    },
    message::{
        BatchMessage, MessageMagic, OffsetMessageId, Properties, PropertiesWriter, RecordIter,
        properties::keys,
    },
};

// ------------------------------------------------------------------------------------------------
// Constants of the contract

/// How long a broker may take to print its addresses.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a broker may take to exit after SIGTERM or SIGKILL, or to refuse a configuration.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(20);
/// How long any single request may take to be answered.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for conditions that become true asynchronously (registration, index, metrics).
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Broker defaults of the contract.
pub const BROKER_NAME: &str = "broker-a";
pub const CLUSTER: &str = "DefaultCluster";
pub const DEFAULT_TOPIC: &str = "TBW102";
/// Queues of TBW102, and the cap on the queues of a topic auto-created by a send.
pub const DEFAULT_TOPIC_QUEUES: i32 = 8;
/// Permission of a normal topic (read | write).
pub const PERM_RW: i32 = 6;
/// Producer group used by the helpers.
pub const PRODUCER_GROUP: &str = "e2e-producer";
/// Consumer group used by plain pulls.
pub const PULL_GROUP: &str = "e2e-puller";

/// The broker binary under test. Once these files live in `ringmq-broker` this becomes
/// `PathBuf::from(env!("CARGO_BIN_EXE_ringmq-broker"))`; until then it comes from the environment.
pub fn broker_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ringmq-broker"))
}

// ------------------------------------------------------------------------------------------------
// Waiting

/// Polls `condition` until it holds; panics naming `what` once `deadline` has passed.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    wait_for(what, deadline, || condition().then_some(()));
}

/// Polls `probe` until it returns a value; panics naming `what` once `deadline` has passed.
pub fn wait_for<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Wall-clock milliseconds, as brokers stamp messages.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Waits until the wall clock has moved past `after_ms`, so the next stored message gets a later
/// store timestamp than everything stored so far.
pub fn wait_for_next_ms(after_ms: i64) {
    wait_until("the clock to tick", Duration::from_secs(1), || {
        now_ms() > after_ms
    });
}

/// Whether `text` contains `word` as a whole token (tokens split at anything but letters, digits
/// and `_`), so "b" matches "missing field b" but not "broker".
pub fn mentions(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|token| token == word)
}

/// A small deterministic pseudo-random generator (xorshift64*), so failures can be replayed from
/// the printed seed.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

// ------------------------------------------------------------------------------------------------
// The broker process

static LOG_SEQUENCE: AtomicUsize = AtomicUsize::new(0);

/// Sends `signal` to `child` by PID. Does nothing if the child has already been reaped.
#[allow(unsafe_code)]
fn send_signal(child: &mut Child, signal: libc::c_int) {
    if child.try_wait().expect("try_wait on the broker").is_some() {
        return;
    }
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) reads no memory of ours. `pid` is our own child, not yet reaped (checked
    // above, and only this thread waits on it), so it cannot name any other process.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}) failed: {}",
        io::Error::last_os_error()
    );
}

/// Waits for `child` to exit, up to `deadline`; `None` if it is still running.
fn wait_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait on the broker") {
            return Some(status);
        }
        if start.elapsed() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The arguments every test start gets: the store directory and ephemeral ports, then the
/// test's own arguments (which may override nothing of these; the harness owns them).
fn base_args(store_dir: &Path, args: &[&str]) -> Vec<String> {
    let mut full = vec![
        "--store-dir".to_owned(),
        store_dir.display().to_string(),
        "--listen-port".to_owned(),
        "0".to_owned(),
    ];
    if !args.contains(&"-n") {
        full.extend(["--embedded-namesrv-port".to_owned(), "0".to_owned()]);
    }
    full.extend(args.iter().map(|arg| (*arg).to_owned()));
    full
}

fn read_file_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => format!("<cannot read {}: {error}>", path.display()),
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The address at the end of a startup line such as `ringmq-broker listening on 127.0.0.1:P`.
fn address_after(line: &str, prefix: &str) -> Option<SocketAddr> {
    let rest = line.trim().strip_prefix(prefix)?;
    Some(
        rest.trim()
            .parse()
            .unwrap_or_else(|_| panic!("cannot parse the address in startup line {line:?}")),
    )
}

/// A running `ringmq-broker`. Dropping it kills the process if it is still running, and prints
/// the tail of its log when the test is failing.
pub struct BrokerProcess {
    child: Child,
    /// The temporary root this process owns (None when the caller passed its own root).
    owned_root: Option<tempfile::TempDir>,
    root: PathBuf,
    log_path: PathBuf,
    args: Vec<String>,
    addr: SocketAddr,
    namesrv_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for BrokerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerProcess")
            .field("pid", &self.child.id())
            .field("addr", &self.addr)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl BrokerProcess {
    /// Starts a broker on a fresh temporary store directory (removed when this value drops).
    pub fn start(args: &[&str]) -> Self {
        let root = tempfile::tempdir().expect("create a temporary directory");
        let mut broker = Self::start_in(root.path(), args);
        broker.owned_root = Some(root);
        broker
    }

    /// Starts a broker whose store lives in `root/store` (the caller keeps `root` across
    /// restarts). Its stderr goes to a new log file in `root`.
    pub fn start_in(root: &Path, args: &[&str]) -> Self {
        let store_dir = root.join("store");
        let sequence = LOG_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let log_path = root.join(format!("broker-{sequence}.stderr.log"));
        let full_args = base_args(&store_dir, args);
        let log = File::create(&log_path).expect("create the broker log file");
        let mut child = Process::new(broker_bin())
            .args(&full_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", broker_bin().display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        thread::spawn(move || {
            // Keeps reading until the broker exits so it never blocks on a full pipe; once
            // startup is over nobody listens and the lines are dropped.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // An error only means startup is over and the line is not needed.
                lines_tx.send(line).ok();
            }
        });
        let want_namesrv = !args.contains(&"-n");
        let want_metrics = args.contains(&"--metrics-port");
        let deadline = Instant::now() + START_DEADLINE;
        let (mut addr, mut namesrv_addr, mut metrics_addr) = (None, None, None);
        let mut seen = Vec::new();
        while addr.is_none()
            || (want_namesrv && namesrv_addr.is_none())
            || (want_metrics && metrics_addr.is_none())
        {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(remaining) {
                Ok(line) => {
                    addr = addr.or_else(|| address_after(&line, "ringmq-broker listening on"));
                    namesrv_addr = namesrv_addr
                        .or_else(|| address_after(&line, "embedded NameServer listening on"));
                    metrics_addr =
                        metrics_addr.or_else(|| address_after(&line, "metrics listening on"));
                    seen.push(line);
                }
                Err(RecvTimeoutError::Timeout) => {
                    send_signal(&mut child, libc::SIGKILL);
                    let _status = child.wait();
                    panic!(
                        "ringmq-broker {full_args:?} did not print its addresses within \
                         {START_DEADLINE:?}; stdout so far: {seen:?}\n--- stderr ---\n{}",
                        tail(&read_file_lossy(&log_path), 200)
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = if let Some(status) = wait_exit(&mut child, EXIT_DEADLINE) {
                        status.to_string()
                    } else {
                        send_signal(&mut child, libc::SIGKILL);
                        let _status = child.wait();
                        "still running; killed".to_owned()
                    };
                    panic!(
                        "ringmq-broker {full_args:?} closed stdout during startup (exit: \
                         {status}); stdout: {seen:?}\n--- stderr ---\n{}",
                        tail(&read_file_lossy(&log_path), 200)
                    );
                }
            }
        }
        let addr = addr.expect("loop ends with the address");
        assert!(
            addr.port() > 2,
            "listen port {} leaves no port - 2",
            addr.port()
        );
        Self {
            child,
            owned_root: None,
            root: root.to_owned(),
            log_path,
            args: full_args,
            addr,
            namesrv_addr,
            metrics_addr,
        }
    }

    /// The main listener `127.0.0.1:P`, also the store host of every record and msgId.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The fast ("VIP") listener `P - 2`.
    pub fn fast_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr.ip(), self.addr.port() - 2)
    }

    /// The embedded NameServer (panics when started with `-n`).
    pub fn namesrv_addr(&self) -> SocketAddr {
        self.namesrv_addr
            .expect("this broker was started without an embedded NameServer")
    }

    /// The metrics HTTP endpoint (panics unless started with `--metrics-port`).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
            .expect("this broker was started without --metrics-port")
    }

    /// The root directory (store in `root/store`, logs beside it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the broker wrote to stderr so far.
    pub fn log(&self) -> String {
        read_file_lossy(&self.log_path)
    }

    /// A client on the main port.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A client on the main port that sends binary (ROCKETMQ) headers.
    pub fn binary_client(&self) -> Client {
        Client::connect_with(self.addr, SerializeType::RocketMq)
    }

    /// A client on the fast port `P - 2`; it still expects `P` as the store host.
    pub fn fast_client(&self) -> Client {
        Client::connect(self.fast_addr()).with_store_host(self.addr)
    }

    /// A client of the embedded NameServer.
    pub fn namesrv_client(&self) -> Client {
        Client::connect(self.namesrv_addr())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGTERM, then waits for the exit (killing and failing after [`EXIT_DEADLINE`]).
    pub fn terminate(&mut self) -> ExitStatus {
        send_signal(&mut self.child, libc::SIGTERM);
        let start = Instant::now();
        if let Some(status) = wait_exit(&mut self.child, EXIT_DEADLINE) {
            println!("broker exited {status} {:?} after SIGTERM", start.elapsed());
            return status;
        }
        send_signal(&mut self.child, libc::SIGKILL);
        let _status = self.child.wait();
        panic!(
            "broker did not exit within {EXIT_DEADLINE:?} of SIGTERM\n--- stderr ---\n{}",
            tail(&self.log(), 200)
        );
    }

    /// SIGKILL (`kill -9`), then reaps the process.
    pub fn kill(&mut self) -> ExitStatus {
        send_signal(&mut self.child, libc::SIGKILL);
        wait_exit(&mut self.child, EXIT_DEADLINE).expect("a SIGKILLed broker exits")
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            send_signal(&mut self.child, libc::SIGKILL);
            let _status = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- ringmq-broker {:?} (pid {}) stderr, last 200 lines ---\n{}\n--- end ---",
                self.args,
                self.child.id(),
                tail(&self.log(), 200)
            );
        }
    }
}

/// A broker run that was expected to end by itself.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs the broker with the harness's base arguments plus `args` in `root/store` and waits for it
/// to exit by itself (it is killed, and the test fails, if it is still running after
/// `deadline`).
pub fn run_to_exit(root: &Path, args: &[&str], deadline: Duration) -> Exited {
    run_raw_to_exit(root, &base_args(&root.join("store"), args), deadline)
}

/// As [`run_to_exit`] with exactly `args` (no harness arguments).
pub fn run_raw_to_exit(root: &Path, args: &[String], deadline: Duration) -> Exited {
    let sequence = LOG_SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let stdout_path = root.join(format!("run-{sequence}.stdout.log"));
    let stderr_path = root.join(format!("run-{sequence}.stderr.log"));
    let start = Instant::now();
    let mut child = Process::new(broker_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", broker_bin().display()));
    let Some(status) = wait_exit(&mut child, deadline) else {
        send_signal(&mut child, libc::SIGKILL);
        let _status = child.wait();
        panic!(
            "ringmq-broker {args:?} was still running after {deadline:?} (expected it to exit)\n\
             --- stdout ---\n{}\n--- stderr ---\n{}",
            tail(&read_file_lossy(&stdout_path), 50),
            tail(&read_file_lossy(&stderr_path), 200)
        );
    };
    Exited {
        status,
        stdout: read_file_lossy(&stdout_path),
        stderr: read_file_lossy(&stderr_path),
        elapsed: start.elapsed(),
    }
}

// ------------------------------------------------------------------------------------------------
// The client

/// Why a request got no response.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing arrived before the deadline.
    Timeout,
    /// The peer closed the connection (EOF or reset).
    Closed,
    Io(io::Error),
    /// The peer sent bytes that are not a valid frame.
    Decode(DecodeError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out"),
            Self::Closed => f.write_str("connection closed"),
            Self::Io(error) => write!(f, "I/O error: {error}"),
            Self::Decode(error) => write!(f, "undecodable frame: {error}"),
        }
    }
}

/// One request of a pipeline.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub code: RequestCode,
    pub header: ExtFields,
    pub body: Vec<u8>,
}

/// A blocking remoting connection.
pub struct Client {
    stream: TcpStream,
    /// The store host this broker stamps into records and msgIds (`127.0.0.1:P` even on the
    /// fast port).
    store_host: SocketAddr,
    serialize_type: SerializeType,
    codec: FrameCodec,
    input: BytesMut,
    /// Reused receive buffer.
    chunk: Box<[u8]>,
    next_opaque: i32,
    /// Requests awaiting a response, with the serialize type the response must mirror.
    pending: HashMap<i32, SerializeType>,
    responses: HashMap<i32, Command>,
    server_requests: VecDeque<Command>,
    /// Responses to no pending request (for example, an answer to a oneway request).
    unexpected: Vec<Command>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("local", &self.stream.local_addr().ok())
            .field("peer", &self.stream.peer_addr().ok())
            .field("serialize_type", &self.serialize_type)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects with JSON headers.
    pub fn connect(addr: SocketAddr) -> Self {
        Self::connect_with(addr, SerializeType::Json)
    }

    /// Connects, retrying a refused connection until [`DEADLINE`] (a shard may still be binding
    /// its listener right after the startup line).
    pub fn connect_with(addr: SocketAddr, serialize_type: SerializeType) -> Self {
        let start = Instant::now();
        let stream = loop {
            match TcpStream::connect(addr) {
                Ok(stream) => break stream,
                Err(error)
                    if error.kind() == io::ErrorKind::ConnectionRefused
                        && start.elapsed() < DEADLINE =>
                {
                    thread::sleep(Duration::from_millis(10));
                }
                Err(error) => panic!("cannot connect to {addr}: {error}"),
            }
        };
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Self {
            stream,
            store_host: addr,
            serialize_type,
            codec: FrameCodec::default(),
            input: BytesMut::new(),
            chunk: vec![0u8; 64 << 10].into_boxed_slice(),
            next_opaque: 0,
            pending: HashMap::new(),
            responses: HashMap::new(),
            server_requests: VecDeque::new(),
            unexpected: Vec::new(),
        }
    }

    /// Sets the store host expected in msgIds and records.
    #[must_use]
    pub fn with_store_host(mut self, store_host: SocketAddr) -> Self {
        self.store_host = store_host;
        self
    }

    pub fn store_host(&self) -> SocketAddr {
        self.store_host
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    pub fn serialize_type(&self) -> SerializeType {
        self.serialize_type
    }

    pub fn set_serialize_type(&mut self, serialize_type: SerializeType) {
        self.serialize_type = serialize_type;
    }

    /// Responses that matched no pending request.
    pub fn unexpected_responses(&self) -> &[Command] {
        &self.unexpected
    }

    fn write_frame(
        &mut self,
        code: RequestCode,
        oneway: bool,
        header: &impl EncodeExt,
        body: &[u8],
    ) -> Result<i32, ClientError> {
        self.next_opaque += 1;
        let opaque = self.next_opaque;
        let head = if oneway {
            CommandHead::oneway(code, opaque, self.serialize_type)
        } else {
            CommandHead::request(code, opaque, self.serialize_type)
        };
        let mut out = BytesMut::new();
        encode_frame(&head, header, body, &mut out);
        if !oneway {
            self.pending.insert(opaque, self.serialize_type);
        }
        self.stream
            .write_all(&out)
            .map_err(|error| match error.kind() {
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => ClientError::Closed,
                _ => ClientError::Io(error),
            })?;
        Ok(opaque)
    }

    /// Writes a request without waiting; returns its opaque.
    pub fn try_send_request(
        &mut self,
        code: RequestCode,
        header: impl EncodeExt,
        body: &[u8],
    ) -> Result<i32, ClientError> {
        self.write_frame(code, false, &header, body)
    }

    /// Writes a request without waiting; returns its opaque.
    pub fn send_request(&mut self, code: RequestCode, header: impl EncodeExt, body: &[u8]) -> i32 {
        self.write_frame(code, false, &header, body)
            .unwrap_or_else(|error| panic!("writing {code}: {error}"))
    }

    /// Writes a oneway request (flag bit 1): the broker must not answer it.
    pub fn send_oneway(&mut self, code: RequestCode, header: impl EncodeExt, body: &[u8]) -> i32 {
        self.write_frame(code, true, &header, body)
            .unwrap_or_else(|error| panic!("writing oneway {code}: {error}"))
    }

    /// Writes raw bytes (malformed-input tests).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Closes the writing half.
    pub fn shutdown_write(&mut self) {
        let _ignored = self.stream.shutdown(Shutdown::Write);
    }

    /// Decodes every complete frame in the input buffer and files it.
    fn dispatch(&mut self) -> Result<(), ClientError> {
        loop {
            match self.codec.decode(&mut self.input) {
                Ok(Some(command)) if command.is_response() => {
                    if self.pending.contains_key(&command.opaque) {
                        let opaque = command.opaque;
                        let previous = self.responses.insert(opaque, command);
                        assert!(previous.is_none(), "two responses with opaque {opaque}");
                    } else {
                        self.unexpected.push(command);
                    }
                }
                Ok(Some(command)) => self.server_requests.push_back(command),
                Ok(None) => return Ok(()),
                Err(error) => return Err(ClientError::Decode(error)),
            }
        }
    }

    /// Reads once, waiting at most until `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ClientError::Timeout);
        }
        self.stream
            .set_read_timeout(Some(remaining))
            .map_err(ClientError::Io)?;
        match self.stream.read(&mut self.chunk) {
            Ok(0) => Err(ClientError::Closed),
            Ok(read) => {
                self.input.extend_from_slice(&self.chunk[..read]);
                self.dispatch()
            }
            Err(error) => match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Err(ClientError::Timeout),
                io::ErrorKind::Interrupted => Ok(()),
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => Err(ClientError::Closed),
                _ => Err(ClientError::Io(error)),
            },
        }
    }

    /// Reads whatever has already arrived, without blocking.
    fn pump(&mut self) -> Result<(), ClientError> {
        self.stream.set_nonblocking(true).map_err(ClientError::Io)?;
        let result = loop {
            match self.stream.read(&mut self.chunk) {
                Ok(0) => break Err(ClientError::Closed),
                Ok(read) => self.input.extend_from_slice(&self.chunk[..read]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => break Err(ClientError::Io(error)),
            }
        };
        self.stream
            .set_nonblocking(false)
            .map_err(ClientError::Io)?;
        let dispatched = self.dispatch();
        result.and(dispatched)
    }

    /// Waits for the response to `opaque`. Responses to other requests and broker-initiated
    /// requests that arrive meanwhile are kept. Fails the test if the response's serialize type
    /// does not mirror the request's.
    pub fn try_wait_response(
        &mut self,
        opaque: i32,
        timeout: Duration,
    ) -> Result<Command, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(response) = self.responses.remove(&opaque) {
                let sent_as = self.pending.remove(&opaque).expect("pending request");
                assert_eq!(
                    response.serialize_type, sent_as,
                    "the response to opaque {opaque} (code {}) does not mirror the request's \
                     serialize type",
                    response.code
                );
                return Ok(response);
            }
            self.fill(deadline)?;
        }
    }

    pub fn wait_response(&mut self, opaque: i32, timeout: Duration) -> Command {
        self.try_wait_response(opaque, timeout)
            .unwrap_or_else(|error| panic!("waiting for the response to opaque {opaque}: {error}"))
    }

    /// Whether the response to `opaque` has arrived (reads what is available, never blocks).
    pub fn has_response(&mut self, opaque: i32) -> bool {
        if let Err(error) = self.pump() {
            panic!("connection failed while checking for opaque {opaque}: {error}");
        }
        self.responses.contains_key(&opaque)
    }

    /// Sends a request and waits for its response.
    pub fn try_request(
        &mut self,
        code: RequestCode,
        header: impl EncodeExt,
        body: &[u8],
    ) -> Result<Command, ClientError> {
        let opaque = self.try_send_request(code, header, body)?;
        self.try_wait_response(opaque, REQUEST_TIMEOUT)
    }

    /// Sends a request and waits for its response; fails the test on I/O errors or timeouts.
    pub fn request(&mut self, code: RequestCode, header: impl EncodeExt, body: &[u8]) -> Command {
        self.try_request(code, header, body)
            .unwrap_or_else(|error| panic!("{code}: {error}"))
    }

    /// The next request the broker sent on this connection, waiting up to `timeout`.
    pub fn next_server_request(&mut self, timeout: Duration) -> Option<Command> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(request) = self.server_requests.pop_front() {
                return Some(request);
            }
            match self.fill(deadline) {
                Ok(()) => {}
                Err(ClientError::Timeout) => return None,
                Err(error) => panic!("waiting for a broker-initiated request: {error}"),
            }
        }
    }

    /// Every broker-initiated request received so far, without blocking.
    pub fn drain_server_requests(&mut self) -> Vec<Command> {
        if let Err(error) = self.pump() {
            panic!("connection failed while draining server requests: {error}");
        }
        self.server_requests.drain(..).collect()
    }

    /// Waits until the broker closes the connection; false if it is still open after `timeout`.
    /// Whatever the broker sends before closing is discarded.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(()) => {}
                Err(ClientError::Closed | ClientError::Io(_)) => return true,
                Err(ClientError::Timeout) => return false,
                Err(ClientError::Decode(_)) => self.input.clear(),
            }
        }
    }

    /// Sends `count` requests built by `make`, keeping up to `window` in flight, and hands each
    /// response to `on_response` in request order. `on_response` returns whether to keep
    /// issuing new requests (in-flight ones are still collected). Stops at the first failure.
    pub fn pipeline(
        &mut self,
        count: usize,
        window: usize,
        mut make: impl FnMut(usize) -> Outgoing,
        mut on_response: impl FnMut(usize, Command) -> bool,
    ) -> Result<(), ClientError> {
        let mut in_flight: VecDeque<(usize, i32)> = VecDeque::with_capacity(window);
        let mut next = 0;
        let mut issuing = true;
        while (issuing && next < count) || !in_flight.is_empty() {
            while issuing && next < count && in_flight.len() < window {
                let outgoing = make(next);
                let opaque =
                    self.try_send_request(outgoing.code, &outgoing.header, &outgoing.body)?;
                in_flight.push_back((next, opaque));
                next += 1;
            }
            let Some((index, opaque)) = in_flight.pop_front() else {
                break;
            };
            let response = self.try_wait_response(opaque, REQUEST_TIMEOUT)?;
            issuing &= on_response(index, response);
        }
        Ok(())
    }

    /// Alias of [`Client::pipeline`] under the name the test plan uses.
    pub fn send_pipelined(
        &mut self,
        count: usize,
        window: usize,
        make: impl FnMut(usize) -> Outgoing,
        on_response: impl FnMut(usize, Command) -> bool,
    ) -> Result<(), ClientError> {
        self.pipeline(count, window, make, on_response)
    }
}

/// Fails the test unless `response` has `code`, naming `what` and the remark.
pub fn expect_code(response: &Command, code: ResponseCode, what: &str) {
    assert_eq!(
        response.response_code(),
        code,
        "{what}: expected {code}, got {} (remark {:?})",
        response.response_code(),
        response.remark
    );
}

// ------------------------------------------------------------------------------------------------
// Messages and sends

/// Which send command carries a single message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendCode {
    /// SEND_MESSAGE_V2 (310), one-letter header names (Java, ali-ons).
    V2,
    /// SEND_MESSAGE (10), long header names (rocketmq-client-rust).
    Long,
}

/// A message to send, and what it should look like once stored.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub queue_id: i32,
    pub body: Vec<u8>,
    pub flag: i32,
    pub born_timestamp_ms: i64,
    pub properties: Vec<(String, String)>,
    pub producer_group: String,
    pub default_topic_queue_nums: i32,
    pub reconsume_times: Option<i32>,
    pub max_reconsume_times: Option<i32>,
}

impl Message {
    pub fn new(topic: &str, queue_id: i32, body: impl Into<Vec<u8>>) -> Self {
        Self {
            topic: topic.to_owned(),
            queue_id,
            body: body.into(),
            flag: 0,
            born_timestamp_ms: now_ms(),
            properties: Vec::new(),
            producer_group: PRODUCER_GROUP.to_owned(),
            default_topic_queue_nums: 4,
            reconsume_times: None,
            max_reconsume_times: None,
        }
    }

    #[must_use]
    pub fn property(mut self, name: &str, value: &str) -> Self {
        self.properties.retain(|(key, _)| key != name);
        self.properties.push((name.to_owned(), value.to_owned()));
        self
    }

    #[must_use]
    pub fn tags(self, tags: &str) -> Self {
        self.property(keys::TAGS, tags)
    }

    #[must_use]
    pub fn keys(self, keys: &str) -> Self {
        self.property(keys::KEYS, keys)
    }

    #[must_use]
    pub fn flag(mut self, flag: i32) -> Self {
        self.flag = flag;
        self
    }

    /// Sets the born timestamp (the messages of a batch share the header's).
    #[must_use]
    pub fn born_at(mut self, born_timestamp_ms: i64) -> Self {
        self.born_timestamp_ms = born_timestamp_ms;
        self
    }

    #[must_use]
    pub fn default_topic_queue_nums(mut self, queues: i32) -> Self {
        self.default_topic_queue_nums = queues;
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The properties string (docs/protocol.md §5.1).
    pub fn properties_string(&self) -> String {
        let mut text = String::new();
        let mut writer = PropertiesWriter::new(&mut text);
        for (name, value) in &self.properties {
            assert!(
                writer.put(name, value),
                "property {name}={value:?} not encodable"
            );
        }
        text
    }

    /// The send header for this message with the given properties string.
    pub fn header<'a>(&'a self, properties: &'a str, batch: bool) -> SendMessageRequestHeader<'a> {
        SendMessageRequestHeader {
            producer_group: &self.producer_group,
            topic: &self.topic,
            default_topic: DEFAULT_TOPIC,
            default_topic_queue_nums: self.default_topic_queue_nums,
            queue_id: self.queue_id,
            sys_flag: 0,
            born_timestamp_ms: self.born_timestamp_ms,
            flag: self.flag,
            properties: (!properties.is_empty()).then_some(properties),
            reconsume_times: self.reconsume_times,
            unit_mode: Some(false),
            max_reconsume_times: self.max_reconsume_times,
            batch: Some(batch),
            broker_name: None,
        }
    }

    /// The request for sending this message alone.
    pub fn outgoing(&self, code: SendCode) -> Outgoing {
        let properties = self.properties_string();
        let header = self.header(&properties, false);
        let mut ext = ExtFields::new();
        let code = match code {
            SendCode::V2 => {
                header.v2().encode_ext(&mut ext);
                RequestCode::SendMessageV2
            }
            SendCode::Long => {
                header.encode_ext(&mut ext);
                RequestCode::SendMessage
            }
        };
        Outgoing {
            code,
            header: ext,
            body: self.body.clone(),
        }
    }

    /// Asserts that `record` is this message as stored: body, topic, queue, flag, born time and
    /// every property sent (the broker may add more, and must add CLUSTER).
    pub fn assert_stored_as(&self, record: &Record, cluster: &str) {
        let context = format!("record at {}:{}", record.queue_id, record.queue_offset);
        assert_eq!(record.body, self.body, "{context}: body");
        assert_eq!(record.topic, self.topic, "{context}: topic");
        if self.queue_id >= 0 {
            assert_eq!(record.queue_id, self.queue_id, "{context}: queue id");
        }
        assert_eq!(record.flag, self.flag, "{context}: user flag");
        assert_eq!(
            record.born_timestamp_ms, self.born_timestamp_ms,
            "{context}: born timestamp"
        );
        for (name, value) in &self.properties {
            assert_eq!(
                record.property(name),
                Some(value.as_str()),
                "{context}: property {name} (all: {:?})",
                record.properties()
            );
        }
        assert_eq!(
            record.property(keys::CLUSTER),
            Some(cluster),
            "{context}: the broker adds CLUSTER"
        );
    }
}

/// A successful send response, checked against the contract.
#[derive(Debug, Clone)]
pub struct SendResult {
    /// The raw `msgId` (comma-joined for a batch).
    pub msg_id: String,
    /// Every id in `msg_id`, decoded.
    pub ids: Vec<OffsetMessageId>,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub region: String,
    pub trace_on: String,
}

impl SendResult {
    /// The (first) message's offset id.
    pub fn id(&self) -> OffsetMessageId {
        self.ids[0]
    }

    /// The (first) message's commit-log offset.
    pub fn physical_offset(&self) -> i64 {
        self.ids[0].commit_log_offset
    }
}

/// Checks a send response (docs/protocol.md §3.4, §5.6, §9.6): SUCCESS; `msgId` of 32 upper-case hex
/// characters per message, decoding to `store_host`; `queueId`, `queueOffset`, `MSG_REGION` and
/// `TRACE_ON` present.
pub fn parse_send(response: &Command, store_host: SocketAddr, messages: usize) -> SendResult {
    expect_code(response, ResponseCode::Success, "send");
    let header: SendMessageResponseHeader<'_> = response
        .header()
        .unwrap_or_else(|error| panic!("send response header: {error} ({:?})", response.ext));
    let mut ids = Vec::new();
    for text in header.msg_id.split(',') {
        assert_eq!(text.len(), 32, "msgId {text:?} is not 32 hex characters");
        assert!(
            text.bytes()
                .all(|byte| byte.is_ascii_digit() || (b'A'..=b'F').contains(&byte)),
            "msgId {text:?} is not upper-case hex"
        );
        let id: OffsetMessageId = text.parse().expect("msgId decodes");
        assert_eq!(id.store_host, store_host, "msgId {text} store host");
        assert!(id.commit_log_offset >= 0, "msgId {text} offset");
        ids.push(id);
    }
    assert_eq!(
        ids.len(),
        messages,
        "one msgId per message: {}",
        header.msg_id
    );
    assert!(
        header.queue_offset >= 0,
        "queueOffset {}",
        header.queue_offset
    );
    let region = header
        .msg_region
        .expect("send response carries MSG_REGION")
        .to_owned();
    assert!(!region.is_empty(), "MSG_REGION is empty");
    let trace_on = header
        .trace_on
        .expect("send response carries TRACE_ON")
        .to_owned();
    assert!(
        trace_on == "true" || trace_on == "false",
        "TRACE_ON {trace_on:?}"
    );
    SendResult {
        msg_id: header.msg_id.to_owned(),
        ids,
        queue_id: header.queue_id,
        queue_offset: header.queue_offset,
        region,
        trace_on,
    }
}

impl Client {
    /// Sends one message and returns the raw response.
    pub fn send_raw(&mut self, code: SendCode, message: &Message) -> Command {
        let outgoing = message.outgoing(code);
        self.request(outgoing.code, &outgoing.header, &outgoing.body)
    }

    /// Sends one message with SEND_MESSAGE_V2 and checks the response.
    pub fn send(&mut self, message: &Message) -> SendResult {
        self.send_with(SendCode::V2, message)
    }

    /// Sends one message with the given code and checks the response.
    pub fn send_with(&mut self, code: SendCode, message: &Message) -> SendResult {
        let response = self.send_raw(code, message);
        let result = parse_send(&response, self.store_host, 1);
        if message.queue_id >= 0 {
            assert_eq!(result.queue_id, message.queue_id, "send response queueId");
        }
        result
    }

    /// Sends `messages` (same topic, same born timestamp) as one SEND_BATCH_MESSAGE to
    /// `queue_id` and returns the raw response. Topic, queue and born timestamp travel in the
    /// header and apply to every message (docs/protocol.md §3.4); the header also carries the
    /// batch-level property `WAIT=true`, as Java does.
    pub fn send_batch_raw(&mut self, queue_id: i32, messages: &[Message]) -> Command {
        let first = messages.first().expect("a batch has messages");
        let mut body = Vec::new();
        for message in messages {
            assert_eq!(message.topic, first.topic, "a batch has one topic");
            assert_eq!(
                message.born_timestamp_ms, first.born_timestamp_ms,
                "the born timestamp of a batch is the header's: build its messages with born_at"
            );
            let properties = message.properties_string();
            BatchMessage {
                flag: message.flag,
                body: &message.body,
                properties: &properties,
            }
            .encode(&mut body)
            .expect("batch entry encodes");
        }
        let batch_properties = format!("{}\u{1}true", keys::WAIT);
        let mut template = first.clone();
        template.queue_id = queue_id;
        let header = template.header(&batch_properties, true);
        self.request(RequestCode::SendBatchMessage, header.v2(), &body)
    }

    /// Sends a batch and checks the response (one msgId per message).
    pub fn send_batch(&mut self, queue_id: i32, messages: &[Message]) -> SendResult {
        let response = self.send_batch_raw(queue_id, messages);
        let result = parse_send(&response, self.store_host, messages.len());
        assert_eq!(result.queue_id, queue_id, "batch response queueId");
        result
    }

    /// UPDATE_AND_CREATE_TOPIC with the given header; the raw response.
    pub fn create_topic_raw(&mut self, topic: &str, queues: i32, perm: i32) -> Command {
        self.request(
            RequestCode::UpdateAndCreateTopic,
            CreateTopicRequestHeader {
                topic,
                default_topic: DEFAULT_TOPIC,
                read_queue_nums: queues,
                write_queue_nums: queues,
                perm,
                topic_filter_type: "SINGLE_TAG",
                topic_sys_flag: Some(0),
                order: false,
            },
            &[],
        )
    }

    /// Creates a read-write topic with `queues` queues.
    pub fn create_topic(&mut self, topic: &str, queues: i32) {
        let response = self.create_topic_raw(topic, queues, PERM_RW);
        expect_code(
            &response,
            ResponseCode::Success,
            &format!("create topic {topic}"),
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Records and pulls

/// A stored record (docs/protocol.md §5.4), owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub magic: MessageMagic,
    pub body_crc: i32,
    pub queue_id: i32,
    pub flag: i32,
    pub queue_offset: i64,
    pub physical_offset: i64,
    pub sys_flag: i32,
    pub born_timestamp_ms: i64,
    pub born_host: SocketAddr,
    pub store_timestamp_ms: i64,
    pub store_host: SocketAddr,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
    pub body: Vec<u8>,
    pub topic: String,
    pub properties: String,
}

impl Record {
    pub fn property(&self, name: &str) -> Option<&str> {
        Properties::new(&self.properties).get(name)
    }

    /// All properties as pairs (for failure messages).
    pub fn properties(&self) -> Vec<(&str, &str)> {
        Properties::new(&self.properties).iter().collect()
    }

    pub fn tags(&self) -> Option<&str> {
        self.property(keys::TAGS)
    }
}

/// Decodes a PULL / QUERY_MESSAGE / VIEW_MESSAGE_BY_ID body; every record must decode, be magic
/// v1 (what 4.x clients read) and carry a correct body CRC.
pub fn decode_records(bytes: &[u8]) -> Vec<Record> {
    RecordIter::new(bytes)
        .enumerate()
        .map(|(index, record)| {
            let record = record.unwrap_or_else(|error| {
                panic!("record #{index} of a {}-byte body: {error}", bytes.len())
            });
            record
                .verify_body_crc()
                .unwrap_or_else(|error| panic!("record #{index}: {error}"));
            assert_eq!(record.magic, MessageMagic::V1, "record #{index} magic");
            Record {
                magic: record.magic,
                body_crc: record.body_crc,
                queue_id: record.queue_id,
                flag: record.flag,
                queue_offset: record.queue_offset,
                physical_offset: record.physical_offset,
                sys_flag: record.sys_flag,
                born_timestamp_ms: record.born_timestamp_ms,
                born_host: record.born_host,
                store_timestamp_ms: record.store_timestamp_ms,
                store_host: record.store_host,
                reconsume_times: record.reconsume_times,
                prepared_transaction_offset: record.prepared_transaction_offset,
                body: record.body.to_vec(),
                topic: record.topic.to_owned(),
                properties: record.properties.to_owned(),
            }
        })
        .collect()
}

/// A PULL_MESSAGE request.
#[derive(Debug, Clone)]
pub struct Pull {
    pub group: String,
    pub topic: String,
    pub queue_id: i32,
    pub offset: i64,
    pub max_msgs: i32,
    pub sys_flag: i32,
    pub commit_offset: i64,
    pub suspend_ms: i64,
    pub subscription: Option<String>,
    pub sub_version: i64,
}

impl Pull {
    /// A pull of up to 32 messages with its own subscription `*` (FLAG_SUBSCRIPTION), no
    /// suspension, no commit.
    pub fn new(topic: &str, queue_id: i32, offset: i64) -> Self {
        Self {
            group: PULL_GROUP.to_owned(),
            topic: topic.to_owned(),
            queue_id,
            offset,
            max_msgs: 32,
            sys_flag: pull_sys_flag::SUBSCRIPTION,
            commit_offset: 0,
            suspend_ms: 0,
            subscription: Some("*".to_owned()),
            sub_version: 0,
        }
    }

    #[must_use]
    pub fn group(mut self, group: &str) -> Self {
        group.clone_into(&mut self.group);
        self
    }

    #[must_use]
    pub fn max_msgs(mut self, max_msgs: i32) -> Self {
        self.max_msgs = max_msgs;
        self
    }

    /// Carries `expression` as the subscription (FLAG_SUBSCRIPTION).
    #[must_use]
    pub fn subscription(mut self, expression: &str) -> Self {
        self.subscription = Some(expression.to_owned());
        self.sys_flag |= pull_sys_flag::SUBSCRIPTION;
        self
    }

    /// No subscription in the request: the broker must use the HEART_BEAT one.
    #[must_use]
    pub fn heartbeat_subscription(mut self) -> Self {
        self.subscription = None;
        self.sys_flag &= !pull_sys_flag::SUBSCRIPTION;
        self
    }

    /// Allows long polling for `timeout_ms` (FLAG_SUSPEND).
    #[must_use]
    pub fn suspend(mut self, timeout_ms: i64) -> Self {
        self.suspend_ms = timeout_ms;
        self.sys_flag |= pull_sys_flag::SUSPEND;
        self
    }

    /// Commits `offset` for the group (FLAG_COMMIT_OFFSET).
    #[must_use]
    pub fn commit(mut self, offset: i64) -> Self {
        self.commit_offset = offset;
        self.sys_flag |= pull_sys_flag::COMMIT_OFFSET;
        self
    }

    pub fn header(&self) -> PullMessageRequestHeader<'_> {
        PullMessageRequestHeader {
            consumer_group: &self.group,
            topic: &self.topic,
            queue_id: self.queue_id,
            queue_offset: self.offset,
            max_msg_nums: self.max_msgs,
            sys_flag: self.sys_flag,
            commit_offset: self.commit_offset,
            suspend_timeout_ms: self.suspend_ms,
            subscription: self.subscription.as_deref(),
            sub_version: self.sub_version,
            expression_type: self.subscription.as_ref().map(|_| "TAG"),
            max_msg_bytes: None,
        }
    }
}

/// A decoded PULL_MESSAGE response.
#[derive(Debug, Clone)]
pub struct PullResult {
    pub code: ResponseCode,
    pub remark: Option<String>,
    /// Present on SUCCESS, PULL_NOT_FOUND, PULL_RETRY_IMMEDIATELY and PULL_OFFSET_MOVED.
    pub header: Option<PullMessageResponseHeader>,
    /// Decoded body (SUCCESS only).
    pub records: Vec<Record>,
}

impl PullResult {
    pub fn offsets(&self) -> PullMessageResponseHeader {
        self.header
            .unwrap_or_else(|| panic!("pull {} without offsets", self.code))
    }

    pub fn next_begin_offset(&self) -> i64 {
        self.offsets().next_begin_offset
    }
}

/// Decodes a pull response. The four offset fields must be present, and non-negative, with every
/// pull status code (docs/protocol.md §3.5, §9.6); SUCCESS must carry at least one record.
pub fn parse_pull(response: &Command) -> PullResult {
    let code = response.response_code();
    let with_offsets = matches!(
        code,
        ResponseCode::Success
            | ResponseCode::PullNotFound
            | ResponseCode::PullRetryImmediately
            | ResponseCode::PullOffsetMoved
    );
    let header = if with_offsets {
        let header: PullMessageResponseHeader = response.header().unwrap_or_else(|error| {
            panic!("pull {code} response header: {error} ({:?})", response.ext)
        });
        assert!(
            header.next_begin_offset >= 0
                && header.min_offset >= 0
                && header.max_offset >= 0
                && header.suggest_which_broker_id >= 0,
            "pull offsets must be non-negative: {header:?}"
        );
        Some(header)
    } else {
        None
    };
    let records = if code == ResponseCode::Success {
        let records = decode_records(&response.body);
        assert!(!records.is_empty(), "pull SUCCESS without records");
        records
    } else {
        Vec::new()
    };
    PullResult {
        code,
        remark: response.remark.clone(),
        header,
        records,
    }
}

impl Client {
    pub fn pull(&mut self, pull: &Pull) -> PullResult {
        let response = self.request(RequestCode::PullMessage, pull.header(), &[]);
        parse_pull(&response)
    }

    /// Every message of a queue matching `subscription`, following `nextBeginOffset` from 0
    /// until PULL_NOT_FOUND.
    pub fn pull_all(&mut self, topic: &str, queue_id: i32, subscription: &str) -> Vec<Record> {
        self.pull_all_with(&Pull::new(topic, queue_id, 0).subscription(subscription))
    }

    /// As [`Client::pull_all`] from `pull.offset` with `pull`'s other settings.
    pub fn pull_all_with(&mut self, pull: &Pull) -> Vec<Record> {
        let mut pull = pull.clone();
        let mut records = Vec::new();
        for _ in 0..100_000 {
            let result = self.pull(&pull);
            match result.code {
                ResponseCode::Success | ResponseCode::PullRetryImmediately => {
                    let next = result.next_begin_offset();
                    assert!(
                        next > pull.offset,
                        "{}: nextBeginOffset {next} does not advance from {}",
                        result.code,
                        pull.offset
                    );
                    records.extend(result.records);
                    pull.offset = next;
                }
                ResponseCode::PullNotFound => return records,
                other => panic!(
                    "pull {}:{} at {}: {other} ({:?})",
                    pull.topic, pull.queue_id, pull.offset, result.remark
                ),
            }
        }
        panic!(
            "pull_all of {}:{} did not finish",
            pull.topic, pull.queue_id
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Offsets and lookups

impl Client {
    /// An offset-valued query; the raw response.
    fn offset_query(&mut self, code: RequestCode, header: impl EncodeExt) -> i64 {
        let response = self.request(code, header, &[]);
        expect_code(&response, ResponseCode::Success, &code.to_string());
        let header: OffsetResponseHeader = response
            .header()
            .unwrap_or_else(|error| panic!("{code} response: {error}"));
        header.offset
    }

    /// GET_MAX_OFFSET: the next queue offset to be written.
    pub fn max_offset(&mut self, topic: &str, queue_id: i32) -> i64 {
        self.offset_query(
            RequestCode::GetMaxOffset,
            QueueRequestHeader { topic, queue_id },
        )
    }

    /// GET_MIN_OFFSET.
    pub fn min_offset(&mut self, topic: &str, queue_id: i32) -> i64 {
        self.offset_query(
            RequestCode::GetMinOffset,
            QueueRequestHeader { topic, queue_id },
        )
    }

    /// SEARCH_OFFSET_BY_TIMESTAMP.
    pub fn search_offset(&mut self, topic: &str, queue_id: i32, timestamp_ms: i64) -> i64 {
        self.offset_query(
            RequestCode::SearchOffsetByTimestamp,
            SearchOffsetRequestHeader {
                topic,
                queue_id,
                timestamp_ms,
            },
        )
    }

    /// GET_EARLIEST_MSG_STORETIME.
    pub fn earliest_store_time(&mut self, topic: &str, queue_id: i32) -> i64 {
        let response = self.request(
            RequestCode::GetEarliestMsgStoretime,
            QueueRequestHeader { topic, queue_id },
            &[],
        );
        expect_code(
            &response,
            ResponseCode::Success,
            "GET_EARLIEST_MSG_STORETIME",
        );
        let header: GetEarliestMsgStoretimeResponseHeader = response.header().unwrap();
        header.timestamp_ms
    }

    /// QUERY_CONSUMER_OFFSET; the raw response.
    pub fn query_consumer_offset_raw(
        &mut self,
        group: &str,
        topic: &str,
        queue_id: i32,
    ) -> Command {
        self.request(
            RequestCode::QueryConsumerOffset,
            QueryConsumerOffsetRequestHeader {
                consumer_group: group,
                topic,
                queue_id,
                set_zero_if_not_found: None,
            },
            &[],
        )
    }

    /// QUERY_CONSUMER_OFFSET of a group that has committed.
    pub fn query_consumer_offset(&mut self, group: &str, topic: &str, queue_id: i32) -> i64 {
        let response = self.query_consumer_offset_raw(group, topic, queue_id);
        expect_code(&response, ResponseCode::Success, "QUERY_CONSUMER_OFFSET");
        let header: OffsetResponseHeader = response.header().unwrap();
        header.offset
    }

    /// UPDATE_CONSUMER_OFFSET as a normal (answered) request.
    pub fn update_consumer_offset(&mut self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        let response = self.request(
            RequestCode::UpdateConsumerOffset,
            UpdateConsumerOffsetRequestHeader {
                consumer_group: group,
                topic,
                queue_id,
                commit_offset: offset,
            },
            &[],
        );
        expect_code(&response, ResponseCode::Success, "UPDATE_CONSUMER_OFFSET");
    }

    /// VIEW_MESSAGE_BY_ID; the raw response.
    pub fn view_message(&mut self, physical_offset: i64) -> Command {
        self.request(
            RequestCode::ViewMessageById,
            ViewMessageRequestHeader {
                offset: physical_offset,
            },
            &[],
        )
    }

    /// QUERY_MESSAGE by key over all time; the raw response.
    pub fn query_message(&mut self, topic: &str, key: &str) -> Command {
        self.request(
            RequestCode::QueryMessage,
            QueryMessageRequestHeader {
                topic,
                key,
                max_num: 32,
                begin_timestamp_ms: 0,
                end_timestamp_ms: i64::MAX,
                unique_key_query: None,
            },
            &[],
        )
    }

    /// GET_BROKER_RUNTIME_INFO's table.
    pub fn runtime_info(&mut self) -> BTreeMap<String, String> {
        let response = self.request(RequestCode::GetBrokerRuntimeInfo, (), &[]);
        expect_code(&response, ResponseCode::Success, "GET_BROKER_RUNTIME_INFO");
        let table: KvTable = body::decode(&response.body, "KvTable")
            .unwrap_or_else(|error| panic!("runtime info body: {error}"));
        table.table
    }

    /// GET_ROUTEINFO_BY_TOPIC (to a NameServer): `None` on TOPIC_NOT_EXIST.
    pub fn route(&mut self, topic: &str) -> Option<TopicRouteData> {
        let response = self.request(
            RequestCode::GetRouteinfoByTopic,
            GetRouteInfoRequestHeader {
                topic,
                accept_standard_json_only: None,
            },
            &[],
        );
        match response.response_code() {
            ResponseCode::Success => Some(
                body::decode(&response.body, "TopicRouteData")
                    .unwrap_or_else(|error| panic!("route of {topic}: {error}")),
            ),
            ResponseCode::TopicNotExist => None,
            other => panic!("route of {topic}: {other} ({:?})", response.remark),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Consumers: heartbeat, groups, locks, retries

/// A consumer's HeartbeatData: `group` subscribed to each (topic, tag expression), plus
/// `%RETRY%group` with `*`, as the Java push consumer sends it.
pub fn heartbeat_data(
    client_id: &str,
    group: &str,
    subscriptions: &[(&str, &str)],
) -> HeartbeatData {
    let sub_version = now_ms();
    let mut subscription_data_set: Vec<SubscriptionData> = subscriptions
        .iter()
        .map(|(topic, expression)| {
            SubscriptionData::from_tag_expression(topic, expression, sub_version)
        })
        .collect();
    subscription_data_set.push(SubscriptionData::from_tag_expression(
        &retry_topic(group),
        "*",
        sub_version,
    ));
    HeartbeatData {
        client_id: client_id.to_owned(),
        consumer_data_set: vec![ConsumerData {
            consume_from_where: ConsumeFromWhere::ConsumeFromFirstOffset,
            consume_type: ConsumeType::Passively,
            group_name: group.to_owned(),
            message_model: MessageModel::Clustering,
            subscription_data_set,
            unit_mode: false,
        }],
        ..HeartbeatData::default()
    }
}

pub fn retry_topic(group: &str) -> String {
    format!("%RETRY%{group}")
}

pub fn dlq_topic(group: &str) -> String {
    format!("%DLQ%{group}")
}

/// A queue of this broker (default broker name).
pub fn mq(topic: &str, queue_id: i32) -> MessageQueue {
    MessageQueue {
        broker_name: BROKER_NAME.to_owned(),
        queue_id,
        topic: topic.to_owned(),
    }
}

impl Client {
    /// HEART_BEAT as a consumer of `group`.
    pub fn heartbeat(&mut self, client_id: &str, group: &str, subscriptions: &[(&str, &str)]) {
        let data = heartbeat_data(client_id, group, subscriptions);
        let response = self.request(RequestCode::HeartBeat, (), &body::to_vec(&data));
        expect_code(&response, ResponseCode::Success, "HEART_BEAT");
    }

    /// GET_CONSUMER_LIST_BY_GROUP, sorted; `None` when the broker has no consumer for the group
    /// (SYSTEM_ERROR, docs/protocol.md §3.7).
    pub fn consumer_ids(&mut self, group: &str) -> Option<Vec<String>> {
        let response = self.request(
            RequestCode::GetConsumerListByGroup,
            GetConsumerListByGroupRequestHeader {
                consumer_group: group,
            },
            &[],
        );
        match response.response_code() {
            ResponseCode::Success => {
                let list: ConsumerListBody = body::decode(&response.body, "ConsumerListBody")
                    .unwrap_or_else(|error| panic!("consumer list body: {error}"));
                let mut ids = list.consumer_id_list;
                ids.sort();
                Some(ids)
            }
            ResponseCode::SystemError => None,
            other => panic!(
                "GET_CONSUMER_LIST_BY_GROUP: {other} ({:?})",
                response.remark
            ),
        }
    }

    /// UNREGISTER_CLIENT of a consumer.
    pub fn unregister_consumer(&mut self, client_id: &str, group: &str) {
        let response = self.request(
            RequestCode::UnregisterClient,
            UnregisterClientRequestHeader {
                client_id,
                producer_group: None,
                consumer_group: Some(group),
            },
            &[],
        );
        expect_code(&response, ResponseCode::Success, "UNREGISTER_CLIENT");
    }

    /// LOCK_BATCH_MQ: the queues now locked by `client_id`, sorted.
    pub fn lock(
        &mut self,
        group: &str,
        client_id: &str,
        queues: &[MessageQueue],
    ) -> Vec<MessageQueue> {
        let request = LockBatchRequestBody {
            client_id: client_id.to_owned(),
            consumer_group: group.to_owned(),
            mq_set: queues.to_vec(),
            only_this_broker: None,
        };
        let response = self.request(RequestCode::LockBatchMq, (), &body::to_vec(&request));
        expect_code(&response, ResponseCode::Success, "LOCK_BATCH_MQ");
        let locked: LockBatchResponseBody = body::decode(&response.body, "LockBatchResponseBody")
            .unwrap_or_else(|error| panic!("lock response body: {error}"));
        let mut queues = locked.lock_ok_mq_set;
        queues.sort();
        queues
    }

    /// UNLOCK_BATCH_MQ (answered).
    pub fn unlock(&mut self, group: &str, client_id: &str, queues: &[MessageQueue]) {
        let request = LockBatchRequestBody {
            client_id: client_id.to_owned(),
            consumer_group: group.to_owned(),
            mq_set: queues.to_vec(),
            only_this_broker: None,
        };
        let response = self.request(RequestCode::UnlockBatchMq, (), &body::to_vec(&request));
        expect_code(&response, ResponseCode::Success, "UNLOCK_BATCH_MQ");
    }

    /// CONSUMER_SEND_MSG_BACK; the raw response.
    pub fn send_back(
        &mut self,
        physical_offset: i64,
        group: &str,
        delay_level: i32,
        origin: (&str, &str),
        max_reconsume_times: Option<i32>,
    ) -> Command {
        self.request(
            RequestCode::ConsumerSendMsgBack,
            ConsumerSendMsgBackRequestHeader {
                offset: physical_offset,
                group,
                delay_level,
                origin_msg_id: Some(origin.0),
                origin_topic: Some(origin.1),
                unit_mode: Some(false),
                max_reconsume_times,
            },
            &[],
        )
    }
}

// ------------------------------------------------------------------------------------------------
// Metrics over HTTP

/// `GET path` over plain HTTP/1.0; returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr)
        .unwrap_or_else(|error| panic!("connect to the metrics endpoint {addr}: {error}"));
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|error| panic!("send the HTTP request to {addr}: {error}"));
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    let (head_end, content_length) = loop {
        let read = stream.read(&mut chunk).expect("read the HTTP response");
        assert!(read > 0 || !raw.is_empty(), "empty HTTP response");
        raw.extend_from_slice(&chunk[..read]);
        if let Some(at) = raw.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
            let length = head.lines().find_map(|line| {
                line.strip_prefix("content-length:")
                    .and_then(|value| value.trim().parse::<usize>().ok())
            });
            break (at + 4, length);
        }
        assert!(read > 0, "HTTP response ended inside its head");
    };
    // Read the body: up to Content-Length if given, else to EOF.
    loop {
        if content_length.is_some_and(|length| raw.len() >= head_end + length) {
            break;
        }
        let read = stream.read(&mut chunk).expect("read the HTTP body");
        if read == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..read]);
    }
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP status line in {head:?}"));
    let mut body = raw[head_end..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = bytes.windows(2).position(|window| window == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&bytes[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&bytes[..size]);
        bytes = &bytes[(size + 2).min(bytes.len())..];
    }
}

/// The samples of a Prometheus text exposition: series (name with labels) to value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, rest) = match line.rfind('}') {
            Some(close) => (&line[..=close], &line[close + 1..]),
            None => match line.split_once(char::is_whitespace) {
                Some(split) => split,
                None => continue,
            },
        };
        if let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|value| value.parse::<f64>().ok())
        {
            samples.insert(series.trim().to_owned(), value);
        }
    }
    samples
}
