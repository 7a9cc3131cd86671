//! Running the load: the plan (which connection does what, on which thread), one compio runtime
//! per client thread, and the reporter on the calling thread that prints progress every second,
//! moves the run through its phases and enforces the hard deadline.
//!
//! Phases: warm-up (`--warmup-secs`, recorded but not counted), measurement (`--duration-secs`),
//! then stop. Producers stop issuing at the end of the measurement (or at their `--messages` share)
//! and wait for their outstanding acknowledgements; in e2e the consumers then keep reading until
//! they have received what was acknowledged, for at most [`E2E_DRAIN`]. Nothing runs past
//! warm-up + duration + [`GRACE`]: the run then fails.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::args::{Api, Mode, Params};
use super::client_api;
use super::conn::{Control, RunContext, lock};
use super::consumer::{self, ConsumerJob, QueueStream};
use super::pending::split_evenly;
use super::producer::{self, ProducerJob};
use super::stats::{Recorder, progress_line};
use ringmq_client::StartPosition;

/// How long past its planned end a run may take before it is abandoned.
pub const GRACE: Duration = Duration::from_secs(30);

/// How long e2e consumers may take, after the producers finished, to receive the rest.
pub const E2E_DRAIN: Duration = Duration::from_secs(5);

/// How often the reporter looks at the run between progress lines.
const POLL: Duration = Duration::from_millis(20);

/// One connection's work.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    Producer(ProducerJob),
    Consumer(ConsumerJob),
}

/// Where each consumer queue starts and ends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueRanges {
    /// First offset to pull, per queue.
    pub start: Vec<i64>,
    /// Offset at which a queue is done, per queue; `None`: read until stopped.
    pub end: Option<Vec<i64>>,
}

impl QueueRanges {
    /// Messages between the start and end offsets (0 when reading without an end).
    pub fn backlog(&self) -> u64 {
        self.end.as_ref().map_or(0, |end| {
            self.start
                .iter()
                .zip(end)
                .map(|(start, end)| u64::try_from(end - start).unwrap_or(0))
                .sum()
        })
    }
}

/// The jobs of each client thread: producer connections (each with its share of `--messages` and
/// `--rate`), then consumer connections (queue `q` on connection `q % n`, with at most one
/// connection per queue), dealt round-robin over the threads.
pub fn plan(params: &Params, ranges: Option<&QueueRanges>) -> Vec<Vec<Job>> {
    let mut jobs = Vec::new();
    if params.mode.produces() {
        let connections = params.connections;
        for index in 0..connections {
            let cap = params
                .messages
                .map(|total| split_evenly(total, connections, index));
            if cap == Some(0) {
                continue; // fewer messages than connections
            }
            let rate = (params.rate > 0).then(|| params.rate as f64 / connections as f64);
            jobs.push(Job::Producer(ProducerJob { index, cap, rate }));
        }
    }
    // `--api client` consumes with one push consumer on a thread of its own (see `execute`).
    let raw = params.api == Api::Raw;
    if let (true, true, Some(ranges)) = (raw, params.mode.consumes(), ranges) {
        let connections = params.connections.min(params.queues as usize);
        let mut consumers = vec![Vec::new(); connections];
        for queue_id in 0..params.queues as usize {
            consumers[queue_id % connections].push(QueueStream {
                queue_id: queue_id as i32,
                offset: ranges.start[queue_id],
                end: ranges.end.as_ref().map(|end| end[queue_id]),
            });
        }
        jobs.extend(
            consumers
                .into_iter()
                .map(|streams| Job::Consumer(ConsumerJob { streams })),
        );
    }
    let mut threads = vec![Vec::new(); params.threads];
    for (index, job) in jobs.into_iter().enumerate() {
        threads[index % params.threads].push(job);
    }
    threads
}

/// What the reporter measured.
#[derive(Debug)]
pub struct Measurement {
    /// Everything recorded in the measured window.
    pub total: Recorder,
    /// The measured window.
    pub elapsed: Duration,
    /// The run ended inside the warm-up, so the warm-up is the measured window.
    pub warmup_included: bool,
}

/// Runs the planned jobs and reports until they finish.
pub fn execute(
    params: &Params,
    ctx: &Arc<RunContext>,
    threads: Vec<Vec<Job>>,
) -> Result<Measurement> {
    let start = Instant::now();
    let recorders: Vec<Arc<Mutex<Recorder>>> = threads
        .iter()
        .map(|_| Arc::new(Mutex::new(Recorder::new())))
        .collect();
    let mut handles = Vec::with_capacity(threads.len());
    for (index, jobs) in threads.into_iter().enumerate() {
        let ctx = Arc::clone(ctx);
        let recorder = Arc::clone(&recorders[index]);
        let handle = std::thread::Builder::new()
            .name(format!("bench-{index}"))
            .spawn(move || run_thread(jobs, &ctx, &recorder))
            .context("starting a client thread")?;
        handles.push(handle);
    }
    let mut recorders = recorders;
    if params.api != Api::Raw && params.mode.consumes() {
        handles.push(spawn_client_consumer(params, ctx, &mut recorders)?);
    }
    let mut reporter = Reporter::new(params, start);
    // `--api client` consume caps at the backlog it found (the raw consumers stop at offsets).
    reporter.receive_cap = ctx.receive_cap;
    let measurement = reporter.run(ctx, &recorders, &handles)?;
    for handle in handles {
        handle
            .join()
            .map_err(|_| anyhow!("a client thread panicked"))??;
    }
    Ok(measurement)
}

/// `--api client`: the push consumer, on a thread of its own with its own recorder. It starts at
/// the queues' first offsets to read the backlog (consume) or at their ends (e2e).
fn spawn_client_consumer(
    params: &Params,
    ctx: &Arc<RunContext>,
    recorders: &mut Vec<Arc<Mutex<Recorder>>>,
) -> Result<JoinHandle<Result<()>>> {
    let namesrv = ctx
        .namesrv
        .clone()
        .ok_or_else(|| anyhow!("--api client has no NameServer address"))?;
    // e2e: from the run's start by store time (the producers may already be sending while the
    // consumer joins its group, so "the queues' ends" would skip the first messages).
    let start = if params.mode == Mode::Consume {
        StartPosition::First
    } else {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        StartPosition::Timestamp(now_ms - 1000)
    };
    let recorder = Arc::new(Mutex::new(Recorder::new()));
    recorders.push(Arc::clone(&recorder));
    let ctx = Arc::clone(ctx);
    std::thread::Builder::new()
        .name("bench-consumer".into())
        .spawn(move || {
            let result = client_api::consume(&ctx, &namesrv, start, &recorder);
            if result.is_err() {
                ctx.control.fail();
            }
            result
        })
        .context("starting the consumer thread")
}

/// One client thread: a runtime running its connections to completion. The first connection error
/// is returned (and stops the whole run through [`Control::fail`]).
fn run_thread(
    jobs: Vec<Job>,
    ctx: &Arc<RunContext>,
    recorder: &Arc<Mutex<Recorder>>,
) -> Result<()> {
    let runtime = compio::runtime::Runtime::new().context("starting a client runtime")?;
    runtime.block_on(async {
        let tasks: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let ctx = Arc::clone(ctx);
                let recorder = Arc::clone(recorder);
                compio::runtime::spawn(async move {
                    let result = match job {
                        Job::Producer(job) => {
                            let result = match &ctx.producer {
                                Some(producer) => {
                                    let on_io_thread = ctx.api == Api::Client;
                                    client_api::produce(
                                        &ctx,
                                        job,
                                        &recorder,
                                        producer,
                                        on_io_thread,
                                    )
                                    .await
                                }
                                None => producer::run(&ctx, job, &recorder).await,
                            };
                            ctx.control.producer_finished();
                            result
                        }
                        Job::Consumer(job) => consumer::run(&ctx, job, &recorder).await,
                    };
                    if result.is_err() {
                        ctx.control.fail();
                    }
                    result
                })
            })
            .collect();
        let mut first_error = None;
        for task in tasks {
            let result = task
                .await
                .map_err(|join| anyhow!("connection task: {join}"))
                .and_then(|result| result);
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    })
}

/// Moments the reporter has observed.
#[derive(Debug, Default)]
struct Phase {
    /// e2e: every producer connection finished.
    producers_done_at: Option<Instant>,
    /// The measured work ended (see [`Reporter::steer`]).
    work_done_at: Option<Instant>,
}

/// The reporter's clock.
#[derive(Debug)]
struct Reporter {
    mode: Mode,
    /// consume: stop once this many messages arrived.
    receive_cap: Option<u64>,
    start: Instant,
    warmup_end: Instant,
    stop_at: Instant,
    hard_deadline: Instant,
}

impl Reporter {
    fn new(params: &Params, start: Instant) -> Self {
        let warmup_end = start + Duration::from_secs(params.warmup_secs);
        let stop_at = warmup_end + Duration::from_secs(params.duration_secs);
        Self {
            mode: params.mode,
            receive_cap: params.messages.filter(|_| params.mode == Mode::Consume),
            start,
            warmup_end,
            stop_at,
            hard_deadline: stop_at + GRACE,
        }
    }

    /// Moves the run through its phases, and notes when the measured work ended: the last
    /// acknowledgement (produce), the stop or the last queue read (consume), the consumers' stop
    /// (e2e). Connections notice a stop within a check interval; that idle tail is not measured.
    fn steer(&self, control: &Control, now: Instant, phase: &mut Phase) {
        if now >= self.stop_at {
            control.stop_producers();
            if self.mode == Mode::Consume {
                control.stop_consumers();
                phase.work_done_at.get_or_insert(now);
            }
        }
        let received = control.received.load(Ordering::Relaxed);
        match self.mode {
            Mode::Produce => {
                if control.producers_running() == 0 {
                    phase.work_done_at.get_or_insert(now);
                }
            }
            Mode::Consume => {
                if self.receive_cap.is_some_and(|cap| received >= cap) {
                    control.stop_consumers();
                    phase.work_done_at.get_or_insert(now);
                }
            }
            Mode::E2e => {
                if control.producers_running() == 0 {
                    let done_at = *phase.producers_done_at.get_or_insert(now);
                    let sent = control.sent.load(Ordering::Relaxed);
                    if received >= sent || now >= done_at + E2E_DRAIN {
                        control.stop_consumers();
                        phase.work_done_at.get_or_insert(now);
                    }
                }
            }
        }
    }

    fn run(
        &self,
        ctx: &RunContext,
        recorders: &[Arc<Mutex<Recorder>>],
        handles: &[JoinHandle<Result<()>>],
    ) -> Result<Measurement> {
        let control = &ctx.control;
        let mut interval = Recorder::new();
        let mut warmup = Recorder::new();
        let mut total = Recorder::new();
        let mut measure_start = (self.warmup_end == self.start).then_some(self.start);
        let mut phase = Phase::default();
        let mut tick = 1u64;
        let mut last_tick_at = self.start;
        loop {
            let now = Instant::now();
            self.steer(control, now, &mut phase);
            if handles.iter().all(JoinHandle::is_finished) {
                break;
            }
            if now >= self.hard_deadline {
                control.fail();
                bail!(
                    "the run did not finish within {} s of its planned end (requests unanswered or \
                     consumers not done); giving up",
                    GRACE.as_secs()
                );
            }
            let tick_at = self.start + Duration::from_secs(tick);
            if now >= tick_at {
                for recorder in recorders {
                    lock(recorder).drain_into(&mut interval);
                }
                let in_warmup = tick_at <= self.warmup_end && measure_start.is_none();
                eprintln!(
                    "{}",
                    progress_line(
                        self.mode,
                        tick,
                        &interval,
                        (now - last_tick_at).as_secs_f64(),
                        in_warmup
                    )
                );
                if in_warmup {
                    interval.drain_into(&mut warmup);
                    if tick_at == self.warmup_end {
                        measure_start = Some(now);
                    }
                } else {
                    interval.drain_into(&mut total);
                }
                last_tick_at = now;
                tick += 1;
                continue;
            }
            std::thread::sleep(POLL.min(tick_at - now));
        }
        let end = phase.work_done_at.unwrap_or_else(Instant::now);
        for recorder in recorders {
            lock(recorder).drain_into(&mut interval);
        }
        match measure_start {
            // Work that ended before measuring began has nothing to measure: report the warm-up.
            Some(measure_start) if end > measure_start => {
                interval.drain_into(&mut total);
                Ok(Measurement {
                    total,
                    elapsed: end - measure_start,
                    warmup_included: false,
                })
            }
            _ => {
                interval.drain_into(&mut warmup);
                total.drain_into(&mut warmup);
                Ok(Measurement {
                    total: warmup,
                    elapsed: end.saturating_duration_since(self.start),
                    warmup_included: true,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::args::Args;
    use clap::Parser as _;

    fn params(line: &str) -> Params {
        Args::try_parse_from(line.split_whitespace())
            .unwrap()
            .validate()
            .unwrap()
    }

    fn producers(threads: &[Vec<Job>]) -> Vec<ProducerJob> {
        threads
            .iter()
            .flatten()
            .filter_map(|job| match job {
                Job::Producer(job) => Some(*job),
                Job::Consumer(_) => None,
            })
            .collect()
    }

    fn consumers(threads: &[Vec<Job>]) -> Vec<ConsumerJob> {
        threads
            .iter()
            .flatten()
            .filter_map(|job| match job {
                Job::Consumer(job) => Some(job.clone()),
                Job::Producer(_) => None,
            })
            .collect()
    }

    #[test]
    fn producers_share_cap_and_rate() {
        let threads = plan(
            &params("ringmq-bench produce --broker h:1 --connections 3 --messages 10 --rate 300"),
            None,
        );
        assert_eq!(threads.len(), 1);
        let jobs = producers(&threads);
        assert_eq!(jobs.len(), 3);
        assert_eq!(
            jobs.iter().map(|job| job.cap.unwrap()).collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert!(jobs.iter().all(|job| job.rate == Some(100.0)));
        assert_eq!(
            jobs.iter().map(|job| job.index).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }

    #[test]
    fn producers_without_a_share_are_not_started() {
        let threads = plan(
            &params("ringmq-bench produce --broker h:1 --connections 8 --messages 3"),
            None,
        );
        let jobs = producers(&threads);
        assert_eq!(jobs.len(), 3);
        assert!(
            jobs.iter()
                .all(|job| job.cap == Some(1) && job.rate.is_none())
        );
    }

    #[test]
    fn consumers_split_queues_with_at_most_one_connection_per_queue() {
        let ranges = QueueRanges {
            start: vec![0, 10, 20, 30],
            end: Some(vec![5, 15, 25, 35]),
        };
        let threads = plan(
            &params("ringmq-bench consume --broker h:1 --queues 4 --connections 8 --threads 2"),
            Some(&ranges),
        );
        let jobs = consumers(&threads);
        assert_eq!(jobs.len(), 4, "one connection per queue at most");
        let second = jobs
            .iter()
            .find(|job| job.streams[0].queue_id == 1)
            .unwrap();
        assert_eq!(
            second.streams,
            [QueueStream {
                queue_id: 1,
                offset: 10,
                end: Some(15)
            }]
        );
        assert_eq!((threads[0].len(), threads[1].len()), (2, 2));

        let threads = plan(
            &params("ringmq-bench consume --broker h:1 --queues 4 --connections 2"),
            Some(&QueueRanges {
                start: vec![0; 4],
                end: None,
            }),
        );
        let jobs = consumers(&threads);
        assert_eq!(jobs.len(), 2);
        let ids: Vec<_> = jobs[0].streams.iter().map(|s| s.queue_id).collect();
        assert_eq!(ids, [0, 2]);
        assert!(jobs[0].streams.iter().all(|s| s.end.is_none()));
    }

    #[test]
    fn e2e_plans_both_sides_over_the_threads() {
        let threads = plan(
            &params("ringmq-bench e2e --broker h:1 --queues 8 --connections 2 --threads 2"),
            Some(&QueueRanges {
                start: vec![7; 8],
                end: None,
            }),
        );
        assert_eq!(producers(&threads).len(), 2);
        assert_eq!(consumers(&threads).len(), 2);
        for thread in &threads {
            assert_eq!(thread.len(), 2);
            assert!(matches!(thread[0], Job::Producer(_)));
            assert!(matches!(thread[1], Job::Consumer(_)));
        }
    }

    #[test]
    fn steering_follows_the_phases() {
        let start = Instant::now();
        let reporter = Reporter::new(
            &params("ringmq-bench e2e --broker h:1 --duration-secs 2 --warmup-secs 1"),
            start,
        );
        assert_eq!(reporter.stop_at, start + Duration::from_secs(3));
        assert_eq!(reporter.hard_deadline, start + Duration::from_secs(33));
        let control = Control::new(1, reporter.hard_deadline);
        let mut phase = Phase::default();
        reporter.steer(&control, start + Duration::from_secs(1), &mut phase);
        assert!(!control.producers_should_stop());
        reporter.steer(&control, start + Duration::from_secs(3), &mut phase);
        assert!(control.producers_should_stop() && !control.consumers_should_stop());
        control.producer_finished();
        control.sent.store(10, Ordering::Relaxed);
        control.received.store(9, Ordering::Relaxed);
        reporter.steer(&control, start + Duration::from_secs(3), &mut phase);
        assert!(
            !control.consumers_should_stop(),
            "one message still to receive"
        );
        reporter.steer(
            &control,
            start + Duration::from_secs(3) + E2E_DRAIN,
            &mut phase,
        );
        assert!(control.consumers_should_stop(), "drain time is bounded");
        assert_eq!(
            phase.work_done_at,
            Some(start + Duration::from_secs(3) + E2E_DRAIN)
        );

        let reporter = Reporter::new(
            &params("ringmq-bench consume --broker h:1 --messages 5"),
            start,
        );
        let control = Control::new(0, reporter.hard_deadline);
        control.received.store(5, Ordering::Relaxed);
        let mut phase = Phase::default();
        reporter.steer(&control, start, &mut phase);
        assert!(control.consumers_should_stop());
        assert_eq!(phase.work_done_at, Some(start));
    }
}
