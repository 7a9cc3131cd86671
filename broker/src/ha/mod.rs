//! Master/slave replication (docs/architecture.md §6, docs/protocol.md §8). The network side runs on side
//! threads ([`master`], [`slave`]), never on a shard; what needs the store runs on the shard
//! that owns it ([`shard_side`]).
//!
//! Two layers, so the module graph stays acyclic: [`state`], [`locator`] and [`wire`] are
//! leaves (what the threads share, where the master is, the HA port's byte format) that
//! `crate::shared` holds; [`master`], [`slave`], [`metadata_sync`] and [`shard_side`] are the
//! services that use them and the broker's shared state.

pub(crate) mod locator;
pub(crate) mod master;
pub(crate) mod metadata_sync;
pub(crate) mod shard_side;
pub(crate) mod slave;
pub(crate) mod state;
pub(crate) mod wire;
