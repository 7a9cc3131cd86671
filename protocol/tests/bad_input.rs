//! Bad input: every malformed frame, header, field, record and body gets its typed error, the
//! decoder never panics, and a bad header does not desynchronise the stream.

use bytes::BytesMut;
use ringmq_protocol::header::{PullMessageRequestHeader, SendMessageRequestHeader};
use ringmq_protocol::message::{BatchIter, MessageMagic, StoredRecord};
use ringmq_protocol::{
    Command, DecodeError, FieldError, FrameCodec, FrameError, HeaderError, RecordError,
    RequestCode, body,
};

fn frame(type_byte: u8, header: &[u8], body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    out.extend_from_slice(&((4 + header.len() + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&((u32::from(type_byte) << 24) | header.len() as u32).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    out
}

fn decode_error(bytes: &[u8]) -> DecodeError {
    let mut buffer = BytesMut::from(bytes);
    FrameCodec::default()
        .decode(&mut buffer)
        .expect_err("must be rejected")
}

fn json_error(header: &str) -> HeaderError {
    match decode_error(&frame(0, header.as_bytes(), b"")) {
        DecodeError::Header(error) => error,
        other @ DecodeError::Frame(_) => panic!("expected a header error, got {other:?}"),
    }
}

#[test]
fn truncated_frames_wait_for_more_bytes() {
    let full = frame(0, br#"{"code":1}"#, b"body");
    let codec = FrameCodec::default();
    for cut in 0..full.len() {
        let mut partial = BytesMut::from(&full[..cut]);
        assert_eq!(codec.decode(&mut partial), Ok(None), "cut at {cut}");
        assert_eq!(partial.len(), cut, "nothing consumed from a partial frame");
    }
}

#[test]
fn impossible_lengths_are_fatal_frame_errors() {
    let negative = decode_error(&(-5i32).to_be_bytes());
    assert_eq!(
        negative,
        DecodeError::Frame(FrameError::NegativeLength { length: -5 })
    );
    assert!(negative.is_fatal());
    assert_eq!(
        decode_error(&[0, 0, 0, 2, 0, 0]),
        DecodeError::Frame(FrameError::LengthTooSmall { length: 2 })
    );
    let huge = (i32::MAX).to_be_bytes();
    assert!(matches!(
        decode_error(&huge),
        DecodeError::Frame(FrameError::FrameTooLarge { .. })
    ));
    assert_eq!(
        decode_error(&frame(2, b"{}", b"")),
        DecodeError::Frame(FrameError::UnknownSerializeType { type_byte: 2 })
    );
    let mut lying = frame(0, b"{}", b"");
    lying[7] = 200; // header length 200 in a 6-byte frame
    assert!(matches!(
        decode_error(&lying),
        DecodeError::Frame(FrameError::HeaderLengthExceedsFrame {
            header_bytes: 200,
            ..
        })
    ));
}

#[test]
fn configured_limit_is_enforced_before_buffering() {
    let codec = FrameCodec::new(64);
    let mut buffer = BytesMut::from(&100i32.to_be_bytes()[..]);
    assert_eq!(
        codec.decode(&mut buffer),
        Err(DecodeError::Frame(FrameError::FrameTooLarge {
            frame_bytes: 104,
            max_frame_bytes: 64
        }))
    );
}

#[test]
fn invalid_json_headers_are_typed_errors() {
    assert!(matches!(
        json_error("not json"),
        HeaderError::InvalidJson { offset: 0, .. }
    ));
    assert!(matches!(
        json_error(r#"{"code":1"#),
        HeaderError::InvalidJson { .. }
    ));
    assert!(matches!(
        json_error(r#"{"code":1}}"#),
        HeaderError::InvalidJson {
            reason: "trailing characters after header object",
            ..
        }
    ));
    assert!(matches!(
        json_error(r#"{"code":01}"#),
        HeaderError::InvalidJson { .. }
    ));
    assert!(matches!(
        json_error(r#"{"code":"x"}"#),
        HeaderError::InvalidValue { field: "code", .. }
    ));
    assert!(matches!(
        json_error(r#"{"code":1.5}"#),
        HeaderError::InvalidValue { field: "code", .. }
    ));
    assert!(matches!(
        json_error(r#"{"opaque":99999999999}"#),
        HeaderError::InvalidValue {
            field: "opaque",
            ..
        }
    ));
    assert!(matches!(
        json_error(r#"{"extFields":[1]}"#),
        HeaderError::InvalidJson { .. }
    ));
    assert!(matches!(
        json_error(r#"{"remark":"\q"}"#),
        HeaderError::InvalidJson {
            reason: "invalid escape sequence",
            ..
        }
    ));
    assert!(matches!(
        json_error(r#"{"remark":"\ud800"}"#),
        HeaderError::InvalidJson { .. }
    ));
    assert!(matches!(
        json_error("{\"remark\":\"a\nb\"}"),
        HeaderError::InvalidJson {
            reason: "control character in string",
            ..
        }
    ));
    let deep = format!("{{\"x\":{}{}}}", "[".repeat(100), "]".repeat(100));
    assert!(matches!(
        json_error(&deep),
        HeaderError::InvalidJson {
            reason: "nesting too deep",
            ..
        }
    ));
}

/// A binary header with the given ext entries (raw key and value bytes).
fn binary_header(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut header = vec![0, 10, 0, 1, 0x99, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut ext = Vec::new();
    for (key, value) in entries {
        ext.extend_from_slice(&(key.len() as i16).to_be_bytes());
        ext.extend_from_slice(key);
        ext.extend_from_slice(&(value.len() as i32).to_be_bytes());
        ext.extend_from_slice(value);
    }
    header.extend_from_slice(&(ext.len() as i32).to_be_bytes());
    header.extend_from_slice(&ext);
    header
}

fn binary_error(header: &[u8]) -> HeaderError {
    match decode_error(&frame(1, header, b"")) {
        DecodeError::Header(error) => error,
        other @ DecodeError::Frame(_) => panic!("expected a header error, got {other:?}"),
    }
}

#[test]
fn invalid_utf8_is_rejected_in_both_encodings() {
    let mut json = br#"{"remark":"x"}"#.to_vec();
    json[11] = 0xFF;
    assert_eq!(
        decode_error(&frame(0, &json, b"")),
        DecodeError::Header(HeaderError::InvalidUtf8 { field: "header" })
    );
    assert_eq!(
        binary_error(&binary_header(&[(b"topic", b"\xff\xfe")])),
        HeaderError::InvalidUtf8 { field: "ext value" }
    );
    assert_eq!(
        binary_error(&binary_header(&[(b"\xc3", b"v")])),
        HeaderError::InvalidUtf8 { field: "ext key" }
    );
}

#[test]
fn malformed_binary_headers_are_typed_errors() {
    assert!(matches!(
        binary_error(&[0, 10, 0]),
        HeaderError::Truncated {
            field: "version",
            ..
        }
    ));
    let mut negative_remark = binary_header(&[]);
    negative_remark[13..17].copy_from_slice(&(-1i32).to_be_bytes());
    assert_eq!(
        binary_error(&negative_remark),
        HeaderError::NegativeLength {
            field: "remark",
            length: -1
        }
    );
    let mut long_remark = binary_header(&[]);
    long_remark[13..17].copy_from_slice(&1_000_000i32.to_be_bytes());
    assert!(matches!(
        binary_error(&long_remark),
        HeaderError::Truncated {
            field: "remark",
            need: 1_000_000,
            ..
        }
    ));
    let mut lying_ext = binary_header(&[(b"k", b"v")]);
    lying_ext[17..21].copy_from_slice(&100i32.to_be_bytes());
    assert!(matches!(
        binary_error(&lying_ext),
        HeaderError::Truncated {
            field: "extFields",
            ..
        }
    ));
    let mut lying_value = binary_header(&[(b"k", b"v")]);
    let value_len_at = 21 + 2 + 1;
    lying_value[value_len_at..value_len_at + 4].copy_from_slice(&50i32.to_be_bytes());
    assert!(matches!(
        binary_error(&lying_value),
        HeaderError::Truncated {
            field: "ext value",
            ..
        }
    ));
    let mut trailing = binary_header(&[(b"k", b"v")]);
    trailing.extend_from_slice(b"xx");
    assert_eq!(
        binary_error(&trailing),
        HeaderError::TrailingBytes { count: 2 }
    );
}

#[test]
fn a_bad_header_consumes_its_frame_and_the_stream_continues() {
    let mut stream = frame(0, b"{oops", b"");
    stream.extend_from_slice(&frame(0, br#"{"code":34,"opaque":2}"#, b""));
    let codec = FrameCodec::default();
    assert!(matches!(
        codec.decode(&mut stream),
        Err(DecodeError::Header(_))
    ));
    let next = codec.decode(&mut stream).unwrap().unwrap();
    assert_eq!(
        (next.request_code(), next.opaque),
        (RequestCode::HeartBeat, 2)
    );
    assert!(stream.is_empty());
}

#[test]
fn missing_and_malformed_required_fields_are_named() {
    let mut command = Command::request(RequestCode::PullMessage, 1);
    for (key, value) in [
        ("consumerGroup", "g"),
        ("topic", "t"),
        ("queueId", "0"),
        ("queueOffset", "0"),
        ("maxMsgNums", "32"),
    ] {
        command.ext.insert(key, value);
    }
    assert_eq!(
        command.header::<PullMessageRequestHeader<'_>>(),
        Err(FieldError::Missing { field: "sysFlag" })
    );
    command.ext.insert("sysFlag", "two");
    assert_eq!(
        command.header::<PullMessageRequestHeader<'_>>(),
        Err(FieldError::Invalid {
            field: "sysFlag",
            value: "two".into(),
            expected: "a 32-bit integer"
        })
    );

    let mut send = Command::request(RequestCode::SendMessageV2, 2);
    send.ext.insert("a", "pg");
    assert_eq!(
        SendMessageRequestHeader::from_command(&send),
        Err(FieldError::Missing { field: "b" })
    );
    // SEND_MESSAGE (10) reads long names, so the same map misses `producerGroup` first.
    send.code = RequestCode::SendMessage.as_i32();
    assert_eq!(
        SendMessageRequestHeader::from_command(&send),
        Err(FieldError::Missing {
            field: "producerGroup"
        })
    );
}

/// A record with loopback hosts and zeroed numbers: only the variable parts matter to these tests.
fn minimal_record<'a>(body: &'a [u8], topic: &'a str) -> StoredRecord<'a> {
    StoredRecord {
        magic: MessageMagic::V1,
        body_crc: 0,
        queue_id: 0,
        flag: 0,
        queue_offset: 0,
        physical_offset: 0,
        sys_flag: 0,
        born_timestamp_ms: 0,
        born_host: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
        store_timestamp_ms: 0,
        store_host: std::net::SocketAddr::from(([127, 0, 0, 1], 2)),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body,
        topic,
        properties: "",
    }
}

#[test]
fn oversized_topic_and_properties_are_refused_by_the_record_encoder() {
    let long_topic = "t".repeat(128);
    let properties = "p".repeat(40_000);
    let mut record = minimal_record(b"", &long_topic);
    let mut out = Vec::new();
    assert!(matches!(
        record.encode(&mut out),
        Err(RecordError::TopicTooLong {
            length: 128,
            max: 127,
            ..
        })
    ));
    record.topic = "t";
    record.properties = &properties;
    assert_eq!(
        record.encode(&mut out),
        Err(RecordError::PropertiesTooLong { length: 40_000 })
    );
    assert!(out.is_empty(), "nothing written on error");
}

#[test]
fn malformed_records_and_batches_are_typed_errors() {
    let mut out = Vec::new();
    let record = minimal_record(b"abc", "t");
    record.encode(&mut out).unwrap();
    let mut bigger = out.clone();
    bigger[..4].copy_from_slice(&((out.len() + 4) as i32).to_be_bytes());
    bigger.extend_from_slice(&[0; 4]);
    assert!(matches!(
        StoredRecord::decode(&bigger),
        Err(RecordError::SizeMismatch { .. })
    ));
    let mut lying_body = out.clone();
    lying_body[84..88].copy_from_slice(&(-1i32).to_be_bytes());
    assert!(matches!(
        StoredRecord::decode(&lying_body),
        Err(RecordError::BadLength {
            field: "body length",
            ..
        })
    ));
    assert!(matches!(
        StoredRecord::decode(&out[..50]),
        Err(RecordError::Truncated { .. })
    ));
    assert_eq!(
        StoredRecord::decode(&out).unwrap().0.verify_body_crc(),
        Err(RecordError::BodyCrcMismatch {
            stored: 0,
            computed: ringmq_protocol::message::body_crc(b"abc")
        })
    );
    assert!(matches!(
        BatchIter::new(&[0xFF; 30]).next(),
        Some(Err(RecordError::BadLength { .. }))
    ));
}

#[test]
fn malformed_bodies_are_typed_errors() {
    let error =
        body::decode::<body::TopicRouteData>(b"{\"queueDatas\":5}", "TopicRouteData").unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("invalid TopicRouteData JSON body"),
        "{error}"
    );
    assert!(body::decode::<body::HeartbeatData>(b"\xff", "HeartbeatData").is_err());
}
