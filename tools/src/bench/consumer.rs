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

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use compio::BufResult;
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use ringmq_protocol::header::PullMessageResponseHeader;
use ringmq_protocol::message::RecordIter;
use ringmq_protocol::{Command, FrameCodec, ResponseCode};

use super::args::Mode;
use super::conn::{CHECK_INTERVAL, Notify, READ_CHUNK, RunContext, lock};
use super::pending::PendingTable;
use super::rpc;
use super::stats::{Recorder, micros};
use super::wire::{PullSpec, append_pull, reserve_for_read};

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

/// An outstanding pull.
#[derive(Debug, Clone, Copy)]
struct Pull {
    at: Instant,
    stream: usize,
}

#[derive(Debug)]
struct Connection {
    pending: RefCell<PendingTable<Pull>>,
    streams: RefCell<Streams>,
    notify: Notify,
    reader_failed: Cell<bool>,
}

/// Runs one consumer connection until its queues reach their ends, the stop flag, or a failure.
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
    let stream = rpc::connect(ctx.broker, "broker").await?;
    let (read_half, write_half) = stream.into_split();
    let connection = Rc::new(Connection {
        pending: RefCell::new(PendingTable::new(window)),
        streams: RefCell::new(streams),
        notify: Notify::default(),
        reader_failed: Cell::new(false),
    });
    let reader = compio::runtime::spawn(read_loop(
        read_half,
        Rc::clone(&connection),
        Arc::clone(ctx),
        Arc::clone(recorder),
    ));
    let written = write_loop(write_half, &connection, ctx).await;
    if connection.reader_failed.get() {
        // The reader's error says what went wrong.
        return match reader.await {
            Ok(result) => result,
            Err(join) => bail!("consumer reader task: {join}"),
        };
    }
    // Outstanding pulls (long polls) are of no further interest: cancel the reader.
    drop(reader);
    written
}

async fn write_loop(
    mut stream: TcpStream,
    connection: &Connection,
    ctx: &RunContext,
) -> Result<()> {
    let mut out = BytesMut::with_capacity(4096);
    loop {
        if ctx.control.consumers_should_stop() || connection.reader_failed.get() {
            return Ok(());
        }
        let received = ctx.control.received.load(Ordering::Relaxed);
        if ctx.receive_cap.is_some_and(|cap| received >= cap) {
            return Ok(());
        }
        let now = Instant::now();
        let mut wake_at = now + CHECK_INTERVAL;
        {
            let mut streams = connection.streams.borrow_mut();
            if streams.all_finished() {
                return Ok(());
            }
            let mut pending = connection.pending.borrow_mut();
            streams.release_delayed(now);
            while pending.available() > 0 {
                let Some((index, queue)) = streams.next_ready() else {
                    break;
                };
                let opaque = pending
                    .insert(Pull {
                        at: now,
                        stream: index,
                    })
                    .expect("a free slot was counted");
                append_pull(
                    &mut out,
                    opaque,
                    &PullSpec {
                        topic: &ctx.topic,
                        queue_id: queue.queue_id,
                        offset: queue.offset,
                    },
                );
            }
            if let Some(release) = streams.next_release() {
                wake_at = wake_at.min(release);
            }
        }
        if out.is_empty() {
            connection.notify.wait_until(wake_at).await;
            continue;
        }
        let BufResult(written, buffer) = stream.write_all(out).await;
        out = buffer;
        out.clear();
        written.with_context(|| format!("sending pulls to broker {}", ctx.broker))?;
    }
}

async fn read_loop(
    stream: TcpStream,
    connection: Rc<Connection>,
    ctx: Arc<RunContext>,
    recorder: Arc<Mutex<Recorder>>,
) -> Result<()> {
    let result = read_responses(stream, &connection, &ctx, &recorder).await;
    if result.is_err() {
        connection.reader_failed.set(true);
        connection.notify.notify();
    }
    result
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

async fn read_responses(
    mut stream: TcpStream,
    connection: &Connection,
    ctx: &RunContext,
    recorder: &Mutex<Recorder>,
) -> Result<()> {
    let codec = FrameCodec::default();
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let e2e = ctx.mode == Mode::E2e;
    loop {
        reserve_for_read(&mut input, &codec, READ_CHUNK);
        let BufResult(read, buffer) = stream.append(input).await;
        input = buffer;
        if read.with_context(|| format!("reading from broker {}", ctx.broker))? == 0 {
            bail!("broker {} closed the connection", ctx.broker);
        }
        let now = Instant::now();
        let now_ns = e2e.then(|| ctx.nanos_since_epoch());
        let mut received = 0;
        {
            let mut stats = lock(recorder);
            let mut pending = connection.pending.borrow_mut();
            let mut streams = connection.streams.borrow_mut();
            while let Some(command) = codec
                .decode(&mut input)
                .with_context(|| format!("bad frame from broker {}", ctx.broker))?
            {
                if !command.is_response() {
                    continue;
                }
                let Some(pull) = pending.remove(command.opaque) else {
                    continue;
                };
                stats.record_pull(micros(now - pull.at));
                let outcome = match command.response_code() {
                    ResponseCode::Success => {
                        let queue = streams.queues()[pull.stream];
                        let (messages, bytes) = count_records(&command.body, now_ns, &mut stats)
                            .with_context(|| {
                                format!(
                                    "undecodable message in a pull of {} queue {} at offset {} from broker {}",
                                    ctx.topic, queue.queue_id, queue.offset, ctx.broker
                                )
                            })?;
                        stats.record_received(messages, bytes);
                        received += messages;
                        PullOutcome::Found {
                            next: next_offset(&command, ctx)?,
                        }
                    }
                    ResponseCode::PullNotFound => PullOutcome::Empty {
                        next: next_offset(&command, ctx)?,
                    },
                    ResponseCode::PullRetryImmediately | ResponseCode::PullOffsetMoved => {
                        PullOutcome::Moved {
                            next: next_offset(&command, ctx)?,
                        }
                    }
                    code => {
                        stats.record_error(command.code);
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
                };
                streams.complete(pull.stream, outcome, now);
            }
        }
        ctx.control.received.fetch_add(received, Ordering::Relaxed);
        connection.notify.notify();
    }
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
