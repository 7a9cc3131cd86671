//! # ringmq-broker
//!
//! The thread-per-core broker (docs/architecture.md §3, docs/operations.md): shards (one per core, each with its own
//! compio runtime, SO_REUSEPORT listeners, commit log, consume queues, consumer offsets, parked
//! pulls and connections), the request handlers for every client command of docs/protocol.md §9,
//! NameServer registration (or an embedded NameServer), Prometheus metrics and the
//! `ringmq-broker` binary.
//!
//! ```text
//!  client ──► shard k (accepted the connection) ──route──► shard owning (topic, queue)
//!                 ▲                                             │ store append / read
//!                 └──────────── answer (Deliver) ◄──────────────┘
//! ```
//!
//! Start one with [`Broker::start`]; the binary adds flags, `broker.conf` and signals.

mod broker;
mod clients;
pub mod config;
mod connection;
mod error;
mod ha;
mod handler;
mod longpoll;
mod metadata;
pub mod metrics;
mod properties;
mod published;
mod registration;
mod shard;
mod shared;
mod topics;

pub use broker::Broker;
pub use error::BrokerError;

/// Wall-clock milliseconds since the Unix epoch (store timestamps, as RocketMQ uses).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
