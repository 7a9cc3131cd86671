//! The benchmark's requests on the wire, built with `ringmq-protocol`.
//!
//! Sends are the hot path, so each connection encodes one complete SEND frame per queue once
//! ([`SendTemplate`]) and, per request, copies it into the outgoing buffer and patches the few
//! bytes that change in place: the `opaque`, the 13 ASCII digits of `bornTimestamp` (13 digits from
//! 2001 to 2286, so the length never changes) and, in e2e, the send time at the start of each body.
//! Nothing is formatted or allocated per message. With JSON headers (`--headers json`, as the Java
//! client sends them) the opaque is decimal text whose width changes, so each request's header is
//! encoded anew, straight into the outgoing buffer (still no allocation); the body is copied as it
//! is. Pulls differ in their offset every time and carry
//! up to 32 messages each, so they are encoded normally into the reused outgoing buffer.

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use ringmq_protocol::frame::{HEADER_MARKER_BYTES, LENGTH_PREFIX_BYTES};
use ringmq_protocol::header::{PullMessageRequestHeader, SendMessageRequestHeader, pull_sys_flag};
use ringmq_protocol::message::properties::keys;
use ringmq_protocol::message::{BatchMessage, PropertiesWriter};
use ringmq_protocol::{CommandHead, RequestCode, SerializeType, encode_frame, encode_frame_head};

/// Producer group of every send.
pub const PRODUCER_GROUP: &str = "ringmq-bench";
/// Consumer group of every pull.
pub const CONSUMER_GROUP: &str = "ringmq-bench-consumer";
/// Auto-creation template topic.
pub const DEFAULT_TOPIC: &str = ringmq_client::route::AUTO_CREATE_TOPIC;
/// The tag every message carries.
pub const TAG: &str = "bench";
/// Messages per pull (what Java's push consumer asks for).
pub const PULL_BATCH: i32 = 32;
/// How long the broker may hold a pull that finds nothing (long polling).
pub const PULL_SUSPEND_MS: i64 = 1000;

/// Offset of `opaque` in a frame with a binary header: length prefix, marker, code (2), language
/// (1), version (2).
const OPAQUE_AT: usize = LENGTH_PREFIX_BYTES + HEADER_MARKER_BYTES + 5;
/// Placeholder born timestamp: 13 digits, like every millisecond clock reading until 2286.
const BORN_PLACEHOLDER_MS: i64 = 1_000_000_000_000;
const BORN_DIGITS: usize = 13;

/// The properties string of every message: `TAGS=bench`, built the way Java builds it (no trailing
/// separator; brokers accept either form).
pub fn message_properties() -> String {
    let mut properties = String::new();
    PropertiesWriter::new(&mut properties).put(keys::TAGS, TAG);
    properties
}

/// One pre-encoded send request for one queue: SEND_MESSAGE_V2 for a single message,
/// SEND_BATCH_MESSAGE with `batch=true` for several, V2 one-letter keys.
#[derive(Debug, Clone)]
pub struct SendTemplate {
    frame: Vec<u8>,
    born_at: usize,
    /// Where each message's body starts within the frame (e2e timestamps go there).
    body_at: Vec<usize>,
    /// `Some` with JSON headers: what each request is encoded from.
    json: Option<JsonSend>,
}

/// The parts of a JSON-header send that are encoded per request.
#[derive(Debug, Clone)]
struct JsonSend {
    code: RequestCode,
    topic: String,
    queue_id: i32,
    queues: i32,
    batch: bool,
    properties: Option<String>,
    /// The request body (one message's body, or the encoded batch).
    body: Vec<u8>,
    /// Where each message's body starts within `body`.
    body_offsets: Vec<usize>,
}

/// What a send template is built from.
#[derive(Debug, Clone, Copy)]
pub struct SendSpec<'a> {
    pub topic: &'a str,
    pub queue_id: i32,
    /// `defaultTopicQueueNums`.
    pub queues: i32,
    /// Body bytes per message.
    pub size: usize,
    /// Messages per request.
    pub batch: usize,
    /// Header encoding.
    pub serialize_type: SerializeType,
}

impl SendTemplate {
    /// Encodes the request once.
    pub fn new(spec: &SendSpec<'_>) -> Result<Self> {
        let properties = message_properties();
        // A recognisable body: printable, and not all one byte so compression tricks do not flatter.
        let body: Vec<u8> = (0..spec.size).map(|i| b'a' + (i % 26) as u8).collect();
        let batch = spec.batch > 1;
        let mut header = SendMessageRequestHeader {
            producer_group: PRODUCER_GROUP,
            topic: spec.topic,
            default_topic: DEFAULT_TOPIC,
            default_topic_queue_nums: spec.queues,
            queue_id: spec.queue_id,
            sys_flag: 0,
            born_timestamp_ms: BORN_PLACEHOLDER_MS,
            flag: 0,
            properties: None,
            reconsume_times: Some(0),
            unit_mode: Some(false),
            max_reconsume_times: None,
            batch: Some(batch),
            broker_name: None,
        };
        let (code, request_body, body_offsets) = if batch {
            let message = BatchMessage {
                flag: 0,
                body: &body,
                properties: &properties,
            };
            let mut encoded = Vec::with_capacity(message.encoded_len() * spec.batch);
            let mut offsets = Vec::with_capacity(spec.batch);
            for _ in 0..spec.batch {
                // TOTALSIZE, MAGICCODE, BODYCRC, FLAG, BODY length precede the body.
                offsets.push(encoded.len() + 20);
                message
                    .encode(&mut encoded)
                    .context("encoding a batch entry")?;
            }
            (RequestCode::SendBatchMessage, encoded, offsets)
        } else {
            header.properties = Some(&properties);
            (RequestCode::SendMessageV2, body.clone(), vec![0])
        };
        let json = (spec.serialize_type == SerializeType::Json).then(|| JsonSend {
            code,
            topic: spec.topic.to_owned(),
            queue_id: spec.queue_id,
            queues: spec.queues,
            batch,
            properties: header.properties.map(str::to_owned),
            body: request_body.clone(),
            body_offsets: body_offsets.clone(),
        });
        let head = CommandHead::request(code, 0, SerializeType::RocketMq);
        let mut frame = BytesMut::new();
        encode_frame(&head, &header.v2(), &request_body, &mut frame);
        let frame = frame.to_vec();
        let body_start = frame.len() - request_body.len();

        // The `g` (bornTimestamp) entry: key length 1, "g", value length 13, the digits.
        let mut needle = vec![0, 1, b'g', 0, 0, 0, BORN_DIGITS as u8];
        needle.extend_from_slice(BORN_PLACEHOLDER_MS.to_string().as_bytes());
        let Some(entry) = frame[..body_start]
            .windows(needle.len())
            .position(|window| window == needle)
        else {
            bail!("bornTimestamp not found in the encoded send header");
        };
        Ok(Self {
            born_at: entry + needle.len() - BORN_DIGITS,
            body_at: body_offsets.iter().map(|at| body_start + at).collect(),
            frame,
            json,
        })
    }

    /// Bytes of one request.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Whether the template is empty (never: a frame has a header).
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }

    /// Messages per request.
    pub fn messages(&self) -> usize {
        self.body_at.len()
    }

    /// Appends the request to `out` under `opaque`, born at `born_ms`, with `stamp_ns` written
    /// big-endian into the first 8 bytes of every body when given (e2e; bodies are ≥ 8 bytes).
    pub fn append_to(&self, out: &mut BytesMut, opaque: i32, born_ms: i64, stamp_ns: Option<u64>) {
        let start = out.len();
        match &self.json {
            None => {
                out.extend_from_slice(&self.frame);
                let frame = &mut out[start..];
                frame[OPAQUE_AT..OPAQUE_AT + 4].copy_from_slice(&opaque.to_be_bytes());
                write_digits(
                    &mut frame[self.born_at..self.born_at + BORN_DIGITS],
                    born_ms,
                );
                if let Some(stamp) = stamp_ns {
                    for &at in &self.body_at {
                        frame[at..at + 8].copy_from_slice(&stamp.to_be_bytes());
                    }
                }
            }
            Some(json) => {
                let header = SendMessageRequestHeader {
                    producer_group: PRODUCER_GROUP,
                    topic: &json.topic,
                    default_topic: DEFAULT_TOPIC,
                    default_topic_queue_nums: json.queues,
                    queue_id: json.queue_id,
                    sys_flag: 0,
                    born_timestamp_ms: born_ms,
                    flag: 0,
                    properties: json.properties.as_deref(),
                    reconsume_times: Some(0),
                    unit_mode: Some(false),
                    max_reconsume_times: None,
                    batch: Some(json.batch),
                    broker_name: None,
                };
                let head = CommandHead::request(json.code, opaque, SerializeType::Json);
                encode_frame(&head, &header.v2(), &json.body, out);
                if let Some(stamp) = stamp_ns {
                    let body_start = out.len() - json.body.len();
                    for &offset in &json.body_offsets {
                        let at = body_start + offset;
                        out[at..at + 8].copy_from_slice(&stamp.to_be_bytes());
                    }
                }
            }
        }
    }
}

/// Writes `value` as exactly `out.len()` decimal digits; a value of another width (a clock before
/// 2001 or after 2286) leaves the placeholder, which only makes `bornTimestamp` wrong.
fn write_digits(out: &mut [u8], value: i64) {
    let Ok(mut value) = u64::try_from(value) else {
        return;
    };
    let width = out.len() as u32;
    if value < 10u64.pow(width - 1) || value >= 10u64.pow(width) {
        return;
    }
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// One PULL_MESSAGE request.
#[derive(Debug, Clone, Copy)]
pub struct PullSpec<'a> {
    pub topic: &'a str,
    pub queue_id: i32,
    pub offset: i64,
}

/// Appends a PULL_MESSAGE request: subscription `*` carried in the request (no heartbeat needed),
/// long polling allowed, no offset commit.
pub fn append_pull(out: &mut BytesMut, opaque: i32, pull: &PullSpec<'_>) {
    let header = PullMessageRequestHeader {
        consumer_group: CONSUMER_GROUP,
        topic: pull.topic,
        queue_id: pull.queue_id,
        queue_offset: pull.offset,
        max_msg_nums: PULL_BATCH,
        sys_flag: pull_sys_flag::build(false, true, true),
        commit_offset: 0,
        suspend_timeout_ms: PULL_SUSPEND_MS,
        subscription: Some("*"),
        sub_version: 0,
        expression_type: Some("TAG"),
        max_msg_bytes: None,
    };
    let head = CommandHead::request(RequestCode::PullMessage, opaque, SerializeType::RocketMq);
    encode_frame_head(&head, &header, 0, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_protocol::message::{BatchIter, Properties};
    use ringmq_protocol::{Command, header::PullMessageRequestHeader};

    fn decode(bytes: &[u8]) -> Command {
        let mut buf = BytesMut::from(bytes);
        let command = ringmq_protocol::FrameCodec::default()
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty(), "one frame");
        command
    }

    fn spec(batch: usize) -> SendSpec<'static> {
        SendSpec {
            topic: "BenchTopic",
            queue_id: 5,
            queues: 8,
            size: 16,
            batch,
            serialize_type: SerializeType::RocketMq,
        }
    }

    #[test]
    fn single_send_is_a_v2_request_with_patched_fields() {
        let template = SendTemplate::new(&spec(1)).unwrap();
        let mut out = BytesMut::new();
        template.append_to(&mut out, 77, 1_712_345_678_901, Some(0x0102_0304_0506_0708));
        template.append_to(&mut out, 78, 1_712_345_678_902, None);
        assert_eq!(out.len(), 2 * template.len());

        let first = decode(&out[..template.len()]);
        assert_eq!(first.request_code(), RequestCode::SendMessageV2);
        assert_eq!(first.serialize_type, SerializeType::RocketMq);
        assert_eq!(first.opaque, 77);
        let header = SendMessageRequestHeader::from_command(&first).unwrap();
        assert_eq!(header.producer_group, PRODUCER_GROUP);
        assert_eq!(header.topic, "BenchTopic");
        assert_eq!(header.default_topic, "TBW102");
        assert_eq!(header.default_topic_queue_nums, 8);
        assert_eq!(header.queue_id, 5);
        assert_eq!(header.born_timestamp_ms, 1_712_345_678_901);
        assert!(!header.is_batch());
        let properties = Properties::new(header.properties.unwrap());
        assert_eq!(properties.get(keys::TAGS), Some("bench"));
        assert_eq!(first.body.len(), 16);
        assert_eq!(&first.body[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);

        let second = decode(&out[template.len()..]);
        assert_eq!(second.opaque, 78);
        let header = SendMessageRequestHeader::from_command(&second).unwrap();
        assert_eq!(header.born_timestamp_ms, 1_712_345_678_902);
        assert_eq!(&second.body[..8], b"abcdefgh", "no stamp: template body");
    }

    #[test]
    fn json_sends_carry_each_opaque_and_born_time() {
        for batch in [1, 3] {
            let template = SendTemplate::new(&SendSpec {
                serialize_type: SerializeType::Json,
                ..spec(batch)
            })
            .unwrap();
            let mut out = BytesMut::new();
            template.append_to(&mut out, 7, 1_712_345_678_901, Some(42));
            let first_len = out.len();
            template.append_to(&mut out, 1_234_567, 1_712_345_678_902, None);

            let first = decode(&out[..first_len]);
            assert_eq!(first.serialize_type, SerializeType::Json);
            assert_eq!(first.opaque, 7);
            let header = SendMessageRequestHeader::from_command(&first).unwrap();
            assert_eq!(header.topic, "BenchTopic");
            assert_eq!(header.queue_id, 5);
            assert_eq!(header.born_timestamp_ms, 1_712_345_678_901);
            assert_eq!(header.is_batch(), batch > 1);
            let stamped = first
                .body
                .windows(8)
                .filter(|w| *w == 42_u64.to_be_bytes())
                .count();
            assert_eq!(stamped, batch, "every message stamped");

            let second = decode(&out[first_len..]);
            assert_eq!(second.opaque, 1_234_567);
            let header = SendMessageRequestHeader::from_command(&second).unwrap();
            assert_eq!(header.born_timestamp_ms, 1_712_345_678_902);
            assert!(!second.body.windows(8).any(|w| w == 42_u64.to_be_bytes()));
        }
    }

    #[test]
    fn batch_send_stamps_every_message() {
        let template = SendTemplate::new(&spec(3)).unwrap();
        assert_eq!(template.messages(), 3);
        let mut out = BytesMut::new();
        template.append_to(&mut out, 1, 1_712_345_678_901, Some(42));
        let command = decode(&out);
        assert_eq!(command.request_code(), RequestCode::SendBatchMessage);
        let header = SendMessageRequestHeader::from_command(&command).unwrap();
        assert!(header.is_batch());
        assert_eq!(header.properties, None);
        let messages: Vec<_> = BatchIter::new(&command.body)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(messages.len(), 3);
        for message in messages {
            assert_eq!(message.body.len(), 16);
            assert_eq!(
                u64::from_be_bytes(message.body[..8].try_into().unwrap()),
                42
            );
            assert_eq!(
                Properties::new(message.properties).get(keys::TAGS),
                Some("bench")
            );
        }
    }

    #[test]
    fn zero_size_bodies_encode() {
        let template = SendTemplate::new(&SendSpec { size: 0, ..spec(1) }).unwrap();
        let mut out = BytesMut::new();
        template.append_to(&mut out, 3, 1_712_345_678_901, None);
        assert!(decode(&out).body.is_empty());
    }

    #[test]
    fn out_of_width_timestamps_leave_the_placeholder() {
        let mut digits = *b"1000000000000";
        write_digits(&mut digits, 99);
        assert_eq!(&digits, b"1000000000000");
        write_digits(&mut digits, -5);
        assert_eq!(&digits, b"1000000000000");
        write_digits(&mut digits, 9_999_999_999_999);
        assert_eq!(&digits, b"9999999999999");
    }

    #[test]
    fn pull_request_carries_its_subscription() {
        let mut out = BytesMut::new();
        append_pull(
            &mut out,
            9,
            &PullSpec {
                topic: "T",
                queue_id: 2,
                offset: 1234,
            },
        );
        let command = decode(&out);
        assert_eq!(command.request_code(), RequestCode::PullMessage);
        let header: PullMessageRequestHeader<'_> = command.header().unwrap();
        assert_eq!(header.consumer_group, CONSUMER_GROUP);
        assert_eq!((header.queue_id, header.queue_offset), (2, 1234));
        assert_eq!(header.max_msg_nums, 32);
        assert!(header.is_suspend() && header.has_subscription() && !header.has_commit_offset());
        assert_eq!(header.subscription, Some("*"));
        assert_eq!(header.suspend_timeout_ms, 1000);
    }
}
