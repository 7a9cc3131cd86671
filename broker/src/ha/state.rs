//! What a master knows about its slaves, per shard: written by the HA threads, read by the
//! shard (SYNC_MASTER sends) and by metrics and GET_BROKER_RUNTIME_INFO.
//!
//! The shard's data path touches only atomics here. A SYNC_MASTER send that must wait counts
//! itself in `waiting`; an HA thread that raises `acked` while anyone waits queues one
//! [`ShardMessage::ReplicaAcked`] (at most one at a time, `wake_queued`), and the shard wakes
//! the sends whose end the new mark covers.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Instant,
};

use crate::shared::ShardMessage;

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
    /// A [`ShardMessage::ReplicaAcked`] is in the shard's inbox.
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
        inbox: &flume::Sender<ShardMessage>,
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
        self.wake_shard(inbox);
        link
    }

    /// Removes a slave whose connection ended; waiting sends are woken to re-check.
    pub(crate) fn disconnect(&self, link: &Arc<SlaveLink>, inbox: &flume::Sender<ShardMessage>) {
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
        self.wake_shard(inbox);
    }

    /// A slave reported holding everything below `offset`.
    pub(crate) fn acknowledge(
        &self,
        link: &SlaveLink,
        offset: u64,
        inbox: &flume::Sender<ShardMessage>,
    ) {
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
            self.wake_shard(inbox);
        }
    }

    fn wake_shard(&self, inbox: &flume::Sender<ShardMessage>) {
        if !self.wake_queued.swap(true, Ordering::SeqCst)
            && inbox.try_send(ShardMessage::ReplicaAcked).is_err()
        {
            // A full inbox: the next acknowledgement tries again (waiters also time out).
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
