//! One producer connection: keeps up to `--inflight` send requests outstanding, round-robin over
//! the topic's queues, paced by `--rate` when given.
//!
//! Each request is a copy of a pre-encoded frame ([`SendTemplate`]) with its opaque, born time and
//! (e2e) send stamp patched in, written straight into the connection's output buffer: nothing is
//! formatted per message.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use ringmq_client::remoting::Connection;
use ringmq_protocol::{RequestCode, ResponseCode};

use super::args::Mode;
use super::conn::{CHECK_INTERVAL, REQUEST_TIMEOUT, RunContext, lock};
use super::pending::Pacer;
use super::rpc;
use super::stats::{Recorder, micros};
use super::wire::{SendSpec, SendTemplate};

/// What one producer connection does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProducerJob {
    /// Connection number (its first queue is `index % queues`).
    pub index: usize,
    /// Messages to send, rounded up to whole requests; `None`: until told to stop.
    pub cap: Option<u64>,
    /// Messages per second for this connection; `None`: unpaced.
    pub rate: Option<f64>,
}

/// What a producer's window of tasks share on their thread (one thread: `Cell`s, no locks):
/// how many requests went out, the next queue, the pacer, and whether one of them failed.
#[derive(Debug)]
pub struct Window {
    requests_sent: Cell<u64>,
    next_queue: Cell<usize>,
    pacer: RefCell<Option<Pacer>>,
    /// Set by the first failed request: every task stops.
    failed: Cell<bool>,
    /// Requests this producer may send; `None`: until told to stop.
    request_cap: Option<u64>,
    /// Messages per request.
    batch: u64,
}

/// What a task of the window does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Send one request to this queue index.
    Send(usize),
    /// Nothing is due yet under `--rate`: look again at this moment.
    WaitUntil(Instant),
    /// The producer is done (cap, stop, or failure).
    Stop,
}

impl Window {
    /// The window of `job` over `queues` queues.
    pub fn new(ctx: &RunContext, job: &ProducerJob, queues: usize) -> Self {
        let batch = ctx.batch as u64;
        Self {
            requests_sent: Cell::new(0),
            next_queue: Cell::new(job.index % queues.max(1)),
            pacer: RefCell::new(job.rate.map(|rate| Pacer::new(Instant::now(), rate))),
            failed: Cell::new(false),
            request_cap: job.cap.map(|messages| messages.div_ceil(batch)),
            batch,
        }
    }

    /// Decides what a task does next and, for [`Claim::Send`], counts the request as issued.
    pub fn claim(&self, ctx: &RunContext, queues: usize) -> Claim {
        if ctx.control.producers_should_stop() || self.failed.get() {
            return Claim::Stop;
        }
        if self
            .request_cap
            .is_some_and(|cap| self.requests_sent.get() >= cap)
        {
            return Claim::Stop;
        }
        if let Some(pacer) = self.pacer.borrow_mut().as_mut() {
            let now = Instant::now();
            if pacer.due(now) < self.batch {
                return Claim::WaitUntil(
                    pacer.deadline_of_next(self.batch).min(now + CHECK_INTERVAL),
                );
            }
            pacer.issued(self.batch);
        }
        self.requests_sent.set(self.requests_sent.get() + 1);
        let queue = self.next_queue.get();
        self.next_queue.set((queue + 1) % queues.max(1));
        Claim::Send(queue)
    }

    /// A request failed: the whole window stops.
    pub fn fail(&self) {
        self.failed.set(true);
    }
}

/// Runs one producer connection until its cap, the stop flag, or a failure.
///
/// The connection is the client library's multiplexed [`Connection`]; the window is `--inflight`
/// tasks on this thread, each sending one request and awaiting its answer in a loop. The
/// connection's writer sends every request queued since its last write in one call, so the
/// requests a burst of answers releases leave together.
pub async fn run(
    ctx: &Arc<RunContext>,
    job: ProducerJob,
    recorder: &Arc<Mutex<Recorder>>,
) -> Result<()> {
    let templates = Rc::new(
        (0..ctx.queues)
            .map(|queue_id| {
                SendTemplate::new(&SendSpec {
                    topic: &ctx.topic,
                    queue_id: queue_id as i32,
                    queues: ctx.queues as i32,
                    size: ctx.size,
                    batch: ctx.batch,
                    serialize_type: ctx.send_headers,
                })
            })
            .collect::<Result<Vec<_>>>()?,
    );
    let connection = rpc::connect(ctx.broker).await?;
    let window = Rc::new(Window::new(ctx, &job, templates.len()));
    let tasks: Vec<_> = (0..ctx.inflight)
        .map(|_| {
            compio::runtime::spawn(send_loop(
                Rc::clone(&connection),
                Arc::clone(ctx),
                Rc::clone(&templates),
                Rc::clone(&window),
                Arc::clone(recorder),
            ))
        })
        .collect();
    let mut first_error = None;
    for task in tasks {
        let result = match compio::time::timeout_at(ctx.control.hard_deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(anyhow!("producer task: {join}")),
            Err(_) => Err(anyhow!(
                "{} send requests to broker {} still unanswered at the deadline",
                connection.pending(),
                ctx.broker
            )),
        };
        if let Err(error) = result {
            first_error.get_or_insert(error);
        }
    }
    connection.close("benchmark finished");
    first_error.map_or(Ok(()), Err)
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// One slot of the window: send, await the answer, record it, again.
async fn send_loop(
    connection: Rc<Connection>,
    ctx: Arc<RunContext>,
    templates: Rc<Vec<SendTemplate>>,
    window: Rc<Window>,
    recorder: Arc<Mutex<Recorder>>,
) -> Result<()> {
    let batch = ctx.batch as u64;
    let code = if ctx.batch > 1 {
        RequestCode::SendBatchMessage
    } else {
        RequestCode::SendMessageV2
    };
    let e2e = ctx.mode == Mode::E2e;
    let message_bytes = ctx.size as u64;
    loop {
        let queue = match window.claim(&ctx, templates.len()) {
            Claim::Send(queue) => queue,
            Claim::WaitUntil(deadline) => {
                compio::time::sleep_until(deadline).await;
                continue;
            }
            Claim::Stop => return Ok(()),
        };
        let born_ms = unix_millis();
        let stamp = e2e.then(|| ctx.nanos_since_epoch());
        let sent_at = Instant::now();
        let answer = connection
            .request_with(code, REQUEST_TIMEOUT, |opaque, out| {
                templates[queue].append_to(out, opaque, born_ms, stamp);
            })
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                window.fail();
                ctx.control.fail();
                return Err(error).with_context(|| format!("sending to broker {}", ctx.broker));
            }
        };
        let mut stats = lock(&recorder);
        if answer.response_code() == ResponseCode::Success {
            stats.record_sent(batch, batch * message_bytes, micros(sent_at.elapsed()));
            drop(stats);
            ctx.control.sent.fetch_add(batch, Ordering::Relaxed);
        } else {
            stats.record_error(answer.code);
            drop(stats);
            if ctx.control.first_time(answer.code) {
                eprintln!(
                    "note: broker answered a send with {}{}",
                    answer.response_code(),
                    answer
                        .remark
                        .as_deref()
                        .map_or(String::new(), |remark| format!(": {remark}"))
                );
            }
        }
    }
}
