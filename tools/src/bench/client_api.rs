//! `--api client`: the load through the client library's public API, as an application drives
//! it, so its cost can be compared with the raw requests of the default mode in one run.
//!
//! Producing: every producer job is `--inflight` tasks, each awaiting `Producer::send` (or
//! `send_batch`) in a loop; the sends share one [`Producer`] (one client I/O thread, one
//! connection per broker). With `--api client` the tasks run on the client's I/O thread
//! (`ClientInstance::spawn`); with `--api client-remote` on the benchmark's threads, paying a
//! hand-off to the I/O thread and back per send. Consuming: one [`PushConsumer`] in a fresh group, its
//! handler counting batches of up to 32 messages on the consumer's thread.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use bytes::{BufMut, Bytes, BytesMut};
use ringmq_client::{
    ClientConfig, ClientError, ConsumeOutcome, Message, Producer, PushConsumer, ReceivedMessage,
    StartPosition,
};

use super::args::Mode;
use super::conn::{CHECK_INTERVAL, REQUEST_TIMEOUT, RunContext, lock};
use super::producer::{Claim, ProducerJob, Window};
use super::stats::{Recorder, micros};
use super::wire::{PULL_BATCH, TAG};

/// Producer group of `--api client` sends.
const PRODUCER_GROUP: &str = "ringmq-bench-client";

/// Client settings for the run: the NameServers, and the load's own request timeout.
fn client_config(namesrv: &str) -> ClientConfig {
    ClientConfig::new(namesrv).with_request_timeout(REQUEST_TIMEOUT)
}

/// The producer every producer job of the run shares.
pub fn build_producer(namesrv: &str) -> Result<Producer> {
    Producer::builder(namesrv)
        .config(client_config(namesrv))
        .group(PRODUCER_GROUP)
        .send_timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the client library's producer")
}

/// Runs one producer job through `producer` until its cap, the stop flag, or a failure: its
/// `--inflight` sending tasks run on the client's I/O thread (`on_io_thread`) or on this
/// benchmark thread.
pub async fn produce(
    ctx: &Arc<RunContext>,
    job: ProducerJob,
    recorder: &Arc<Mutex<Recorder>>,
    producer: &Producer,
    on_io_thread: bool,
) -> Result<()> {
    if !on_io_thread {
        return send_window(Arc::clone(ctx), job, Arc::clone(recorder), producer.clone()).await;
    }
    let (ctx, recorder, sender) = (Arc::clone(ctx), Arc::clone(recorder), producer.clone());
    let window = producer
        .instance()
        .spawn(move || async move { Ok(send_window(ctx, job, recorder, sender).await) });
    window
        .await
        .map_err(|error| anyhow!("the client's I/O thread: {error}"))?
}

/// The `--inflight` sending tasks of one producer job, on the current thread.
async fn send_window(
    ctx: Arc<RunContext>,
    job: ProducerJob,
    recorder: Arc<Mutex<Recorder>>,
    producer: Producer,
) -> Result<()> {
    // The same recognisable body the raw templates carry.
    let body: Bytes = (0..ctx.size).map(|i| b'a' + (i % 26) as u8).collect();
    let window = Rc::new(Window::new(&ctx, &job, 1));
    let tasks: Vec<_> = (0..ctx.inflight)
        .map(|_| {
            compio::runtime::spawn(send_loop(
                Arc::clone(&ctx),
                producer.clone(),
                body.clone(),
                Rc::clone(&window),
                Arc::clone(&recorder),
            ))
        })
        .collect();
    let mut first_error = None;
    for task in tasks {
        let result = match compio::time::timeout_at(ctx.control.hard_deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(anyhow!("producer task: {join}")),
            Err(_) => Err(anyhow!("sends still unanswered at the deadline")),
        };
        if let Err(error) = result {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A message of the run; in e2e its body starts with the send time.
fn message(ctx: &RunContext, body: &Bytes) -> Message {
    let body = if ctx.mode == Mode::E2e {
        let mut stamped = BytesMut::with_capacity(body.len());
        stamped.put_u64(ctx.nanos_since_epoch());
        stamped.extend_from_slice(&body[8..]);
        stamped.freeze()
    } else {
        body.clone()
    };
    Message::new(ctx.topic.as_str(), body).with_tags(TAG)
}

/// One concurrent sender: send, await, record, again.
async fn send_loop(
    ctx: Arc<RunContext>,
    producer: Producer,
    body: Bytes,
    window: Rc<Window>,
    recorder: Arc<Mutex<Recorder>>,
) -> Result<()> {
    let batch = ctx.batch as u64;
    let message_bytes = ctx.size as u64;
    loop {
        match window.claim(&ctx, 1) {
            Claim::Send(_) => {}
            Claim::WaitUntil(deadline) => {
                compio::time::sleep_until(deadline).await;
                continue;
            }
            Claim::Stop => return Ok(()),
        }
        let sent_at = Instant::now();
        let result = if ctx.batch > 1 {
            let messages = (0..ctx.batch).map(|_| message(&ctx, &body)).collect();
            producer.send_batch(messages).await
        } else {
            producer.send(message(&ctx, &body)).await
        };
        match result {
            Ok(_) => {
                lock(&recorder).record_sent(
                    batch,
                    batch * message_bytes,
                    micros(sent_at.elapsed()),
                );
                ctx.control.sent.fetch_add(batch, Ordering::Relaxed);
            }
            Err(error) => {
                let code = error
                    .response_code()
                    .map_or(-1, ringmq_protocol::ResponseCode::as_i32);
                lock(&recorder).record_error(code);
                window.fail();
                ctx.control.fail();
                return Err(error).with_context(|| format!("sending to topic {}", ctx.topic));
            }
        }
    }
}

/// Consumes the topic with a push consumer in a fresh group from `start` until the consumers
/// are told to stop or `ctx.receive_cap` messages arrived. Blocks the calling thread.
pub fn consume(
    ctx: &Arc<RunContext>,
    namesrv: &str,
    start: StartPosition,
    recorder: &Arc<Mutex<Recorder>>,
) -> Result<()> {
    // A group of its own: a previous run's committed offsets must not skip the backlog.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let group = format!("ringmq-bench-client-{}-{nanos}", std::process::id());
    let handler_ctx = Arc::clone(ctx);
    let handler_recorder = Arc::clone(recorder);
    let consumer = PushConsumer::builder(namesrv, &group)
        .config(client_config(namesrv))
        .subscribe(&ctx.topic, "*")
        .start_position(start)
        .pull_batch_size(PULL_BATCH as u32)
        .batch_size(PULL_BATCH as usize)
        .long_poll_timeout(Duration::from_secs(1))
        .start(move |messages: &[ReceivedMessage], _| {
            record_batch(&handler_ctx, &handler_recorder, messages);
            ConsumeOutcome::Success
        })
        .context("starting the client library's push consumer")?;
    let capped = |received: u64| ctx.receive_cap.is_some_and(|cap| received >= cap);
    while !ctx.control.consumers_should_stop()
        && !capped(ctx.control.received.load(Ordering::Relaxed))
        && Instant::now() < ctx.control.hard_deadline
    {
        std::thread::sleep(CHECK_INTERVAL / 5);
    }
    consumer
        .shutdown()
        .map_err(|error: ClientError| anyhow!("stopping the push consumer: {error}"))
}

/// Counts a handler batch (and, in e2e, each message's send-to-receipt latency).
fn record_batch(ctx: &RunContext, recorder: &Mutex<Recorder>, messages: &[ReceivedMessage]) {
    let now_ns = (ctx.mode == Mode::E2e).then(|| ctx.nanos_since_epoch());
    let mut stats = lock(recorder);
    let mut bytes = 0;
    for message in messages {
        bytes += message.body.len() as u64;
        if let (Some(now_ns), Some(stamp)) = (now_ns, message.body.first_chunk::<8>()) {
            stats.record_e2e(now_ns.saturating_sub(u64::from_be_bytes(*stamp)) / 1000);
        }
    }
    let count = messages.len() as u64;
    stats.record_received(count, bytes);
    drop(stats);
    ctx.control.received.fetch_add(count, Ordering::Relaxed);
}
