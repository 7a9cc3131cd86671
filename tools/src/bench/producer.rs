//! One producer connection: keeps up to `--inflight` send requests outstanding, round-robin over
//! the topic's queues, paced by `--rate` when given.
//!
//! The writer copies pre-encoded requests ([`SendTemplate`]) for every free window slot into one
//! buffer and writes them with a single call; the reader takes responses off the socket in
//! [`READ_CHUNK`]-sized reads, reads code and opaque straight from each binary header (a full
//! decode only for the rare non-SUCCESS answer, to show its remark), and records them under one
//! lock of the thread's recorder per chunk. In the steady state neither side allocates.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Buf, BytesMut};
use compio::BufResult;
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use ringmq_protocol::{FrameCodec, ResponseCode};

use super::args::Mode;
use super::conn::{CHECK_INTERVAL, Notify, READ_CHUNK, RunContext, WRITE_CHUNK, lock};
use super::pending::{Pacer, PendingTable};
use super::rpc;
use super::stats::{Recorder, micros};
use super::wire::{SendSpec, SendTemplate, peek, reserve_for_read};

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

/// An outstanding send.
#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    messages: u32,
}

/// State shared by the connection's writer and reader tasks.
#[derive(Debug)]
struct Connection {
    pending: RefCell<PendingTable<Sent>>,
    /// The reader freed slots (or failed).
    notify: Notify,
    reader_failed: Cell<bool>,
    writer_done: Cell<bool>,
}

/// Runs one producer connection until its cap, the stop flag, or a failure.
pub async fn run(
    ctx: &Arc<RunContext>,
    job: ProducerJob,
    recorder: &Arc<Mutex<Recorder>>,
) -> Result<()> {
    let templates = (0..ctx.queues)
        .map(|queue_id| {
            SendTemplate::new(&SendSpec {
                topic: &ctx.topic,
                queue_id: queue_id as i32,
                queues: ctx.queues as i32,
                size: ctx.size,
                batch: ctx.batch,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let stream = rpc::connect(ctx.broker, "broker").await?;
    let (read_half, write_half) = stream.into_split();
    let connection = Rc::new(Connection {
        pending: RefCell::new(PendingTable::new(ctx.inflight)),
        notify: Notify::default(),
        reader_failed: Cell::new(false),
        writer_done: Cell::new(false),
    });
    let reader = compio::runtime::spawn(read_loop(
        read_half,
        Rc::clone(&connection),
        Arc::clone(ctx),
        Arc::clone(recorder),
    ));
    let written = write_loop(write_half, &connection, ctx, &job, &templates).await;
    connection.writer_done.set(true);
    written?;
    let outstanding = connection.pending.borrow().len();
    if outstanding == 0 && !reader.is_finished() {
        // Nothing more will arrive and the reader is parked in a read: cancel it.
        drop(reader);
        return Ok(());
    }
    // The reader returns after the last response (or with the connection's error).
    match compio::time::timeout_at(ctx.control.hard_deadline, reader).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(anyhow!("producer reader task: {join}")),
        Err(_) => bail!(
            "{} send requests to broker {} still unanswered at the deadline",
            connection.pending.borrow().len(),
            ctx.broker
        ),
    }
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

async fn write_loop(
    mut stream: TcpStream,
    connection: &Connection,
    ctx: &RunContext,
    job: &ProducerJob,
    templates: &[SendTemplate],
) -> Result<()> {
    let batch = ctx.batch as u64;
    let request_bytes = templates[0].len();
    let request_cap = job.cap.map(|messages| messages.div_ceil(batch));
    let per_write = (WRITE_CHUNK / request_bytes).max(1) as u64;
    let min_write = (ctx.inflight as u64 / 4).clamp(1, per_write);
    let e2e = ctx.mode == Mode::E2e;
    let mut pacer = job.rate.map(|rate| Pacer::new(Instant::now(), rate));
    let mut queue = job.index % templates.len();
    let mut requests_sent = 0u64;
    let mut out = BytesMut::with_capacity(request_bytes * ctx.inflight.min(per_write as usize));
    loop {
        if ctx.control.producers_should_stop() || connection.reader_failed.get() {
            return Ok(());
        }
        let now = Instant::now();
        let (free, outstanding) = {
            let pending = connection.pending.borrow();
            (pending.available() as u64, pending.len())
        };
        let mut requests = free.min(per_write);
        let mut remaining = u64::MAX;
        if let Some(cap) = request_cap {
            if requests_sent >= cap {
                return Ok(());
            }
            remaining = cap - requests_sent;
            requests = requests.min(remaining);
        }
        let mut wake_at = now + CHECK_INTERVAL;
        if let Some(pacer) = &pacer {
            requests = requests.min(pacer.due(now) / batch);
            if requests == 0 && free > 0 {
                wake_at = wake_at.min(pacer.deadline_of_next(batch));
            }
        } else if outstanding > 0 && requests < min_write.min(remaining) {
            // Unpaced: wait for a quarter of the window to free up and refill it with one write,
            // rather than one small write per response chunk (a third less kernel time for the
            // same throughput on loopback). Pacing sends what is due at once instead.
            requests = 0;
        }
        if requests == 0 {
            // A full window (the reader notifies) or nothing due yet (the deadline).
            connection.notify.wait_until(wake_at).await;
            continue;
        }
        let born_ms = unix_millis();
        let stamp = e2e.then(|| ctx.nanos_since_epoch());
        {
            let mut pending = connection.pending.borrow_mut();
            for _ in 0..requests {
                let opaque = pending
                    .insert(Sent {
                        at: now,
                        messages: batch as u32,
                    })
                    .expect("a free slot was counted");
                templates[queue].append_to(&mut out, opaque, born_ms, stamp);
                queue = (queue + 1) % templates.len();
            }
        }
        requests_sent += requests;
        if let Some(pacer) = &mut pacer {
            pacer.issued(requests * batch);
        }
        let BufResult(written, buffer) = stream.write_all(out).await;
        out = buffer;
        out.clear();
        written.with_context(|| format!("sending to broker {}", ctx.broker))?;
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

async fn read_responses(
    mut stream: TcpStream,
    connection: &Connection,
    ctx: &RunContext,
    recorder: &Mutex<Recorder>,
) -> Result<()> {
    let codec = FrameCodec::default();
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let message_bytes = ctx.size as u64;
    loop {
        if connection.writer_done.get() && connection.pending.borrow().is_empty() {
            return Ok(());
        }
        reserve_for_read(&mut input, &codec, READ_CHUNK);
        let BufResult(read, buffer) = stream.append(input).await;
        input = buffer;
        if read.with_context(|| format!("reading from broker {}", ctx.broker))? == 0 {
            let outstanding = connection.pending.borrow().len();
            if outstanding == 0 && connection.writer_done.get() {
                return Ok(());
            }
            bail!(
                "broker {} closed the connection with {outstanding} send requests outstanding",
                ctx.broker
            );
        }
        // Every response of a chunk arrived at the same moment.
        let now = Instant::now();
        let mut acknowledged = 0;
        {
            let mut stats = lock(recorder);
            let mut pending = connection.pending.borrow_mut();
            while let Some(layout) = codec
                .check(&input)
                .with_context(|| format!("bad frame from broker {}", ctx.broker))?
            {
                let (code, opaque, is_response) = match peek(&input, &layout) {
                    Some(head) if head.code == ResponseCode::Success.as_i32() => {
                        input.advance(layout.frame_bytes);
                        (head.code, head.opaque, head.is_response)
                    }
                    _ => {
                        let command = codec
                            .decode(&mut input)
                            .with_context(|| format!("bad frame from broker {}", ctx.broker))?
                            .expect("a whole frame was checked");
                        if command.is_response()
                            && command.code != ResponseCode::Success.as_i32()
                            && ctx.control.first_time(command.code)
                        {
                            eprintln!(
                                "note: broker answered a send with {}{}",
                                command.response_code(),
                                command
                                    .remark
                                    .as_deref()
                                    .map_or(String::new(), |remark| format!(": {remark}"))
                            );
                        }
                        (command.code, command.opaque, command.is_response())
                    }
                };
                if !is_response {
                    continue; // a request from the broker; producers answer none
                }
                let Some(sent) = pending.remove(opaque) else {
                    continue; // not ours (or already completed)
                };
                if code == ResponseCode::Success.as_i32() {
                    let messages = u64::from(sent.messages);
                    stats.record_sent(messages, messages * message_bytes, micros(now - sent.at));
                    acknowledged += messages;
                } else {
                    stats.record_error(code);
                }
            }
        }
        ctx.control.sent.fetch_add(acknowledged, Ordering::Relaxed);
        connection.notify.notify();
    }
}
