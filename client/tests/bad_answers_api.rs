//! The public handles (producer, push consumer) against fake NameServers and brokers that
//! misbehave: every failure is a typed [`ClientError`] within the send budget, never a hang or a
//! panic, and a healthy broker group keeps taking sends while the other one is broken. Also the
//! header encoding end to end: binary by default, JSON with `ClientConfig::with_json_headers`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use ringmq_client::{
    ClientConfig, ClientError, ConsumeOutcome, Message, Producer, PushConsumer, SendStatus,
};
use ringmq_protocol::header::SendMessageResponseHeader;
use ringmq_protocol::{Command, RequestCode, ResponseCode, SerializeType, body};

use common::{FakeServer, HANG_LIMIT, Handle, Peer, route_of};

const TOPIC: &str = "T";
/// Send budget of the producers here (retries included).
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Per-request limit, so a silent broker leaves time for retries within [`SEND_TIMEOUT`].
const REQUEST_TIMEOUT: Duration = Duration::from_millis(400);
/// Slack over [`SEND_TIMEOUT`] for scheduling on a loaded machine.
const SLACK: Duration = Duration::from_secs(2);

/// The innermost error: through `RetriesExhausted` and `NameServersUnreachable`.
fn root_cause(error: &ClientError) -> &ClientError {
    match error {
        ClientError::RetriesExhausted { last, .. } => root_cause(last),
        ClientError::NameServersUnreachable { last_error, .. } => root_cause(last_error),
        other => other,
    }
}

fn is_send(request: &Command) -> bool {
    matches!(
        request.request_code(),
        RequestCode::SendMessage | RequestCode::SendMessageV2 | RequestCode::SendBatchMessage
    )
}

/// Answers a send as a broker that stored it at `queue_offset`.
fn answer_stored(peer: &mut Peer, request: &Command, queue_offset: i64) {
    let header = SendMessageResponseHeader {
        msg_id: "7F00000100002A9F0000000000000000",
        queue_id: 0,
        queue_offset,
        transaction_id: None,
        msg_region: None,
        trace_on: None,
    };
    peer.answer_with(request, ResponseCode::Success, None, &header, &[]);
}

/// A fake broker: heartbeats and other requests get SUCCESS, sends go to `on_send`.
fn fake_broker(on_send: impl Fn(&mut Peer, &Command) + Send + Sync + 'static) -> FakeServer {
    FakeServer::start(move |_, mut peer| {
        while let Some(request) = peer.read() {
            if is_send(&request) {
                on_send(&mut peer, &request);
            } else if !request.is_oneway() {
                peer.answer(&request, ResponseCode::Success, None, &[]);
            }
        }
    })
}

/// A broker that stores every send.
fn healthy_broker() -> FakeServer {
    let offset = Arc::new(AtomicUsize::new(0));
    fake_broker(move |peer, request| {
        let queue_offset = offset.fetch_add(1, Ordering::SeqCst) as i64;
        answer_stored(peer, request, queue_offset);
    })
}

/// A NameServer routing [`TOPIC`] to `brokers` (name, address).
fn fake_namesrv(brokers: &[(&str, &str)]) -> FakeServer {
    let route = body::to_vec(&route_of(brokers));
    FakeServer::start(move |_, mut peer| {
        while let Some(request) = peer.read() {
            match request.request_code() {
                RequestCode::GetRouteinfoByTopic => {
                    peer.answer(&request, ResponseCode::Success, None, &route);
                }
                _ => peer.answer(&request, ResponseCode::TopicNotExist, None, &[]),
            }
        }
    })
}

fn config(namesrv: &str) -> ClientConfig {
    ClientConfig::new(namesrv)
        .with_request_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_heartbeat_interval(Duration::from_millis(200))
        .with_route_refresh_interval(Duration::from_millis(200))
}

fn producer(config: ClientConfig) -> Handle<Producer> {
    Handle::new(
        Producer::builder("127.0.0.1:1")
            .config(config)
            .group("bad-answers-producer")
            .send_timeout(SEND_TIMEOUT)
            .retries(2)
            .build()
            .unwrap(),
    )
}

/// One send; its error (it must fail) and how long it took.
fn failing_send(producer: &Producer) -> (ClientError, Duration) {
    let start = Instant::now();
    let result = producer.send(Message::new(TOPIC, "x")).wait();
    let elapsed = start.elapsed();
    assert!(
        elapsed < SEND_TIMEOUT + SLACK,
        "the send took {elapsed:?}, over its {SEND_TIMEOUT:?} budget"
    );
    (result.expect_err("the send cannot succeed"), elapsed)
}

#[test]
fn garbage_namesrv_is_a_typed_error_within_the_budget() {
    let namesrv = FakeServer::start(|_, mut peer| {
        while peer.read().is_some() {
            peer.write(b"\x00\x00\x00\x05\x09garbage");
        }
    });
    let producer = producer(config(&namesrv.addr));
    let (error, _) = failing_send(&producer);
    assert!(
        matches!(error, ClientError::NameServersUnreachable { .. }),
        "{error:?}"
    );
    assert!(
        matches!(root_cause(&error), ClientError::Protocol { .. }),
        "{error:?}"
    );
}

#[test]
fn garbage_broker_is_a_typed_error_within_the_budget() {
    let broker = fake_broker(|peer, _| peer.write(b"HTTP/1.1 500 Oops\r\n\r\n"));
    let namesrv = fake_namesrv(&[("broker-a", &broker.addr)]);
    let producer = producer(config(&namesrv.addr));
    let (error, _) = failing_send(&producer);
    assert!(
        matches!(root_cause(&error), ClientError::Protocol { .. }),
        "{error:?}"
    );
}

#[test]
fn silent_broker_is_a_timeout_within_the_budget() {
    let broker = fake_broker(|_, _| {});
    let namesrv = fake_namesrv(&[("broker-a", &broker.addr)]);
    let producer = producer(config(&namesrv.addr));
    let (error, elapsed) = failing_send(&producer);
    assert!(
        matches!(root_cause(&error), ClientError::Timeout { .. }),
        "{error:?}"
    );
    assert!(elapsed >= REQUEST_TIMEOUT, "gave up early: {elapsed:?}");
}

#[test]
fn resetting_broker_is_connection_lost() {
    let broker = FakeServer::start(|_, mut peer| {
        while let Some(request) = peer.read() {
            if is_send(&request) {
                peer.reset();
                return;
            }
            peer.answer(&request, ResponseCode::Success, None, &[]);
        }
    });
    let namesrv = fake_namesrv(&[("broker-a", &broker.addr)]);
    let producer = producer(config(&namesrv.addr));
    let (error, _) = failing_send(&producer);
    assert!(
        matches!(
            root_cause(&error),
            ClientError::ConnectionLost { .. } | ClientError::Connect { .. }
        ),
        "{error:?}"
    );
}

#[test]
fn send_answer_without_its_header_is_a_bad_response() {
    let broker = fake_broker(|peer, request| {
        peer.answer(request, ResponseCode::Success, None, &[]);
    });
    let namesrv = fake_namesrv(&[("broker-a", &broker.addr)]);
    let producer = producer(config(&namesrv.addr));
    let (error, _) = failing_send(&producer);
    assert!(
        matches!(root_cause(&error), ClientError::BadResponse { .. }),
        "{error:?}"
    );
}

#[test]
fn broker_refusal_keeps_its_code_and_remark() {
    let broker = fake_broker(|peer, request| {
        peer.answer(
            request,
            ResponseCode::from_i32(13),
            Some("message illegal: fake"),
            &[],
        );
    });
    let namesrv = fake_namesrv(&[("broker-a", &broker.addr)]);
    let producer = producer(config(&namesrv.addr));
    let (error, _) = failing_send(&producer);
    assert_eq!(error.response_code(), Some(ResponseCode::from_i32(13)));
    assert_eq!(error.remark(), Some("message illegal: fake"));
}

#[test]
fn a_broken_broker_group_does_not_fail_sends_while_another_is_healthy() {
    let broken = fake_broker(|peer, _| peer.write(&(-1i32).to_be_bytes()));
    let healthy = healthy_broker();
    let namesrv = fake_namesrv(&[("broker-a", &broken.addr), ("broker-b", &healthy.addr)]);
    let producer = producer(config(&namesrv.addr));
    for index in 0..20 {
        let start = Instant::now();
        let sent = producer
            .send(Message::new(TOPIC, format!("m{index}")))
            .wait()
            .unwrap_or_else(|error| panic!("send {index}: {error}"));
        assert!(start.elapsed() < SEND_TIMEOUT + SLACK);
        assert_eq!(sent.status, SendStatus::SendOk);
        assert_eq!(sent.queue.broker_name, "broker-b");
    }
}

/// Fake NameServer and broker that count requests by header encoding.
struct Counting {
    namesrv: FakeServer,
    broker: FakeServer,
    matching: Arc<AtomicUsize>,
    other: Arc<AtomicUsize>,
}

fn counting(expected: SerializeType) -> Counting {
    let matching = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(AtomicUsize::new(0));
    let count = {
        let matching = Arc::clone(&matching);
        let other = Arc::clone(&other);
        move |request: &Command| {
            if request.serialize_type == expected {
                matching.fetch_add(1, Ordering::SeqCst);
            } else {
                other.fetch_add(1, Ordering::SeqCst);
            }
        }
    };
    let broker_count = count.clone();
    let broker = FakeServer::start(move |_, mut peer| {
        let mut offset = 0;
        while let Some(request) = peer.read() {
            broker_count(&request);
            if is_send(&request) {
                answer_stored(&mut peer, &request, offset);
                offset += 1;
            } else if !request.is_oneway() {
                peer.answer(&request, ResponseCode::Success, None, &[]);
            }
        }
    });
    let route = body::to_vec(&route_of(&[("broker-a", &broker.addr)]));
    let namesrv = FakeServer::start(move |_, mut peer| {
        while let Some(request) = peer.read() {
            count(&request);
            peer.answer(&request, ResponseCode::Success, None, &route);
        }
    });
    Counting {
        namesrv,
        broker,
        matching,
        other,
    }
}

#[test]
fn header_encoding_is_binary_by_default_and_json_on_request() {
    for (json, expected) in [
        (false, SerializeType::RocketMq),
        (true, SerializeType::Json),
    ] {
        let servers = counting(expected);
        let mut config = config(&servers.namesrv.addr);
        if json {
            config = config.with_json_headers();
        }
        let producer = producer(config);
        for index in 0..5 {
            producer
                .send(Message::new(TOPIC, format!("m{index}")))
                .wait()
                .unwrap_or_else(|error| panic!("send {index} ({expected:?}): {error}"));
        }
        drop(producer);
        let matching = servers.matching.load(Ordering::SeqCst);
        let other = servers.other.load(Ordering::SeqCst);
        assert!(matching >= 6, "{expected:?}: only {matching} requests seen");
        assert_eq!(other, 0, "{other} requests were not {expected:?}");
        assert!(servers.broker.accepted() >= 1);
    }
}

#[test]
fn push_consumer_over_a_garbage_namesrv_starts_or_fails_typed_and_stops() {
    let namesrv = FakeServer::start(|_, mut peer| {
        while peer.read().is_some() {
            peer.write(b"garbage garbage garbage");
        }
    });
    let addr = namesrv.addr.clone();
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let started = PushConsumer::builder(&addr, "bad-answers-group")
            .config(config(&addr))
            .subscribe(TOPIC, "*")
            .rebalance_interval(Duration::from_millis(200))
            .start(|_, _| ConsumeOutcome::Success);
        let outcome = match started {
            Ok(consumer) => {
                let queues = consumer.assigned_queues();
                let stopped = consumer.shutdown();
                Ok((queues, stopped.is_ok()))
            }
            Err(error) => Err(error),
        };
        done_tx.send(outcome).ok();
    });
    let outcome = done_rx
        .recv_timeout(HANG_LIMIT)
        .expect("the push consumer hung starting or stopping over a garbage NameServer");
    match outcome {
        Ok((queues, stopped)) => {
            assert!(
                queues.is_empty(),
                "queues from a garbage NameServer: {queues:?}"
            );
            assert!(stopped);
        }
        Err(error) => assert!(
            !matches!(error, ClientError::InvalidArgument(_)),
            "{error:?}"
        ),
    }
}
