//! The NameServer as a network service: worker threads (each a compio runtime) accepting on one
//! listener, a scanner thread expiring silent brokers, and the route snapshot that lets route
//! queries run without waiting for registrations.

use std::{
    collections::HashMap,
    io,
    net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use compio::{
    BufResult,
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use ringmq_protocol::{FrameCodec, body, frame::DEFAULT_MAX_FRAME_BYTES};

use crate::registry::{Changed, ConnectionId, Registry};

/// NameServer settings (docs/operations.md).
#[derive(Debug, Clone)]
pub struct NamesrvConfig {
    /// Address to listen on (RocketMQ's default port is 9876).
    pub listen: SocketAddr,
    /// How often silent brokers are looked for (RocketMQ: 10 s).
    pub scan_interval: Duration,
    /// How long a broker may stay silent before it is removed (RocketMQ: 120 s).
    pub broker_expiry: Duration,
    /// Threads serving connections.
    pub workers: usize,
    /// Largest frame accepted (a registration of 10,000 topics is ~2 MiB).
    pub max_frame_bytes: usize,
}

impl Default for NamesrvConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9876)),
            scan_interval: Duration::from_secs(10),
            broker_expiry: Duration::from_secs(120),
            workers: 2,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// Encoded route bodies by topic, replaced whole on every route change. Readers clone the `Arc`
/// under a read lock held for nanoseconds and never wait for a registration being processed.
#[derive(Debug, Default)]
pub(crate) struct RouteSnapshot {
    pub routes: HashMap<Arc<str>, Bytes>,
}

/// State shared by the worker threads and the scanner.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: NamesrvConfig,
    pub registry: Mutex<Registry>,
    pub routes: RwLock<Arc<RouteSnapshot>>,
    next_connection: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    /// The current route snapshot.
    pub fn routes(&self) -> Arc<RouteSnapshot> {
        match self.routes.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Locks the registry (a panic while holding it cannot leave it half-updated in a way that
    /// matters more than stopping the NameServer would, so poison is ignored).
    pub fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Re-encodes the routes of `changed` topics into a new snapshot. Called with the registry
    /// locked, so snapshots are published in registry order.
    pub fn publish(&self, registry: &Registry, changed: &Changed) {
        if changed.is_empty() {
            return;
        }
        let mut routes = self.routes().routes.clone();
        for topic in changed {
            match registry.route(topic) {
                Some(route) => {
                    routes.insert(Arc::from(topic.as_str()), Bytes::from(body::to_vec(&route)));
                }
                None => {
                    routes.remove(topic.as_str());
                }
            }
        }
        let snapshot = Arc::new(RouteSnapshot { routes });
        match self.routes.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    fn connection_closed(&self, connection: ConnectionId) {
        let mut registry = self.registry();
        let (removed, changed) = registry.connection_closed(connection);
        self.publish(&registry, &changed);
        drop(registry);
        for addr in removed {
            tracing::info!(broker = %addr, "broker connection closed; removed from routes");
        }
    }

    fn scan(&self) {
        let mut registry = self.registry();
        let (removed, changed) = registry.expire(Instant::now(), self.config.broker_expiry);
        self.publish(&registry, &changed);
        drop(registry);
        for addr in removed {
            tracing::warn!(broker = %addr, expiry_ms = self.config.broker_expiry.as_millis() as u64,
                "broker silent past expiry; removed from routes");
        }
    }
}

/// A running NameServer. Dropping it (or [`NameServer::shutdown`]) stops it.
#[derive(Debug)]
pub struct NameServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl NameServer {
    /// Binds the listener and starts the worker and scanner threads.
    pub fn start(config: NamesrvConfig) -> io::Result<Self> {
        let listener = StdListener::bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            registry: Mutex::new(Registry::default()),
            routes: RwLock::new(Arc::default()),
            next_connection: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            config,
        });
        let mut threads = Vec::new();
        for worker in 0..shared.config.workers.max(1) {
            let listener = listener.try_clone()?;
            let shared = Arc::clone(&shared);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("namesrv-{worker}"))
                    .spawn(move || run_worker(&shared, listener))?,
            );
        }
        let scanner = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name("namesrv-scan".into())
                .spawn(move || {
                    while !scanner.stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(scanner.config.scan_interval);
                        if scanner.stop.load(Ordering::Acquire) {
                            break;
                        }
                        scanner.scan();
                    }
                })?,
        );
        tracing::info!(%local_addr, "NameServer listening");
        Ok(Self {
            shared,
            local_addr,
            threads,
        })
    }

    /// The address it listens on (with the real port when started on port 0).
    pub const fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes connections and joins the threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wake each accept loop with a connection it will see the stop flag on.
        let wake_addr = match self.local_addr {
            SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], v4.port()))
            }
            addr => addr,
        };
        for _ in 0..self.shared.config.workers.max(1) {
            let _ = StdStream::connect_timeout(&wake_addr, Duration::from_secs(1));
        }
        for thread in self.threads.drain(..) {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_worker(shared: &Arc<Shared>, listener: StdListener) {
    let runtime = match compio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(%err, "cannot start a NameServer worker runtime");
            return;
        }
    };
    runtime.block_on(async {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(%err, "cannot register the NameServer listener");
                return;
            }
        };
        loop {
            let accepted = listener.accept().await;
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            match accepted {
                Ok((stream, peer)) => {
                    let connection = shared.next_connection.fetch_add(1, Ordering::Relaxed);
                    let shared = Arc::clone(shared);
                    compio::runtime::spawn(async move {
                        serve(&shared, stream, peer, connection).await;
                        shared.connection_closed(connection);
                    })
                    .detach();
                }
                Err(err) => {
                    // EMFILE and friends: keep serving the connections we have.
                    tracing::warn!(%err, "accept failed");
                    compio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
}

/// Serves one connection: reads frames, answers each, writes the answers of a read together.
async fn serve(shared: &Shared, mut stream: TcpStream, peer: SocketAddr, connection: ConnectionId) {
    let _ = stream.set_nodelay(true);
    let codec = FrameCodec::new(shared.config.max_frame_bytes);
    let mut input = BytesMut::with_capacity(64 << 10);
    let mut output = BytesMut::with_capacity(64 << 10);
    loop {
        if input.capacity() - input.len() < 16 << 10 {
            input.reserve(64 << 10);
        }
        let BufResult(read, buf) = stream.append(input).await;
        input = buf;
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(%peer, %err, "read failed; closing");
                return;
            }
        }
        loop {
            match codec.decode(&mut input) {
                Ok(Some(command)) => {
                    crate::service::handle(shared, &command, connection, &mut output);
                }
                Ok(None) => break,
                Err(err) => {
                    // A frame we cannot read: answer nothing more on this connection.
                    tracing::warn!(%peer, %err, "malformed request; closing the connection");
                    flush(&mut stream, &mut output).await;
                    return;
                }
            }
        }
        if !flush(&mut stream, &mut output).await {
            return;
        }
    }
}

async fn flush(stream: &mut TcpStream, output: &mut BytesMut) -> bool {
    if output.is_empty() {
        return true;
    }
    let BufResult(written, buf) = stream.write_all(std::mem::take(output)).await;
    *output = buf;
    output.clear();
    written.is_ok()
}
