//! Master/slave replication (docs/architecture.md §6, docs/protocol.md §8) with real processes on loopback: a
//! NameServer, a master and a slave of `broker-a`, started by `ringmq-testkit`, with 2 shards
//! each and 1 MiB commit-log segments (so streams cross segment ends).
//!
//! What is shown:
//! - SYNC_MASTER: every acknowledged message survives a SIGKILL of the master and is consumed
//!   from the slave, in order per queue, once each, also of a topic the slave's metadata sync
//!   has not brought yet, and at 20 kill moments from right after a topic's creation to
//!   thousands of messages in; without a slave the producer gets
//!   SLAVE_NOT_AVAILABLE, and a frozen slave (SIGSTOP) gives FLUSH_SLAVE_TIMEOUT.
//! - A slave killed mid-stream and restarted catches up; a restarted master is followed again;
//!   a slave added to a master with data copies all of it, byte for byte (segment checksums).
//! - Garbage, another broker group's slave, a log past the master's end and a shard-layout
//!   mismatch on the HA port are refused with a logged reason; the master keeps serving and the
//!   slave keeps replicating.
//! - A slave refuses sends with SERVICE_NOT_AVAILABLE; replication lag shows in
//!   GET_BROKER_RUNTIME_INFO; a group's offset committed at the master is where the group resumes
//!   on the slave once the master is gone.
//!
//! Every wait is a condition with a deadline; every load loop is bounded in count and time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use ringmq_client::{
    ClientConfig, Message, MessageQueue, Producer, PullConsumer, SendStatus, StartPosition,
};
use ringmq_protocol::body::{self, KvTable};
use ringmq_protocol::header::SendMessageRequestHeader;
use ringmq_protocol::{RequestCode, ResponseCode};
use ringmq_testkit::remoting::{committed_offset, create_topic, topic_route};
use ringmq_testkit::{BrokerOptions, BrokerProcess, NamesrvProcess, RemotingClient, wait_until};

const TOPIC: &str = "ha-topic";
const QUEUES: i32 = 4;
const SHARDS: u32 = 2;
/// Deadline of every replication condition.
const DEADLINE: Duration = Duration::from_secs(40);
const SEGMENT_BYTES: u64 = 1 << 20;

/// One test at a time: each runs three processes on a shared 2-core machine.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn common_args(role: &str, id: u32) -> Vec<String> {
    [
        "--broker-role".to_owned(),
        role.to_owned(),
        "--broker-id".to_owned(),
        id.to_string(),
        "--set".to_owned(),
        format!("mappedFileSizeCommitLog={SEGMENT_BYTES}"),
        "--max-message-size".to_owned(),
        "262144".to_owned(),
        "--set".to_owned(),
        "haSendHeartbeatInterval=500".to_owned(),
        "--set".to_owned(),
        "haReconnectInterval=200".to_owned(),
        "--set".to_owned(),
        "metadataSyncInterval=300".to_owned(),
        "--set".to_owned(),
        "slaveTimeout=2000".to_owned(),
    ]
    .into()
}

fn master(namesrv: &str, role: &str) -> BrokerProcess {
    BrokerProcess::start(BrokerOptions {
        shards: Some(SHARDS),
        extra_args: common_args(role, 0),
        ..BrokerOptions::master("broker-a", namesrv)
    })
}

/// A master of `role` holding the test topic.
fn master_with_topic(namesrv: &str, role: &str) -> BrokerProcess {
    let master = master(namesrv, role);
    create_topic(&master.addr(), TOPIC, QUEUES).unwrap();
    master
}

fn slave(namesrv: &str) -> BrokerProcess {
    slave_with(namesrv, &[])
}

/// A slave with `extra` settings after the common ones (a later `--set` of a key wins).
fn slave_with(namesrv: &str, extra: &[&str]) -> BrokerProcess {
    let mut args = common_args("SLAVE", 1);
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    BrokerProcess::start(BrokerOptions {
        shards: Some(SHARDS),
        extra_args: args,
        ..BrokerOptions::master("broker-a", namesrv)
    })
}

fn runtime_info(broker: &str) -> BTreeMap<String, String> {
    RemotingClient::connect(broker).runtime_info()
}

/// Waits until every shard of `master` has a slave connected.
fn wait_slave_connected(master: &BrokerProcess) {
    wait_until("the slave connected on every shard", DEADLINE, || {
        let info = RemotingClient::try_connect(master.addr())
            .ok()
            .and_then(|mut c| {
                c.try_request_ok(RequestCode::GetBrokerRuntimeInfo, (), &[])
                    .ok()
            })
            .and_then(|a| body::decode::<KvTable>(&a.body, "KvTable").ok())?;
        (info.table.get("haConnectedSlaves").map(String::as_str) == Some("1")).then_some(())
    });
}

/// Contents of every commit-log segment under `store` that holds anything (spare segments are
/// all zeros), by shard and name: CRC32 and length.
fn segment_checksums(store: &Path) -> BTreeMap<String, (u32, usize)> {
    let mut out = BTreeMap::new();
    for shard in 0..SHARDS {
        let dir = store.join(format!("shard-{shard}")).join("commitlog");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let bytes = std::fs::read(entry.path()).unwrap();
            if bytes.iter().all(|&b| b == 0) {
                continue;
            }
            out.insert(
                format!("shard-{shard}/{}", entry.file_name().to_string_lossy()),
                (crc32(&bytes), bytes.len()),
            );
        }
    }
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Waits until the slave's segments equal the master's, byte for byte.
fn wait_identical(master: &BrokerProcess, slave: &BrokerProcess) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (m, s) = (
            segment_checksums(master.store_dir()),
            segment_checksums(slave.store_dir()),
        );
        if !m.is_empty() && m == s {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the slave's segments never matched the master's:\nmaster {m:?}\nslave  {s:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn producer(namesrv: &str) -> Producer {
    Producer::builder(namesrv)
        .config(
            ClientConfig::new(namesrv)
                .with_route_refresh_interval(Duration::from_millis(300))
                .with_request_timeout(Duration::from_secs(3))
                .with_connect_timeout(Duration::from_secs(1)),
        )
        .group("ha-producer")
        .send_timeout(Duration::from_secs(5))
        .retries(2)
        .build()
        .unwrap()
}

/// An acknowledged send: where the broker said it stored the body.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Acked {
    queue_id: i32,
    queue_offset: i64,
    body: String,
}

/// Sends `count` 1 KiB-ish messages from one thread; returns those acknowledged SEND_OK.
fn send_some(producer: &Producer, prefix: &str, count: usize) -> Vec<Acked> {
    send_some_to(producer, TOPIC, prefix, count)
}

/// [`send_some`] to `topic`.
fn send_some_to(producer: &Producer, topic: &str, prefix: &str, count: usize) -> Vec<Acked> {
    (0..count)
        .map(|index| {
            let body = format!("{prefix}-{index}-{}", "x".repeat(900));
            let result = producer
                .send(Message::new(topic, body.clone()))
                .wait()
                .unwrap_or_else(|error| panic!("send {prefix}-{index}: {error}"));
            assert_eq!(result.status, SendStatus::SendOk, "send {prefix}-{index}");
            Acked {
                queue_id: result.queue.queue_id,
                queue_offset: result.queue_offset,
                body,
            }
        })
        .collect()
}

/// `count` threads sending 1 KiB-ish messages to `topic` until `stop` is set, a send fails or is
/// answered without a slave's copy (the master is gone), or 20,000 each; each returns what was
/// acknowledged SEND_OK.
fn start_senders(
    producer: &Producer,
    topic: &str,
    count: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<Vec<Acked>>> {
    (0..count)
        .map(|sender| {
            let producer = producer.clone();
            let stop = Arc::clone(stop);
            let topic = topic.to_owned();
            thread::spawn(move || {
                let mut acked = Vec::new();
                let started = Instant::now();
                for index in 0..20_000 {
                    if stop.load(Ordering::SeqCst) || started.elapsed() > DEADLINE {
                        break;
                    }
                    let body = format!("s{sender}-{index}-{}", "y".repeat(900));
                    match producer.send(Message::new(&topic, body.clone())).wait() {
                        Ok(result) if result.status == SendStatus::SendOk => acked.push(Acked {
                            queue_id: result.queue.queue_id,
                            queue_offset: result.queue_offset,
                            body,
                        }),
                        Ok(_) | Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect()
}

fn pull_consumer(namesrv: &str, group: &str) -> PullConsumer {
    PullConsumer::builder(namesrv, group)
        .config(
            ClientConfig::new(namesrv)
                .with_route_refresh_interval(Duration::from_millis(300))
                .with_request_timeout(Duration::from_secs(3))
                .with_connect_timeout(Duration::from_secs(1)),
        )
        .start_position(StartPosition::First)
        .build()
        .unwrap()
}

fn queue(queue_id: i32) -> MessageQueue {
    MessageQueue {
        topic: TOPIC.to_owned(),
        broker_name: "broker-a".to_owned(),
        queue_id,
    }
}

/// Reads the topic's queues from the start, through the NameServer's route (the client picks the
/// slave when the master is gone), until every message of `acked` has been seen or the deadline
/// passes. The slave may also hold messages whose sends were never acknowledged (the master died
/// between replicating and answering), so a count of messages read is no stopping rule.
fn consume_all(namesrv: &str, acked: &[Acked]) -> Vec<Acked> {
    consume_topic(namesrv, TOPIC, acked)
}

/// [`consume_all`] of `topic`.
fn consume_topic(namesrv: &str, topic: &str, acked: &[Acked]) -> Vec<Acked> {
    let consumer = pull_consumer(namesrv, "ha-consumer");
    let queues: Vec<MessageQueue> = (0..QUEUES)
        .map(|queue_id| MessageQueue {
            topic: topic.to_owned(),
            ..queue(queue_id)
        })
        .collect();
    consumer.assign(queues.clone()).wait().unwrap();
    for queue in &queues {
        consumer.seek(queue, 0).wait().unwrap();
    }
    let mut unseen: BTreeSet<&Acked> = acked.iter().collect();
    let mut seen = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while !unseen.is_empty() && Instant::now() < deadline {
        if let Ok(messages) = consumer.poll(Duration::from_millis(500)).wait() {
            for message in messages {
                let message = Acked {
                    queue_id: message.queue_id,
                    queue_offset: message.queue_offset,
                    body: String::from_utf8_lossy(&message.body).into_owned(),
                };
                unseen.remove(&message);
                seen.push(message);
            }
        }
    }
    consumer.shutdown();
    seen
}

/// Every acknowledged message is among `seen`, at the offset its send returned; per queue the
/// offsets run 0, 1, 2, ... with no gap and no repeat.
fn assert_all_delivered(acked: &[Acked], seen: &[Acked]) {
    let seen_set: BTreeSet<&Acked> = seen.iter().collect();
    let missing: Vec<&Acked> = acked.iter().filter(|a| !seen_set.contains(a)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages missing, e.g. {:?} ({} read in all)",
        missing.len(),
        acked.len(),
        missing.first().map(|a| (a.queue_id, a.queue_offset)),
        seen.len()
    );
    for queue_id in 0..QUEUES {
        let offsets: Vec<i64> = seen
            .iter()
            .filter(|m| m.queue_id == queue_id)
            .map(|m| m.queue_offset)
            .collect();
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, expected, "queue {queue_id}: in order, once each");
    }
    let bodies: BTreeSet<&str> = seen.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies.len(), seen.len(), "a body was stored twice");
}

fn kill_signal(process: &BrokerProcess, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &process.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal}");
}

/// The slave is in the route beside the master, has the topic, and refuses sends itself.
fn assert_slave_joined(ns: &str, master: &BrokerProcess, slave: &BrokerProcess) {
    // The slave registers too: the route lists both addresses of broker-a.
    wait_until("the route lists master and slave", DEADLINE, || {
        let route = topic_route(ns, TOPIC).ok()??;
        let addrs = &route.broker_datas.first()?.broker_addrs;
        (addrs.get(&0) == Some(&master.addr()) && addrs.get(&1) == Some(&slave.addr()))
            .then_some(())
    });
    // The slave takes the topic from the master and refuses sends itself.
    wait_until("the slave has the topic", DEADLINE, || {
        let mut client = RemotingClient::try_connect(slave.addr()).ok()?;
        let answer = client
            .try_request_ok(RequestCode::GetAllTopicConfig, (), &[])
            .ok()?;
        String::from_utf8_lossy(&answer.body)
            .contains(TOPIC)
            .then_some(())
    });
    let header = SendMessageRequestHeader {
        producer_group: "ha-producer",
        topic: TOPIC,
        default_topic: "TBW102",
        default_topic_queue_nums: 4,
        queue_id: 0,
        born_timestamp_ms: 1,
        ..SendMessageRequestHeader::default()
    };
    let refused = RemotingClient::connect(slave.addr()).request(
        RequestCode::SendMessage,
        header,
        b"to the slave",
    );
    assert_eq!(
        refused.code,
        ResponseCode::ServiceNotAvailable.as_i32(),
        "{:?}",
        refused.remark
    );
}

#[test]
fn sync_master_killed_loses_no_acknowledged_message() {
    let _serial = serial();
    let namesrv = NamesrvProcess::start();
    let ns = namesrv.addr();
    let mut master = master_with_topic(&ns, "SYNC_MASTER");
    let producer = producer(&ns);

    // No slave yet: stored on the master, but the producer hears SLAVE_NOT_AVAILABLE.
    let lonely = producer
        .send(Message::new(TOPIC, "before-any-slave"))
        .wait()
        .unwrap();
    assert_eq!(lonely.status, SendStatus::SlaveNotAvailable);

    let slave = slave(&ns);
    wait_slave_connected(&master);
    assert_slave_joined(&ns, &master, &slave);

    // Four producers send until the master is SIGKILLed in the middle of their stream.
    let mut acked = vec![Acked {
        queue_id: lonely.queue.queue_id,
        queue_offset: lonely.queue_offset,
        body: "before-any-slave".to_owned(),
    }];
    let stop = Arc::new(AtomicBool::new(false));
    let senders = start_senders(&producer, TOPIC, 4, &stop);
    wait_until("the master took 3000 messages", DEADLINE, || {
        let info = runtime_info(&master.addr());
        let stored: u64 = info.get("msgPutTotalTodayNow")?.parse().ok()?;
        (stored >= 3000).then_some(())
    });
    // A group commits offset 10 of queue 0 at the master; the slave copies it.
    let committer = pull_consumer(&ns, "ha-offsets");
    let queue0 = queue(0);
    committer.assign(vec![queue0.clone()]).wait().unwrap();
    committer.seek(&queue0, 10).wait().unwrap();
    committer.commit().wait().unwrap();
    committer.shutdown();
    wait_until("the slave has the group's offset", DEADLINE, || {
        let offset = committed_offset(&slave.addr(), "ha-offsets", TOPIC, 0).ok()??;
        (offset == 10).then_some(())
    });
    master.kill();
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        acked.extend(sender.join().unwrap());
    }
    assert!(acked.len() >= 3000, "only {} acknowledged", acked.len());
    // With the master gone, the group resumes from its committed offset, read from the slave.
    let resumed = pull_consumer(&ns, "ha-offsets");
    resumed.assign(vec![queue0.clone()]).wait().unwrap();
    let first = wait_until("the group's next message from the slave", DEADLINE, || {
        resumed
            .poll(Duration::from_millis(500))
            .wait()
            .ok()
            .and_then(|messages| messages.first().map(|m| m.queue_offset))
    });
    assert_eq!(first, 10, "resumed at the committed offset");
    resumed.shutdown();

    // Consumers find the slave through the NameServer and read everything acknowledged.
    let seen = consume_all(&ns, &acked);
    assert_all_delivered(&acked, &seen);
    drop(slave);
}

/// A topic the slave has not learned from the master's table yet (its metadata sync is 10
/// minutes away) is still served from the replicated log the moment its sends are acknowledged:
/// with the master killed right after, every acknowledged message is read from the slave.
#[test]
fn a_topic_newer_than_the_slaves_last_sync_is_read_from_the_slave() {
    const FRESH: &str = "ha-fresh";
    let _serial = serial();
    let namesrv = NamesrvProcess::start();
    let ns = namesrv.addr();
    let mut master = master_with_topic(&ns, "SYNC_MASTER");
    let slave = slave_with(&ns, &["--set", "metadataSyncInterval=600000"]);
    wait_slave_connected(&master);
    assert_slave_joined(&ns, &master, &slave);

    create_topic(&master.addr(), FRESH, QUEUES).unwrap();
    let producer = producer(&ns);
    let acked = send_some_to(&producer, FRESH, "fresh", 400);
    // The premise: the slave's topic table does not list the new topic.
    let mut client = RemotingClient::connect(slave.addr());
    let table = client.request(RequestCode::GetAllTopicConfig, (), &[]);
    assert_eq!(table.code, ResponseCode::Success.as_i32());
    assert!(
        !String::from_utf8_lossy(&table.body).contains(FRESH),
        "the slave already synced the new topic; the test shows nothing"
    );

    master.kill();
    let seen = consume_topic(&ns, FRESH, &acked);
    assert_all_delivered(&acked, &seen);
}

/// The master is SIGKILLed at 20 moments under load, each in a new group and right after a new
/// topic is created: from before the first send to thousands of messages in. Every time, every
/// acknowledged message is read from the slave at its acknowledged offset, once.
#[test]
fn master_killed_at_20_moments_loses_no_acknowledged_message() {
    const TRIALS: u64 = 20;
    let _serial = serial();
    // Spread over 0..2000 stored messages, in a scrambled order (7 is prime to 20), without
    // randomness a failure could not be replayed from.
    let kill_after = |trial: u64| (trial * 7) % TRIALS * 100;
    for trial in 0..TRIALS {
        let namesrv = NamesrvProcess::start();
        let ns = namesrv.addr();
        let mut master = master(&ns, "SYNC_MASTER");
        let slave = slave_with(&ns, &["--set", "metadataSyncInterval=600000"]);
        wait_slave_connected(&master);
        let topic = format!("ha-trial-{trial}");
        create_topic(&master.addr(), &topic, QUEUES).unwrap();
        let producer = producer(&ns);
        let stop = Arc::new(AtomicBool::new(false));
        let senders = start_senders(&producer, &topic, 2, &stop);
        let threshold = kill_after(trial);
        wait_until("the master stored enough", DEADLINE, || {
            let info = runtime_info(&master.addr());
            let stored: u64 = info.get("msgPutTotalTodayNow")?.parse().ok()?;
            (stored >= threshold).then_some(())
        });
        master.kill();
        stop.store(true, Ordering::SeqCst);
        let acked: Vec<Acked> = senders
            .into_iter()
            .flat_map(|sender| sender.join().unwrap())
            .collect();
        producer.shutdown();
        let seen = consume_topic(&ns, &topic, &acked);
        assert_all_delivered(&acked, &seen);
        println!(
            "trial {trial}: killed after {threshold} stored, {} acknowledged, all read from the slave",
            acked.len()
        );
        drop(slave);
    }
}

/// A NameServer, a SYNC_MASTER holding the test topic with a connected slave, and a producer.
struct SyncPair {
    _namesrv: NamesrvProcess,
    master: BrokerProcess,
    slave: BrokerProcess,
    producer: Producer,
}

fn sync_pair() -> SyncPair {
    let namesrv = NamesrvProcess::start();
    let ns = namesrv.addr();
    let master = master_with_topic(&ns, "SYNC_MASTER");
    let slave = slave(&ns);
    wait_slave_connected(&master);
    SyncPair {
        producer: producer(&ns),
        _namesrv: namesrv,
        master,
        slave,
    }
}

#[test]
fn frozen_slave_gives_flush_slave_timeout_and_lag_shows() {
    let _serial = serial();
    let SyncPair {
        _namesrv,
        master,
        slave,
        producer,
    } = sync_pair();
    send_some(&producer, "warm", 20);

    kill_signal(&slave, "-STOP");
    let started = Instant::now();
    let result = producer
        .send(Message::new(TOPIC, "while-frozen"))
        .wait()
        .unwrap();
    assert_eq!(result.status, SendStatus::FlushSlaveTimeout);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // The master shows the lag while the slave is frozen.
    wait_until("lag in the runtime info", DEADLINE, || {
        let info = runtime_info(&master.addr());
        let bytes: u64 = info.get("haLagBytes")?.parse().ok()?;
        let ms: u64 = info.get("haLagMs")?.parse().ok()?;
        (bytes > 0 && ms > 0).then_some(())
    });
    kill_signal(&slave, "-CONT");
    send_some(&producer, "thawed", 20);
    wait_until("the lag is gone", DEADLINE, || {
        let info = runtime_info(&master.addr());
        (info.get("haLagBytes")? == "0").then_some(())
    });
    wait_identical(&master, &slave);
}

#[test]
fn restarts_on_either_side_resume_and_a_new_slave_copies_everything() {
    let _serial = serial();
    let namesrv = NamesrvProcess::start();
    let ns = namesrv.addr();
    let mut master = master_with_topic(&ns, "ASYNC_MASTER");
    let producer = producer(&ns);
    // Data first (several 1 MiB segments per shard), then a slave with an empty store.
    let mut acked = send_some(&producer, "before", 6000);
    let mut slave = slave(&ns);
    wait_identical(&master, &slave);

    // The slave is SIGKILLed while messages stream, then restarted: it catches up.
    let background = {
        let producer = producer.clone();
        thread::spawn(move || send_some(&producer, "during", 3000))
    };
    wait_until("the slave is receiving", DEADLINE, || {
        let info = runtime_info(&master.addr());
        let stored: u64 = info.get("msgPutTotalTodayNow")?.parse().ok()?;
        (stored >= 7000).then_some(())
    });
    slave.kill();
    slave.restart();
    acked.extend(background.join().unwrap());
    wait_identical(&master, &slave);

    // The master restarts (SIGKILL, same store and port): the slave follows it again.
    master.kill();
    master.restart();
    wait_slave_connected(&master);
    acked.extend(send_some(&producer, "after", 2000));
    wait_identical(&master, &slave);

    // And the slave serves all of it once the master is gone.
    master.kill();
    let seen = consume_all(&ns, &acked);
    assert_all_delivered(&acked, &seen);
}

/// A HELLO as the HA handshake encodes it (see broker/src/ha/wire.rs), of a non-empty slave
/// whose last 4 KiB have CRC32C `tail_crc`.
fn hello(
    cluster: &str,
    name: &str,
    shard: u16,
    shards: u16,
    offset: u64,
    tail_crc: u32,
) -> Vec<u8> {
    let mut out = b"RMQH".to_vec();
    out.extend_from_slice(&2u16.to_be_bytes());
    out.extend_from_slice(&shard.to_be_bytes());
    out.extend_from_slice(&shards.to_be_bytes());
    out.extend_from_slice(&(cluster.len() as u16).to_be_bytes());
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&SEGMENT_BYTES.to_be_bytes());
    out.extend_from_slice(&7i64.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&4096u32.to_be_bytes());
    out.extend_from_slice(&tail_crc.to_be_bytes());
    out.extend_from_slice(cluster.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// Sends `bytes` to the HA port and returns everything the master answers before closing.
fn ha_exchange(master: &BrokerProcess, bytes: &[u8]) -> Vec<u8> {
    let port: u16 = master.addr().rsplit_once(':').unwrap().1.parse().unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", port + 1)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn bad_input_on_the_ha_port_is_refused_and_changes_nothing() {
    let _serial = serial();
    let SyncPair {
        _namesrv,
        master,
        slave,
        producer,
    } = sync_pair();
    let mut acked = send_some(&producer, "first", 300);

    // Garbage: closed without an answer.
    assert!(ha_exchange(&master, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_empty());
    let cluster = "DefaultCluster";
    // Where the real slave's shard 0 is: a chunk boundary of the master's log.
    let info = runtime_info(&master.addr());
    let held: u64 = info["haSlaves"]
        .split(',')
        .find_map(|slave| slave.strip_prefix("0:1@"))
        .and_then(|rest| rest.rsplit(':').next())
        .and_then(|offset| offset.parse().ok())
        .expect("shard 0's slave offset");
    assert!(held > 4096, "{info:?}");
    for (bytes, reason) in [
        (
            hello(cluster, "broker-b", 0, 2, 0, 0),
            "another broker group",
        ),
        (
            hello("OtherCluster", "broker-a", 0, 2, 0, 0),
            "another broker group",
        ),
        (
            hello(cluster, "broker-a", 0, 2, 1 << 40, 0),
            "past this master's end",
        ),
        (hello(cluster, "broker-a", 0, 3, 0, 0), "shards"),
        // The right offset, other bytes before it: a log that diverged.
        (
            hello(cluster, "broker-a", 0, 2, held, 0x1234_5678),
            "differ",
        ),
    ] {
        let answer = ha_exchange(&master, &bytes);
        let text = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with(b"RMQH"), "{text}");
        assert_eq!(answer[6], 1, "refused: {text}");
        assert!(text.contains(reason), "{reason}: {text}");
    }
    let log = master.log();
    for logged in [
        "bad handshake",
        "another broker group",
        "past this master's end",
        "differ from this master's",
    ] {
        assert!(log.contains(logged), "the master logs {logged:?}");
    }
    // The master still serves, SYNC_MASTER acknowledgements still come from the real slave,
    // and both stores still match.
    acked.extend(send_some(&producer, "second", 300));
    wait_identical(&master, &slave);
    assert_eq!(acked.len(), 600);
}
