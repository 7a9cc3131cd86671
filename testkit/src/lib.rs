//! # ringmq-testkit
//!
//! The harness of RingMQ's process-level tests: real `ringmq-namesrv` and `ringmq-broker`
//! processes on 127.0.0.1 with ephemeral ports and fast timers, a [`Cluster`] of both, a blocking
//! remoting client ([`RemotingClient`]) to drive and look at them, and [`wait_until`] for
//! conditions that become true asynchronously.
//!
//! - [`BrokerProcess`], [`NamesrvProcess`], [`Cluster`]: servers under test, started, killed and
//!   restarted by PID; [`RunningProcess`] and [`run_to_exit`] for runs expected to end (a
//!   command-line tool, a start that must be refused).
//! - [`RemotingClient`]: raw requests over [`ringmq_protocol::blocking::Connection`] with
//!   pipelining, the requests a server sends on its own, and answers nobody asked for; typed
//!   helpers for the broker's requests (send, pull, offsets, consumer groups, locks, ...).
//! - [`Message`], [`Pull`], [`Record`]: what a test sends, asks for and reads back, checked
//!   against the protocol's contract ([`parse_send`], [`parse_pull`], [`decode_records`]).
//! - [`http_get`] and [`parse_metrics`] for the Prometheus endpoint; [`XorShift`] for replayable
//!   random input; [`binary`] to find (and build) the workspace's binaries.
//!
//! Rules every helper here keeps, so tests built on it cannot hang or hurt anything:
//! - every wait polls a condition against a deadline and panics naming what it waited for;
//! - only processes started here are signalled, by PID, while they are unreaped children of
//!   this process (so the PID cannot have been reused by someone else);
//! - a process is SIGKILLed when its handle drops, and a failing test prints the tail of its log.
//!
//! ```no_run
//! use ringmq_testkit::{BrokerOptions, BrokerProcess, Cluster, Message};
//!
//! let cluster = Cluster::start(2, &["broker-a", "broker-b"]);
//! cluster.create_topic("Orders", 4);
//! println!("NameServers: {}", cluster.namesrv_addrs());
//!
//! let broker = BrokerProcess::start(BrokerOptions::default());
//! let mut client = broker.client();
//! client.create_topic("Events", 2);
//! let sent = client.send(&Message::new("Events", 0, "hello"));
//! assert_eq!(sent.queue_offset, 0);
//! ```

mod binary;
mod broker;
mod cluster;
mod controller;
mod http;
mod message;
mod namesrv;
mod process;
pub mod remoting;
mod requests;

use std::time::{Duration, Instant};

pub use binary::{REBUILD_ENV, binary, binary_of, fresh_binary};
pub use broker::{BrokerOptions, BrokerProcess, DEFAULT_BROKER_NAME};
pub use cluster::{CLUSTER_NAME, Cluster};
pub use controller::{ControllerGroup, ControllerMember, ControllerOptions};
pub use http::{http_get, parse_metrics};
pub use message::{
    Message, PERM_RW, PRODUCER_GROUP, PULL_GROUP, Pull, PullResult, Record, SendCode, SendResult,
    decode_records, dlq_topic, expect_code, heartbeat_data, parse_pull, parse_send, retry_topic,
};
pub use namesrv::{NamesrvOptions, NamesrvProcess};
pub use process::{Exited, RunningProcess, run_to_exit};
pub use remoting::{DEFAULT_TOPIC, Outgoing, REQUEST_TIMEOUT, RemotingClient};
pub use ringmq_protocol::blocking::ConnectionError;

/// How long a process may take to print its listening line(s).
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a process may take to exit after SIGTERM (it is then SIGKILLed).
pub const EXIT_DEADLINE: Duration = Duration::from_secs(20);
/// Default deadline for conditions that become true asynchronously (registration, routes,
/// indexes, metrics).
pub const DEADLINE: Duration = Duration::from_secs(20);
/// Poll period of [`wait_until`].
pub const POLL_PERIOD: Duration = Duration::from_millis(10);

/// What a [`wait_until`] probe returns: `bool` (done or not yet) or `Option<T>` (done, with a
/// value, or not yet).
pub trait ProbeResult {
    /// What [`wait_until`] returns once the probe is done.
    type Value;
    /// `Some` once done.
    fn done(self) -> Option<Self::Value>;
}

impl ProbeResult for bool {
    type Value = ();

    fn done(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> ProbeResult for Option<T> {
    type Value = T;

    fn done(self) -> Option<T> {
        self
    }
}

/// Polls `probe` every [`POLL_PERIOD`] until it is done (`true`, or `Some(value)`), and returns
/// the value. Panics naming `what` once `timeout` has passed (the probe always runs at least
/// once).
pub fn wait_until<R: ProbeResult>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> R,
) -> R::Value {
    let start = Instant::now();
    loop {
        if let Some(value) = probe().done() {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL_PERIOD);
    }
}

/// Waits until the wall clock has moved past `after_ms`, so the next message a broker stores
/// gets a later store timestamp than everything stored so far.
pub fn wait_for_next_ms(after_ms: i64) {
    wait_until("the clock to tick", Duration::from_secs(1), || {
        ringmq_common::now_ms() > after_ms
    });
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether `text` contains `word` as a whole token (tokens split at anything but letters, digits
/// and `_`), so "b" matches "missing field b" but not "broker".
pub fn mentions(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|token| token == word)
}

/// A small deterministic pseudo-random generator (xorshift64*), so a failure can be replayed
/// from the seed the test printed.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (0 is taken as 1: xorshift never leaves 0).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub const fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
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
    fn wait_until_takes_a_condition() {
        let mut calls = 0;
        wait_until("the second call", Duration::from_secs(5), || {
            calls += 1;
            calls == 2
        });
        assert_eq!(calls, 2);
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
    fn the_clock_moves_on() {
        let now = ringmq_common::now_ms();
        wait_for_next_ms(now);
        assert!(ringmq_common::now_ms() > now);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn mentions_matches_whole_tokens() {
        assert!(mentions("missing field b", "b"));
        assert!(mentions("queueId: invalid", "queueId"));
        assert!(!mentions("broker", "b"));
        assert!(!mentions("", "b"));
    }

    #[test]
    fn xorshift_replays_from_its_seed() {
        let (mut a, mut b) = (XorShift::new(42), XorShift::new(42));
        assert_eq!(a.bytes(16), b.bytes(16));
        assert_ne!(a.next_u64(), XorShift::new(43).next_u64());
        assert_ne!(XorShift::new(0).next_u64(), 0, "seed 0 does not stick at 0");
    }
}
