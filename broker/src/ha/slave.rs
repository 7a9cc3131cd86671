//! The slave's side: per shard, a thread that connects to the master's HA port, says where
//! its log ends, hands each frame to its shard (which verifies and writes it) and a second
//! thread that reports what the shard holds. On any error it drops the connection and
//! reconnects after `haReconnectInterval`, continuing from wherever its log then ends.

use std::{
    io::Read,
    net::{Shutdown, TcpStream, ToSocketAddrs},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use ringmq_storage::{FlushMode, LogReadError, LogReader, LogWatch, Mark, StoreConfig, StoreError};
use thiserror::Error;

use super::{
    state::SlaveProgress,
    wire::{FRAME_HEADER_BYTES, Hello, Welcome, parse_frame_header},
};
use crate::shared::BrokerShared;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A frame body is read (and its buffer grown) this much at a time.
const READ_STEP_BYTES: usize = 1 << 20;
/// Longest wait for the shard's answer to a question (its log's end, a move of its start).
const ASK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the store may take to write what it has queued before a HELLO.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the reporter checks for a refused frame or stop while the mark does not move.
const IDLE_CHECK: Duration = Duration::from_millis(200);

/// Work for a slave shard's replica task (it owns the store; these threads do not).
#[derive(Debug)]
pub(crate) enum ReplicaCommand {
    /// Where does the log end, and is the store empty?
    Position { reply: flume::Sender<(u64, bool)> },
    /// Move the empty store to start at the master's oldest segment.
    StartAt {
        position: u64,
        reply: flume::Sender<Result<(), StoreError>>,
    },
    /// Chunks from the master, for `position`; a refusal goes to `refused`.
    Data {
        position: u64,
        bytes: bytes::Bytes,
        refused: flume::Sender<StoreError>,
    },
}

/// Why a replication session ended (the thread logs it once per distinct text and reconnects).
#[derive(Debug, Error)]
pub(crate) enum ReplicationError {
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} does not resolve")]
    NoAddress(String),
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("the shard did not take the request")]
    ShardBusy,
    #[error("the shard did not answer")]
    ShardSilent,
    #[error("the store has not written what it holds; writes are failing?")]
    NotWritten,
    #[error("cannot read this slave's log: {0}")]
    ReadLog(#[source] LogReadError),
    #[error("socket options: {0}")]
    SocketOptions(#[source] std::io::Error),
    #[error("socket clone: {0}")]
    SocketClone(#[source] std::io::Error),
    #[error("write: {0}")]
    Write(#[source] std::io::Error),
    #[error("handshake: {0}")]
    Handshake(#[source] std::io::Error),
    /// The master's refusal, as its WELCOME words it.
    #[error("the master refused: {0}")]
    Refused(String),
    #[error("the master streams from {start} but this log ends at {end}")]
    StartMismatch { start: u64, end: u64 },
    #[error("{0}")]
    StartAt(#[source] StoreError),
    #[error("cannot start the reporter: {0}")]
    Reporter(#[source] std::io::Error),
    #[error("the master sent nothing within the housekeeping interval")]
    MasterSilent,
    #[error("the master closed the connection")]
    MasterClosed,
    #[error("read: {0}")]
    Read(#[source] std::io::Error),
    #[error("bad frame from the master: offset {offset}, size {size}")]
    BadFrame { offset: i64, size: i32 },
    #[error("the master sent data for {offset}, before this log's end {expected}")]
    Rewound { offset: u64, expected: u64 },
    #[error("the shard is gone")]
    ShardGone,
    #[error("the shard refused replicated data: {0}")]
    DataRefused(#[source] StoreError),
    #[error("report: {0}")]
    Report(#[source] std::io::Error),
}

/// The running replication threads of a slave.
#[derive(Debug)]
pub(crate) struct HaClient {
    stop: flume::Sender<()>,
    threads: Vec<JoinHandle<()>>,
    /// Each shard's current connection, shut down on stop so no thread stays blocked on it.
    streams: Arc<Vec<Mutex<Option<TcpStream>>>>,
}

/// What each shard's thread needs.
struct ShardLink {
    shared: Arc<BrokerShared>,
    shard: usize,
    watch: Arc<LogWatch>,
    store: StoreConfig,
    commands: flume::Sender<ReplicaCommand>,
    stop: flume::Receiver<()>,
    streams: Arc<Vec<Mutex<Option<TcpStream>>>>,
}

impl HaClient {
    /// Starts one thread per shard; `shards[i]` is shard i's log watch and replica queue.
    pub(crate) fn start(
        shared: &Arc<BrokerShared>,
        shards: Vec<(Arc<LogWatch>, StoreConfig, flume::Sender<ReplicaCommand>)>,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = flume::bounded(0);
        let streams: Arc<Vec<Mutex<Option<TcpStream>>>> =
            Arc::new(shards.iter().map(|_| Mutex::new(None)).collect());
        let mut threads = Vec::new();
        for (shard, (watch, store, commands)) in shards.into_iter().enumerate() {
            let link = ShardLink {
                shared: Arc::clone(shared),
                shard,
                watch,
                store,
                commands,
                stop: stopped.clone(),
                streams: Arc::clone(&streams),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ha-slave-{shard}"))
                    .spawn(move || run(&link))?,
            );
        }
        Ok(Self {
            stop,
            threads,
            streams,
        })
    }

    /// Ends every thread (dropping the stop sender wakes their waits, shutting the sockets
    /// down ends their reads and writes).
    pub(crate) fn stop(self) {
        drop(self.stop);
        for stream in self.streams.iter() {
            if let Some(stream) = stream.lock().unwrap_or_else(PoisonError::into_inner).take() {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

impl ShardLink {
    fn stopping(&self) -> bool {
        self.shared.stopping() || self.stop.is_disconnected()
    }

    /// Waits `duration` or until stopped.
    fn pause(&self, duration: Duration) {
        let _ = self.stop.recv_timeout(duration);
    }

    fn progress(&self) -> &SlaveProgress {
        &self.shared.slave_progress[self.shard]
    }

    /// Keeps a clone of the session's socket for [`HaClient::stop`] (`None` clears it).
    fn track(&self, stream: Option<&TcpStream>) {
        let clone = stream.and_then(|s| s.try_clone().ok());
        *self.streams[self.shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = clone;
        if stream.is_some() && self.stopping() {
            if let Some(s) = stream {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

fn run(link: &ShardLink) {
    let reconnect = Duration::from_millis(link.shared.config.ha_reconnect_interval_ms);
    let mut last_error = String::new();
    while !link.stopping() {
        let Some(addr) = link.shared.master.ha_addr() else {
            link.pause(reconnect.min(Duration::from_millis(500)));
            continue;
        };
        let outcome = session(link, &addr);
        link.progress().connected.store(false, Ordering::SeqCst);
        if link.stopping() {
            break;
        }
        if let Err(reason) = outcome {
            // Once per distinct failure: a master that is down for minutes is one line.
            let reason = reason.to_string();
            if reason != last_error {
                tracing::warn!(shard = link.shard, master = %addr, %reason, "replication stopped; will reconnect");
                last_error = reason;
            }
        }
        link.pause(reconnect);
    }
}

/// Asks the shard something and waits for the answer.
fn ask<T>(
    link: &ShardLink,
    command: impl FnOnce(flume::Sender<T>) -> ReplicaCommand,
) -> Result<T, ReplicationError> {
    let (reply, answer) = flume::bounded(1);
    link.commands
        .send_timeout(command(reply), ASK_TIMEOUT)
        .map_err(|_| ReplicationError::ShardBusy)?;
    answer
        .recv_timeout(ASK_TIMEOUT)
        .map_err(|_| ReplicationError::ShardSilent)
}

/// One connection: handshake, then frames until an error or stop.
fn session(link: &ShardLink, addr: &str) -> Result<(), ReplicationError> {
    let target = addr
        .to_socket_addrs()
        .map_err(|source| ReplicationError::Resolve {
            addr: addr.to_owned(),
            source,
        })?
        .next()
        .ok_or_else(|| ReplicationError::NoAddress(addr.to_owned()))?;
    // The HELLO first: asking the shard and reading the files may take a while, and the
    // master gives a connection 5 s to say it.
    let (hello, pristine) = hello(link)?;
    let mut stream =
        TcpStream::connect_timeout(&target, CONNECT_TIMEOUT).map_err(ReplicationError::Connect)?;
    link.track(Some(&stream));
    let outcome = stream_session(link, addr, &mut stream, &hello, pristine);
    link.track(None);
    let _ = stream.shutdown(Shutdown::Both);
    outcome
}

/// This shard's HELLO: where its log ends, whether it is empty, the fingerprint of its tail.
fn hello(link: &ShardLink) -> Result<(Hello, bool), ReplicationError> {
    let config = &link.shared.config;
    let (end, pristine) = ask(link, |reply| ReplicaCommand::Position { reply })?;
    // The fingerprint reads the files: wait until everything below `end` is in them.
    if !pristine && link.watch.wait_past(Mark::Written, end - 1, SETTLE_TIMEOUT) < end {
        return Err(ReplicationError::NotWritten);
    }
    let tail = if pristine {
        None
    } else {
        LogReader::new(&link.store)
            .tail_fingerprint(end)
            .map_err(ReplicationError::ReadLog)?
    };
    let hello = Hello {
        shard: link.shard as u16,
        shard_count: link.shared.shard_count() as u16,
        segment_bytes: link.store.segment_bytes,
        broker_id: config.broker_id,
        offset: end,
        empty: pristine,
        tail,
        cluster: config.cluster_name.clone(),
        broker_name: config.broker_name.clone(),
    };
    Ok((hello, pristine))
}

/// The session on a connected socket.
fn stream_session(
    link: &ShardLink,
    addr: &str,
    stream: &mut TcpStream,
    hello: &Hello,
    pristine: bool,
) -> Result<(), ReplicationError> {
    let config = &link.shared.config;
    let housekeeping = Duration::from_millis(config.ha_housekeeping_interval_ms);
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(housekeeping))
        .and_then(|()| stream.set_write_timeout(Some(housekeeping)))
        .map_err(ReplicationError::SocketOptions)?;
    let end = hello.offset;
    std::io::Write::write_all(stream, &hello.encode()).map_err(ReplicationError::Write)?;
    let start = match Welcome::read(stream).map_err(ReplicationError::Handshake)? {
        Welcome::Accepted { start } => start,
        Welcome::Refused { reason } => return Err(ReplicationError::Refused(reason)),
    };
    if start != end {
        if !pristine {
            return Err(ReplicationError::StartMismatch { start, end });
        }
        ask(link, |reply| ReplicaCommand::StartAt {
            position: start,
            reply,
        })?
        .map_err(ReplicationError::StartAt)?;
    }
    tracing::info!(shard = link.shard, master = %addr, start, "replicating");
    link.progress().connected.store(true, Ordering::SeqCst);
    let (refused, refusals) = flume::bounded::<StoreError>(4);
    let closed = Arc::new(AtomicBool::new(false));
    let reporter = {
        let output = stream.try_clone().map_err(ReplicationError::SocketClone)?;
        let watch = Arc::clone(&link.watch);
        let closed = Arc::clone(&closed);
        let mark = match config.flush_mode {
            FlushMode::Async => Mark::Written,
            FlushMode::Sync => Mark::Durable,
        };
        let heartbeat = Duration::from_millis(config.ha_heartbeat_interval_ms);
        let stop = link.stop.clone();
        let shared = Arc::clone(&link.shared);
        std::thread::Builder::new()
            .name("ha-report".into())
            .spawn(move || {
                let reason = report(
                    output, &watch, mark, heartbeat, &closed, &refusals, &stop, &shared,
                );
                closed.store(true, Ordering::SeqCst);
                reason
            })
            .map_err(ReplicationError::Reporter)?
    };
    let outcome = receive(link, stream, start, &closed, &refused);
    closed.store(true, Ordering::SeqCst);
    let _ = stream.shutdown(Shutdown::Both);
    let reporter_reason = reporter.join().ok().flatten();
    match (reporter_reason, outcome) {
        (Some(reason), _) | (None, Err(reason)) => Err(reason),
        (None, Ok(())) => Ok(()),
    }
}

/// Reads frames and hands them to the shard, in order.
fn receive(
    link: &ShardLink,
    stream: &mut TcpStream,
    start: u64,
    closed: &AtomicBool,
    refused: &flume::Sender<StoreError>,
) -> Result<(), ReplicationError> {
    // A frame holds whole chunks: never more than a segment. (A batch send is one chunk of any
    // size up to that.) The body is read in steps, so a header's size alone allocates little.
    let max_frame = link.store.segment_bytes.min(u64::from(u32::MAX >> 1));
    let mut expected = start;
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let progress = link.progress();
    loop {
        if closed.load(Ordering::SeqCst) || link.stopping() {
            return Ok(());
        }
        if let Err(err) = stream.read_exact(&mut header) {
            return Err(match err.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    ReplicationError::MasterSilent
                }
                std::io::ErrorKind::UnexpectedEof => ReplicationError::MasterClosed,
                _ => ReplicationError::Read(err),
            });
        }
        let (offset, size) = parse_frame_header(&header);
        if offset < 0 || size < 0 || size as u64 > max_frame {
            return Err(ReplicationError::BadFrame { offset, size });
        }
        let (offset, size) = (offset as u64, size as usize);
        progress
            .master_offset
            .store(offset + size as u64, Ordering::SeqCst);
        progress
            .master_seen_ms
            .store(ringmq_common::now_ms() as u64, Ordering::SeqCst);
        if size == 0 {
            continue;
        }
        // Frames continue where the last one ended, or at a later segment's start.
        if offset < expected {
            return Err(ReplicationError::Rewound { offset, expected });
        }
        let mut body = BytesMut::new();
        while body.len() < size {
            let at = body.len();
            body.resize(at + (size - at).min(READ_STEP_BYTES), 0);
            stream
                .read_exact(&mut body[at..])
                .map_err(ReplicationError::Read)?;
        }
        expected = offset + size as u64;
        link.commands
            .send(ReplicaCommand::Data {
                position: offset,
                bytes: body.freeze(),
                refused: refused.clone(),
            })
            .map_err(|_| ReplicationError::ShardGone)?;
    }
}

/// Reports the shard's mark whenever it moves, and every heartbeat interval. Returns why the
/// session must end, if it is for a reason of its own (a refused frame).
#[allow(clippy::too_many_arguments)]
fn report(
    mut output: TcpStream,
    watch: &LogWatch,
    mark: Mark,
    heartbeat: Duration,
    closed: &AtomicBool,
    refusals: &flume::Receiver<StoreError>,
    stop: &flume::Receiver<()>,
    shared: &BrokerShared,
) -> Option<ReplicationError> {
    let mut reported = watch.get(mark);
    let mut last_report: Option<Instant> = None;
    loop {
        if closed.load(Ordering::SeqCst) || shared.stopping() || stop.is_disconnected() {
            let _ = output.shutdown(Shutdown::Both);
            return None;
        }
        if let Ok(reason) = refusals.try_recv() {
            let _ = output.shutdown(Shutdown::Both);
            return Some(ReplicationError::DataRefused(reason));
        }
        let value = watch.wait_past(mark, reported, IDLE_CHECK.min(heartbeat));
        let due = last_report.is_none_or(|at| at.elapsed() >= heartbeat);
        if value > reported || due {
            if let Err(err) = std::io::Write::write_all(&mut output, &(value as i64).to_be_bytes())
            {
                let _ = output.shutdown(Shutdown::Both);
                return Some(ReplicationError::Report(err));
            }
            reported = value;
            last_report = Some(Instant::now());
        }
    }
}
