//! Latency fault avoidance, as Java's `MQFaultStrategy` / `LatencyFaultToleranceImpl`: every
//! send attempt reports how long its broker took, and a broker that was slow or failed is kept
//! out of queue selection for a while.
//!
//! The latency of an attempt picks a tier (the highest whose threshold it reaches); the tier says
//! how long the broker is then unavailable. Java's defaults, used here:
//!
//! | latency ≥ | 50 ms | 100 ms | 550 ms | 1 s  | 2 s   | 3 s   | 15 s  |
//! |-----------|-------|--------|--------|------|-------|-------|-------|
//! | avoided   | 0     | 0      | 30 s   | 60 s | 120 s | 180 s | 600 s |
//!
//! A failure that says the broker cannot take messages now (no connection, no answer, garbage,
//! or a refusal Java retries) "isolates" it: it counts as a 30 s latency, which lands in the top
//! tier, like Java. A refusal that is about the message itself (MESSAGE_ILLEGAL, ...) counts only
//! its latency: one bad message must not take a healthy broker out of rotation.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Latency an isolating failure counts as (Java: 30 000 ms).
pub(crate) const ISOLATION_LATENCY: Duration = Duration::from_secs(30);

/// Java's tiers: (latency at least, then unavailable for), in milliseconds.
const DEFAULT_TIERS_MS: [(u64, u64); 7] = [
    (50, 0),
    (100, 0),
    (550, 30_000),
    (1_000, 60_000),
    (2_000, 120_000),
    (3_000, 180_000),
    (15_000, 600_000),
];

/// The default tiers as durations.
pub(crate) fn default_tiers() -> Vec<(Duration, Duration)> {
    DEFAULT_TIERS_MS
        .iter()
        .map(|&(latency, unavailable)| {
            (
                Duration::from_millis(latency),
                Duration::from_millis(unavailable),
            )
        })
        .collect()
}

/// How an attempt ended, for the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The broker answered (stored, or refused the message itself): judged by latency.
    Answered,
    /// The broker could not take the message (transport failure or a retryable refusal).
    Isolate,
}

/// Per-broker unavailability deadlines of one producer. Lives on the I/O thread.
#[derive(Debug)]
pub(crate) struct FaultTracker {
    /// Ascending by latency.
    tiers: Vec<(Duration, Duration)>,
    /// Broker name to the instant it may be used again; a past instant means available.
    until: RefCell<HashMap<String, Instant>>,
}

impl FaultTracker {
    /// A tracker with the given tiers (sorted here by latency).
    pub fn new(mut tiers: Vec<(Duration, Duration)>) -> Self {
        tiers.sort_by_key(|&(latency, _)| latency);
        Self {
            tiers,
            until: RefCell::new(HashMap::new()),
        }
    }

    /// How long a broker that took `latency` is avoided.
    pub fn unavailable_for(&self, latency: Duration) -> Duration {
        self.tiers
            .iter()
            .rev()
            .find(|&&(threshold, _)| latency >= threshold)
            .map_or(Duration::ZERO, |&(_, unavailable)| unavailable)
    }

    /// Records an attempt on `broker` that took `latency` and ended with `outcome`.
    pub fn record(&self, broker: &str, latency: Duration, outcome: Outcome, now: Instant) {
        let counted = match outcome {
            Outcome::Answered => latency,
            Outcome::Isolate => ISOLATION_LATENCY,
        };
        let until = now + self.unavailable_for(counted);
        let mut map = self.until.borrow_mut();
        if let Some(entry) = map.get_mut(broker) {
            *entry = until;
        } else if until > now {
            // Healthy brokers are not recorded: no allocation on the fast path.
            map.insert(broker.to_owned(), until);
        }
    }

    /// Whether `broker` may be used at `now`.
    pub fn is_available(&self, broker: &str, now: Instant) -> bool {
        let map = self.until.borrow();
        map.is_empty() || map.get(broker).is_none_or(|&until| now >= until)
    }

    /// Whether any broker is currently avoided (selection skips the checks otherwise).
    pub fn any_unavailable(&self, now: Instant) -> bool {
        self.until.borrow().values().any(|&until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn tiers_match_java() {
        let tracker = FaultTracker::new(default_tiers());
        for (latency, expected) in [
            (0, 0),
            (49, 0),
            (50, 0),
            (549, 0),
            (550, 30_000),
            (999, 30_000),
            (1_000, 60_000),
            (2_500, 120_000),
            (3_000, 180_000),
            (14_999, 180_000),
            (15_000, 600_000),
            (30_000, 600_000),
        ] {
            assert_eq!(
                tracker.unavailable_for(ms(latency)),
                ms(expected),
                "{latency} ms"
            );
        }
    }

    #[test]
    fn slow_or_failed_brokers_are_avoided_until_their_time_is_up() {
        let tracker = FaultTracker::new(default_tiers());
        let start = Instant::now();
        tracker.record("fast", ms(5), Outcome::Answered, start);
        assert!(
            tracker.until.borrow().is_empty(),
            "healthy brokers cost nothing"
        );
        assert!(!tracker.any_unavailable(start));

        tracker.record("slow", ms(600), Outcome::Answered, start);
        assert!(!tracker.is_available("slow", start + ms(29_999)));
        assert!(tracker.is_available("slow", start + ms(30_000)));
        assert!(tracker.is_available("fast", start));

        tracker.record("down", ms(1), Outcome::Isolate, start);
        assert!(!tracker.is_available("down", start + Duration::from_secs(599)));
        assert!(tracker.is_available("down", start + Duration::from_secs(600)));
        assert!(tracker.any_unavailable(start));

        // A fast answer makes a broker available again at once.
        tracker.record("down", ms(1), Outcome::Answered, start);
        assert!(tracker.is_available("down", start));
    }

    #[test]
    fn custom_tiers_are_sorted_and_used() {
        let tracker = FaultTracker::new(vec![(ms(200), ms(2_000)), (ms(10), ms(100))]);
        assert_eq!(tracker.unavailable_for(ms(5)), Duration::ZERO);
        assert_eq!(tracker.unavailable_for(ms(10)), ms(100));
        assert_eq!(tracker.unavailable_for(ms(250)), ms(2_000));
        assert_eq!(tracker.unavailable_for(ISOLATION_LATENCY), ms(2_000));
    }
}
