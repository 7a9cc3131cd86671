//! End-to-end tests of the `ringmq-broker` binary over real loopback sockets: produce and consume,
//! offsets, long polling, sharding, consumer groups, retries, locks, admin and NameServer
//! registration. Each test starts its own broker on a fresh temporary store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashSet},
    thread,
    time::{Duration, Instant},
};

use ringmq_common::now_ms;
use ringmq_protocol::{
    RequestCode, ResponseCode, SerializeType,
    body::{MessageQueue, TopicRouteData},
    header::{
        NotifyConsumerIdsChangedRequestHeader, OffsetResponseHeader, QueryMessageResponseHeader,
    },
    message::properties::keys,
};
use ringmq_testkit::{
    BrokerOptions, BrokerProcess, CLUSTER_NAME, DEADLINE, DEFAULT_BROKER_NAME, DEFAULT_TOPIC,
    Message, NamesrvProcess, PERM_RW, Pull, PullResult, Record, RemotingClient, SendCode,
    decode_records, dlq_topic, expect_code, http_get, parse_metrics, parse_pull, retry_topic,
    wait_for_next_ms, wait_until,
};

/// Queues of TBW102, and the cap on the queues of a topic auto-created by a send.
const DEFAULT_TOPIC_QUEUES: i32 = 8;

/// A queue of a broker with the default name.
fn mq(topic: &str, queue_id: i32) -> MessageQueue {
    MessageQueue {
        broker_name: DEFAULT_BROKER_NAME.to_owned(),
        queue_id,
        topic: topic.to_owned(),
    }
}

/// A broker with `--shards 2`.
fn two_shards() -> BrokerOptions {
    BrokerOptions {
        shards: Some(2),
        ..BrokerOptions::default()
    }
}

// ------------------------------------------------------------------------------------------------
// Produce / consume round trip

/// A message sent in the round trip, with where the broker said it put it.
struct Sent {
    message: Message,
    physical_offset: i64,
    batched: bool,
}

const ROUND_TRIP_QUEUES: i32 = 4;
const TAGS: [&str; 3] = ["TagA", "TagB", "TagC"];

/// Sends to every queue: two SEND_MESSAGE_V2, one SEND_MESSAGE (long names) and a batch of three,
/// checking every response. Returns what each queue should hold, by queue offset.
fn send_round_trip_messages(client: &mut RemotingClient, topic: &str) -> Vec<Vec<Sent>> {
    let mut physical_offsets = HashSet::new();
    let mut queues = Vec::new();
    for queue in 0..ROUND_TRIP_QUEUES {
        let mut sent: Vec<Sent> = Vec::new();
        let message = |n: usize, kind: &str| {
            Message::new(topic, queue, format!("{kind} message {n} to queue {queue}"))
                .tags(TAGS[n % TAGS.len()])
                .keys(&format!("key-{queue}-{n} shared-{queue}"))
                .property("color", &format!("colour-{n}"))
                .property("origin", "e2e round trip")
                .flag(n as i32 + 100)
        };
        for (n, code) in [(0, SendCode::V2), (1, SendCode::V2), (2, SendCode::Long)] {
            let message = message(n, if code == SendCode::V2 { "v2" } else { "long" });
            let result = client.send_with(code, &message);
            assert_eq!(
                result.queue_offset,
                sent.len() as i64,
                "queue {queue}: queue offsets are consecutive"
            );
            assert!(physical_offsets.insert(result.physical_offset()));
            sent.push(Sent {
                message,
                physical_offset: result.physical_offset(),
                batched: false,
            });
        }
        let born = now_ms();
        let batch: Vec<Message> = (3..6)
            .map(|n| message(n, "batched").born_at(born))
            .collect();
        let result = client.send_batch(queue, &batch);
        assert_eq!(
            result.queue_offset,
            sent.len() as i64,
            "queue {queue}: a batch gets the next offset for its first message"
        );
        for (message, id) in batch.into_iter().zip(&result.ids) {
            assert!(
                physical_offsets.insert(id.commit_log_offset),
                "duplicate physical offset in {}",
                result.msg_id
            );
            sent.push(Sent {
                message,
                physical_offset: id.commit_log_offset,
                batched: true,
            });
        }
        queues.push(sent);
    }
    queues
}

/// Pulls a queue from 0 with `*` and checks every record and every response header.
fn verify_round_trip_queue(
    client: &mut RemotingClient,
    topic: &str,
    queue: i32,
    sent: &[Sent],
    since_ms: i64,
) {
    let max = sent.len() as i64;
    let mut records: Vec<Record> = Vec::new();
    let mut pull = Pull::new(topic, queue, 0);
    while records.len() < sent.len() {
        let result = client.pull(&pull);
        expect_code_pull(
            &result,
            ResponseCode::Success,
            &format!("pull {topic}:{queue}"),
        );
        let offsets = result.offsets();
        let last = result.records.last().unwrap().queue_offset;
        assert_eq!(offsets.next_begin_offset, last + 1, "nextBeginOffset");
        assert_eq!(offsets.min_offset, 0, "minOffset");
        assert_eq!(offsets.max_offset, max, "maxOffset");
        assert_eq!(offsets.suggest_which_broker_id, 0, "suggestWhichBrokerId");
        records.extend(result.records);
        pull.offset = offsets.next_begin_offset;
    }
    assert_eq!(
        records.len(),
        sent.len(),
        "queue {queue} holds what was sent"
    );
    for (index, (record, sent)) in records.iter().zip(sent).enumerate() {
        assert_eq!(record.queue_offset, index as i64, "queue offsets in order");
        assert_eq!(record.queue_id, queue);
        sent.message.assert_stored_as(record, CLUSTER_NAME);
        assert_eq!(
            record.physical_offset, sent.physical_offset,
            "physical offset = msgId"
        );
        assert_eq!(record.store_host, client.store_host(), "store host");
        assert_eq!(
            record.born_host,
            client.local_addr(),
            "born host = the producer's address"
        );
        assert_eq!(
            record.sys_flag, 0,
            "IPv4 hosts, no compression, not transactional"
        );
        assert_eq!(record.reconsume_times, 0);
        assert_eq!(record.prepared_transaction_offset, 0);
        assert!(
            record.store_timestamp_ms >= since_ms - 1000
                && record.store_timestamp_ms <= now_ms() + 1000,
            "store timestamp {} is not around now",
            record.store_timestamp_ms
        );
        if sent.batched {
            // The header's batch-level properties are appended to every message (§3.4).
            assert_eq!(
                record.property(keys::WAIT),
                Some("true"),
                "batch-level WAIT"
            );
        }
    }
    let at_end = client.pull(&Pull::new(topic, queue, max));
    expect_code_pull(
        &at_end,
        ResponseCode::PullNotFound,
        "pull at the max offset",
    );
    assert_eq!(at_end.next_begin_offset(), max);
    let beyond = client.pull(&Pull::new(topic, queue, max + 5));
    expect_code_pull(
        &beyond,
        ResponseCode::PullOffsetMoved,
        "pull beyond the max offset",
    );
    assert_eq!(
        beyond.next_begin_offset(),
        max,
        "moved back to the max offset"
    );
}

fn expect_code_pull(result: &PullResult, code: ResponseCode, what: &str) {
    assert_eq!(
        result.code, code,
        "{what}: expected {code}, got {} ({:?})",
        result.code, result.remark
    );
}

/// Tag subscriptions: only matching tags come back, and a scanned range without a match answers
/// PULL_RETRY_IMMEDIATELY with an advanced nextBeginOffset.
fn verify_tag_filtering(client: &mut RemotingClient) {
    let topic = "TagFilter";
    client.create_topic(topic, 1);
    let tags = [
        "TagA", "TagC", "TagB", "TagC", "TagC", "TagA", "TagB", "TagC",
    ];
    for (n, tag) in tags.iter().enumerate() {
        client.send(&Message::new(topic, 0, format!("{tag} #{n}")).tags(tag));
    }
    let matched = client.pull_all(topic, 0, "TagA || TagB");
    let bodies: Vec<String> = matched
        .iter()
        .map(|record| String::from_utf8(record.body.clone()).unwrap())
        .collect();
    assert_eq!(bodies, ["TagA #0", "TagB #2", "TagA #5", "TagB #6"]);

    let topic = "OnlyTagC";
    client.create_topic(topic, 1);
    for n in 0..5 {
        client.send(&Message::new(topic, 0, format!("c{n}")).tags("TagC"));
    }
    let mut offset = 0;
    for _ in 0..5 {
        let result = client.pull(&Pull::new(topic, 0, offset).subscription("TagA"));
        expect_code_pull(
            &result,
            ResponseCode::PullRetryImmediately,
            "a scanned range without TagA",
        );
        let next = result.next_begin_offset();
        assert!(
            next > offset && next <= 5,
            "nextBeginOffset {next} must advance past the scanned entries (from {offset})"
        );
        offset = next;
        if offset == 5 {
            break;
        }
    }
    assert_eq!(offset, 5, "the whole queue was scanned");
    let result = client.pull(&Pull::new(topic, 0, 5).subscription("TagA"));
    expect_code_pull(&result, ResponseCode::PullNotFound, "pull at the end");
}

fn round_trip(options: BrokerOptions, serialize_type: SerializeType) {
    let broker = BrokerProcess::start(options);
    let mut client = broker.client().with_serialize_type(serialize_type);
    let topic = "RoundTrip";
    let since_ms = now_ms();
    client.create_topic(topic, ROUND_TRIP_QUEUES);
    let queues = send_round_trip_messages(&mut client, topic);
    for (queue, sent) in queues.iter().enumerate() {
        verify_round_trip_queue(&mut client, topic, queue as i32, sent, since_ms);
    }
    verify_tag_filtering(&mut client);
}

#[test]
fn round_trip_with_json_headers() {
    round_trip(BrokerOptions::default(), SerializeType::Json);
}

#[test]
fn round_trip_with_binary_headers() {
    round_trip(BrokerOptions::default(), SerializeType::RocketMq);
}

#[test]
fn round_trip_on_the_poll_driver() {
    round_trip(
        BrokerOptions::default().with_args(&["--io-driver", "poll"]),
        SerializeType::Json,
    );
}

// ------------------------------------------------------------------------------------------------
// Offsets, lookups by time, id and key

/// Sends `count` messages to queue 0, each stored in a later millisecond than the one before,
/// and returns them as pulled.
fn send_spaced_messages(client: &mut RemotingClient, topic: &str, count: usize) -> Vec<Record> {
    for n in 0..count {
        let keys = if n + 1 == count {
            "multi-a multi-b".to_owned()
        } else {
            format!("okey-{n}")
        };
        client.send(&Message::new(topic, 0, format!("offsets #{n}")).keys(&keys));
        wait_for_next_ms(now_ms());
    }
    let records = client.pull_all(topic, 0, "*");
    assert_eq!(records.len(), count);
    for pair in records.windows(2) {
        assert!(pair[0].store_timestamp_ms < pair[1].store_timestamp_ms);
    }
    records
}

fn verify_consumer_offsets(client: &mut RemotingClient, topic: &str) {
    // An unknown group on an empty queue: offset 0 or "not found" (§3.6).
    let response = client.query_consumer_offset_raw("NeverCommitted", topic, 1);
    match response.response_code() {
        ResponseCode::Success => {
            let header: OffsetResponseHeader = response.header().unwrap();
            assert_eq!(header.offset, 0, "no committed offset on an empty queue");
        }
        ResponseCode::QueryNotFound => {}
        other => panic!("QUERY_CONSUMER_OFFSET of an unknown group: {other}"),
    }
    let group = "OffsetGroup";
    client.update_consumer_offset(group, topic, 0, 3);
    assert_eq!(client.query_consumer_offset(group, topic, 0), 3);
    client.update_consumer_offset(group, topic, 1, 0);
    assert_eq!(
        client.query_consumer_offset(group, topic, 0),
        3,
        "queues are independent"
    );
    // Java consumers commit oneway: stored, and never answered.
    let oneway = client.send_oneway(
        RequestCode::UpdateConsumerOffset,
        ringmq_protocol::header::UpdateConsumerOffsetRequestHeader {
            consumer_group: group,
            topic,
            queue_id: 0,
            commit_offset: 4,
            only_forward: None,
        },
        &[],
    );
    wait_until("the oneway commit to be stored", DEADLINE, || {
        client.query_consumer_offset(group, topic, 0) == 4
    });
    assert!(
        client
            .unexpected_responses()
            .iter()
            .all(|response| response.opaque != oneway),
        "the broker answered a oneway request"
    );
    // A pull with the commit flag stores commitOffset.
    let committer = "PullCommitter";
    let result = client.pull(&Pull::new(topic, 0, 0).group(committer).commit(5));
    expect_code_pull(&result, ResponseCode::Success, "pull with commit");
    assert_eq!(client.query_consumer_offset(committer, topic, 0), 5);
}

fn verify_lookups(client: &mut RemotingClient, topic: &str, records: &[Record]) {
    let count = records.len() as i64;
    assert_eq!(client.max_offset(topic, 0), count);
    assert_eq!(client.max_offset(topic, 1), 0);
    assert_eq!(client.min_offset(topic, 0), 0);
    for record in records {
        assert_eq!(
            client.search_offset(topic, 0, record.store_timestamp_ms),
            record.queue_offset,
            "SEARCH_OFFSET_BY_TIMESTAMP with an exact store time"
        );
    }
    assert_eq!(
        client.search_offset(topic, 0, records[0].store_timestamp_ms - 60_000),
        0
    );
    let future = client.search_offset(topic, 0, now_ms() + 3_600_000);
    assert!(
        future == count - 1 || future == count,
        "a time after the last message gives the last offset or the max offset, got {future}"
    );
    assert_eq!(
        client.earliest_store_time(topic, 0),
        records[0].store_timestamp_ms
    );
    let target = &records[2];
    let view = client.view_message(target.physical_offset);
    expect_code(&view, ResponseCode::Success, "VIEW_MESSAGE_BY_ID");
    assert_eq!(decode_records(&view.body), std::slice::from_ref(target));
    let missing = client.view_message(target.physical_offset + (1 << 40));
    assert_ne!(
        missing.response_code(),
        ResponseCode::Success,
        "view of nothing"
    );
}

fn verify_query_by_key(client: &mut RemotingClient, topic: &str, records: &[Record]) {
    for (key, expected) in [
        ("okey-1", &records[1]),
        ("multi-b", records.last().unwrap()),
    ] {
        // The index may be written after the send is acknowledged.
        let found = wait_until(&format!("QUERY_MESSAGE to find {key}"), DEADLINE, || {
            let response = client.query_message(topic, key);
            match response.response_code() {
                ResponseCode::Success => Some(response),
                ResponseCode::QueryNotFound => None,
                other => panic!("QUERY_MESSAGE {key}: {other} ({:?})", response.remark),
            }
        });
        let _: QueryMessageResponseHeader = found
            .header()
            .expect("QUERY_MESSAGE response carries the index update fields");
        let matches: Vec<Record> = decode_records(&found.body)
            .into_iter()
            .filter(|record| {
                record
                    .property(keys::KEYS)
                    .is_some_and(|keys| keys.split(' ').any(|k| k == key))
            })
            .collect();
        assert_eq!(
            matches,
            std::slice::from_ref(expected),
            "QUERY_MESSAGE {key}"
        );
    }
    let none = client.query_message(topic, "no-such-key");
    expect_code(
        &none,
        ResponseCode::QueryNotFound,
        "QUERY_MESSAGE of an unknown key",
    );
}

#[test]
fn offsets_lookups_and_queries() {
    let broker = BrokerProcess::start(BrokerOptions::default());
    let mut client = broker.client();
    let topic = "Offsets";
    client.create_topic(topic, 2);
    verify_consumer_offsets_before_messages(&mut client, topic);
    let records = send_spaced_messages(&mut client, topic, 6);
    verify_consumer_offsets(&mut client, topic);
    verify_lookups(&mut client, topic, &records);
    verify_query_by_key(&mut client, topic, &records);
}

fn verify_consumer_offsets_before_messages(client: &mut RemotingClient, topic: &str) {
    let response = client.query_consumer_offset_raw("EarlyGroup", topic, 0);
    assert!(
        matches!(
            response.response_code(),
            ResponseCode::Success | ResponseCode::QueryNotFound
        ),
        "QUERY_CONSUMER_OFFSET on an empty queue: {} ({:?})",
        response.response_code(),
        response.remark
    );
}

// ------------------------------------------------------------------------------------------------
// Long polling

#[test]
fn long_polling_answers_when_a_message_arrives_or_the_hold_expires() {
    let broker = BrokerProcess::start(two_shards());
    let topic = "LongPoll";
    let mut consumer = broker.client();
    let mut producer = broker.client();
    consumer.create_topic(topic, 2);
    producer.send(&Message::new(topic, 0, "already there"));
    let max = consumer.max_offset(topic, 0);
    assert_eq!(max, 1);

    let pull = Pull::new(topic, 0, max).suspend(10_000);
    let opaque = consumer.send_request(RequestCode::PullMessage, pull.header(), &[]);
    // A request for the same queue on the same connection, answered after the pull was read.
    assert_eq!(consumer.max_offset(topic, 0), max);
    assert!(
        !consumer.has_response(opaque),
        "a pull at the max offset with FLAG_SUSPEND was answered at once instead of held"
    );
    // A message on another queue must not release it.
    producer.send(&Message::new(topic, 1, "other queue"));
    assert_eq!(consumer.max_offset(topic, 1), 1);
    assert!(
        !consumer.has_response(opaque),
        "a send to queue 1 released a pull held on queue 0"
    );

    let message = Message::new(topic, 0, "wake up").tags("TagW");
    let start = Instant::now();
    let sent = producer.send(&message);
    let response = consumer.wait_response(opaque, Duration::from_secs(15));
    let latency = start.elapsed();
    println!("long-poll release latency (from the start of the send): {latency:?}");
    let result = parse_pull(&response);
    expect_code_pull(
        &result,
        ResponseCode::Success,
        "the held pull (a PULL_NOT_FOUND here means it was released early or never woken)",
    );
    assert_eq!(result.records.len(), 1);
    let record = &result.records[0];
    assert_eq!(record.queue_offset, max);
    assert_eq!(record.physical_offset, sent.physical_offset());
    message.assert_stored_as(record, CLUSTER_NAME);
    assert!(
        latency < Duration::from_secs(1),
        "the held pull answered {latency:?} after the send"
    );

    let offset = consumer.max_offset(topic, 0);
    let start = Instant::now();
    let opaque = consumer.send_request(
        RequestCode::PullMessage,
        Pull::new(topic, 0, offset).suspend(300).header(),
        &[],
    );
    let response = consumer.wait_response(opaque, Duration::from_secs(15));
    let held = start.elapsed();
    println!("a 300 ms hold with no message answered after {held:?}");
    let result = parse_pull(&response);
    expect_code_pull(&result, ResponseCode::PullNotFound, "an expired hold");
    assert_eq!(result.next_begin_offset(), offset);
    assert!(
        held >= Duration::from_millis(250) && held <= Duration::from_secs(5),
        "a 300 ms hold answered after {held:?}"
    );

    // A client that goes away while its pull is held does not disturb anyone.
    let mut leaver = broker.client();
    leaver.send_request(
        RequestCode::PullMessage,
        Pull::new(topic, 0, offset).suspend(10_000).header(),
        &[],
    );
    assert_eq!(leaver.max_offset(topic, 0), offset);
    drop(leaver);
    let after = producer.send(&Message::new(topic, 0, "after the leaver"));
    assert_eq!(after.queue_offset, offset);
    let result = consumer.pull(&Pull::new(topic, 0, offset));
    expect_code_pull(&result, ResponseCode::Success, "pull after the leaver");
}

// ------------------------------------------------------------------------------------------------
// Sharding

const SHARDED_QUEUES: i32 = 8;

/// Sends from `clients` concurrently, `per_queue` messages per queue each; returns the bodies the
/// broker acknowledged, by queue, in queue-offset order, after checking that the offsets of each
/// queue continue exactly from `expected` without gaps or repeats.
fn send_concurrently(
    clients: Vec<RemotingClient>,
    topic: &'static str,
    per_queue: usize,
    expected: &mut [Vec<Vec<u8>>],
) -> Vec<RemotingClient> {
    let senders: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(connection, mut client)| {
            thread::spawn(move || {
                let mut acks = Vec::new();
                for n in 0..per_queue {
                    for queue in 0..SHARDED_QUEUES {
                        let body = format!("concurrent c{connection} n{n} q{queue}");
                        let result = client.send(&Message::new(topic, queue, body.clone()));
                        acks.push((queue, result.queue_offset, body.into_bytes()));
                    }
                }
                (client, acks)
            })
        })
        .collect();
    let mut clients = Vec::new();
    let mut by_queue: BTreeMap<i32, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
    for sender in senders {
        let (client, acks) = sender.join().expect("sender thread");
        clients.push(client);
        for (queue, offset, body) in acks {
            by_queue.entry(queue).or_default().push((offset, body));
        }
    }
    for (queue, mut acks) in by_queue {
        acks.sort();
        let bodies = &mut expected[queue as usize];
        let offsets: Vec<i64> = acks.iter().map(|(offset, _)| *offset).collect();
        let want: Vec<i64> = (bodies.len() as i64..(bodies.len() + acks.len()) as i64).collect();
        assert_eq!(
            offsets, want,
            "queue {queue}: concurrent sends got consecutive offsets"
        );
        bodies.extend(acks.into_iter().map(|(_, body)| body));
    }
    clients
}

#[test]
fn connections_on_two_shards_share_consecutive_queue_offsets() {
    let broker = BrokerProcess::start(two_shards());
    let topic = "Sharded";
    // With SO_REUSEPORT the kernel spreads these over both shards' listeners.
    let mut clients: Vec<RemotingClient> = (0..6).map(|_| broker.client()).collect();
    clients[0].create_topic(topic, SHARDED_QUEUES);
    let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(); SHARDED_QUEUES as usize];
    for round in 0..2 {
        for (connection, client) in clients.iter_mut().enumerate() {
            for queue in 0..SHARDED_QUEUES {
                let body = format!("sequential r{round} c{connection} q{queue}");
                let result = client.send(&Message::new(topic, queue, body.clone()));
                let bodies = &mut expected[queue as usize];
                assert_eq!(
                    result.queue_offset,
                    bodies.len() as i64,
                    "queue {queue}: connection {connection} got the next offset"
                );
                bodies.push(body.into_bytes());
            }
        }
    }
    let mut clients = send_concurrently(clients, topic, 3, &mut expected);
    for (connection, client) in clients.iter_mut().enumerate() {
        for queue in 0..SHARDED_QUEUES {
            let bodies: Vec<Vec<u8>> = client
                .pull_all(topic, queue, "*")
                .into_iter()
                .map(|record| record.body)
                .collect();
            assert_eq!(
                bodies, expected[queue as usize],
                "connection {connection} reads queue {queue}"
            );
        }
    }
    // The fast port P - 2 serves the same requests on the same queues.
    let mut fast = broker.fast_client();
    for queue in 0..SHARDED_QUEUES {
        let body = format!("fast port q{queue}");
        let result = fast.send(&Message::new(topic, queue, body.clone()));
        let bodies = &mut expected[queue as usize];
        assert_eq!(
            result.queue_offset,
            bodies.len() as i64,
            "fast port offsets continue"
        );
        bodies.push(body.into_bytes());
    }
    for queue in 0..SHARDED_QUEUES {
        let records = fast.pull_all(topic, queue, "*");
        let bodies: Vec<Vec<u8>> = records.iter().map(|record| record.body.clone()).collect();
        assert_eq!(
            bodies, expected[queue as usize],
            "fast port reads queue {queue}"
        );
        assert!(
            records
                .iter()
                .all(|record| record.store_host == broker.socket_addr())
        );
        assert_eq!(fast.max_offset(topic, queue), bodies.len() as i64);
    }
}

// ------------------------------------------------------------------------------------------------
// Consumer groups

fn expect_notify(client: &mut RemotingClient, group: &str, after: &str) {
    let request = client
        .next_server_request(DEADLINE)
        .unwrap_or_else(|| panic!("no NOTIFY_CONSUMER_IDS_CHANGED after {after}"));
    assert_eq!(
        request.request_code(),
        RequestCode::NotifyConsumerIdsChanged,
        "broker-initiated request after {after}"
    );
    assert!(!request.is_response());
    assert!(
        request.is_oneway(),
        "NOTIFY_CONSUMER_IDS_CHANGED is oneway (§3.7)"
    );
    let header: NotifyConsumerIdsChangedRequestHeader<'_> = request.header().unwrap();
    assert_eq!(header.consumer_group, group);
}

fn verify_retry_topic_exists(
    client: &mut RemotingClient,
    namesrv: &mut RemotingClient,
    group: &str,
) {
    let retry = retry_topic(group);
    assert_eq!(client.max_offset(&retry, 0), 0);
    let result = client.pull(&Pull::new(&retry, 0, 0).group(group));
    expect_code_pull(
        &result,
        ResponseCode::PullNotFound,
        "pull of the new %RETRY% topic",
    );
    let route = wait_until(&format!("a route for {retry}"), DEADLINE, || {
        namesrv.route(&retry)
    });
    assert_eq!(route.queue_datas.len(), 1);
    assert_eq!(
        route.queue_datas[0].read_queue_nums, 1,
        "%RETRY% topics have one queue"
    );
}

#[test]
fn heartbeats_register_consumers_and_notify_the_group() {
    let broker = BrokerProcess::start(two_shards());
    let (group, topic) = ("HeartbeatGroup", "HeartbeatTopic");
    let mut first = broker.client();
    first.create_topic(topic, 1);
    assert_eq!(first.consumer_ids(group), None, "no consumer yet");
    first.heartbeat("cid-1", group, &[(topic, "TagA")]);
    assert_eq!(first.consumer_ids(group), Some(vec!["cid-1".to_owned()]));
    // The first consumer may have been told about its own arrival; only what follows counts.
    let earlier = first.drain_server_requests();
    println!("requests to the first consumer before the second joined: {earlier:?}");

    let mut second = broker.binary_client();
    second.heartbeat("cid-2", group, &[(topic, "TagA")]);
    expect_notify(&mut first, group, "the second consumer joined");
    let both = Some(vec!["cid-1".to_owned(), "cid-2".to_owned()]);
    assert_eq!(first.consumer_ids(group), both);
    assert_eq!(second.consumer_ids(group), both);

    verify_retry_topic_exists(&mut first, &mut broker.namesrv_client(), group);

    // A pull without FLAG_SUBSCRIPTION uses the heartbeat's subscription (TagA).
    for (n, tag) in ["TagA", "TagB", "TagA", "TagC"].iter().enumerate() {
        second.send(&Message::new(topic, 0, format!("{tag} {n}")).tags(tag));
    }
    let records =
        first.pull_all_with(&Pull::new(topic, 0, 0).group(group).heartbeat_subscription());
    let bodies: Vec<&[u8]> = records
        .iter()
        .map(|record| record.body.as_slice())
        .collect();
    assert_eq!(bodies, [b"TagA 0".as_slice(), b"TagA 2".as_slice()]);
    let unknown = first.pull(
        &Pull::new(topic, 0, 0)
            .group("NoHeartbeat")
            .heartbeat_subscription(),
    );
    expect_code_pull(
        &unknown,
        ResponseCode::SubscriptionNotExist,
        "a pull without subscription for a group that never sent a heartbeat",
    );

    second.unregister_consumer("cid-2", group);
    assert_eq!(first.consumer_ids(group), Some(vec!["cid-1".to_owned()]));
    expect_notify(&mut first, group, "the second consumer unregistered");

    // A closed connection leaves the group too (§3.7).
    drop(first);
    wait_until("the closed consumer to leave the group", DEADLINE, || {
        second.consumer_ids(group).is_none()
    });
}

/// The first record of queue 0 of `topic`, if the topic exists and holds one.
fn first_record(client: &mut RemotingClient, topic: &str) -> Option<Record> {
    let result = client.pull(&Pull::new(topic, 0, 0));
    match result.code {
        ResponseCode::Success => result.records.into_iter().next(),
        ResponseCode::PullNotFound | ResponseCode::TopicNotExist => None,
        other => panic!("pull {topic}: {other} ({:?})", result.remark),
    }
}

#[test]
fn sent_back_messages_go_to_retry_then_to_the_dead_letter_queue() {
    let broker = BrokerProcess::start(BrokerOptions::default());
    let mut client = broker.client();
    let (topic, group) = ("RetrySource", "RetryGroup");
    client.create_topic(topic, 1);
    client.heartbeat("cid-retry", group, &[(topic, "*")]);
    let original = Message::new(topic, 0, "please retry me")
        .tags("TagR")
        .keys("retry-key")
        .property("trace", "t-1");
    let sent = client.send(&original);

    let response = client.send_back(
        sent.physical_offset(),
        group,
        0,
        (&sent.msg_id, topic),
        None,
    );
    expect_code(&response, ResponseCode::Success, "CONSUMER_SEND_MSG_BACK");
    // ASSUMPTION: delay levels are not delivered by the broker yet, so the retry copy may be
    // stored straight into %RETRY%<group> instead of SCHEDULE_TOPIC_XXXX (level 3 = 10 s).
    // The deadline also covers a broker that does deliver level 3 after 10 s.
    let retry = retry_topic(group);
    let retried = wait_until("the message in %RETRY%", Duration::from_secs(15), || {
        first_record(&mut client, &retry)
    });
    assert_eq!(retried.topic, retry);
    assert_eq!(retried.reconsume_times, 1, "reconsumeTimes + 1");
    assert_eq!(retried.property(keys::RETRY_TOPIC), Some(topic));
    assert_eq!(retried.body, original.body);
    for (name, value) in &original.properties {
        assert_eq!(retried.property(name), Some(value.as_str()), "{name} kept");
    }
    let origin = retried
        .property(keys::ORIGIN_MESSAGE_ID)
        .expect("ORIGIN_MESSAGE_ID set");
    assert!(
        origin.eq_ignore_ascii_case(&sent.msg_id),
        "ORIGIN_MESSAGE_ID {origin}"
    );

    // Its reconsumeTimes (1) reaches maxReconsumeTimes (1): the dead-letter queue.
    let response = client.send_back(
        retried.physical_offset,
        group,
        0,
        (&sent.msg_id, topic),
        Some(1),
    );
    expect_code(
        &response,
        ResponseCode::Success,
        "second CONSUMER_SEND_MSG_BACK",
    );
    let dlq = dlq_topic(group);
    let dead = wait_until("the message in %DLQ%", DEADLINE, || {
        first_record(&mut client, &dlq)
    });
    assert_eq!(dead.topic, dlq);
    assert_eq!(dead.queue_id, 0);
    assert_eq!(dead.body, original.body);
    assert_eq!(dead.property(keys::RETRY_TOPIC), Some(topic));
    assert_eq!(dead.reconsume_times, 2, "reconsumeTimes + 1 again (§3.8)");
    assert_eq!(
        client.max_offset(&retry, 0),
        1,
        "nothing more went to %RETRY%"
    );
}

#[test]
fn queue_locks_are_exclusive_until_released() {
    let broker = BrokerProcess::start(BrokerOptions::default());
    let (topic, group) = ("Locked", "LockGroup");
    let mut a = broker.client();
    let mut b = broker.client();
    a.create_topic(topic, 4);
    let all: Vec<_> = (0..4).map(|queue| mq(topic, queue)).collect();
    assert_eq!(a.lock(group, "cid-A", &all), all, "A locks every queue");
    assert_eq!(
        a.lock(group, "cid-A", &all[2..]),
        all[2..],
        "A may re-lock its queues"
    );
    assert_eq!(
        b.lock(group, "cid-B", &all),
        [],
        "B gets none of A's queues"
    );
    a.unlock(group, "cid-A", &all[..2]);
    assert_eq!(
        b.lock(group, "cid-B", &all),
        all[..2],
        "B gets what A released"
    );
    assert_eq!(a.lock(group, "cid-A", &all), all[2..], "A keeps the rest");
    a.unlock(group, "cid-A", &all);
    assert_eq!(b.lock(group, "cid-B", &all), all, "B gets everything");
}

// ------------------------------------------------------------------------------------------------
// Admin and observability

#[test]
fn runtime_info_and_metrics_report_the_broker() {
    const SENDS: u32 = 25;
    let broker = BrokerProcess::start(BrokerOptions {
        metrics_port: Some(0),
        ..BrokerOptions::default()
    });
    let metrics = broker.metrics_addr().expect("a metrics endpoint");
    let mut client = broker.client();
    for mut client in [broker.client(), broker.binary_client()] {
        let info = client.runtime_info();
        let version = info.get("brokerVersionDesc").expect("brokerVersionDesc");
        assert!(!version.is_empty());
    }
    let (status, text) = http_get(metrics, "/metrics");
    assert_eq!(status, 200, "GET /metrics");
    assert!(
        text.contains("ringmq_"),
        "metrics text has ringmq_ series:\n{text}"
    );
    let before = totals_by_name(&text);

    client.create_topic("Metered", 2);
    for n in 0..SENDS {
        client.send(&Message::new(
            "Metered",
            (n % 2) as i32,
            format!("metered {n}"),
        ));
    }
    let grown = wait_until("a ringmq_ counter to count the sends", DEADLINE, || {
        let (status, text) = http_get(metrics, "/metrics");
        assert_eq!(status, 200);
        let grown: Vec<(String, f64)> = totals_by_name(&text)
            .into_iter()
            .filter_map(|(name, after)| {
                let delta = after - before.get(&name).copied().unwrap_or(0.0);
                (delta >= f64::from(SENDS)).then_some((name, delta))
            })
            .collect();
        (!grown.is_empty()).then_some(grown)
    });
    println!("ringmq_ metrics that grew by at least {SENDS}: {grown:?}");
}

/// Sums the samples of every `ringmq_` metric over its label sets (shards may report apart).
fn totals_by_name(text: &str) -> BTreeMap<String, f64> {
    let mut totals = BTreeMap::new();
    for (series, value) in parse_metrics(text) {
        let name = series.split('{').next().unwrap().to_owned();
        if name.starts_with("ringmq_") {
            *totals.entry(name).or_insert(0.0) += value;
        }
    }
    totals
}

fn assert_route(
    route: &TopicRouteData,
    (broker_name, cluster, addr): (&str, &str, std::net::SocketAddr),
    queues: i32,
    perm: i32,
) {
    let broker = route
        .broker_datas
        .iter()
        .find(|data| data.broker_name == broker_name)
        .unwrap_or_else(|| panic!("route has no broker {broker_name}: {route:?}"));
    assert_eq!(broker.cluster, cluster);
    assert_eq!(broker.master_addr(), Some(addr.to_string().as_str()));
    let queue = route
        .queue_datas
        .iter()
        .find(|data| data.broker_name == broker_name)
        .unwrap_or_else(|| panic!("route has no queues on {broker_name}: {route:?}"));
    assert_eq!(
        (queue.read_queue_nums, queue.write_queue_nums, queue.perm),
        (queues, queues, perm),
        "queue data {queue:?}"
    );
}

#[test]
fn topics_are_registered_with_the_embedded_nameserver() {
    let broker = BrokerProcess::start(BrokerOptions {
        broker_name: "broker-e2e".to_owned(),
        cluster: Some("E2ECluster".to_owned()),
        ..BrokerOptions::default()
    });
    let me = ("broker-e2e", "E2ECluster", broker.socket_addr());
    let mut client = broker.client();
    let mut namesrv = broker.namesrv_client();
    client.create_topic("Registered4", 4);
    client.create_topic("Registered2", 2);
    for (topic, queues) in [("Registered4", 4), ("Registered2", 2)] {
        let route = wait_until(&format!("a route for {topic}"), DEADLINE, || {
            namesrv.route(topic)
        });
        assert_route(&route, me, queues, PERM_RW);
    }
    let template = wait_until("a route for TBW102", DEADLINE, || {
        namesrv.route(DEFAULT_TOPIC)
    });
    assert_route(&template, me, DEFAULT_TOPIC_QUEUES, 7);
    client.send(&Message::new("Registered2", 1, "clustered"));
    let records = client.pull_all("Registered2", 1, "*");
    assert_eq!(records[0].property(keys::CLUSTER), Some("E2ECluster"));
}

#[test]
fn defaults_template_topic_and_auto_creation() {
    let broker = BrokerProcess::start(BrokerOptions::default());
    let me = (DEFAULT_BROKER_NAME, CLUSTER_NAME, broker.socket_addr());
    let mut client = broker.client();
    let mut namesrv = broker.namesrv_client();
    client.send(&Message::new("AutoWide", 0, "wide").default_topic_queue_nums(16));
    client.send(&Message::new("AutoNarrow", 0, "narrow").default_topic_queue_nums(3));
    let wide = wait_until("a route for AutoWide", DEADLINE, || {
        namesrv.route("AutoWide")
    });
    assert_route(&wide, me, DEFAULT_TOPIC_QUEUES, PERM_RW);
    let narrow = wait_until("a route for AutoNarrow", DEADLINE, || {
        namesrv.route("AutoNarrow")
    });
    assert_route(&narrow, me, 3, PERM_RW);

    client.send(&Message::new("AutoWide", 7, "last queue"));
    let beyond = client.send_raw(SendCode::V2, &Message::new("AutoNarrow", 3, "beyond"));
    expect_code(
        &beyond,
        ResponseCode::SystemError,
        "send to queue 3 of a 3-queue topic",
    );
    let inside = client.pull(&Pull::new("AutoNarrow", 2, 0));
    expect_code_pull(
        &inside,
        ResponseCode::PullNotFound,
        "pull of an empty queue",
    );
    let outside = client.pull(&Pull::new("AutoNarrow", 3, 0));
    expect_code_pull(&outside, ResponseCode::SystemError, "pull of queue 3 of 3");
    let template = wait_until("a route for TBW102", DEADLINE, || {
        namesrv.route(DEFAULT_TOPIC)
    });
    assert_route(&template, me, DEFAULT_TOPIC_QUEUES, 7);
    // The default maxMessageSize is 4 MiB.
    let limit = 4 << 20;
    let fits = client.send(&Message::new("AutoWide", 1, vec![b'f'; limit - (4 << 10)]));
    assert_eq!(fits.queue_id, 1);
    let too_big = client.send_raw(
        SendCode::V2,
        &Message::new("AutoWide", 1, vec![b'b'; limit + (4 << 10)]),
    );
    expect_code(&too_big, ResponseCode::MessageIllegal, "a body over 4 MiB");
    // A body well over the limit still fits a 16 MiB frame: refused the same way, and the
    // connection stays usable (a closed one would fail every request in flight on it).
    let far_too_big = client.send_raw(
        SendCode::V2,
        &Message::new("AutoWide", 1, vec![b'b'; 12 << 20]),
    );
    expect_code(
        &far_too_big,
        ResponseCode::MessageIllegal,
        "a body of 12 MiB",
    );
    assert_eq!(
        client.max_offset("AutoWide", 1),
        1,
        "the big body was not stored"
    );
}

#[test]
fn broker_conf_is_read_and_flags_override_it() {
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("broker.conf");
    std::fs::write(
        &conf,
        "# RocketMQ-style broker.conf\n\
         brokerClusterName = ConfCluster\n\
         brokerName=conf-broker\n\
         autoCreateTopicEnable=false\n",
    )
    .unwrap();
    let conf = conf.display().to_string();
    // No --cluster flag: the file's brokerClusterName must be the one read.
    let broker = BrokerProcess::start(BrokerOptions {
        broker_name: "flag-broker".to_owned(),
        cluster: None,
        ..BrokerOptions::default().with_args(&["-c", &conf])
    });
    let mut client = broker.client();
    let refused = client.send_raw(SendCode::V2, &Message::new("NotCreated", 0, "x"));
    expect_code(
        &refused,
        ResponseCode::TopicNotExist,
        "autoCreateTopicEnable=false from the file",
    );
    client.create_topic("FromConf", 1);
    client.send(&Message::new("FromConf", 0, "conf"));
    let records = client.pull_all("FromConf", 0, "*");
    assert_eq!(records[0].property(keys::CLUSTER), Some("ConfCluster"));
    let mut namesrv = broker.namesrv_client();
    let route = wait_until("a route for FromConf", DEADLINE, || {
        namesrv.route("FromConf")
    });
    assert_route(
        &route,
        ("flag-broker", "ConfCluster", broker.socket_addr()),
        1,
        PERM_RW,
    );
}

#[test]
fn a_broker_registers_with_an_external_nameserver() {
    // Broker A's embedded NameServer serves as the external NameServer of broker B.
    let a = BrokerProcess::start(BrokerOptions::default());
    let namesrv_list = format!("{};", a.embedded_namesrv_addr().unwrap());
    let mut b = BrokerProcess::start(BrokerOptions::master("broker-b", &namesrv_list));
    let mut client = b.client();
    client.create_topic("OnlyOnB", 3);
    a.client().create_topic("OnlyOnA", 2);
    let mut namesrv = a.namesrv_client();
    let route = wait_until("a route for OnlyOnB", DEADLINE, || namesrv.route("OnlyOnB"));
    assert_route(
        &route,
        ("broker-b", CLUSTER_NAME, b.socket_addr()),
        3,
        PERM_RW,
    );
    assert_eq!(route.broker_datas.len(), 1, "only broker-b hosts OnlyOnB");
    let route = wait_until("a route for OnlyOnA", DEADLINE, || namesrv.route("OnlyOnA"));
    assert_route(
        &route,
        (DEFAULT_BROKER_NAME, CLUSTER_NAME, a.socket_addr()),
        2,
        PERM_RW,
    );
    // TBW102 lives on both brokers.
    let template = wait_until("TBW102 on both brokers", DEADLINE, || {
        namesrv
            .route(DEFAULT_TOPIC)
            .filter(|route| route.broker_datas.len() == 2)
    });
    assert_route(
        &template,
        ("broker-b", CLUSTER_NAME, b.socket_addr()),
        DEFAULT_TOPIC_QUEUES,
        7,
    );
    drop(client);
    // A broker that leaves is dropped from the NameServer (UNREGISTER_BROKER or the closed
    // connection, docs/protocol.md §1.1, §3.3).
    assert_eq!(b.terminate().code(), Some(0));
    wait_until("broker-b's topic to leave the NameServer", DEADLINE, || {
        namesrv.route("OnlyOnB").is_none()
    });
}

#[test]
fn a_restarted_nameserver_has_the_brokers_routes_within_seconds() {
    // The broker's own period is a minute: only noticing the lost NameServer brings the
    // route back this soon.
    let mut namesrv = NamesrvProcess::start();
    let broker = BrokerProcess::start(BrokerOptions {
        register_interval_ms: 60_000,
        ..BrokerOptions::master("broker-r", &namesrv.addr())
    });
    broker.client().create_topic("Reregistered", 2);
    let mut client = namesrv.client();
    wait_until("the route before the restart", DEADLINE, || {
        client.route("Reregistered")
    });
    drop(client);

    namesrv.restart();
    let restarted = Instant::now();
    let mut client = namesrv.client();
    let route = wait_until(
        "the route after the restart",
        Duration::from_secs(5),
        || client.route("Reregistered"),
    );
    assert_route(
        &route,
        ("broker-r", CLUSTER_NAME, broker.socket_addr()),
        2,
        PERM_RW,
    );
    println!("route back {:?} after the restart", restarted.elapsed());
}
