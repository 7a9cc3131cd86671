//! DELETE_TOPIC_IN_BROKER (215) against the real `ringmq-broker` binary: the topic's config goes
//! (persisted across a restart), the broker re-registers without it, NameServers keep its route
//! until DELETE_TOPIC_IN_NAMESRV, and its stored messages stay (a re-created topic continues its
//! queue offsets). Each test starts its own broker on a fresh temporary store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ringmq_protocol::{
    Command, RequestCode, ResponseCode,
    body::{self, TopicConfigSerializeWrapper},
    header::{DeleteTopicFromNamesrvRequestHeader, DeleteTopicRequestHeader},
};
use ringmq_testkit::{
    BrokerOptions, BrokerProcess, CLUSTER_NAME, DEADLINE, DEFAULT_TOPIC, Message, Pull,
    RemotingClient, SendCode, expect_code, wait_until,
};

const TOPIC: &str = "Doomed";

fn delete_in_broker(client: &mut RemotingClient, topic: &str) -> Command {
    client.request(
        RequestCode::DeleteTopicInBroker,
        DeleteTopicRequestHeader { topic },
        &[],
    )
}

fn broker_topics(client: &mut RemotingClient) -> TopicConfigSerializeWrapper {
    let response = client.request(RequestCode::GetAllTopicConfig, (), &[]);
    expect_code(&response, ResponseCode::Success, "GET_ALL_TOPIC_CONFIG");
    body::decode(&response.body, "TopicConfigSerializeWrapper").unwrap()
}

/// Whether the NameServer's route of `topic` lists any queue.
fn routed(namesrv: &mut RemotingClient, topic: &str) -> bool {
    namesrv
        .route(topic)
        .is_some_and(|route| !route.queue_datas.is_empty())
}

#[test]
fn delete_removes_the_config_and_keeps_the_stored_messages() {
    let mut broker = BrokerProcess::start(BrokerOptions {
        register_interval_ms: 200,
        ..BrokerOptions::default().with_args(&["--auto-create-topic", "false"])
    });
    let mut client = broker.client();
    let mut namesrv = broker.namesrv_client();
    client.create_topic(TOPIC, 2);
    for n in 0..3 {
        client.send(&Message::new(TOPIC, 0, format!("before delete #{n}")));
    }
    wait_until("the topic's route", DEADLINE, || {
        routed(&mut namesrv, TOPIC)
    });

    let response = delete_in_broker(&mut client, TOPIC);
    expect_code(&response, ResponseCode::Success, "DELETE_TOPIC_IN_BROKER");
    assert!(
        !broker_topics(&mut client)
            .topic_config_table
            .contains_key(TOPIC)
    );
    let send = client.send_raw(SendCode::V2, &Message::new(TOPIC, 0, "after delete"));
    expect_code(
        &send,
        ResponseCode::TopicNotExist,
        "send to a deleted topic",
    );
    let pull = client.pull(&Pull::new(TOPIC, 0, 0));
    assert_eq!(pull.code, ResponseCode::TopicNotExist, "{:?}", pull.remark);

    // Deleting again is a success (a retried delete must not fail); system and invalid names
    // are refused.
    let again = delete_in_broker(&mut client, TOPIC);
    expect_code(&again, ResponseCode::Success, "second delete");
    let template = delete_in_broker(&mut client, DEFAULT_TOPIC);
    expect_code(&template, ResponseCode::SystemError, "delete TBW102");
    let invalid = delete_in_broker(&mut client, "bad topic!");
    expect_code(
        &invalid,
        ResponseCode::SystemError,
        "delete an invalid name",
    );

    // NameServers keep the route (re-registration only adds topics) until told. A topic
    // created later shows that a registration without the deleted one has arrived.
    client.create_topic("Marker1", 1);
    wait_until("a registration after the delete", DEADLINE, || {
        routed(&mut namesrv, "Marker1")
    });
    assert!(
        routed(&mut namesrv, TOPIC),
        "NameServers keep the route until told"
    );
    let response = namesrv.request(
        RequestCode::DeleteTopicInNamesrv,
        DeleteTopicFromNamesrvRequestHeader {
            topic: TOPIC,
            cluster_name: Some(CLUSTER_NAME),
        },
        &[],
    );
    expect_code(&response, ResponseCode::Success, "DELETE_TOPIC_IN_NAMESRV");
    assert!(!routed(&mut namesrv, TOPIC));
    client.create_topic("Marker2", 1);
    wait_until(
        "a registration after the NameServer delete",
        DEADLINE,
        || routed(&mut namesrv, "Marker2"),
    );
    assert!(
        !routed(&mut namesrv, TOPIC),
        "re-registration does not bring it back"
    );

    // The deletion survives a restart; the stored messages do too, so a re-created topic
    // continues its queue offsets and its old messages are readable again.
    assert_eq!(broker.terminate().code(), Some(0));
    broker.restart();
    let mut client = broker.client();
    assert!(
        !broker_topics(&mut client)
            .topic_config_table
            .contains_key(TOPIC)
    );
    let mut namesrv = broker.namesrv_client();
    assert!(
        !routed(&mut namesrv, TOPIC),
        "a fresh NameServer learns no deleted topic"
    );
    client.create_topic(TOPIC, 2);
    assert_eq!(client.max_offset(TOPIC, 0), 3);
    let records = client.pull_all(TOPIC, 0, "*");
    assert_eq!(records.len(), 3);
}
