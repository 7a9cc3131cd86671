//! Messages as users build them ([`Message`]) and receive them ([`ReceivedMessage`]), and the
//! result of a send ([`SendResult`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;

use bytes::Bytes;
use ringmq_protocol::RecordError;
pub use ringmq_protocol::body::MessageQueue;
use ringmq_protocol::message::properties::keys;
use ringmq_protocol::message::{
    OffsetMessageId, PropertiesWriter, RecordIter, StoredRecord, sys_flag,
};

/// Largest body a received compressed message may inflate to (a bound against zip bombs).
const MAX_INFLATED_BODY_BYTES: u64 = 64 << 20;

/// A message to send.
///
/// ```
/// use ringmq_client::Message;
///
/// let message = Message::new("orders", "order 42 paid")
///     .with_tags("paid")
///     .with_keys(["order-42"])
///     .with_property("region", "eu");
/// assert_eq!(message.tags(), Some("paid"));
/// assert_eq!(message.keys(), ["order-42"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    topic: String,
    body: Bytes,
    tags: Option<String>,
    keys: Vec<String>,
    delay_level: u32,
    flag: i32,
    wait_store_ok: bool,
    properties: BTreeMap<String, String>,
}

impl Message {
    /// A message for `topic` carrying `body`.
    pub fn new(topic: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            body: body.into(),
            tags: None,
            keys: Vec::new(),
            delay_level: 0,
            flag: 0,
            wait_store_ok: true,
            properties: BTreeMap::new(),
        }
    }

    /// Sets the tag consumers filter on (one tag; `||` is a subscription operator, not a tag).
    #[must_use]
    pub fn with_tags(mut self, tags: impl Into<String>) -> Self {
        self.tags = Some(tags.into());
        self
    }

    /// Sets the business keys (indexed for query by key; sent space-separated).
    #[must_use]
    pub fn with_keys<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a user property. Names used by the protocol itself (`TAGS`, `KEYS`, `DELAY`, ...)
    /// are set through their own methods; the send refuses them here.
    #[must_use]
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// Sets the delay level (1..=18 on a default broker: 1s 5s 10s 30s 1m ... 2h); 0 = none.
    #[must_use]
    pub const fn with_delay_level(mut self, level: u32) -> Self {
        self.delay_level = level;
        self
    }

    /// Sets the user flag stored with the message.
    #[must_use]
    pub const fn with_flag(mut self, flag: i32) -> Self {
        self.flag = flag;
        self
    }

    /// Whether the broker should answer only once the message is stored per its flush and
    /// replication policy (default true; false sets `WAIT=false`).
    #[must_use]
    pub const fn with_wait_store_ok(mut self, wait: bool) -> Self {
        self.wait_store_ok = wait;
        self
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The body.
    pub const fn body(&self) -> &Bytes {
        &self.body
    }

    /// The tag, if set.
    pub fn tags(&self) -> Option<&str> {
        self.tags.as_deref()
    }

    /// The business keys.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The delay level; 0 = none.
    pub const fn delay_level(&self) -> u32 {
        self.delay_level
    }

    /// The user flag.
    pub const fn flag(&self) -> i32 {
        self.flag
    }

    /// Whether the broker answers only once the message is stored (see
    /// [`Message::with_wait_store_ok`]).
    pub const fn wait_store_ok(&self) -> bool {
        self.wait_store_ok
    }

    /// The user properties.
    pub const fn properties(&self) -> &BTreeMap<String, String> {
        &self.properties
    }

    /// A user property.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }

    /// Writes the wire properties string (tags, keys, delay, wait, user properties, and the
    /// client-generated unique id) into `out`, which is cleared first.
    pub(crate) fn write_properties(&self, unique_id: &str, out: &mut String) {
        out.clear();
        let mut writer = PropertiesWriter::new(out);
        if let Some(tags) = &self.tags {
            writer.put(keys::TAGS, tags);
        }
        if !self.keys.is_empty() {
            writer.put(keys::KEYS, &self.keys.join(" "));
        }
        if self.delay_level > 0 {
            let mut digits = itoa::Buffer::new();
            writer.put(keys::DELAY, digits.format(self.delay_level));
        }
        if !self.wait_store_ok {
            writer.put(keys::WAIT, "false");
        }
        if !unique_id.is_empty() {
            writer.put(keys::UNIQ_KEY, unique_id);
        }
        for (name, value) in &self.properties {
            writer.put(name, value);
        }
    }

    /// The first user property whose name the protocol reserves, if any.
    pub(crate) fn reserved_property(&self) -> Option<&str> {
        const RESERVED: [&str; 8] = [
            keys::TAGS,
            keys::KEYS,
            keys::DELAY,
            keys::WAIT,
            keys::UNIQ_KEY,
            keys::RETRY_TOPIC,
            keys::REAL_TOPIC,
            keys::TRAN_MSG,
        ];
        self.properties
            .keys()
            .map(String::as_str)
            .find(|name| RESERVED.contains(name))
    }
}

/// A received record that cannot be turned into a [`ReceivedMessage`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageDecodeError {
    /// The stored-record layout is broken.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A compressed body does not inflate.
    #[error("compressed body cannot be inflated: {0}")]
    Inflate(String),
}

/// How the broker stored a sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendStatus {
    /// Stored (and flushed / replicated as the broker's policy asks).
    SendOk,
    /// Stored, but the flush did not finish within the broker's timeout.
    FlushDiskTimeout,
    /// Stored, but no slave confirmed within the broker's timeout.
    FlushSlaveTimeout,
    /// Stored on the master; no slave is available.
    SlaveNotAvailable,
}

/// The outcome of a successful send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    /// Storage status.
    pub status: SendStatus,
    /// The client-generated unique id (`UNIQ_KEY`), what Java calls `msgId`.
    pub msg_id: String,
    /// The broker's offset message id (store host + commit-log offset), for VIEW_MESSAGE_BY_ID.
    /// For a batch, the ids of every message, comma-separated, as the broker sends them.
    pub offset_msg_id: String,
    /// The queue the message went to.
    pub queue: MessageQueue,
    /// Its offset in that queue (the first message's, for a batch).
    pub queue_offset: i64,
    /// The broker's region id, when it sent one.
    pub region_id: Option<String>,
}

/// A message as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Topic it was stored under (for retried messages: the original topic, from
    /// `RETRY_TOPIC`).
    pub topic: String,
    /// Queue id it was read from.
    pub queue_id: i32,
    /// Offset within that queue.
    pub queue_offset: i64,
    /// Commit-log offset on the broker.
    pub commit_log_offset: i64,
    /// The body (inflated if it was stored compressed).
    pub body: Bytes,
    /// The tag, if any.
    pub tags: Option<String>,
    /// The business keys.
    pub keys: Vec<String>,
    /// Every property, reserved ones included.
    pub properties: BTreeMap<String, String>,
    /// The broker's offset message id.
    pub offset_msg_id: String,
    /// The client-generated unique id, falling back to the offset id.
    pub msg_id: String,
    /// The producer's timestamp, ms.
    pub born_timestamp_ms: i64,
    /// The broker's timestamp, ms.
    pub store_timestamp_ms: i64,
    /// Producer address.
    pub born_host: SocketAddr,
    /// Broker address.
    pub store_host: SocketAddr,
    /// Deliveries before this one.
    pub reconsume_times: i32,
    /// The user flag.
    pub flag: i32,
}

impl ReceivedMessage {
    /// A property.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }

    /// Decodes one stored record; `frame` is the buffer `record` borrows from, so the body is
    /// shared rather than copied.
    pub fn from_record(
        record: &StoredRecord<'_>,
        frame: &Bytes,
    ) -> Result<Self, MessageDecodeError> {
        let body = if record.sys_flag & sys_flag::COMPRESSED == 0 {
            frame.slice_ref(record.body)
        } else {
            inflate(record.body)?
        };
        let properties: BTreeMap<String, String> = record
            .properties()
            .iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        let tags = properties.get(keys::TAGS).cloned();
        let keys_list = properties
            .get(keys::KEYS)
            .map(|keys| {
                keys.split(' ')
                    .filter(|key| !key.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let offset_msg_id = OffsetMessageId {
            store_host: record.store_host,
            commit_log_offset: record.physical_offset,
        }
        .to_string();
        let msg_id = properties
            .get(keys::UNIQ_KEY)
            .cloned()
            .unwrap_or_else(|| offset_msg_id.clone());
        let topic = properties
            .get(keys::RETRY_TOPIC)
            .cloned()
            .unwrap_or_else(|| record.topic.to_owned());
        Ok(Self {
            topic,
            queue_id: record.queue_id,
            queue_offset: record.queue_offset,
            commit_log_offset: record.physical_offset,
            body,
            tags,
            keys: keys_list,
            properties,
            offset_msg_id,
            msg_id,
            born_timestamp_ms: record.born_timestamp_ms,
            store_timestamp_ms: record.store_timestamp_ms,
            born_host: record.born_host,
            store_host: record.store_host,
            reconsume_times: record.reconsume_times,
            flag: record.flag,
        })
    }

    /// Decodes every record of a PULL body (or a VIEW_MESSAGE_BY_ID / QUERY_MESSAGE body).
    pub fn decode_all(body: &Bytes) -> Result<Vec<Self>, MessageDecodeError> {
        RecordIter::new(body)
            .map(|record| Self::from_record(&record?, body))
            .collect()
    }
}

#[cfg(test)]
impl ReceivedMessage {
    /// A message of topic `t`, queue 0, at `offset` (also its commit-log offset), with a body
    /// of `body_bytes` zeros: the fixture of the consumer and admin unit tests.
    pub(crate) fn for_test(offset: i64, body_bytes: usize) -> Self {
        Self {
            topic: "t".into(),
            queue_id: 0,
            queue_offset: offset,
            commit_log_offset: offset,
            body: Bytes::from(vec![0u8; body_bytes]),
            tags: None,
            keys: Vec::new(),
            properties: BTreeMap::new(),
            offset_msg_id: String::new(),
            msg_id: String::new(),
            born_timestamp_ms: 0,
            store_timestamp_ms: 0,
            born_host: SocketAddr::from(([127, 0, 0, 1], 1)),
            store_host: SocketAddr::from(([127, 0, 0, 1], 2)),
            reconsume_times: 0,
            flag: 0,
        }
    }
}

/// Inflates a zlib-compressed body, bounded by [`MAX_INFLATED_BODY_BYTES`].
fn inflate(compressed: &[u8]) -> Result<Bytes, MessageDecodeError> {
    // Capped: a small hostile body must not reserve a gigabyte that the `Bytes` then keeps.
    let capacity = compressed.len().saturating_mul(4).min(1 << 20);
    let mut out = Vec::with_capacity(capacity);
    flate2::read::ZlibDecoder::new(compressed)
        .take(MAX_INFLATED_BODY_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|error| MessageDecodeError::Inflate(error.to_string()))?;
    if out.len() as u64 > MAX_INFLATED_BODY_BYTES {
        return Err(MessageDecodeError::Inflate(format!(
            "inflates past {MAX_INFLATED_BODY_BYTES} bytes"
        )));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_protocol::message::{MessageMagic, Properties};

    #[test]
    fn properties_carry_everything_set() {
        let message = Message::new("t", "b")
            .with_tags("A")
            .with_keys(["k1", "k2"])
            .with_delay_level(3)
            .with_wait_store_ok(false)
            .with_property("user", "v");
        let mut out = String::new();
        message.write_properties("UNIQ1", &mut out);
        let properties = Properties::new(&out);
        assert_eq!(properties.get("TAGS"), Some("A"));
        assert_eq!(properties.get("KEYS"), Some("k1 k2"));
        assert_eq!(properties.get("DELAY"), Some("3"));
        assert_eq!(properties.get("WAIT"), Some("false"));
        assert_eq!(properties.get("UNIQ_KEY"), Some("UNIQ1"));
        assert_eq!(properties.get("user"), Some("v"));
        assert_eq!(message.reserved_property(), None);
        assert_eq!(
            Message::new("t", "b")
                .with_property("TAGS", "x")
                .reserved_property(),
            Some("TAGS")
        );
    }

    #[test]
    fn received_message_round_trips_a_record() {
        let mut properties = String::new();
        PropertiesWriter::new(&mut properties).put("TAGS", "A");
        PropertiesWriter::new(&mut properties).put("KEYS", "k1 k2");
        let record = StoredRecord {
            magic: MessageMagic::V1,
            body_crc: 0,
            queue_id: 3,
            flag: 0,
            queue_offset: 17,
            physical_offset: 4096,
            sys_flag: 0,
            born_timestamp_ms: 1,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_timestamp_ms: 2,
            store_host: "127.0.0.1:10911".parse().unwrap(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: b"hello",
            topic: "t",
            properties: &properties,
        };
        let mut encoded = Vec::new();
        record.encode(&mut encoded).unwrap();
        let messages = ReceivedMessage::decode_all(&Bytes::from(encoded)).unwrap();
        assert_eq!(messages.len(), 1);
        let message = &messages[0];
        assert_eq!(&message.body[..], b"hello");
        assert_eq!((message.queue_id, message.queue_offset), (3, 17));
        assert_eq!(message.tags.as_deref(), Some("A"));
        assert_eq!(message.keys, ["k1", "k2"]);
        assert_eq!(message.msg_id, message.offset_msg_id);
    }
}
