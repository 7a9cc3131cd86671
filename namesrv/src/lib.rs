//! # ringmq-namesrv
//!
//! The RocketMQ-compatible NameServer (docs/architecture.md §1, docs/protocol.md §3.3 and §7): the route
//! registry brokers register with and clients ask for routes. It runs as the `ringmq-namesrv`
//! binary or embedded in a broker ([`NameServer::start`] on its own threads).
//!
//! - [`registry`]: RocketMQ's RouteInfoManager tables and rules, pure and unit-tested.
//! - The server: worker threads with compio runtimes share one listener. Route queries read a
//!   snapshot of encoded route bodies (one `Arc` clone under a read lock), so a broker's
//!   registration, decoded before the registry lock and published as a new snapshot, never
//!   makes route queries wait.
//! - Liveness: every registration refreshes a broker; a scan every `scan_interval` removes
//!   brokers silent for `broker_expiry`; a broker whose connection closes is removed at once.
//!   NameServers know nothing of each other; brokers register with all of them.

pub mod registry;
mod server;
mod service;
mod state;

pub use server::{NameServer, NamesrvConfig};
