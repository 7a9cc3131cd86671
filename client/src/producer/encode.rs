//! Frames of SEND_MESSAGE_V2 / SEND_BATCH_MESSAGE, encoded straight into the connection's
//! output buffer, and the reading of their answers.
//!
//! Invariants: a message's body is copied once, from [`Message::body`] into the connection's
//! buffer; the properties buffer is borrowed only inside the synchronous encode callback of
//! [`Connection::request_with`]; an encode that fails leaves the output buffer as it found it
//! (no frame shorter than its length prefix ever reaches the connection).
//!
//! [`Connection::request_with`]: crate::remoting::Connection::request_with

use bytes::BytesMut;
use ringmq_common::now_ms;
use ringmq_protocol::header::{SendMessageRequestHeader, SendMessageResponseHeader};
use ringmq_protocol::message::BatchMessage;
use ringmq_protocol::message::batch::BATCH_ENTRY_FIXED_BYTES;
use ringmq_protocol::message::properties::MAX_PROPERTIES_BYTES;
use ringmq_protocol::{
    Command, CommandHead, RequestCode, ResponseCode, encode_frame, encode_frame_head,
};

use super::settings::ProducerSettings;
use super::state::ProducerState;
use crate::error::{ClientError, Result};
use crate::message::{Message, MessageQueue, SendResult, SendStatus};
use crate::route::{AUTO_CREATE_TOPIC, DEFAULT_TOPIC_QUEUE_NUMS};

/// One message and its id.
#[derive(Debug)]
pub(crate) struct Single {
    pub message: Message,
    pub unique_id: String,
}

/// What one send carries: one message or a batch, with the ids generated for it (kept across
/// retries, so a retried message keeps its `UNIQ_KEY`, as in Java).
#[derive(Debug)]
pub(crate) enum Payload {
    Single(Single),
    Batch {
        messages: Vec<Message>,
        /// Every message's id, `,`-joined: the batch's `msg_id` as Java reports it.
        unique_ids: String,
    },
}

impl Payload {
    pub fn topic(&self) -> &str {
        match self {
            Self::Single(single) => single.message.topic(),
            Self::Batch { messages, .. } => messages.first().map_or("", Message::topic),
        }
    }

    pub const fn code(&self) -> RequestCode {
        match self {
            Self::Single(_) => RequestCode::SendMessageV2,
            Self::Batch { .. } => RequestCode::SendBatchMessage,
        }
    }

    pub fn into_msg_id(self) -> String {
        match self {
            Self::Single(single) => single.unique_id,
            Self::Batch { unique_ids, .. } => unique_ids,
        }
    }

    /// Appends the request frame to `out`. Runs synchronously inside the connection's enqueue,
    /// so the properties buffer borrow ends before any `.await`.
    ///
    /// A batch is checked whole before anything is written (an entry's properties too long,
    /// lengths over `i32`), and should a later entry still fail, `out` is cut back to where it
    /// was: the connection never sees a frame shorter than its length prefix, and only this
    /// request fails.
    pub fn encode(
        &self,
        state: &ProducerState,
        queue_id: i32,
        head: &CommandHead<'_>,
        out: &mut BytesMut,
    ) -> Result<()> {
        let mut properties = state.properties.borrow_mut();
        match self {
            Self::Single(Single { message, unique_id }) => {
                message.write_properties(unique_id, &mut properties);
                let header = request_header(
                    state.settings(),
                    message,
                    queue_id,
                    Some(&properties),
                    false,
                );
                encode_frame(head, &header.v2(), message.body(), out);
                Ok(())
            }
            Self::Batch {
                messages,
                unique_ids,
            } => {
                // Two passes over the properties (they are cheap to write): the frame's length
                // prefix needs the body length before the body is written.
                let id_len = state.ids.id_len();
                let mut body_bytes: usize = 0;
                for (index, message) in messages.iter().enumerate() {
                    message.write_properties(batch_id(unique_ids, index, id_len), &mut properties);
                    if properties.len() > MAX_PROPERTIES_BYTES {
                        return Err(ClientError::InvalidArgument(format!(
                            "batch message {index}: properties take {} bytes; at most \
                             {MAX_PROPERTIES_BYTES} fit",
                            properties.len()
                        )));
                    }
                    body_bytes = body_bytes
                        .saturating_add(BATCH_ENTRY_FIXED_BYTES + message.body().len())
                        .saturating_add(properties.len());
                }
                if i32::try_from(body_bytes).is_err() {
                    return Err(ClientError::InvalidArgument(format!(
                        "batch body of {body_bytes} bytes does not fit a frame"
                    )));
                }
                let Some(first) = messages.first() else {
                    return Err(ClientError::InvalidArgument(
                        "a batch needs a message".into(),
                    ));
                };
                let start = out.len();
                let header = request_header(state.settings(), first, queue_id, None, true);
                encode_frame_head(head, &header.v2(), body_bytes, out);
                for (index, message) in messages.iter().enumerate() {
                    message.write_properties(batch_id(unique_ids, index, id_len), &mut properties);
                    let entry = BatchMessage {
                        flag: message.flag(),
                        body: message.body(),
                        properties: &properties,
                    };
                    if let Err(error) = entry.encode(out) {
                        out.truncate(start);
                        return Err(ClientError::InvalidArgument(format!(
                            "batch message {index} cannot be encoded: {error}"
                        )));
                    }
                }
                debug_assert_eq!(out.len() - start, frame_len(out, start));
                Ok(())
            }
        }
    }
}

/// The length a frame starting at `start` of `out` declares, plus its 4-byte prefix.
fn frame_len(out: &BytesMut, start: usize) -> usize {
    out.get(start..start + 4)
        .and_then(|prefix| <[u8; 4]>::try_from(prefix).ok())
        .map_or(0, |prefix| u32::from_be_bytes(prefix) as usize + 4)
}

/// The `index`th id of a `,`-joined list of ids of `id_len` characters.
pub(crate) fn batch_id(unique_ids: &str, index: usize, id_len: usize) -> &str {
    let start = index * (id_len + 1);
    unique_ids.get(start..start + id_len).unwrap_or_default()
}

/// The send header Java's producer writes: auto-creation template TBW102 with 4 queues,
/// reconsume times 0, not unit mode.
pub(crate) fn request_header<'a>(
    settings: &'a ProducerSettings,
    message: &'a Message,
    queue_id: i32,
    properties: Option<&'a str>,
    batch: bool,
) -> SendMessageRequestHeader<'a> {
    SendMessageRequestHeader {
        producer_group: &settings.group,
        topic: message.topic(),
        default_topic: AUTO_CREATE_TOPIC,
        default_topic_queue_nums: DEFAULT_TOPIC_QUEUE_NUMS,
        queue_id,
        sys_flag: 0,
        born_timestamp_ms: now_ms(),
        flag: message.flag(),
        properties,
        reconsume_times: Some(0),
        unit_mode: Some(false),
        max_reconsume_times: None,
        batch: Some(batch),
        broker_name: None,
    }
}

/// A send's answer: stored (with how) or the broker's refusal.
pub(crate) fn read_answer(
    answer: &Command,
    addr: &str,
    request: RequestCode,
    queue: &MessageQueue,
) -> Result<SendResult> {
    let status = match answer.response_code() {
        ResponseCode::Success => SendStatus::SendOk,
        ResponseCode::FlushDiskTimeout => SendStatus::FlushDiskTimeout,
        ResponseCode::FlushSlaveTimeout => SendStatus::FlushSlaveTimeout,
        ResponseCode::SlaveNotAvailable => SendStatus::SlaveNotAvailable,
        refused => {
            return Err(ClientError::broker(
                addr,
                request,
                refused,
                answer.remark.as_deref(),
            ));
        }
    };
    let header: SendMessageResponseHeader<'_> = answer
        .header()
        .map_err(|error| ClientError::bad_field(addr, request, &error))?;
    Ok(SendResult {
        status,
        msg_id: String::new(),
        offset_msg_id: header.msg_id.to_owned(),
        queue: MessageQueue {
            broker_name: queue.broker_name.clone(),
            queue_id: header.queue_id,
            topic: queue.topic.clone(),
        },
        queue_offset: header.queue_offset,
        region_id: header.msg_region.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::state::tests::state;
    use crate::producer::validate::{prepare, validate_batch};
    use ringmq_protocol::message::{BatchIter, Properties};
    use ringmq_protocol::{FrameCodec, SerializeType, header::SendKeys};

    fn decode(out: &BytesMut) -> Command {
        let mut buffer = out.clone();
        let command = FrameCodec::default().decode(&mut buffer).unwrap().unwrap();
        assert!(buffer.is_empty(), "exactly one frame");
        command
    }

    #[test]
    fn single_send_is_a_v2_frame_with_every_field() {
        let state = state();
        for serialize_type in [SerializeType::RocketMq, SerializeType::Json] {
            let message = Message::new("orders", "body!")
                .with_tags("paid")
                .with_keys(["k1", "k2"])
                .with_flag(7)
                .with_property("region", "eu");
            let payload = Payload::Single(prepare(&state, message).unwrap());
            let head = CommandHead::request(RequestCode::SendMessageV2, 42, serialize_type);
            let mut out = BytesMut::new();
            payload.encode(&state, 3, &head, &mut out).unwrap();
            let command = decode(&out);
            assert_eq!(command.request_code(), RequestCode::SendMessageV2);
            assert_eq!(command.serialize_type, serialize_type);
            assert_eq!(command.opaque, 42);
            assert!(command.ext.contains("a"), "one-letter V2 keys");
            let header =
                SendMessageRequestHeader::from_ext_with(&command.ext, SendKeys::V2).unwrap();
            assert_eq!(header.producer_group, "g");
            assert_eq!(header.topic, "orders");
            assert_eq!(header.default_topic, "TBW102");
            assert_eq!(header.default_topic_queue_nums, 4);
            assert_eq!(header.queue_id, 3);
            assert_eq!(header.flag, 7);
            assert!(!header.is_batch());
            assert!((header.born_timestamp_ms - now_ms()).abs() < 60_000);
            let properties = Properties::new(header.properties.unwrap());
            assert_eq!(properties.get("TAGS"), Some("paid"));
            assert_eq!(properties.get("KEYS"), Some("k1 k2"));
            assert_eq!(properties.get("region"), Some("eu"));
            let Payload::Single(Single { unique_id, .. }) = &payload else {
                panic!("single");
            };
            assert_eq!(properties.get("UNIQ_KEY"), Some(unique_id.as_str()));
            assert_eq!(&command.body[..], b"body!");
        }
    }

    #[test]
    fn batch_frame_carries_each_message_with_its_own_id() {
        let state = state();
        let messages = vec![
            Message::new("t", "one").with_tags("a"),
            Message::new("t", "two").with_flag(2),
        ];
        validate_batch(&messages, state.settings()).unwrap();
        let id_len = state.ids.id_len();
        let mut unique_ids = String::new();
        state.ids.append_id(&mut unique_ids);
        unique_ids.push(',');
        state.ids.append_id(&mut unique_ids);
        let payload = Payload::Batch {
            messages,
            unique_ids: unique_ids.clone(),
        };
        let head = CommandHead::request(RequestCode::SendBatchMessage, 1, SerializeType::RocketMq);
        let mut out = BytesMut::new();
        payload.encode(&state, 0, &head, &mut out).unwrap();
        let command = decode(&out);
        assert_eq!(command.request_code(), RequestCode::SendBatchMessage);
        let header = SendMessageRequestHeader::from_command(&command).unwrap();
        assert!(header.is_batch());
        assert_eq!(header.topic, "t");
        let entries: Vec<_> = BatchIter::new(&command.body)
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].body, b"one");
        assert_eq!(entries[1].flag, 2);
        for (index, entry) in entries.iter().enumerate() {
            assert_eq!(
                Properties::new(entry.properties).get("UNIQ_KEY"),
                Some(batch_id(&unique_ids, index, id_len))
            );
        }
        assert_eq!(payload.into_msg_id().split(',').count(), 2);
    }

    #[test]
    fn a_batch_that_cannot_be_encoded_writes_nothing() {
        let state = state();
        let huge = "v".repeat(MAX_PROPERTIES_BYTES);
        let payload = Payload::Batch {
            messages: vec![
                Message::new("t", "one"),
                Message::new("t", "two").with_property("big", huge),
            ],
            unique_ids: format!("{0},{0}", state.ids.next_id()),
        };
        let head = CommandHead::request(RequestCode::SendBatchMessage, 1, SerializeType::RocketMq);
        let mut out = BytesMut::from(&b"earlier frame"[..]);
        let error = payload.encode(&state, 0, &head, &mut out).unwrap_err();
        assert!(matches!(error, ClientError::InvalidArgument(_)), "{error}");
        assert_eq!(&out[..], b"earlier frame", "the output is left as it was");
    }

    #[test]
    fn answers_map_to_results_or_refusals() {
        let queue = MessageQueue {
            broker_name: "broker-a".into(),
            queue_id: 0,
            topic: "t".into(),
        };
        let request = Command::request(RequestCode::SendMessageV2, 5);
        let answer = |code: ResponseCode, header: Option<SendMessageResponseHeader<'_>>| {
            let mut head = CommandHead::response_to(&request, code);
            head.remark = Some("why");
            let mut out = BytesMut::new();
            match header {
                Some(header) => encode_frame(&head, &header, &[], &mut out),
                None => encode_frame(&head, &(), &[], &mut out),
            }
            decode(&out)
        };
        let header = SendMessageResponseHeader {
            msg_id: "0A00000100002A9F0000000000000000",
            queue_id: 2,
            queue_offset: 17,
            transaction_id: None,
            msg_region: Some("DefaultRegion"),
            trace_on: Some("true"),
        };
        for (code, status) in [
            (ResponseCode::Success, SendStatus::SendOk),
            (ResponseCode::FlushDiskTimeout, SendStatus::FlushDiskTimeout),
            (
                ResponseCode::FlushSlaveTimeout,
                SendStatus::FlushSlaveTimeout,
            ),
            (
                ResponseCode::SlaveNotAvailable,
                SendStatus::SlaveNotAvailable,
            ),
        ] {
            let result = read_answer(
                &answer(code, Some(header)),
                "b:1",
                RequestCode::SendMessageV2,
                &queue,
            )
            .unwrap();
            assert_eq!(result.status, status);
            assert_eq!(result.offset_msg_id, header.msg_id);
            assert_eq!((result.queue.queue_id, result.queue_offset), (2, 17));
            assert_eq!(result.queue.broker_name, "broker-a");
            assert_eq!(result.region_id.as_deref(), Some("DefaultRegion"));
        }
        let refused = read_answer(
            &answer(ResponseCode::MessageIllegal, None),
            "b:1",
            RequestCode::SendMessageV2,
            &queue,
        )
        .unwrap_err();
        assert_eq!(refused.response_code(), Some(ResponseCode::MessageIllegal));
        assert_eq!(refused.remark(), Some("why"));
        let undecodable = read_answer(
            &answer(ResponseCode::Success, None),
            "b:1",
            RequestCode::SendMessageV2,
            &queue,
        )
        .unwrap_err();
        assert!(
            matches!(undecodable, ClientError::BadResponse { .. }),
            "{undecodable}"
        );
    }
}
