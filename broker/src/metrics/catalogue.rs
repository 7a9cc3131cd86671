//! The catalogue: which metrics exist. The values ([`ShardMetrics`] per shard,
//! [`BrokerMetrics`] for the broker) and, beside them, every family's name and help text in
//! tables (`SHARD_COUNTERS`, `SHARD_GAUGES`, `SHARD_HISTOGRAMS`, the broker-wide lists and the
//! hand-rendered families), so adding a metric is a field plus one table line; `super::render`
//! only walks the tables.
//!
//! Renaming a family or changing a help text changes the exposition that dashboards read.

use std::{path::PathBuf, time::Instant};

use super::primitives::{Counter, Gauge, Histogram};

/// The request classes `ringmq_requests_total` is split by (label `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// SEND_MESSAGE / SEND_MESSAGE_V2.
    Send,
    /// SEND_BATCH_MESSAGE.
    SendBatch,
    /// PULL_MESSAGE.
    Pull,
    /// HEART_BEAT.
    Heartbeat,
    /// Consumer offset queries and updates.
    Offset,
    /// Topic and group administration.
    Admin,
    /// Everything else.
    Other,
}

impl RequestKind {
    /// Number of kinds.
    pub const COUNT: usize = 7;

    /// Every kind, in index order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::Send,
        Self::SendBatch,
        Self::Pull,
        Self::Heartbeat,
        Self::Offset,
        Self::Admin,
        Self::Other,
    ];

    /// The `kind` label value.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::SendBatch => "send_batch",
            Self::Pull => "pull",
            Self::Heartbeat => "heartbeat",
            Self::Offset => "offset",
            Self::Admin => "admin",
            Self::Other => "other",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

// `ALL` must list every kind exactly once, at its own index.
const _: () = {
    let mut index = 0;
    while index < RequestKind::COUNT {
        assert!(RequestKind::ALL[index].index() == index);
        index += 1;
    }
};

/// The metrics of one shard. Written only by that shard's thread; read by the scraper.
///
/// Aligned to 128 bytes (two cache lines, which also covers adjacent-line prefetch) so that
/// shards stored next to each other in [`BrokerMetrics::shards`] never share a line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardMetrics {
    requests_total: [Counter; RequestKind::COUNT],
    /// Responses sent with a non-zero response code.
    pub request_errors_total: Counter,
    /// Bytes read from client connections.
    pub bytes_received_total: Counter,
    /// Bytes written to client connections.
    pub bytes_sent_total: Counter,
    /// Messages appended to the commit log.
    pub messages_stored_total: Counter,
    /// Messages returned to consumers by pulls.
    pub messages_delivered_total: Counter,
    /// Open client connections.
    pub connections: Gauge,
    /// Requests read and not yet answered.
    pub inflight_requests: Gauge,
    /// Messages waiting in this shard's cross-shard inbox.
    pub cross_shard_queue_depth: Gauge,
    /// Long-poll pulls parked waiting for messages.
    pub parked_pulls: Gauge,
    /// SYNC_MASTER sends answered FLUSH_SLAVE_TIMEOUT or SLAVE_NOT_AVAILABLE.
    pub slave_wait_failures_total: Counter,
    /// Master: slaves connected to this shard's log.
    pub replica_slaves: Gauge,
    /// Master: bytes of this shard's log the most caught-up slave does not hold yet.
    /// Slave: bytes the master had sent beyond what this shard has written, at the last frame.
    pub replica_lag_bytes: Gauge,
    /// Master: age (ms) of the oldest frame the most caught-up slave has not acknowledged.
    /// Slave: while behind the master's last frame, ms since that frame arrived.
    pub replica_lag_ms: Gauge,
    /// Send requests: request arrival to response queued.
    pub send_latency: Histogram,
    /// Pull requests: request arrival to response queued (parked time included).
    pub pull_latency: Histogram,
    /// fsync durations reported by the store.
    pub flush_latency: Histogram,
}

impl ShardMetrics {
    /// All zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The `requests_total` counter of one kind.
    #[inline]
    pub fn request(&self, kind: RequestKind) -> &Counter {
        &self.requests_total[kind.index()]
    }
}

/// Every metric of the broker: one [`ShardMetrics`] per shard plus broker-wide values. Share it
/// as `Arc<BrokerMetrics>`; everything is updated through `&self`.
#[derive(Debug)]
pub struct BrokerMetrics {
    /// Index `i` belongs to shard `i` (label `shard="i"`).
    pub shards: Vec<ShardMetrics>,
    /// Topics configured.
    pub topics: Gauge,
    /// Consumer groups known (subscription configs or live consumers).
    pub consumer_groups: Gauge,
    /// Producer groups with live producers.
    pub producer_groups: Gauge,
    /// NameServer registrations that succeeded (one per NameServer per round).
    pub namesrv_registrations_ok_total: Counter,
    /// NameServer registrations that failed.
    pub namesrv_registrations_failed_total: Counter,
    /// A slave's metadata syncs with its master that succeeded.
    pub metadata_syncs_ok_total: Counter,
    /// A slave's metadata syncs that failed (master unreachable, bad answer, save failed).
    pub metadata_syncs_failed_total: Counter,
    /// Where disk usage is measured at each scrape.
    pub(super) store_dir: PathBuf,
    /// The `broker` label of `ringmq_broker_info`.
    pub(super) broker_name: String,
    /// Start of `ringmq_uptime_seconds`.
    pub(super) started: Instant,
}

impl BrokerMetrics {
    /// Zeroed metrics for `shard_count` shards. `store_dir` is where disk usage is measured at
    /// each scrape (it need not exist yet); `broker_name` labels `ringmq_broker_info`.
    pub fn new(shard_count: usize, store_dir: PathBuf, broker_name: String) -> Self {
        Self {
            shards: (0..shard_count).map(|_| ShardMetrics::new()).collect(),
            topics: Gauge::new(),
            consumer_groups: Gauge::new(),
            producer_groups: Gauge::new(),
            namesrv_registrations_ok_total: Counter::new(),
            namesrv_registrations_failed_total: Counter::new(),
            metadata_syncs_ok_total: Counter::new(),
            metadata_syncs_failed_total: Counter::new(),
            store_dir,
            broker_name,
            started: Instant::now(),
        }
    }

    /// The metrics of shard `index`.
    ///
    /// # Panics
    ///
    /// If `index` is not below the shard count given to [`BrokerMetrics::new`].
    #[inline]
    pub fn shard(&self, index: usize) -> &ShardMetrics {
        &self.shards[index]
    }

    /// The broker-wide gauges: name, help text, gauge.
    pub(super) fn broker_gauges(&self) -> [(&'static str, &'static str, &Gauge); 3] {
        [
            ("ringmq_topics", "Topics configured.", &self.topics),
            (
                "ringmq_consumer_groups",
                "Consumer groups known to the broker.",
                &self.consumer_groups,
            ),
            (
                "ringmq_producer_groups",
                "Producer groups with live producers.",
                &self.producer_groups,
            ),
        ]
    }

    /// The broker-wide counters: name, help text, counter.
    pub(super) fn broker_counters(&self) -> [(&'static str, &'static str, &Counter); 4] {
        [
            (
                "ringmq_namesrv_registrations_ok_total",
                "Registrations with a NameServer that succeeded.",
                &self.namesrv_registrations_ok_total,
            ),
            (
                "ringmq_namesrv_registrations_failed_total",
                "Registrations with a NameServer that failed.",
                &self.namesrv_registrations_failed_total,
            ),
            (
                "ringmq_metadata_syncs_ok_total",
                "Slave: topic and offset syncs from the master that succeeded.",
                &self.metadata_syncs_ok_total,
            ),
            (
                "ringmq_metadata_syncs_failed_total",
                "Slave: topic and offset syncs from the master that failed.",
                &self.metadata_syncs_failed_total,
            ),
        ]
    }
}

/// A per-shard family rendered from a table, so adding a metric is one line.
pub(super) struct ShardFamily<T: 'static> {
    pub name: &'static str,
    pub help: &'static str,
    pub get: fn(&ShardMetrics) -> &T,
}

pub(super) const SHARD_COUNTERS: &[ShardFamily<Counter>] = &[
    ShardFamily {
        name: "ringmq_request_errors_total",
        help: "Responses sent with a non-zero response code.",
        get: |shard| &shard.request_errors_total,
    },
    ShardFamily {
        name: "ringmq_bytes_received_total",
        help: "Bytes read from client connections.",
        get: |shard| &shard.bytes_received_total,
    },
    ShardFamily {
        name: "ringmq_bytes_sent_total",
        help: "Bytes written to client connections.",
        get: |shard| &shard.bytes_sent_total,
    },
    ShardFamily {
        name: "ringmq_messages_stored_total",
        help: "Messages appended to the commit log.",
        get: |shard| &shard.messages_stored_total,
    },
    ShardFamily {
        name: "ringmq_messages_delivered_total",
        help: "Messages returned to consumers by pulls.",
        get: |shard| &shard.messages_delivered_total,
    },
    ShardFamily {
        name: "ringmq_slave_wait_failures_total",
        help: "SYNC_MASTER sends answered FLUSH_SLAVE_TIMEOUT or SLAVE_NOT_AVAILABLE.",
        get: |shard| &shard.slave_wait_failures_total,
    },
];

pub(super) const SHARD_GAUGES: &[ShardFamily<Gauge>] = &[
    ShardFamily {
        name: "ringmq_connections",
        help: "Open client connections.",
        get: |shard| &shard.connections,
    },
    ShardFamily {
        name: "ringmq_inflight_requests",
        help: "Requests read and not yet answered.",
        get: |shard| &shard.inflight_requests,
    },
    ShardFamily {
        name: "ringmq_cross_shard_queue_depth",
        help: "Messages waiting in the shard's cross-shard inbox.",
        get: |shard| &shard.cross_shard_queue_depth,
    },
    ShardFamily {
        name: "ringmq_parked_pulls",
        help: "Long-poll pull requests parked waiting for messages.",
        get: |shard| &shard.parked_pulls,
    },
    ShardFamily {
        name: "ringmq_replica_slaves",
        help: "Master: slaves connected to the shard's log (slave: 1 while connected to the master).",
        get: |shard| &shard.replica_slaves,
    },
    ShardFamily {
        name: "ringmq_replica_lag_bytes",
        help: "Replication lag of the shard's log in bytes (master: best slave behind the written end).",
        get: |shard| &shard.replica_lag_bytes,
    },
    ShardFamily {
        name: "ringmq_replica_lag_ms",
        help: "Replication lag in ms (master: oldest unacknowledged frame; slave: since the last frame).",
        get: |shard| &shard.replica_lag_ms,
    },
];

pub(super) const SHARD_HISTOGRAMS: &[ShardFamily<Histogram>] = &[
    ShardFamily {
        name: "ringmq_send_latency_seconds",
        help: "Send requests, from arrival to response queued.",
        get: |shard| &shard.send_latency,
    },
    ShardFamily {
        name: "ringmq_pull_latency_seconds",
        help: "Pull requests, from arrival to response queued.",
        get: |shard| &shard.pull_latency,
    },
    ShardFamily {
        name: "ringmq_flush_latency_seconds",
        help: "Commit log fsync durations.",
        get: |shard| &shard.flush_latency,
    },
];

/// A family rendered by hand (its samples have labels or a source of their own): name, help
/// text and Prometheus type.
#[derive(Debug, Clone, Copy)]
pub(super) struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: &'static str,
}

pub(super) const BROKER_INFO: Family = Family {
    name: "ringmq_broker_info",
    help: "Broker identity; the value is always 1.",
    kind: "gauge",
};

pub(super) const UPTIME: Family = Family {
    name: "ringmq_uptime_seconds",
    help: "Seconds since the broker's metrics were created.",
    kind: "gauge",
};

/// Per shard and [`RequestKind`].
pub(super) const REQUESTS_TOTAL: Family = Family {
    name: "ringmq_requests_total",
    help: "Requests received, by kind.",
    kind: "counter",
};

/// Measured at each scrape with `statvfs` on the store directory.
pub(super) const DISK_TOTAL_BYTES: Family = Family {
    name: "ringmq_disk_total_bytes",
    help: "Size of the filesystem holding the store directory.",
    kind: "gauge",
};

pub(super) const DISK_AVAILABLE_BYTES: Family = Family {
    name: "ringmq_disk_available_bytes",
    help: "Bytes the broker can still write on the store filesystem.",
    kind: "gauge",
};

pub(super) const DISK_USED_RATIO: Family = Family {
    name: "ringmq_disk_used_ratio",
    help: "Used fraction (0 to 1) of the store filesystem, as df computes it.",
    kind: "gauge",
};
