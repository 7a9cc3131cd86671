//! Storage engine benchmarks: append throughput in ASYNC_FLUSH and SYNC_FLUSH with
//! 64 concurrent appenders, catch-up read throughput, and reopen time after a clean shutdown
//! and after a crash.
//!
//! Stores live in a temporary directory under `RINGMQ_BENCH_DIR` (default: the system temp
//! dir), which should be on the disk that `fio` measures for the baseline in docs/benchmarks.md.
//! `RINGMQ_BENCH_REOPEN_GIB` sets the size of the reopen store (default 4).

use std::{
    hint::black_box,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringmq_benches::fixtures::stored_record_template;
use ringmq_storage::{FlushMode, MessageStore, ReadRequest, StoreConfig, io::UringStorage};

const APPENDERS: u64 = 64;

fn bench_dir() -> PathBuf {
    std::env::var_os("RINGMQ_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

fn runtime() -> compio::runtime::Runtime {
    compio::runtime::Runtime::new().expect("compio runtime")
}

fn store_config(dir: &Path, mode: FlushMode) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.flush_mode = mode;
    config
}

/// Appends `total` records of `body_bytes` from `APPENDERS` concurrent tasks into a fresh
/// store; returns the time from the first append to the last acknowledgement.
fn timed_appends(mode: FlushMode, body_bytes: usize, total: u64) -> Duration {
    let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
    let body = Rc::new(vec![b'x'; body_bytes]);
    runtime().block_on(async move {
        let store = MessageStore::open(UringStorage::new(), store_config(dir.path(), mode))
            .await
            .expect("open");
        let per_task = total.div_ceil(APPENDERS);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for task in 0..APPENDERS {
            let store = store.clone();
            let body = Rc::clone(&body);
            tasks.push(compio::runtime::spawn(async move {
                let mut record = stored_record_template("BenchTopic", &body);
                record.queue_id = (task % 8) as i32;
                for _ in 0..per_task {
                    black_box(store.append(&record).await.expect("append"));
                }
            }));
        }
        for task in tasks {
            task.await.expect("appender");
        }
        let elapsed = start.elapsed();
        store.close().await.expect("close");
        elapsed
    })
}

fn appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage_append");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for (mode, name) in [
        (FlushMode::Async, "async_flush"),
        (FlushMode::Sync, "sync_flush"),
    ] {
        for body_bytes in [1024usize, 128] {
            let record_bytes =
                stored_record_template("BenchTopic", &vec![0; body_bytes]).encoded_len();
            group.throughput(Throughput::Bytes(record_bytes as u64));
            group.bench_with_input(
                BenchmarkId::new(name, format!("{body_bytes}B_x64")),
                &body_bytes,
                |b, &body_bytes| {
                    b.iter_custom(|iters| timed_appends(mode, body_bytes, iters.max(APPENDERS)));
                },
            );
        }
    }
    group.finish();
}

/// Fills a store with `bytes` of 1 KiB records over 8 queues and closes it.
fn build_store(dir: &Path, bytes: u64) -> u64 {
    let body = vec![b'r'; 1024];
    runtime().block_on(async {
        let store = MessageStore::open(UringStorage::new(), store_config(dir, FlushMode::Async))
            .await
            .expect("open");
        let mut record = stored_record_template("ReadTopic", &body);
        let record_bytes = record.encoded_len() as u64;
        let count = bytes / record_bytes;
        let batch_len = 32;
        let mut appended = 0;
        while appended < count {
            record.queue_id = ((appended / batch_len) % 8) as i32;
            let batch = vec![record; batch_len as usize];
            store.append_batch(&batch).await.expect("append");
            appended += batch_len;
        }
        store.close().await.expect("close");
        appended
    })
}

fn catch_up_reads(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
    // 1 GiB: larger than the read cache, so reads from the start go to the files.
    let messages = build_store(dir.path(), 1 << 30);
    let per_queue = messages / 8;
    let mut group = c.benchmark_group("storage_read");
    group.sample_size(10);
    let record_bytes = stored_record_template("ReadTopic", &[0; 1024]).encoded_len() as u64;
    group.throughput(Throughput::Bytes(record_bytes * 32));
    group.bench_function("catch_up_32x1KiB", |b| {
        b.iter_custom(|iters| {
            runtime().block_on(async {
                let store = MessageStore::open(
                    UringStorage::new(),
                    store_config(dir.path(), FlushMode::Async),
                )
                .await
                .expect("open");
                let start = Instant::now();
                let mut offset = 0;
                for i in 0..iters {
                    let queue_id = (i % 8) as i32;
                    let result = store
                        .read(&ReadRequest {
                            topic: "ReadTopic",
                            queue_id,
                            offset,
                            max_messages: 32,
                            max_bytes: 1 << 20,
                            tags_hashes: None,
                        })
                        .await
                        .expect("read");
                    black_box(result.records.len());
                    if queue_id == 7 {
                        offset = (offset + 32) % (per_queue - 32);
                    }
                }
                let elapsed = start.elapsed();
                store.close().await.expect("close");
                elapsed
            })
        });
    });
    group.finish();
}

/// Time to open (and recover) the store in `dir`; the store is closed afterwards, untimed.
fn timed_open(dir: &Path) -> Duration {
    runtime().block_on(async {
        let start = Instant::now();
        let store = MessageStore::open(UringStorage::new(), store_config(dir, FlushMode::Async))
            .await
            .expect("open");
        let elapsed = start.elapsed();
        store.close().await.expect("close");
        elapsed
    })
}

fn reopen(c: &mut Criterion) {
    let gib: u64 = std::env::var("RINGMQ_BENCH_REOPEN_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
    build_store(dir.path(), gib << 30);
    let mut group = c.benchmark_group("storage_reopen");
    group.sample_size(10);
    group.bench_function(format!("clean_{gib}GiB"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += timed_open(dir.path());
            }
            total
        });
    });
    group.bench_function(format!("after_crash_{gib}GiB"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Crash: append for a while past the last checkpoint, then drop the runtime
                // without closing the store (no final checkpoint, tail must be scanned).
                let body = vec![b'c'; 1024];
                let rt = runtime();
                rt.block_on(async {
                    let store = MessageStore::open(
                        UringStorage::new(),
                        store_config(dir.path(), FlushMode::Async),
                    )
                    .await
                    .expect("open");
                    let record = stored_record_template("CrashTopic", &body);
                    let batch = vec![record; 32];
                    let until = Instant::now() + Duration::from_millis(900);
                    while Instant::now() < until {
                        store.append_batch(&batch).await.expect("append");
                    }
                });
                drop(rt);
                total += timed_open(dir.path());
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, appends, catch_up_reads, reopen);
criterion_main!(benches);
