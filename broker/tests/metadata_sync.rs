//! A slave copies its master's topic configs and consumer offsets (docs/protocol.md §8.6), against
//! real `ringmq-broker` processes: what the master creates, deletes and commits reaches the
//! slave; offsets only the slave has and its own TBW102 stay; while the master is down the slave
//! keeps its tables and warns once; offsets committed to the slave meanwhile (across a slave
//! restart) reach the returning master, only forward; a slave started before its master syncs
//! once the master appears. Nothing here needs master/slave log replication.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, net::SocketAddr};

use ringmq_protocol::{
    RequestCode,
    body::{self, ConsumerOffsetTable, TopicConfig, TopicConfigSerializeWrapper},
    header::{DeleteTopicRequestHeader, UpdateConsumerOffsetRequestHeader},
};
use ringmq_testkit::{
    BrokerOptions, BrokerProcess, DEADLINE, RemotingClient, http_get, parse_metrics, remoting,
    wait_until,
};

const GROUP: &str = "SyncGroup";
const SYNC_FAILED: &str = "cannot sync topics and consumer offsets from the master";
const SYNC_BACK: &str = "metadata sync from the master works again";

/// A slave of broker-a registering with `namesrv`, syncing every 200 ms.
fn slave_options(namesrv: Option<String>, extra: &[&str]) -> BrokerOptions {
    let mut extra_args: Vec<String> = [
        "--broker-role",
        "SLAVE",
        "--broker-id",
        "1",
        "--set",
        "metadataSyncInterval=200",
    ]
    .map(str::to_owned)
    .to_vec();
    extra_args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    BrokerOptions {
        namesrv,
        extra_args,
        ..BrokerOptions::default()
    }
}

fn topics(broker: &str) -> BTreeMap<String, TopicConfig> {
    let answer =
        RemotingClient::connect(broker).request_ok(RequestCode::GetAllTopicConfig, (), &[]);
    let wrapper: TopicConfigSerializeWrapper =
        body::decode(&answer.body, "TopicConfigSerializeWrapper").unwrap();
    wrapper.topic_config_table
}

fn all_offsets(broker: &str) -> ConsumerOffsetTable {
    let answer =
        RemotingClient::connect(broker).request_ok(RequestCode::GetAllConsumerOffset, (), &[]);
    body::decode(&answer.body, "ConsumerOffsetTable").unwrap()
}

fn commit(broker: &str, group: &str, topic: &str, queue_id: i32, offset: i64) {
    let header = UpdateConsumerOffsetRequestHeader {
        consumer_group: group,
        topic,
        queue_id,
        commit_offset: offset,
        only_forward: None,
    };
    RemotingClient::connect(broker).request_ok(RequestCode::UpdateConsumerOffset, header, &[]);
}

fn delete_topic(broker: &str, topic: &str) {
    RemotingClient::connect(broker).request_ok(
        RequestCode::DeleteTopicInBroker,
        DeleteTopicRequestHeader { topic },
        &[],
    );
}

/// The committed offset of `group` on a queue, as the broker answers QUERY_CONSUMER_OFFSET.
fn offset(broker: &str, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
    remoting::committed_offset(broker, group, topic, queue_id).unwrap()
}

/// The value of an unlabelled series on a broker's metrics endpoint.
fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let (_status, text) = http_get(addr, "/metrics");
    parse_metrics(&text).get(name).copied()
}

#[test]
fn a_slave_follows_its_masters_topics_and_offsets_and_keeps_them_while_it_is_down() {
    let mut master = BrokerProcess::start(BrokerOptions {
        shards: Some(2),
        // No TBW102 on the master: the slave must keep its own.
        extra_args: vec!["--auto-create-topic".into(), "false".into()],
        ..BrokerOptions::default()
    });
    let ha_master = format!("127.0.0.1:{}", master.socket_addr().port() + 1);
    // Another shard count than the master's: the master's merged table is spread anew.
    let mut slave = BrokerProcess::start(BrokerOptions {
        shards: Some(3),
        metrics_port: Some(0),
        ..slave_options(
            master.embedded_namesrv_addr(),
            &["--ha-master-address", &ha_master],
        )
    });
    let (master_addr, slave_addr) = (master.addr(), slave.addr());

    remoting::create_topic(&master_addr, "Kept", 4).unwrap();
    remoting::create_topic(&master_addr, "Dropped", 2).unwrap();
    for queue_id in 0..4 {
        commit(
            &master_addr,
            GROUP,
            "Kept",
            queue_id,
            10 + i64::from(queue_id),
        );
    }
    commit(&master_addr, GROUP, "Dropped", 1, 3);
    // GET_ALL_CONSUMER_OFFSET merges every shard's offsets.
    assert_eq!(
        all_offsets(&master_addr).offset_table,
        BTreeMap::from([
            (
                format!("Kept@{GROUP}"),
                BTreeMap::from([(0, 10), (1, 11), (2, 12), (3, 13)])
            ),
            (format!("Dropped@{GROUP}"), BTreeMap::from([(1, 3)])),
        ])
    );

    let master_topics = topics(&master_addr);
    assert!(!master_topics.contains_key("TBW102"));
    wait_until("the slave to copy the master's topics", DEADLINE, || {
        let mut slave_topics = topics(&slave_addr);
        slave_topics.remove("TBW102")?;
        (slave_topics == master_topics).then_some(())
    });
    wait_until("the slave to copy the master's offsets", DEADLINE, || {
        (0..4)
            .all(|q| offset(&slave_addr, GROUP, "Kept", q) == Some(10 + i64::from(q)))
            .then_some(())
    });
    assert_eq!(offset(&slave_addr, GROUP, "Dropped", 1), Some(3));

    // A commit only the slave has (made while, say, the master was down) survives later syncs.
    commit(&slave_addr, "SlaveOnly", "Kept", 2, 42);
    delete_topic(&master_addr, "Dropped");
    commit(&master_addr, GROUP, "Kept", 0, 20);
    wait_until(
        "the slave to follow a delete and a commit",
        DEADLINE,
        || {
            let slave_topics = topics(&slave_addr);
            (!slave_topics.contains_key("Dropped")
                && offset(&slave_addr, GROUP, "Kept", 0) == Some(20))
            .then_some(())
        },
    );
    assert!(topics(&slave_addr).contains_key("TBW102"));
    assert_eq!(offset(&slave_addr, "SlaveOnly", "Kept", 2), Some(42));

    master_outage(&mut master, &mut slave);
    let status = slave.terminate();
    assert_eq!(status.code(), Some(0), "a slave stops cleanly: {status}");
}

/// `onlyForward` (RingMQ's UPDATE_CONSUMER_OFFSET field) never moves an offset back; without it
/// a commit may (a consumer resetting its position).
#[test]
fn an_only_forward_commit_never_rewinds() {
    let broker = BrokerProcess::start(BrokerOptions::default());
    let addr = broker.addr();
    let commit_forward = |offset: i64| {
        let header = UpdateConsumerOffsetRequestHeader {
            consumer_group: GROUP,
            topic: "Fwd",
            queue_id: 1,
            commit_offset: offset,
            only_forward: Some(true),
        };
        RemotingClient::connect(&addr).request_ok(RequestCode::UpdateConsumerOffset, header, &[]);
    };
    commit_forward(7);
    assert_eq!(
        offset(&addr, GROUP, "Fwd", 1),
        Some(7),
        "no offset yet: taken"
    );
    commit_forward(3);
    assert_eq!(offset(&addr, GROUP, "Fwd", 1), Some(7), "backward: ignored");
    commit_forward(9);
    assert_eq!(offset(&addr, GROUP, "Fwd", 1), Some(9), "forward: taken");
    commit(&addr, GROUP, "Fwd", 1, 2);
    assert_eq!(
        offset(&addr, GROUP, "Fwd", 1),
        Some(2),
        "a plain commit may go back"
    );
}

/// The master of the first test goes away and returns: the slave keeps its tables meanwhile
/// (and warns once), and what consumers committed to it reaches the returning master.
fn master_outage(master: &mut BrokerProcess, slave: &mut BrokerProcess) {
    let (master_addr, slave_addr) = (master.addr(), slave.addr());
    // The master goes away: the slave keeps what it has, and says so once, not every round.
    // (Gracefully, so it saves its offsets: a SIGKILLed broker loses the commits of its last
    // persist interval, 5 s, as Java's does.)
    master.terminate();
    let metrics = slave.metrics_addr().unwrap();
    wait_until("several failed sync rounds", DEADLINE, || {
        (metric(metrics, "ringmq_metadata_syncs_failed_total")? >= 3.0).then_some(())
    });
    assert_eq!(
        slave.log().matches(SYNC_FAILED).count(),
        1,
        "{}",
        slave.log()
    );
    assert!(topics(&slave_addr).contains_key("Kept"));
    assert_eq!(offset(&slave_addr, GROUP, "Kept", 0), Some(20));
    assert_eq!(offset(&slave_addr, GROUP, "Kept", 3), Some(13));

    // Consumers commit to the slave meanwhile: forward on queues 0 and 3, backward on 1. The
    // slave restarts before the master returns and still has them.
    commit(&slave_addr, GROUP, "Kept", 0, 30);
    commit(&slave_addr, GROUP, "Kept", 3, 50);
    commit(&slave_addr, GROUP, "Kept", 1, 5);
    slave.restart();
    assert_eq!(offset(&slave_addr, GROUP, "Kept", 0), Some(30));
    wait_until("the restarted slave to miss its master", DEADLINE, || {
        (slave.log().matches(SYNC_FAILED).count() == 2).then_some(())
    });

    // The master returns with its older offsets. The slave hands it what was committed here,
    // only forward: the group never rewinds, on either broker.
    master.restart();
    wait_until("the sync to recover", DEADLINE, || {
        slave.log().contains(SYNC_BACK).then_some(())
    });
    let expected = [(0, 30), (1, 11), (2, 12), (3, 50)];
    wait_until(
        "the master and the slave to agree on the newer offsets",
        DEADLINE,
        || {
            expected
                .iter()
                .all(|&(q, o)| {
                    offset(&master_addr, GROUP, "Kept", q) == Some(o)
                        && offset(&slave_addr, GROUP, "Kept", q) == Some(o)
                })
                .then_some(())
        },
    );
    assert_eq!(offset(&master_addr, "SlaveOnly", "Kept", 2), Some(42));
    assert!(
        slave
            .log()
            .contains("handed the offsets consumers committed here to the master"),
        "{}",
        slave.log()
    );
    // Handed over once: a commit the master takes later is not undone by a later round.
    commit(&master_addr, GROUP, "Kept", 0, 31);
    wait_until(
        "the slave to take the master's newer commit",
        DEADLINE,
        || (offset(&slave_addr, GROUP, "Kept", 0) == Some(31)).then_some(()),
    );
    assert_eq!(offset(&master_addr, GROUP, "Kept", 0), Some(31));
}

#[test]
fn a_slave_started_before_its_master_syncs_once_the_master_registers() {
    let slave = BrokerProcess::start(slave_options(None, &[]));
    let slave_addr = slave.addr();
    // It serves on its own: no master needed to start.
    assert!(topics(&slave_addr).contains_key("TBW102"));

    // It learns the master's address from the NameServer's answer to its registration.
    let master = BrokerProcess::start(BrokerOptions::master(
        "broker-a",
        &slave.embedded_namesrv_addr().unwrap(),
    ));
    remoting::create_topic(&master.addr(), "Late", 2).unwrap();
    commit(&master.addr(), GROUP, "Late", 1, 7);
    wait_until(
        "the slave to copy the late master's topic and offset",
        DEADLINE,
        || {
            (topics(&slave_addr).contains_key("Late")
                && offset(&slave_addr, GROUP, "Late", 1) == Some(7))
            .then_some(())
        },
    );
}
