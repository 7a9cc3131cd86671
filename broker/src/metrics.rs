//! Broker metrics, exposed over HTTP in the Prometheus text exposition format (version 0.0.4).
//!
//! # Why it looks like this
//!
//! The broker is thread-per-core: every shard thread owns its connections and queues and never
//! takes a lock on the hot path. Metrics follow the same rule. Each shard gets its own
//! [`ShardMetrics`], written only by that shard's thread, so every counter update is an atomic
//! add on a cache line that the writing core already owns (`ShardMetrics` is aligned to 128
//! bytes so that two shards never share a line). The only other party is the scraper thread
//! ([`MetricsServer`]), which reads the atomics once per scrape. Shards are not summed inside
//! the broker: each sample carries a `shard="N"` label and Prometheus aggregates them.
//!
//! # Memory ordering
//!
//! Every load and store uses [`Ordering::Relaxed`]. A metric is an independent number: no other
//! memory is published through it, so no happens-before edge is needed. Relaxed still
//! guarantees that each atomic is never torn and that a counter read twice never goes
//! backwards (per-location coherence), which is all Prometheus needs. What relaxed does not give
//! is a consistent cut across atomics: one scrape may see a request counted in
//! `requests_total` but its bytes not yet in `bytes_received_total`. Any scrape of a live system
//! has that skew; the next scrape catches up.
//!
//! # Invariants
//!
//! - One writer per [`ShardMetrics`]: the shard thread that owns it. (The primitives use atomic
//!   read-modify-write anyway, so a second writer would not lose updates; the rule exists for
//!   cache locality, not correctness.)
//! - Recording never allocates and never blocks.
//! - Counters and histogram buckets only grow; gauges are last-value.
//! - In a rendered histogram the `+Inf` bucket equals `_count`, because `_count` is computed
//!   from the same bucket snapshot rather than read from a separate atomic.
//! - Every family is rendered with one `# HELP` and one `# TYPE` line before its samples, and
//!   every name starts with `ringmq_`.

use std::{
    fmt,
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// A monotonically increasing count.
///
/// Uses an atomic add rather than a load-then-store even though each shard's counters have one
/// writer: on an uncontended line the add costs a few nanoseconds, and it keeps broker-wide
/// counters (written from whichever thread does the work) correct too.
#[derive(Debug, Default)]
pub struct Counter {
    value: AtomicU64,
}

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self {
            value: AtomicU64::new(0),
        }
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `amount`.
    #[inline]
    pub fn add(&self, amount: u64) {
        self.value.fetch_add(amount, Ordering::Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (connections, queue depths).
#[derive(Debug, Default)]
pub struct Gauge {
    value: AtomicI64,
}

impl Gauge {
    /// A gauge at zero.
    pub const fn new() -> Self {
        Self {
            value: AtomicI64::new(0),
        }
    }

    /// Replaces the value.
    #[inline]
    pub fn set(&self, value: i64) {
        self.value.store(value, Ordering::Relaxed);
    }

    /// Adds `amount`.
    #[inline]
    pub fn add(&self, amount: i64) {
        self.value.fetch_add(amount, Ordering::Relaxed);
    }

    /// Subtracts `amount`.
    #[inline]
    pub fn sub(&self, amount: i64) {
        self.value.fetch_sub(amount, Ordering::Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        self.sub(1);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// Upper bounds (inclusive, Prometheus `le`) of the latency histogram buckets, in microseconds:
/// 1-2-5 steps from 1 µs to 10 s. A value above the last bound lands only in the `+Inf` bucket.
pub const LATENCY_BUCKET_BOUNDS_US: [u64; 22] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
    200_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000,
];

/// Buckets a [`Histogram`] keeps: one per bound plus the overflow (`+Inf` only) bucket.
pub const LATENCY_BUCKET_COUNT: usize = LATENCY_BUCKET_BOUNDS_US.len() + 1;

// The bucket lookup is a binary search, which needs strictly increasing bounds.
const _: () = {
    let mut index = 1;
    while index < LATENCY_BUCKET_BOUNDS_US.len() {
        assert!(LATENCY_BUCKET_BOUNDS_US[index - 1] < LATENCY_BUCKET_BOUNDS_US[index]);
        index += 1;
    }
};

/// A latency distribution in microseconds over the fixed [`LATENCY_BUCKET_BOUNDS_US`].
///
/// Each bucket holds the values that fall in it alone (not cumulative); rendering accumulates.
/// There is no separate count atomic: the count is the sum of the buckets, which saves an atomic
/// add per record and makes `_count` equal the `+Inf` bucket in every snapshot.
#[derive(Debug)]
pub struct Histogram {
    bucket_counts: [AtomicU64; LATENCY_BUCKET_COUNT],
    /// Sum of every recorded value in µs. Wraps after 2^64 µs (584,000 years) of total latency.
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Self {
            bucket_counts: [const { AtomicU64::new(0) }; LATENCY_BUCKET_COUNT],
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records one value in microseconds: two relaxed atomic adds, no allocation.
    #[inline]
    pub fn record_us(&self, value_us: u64) {
        self.bucket_counts[bucket_index(value_us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(value_us, Ordering::Relaxed);
    }

    /// Records one duration, truncated to whole microseconds.
    #[inline]
    pub fn record(&self, duration: Duration) {
        self.record_us(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
    }

    /// How many values were recorded (the sum of the buckets).
    pub fn count(&self) -> u64 {
        self.snapshot().count()
    }

    /// Reads every bucket and the sum (relaxed; see the module doc).
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bucket_counts: std::array::from_fn(|index| {
                self.bucket_counts[index].load(Ordering::Relaxed)
            }),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// Index of the bucket holding `value_us`: the first bound `>= value_us`, or the overflow bucket.
#[inline]
fn bucket_index(value_us: u64) -> usize {
    LATENCY_BUCKET_BOUNDS_US.partition_point(|&bound| bound < value_us)
}

/// One reading of a [`Histogram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per-bucket (not cumulative) counts; index `i < 22` is `le = LATENCY_BUCKET_BOUNDS_US[i]`,
    /// the last index holds values above every bound.
    pub bucket_counts: [u64; LATENCY_BUCKET_COUNT],
    /// Sum of the recorded values in µs.
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.bucket_counts.iter().sum()
    }
}

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
    store_dir: PathBuf,
    broker_name: String,
    started: Instant,
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

    /// Appends every metric to `out` in the Prometheus text format 0.0.4. Allocates only to
    /// grow `out`; reuse the buffer across scrapes.
    pub fn render(&self, out: &mut String) {
        let result = self.write_metrics(out);
        // `String`'s `fmt::Write` never fails, and nothing written here has a failing `Display`.
        debug_assert!(result.is_ok(), "formatting into a String failed");
    }

    fn write_metrics<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        write_header(
            out,
            "ringmq_broker_info",
            "Broker identity; the value is always 1.",
            "gauge",
        )?;
        out.write_str("ringmq_broker_info{broker=\"")?;
        write_label_value(out, &self.broker_name)?;
        writeln!(out, "\",version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))?;

        write_header(
            out,
            "ringmq_uptime_seconds",
            "Seconds since the broker's metrics were created.",
            "gauge",
        )?;
        out.write_str("ringmq_uptime_seconds ")?;
        let uptime_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        write_seconds_from_us(out, uptime_us)?;
        out.write_char('\n')?;

        write_header(
            out,
            "ringmq_requests_total",
            "Requests received, by kind.",
            "counter",
        )?;
        for (shard_index, shard) in self.shards.iter().enumerate() {
            for kind in RequestKind::ALL {
                writeln!(
                    out,
                    "ringmq_requests_total{{shard=\"{shard_index}\",kind=\"{}\"}} {}",
                    kind.name(),
                    shard.request(kind).get()
                )?;
            }
        }

        for family in SHARD_COUNTERS {
            write_header(out, family.name, family.help, "counter")?;
            for (shard_index, shard) in self.shards.iter().enumerate() {
                let value = (family.get)(shard).get();
                writeln!(out, "{}{{shard=\"{shard_index}\"}} {value}", family.name)?;
            }
        }
        for family in SHARD_GAUGES {
            write_header(out, family.name, family.help, "gauge")?;
            for (shard_index, shard) in self.shards.iter().enumerate() {
                let value = (family.get)(shard).get();
                writeln!(out, "{}{{shard=\"{shard_index}\"}} {value}", family.name)?;
            }
        }
        for family in SHARD_HISTOGRAMS {
            write_header(out, family.name, family.help, "histogram")?;
            for (shard_index, shard) in self.shards.iter().enumerate() {
                write_histogram(
                    out,
                    family.name,
                    shard_index,
                    &(family.get)(shard).snapshot(),
                )?;
            }
        }

        for (name, help, gauge) in [
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
        ] {
            write_header(out, name, help, "gauge")?;
            writeln!(out, "{name} {}", gauge.get())?;
        }
        for (name, help, counter) in self.broker_counters() {
            write_header(out, name, help, "counter")?;
            writeln!(out, "{name} {}", counter.get())?;
        }

        self.write_disk_usage(out)
    }

    /// The broker-wide counters: name, help text, counter.
    fn broker_counters(&self) -> [(&'static str, &'static str, &Counter); 4] {
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

    /// Disk usage of the filesystem holding the store directory, measured now. Skipped silently
    /// when `statvfs` fails: the directory may not exist yet (first start), and a scrape must
    /// not fail because of it.
    fn write_disk_usage<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        let Ok(stat) = rustix::fs::statvfs(&self.store_dir) else {
            return Ok(());
        };
        // Block counts are in units of the fragment size. "Available" excludes the blocks
        // reserved for root, which the broker cannot use; "used" is what `df` calls used.
        let total_bytes = stat.f_blocks.saturating_mul(stat.f_frsize);
        let available_bytes = stat.f_bavail.saturating_mul(stat.f_frsize);
        let used_bytes = stat
            .f_blocks
            .saturating_sub(stat.f_bfree)
            .saturating_mul(stat.f_frsize);

        write_header(
            out,
            "ringmq_disk_total_bytes",
            "Size of the filesystem holding the store directory.",
            "gauge",
        )?;
        writeln!(out, "ringmq_disk_total_bytes {total_bytes}")?;
        write_header(
            out,
            "ringmq_disk_available_bytes",
            "Bytes the broker can still write on the store filesystem.",
            "gauge",
        )?;
        writeln!(out, "ringmq_disk_available_bytes {available_bytes}")?;

        // Same as `df`'s Use%: used over what non-root users can ever have (used + available).
        // A pseudo-filesystem can report zero blocks; a ratio would then be meaningless.
        let usable_bytes = used_bytes.saturating_add(available_bytes);
        if usable_bytes > 0 {
            write_header(
                out,
                "ringmq_disk_used_ratio",
                "Used fraction (0 to 1) of the store filesystem, as df computes it.",
                "gauge",
            )?;
            // Past 2^53 bytes the conversion rounds, which a ratio does not notice.
            #[allow(clippy::cast_precision_loss)]
            let ratio = used_bytes as f64 / usable_bytes as f64;
            writeln!(out, "ringmq_disk_used_ratio {ratio}")?;
        }
        Ok(())
    }
}

/// A per-shard family rendered from a table, so adding a metric is one line.
struct ShardFamily<T: 'static> {
    name: &'static str,
    help: &'static str,
    get: fn(&ShardMetrics) -> &T,
}

const SHARD_COUNTERS: &[ShardFamily<Counter>] = &[
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

const SHARD_GAUGES: &[ShardFamily<Gauge>] = &[
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

const SHARD_HISTOGRAMS: &[ShardFamily<Histogram>] = &[
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

/// Writes the `# HELP` and `# TYPE` lines of a family. Help texts are constants without
/// backslashes or newlines, so they need no escaping.
fn write_header<W: fmt::Write>(
    out: &mut W,
    name: &str,
    help: &str,
    metric_type: &str,
) -> fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {metric_type}")
}

/// Writes one shard's histogram: cumulative `_bucket` lines up to `+Inf`, then `_sum` and
/// `_count`, with bounds and sum converted from µs to seconds.
fn write_histogram<W: fmt::Write>(
    out: &mut W,
    name: &str,
    shard_index: usize,
    snapshot: &HistogramSnapshot,
) -> fmt::Result {
    let mut cumulative: u64 = 0;
    for (bound_us, count) in LATENCY_BUCKET_BOUNDS_US.iter().zip(snapshot.bucket_counts) {
        cumulative += count;
        write!(out, "{name}_bucket{{shard=\"{shard_index}\",le=\"")?;
        write_seconds_from_us(out, *bound_us)?;
        writeln!(out, "\"}} {cumulative}")?;
    }
    let count = snapshot.count();
    writeln!(
        out,
        "{name}_bucket{{shard=\"{shard_index}\",le=\"+Inf\"}} {count}"
    )?;
    write!(out, "{name}_sum{{shard=\"{shard_index}\"}} ")?;
    write_seconds_from_us(out, snapshot.sum_us)?;
    writeln!(out, "\n{name}_count{{shard=\"{shard_index}\"}} {count}")
}

/// Writes `value_us` as decimal seconds, exactly (integer arithmetic, no float rounding), with
/// no trailing zeros: 1 → `0.000001`, 1500 → `0.0015`, 2_000_000 → `2`.
fn write_seconds_from_us<W: fmt::Write>(out: &mut W, value_us: u64) -> fmt::Result {
    let whole_seconds = value_us / 1_000_000;
    let mut fraction = value_us % 1_000_000;
    if fraction == 0 {
        return write!(out, "{whole_seconds}");
    }
    let mut digits = 6;
    while fraction % 10 == 0 {
        fraction /= 10;
        digits -= 1;
    }
    write!(out, "{whole_seconds}.{fraction:0digits$}")
}

/// Writes a label value with the escapes the text format requires (`\\`, `\"`, `\n`).
fn write_label_value<W: fmt::Write>(out: &mut W, value: &str) -> fmt::Result {
    for character in value.chars() {
        match character {
            '\\' => out.write_str("\\\\")?,
            '"' => out.write_str("\\\"")?,
            '\n' => out.write_str("\\n")?,
            other => out.write_char(other)?,
        }
    }
    Ok(())
}

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
    use std::collections::HashSet;

    use super::*;

    fn metrics(shard_count: usize) -> BrokerMetrics {
        BrokerMetrics::new(shard_count, std::env::temp_dir(), "broker-a".into())
    }

    fn rendered(metrics: &BrokerMetrics) -> String {
        let mut out = String::new();
        metrics.render(&mut out);
        out
    }

    /// The value of the sample line `series` (name plus labels, exactly as rendered).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
    }

    #[test]
    fn histogram_puts_each_value_in_the_first_bucket_whose_bound_is_not_below_it() {
        let histogram = Histogram::new();
        for value_us in [
            0,
            1,
            2,
            3,
            5,
            6,
            1_000,
            1_001,
            10_000_000,
            10_000_001,
            u64::MAX / 2,
        ] {
            histogram.record_us(value_us);
        }
        histogram.record(Duration::from_millis(3));
        histogram.record(Duration::from_nanos(999)); // Truncates to 0 µs.

        let snapshot = histogram.snapshot();
        let mut expected = [0_u64; LATENCY_BUCKET_COUNT];
        expected[0] = 3; // 0, 1, 0 (from 999 ns): le 1 µs.
        expected[1] = 1; // 2: le 2 µs.
        expected[2] = 2; // 3, 5: le 5 µs.
        expected[3] = 1; // 6: le 10 µs.
        expected[9] = 1; // 1000: le 1 ms.
        expected[10] = 1; // 1001: le 2 ms.
        expected[11] = 1; // 3 ms: le 5 ms.
        expected[21] = 1; // 10 s: le 10 s.
        expected[22] = 2; // Above 10 s: +Inf only.
        assert_eq!(snapshot.bucket_counts, expected);
        assert_eq!(histogram.count(), 13);
        assert_eq!(
            snapshot.sum_us,
            [
                0,
                1,
                2,
                3,
                5,
                6,
                1_000,
                1_001,
                10_000_000,
                10_000_001,
                u64::MAX / 2,
                3_000,
                0
            ]
            .iter()
            .sum::<u64>()
        );
    }

    #[test]
    fn histogram_renders_cumulative_buckets_in_seconds() {
        let metrics = metrics(2);
        let latency = &metrics.shard(1).send_latency;
        for value_us in [1, 4, 5, 700, 2_500_000, 20_000_000] {
            latency.record_us(value_us);
        }
        let text = rendered(&metrics);
        let bucket = |le: &str| {
            sample(
                &text,
                &format!("ringmq_send_latency_seconds_bucket{{shard=\"1\",le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.000001"), Some(1.0));
        assert_eq!(bucket("0.000002"), Some(1.0));
        assert_eq!(bucket("0.000005"), Some(3.0));
        assert_eq!(bucket("0.0005"), Some(3.0));
        assert_eq!(bucket("0.001"), Some(4.0));
        assert_eq!(bucket("2"), Some(4.0));
        assert_eq!(bucket("5"), Some(5.0));
        assert_eq!(bucket("10"), Some(5.0));
        assert_eq!(bucket("+Inf"), Some(6.0));
        assert_eq!(
            sample(&text, "ringmq_send_latency_seconds_count{shard=\"1\"}"),
            Some(6.0)
        );
        assert!(text.contains("ringmq_send_latency_seconds_sum{shard=\"1\"} 22.50071\n"));
        // The other shard is rendered too, all zero.
        assert_eq!(
            sample(
                &text,
                "ringmq_send_latency_seconds_bucket{shard=\"0\",le=\"+Inf\"}"
            ),
            Some(0.0)
        );
        assert!(text.contains("ringmq_send_latency_seconds_sum{shard=\"0\"} 0\n"));

        // Buckets never decrease from one bound to the next.
        let counts: Vec<f64> = text
            .lines()
            .filter(|line| line.starts_with("ringmq_send_latency_seconds_bucket{shard=\"1\""))
            .map(|line| line.rsplit_once(' ').unwrap().1.parse().unwrap())
            .collect();
        assert_eq!(counts.len(), LATENCY_BUCKET_COUNT);
        assert!(counts.windows(2).all(|pair| pair[0] <= pair[1]));
    }

    #[test]
    fn seconds_are_written_exactly_without_trailing_zeros() {
        for (value_us, expected) in [
            (0, "0"),
            (1, "0.000001"),
            (10, "0.00001"),
            (1_500, "0.0015"),
            (1_000_000, "1"),
            (2_500_001, "2.500001"),
            (10_000_000, "10"),
        ] {
            let mut out = String::new();
            write_seconds_from_us(&mut out, value_us).unwrap();
            assert_eq!(out, expected, "{value_us} µs");
        }
    }

    /// Splits `name{labels} value` (labels optional) and checks each part's syntax.
    fn parse_sample(line: &str) -> (String, Vec<(String, String)>, f64) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (
                name,
                rest.strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}")),
            ),
            None => (series, ""),
        };
        let name_ok = name.starts_with("ringmq_")
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':');
        assert!(name_ok, "bad name: {line}");
        let labels = if labels.is_empty() {
            Vec::new()
        } else {
            labels
                .split(',')
                .map(|pair| {
                    let (key, quoted) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    let unquoted = quoted
                        .strip_prefix('"')
                        .and_then(|rest| rest.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label: {line}"));
                    assert!(
                        key.bytes()
                            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_'),
                        "bad label name: {line}"
                    );
                    (key.to_owned(), unquoted.to_owned())
                })
                .collect()
        };
        (name.to_owned(), labels, value)
    }

    /// Checks the structure of a whole exposition: one HELP then one TYPE per family, every
    /// sample after its family's TYPE and parsable. Returns the families.
    fn check_exposition(text: &str) -> HashSet<String> {
        let mut helped = HashSet::new();
        let mut typed = HashSet::new();
        let mut histograms = HashSet::new();
        let mut sample_count = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.is_empty());
                assert!(helped.insert(name.to_owned()), "HELP twice: {name}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, metric_type) = rest.split_once(' ').unwrap();
                assert!(helped.contains(name), "TYPE before HELP: {name}");
                assert!(
                    matches!(metric_type, "counter" | "gauge" | "histogram"),
                    "{line}"
                );
                assert!(typed.insert(name.to_owned()), "TYPE twice: {name}");
                if metric_type == "histogram" {
                    histograms.insert(name.to_owned());
                }
            } else {
                let (name, labels, _value) = parse_sample(line);
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| {
                        name.strip_suffix(suffix)
                            .filter(|family| histograms.contains(*family))
                    })
                    .unwrap_or(&name);
                assert!(typed.contains(family), "sample before its TYPE: {line}");
                if name.ends_with("_bucket") {
                    assert_eq!(labels.last().unwrap().0, "le", "{line}");
                }
                sample_count += 1;
            }
        }
        assert!(sample_count > 100, "{sample_count} samples");
        typed
    }

    #[test]
    fn render_gives_every_family_help_and_type_and_every_line_parses() {
        let metrics = metrics(3);
        metrics.shard(0).request(RequestKind::Send).add(5);
        metrics.shard(2).request(RequestKind::Pull).inc();
        metrics.shard(2).request(RequestKind::Pull).inc();
        metrics.shard(1).bytes_received_total.add(1_234);
        metrics.shard(1).connections.set(7);
        metrics.shard(1).connections.dec();
        metrics.shard(0).parked_pulls.sub(2);
        metrics
            .shard(2)
            .flush_latency
            .record(Duration::from_micros(1_700));
        metrics.topics.set(12);
        metrics.namesrv_registrations_failed_total.inc();
        let text = rendered(&metrics);

        let typed = check_exposition(&text);
        for family in [
            "ringmq_broker_info",
            "ringmq_uptime_seconds",
            "ringmq_requests_total",
            "ringmq_request_errors_total",
            "ringmq_bytes_received_total",
            "ringmq_bytes_sent_total",
            "ringmq_messages_stored_total",
            "ringmq_messages_delivered_total",
            "ringmq_connections",
            "ringmq_inflight_requests",
            "ringmq_cross_shard_queue_depth",
            "ringmq_parked_pulls",
            "ringmq_slave_wait_failures_total",
            "ringmq_replica_slaves",
            "ringmq_replica_lag_bytes",
            "ringmq_replica_lag_ms",
            "ringmq_send_latency_seconds",
            "ringmq_pull_latency_seconds",
            "ringmq_flush_latency_seconds",
            "ringmq_topics",
            "ringmq_consumer_groups",
            "ringmq_producer_groups",
            "ringmq_namesrv_registrations_ok_total",
            "ringmq_namesrv_registrations_failed_total",
            "ringmq_metadata_syncs_ok_total",
            "ringmq_metadata_syncs_failed_total",
            "ringmq_disk_used_ratio",
            "ringmq_disk_total_bytes",
            "ringmq_disk_available_bytes",
        ] {
            assert!(typed.contains(family), "missing {family}");
        }

        for (series, expected) in [
            ("ringmq_requests_total{shard=\"0\",kind=\"send\"}", 5.0),
            ("ringmq_requests_total{shard=\"2\",kind=\"pull\"}", 2.0),
            (
                "ringmq_requests_total{shard=\"1\",kind=\"send_batch\"}",
                0.0,
            ),
            ("ringmq_bytes_received_total{shard=\"1\"}", 1_234.0),
            ("ringmq_connections{shard=\"1\"}", 6.0),
            ("ringmq_parked_pulls{shard=\"0\"}", -2.0),
            (
                "ringmq_flush_latency_seconds_bucket{shard=\"2\",le=\"0.002\"}",
                1.0,
            ),
            ("ringmq_topics", 12.0),
            ("ringmq_namesrv_registrations_failed_total", 1.0),
            ("ringmq_namesrv_registrations_ok_total", 0.0),
        ] {
            assert_eq!(sample(&text, series), Some(expected), "{series}");
        }
        // Every request kind for every shard.
        for shard_index in 0..3 {
            for kind in RequestKind::ALL {
                let series = format!(
                    "ringmq_requests_total{{shard=\"{shard_index}\",kind=\"{}\"}}",
                    kind.name()
                );
                assert!(sample(&text, &series).is_some(), "{series}");
            }
        }
        let ratio = sample(&text, "ringmq_disk_used_ratio").unwrap();
        assert!((0.0..=1.0).contains(&ratio), "{ratio}");
        assert!(sample(&text, "ringmq_disk_total_bytes").unwrap() > 0.0);
    }

    #[test]
    fn disk_usage_is_skipped_when_the_store_directory_does_not_exist() {
        let missing = std::env::temp_dir().join(format!(
            "ringmq-metrics-missing-{}/store",
            std::process::id()
        ));
        let metrics = BrokerMetrics::new(1, missing, "broker-a".into());
        let text = rendered(&metrics);
        assert!(!text.contains("ringmq_disk_"), "{text}");
        assert!(text.contains("ringmq_uptime_seconds "));
    }

    #[test]
    fn broker_name_label_is_escaped() {
        let metrics = BrokerMetrics::new(1, std::env::temp_dir(), "a\"b\\c\nd".into());
        let text = rendered(&metrics);
        assert!(
            text.contains("ringmq_broker_info{broker=\"a\\\"b\\\\c\\nd\",version=\""),
            "{text}"
        );
    }

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
