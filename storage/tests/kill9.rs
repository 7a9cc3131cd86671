//! A real crash: a child process appends with SYNC_FLUSH to a real directory and prints every
//! acknowledgement; the test kills it with SIGKILL at a random moment, reopens the store and
//! checks that every acknowledged record is there, intact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{body_for, record, runtime, small_config};
use ringmq_protocol::message::record::StoredRecord;
use ringmq_storage::{FlushMode, MessageStore, ReadRequest, io::UringStorage};

const CHILD_DIR_ENV: &str = "RINGMQ_KILL9_CHILD_DIR";
const INLINE_ENV: &str = "RINGMQ_KILL9_INLINE_WRITES";
const APPENDERS: usize = 16;
const QUEUES: i32 = 4;
/// The child stops by itself after this many messages per appender or this long.
const CHILD_MAX_PER_APPENDER: u64 = 20_000;
const CHILD_MAX_SECONDS: u64 = 60;

fn config(dir: PathBuf) -> ringmq_storage::StoreConfig {
    let mut config = small_config(dir, FlushMode::Sync);
    config.segment_bytes = 1 << 20;
    config.max_chunk_bytes = 256 << 10;
    config.cq_entries_per_file = 1000;
    config.checkpoint_interval = Duration::from_millis(50);
    config
}

fn body(appender: usize, sequence: u64) -> Vec<u8> {
    body_for(
        appender as i32,
        sequence,
        100 + (sequence as usize * 37 + appender * 11) % 900,
    )
}

/// The child's side: not a test of its own. The parent runs this binary with `--ignored` and
/// the directory in the environment.
#[test]
#[ignore = "entry point of the child process of sigkill_during_sync_appends_loses_no_acknowledged_record"]
fn kill9_child_appender() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        eprintln!("kill9_child_appender only runs as the child of the SIGKILL test");
        return;
    };
    let dir = PathBuf::from(dir);
    runtime().block_on(async move {
        // The parent alternates the write path between runs.
        let storage = if std::env::var_os(INLINE_ENV).is_some() {
            UringStorage::inline_writes()
        } else {
            UringStorage::new()
        };
        let store = MessageStore::open(storage, config(dir)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(CHILD_MAX_SECONDS);
        let mut tasks = Vec::new();
        for appender in 0..APPENDERS {
            let store = store.clone();
            tasks.push(compio::runtime::spawn(async move {
                let queue_id = appender as i32 % QUEUES;
                for sequence in 0..CHILD_MAX_PER_APPENDER {
                    if Instant::now() > deadline {
                        return;
                    }
                    let body = body(appender, sequence);
                    let result = store
                        .append(&record("Kill9", queue_id, &body, ""))
                        .await
                        .unwrap();
                    // One write per line: the parent sees whole lines only.
                    let line = format!(
                        "ack {queue_id} {} {appender} {sequence}\n",
                        result.queue_offset
                    );
                    std::io::stdout().lock().write_all(line.as_bytes()).unwrap();
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}

#[test]
fn sigkill_during_sync_appends_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let kill_after_acks = 2000 + seed % 20_000;
    let inline = seed % 2 == 1;
    eprintln!(
        "kill9: seed {seed}, SIGKILL after {kill_after_acks} acknowledgements, inline writes {inline}"
    );
    let mut command = Command::new(std::env::current_exe().unwrap());
    if inline {
        command.env(INLINE_ENV, "1");
    }
    let mut child = command
        .args([
            "--ignored",
            "--exact",
            "kill9_child_appender",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    let mut killed = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(ack) = parse_ack(&line) {
            acked.push(ack);
            if acked.len() as u64 >= kill_after_acks {
                // kill() sends SIGKILL; the pipe still holds whatever was printed before it.
                child.kill().unwrap();
                killed = true;
                break;
            }
        }
    }
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(ack) = parse_ack(&line) {
            acked.push(ack);
        }
    }
    let status = child.wait().unwrap();
    assert!(killed, "the child ended before it was killed: {status}");
    assert!(!status.success());

    runtime().block_on(async {
        let store = MessageStore::open(UringStorage::new(), config(dir.path().to_path_buf()))
            .await
            .unwrap();
        for (queue_id, queue_offset, appender, sequence) in &acked {
            let read = store
                .read(&ReadRequest {
                    topic: "Kill9",
                    queue_id: *queue_id,
                    offset: *queue_offset,
                    max_messages: 1,
                    max_bytes: 1 << 20,
                    tags_hashes: None,
                })
                .await
                .unwrap();
            assert_eq!(
                read.records.len(),
                1,
                "seed {seed}: acknowledged q{queue_id}@{queue_offset} missing: {:?}",
                read.status
            );
            let (decoded, _) = StoredRecord::decode(&read.records[0]).unwrap();
            assert_eq!(decoded.queue_offset, *queue_offset as i64);
            assert_eq!(
                decoded.body,
                body(*appender, *sequence).as_slice(),
                "seed {seed}: q{queue_id}@{queue_offset} holds another body"
            );
        }
        eprintln!("kill9: {} acknowledged records verified", acked.len());
        store.close().await.unwrap();
    });
}

fn parse_ack(line: &str) -> Option<(i32, u64, usize, u64)> {
    let mut parts = line.strip_prefix("ack ")?.split(' ');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}
