//! # ringmq-controller
//!
//! Automatic failover for broker groups, in the model of Apache RocketMQ 5's controller: the
//! controller keeps, per broker group, its replicas, its master, the master's epoch and the
//! in-sync replica set, and elects a new master from that set when the master stops
//! heartbeating. The data path stays master/slave replication; only this small table needs
//! consensus.
//!
//! - [`state`]: the replicated table and the commands that change it, pure and deterministic.
//! - [`election`]: who is alive and whom an election names, decided by each controller from
//!   the heartbeats it receives.
//! - [`raft`]: openraft's storage and transport for the table.
//! - [`node`]: one controller: Raft, liveness, proposals and the leader's election watch.
//! - [`server`]: the controller's port (remoting requests from brokers, tools and peers).
//! - [`service`]: starting a controller, standalone or embedded in another process.
//! - [`wire`]: remoting frames over tokio sockets.

pub mod election;
pub mod node;
pub mod raft;
pub mod server;
pub mod service;
pub mod state;
pub mod wire;
