//! Typed requests of the broker and NameServer on a [`RemotingClient`]: sends, topic creation,
//! pulls, offsets and lookups, runtime info, routes, and a consumer's heartbeat, group, locks and
//! send-back. Each checks its answer against the protocol's contract and panics with context,
//! except the `_raw` ones, which return the response as it came.

use std::collections::BTreeMap;

use ringmq_protocol::body::{
    self, ConsumerListBody, KvTable, LockBatchRequestBody, LockBatchResponseBody, MessageQueue,
    TopicRouteData,
};
use ringmq_protocol::header::{
    ConsumerSendMsgBackRequestHeader, CreateTopicRequestHeader,
    GetConsumerListByGroupRequestHeader, GetEarliestMsgStoretimeResponseHeader,
    GetRouteInfoRequestHeader, OffsetResponseHeader, QueryConsumerOffsetRequestHeader,
    QueryMessageRequestHeader, QueueRequestHeader, SearchOffsetRequestHeader,
    UnregisterClientRequestHeader, UpdateConsumerOffsetRequestHeader, ViewMessageRequestHeader,
};
use ringmq_protocol::message::{BatchMessage, properties::keys};
use ringmq_protocol::{Command, EncodeExt, RequestCode, ResponseCode};

use crate::message::{
    Message, PERM_RW, Pull, PullResult, Record, SendCode, SendResult, expect_code, heartbeat_data,
    parse_pull, parse_send,
};
use crate::remoting::{DEFAULT_TOPIC, RemotingClient};

// ------------------------------------------------------------------------------------------------
// Sends and topics

impl RemotingClient {
    /// Sends one message and returns the raw response.
    pub fn send_raw(&mut self, code: SendCode, message: &Message) -> Command {
        let outgoing = message.outgoing(code);
        self.request(outgoing.code, &outgoing.header, &outgoing.body)
    }

    /// Sends one message with SEND_MESSAGE_V2 and checks the response.
    pub fn send(&mut self, message: &Message) -> SendResult {
        self.send_with(SendCode::V2, message)
    }

    /// Sends one message with the given code and checks the response.
    pub fn send_with(&mut self, code: SendCode, message: &Message) -> SendResult {
        let response = self.send_raw(code, message);
        let result = parse_send(&response, self.store_host(), 1);
        if message.queue_id >= 0 {
            assert_eq!(result.queue_id, message.queue_id, "send response queueId");
        }
        result
    }

    /// Sends `messages` (same topic, same born timestamp) as one SEND_BATCH_MESSAGE to
    /// `queue_id` and returns the raw response. Topic, queue and born timestamp travel in the
    /// header and apply to every message (docs/protocol.md §3.4); the header also carries the
    /// batch-level property `WAIT=true`, as Java does.
    pub fn send_batch_raw(&mut self, queue_id: i32, messages: &[Message]) -> Command {
        let first = messages.first().expect("a batch has messages");
        let mut body = Vec::new();
        for message in messages {
            assert_eq!(message.topic, first.topic, "a batch has one topic");
            assert_eq!(
                message.born_timestamp_ms, first.born_timestamp_ms,
                "the born timestamp of a batch is the header's: build its messages with born_at"
            );
            let properties = message.properties_string();
            BatchMessage {
                flag: message.flag,
                body: &message.body,
                properties: &properties,
            }
            .encode(&mut body)
            .expect("batch entry encodes");
        }
        let batch_properties = format!("{}\u{1}true", keys::WAIT);
        let mut template = first.clone();
        template.queue_id = queue_id;
        let header = template.header(&batch_properties, true);
        self.request(RequestCode::SendBatchMessage, header.v2(), &body)
    }

    /// Sends a batch and checks the response (one msgId per message).
    pub fn send_batch(&mut self, queue_id: i32, messages: &[Message]) -> SendResult {
        let response = self.send_batch_raw(queue_id, messages);
        let result = parse_send(&response, self.store_host(), messages.len());
        assert_eq!(result.queue_id, queue_id, "batch response queueId");
        result
    }

    /// UPDATE_AND_CREATE_TOPIC with the given header; the raw response.
    pub fn create_topic_raw(&mut self, topic: &str, queues: i32, perm: i32) -> Command {
        self.request(
            RequestCode::UpdateAndCreateTopic,
            CreateTopicRequestHeader {
                topic,
                default_topic: DEFAULT_TOPIC,
                read_queue_nums: queues,
                write_queue_nums: queues,
                perm,
                topic_filter_type: "SINGLE_TAG",
                topic_sys_flag: Some(0),
                order: false,
            },
            &[],
        )
    }

    /// Creates a read-write topic with `queues` queues.
    pub fn create_topic(&mut self, topic: &str, queues: i32) {
        let response = self.create_topic_raw(topic, queues, PERM_RW);
        expect_code(
            &response,
            ResponseCode::Success,
            &format!("create topic {topic}"),
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Pulls

impl RemotingClient {
    pub fn pull(&mut self, pull: &Pull) -> PullResult {
        let response = self.request(RequestCode::PullMessage, pull.header(), &[]);
        parse_pull(&response)
    }

    /// Every message of a queue matching `subscription`, following `nextBeginOffset` from 0
    /// until PULL_NOT_FOUND.
    pub fn pull_all(&mut self, topic: &str, queue_id: i32, subscription: &str) -> Vec<Record> {
        self.pull_all_with(&Pull::new(topic, queue_id, 0).subscription(subscription))
    }

    /// As [`RemotingClient::pull_all`] from `pull.offset` with `pull`'s other settings.
    pub fn pull_all_with(&mut self, pull: &Pull) -> Vec<Record> {
        let mut pull = pull.clone();
        let mut records = Vec::new();
        for _ in 0..100_000 {
            let result = self.pull(&pull);
            match result.code {
                ResponseCode::Success | ResponseCode::PullRetryImmediately => {
                    let next = result.next_begin_offset();
                    assert!(
                        next > pull.offset,
                        "{}: nextBeginOffset {next} does not advance from {}",
                        result.code,
                        pull.offset
                    );
                    records.extend(result.records);
                    pull.offset = next;
                }
                ResponseCode::PullNotFound => return records,
                other => panic!(
                    "pull {}:{} at {}: {other} ({:?})",
                    pull.topic, pull.queue_id, pull.offset, result.remark
                ),
            }
        }
        panic!(
            "pull_all of {}:{} did not finish",
            pull.topic, pull.queue_id
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Offsets and lookups

impl RemotingClient {
    /// An offset-valued query; the raw response.
    fn offset_query(&mut self, code: RequestCode, header: impl EncodeExt) -> i64 {
        let response = self.request(code, header, &[]);
        expect_code(&response, ResponseCode::Success, &code.to_string());
        let header: OffsetResponseHeader = response
            .header()
            .unwrap_or_else(|error| panic!("{code} response: {error}"));
        header.offset
    }

    /// GET_MAX_OFFSET: the next queue offset to be written.
    pub fn max_offset(&mut self, topic: &str, queue_id: i32) -> i64 {
        self.offset_query(
            RequestCode::GetMaxOffset,
            QueueRequestHeader { topic, queue_id },
        )
    }

    /// GET_MIN_OFFSET.
    pub fn min_offset(&mut self, topic: &str, queue_id: i32) -> i64 {
        self.offset_query(
            RequestCode::GetMinOffset,
            QueueRequestHeader { topic, queue_id },
        )
    }

    /// SEARCH_OFFSET_BY_TIMESTAMP.
    pub fn search_offset(&mut self, topic: &str, queue_id: i32, timestamp_ms: i64) -> i64 {
        self.offset_query(
            RequestCode::SearchOffsetByTimestamp,
            SearchOffsetRequestHeader {
                topic,
                queue_id,
                timestamp_ms,
            },
        )
    }

    /// GET_EARLIEST_MSG_STORETIME.
    pub fn earliest_store_time(&mut self, topic: &str, queue_id: i32) -> i64 {
        let response = self.request(
            RequestCode::GetEarliestMsgStoretime,
            QueueRequestHeader { topic, queue_id },
            &[],
        );
        expect_code(
            &response,
            ResponseCode::Success,
            "GET_EARLIEST_MSG_STORETIME",
        );
        let header: GetEarliestMsgStoretimeResponseHeader = response
            .header()
            .unwrap_or_else(|error| panic!("GET_EARLIEST_MSG_STORETIME response: {error}"));
        header.timestamp_ms
    }

    /// QUERY_CONSUMER_OFFSET; the raw response.
    pub fn query_consumer_offset_raw(
        &mut self,
        group: &str,
        topic: &str,
        queue_id: i32,
    ) -> Command {
        self.request(
            RequestCode::QueryConsumerOffset,
            QueryConsumerOffsetRequestHeader {
                consumer_group: group,
                topic,
                queue_id,
                set_zero_if_not_found: None,
            },
            &[],
        )
    }

    /// QUERY_CONSUMER_OFFSET of a group that has committed.
    pub fn query_consumer_offset(&mut self, group: &str, topic: &str, queue_id: i32) -> i64 {
        let response = self.query_consumer_offset_raw(group, topic, queue_id);
        expect_code(&response, ResponseCode::Success, "QUERY_CONSUMER_OFFSET");
        let header: OffsetResponseHeader = response
            .header()
            .unwrap_or_else(|error| panic!("QUERY_CONSUMER_OFFSET response: {error}"));
        header.offset
    }

    /// UPDATE_CONSUMER_OFFSET as a normal (answered) request.
    pub fn update_consumer_offset(&mut self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        let response = self.request(
            RequestCode::UpdateConsumerOffset,
            UpdateConsumerOffsetRequestHeader {
                consumer_group: group,
                topic,
                queue_id,
                commit_offset: offset,
                only_forward: None,
            },
            &[],
        );
        expect_code(&response, ResponseCode::Success, "UPDATE_CONSUMER_OFFSET");
    }

    /// VIEW_MESSAGE_BY_ID; the raw response.
    pub fn view_message(&mut self, physical_offset: i64) -> Command {
        self.request(
            RequestCode::ViewMessageById,
            ViewMessageRequestHeader {
                offset: physical_offset,
            },
            &[],
        )
    }

    /// QUERY_MESSAGE by key over all time; the raw response.
    pub fn query_message(&mut self, topic: &str, key: &str) -> Command {
        self.request(
            RequestCode::QueryMessage,
            QueryMessageRequestHeader {
                topic,
                key,
                max_num: 32,
                begin_timestamp_ms: 0,
                end_timestamp_ms: i64::MAX,
                unique_key_query: None,
            },
            &[],
        )
    }

    /// GET_BROKER_RUNTIME_INFO's table.
    pub fn runtime_info(&mut self) -> BTreeMap<String, String> {
        let response = self.request(RequestCode::GetBrokerRuntimeInfo, (), &[]);
        expect_code(&response, ResponseCode::Success, "GET_BROKER_RUNTIME_INFO");
        let table: KvTable = body::decode(&response.body, "KvTable")
            .unwrap_or_else(|error| panic!("runtime info body: {error}"));
        table.table
    }

    /// GET_ROUTEINFO_BY_TOPIC (to a NameServer): `None` on TOPIC_NOT_EXIST.
    pub fn route(&mut self, topic: &str) -> Option<TopicRouteData> {
        let response = self.request(
            RequestCode::GetRouteinfoByTopic,
            GetRouteInfoRequestHeader {
                topic,
                accept_standard_json_only: None,
            },
            &[],
        );
        match response.response_code() {
            ResponseCode::Success => Some(
                body::decode(&response.body, "TopicRouteData")
                    .unwrap_or_else(|error| panic!("route of {topic}: {error}")),
            ),
            ResponseCode::TopicNotExist => None,
            other => panic!("route of {topic}: {other} ({:?})", response.remark),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Consumers: heartbeat, groups, locks, retries

impl RemotingClient {
    /// HEART_BEAT as a consumer of `group`.
    pub fn heartbeat(&mut self, client_id: &str, group: &str, subscriptions: &[(&str, &str)]) {
        let data = heartbeat_data(client_id, group, subscriptions);
        let response = self.request(RequestCode::HeartBeat, (), &body::to_vec(&data));
        expect_code(&response, ResponseCode::Success, "HEART_BEAT");
    }

    /// GET_CONSUMER_LIST_BY_GROUP, sorted; `None` when the broker has no consumer for the group
    /// (SYSTEM_ERROR, docs/protocol.md §3.7).
    pub fn consumer_ids(&mut self, group: &str) -> Option<Vec<String>> {
        let response = self.request(
            RequestCode::GetConsumerListByGroup,
            GetConsumerListByGroupRequestHeader {
                consumer_group: group,
            },
            &[],
        );
        match response.response_code() {
            ResponseCode::Success => {
                let list: ConsumerListBody = body::decode(&response.body, "ConsumerListBody")
                    .unwrap_or_else(|error| panic!("consumer list body: {error}"));
                let mut ids = list.consumer_id_list;
                ids.sort();
                Some(ids)
            }
            ResponseCode::SystemError => None,
            other => panic!(
                "GET_CONSUMER_LIST_BY_GROUP: {other} ({:?})",
                response.remark
            ),
        }
    }

    /// UNREGISTER_CLIENT of a consumer.
    pub fn unregister_consumer(&mut self, client_id: &str, group: &str) {
        let response = self.request(
            RequestCode::UnregisterClient,
            UnregisterClientRequestHeader {
                client_id,
                producer_group: None,
                consumer_group: Some(group),
            },
            &[],
        );
        expect_code(&response, ResponseCode::Success, "UNREGISTER_CLIENT");
    }

    /// LOCK_BATCH_MQ: the queues now locked by `client_id`, sorted.
    pub fn lock(
        &mut self,
        group: &str,
        client_id: &str,
        queues: &[MessageQueue],
    ) -> Vec<MessageQueue> {
        let request = LockBatchRequestBody {
            client_id: client_id.to_owned(),
            consumer_group: group.to_owned(),
            mq_set: queues.to_vec(),
            only_this_broker: None,
        };
        let response = self.request(RequestCode::LockBatchMq, (), &body::to_vec(&request));
        expect_code(&response, ResponseCode::Success, "LOCK_BATCH_MQ");
        let locked: LockBatchResponseBody = body::decode(&response.body, "LockBatchResponseBody")
            .unwrap_or_else(|error| panic!("lock response body: {error}"));
        let mut queues = locked.lock_ok_mq_set;
        queues.sort();
        queues
    }

    /// UNLOCK_BATCH_MQ (answered).
    pub fn unlock(&mut self, group: &str, client_id: &str, queues: &[MessageQueue]) {
        let request = LockBatchRequestBody {
            client_id: client_id.to_owned(),
            consumer_group: group.to_owned(),
            mq_set: queues.to_vec(),
            only_this_broker: None,
        };
        let response = self.request(RequestCode::UnlockBatchMq, (), &body::to_vec(&request));
        expect_code(&response, ResponseCode::Success, "UNLOCK_BATCH_MQ");
    }

    /// CONSUMER_SEND_MSG_BACK; the raw response.
    pub fn send_back(
        &mut self,
        physical_offset: i64,
        group: &str,
        delay_level: i32,
        origin: (&str, &str),
        max_reconsume_times: Option<i32>,
    ) -> Command {
        self.request(
            RequestCode::ConsumerSendMsgBack,
            ConsumerSendMsgBackRequestHeader {
                offset: physical_offset,
                group,
                delay_level,
                origin_msg_id: Some(origin.0),
                origin_topic: Some(origin.1),
                unit_mode: Some(false),
                max_reconsume_times,
            },
            &[],
        )
    }
}
