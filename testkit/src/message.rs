//! What a test sends and reads back: [`Message`] (a message to send, and the check that a stored
//! record is it), [`SendResult`] ([`parse_send`] checks a send response against the contract),
//! [`Record`] ([`decode_records`] checks every stored record it decodes), [`Pull`] and
//! [`PullResult`] ([`parse_pull`]), and a consumer's heartbeat ([`heartbeat_data`]).

use std::net::SocketAddr;

use ringmq_common::now_ms;
use ringmq_protocol::body::{
    ConsumeFromWhere, ConsumeType, ConsumerData, HeartbeatData, MessageModel, SubscriptionData,
    perm,
};
use ringmq_protocol::header::{
    PullMessageRequestHeader, PullMessageResponseHeader, SendMessageRequestHeader,
    SendMessageResponseHeader, pull_sys_flag,
};
use ringmq_protocol::message::{
    MessageMagic, OffsetMessageId, Properties, PropertiesWriter, RecordIter, properties::keys,
};
use ringmq_protocol::topic::{DLQ_PREFIX, RETRY_PREFIX};
use ringmq_protocol::{Command, EncodeExt, ExtFields, RequestCode, ResponseCode};

use crate::remoting::{DEFAULT_TOPIC, Outgoing};

/// Permission of a normal topic (read | write).
pub const PERM_RW: i32 = perm::READ | perm::WRITE;
/// Producer group of a [`Message`] unless set.
pub const PRODUCER_GROUP: &str = "testkit-producer";
/// Consumer group of a [`Pull`] unless set.
pub const PULL_GROUP: &str = "testkit-puller";

/// Fails the test unless `response` has `code`, naming `what` and the remark.
pub fn expect_code(response: &Command, code: ResponseCode, what: &str) {
    assert_eq!(
        response.response_code(),
        code,
        "{what}: expected {code}, got {} (remark {:?})",
        response.response_code(),
        response.remark
    );
}

/// Which send command carries a single message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendCode {
    /// SEND_MESSAGE_V2 (310), one-letter header names (Java, ali-ons).
    V2,
    /// SEND_MESSAGE (10), long header names (rocketmq-client-rust).
    Long,
}

/// A message to send, and what it should look like once stored.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub queue_id: i32,
    pub body: Vec<u8>,
    pub flag: i32,
    pub born_timestamp_ms: i64,
    pub properties: Vec<(String, String)>,
    pub producer_group: String,
    pub default_topic_queue_nums: i32,
    pub reconsume_times: Option<i32>,
    pub max_reconsume_times: Option<i32>,
}

impl Message {
    pub fn new(topic: &str, queue_id: i32, body: impl Into<Vec<u8>>) -> Self {
        Self {
            topic: topic.to_owned(),
            queue_id,
            body: body.into(),
            flag: 0,
            born_timestamp_ms: now_ms(),
            properties: Vec::new(),
            producer_group: PRODUCER_GROUP.to_owned(),
            default_topic_queue_nums: 4,
            reconsume_times: None,
            max_reconsume_times: None,
        }
    }

    #[must_use]
    pub fn property(mut self, name: &str, value: &str) -> Self {
        self.properties.retain(|(key, _)| key != name);
        self.properties.push((name.to_owned(), value.to_owned()));
        self
    }

    #[must_use]
    pub fn tags(self, tags: &str) -> Self {
        self.property(keys::TAGS, tags)
    }

    #[must_use]
    pub fn keys(self, keys: &str) -> Self {
        self.property(keys::KEYS, keys)
    }

    #[must_use]
    pub fn flag(mut self, flag: i32) -> Self {
        self.flag = flag;
        self
    }

    /// Sets the born timestamp (the messages of a batch share the header's).
    #[must_use]
    pub fn born_at(mut self, born_timestamp_ms: i64) -> Self {
        self.born_timestamp_ms = born_timestamp_ms;
        self
    }

    #[must_use]
    pub fn default_topic_queue_nums(mut self, queues: i32) -> Self {
        self.default_topic_queue_nums = queues;
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The properties string (docs/protocol.md §5.1).
    pub fn properties_string(&self) -> String {
        let mut text = String::new();
        let mut writer = PropertiesWriter::new(&mut text);
        for (name, value) in &self.properties {
            assert!(
                writer.put(name, value),
                "property {name}={value:?} not encodable"
            );
        }
        text
    }

    /// The send header for this message with the given properties string.
    pub fn header<'a>(&'a self, properties: &'a str, batch: bool) -> SendMessageRequestHeader<'a> {
        SendMessageRequestHeader {
            producer_group: &self.producer_group,
            topic: &self.topic,
            default_topic: DEFAULT_TOPIC,
            default_topic_queue_nums: self.default_topic_queue_nums,
            queue_id: self.queue_id,
            sys_flag: 0,
            born_timestamp_ms: self.born_timestamp_ms,
            flag: self.flag,
            properties: (!properties.is_empty()).then_some(properties),
            reconsume_times: self.reconsume_times,
            unit_mode: Some(false),
            max_reconsume_times: self.max_reconsume_times,
            batch: Some(batch),
            broker_name: None,
        }
    }

    /// The request for sending this message alone.
    pub fn outgoing(&self, code: SendCode) -> Outgoing {
        let properties = self.properties_string();
        let header = self.header(&properties, false);
        let mut ext = ExtFields::new();
        let code = match code {
            SendCode::V2 => {
                header.v2().encode_ext(&mut ext);
                RequestCode::SendMessageV2
            }
            SendCode::Long => {
                header.encode_ext(&mut ext);
                RequestCode::SendMessage
            }
        };
        Outgoing {
            code,
            header: ext,
            body: self.body.clone(),
        }
    }

    /// Asserts that `record` is this message as stored: body, topic, queue, flag, born time and
    /// every property sent (the broker may add more, and must add CLUSTER).
    pub fn assert_stored_as(&self, record: &Record, cluster: &str) {
        let context = format!("record at {}:{}", record.queue_id, record.queue_offset);
        assert_eq!(record.body, self.body, "{context}: body");
        assert_eq!(record.topic, self.topic, "{context}: topic");
        if self.queue_id >= 0 {
            assert_eq!(record.queue_id, self.queue_id, "{context}: queue id");
        }
        assert_eq!(record.flag, self.flag, "{context}: user flag");
        assert_eq!(
            record.born_timestamp_ms, self.born_timestamp_ms,
            "{context}: born timestamp"
        );
        for (name, value) in &self.properties {
            assert_eq!(
                record.property(name),
                Some(value.as_str()),
                "{context}: property {name} (all: {:?})",
                record.properties()
            );
        }
        assert_eq!(
            record.property(keys::CLUSTER),
            Some(cluster),
            "{context}: the broker adds CLUSTER"
        );
    }
}

/// A successful send response, checked against the contract.
#[derive(Debug, Clone)]
pub struct SendResult {
    /// The raw `msgId` (comma-joined for a batch).
    pub msg_id: String,
    /// Every id in `msg_id`, decoded.
    pub ids: Vec<OffsetMessageId>,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub region: String,
    pub trace_on: String,
}

impl SendResult {
    /// The (first) message's offset id.
    pub fn id(&self) -> OffsetMessageId {
        self.ids[0]
    }

    /// The (first) message's commit-log offset.
    pub fn physical_offset(&self) -> i64 {
        self.ids[0].commit_log_offset
    }
}

/// Checks a send response (docs/protocol.md §3.4, §5.6, §9.6): SUCCESS; `msgId` of 32 upper-case hex
/// characters per message, decoding to `store_host`; `queueId`, `queueOffset`, `MSG_REGION` and
/// `TRACE_ON` present.
pub fn parse_send(response: &Command, store_host: SocketAddr, messages: usize) -> SendResult {
    expect_code(response, ResponseCode::Success, "send");
    let header: SendMessageResponseHeader<'_> = response
        .header()
        .unwrap_or_else(|error| panic!("send response header: {error} ({:?})", response.ext));
    let mut ids = Vec::new();
    for text in header.msg_id.split(',') {
        assert_eq!(text.len(), 32, "msgId {text:?} is not 32 hex characters");
        assert!(
            text.bytes()
                .all(|byte| byte.is_ascii_digit() || (b'A'..=b'F').contains(&byte)),
            "msgId {text:?} is not upper-case hex"
        );
        let id: OffsetMessageId = text.parse().expect("msgId decodes");
        assert_eq!(id.store_host, store_host, "msgId {text} store host");
        assert!(id.commit_log_offset >= 0, "msgId {text} offset");
        ids.push(id);
    }
    assert_eq!(
        ids.len(),
        messages,
        "one msgId per message: {}",
        header.msg_id
    );
    assert!(
        header.queue_offset >= 0,
        "queueOffset {}",
        header.queue_offset
    );
    let region = header
        .msg_region
        .expect("send response carries MSG_REGION")
        .to_owned();
    assert!(!region.is_empty(), "MSG_REGION is empty");
    let trace_on = header
        .trace_on
        .expect("send response carries TRACE_ON")
        .to_owned();
    assert!(
        trace_on == "true" || trace_on == "false",
        "TRACE_ON {trace_on:?}"
    );
    SendResult {
        msg_id: header.msg_id.to_owned(),
        ids,
        queue_id: header.queue_id,
        queue_offset: header.queue_offset,
        region,
        trace_on,
    }
}

// ------------------------------------------------------------------------------------------------
// Records and pulls

/// A stored record (docs/protocol.md §5.4), owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub magic: MessageMagic,
    pub body_crc: i32,
    pub queue_id: i32,
    pub flag: i32,
    pub queue_offset: i64,
    pub physical_offset: i64,
    pub sys_flag: i32,
    pub born_timestamp_ms: i64,
    pub born_host: SocketAddr,
    pub store_timestamp_ms: i64,
    pub store_host: SocketAddr,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
    pub body: Vec<u8>,
    pub topic: String,
    pub properties: String,
}

impl Record {
    pub fn property(&self, name: &str) -> Option<&str> {
        Properties::new(&self.properties).get(name)
    }

    /// All properties as pairs (for failure messages).
    pub fn properties(&self) -> Vec<(&str, &str)> {
        Properties::new(&self.properties).iter().collect()
    }

    pub fn tags(&self) -> Option<&str> {
        self.property(keys::TAGS)
    }
}

/// Decodes a PULL / QUERY_MESSAGE / VIEW_MESSAGE_BY_ID body; every record must decode, be magic
/// v1 (what 4.x clients read) and carry a correct body CRC.
pub fn decode_records(bytes: &[u8]) -> Vec<Record> {
    RecordIter::new(bytes)
        .enumerate()
        .map(|(index, record)| {
            let record = record.unwrap_or_else(|error| {
                panic!("record #{index} of a {}-byte body: {error}", bytes.len())
            });
            record
                .verify_body_crc()
                .unwrap_or_else(|error| panic!("record #{index}: {error}"));
            assert_eq!(record.magic, MessageMagic::V1, "record #{index} magic");
            Record {
                magic: record.magic,
                body_crc: record.body_crc,
                queue_id: record.queue_id,
                flag: record.flag,
                queue_offset: record.queue_offset,
                physical_offset: record.physical_offset,
                sys_flag: record.sys_flag,
                born_timestamp_ms: record.born_timestamp_ms,
                born_host: record.born_host,
                store_timestamp_ms: record.store_timestamp_ms,
                store_host: record.store_host,
                reconsume_times: record.reconsume_times,
                prepared_transaction_offset: record.prepared_transaction_offset,
                body: record.body.to_vec(),
                topic: record.topic.to_owned(),
                properties: record.properties.to_owned(),
            }
        })
        .collect()
}

/// A PULL_MESSAGE request.
#[derive(Debug, Clone)]
pub struct Pull {
    pub group: String,
    pub topic: String,
    pub queue_id: i32,
    pub offset: i64,
    pub max_msgs: i32,
    pub sys_flag: i32,
    pub commit_offset: i64,
    pub suspend_ms: i64,
    pub subscription: Option<String>,
    pub sub_version: i64,
}

impl Pull {
    /// A pull of up to 32 messages with its own subscription `*` (FLAG_SUBSCRIPTION), no
    /// suspension, no commit.
    pub fn new(topic: &str, queue_id: i32, offset: i64) -> Self {
        Self {
            group: PULL_GROUP.to_owned(),
            topic: topic.to_owned(),
            queue_id,
            offset,
            max_msgs: 32,
            sys_flag: pull_sys_flag::SUBSCRIPTION,
            commit_offset: 0,
            suspend_ms: 0,
            subscription: Some("*".to_owned()),
            sub_version: 0,
        }
    }

    #[must_use]
    pub fn group(mut self, group: &str) -> Self {
        group.clone_into(&mut self.group);
        self
    }

    #[must_use]
    pub fn max_msgs(mut self, max_msgs: i32) -> Self {
        self.max_msgs = max_msgs;
        self
    }

    /// Carries `expression` as the subscription (FLAG_SUBSCRIPTION).
    #[must_use]
    pub fn subscription(mut self, expression: &str) -> Self {
        self.subscription = Some(expression.to_owned());
        self.sys_flag |= pull_sys_flag::SUBSCRIPTION;
        self
    }

    /// No subscription in the request: the broker must use the HEART_BEAT one.
    #[must_use]
    pub fn heartbeat_subscription(mut self) -> Self {
        self.subscription = None;
        self.sys_flag &= !pull_sys_flag::SUBSCRIPTION;
        self
    }

    /// Allows long polling for `timeout_ms` (FLAG_SUSPEND).
    #[must_use]
    pub fn suspend(mut self, timeout_ms: i64) -> Self {
        self.suspend_ms = timeout_ms;
        self.sys_flag |= pull_sys_flag::SUSPEND;
        self
    }

    /// Commits `offset` for the group (FLAG_COMMIT_OFFSET).
    #[must_use]
    pub fn commit(mut self, offset: i64) -> Self {
        self.commit_offset = offset;
        self.sys_flag |= pull_sys_flag::COMMIT_OFFSET;
        self
    }

    pub fn header(&self) -> PullMessageRequestHeader<'_> {
        PullMessageRequestHeader {
            consumer_group: &self.group,
            topic: &self.topic,
            queue_id: self.queue_id,
            queue_offset: self.offset,
            max_msg_nums: self.max_msgs,
            sys_flag: self.sys_flag,
            commit_offset: self.commit_offset,
            suspend_timeout_ms: self.suspend_ms,
            subscription: self.subscription.as_deref(),
            sub_version: self.sub_version,
            expression_type: self.subscription.as_ref().map(|_| "TAG"),
            max_msg_bytes: None,
        }
    }
}

/// A decoded PULL_MESSAGE response.
#[derive(Debug, Clone)]
pub struct PullResult {
    pub code: ResponseCode,
    pub remark: Option<String>,
    /// Present on SUCCESS, PULL_NOT_FOUND, PULL_RETRY_IMMEDIATELY and PULL_OFFSET_MOVED.
    pub header: Option<PullMessageResponseHeader>,
    /// Decoded body (SUCCESS only).
    pub records: Vec<Record>,
}

impl PullResult {
    pub fn offsets(&self) -> PullMessageResponseHeader {
        self.header
            .unwrap_or_else(|| panic!("pull {} without offsets", self.code))
    }

    pub fn next_begin_offset(&self) -> i64 {
        self.offsets().next_begin_offset
    }
}

/// Decodes a pull response. The four offset fields must be present, and non-negative, with every
/// pull status code (docs/protocol.md §3.5, §9.6); SUCCESS must carry at least one record.
pub fn parse_pull(response: &Command) -> PullResult {
    let code = response.response_code();
    let with_offsets = matches!(
        code,
        ResponseCode::Success
            | ResponseCode::PullNotFound
            | ResponseCode::PullRetryImmediately
            | ResponseCode::PullOffsetMoved
    );
    let header = if with_offsets {
        let header: PullMessageResponseHeader = response.header().unwrap_or_else(|error| {
            panic!("pull {code} response header: {error} ({:?})", response.ext)
        });
        assert!(
            header.next_begin_offset >= 0
                && header.min_offset >= 0
                && header.max_offset >= 0
                && header.suggest_which_broker_id >= 0,
            "pull offsets must be non-negative: {header:?}"
        );
        Some(header)
    } else {
        None
    };
    let records = if code == ResponseCode::Success {
        let records = decode_records(&response.body);
        assert!(!records.is_empty(), "pull SUCCESS without records");
        records
    } else {
        Vec::new()
    };
    PullResult {
        code,
        remark: response.remark.clone(),
        header,
        records,
    }
}

// ------------------------------------------------------------------------------------------------
// Consumers

/// A consumer's HeartbeatData: `group` subscribed to each (topic, tag expression), plus
/// `%RETRY%group` with `*`, as the Java push consumer sends it.
pub fn heartbeat_data(
    client_id: &str,
    group: &str,
    subscriptions: &[(&str, &str)],
) -> HeartbeatData {
    let sub_version = now_ms();
    let mut subscription_data_set: Vec<SubscriptionData> = subscriptions
        .iter()
        .map(|(topic, expression)| {
            SubscriptionData::from_tag_expression(topic, expression, sub_version)
        })
        .collect();
    subscription_data_set.push(SubscriptionData::from_tag_expression(
        &retry_topic(group),
        "*",
        sub_version,
    ));
    HeartbeatData {
        client_id: client_id.to_owned(),
        consumer_data_set: vec![ConsumerData {
            consume_from_where: ConsumeFromWhere::ConsumeFromFirstOffset,
            consume_type: ConsumeType::Passively,
            group_name: group.to_owned(),
            message_model: MessageModel::Clustering,
            subscription_data_set,
            unit_mode: false,
        }],
        ..HeartbeatData::default()
    }
}

/// The retry topic of a consumer group, `%RETRY%group`.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_PREFIX}{group}")
}

/// The dead-letter topic of a consumer group, `%DLQ%group`.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_encodes_its_properties_and_send_header() {
        let message = Message::new("T", 2, "body")
            .tags("TagA")
            .keys("k1 k2")
            .property("color", "red")
            .property("color", "blue");
        let text = message.properties_string();
        let properties = Properties::new(&text);
        assert_eq!(properties.get(keys::TAGS), Some("TagA"));
        assert_eq!(properties.get(keys::KEYS), Some("k1 k2"));
        assert_eq!(properties.get("color"), Some("blue"), "the last value wins");
        assert_eq!(message.get("color"), Some("blue"));

        let v2 = message.outgoing(SendCode::V2);
        assert_eq!(v2.code, RequestCode::SendMessageV2);
        assert_eq!(v2.header.get("b"), Some("T"), "one-letter names");
        assert_eq!(v2.body, b"body");
        let long = message.outgoing(SendCode::Long);
        assert_eq!(long.code, RequestCode::SendMessage);
        assert_eq!(long.header.get("topic"), Some("T"));
        assert_eq!(long.header.get("producerGroup"), Some(PRODUCER_GROUP));
    }

    #[test]
    fn pull_flags_follow_the_builder() {
        let pull = Pull::new("T", 0, 5);
        assert_eq!(pull.sys_flag, pull_sys_flag::SUBSCRIPTION);
        let pull = pull.heartbeat_subscription().suspend(100).commit(3);
        assert_eq!(
            pull.sys_flag,
            pull_sys_flag::SUSPEND | pull_sys_flag::COMMIT_OFFSET
        );
        let header = pull.header();
        assert_eq!(header.subscription, None);
        assert_eq!(header.expression_type, None);
        assert_eq!((header.commit_offset, header.suspend_timeout_ms), (3, 100));
        assert_eq!(header.consumer_group, PULL_GROUP);
    }

    #[test]
    fn group_topics_and_heartbeats() {
        assert_eq!(retry_topic("g"), "%RETRY%g");
        assert_eq!(dlq_topic("g"), "%DLQ%g");
        let heartbeat = heartbeat_data("cid", "g", &[("T", "TagA")]);
        let consumer = &heartbeat.consumer_data_set[0];
        assert_eq!(consumer.group_name, "g");
        let topics: Vec<&str> = consumer
            .subscription_data_set
            .iter()
            .map(|subscription| subscription.topic.as_str())
            .collect();
        assert_eq!(topics, ["T", "%RETRY%g"]);
    }
}
