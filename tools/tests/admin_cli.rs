//! `ringmq-admin` end to end: the real binary against a real `ringmq-broker` process with its
//! embedded NameServer, on loopback. Checks the output (tables and `--json`) and the exit codes
//! scripts rely on: 0 ok, 1 operation failed, 2 usage error, 3 unreachable / timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use ringmq_protocol::message::OffsetMessageId;
use ringmq_testkit::{
    BrokerOptions, BrokerProcess, Exited, RunningProcess, fresh_binary, wait_until,
};
use serde_json::Value;

const ADMIN: &str = env!("CARGO_BIN_EXE_ringmq-admin");
const CLUSTER: &str = "DefaultCluster";
const TOPIC: &str = "AdminCliTopic";
/// Deadline for what becomes true asynchronously (registration with the NameServer).
const DEADLINE: Duration = Duration::from_secs(15);
/// How long one run of the tool may take before the test fails.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// A broker with its embedded NameServer. Its binary is built first even when it exists: after
/// an edit to the broker, `cargo test -p ringmq-tools` alone would otherwise test the old one.
fn start_broker() -> BrokerProcess {
    fresh_binary("ringmq-broker");
    BrokerProcess::start(BrokerOptions::default())
}

/// Starts `ringmq-admin` with `args` (and no NAMESRV_ADDR from the environment).
fn spawn(args: &[&str]) -> RunningProcess {
    let mut command = Command::new(ADMIN);
    command.args(args).env_remove("NAMESRV_ADDR");
    RunningProcess::start(command)
}

fn admin(namesrv: &str, args: &[&str]) -> Exited {
    let mut full = vec!["-n", namesrv];
    full.extend_from_slice(args);
    spawn(&full).finish(RUN_DEADLINE)
}

/// Runs with `--json`, expects exit 0 and returns the parsed document.
fn admin_json(namesrv: &str, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let output = admin(namesrv, &full);
    assert_eq!(output.code(), Some(0), "{args:?}: {output:?}");
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("{args:?} printed no JSON document ({error}): {output:?}"))
}

fn expect_exit(output: &Exited, code: i32, what: &str) {
    assert_eq!(output.code(), Some(code), "{what}: {output:?}");
}

#[test]
fn topics_cluster_broker_messages_and_progress() {
    let broker = start_broker();
    let namesrv = broker.embedded_namesrv_addr().unwrap();
    let n = namesrv.as_str();
    cluster_and_broker_status(n, &broker.addr());
    create_update_and_inspect(n, &broker.addr());
    let sent = send_then_look_up_and_consume(n);
    progress_after_the_commit(n, &sent);
    consume_from_last_waits_for_a_new_message(n);
    operation_failures_exit_with_1(n, &broker.addr());

    // topic delete: gone from the NameServer and the broker.
    let deleted = admin(n, &["topic", "delete", "-t", TOPIC, "-c", CLUSTER]);
    expect_exit(&deleted, 0, "topic delete");
    let list = admin_json(n, &["topic", "list"]);
    assert!(
        !list["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|topic| topic == TOPIC)
    );
    expect_exit(
        &admin(n, &["topic", "route", "-t", TOPIC]),
        1,
        "route of a deleted topic",
    );
}

/// cluster list: the broker is the master of the default cluster; broker status answers.
/// (Also the first command: it waits for the broker's registration.)
fn cluster_and_broker_status(n: &str, broker_addr: &str) {
    // The broker registers with its NameServer after it prints its addresses.
    let clusters = wait_until("the broker's registration", DEADLINE, || {
        let clusters = admin_json(n, &["cluster", "list"]);
        (!clusters["clusters"].as_array().unwrap().is_empty()).then_some(clusters)
    });
    let cluster = &clusters["clusters"][0];
    assert_eq!(cluster["cluster"], CLUSTER);
    assert_eq!(cluster["brokers"][0]["addr"], broker_addr);
    assert_eq!(cluster["brokers"][0]["brokerId"], 0);
    let text = admin(n, &["cluster", "list"]);
    expect_exit(&text, 0, "cluster list");
    assert!(text.stdout.starts_with("CLUSTER"), "{}", text.stdout);
    assert!(text.stdout.contains(broker_addr), "{}", text.stdout);
    let stats = admin_json(n, &["broker", "status", "-b", broker_addr]);
    assert_eq!(stats["runtimeInfo"]["brokerVersionDesc"], "V4_9_8");
}

/// topic create on the cluster, then it shows up in route, list and status; update works.
fn create_update_and_inspect(n: &str, broker_addr: &str) {
    let created = admin(
        n,
        &[
            "topic", "create", "-t", TOPIC, "-c", CLUSTER, "-r", "2", "-w", "2",
        ],
    );
    expect_exit(&created, 0, "topic create");
    assert!(created.stdout.contains(broker_addr), "{}", created.stdout);
    let route = wait_until("the topic's route", DEADLINE, || {
        let output = admin(n, &["--json", "topic", "route", "-t", TOPIC]);
        (output.code() == Some(0)).then(|| serde_json::from_str::<Value>(&output.stdout).unwrap())
    });
    assert_eq!(route["queueDatas"][0]["readQueueNums"], 2);
    assert_eq!(route["queueDatas"][0]["writeQueueNums"], 2);
    assert_eq!(route["brokerDatas"][0]["brokerAddrs"]["0"], broker_addr);
    let list = admin_json(n, &["topic", "list"]);
    let topics: Vec<&str> = list["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|topic| topic.as_str().unwrap())
        .collect();
    assert!(topics.contains(&TOPIC), "{topics:?}");
    let status = admin_json(n, &["topic", "status", "-t", TOPIC]);
    assert_eq!(status["queues"].as_array().unwrap().len(), 2);
    assert_eq!(status["queues"][0]["maxOffset"], 0);
    assert!(status["queues"][0]["lastStoreTimestampMs"].is_null());
    let text = admin(n, &["topic", "status", "-t", TOPIC]);
    assert!(text.stdout.starts_with("BROKER"), "{}", text.stdout);
    let updated = admin(
        n,
        &[
            "topic",
            "update",
            "-t",
            TOPIC,
            "-b",
            broker_addr,
            "-r",
            "2",
            "-w",
            "2",
            "--perm",
            "6",
        ],
    );
    expect_exit(&updated, 0, "topic update");
}

/// Where `send` said the message went.
struct Sent {
    offset_msg_id: String,
    queue_id: i64,
    queue_offset: i64,
}

/// send, then find the message by offset id and by key, and consume it with a group.
fn send_then_look_up_and_consume(n: &str) -> Sent {
    let sent = admin_json(
        n,
        &[
            "send",
            "-t",
            TOPIC,
            "--tags",
            "TagA",
            "--keys",
            "order-1",
            "hello admin",
        ],
    );
    assert_eq!(sent["status"], "SEND_OK");
    let offset_msg_id = sent["offsetMsgId"].as_str().unwrap().to_owned();
    let by_id = admin_json(n, &["message", "id", &offset_msg_id]);
    assert_eq!(by_id["body"], "hello admin");
    assert_eq!(by_id["tags"], "TagA");
    assert_eq!(by_id["keys"][0], "order-1");
    assert_eq!(by_id["msgId"], sent["msgId"]);
    let by_key = admin_json(n, &["message", "key", "-t", TOPIC, "-k", "order-1"]);
    assert_eq!(by_key["messages"].as_array().unwrap().len(), 1);
    assert_eq!(by_key["messages"][0]["offsetMsgId"], offset_msg_id.as_str());
    let no_key = admin(n, &["message", "key", "-t", TOPIC, "-k", "no-such-key"]);
    expect_exit(&no_key, 1, "message key without a match");

    let consumed = admin_json(
        n,
        &["consume", "-t", TOPIC, "-g", "cli-group", "--from", "first"],
    );
    assert_eq!(consumed["body"], "hello admin");
    assert_eq!(consumed["offsetMsgId"], offset_msg_id.as_str());
    Sent {
        offset_msg_id,
        queue_id: sent["queueId"].as_i64().unwrap(),
        queue_offset: sent["queueOffset"].as_i64().unwrap(),
    }
}

/// The consume committed past the message: no lag left, and nothing more to consume.
fn progress_after_the_commit(n: &str, sent: &Sent) {
    let progress = admin_json(n, &["consumer", "progress", "-g", "cli-group", "-t", TOPIC]);
    assert_eq!(progress["totalLag"], 0, "{progress}");
    let queue = progress["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|queue| queue["queue"]["queueId"] == sent.queue_id)
        .unwrap();
    assert_eq!(queue["committedOffset"], sent.queue_offset + 1);
    assert_eq!(queue["brokerOffset"], sent.queue_offset + 1);
    let other = admin_json(
        n,
        &["consumer", "progress", "-g", "never-consumed", "-t", TOPIC],
    );
    assert_eq!(other["totalLag"], 1, "{other}");
    let text = admin(n, &["consumer", "progress", "-g", "cli-group", "-t", TOPIC]);
    assert!(text.stdout.contains("total lag 0"), "{}", text.stdout);
    let drained = admin(
        n,
        &[
            "--timeout-ms",
            "1000",
            "consume",
            "-t",
            TOPIC,
            "-g",
            "cli-group",
        ],
    );
    expect_exit(&drained, 3, "consume with nothing left");

    let status = admin_json(n, &["topic", "status", "-t", TOPIC]);
    let queue = &status["queues"][usize::try_from(sent.queue_id).unwrap()];
    assert_eq!(queue["maxOffset"], sent.queue_offset + 1);
    assert!(
        queue["lastStoreTimestampMs"].as_i64().unwrap() > 0,
        "{status}"
    );
    let by_id = admin_json(n, &["message", "id", &sent.offset_msg_id]);
    assert_eq!(by_id["queueOffset"], sent.queue_offset);
}

/// `consume --from last` long-polls: it prints a message sent after it started. Messages are
/// sent until it exits, since it cannot tell the test when its pulls are parked.
fn consume_from_last_waits_for_a_new_message(n: &str) {
    let mut consume = spawn(&[
        "-n",
        n,
        "--json",
        "--timeout-ms",
        "20000",
        "consume",
        "-t",
        TOPIC,
        "--from",
        "last",
    ]);
    let mut sent = Vec::new();
    wait_until(
        "consume --from last to print a new message",
        DEADLINE,
        || {
            if consume.has_exited() {
                return Some(());
            }
            let body = format!("late message {}", sent.len());
            let output = admin(n, &["send", "-t", TOPIC, &body]);
            expect_exit(&output, 0, "send while consume waits");
            sent.push(body);
            None
        },
    );
    let output = consume.finish(RUN_DEADLINE);
    expect_exit(&output, 0, "consume --from last");
    let message: Value = serde_json::from_str(&output.stdout).unwrap();
    let body = message["body"].as_str().unwrap();
    assert!(
        sent.iter().any(|sent| sent == body),
        "{body} not among {sent:?}"
    );
}

fn operation_failures_exit_with_1(n: &str, broker_addr: &str) {
    let unknown = admin(n, &["topic", "route", "-t", "NoSuchTopic"]);
    expect_exit(&unknown, 1, "route of an unknown topic");
    assert!(unknown.stderr.contains("NoSuchTopic"), "{}", unknown.stderr);
    let unknown_json = admin(n, &["--json", "topic", "status", "-t", "NoSuchTopic"]);
    expect_exit(&unknown_json, 1, "status of an unknown topic");
    let error: Value = serde_json::from_str(&unknown_json.stdout).unwrap();
    assert_eq!(error["exitCode"], 1);
    let no_cluster = admin(n, &["topic", "create", "-t", "X", "-c", "NoSuchCluster"]);
    expect_exit(&no_cluster, 1, "create on an unknown cluster");
    // A refusal keeps the broker's code and remark: an offset id of the broker with no
    // message behind it.
    let missing = OffsetMessageId {
        store_host: broker_addr.parse().unwrap(),
        commit_log_offset: 1 << 50,
    }
    .to_string();
    let refused = admin(n, &["--json", "message", "id", &missing]);
    expect_exit(&refused, 1, "view of a missing message");
    let error: Value = serde_json::from_str(&refused.stdout).unwrap();
    assert_eq!(error["responseCode"], 1, "{error}");
    let invalid_name = admin(
        n,
        &["--json", "topic", "create", "-t", "bad!name", "-c", CLUSTER],
    );
    expect_exit(&invalid_name, 1, "create with an invalid name");
    let error: Value = serde_json::from_str(&invalid_name.stdout).unwrap();
    assert_eq!(error["responseCode"], 1, "{error}");
    assert!(
        error["remark"].as_str().unwrap().contains("illegal"),
        "{error}"
    );
}

#[test]
fn usage_errors_exit_with_2() {
    for args in [
        &["topic", "create", "-t", "T"][..],
        &["--no-such-flag", "topic", "list"],
        &["topic", "create", "-t", "T", "-c", "C", "-b", "127.0.0.1:1"],
        &["topic", "create", "-t", "T", "-c", "C", "-r", "0"],
        &["message", "id", "not-an-id"],
        &["consume", "-t", "T", "--from", "middle"],
        &["-n", "no-port", "topic", "list"],
    ] {
        let output = spawn(args).finish(RUN_DEADLINE);
        expect_exit(&output, 2, &format!("{args:?}"));
    }
    let help = spawn(&["--help"]).finish(RUN_DEADLINE);
    expect_exit(&help, 0, "--help");
    assert!(help.stdout.contains("Exit codes"), "{}", help.stdout);
}

#[test]
fn unreachable_name_servers_exit_with_3() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap().to_string();
    drop(listener);
    let output = admin(&dead, &["topic", "list"]);
    expect_exit(&output, 3, "topic list with a dead NameServer");
    let output = admin(&dead, &["--json", "cluster", "list"]);
    expect_exit(&output, 3, "cluster list with a dead NameServer");
    let error: Value = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(error["exitCode"], 3);
}
