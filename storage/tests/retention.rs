//! Retention by age and by disk watermarks, and disk-full behaviour: on the fault-injecting
//! seam with a capacity, and on a real size-limited tmpfs when the test may mount one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{body_for, record, runtime, small_config};
use ringmq_common::Clock;
use ringmq_protocol::message::record::StoredRecord;
use ringmq_storage::{
    FlushMode, MessageStore, ReadRequest, ReadStatus, StoreConfig, StoreError,
    io::{MemStorage, Storage, UringStorage},
};

const DEADLINE: Duration = Duration::from_secs(20);

fn config(dir: &Path) -> StoreConfig {
    let mut config = small_config(dir, FlushMode::Async);
    config.segment_bytes = 16 << 10;
    config.max_chunk_bytes = 4 << 10;
    config.cq_entries_per_file = 10;
    // The design's watermarks (small_config turns them off for tests on the real disk); these
    // tests run on the in-memory seam, whose capacity they set.
    config.high_watermark_percent = 85;
    config.hard_watermark_percent = 90;
    config
}

async fn fill<S: Storage>(store: &MessageStore<S>, queue_id: i32, count: u64) {
    for sequence in 0..count {
        let body = body_for(queue_id, sequence, 900);
        store
            .append(&record("Retained", queue_id, &body, ""))
            .await
            .unwrap();
    }
}

fn request(offset: u64) -> ReadRequest<'static> {
    ReadRequest {
        topic: "Retained",
        queue_id: 0,
        offset,
        max_messages: 4,
        max_bytes: 1 << 20,
        tags_hashes: None,
    }
}

/// Bytes the store's files take on the in-memory disk.
fn used_bytes(storage: &MemStorage) -> u64 {
    storage
        .file_names()
        .iter()
        .filter_map(|p| storage.file_contents(p))
        .map(|c| c.len() as u64)
        .sum()
}

/// Polls `condition` every few milliseconds until it holds or the deadline passes.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        compio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn segments_older_than_the_retention_age_are_removed_with_their_queue_files() {
    let storage = MemStorage::new();
    let clock = Clock::manual(1_700_000_000_000);
    let mut config = config(Path::new("/age"));
    config.retention = Duration::from_secs(3600);
    config.clock = clock.clone();
    runtime().block_on(async {
        let store = MessageStore::open(storage.clone(), config).await.unwrap();
        fill(&store, 0, 120).await; // ~110 KiB: several 16 KiB segments
        store.flush().await.unwrap();
        let before = store.physical_range().0;
        // Every record is stamped now: none is older than the retention age yet.
        let report = store.enforce_retention().await.unwrap();
        assert!(report.removed_segments.is_empty());
        assert_eq!(store.physical_range().0, before);
        // A millisecond past the age, every record is older: one pass removes every segment
        // but the active one (a segment is as old as its successor's first record).
        clock.advance_ms(3_600_001);
        let removed = store.enforce_retention().await.unwrap().removed_segments;
        assert!(removed.len() >= 5, "only {removed:?} expired");
        assert!(
            store
                .enforce_retention()
                .await
                .unwrap()
                .removed_segments
                .is_empty()
        );
        assert!(store.physical_range().0 > before);
        let offsets = store.queue_offsets("Retained", 0).unwrap();
        assert!(offsets.min_offset > 0);
        assert_eq!(offsets.max_offset, 120);

        let gone = store.read(&request(0)).await.unwrap();
        assert_eq!(gone.status, ReadStatus::OffsetTooSmall);
        assert_eq!(gone.next_offset, offsets.min_offset);
        let kept = store.read(&request(offsets.min_offset)).await.unwrap();
        assert_eq!(kept.status, ReadStatus::Found);
        let (decoded, _) = StoredRecord::decode(&kept.records[0]).unwrap();
        assert_eq!(decoded.queue_offset as u64, offsets.min_offset);
        assert!(decoded.physical_offset as u64 >= store.physical_range().0);

        // Consume-queue files wholly below the min are gone too.
        let cq_files: Vec<PathBuf> = storage
            .file_names()
            .into_iter()
            .filter(|p| p.starts_with("/age/consumequeue"))
            .collect();
        assert!(
            cq_files.len() <= (120 - offsets.min_offset as usize) / 10 + 2,
            "{cq_files:?}"
        );
        store.close().await.unwrap();
    });
}

#[test]
fn usage_above_the_high_watermark_removes_oldest_segments() {
    let storage = MemStorage::new();
    let config = config(Path::new("/high"));
    runtime().block_on(async {
        let store = MessageStore::open(storage.clone(), config).await.unwrap();
        fill(&store, 0, 150).await;
        store.flush().await.unwrap();
        let used_bytes = used_bytes(&storage);
        // Shrink the "disk" so that the store sits at ~95%.
        storage.set_capacity(Some(used_bytes * 100 / 95));
        let report = store.enforce_retention().await.unwrap();
        assert!(!report.removed_segments.is_empty());
        assert!(report.used_percent < 85.0, "{report:?}");
        assert!(!report.disk_full);
        let offsets = store.queue_offsets("Retained", 0).unwrap();
        assert!(offsets.min_offset > 0);
        assert_eq!(offsets.max_offset, 150);
        store.close().await.unwrap();
    });
}

#[test]
fn above_the_hard_watermark_appends_fail_reads_work_and_writes_resume_by_themselves() {
    let storage = MemStorage::new();
    let mut config = config(Path::new("/full"));
    config.high_watermark_percent = 100; // no deletion: only the operator frees space here
    config.retention_check_interval = Duration::from_millis(10);
    runtime().block_on(async {
        let store = MessageStore::open(storage.clone(), config).await.unwrap();
        fill(&store, 0, 40).await;
        store.flush().await.unwrap();
        let used_bytes = used_bytes(&storage);
        storage.set_capacity(Some(used_bytes * 100 / 93));
        wait_until("disk full", || store.disk_full().is_some()).await;
        let err = store
            .append(&record("Retained", 0, b"refused", ""))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
        assert!(err.is_disk_full());
        assert!(err.to_string().contains("disk full"), "{err}");
        let read = store.read(&request(0)).await.unwrap();
        assert_eq!(read.records.len(), 4, "reads go on while the disk is full");

        storage.set_capacity(Some(used_bytes * 10));
        wait_until("space back", || store.disk_full().is_none()).await;
        let result = store
            .append(&record("Retained", 0, b"accepted again", ""))
            .await
            .unwrap();
        assert_eq!(result.queue_offset, 40);
        assert!(
            store.failure().is_none(),
            "disk full is not a sticky failure"
        );
        store.close().await.unwrap();
    });
}

#[test]
fn enospc_creating_a_segment_is_reported_and_not_sticky() {
    let storage = MemStorage::new();
    let mut config = config(Path::new("/enospc"));
    config.high_watermark_percent = 100;
    config.hard_watermark_percent = 100;
    runtime().block_on(async {
        let store = MessageStore::open(storage.clone(), config).await.unwrap();
        store.flush().await.unwrap();
        let used_bytes = used_bytes(&storage);
        // Room for what exists plus a little: the next segment cannot be allocated.
        storage.set_capacity(Some(used_bytes + (8 << 10)));
        let mut appended = 0u64;
        let err = loop {
            let body = body_for(0, appended, 900);
            match store.append(&record("Retained", 0, &body, "")).await {
                Ok(_) => appended += 1,
                Err(err) => break err,
            }
            assert!(appended < 1000, "the disk never filled");
        };
        assert!(err.is_disk_full(), "{err}");
        assert!(store.failure().is_none());
        storage.set_capacity(None);
        let result = store
            .append(&record("Retained", 0, b"fits now", ""))
            .await
            .unwrap();
        assert_eq!(result.queue_offset, appended);
        store.close().await.unwrap();
    });
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn real_tmpfs_fills_refuses_appends_and_recovers_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(dir.path())
        .output();
    match mounted {
        Ok(out) if out.status.success() => {}
        other => {
            // The seam-level tests above cover the logic; this one needs mount privileges.
            eprintln!("skipping the real tmpfs test: cannot mount tmpfs here ({other:?})");
            return;
        }
    }
    let _mount = Mount(dir.path().to_path_buf());
    let ballast = dir.path().join("ballast");
    std::fs::write(&ballast, vec![7u8; 2 << 20]).unwrap();
    let mut config = StoreConfig::new(dir.path().join("store"));
    config.segment_bytes = 128 << 10;
    config.high_watermark_percent = 100;
    config.retention_check_interval = Duration::from_millis(10);
    config.checkpoint_interval = Duration::from_secs(3600);
    runtime().block_on(async {
        let store = MessageStore::open(UringStorage::new(), config)
            .await
            .unwrap();
        let mut appended = 0u64;
        let err = loop {
            let body = body_for(0, appended, 1000);
            match store.append(&record("Retained", 0, &body, "")).await {
                Ok(_) => appended += 1,
                Err(err) => break err,
            }
            assert!(appended < 10_000, "4 MiB never filled");
        };
        assert!(err.is_disk_full(), "{err}");
        assert!(store.failure().is_none());
        let read = store.read(&request(0)).await.unwrap();
        assert_eq!(read.status, ReadStatus::Found);
        std::fs::remove_file(&ballast).unwrap();
        wait_until("space back", || store.disk_full().is_none()).await;
        let deadline = Instant::now() + DEADLINE;
        loop {
            match store
                .append(&record("Retained", 0, b"after freeing", ""))
                .await
            {
                Ok(result) => {
                    assert_eq!(result.queue_offset, appended);
                    break;
                }
                Err(err) if err.is_disk_full() && Instant::now() < deadline => {
                    compio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(err) => panic!("append after freeing space: {err}"),
            }
        }
        store.close().await.unwrap();
    });
}
