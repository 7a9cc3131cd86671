//! Per-connection bookkeeping of the hot loop: the table of outstanding requests keyed by
//! `opaque`, the send pacer, and how caps are split between connections.

use std::time::{Duration, Instant};

/// Bits of an opaque that index the slot; the rest is the slot's generation.
const SLOT_BITS: u32 = 16;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
/// Generations use 15 bits so every opaque is a non-negative `i32`, as Java's counter is for its
/// first 2^31 requests (a peer logging opaques never sees a negative one).
const GENERATION_MASK: u32 = (1 << 15) - 1;

#[derive(Debug, Clone)]
struct Slot<T> {
    generation: u32,
    entry: Option<T>,
}

/// Outstanding requests of one connection, matched by `opaque` in O(1) with no allocation after
/// construction.
///
/// An opaque is `generation << 16 | slot`. Responses may arrive in any order (a broker may finish a
/// SYNC_FLUSH send on one queue after a later one on another), so slots are recycled through a free
/// list rather than as a ring; the generation, bumped on every reuse, makes a late or duplicated
/// response for a recycled slot miss instead of completing the wrong request.
#[derive(Debug, Clone)]
pub struct PendingTable<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

impl<T> PendingTable<T> {
    /// A table of `capacity` slots (1 to 65,536).
    pub fn new(capacity: usize) -> Self {
        assert!(
            (1..=1 << SLOT_BITS).contains(&capacity),
            "pending table capacity {capacity} out of range"
        );
        Self {
            slots: (0..capacity)
                .map(|_| Slot {
                    generation: 0,
                    entry: None,
                })
                .collect(),
            // Popped from the back: slot 0 first.
            free: (0..capacity as u32).rev().collect(),
        }
    }

    /// Outstanding requests.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.free.len() == self.slots.len()
    }

    /// Free slots.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Stores `entry` and returns the opaque to send it under; `None` when the table is full.
    pub fn insert(&mut self, entry: T) -> Option<i32> {
        let index = self.free.pop()?;
        let slot = &mut self.slots[index as usize];
        debug_assert!(slot.entry.is_none(), "free slot {index} is occupied");
        slot.generation = (slot.generation + 1) & GENERATION_MASK;
        slot.entry = Some(entry);
        Some(((slot.generation << SLOT_BITS) | index) as i32)
    }

    /// Takes the entry sent under `opaque`; `None` for an opaque this table did not hand out or
    /// already completed.
    pub fn remove(&mut self, opaque: i32) -> Option<T> {
        let opaque = u32::try_from(opaque).ok()?;
        let index = opaque & SLOT_MASK;
        let slot = self.slots.get_mut(index as usize)?;
        if slot.generation != opaque >> SLOT_BITS {
            return None;
        }
        let entry = slot.entry.take()?;
        self.free.push(index);
        Some(entry)
    }
}

/// Paces sends at a fixed rate against an absolute schedule: message `k` is due at
/// `start + k / rate`. Lateness (a full window, a slow write) is made up by sending what is due at
/// once rather than drifting, so the achieved rate converges on the requested one.
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    per_sec: f64,
    issued: u64,
}

impl Pacer {
    /// A schedule of `per_sec` messages per second starting at `start`.
    pub fn new(start: Instant, per_sec: f64) -> Self {
        assert!(per_sec > 0.0, "pacer rate must be positive");
        Self {
            start,
            per_sec,
            issued: 0,
        }
    }

    /// Messages due by `now` and not yet issued (message 0 is due at the start).
    pub fn due(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        // Whole messages whose time has come: floor(elapsed * rate) + 1 (message 0 is due at 0).
        // The millionth of a message absorbs float rounding, so a message is due exactly at the
        // instant `deadline_of_next` names for it.
        let allowed = (elapsed * self.per_sec + 1e-6).floor() as u64 + 1;
        allowed.saturating_sub(self.issued)
    }

    /// When the `count`-th next message is due (`count` ≥ 1), rounded up to the nanosecond so a
    /// task woken then finds it due.
    pub fn deadline_of_next(&self, count: u64) -> Instant {
        let index = self.issued + count.max(1) - 1;
        let nanos = (index as f64 * 1e9 / self.per_sec).ceil();
        self.start + Duration::from_nanos(nanos as u64)
    }

    /// Records `count` messages as issued.
    pub fn issued(&mut self, count: u64) {
        self.issued += count;
    }
}

/// Share `index` of `total` split over `parts` as evenly as possible (the first `total % parts`
/// shares get one more).
pub fn split_evenly(total: u64, parts: usize, index: usize) -> u64 {
    let parts = parts as u64;
    let index = index as u64;
    total / parts + u64::from(index < total % parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_and_remove_match_by_opaque_in_any_order() {
        let mut table = PendingTable::new(4);
        let opaques: Vec<i32> = (0..4).map(|i| table.insert(i).unwrap()).collect();
        assert_eq!(table.insert(9), None, "full");
        assert_eq!(table.len(), 4);
        assert_eq!(table.remove(opaques[2]), Some(2));
        assert_eq!(table.remove(opaques[0]), Some(0));
        assert_eq!(table.remove(opaques[2]), None, "completed once");
        assert_eq!(table.available(), 2);
        assert_eq!(table.remove(opaques[3]), Some(3));
        assert_eq!(table.remove(opaques[1]), Some(1));
        assert!(table.is_empty());
    }

    #[test]
    fn a_stale_opaque_misses_the_reused_slot() {
        let mut table = PendingTable::new(1);
        let first = table.insert("a").unwrap();
        assert_eq!(table.remove(first), Some("a"));
        let second = table.insert("b").unwrap();
        assert_ne!(first, second);
        assert_eq!(table.remove(first), None);
        assert_eq!(table.remove(second), Some("b"));
        assert_eq!(table.remove(-1), None);
        assert_eq!(table.remove(1 << 16 | 5), None, "slot out of range");
    }

    #[test]
    fn opaques_stay_non_negative_across_generations() {
        let mut table = PendingTable::new(1 << 16);
        for round in 0..(1 << 15) + 3 {
            let opaque = table.insert(round).unwrap();
            assert!(opaque >= 0, "round {round}: {opaque}");
            assert_eq!(table.remove(opaque), Some(round));
        }
    }

    #[test]
    fn pacer_follows_an_absolute_schedule() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, 1000.0);
        assert_eq!(pacer.due(start), 1);
        assert_eq!(pacer.due(start + Duration::from_micros(999)), 1);
        assert_eq!(pacer.due(start + Duration::from_millis(10)), 11);
        pacer.issued(11);
        assert_eq!(pacer.due(start + Duration::from_millis(10)), 0);
        assert_eq!(pacer.deadline_of_next(1), start + Duration::from_millis(11));
        assert_eq!(pacer.deadline_of_next(5), start + Duration::from_millis(15));
        // Late by a second: everything due is released at once, nothing more.
        assert_eq!(pacer.due(start + Duration::from_millis(1010)), 1000);
    }

    #[test]
    fn pacer_handles_rates_below_one_per_second() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, 0.5);
        assert_eq!(pacer.due(start), 1);
        pacer.issued(1);
        assert_eq!(pacer.due(start + Duration::from_millis(1999)), 0);
        assert_eq!(pacer.due(start + Duration::from_secs(2)), 1);
        assert_eq!(pacer.deadline_of_next(1), start + Duration::from_secs(2));
    }

    #[test]
    fn caps_split_evenly_and_add_up() {
        let shares: Vec<u64> = (0..3).map(|i| split_evenly(10, 3, i)).collect();
        assert_eq!(shares, [4, 3, 3]);
        assert_eq!((0..8).map(|i| split_evenly(5, 8, i)).sum::<u64>(), 5);
        assert_eq!(split_evenly(0, 2, 1), 0);
    }
}
