//! Starting and stopping a broker: listeners, shards, the embedded NameServer, registration and
//! metrics, in the order that lets each find what it needs.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener},
    path::Path,
    sync::Arc,
    thread::JoinHandle,
    time::Duration,
};

use ringmq_namesrv::{NameServer, NamesrvConfig};
use socket2::{Domain, Protocol, Socket, Type};

use ringmq_storage::LogWatch;

use crate::{
    config::{BrokerConfig, BrokerRole, default_shard_count},
    error::BrokerError,
    ha::{
        master::HaServer,
        metadata_sync::MetadataSync,
        slave::{HaClient, ReplicaCommand},
    },
    messages::{ShardMessage, TopicChange},
    metrics::{BrokerMetrics, MetricsServer},
    registration::Registration,
    shard::run::{self as shard, ShardSetup},
    shared::BrokerShared,
};

/// Attempts at finding a free port pair (P, P-2) when `listenPort` is 0.
const PORT_ATTEMPTS: usize = 200;

/// A running broker. [`Broker::shutdown`] (or dropping it) stops it gracefully.
#[derive(Debug)]
pub struct Broker {
    shared: Arc<BrokerShared>,
    shards: Vec<JoinHandle<()>>,
    registration: Option<Registration>,
    ha_server: Option<HaServer>,
    ha_client: Option<HaClient>,
    /// Slaves: copies topics and consumer offsets from the master.
    metadata_sync: Option<MetadataSync>,
    namesrv: Option<NameServer>,
    metrics_server: Option<MetricsServer>,
    listen_addr: SocketAddr,
    /// Shards report here once drained after [`ShardMessage::Stop`].
    drained: std::sync::mpsc::Receiver<usize>,
}

impl Broker {
    /// Validates the configuration, opens (and recovers) every shard's store, starts serving,
    /// and returns once every shard accepts requests.
    pub fn start(mut config: BrokerConfig) -> Result<Self, BrokerError> {
        config.validate()?;
        std::fs::create_dir_all(&config.store_dir).map_err(|e| {
            BrokerError::io(format!("cannot create {}", config.store_dir.display()), e)
        })?;
        let shard_count = resolve_shard_count(&config.store_dir, config.shards)?;
        config.shards = Some(shard_count);
        let (port, listeners, ha_listener) = bind_listeners(config.listen_port, shard_count)?;
        config.listen_port = port;
        let store_host = SocketAddr::new(config.broker_ip, port);

        let (namesrv, namesrv_addrs) = namesrv_for(&config)?;

        let metrics = Arc::new(BrokerMetrics::new(
            shard_count,
            config.store_dir.clone(),
            config.broker_name.clone(),
        ));
        let mut inbox_senders = Vec::with_capacity(shard_count);
        let mut inbox_receivers = Vec::with_capacity(shard_count);
        for _ in 0..shard_count {
            let (sender, receiver) = flume::bounded(config.cross_shard_queue_capacity);
            inbox_senders.push(sender);
            inbox_receivers.push(receiver);
        }
        let (topic_changes, topic_change_receiver) = flume::bounded(1024);
        let (register_now, register_wake) = flume::bounded(16);
        let metrics_port = config.metrics_port;
        let shared = Arc::new(BrokerShared::new(
            config,
            store_host,
            inbox_senders,
            topic_changes,
            Arc::clone(&metrics),
            register_now,
        ));

        let (drained, drained_reports) = std::sync::mpsc::channel();
        let mut broker = Self {
            shared: Arc::clone(&shared),
            shards: Vec::with_capacity(shard_count),
            registration: None,
            ha_server: None,
            ha_client: None,
            metadata_sync: None,
            namesrv,
            metrics_server: None,
            listen_addr: store_host,
            drained: drained_reports,
        };
        let (watches, replica_senders) = broker.start_shards(
            &shared,
            inbox_receivers,
            listeners,
            topic_change_receiver,
            &drained,
        )?;
        broker.start_replication(&shared, ha_listener, watches, replica_senders)?;
        broker.registration = Some(
            Registration::start(Arc::clone(&shared), namesrv_addrs, register_wake)
                .map_err(|e| BrokerError::io("cannot start the registration thread", e))?,
        );
        if let Some(port) = metrics_port {
            let server = MetricsServer::start(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                metrics,
            )
            .map_err(|e| BrokerError::io("cannot start the metrics endpoint", e))?;
            broker.metrics_server = Some(server);
        }
        tracing::info!(addr = %store_host, shards = shard_count, "broker started");
        Ok(broker)
    }

    /// Starts the shard threads one by one (shard 0 first: it owns the topic table, which
    /// the others read from their first request) and waits until each serves. Returns each
    /// shard's log watch and, on a slave, the queues of their replica tasks.
    #[allow(clippy::type_complexity)]
    fn start_shards(
        &mut self,
        shared: &Arc<BrokerShared>,
        inbox_receivers: Vec<flume::Receiver<ShardMessage>>,
        mut listeners: Vec<Vec<StdListener>>,
        topic_change_receiver: flume::Receiver<TopicChange>,
        drained: &std::sync::mpsc::Sender<usize>,
    ) -> Result<(Vec<Arc<LogWatch>>, Vec<flume::Sender<ReplicaCommand>>), BrokerError> {
        let shard_count = inbox_receivers.len();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        // Shard 0 first: it owns the topic table, which the others read from their first request.
        let mut topic_change_receiver = Some(topic_change_receiver);
        let is_slave = shared.config.broker_role == BrokerRole::Slave;
        let mut watches = Vec::with_capacity(shard_count);
        let mut replica_senders = Vec::with_capacity(shard_count);
        for (id, inbox) in inbox_receivers.into_iter().enumerate() {
            // Bounded: a slave shard that cannot keep up slows its HA thread, then the master.
            let replica_commands = is_slave.then(|| {
                let (sender, receiver) = flume::bounded(16);
                replica_senders.push(sender);
                receiver
            });
            let (ready, ready_answer) = std::sync::mpsc::channel();
            let drained = drained.clone();
            let setup = ShardSetup {
                id,
                shared: Arc::clone(shared),
                inbox,
                listeners: std::mem::take(&mut listeners[id]),
                topic_changes: if id == 0 {
                    topic_change_receiver.take()
                } else {
                    None
                },
                core: (shared.config.pin_shards && shard_count <= cores).then_some(id % cores),
                replica_commands,
                ready,
                drained,
            };
            let thread = std::thread::Builder::new()
                .name(format!("shard-{id}"))
                .spawn(move || shard::run(setup))
                .map_err(|e| BrokerError::io("cannot start a shard thread", e))?;
            self.shards.push(thread);
            match ready_answer.recv() {
                Ok(Ok(watch)) => watches.push(watch),
                Ok(Err(failure)) => {
                    return Err(BrokerError::Shard {
                        shard: id,
                        reason: failure.to_string(),
                    });
                }
                Err(_) => {
                    return Err(BrokerError::Shard {
                        shard: id,
                        reason: "the shard thread ended during start-up".into(),
                    });
                }
            }
        }
        Ok((watches, replica_senders))
    }

    /// Starts the HA side threads: the HA port on every broker (a slave's refuses every HELLO
    /// with its reason), and on a slave the per-shard replication and the metadata sync.
    fn start_replication(
        &mut self,
        shared: &Arc<BrokerShared>,
        ha_listener: StdListener,
        watches: Vec<Arc<LogWatch>>,
        replica_senders: Vec<flume::Sender<ReplicaCommand>>,
    ) -> Result<(), BrokerError> {
        let ha_shards = watches
            .iter()
            .enumerate()
            .map(|(id, watch)| (Arc::clone(watch), shard::store_config(shared, id)))
            .collect();
        self.ha_server = Some(
            HaServer::start(Arc::clone(shared), ha_listener, ha_shards)
                .map_err(|e| BrokerError::io("cannot start the HA server", e))?,
        );
        if shared.config.broker_role == BrokerRole::Slave {
            let links = watches
                .into_iter()
                .zip(replica_senders)
                .enumerate()
                .map(|(id, (watch, sender))| (watch, shard::store_config(shared, id), sender))
                .collect();
            self.ha_client = Some(
                HaClient::start(shared, links)
                    .map_err(|e| BrokerError::io("cannot start replication", e))?,
            );
            self.metadata_sync = Some(
                MetadataSync::start(Arc::clone(shared))
                    .map_err(|e| BrokerError::io("cannot start the metadata sync thread", e))?,
            );
        }
        Ok(())
    }

    /// The address clients use (`brokerIP1:listenPort`); `listenPort - 2` serves the same.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The embedded NameServer's address (`brokerIP1:port`), when one was started.
    pub fn namesrv_addr(&self) -> Option<SocketAddr> {
        self.namesrv
            .as_ref()
            .map(|n| SocketAddr::new(self.listen_addr.ip(), n.local_addr().port()))
    }

    /// The metrics endpoint's address, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server
            .as_ref()
            .map(|m| SocketAddr::new(self.listen_addr.ip(), m.local_addr().port()))
    }

    /// Stops gracefully: unregisters from the NameServers, stops accepting, answers what is
    /// in flight, flushes and checkpoints every store.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.set_stopping() {
            return;
        }
        let _ = self.shared.register_now.try_send(());
        // Before the shards stop: a sync applied after a shard's last save would be lost.
        if let Some(sync) = self.metadata_sync.take() {
            sync.join();
        }
        if let Some(registration) = self.registration.take() {
            registration.join();
        }
        if let Some(client) = self.ha_client.take() {
            client.stop();
        }
        if let Some(server) = self.ha_server.take() {
            server.stop();
        }
        // Two phases: every shard stops reading and answers what it has in flight (including
        // requests other shards forward to it), then all close their stores together.
        for inbox in &self.shared.inboxes {
            let _ = inbox.send_timeout(ShardMessage::Stop, Duration::from_secs(5));
        }
        for _ in 0..self.shards.len() {
            if self.drained.recv_timeout(Duration::from_secs(15)).is_err() {
                break;
            }
        }
        for inbox in &self.shared.inboxes {
            let _ = inbox.send_timeout(ShardMessage::Close, Duration::from_secs(5));
        }
        for thread in self.shards.drain(..) {
            let _ = thread.join();
        }
        if let Some(namesrv) = self.namesrv.take() {
            namesrv.shutdown();
        }
        if let Some(server) = self.metrics_server.take() {
            server.shutdown();
        }
        tracing::info!("broker stopped");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The NameServers to register with: the configured ones, or an embedded one started here.
fn namesrv_for(config: &BrokerConfig) -> Result<(Option<NameServer>, Vec<String>), BrokerError> {
    if !config.namesrv_addrs.is_empty() {
        return Ok((None, config.namesrv_addrs.clone()));
    }
    let embedded = NameServer::start(NamesrvConfig {
        listen: SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            config.embedded_namesrv_port,
        ),
        ..NamesrvConfig::default()
    })
    .map_err(|e| BrokerError::io("cannot start the embedded NameServer", e))?;
    let addr = SocketAddr::new(config.broker_ip, embedded.local_addr().port());
    Ok((Some(embedded), vec![addr.to_string()]))
}

/// The shard count to run with: the store's recorded count, which a configured count must match
/// (which shard owns a queue, and holds its data, depends on it); for a new store the configured
/// count or [`default_shard_count`], recorded before any shard data exists.
fn resolve_shard_count(store_dir: &Path, configured: Option<usize>) -> Result<usize, BrokerError> {
    let path = store_dir.join("shards");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let recorded: usize = text.trim().parse().map_err(|_| {
                BrokerError::io(
                    format!("{} is not a shard count", path.display()),
                    std::io::Error::other(text.trim().to_owned()),
                )
            })?;
            match configured {
                Some(configured) if configured != recorded => {
                    Err(BrokerError::ShardCountMismatch {
                        dir: store_dir.to_path_buf(),
                        recorded,
                        configured,
                    })
                }
                _ => Ok(recorded),
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let has_data = (0..1024).any(|id| shard::shard_dir(store_dir, id).exists());
            if has_data {
                return Err(BrokerError::io(
                    format!("{} has shard data but no shard count", store_dir.display()),
                    err,
                ));
            }
            let shards = configured.unwrap_or_else(default_shard_count);
            // Atomic and durable (temporary `shards.tmp`, fsync, rename, directory fsync): a
            // crash leaves no file or the whole count, never a torn one.
            ringmq_common::fs::write_atomically(&path, format!("{shards}\n").as_bytes())
                .map_err(|e| BrokerError::io(format!("cannot write {}", path.display()), e))?;
            Ok(shards)
        }
        Err(err) => Err(BrokerError::io(
            format!("cannot read {}", path.display()),
            err,
        )),
    }
}

/// A listener with SO_REUSEPORT, so every shard accepts on the same port and the kernel spreads
/// connections over them.
fn reuseport_listener(port: u16) -> std::io::Result<StdListener> {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Binds `listenPort` and `listenPort - 2` once per shard, and the HA port `listenPort + 1`
/// once. Port 0 picks a free trio.
fn bind_listeners(
    port: u16,
    shards: usize,
) -> Result<(u16, Vec<Vec<StdListener>>, StdListener), BrokerError> {
    let (port, main, fast, ha) = if port == 0 {
        let mut found = None;
        for _ in 0..PORT_ATTEMPTS {
            let main =
                reuseport_listener(0).map_err(|e| BrokerError::io("cannot bind a listener", e))?;
            let chosen = main
                .local_addr()
                .map_err(|e| BrokerError::io("cannot read the listener address", e))?
                .port();
            if chosen < 3 || chosen == u16::MAX {
                continue;
            }
            if let Ok(fast) = reuseport_listener(chosen - 2)
                && let Ok(ha) = ha_listener(chosen + 1)
            {
                found = Some((chosen, main, fast, ha));
                break;
            }
        }
        found.ok_or_else(|| {
            BrokerError::io(
                "cannot find a free port P with P-2 and P+1 also free",
                std::io::Error::from(std::io::ErrorKind::AddrInUse),
            )
        })?
    } else {
        let bind = |p: u16| {
            reuseport_listener(p)
                .map_err(|e| BrokerError::io(format!("cannot listen on port {p}"), e))
        };
        let ha = ha_listener(port + 1).map_err(|e| {
            BrokerError::io(format!("cannot listen on the HA port {}", port + 1), e)
        })?;
        (port, bind(port)?, bind(port - 2)?, ha)
    };
    let mut listeners = vec![vec![main, fast]];
    for _ in 1..shards {
        let main = reuseport_listener(port)
            .map_err(|e| BrokerError::io(format!("cannot listen on port {port}"), e))?;
        let fast = reuseport_listener(port - 2)
            .map_err(|e| BrokerError::io(format!("cannot listen on port {}", port - 2), e))?;
        listeners.push(vec![main, fast]);
    }
    Ok((port, listeners, ha))
}

/// The HA listener: one socket, served by one thread (no SO_REUSEPORT: a second broker on the
/// same port must fail to start, not share the slaves).
fn ha_listener(port: u16) -> std::io::Result<StdListener> {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(64)?;
    Ok(socket.into())
}
