//! Appends, reads, lookups, searches and reopen on real files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{body_for, poll_runtime, record, runtime, small_config};
use ringmq_common::Clock;
use ringmq_protocol::message::{
    record::{MessageMagic, StoredRecord},
    tags_hash,
};
use ringmq_storage::{
    FlushMode, MessageStore, ReadRequest, ReadStatus, StoreError, io::UringStorage,
};

fn request(topic: &str, queue_id: i32, offset: u64) -> ReadRequest<'_> {
    ReadRequest {
        topic,
        queue_id,
        offset,
        max_messages: 32,
        max_bytes: 1 << 20,
        tags_hashes: None,
    }
}

#[test]
fn append_read_roll_and_reopen() {
    append_read_roll_and_reopen_with(UringStorage::new());
}

#[test]
fn append_read_roll_and_reopen_with_inline_writes() {
    append_read_roll_and_reopen_with(UringStorage::inline_writes());
}

#[test]
fn append_read_roll_and_reopen_on_the_polling_driver() {
    append_read_roll_and_reopen_on(UringStorage::new(), &poll_runtime());
}

fn append_read_roll_and_reopen_with(storage: UringStorage) {
    append_read_roll_and_reopen_on(storage, &runtime());
}

fn append_read_roll_and_reopen_on(storage: UringStorage, runtime: &compio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), FlushMode::Sync);
    runtime.block_on(async {
        let store = MessageStore::open(storage, config.clone()).await.unwrap();
        // ~300 KiB over 64 KiB segments: several rolls.
        for sequence in 0..300u64 {
            let queue_id = (sequence % 3) as i32;
            let body = body_for(queue_id, sequence / 3, 1000);
            let result = store
                .append(&record("TopicA", queue_id, &body, "TAGS\u{1}tagA\u{2}"))
                .await
                .unwrap();
            assert_eq!(result.queue_offset, sequence / 3);
        }
        let offsets = store.queue_offsets("TopicA", 1).unwrap();
        assert_eq!((offsets.min_offset, offsets.max_offset), (0, 100));
        let read = store.read(&request("TopicA", 1, 10)).await.unwrap();
        assert_eq!(read.status, ReadStatus::Found);
        assert_eq!(read.records.len(), 32);
        assert_eq!(read.next_offset, 42);
        for (i, bytes) in read.records.iter().enumerate() {
            let (decoded, _) = StoredRecord::decode(bytes).unwrap();
            assert_eq!(decoded.queue_offset, 10 + i as i64);
            assert_eq!(decoded.body, body_for(1, 10 + i as u64, 1000).as_slice());
            decoded.verify_body_crc().unwrap();
            let by_offset = store
                .read_message_at(decoded.physical_offset as u64)
                .await
                .unwrap();
            assert_eq!(&by_offset, bytes);
        }
        store.close().await.unwrap();

        let store = MessageStore::open(storage, config.clone()).await.unwrap();
        let offsets = store.queue_offsets("TopicA", 2).unwrap();
        assert_eq!((offsets.min_offset, offsets.max_offset), (0, 100));
        // Old entries come from the consume-queue files now.
        let read = store.read(&request("TopicA", 2, 0)).await.unwrap();
        assert_eq!(read.records.len(), 32);
        let (decoded, _) = StoredRecord::decode(&read.records[5]).unwrap();
        assert_eq!(decoded.body, body_for(2, 5, 1000).as_slice());
        let next = store
            .append(&record("TopicA", 2, b"after reopen", ""))
            .await
            .unwrap();
        assert_eq!(next.queue_offset, 100);
        store.close().await.unwrap();
    });
    let segments = std::fs::read_dir(dir.path().join("commitlog"))
        .unwrap()
        .count();
    assert!(segments >= 4, "expected several segments, found {segments}");
}

#[test]
fn statuses_tags_batches_and_time_search() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), FlushMode::Async);
    runtime().block_on(async {
        let store = MessageStore::open(UringStorage::new(), config)
            .await
            .unwrap();
        let missing = store.read(&request("Nope", 0, 0)).await.unwrap();
        assert_eq!(missing.status, ReadStatus::NoSuchQueue);

        let bodies: Vec<Vec<u8>> = (0..10).map(|i| body_for(0, i, 100)).collect();
        let batch: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                record(
                    "Tagged",
                    0,
                    body,
                    if i % 2 == 0 {
                        "TAGS\u{1}even\u{2}"
                    } else {
                        "TAGS\u{1}odd\u{2}"
                    },
                )
            })
            .collect();
        let result = store.append_batch(&batch).await.unwrap();
        assert_eq!((result.queue_offset, result.message_count), (0, 10));
        let expected_bytes: usize = batch.iter().map(StoredRecord::encoded_len).sum();
        assert_eq!(result.record_bytes, expected_bytes as u64);

        let even = [tags_hash("even")];
        let read = store
            .read(&ReadRequest {
                tags_hashes: Some(&even),
                ..request("Tagged", 0, 0)
            })
            .await
            .unwrap();
        assert_eq!(read.records.len(), 5);
        for bytes in &read.records {
            let (decoded, _) = StoredRecord::decode(bytes).unwrap();
            assert_eq!(decoded.queue_offset % 2, 0);
        }
        let none = [tags_hash("nothing")];
        let read = store
            .read(&ReadRequest {
                tags_hashes: Some(&none),
                ..request("Tagged", 0, 0)
            })
            .await
            .unwrap();
        assert_eq!(read.status, ReadStatus::NoMatchedMessage);
        assert_eq!(read.next_offset, 10);

        assert_eq!(
            store.read(&request("Tagged", 0, 10)).await.unwrap().status,
            ReadStatus::NoNewMessage
        );
        let overflow = store.read(&request("Tagged", 0, 99)).await.unwrap();
        assert_eq!(overflow.status, ReadStatus::OffsetOverflow);
        assert!(overflow.status.offset_moved());
        assert_eq!(overflow.next_offset, 10);

        // max_messages and max_bytes
        let few = store
            .read(&ReadRequest {
                max_messages: 3,
                ..request("Tagged", 0, 2)
            })
            .await
            .unwrap();
        assert_eq!((few.records.len(), few.next_offset), (3, 5));
        let one = store
            .read(&ReadRequest {
                max_bytes: 1,
                ..request("Tagged", 0, 2)
            })
            .await
            .unwrap();
        assert_eq!(
            one.records.len(),
            1,
            "at least one record even over max_bytes"
        );

        store.close().await.unwrap();
    });
}

#[test]
fn time_search_and_earliest_store_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(1_700_000_000_000);
    let mut config = small_config(dir.path(), FlushMode::Async);
    config.clock = clock.clone();
    runtime().block_on(async {
        let store = MessageStore::open(UringStorage::new(), config)
            .await
            .unwrap();
        let bodies: Vec<Vec<u8>> = (0..10).map(|i| body_for(0, i, 100)).collect();
        let batch: Vec<_> = bodies.iter().map(|b| record("Tagged", 0, b, "")).collect();
        let result = store.append_batch(&batch).await.unwrap();
        // Records are stamped with the store's clock.
        let before_ms = result.store_timestamp_ms;
        assert_eq!(before_ms, clock.now_ms());
        // Time search: a second append later than the batch.
        clock.advance_ms(5);
        let later = store
            .append(&record("Tagged", 0, b"later", ""))
            .await
            .unwrap()
            .store_timestamp_ms;
        assert_eq!(later, before_ms + 5);
        let max = store.queue_offsets("Tagged", 0).unwrap().max_offset;
        assert_eq!(
            store.search_offset_by_time("Tagged", 0, 0).await.unwrap(),
            Some(0)
        );
        assert_eq!(
            store
                .search_offset_by_time("Tagged", 0, later)
                .await
                .unwrap(),
            Some(max - 1)
        );
        assert_eq!(
            store
                .search_offset_by_time("Tagged", 0, later + 1)
                .await
                .unwrap(),
            Some(max)
        );
        assert_eq!(
            store.search_offset_by_time("Nope", 0, 0).await.unwrap(),
            None
        );
        assert_eq!(
            store.earliest_store_time("Tagged", 0).await.unwrap(),
            Some(before_ms)
        );
        store.close().await.unwrap();
    });
}

/// Topic names are RocketMQ's (`[%|a-zA-Z0-9_-]`, at most 127 bytes): anything else is refused
/// before it becomes a directory, and nothing is stored.
#[test]
fn topics_outside_rocketmq_rule_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), FlushMode::Async);
    runtime().block_on(async {
        let store = MessageStore::open(UringStorage::new(), config)
            .await
            .unwrap();
        // Over 127 bytes a record needs the v2 format, which could carry it: the store's rule
        // refuses it all the same.
        let too_long = "t".repeat(128);
        for topic in ["a.b", ".", "..", "a/b", "bad topic", "", too_long.as_str()] {
            let err = store
                .append(&StoredRecord {
                    magic: MessageMagic::V2,
                    ..record(topic, 0, b"body", "")
                })
                .await
                .unwrap_err();
            assert!(
                matches!(&err, StoreError::InvalidTopic(name) if name == topic),
                "{topic:?}: {err}"
            );
        }
        for queue_id in [-1, 65_536] {
            let err = store
                .append(&record("Fine", queue_id, b"body", ""))
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::InvalidTopic(_)), "{err}");
        }
        assert_eq!(store.queues(), Vec::<(String, i32)>::new());
        let longest = "t".repeat(127);
        store
            .append(&record(&longest, 0, b"body", ""))
            .await
            .unwrap();
        store
            .append(&record("%RETRY%group_1", 0, b"body", ""))
            .await
            .unwrap();
        assert_eq!(store.queues().len(), 2);
        store.close().await.unwrap();
    });
}
