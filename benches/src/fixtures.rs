//! Realistic inputs: what a Java 4.9.8 producer sends and what a broker answers to a pull.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use ringmq_protocol::header::SendMessageRequestHeader;
use ringmq_protocol::message::{StoredRecord, body_crc, record::MessageMagic};
use ringmq_protocol::{CommandHead, RequestCode, SerializeType, encode_frame};

/// Body size of the benchmark messages.
pub const BODY_BYTES: usize = 1024;
/// Records in the benchmark pull response (a Java push consumer's `maxMsgNums`).
pub const PULL_RECORDS: usize = 32;

/// The properties a Java producer sends with a tagged, keyed message.
pub const PROPERTIES: &str = "KEYS\u{1}order-42\u{2}UNIQ_KEY\u{1}7F0000010C2A18B4AAC2519B5F2A0000\u{2}WAIT\u{1}true\u{2}TAGS\u{1}TagA";

/// The SEND_MESSAGE_V2 header of the benchmark message.
pub fn send_header() -> SendMessageRequestHeader<'static> {
    SendMessageRequestHeader {
        producer_group: "benchmark_producer_group",
        topic: "BenchmarkTest",
        default_topic: "TBW102",
        default_topic_queue_nums: 4,
        queue_id: 3,
        sys_flag: 0,
        born_timestamp_ms: 1_700_000_000_000,
        flag: 0,
        properties: Some(PROPERTIES),
        reconsume_times: Some(0),
        unit_mode: Some(false),
        max_reconsume_times: None,
        batch: Some(false),
        broker_name: Some("broker-a"),
    }
}

/// A 1 KiB body.
pub fn body() -> Vec<u8> {
    (0..BODY_BYTES).map(|index| (index % 251) as u8).collect()
}

/// A whole SEND_MESSAGE_V2 frame in the given header encoding.
pub fn send_v2_frame(serialize_type: SerializeType) -> Bytes {
    let mut out = BytesMut::new();
    let head = CommandHead::request(RequestCode::SendMessageV2, 42, serialize_type);
    encode_frame(&head, &send_header().v2(), &body(), &mut out);
    out.freeze()
}

/// A stored record as a Java producer's message reaches the store: tagged and keyed, store
/// fields left for the store to fill in.
pub fn stored_record_template<'a>(topic: &'a str, body: &'a [u8]) -> StoredRecord<'a> {
    let born_host: SocketAddr = "10.0.0.5:50000".parse().unwrap_or_else(|_| unreachable!());
    let store_host: SocketAddr = "10.0.0.10:10911".parse().unwrap_or_else(|_| unreachable!());
    StoredRecord {
        magic: MessageMagic::V1,
        body_crc: 0,
        queue_id: 3,
        flag: 0,
        queue_offset: 0,
        physical_offset: 0,
        sys_flag: 0,
        born_timestamp_ms: 1_700_000_000_000,
        born_host,
        store_timestamp_ms: 0,
        store_host,
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body,
        topic,
        properties: PROPERTIES,
    }
}

/// The body of a PULL response: 32 stored records of 1 KiB each.
pub fn pull_body() -> Bytes {
    let body = body();
    let mut out = BytesMut::new();
    for index in 0..PULL_RECORDS {
        let mut record = stored_record_template("BenchmarkTest", &body);
        record.body_crc = body_crc(&body);
        record.queue_offset = index as i64;
        record.physical_offset = out.len() as i64;
        record.store_timestamp_ms = 1_700_000_000_001;
        if record.encode(&mut out).is_err() {
            unreachable!("benchmark record is within limits");
        }
    }
    out.freeze()
}
