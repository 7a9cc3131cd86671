//! The send pacer, and how caps are split between connections.

use std::time::{Duration, Instant};

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
