//! The master's HA port (`listenPort + 1`): accepts slaves, checks their HELLO, then streams
//! one shard's commit log to each connection and reads back what the slave holds.
//!
//! Threads, not shard tasks: per connection, one thread sends (it reads the segment files with
//! `pread` below the shard's published written mark, so the shard never waits for a slave) and
//! one reads the slave's reports. Blocking sockets with timeouts keep each of them a straight
//! loop; a slave costs two threads per shard, and a broker has a handful of slaves.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use ringmq_storage::{LogReadError, LogReader, LogWatch, Mark, StoreConfig};
use thiserror::Error;

use super::{
    state::SlaveLink,
    wire::{FRAME_HEADER_BYTES, Hello, Welcome, frame_header},
};
use crate::{config::BrokerRole, shared::BrokerShared};

/// How long a new connection has to send its HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// HA connections served at once (slaves x shards, plus handshakes in progress).
const MAX_CONNECTIONS: usize = 128;
/// How often a sender with nothing to send checks for stop.
const IDLE_CHECK: Duration = Duration::from_millis(200);

/// What every connection thread needs.
#[derive(Debug)]
struct HaContext {
    shared: Arc<BrokerShared>,
    /// Per shard: the log's marks and the store's layout.
    shards: Vec<(Arc<LogWatch>, StoreConfig)>,
    stop: AtomicBool,
    /// Clones of the connected slaves' sockets, shut down on stop so no thread stays blocked
    /// in a read or write.
    streams: Mutex<Vec<(u64, TcpStream)>>,
    next_stream: AtomicU64,
}

impl HaContext {
    fn register_stream(&self, stream: &TcpStream) -> u64 {
        let id = self.next_stream.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            self.streams
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((id, clone));
        }
        if self.stop.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        id
    }

    fn unregister_stream(&self, id: u64) {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(each, _)| *each != id);
    }
}

/// The running HA server.
#[derive(Debug)]
pub(crate) struct HaServer {
    ctx: Arc<HaContext>,
    local_addr: SocketAddr,
    accept: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl HaServer {
    /// Serves `listener` until [`HaServer::stop`].
    pub(crate) fn start(
        shared: Arc<BrokerShared>,
        listener: TcpListener,
        shards: Vec<(Arc<LogWatch>, StoreConfig)>,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(false)?;
        let ctx = Arc::new(HaContext {
            shared,
            shards,
            stop: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
            next_stream: AtomicU64::new(0),
        });
        let accept_ctx = Arc::clone(&ctx);
        let accept = std::thread::Builder::new()
            .name("ha-accept".into())
            .spawn(move || accept_loop(&accept_ctx, &listener))?;
        Ok(Self {
            ctx,
            local_addr,
            accept: Some(accept),
        })
    }

    /// Closes every slave connection and ends the threads.
    pub(crate) fn stop(mut self) {
        self.ctx.stop.store(true, Ordering::SeqCst);
        for (_, stream) in self
            .ctx
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Wake the blocking accept with a connection of our own.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::new(
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                self.local_addr.port(),
            ),
            Duration::from_secs(1),
        );
        if let Some(accept) = self.accept.take()
            && let Ok(connections) = accept.join()
        {
            for connection in connections {
                let _ = connection.join();
            }
        }
    }
}

fn accept_loop(ctx: &Arc<HaContext>, listener: &TcpListener) -> Vec<JoinHandle<()>> {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let accepted = listener.accept();
        if ctx.stop.load(Ordering::SeqCst) {
            return connections;
        }
        connections.retain(|c| !c.is_finished());
        match accepted {
            Ok((stream, peer)) if connections.len() >= MAX_CONNECTIONS => {
                // Each connection costs two threads: a flood must not exhaust them.
                tracing::warn!(%peer, limit = MAX_CONNECTIONS, "HA connection refused: too many connections");
                drop(stream);
            }
            Ok((stream, peer)) => {
                let ctx = Arc::clone(ctx);
                let spawned = std::thread::Builder::new()
                    .name("ha-send".into())
                    .spawn(move || serve(&ctx, stream, peer));
                match spawned {
                    Ok(thread) => connections.push(thread),
                    Err(err) => tracing::warn!(%peer, %err, "cannot start an HA thread"),
                }
            }
            Err(err) => {
                tracing::warn!(%err, "HA accept failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// One slave connection: handshake, then stream and read reports until either side stops.
fn serve(ctx: &Arc<HaContext>, mut stream: TcpStream, peer: SocketAddr) {
    let config = &ctx.shared.config;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(
        config.ha_housekeeping_interval_ms,
    )));
    let hello = match Hello::read(&mut DeadlineReader::new(&stream, HELLO_TIMEOUT)) {
        Ok(hello) => hello,
        Err(err) => {
            tracing::warn!(%peer, %err, "HA connection refused: bad handshake");
            return;
        }
    };
    let start = match admit(ctx, &hello) {
        Ok(start) => start,
        Err(refusal) => {
            // The wire carries the refusal's text: the slave logs it as the master's words.
            let reason = refusal.to_string();
            tracing::warn!(%peer, shard = hello.shard, slave = hello.broker_id, %reason, "HA connection refused");
            let _ = Welcome::Refused { reason }.write(&mut stream);
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    };
    if let Err(err) = (Welcome::Accepted { start }).write(&mut stream) {
        tracing::warn!(%peer, %err, "HA handshake failed");
        return;
    }
    let shard = usize::from(hello.shard);
    let replicas = &ctx.shared.replicas[shard];
    let inbox = &ctx.shared.inboxes[shard];
    // Counts for SYNC_MASTER only from the slave's first report: `start` may include bytes the
    // slave has queued but not yet written.
    let link = replicas.connect(peer, hello.broker_id, inbox);
    let registered = ctx.register_stream(&stream);
    tracing::info!(%peer, shard, slave = hello.broker_id, start, "slave connected");
    let closed = Arc::new(AtomicBool::new(false));
    let reader = match stream.try_clone() {
        Ok(input) => {
            let ctx = Arc::clone(ctx);
            let link = Arc::clone(&link);
            let closed = Arc::clone(&closed);
            std::thread::Builder::new()
                .name("ha-acks".into())
                .spawn(move || {
                    let reason = read_reports(&ctx, shard, input, &link);
                    closed.store(true, Ordering::SeqCst);
                    reason
                })
                .ok()
        }
        Err(_) => None,
    };
    let reason = match reader {
        Some(_) => stream_log(ctx, shard, &mut stream, start, &link, &closed),
        None => Some(LinkEnd::NoReader),
    };
    let _ = stream.shutdown(Shutdown::Both);
    let reader_reason = reader.and_then(|r| r.join().ok());
    ctx.unregister_stream(registered);
    replicas.disconnect(&link, inbox);
    tracing::warn!(
        %peer,
        shard,
        slave = hello.broker_id,
        reason = %reader_reason.or(reason).map(|end| end.to_string()).unwrap_or_default(),
        "slave disconnected"
    );
}

/// Reads with one deadline for the whole of a message (a per-read timeout alone would let a
/// peer sending a byte at a time hold a thread for minutes).
struct DeadlineReader<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl<'a> DeadlineReader<'a> {
    fn new(stream: &'a TcpStream, timeout: Duration) -> Self {
        Self {
            stream,
            deadline: Instant::now() + timeout,
        }
    }
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the handshake took too long",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

/// Why a master refuses a slave's HELLO. The text goes to the slave in the WELCOME.
#[derive(Debug, Error)]
enum Refusal {
    #[error("this broker is a slave; replicate from its master")]
    NotAMaster,
    #[error(
        "the peer is {peer_cluster}/{peer_broker}, another broker group than this master's \
         {cluster}/{broker}"
    )]
    OtherGroup {
        peer_cluster: String,
        peer_broker: String,
        cluster: String,
        broker: String,
    },
    #[error("broker id {0} is not a slave's")]
    NotASlaveId(i64),
    #[error("the slave has {slave} shards, this master {master}: shard logs cannot match")]
    ShardCount { slave: u16, master: usize },
    #[error("no shard {0}")]
    NoShard(u16),
    #[error("the slave's segments are {slave} bytes, this master's {master}")]
    SegmentSize { slave: u64, master: u64 },
    #[error("offset {offset} is not in shard {shard}'s log")]
    OtherShard { offset: u64, shard: u16 },
    #[error(
        "the slave's log ends at {offset}, past this master's end {written}: the logs diverged \
         (copy the slave's store again)"
    )]
    PastEnd { offset: u64, written: u64 },
    #[error(
        "the slave's log ends at {offset}, before this master's oldest data {min}: clear the \
         slave's store to copy again"
    )]
    BeforeStart { offset: u64, min: u64 },
    #[error(
        "the slave's log ends at {0}, inside a chunk of this master's log: the logs diverged \
         (copy the slave's store again)"
    )]
    InsideChunk(u64),
    #[error("cannot read the log at {offset}: {source}")]
    ReadAt {
        offset: u64,
        #[source]
        source: LogReadError,
    },
    #[error("cannot read this master's log before {offset}: {source}")]
    ReadBefore {
        offset: u64,
        #[source]
        source: LogReadError,
    },
    #[error(
        "the slave's last bytes before {0} differ from this master's: the logs diverged (copy \
         the slave's store again)"
    )]
    Diverged(u64),
}

/// Checks a HELLO against this broker; returns where to stream from.
fn admit(ctx: &HaContext, hello: &Hello) -> Result<u64, Refusal> {
    let config = &ctx.shared.config;
    if config.broker_role == BrokerRole::Slave {
        return Err(Refusal::NotAMaster);
    }
    if hello.cluster != config.cluster_name || hello.broker_name != config.broker_name {
        return Err(Refusal::OtherGroup {
            peer_cluster: hello.cluster.clone(),
            peer_broker: hello.broker_name.clone(),
            cluster: config.cluster_name.clone(),
            broker: config.broker_name.clone(),
        });
    }
    if hello.broker_id <= 0 {
        return Err(Refusal::NotASlaveId(hello.broker_id));
    }
    if usize::from(hello.shard_count) != ctx.shards.len() {
        return Err(Refusal::ShardCount {
            slave: hello.shard_count,
            master: ctx.shards.len(),
        });
    }
    let Some((watch, store)) = ctx.shards.get(usize::from(hello.shard)) else {
        return Err(Refusal::NoShard(hello.shard));
    };
    if hello.segment_bytes != store.segment_bytes {
        return Err(Refusal::SegmentSize {
            slave: hello.segment_bytes,
            master: store.segment_bytes,
        });
    }
    let base = store.base_offset();
    let offset = hello.offset;
    if offset >> ringmq_storage::SHARD_SHIFT != base >> ringmq_storage::SHARD_SHIFT {
        return Err(Refusal::OtherShard {
            offset,
            shard: hello.shard,
        });
    }
    let (min, written) = (watch.min_offset(), watch.written());
    if hello.empty {
        // An empty slave copies everything the master still has, wherever its store starts.
        return Ok(min);
    }
    if offset > written {
        return Err(Refusal::PastEnd { offset, written });
    }
    if offset < min {
        return Err(Refusal::BeforeStart { offset, min });
    }
    let mut reader = LogReader::new(store);
    if offset < written {
        // The slave's end must be one of this log's chunk boundaries.
        let mut probe = Vec::new();
        match reader.read_chunks(offset, written, 0, &mut probe) {
            Ok(_) => {}
            Err(LogReadError::NotAChunk(_)) => return Err(Refusal::InsideChunk(offset)),
            Err(source) => return Err(Refusal::ReadAt { offset, source }),
        }
    }
    // And the bytes before it must be this log's: a master that lost its tail in a crash and
    // wrote new records in its place can have a chunk boundary at the same offset.
    let ours = reader
        .tail_fingerprint(offset)
        .map_err(|source| Refusal::ReadBefore { offset, source })?;
    // At a segment start one side may have nothing before it any more (retention): nothing
    // to compare, and nothing there to have diverged.
    let at_segment_start = reader.segment_start(offset) == offset;
    let comparable = !(at_segment_start && (ours.is_none() || hello.tail.is_none()));
    if comparable && ours != hello.tail {
        return Err(Refusal::Diverged(offset));
    }
    Ok(offset)
}

/// Why a slave's connection ended (logged when the slave disconnects).
#[derive(Debug, Error)]
enum LinkEnd {
    #[error("the master is stopping")]
    Stopping,
    #[error("cannot start the report reader")]
    NoReader,
    #[error("cannot read the log at {position}: {source}")]
    ReadLog {
        position: u64,
        #[source]
        source: LogReadError,
    },
    #[error("no progress reading the log at {0}")]
    NoProgress(u64),
    #[error("write: {0}")]
    Write(#[source] std::io::Error),
    #[error("no report from the slave for {0} ms")]
    SlaveSilent(u128),
    #[error("the slave closed the connection")]
    SlaveClosed,
    #[error("read: {0}")]
    Read(#[source] std::io::Error),
    #[error(
        "the slave reported holding {offset}, past this master's end {written}; closing the \
         connection"
    )]
    ReportPastEnd { offset: i64, written: u64 },
}

/// Sends the log from `start` as it grows; heartbeat frames while idle. Returns why it ended,
/// or `None` when the report reader ended first (its reason is the one to log).
fn stream_log(
    ctx: &HaContext,
    shard: usize,
    stream: &mut TcpStream,
    start: u64,
    link: &SlaveLink,
    closed: &AtomicBool,
) -> Option<LinkEnd> {
    let config = &ctx.shared.config;
    let (watch, store) = &ctx.shards[shard];
    let mut reader = LogReader::new(store);
    let heartbeat = Duration::from_millis(config.ha_heartbeat_interval_ms);
    let batch = config.ha_transfer_batch_bytes;
    let mut buf: Vec<u8> = Vec::with_capacity(FRAME_HEADER_BYTES + batch);
    let mut position = start;
    let mut last_frame = Instant::now();
    loop {
        if closed.load(Ordering::SeqCst) {
            return None;
        }
        if ctx.stop.load(Ordering::SeqCst) {
            return Some(LinkEnd::Stopping);
        }
        let written = watch.wait_past(Mark::Written, position, IDLE_CHECK.min(heartbeat));
        if written > position {
            buf.clear();
            buf.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
            let run = match reader.read_chunks(position, written, batch, &mut buf) {
                Ok(run) => run,
                Err(source) => return Some(LinkEnd::ReadLog { position, source }),
            };
            if run.bytes > 0 {
                buf[..FRAME_HEADER_BYTES].copy_from_slice(&frame_header(run.position, run.bytes));
                if let Err(err) = stream.write_all(&buf) {
                    return Some(LinkEnd::Write(err));
                }
                link.sent(run.position + run.bytes as u64);
                last_frame = Instant::now();
            } else if run.next == position {
                return Some(LinkEnd::NoProgress(position));
            }
            position = run.next;
        } else if last_frame.elapsed() >= heartbeat {
            if let Err(err) = stream.write_all(&frame_header(position, 0)) {
                return Some(LinkEnd::Write(err));
            }
            last_frame = Instant::now();
        }
    }
}

/// Reads the slave's 8-byte reports until the connection ends; returns why it ended.
fn read_reports(ctx: &HaContext, shard: usize, mut input: TcpStream, link: &SlaveLink) -> LinkEnd {
    let housekeeping = Duration::from_millis(ctx.shared.config.ha_housekeeping_interval_ms);
    let _ = input.set_read_timeout(Some(housekeeping));
    let replicas = &ctx.shared.replicas[shard];
    let inbox = &ctx.shared.inboxes[shard];
    let (watch, _) = &ctx.shards[shard];
    let mut report = [0u8; 8];
    loop {
        if let Err(err) = input.read_exact(&mut report) {
            let _ = input.shutdown(Shutdown::Both);
            return match err.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    LinkEnd::SlaveSilent(housekeeping.as_millis())
                }
                std::io::ErrorKind::UnexpectedEof => LinkEnd::SlaveClosed,
                _ => LinkEnd::Read(err),
            };
        }
        let offset = i64::from_be_bytes(report);
        let written = watch.written();
        if offset < 0 || offset as u64 > written {
            let _ = input.shutdown(Shutdown::Both);
            return LinkEnd::ReportPastEnd { offset, written };
        }
        replicas.acknowledge(link, offset as u64, inbox);
    }
}
