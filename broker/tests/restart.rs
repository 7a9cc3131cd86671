//! Restarts on the same store: after SIGTERM everything is back; after SIGKILL under SYNC_FLUSH
//! every acknowledged message is back; a different shard count is refused, and a broker given
//! none takes the count its store was created with (a new store: half the cores).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use ringmq_protocol::ResponseCode;
use ringmq_testkit::{
    BrokerOptions, BrokerProcess, ConnectionError, DEADLINE, EXIT_DEADLINE, Message, PERM_RW, Pull,
    Record, RemotingClient, SendCode, decode_records, expect_code, parse_send, wait_until,
};

const SHARDS: u32 = 2;

/// A broker with [`SHARDS`] shards on a temporary store it keeps across restarts.
fn sharded() -> BrokerOptions {
    BrokerOptions {
        shards: Some(SHARDS),
        ..BrokerOptions::default()
    }
}

/// Every record of the given queues, by (topic, queue).
fn snapshot(
    client: &mut RemotingClient,
    topics: &[(&str, i32)],
) -> BTreeMap<(String, i32), Vec<Record>> {
    let mut all = BTreeMap::new();
    for (topic, queues) in topics {
        for queue in 0..*queues {
            all.insert(
                ((*topic).to_owned(), queue),
                client.pull_all(topic, queue, "*"),
            );
        }
    }
    all
}

/// Fills the store of a first broker: two topics with messages (one created, one auto-created),
/// one empty topic, and committed consumer offsets.
fn fill(client: &mut RemotingClient) {
    client.create_topic("Durable", 4);
    client.create_topic("EmptyButKept", 2);
    for queue in 0..4 {
        for n in 0..5 {
            let message = Message::new("Durable", queue, format!("durable q{queue} #{n}"))
                .tags(if n % 2 == 0 { "Even" } else { "Odd" })
                .keys(&format!("dk-{queue}-{n}"))
                .property("n", &n.to_string());
            client.send(&message);
        }
        let born = ringmq_common::now_ms();
        let batch: Vec<Message> = (5..8)
            .map(|n| {
                Message::new("Durable", queue, format!("durable q{queue} batched #{n}"))
                    .born_at(born)
            })
            .collect();
        client.send_batch(queue, &batch);
    }
    client.send(&Message::new("AutoDurable", 1, "auto-created").default_topic_queue_nums(2));
    client.update_consumer_offset("DurableGroup", "Durable", 0, 3);
    client.update_consumer_offset("DurableGroup", "Durable", 1, 5);
}

#[test]
fn clean_restart_keeps_topics_offsets_and_messages() {
    let topics = [("Durable", 4), ("AutoDurable", 2), ("EmptyButKept", 2)];
    let mut broker = BrokerProcess::start(sharded());
    let mut client = broker.client();
    fill(&mut client);
    let before = snapshot(&mut client, &topics);
    let max_before: Vec<i64> = (0..4)
        .map(|queue| client.max_offset("Durable", queue))
        .collect();
    drop(client);
    let status = broker.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit: {status}");

    broker.restart();
    let mut client = broker.client();
    assert_eq!(
        snapshot(&mut client, &topics),
        before,
        "messages after the restart"
    );
    let max_after: Vec<i64> = (0..4)
        .map(|queue| client.max_offset("Durable", queue))
        .collect();
    assert_eq!(max_after, max_before);
    assert_eq!(
        client.query_consumer_offset("DurableGroup", "Durable", 0),
        3
    );
    assert_eq!(
        client.query_consumer_offset("DurableGroup", "Durable", 1),
        5
    );
    let empty = client.pull(&Pull::new("EmptyButKept", 1, 0));
    assert_eq!(
        empty.code,
        ResponseCode::PullNotFound,
        "the empty topic still exists"
    );
    let mut namesrv = broker.namesrv_client();
    for (topic, queues) in topics {
        let route = wait_until(&format!("a route for {topic}"), DEADLINE, || {
            namesrv.route(topic)
        });
        let queue = &route.queue_datas[0];
        assert_eq!(
            (queue.read_queue_nums, queue.perm),
            (queues, PERM_RW),
            "{topic}"
        );
        assert_eq!(
            route.broker_datas[0].master_addr(),
            Some(broker.addr().as_str())
        );
    }
    // Old ids still find their messages.
    let old = &before[&("Durable".to_owned(), 2)][3];
    let view = client.view_message(old.physical_offset);
    expect_code(
        &view,
        ResponseCode::Success,
        "VIEW_MESSAGE_BY_ID of a pre-restart id",
    );
    assert_eq!(decode_records(&view.body), std::slice::from_ref(old));
    // New messages continue the queues and never reuse a physical offset.
    let sent = client.send(&Message::new("Durable", 0, "after the restart"));
    assert_eq!(sent.queue_offset, max_before[0]);
    let old_offsets: HashSet<i64> = before
        .values()
        .flatten()
        .map(|record| record.physical_offset)
        .collect();
    assert!(
        !old_offsets.contains(&sent.physical_offset()),
        "physical offset reused"
    );
    let records = client.pull_all_with(&Pull::new("Durable", 0, max_before[0]));
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].body, b"after the restart");
    assert_eq!(records[0].store_host, broker.socket_addr());
}

/// A message the broker acknowledged before the kill.
#[derive(Debug, Clone)]
struct Ack {
    queue: i32,
    queue_offset: i64,
    physical_offset: i64,
    body: Vec<u8>,
}

const CRASH_TOPIC: &str = "Crash";
const CRASH_QUEUES: i32 = 8;
const SENDERS: usize = 3;
const WINDOW: usize = 16;
/// Per connection; far more than get sent before the kill.
const MAX_SENDS: usize = 200_000;
/// Acknowledgements to collect before the kill.
const ACKS_BEFORE_KILL: usize = 1000;

fn crash_body(sender: usize, index: usize) -> Vec<u8> {
    let mut body = format!("crash s{sender} i{index} ").into_bytes();
    body.resize(body.len() + 200, b'.');
    body
}

/// Sends pipelined until the connection fails; records every acknowledged message.
fn crash_sender(
    addr: std::net::SocketAddr,
    sender: usize,
    acks: &Arc<Mutex<Vec<Ack>>>,
    failures: &Arc<Mutex<Vec<String>>>,
) -> Result<(), ConnectionError> {
    let mut client = RemotingClient::connect(addr);
    let store_host = client.store_host();
    client.pipeline(
        MAX_SENDS,
        WINDOW,
        |index| {
            let queue = (index % CRASH_QUEUES as usize) as i32;
            Message::new(CRASH_TOPIC, queue, crash_body(sender, index)).outgoing(SendCode::V2)
        },
        |index, response| {
            if response.response_code() != ResponseCode::Success {
                failures.lock().unwrap().push(format!(
                    "sender {sender} #{index}: {} {:?}",
                    response.response_code(),
                    response.remark
                ));
                return false;
            }
            let sent = parse_send(&response, store_host, 1);
            acks.lock().unwrap().push(Ack {
                queue: sent.queue_id,
                queue_offset: sent.queue_offset,
                physical_offset: sent.physical_offset(),
                body: crash_body(sender, index),
            });
            true
        },
    )
}

/// Every record of the crash topic, by queue, checking offsets are dense and bodies unique and
/// ours.
fn recovered_records(client: &mut RemotingClient) -> BTreeMap<i32, Vec<Record>> {
    let mut bodies = HashSet::new();
    let mut by_queue = BTreeMap::new();
    for queue in 0..CRASH_QUEUES {
        let records = client.pull_all(CRASH_TOPIC, queue, "*");
        for (index, record) in records.iter().enumerate() {
            assert_eq!(
                record.queue_offset, index as i64,
                "queue {queue}: dense offsets"
            );
            assert!(
                record.body.starts_with(b"crash s"),
                "queue {queue}: a record we never sent"
            );
            assert!(bodies.insert(record.body.clone()), "a message stored twice");
        }
        assert_eq!(client.max_offset(CRASH_TOPIC, queue), records.len() as i64);
        by_queue.insert(queue, records);
    }
    by_queue
}

#[test]
fn sigkill_under_sync_flush_loses_no_acknowledged_message() {
    let mut broker = BrokerProcess::start(BrokerOptions {
        flush_disk_type: Some("SYNC_FLUSH".to_owned()),
        ..sharded()
    });
    broker.client().create_topic(CRASH_TOPIC, CRASH_QUEUES);
    let acks = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (addr, acks, failures) = (broker.socket_addr(), acks.clone(), failures.clone());
            thread::spawn(move || crash_sender(addr, sender, &acks, &failures))
        })
        .collect();
    let start = Instant::now();
    wait_until(
        "acknowledgements before the kill",
        Duration::from_secs(20),
        || acks.lock().unwrap().len() >= ACKS_BEFORE_KILL || !failures.lock().unwrap().is_empty(),
    );
    let failed = failures.lock().unwrap().clone();
    assert!(failed.is_empty(), "failed sends: {failed:?}");
    let at_kill = acks.lock().unwrap().len();
    let status = broker.kill();
    println!(
        "SIGKILL after {:?} with {at_kill} acknowledgements: {status}",
        start.elapsed()
    );
    let mut interrupted = 0;
    for sender in senders {
        match sender.join().expect("sender thread") {
            Ok(()) => {}
            Err(error) => {
                println!("sender stopped by the kill: {error}");
                interrupted += 1;
            }
        }
    }
    assert!(
        interrupted > 0,
        "every sender finished before the kill: not mid-stream"
    );
    let failed = failures.lock().unwrap().clone();
    assert!(failed.is_empty(), "failed sends: {failed:?}");
    let acks = acks.lock().unwrap().clone();
    println!("{} acknowledged in total", acks.len());

    broker.restart();
    let recovered = recovered_records(&mut broker.client());
    let total: usize = recovered.values().map(Vec::len).sum();
    println!("{total} messages recovered");
    for ack in &acks {
        let record = recovered[&ack.queue]
            .get(ack.queue_offset as usize)
            .unwrap_or_else(|| {
                panic!(
                    "acknowledged message at {}:{} lost ({} recovered in that queue)",
                    ack.queue,
                    ack.queue_offset,
                    recovered[&ack.queue].len()
                )
            });
        assert_eq!(
            record.body, ack.body,
            "body at {}:{}",
            ack.queue, ack.queue_offset
        );
        assert_eq!(record.physical_offset, ack.physical_offset);
    }
}

#[test]
fn restart_with_another_shard_count_is_refused() {
    let mut broker = BrokerProcess::start(sharded());
    let mut client = broker.client();
    client.create_topic("Kept", 2);
    client.send(&Message::new("Kept", 1, "must survive the refused start"));
    drop(client);
    assert_eq!(broker.terminate().code(), Some(0));

    let refused = BrokerOptions {
        store_dir: Some(broker.store_dir().to_path_buf()),
        shards: Some(1),
        ..BrokerOptions::default()
    }
    .run_to_exit(EXIT_DEADLINE);
    assert!(
        !refused.status.success(),
        "started with another shard count"
    );
    assert!(
        refused.stderr.to_lowercase().contains("shard"),
        "the refusal names the shard count:\n{}",
        refused.stderr
    );
    assert!(!refused.stdout.contains("listening on"));

    broker.restart();
    let records = broker.client().pull_all("Kept", 1, "*");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].body, b"must survive the refused start");
}

#[test]
fn restart_without_a_shard_count_takes_the_stores() {
    // Three shards: not the default of any machine with fewer than six cores, so a broker that
    // ignored the recorded count would look for queue 2 on the wrong shard.
    let mut broker = BrokerProcess::start(BrokerOptions {
        shards: Some(3),
        ..BrokerOptions::default()
    });
    let mut client = broker.client();
    client.create_topic("Kept", 3);
    for queue in 0..3 {
        client.send(&Message::new("Kept", queue, format!("queue {queue}")));
    }
    drop(client);
    assert_eq!(broker.terminate().code(), Some(0));

    let reopened = BrokerProcess::start(BrokerOptions {
        store_dir: Some(broker.store_dir().to_path_buf()),
        shards: None,
        ..BrokerOptions::default()
    });
    let mut client = reopened.client();
    for queue in 0..3 {
        let records = client.pull_all("Kept", queue, "*");
        assert_eq!(records.len(), 1, "queue {queue}");
        assert_eq!(records[0].body, format!("queue {queue}").as_bytes());
    }
}

#[test]
fn a_new_store_gets_half_the_cores_as_shards() {
    let broker = BrokerProcess::start(BrokerOptions::default());
    let recorded = std::fs::read_to_string(broker.store_dir().join("shards")).unwrap();
    let cores = thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(recorded.trim(), (cores / 2).max(1).to_string());
}
