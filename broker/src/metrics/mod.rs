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
//! Every load and store uses [`Ordering::Relaxed`](std::sync::atomic::Ordering::Relaxed). A
//! metric is an independent number: no other memory is published through it, so no
//! happens-before edge is needed. Relaxed still
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
//!
//! # Layout
//!
//! - `primitives`: [`Counter`], [`Gauge`], [`Histogram`] (atomics, no allocation).
//! - `catalogue`: which metrics exist: [`ShardMetrics`], [`BrokerMetrics`], [`RequestKind`]
//!   and the tables of family names and help texts.
//! - `render`: the Prometheus text format ([`BrokerMetrics::render`]).
//! - `http`: the scrape endpoint ([`MetricsServer`]).
//!
//! Everything public is re-exported here: `ringmq_broker::metrics::X` is the path to use.
//!
//! # Why the HTTP server is hand-written
//!
//! A small HTTP crate (tiny_http is the usual candidate) was weighed against the ~350 lines of
//! `http` and is not lighter for this job. The endpoint answers one path for a scraper that
//! comes every few seconds, and what matters is what a bad client cannot do: the request head
//! is capped at 8 KiB (431), must arrive whole within 2 s however slowly it trickles (408),
//! the response must be taken within 2 s, one thread serves one connection at a time, every
//! connection is closed after one answer, and unread input is drained so the answer is not
//! lost to a reset. tiny_http would bring its own accept thread, worker threads and keep-alive
//! handling and four more crates into the broker's build, and those limits are not settings it
//! offers, so they would have to be re-built around it (per-socket timeouts set from the
//! outside, a size check after it has already buffered the head). The hand-written server
//! states each limit once, has a test for each, and needs nothing but `std`.

mod catalogue;
mod http;
mod primitives;
mod render;

pub use catalogue::{BrokerMetrics, RequestKind, ShardMetrics};
pub use http::MetricsServer;
pub use primitives::{
    Counter, Gauge, Histogram, HistogramSnapshot, LATENCY_BUCKET_BOUNDS_US, LATENCY_BUCKET_COUNT,
};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod test_support {
    use super::BrokerMetrics;

    pub(super) fn metrics(shard_count: usize) -> BrokerMetrics {
        BrokerMetrics::new(shard_count, std::env::temp_dir(), "broker-a".into())
    }

    pub(super) fn rendered(metrics: &BrokerMetrics) -> String {
        let mut out = String::new();
        metrics.render(&mut out);
        out
    }

    /// The value of the sample line `series` (name plus labels, exactly as rendered).
    pub(super) fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
    }
}
