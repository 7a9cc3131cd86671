//! The smaller bodies of docs/protocol.md §3 and §4.6.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::SubscriptionData;

/// A string table: REGISTER_BROKER response, GET_BROKER_RUNTIME_INFO and KV-list bodies.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct KvTable {
    pub table: BTreeMap<String, String>,
}

/// GET_CONSUMER_LIST_BY_GROUP response body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerListBody {
    pub consumer_id_list: Vec<String>,
}

/// A message queue: (topic, broker name, queue id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MessageQueue {
    pub broker_name: String,
    pub queue_id: i32,
    pub topic: String,
}

/// LOCK_BATCH_MQ request body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LockBatchRequestBody {
    pub client_id: String,
    pub consumer_group: String,
    pub mq_set: Vec<MessageQueue>,
    /// Rust client extra.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only_this_broker: Option<bool>,
}

/// UNLOCK_BATCH_MQ request body (same keys as the lock request).
pub type UnlockBatchRequestBody = LockBatchRequestBody;

/// LOCK_BATCH_MQ response body: the queues now locked by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LockBatchResponseBody {
    #[serde(rename = "lockOKMQSet")]
    pub lock_ok_mq_set: Vec<MessageQueue>,
}

/// CHECK_CLIENT_CONFIG request body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CheckClientRequestBody {
    pub client_id: String,
    pub group: String,
    pub subscription_data: SubscriptionData,
}

/// GET_ALL_TOPIC_LIST_FROM_NAMESERVER and similar bodies.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicList {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_addr: Option<String>,
    pub topic_list: Vec<String>,
}

/// Consumer offsets by `topic@group`, then queue id (`consumerOffset.json`,
/// GET_ALL_CONSUMER_OFFSET). Java writes the queue ids unquoted; [`super::decode`] accepts that.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerOffsetTable {
    pub offset_table: BTreeMap<String, BTreeMap<i32, i64>>,
}

/// A consumer group's broker-side configuration (docs/protocol.md §6.10, §7.7 defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionGroupConfig {
    pub broker_id: i64,
    pub consume_broadcast_enable: bool,
    pub consume_enable: bool,
    pub consume_from_min_enable: bool,
    pub group_name: String,
    pub notify_consumer_ids_changed_enable: bool,
    pub retry_max_times: i32,
    pub retry_queue_nums: i32,
    pub which_broker_when_consume_slowly: i64,
}

impl Default for SubscriptionGroupConfig {
    fn default() -> Self {
        Self {
            broker_id: 0,
            consume_broadcast_enable: true,
            consume_enable: true,
            consume_from_min_enable: true,
            group_name: String::new(),
            notify_consumer_ids_changed_enable: true,
            retry_max_times: 16,
            retry_queue_nums: 1,
            which_broker_when_consume_slowly: 1,
        }
    }
}

/// `subscriptionGroup.json` and the GET_ALL_SUBSCRIPTIONGROUP_CONFIG body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionGroupWrapper {
    pub data_version: super::DataVersion,
    pub subscription_group_table: BTreeMap<String, SubscriptionGroupConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;

    #[test]
    fn documented_bodies_decode() {
        let lock: LockBatchRequestBody = body::decode(
            br#"{"clientId":"cid","consumerGroup":"g","mqSet":[{"brokerName":"b","queueId":0,"topic":"t"}]}"#,
            "LockBatchRequestBody",
        )
        .unwrap();
        assert_eq!(
            lock.mq_set[0],
            MessageQueue {
                broker_name: "b".into(),
                queue_id: 0,
                topic: "t".into()
            }
        );
        let response = LockBatchResponseBody {
            lock_ok_mq_set: lock.mq_set,
        };
        assert_eq!(
            String::from_utf8(body::to_vec(&response)).unwrap(),
            r#"{"lockOKMQSet":[{"brokerName":"b","queueId":0,"topic":"t"}]}"#
        );
        let offsets: ConsumerOffsetTable = body::decode(
            br#"{"offsetTable":{"t@g":{0:5,1:7}}}"#,
            "ConsumerOffsetTable",
        )
        .unwrap();
        assert_eq!(offsets.offset_table["t@g"][&1], 7);
        let list = TopicList {
            broker_addr: None,
            topic_list: vec!["TopicA".into(), "TBW102".into()],
        };
        assert_eq!(
            String::from_utf8(body::to_vec(&list)).unwrap(),
            r#"{"topicList":["TopicA","TBW102"]}"#
        );
    }
}
