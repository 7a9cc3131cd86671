//! Master/slave replication (docs/architecture.md §6, docs/protocol.md §8). The network side runs on side
//! threads ([`master`], [`slave`]), never on a shard; what needs the store runs on the shard
//! that owns it ([`shard_side`]).

pub(crate) mod locator;
pub(crate) mod master;
pub(crate) mod metadata_sync;
pub(crate) mod shard_side;
pub(crate) mod slave;
pub(crate) mod state;
pub(crate) mod wire;

use std::sync::atomic::Ordering;

use crate::{config::BrokerRole, shared::BrokerShared};

/// Replication state of one shard, as metrics and GET_BROKER_RUNTIME_INFO show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReplicaLag {
    /// Master: slaves connected. Slave: 1 while connected to the master.
    pub slaves: usize,
    /// Master: bytes the best slave is behind this shard's written end. Slave: bytes the master
    /// had sent (at its last frame) beyond this shard's written end.
    pub bytes: u64,
    /// Master: age of the best slave's oldest unacknowledged frame. Slave: while behind, time
    /// since the last frame from the master.
    pub ms: u64,
}

/// The replication lag of `shard`, whose log's written end is `written`.
pub(crate) fn replica_lag(shared: &BrokerShared, shard: usize, written: u64) -> ReplicaLag {
    if shared.config.broker_role == BrokerRole::Slave {
        let progress = &shared.slave_progress[shard];
        if !progress.connected.load(Ordering::SeqCst) {
            return ReplicaLag::default();
        }
        let seen_ms = progress.master_seen_ms.load(Ordering::SeqCst);
        let bytes = progress
            .master_offset
            .load(Ordering::SeqCst)
            .saturating_sub(written);
        return ReplicaLag {
            slaves: 1,
            bytes,
            // Behind: for how long nothing arrived. Caught up (an idle master sends only
            // heartbeats): no lag.
            ms: if bytes == 0 {
                0
            } else {
                (crate::now_ms() as u64).saturating_sub(seen_ms)
            },
        };
    }
    let replicas = &shared.replicas[shard];
    match replicas.lag(written) {
        Some((bytes, ms)) => ReplicaLag {
            slaves: replicas.connected(),
            bytes,
            ms,
        },
        None => ReplicaLag::default(),
    }
}
