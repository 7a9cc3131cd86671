//! Codec micro-benchmarks: a SEND_MESSAGE_V2 request with a 1 KiB body and a PULL response of 32
//! stored 1 KiB records, in both header encodings.
//!
//! Run: `cargo bench -p ringmq-benches --bench protocol_codec`

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ringmq_benches::fixtures;
use ringmq_protocol::header::{
    PullMessageResponseHeader, SendMessageRequestHeader, SendMessageResponseHeader,
};
use ringmq_protocol::message::RecordIter;
use ringmq_protocol::{
    CommandHead, FrameCodec, RequestCode, ResponseCode, SerializeType, encode_frame,
    encode_frame_head,
};

const ENCODINGS: [(SerializeType, &str); 2] = [
    (SerializeType::RocketMq, "binary"),
    (SerializeType::Json, "json"),
];

fn send_v2(c: &mut Criterion) {
    let codec = FrameCodec::default();
    let header = fixtures::send_header();
    let body = fixtures::body();
    let mut group = c.benchmark_group("send_v2_1KiB");
    group.throughput(Throughput::Elements(1));
    for (serialize_type, name) in ENCODINGS {
        let frame = fixtures::send_v2_frame(serialize_type);
        group.bench_function(format!("encode/{name}"), |b| {
            let mut out = BytesMut::with_capacity(4096);
            b.iter(|| {
                out.clear();
                let head = CommandHead::request(RequestCode::SendMessageV2, 42, serialize_type);
                encode_frame(&head, &header.v2(), black_box(&body), &mut out);
                black_box(out.len());
            });
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter_batched_ref(
                || BytesMut::from(&frame[..]),
                |buffer| {
                    let command = codec
                        .decode(buffer)
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| unreachable!());
                    let header = SendMessageRequestHeader::from_command(&command)
                        .unwrap_or_else(|_| unreachable!());
                    black_box((header.queue_id, command.body.len()));
                },
                BatchSize::SmallInput,
            );
        });
        group.bench_function(format!("round_trip/{name}"), |b| {
            let mut out = BytesMut::with_capacity(4096);
            b.iter(|| {
                let head = CommandHead::request(RequestCode::SendMessageV2, 42, serialize_type);
                encode_frame(&head, &header.v2(), black_box(&body), &mut out);
                let command = codec
                    .decode(&mut out)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| unreachable!());
                let decoded = SendMessageRequestHeader::from_command(&command)
                    .unwrap_or_else(|_| unreachable!());
                black_box((decoded.queue_id, command.body.len()));
                drop(command);
                out.clear();
            });
        });
    }
    // Baseline in the same run: what a straightforward implementation does with the JSON header,
    // parse it with serde_json into a map of owned strings (`HashMap<String, String>` ext fields),
    // plus the same body slice. The frame is identical to the `json` cases above.
    let frame = fixtures::send_v2_frame(SerializeType::Json);
    let header_bytes = u32::from_be_bytes([0, frame[5], frame[6], frame[7]]) as usize;
    group.bench_function("decode/json_serde_hashmap_baseline", |b| {
        b.iter(|| {
            let header = &black_box(&frame)[8..8 + header_bytes];
            let parsed: BaselineHeader =
                serde_json::from_slice(header).unwrap_or_else(|_| unreachable!());
            let queue_id: i32 = parsed
                .ext_fields
                .get("e")
                .and_then(|value| value.parse().ok())
                .unwrap_or_default();
            let body = frame.slice(8 + header_bytes..);
            black_box((parsed.code, queue_id, body.len()));
        });
    });
    group.finish();
}

/// The baseline's header shape: Java's `RemotingCommand` fields with a `HashMap` of ext fields.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct BaselineHeader {
    code: i32,
    #[serde(default)]
    language: String,
    #[serde(default)]
    version: i32,
    #[serde(default)]
    opaque: i32,
    #[serde(default)]
    flag: i32,
    #[serde(default)]
    remark: Option<String>,
    #[serde(default)]
    ext_fields: std::collections::HashMap<String, String>,
}

fn pull_response(c: &mut Criterion) {
    let codec = FrameCodec::default();
    let body = fixtures::pull_body();
    let header = PullMessageResponseHeader {
        suggest_which_broker_id: 0,
        next_begin_offset: 32,
        min_offset: 0,
        max_offset: 1000,
    };
    let mut group = c.benchmark_group("pull_response_32x1KiB");
    group.throughput(Throughput::Bytes(body.len() as u64));
    for (serialize_type, name) in ENCODINGS {
        let mut request = ringmq_protocol::Command::request(RequestCode::PullMessage, 43);
        request.serialize_type = serialize_type;
        let head = CommandHead::response_to(&request, ResponseCode::Success).with_remark("FOUND");
        let mut frame = BytesMut::new();
        encode_frame(&head, &header, &body, &mut frame);
        let frame = frame.freeze();
        group.bench_function(format!("encode_head_only/{name}"), |b| {
            let mut out = BytesMut::with_capacity(512);
            b.iter(|| {
                out.clear();
                encode_frame_head(&head, &header, black_box(body.len()), &mut out);
                black_box(out.len());
            });
        });
        group.bench_function(format!("encode_with_body_copy/{name}"), |b| {
            let mut out = BytesMut::with_capacity(body.len() + 512);
            b.iter(|| {
                out.clear();
                encode_frame(&head, &header, black_box(&body), &mut out);
                black_box(out.len());
            });
        });
        group.bench_function(format!("decode_and_iterate/{name}"), |b| {
            b.iter_batched_ref(
                || BytesMut::from(&frame[..]),
                |buffer| {
                    let command = codec
                        .decode(buffer)
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| unreachable!());
                    let header: PullMessageResponseHeader =
                        command.header().unwrap_or_else(|_| unreachable!());
                    let records = RecordIter::new(&command.body).flatten().count();
                    black_box((header.next_begin_offset, records));
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

/// A SEND_MESSAGE_V2 header as a Java 4.9.8 producer sends it: fastjson's key order, every ext
/// value a string, and the properties string with its `\u0001`/`\u0002` separators escaped.
const JAVA_SEND_V2_HEADER: &str = concat!(
    r#"{"code":310,"extFields":{"a":"please_rename_unique_group_name","b":"TopicTest","#,
    r#""c":"TBW102","d":"4","e":"3","f":"0","g":"1700000000000","h":"0","#,
    r#""i":"KEYS\u0001OrderID188\u0002UNIQ_KEY\u00017F0000014E2418B4AAC2519B5F2A0000\u0002"#,
    r#"WAIT\u0001true\u0002TAGS\u0001TagA\u0002","j":"0","k":"false","m":"false","n":"broker-a"},"#,
    r#""flag":0,"language":"JAVA","opaque":42,"serializeTypeCurrentRPC":"JSON","version":409}"#
);

/// The JSON header alone: decoding a Java producer's send header and encoding the broker's send
/// response header (no body, so the header codec is all that is measured).
fn json_header(c: &mut Criterion) {
    let codec = FrameCodec::default();
    let mut group = c.benchmark_group("json_header");
    group.throughput(Throughput::Elements(1));

    let mut frame = BytesMut::new();
    frame.extend_from_slice(&((4 + JAVA_SEND_V2_HEADER.len()) as u32).to_be_bytes());
    frame.extend_from_slice(&(JAVA_SEND_V2_HEADER.len() as u32).to_be_bytes());
    frame.extend_from_slice(JAVA_SEND_V2_HEADER.as_bytes());
    let frame = frame.freeze();
    let command = codec
        .decode(&mut BytesMut::from(&frame[..]))
        .ok()
        .flatten()
        .unwrap_or_else(|| unreachable!());
    let decoded =
        SendMessageRequestHeader::from_command(&command).unwrap_or_else(|_| unreachable!());
    assert_eq!(
        decoded.properties.map(|text| text.matches('\u{1}').count()),
        Some(4)
    );
    // The receive buffer is reused as a connection's is: once the previous command is dropped,
    // appending the next frame reuses its allocation, so the loop measures the decode alone.
    let decode_next = |buffer: &mut BytesMut| {
        buffer.extend_from_slice(black_box(&frame));
        codec
            .decode(buffer)
            .ok()
            .flatten()
            .unwrap_or_else(|| unreachable!())
    };
    group.bench_function("decode/java_send_v2", |b| {
        let mut buffer = BytesMut::with_capacity(frame.len());
        b.iter(|| black_box(decode_next(&mut buffer)));
    });
    group.bench_function("decode_typed/java_send_v2", |b| {
        let mut buffer = BytesMut::with_capacity(frame.len());
        b.iter(|| {
            let command = decode_next(&mut buffer);
            let header =
                SendMessageRequestHeader::from_command(&command).unwrap_or_else(|_| unreachable!());
            black_box((header.queue_id, header.properties));
        });
    });

    // What the broker answers a successful send (broker/src/handler/send.rs).
    let request = ringmq_protocol::Command::request(RequestCode::SendMessageV2, 42);
    let head = CommandHead::response_to(&request, ResponseCode::Success);
    let header = SendMessageResponseHeader {
        msg_id: "0A00000A00002A9F00000000001F4000",
        queue_id: 3,
        queue_offset: 1_234_567,
        transaction_id: None,
        msg_region: Some("DefaultRegion"),
        trace_on: Some("true"),
    };
    group.bench_function("encode/send_response", |b| {
        let mut out = BytesMut::with_capacity(512);
        b.iter(|| {
            out.clear();
            encode_frame_head(black_box(&head), black_box(&header), 0, &mut out);
            black_box(out.len());
        });
    });
    group.finish();
}

criterion_group!(benches, send_v2, pull_response, json_header);
criterion_main!(benches);
