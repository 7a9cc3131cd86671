//! `ringmq-bench`: load for any RocketMQ-protocol broker (docs/benchmarks.md).
//!
//! The tool shares its machine with the broker under test, so the client is built to cost as
//! little as possible per message: requests are pre-encoded and patched in place
//! ([`wire::SendTemplate`]) and go through the client library's multiplexed connection
//! ([`ringmq_client::remoting::Connection`]), which writes everything queued in one system call
//! and reads answers back in large chunks; each client thread runs one compio runtime and records
//! into its own [`stats::Recorder`].
//!
//! Module map:
//! - [`args`]: command line and validation.
//! - [`rpc`]: setup requests (route lookup, topic creation, queue offsets).
//! - [`wire`]: request encoding.
//! - [`pending`]: pacer, cap splitting.
//! - [`conn`]: run context, control flags, the wake-up between a connection's tasks.
//! - [`producer`], [`consumer`]: one connection each.
//! - [`runner`]: planning, client threads, the per-second reporter and the phases of a run.
//! - [`stats`]: recording, progress lines, the summary.
//! - [`local`]: `--local`, the in-process broker.
//!
//! Errors use `anyhow`: this module is the implementation of a binary, kept in the library so it
//! can be unit-tested.

// Rates and averages turn counts into f64; the counts stay far below 2^53.
#![allow(clippy::cast_precision_loss)]

pub mod args;
pub mod client_api;
pub mod conn;
pub mod consumer;
pub mod local;
pub mod pending;
pub mod producer;
pub mod rpc;
pub mod runner;
pub mod stats;
pub mod wire;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use args::{Api, Args, Mode, Params, Target, UsageError};
pub use stats::Summary;

use conn::{Control, RunContext};
use rpc::QueueEnd;
use runner::{GRACE, QueueRanges};

/// Runs a validated benchmark and returns its summary. Fails on any connection error, on a setup
/// request the broker refuses, and when the run overruns its planned end by [`GRACE`].
pub fn run(params: &Params) -> Result<Summary> {
    let local = match &params.target {
        Target::Local {
            flush_disk_type,
            shards,
        } => Some(local::start(*flush_disk_type, *shards)?),
        Target::Namesrv(_) | Target::Broker(_) => None,
    };
    let local_addr = local.as_ref().map(|(_, addr)| *addr);
    let namesrv = match (&params.target, &local) {
        (Target::Namesrv(addr), _) => Some(addr.clone()),
        (Target::Local { .. }, Some((broker, _))) => {
            broker.namesrv_addr().map(|addr| addr.to_string())
        }
        _ => None,
    };
    let result = run_against(params, local_addr, namesrv);
    if let Some((broker, _)) = local {
        broker.shutdown();
    }
    result
}

fn run_against(
    params: &Params,
    local_addr: Option<SocketAddr>,
    namesrv: Option<String>,
) -> Result<Summary> {
    let (broker, ranges) = {
        let runtime = compio::runtime::Runtime::new().context("starting the setup runtime")?;
        runtime.block_on(setup(params, local_addr))?
    };
    announce(params, broker, ranges.as_ref());
    let threads = runner::plan(params, ranges.as_ref());
    let producers = threads
        .iter()
        .flatten()
        .filter(|job| matches!(job, runner::Job::Producer(_)))
        .count();
    let planned = Duration::from_secs(params.warmup_secs + params.duration_secs);
    let client_api = params.api != Api::Raw;
    let producer = match (&namesrv, client_api && params.mode.produces()) {
        (Some(namesrv), true) => Some(client_api::build_producer(namesrv)?),
        _ => None,
    };
    // The raw consumers stop at the end offsets; the push consumer stops at the backlog's size.
    let receive_cap = match (params.mode, client_api) {
        (Mode::Consume, true) => params
            .messages
            .or_else(|| ranges.as_ref().map(QueueRanges::backlog)),
        (Mode::Consume, false) => params.messages,
        _ => None,
    };
    let ctx = Arc::new(RunContext {
        mode: params.mode,
        broker,
        topic: params.topic.clone(),
        queues: params.queues,
        size: params.size,
        batch: params.batch,
        inflight: params.inflight,
        receive_cap,
        epoch: Instant::now(),
        control: Control::new(producers, Instant::now() + planned + GRACE),
        api: params.api,
        send_headers: params.headers.serialize_type(),
        producer,
        namesrv,
    });
    let measurement = runner::execute(params, &ctx, threads)?;
    Ok(Summary::new(
        params,
        broker.to_string(),
        &measurement.total,
        measurement.elapsed,
        measurement.warmup_included,
    ))
}

/// Finds the broker, creates the topic, and reads the queue offsets consumers start from.
async fn setup(
    params: &Params,
    local_addr: Option<SocketAddr>,
) -> Result<(SocketAddr, Option<QueueRanges>)> {
    let (topic, queues) = (params.topic.as_str(), params.queues);
    let broker = match (&params.target, local_addr) {
        (Target::Namesrv(namesrv), _) => rpc::broker_via_namesrv(namesrv, topic, queues).await?,
        (Target::Broker(addr), _) => {
            let broker = rpc::resolve(addr)?;
            rpc::create_topic(broker, topic, queues).await?;
            broker
        }
        (Target::Local { .. }, Some(broker)) => {
            rpc::create_topic(broker, topic, queues).await?;
            broker
        }
        (Target::Local { .. }, None) => bail!("the in-process broker has no address"),
    };
    let ranges = match params.mode {
        Mode::Produce => None,
        Mode::Consume => {
            let start = rpc::queue_offsets(broker, topic, queues, QueueEnd::Min).await?;
            let end = rpc::queue_offsets(broker, topic, queues, QueueEnd::Max).await?;
            if params.messages.is_none() && start.iter().zip(&end).all(|(min, max)| min >= max) {
                bail!(
                    "topic {topic} holds no messages on broker {broker}: produce first, or pass \
                     --messages N to wait for new ones"
                );
            }
            // With --messages, read past today's end until N arrive.
            let end = params.messages.is_none().then_some(end);
            Some(QueueRanges { start, end })
        }
        Mode::E2e => Some(QueueRanges {
            start: rpc::queue_offsets(broker, topic, queues, QueueEnd::Max).await?,
            end: None,
        }),
    };
    Ok((broker, ranges))
}

/// The line on stderr that says what is about to run.
fn announce(params: &Params, broker: SocketAddr, ranges: Option<&QueueRanges>) {
    let backlog = ranges
        .filter(|ranges| ranges.end.is_some())
        .map_or(String::new(), |ranges| {
            format!(", backlog {} messages", stats::thousands(ranges.backlog()))
        });
    eprintln!(
        "ringmq-bench {}: broker {broker}, topic {} ({} queues){backlog}; warm-up {} s, measuring {} s",
        params.mode, params.topic, params.queues, params.warmup_secs, params.duration_secs
    );
}

/// Writes the summary as JSON to `path`.
pub fn write_json(summary: &Summary, path: &Path) -> Result<()> {
    let mut json = summary.to_json();
    json.push('\n');
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}
