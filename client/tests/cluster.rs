//! The client library against a real cluster on loopback: two NameServers and two broker groups
//! (`broker-a`, `broker-b`), started as processes by `ringmq-testkit`.
//!
//! What is shown: sends spread over both groups; a SIGKILLed broker costs no send beyond the
//! retry budget; producers and consumers keep working on cached routes with every NameServer
//! down; a group of three push consumers splits the queues and, when one member leaves, the
//! others take its queues over from its committed offsets without losing a message; a restarted
//! consumer resumes from its committed offset.
//!
//! Timers are fast (heartbeat and route refresh 500 ms, rebalance 1 s, commit 200 ms, broker
//! registration 500 ms) so every phase converges in seconds. Every wait is a condition with a
//! deadline; every loop is bounded. The tests share the machine's cores, so they run one at a
//! time ([`serial`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use ringmq_client::{
    ClientConfig, ClientError, ConsumeContext, ConsumeOutcome, Message, MessageQueue, Producer,
    PushConsumer, ReceivedMessage, SendResult, StartPosition,
};
use ringmq_testkit::remoting::{committed_offset, max_offset};
use ringmq_testkit::{Cluster, wait_until};

use common::Handle;

const BROKERS: [&str; 2] = ["broker-a", "broker-b"];
/// Queues per broker of every test topic.
const QUEUES: i32 = 4;
/// Deadline of every cluster-level condition (rebalance, delivery, commits).
const DEADLINE: Duration = Duration::from_secs(30);
/// Per-send budget of the producers (retries included).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// One cluster test at a time: each starts four processes on a shared machine.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn start_cluster() -> Cluster {
    Cluster::start_with(2, &BROKERS, |options| options.shards = Some(1))
}

/// Fast client timers, so route changes and group changes are seen within a second.
fn client_config(cluster: &Cluster) -> ClientConfig {
    ClientConfig::new(&cluster.namesrv_addrs())
        .with_heartbeat_interval(Duration::from_millis(500))
        .with_route_refresh_interval(Duration::from_millis(500))
        .with_request_timeout(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_secs(1))
}

fn producer(cluster: &Cluster, group: &str) -> Handle<Producer> {
    Handle::new(
        Producer::builder(&cluster.namesrv_addrs())
            .config(client_config(cluster))
            .group(group)
            .send_timeout(SEND_TIMEOUT)
            .retries(2)
            .build()
            .unwrap(),
    )
}

/// Where a message was delivered: broker, queue, queue offset.
type Position = (String, i32, i64);

/// Every delivery of every message body, across the members of a group.
#[derive(Debug, Default)]
struct Deliveries {
    /// Body to the positions it was delivered at (once per delivery).
    by_body: HashMap<String, Vec<Position>>,
    /// Per member: bodies it handled.
    by_member: BTreeMap<usize, usize>,
}

impl Deliveries {
    fn record(&mut self, member: usize, messages: &[ReceivedMessage], context: &ConsumeContext) {
        for message in messages {
            let body = String::from_utf8_lossy(&message.body).into_owned();
            self.by_body.entry(body).or_default().push((
                context.queue.broker_name.clone(),
                message.queue_id,
                message.queue_offset,
            ));
            *self.by_member.entry(member).or_default() += 1;
        }
    }

    fn delivered(&self, body: &str) -> bool {
        self.by_body.contains_key(body)
    }

    /// Deliveries beyond the first, summed over every message.
    fn duplicates(&self) -> usize {
        self.by_body.values().map(|at| at.len() - 1).sum()
    }
}

type Shared = Arc<Mutex<Deliveries>>;

/// A send's start, duration and result.
type Outcome = (Instant, Duration, Result<SendResult, ClientError>);

fn lock(deliveries: &Shared) -> MutexGuard<'_, Deliveries> {
    deliveries.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A push consumer of `group` on `topic` recording into `deliveries` as `member`.
fn push_consumer(
    cluster: &Cluster,
    group: &str,
    topic: &str,
    member: usize,
    deliveries: &Shared,
) -> Handle<PushConsumer> {
    let deliveries = Arc::clone(deliveries);
    let consumer = PushConsumer::builder(&cluster.namesrv_addrs(), group)
        .config(client_config(cluster).with_instance_name(format!("{group}-member-{member}")))
        .subscribe(topic, "*")
        .start_position(StartPosition::First)
        .rebalance_interval(Duration::from_secs(1))
        .commit_interval(Duration::from_millis(200))
        .long_poll_timeout(Duration::from_secs(1))
        .batch_size(8)
        .start(move |messages, context| {
            lock(&deliveries).record(member, messages, context);
            ConsumeOutcome::Success
        })
        .unwrap();
    Handle::new(consumer)
}

/// Every queue of a test topic on the cluster's brokers.
fn all_queues() -> BTreeSet<(String, i32)> {
    BROKERS
        .iter()
        .flat_map(|broker| (0..QUEUES).map(move |queue_id| ((*broker).to_owned(), queue_id)))
        .collect()
}

/// (broker, queue id) of the queues of `topic` among `queues` (a push consumer also holds queues
/// of its group's retry topic).
fn queue_keys(queues: &[MessageQueue], topic: &str) -> Vec<(String, i32)> {
    queues
        .iter()
        .filter(|queue| queue.topic == topic)
        .map(|queue| (queue.broker_name.clone(), queue.queue_id))
        .collect()
}

/// Whether the members' assignments are disjoint and cover every queue of `topic`.
fn split_exactly(members: &[&PushConsumer], topic: &str) -> bool {
    let mut seen = BTreeSet::new();
    for member in members {
        for key in queue_keys(&member.assigned_queues(), topic) {
            if !seen.insert(key) {
                return false;
            }
        }
    }
    seen == all_queues()
}

/// Waits until the members split every queue of `topic` disjointly; the panic shows what each
/// member holds.
fn wait_split(members: &[&PushConsumer], topic: &str, what: &str) {
    let start = Instant::now();
    while !split_exactly(members, topic) {
        if start.elapsed() > DEADLINE {
            let held: Vec<_> = members
                .iter()
                .map(|member| member.assigned_queues())
                .collect();
            panic!("timed out after {DEADLINE:?} waiting for {what}; members hold {held:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `count` messages with bodies `{prefix}-{i}`, each waited for; panics on a failure.
fn send_all(producer: &Producer, topic: &str, prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|index| {
            let body = format!("{prefix}-{index}");
            producer
                .send(Message::new(topic, body.clone()))
                .wait()
                .unwrap_or_else(|error| panic!("send {body}: {error}"));
            body
        })
        .collect()
}

fn wait_delivered(deliveries: &Shared, bodies: &[String], what: &str) {
    wait_until(what, DEADLINE, || {
        let deliveries = lock(deliveries);
        bodies
            .iter()
            .all(|body| deliveries.delivered(body))
            .then_some(())
    });
}

/// The bodies of `bodies` not delivered (for failure messages).
fn missing(deliveries: &Shared, bodies: &[String]) -> Vec<String> {
    let deliveries = lock(deliveries);
    bodies
        .iter()
        .filter(|body| !deliveries.delivered(body))
        .cloned()
        .collect()
}

// ------------------------------------------------------------------------------------------------

#[test]
fn producer_spreads_sends_over_both_broker_groups() {
    let _serial = serial();
    let cluster = start_cluster();
    cluster.create_topic("Spread", QUEUES);
    let producer = producer(&cluster, "spread-producer");
    let mut per_broker: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_queue: BTreeSet<(String, i32)> = BTreeSet::new();
    for index in 0..64 {
        let result = producer
            .send(Message::new("Spread", format!("spread-{index}")))
            .wait()
            .unwrap_or_else(|error| panic!("send {index}: {error}"));
        assert!(!result.msg_id.is_empty());
        assert!(result.queue_offset >= 0);
        *per_broker
            .entry(result.queue.broker_name.clone())
            .or_default() += 1;
        per_queue.insert((result.queue.broker_name, result.queue.queue_id));
    }
    println!("sends per broker group: {per_broker:?}");
    for broker in BROKERS {
        let count = per_broker.get(broker).copied().unwrap_or_default();
        assert!(
            count >= 16,
            "{broker} got {count} of 64 sends: not spread ({per_broker:?})"
        );
    }
    assert_eq!(per_queue, all_queues(), "not every queue was used");
    producer.shutdown();
}

#[test]
fn sigkill_of_a_broker_costs_no_send_beyond_the_retry_budget() {
    const SENDS: usize = 800;
    const SENDERS: usize = 4;
    let _serial = serial();
    let mut cluster = start_cluster();
    cluster.create_topic("Failover", QUEUES);
    let producer = producer(&cluster, "failover-producer");

    // Four sender threads, each sending one message at a time, so some sends are in flight
    // when the broker dies; every outcome is recorded with its start time.
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let producer = Handle::new(producer.clone());
            let outcomes = Arc::clone(&outcomes);
            thread::spawn(move || {
                for index in 0..SENDS / SENDERS {
                    let start = Instant::now();
                    let result = producer
                        .send(Message::new(
                            "Failover",
                            format!("failover-{sender}-{index}"),
                        ))
                        .wait();
                    let outcome = (start, start.elapsed(), result);
                    outcomes
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(outcome);
                    // Spread the sends over a few seconds so many happen after the kill.
                    thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();
    let count = || {
        outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    };
    wait_until("200 sends before the kill", DEADLINE, || {
        (count() >= 200).then_some(())
    });
    let killed_at = Instant::now();
    cluster.broker_mut("broker-a").kill();
    println!("broker-a SIGKILLed after {} sends", count());
    wait_until("the senders to finish", Duration::from_secs(120), || {
        senders
            .iter()
            .all(thread::JoinHandle::is_finished)
            .then_some(())
    });
    for sender in senders {
        sender.join().unwrap();
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert_eq!(outcomes.len(), SENDS);
    let mut failures = Vec::new();
    let mut after_kill: BTreeMap<String, usize> = BTreeMap::new();
    let mut late_on_a = Vec::new();
    // Once the NameServers dropped broker-a (its connections closed) and the producer's route
    // refresh saw that, or fault avoidance benched it, nothing more may go to broker-a. (A send
    // that reached it before the kill and was acknowledged counts, whenever it started.)
    let settle = SEND_TIMEOUT + Duration::from_secs(1);
    for (index, (start, took, result)) in outcomes.iter().enumerate() {
        assert!(
            *took < SEND_TIMEOUT + Duration::from_secs(2),
            "send {index} took {took:?}, over its budget"
        );
        match result {
            Ok(sent) if *start >= killed_at => {
                *after_kill
                    .entry(sent.queue.broker_name.clone())
                    .or_default() += 1;
                if sent.queue.broker_name == "broker-a" && *start >= killed_at + settle {
                    late_on_a.push(index);
                }
            }
            Ok(_) => {}
            Err(error) => failures.push(format!(
                "send {index} ({:?} after the kill): {error}",
                start.checked_duration_since(killed_at)
            )),
        }
    }
    println!("after the kill: {after_kill:?}; failures: {failures:#?}");
    assert!(
        failures.is_empty(),
        "{} sends failed although broker-b was up (retries 2): {failures:#?}",
        failures.len()
    );
    assert!(
        after_kill.get("broker-b").copied().unwrap_or_default() >= 200,
        "too few sends after the kill reached broker-b: {after_kill:?}"
    );
    assert!(
        late_on_a.is_empty(),
        "sends {late_on_a:?} reached a dead broker-a {settle:?} after the kill"
    );
    producer.shutdown();
}

#[test]
fn producers_and_consumers_keep_working_with_every_namesrv_down() {
    let _serial = serial();
    let mut cluster = start_cluster();
    cluster.create_topic("Cached", QUEUES);
    let producer = producer(&cluster, "cached-producer");
    let deliveries: Shared = Arc::default();
    let consumer = push_consumer(&cluster, "cached-group", "Cached", 0, &deliveries);
    wait_split(&[&*consumer], "Cached", "the consumer to own every queue");
    let before = send_all(&producer, "Cached", "before", 40);
    wait_delivered(&deliveries, &before, "the messages sent before the outage");

    cluster.stop_namesrvs();
    // Let route refreshes and heartbeats run against the dead NameServers a few times.
    let outage = Instant::now();
    let mut after = Vec::new();
    let mut round = 0;
    while outage.elapsed() < Duration::from_secs(3) && round < 100 {
        after.extend(send_all(&producer, "Cached", &format!("after-{round}"), 5));
        round += 1;
    }
    wait_until("the messages sent during the outage", DEADLINE, || {
        missing(&deliveries, &after).is_empty().then_some(())
    });
    let per_broker = {
        let deliveries = lock(&deliveries);
        after
            .iter()
            .fold(BTreeMap::<String, usize>::new(), |mut counts, body| {
                *counts
                    .entry(deliveries.by_body[body][0].0.clone())
                    .or_default() += 1;
                counts
            })
    };
    println!(
        "{} sent during the outage; delivered per broker: {per_broker:?}",
        after.len()
    );
    assert!(
        per_broker.len() == 2,
        "both broker groups stay in use on cached routes: {per_broker:?}"
    );
    consumer.shutdown().unwrap();
    producer.shutdown();
}

#[test]
fn group_of_three_splits_queues_and_takes_over_without_loss() {
    const MESSAGES: usize = 300;
    let _serial = serial();
    let cluster = start_cluster();
    cluster.create_topic("Shared", QUEUES);
    let deliveries: Shared = Arc::default();
    let members: Vec<Handle<PushConsumer>> = (0..3)
        .map(|member| push_consumer(&cluster, "shared-group", "Shared", member, &deliveries))
        .collect();
    wait_split(
        &members.iter().map(|member| &**member).collect::<Vec<_>>(),
        "Shared",
        "three members to split the 8 queues disjointly",
    );
    for (member, consumer) in members.iter().enumerate() {
        let queues = queue_keys(&consumer.assigned_queues(), "Shared");
        println!("member {member}: {queues:?}");
        assert!(
            (2..=3).contains(&queues.len()),
            "averaging gives 2 or 3 of 8 queues, member {member} has {}",
            queues.len()
        );
    }

    // Send in the background; member 2 leaves a third of the way through.
    let producer = producer(&cluster, "shared-producer");
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let producer = Handle::new(producer.clone());
        let sent = Arc::clone(&sent);
        thread::spawn(move || {
            let mut bodies = Vec::new();
            for index in 0..MESSAGES {
                bodies.extend(send_all(&producer, "Shared", &format!("shared-{index}"), 1));
                sent.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(5));
            }
            bodies
        })
    };
    wait_until("a third of the messages sent", DEADLINE, || {
        (sent.load(Ordering::SeqCst) >= MESSAGES / 3).then_some(())
    });
    let leaving_queues = queue_keys(&members[2].assigned_queues(), "Shared");
    members[2].shutdown().unwrap();
    println!(
        "member 2 left after {} sends, releasing {leaving_queues:?}",
        sent.load(Ordering::SeqCst),
    );
    wait_split(
        &[&*members[0], &*members[1]],
        "Shared",
        "the two remaining members to split all 8 queues",
    );
    wait_until("the sender to finish", Duration::from_secs(120), || {
        sender.is_finished().then_some(())
    });
    let bodies = sender.join().unwrap();
    assert_eq!(bodies.len(), MESSAGES);
    wait_until("every message to be delivered", DEADLINE, || {
        missing(&deliveries, &bodies).is_empty().then_some(())
    });

    let deliveries = lock(&deliveries);
    let lost = bodies
        .iter()
        .filter(|body| !deliveries.delivered(body))
        .count();
    println!(
        "{MESSAGES} sent, {lost} lost, {} duplicate deliveries; handled per member: {:?}",
        deliveries.duplicates(),
        deliveries.by_member
    );
    assert_eq!(lost, 0);
    // The leaving member's queues were read by the others after it left.
    let taken_over: usize = deliveries
        .by_body
        .values()
        .flatten()
        .filter(|(broker, queue_id, _)| leaving_queues.contains(&(broker.clone(), *queue_id)))
        .count();
    assert!(
        taken_over > 0,
        "nothing was read from the leaving member's queues"
    );
    drop(deliveries);
    for consumer in &members[..2] {
        consumer.shutdown().unwrap();
    }
    producer.shutdown();
}

#[test]
fn restarted_consumer_resumes_from_its_committed_offset() {
    const GROUP: &str = "resume-group";
    const TOPIC: &str = "Resume";
    let _serial = serial();
    let cluster = start_cluster();
    cluster.create_topic(TOPIC, QUEUES);
    let producer = producer(&cluster, "resume-producer");

    let first_run: Shared = Arc::default();
    let consumer = push_consumer(&cluster, GROUP, TOPIC, 0, &first_run);
    wait_split(&[&*consumer], TOPIC, "the consumer to own every queue");
    let before = send_all(&producer, TOPIC, "before", 80);
    wait_delivered(&first_run, &before, "the first run's messages");
    consumer.shutdown().unwrap();

    // What the group committed on the way out, per queue, against each queue's end.
    let mut committed: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut uncommitted_tail = 0;
    for broker in cluster.brokers() {
        for queue_id in 0..QUEUES {
            let end = max_offset(&broker.addr(), TOPIC, queue_id).unwrap();
            let offset = committed_offset(&broker.addr(), GROUP, TOPIC, queue_id)
                .unwrap()
                .unwrap_or(0);
            assert!(offset <= end, "committed {offset} past the end {end}");
            uncommitted_tail += end - offset;
            committed.insert((broker.name().to_owned(), queue_id), offset);
        }
    }
    println!("committed on shutdown: {committed:?}; uncommitted tail: {uncommitted_tail}");

    // Messages sent while the group is away, then the same group comes back.
    let during = send_all(&producer, TOPIC, "during", 40);
    let second_run: Shared = Arc::default();
    let restarted = push_consumer(&cluster, GROUP, TOPIC, 1, &second_run);
    wait_split(
        &[&*restarted],
        TOPIC,
        "the restarted consumer to own every queue",
    );
    wait_delivered(&second_run, &during, "the messages sent while away");
    let after = send_all(&producer, TOPIC, "after", 20);
    wait_delivered(&second_run, &after, "the messages sent after the restart");

    // Only the uncommitted tail of the first run may come again.
    let second = lock(&second_run);
    let mut redelivered = Vec::new();
    for body in &before {
        if let Some(at) = second.by_body.get(body) {
            for (broker, queue_id, queue_offset) in at {
                let offset = committed[&(broker.clone(), *queue_id)];
                assert!(
                    *queue_offset >= offset,
                    "{body} at {broker}:{queue_id}@{queue_offset} was redelivered although \
                     the group had committed offset {offset}"
                );
                redelivered.push(body.clone());
            }
        }
    }
    println!(
        "{} of the first run's messages redelivered (uncommitted tail {uncommitted_tail})",
        redelivered.len()
    );
    assert!(redelivered.len() as i64 <= uncommitted_tail);
    drop(second);
    restarted.shutdown().unwrap();
    producer.shutdown();
}
