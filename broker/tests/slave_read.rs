//! Reading from slaves (docs/protocol.md §8.5) against real `ringmq-broker` processes: a master with
//! `slaveReadEnable` suggests slave 1 to a consumer far behind and itself to one at the end, and
//! without it always itself; a slave serves what it replicated, suggests the master, and when
//! asked for an offset it does not hold yet holds the pull and answers PULL_NOT_FOUND at the
//! same offset, where a master answers PULL_OFFSET_MOVED.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ringmq_protocol::ResponseCode;
use ringmq_testkit::{BrokerOptions, BrokerProcess, DEADLINE, Message, Pull, wait_until};

const TOPIC: &str = "SlaveRead";
const MESSAGES: i64 = 40;

fn fill(broker: &BrokerProcess) {
    let mut client = broker.client();
    client.create_topic(TOPIC, 1);
    for n in 0..MESSAGES {
        client.send(&Message::new(
            TOPIC,
            0,
            format!("{n:04}-{}", "x".repeat(1020)),
        ));
    }
}

#[test]
fn a_master_suggests_the_slave_to_consumers_far_behind_only_with_slave_read_enable() {
    let cases: [(&[&str], i64); 2] = [
        (
            &[
                "--set",
                "slaveReadEnable=true",
                "--set",
                "slaveReadLagBytes=8192",
            ],
            1,
        ),
        (&[], 0),
    ];
    for (args, far_behind) in cases {
        let broker = BrokerProcess::start(BrokerOptions::default().with_args(args));
        fill(&broker);
        let mut client = broker.client();
        // ~40 KiB behind the end: past 8 KiB.
        let behind = client.pull(&Pull::new(TOPIC, 0, 0));
        assert_eq!(behind.code, ResponseCode::Success);
        assert_eq!(
            behind.offsets().suggest_which_broker_id,
            far_behind,
            "{args:?}"
        );
        // The last message: about 1 KiB behind.
        let caught_up = client.pull(&Pull::new(TOPIC, 0, MESSAGES - 1));
        assert_eq!(caught_up.code, ResponseCode::Success);
        assert_eq!(caught_up.offsets().suggest_which_broker_id, 0, "{args:?}");
    }
}

#[test]
fn a_slave_holds_pulls_past_its_end_instead_of_moving_the_consumer() {
    let master = BrokerProcess::start(BrokerOptions::default());
    fill(&master);
    let namesrv = master.embedded_namesrv_addr().unwrap();
    let slave = BrokerProcess::start(BrokerOptions::master("broker-a", &namesrv).with_args(&[
        "--broker-role",
        "SLAVE",
        "--broker-id",
        "1",
        "--set",
        "haReconnectInterval=100",
        "--set",
        "metadataSyncInterval=100",
    ]));
    let mut reader = slave.client();
    // The slave has the topic and every message, suggesting the master to its readers.
    let first = wait_until("the slave serves the replicated messages", DEADLINE, || {
        let result = reader.pull(&Pull::new(TOPIC, 0, 0));
        (result.code == ResponseCode::Success && result.offsets().max_offset == MESSAGES)
            .then_some(result)
    });
    assert_eq!(first.offsets().suggest_which_broker_id, 0);
    let served = reader.pull_all(TOPIC, 0, "*");
    let stored = master.client().pull_all(TOPIC, 0, "*");
    assert_eq!(served.len(), MESSAGES as usize);
    assert_eq!(
        served.iter().map(|r| &r.body).collect::<Vec<_>>(),
        stored.iter().map(|r| &r.body).collect::<Vec<_>>()
    );

    // Past the slave's end: held for the suspend time, then "nothing yet" at the same offset.
    let started = Instant::now();
    let beyond = reader.pull(&Pull::new(TOPIC, 0, MESSAGES + 100).suspend(600));
    assert_eq!(
        beyond.code,
        ResponseCode::PullNotFound,
        "{:?}",
        beyond.remark
    );
    assert_eq!(beyond.next_begin_offset(), MESSAGES + 100);
    assert!(started.elapsed() >= Duration::from_millis(500));
    // The master, asked the same, moves the consumer.
    let moved = master
        .client()
        .pull(&Pull::new(TOPIC, 0, MESSAGES + 100).suspend(600));
    assert_eq!(moved.code, ResponseCode::PullOffsetMoved);
    assert_eq!(moved.next_begin_offset(), MESSAGES);
}
