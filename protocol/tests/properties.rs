//! Property tests: round trips of headers, properties, stored records and batch bodies, the JSON
//! header scanner against `serde_json`, and a bounded never-panic test over random and mutated
//! frames. Every case count is fixed, so the suite's run time is bounded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use ringmq_protocol::body::{RegisterBrokerBody, TopicRouteData};
use ringmq_protocol::message::{
    BatchIter, BatchMessage, MessageMagic, Properties, PropertiesWriter, RecordIter, StoredRecord,
};
use ringmq_protocol::{Command, ExtFields, FrameCodec, LanguageCode, SerializeType, body};

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 1..max).prop_map(|chars| chars.into_iter().collect())
}

fn ext_fields() -> impl Strategy<Value = ExtFields> {
    proptest::collection::btree_map(text(12), text(24), 0..12).prop_map(|map| {
        map.iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect()
    })
}

fn command() -> impl Strategy<Value = Command> {
    (
        any::<i16>(),
        0u8..14,
        any::<i16>(),
        any::<i32>(),
        0i32..4,
        proptest::option::of(text(40)),
        ext_fields(),
        proptest::collection::vec(any::<u8>(), 0..64),
        prop_oneof![Just(SerializeType::Json), Just(SerializeType::RocketMq)],
    )
        .prop_map(
            |(code, language, version, opaque, flag, remark, ext, body, serialize_type)| Command {
                code: i32::from(code),
                language: LanguageCode::from_u8(language),
                version: i32::from(version),
                opaque,
                flag,
                remark,
                ext,
                serialize_type,
                body: Bytes::from(body),
            },
        )
}

fn host() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

/// A record's owned parts, so the strategy can hand out borrowed `StoredRecord`s.
#[derive(Debug, Clone)]
struct OwnedRecord {
    magic: MessageMagic,
    numbers: (i32, i32, i32, i64, i64, i32, i64, i64, i32, i64),
    born_host: SocketAddr,
    store_host: SocketAddr,
    body: Vec<u8>,
    topic: String,
    properties: String,
}

impl OwnedRecord {
    fn view(&self) -> StoredRecord<'_> {
        let (
            body_crc,
            queue_id,
            flag,
            queue_offset,
            physical_offset,
            sys_flag,
            born_timestamp_ms,
            store_timestamp_ms,
            reconsume_times,
            prepared,
        ) = self.numbers;
        StoredRecord {
            magic: self.magic,
            body_crc,
            queue_id,
            flag,
            queue_offset,
            physical_offset,
            sys_flag,
            born_timestamp_ms,
            born_host: self.born_host,
            store_timestamp_ms,
            store_host: self.store_host,
            reconsume_times,
            prepared_transaction_offset: prepared,
            body: &self.body,
            topic: &self.topic,
            properties: &self.properties,
        }
    }
}

fn record() -> impl Strategy<Value = OwnedRecord> {
    (
        prop_oneof![Just(MessageMagic::V1), Just(MessageMagic::V2)],
        any::<(i32, i32, i32, i64, i64, i32, i64, i64, i32, i64)>(),
        host(),
        host(),
        proptest::collection::vec(any::<u8>(), 0..256),
        "[%|a-zA-Z0-9_-]{0,127}",
        ".{0,64}",
    )
        .prop_map(
            |(magic, numbers, born_host, store_host, body, topic, properties)| OwnedRecord {
                magic,
                numbers,
                born_host,
                store_host,
                body,
                topic,
                properties,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn commands_round_trip_in_both_encodings(command in command()) {
        let mut wire = BytesMut::new();
        command.encode(&mut wire);
        let decoded = FrameCodec::default().decode(&mut wire).unwrap().unwrap();
        prop_assert_eq!(decoded, command);
        prop_assert!(wire.is_empty());
    }

    #[test]
    fn json_scanner_agrees_with_serde_json(
        code in any::<i32>(),
        ext in proptest::collection::btree_map(".{0,8}", prop_oneof![
            ".{0,16}".prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_filter("finite", |value| value.is_finite()).prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
        ], 0..8),
        unknown in ".{0,16}",
    ) {
        let json = serde_json::json!({
            "code": code,
            "extFields": ext,
            "someFutureKey": {"nested": [unknown, 1, null, {"deep": true}]},
            "serializeTypeCurrentRPC": "JSON",
        });
        let text = serde_json::to_string_pretty(&json).unwrap();
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&((4 + text.len()) as u32).to_be_bytes());
        wire.extend_from_slice(&(text.len() as u32).to_be_bytes());
        wire.extend_from_slice(text.as_bytes());
        let decoded = FrameCodec::default().decode(&mut wire).unwrap().unwrap();
        prop_assert_eq!(decoded.code, code);
        prop_assert_eq!(decoded.ext.len(), ext.len());
        for (key, value) in &ext {
            let expected = match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            prop_assert_eq!(decoded.ext.get(key), Some(expected.as_str()));
        }
    }

    #[test]
    fn properties_round_trip(pairs in proptest::collection::btree_map("[^\u{1}\u{2}]{1,12}", "[^\u{1}\u{2}]{1,24}", 0..10), trailing in any::<bool>()) {
        let mut text = String::new();
        let mut writer = PropertiesWriter::new(&mut text);
        for (name, value) in &pairs {
            prop_assert!(writer.put(name, value));
        }
        if trailing {
            text.push('\u{2}');
        }
        let decoded: Vec<(String, String)> = Properties::new(&text).iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let expected: Vec<(String, String)> = pairs.into_iter().collect();
        prop_assert_eq!(decoded, expected);
    }

    #[test]
    fn stored_records_round_trip(records in proptest::collection::vec(record(), 1..4)) {
        let mut out = Vec::new();
        for record in &records {
            record.view().encode(&mut out).unwrap();
        }
        let decoded: Vec<_> = RecordIter::new(&out).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(decoded.len(), records.len());
        for (decoded, original) in decoded.iter().zip(&records) {
            let mut expected = original.view();
            expected.sys_flag = expected.encoded_sys_flag();
            prop_assert_eq!(*decoded, expected);
        }
    }

    #[test]
    fn batch_bodies_round_trip(messages in proptest::collection::vec((any::<i32>(), proptest::collection::vec(any::<u8>(), 0..128), ".{0,32}"), 0..8)) {
        let mut body = Vec::new();
        for (flag, payload, properties) in &messages {
            BatchMessage { flag: *flag, body: payload, properties }.encode(&mut body).unwrap();
        }
        let decoded: Vec<_> = BatchIter::new(&body).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(decoded.len(), messages.len());
        for (message, (flag, payload, properties)) in decoded.iter().zip(&messages) {
            prop_assert_eq!(message.flag, *flag);
            prop_assert_eq!(message.body, payload.as_slice());
            prop_assert_eq!(message.properties, properties.as_str());
        }
    }
}

/// Feeds `bytes` to every decoder; they may fail but must not panic or loop.
fn decode_everything(bytes: &[u8]) {
    let codec = FrameCodec::new(64 * 1024);
    let mut buffer = BytesMut::from(bytes);
    for _ in 0..=bytes.len() {
        match codec.decode(&mut buffer) {
            Ok(Some(command)) => {
                let _ = command.header::<ringmq_protocol::header::PullMessageRequestHeader<'_>>();
                let _ = ringmq_protocol::header::SendMessageRequestHeader::from_command(&command);
                let _ = RecordIter::new(&command.body).count();
                let _ = BatchIter::new(&command.body).count();
            }
            Ok(None) => break,
            Err(error) if error.is_fatal() => break,
            Err(_) => {}
        }
    }
    let _ = RecordIter::new(bytes).count();
    let _ = BatchIter::new(bytes).count();
    let _ = body::decode::<TopicRouteData>(bytes, "TopicRouteData");
    let _ = RegisterBrokerBody::decode_compressed(bytes);
}

fn valid_frames() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for serialize_type in [SerializeType::Json, SerializeType::RocketMq] {
        let mut command = Command::request(ringmq_protocol::RequestCode::SendMessageV2, 7);
        command.serialize_type = serialize_type;
        for (key, value) in [
            ("a", "group"),
            ("b", "Topic"),
            ("c", "TBW102"),
            ("d", "4"),
            ("e", "1"),
            ("f", "0"),
            ("g", "1"),
            ("h", "0"),
            ("i", "TAGS\u{1}x"),
        ] {
            command.ext.insert(key, value);
        }
        command.remark = Some("remark \"quoted\" \u{1}".into());
        command.body = Bytes::from_static(b"hello body");
        let mut wire = BytesMut::new();
        command.encode(&mut wire);
        frames.push(wire.to_vec());
    }
    frames
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(
        which in 0usize..2,
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut frame = valid_frames().swap_remove(which);
        for (index, byte, kind) in mutations {
            let at = index.index(frame.len().max(1));
            match kind {
                0 if !frame.is_empty() => frame[at] = byte,
                1 => frame.insert(at.min(frame.len()), byte),
                _ if !frame.is_empty() => { frame.remove(at); }
                _ => {}
            }
        }
        decode_everything(&frame);
    }
}
