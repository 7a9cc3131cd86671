//! # ringmq-broker
//!
//! The thread-per-core broker (DESIGN.md §3, §6, §7). It will own the shards (one per core, each
//! with its own compio runtime, listener, commit log and queues), the request handlers for every
//! client command of PROTOCOL.md §9, long polling, topic configuration, NameServer registration
//! and master/slave replication, and the `ringmq-broker` binary.
//!
//! What exists so far: [`config`], the broker's configuration (RocketMQ `broker.conf` keys,
//! command-line overrides, validation that names the offending key), read by the `properties`
//! module's Java-properties parser.

pub mod config;
mod properties;
