//! NameServer command headers (docs/protocol.md §3.3).

use super::ext_header;

ext_header! {
    /// REGISTER_BROKER (103) request: a broker announcing itself and its topics.
    pub struct RegisterBrokerRequestHeader<'a> {
        broker_name: &'a str = "brokerName",
        /// `ip:listenPort` that clients must use.
        broker_addr: &'a str = "brokerAddr",
        cluster_name: &'a str = "clusterName",
        /// `ip:haListenPort`.
        ha_server_addr: &'a str = "haServerAddr",
        /// 0 = master, ≥ 1 = slave.
        broker_id: i64 = "brokerId",
        /// The body is the zlib-compressed form (docs/protocol.md §4.4).
        compressed: Option<bool> = "compressed",
        /// Masked CRC32 of the body; 0 or absent means "not checked".
        body_crc32: Option<i32> = "bodyCrc32",
    }
}

ext_header! {
    /// REGISTER_BROKER response: the master's addresses, set only for a slave whose master is alive.
    pub struct RegisterBrokerResponseHeader<'a> {
        ha_server_addr: Option<&'a str> = "haServerAddr",
        master_addr: Option<&'a str> = "masterAddr",
    }
}

ext_header! {
    /// UNREGISTER_BROKER (104) request, sent on broker shutdown.
    pub struct UnregisterBrokerRequestHeader<'a> {
        broker_name: &'a str = "brokerName",
        broker_addr: &'a str = "brokerAddr",
        cluster_name: &'a str = "clusterName",
        broker_id: i64 = "brokerId",
    }
}

ext_header! {
    /// QUERY_DATA_VERSION (322) request; the body is the broker's DataVersion JSON.
    pub struct QueryDataVersionRequestHeader<'a> {
        broker_name: &'a str = "brokerName",
        broker_addr: &'a str = "brokerAddr",
        cluster_name: &'a str = "clusterName",
        broker_id: i64 = "brokerId",
    }
}

ext_header! {
    /// QUERY_DATA_VERSION response.
    pub struct QueryDataVersionResponseHeader {
        /// Whether the NameServer's stored data version differs from the broker's.
        changed: bool = "changed",
    }
}

ext_header! {
    /// GET_ROUTEINFO_BY_TOPIC (105) request.
    pub struct GetRouteInfoRequestHeader<'a> {
        topic: &'a str = "topic",
        /// 4.9.4+: ask for standard JSON (quoted numeric keys).
        accept_standard_json_only: Option<bool> = "acceptStandardJsonOnly",
    }
}

ext_header! {
    /// DELETE_TOPIC_IN_NAMESRV (216) request.
    pub struct DeleteTopicFromNamesrvRequestHeader<'a> {
        topic: &'a str = "topic",
        /// When present, only this cluster's queue data is removed.
        cluster_name: Option<&'a str> = "clusterName",
    }
}

ext_header! {
    /// PUT_KV_CONFIG (100) request.
    pub struct PutKvConfigRequestHeader<'a> {
        namespace: &'a str = "namespace",
        key: &'a str = "key",
        value: &'a str = "value",
    }
}

ext_header! {
    /// GET_KV_CONFIG (101) request.
    pub struct GetKvConfigRequestHeader<'a> {
        namespace: &'a str = "namespace",
        key: &'a str = "key",
    }
}

ext_header! {
    /// GET_KV_CONFIG response.
    pub struct GetKvConfigResponseHeader<'a> {
        value: Option<&'a str> = "value",
    }
}

ext_header! {
    /// DELETE_KV_CONFIG (102) request.
    pub struct DeleteKvConfigRequestHeader<'a> {
        namespace: &'a str = "namespace",
        key: &'a str = "key",
    }
}

ext_header! {
    /// GET_KVLIST_BY_NAMESPACE (219) request.
    pub struct GetKvListByNamespaceRequestHeader<'a> {
        namespace: &'a str = "namespace",
    }
}

ext_header! {
    /// GET_TOPICS_BY_CLUSTER (224) request.
    pub struct GetTopicsByClusterRequestHeader<'a> {
        cluster: &'a str = "cluster",
    }
}

ext_header! {
    /// WIPE_WRITE_PERM_OF_BROKER (205) and ADD_WRITE_PERM_OF_BROKER (327) requests.
    pub struct BrokerPermRequestHeader<'a> {
        broker_name: &'a str = "brokerName",
    }
}
