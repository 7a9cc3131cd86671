//! Send headers (docs/protocol.md §3.4): SEND_MESSAGE (10) with long key names, SEND_MESSAGE_V2 (310)
//! and SEND_BATCH_MESSAGE (320) with one-letter names, and the shared response.
//!
//! The three requests carry the same fields, so there is one struct, [`SendMessageRequestHeader`],
//! read and written with either key set ([`SendKeys`]). The broker picks the key set from the
//! request code ([`SendMessageRequestHeader::from_command`]); whether a send is a batch is decided
//! by the `batch`/`m` flag, not by the code, as in Java.

use super::{FromExt, HeaderField, ext_header};
use crate::command::Command;
use crate::ext::{EncodeExt, ExtFields, ExtWriter};
use crate::{FieldError, RequestCode};

/// Which names the send header fields travel under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKeys {
    /// SEND_MESSAGE: `producerGroup`, `topic`, ...
    Long,
    /// SEND_MESSAGE_V2 and SEND_BATCH_MESSAGE: `a`, `b`, ...
    V2,
}

/// The wire names in field order; index 0 is the long name, index 1 the V2 letter.
const KEYS: [[&str; 2]; 14] = [
    ["producerGroup", "a"],
    ["topic", "b"],
    ["defaultTopic", "c"],
    ["defaultTopicQueueNums", "d"],
    ["queueId", "e"],
    ["sysFlag", "f"],
    ["bornTimestamp", "g"],
    ["flag", "h"],
    ["properties", "i"],
    ["reconsumeTimes", "j"],
    ["unitMode", "k"],
    ["maxReconsumeTimes", "l"],
    ["batch", "m"],
    ["brokerName", "n"],
];

/// The request header of all three send codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendMessageRequestHeader<'a> {
    /// `producerGroup` / `a`.
    pub producer_group: &'a str,
    /// `topic` / `b`.
    pub topic: &'a str,
    /// `defaultTopic` / `c`: template for auto-creation, normally `TBW102`.
    pub default_topic: &'a str,
    /// `defaultTopicQueueNums` / `d`: queue count for auto-created topics.
    pub default_topic_queue_nums: i32,
    /// `queueId` / `e`: negative lets the broker choose.
    pub queue_id: i32,
    /// `sysFlag` / `f`: message sys-flag bits set by the client.
    pub sys_flag: i32,
    /// `bornTimestamp` / `g`: client clock, ms.
    pub born_timestamp_ms: i64,
    /// `flag` / `h`: user flag stored with the message.
    pub flag: i32,
    /// `properties` / `i`: the properties string (batch-level properties for a batch).
    pub properties: Option<&'a str>,
    /// `reconsumeTimes` / `j`.
    pub reconsume_times: Option<i32>,
    /// `unitMode` / `k`.
    pub unit_mode: Option<bool>,
    /// `maxReconsumeTimes` / `l`.
    pub max_reconsume_times: Option<i32>,
    /// `batch` / `m`: the body is a batch of messages.
    pub batch: Option<bool>,
    /// `brokerName` / `n` (4.9.x+).
    pub broker_name: Option<&'a str>,
}

impl<'a> SendMessageRequestHeader<'a> {
    /// Reads the header under the given key set, in one pass over the entries (a later duplicate
    /// wins, as in Java's map).
    pub fn from_ext_with(ext: &'a ExtFields, keys: SendKeys) -> Result<Self, FieldError> {
        let names = key_set(keys);
        let mut raw: [Option<&'a str>; KEYS.len()] = [None; KEYS.len()];
        for (key, value) in ext.iter() {
            if let Some(index) = field_index(key, keys) {
                raw[index] = Some(value);
            }
        }
        let field = |index: usize| raw[index];
        Ok(Self {
            producer_group: HeaderField::decode(field(0), names[0])?,
            topic: HeaderField::decode(field(1), names[1])?,
            default_topic: HeaderField::decode(field(2), names[2])?,
            default_topic_queue_nums: HeaderField::decode(field(3), names[3])?,
            queue_id: HeaderField::decode(field(4), names[4])?,
            sys_flag: HeaderField::decode(field(5), names[5])?,
            born_timestamp_ms: HeaderField::decode(field(6), names[6])?,
            flag: HeaderField::decode(field(7), names[7])?,
            properties: HeaderField::decode(field(8), names[8])?,
            reconsume_times: HeaderField::decode(field(9), names[9])?,
            unit_mode: HeaderField::decode(field(10), names[10])?,
            max_reconsume_times: HeaderField::decode(field(11), names[11])?,
            batch: HeaderField::decode(field(12), names[12])?,
            broker_name: HeaderField::decode(field(13), names[13])?,
        })
    }

    /// Reads the header of a SEND_MESSAGE, SEND_MESSAGE_V2 or SEND_BATCH_MESSAGE command, choosing
    /// the key set from its code. Other codes are read with long names.
    pub fn from_command(command: &'a Command) -> Result<Self, FieldError> {
        let keys = match command.request_code() {
            RequestCode::SendMessageV2 | RequestCode::SendBatchMessage => SendKeys::V2,
            _ => SendKeys::Long,
        };
        Self::from_ext_with(&command.ext, keys)
    }

    /// Writes the header under the given key set.
    pub fn encode_with<W: ExtWriter>(&self, keys: SendKeys, writer: &mut W) {
        let names = key_set(keys);
        self.producer_group.encode(names[0], writer);
        self.topic.encode(names[1], writer);
        self.default_topic.encode(names[2], writer);
        self.default_topic_queue_nums.encode(names[3], writer);
        self.queue_id.encode(names[4], writer);
        self.sys_flag.encode(names[5], writer);
        self.born_timestamp_ms.encode(names[6], writer);
        self.flag.encode(names[7], writer);
        self.properties.encode(names[8], writer);
        self.reconsume_times.encode(names[9], writer);
        self.unit_mode.encode(names[10], writer);
        self.max_reconsume_times.encode(names[11], writer);
        self.batch.encode(names[12], writer);
        self.broker_name.encode(names[13], writer);
    }

    /// This header as a SEND_MESSAGE_V2 / SEND_BATCH_MESSAGE field set (one-letter names).
    pub const fn v2(&self) -> SendMessageRequestHeaderV2<'_, 'a> {
        SendMessageRequestHeaderV2(self)
    }

    /// Whether the body is a batch.
    pub fn is_batch(&self) -> bool {
        self.batch == Some(true)
    }
}

/// The field index of `key` in the given key set. V2 names are the letters `a`..`n`, so their
/// index is arithmetic; long names are matched.
fn field_index(key: &str, keys: SendKeys) -> Option<usize> {
    match keys {
        SendKeys::V2 => match key.as_bytes() {
            [letter @ b'a'..=b'n'] => Some(usize::from(letter - b'a')),
            _ => None,
        },
        SendKeys::Long => KEYS.iter().position(|pair| pair[0] == key),
    }
}

fn key_set(keys: SendKeys) -> [&'static str; 14] {
    let column = match keys {
        SendKeys::Long => 0,
        SendKeys::V2 => 1,
    };
    KEYS.map(|pair| pair[column])
}

/// Reads with long names (SEND_MESSAGE).
impl<'a> FromExt<'a> for SendMessageRequestHeader<'a> {
    fn from_ext(ext: &'a ExtFields) -> Result<Self, FieldError> {
        Self::from_ext_with(ext, SendKeys::Long)
    }
}

/// Writes with long names (SEND_MESSAGE).
impl EncodeExt for SendMessageRequestHeader<'_> {
    fn encode_ext<W: ExtWriter>(&self, writer: &mut W) {
        self.encode_with(SendKeys::Long, writer);
    }
}

/// A send header that encodes with the one-letter V2 names.
#[derive(Debug, Clone, Copy)]
pub struct SendMessageRequestHeaderV2<'h, 'a>(&'h SendMessageRequestHeader<'a>);

impl EncodeExt for SendMessageRequestHeaderV2<'_, '_> {
    fn encode_ext<W: ExtWriter>(&self, writer: &mut W) {
        self.0.encode_with(SendKeys::V2, writer);
    }
}

ext_header! {
    /// The response header of all three send codes. Java clients dereference `queueId` and
    /// `queueOffset` unguarded and need a non-empty ext map, so the broker always sends the
    /// region and trace switch too (docs/protocol.md §9.6).
    pub struct SendMessageResponseHeader<'a> {
        /// Offset message id; comma-joined ids for a batch.
        msg_id: &'a str = "msgId",
        queue_id: i32 = "queueId",
        /// Queue offset of the (first) message.
        queue_offset: i64 = "queueOffset",
        transaction_id: Option<&'a str> = "transactionId",
        msg_region: Option<&'a str> = "MSG_REGION",
        trace_on: Option<&'a str> = "TRACE_ON",
    }
}
