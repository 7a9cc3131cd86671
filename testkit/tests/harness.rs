//! The harness against the real binaries: start, address discovery, restart on the same port and
//! store, kill, and a two-NameServer cluster.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ringmq_protocol::RequestCode;
use ringmq_testkit::remoting::{
    RemotingClient, cluster_info, committed_offset, create_topic, max_offset, topic_route,
};
use ringmq_testkit::{BrokerOptions, BrokerProcess, Cluster, DEADLINE, NamesrvProcess, wait_until};

#[test]
fn namesrv_starts_answers_and_stops() {
    let mut namesrv = NamesrvProcess::start();
    assert!(
        namesrv.addr().starts_with("127.0.0.1:"),
        "{}",
        namesrv.addr()
    );
    let info = cluster_info(&namesrv.addr()).unwrap();
    assert!(info.broker_addr_table.is_empty(), "{info:?}");
    assert!(namesrv.is_running());
    namesrv.stop();
    assert!(!namesrv.is_running());
    let probe = RemotingClient::try_connect(namesrv.addr());
    assert!(
        probe.is_err(),
        "a stopped NameServer still accepts connections: {probe:?}"
    );
}

#[test]
fn embedded_broker_restarts_on_its_port_and_store() {
    let mut broker = BrokerProcess::start(BrokerOptions {
        shards: Some(1),
        ..BrokerOptions::default()
    });
    let namesrv = broker
        .embedded_namesrv_addr()
        .expect("an embedded NameServer");
    create_topic(&broker.addr(), "Kept", 3).unwrap();
    wait_until("the embedded NameServer to route Kept", DEADLINE, || {
        topic_route(&namesrv, "Kept").ok().flatten()
    });
    assert!(broker.log_path().starts_with(broker.store_dir()));
    assert_eq!(max_offset(&broker.addr(), "Kept", 0).unwrap(), 0);
    // RocketMQ's rule: a group that never committed reads a queue still holding its first
    // message from 0.
    let never = committed_offset(&broker.addr(), "nobody", "Kept", 0).unwrap();
    assert!(matches!(never, None | Some(0)), "{never:?}");
    // A connection open across the kill leaves the old port in TIME_WAIT on the broker side.
    let _open = RemotingClient::connect(broker.addr());
    let addr = broker.addr();
    broker.kill();
    assert!(!broker.is_running());
    broker.restart();
    assert_eq!(broker.addr(), addr);
    assert_eq!(
        broker.embedded_namesrv_addr().as_deref(),
        Some(namesrv.as_str())
    );
    let route = wait_until(
        "the restarted broker's NameServer to route Kept",
        DEADLINE,
        || topic_route(&namesrv, "Kept").ok().flatten(),
    );
    assert_eq!(route.queue_datas[0].write_queue_nums, 3, "{route:?}");
    assert!(
        broker.log().contains("(start 2)"),
        "one log across restarts"
    );
    broker.terminate();
}

#[test]
fn cluster_routes_every_broker_on_every_namesrv() {
    let mut cluster = Cluster::start_with(2, &["broker-a", "broker-b"], |options| {
        options.shards = Some(1);
    });
    let addrs = cluster.namesrv_addrs();
    assert_eq!(addrs.split(';').count(), 2, "{addrs}");
    cluster.create_topic("Spread", 2);
    for namesrv in cluster.namesrvs() {
        let route = topic_route(&namesrv.addr(), "Spread").unwrap().unwrap();
        let mut names: Vec<_> = route
            .broker_datas
            .iter()
            .map(|b| b.broker_name.clone())
            .collect();
        names.sort();
        assert_eq!(names, ["broker-a", "broker-b"]);
    }
    // A raw request through the blocking client.
    let answer = RemotingClient::connect(cluster.broker("broker-b").addr()).request(
        RequestCode::GetBrokerRuntimeInfo,
        (),
        &[],
    );
    assert!(!answer.body.is_empty());

    // A SIGKILLed broker drops out of the NameServers (connection closed or expiry).
    cluster.broker_mut("broker-a").kill();
    let first = cluster.namesrvs()[0].addr();
    wait_until(
        "broker-a to leave the NameServer",
        Duration::from_secs(30),
        || {
            let info = cluster_info(&first).ok()?;
            (!info.broker_addr_table.contains_key("broker-a")).then_some(())
        },
    );
    cluster.stop_namesrvs();
    assert!(cluster_info(&first).is_err());
}
