//! # ringmq-testkit
//!
//! The harness of RingMQ's process-level tests: real `ringmq-namesrv` and `ringmq-broker`
//! processes on 127.0.0.1 with ephemeral ports and fast timers, a [`Cluster`] of both, a tiny
//! blocking remoting client ([`remoting`]) to look at them, and [`wait_until`] for conditions
//! that become true asynchronously.
//!
//! Rules every helper here keeps, so tests built on it cannot hang or hurt anything:
//! - every wait polls a condition against a deadline and panics naming what it waited for;
//! - only processes started here are signalled, by PID, while they are unreaped children of
//!   this process (so the PID cannot have been reused by someone else);
//! - a process is SIGKILLed when its handle drops, and a failing test prints the tail of its log.
//!
//! ```no_run
//! use ringmq_testkit::Cluster;
//!
//! let cluster = Cluster::start(2, &["broker-a", "broker-b"]);
//! cluster.create_topic("Orders", 4);
//! println!("NameServers: {}", cluster.namesrv_addrs());
//! ```

mod binary;
mod broker;
mod cluster;
mod namesrv;
mod process;
pub mod remoting;

use std::time::{Duration, Instant};

pub use binary::{binary, binary_of};
pub use broker::{BrokerOptions, BrokerProcess};
pub use cluster::{CLUSTER_NAME, Cluster};
pub use namesrv::{NamesrvOptions, NamesrvProcess};

/// How long a process may take to print its listening line(s).
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a process may take to exit after SIGTERM (it is then SIGKILLed).
pub const EXIT_DEADLINE: Duration = Duration::from_secs(20);
/// Default deadline for cluster-level conditions (registration, routes).
pub const DEADLINE: Duration = Duration::from_secs(20);
/// Poll period of [`wait_until`].
pub const POLL_PERIOD: Duration = Duration::from_millis(10);

/// Polls `probe` every [`POLL_PERIOD`] until it returns a value, and returns it. Panics naming
/// `what` once `timeout` has passed (the probe always runs at least once).
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL_PERIOD);
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_the_first_value() {
        let mut calls = 0;
        let value = wait_until("the third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls * 10)
        });
        assert_eq!(value, 30);
    }

    #[test]
    #[should_panic(expected = "waiting for something that never happens")]
    fn wait_until_panics_naming_the_condition() {
        wait_until(
            "something that never happens",
            Duration::from_millis(50),
            || None::<()>,
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
