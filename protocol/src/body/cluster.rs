//! ClusterInfo, the GET_BROKER_CLUSTER_INFO body (docs/protocol.md §4.3).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::BrokerData;

/// Every broker group and the cluster each belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInfo {
    /// Broker name to its group.
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    /// Cluster name to its broker names.
    pub cluster_addr_table: BTreeMap<String, BTreeSet<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;

    #[test]
    fn documented_fastjson_example_decodes() {
        let json = r#"{"brokerAddrTable":{"broker-a":{"brokerAddrs":{0:"192.168.0.10:10911"},"brokerName":"broker-a","cluster":"DefaultCluster"}},
 "clusterAddrTable":{"DefaultCluster":["broker-a"]}}"#;
        let info: ClusterInfo = body::decode(json.as_bytes(), "ClusterInfo").unwrap();
        assert_eq!(
            info.broker_addr_table["broker-a"].master_addr(),
            Some("192.168.0.10:10911")
        );
        assert!(info.cluster_addr_table["DefaultCluster"].contains("broker-a"));
        let text = String::from_utf8(body::to_vec(&info)).unwrap();
        assert!(
            text.contains(r#""brokerAddrs":{"0":"192.168.0.10:10911"}"#),
            "{text}"
        );
    }
}
