//! The consume thread of a push consumer: where the user's handler runs, never on the I/O
//! thread.
//!
//! The pull tasks put messages into their queue's [`ProcessQueue`] and wake this thread with the
//! queue (at most one wake-up per queue is outstanding, see the process queue's token). The
//! thread serves the queues round-robin, one batch of up to `batch_size` messages of one queue
//! at a time, so a queue's messages reach the handler in offset order.
//!
//! Outcomes:
//! - Success: the batch's offsets are done.
//! - Retry, concurrent consumer: every message is sent back to its broker
//!   (CONSUMER_SEND_MSG_BACK), which stores a copy in the group's retry topic; a message the
//!   broker took is done. A message whose send-back failed stays in flight (its offset is not
//!   committed past) and is handed to the handler again after [`REDELIVER_DELAY`].
//! - Retry, orderly consumer: the batch goes back to the head of its queue, which pauses for
//!   [`ORDERLY_RETRY_PAUSE`] while other queues go on; after [`MAX_RECONSUME_TIMES`] failed
//!   attempts it is sent back with delay level -1, which puts it in the group's dead-letter
//!   queue (Java's orderly consumer ends the same way), and the queue moves on.
//!
//! A handler that panics counts as Retry.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringmq_protocol::RequestCode;
use ringmq_protocol::header::ConsumerSendMsgBackRequestHeader;
use ringmq_protocol::message::properties::keys;

use super::process_queue::ProcessQueue;
use super::{ConsumeContext, ConsumeOutcome, MAX_RECONSUME_TIMES, master_addr};
use crate::error::Result;
use crate::instance::{ClientInstance, IoContext};
use crate::message::{MessageQueue, ReceivedMessage};
use crate::remoting::expect_success;

/// Pause before a message whose send-back failed is handed to the handler again.
pub(crate) const REDELIVER_DELAY: Duration = Duration::from_secs(1);
/// Pause of an orderly queue after its handler asked for a retry (RocketMQ
/// `suspendCurrentQueueTimeMillis`).
pub(crate) const ORDERLY_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How often an orderly queue whose lock is not (yet) held is looked at again.
const LOCK_RECHECK: Duration = Duration::from_millis(200);
/// Longest idle wait, so a stop request is seen even without a signal.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// What the I/O side sends the consume thread.
#[derive(Debug)]
pub(crate) enum Signal {
    /// The queue has pending messages (the sender took its token).
    Work(Arc<ProcessQueue>),
    /// Finish the batch in hand and exit.
    Stop,
}

/// What the consume thread needs to know about its consumer.
#[derive(Debug, Clone)]
pub(crate) struct ConsumeSettings {
    pub group: String,
    pub batch_size: usize,
    pub orderly: bool,
}

/// Something the consume thread does later.
#[derive(Debug)]
enum Delayed {
    /// Serve this queue again (its token is held meanwhile).
    Queue {
        due: Instant,
        queue: Arc<ProcessQueue>,
    },
    /// Hand these messages (still in flight) to the handler again.
    Batch {
        due: Instant,
        queue: Arc<ProcessQueue>,
        batch: Vec<ReceivedMessage>,
        attempt: u32,
    },
}

impl Delayed {
    const fn due(&self) -> Instant {
        match self {
            Self::Queue { due, .. } | Self::Batch { due, .. } => *due,
        }
    }
}

/// The consume thread's state.
pub(crate) struct ConsumeLoop<H> {
    handler: H,
    settings: ConsumeSettings,
    instance: ClientInstance,
    signals: flume::Receiver<Signal>,
    stopping: Arc<AtomicBool>,
    ready: VecDeque<Arc<ProcessQueue>>,
    delayed: Vec<Delayed>,
}

impl<H> ConsumeLoop<H>
where
    H: FnMut(&[ReceivedMessage], &ConsumeContext) -> ConsumeOutcome,
{
    pub(crate) const fn new(
        handler: H,
        settings: ConsumeSettings,
        instance: ClientInstance,
        signals: flume::Receiver<Signal>,
        stopping: Arc<AtomicBool>,
    ) -> Self {
        Self {
            handler,
            settings,
            instance,
            signals,
            stopping,
            ready: VecDeque::new(),
            delayed: Vec::new(),
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Serves queues until told to stop (or every sender is gone).
    pub(crate) fn run(mut self) {
        loop {
            if self.stopping() {
                return;
            }
            self.run_due();
            if !self.drain_signals() {
                return;
            }
            if let Some(queue) = self.ready.pop_front() {
                if !self.stopping() {
                    self.serve(queue);
                }
                continue;
            }
            let now = Instant::now();
            let wait = self
                .delayed
                .iter()
                .map(Delayed::due)
                .min()
                .map_or(IDLE_WAIT, |due| due.saturating_duration_since(now))
                .min(IDLE_WAIT);
            match self.signals.recv_timeout(wait) {
                Ok(Signal::Work(queue)) => self.ready.push_back(queue),
                Ok(Signal::Stop) | Err(flume::RecvTimeoutError::Disconnected) => return,
                Err(flume::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Moves waiting signals into the ready list; false on Stop.
    fn drain_signals(&mut self) -> bool {
        loop {
            match self.signals.try_recv() {
                Ok(Signal::Work(queue)) => self.ready.push_back(queue),
                Ok(Signal::Stop) | Err(flume::TryRecvError::Disconnected) => return false,
                Err(flume::TryRecvError::Empty) => return true,
            }
        }
    }

    /// Runs whatever delayed work is due.
    fn run_due(&mut self) {
        let now = Instant::now();
        if !self.delayed.iter().any(|delayed| delayed.due() <= now) {
            return;
        }
        let (due, later): (Vec<Delayed>, Vec<Delayed>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|delayed| delayed.due() <= now);
        self.delayed = later;
        for delayed in due {
            match delayed {
                Delayed::Queue { queue, .. } => self.ready.push_back(queue),
                Delayed::Batch {
                    queue,
                    batch,
                    attempt,
                    ..
                } => {
                    if !queue.is_dropped() && !self.stopping() {
                        self.consume_concurrently(&queue, batch, attempt);
                    }
                }
            }
        }
    }

    /// Serves one batch of `queue` (this thread holds its token).
    fn serve(&mut self, queue: Arc<ProcessQueue>) {
        if self.settings.orderly && !queue.is_dropped() && !queue.is_locked(Instant::now()) {
            self.delayed.push(Delayed::Queue {
                due: Instant::now() + LOCK_RECHECK,
                queue,
            });
            return;
        }
        let Some(batch) = queue.take_batch(self.settings.batch_size) else {
            return;
        };
        let parked = if self.settings.orderly {
            self.consume_orderly(&queue, batch)
        } else {
            self.consume_concurrently(&queue, batch, 0);
            false
        };
        if !parked && queue.keep_token() {
            self.ready.push_back(queue);
        }
    }

    /// Runs the handler; a panic counts as Retry.
    fn call(
        &mut self,
        queue: &ProcessQueue,
        batch: &[ReceivedMessage],
        attempt: u32,
    ) -> ConsumeOutcome {
        let context = ConsumeContext {
            queue: queue.queue().clone(),
            attempt,
            orderly: self.settings.orderly,
        };
        let handler = &mut self.handler;
        queue.set_consuming(true);
        let outcome = catch_unwind(AssertUnwindSafe(|| handler(batch, &context)));
        queue.set_consuming(false);
        outcome.unwrap_or_else(|_| {
            tracing::error!(
                group = %self.settings.group,
                queue = ?context.queue,
                "consume handler panicked; the batch is retried"
            );
            ConsumeOutcome::Retry
        })
    }

    fn consume_concurrently(
        &mut self,
        queue: &Arc<ProcessQueue>,
        batch: Vec<ReceivedMessage>,
        attempt: u32,
    ) {
        let outcome = self.call(queue, &batch, attempt);
        if queue.is_dropped() {
            // The queue moved to another member, which re-reads from the committed offset.
            return;
        }
        match outcome {
            ConsumeOutcome::Success => queue.done(batch.iter().map(|m| m.queue_offset)),
            ConsumeOutcome::Retry => {
                let mut failed = self.send_back(queue, batch, 0);
                if !failed.is_empty() {
                    tracing::warn!(
                        group = %self.settings.group,
                        queue = ?queue.queue(),
                        messages = failed.len(),
                        "send-back failed; redelivering locally"
                    );
                    for message in &mut failed {
                        message.reconsume_times += 1;
                    }
                    self.delayed.push(Delayed::Batch {
                        due: Instant::now() + REDELIVER_DELAY,
                        queue: Arc::clone(queue),
                        batch: failed,
                        attempt: attempt + 1,
                    });
                }
            }
        }
    }

    /// Returns true when the queue's token is parked in the delayed list.
    fn consume_orderly(
        &mut self,
        queue: &Arc<ProcessQueue>,
        mut batch: Vec<ReceivedMessage>,
    ) -> bool {
        let attempt = queue.attempts();
        let outcome = self.call(queue, &batch, attempt);
        if queue.is_dropped() {
            return false;
        }
        match outcome {
            ConsumeOutcome::Success => {
                queue.reset_attempts();
                queue.done(batch.iter().map(|m| m.queue_offset));
                false
            }
            ConsumeOutcome::Retry => {
                let attempts = queue.bump_attempts();
                if attempts <= MAX_RECONSUME_TIMES as u32 {
                    for message in &mut batch {
                        message.reconsume_times += 1;
                    }
                    queue.put_back(batch);
                } else {
                    tracing::warn!(
                        group = %self.settings.group,
                        queue = ?queue.queue(),
                        attempts,
                        "orderly batch failed every retry; moving it to the dead-letter queue"
                    );
                    let failed = self.send_back(queue, batch, -1);
                    if failed.is_empty() {
                        queue.reset_attempts();
                        return false;
                    }
                    queue.put_back(failed);
                }
                self.delayed.push(Delayed::Queue {
                    due: Instant::now() + ORDERLY_RETRY_PAUSE,
                    queue: Arc::clone(queue),
                });
                true
            }
        }
    }

    /// Sends `batch` back to the queue's broker; marks the messages it took done and returns
    /// those it did not.
    fn send_back(
        &self,
        queue: &ProcessQueue,
        batch: Vec<ReceivedMessage>,
        delay_level: i32,
    ) -> Vec<ReceivedMessage> {
        let group = self.settings.group.clone();
        let target = queue.queue().clone();
        let outcome = self
            .instance
            .run(move |ctx| async move {
                let mut failed = Vec::new();
                let mut sent = Vec::new();
                for message in batch {
                    match send_back(&ctx, &group, &target, &message, delay_level).await {
                        Ok(()) => sent.push(message.queue_offset),
                        Err(error) => {
                            tracing::debug!(%error, msg_id = %message.msg_id, "send-back failed");
                            failed.push(message);
                        }
                    }
                }
                Ok((sent, failed))
            })
            .wait();
        match outcome {
            Ok((sent, failed)) => {
                queue.done(sent);
                failed
            }
            // The I/O thread is gone: nothing was sent; the messages stay in flight.
            Err(_) => Vec::new(),
        }
    }
}

/// CONSUMER_SEND_MSG_BACK for one message to the master of the broker it was read from.
/// `delay_level` 0 lets the broker choose the retry delay; -1 sends it to the dead-letter queue.
pub(crate) async fn send_back(
    ctx: &IoContext,
    group: &str,
    queue: &MessageQueue,
    message: &ReceivedMessage,
    delay_level: i32,
) -> Result<()> {
    let addr = match master_addr(ctx, queue).await {
        Ok(addr) => addr,
        Err(_) => message.store_host.to_string(),
    };
    let origin_msg_id = message
        .property(keys::ORIGIN_MESSAGE_ID)
        .unwrap_or(&message.msg_id);
    let header = ConsumerSendMsgBackRequestHeader {
        offset: message.commit_log_offset,
        group,
        delay_level,
        origin_msg_id: Some(origin_msg_id),
        origin_topic: Some(&message.topic),
        unit_mode: Some(false),
        max_reconsume_times: Some(MAX_RECONSUME_TIMES),
    };
    let answer = ctx
        .pool
        .request(
            &addr,
            RequestCode::ConsumerSendMsgBack,
            &header,
            &[],
            ctx.timeout(),
        )
        .await?;
    expect_success(answer, &addr, RequestCode::ConsumerSendMsgBack).map(drop)
}
