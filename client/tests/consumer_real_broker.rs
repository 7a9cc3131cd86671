//! The consumers against the real `ringmq-broker` binary with its embedded NameServer.
//!
//! Every test starts its own broker on ephemeral ports in a temporary directory, sends messages
//! with raw SEND_MESSAGE frames, and waits for conditions with deadlines (never bare sleeps).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringmq_client::{
    ClientConfig, ConsumeMode, ConsumeOutcome, MessageQueue, PullConsumer, PushConsumer,
    ReceivedMessage, StartPosition,
};
use ringmq_testkit::remoting::{create_topic, topic_route};
use ringmq_testkit::{BrokerOptions, BrokerProcess, Message, RemotingClient, SendCode};

/// Deadline for anything that happens asynchronously (start-up, registration, delivery).
const DEADLINE: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------------------
// The broker process

/// A running broker with its embedded NameServer (SIGKILLed on drop).
struct Broker {
    process: BrokerProcess,
    /// The embedded NameServer.
    namesrv: String,
}

impl Broker {
    fn start() -> Self {
        let process = BrokerProcess::start(BrokerOptions::default());
        let namesrv = process
            .embedded_namesrv_addr()
            .expect("an embedded NameServer");
        Self { process, namesrv }
    }

    fn config(&self) -> ClientConfig {
        ClientConfig::new(&self.namesrv)
            .with_request_timeout(Duration::from_secs(5))
            .with_heartbeat_interval(Duration::from_secs(2))
            .with_route_refresh_interval(Duration::from_secs(1))
    }

    fn client(&self) -> Sender {
        Sender(self.process.client())
    }

    /// Creates `topic` with `queues` queues and waits until the NameServer routes it.
    fn create_topic(&self, topic: &str, queues: i32) {
        create_topic(&self.process.addr(), topic, queues)
            .unwrap_or_else(|error| panic!("create {topic}: {error:#}"));
        wait_until(&format!("a route for {topic}"), || {
            topic_route(&self.namesrv, topic)
                .ok()
                .flatten()
                .is_some_and(|route| {
                    route
                        .queue_datas
                        .iter()
                        .any(|q| q.read_queue_nums == queues)
                })
        });
    }
}

/// Sends messages with raw SEND_MESSAGE frames.
struct Sender(RemotingClient);

impl Sender {
    /// Sends one message to `topic` queue `queue_id`; returns its queue offset.
    fn send(&mut self, topic: &str, queue_id: i32, body: &str, tags: Option<&str>) -> i64 {
        let mut message = Message::new(topic, queue_id, body);
        if let Some(tags) = tags {
            message = message.tags(tags);
        }
        self.0.send_with(SendCode::Long, &message).queue_offset
    }
}

/// Logs to the test output when `RUST_LOG` asks for it (`RUST_LOG=ringmq_client=debug`).
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Polls `condition` until it holds; fails naming `what` after [`DEADLINE`].
fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    ringmq_testkit::wait_until(what, DEADLINE, condition);
}

/// Everything a handler saw: (body, reconsume times, topic, queue id, queue offset, thread).
#[derive(Debug, Clone, Default)]
struct Seen(Arc<Mutex<Vec<Delivery>>>);

#[derive(Debug, Clone)]
struct Delivery {
    body: String,
    reconsume_times: i32,
    topic: String,
    queue: MessageQueue,
    queue_offset: i64,
    thread: String,
}

impl Seen {
    fn record(&self, messages: &[ReceivedMessage], queue: &MessageQueue) {
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        let mut seen = self.0.lock().unwrap();
        for message in messages {
            seen.push(Delivery {
                body: String::from_utf8_lossy(&message.body).into_owned(),
                reconsume_times: message.reconsume_times,
                topic: message.topic.clone(),
                queue: queue.clone(),
                queue_offset: message.queue_offset,
                thread: thread.clone(),
            });
        }
    }

    fn all(&self) -> Vec<Delivery> {
        self.0.lock().unwrap().clone()
    }

    fn bodies(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for delivery in self.all() {
            *counts.entry(delivery.body).or_insert(0) += 1;
        }
        counts
    }
}

/// A push consumer builder with fast timers for tests.
fn push_builder(broker: &Broker, group: &str, topic: &str) -> ringmq_client::PushConsumerBuilder {
    PushConsumer::builder("unused:1", group)
        .config(broker.config())
        .subscribe(topic, "*")
        .start_position(StartPosition::First)
        .rebalance_interval(Duration::from_secs(1))
        .commit_interval(Duration::from_millis(200))
        .long_poll_timeout(Duration::from_secs(2))
}

fn committed(broker: &Broker, group: &str, queue: &MessageQueue) -> Option<i64> {
    let consumer = PullConsumer::builder("unused:1", group)
        .config(broker.config())
        .build()
        .unwrap();
    let offset = consumer.committed(queue).wait().unwrap();
    consumer.shutdown();
    offset
}

// ------------------------------------------------------------------------------------------------
// Push consumer

#[test]
fn push_consumer_receives_every_message_once_and_commits() {
    logs();
    let broker = Broker::start();
    broker.create_topic("push-once", 4);
    let mut sender = broker.client();
    for i in 0..40 {
        sender.send("push-once", i % 4, &format!("m{i}"), Some("a"));
    }
    let seen = Seen::default();
    let handler_seen = seen.clone();
    let consumer = push_builder(&broker, "g-once", "push-once")
        .batch_size(4)
        .start(move |messages, context| {
            assert!(messages.len() <= 4);
            assert!(
                messages
                    .iter()
                    .all(|m| m.queue_id == context.queue.queue_id)
            );
            handler_seen.record(messages, &context.queue);
            ConsumeOutcome::Success
        })
        .unwrap();
    let assigned = consumer.assigned_queues();
    assert_eq!(
        assigned.iter().filter(|q| q.topic == "push-once").count(),
        4,
        "the only member takes every queue: {assigned:?}"
    );
    wait_until("40 messages", || seen.all().len() >= 40);
    // Sent while the consumer is long-polling.
    for i in 40..50 {
        sender.send("push-once", i % 4, &format!("m{i}"), Some("a"));
    }
    wait_until("50 messages", || seen.all().len() >= 50);
    consumer.shutdown().unwrap();
    consumer.shutdown().unwrap();

    let counts = seen.bodies();
    assert_eq!(counts.len(), 50);
    assert!(
        counts.values().all(|&n| n == 1),
        "each message once: {counts:?}"
    );
    let deliveries = seen.all();
    assert!(
        deliveries
            .iter()
            .all(|d| d.thread == "ringmq-consume-g-once"),
        "the handler runs on the consume thread"
    );
    // Per queue, in offset order.
    for queue_id in 0..4 {
        let offsets: Vec<i64> = deliveries
            .iter()
            .filter(|d| d.queue.queue_id == queue_id)
            .map(|d| d.queue_offset)
            .collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    }
    for queue_id in 0..4 {
        let queue = MessageQueue {
            broker_name: "broker-a".into(),
            queue_id,
            topic: "push-once".into(),
        };
        // m0..m49 went to queue i % 4: queues 0 and 1 got 13, queues 2 and 3 got 12.
        let expected = if queue_id < 2 { 13 } else { 12 };
        assert_eq!(committed(&broker, "g-once", &queue), Some(expected));
    }
}

/// Starts a consumer whose handler takes `work` per message, waits until it is handling the
/// first message, shuts it down with `shutdown_timeout`, and returns the committed offset of
/// queue 0 and how long the shutdown took.
fn shutdown_during_a_batch(
    broker: &Broker,
    group: &str,
    work: Duration,
    shutdown_timeout: Duration,
) -> (Option<i64>, Duration) {
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let consumer = push_builder(broker, group, "push-slow")
        .shutdown_timeout(shutdown_timeout)
        .start(move |_messages, _context| {
            let _ = started_tx.send(());
            // The handler's own work, not a wait for a condition.
            std::thread::sleep(work);
            ConsumeOutcome::Success
        })
        .unwrap();
    started_rx
        .recv_timeout(DEADLINE)
        .expect("the handler starts");
    let stopping = Instant::now();
    consumer.shutdown().unwrap();
    let took = stopping.elapsed();
    let queue = MessageQueue {
        broker_name: "broker-a".into(),
        queue_id: 0,
        topic: "push-slow".into(),
    };
    (committed(broker, group, &queue), took)
}

#[test]
fn shutdown_waits_for_the_running_batch_within_its_timeout() {
    logs();
    let broker = Broker::start();
    broker.create_topic("push-slow", 1);
    broker.client().send("push-slow", 0, "slow", None);
    // The batch ends within the timeout: it is committed.
    let (offset, _) =
        shutdown_during_a_batch(&broker, "g-slow-wait", Duration::from_millis(500), DEADLINE);
    assert_eq!(
        offset,
        Some(1),
        "the batch in the handler completed and was committed"
    );
    // It does not: shutdown returns after the timeout and the message stays uncommitted.
    let (offset, took) = shutdown_during_a_batch(
        &broker,
        "g-slow-abandon",
        Duration::from_secs(5),
        Duration::from_millis(200),
    );
    assert_eq!(offset, Some(0), "an unfinished batch is not committed");
    assert!(took < Duration::from_secs(4), "shutdown waited {took:?}");
}

#[test]
fn retry_sends_the_message_back_and_it_returns_with_reconsume_times_one() {
    logs();
    let broker = Broker::start();
    broker.create_topic("push-retry", 1);
    let mut sender = broker.client();
    let seen = Seen::default();
    let handler_seen = seen.clone();
    let consumer = push_builder(&broker, "g-retry", "push-retry")
        .start(move |messages, context| {
            handler_seen.record(messages, &context.queue);
            if messages
                .iter()
                .any(|m| m.body.as_ref() == b"fail-once" && m.reconsume_times == 0)
            {
                ConsumeOutcome::Retry
            } else {
                ConsumeOutcome::Success
            }
        })
        .unwrap();
    sender.send("push-retry", 0, "fail-once", None);
    sender.send("push-retry", 0, "fine", None);
    wait_until("the retried message to come back", || {
        seen.all()
            .iter()
            .any(|d| d.body == "fail-once" && d.reconsume_times == 1)
    });
    let deliveries = seen.all();
    let again = deliveries
        .iter()
        .find(|d| d.body == "fail-once" && d.reconsume_times == 1)
        .unwrap();
    assert_eq!(
        again.topic, "push-retry",
        "the original topic, not the retry topic"
    );
    assert_eq!(again.queue.topic, "%RETRY%g-retry");
    assert_eq!(
        deliveries.iter().filter(|d| d.body == "fail-once").count(),
        2
    );
    assert!(deliveries.iter().any(|d| d.body == "fine"));
    consumer.shutdown().unwrap();
    let queue = MessageQueue {
        broker_name: "broker-a".into(),
        queue_id: 0,
        topic: "push-retry".into(),
    };
    assert_eq!(
        committed(&broker, "g-retry", &queue),
        Some(2),
        "the sent-back message is done"
    );
}

#[test]
fn a_restarted_consumer_resumes_from_the_committed_offset() {
    logs();
    let broker = Broker::start();
    broker.create_topic("push-resume", 2);
    let mut sender = broker.client();
    for i in 0..20 {
        sender.send("push-resume", i % 2, &format!("old{i}"), None);
    }
    let first = Seen::default();
    let handler_seen = first.clone();
    let consumer = push_builder(&broker, "g-resume", "push-resume")
        .start(move |messages, context| {
            handler_seen.record(messages, &context.queue);
            ConsumeOutcome::Success
        })
        .unwrap();
    wait_until("the old messages", || first.all().len() >= 20);
    consumer.shutdown().unwrap();
    drop(consumer);

    for i in 0..10 {
        sender.send("push-resume", i % 2, &format!("new{i}"), None);
    }
    let second = Seen::default();
    let handler_seen = second.clone();
    let consumer = push_builder(&broker, "g-resume", "push-resume")
        .start(move |messages, context| {
            handler_seen.record(messages, &context.queue);
            ConsumeOutcome::Success
        })
        .unwrap();
    wait_until("the new messages", || second.all().len() >= 10);
    consumer.shutdown().unwrap();
    let bodies: BTreeSet<String> = second.all().into_iter().map(|d| d.body).collect();
    let expected: BTreeSet<String> = (0..10).map(|i| format!("new{i}")).collect();
    assert_eq!(bodies, expected, "nothing old again, nothing new missed");
    assert_eq!(second.all().len(), 10);
}

#[test]
fn group_members_split_the_queues_and_take_over_a_leaver() {
    logs();
    let broker = Broker::start();
    broker.create_topic("push-split", 4);
    let seen = Seen::default();
    let start_member = |instance: &str| {
        let handler_seen = seen.clone();
        push_builder(&broker, "g-split", "push-split")
            .config(broker.config().with_instance_name(instance))
            .start(move |messages, context| {
                handler_seen.record(messages, &context.queue);
                ConsumeOutcome::Success
            })
            .unwrap()
    };
    let a = start_member("member-a");
    let b = start_member("member-b");
    let topic_queues = |consumer: &PushConsumer| -> Vec<i32> {
        consumer
            .assigned_queues()
            .into_iter()
            .filter(|q| q.topic == "push-split")
            .map(|q| q.queue_id)
            .collect()
    };
    wait_until("two queues each", || {
        topic_queues(&a).len() == 2 && topic_queues(&b).len() == 2
    });
    let mut all: Vec<i32> = topic_queues(&a);
    all.extend(topic_queues(&b));
    all.sort_unstable();
    assert_eq!(all, [0, 1, 2, 3], "disjoint and complete");

    let mut sender = broker.client();
    for i in 0..8 {
        sender.send("push-split", i % 4, &format!("before{i}"), None);
    }
    wait_until("the first 8", || seen.all().len() >= 8);
    b.shutdown().unwrap();
    wait_until("the remaining member to take every queue", || {
        topic_queues(&a).len() == 4
    });
    for i in 0..8 {
        sender.send("push-split", i % 4, &format!("after{i}"), None);
    }
    wait_until("the next 8", || {
        seen.bodies()
            .keys()
            .filter(|b| b.starts_with("after"))
            .count()
            == 8
    });
    a.shutdown().unwrap();
    assert_eq!(seen.bodies().len(), 16, "nothing lost");
}

#[test]
fn orderly_consumer_retries_locally_in_order() {
    logs();
    let broker = Broker::start();
    broker.create_topic("push-orderly", 2);
    let mut sender = broker.client();
    for i in 0..10 {
        sender.send("push-orderly", i % 2, &format!("o{i}"), None);
    }
    let seen = Seen::default();
    let handler_seen = seen.clone();
    let failed = Arc::new(Mutex::new(false));
    let consumer = push_builder(&broker, "g-orderly", "push-orderly")
        .orderly(true)
        .start(move |messages, context| {
            assert!(context.orderly);
            handler_seen.record(messages, &context.queue);
            let mut failed = failed.lock().unwrap();
            if messages[0].body.as_ref() == b"o4" && !*failed {
                *failed = true;
                return ConsumeOutcome::Retry;
            }
            ConsumeOutcome::Success
        })
        .unwrap();
    wait_until("every message done", || {
        seen.bodies().len() >= 10 && seen.all().len() >= 11
    });
    consumer.shutdown().unwrap();
    let deliveries = seen.all();
    let o4: Vec<&Delivery> = deliveries.iter().filter(|d| d.body == "o4").collect();
    assert_eq!(o4.len(), 2, "retried once, locally");
    assert_eq!((o4[0].reconsume_times, o4[1].reconsume_times), (0, 1));
    assert!(
        deliveries.iter().all(|d| d.queue.topic == "push-orderly"),
        "no send-back to the retry topic"
    );
    for queue_id in 0..2 {
        let offsets: Vec<i64> = deliveries
            .iter()
            .filter(|d| d.queue.queue_id == queue_id)
            .map(|d| d.queue_offset)
            .collect();
        let mut deduped = offsets.clone();
        deduped.dedup();
        assert!(
            deduped.windows(2).all(|w| w[0] < w[1]),
            "in order: {offsets:?}"
        );
    }
}

#[test]
fn broadcasting_members_each_get_everything_and_keep_local_offsets() {
    logs();
    let broker = Broker::start();
    broker.create_topic("push-broadcast", 2);
    let offsets_dir = tempfile::tempdir().unwrap();
    let start = |instance: &str, seen: &Seen| {
        let handler_seen = seen.clone();
        push_builder(&broker, "g-broadcast", "push-broadcast")
            .config(broker.config().with_instance_name(instance))
            .mode(ConsumeMode::Broadcasting)
            .offset_store_dir(offsets_dir.path())
            .start(move |messages, context| {
                handler_seen.record(messages, &context.queue);
                ConsumeOutcome::Success
            })
            .unwrap()
    };
    let (seen_a, seen_b) = (Seen::default(), Seen::default());
    let a = start("bc-a", &seen_a);
    let b = start("bc-b", &seen_b);
    assert_eq!(a.assigned_queues().len(), 2, "every queue, no retry topic");
    let mut sender = broker.client();
    for i in 0..6 {
        sender.send("push-broadcast", i % 2, &format!("b{i}"), None);
    }
    wait_until("both members to see all", || {
        seen_a.all().len() >= 6 && seen_b.all().len() >= 6
    });
    a.shutdown().unwrap();
    b.shutdown().unwrap();
    let file = offsets_dir.path().join("bc-a/g-broadcast/offsets.json");
    assert!(file.exists(), "local offsets written to {}", file.display());

    sender.send("push-broadcast", 0, "late", None);
    let seen_again = Seen::default();
    let a = start("bc-a", &seen_again);
    wait_until("the late message", || !seen_again.all().is_empty());
    a.shutdown().unwrap();
    let bodies: Vec<String> = seen_again.all().into_iter().map(|d| d.body).collect();
    assert_eq!(bodies, ["late"], "resumed from the local offsets");
}

/// A TCP forwarder in front of a NameServer that the test can take away, closing every
/// connection it carries, as if the NameServer died.
struct Proxy {
    addr: SocketAddr,
    stopped: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stopped = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (acceptor_stopped, acceptor_connections) =
            (Arc::clone(&stopped), Arc::clone(&connections));
        let acceptor = std::thread::spawn(move || {
            for client in listener.incoming() {
                if acceptor_stopped.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut kept = acceptor_connections.lock().unwrap();
                kept.push(client.try_clone().unwrap());
                kept.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self {
            addr,
            stopped,
            connections,
            acceptor: Some(acceptor),
        }
    }

    /// Closes every forwarded connection and refuses new ones.
    fn stop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        // Wakes the blocking accept so the acceptor sees the flag and closes the listener.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().unwrap();
        }
        for connection in self.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }
}

#[test]
fn consumers_keep_working_when_every_nameserver_is_down() {
    logs();
    let broker = Broker::start();
    broker.create_topic("no-namesrv", 2);
    let mut proxy = Proxy::start(broker.namesrv.parse().unwrap());
    let config = || {
        ClientConfig::new(&proxy.addr.to_string())
            .with_request_timeout(Duration::from_secs(5))
            .with_heartbeat_interval(Duration::from_secs(1))
            .with_route_refresh_interval(Duration::from_millis(200))
    };
    let seen = Seen::default();
    let handler_seen = seen.clone();
    let push = push_builder(&broker, "g-no-namesrv", "no-namesrv")
        .config(config())
        .start(move |messages, context| {
            handler_seen.record(messages, &context.queue);
            ConsumeOutcome::Success
        })
        .unwrap();
    let puller = PullConsumer::builder("unused:1", "g-no-namesrv-pull")
        .config(config())
        .start_position(StartPosition::First)
        .build()
        .unwrap();
    let queues = puller.queues("no-namesrv").wait().unwrap();
    puller.assign(queues.clone()).wait().unwrap();
    let topic_queues = || {
        push.assigned_queues()
            .iter()
            .filter(|q| q.topic == "no-namesrv")
            .count()
    };
    wait_until("the push consumer's queues", || topic_queues() == 2);

    proxy.stop();
    let mut sender = broker.client();
    for i in 0..6 {
        sender.send("no-namesrv", i % 2, &format!("n{i}"), None);
    }
    wait_until("delivery without a NameServer", || seen.all().len() >= 6);
    let mut polled = Vec::new();
    let start = Instant::now();
    while polled.len() < 6 {
        assert!(start.elapsed() < DEADLINE, "polling without a NameServer");
        polled.extend(puller.poll(Duration::from_secs(1)).wait().unwrap());
    }
    puller.commit().wait().unwrap();
    assert_eq!(puller.committed(&queues[0]).wait().unwrap(), Some(3));
    // Several rebalances (every second) and route refreshes run against the cached routes.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(3) {
        assert_eq!(topic_queues(), 2, "the assignment survives the outage");
        std::thread::sleep(Duration::from_millis(50));
    }
    sender.send("no-namesrv", 0, "later", None);
    wait_until("a later message", || seen.bodies().contains_key("later"));
    push.shutdown().unwrap();
    puller.shutdown();
}

// ------------------------------------------------------------------------------------------------
// Pull consumer

#[test]
fn pull_consumer_polls_seeks_and_commits() {
    logs();
    let broker = Broker::start();
    broker.create_topic("pull-topic", 2);
    let mut sender = broker.client();
    for i in 0..10 {
        sender.send("pull-topic", i % 2, &format!("p{i}"), None);
    }
    let consumer = PullConsumer::builder("unused:1", "g-pull")
        .config(broker.config())
        .start_position(StartPosition::First)
        .build()
        .unwrap();
    let queues = consumer.queues("pull-topic").wait().unwrap();
    assert_eq!(queues.len(), 2);
    assert!(
        consumer.poll(Duration::from_millis(100)).wait().is_err(),
        "nothing assigned"
    );
    consumer.assign(queues.clone()).wait().unwrap();
    assert_eq!(consumer.position(&queues[0]), Some(0));

    let mut received = Vec::new();
    let start = Instant::now();
    while received.len() < 10 {
        assert!(start.elapsed() < DEADLINE, "polling 10 messages");
        received.extend(consumer.poll(Duration::from_secs(2)).wait().unwrap());
    }
    let bodies: BTreeSet<String> = received
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(bodies.len(), 10);
    assert_eq!(consumer.position(&queues[0]), Some(5));
    assert_eq!(consumer.position(&queues[1]), Some(5));

    // Nothing new: an empty poll once the timeout has passed.
    let polled_at = Instant::now();
    assert!(
        consumer
            .poll(Duration::from_millis(500))
            .wait()
            .unwrap()
            .is_empty()
    );
    assert!(polled_at.elapsed() >= Duration::from_millis(400));

    // A long poll returns as soon as a message arrives.
    let waiting = consumer.poll(Duration::from_secs(20));
    sender.send("pull-topic", 1, "late", None);
    let late = waiting.wait().unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].body.as_ref(), b"late");

    consumer.seek(&queues[0], 3).wait().unwrap();
    let mut again = Vec::new();
    let start = Instant::now();
    while again.len() < 2 {
        assert!(start.elapsed() < DEADLINE, "polling after the seek");
        again.extend(consumer.poll(Duration::from_secs(2)).wait().unwrap());
    }
    assert_eq!(
        again
            .iter()
            .map(|m| (m.queue_id, m.queue_offset))
            .collect::<Vec<_>>(),
        [(0, 3), (0, 4)]
    );
    assert!(consumer.seek(&MessageQueue::default(), 1).wait().is_err());

    assert_eq!(
        consumer.committed(&queues[0]).wait().unwrap(),
        Some(0),
        "first message still stored: 0"
    );
    consumer.commit().wait().unwrap();
    assert_eq!(consumer.committed(&queues[0]).wait().unwrap(), Some(5));
    assert_eq!(consumer.committed(&queues[1]).wait().unwrap(), Some(6));
    consumer.shutdown();
    consumer.shutdown();

    let resumed = PullConsumer::builder("unused:1", "g-pull")
        .config(broker.config())
        .build()
        .unwrap();
    resumed.assign(queues.clone()).wait().unwrap();
    assert_eq!(resumed.position(&queues[0]), Some(5));
    assert_eq!(resumed.position(&queues[1]), Some(6));
    resumed.shutdown();
}

#[test]
fn pull_consumer_keeps_messages_of_a_dropped_poll_and_keeps_pulls_parked() {
    logs();
    let broker = Broker::start();
    broker.create_topic("pull-drop", 2);
    let mut sender = broker.client();
    let consumer = PullConsumer::builder("unused:1", "g-pull-drop")
        .config(broker.config())
        .start_position(StartPosition::First)
        .build()
        .unwrap();
    let queues = consumer.queues("pull-drop").wait().unwrap();
    consumer.assign(queues.clone()).wait().unwrap();
    assert!(
        consumer
            .poll(Duration::from_millis(200))
            .wait()
            .unwrap()
            .is_empty()
    );

    // A poll dropped while it waits, then a new poll: the message goes to the new one, and the
    // positions move only with what it returns.
    let dropped = consumer.poll(Duration::from_secs(20));
    drop(dropped);
    let waiting = consumer.poll(Duration::from_secs(20));
    sender.send("pull-drop", 0, "after-drop", None);
    let got = waiting.wait().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body.as_ref(), b"after-drop");
    assert_eq!(consumer.position(&queues[0]), Some(1));
    assert_eq!(consumer.position(&queues[1]), Some(0));

    // Pulls stay parked across polls: a message sent while nobody polls waits in the consumer
    // (positions unchanged) and the next poll returns it at once.
    assert!(
        consumer
            .poll(Duration::from_millis(100))
            .wait()
            .unwrap()
            .is_empty()
    );
    sender.send("pull-drop", 1, "buffered", None);
    let deadline = Instant::now() + DEADLINE;
    let mut buffered = Vec::new();
    while buffered.is_empty() {
        assert!(Instant::now() < deadline, "the buffered message");
        buffered = consumer.poll(Duration::from_millis(500)).wait().unwrap();
    }
    assert_eq!(buffered[0].body.as_ref(), b"buffered");
    assert_eq!(consumer.position(&queues[1]), Some(1));

    // A seek discards the queue's buffered result: the sought offset is read again.
    sender.send("pull-drop", 1, "second", None);
    consumer.seek(&queues[1], 0).wait().unwrap();
    let mut again = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while again.len() < 2 {
        assert!(Instant::now() < deadline, "re-reading after the seek");
        again.extend(consumer.poll(Duration::from_secs(2)).wait().unwrap());
    }
    assert_eq!(
        again
            .iter()
            .map(|m| (m.queue_id, m.queue_offset))
            .collect::<Vec<_>>(),
        [(1, 0), (1, 1)]
    );
    assert_eq!(consumer.position(&queues[1]), Some(2));
    consumer.shutdown();
}
