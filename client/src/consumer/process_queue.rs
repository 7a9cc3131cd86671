//! Per-queue bookkeeping of a push consumer, shared by the queue's pull task (I/O thread) and the
//! consume thread.
//!
//! Invariants:
//! - every message pulled and not yet done (handled successfully or sent back) has its offset in
//!   `in_flight`, whether it waits in `pending`, is in the handler, or waits for a redelivery;
//! - the committable offset is the smallest offset in `in_flight`, or the next pull offset when
//!   nothing is in flight: committing it can never skip a message that was not done;
//! - `scheduled` is a token: while it is set, the consume thread holds this queue in its work
//!   list (or is serving it) and will look at `pending` again, so the pull task sends a wake-up
//!   only when it sets the token; only the consume thread clears it, and only after seeing
//!   `pending` empty under the same lock;
//! - once dropped (rebalanced away, consumer stopping) a queue takes no messages and hands none
//!   out; what was in flight is left to the next owner, who reads from the committed offset.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::message::{MessageQueue, ReceivedMessage};

/// How long a queue lock counts as held without a renewal (RocketMQ
/// `rocketmq.client.rebalance.lockMaxLiveTime`: 30 s, half the broker's 60 s lease).
pub(crate) const LOCK_VALIDITY: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct State {
    /// Pulled, not yet handed to the handler, by queue offset.
    pending: BTreeMap<i64, ReceivedMessage>,
    /// Every offset pulled and not yet done, with its message's body size in bytes.
    in_flight: BTreeMap<i64, u64>,
    /// Sum of the body sizes in `in_flight` (flow control by bytes).
    in_flight_bytes: u64,
    /// Where the next pull reads.
    next_offset: i64,
    /// The consume thread holds this queue (see the module invariants).
    scheduled: bool,
    /// Orderly: consecutive failed attempts of the batch at the head of the queue.
    attempts: u32,
    /// Orderly: when the broker last confirmed this client's lock on the queue.
    locked_at: Option<Instant>,
    /// The offset last committed (to the broker or the local store).
    committed: Option<i64>,
}

/// One assigned queue of a push consumer.
#[derive(Debug)]
pub(crate) struct ProcessQueue {
    queue: MessageQueue,
    dropped: AtomicBool,
    /// The handler is running a batch of this queue (orderly consumers unlock a dropped queue
    /// only once it is not).
    consuming: AtomicBool,
    state: Mutex<State>,
}

impl ProcessQueue {
    /// A queue whose first pull reads `offset`.
    pub(crate) fn new(queue: MessageQueue, offset: i64) -> Self {
        Self {
            queue,
            dropped: AtomicBool::new(false),
            consuming: AtomicBool::new(false),
            state: Mutex::new(State {
                pending: BTreeMap::new(),
                in_flight: BTreeMap::new(),
                in_flight_bytes: 0,
                next_offset: offset,
                scheduled: false,
                attempts: 0,
                locked_at: None,
                committed: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic never happens while the lock is held (no user code runs under it); should
        // one happen anyway, the state is still consistent enough to go on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) const fn queue(&self) -> &MessageQueue {
        &self.queue
    }

    /// Stops the queue: no more messages in or out.
    pub(crate) fn mark_dropped(&self) {
        self.dropped.store(true, Ordering::Release);
    }

    pub(crate) fn is_dropped(&self) -> bool {
        self.dropped.load(Ordering::Acquire)
    }

    /// Consume thread: the handler starts or ends a batch of this queue.
    pub(crate) fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Release);
    }

    /// Whether the handler is running a batch of this queue.
    pub(crate) fn is_consuming(&self) -> bool {
        self.consuming.load(Ordering::Acquire)
    }

    /// Where the next pull reads.
    pub(crate) fn next_offset(&self) -> i64 {
        self.state().next_offset
    }

    /// Messages pulled and not yet done (flow control).
    pub(crate) fn backlog(&self) -> usize {
        self.state().in_flight.len()
    }

    /// Body bytes of the messages pulled and not yet done (flow control).
    pub(crate) fn backlog_bytes(&self) -> u64 {
        self.state().in_flight_bytes
    }

    /// Distance from the oldest offset not done to the newest one (0 when at most one is in
    /// flight): RocketMQ's `getMaxSpan`, which concurrent consumers keep bounded.
    pub(crate) fn span(&self) -> u64 {
        let state = self.state();
        match (
            state.in_flight.first_key_value(),
            state.in_flight.last_key_value(),
        ) {
            (Some((&first, _)), Some((&last, _))) => last.abs_diff(first),
            _ => 0,
        }
    }

    /// Adds pulled messages and moves the next pull to `next_offset`. True when the caller must
    /// wake the consume thread (it just took the token).
    pub(crate) fn put(&self, messages: Vec<ReceivedMessage>, next_offset: i64) -> bool {
        if self.is_dropped() {
            return false;
        }
        let mut state = self.state();
        for message in messages {
            let bytes = message.body.len() as u64;
            if let std::collections::btree_map::Entry::Vacant(entry) =
                state.in_flight.entry(message.queue_offset)
            {
                entry.insert(bytes);
                state.in_flight_bytes = state.in_flight_bytes.saturating_add(bytes);
                state.pending.insert(message.queue_offset, message);
            }
        }
        state.next_offset = next_offset;
        if !state.pending.is_empty() && !state.scheduled {
            state.scheduled = true;
            true
        } else {
            false
        }
    }

    /// Moves the next pull to `next_offset` (nothing found, nothing matched, offset moved).
    pub(crate) fn advance(&self, next_offset: i64) {
        self.state().next_offset = next_offset;
    }

    /// The offset safe to commit: the smallest one not yet done.
    pub(crate) fn committable(&self) -> i64 {
        let state = self.state();
        state
            .in_flight
            .first_key_value()
            .map_or(state.next_offset, |(&first, _)| {
                first.min(state.next_offset)
            })
    }

    /// The committable offset, when it differs from the last one committed.
    pub(crate) fn commit_candidate(&self) -> Option<i64> {
        let state = self.state();
        let offset = state
            .in_flight
            .first_key_value()
            .map_or(state.next_offset, |(&first, _)| {
                first.min(state.next_offset)
            });
        (state.committed != Some(offset)).then_some(offset)
    }

    /// Records a successful commit of `offset`.
    pub(crate) fn mark_committed(&self, offset: i64) {
        self.state().committed = Some(offset);
    }

    /// Consume thread: the next up to `max` pending messages in offset order. `None` (and the
    /// token released) when there are none or the queue is dropped.
    pub(crate) fn take_batch(&self, max: usize) -> Option<Vec<ReceivedMessage>> {
        let mut state = self.state();
        if self.is_dropped() || state.pending.is_empty() {
            state.scheduled = false;
            return None;
        }
        let mut batch = Vec::with_capacity(max.min(state.pending.len()));
        while batch.len() < max {
            let Some((_, message)) = state.pending.pop_first() else {
                break;
            };
            batch.push(message);
        }
        Some(batch)
    }

    /// Consume thread, after serving the queue: true when it must serve it again (messages are
    /// pending; the token is kept), false when the token was released.
    pub(crate) fn keep_token(&self) -> bool {
        let mut state = self.state();
        if !self.is_dropped() && !state.pending.is_empty() {
            true
        } else {
            state.scheduled = false;
            false
        }
    }

    /// Marks messages done: their offsets leave the in-flight set.
    pub(crate) fn done<I: IntoIterator<Item = i64>>(&self, offsets: I) {
        let mut state = self.state();
        for offset in offsets {
            if let Some(bytes) = state.in_flight.remove(&offset) {
                state.in_flight_bytes = state.in_flight_bytes.saturating_sub(bytes);
            }
        }
    }

    /// Orderly: returns a failed batch to the head of the queue.
    pub(crate) fn put_back(&self, batch: Vec<ReceivedMessage>) {
        let mut state = self.state();
        for message in batch {
            state.pending.insert(message.queue_offset, message);
        }
    }

    /// Orderly: counts a failed attempt of the head batch; returns the count.
    pub(crate) fn bump_attempts(&self) -> u32 {
        let mut state = self.state();
        state.attempts = state.attempts.saturating_add(1);
        state.attempts
    }

    /// Orderly: the head batch is done.
    pub(crate) fn reset_attempts(&self) {
        self.state().attempts = 0;
    }

    /// Orderly: the failed attempts so far of the head batch.
    pub(crate) fn attempts(&self) -> u32 {
        self.state().attempts
    }

    /// Orderly: records the broker's answer to a lock request.
    pub(crate) fn set_locked(&self, locked: bool, now: Instant) {
        self.state().locked_at = locked.then_some(now);
    }

    /// Orderly: whether this client holds the queue's lock (confirmed within
    /// [`LOCK_VALIDITY`]).
    pub(crate) fn is_locked(&self, now: Instant) -> bool {
        self.state()
            .locked_at
            .is_some_and(|at| now.saturating_duration_since(at) < LOCK_VALIDITY)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use bytes::Bytes;

    fn message(offset: i64) -> ReceivedMessage {
        ReceivedMessage::for_test(offset, 0)
    }

    fn queue() -> ProcessQueue {
        ProcessQueue::new(
            MessageQueue {
                broker_name: "b".into(),
                queue_id: 0,
                topic: "t".into(),
            },
            10,
        )
    }

    #[test]
    fn committable_offset_is_the_smallest_not_done() {
        let pq = queue();
        assert_eq!(pq.committable(), 10, "nothing pulled: the next pull offset");
        // A filtered pull: offsets 10, 12, 13 matched, the next pull reads 15.
        assert!(pq.put(vec![message(10), message(12), message(13)], 15));
        assert_eq!(pq.backlog(), 3);
        assert_eq!(pq.committable(), 10);
        let batch = pq.take_batch(2).unwrap();
        assert_eq!(
            batch.iter().map(|m| m.queue_offset).collect::<Vec<_>>(),
            [10, 12]
        );
        // Out-of-order completion: 12 done before 10 does not move the offset.
        pq.done([12]);
        assert_eq!(pq.committable(), 10);
        pq.done([10]);
        assert_eq!(pq.committable(), 13, "13 is still pending");
        let rest = pq.take_batch(32).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(pq.commit_candidate(), Some(13));
        pq.mark_committed(13);
        assert_eq!(
            pq.commit_candidate(),
            None,
            "unchanged since the last commit"
        );
        pq.done([13]);
        assert_eq!(pq.committable(), 15, "all done: the next pull offset");
        pq.advance(20);
        assert_eq!(pq.committable(), 20);
        assert_eq!(pq.backlog(), 0);
    }

    #[test]
    fn the_wake_token_is_taken_once_and_released_when_empty() {
        let pq = queue();
        assert!(
            pq.put(vec![message(10)], 11),
            "first messages take the token"
        );
        assert!(
            !pq.put(vec![message(11)], 12),
            "token already held: no second wake"
        );
        let batch = pq.take_batch(1).unwrap();
        assert!(pq.keep_token(), "11 is still pending");
        pq.done(batch.iter().map(|m| m.queue_offset));
        let batch = pq.take_batch(1).unwrap();
        assert!(!pq.keep_token(), "empty: token released");
        assert!(pq.put(vec![message(12)], 13), "next messages wake again");
        // A redelivered duplicate is not counted twice.
        assert!(!pq.put(vec![message(12)], 13));
        assert_eq!(pq.backlog(), 2, "11 (in the handler) and 12");
        pq.done(batch.iter().map(|m| m.queue_offset));
        pq.mark_dropped();
        assert!(
            pq.take_batch(8).is_none(),
            "a dropped queue hands nothing out"
        );
        assert!(!pq.put(vec![message(13)], 14));
    }

    #[test]
    fn flow_control_counts_bytes_and_span() {
        let pq = queue();
        let sized = |offset: i64, bytes: usize| {
            let mut m = message(offset);
            m.body = Bytes::from(vec![0u8; bytes]);
            m
        };
        pq.put(vec![sized(10, 100), sized(11, 50), sized(2010, 7)], 2011);
        assert_eq!(pq.backlog_bytes(), 157);
        assert_eq!(pq.span(), 2000);
        // A redelivered duplicate is not counted twice.
        pq.put(vec![sized(11, 50)], 2011);
        assert_eq!(pq.backlog_bytes(), 157);
        pq.done([10]);
        assert_eq!(pq.backlog_bytes(), 57);
        assert_eq!(pq.span(), 1999);
        pq.done([11, 2010, 99]);
        assert_eq!((pq.backlog_bytes(), pq.span(), pq.backlog()), (0, 0, 0));
    }

    #[test]
    fn orderly_batches_go_back_to_the_head() {
        let pq = queue();
        pq.put(vec![message(10), message(11), message(12)], 13);
        let batch = pq.take_batch(2).unwrap();
        assert_eq!(pq.bump_attempts(), 1);
        pq.put_back(batch);
        let again = pq.take_batch(2).unwrap();
        assert_eq!(
            again.iter().map(|m| m.queue_offset).collect::<Vec<_>>(),
            [10, 11]
        );
        assert_eq!(pq.attempts(), 1);
        pq.reset_attempts();
        assert_eq!(pq.attempts(), 0);
        let now = Instant::now();
        assert!(!pq.is_locked(now));
        pq.set_locked(true, now);
        assert!(pq.is_locked(now));
        assert!(!pq.is_locked(now + LOCK_VALIDITY));
    }
}
