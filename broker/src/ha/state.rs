//! What a master knows about its slaves, per shard: written by the HA threads, read by the
//! shard (SYNC_MASTER sends) and by metrics and GET_BROKER_RUNTIME_INFO.
//!
//! The shard's data path touches only atomics here. A SYNC_MASTER send that must wait counts
//! itself in `waiting`; an HA thread that raises `acked` while anyone waits asks the shard to
//! look again through a [`WakeShard`] (at most one wake queued at a time, `wake_queued`), and
//! the shard wakes the sends whose end the new mark covers.
//!
//! This module knows nothing of how a shard is woken (in the broker: a message on its inbox),
//! so HA state does not depend on the shard's message type and can be tested alone.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Instant,
};

/// How HA state asks a shard to look at its replicas again.
pub(crate) trait WakeShard {
    /// Queues one wake without blocking; `false` when it could not (the shard's queue is full
    /// or gone). A lost wake is made up by the shard's own periodic re-check.
    fn try_wake(&self) -> bool;
}

/// One connected slave of one shard.
#[derive(Debug)]
pub(crate) struct SlaveLink {
    pub peer: SocketAddr,
    pub broker_id: i64,
    /// What the slave last reported holding.
    acked: AtomicU64,
    /// The slave has reported at least once (until then `acked` means nothing).
    reported: AtomicBool,
    /// Ends of frames sent and not yet acknowledged, with when they were sent: the front's
    /// age is how far behind the slave is in time. Shared by this link's two threads only.
    unacked: Mutex<VecDeque<(u64, Instant)>>,
}

impl SlaveLink {
    pub(crate) fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Records a frame ending at `end` as sent.
    pub(crate) fn sent(&self, end: u64) {
        let mut unacked = self.unacked.lock().unwrap_or_else(PoisonError::into_inner);
        // Bounded: a slave that stops acknowledging is dropped by housekeeping long before.
        if unacked.len() < 65_536 {
            unacked.push_back((end, Instant::now()));
        }
    }

    /// How long the oldest unacknowledged frame has waited, in ms (0: caught up).
    pub(crate) fn lag_ms(&self) -> u64 {
        let unacked = self.unacked.lock().unwrap_or_else(PoisonError::into_inner);
        unacked
            .front()
            .map_or(0, |(_, sent)| sent.elapsed().as_millis() as u64)
    }

    fn ack(&self, offset: u64) {
        self.acked.fetch_max(offset, Ordering::SeqCst);
        let mut unacked = self.unacked.lock().unwrap_or_else(PoisonError::into_inner);
        while unacked.front().is_some_and(|(end, _)| *end <= offset) {
            unacked.pop_front();
        }
    }
}

/// The slaves of one shard (master side).
#[derive(Debug, Default)]
pub(crate) struct ShardReplicas {
    /// The highest offset a connected slave holds.
    acked: AtomicU64,
    /// SYNC_MASTER sends of this shard waiting for `acked`.
    waiting: AtomicUsize,
    /// A wake is queued for the shard and not taken yet.
    wake_queued: AtomicBool,
    /// `links.len()`, readable without the lock (the send path checks it).
    count: AtomicUsize,
    /// Links that have reported at least once.
    reported: AtomicUsize,
    links: Mutex<Vec<Arc<SlaveLink>>>,
}

impl ShardReplicas {
    /// Adds a connected slave; it holds nothing for SYNC_MASTER until its first report.
    /// Waiting sends are woken (a send that found no slave re-checks).
    pub(crate) fn connect(
        &self,
        peer: SocketAddr,
        broker_id: i64,
        wake: &impl WakeShard,
    ) -> Arc<SlaveLink> {
        let link = Arc::new(SlaveLink {
            peer,
            broker_id,
            acked: AtomicU64::new(0),
            reported: AtomicBool::new(false),
            unacked: Mutex::new(VecDeque::new()),
        });
        let mut links = self.links();
        links.push(Arc::clone(&link));
        self.count.store(links.len(), Ordering::SeqCst);
        self.recompute_acked(&links);
        drop(links);
        self.wake_shard(wake);
        link
    }

    /// Removes a slave whose connection ended; waiting sends are woken to re-check.
    pub(crate) fn disconnect(&self, link: &Arc<SlaveLink>, wake: &impl WakeShard) {
        let mut links = self.links();
        links.retain(|l| !Arc::ptr_eq(l, link));
        self.count.store(links.len(), Ordering::SeqCst);
        let reported = links
            .iter()
            .filter(|l| l.reported.load(Ordering::SeqCst))
            .count();
        self.reported.store(reported, Ordering::SeqCst);
        self.recompute_acked(&links);
        drop(links);
        self.wake_shard(wake);
    }

    /// A slave reported holding everything below `offset`.
    pub(crate) fn acknowledge(&self, link: &SlaveLink, offset: u64, wake: &impl WakeShard) {
        link.ack(offset);
        // Under the lock, so a concurrent connect or disconnect cannot store an older maximum
        // over this one.
        let links = self.links();
        let before = self.acked.fetch_max(offset, Ordering::SeqCst);
        if !link.reported.swap(true, Ordering::SeqCst) {
            self.reported.fetch_add(1, Ordering::SeqCst);
        }
        drop(links);
        if offset > before && self.waiting.load(Ordering::SeqCst) > 0 {
            self.wake_shard(wake);
        }
    }

    fn wake_shard(&self, wake: &impl WakeShard) {
        if !self.wake_queued.swap(true, Ordering::SeqCst) && !wake.try_wake() {
            // A full queue: the next acknowledgement tries again (waiters also time out).
            self.wake_queued.store(false, Ordering::SeqCst);
        }
    }

    /// The shard took the wake message: later acknowledgements may queue another.
    pub(crate) fn wake_taken(&self) {
        self.wake_queued.store(false, Ordering::SeqCst);
    }

    /// Sets `acked` from the links (the caller holds their lock).
    fn recompute_acked(&self, links: &[Arc<SlaveLink>]) {
        let best = links.iter().map(|l| l.acked()).max().unwrap_or(0);
        self.acked.store(best, Ordering::SeqCst);
    }

    pub(crate) fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    pub(crate) fn connected(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Whether any connected slave has reported what it holds (so `acked` is meaningful for
    /// the fall-behind check).
    pub(crate) fn any_reported(&self) -> bool {
        self.reported.load(Ordering::SeqCst) > 0
    }

    /// SYNC_MASTER sends waiting right now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Counts a send as waiting (call before checking [`ShardReplicas::acked`]).
    pub(crate) fn start_waiting(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn stop_waiting(&self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    /// Lag of the best slave: (bytes behind `written`, ms its oldest unacknowledged frame has
    /// waited), or `None` without slaves.
    pub(crate) fn lag(&self, written: u64) -> Option<(u64, u64)> {
        let links = self.links();
        let best = links.iter().max_by_key(|l| l.acked())?;
        Some((written.saturating_sub(best.acked()), best.lag_ms()))
    }

    /// Connected slaves: (broker id, peer, acknowledged offset), for GET_BROKER_RUNTIME_INFO.
    pub(crate) fn slaves(&self) -> Vec<(i64, SocketAddr, u64)> {
        self.links()
            .iter()
            .map(|l| (l.broker_id, l.peer, l.acked()))
            .collect()
    }

    fn links(&self) -> std::sync::MutexGuard<'_, Vec<Arc<SlaveLink>>> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a slave knows about its own replication, per shard.
#[derive(Debug, Default)]
pub(crate) struct SlaveProgress {
    /// Connected to the master and streaming.
    pub connected: AtomicBool,
    /// The master's position in its last frame (data or heartbeat).
    pub master_offset: AtomicU64,
    /// When that frame arrived (ms since the epoch).
    pub master_seen_ms: AtomicU64,
}

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

/// The replication lag of a shard whose log's written end is `written`, at `now_ms`: from
/// `progress` on a slave, from `replicas` on a master.
pub(crate) fn replica_lag(
    is_slave: bool,
    progress: &SlaveProgress,
    replicas: &ShardReplicas,
    written: u64,
    now_ms: i64,
) -> ReplicaLag {
    if is_slave {
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
                (now_ms as u64).saturating_sub(seen_ms)
            },
        };
    }
    match replicas.lag(written) {
        Some((bytes, ms)) => ReplicaLag {
            slaves: replicas.connected(),
            bytes,
            ms,
        },
        None => ReplicaLag::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Counts wakes; refuses them while `full`.
    #[derive(Default)]
    struct FakeShard {
        wakes: Cell<usize>,
        full: Cell<bool>,
    }

    impl WakeShard for FakeShard {
        fn try_wake(&self) -> bool {
            if self.full.get() {
                return false;
            }
            self.wakes.set(self.wakes.get() + 1);
            true
        }
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 10_912))
    }

    #[test]
    fn one_wake_is_queued_at_a_time_and_a_lost_one_is_retried() {
        let replicas = ShardReplicas::default();
        let shard = FakeShard::default();
        let link = replicas.connect(peer(), 1, &shard);
        assert_eq!(shard.wakes.get(), 1, "a new slave wakes waiting sends");
        replicas.start_waiting();
        replicas.acknowledge(&link, 100, &shard);
        assert_eq!(shard.wakes.get(), 1, "the first wake is not taken yet");
        replicas.wake_taken();
        shard.full.set(true);
        replicas.acknowledge(&link, 200, &shard);
        shard.full.set(false);
        replicas.acknowledge(&link, 300, &shard);
        assert_eq!(
            shard.wakes.get(),
            2,
            "a refused wake does not block the next"
        );
        assert_eq!(replicas.acked(), 300);
        replicas.disconnect(&link, &shard);
        assert_eq!((replicas.connected(), replicas.acked()), (0, 0));
    }

    #[test]
    fn a_slave_behind_its_master_counts_time_since_the_last_frame() {
        let progress = SlaveProgress::default();
        let replicas = ShardReplicas::default();
        assert_eq!(
            replica_lag(true, &progress, &replicas, 0, 5_000),
            ReplicaLag::default()
        );
        progress.connected.store(true, Ordering::SeqCst);
        progress.master_offset.store(1_000, Ordering::SeqCst);
        progress.master_seen_ms.store(4_000, Ordering::SeqCst);
        assert_eq!(
            replica_lag(true, &progress, &replicas, 600, 5_000),
            ReplicaLag {
                slaves: 1,
                bytes: 400,
                ms: 1_000
            }
        );
        assert_eq!(
            replica_lag(true, &progress, &replicas, 1_000, 9_000).ms,
            0,
            "caught up"
        );
    }
}
