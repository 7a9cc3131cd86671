//! Master/slave replication (DESIGN.md §6, PROTOCOL.md §8), on side threads: never on a shard.

pub(crate) mod locator;
pub(crate) mod metadata_sync;
