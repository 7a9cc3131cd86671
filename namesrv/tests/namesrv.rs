//! The NameServer binary over real loopback sockets, driven by fake brokers and clients that
//! speak the protocol crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{FakeBroker, route, start_namesrv};
use ringmq_protocol::{
    RequestCode, ResponseCode,
    blocking::Connection,
    body::{self, ClusterInfo, TopicList, TopicRouteData},
    header::{
        DeleteTopicFromNamesrvRequestHeader, GetKvConfigRequestHeader, GetKvConfigResponseHeader,
        PutKvConfigRequestHeader, RegisterBrokerRequestHeader, RegisterBrokerResponseHeader,
        UnregisterBrokerRequestHeader,
    },
};
use ringmq_testkit::{DEADLINE, RemotingClient, wait_until};

fn route_of(client: &mut RemotingClient, topic: &str) -> Option<TopicRouteData> {
    let response = route(client, topic);
    match response.response_code() {
        ResponseCode::Success => Some(body::decode(&response.body, "TopicRouteData").unwrap()),
        ResponseCode::TopicNotExist => {
            assert!(response.body.is_empty());
            assert!(response.remark.unwrap().contains(topic));
            None
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn cluster_of(client: &mut RemotingClient) -> ClusterInfo {
    let response = client.request(RequestCode::GetBrokerClusterInfo, (), &[]);
    assert_eq!(response.response_code(), ResponseCode::Success);
    body::decode(&response.body, "ClusterInfo").unwrap()
}

#[test]
fn two_nameservers_hold_the_same_cluster_and_pair_master_with_slave() {
    let servers = [
        start_namesrv(10_000, 120_000),
        start_namesrv(10_000, 120_000),
    ];
    let brokers = [
        FakeBroker::new("broker-a", "127.0.0.1:10911", 0, &["TopicA", "TopicShared"]),
        FakeBroker::new("broker-a", "127.0.0.1:10921", 1, &["TopicA", "TopicShared"]),
        FakeBroker::new("broker-b", "127.0.0.1:10931", 0, &["TopicB", "TopicShared"]),
    ];
    // Every broker registers with every NameServer, each over its own connection.
    let mut connections: Vec<RemotingClient> = Vec::new();
    for server in &servers {
        for broker in &brokers {
            let mut client = server.client();
            let response = broker.register(&mut client);
            assert_eq!(response.response_code(), ResponseCode::Success);
            if broker.id == 1 {
                // The slave learns its master's addresses.
                let reply: RegisterBrokerResponseHeader<'_> = response.header().unwrap();
                assert_eq!(reply.master_addr, Some("127.0.0.1:10911"));
                assert_eq!(reply.ha_server_addr, Some("127.0.0.1:10912"));
            }
            connections.push(client);
        }
    }
    let mut views = Vec::new();
    for server in &servers {
        let mut client = server.client();
        let shared = route_of(&mut client, "TopicShared").unwrap();
        assert_eq!(shared.queue_datas.len(), 2);
        assert_eq!(shared.broker_datas.len(), 2);
        let a = shared
            .broker_datas
            .iter()
            .find(|b| b.broker_name == "broker-a")
            .unwrap();
        assert_eq!(
            a.broker_addrs.len(),
            2,
            "one BrokerData with master and slave"
        );
        assert_eq!(a.broker_addrs[&0], "127.0.0.1:10911");
        assert_eq!(a.broker_addrs[&1], "127.0.0.1:10921");
        assert_eq!(a.cluster, "DefaultCluster");
        // Every field the strictest client needs (docs/protocol.md §4.2) is written.
        let text = String::from_utf8(route(&mut client, "TopicA").body.to_vec()).unwrap();
        for key in [
            "\"brokerDatas\"",
            "\"queueDatas\"",
            "\"filterServerTable\":{}",
            "\"enableActingMaster\":false",
            "\"brokerAddrs\":{\"0\":",
            "\"topicSysFlag\":0",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
        assert!(route_of(&mut client, "NoSuchTopic").is_none());
        let topics: TopicList = body::decode(
            &client
                .request(RequestCode::GetAllTopicListFromNameserver, (), &[])
                .body,
            "TopicList",
        )
        .unwrap();
        views.push((shared, cluster_of(&mut client), topics));
    }
    assert_eq!(views[0], views[1], "both NameServers hold the same cluster");
    assert_eq!(
        views[0].1.cluster_addr_table["DefaultCluster"].len(),
        2,
        "{:?}",
        views[0].1
    );
    assert_eq!(views[0].2.topic_list, ["TopicA", "TopicB", "TopicShared"]);
}

#[test]
fn silent_brokers_expire_and_closed_connections_are_removed_at_once() {
    let server = start_namesrv(50, 400);
    let alive = FakeBroker::new("broker-alive", "127.0.0.1:11011", 0, &["Kept"]);
    let silent = FakeBroker::new("broker-silent", "127.0.0.1:11021", 0, &["Expiring"]);
    let closing = FakeBroker::new("broker-closing", "127.0.0.1:11031", 0, &["Closing"]);
    let mut alive_conn = server.client();
    let mut silent_conn = server.client();
    let mut closing_conn = server.client();
    alive.register(&mut alive_conn);
    silent.register(&mut silent_conn);
    closing.register(&mut closing_conn);
    let mut client = server.client();
    assert!(route_of(&mut client, "Closing").is_some());

    drop(closing_conn);
    wait_until("closed connection removes its broker", DEADLINE, || {
        route_of(&mut client, "Closing").is_none()
    });
    assert!(
        route_of(&mut client, "Expiring").is_some(),
        "expiry has not passed yet"
    );

    // `alive` keeps heartbeating (re-registering); `silent` keeps its connection open but
    // says nothing: only the expiry scan can remove it.
    wait_until("silent broker expires", DEADLINE, || {
        alive.register(&mut alive_conn);
        route_of(&mut client, "Expiring").is_none()
    });
    assert!(route_of(&mut client, "Kept").is_some());
    let info = cluster_of(&mut client);
    assert!(info.broker_addr_table.contains_key("broker-alive"));
    assert!(!info.broker_addr_table.contains_key("broker-silent"));
    drop(silent_conn);
}

#[test]
fn a_broker_name_keeps_its_queues_while_any_address_is_left() {
    let server = start_namesrv(10_000, 120_000);
    let master = FakeBroker::new("broker-m", "127.0.0.1:12011", 0, &["Paired"]);
    let slave = FakeBroker::new("broker-m", "127.0.0.1:12021", 1, &["Paired"]);
    let mut conn = server.client();
    master.register(&mut conn);
    slave.register(&mut conn);
    let unregister = |conn: &mut RemotingClient, broker: &FakeBroker| {
        let header = UnregisterBrokerRequestHeader {
            broker_name: &broker.name,
            broker_addr: &broker.addr,
            cluster_name: &broker.cluster,
            broker_id: broker.id,
        };
        let response = conn.request(RequestCode::UnregisterBroker, header, &[]);
        assert_eq!(response.response_code(), ResponseCode::Success);
    };
    unregister(&mut conn, &slave);
    let route = route_of(&mut conn, "Paired").unwrap();
    assert_eq!(route.broker_datas[0].broker_addrs.len(), 1);
    assert_eq!(route.queue_datas.len(), 1);

    slave.register(&mut conn);
    unregister(&mut conn, &master);
    // As in RocketMQ: the queues stay, routed to the slave, so consumers read from it.
    let route = route_of(&mut conn, "Paired").expect("the slave keeps the route");
    assert_eq!(route.queue_datas.len(), 1);
    assert_eq!(
        route.broker_datas[0]
            .broker_addrs
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![1]
    );
    let info = cluster_of(&mut conn);
    assert_eq!(
        info.broker_addr_table["broker-m"].broker_addrs[&1],
        slave.addr
    );
    // With no address left the queues go too.
    unregister(&mut conn, &slave);
    assert!(route_of(&mut conn, "Paired").is_none());
}

#[test]
fn bad_input_gets_a_clear_answer_and_the_server_keeps_serving() {
    let server = start_namesrv(10_000, 120_000);
    let broker = FakeBroker::new("broker-x", "127.0.0.1:13011", 0, &["Good"]);
    let mut good = server.client();
    broker.register(&mut good);

    let mut bad = server.client();
    // Unknown request code.
    let response = bad.request(RequestCode::Unknown(9999), (), &[]);
    assert_eq!(
        response.response_code(),
        ResponseCode::RequestCodeNotSupported
    );
    assert!(response.remark.unwrap().contains("9999"));
    // Missing header field.
    let response = bad.request(RequestCode::GetRouteinfoByTopic, (), &[]);
    assert_eq!(response.response_code(), ResponseCode::SystemError);
    assert!(response.remark.unwrap().contains("topic"));
    // A REGISTER_BROKER whose body does not match its CRC.
    let body = broker.body();
    let header = RegisterBrokerRequestHeader {
        broker_name: "broker-y",
        broker_addr: "127.0.0.1:13021",
        cluster_name: "DefaultCluster",
        ha_server_addr: "",
        broker_id: 0,
        compressed: None,
        body_crc32: Some(12345),
    };
    let response = bad.request(RequestCode::RegisterBroker, header, &body);
    assert_eq!(response.response_code(), ResponseCode::SystemError);
    assert_eq!(response.remark.as_deref(), Some("crc32 not match"));
    // A REGISTER_BROKER with a body that is not JSON.
    let header = RegisterBrokerRequestHeader {
        body_crc32: None,
        ..header
    };
    let response = bad.request(RequestCode::RegisterBroker, header, b"{not json");
    assert_eq!(response.response_code(), ResponseCode::SystemError);
    assert!(response.remark.unwrap().contains("REGISTER_BROKER body"));
    // Neither bad registration registered anything.
    assert!(
        !cluster_of(&mut bad)
            .broker_addr_table
            .contains_key("broker-y")
    );

    // A malformed frame (negative length) closes that connection only, without an answer.
    let closed_without_answer = |bytes: &[u8]| {
        let mut connection = Connection::connect(server.socket_addr(), DEADLINE).unwrap();
        connection.write_raw(bytes).unwrap();
        match connection.read_frame(DEADLINE) {
            Err(error) => error.is_closed(),
            Ok(frame) => panic!("answered {bytes:?} with {frame:?}"),
        }
    };
    assert!(
        closed_without_answer(&[0xFF, 0xFF, 0xFF, 0xF0, 0, 0, 0, 0]),
        "connection closed"
    );
    // An oversized length prefix too.
    assert!(closed_without_answer(&[0x7F, 0, 0, 0, 0, 0, 0, 10]));

    assert!(
        route_of(&mut good, "Good").is_some(),
        "others are still served"
    );
}

#[test]
fn kv_config_and_topic_deletion() {
    let server = start_namesrv(10_000, 120_000);
    let mut conn = server.client();
    let put = PutKvConfigRequestHeader {
        namespace: "ORDER_TOPIC_CONFIG",
        key: "Ordered",
        value: "broker-a:4",
    };
    assert_eq!(
        conn.request(RequestCode::PutKvConfig, put, &[])
            .response_code(),
        ResponseCode::Success
    );
    let get = GetKvConfigRequestHeader {
        namespace: "ORDER_TOPIC_CONFIG",
        key: "Ordered",
    };
    let response = conn.request(RequestCode::GetKvConfig, get, &[]);
    let value: GetKvConfigResponseHeader<'_> = response.header().unwrap();
    assert_eq!(value.value, Some("broker-a:4"));
    let missing = GetKvConfigRequestHeader {
        namespace: "ORDER_TOPIC_CONFIG",
        key: "Nope",
    };
    assert_eq!(
        conn.request(RequestCode::GetKvConfig, missing, &[])
            .response_code(),
        ResponseCode::QueryNotFound
    );
    // REGISTER_BROKER answers with the ORDER_TOPIC_CONFIG table.
    let broker = FakeBroker::new("broker-a", "127.0.0.1:14011", 0, &["Doomed", "Staying"]);
    let response = broker.register(&mut conn);
    let table: body::KvTable = body::decode(&response.body, "KVTable").unwrap();
    assert_eq!(table.table["Ordered"], "broker-a:4");

    let delete = DeleteTopicFromNamesrvRequestHeader {
        topic: "Doomed",
        cluster_name: None,
    };
    assert_eq!(
        conn.request(RequestCode::DeleteTopicInNamesrv, delete, &[])
            .response_code(),
        ResponseCode::Success
    );
    assert!(route_of(&mut conn, "Doomed").is_none());
    assert!(route_of(&mut conn, "Staying").is_some());
}

#[test]
fn a_broker_with_ten_thousand_topics_registers() {
    let server = start_namesrv(10_000, 120_000);
    let names: Vec<String> = (0..10_000).map(|i| format!("Topic-{i:05}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let broker = FakeBroker::new("broker-big", "127.0.0.1:15011", 0, &refs);
    let mut conn = server.client();
    assert!(broker.body().len() > 1 << 20, "a frame of megabytes");
    assert_eq!(
        broker.register(&mut conn).response_code(),
        ResponseCode::Success
    );
    for topic in ["Topic-00000", "Topic-04567", "Topic-09999"] {
        let route = route_of(&mut conn, topic).unwrap();
        assert_eq!(route.queue_datas[0].write_queue_nums, 4);
    }
}
