//! Replication at the store level: a master's chunks read with `LogReader` and replicated into
//! another store land byte for byte at the same offsets, index the same queues, survive a
//! reopen, and bad or out-of-place data is refused without touching the replica.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::Path, time::Duration};

use bytes::Bytes;
use common::{body_for, record, runtime, small_config};
use ringmq_storage::{
    FlushMode, LogReadError, LogReader, Mark, MessageStore, ReadRequest, StoreError, format,
    io::UringStorage,
};

/// Appends `count` messages over three queues of `topic`.
async fn fill(store: &MessageStore<UringStorage>, topic: &str, from: u64, count: u64) {
    for sequence in from..from + count {
        let queue_id = (sequence % 3) as i32;
        let body = body_for(queue_id, sequence, 700 + (sequence % 5) as usize * 300);
        store
            .append(&record(topic, queue_id, &body, "TAGS\u{1}t\u{2}"))
            .await
            .unwrap();
    }
}

/// Copies everything `master` has written past `from` into `replica`, frame by frame, as the
/// HA connection does. Returns the replica's end.
async fn copy(
    master: &MessageStore<UringStorage>,
    replica: &MessageStore<UringStorage>,
    mut from: u64,
    frame_bytes: usize,
) -> u64 {
    let mut reader = LogReader::new(master.config());
    let upto = master.watch().written();
    let mut buf = Vec::new();
    while from < upto {
        buf.clear();
        let run = reader
            .read_chunks(from, upto, frame_bytes, &mut buf)
            .unwrap();
        if run.bytes > 0 {
            let end = replica
                .replicate(run.position, Bytes::copy_from_slice(&buf))
                .await
                .unwrap();
            assert_eq!(end, run.next.max(run.position + run.bytes as u64));
        }
        from = run.next;
    }
    from
}

fn segments(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join("commitlog"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn queue_records(
    store: &MessageStore<UringStorage>,
    topic: &str,
    queue_id: i32,
) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = store.queue_offsets(topic, queue_id).unwrap().min_offset;
    loop {
        let read = store
            .read(&ReadRequest {
                topic,
                queue_id,
                offset,
                max_messages: 64,
                max_bytes: 1 << 20,
                tags_hashes: None,
            })
            .await
            .unwrap();
        if read.records.is_empty() {
            return out;
        }
        out.extend(read.records);
        offset = read.next_offset;
    }
}

#[test]
fn replicated_log_is_byte_identical_and_survives_reopen() {
    let master_dir = tempfile::tempdir().unwrap();
    let replica_dir = tempfile::tempdir().unwrap();
    let master_config = small_config(master_dir.path(), FlushMode::Async);
    let replica_config = small_config(replica_dir.path(), FlushMode::Sync);
    runtime().block_on(async {
        let master = MessageStore::open(UringStorage::new(), master_config.clone())
            .await
            .unwrap();
        let replica = MessageStore::open(UringStorage::new(), replica_config.clone())
            .await
            .unwrap();
        // ~400 KiB over 64 KiB segments: several end markers and rolls; small frames split
        // the log at many chunk boundaries.
        fill(&master, "TopicR", 0, 300).await;
        master.flush().await.unwrap();
        let end = copy(&master, &replica, replica.log_end(), 5000).await;
        assert_eq!(end, master.watch().written());
        // The marks other threads watch follow: written, then durable.
        replica.flush().await.unwrap();
        let watch = replica.watch();
        assert!(watch.written() >= end && watch.durable() >= end);
        assert_eq!(
            watch.wait_past(Mark::Durable, end - 1, Duration::ZERO),
            watch.durable()
        );
        // Same bytes, same fingerprint; one byte of difference shows.
        let fingerprint = |config| LogReader::new(config).tail_fingerprint(end).unwrap();
        assert!(fingerprint(&master_config).is_some());
        assert_eq!(fingerprint(&master_config), fingerprint(&replica_config));
        assert_eq!(
            LogReader::new(&master_config)
                .tail_fingerprint(master_config.base_offset())
                .unwrap(),
            None
        );
        for queue_id in 0..3 {
            assert_eq!(
                queue_records(&master, "TopicR", queue_id).await,
                queue_records(&replica, "TopicR", queue_id).await
            );
        }
        // More data, continuing from the replica's end after a reopen.
        replica.close().await.unwrap();
        let replica = MessageStore::open(UringStorage::new(), replica_config.clone())
            .await
            .unwrap();
        assert_eq!(replica.log_end(), end);
        fill(&master, "TopicR", 300, 100).await;
        master.flush().await.unwrap();
        copy(&master, &replica, replica.log_end(), 64 << 10).await;
        replica.flush().await.unwrap();
        master.close().await.unwrap();
        replica.close().await.unwrap();
    });
    assert_eq!(segments(master_dir.path()), segments(replica_dir.path()));
}

#[test]
fn a_pristine_replica_starts_at_the_masters_oldest_segment() {
    let master_dir = tempfile::tempdir().unwrap();
    let replica_dir = tempfile::tempdir().unwrap();
    let mut master_config = small_config(master_dir.path(), FlushMode::Async);
    master_config.shard = 1;
    let mut replica_config = small_config(replica_dir.path(), FlushMode::Async);
    replica_config.shard = 1;
    runtime().block_on(async {
        let master = MessageStore::open(UringStorage::new(), master_config.clone())
            .await
            .unwrap();
        fill(&master, "TopicS", 0, 200).await;
        master.flush().await.unwrap();
        // Pretend retention removed the first segments: copy from the third one.
        let reader = LogReader::new(&master_config);
        let base = master_config.base_offset();
        let third = reader.segment_start(base + 2 * master_config.segment_bytes);
        let replica = MessageStore::open(UringStorage::new(), replica_config.clone())
            .await
            .unwrap();
        assert!(replica.is_pristine());
        assert!(matches!(
            replica.start_at(third + 1).await,
            Err(StoreError::ReplicaRefused(_))
        ));
        replica.start_at(third).await.unwrap();
        assert_eq!(replica.log_end(), third);
        copy(&master, &replica, third, 16 << 10).await;
        replica.flush().await.unwrap();
        // Queues start where the copied segments do.
        let first = queue_records(&replica, "TopicS", 0).await;
        let all = queue_records(&master, "TopicS", 0).await;
        assert!(!first.is_empty() && first.len() < all.len());
        assert_eq!(first[..], all[all.len() - first.len()..]);
        replica.close().await.unwrap();
        // Reopens at the moved start.
        let replica = MessageStore::open(UringStorage::new(), replica_config.clone())
            .await
            .unwrap();
        assert_eq!(replica.log_end(), master.watch().written());
        assert!(!replica.is_pristine());
        assert!(replica.start_at(base).await.is_err());
        replica.close().await.unwrap();
        master.close().await.unwrap();
    });
}

#[test]
fn bad_or_misplaced_chunks_are_refused_and_change_nothing() {
    let master_dir = tempfile::tempdir().unwrap();
    let replica_dir = tempfile::tempdir().unwrap();
    let master_config = small_config(master_dir.path(), FlushMode::Async);
    let replica_config = small_config(replica_dir.path(), FlushMode::Async);
    runtime().block_on(async {
        let master = MessageStore::open(UringStorage::new(), master_config.clone())
            .await
            .unwrap();
        let replica = MessageStore::open(UringStorage::new(), replica_config)
            .await
            .unwrap();
        fill(&master, "TopicB", 0, 30).await;
        master.flush().await.unwrap();
        let mut reader = LogReader::new(&master_config);
        let mut buf = Vec::new();
        let start = replica.log_end();
        let run = reader
            .read_chunks(start, master.watch().written(), 1 << 20, &mut buf)
            .unwrap();
        assert!(run.bytes > 0);
        // Not at the replica's end.
        let refused = replica
            .replicate(start + 16, Bytes::copy_from_slice(&buf))
            .await;
        assert!(
            matches!(refused, Err(StoreError::ReplicaRefused(_))),
            "{refused:?}"
        );
        // A flipped payload byte.
        let mut flipped = buf.clone();
        flipped[100] ^= 0x40;
        let refused = replica.replicate(start, Bytes::from(flipped)).await;
        assert!(
            matches!(refused, Err(StoreError::ReplicaRefused(_))),
            "{refused:?}"
        );
        // Garbage.
        let refused = replica
            .replicate(start, Bytes::from_static(&[7u8; 64]))
            .await;
        assert!(
            matches!(refused, Err(StoreError::ReplicaRefused(_))),
            "{refused:?}"
        );
        // A chunk whose CRCs are right but whose second record does not continue its queue:
        // refused whole, so not even the first record's queue appears.
        let first_len = u32::from_be_bytes(buf[16..20].try_into().unwrap()) as usize;
        let first = &buf[16..16 + first_len];
        let mut second = first.to_vec();
        second[20..28].copy_from_slice(&5i64.to_be_bytes());
        let second_at = start + 16 + first_len as u64;
        second[28..36].copy_from_slice(&(second_at as i64).to_be_bytes());
        let mut chunk = vec![0u8; 16];
        chunk.extend_from_slice(first);
        chunk.extend_from_slice(&second);
        let payload_crc = crc32c::crc32c(&chunk[16..]);
        let payload_bytes = (chunk.len() - 16) as u32;
        format::write_chunk_header(
            &mut chunk[..16],
            start,
            format::ChunkHeader::Records {
                payload_bytes,
                payload_crc,
            },
        );
        let refused = replica.replicate(start, Bytes::from(chunk)).await;
        assert!(
            matches!(refused, Err(StoreError::ReplicaRefused(_))),
            "{refused:?}"
        );
        assert_eq!(replica.log_end(), start);
        for queue_id in 0..3 {
            assert!(replica.queue_offsets("TopicB", queue_id).is_none());
        }
        // The good bytes still go in afterwards.
        let end = replica.replicate(start, Bytes::from(buf)).await.unwrap();
        assert_eq!(end, run.next);
        // A reader asked for a position inside a chunk finds no chunk there.
        let mut out = Vec::new();
        let err = reader
            .read_chunks(start + 20, master.watch().written(), 1 << 20, &mut out)
            .unwrap_err();
        assert!(matches!(err, LogReadError::NotAChunk(_)), "{err}");
        replica.close().await.unwrap();
        master.close().await.unwrap();
    });
}
