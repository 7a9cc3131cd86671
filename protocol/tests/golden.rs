//! Golden byte vectors: every worked example of docs/protocol.md decodes to its documented fields and,
//! where the document gives exact bytes, encodes back to the same bytes.

use bytes::BytesMut;
use ringmq_protocol::header::{
    GetRouteInfoRequestHeader, PullMessageResponseHeader, SendMessageResponseHeader,
};
use ringmq_protocol::message::OffsetMessageId;
use ringmq_protocol::{
    Command, CommandHead, FrameCodec, LanguageCode, RequestCode, ResponseCode, SerializeType,
    encode_frame,
};

fn frame(serialize_type: SerializeType, header: &[u8], body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    out.extend_from_slice(&((4 + header.len() + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(
        &((u32::from(serialize_type.as_u8()) << 24) | header.len() as u32).to_be_bytes(),
    );
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    out
}

fn decode(bytes: &[u8]) -> Command {
    let mut buffer = BytesMut::from(bytes);
    let command = FrameCodec::default()
        .decode(&mut buffer)
        .expect("decodes")
        .expect("complete frame");
    assert!(buffer.is_empty(), "the whole frame is consumed");
    command
}

const ROUTE_JSON_HEADER: &str = r#"{"code":105,"extFields":{"topic":"TopicTest"},"flag":0,"language":"JAVA","opaque":7,"serializeTypeCurrentRPC":"JSON","version":409}"#;

const ROUTE_BINARY_FRAME: [u8; 49] = [
    0x00, 0x00, 0x00, 0x2d, 0x01, 0x00, 0x00, 0x29, // totalLength=45, marker=(1<<24)|41
    0x00, 0x69, // code=105
    0x00, // language=JAVA
    0x01, 0x99, // version=409
    0x00, 0x00, 0x00, 0x07, // opaque=7
    0x00, 0x00, 0x00, 0x00, // flag=0
    0x00, 0x00, 0x00, 0x00, // remark length 0
    0x00, 0x00, 0x00, 0x14, // extFields byte length 20
    0x00, 0x05, b't', b'o', b'p', b'i', b'c', // key
    0x00, 0x00, 0x00, 0x09, b'T', b'o', b'p', b'i', b'c', b'T', b'e', b's', b't', // value
];

fn route_request_head(serialize_type: SerializeType) -> CommandHead<'static> {
    CommandHead::request(RequestCode::GetRouteinfoByTopic, 7, serialize_type)
}

fn assert_route_request(command: &Command) {
    assert_eq!(command.request_code(), RequestCode::GetRouteinfoByTopic);
    assert_eq!(
        (
            command.language,
            command.version,
            command.opaque,
            command.flag
        ),
        (LanguageCode::Java, 409, 7, 0)
    );
    assert!(!command.is_response() && !command.is_oneway());
    assert_eq!(command.remark, None);
    assert!(command.body.is_empty());
    let header: GetRouteInfoRequestHeader<'_> = command.header().expect("typed header");
    assert_eq!(
        header,
        GetRouteInfoRequestHeader {
            topic: "TopicTest",
            accept_standard_json_only: None
        }
    );
}

#[test]
fn json_route_request_of_section_1_3() {
    assert_eq!(ROUTE_JSON_HEADER.len(), 131);
    let wire = frame(SerializeType::Json, ROUTE_JSON_HEADER.as_bytes(), b"");
    assert_eq!(
        &wire[..8],
        &[0x00, 0x00, 0x00, 0x87, 0x00, 0x00, 0x00, 0x83]
    );
    let command = decode(&wire);
    assert_eq!(command.serialize_type, SerializeType::Json);
    assert_route_request(&command);

    let header = GetRouteInfoRequestHeader {
        topic: "TopicTest",
        accept_standard_json_only: None,
    };
    let mut encoded = BytesMut::new();
    encode_frame(
        &route_request_head(SerializeType::Json),
        &header,
        &[],
        &mut encoded,
    );
    assert_eq!(
        encoded, wire,
        "typed header encodes to the documented bytes"
    );
    let mut re_encoded = BytesMut::new();
    command.encode(&mut re_encoded);
    assert_eq!(
        re_encoded, wire,
        "a decoded command re-encodes to the same bytes"
    );
}

#[test]
fn binary_route_request_of_section_1_3() {
    let command = decode(&ROUTE_BINARY_FRAME);
    assert_eq!(command.serialize_type, SerializeType::RocketMq);
    assert_route_request(&command);

    let header = GetRouteInfoRequestHeader {
        topic: "TopicTest",
        accept_standard_json_only: None,
    };
    let mut encoded = BytesMut::new();
    encode_frame(
        &route_request_head(SerializeType::RocketMq),
        &header,
        &[],
        &mut encoded,
    );
    assert_eq!(&encoded[..], &ROUTE_BINARY_FRAME[..]);
    let mut re_encoded = BytesMut::new();
    command.encode(&mut re_encoded);
    assert_eq!(&re_encoded[..], &ROUTE_BINARY_FRAME[..]);
}

#[test]
fn send_response_of_section_3_4() {
    let header = concat!(
        r#"{"code":0,"extFields":{"queueId":"2","TRACE_ON":"true","MSG_REGION":"DefaultRegion","#,
        r#""msgId":"C0A8000A00002A9F0000000000001F40","queueOffset":"17"},"#,
        r#""flag":1,"language":"JAVA","opaque":42,"serializeTypeCurrentRPC":"JSON","version":409}"#
    );
    let command = decode(&frame(SerializeType::Json, header.as_bytes(), b""));
    assert!(command.is_response());
    assert_eq!(
        (command.response_code(), command.opaque),
        (ResponseCode::Success, 42)
    );
    let response: SendMessageResponseHeader<'_> = command.header().unwrap();
    assert_eq!(response.queue_id, 2);
    assert_eq!(response.queue_offset, 17);
    assert_eq!(response.msg_region, Some("DefaultRegion"));
    assert_eq!(response.trace_on, Some("true"));
    let id: OffsetMessageId = response.msg_id.parse().unwrap();
    assert_eq!(
        (id.store_host.to_string(), id.commit_log_offset),
        ("192.168.0.10:10911".to_owned(), 8000)
    );

    // Our encoding of the same response: the documented keys, values as strings, Java key order.
    let mut request = Command::request(RequestCode::SendMessageV2, 42);
    request.serialize_type = SerializeType::Json;
    let mut encoded = BytesMut::new();
    encode_frame(
        &CommandHead::response_to(&request, ResponseCode::Success),
        &response,
        &[],
        &mut encoded,
    );
    let text = std::str::from_utf8(&encoded[8..]).unwrap();
    assert_eq!(
        text,
        concat!(
            r#"{"code":0,"extFields":{"msgId":"C0A8000A00002A9F0000000000001F40","queueId":"2","queueOffset":"17","#,
            r#""MSG_REGION":"DefaultRegion","TRACE_ON":"true"},"flag":1,"language":"JAVA","opaque":42,"#,
            r#""serializeTypeCurrentRPC":"JSON","version":409}"#
        )
    );
}

#[test]
fn pull_not_found_of_section_3_5() {
    let header = concat!(
        r#"{"code":19,"extFields":{"suggestWhichBrokerId":"0","minOffset":"0","maxOffset":"17","#,
        r#""nextBeginOffset":"17"},"flag":1,"language":"JAVA","opaque":43,"remark":"OFFSET_OVERFLOW_ONE","#,
        r#""serializeTypeCurrentRPC":"JSON","version":409}"#
    );
    let command = decode(&frame(SerializeType::Json, header.as_bytes(), b""));
    assert_eq!(command.response_code(), ResponseCode::PullNotFound);
    assert_eq!(command.remark.as_deref(), Some("OFFSET_OVERFLOW_ONE"));
    let pull: PullMessageResponseHeader = command.header().unwrap();
    assert_eq!(
        pull,
        PullMessageResponseHeader {
            suggest_which_broker_id: 0,
            next_begin_offset: 17,
            min_offset: 0,
            max_offset: 17
        }
    );

    // Re-encoded in both encodings, it decodes to the same command.
    for serialize_type in [SerializeType::Json, SerializeType::RocketMq] {
        let mut with_type = command.clone();
        with_type.serialize_type = serialize_type;
        let mut wire = BytesMut::new();
        with_type.encode(&mut wire);
        assert_eq!(decode(&wire), with_type);
    }
}

#[test]
fn ali_ons_header_with_raw_json_values() {
    // ali-ons: no serializeTypeCurrentRPC, numbers and booleans as JSON values (docs/protocol.md §2.2).
    let header = concat!(
        r#"{"code":310,"language":"JAVA","opaque":5,"flag":0,"version":121,"remark":null,"#,
        r#""extFields":{"a":"pg","b":"TopicTest","c":"TBW102","d":4,"e":0,"f":0,"g":1700000000000,"h":0,"#,
        r#""i":"TAGS\u0001null\u0002","j":0,"k":false}}"#
    );
    let command = decode(&frame(SerializeType::Json, header.as_bytes(), b"body"));
    assert_eq!(command.request_code(), RequestCode::SendMessageV2);
    assert_eq!(command.version, 121);
    let send = ringmq_protocol::header::SendMessageRequestHeader::from_command(&command).unwrap();
    assert_eq!(send.topic, "TopicTest");
    assert_eq!(send.default_topic_queue_nums, 4);
    assert_eq!(send.born_timestamp_ms, 1_700_000_000_000);
    assert_eq!(send.unit_mode, Some(false));
    assert_eq!(send.properties, Some("TAGS\u{1}null\u{2}"));
    assert_eq!(&command.body[..], b"body");
}

#[test]
fn rust_client_header_with_nulls_and_rust_language() {
    let header = concat!(
        r#"{"code":34,"language":"RUST","version":474,"opaque":9,"flag":0,"remark":null,"extFields":null,"#,
        r#""serializeTypeCurrentRPC":"JSON"}"#
    );
    let command = decode(&frame(SerializeType::Json, header.as_bytes(), b"{}"));
    assert_eq!(command.request_code(), RequestCode::HeartBeat);
    assert_eq!(command.language, LanguageCode::Rust);
    assert!(command.ext.is_empty());
}

#[test]
fn unknown_request_code_is_preserved() {
    let header = r#"{"code":4242,"flag":0,"language":"JAVA","opaque":1,"serializeTypeCurrentRPC":"JSON","version":409}"#;
    let command = decode(&frame(SerializeType::Json, header.as_bytes(), b""));
    assert_eq!(command.request_code(), RequestCode::Unknown(4242));
    let mut wire = BytesMut::new();
    encode_frame(
        &CommandHead::response_to(&command, ResponseCode::RequestCodeNotSupported)
            .with_remark(" request type 4242 not supported"),
        &(),
        &[],
        &mut wire,
    );
    let response = decode(&wire);
    assert_eq!(
        response.response_code(),
        ResponseCode::RequestCodeNotSupported
    );
    assert_eq!(response.opaque, 1);
    assert_eq!(
        response.remark.as_deref(),
        Some(" request type 4242 not supported")
    );
}
