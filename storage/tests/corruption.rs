//! Corruption of the commit-log tail on real files: flipped bytes, a record cut short, a zeroed
//! page. Recovery must report, truncate to the last verified chunk, keep everything before it
//! intact, never panic and never serve garbage. A corrupt checkpoint only costs a longer scan.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs::OpenOptions,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use common::{body_for, record, runtime, small_config};
use ringmq_protocol::message::record::StoredRecord;
use ringmq_storage::{
    FlushMode, MessageStore, ReadRequest, ReadStatus, StoreConfig, format::segment_name,
    io::UringStorage,
};

const QUEUES: i32 = 2;

#[derive(Debug, Clone, Copy)]
struct Written {
    queue_id: i32,
    queue_offset: u64,
    physical_offset: u64,
    sequence: u64,
}

fn config(dir: &Path) -> StoreConfig {
    let mut config = small_config(dir, FlushMode::Sync);
    config.segment_bytes = 1 << 20;
    config.max_chunk_bytes = 8 << 10;
    config
}

/// Appends `count` messages with SYNC_FLUSH from four concurrent appenders (so chunks hold
/// several records), then "crashes": the runtime is dropped without closing the store, so
/// the checkpoint still points at the start and recovery must scan everything.
fn fill(dir: &Path, count: u64) -> Vec<Written> {
    let written = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let rt = runtime();
    rt.block_on(async {
        let store = MessageStore::open(UringStorage::new(), config(dir))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for appender in 0..4u64 {
            let store = store.clone();
            let written = written.clone();
            tasks.push(compio::runtime::spawn(async move {
                for sequence in (appender..count).step_by(4) {
                    let queue_id = (sequence % QUEUES as u64) as i32;
                    let body = body_for(queue_id, sequence, 1000);
                    let result = store
                        .append(&record("Corrupt", queue_id, &body, ""))
                        .await
                        .unwrap();
                    written.borrow_mut().push(Written {
                        queue_id,
                        queue_offset: result.queue_offset,
                        physical_offset: result.physical_offset,
                        sequence,
                    });
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    drop(rt);
    let mut written = written.borrow().clone();
    written.sort_by_key(|w| w.physical_offset);
    written
}

fn segment_path(dir: &Path, physical_offset: u64) -> (PathBuf, u64) {
    let segment_bytes = config(dir).segment_bytes;
    let start = physical_offset - physical_offset % segment_bytes;
    (
        dir.join("commitlog").join(segment_name(start)),
        physical_offset - start,
    )
}

/// Reopens, checks that every surviving record is intact and that records below `intact_below`
/// (a physical offset) all survived; returns how many survived.
fn reopen_and_check(dir: &Path, written: &[Written], intact_below: u64) -> usize {
    runtime().block_on(async {
        let store = MessageStore::open(UringStorage::new(), config(dir))
            .await
            .unwrap();
        let mut survived = 0;
        for queue_id in 0..QUEUES {
            let max = store
                .queue_offsets("Corrupt", queue_id)
                .map_or(0, |o| o.max_offset);
            for w in written.iter().filter(|w| w.queue_id == queue_id) {
                let read = store
                    .read(&ReadRequest {
                        topic: "Corrupt",
                        queue_id,
                        offset: w.queue_offset,
                        max_messages: 1,
                        max_bytes: 1 << 20,
                        tags_hashes: None,
                    })
                    .await
                    .unwrap();
                if w.queue_offset < max {
                    assert_eq!(read.status, ReadStatus::Found);
                    let (decoded, _) = StoredRecord::decode(&read.records[0]).unwrap();
                    decoded.verify_body_crc().unwrap();
                    assert_eq!(
                        decoded.body,
                        body_for(queue_id, w.sequence, 1000).as_slice()
                    );
                    assert_eq!(decoded.physical_offset as u64, w.physical_offset);
                    survived += 1;
                } else {
                    assert!(
                        read.records.is_empty(),
                        "garbage served past the recovered end"
                    );
                    assert!(
                        w.physical_offset >= intact_below,
                        "record at {} lost although it precedes the damage at {intact_below}",
                        w.physical_offset
                    );
                }
            }
        }
        // The store goes on: a new append lands right after the recovered end and reads back.
        let result = store
            .append(&record("Corrupt", 0, b"after repair", ""))
            .await
            .unwrap();
        let read = store
            .read(&ReadRequest {
                topic: "Corrupt",
                queue_id: 0,
                offset: result.queue_offset,
                max_messages: 1,
                max_bytes: 1 << 20,
                tags_hashes: None,
            })
            .await
            .unwrap();
        let (decoded, _) = StoredRecord::decode(&read.records[0]).unwrap();
        assert_eq!(decoded.body, b"after repair");
        store.close().await.unwrap();
        survived
    })
}

#[test]
fn flipped_byte_in_the_last_record_truncates_its_chunk_only() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path(), 200);
    let last = *written.last().unwrap();
    let (path, at) = segment_path(dir.path(), last.physical_offset);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at + 120).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], at + 120).unwrap();
    drop(file);
    let survived = reopen_and_check(dir.path(), &written, last.physical_offset - 16 * 1024);
    assert!(
        survived < written.len(),
        "the damaged record must not survive"
    );
    assert!(
        survived >= written.len() - 16,
        "only the last chunk may go: {survived} left"
    );
}

#[test]
fn record_cut_short_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path(), 150);
    let last = *written.last().unwrap();
    let (path, at) = segment_path(dir.path(), last.physical_offset);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(at + 30).unwrap();
    drop(file);
    let survived = reopen_and_check(dir.path(), &written, last.physical_offset - 16 * 1024);
    assert!(survived < written.len());
}

#[test]
fn zeroed_page_in_the_middle_of_the_last_segment_cuts_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path(), 400);
    let middle = written[written.len() / 2].physical_offset;
    let (path, at) = segment_path(dir.path(), middle);
    let page = at - at % 4096;
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0u8; 4096], page).unwrap();
    drop(file);
    // Everything before the chunk that holds the page survives; the page itself and what
    // follows are gone.
    let damage = middle - (at - page) - 8 * 1024;
    let survived = reopen_and_check(dir.path(), &written, damage);
    assert!(
        survived < written.len() * 3 / 4,
        "records after the zeroed page must be cut"
    );
    assert!(survived > written.len() / 4);
}

#[test]
fn corrupt_checkpoint_rebuilds_consume_queues_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let written = fill(dir.path(), 120);
    // A clean close writes a checkpoint past everything; then damage it.
    runtime().block_on(async {
        let store = MessageStore::open(UringStorage::new(), config(dir.path()))
            .await
            .unwrap();
        store.close().await.unwrap();
    });
    let checkpoint = dir.path().join("checkpoint");
    let file = OpenOptions::new().write(true).open(&checkpoint).unwrap();
    file.write_all_at(b"garbage!", 20).unwrap();
    drop(file);
    let survived = reopen_and_check(dir.path(), &written, u64::MAX);
    assert_eq!(survived, written.len());
}
