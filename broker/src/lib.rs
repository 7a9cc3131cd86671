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
//!                 └──────── answer (batched hand-off) ◄─────────┘
//! ```
//!
//! Start one with [`Broker::start`]; the binary adds flags, `broker.conf` and signals.
//!
//! # Module graph
//!
//! Who imports whom (`a ──► b`: `a` uses `b`). Every module imports only modules listed below
//! it, so the graph has no cycle; a module and its own submodules (`handler::*`, `metrics::*`)
//! count as one.
//!
//! ```text
//!  broker ───────────────► shard::run, ha::{master, slave, metadata_sync}, registration,
//!                          shared, messages, metrics, error, config
//!  shard::run ───────────► shard::connection_io, handler, ha::shard_side, metadata,
//!                          shard::context, shared, messages, error   (the thread, its tasks,
//!                                                                     the inbox dispatch)
//!  shard::connection_io ─► handler, shard::context, connection       (reader/writer loops)
//!  handler::* ───────────► ha::shard_side, metadata, shard::context, messages, topics
//!  ha::shard_side ───────► shard::context, ha::slave (ReplicaCommand)
//!  ha::metadata_sync ────► metadata, rpc, shared, messages
//!  ha::{master, slave} ──► shared, ha::{state, wire}
//!  registration ─────────► rpc, shared
//!  metadata ─────────────► shared, messages, topics, error           (topic table's writer)
//!  shard::context ───────► shared, connection, offsets, messages, topics, longpoll, published,
//!                          handoff
//!  handoff ──────────────► messages                                  (batched cross-shard sends)
//!  shared ───────────────► messages, ha::{state, locator}, metrics, topics, clients,
//!                          published, config                         (BrokerShared)
//!  connection ───────────► messages                                  (per-connection state)
//!  messages ─────────────► clients, error                            (what shards send)
//!  leaves ───────────────  topics, offsets (► topics), clients, longpoll, published, rpc,
//!                          error (► config), config (► properties), properties, metrics::*,
//!                          ha::{state, locator, wire}
//! ```
//!
//! The rules that keep it so: handlers and the HA shard side depend on the shard's context,
//! never on its run loop; HA state wakes a shard through `ha::state::WakeShard` instead of
//! naming `messages::ShardMessage`; logic two layers share (consumer-offset rules, the
//! blocking RPC client) lives in a leaf both import. To check after a change, list the crate
//! paths each file uses (`grep -rn "crate::" broker/src`, skipping doc comments and test
//! modules) and confirm each sits below its file above.

mod broker;
mod clients;
pub mod config;
mod connection;
mod error;
mod ha;
mod handler;
mod handoff;
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
