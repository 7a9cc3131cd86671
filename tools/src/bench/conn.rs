//! What the producer and consumer connections share: the run-wide context and control flags, and
//! the wake-up the pulling tasks of a connection use to hand each other ready queues.
//!
//! Each connection is a client-library [`ringmq_client::remoting::Connection`] on its thread's
//! runtime, driven by a window of tasks on that thread. They share `Rc`/`RefCell` state (one
//! thread, no locks); borrows never cross an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::args::Mode;
use super::stats::Recorder;

/// Longest a writer sleeps before looking at the stop flags again.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Longest wait for one answer during the load (a broker that stalls this long fails the run).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings and shared state of one run, read by every connection on every thread.
#[derive(Debug)]
pub struct RunContext {
    pub mode: Mode,
    pub broker: SocketAddr,
    pub topic: String,
    pub queues: u32,
    /// Body bytes per message.
    pub size: usize,
    /// Messages per send request.
    pub batch: usize,
    /// Requests outstanding per connection.
    pub inflight: usize,
    /// consume: stop pulling once this many messages arrived (`--messages`).
    pub receive_cap: Option<u64>,
    /// Zero of the e2e timestamps (process-local, monotonic).
    pub epoch: Instant,
    pub control: Control,
    /// Which client drives the load.
    pub api: super::args::Api,
    /// Header encoding of the raw sends.
    pub send_headers: ringmq_protocol::SerializeType,
    /// `--api client`: the producer every producer job shares.
    pub producer: Option<ringmq_client::Producer>,
    /// `--api client`: the NameServers the client library uses.
    pub namesrv: Option<String>,
}

impl RunContext {
    /// Nanoseconds since [`RunContext::epoch`].
    pub fn nanos_since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Run-wide flags and counters, written by the reporter and the connections.
#[derive(Debug)]
pub struct Control {
    stop_producers: AtomicBool,
    stop_consumers: AtomicBool,
    failed: AtomicBool,
    producers_running: AtomicUsize,
    /// Messages acknowledged by the broker, all connections.
    pub sent: AtomicU64,
    /// Messages received by pulls, all connections.
    pub received: AtomicU64,
    /// Error codes already explained on stderr (each is explained once per run).
    explained: Mutex<BTreeSet<i32>>,
    /// After this, the run gives up.
    pub hard_deadline: Instant,
}

impl Control {
    /// Flags for a run with `producers` producer connections.
    pub fn new(producers: usize, hard_deadline: Instant) -> Self {
        Self {
            stop_producers: AtomicBool::new(false),
            stop_consumers: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            producers_running: AtomicUsize::new(producers),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            explained: Mutex::new(BTreeSet::new()),
            hard_deadline,
        }
    }

    /// Producers stop issuing requests (outstanding ones are still awaited).
    pub fn stop_producers(&self) {
        self.stop_producers.store(true, Ordering::Release);
    }

    /// Consumers stop pulling and close.
    pub fn stop_consumers(&self) {
        self.stop_consumers.store(true, Ordering::Release);
    }

    /// A connection failed: everything stops.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Whether a connection failed.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Whether producers must stop issuing.
    pub fn producers_should_stop(&self) -> bool {
        self.stop_producers.load(Ordering::Acquire) || self.failed()
    }

    /// Whether consumers must stop.
    pub fn consumers_should_stop(&self) -> bool {
        self.stop_consumers.load(Ordering::Acquire) || self.failed()
    }

    /// A producer connection has finished.
    pub fn producer_finished(&self) {
        self.producers_running.fetch_sub(1, Ordering::AcqRel);
    }

    /// Producer connections still running.
    pub fn producers_running(&self) -> usize {
        self.producers_running.load(Ordering::Acquire)
    }

    /// True the first time `code` is seen in this run, so its remark is printed once.
    pub fn first_time(&self, code: i32) -> bool {
        self.explained
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(code)
    }
}

/// Locks a thread's recorder; a panic elsewhere cannot leave counters in a state worth refusing.
pub fn lock(recorder: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    recorder.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A wake-up for one waiting task on the same thread. A notification sent while nobody waits is
/// kept, so the waiter never misses one between checking its condition and going to sleep.
#[derive(Debug, Default)]
pub struct Notify {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    /// Wakes the waiter (or the next one to wait).
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Waits for a notification or `deadline`, whichever comes first.
    pub async fn wait_until(&self, deadline: Instant) {
        let notified = poll_fn(|cx| {
            if self.notified.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        // Elapsed is the other way out; both mean "look again".
        let _ = compio::time::timeout_at(deadline, notified).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn notify_before_wait_is_not_lost_and_deadline_ends_a_wait() {
        let runtime = compio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let notify = Rc::new(Notify::default());
            notify.notify();
            let started = Instant::now();
            notify.wait_until(started + Duration::from_secs(5)).await;
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "kept notification"
            );

            let started = Instant::now();
            notify.wait_until(started + Duration::from_millis(30)).await;
            assert!(started.elapsed() >= Duration::from_millis(30), "deadline");

            let waker = Rc::clone(&notify);
            compio::runtime::spawn(async move {
                compio::time::sleep(Duration::from_millis(10)).await;
                waker.notify();
            })
            .detach();
            let started = Instant::now();
            notify.wait_until(started + Duration::from_secs(5)).await;
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "woken by another task"
            );
        });
    }

    #[test]
    fn control_flags() {
        let control = Control::new(2, Instant::now());
        assert!(!control.producers_should_stop() && !control.consumers_should_stop());
        control.producer_finished();
        assert_eq!(control.producers_running(), 1);
        control.stop_producers();
        assert!(control.producers_should_stop() && !control.consumers_should_stop());
        control.fail();
        assert!(control.consumers_should_stop() && control.failed());
        assert!(control.first_time(2));
        assert!(!control.first_time(2));
    }
}
