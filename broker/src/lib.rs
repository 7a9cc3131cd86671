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
mod messages;
mod metadata;
pub mod metrics;
mod offsets;
mod properties;
mod published;
mod registration;
mod rpc;
mod shard;
mod shared;
mod topics;

pub use broker::Broker;
pub use error::BrokerError;
