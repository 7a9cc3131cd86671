//! What the NameServer's threads share: its settings, the broker registry and the published
//! route snapshot. A leaf below both the network service (`server`) and the request handlers
//! (`service`), so neither has to import the other's internals.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use ringmq_protocol::{body, frame::DEFAULT_MAX_FRAME_BYTES};

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
    /// State for a NameServer about to start: no brokers, no routes.
    pub fn new(config: NamesrvConfig) -> Self {
        Self {
            registry: Mutex::new(Registry::default()),
            routes: RwLock::new(Arc::default()),
            next_connection: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            config,
        }
    }

    /// A new id for an accepted connection (registrations remember which connection made them).
    pub fn next_connection_id(&self) -> ConnectionId {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the NameServer is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Asks every thread to stop; `true` when a stop was already requested.
    pub fn request_stop(&self) -> bool {
        self.stop.swap(true, Ordering::AcqRel)
    }

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

    pub fn connection_closed(&self, connection: ConnectionId) {
        let mut registry = self.registry();
        let (removed, changed) = registry.connection_closed(connection);
        self.publish(&registry, &changed);
        drop(registry);
        for addr in removed {
            tracing::info!(broker = %addr, "broker connection closed; removed from routes");
        }
    }

    pub fn scan(&self) {
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
