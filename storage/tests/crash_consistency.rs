//! Seeded crash consistency through the fault-injecting seam: appenders run with SYNC_FLUSH
//! until the storage "loses power" at a random operation; the store is reopened on what a power
//! loss leaves and every acknowledged record must be there, intact, with contiguous queue
//! offsets and consume queues that agree with the commit log.
//!
//! `RINGMQ_CRASH_SEEDS` sets the number of seeds (default 500); a failure names its seed, and
//! `RINGMQ_CRASH_SEED=<n>` reruns just that one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{cell::RefCell, path::Path, rc::Rc, time::Duration};

use common::{body_for, record, runtime, small_config};
use ringmq_protocol::message::record::StoredRecord;
use ringmq_storage::{
    FlushMode, MessageStore, ReadRequest, ReadStatus, StoreConfig,
    io::{CrashMode, FaultPlan, MemStorage},
};

const QUEUES: i32 = 3;
const APPENDERS: usize = 6;
const MAX_MESSAGES_PER_APPENDER: u64 = 60;

/// A cheap deterministic generator for the run's choices.
fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed.wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The body an appender sends as its n-th message: appender and sequence are recoverable from it.
fn body(appender: usize, sequence: u64, seed: u64) -> Vec<u8> {
    let len = 40 + (mix(seed, appender as u64 * 1000 + sequence) % 1500) as usize;
    body_for(appender as i32, sequence, len)
}

#[derive(Debug, Clone, Copy)]
struct Acked {
    queue_id: i32,
    queue_offset: u64,
    appender: usize,
    sequence: u64,
}

fn run_seed(seed: u64) -> Result<usize, String> {
    let crash_after = 30 + mix(seed, 1) % 1500;
    let storage = MemStorage::with_faults(FaultPlan {
        seed,
        crash_after_ops: Some(crash_after),
        ..FaultPlan::default()
    });
    let dir = Path::new("/store");
    let mut config = small_config(dir, FlushMode::Sync);
    config.segment_bytes = 16 << 10;
    config.max_chunk_bytes = 4 << 10;
    config.cq_entries_per_file = 16;
    config.checkpoint_interval = Duration::from_millis(1 + mix(seed, 2) % 5);
    let acked: Rc<RefCell<Vec<Acked>>> = Rc::default();

    runtime().block_on(async {
        let store = match MessageStore::open(storage.clone(), config.clone()).await {
            Ok(store) => store,
            Err(_) if storage.has_crashed() => return,
            Err(err) => panic!("seed {seed}: open failed without a crash: {err}"),
        };
        let mut tasks = Vec::new();
        for appender in 0..APPENDERS {
            let store = store.clone();
            let acked = Rc::clone(&acked);
            tasks.push(compio::runtime::spawn(async move {
                let queue_id = (appender as i32) % QUEUES;
                for sequence in 0..MAX_MESSAGES_PER_APPENDER {
                    let body = body(appender, sequence, seed);
                    let properties = format!("KEYS\u{1}a{appender}s{sequence}\u{2}");
                    match store
                        .append(&record("Crash", queue_id, &body, &properties))
                        .await
                    {
                        Ok(result) => acked.borrow_mut().push(Acked {
                            queue_id,
                            queue_offset: result.queue_offset,
                            appender,
                            sequence,
                        }),
                        Err(_) => return,
                    }
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });

    let acked = acked.borrow().clone();
    verify(seed, &storage, config, &acked)
}

/// Reopens on what a power loss leaves and checks the queues against the acknowledgements.
fn verify(
    seed: u64,
    storage: &MemStorage,
    config: StoreConfig,
    acked: &[Acked],
) -> Result<usize, String> {
    let mode = if seed % 2 == 0 {
        CrashMode::TornPrefix
    } else {
        CrashMode::LoseUnsynced
    };
    let image = storage.crash_image(mode);
    runtime().block_on(async {
        let store = MessageStore::open(image, config)
            .await
            .map_err(|e| format!("reopen failed: {e}"))?;
        for queue_id in 0..QUEUES {
            let Some(offsets) = store.queue_offsets("Crash", queue_id) else {
                if acked.iter().any(|a| a.queue_id == queue_id) {
                    return Err(format!("queue {queue_id} lost entirely"));
                }
                continue;
            };
            // Every record of the queue, in order: offsets contiguous, bodies intact and
            // belonging to an appender of this queue.
            let mut offset = offsets.min_offset;
            while offset < offsets.max_offset {
                let read = store
                    .read(&ReadRequest {
                        topic: "Crash",
                        queue_id,
                        offset,
                        max_messages: 32,
                        max_bytes: 1 << 20,
                        tags_hashes: None,
                    })
                    .await
                    .map_err(|e| format!("read q{queue_id}@{offset}: {e}"))?;
                if read.status != ReadStatus::Found {
                    return Err(format!("q{queue_id}@{offset}: status {:?}", read.status));
                }
                for bytes in &read.records {
                    let (decoded, _) = StoredRecord::decode(bytes)
                        .map_err(|e| format!("q{queue_id}@{offset}: undecodable: {e}"))?;
                    if decoded.queue_offset != offset as i64 {
                        return Err(format!(
                            "q{queue_id}: expected offset {offset}, record says {}",
                            decoded.queue_offset
                        ));
                    }
                    decoded
                        .verify_body_crc()
                        .map_err(|e| format!("q{queue_id}@{offset}: {e}"))?;
                    let name = std::str::from_utf8(decoded.body).unwrap_or("");
                    let (appender, sequence) = parse_body(name)
                        .ok_or_else(|| format!("q{queue_id}@{offset}: foreign body"))?;
                    if decoded.body != body(appender, sequence, seed).as_slice() {
                        return Err(format!("q{queue_id}@{offset}: body differs"));
                    }
                    offset += 1;
                }
            }
            for ack in acked.iter().filter(|a| a.queue_id == queue_id) {
                if ack.queue_offset >= offsets.max_offset {
                    return Err(format!(
                        "acknowledged q{queue_id}@{} (appender {} #{}) lost; max offset {}",
                        ack.queue_offset, ack.appender, ack.sequence, offsets.max_offset
                    ));
                }
                let read = store
                    .read(&ReadRequest {
                        topic: "Crash",
                        queue_id,
                        offset: ack.queue_offset,
                        max_messages: 1,
                        max_bytes: 1 << 20,
                        tags_hashes: None,
                    })
                    .await
                    .map_err(|e| format!("read acked: {e}"))?;
                let (decoded, _) =
                    StoredRecord::decode(&read.records[0]).map_err(|e| e.to_string())?;
                if decoded.body != body(ack.appender, ack.sequence, seed).as_slice() {
                    return Err(format!(
                        "acknowledged q{queue_id}@{} has another body",
                        ack.queue_offset
                    ));
                }
            }
        }
        // The recovered store takes appends again and survives a clean reopen.
        store
            .append(&record("Crash", 0, b"after recovery", ""))
            .await
            .map_err(|e| format!("append after recovery: {e}"))?;
        store.close().await.map_err(|e| format!("close: {e}"))?;
        Ok(acked.len())
    })
}

fn parse_body(text: &str) -> Option<(usize, u64)> {
    let rest = text.strip_prefix('q')?;
    let (appender, rest) = rest.split_once("-m")?;
    let (sequence, _) = rest.split_once('-')?;
    Some((appender.parse().ok()?, sequence.parse().ok()?))
}

#[test]
fn acknowledged_sync_appends_survive_crashes_at_random_points() {
    let seeds: Vec<u64> = if let Ok(one) = std::env::var("RINGMQ_CRASH_SEED") {
        vec![one.parse().expect("RINGMQ_CRASH_SEED is a number")]
    } else {
        let count = std::env::var("RINGMQ_CRASH_SEEDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(500u64);
        (0..count).collect()
    };
    let runs = seeds.len();
    let mut failures = Vec::new();
    let (mut total_acked, mut runs_with_acks) = (0, 0);
    for seed in seeds {
        match run_seed(seed) {
            Ok(acked) => {
                total_acked += acked;
                runs_with_acks += usize::from(acked > 0);
            }
            Err(reason) => failures.push(format!("seed {seed}: {reason}")),
        }
    }
    eprintln!(
        "{runs} crash runs, {runs_with_acks} crashed after acknowledgements, {total_acked} acknowledged records checked"
    );
    // The runs must test something: most crash points fall after some acknowledgements.
    assert!(
        runs < 10 || runs_with_acks * 2 > runs,
        "crash points too early to test anything"
    );
    assert!(
        failures.is_empty(),
        "{} crash runs failed (rerun one with RINGMQ_CRASH_SEED=<seed>):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
