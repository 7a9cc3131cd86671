//! One consumer connection: pulls a share of the topic's queues, one outstanding pull per queue
//! (as RocketMQ clients do, since each pull starts where the previous one ended) and at most
//! `--inflight` pulls at once, rotating over its queues.
//!
//! Messages are counted by walking the records of each PULL body; in e2e each record's first 8 body
//! bytes are the producer's send time, giving the send-to-receipt latency. Pulls set FLAG_SUSPEND,
//! so a caught-up queue is held by the broker (long polling) rather than polled in a loop.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use ringmq_client::remoting::Connection;
use ringmq_protocol::header::PullMessageResponseHeader;
use ringmq_protocol::message::RecordIter;
use ringmq_protocol::{Command, RequestCode, ResponseCode};

use super::args::Mode;
use super::conn::{CHECK_INTERVAL, Notify, REQUEST_TIMEOUT, RunContext, lock};
use super::rpc;
use super::stats::{Recorder, micros};
use super::wire::{PULL_SUSPEND_MS, PullSpec, append_pull};

/// How long a queue rests after a pull error or a pull that did not move its offset.
pub const RETRY_DELAY: Duration = Duration::from_millis(100);

/// One queue as a consumer reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStream {
    pub queue_id: i32,
    /// Next offset to pull.
    pub offset: i64,
    /// Stop once `offset` reaches this; `None`: read until told to stop.
    pub end: Option<i64>,
}

/// What one consumer connection does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerJob {
    pub streams: Vec<QueueStream>,
}

/// What a pull response means for its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullOutcome {
    /// SUCCESS: messages up to `next`.
    Found { next: i64 },
    /// PULL_NOT_FOUND after the broker held the request: nothing new; pull again at once.
    Empty { next: i64 },
    /// PULL_RETRY_IMMEDIATELY or PULL_OFFSET_MOVED: continue from `next`.
    Moved { next: i64 },
    /// Any other code: try again later from the same offset.
    Failed,
}

/// The queues of one connection and which of them may be pulled now.
#[derive(Debug, Clone)]
pub struct Streams {
    queues: Vec<QueueStream>,
    ready: VecDeque<usize>,
    delayed: Vec<(Instant, usize)>,
    finished: usize,
}

impl Streams {
    /// All queues not already at their end are ready.
    pub fn new(queues: Vec<QueueStream>) -> Self {
        let mut streams = Self {
            ready: VecDeque::with_capacity(queues.len()),
            delayed: Vec::with_capacity(queues.len()),
            finished: 0,
            queues,
        };
        for index in 0..streams.queues.len() {
            if streams.at_end(index) {
                streams.finished += 1;
            } else {
                streams.ready.push_back(index);
            }
        }
        streams
    }

    fn at_end(&self, index: usize) -> bool {
        let queue = &self.queues[index];
        queue.end.is_some_and(|end| queue.offset >= end)
    }

    /// Whether every queue reached its end.
    pub fn all_finished(&self) -> bool {
        self.finished == self.queues.len()
    }

    /// The next queue to pull, if any is ready.
    pub fn next_ready(&mut self) -> Option<(usize, QueueStream)> {
        let index = self.ready.pop_front()?;
        Some((index, self.queues[index]))
    }

    /// Moves queues whose rest is over to the ready list.
    pub fn release_delayed(&mut self, now: Instant) {
        let ready = &mut self.ready;
        self.delayed.retain(|&(at, index)| {
            if at <= now {
                ready.push_back(index);
                false
            } else {
                true
            }
        });
    }

    /// When the next resting queue becomes ready.
    pub fn next_release(&self) -> Option<Instant> {
        self.delayed.iter().map(|&(at, _)| at).min()
    }

    /// Applies a pull's outcome to its queue and schedules the queue's next pull.
    pub fn complete(&mut self, index: usize, outcome: PullOutcome, now: Instant) {
        let before = self.queues[index].offset;
        let (next, rest) = match outcome {
            PullOutcome::Found { next } | PullOutcome::Empty { next } => (next, false),
            // Moving nowhere would repeat the same answer at once.
            PullOutcome::Moved { next } => (next, next == before),
            PullOutcome::Failed => (before, true),
        };
        self.queues[index].offset = next;
        if self.at_end(index) {
            self.finished += 1;
        } else if rest {
            self.delayed.push((now + RETRY_DELAY, index));
        } else {
            self.ready.push_back(index);
        }
    }

    /// The queues and their current offsets.
    pub fn queues(&self) -> &[QueueStream] {
        &self.queues
    }
}

/// What the pulling tasks of one connection share (one thread: no locks).
#[derive(Debug)]
struct Shared {
    streams: RefCell<Streams>,
    /// A queue became ready (a pull finished) or a task failed.
    notify: Notify,
    failed: Cell<bool>,
}

/// Runs one consumer connection until its queues reach their ends, the stop flag, or a failure.
///
/// The connection is the client library's multiplexed [`Connection`]; up to `--inflight` tasks
/// each take a ready queue, pull it, and put it back with its new offset.
pub async fn run(
    ctx: &Arc<RunContext>,
    job: ConsumerJob,
    recorder: &Arc<Mutex<Recorder>>,
) -> Result<()> {
    let window = ctx.inflight.min(job.streams.len()).max(1);
    let streams = Streams::new(job.streams);
    if streams.all_finished() {
        return Ok(());
    }
    let connection = rpc::connect(ctx.broker).await?;
    let shared = Rc::new(Shared {
        streams: RefCell::new(streams),
        notify: Notify::default(),
        failed: Cell::new(false),
    });
    let tasks: Vec<_> = (0..window)
        .map(|_| {
            compio::runtime::spawn(pull_loop(
                Rc::clone(&connection),
                Rc::clone(&shared),
                Arc::clone(ctx),
                Arc::clone(recorder),
            ))
        })
        .collect();
    let mut first_error = None;
    for task in tasks {
        let result = match task.await {
            Ok(result) => result,
            Err(join) => Err(anyhow!("consumer task: {join}")),
        };
        if let Err(error) = result {
            first_error.get_or_insert(error);
        }
    }
    // Outstanding pulls (long polls) are of no further interest.
    connection.close("benchmark finished");
    first_error.map_or(Ok(()), Err)
}

/// Whether this connection's consumers are done: told to stop, capped, or finished.
fn should_stop(ctx: &RunContext, shared: &Shared) -> bool {
    ctx.control.consumers_should_stop()
        || shared.failed.get()
        || ctx
            .receive_cap
            .is_some_and(|cap| ctx.control.received.load(Ordering::Relaxed) >= cap)
        || shared.streams.borrow().all_finished()
}

/// One pulling slot: takes a ready queue, pulls it, records what came, schedules the queue.
async fn pull_loop(
    connection: Rc<Connection>,
    shared: Rc<Shared>,
    ctx: Arc<RunContext>,
    recorder: Arc<Mutex<Recorder>>,
) -> Result<()> {
    let pull_timeout = REQUEST_TIMEOUT + Duration::from_millis(PULL_SUSPEND_MS as u64);
    loop {
        if should_stop(&ctx, &shared) {
            shared.notify.notify();
            return Ok(());
        }
        let now = Instant::now();
        let next = {
            let mut streams = shared.streams.borrow_mut();
            streams.release_delayed(now);
            match streams.next_ready() {
                Some(ready) => Ok(ready),
                None => Err(streams
                    .next_release()
                    .map_or(now + CHECK_INTERVAL, |at| at.min(now + CHECK_INTERVAL))),
            }
        };
        let (index, queue) = match next {
            Ok(ready) => ready,
            Err(wake_at) => {
                shared.notify.wait_until(wake_at).await;
                continue;
            }
        };
        let spec = PullSpec {
            topic: &ctx.topic,
            queue_id: queue.queue_id,
            offset: queue.offset,
        };
        let answer = connection
            .request_with(RequestCode::PullMessage, pull_timeout, |opaque, out| {
                append_pull(out, opaque, &spec);
            })
            .await;
        let outcome = match answer {
            Ok(answer) => handle_answer(&answer, queue, &ctx, &recorder, now),
            Err(error) => Err(anyhow::Error::new(error)),
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                shared.failed.set(true);
                shared.notify.notify();
                ctx.control.fail();
                return Err(error.context(format!("pulling from broker {}", ctx.broker)));
            }
        };
        shared
            .streams
            .borrow_mut()
            .complete(index, outcome, Instant::now());
        shared.notify.notify();
    }
}

/// Messages and body bytes of a PULL body, recording e2e latencies against `now_ns`.
fn count_records(
    body: &[u8],
    e2e_now_ns: Option<u64>,
    stats: &mut Recorder,
) -> Result<(u64, u64), ringmq_protocol::RecordError> {
    let (mut messages, mut bytes) = (0, 0);
    for record in RecordIter::new(body) {
        let record = record?;
        messages += 1;
        bytes += record.body.len() as u64;
        if let (Some(now_ns), Some(stamp)) = (e2e_now_ns, record.body.first_chunk::<8>()) {
            let sent_ns = u64::from_be_bytes(*stamp);
            stats.record_e2e(now_ns.saturating_sub(sent_ns) / 1000);
        }
    }
    Ok((messages, bytes))
}

/// Reads the pull response header every non-error pull answer carries.
fn next_offset(command: &Command, ctx: &RunContext) -> Result<i64> {
    let header: PullMessageResponseHeader = command.header().with_context(|| {
        format!(
            "broker {} sent a {} pull answer without a usable header",
            ctx.broker,
            command.response_code()
        )
    })?;
    Ok(header.next_begin_offset)
}

/// Records a pull's answer and says what it means for its queue.
fn handle_answer(
    command: &Command,
    queue: QueueStream,
    ctx: &RunContext,
    recorder: &Mutex<Recorder>,
    sent_at: Instant,
) -> Result<PullOutcome> {
    let now_ns = (ctx.mode == Mode::E2e).then(|| ctx.nanos_since_epoch());
    let mut stats = lock(recorder);
    stats.record_pull(micros(sent_at.elapsed()));
    Ok(match command.response_code() {
        ResponseCode::Success => {
            let (messages, bytes) =
                count_records(&command.body, now_ns, &mut stats).with_context(|| {
                    format!(
                        "undecodable message in a pull of {} queue {} at offset {} from broker {}",
                        ctx.topic, queue.queue_id, queue.offset, ctx.broker
                    )
                })?;
            stats.record_received(messages, bytes);
            drop(stats);
            ctx.control.received.fetch_add(messages, Ordering::Relaxed);
            PullOutcome::Found {
                next: next_offset(command, ctx)?,
            }
        }
        ResponseCode::PullNotFound => PullOutcome::Empty {
            next: next_offset(command, ctx)?,
        },
        ResponseCode::PullRetryImmediately | ResponseCode::PullOffsetMoved => PullOutcome::Moved {
            next: next_offset(command, ctx)?,
        },
        code => {
            stats.record_error(command.code);
            drop(stats);
            if ctx.control.first_time(command.code) {
                eprintln!(
                    "note: broker answered a pull with {code}{}",
                    command
                        .remark
                        .as_deref()
                        .map_or(String::new(), |remark| format!(": {remark}"))
                );
            }
            PullOutcome::Failed
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_protocol::message::{MessageMagic, StoredRecord, body_crc};

    fn queue(queue_id: i32, offset: i64, end: Option<i64>) -> QueueStream {
        QueueStream {
            queue_id,
            offset,
            end,
        }
    }

    #[test]
    fn queues_at_their_end_start_finished() {
        let mut streams = Streams::new(vec![queue(0, 5, Some(5)), queue(1, 0, Some(3))]);
        assert!(!streams.all_finished());
        assert_eq!(streams.next_ready(), Some((1, queue(1, 0, Some(3)))));
        assert_eq!(streams.next_ready(), None);
        let now = Instant::now();
        streams.complete(1, PullOutcome::Found { next: 3 }, now);
        assert!(streams.all_finished());
        assert!(Streams::new(vec![]).all_finished());
    }

    #[test]
    fn outcomes_schedule_the_next_pull() {
        let now = Instant::now();
        let mut streams = Streams::new(vec![queue(0, 10, None), queue(1, 0, None)]);
        let (first, _) = streams.next_ready().unwrap();
        let (second, _) = streams.next_ready().unwrap();
        streams.complete(first, PullOutcome::Empty { next: 10 }, now);
        assert_eq!(
            streams.next_ready(),
            Some((0, queue(0, 10, None))),
            "long poll over: again"
        );
        streams.complete(second, PullOutcome::Failed, now);
        assert_eq!(streams.next_ready(), None, "resting after an error");
        assert_eq!(streams.next_release(), Some(now + RETRY_DELAY));
        streams.release_delayed(now + RETRY_DELAY / 2);
        assert_eq!(streams.next_ready(), None);
        streams.release_delayed(now + RETRY_DELAY);
        assert_eq!(
            streams.next_ready(),
            Some((1, queue(1, 0, None))),
            "same offset"
        );
        streams.complete(1, PullOutcome::Moved { next: 0 }, now);
        assert_eq!(
            streams.next_ready(),
            None,
            "a move to the same offset rests"
        );
        streams.complete(0, PullOutcome::Moved { next: 42 }, now);
        assert_eq!(streams.next_ready(), Some((0, queue(0, 42, None))));
        assert_eq!(streams.queues()[0].offset, 42);
    }

    fn record(queue_offset: i64, body: &[u8]) -> Vec<u8> {
        let record = StoredRecord {
            magic: MessageMagic::V1,
            body_crc: body_crc(body),
            queue_id: 0,
            flag: 0,
            queue_offset,
            physical_offset: queue_offset * 100,
            sys_flag: 0,
            born_timestamp_ms: 1_700_000_000_000,
            born_host: "10.0.0.5:50000".parse().unwrap(),
            store_timestamp_ms: 1_700_000_000_001,
            store_host: "10.0.0.1:10911".parse().unwrap(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body,
            topic: "BenchTopic",
            properties: "TAGS\u{1}bench",
        };
        let mut out = Vec::new();
        record.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn pull_bodies_are_counted_and_timed() {
        let mut body = record(0, &1_000_000u64.to_be_bytes());
        let mut second = 2_000_000u64.to_be_bytes().to_vec();
        second.extend_from_slice(b"payload!");
        body.extend(record(1, &second));
        body.extend(record(2, b"short"));
        let mut stats = Recorder::new();
        let counted = count_records(&body, Some(3_000_000), &mut stats).unwrap();
        assert_eq!(counted, (3, 8 + 16 + 5));
        assert_eq!(
            stats.e2e_latency.len(),
            2,
            "bodies under 8 bytes carry no time"
        );
        assert_eq!(stats.e2e_latency.max(), 2000, "µs");
        assert_eq!(stats.e2e_latency.min(), 1000);

        let mut stats = Recorder::new();
        assert_eq!(count_records(&body, None, &mut stats).unwrap(), (3, 29));
        assert!(stats.e2e_latency.is_empty());

        body.truncate(body.len() - 3);
        assert!(count_records(&body, None, &mut stats).is_err());
    }
}
