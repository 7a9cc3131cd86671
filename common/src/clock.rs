//! Wall-clock time in milliseconds since the Unix epoch, the unit RocketMQ stamps everything in.
//!
//! Code that decides by time (retention by age, client expiry, data versions) takes a [`Clock`]
//! so a test can move time instead of sleeping. [`Clock::system`] reads the OS clock;
//! [`Clock::manual`] holds a value the test sets. Cloning a manual clock shares its value.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None` reads the system clock; `Some` holds a test's time.
    manual_ms: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The operating system's clock.
    pub fn system() -> Self {
        Self { manual_ms: None }
    }

    /// A clock that stands at `start_ms` until [`Clock::set_ms`] or [`Clock::advance_ms`] moves it.
    pub fn manual(start_ms: i64) -> Self {
        Self {
            manual_ms: Some(Arc::new(AtomicI64::new(start_ms))),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.manual_ms {
            Some(ms) => ms.load(Ordering::Relaxed),
            None => now_ms(),
        }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        self.manual_ms.is_some()
    }

    /// Sets a manual clock to `ms`. The system clock cannot be set: this does nothing on it.
    pub fn set_ms(&self, ms: i64) {
        if let Some(manual) = &self.manual_ms {
            manual.store(ms, Ordering::Relaxed);
        }
    }

    /// Moves a manual clock forward by `delta_ms`. Does nothing on the system clock.
    pub fn advance_ms(&self, delta_ms: i64) {
        if let Some(manual) = &self.manual_ms {
            manual.fetch_add(delta_ms, Ordering::Relaxed);
        }
    }
}

/// The system clock in milliseconds since the Unix epoch. A clock set before 1970 reads 0 and one
/// past the year 292 million reads `i64::MAX`: callers never see an error.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_after_2020() {
        assert!(Clock::system().now_ms() > 1_577_836_800_000);
        assert!(!Clock::system().is_manual());
    }

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = Clock::manual(1_000);
        let other = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance_ms(250);
        assert_eq!(other.now_ms(), 1_250);
        other.set_ms(5);
        assert_eq!(clock.now_ms(), 5);
    }
}
