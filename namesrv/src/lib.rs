//! # ringmq-namesrv
//!
//! The RocketMQ-compatible NameServer (DESIGN.md §1, PROTOCOL.md §3.3 and §7). It will own the route
//! registry (cluster, broker-address, topic-queue and broker-liveness tables), broker expiry by
//! scan, route assembly for GET_ROUTEINFO_BY_TOPIC, the KV-config namespace, and a server that runs
//! either as the `ringmq-namesrv` binary or embedded on a side thread of a broker.
//!
//! Nothing is implemented yet: this crate is a placeholder so the workspace has its final shape.
