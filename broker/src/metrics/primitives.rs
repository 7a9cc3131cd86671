//! The metric primitives: [`Counter`], [`Gauge`] and the fixed-bucket latency [`Histogram`].
//!
//! Each is a few atomics updated with relaxed ordering (see the module doc of `crate::metrics`
//! for why that is enough). Recording never allocates and never blocks.

use std::{
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::Duration,
};

/// A monotonically increasing count.
///
/// Uses an atomic add rather than a load-then-store even though each shard's counters have one
/// writer: on an uncontended line the add costs a few nanoseconds, and it keeps broker-wide
/// counters (written from whichever thread does the work) correct too.
#[derive(Debug, Default)]
pub struct Counter {
    value: AtomicU64,
}

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self {
            value: AtomicU64::new(0),
        }
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `amount`.
    #[inline]
    pub fn add(&self, amount: u64) {
        self.value.fetch_add(amount, Ordering::Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (connections, queue depths).
#[derive(Debug, Default)]
pub struct Gauge {
    value: AtomicI64,
}

impl Gauge {
    /// A gauge at zero.
    pub const fn new() -> Self {
        Self {
            value: AtomicI64::new(0),
        }
    }

    /// Replaces the value.
    #[inline]
    pub fn set(&self, value: i64) {
        self.value.store(value, Ordering::Relaxed);
    }

    /// Adds `amount`.
    #[inline]
    pub fn add(&self, amount: i64) {
        self.value.fetch_add(amount, Ordering::Relaxed);
    }

    /// Subtracts `amount`.
    #[inline]
    pub fn sub(&self, amount: i64) {
        self.value.fetch_sub(amount, Ordering::Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        self.sub(1);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// Upper bounds (inclusive, Prometheus `le`) of the latency histogram buckets, in microseconds:
/// 1-2-5 steps from 1 µs to 10 s. A value above the last bound lands only in the `+Inf` bucket.
pub const LATENCY_BUCKET_BOUNDS_US: [u64; 22] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
    200_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000,
];

/// Buckets a [`Histogram`] keeps: one per bound plus the overflow (`+Inf` only) bucket.
pub const LATENCY_BUCKET_COUNT: usize = LATENCY_BUCKET_BOUNDS_US.len() + 1;

// The bucket lookup is a binary search, which needs strictly increasing bounds.
const _: () = {
    let mut index = 1;
    while index < LATENCY_BUCKET_BOUNDS_US.len() {
        assert!(LATENCY_BUCKET_BOUNDS_US[index - 1] < LATENCY_BUCKET_BOUNDS_US[index]);
        index += 1;
    }
};

/// A latency distribution in microseconds over the fixed [`LATENCY_BUCKET_BOUNDS_US`].
///
/// Each bucket holds the values that fall in it alone (not cumulative); rendering accumulates.
/// There is no separate count atomic: the count is the sum of the buckets, which saves an atomic
/// add per record and makes `_count` equal the `+Inf` bucket in every snapshot.
#[derive(Debug)]
pub struct Histogram {
    bucket_counts: [AtomicU64; LATENCY_BUCKET_COUNT],
    /// Sum of every recorded value in µs. Wraps after 2^64 µs (584,000 years) of total latency.
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Self {
            bucket_counts: [const { AtomicU64::new(0) }; LATENCY_BUCKET_COUNT],
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records one value in microseconds: two relaxed atomic adds, no allocation.
    #[inline]
    pub fn record_us(&self, value_us: u64) {
        self.bucket_counts[bucket_index(value_us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(value_us, Ordering::Relaxed);
    }

    /// Records one duration, truncated to whole microseconds.
    #[inline]
    pub fn record(&self, duration: Duration) {
        self.record_us(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
    }

    /// How many values were recorded (the sum of the buckets).
    pub fn count(&self) -> u64 {
        self.snapshot().count()
    }

    /// Reads every bucket and the sum (relaxed; see the module doc).
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bucket_counts: std::array::from_fn(|index| {
                self.bucket_counts[index].load(Ordering::Relaxed)
            }),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// Index of the bucket holding `value_us`: the first bound `>= value_us`, or the overflow bucket.
#[inline]
fn bucket_index(value_us: u64) -> usize {
    LATENCY_BUCKET_BOUNDS_US.partition_point(|&bound| bound < value_us)
}

/// One reading of a [`Histogram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per-bucket (not cumulative) counts; index `i < 22` is `le = LATENCY_BUCKET_BOUNDS_US[i]`,
    /// the last index holds values above every bound.
    pub bucket_counts: [u64; LATENCY_BUCKET_COUNT],
    /// Sum of the recorded values in µs.
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.bucket_counts.iter().sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn histogram_puts_each_value_in_the_first_bucket_whose_bound_is_not_below_it() {
        let histogram = Histogram::new();
        for value_us in [
            0,
            1,
            2,
            3,
            5,
            6,
            1_000,
            1_001,
            10_000_000,
            10_000_001,
            u64::MAX / 2,
        ] {
            histogram.record_us(value_us);
        }
        histogram.record(Duration::from_millis(3));
        histogram.record(Duration::from_nanos(999)); // Truncates to 0 µs.

        let snapshot = histogram.snapshot();
        let mut expected = [0_u64; LATENCY_BUCKET_COUNT];
        expected[0] = 3; // 0, 1, 0 (from 999 ns): le 1 µs.
        expected[1] = 1; // 2: le 2 µs.
        expected[2] = 2; // 3, 5: le 5 µs.
        expected[3] = 1; // 6: le 10 µs.
        expected[9] = 1; // 1000: le 1 ms.
        expected[10] = 1; // 1001: le 2 ms.
        expected[11] = 1; // 3 ms: le 5 ms.
        expected[21] = 1; // 10 s: le 10 s.
        expected[22] = 2; // Above 10 s: +Inf only.
        assert_eq!(snapshot.bucket_counts, expected);
        assert_eq!(histogram.count(), 13);
        assert_eq!(
            snapshot.sum_us,
            [
                0,
                1,
                2,
                3,
                5,
                6,
                1_000,
                1_001,
                10_000_000,
                10_000_001,
                u64::MAX / 2,
                3_000,
                0
            ]
            .iter()
            .sum::<u64>()
        );
    }
}
