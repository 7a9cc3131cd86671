//! One PULL_MESSAGE exchange (docs/protocol.md §3.5): the request a consumer sends and what each
//! answer means for its next pull.
//!
//! The broker answers every pull with the offset to pull from next (`nextBeginOffset`); only
//! SUCCESS carries messages. The status table, as the consumers act on it:
//!
//! | Code | Meaning | Next pull |
//! |---|---|---|
//! | SUCCESS | messages found | `nextBeginOffset` (past the last entry scanned) |
//! | PULL_NOT_FOUND | nothing new (after the long poll) | `nextBeginOffset` (normally unchanged) |
//! | PULL_RETRY_IMMEDIATELY | entries scanned, none matched the filter | `nextBeginOffset`, at once |
//! | PULL_OFFSET_MOVED | the offset is outside the queue (too small, too large, queue gone) | `nextBeginOffset`, logged |
//!
//! Anything else is the broker refusing the pull ([`ClientError::Broker`]).

use std::time::Duration;

use ringmq_protocol::header::{PullMessageRequestHeader, PullMessageResponseHeader, pull_sys_flag};
use ringmq_protocol::{Command, RequestCode, ResponseCode};

use crate::error::{ClientError, Result};
use crate::instance::IoContext;
use crate::message::{MessageDecodeError, MessageQueue, ReceivedMessage};

/// What to pull.
#[derive(Debug, Clone)]
pub(crate) struct PullRequest<'a> {
    pub group: &'a str,
    pub queue: &'a MessageQueue,
    /// Offset to read from.
    pub offset: i64,
    /// Most messages wanted.
    pub max_messages: u32,
    /// Group progress to store at the broker with this pull (FLAG_COMMIT_OFFSET).
    pub commit_offset: Option<i64>,
    /// How long the broker may hold the pull while nothing is there (FLAG_SUSPEND); `None` or
    /// zero answers at once.
    pub suspend: Option<Duration>,
    /// Tag expression, carried with the pull (FLAG_SUBSCRIPTION) so the broker never depends on
    /// a heartbeat having reached it first.
    pub expression: &'a str,
    pub sub_version: i64,
}

impl PullRequest<'_> {
    fn header(&self) -> PullMessageRequestHeader<'_> {
        let suspend_ms = self.suspend.map_or(0, |suspend| {
            suspend.as_millis().min(i64::MAX as u128) as i64
        });
        PullMessageRequestHeader {
            consumer_group: self.group,
            topic: &self.queue.topic,
            queue_id: self.queue.queue_id,
            queue_offset: self.offset,
            max_msg_nums: self.max_messages.clamp(1, i32::MAX as u32) as i32,
            sys_flag: pull_sys_flag::build(self.commit_offset.is_some(), suspend_ms > 0, true),
            commit_offset: self.commit_offset.unwrap_or(0),
            suspend_timeout_ms: suspend_ms,
            subscription: Some(self.expression),
            sub_version: self.sub_version,
            expression_type: Some("TAG"),
            max_msg_bytes: None,
        }
    }
}

/// What a pull found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PullStatus {
    /// SUCCESS: these messages (possibly none after client-side filtering).
    Found(Vec<ReceivedMessage>),
    /// PULL_NOT_FOUND: nothing new.
    NoNewMessage,
    /// PULL_RETRY_IMMEDIATELY: nothing matched; pull again at once from `next_begin_offset`.
    NoMatchedMessage,
    /// PULL_OFFSET_MOVED: the requested offset is not in the queue; continue at
    /// `next_begin_offset`.
    OffsetMoved,
}

/// A decoded pull answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PullResult {
    pub status: PullStatus,
    /// The broker id the broker wants the next pull of this queue sent to
    /// (`suggestWhichBrokerId`: a slave while the consumer lags far behind, else the master).
    pub suggested_broker_id: i64,
    pub next_begin_offset: i64,
    pub min_offset: i64,
    pub max_offset: i64,
}

/// Sends one pull to `addr`. The answer may take up to the suspend time, so the request's
/// timeout is the suspend time plus the client's request timeout.
pub(crate) async fn pull(
    ctx: &IoContext,
    addr: &str,
    request: &PullRequest<'_>,
) -> Result<PullResult> {
    let timeout = request.suspend.unwrap_or_default() + ctx.timeout();
    let answer = ctx
        .pool
        .request(
            addr,
            RequestCode::PullMessage,
            &request.header(),
            &[],
            timeout,
        )
        .await?;
    decode(addr, &answer)
}

/// Reads a PULL_MESSAGE answer (see the module table).
pub(crate) fn decode(addr: &str, answer: &Command) -> Result<PullResult> {
    let code = answer.response_code();
    let status_code = matches!(
        code,
        ResponseCode::Success
            | ResponseCode::PullNotFound
            | ResponseCode::PullRetryImmediately
            | ResponseCode::PullOffsetMoved
    );
    if !status_code {
        return Err(ClientError::broker(
            addr,
            RequestCode::PullMessage,
            code,
            answer.remark.as_deref(),
        ));
    }
    let header: PullMessageResponseHeader = answer
        .header()
        .map_err(|error| ClientError::bad_field(addr, RequestCode::PullMessage, &error))?;
    let status = match code {
        ResponseCode::Success => PullStatus::Found(
            ReceivedMessage::decode_all(&answer.body).map_err(|error| match error {
                MessageDecodeError::Record(error) => {
                    ClientError::bad_record(addr, RequestCode::PullMessage, &error)
                }
                other => {
                    ClientError::bad_response(addr, RequestCode::PullMessage, other.to_string())
                }
            })?,
        ),
        ResponseCode::PullNotFound => PullStatus::NoNewMessage,
        ResponseCode::PullRetryImmediately => PullStatus::NoMatchedMessage,
        _ => PullStatus::OffsetMoved,
    };
    Ok(PullResult {
        status,
        suggested_broker_id: header.suggest_which_broker_id,
        next_begin_offset: header.next_begin_offset,
        min_offset: header.min_offset,
        max_offset: header.max_offset,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use bytes::{Bytes, BytesMut};
    use ringmq_protocol::message::{MessageMagic, PropertiesWriter, StoredRecord};
    use ringmq_protocol::{
        CommandHead, EncodeExt, ExtFields, FrameCodec, SerializeType, encode_frame,
    };

    fn answer(
        code: ResponseCode,
        header: Option<PullMessageResponseHeader>,
        body: &[u8],
    ) -> Command {
        let request = Command::request(RequestCode::PullMessage, 9);
        let mut ext = ExtFields::new();
        if let Some(header) = header {
            header.encode_ext(&mut ext);
        }
        let mut wire = BytesMut::new();
        let head = CommandHead::response_to(&request, code).with_remark("r");
        let head = CommandHead {
            serialize_type: SerializeType::Json,
            ..head
        };
        encode_frame(&head, &ext, body, &mut wire);
        FrameCodec::default().decode(&mut wire).unwrap().unwrap()
    }

    fn offsets(next: i64) -> Option<PullMessageResponseHeader> {
        let header = PullMessageResponseHeader {
            suggest_which_broker_id: 0,
            next_begin_offset: next,
            min_offset: 0,
            max_offset: 10,
        };
        (next >= 0).then_some(header)
    }

    fn record(queue_offset: i64, body: &[u8]) -> Vec<u8> {
        let mut properties = String::new();
        PropertiesWriter::new(&mut properties).put("TAGS", "a");
        let record = StoredRecord {
            magic: MessageMagic::V1,
            body_crc: 0,
            queue_id: 1,
            flag: 0,
            queue_offset,
            physical_offset: 100 + queue_offset,
            sys_flag: 0,
            born_timestamp_ms: 1,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_timestamp_ms: 2,
            store_host: "127.0.0.1:2".parse().unwrap(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body,
            topic: "t",
            properties: &properties,
        };
        let mut out = Vec::new();
        record.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn every_pull_status_maps_to_its_next_offset() {
        let mut body = record(5, b"x");
        body.extend(record(6, b"y"));
        let found = decode("b:1", &answer(ResponseCode::Success, offsets(7), &body)).unwrap();
        assert_eq!(found.next_begin_offset, 7);
        let PullStatus::Found(messages) = found.status else {
            panic!("expected messages");
        };
        assert_eq!(
            messages.iter().map(|m| m.queue_offset).collect::<Vec<_>>(),
            [5, 6]
        );
        assert_eq!(messages[1].body, Bytes::from_static(b"y"));

        let cases = [
            (ResponseCode::PullNotFound, PullStatus::NoNewMessage),
            (
                ResponseCode::PullRetryImmediately,
                PullStatus::NoMatchedMessage,
            ),
            (ResponseCode::PullOffsetMoved, PullStatus::OffsetMoved),
        ];
        for (code, status) in cases {
            let result = decode("b:1", &answer(code, offsets(3), &[])).unwrap();
            assert_eq!(result.status, status, "{code:?}");
            assert_eq!(result.next_begin_offset, 3);
            assert_eq!(result.max_offset, 10);
        }
    }

    #[test]
    fn refusals_and_bad_answers_are_typed_errors() {
        let refused = decode(
            "b:1",
            &answer(ResponseCode::SubscriptionNotExist, None, &[]),
        )
        .unwrap_err();
        assert_eq!(
            refused.response_code(),
            Some(ResponseCode::SubscriptionNotExist)
        );
        let missing_header = decode("b:1", &answer(ResponseCode::PullNotFound, None, &[]));
        assert!(matches!(
            missing_header,
            Err(ClientError::BadResponse { .. })
        ));
        let garbage = decode(
            "b:1",
            &answer(ResponseCode::Success, offsets(1), b"not a record"),
        );
        assert!(matches!(garbage, Err(ClientError::BadResponse { .. })));
    }

    #[test]
    fn request_flags_follow_the_options() {
        let queue = MessageQueue {
            broker_name: "b".into(),
            queue_id: 2,
            topic: "t".into(),
        };
        let mut request = PullRequest {
            group: "g",
            queue: &queue,
            offset: 4,
            max_messages: 32,
            commit_offset: Some(3),
            suspend: Some(Duration::from_secs(15)),
            expression: "a || b",
            sub_version: 9,
        };
        let header = request.header();
        assert!(header.has_commit_offset() && header.is_suspend() && header.has_subscription());
        assert_eq!(header.suspend_timeout_ms, 15_000);
        assert_eq!(
            (header.queue_id, header.queue_offset, header.commit_offset),
            (2, 4, 3)
        );
        request.commit_offset = None;
        request.suspend = None;
        let header = request.header();
        assert!(!header.has_commit_offset() && !header.is_suspend());
    }
}
