//! Injected I/O faults: a failed fdatasync and a failed write make the store refuse writes
//! (sticky, typed) without losing what was acknowledged; tail reads are served from memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{body_for, record, runtime, small_config};
use ringmq_protocol::message::record::StoredRecord;
use ringmq_storage::{
    FlushMode, MessageStore, ReadRequest, ReadStatus, StoreError,
    io::{CrashMode, FaultPlan, MemStorage},
};

fn request(offset: u64) -> ReadRequest<'static> {
    ReadRequest {
        topic: "Faulty",
        queue_id: 0,
        offset,
        max_messages: 32,
        max_bytes: 1 << 20,
        tags_hashes: None,
    }
}

/// Appends until an append fails; returns the acknowledged count and the error.
async fn append_until_error(store: &MessageStore<MemStorage>) -> (u64, StoreError) {
    let mut acked = 0;
    loop {
        let body = body_for(0, acked, 500);
        match store.append(&record("Faulty", 0, &body, "")).await {
            Ok(result) => {
                assert_eq!(result.queue_offset, acked);
                acked += 1;
            }
            Err(err) => return (acked, err),
        }
        assert!(acked < 10_000, "the fault never fired");
    }
}

async fn check_prefix(store: &MessageStore<MemStorage>, count: u64) {
    let mut offset = 0;
    while offset < count {
        let read = store.read(&request(offset)).await.unwrap();
        assert_eq!(read.status, ReadStatus::Found, "offset {offset}");
        for bytes in &read.records {
            let (decoded, _) = StoredRecord::decode(bytes).unwrap();
            assert_eq!(decoded.body, body_for(0, offset, 500).as_slice());
            offset += 1;
        }
    }
}

#[test]
fn failed_fdatasync_is_sticky_and_loses_nothing_acknowledged() {
    let storage = MemStorage::new();
    let dir = Path::new("/sync-fails");
    let config = small_config(dir, FlushMode::Sync);
    let acked = runtime().block_on(async {
        let store = MessageStore::open(storage.clone(), config.clone())
            .await
            .unwrap();
        // The 20th fdatasync from now fails.
        let plan = FaultPlan {
            fail_sync_at: Some(storage.sync_calls() + 20),
            ..storage.faults()
        };
        storage.set_faults(plan);
        let (acked, err) = append_until_error(&store).await;
        assert!(matches!(err, StoreError::WritesDisabled { .. }), "{err}");
        assert!(err.to_string().contains("fdatasync"), "{err}");
        // Sticky: later appends fail the same way, without touching the disk.
        let again = store
            .append(&record("Faulty", 0, b"after the failure", ""))
            .await
            .unwrap_err();
        assert!(
            matches!(again, StoreError::WritesDisabled { .. }),
            "{again}"
        );
        assert!(store.failure().is_some());
        // Reads of acknowledged data go on.
        check_prefix(&store, acked).await;
        acked
    });
    // Power loss after the failure: every acknowledged record survives.
    let image = storage.crash_image(CrashMode::LoseUnsynced);
    runtime().block_on(async {
        let store = MessageStore::open(image, config).await.unwrap();
        let max = store.queue_offsets("Faulty", 0).unwrap().max_offset;
        assert!(max >= acked, "acknowledged {acked}, recovered {max}");
        check_prefix(&store, acked).await;
        store
            .append(&record("Faulty", 0, b"after reopen", ""))
            .await
            .unwrap();
        store.close().await.unwrap();
    });
}

#[test]
fn failed_write_is_sticky_and_reported() {
    let storage = MemStorage::new();
    let config = small_config(Path::new("/write-fails"), FlushMode::Async);
    runtime().block_on(async {
        let store = MessageStore::open(storage.clone(), config).await.unwrap();
        storage.set_faults(FaultPlan {
            write_error_every: Some(40),
            ..storage.faults()
        });
        let (acked, err) = append_until_error(&store).await;
        assert!(matches!(err, StoreError::WritesDisabled { .. }), "{err}");
        assert!(err.to_string().contains("write of"), "{err}");
        storage.set_faults(FaultPlan::default());
        let again = store
            .append(&record("Faulty", 0, b"x", ""))
            .await
            .unwrap_err();
        assert!(matches!(again, StoreError::WritesDisabled { .. }));
        check_prefix(&store, acked).await;
    });
}

#[test]
fn tail_reads_are_served_from_memory_without_a_disk_read() {
    let storage = MemStorage::new();
    let config = small_config(Path::new("/tail"), FlushMode::Async);
    runtime().block_on(async {
        let store = MessageStore::open(storage.clone(), config).await.unwrap();
        for sequence in 0..20 {
            let body = body_for(0, sequence, 500);
            store.append(&record("Faulty", 0, &body, "")).await.unwrap();
        }
        // Every read of the files fails from now on: the tail must still be readable.
        storage.set_faults(FaultPlan {
            read_error_every: Some(1),
            ..storage.faults()
        });
        check_prefix(&store, 20).await;
        let record_at = store.read(&request(19)).await.unwrap().records.remove(0);
        let (decoded, _) = StoredRecord::decode(&record_at).unwrap();
        let by_id = store
            .read_message_at(decoded.physical_offset as u64)
            .await
            .unwrap();
        assert_eq!(by_id, record_at);
    });
}
