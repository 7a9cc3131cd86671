//! TopicRouteData, the GET_ROUTEINFO_BY_TOPIC body (docs/protocol.md §4.2).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Permission bits of topics and brokers.
pub mod perm {
    /// Unused by clients.
    pub const PRIORITY: i32 = 8;
    /// Consumers may pull.
    pub const READ: i32 = 4;
    /// Producers may send.
    pub const WRITE: i32 = 2;
    /// The topic may serve as an auto-creation template.
    pub const INHERIT: i32 = 1;

    /// Whether `perm` allows reads.
    pub const fn is_readable(perm: i32) -> bool {
        perm & READ != 0
    }

    /// Whether `perm` allows writes.
    pub const fn is_writeable(perm: i32) -> bool {
        perm & WRITE != 0
    }

    /// Whether `perm` allows inheriting (auto-creation template).
    pub const fn is_inherited(perm: i32) -> bool {
        perm & INHERIT != 0
    }
}

/// Where a topic lives: its queues per broker name and those brokers' addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicRouteData {
    /// One per broker name referenced by `queue_datas`.
    pub broker_datas: Vec<BrokerData>,
    /// Always written (`{}`): the Rust client requires the key.
    pub filter_server_table: BTreeMap<String, Vec<String>>,
    /// `brokerName:queueCount;...` for ordered topics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_topic_conf: Option<String>,
    /// One per broker name hosting the topic.
    pub queue_datas: Vec<QueueData>,
}

/// The queues a broker group hosts for one topic.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueueData {
    pub broker_name: String,
    /// [`perm`] bits.
    pub perm: i32,
    pub read_queue_nums: i32,
    pub topic_sys_flag: i32,
    pub write_queue_nums: i32,
}

/// A broker group: its name, cluster and addresses by broker id (0 = master).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerData {
    /// Broker id to `ip:port`; written with quoted keys.
    pub broker_addrs: BTreeMap<i64, String>,
    pub broker_name: String,
    pub cluster: String,
    /// Always written (`false`): the Rust client requires the key.
    pub enable_acting_master: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_name: Option<String>,
}

impl BrokerData {
    /// The master's address (broker id 0), if the master is registered.
    pub fn master_addr(&self) -> Option<&str> {
        self.broker_addrs.get(&0).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;

    const EXAMPLE: &str = concat!(
        r#"{"brokerDatas":[{"brokerAddrs":{"0":"192.168.0.10:10911","1":"192.168.0.11:10911"},"#,
        r#""brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false}],"#,
        r#""filterServerTable":{},"#,
        r#""queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#
    );

    #[test]
    fn documented_example_round_trips_byte_for_byte() {
        let route: TopicRouteData = body::decode(EXAMPLE.as_bytes(), "TopicRouteData").unwrap();
        assert_eq!(
            route.broker_datas[0].master_addr(),
            Some("192.168.0.10:10911")
        );
        assert_eq!(route.broker_datas[0].broker_addrs[&1], "192.168.0.11:10911");
        assert_eq!(route.queue_datas[0].perm, perm::READ | perm::WRITE);
        assert_eq!(String::from_utf8(body::to_vec(&route)).unwrap(), EXAMPLE);
    }

    #[test]
    fn fastjson_form_with_unquoted_keys_decodes() {
        let fastjson = EXAMPLE
            .replace(r#"{"0":"#, "{0:")
            .replace(r#","1":"#, ",1:");
        assert!(fastjson.contains("{0:\"192"));
        let route: TopicRouteData = body::decode(fastjson.as_bytes(), "TopicRouteData").unwrap();
        assert_eq!(String::from_utf8(body::to_vec(&route)).unwrap(), EXAMPLE);
    }
}
