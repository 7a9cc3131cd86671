//! What the NameServer tests share: NameServers with the timers a test needs, a raw route
//! request, and fake brokers that register over their own connection.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use ringmq_protocol::{
    Command, RequestCode,
    body::{self, DataVersion, RegisterBrokerBody, TopicConfig, TopicConfigSerializeWrapper},
    header::{GetRouteInfoRequestHeader, RegisterBrokerRequestHeader},
};
use ringmq_testkit::{NamesrvOptions, NamesrvProcess, RemotingClient};

/// A NameServer with the given timers and its default worker threads.
pub fn start_namesrv(scan_interval_ms: u64, broker_expiry_ms: u64) -> NamesrvProcess {
    NamesrvProcess::start_with(NamesrvOptions {
        scan_interval_ms,
        broker_expiry_ms,
        workers: None,
        ..NamesrvOptions::default()
    })
}

/// GET_ROUTEINFO_BY_TOPIC; the response as it came.
pub fn route(client: &mut RemotingClient, topic: &str) -> Command {
    client.request(
        RequestCode::GetRouteinfoByTopic,
        GetRouteInfoRequestHeader {
            topic,
            accept_standard_json_only: None,
        },
        &[],
    )
}

/// A fake broker: registers its topics over its own connection.
pub struct FakeBroker {
    pub cluster: String,
    pub name: String,
    pub addr: String,
    pub id: i64,
    pub topics: Vec<String>,
    pub version: DataVersion,
}

impl FakeBroker {
    pub fn new(name: &str, addr: &str, id: i64, topics: &[&str]) -> Self {
        Self {
            cluster: "DefaultCluster".into(),
            name: name.into(),
            addr: addr.into(),
            id,
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            version: DataVersion {
                counter: 1,
                timestamp: 1_700_000_000_000,
            },
        }
    }

    pub fn body(&self) -> Vec<u8> {
        let table: BTreeMap<String, TopicConfig> = self
            .topics
            .iter()
            .map(|topic| {
                (
                    topic.clone(),
                    TopicConfig {
                        topic_name: topic.clone(),
                        read_queue_nums: 4,
                        write_queue_nums: 4,
                        perm: 6,
                        ..TopicConfig::default()
                    },
                )
            })
            .collect();
        body::to_vec(&RegisterBrokerBody {
            filter_server_list: Vec::new(),
            topic_config_serialize_wrapper: TopicConfigSerializeWrapper {
                data_version: self.version,
                topic_config_table: table,
            },
        })
    }

    pub fn register(&self, client: &mut RemotingClient) -> Command {
        let body = self.body();
        let header = RegisterBrokerRequestHeader {
            broker_name: &self.name,
            broker_addr: &self.addr,
            cluster_name: &self.cluster,
            ha_server_addr: "127.0.0.1:10912",
            broker_id: self.id,
            compressed: None,
            body_crc32: Some(ringmq_protocol::message::body_crc(&body)),
        };
        client.request(RequestCode::RegisterBroker, header, &body)
    }
}
