//! The push consumer: a group member that finds its queues, pulls them with long polling and
//! calls a handler with the messages.
//!
//! Work split:
//! - the I/O thread runs one control task per consumer (first rebalance at start, then on
//!   NOTIFY_CONSUMER_IDS_CHANGED and every `rebalance_interval`; offset commits every
//!   `commit_interval`; orderly lock renewal every 20 s; shutdown) and one pull task per assigned
//!   queue;
//! - the consume thread (see [`super::consume`]) runs the handler.
//!
//! Nothing here fails hard when every NameServer is down: routes come from the cache, broker
//! addresses from the brokers learned from routes, so pulls, commits and rebalances (against the
//! brokers' member lists) go on.

//!
//! Module layout: `builder` (the builder and the settings it fixes), `control` (the I/O-side
//! state: rebalance, offset commits, queue locks, shutdown), `pull_loop` (one queue's pulls);
//! this file is the user's handle.

mod builder;
mod control;
mod pull_loop;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use builder::PushConsumerBuilder;
use builder::PushSettings;
use control::PushIo;

use super::consume::{ConsumeLoop, ConsumeSettings, Signal};
use super::offsets::LocalOffsetStore;
use super::{ConsumeContext, ConsumeOutcome};
use crate::error::{ClientError, Result};
use crate::instance::ClientInstance;
use crate::message::{MessageQueue, ReceivedMessage};

/// State the user's handle and the I/O side share.
#[derive(Debug, Default)]
pub(super) struct PushShared {
    assigned: Mutex<Vec<MessageQueue>>,
    /// Set at shutdown: the consume thread takes no new batch.
    stopping: Arc<AtomicBool>,
    /// Set when the consume thread died of a panic outside the handler.
    consume_failed: Arc<AtomicBool>,
}

/// Requests from the handle to the control task.
#[derive(Debug)]
pub(super) enum Control {
    /// Stop every pull task (first shutdown step).
    StopPulls(flume::Sender<()>),
    /// Commit, unlock, leave the group, end (last shutdown step).
    Finish(flume::Sender<Result<()>>),
}

/// The consume thread, as the handle sees it.
#[derive(Debug)]
struct ConsumeThread {
    thread: std::thread::JoinHandle<()>,
    /// Disconnected once the thread has exited.
    exited: flume::Receiver<()>,
    signals: flume::Sender<Signal>,
}

/// A push consumer: a member of a consumer group that receives the messages of its share of the
/// subscribed topics' queues through a handler.
///
/// The handler runs on a thread of the consumer's own, with batches of up to `batch_size`
/// messages of one queue; returning [`ConsumeOutcome::Retry`] has the broker redeliver the
/// batch later (see [`ConsumeOutcome`]). Delivery is at least once: after a crash or a
/// rebalance, messages handled since the last offset commit are delivered again.
///
/// ```no_run
/// use ringmq_client::{ConsumeOutcome, PushConsumer};
///
/// # fn main() -> ringmq_client::Result<()> {
/// let consumer = PushConsumer::builder("127.0.0.1:9876", "order-auditors")
///     .subscribe("orders", "paid || refunded")
///     .batch_size(16)
///     .start(|messages, context| {
///         for message in messages {
///             println!("{:?} offset {}: {:?}", context.queue, message.queue_offset, message.body);
///         }
///         ConsumeOutcome::Success
///     })?;
/// println!("consuming {:?}", consumer.assigned_queues());
/// // ... later: commit the offsets and leave the group.
/// consumer.shutdown()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PushConsumer {
    instance: ClientInstance,
    owns_instance: bool,
    group: String,
    shared: Arc<PushShared>,
    control: flume::Sender<Control>,
    consume_thread: Mutex<Option<ConsumeThread>>,
    shutdown_timeout: Duration,
    shut_down: AtomicBool,
}

impl PushConsumer {
    /// A builder for a consumer of `group` using the given NameServers (`host:port`, several
    /// separated by `;`).
    pub fn builder(namesrv_addrs: &str, group: &str) -> PushConsumerBuilder {
        PushConsumerBuilder::new(namesrv_addrs, group)
    }

    /// The queues this member currently consumes (the last rebalance's result), sorted.
    pub fn assigned_queues(&self) -> Vec<MessageQueue> {
        self.shared
            .assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// False once the consume thread has died (a panic outside the handler, which is logged):
    /// the consumer then takes no more messages, and [`Self::shutdown`] reports the failure.
    pub fn is_healthy(&self) -> bool {
        !self.shared.consume_failed.load(Ordering::Acquire)
    }

    /// Stops the consumer: stops pulling, waits (up to the shutdown timeout) for the batch the
    /// handler is running, commits the offsets, releases orderly queue locks, and leaves the
    /// group (the other members take over its queues from the committed offsets). Messages
    /// pulled but not yet handled are dropped; they are re-read from the committed offset.
    /// Idempotent: later calls return `Ok(())`. May be called from inside the handler (it then
    /// does not wait for the handler).
    pub fn shutdown(&self) -> Result<()> {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.shared.stopping.store(true, Ordering::Release);
        let (stopped_tx, stopped_rx) = flume::bounded(1);
        if self.control.send(Control::StopPulls(stopped_tx)).is_ok() {
            // Disconnected means the control task is gone (instance shut down): nothing to stop.
            let _ = stopped_rx.recv();
        }
        let thread = self
            .consume_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.signals.send(Signal::Stop);
            if thread.thread.thread().id() == std::thread::current().id() {
                // Called from the handler: the thread ends once the handler returns.
            } else {
                let exited = thread.exited.recv_timeout(self.shutdown_timeout);
                if let Err(flume::RecvTimeoutError::Disconnected) = exited {
                    let _ = thread.thread.join();
                } else {
                    tracing::warn!(
                        group = %self.group,
                        timeout = ?self.shutdown_timeout,
                        "the consume handler is still running; its batch will be redelivered"
                    );
                }
            }
        }
        let (finished_tx, finished_rx) = flume::bounded(1);
        let result = if self.control.send(Control::Finish(finished_tx)).is_ok() {
            finished_rx.recv().unwrap_or(Err(ClientError::Shutdown))
        } else {
            Err(ClientError::Shutdown)
        };
        if self.owns_instance {
            self.instance.shutdown();
        }
        if !self.is_healthy() {
            return result.and(Err(ClientError::InvalidArgument(
                "the consume thread had panicked; messages after its last batch were not consumed"
                    .into(),
            )));
        }
        result
    }
}

impl Drop for PushConsumer {
    fn drop(&mut self) {
        let this = &*self;
        let result = if std::thread::panicking() {
            // compio aborts the process when a thread that is unwinding wakes one of its tasks,
            // and the shutdown wakes the I/O thread: run it on a helper thread.
            std::thread::scope(|scope| {
                scope
                    .spawn(|| this.shutdown())
                    .join()
                    .unwrap_or(Err(ClientError::Shutdown))
            })
        } else {
            this.shutdown()
        };
        if let Err(error) = result {
            tracing::debug!(group = %self.group, %error, "consumer shutdown on drop");
        }
    }
}

/// Starts the consume thread and the I/O side on `instance`.
fn start_on<H>(
    instance: &ClientInstance,
    settings: PushSettings,
    offset_store_dir: Option<PathBuf>,
    shutdown_timeout: Duration,
    handler: H,
) -> Result<PushConsumer>
where
    H: FnMut(&[ReceivedMessage], &ConsumeContext) -> ConsumeOutcome + Send + 'static,
{
    let local = if settings.clustering() {
        None
    } else {
        let dir = offset_store_dir.unwrap_or_else(LocalOffsetStore::default_dir);
        let instance_name = instance
            .config()
            .instance_name
            .clone()
            .unwrap_or_else(|| "DEFAULT".to_owned());
        let path = LocalOffsetStore::path(&dir, &instance_name, &settings.group);
        Some(LocalOffsetStore::load(path, &settings.group)?)
    };
    let settings = Arc::new(settings);
    let shared = Arc::new(PushShared::default());
    let (signals_tx, signals_rx) = flume::unbounded();
    let (control_tx, control_rx) = flume::unbounded();
    let (exited_tx, exited_rx) = flume::bounded::<()>(1);
    let failed = Arc::clone(&shared.consume_failed);
    let thread_group = settings.group.clone();
    let consume = ConsumeLoop::new(
        handler,
        ConsumeSettings {
            group: settings.group.clone(),
            batch_size: settings.batch_size,
            orderly: settings.orderly,
            broadcasting: !settings.clustering(),
            max_reconsume_times: settings.max_reconsume_times,
        },
        instance.clone(),
        signals_rx,
        Arc::clone(&shared.stopping),
    );
    let thread = std::thread::Builder::new()
        .name(format!("ringmq-consume-{}", settings.group))
        .spawn(move || {
            let _exited = exited_tx;
            // The handler's panics are caught per batch; anything else that panics here stops
            // consumption, which must not go unnoticed.
            if catch_unwind(AssertUnwindSafe(|| consume.run())).is_err() {
                failed.store(true, Ordering::Release);
                tracing::error!(group = %thread_group, "the consume thread panicked; this consumer no longer consumes (shut it down and start a new one)");
            }
        })
        .map_err(|error| {
            ClientError::InvalidArgument(format!("cannot start the consume thread: {error}"))
        })?;
    let consume_thread = ConsumeThread {
        thread,
        exited: exited_rx,
        signals: signals_tx.clone(),
    };
    let io_settings = Arc::clone(&settings);
    let io_shared = Arc::clone(&shared);
    let started = instance
        .run(move |ctx| async move {
            PushIo::start(ctx, io_settings, io_shared, signals_tx, control_rx, local).await
        })
        .wait();
    if let Err(error) = started {
        shared.stopping.store(true, Ordering::Release);
        let _ = consume_thread.signals.send(Signal::Stop);
        let _ = consume_thread.thread.join();
        return Err(error);
    }
    Ok(PushConsumer {
        instance: instance.clone(),
        owns_instance: false,
        group: settings.group.clone(),
        shared,
        control: control_tx,
        consume_thread: Mutex::new(Some(consume_thread)),
        shutdown_timeout,
        shut_down: AtomicBool::new(false),
    })
}
