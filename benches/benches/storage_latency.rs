//! Append latency and throughput of the store, with the device's own fdatasync latency measured
//! in the same run as the baseline (the targets: SYNC_FLUSH p99 within 2x of fdatasync p99, and
//! SYNC_FLUSH throughput at 70% or more of ASYNC_FLUSH with 64 appenders).
//!
//! `cargo bench -p ringmq-benches --bench storage_latency` prints one line per run and the
//! median of three. `RINGMQ_BENCH_DIR` picks the filesystem; `RINGMQ_BENCH_SECONDS` the length
//! of each run (default 4).

#![allow(
    clippy::cast_precision_loss,
    reason = "rates and percentiles for display"
)]

use std::{
    cell::RefCell,
    fs::OpenOptions,
    io::Write,
    os::unix::fs::FileExt,
    path::PathBuf,
    rc::Rc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use ringmq_benches::fixtures::stored_record_template;
use ringmq_storage::{FlushMode, MessageStore, StoreConfig, io::UringStorage};

/// Concurrent appenders (the SYNC_FLUSH target is stated for 64);
/// `RINGMQ_BENCH_APPENDERS` overrides.
fn appenders() -> usize {
    std::env::var("RINGMQ_BENCH_APPENDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}
const RUNS: usize = 3;
const RING: UringStorage = UringStorage::new();
const INLINE: UringStorage = UringStorage::inline_writes();

#[derive(Debug, Clone, Copy)]
struct RunResult {
    mib_per_s: f64,
    msgs_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
}

fn bench_dir() -> PathBuf {
    std::env::var_os("RINGMQ_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

fn run_seconds() -> Duration {
    Duration::from_secs(
        std::env::var("RINGMQ_BENCH_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4),
    )
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!())
}

fn summarize(histogram: &Histogram<u64>, bytes: u64, elapsed: Duration) -> RunResult {
    let seconds = elapsed.as_secs_f64();
    RunResult {
        mib_per_s: bytes as f64 / seconds / f64::from(1 << 20),
        msgs_per_s: histogram.len() as f64 / seconds,
        p50_us: histogram.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: histogram.value_at_quantile(0.99) as f64 / 1000.0,
        p999_us: histogram.value_at_quantile(0.999) as f64 / 1000.0,
    }
}

/// 64 appenders append `body_bytes` messages for the run time; latency per append in ns.
fn store_run(storage: UringStorage, mode: FlushMode, body_bytes: usize) -> RunResult {
    let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
    let mut config = StoreConfig::new(dir.path());
    config.flush_mode = mode;
    let body = Rc::new(vec![b'l'; body_bytes]);
    let runtime = compio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let store = MessageStore::open(storage, config).await.expect("open");
        let histogram = Rc::new(RefCell::new(histogram()));
        let bytes = Rc::new(RefCell::new(0u64));
        let start = Instant::now();
        let until = start + run_seconds();
        let mut tasks = Vec::new();
        for task in 0..appenders() {
            let store = store.clone();
            let body = Rc::clone(&body);
            let histogram = Rc::clone(&histogram);
            let bytes = Rc::clone(&bytes);
            tasks.push(compio::runtime::spawn(async move {
                let mut record = stored_record_template("LatencyTopic", &body);
                record.queue_id = (task % 8) as i32;
                let size = record.encoded_len() as u64;
                // Bounded by time and by count.
                for _ in 0..10_000_000u64 {
                    let sent = Instant::now();
                    if sent > until {
                        break;
                    }
                    store.append(&record).await.expect("append");
                    let nanos = sent.elapsed().as_nanos() as u64;
                    let _ = histogram.borrow_mut().record(nanos.max(1));
                    *bytes.borrow_mut() += size;
                }
            }));
        }
        for task in tasks {
            task.await.expect("appender");
        }
        let elapsed = start.elapsed();
        store.close().await.expect("close");
        summarize(&histogram.borrow(), *bytes.borrow(), elapsed)
    })
}

/// The device baseline: 4 KiB appends to a preallocated file, each followed by fdatasync.
fn fdatasync_run() -> RunResult {
    let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
    let path = dir.path().join("fdatasync.bin");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    file.set_len(256 << 20).expect("size");
    file.flush().expect("flush");
    let block = [7u8; 4096];
    let mut histogram = histogram();
    let start = Instant::now();
    let until = start + run_seconds();
    let mut offset = 0u64;
    while Instant::now() < until && offset < (256 << 20) {
        let sent = Instant::now();
        file.write_all_at(&block, offset).expect("write");
        file.sync_data().expect("fdatasync");
        let _ = histogram.record(sent.elapsed().as_nanos() as u64);
        offset += 4096;
    }
    summarize(&histogram, offset, start.elapsed())
}

fn median(mut runs: Vec<RunResult>) -> RunResult {
    runs.sort_by(|a, b| a.mib_per_s.total_cmp(&b.mib_per_s));
    let mut result = runs[runs.len() / 2];
    let mut p99: Vec<f64> = runs.iter().map(|r| r.p99_us).collect();
    p99.sort_by(f64::total_cmp);
    result.p99_us = p99[p99.len() / 2];
    result
}

fn report(name: &str, result: &RunResult) {
    println!(
        "{name:<28} {:>9.1} MiB/s {:>11.0} msg/s   p50 {:>8.1} us   p99 {:>8.1} us   p99.9 {:>8.1} us",
        result.mib_per_s, result.msgs_per_s, result.p50_us, result.p99_us, result.p999_us
    );
}

type Case = (&'static str, Box<dyn Fn() -> RunResult>);

fn main() {
    // `cargo test --benches` runs bench targets with --bench absent; only run when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let cases: Vec<Case> = vec![
        ("fdatasync 4KiB (baseline)", Box::new(fdatasync_run)),
        (
            "async_flush 1KiB ring",
            Box::new(|| store_run(RING, FlushMode::Async, 1024)),
        ),
        (
            "sync_flush 1KiB ring",
            Box::new(|| store_run(RING, FlushMode::Sync, 1024)),
        ),
        (
            "async_flush 128B ring",
            Box::new(|| store_run(RING, FlushMode::Async, 128)),
        ),
        (
            "sync_flush 128B ring",
            Box::new(|| store_run(RING, FlushMode::Sync, 128)),
        ),
        (
            "async_flush 1KiB inline",
            Box::new(|| store_run(INLINE, FlushMode::Async, 1024)),
        ),
        (
            "sync_flush 1KiB inline",
            Box::new(|| store_run(INLINE, FlushMode::Sync, 1024)),
        ),
        (
            "async_flush 128B inline",
            Box::new(|| store_run(INLINE, FlushMode::Async, 128)),
        ),
        (
            "sync_flush 128B inline",
            Box::new(|| store_run(INLINE, FlushMode::Sync, 128)),
        ),
    ];
    println!(
        "{} appenders, {} s per run",
        appenders(),
        run_seconds().as_secs()
    );
    // `RINGMQ_BENCH_CASE=<substring>` runs only the matching cases (for profiling).
    let only = std::env::var("RINGMQ_BENCH_CASE").unwrap_or_default();
    let mut medians = Vec::new();
    for (name, run) in &cases {
        if !name.contains(only.as_str()) {
            continue;
        }
        let runs: Vec<RunResult> = (0..RUNS).map(|_| run()).collect();
        for (i, r) in runs.iter().enumerate() {
            report(&format!("{name} #{}", i + 1), r);
        }
        let m = median(runs);
        report(&format!("{name} median"), &m);
        medians.push(m);
    }
    if medians.len() < cases.len() {
        return;
    }
    for (path, at) in [("ring", 1), ("inline", 5)] {
        println!(
            "{path:>6}: sync/async throughput 1KiB {:.0}%, 128B {:.0}%; sync_flush 1KiB p99 / fdatasync p99 {:.2}x",
            medians[at + 1].mib_per_s / medians[at].mib_per_s * 100.0,
            medians[at + 3].mib_per_s / medians[at + 2].mib_per_s * 100.0,
            medians[at + 1].p99_us / medians[0].p99_us
        );
    }
    let _ = std::io::stdout().flush();
}
