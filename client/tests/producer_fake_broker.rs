//! The producer against in-process fake servers on 127.0.0.1: a NameServer that serves routes
//! and brokers whose answer to SEND requests each test chooses (store, refuse, garbage, close,
//! silence). Proves failover to another broker group within the retry budget, avoidance of the
//! broker that failed, broker refusals surfacing with code and remark, and typed errors (never a
//! hang or panic) on bad answers. Every wait polls a condition with a deadline.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_client::{ClientConfig, ClientError, Message, Producer, SendStatus};
use ringmq_protocol::blocking::{Connection, ConnectionError};
use ringmq_protocol::body::{self, BrokerData, QueueData, TopicRouteData, perm};
use ringmq_protocol::header::{
    GetRouteInfoRequestHeader, SendMessageRequestHeader, SendMessageResponseHeader,
    UnregisterClientRequestHeader,
};
use ringmq_protocol::message::{BatchIter, Properties};
use ringmq_protocol::{Command, CommandHead, RequestCode, ResponseCode, encode_frame};
use ringmq_testkit::wait_until;

/// How a fake broker answers SEND_MESSAGE_V2 / SEND_BATCH_MESSAGE.
#[derive(Debug, Clone)]
enum Behaviour {
    /// Stores: SUCCESS with a full response header.
    Store,
    /// SUCCESS without the response header fields.
    StoreWithoutHeader,
    /// Refuses with this code and remark.
    Refuse(ResponseCode, &'static str),
    /// Writes bytes that are not a frame.
    Garbage,
    /// Closes the connection.
    Close,
    /// Never answers.
    Silence,
}

/// What a fake server does with a request: the frame to answer, if any, and whether to close.
type Handler = dyn Fn(&Command) -> (Option<Vec<u8>>, bool) + Send + Sync;

/// A TCP server on an ephemeral port whose connections are served by `handler`, recording every
/// request. Stops (accept loop and connection threads) when dropped.
struct FakeServer {
    addr: String,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<Command>>>,
}

impl FakeServer {
    fn start(handler: Arc<Handler>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (accept_stop, accept_requests) = (Arc::clone(&stop), Arc::clone(&requests));
        thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (stop, requests, handler) = (
                    Arc::clone(&accept_stop),
                    Arc::clone(&accept_requests),
                    Arc::clone(&handler),
                );
                thread::spawn(move || serve(stream, &stop, &requests, &*handler));
            }
        });
        Self {
            addr,
            stop,
            requests,
        }
    }

    /// Requests received with `code`.
    fn received(&self, code: RequestCode) -> Vec<Command> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|command| command.request_code() == code)
            .cloned()
            .collect()
    }

    /// SEND_MESSAGE_V2 and SEND_BATCH_MESSAGE requests received.
    fn sends(&self) -> usize {
        self.received(RequestCode::SendMessageV2).len()
            + self.received(RequestCode::SendBatchMessage).len()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Serves one connection until the peer closes, the handler asks to close, or the server stops.
fn serve(stream: TcpStream, stop: &AtomicBool, requests: &Mutex<Vec<Command>>, handler: &Handler) {
    let Ok(mut connection) = Connection::from_stream(stream) else {
        return;
    };
    while !stop.load(Ordering::Acquire) {
        let command = match connection.read_frame(Duration::from_millis(50)) {
            Ok(command) => command,
            Err(ConnectionError::Timeout) => continue,
            Err(_) => return,
        };
        requests.lock().unwrap().push(command.clone());
        let (answer, close) = handler(&command);
        if let Some(answer) = answer
            && connection.write_raw(&answer).is_err()
        {
            return;
        }
        if close {
            let _ = connection.stream().shutdown(Shutdown::Both);
            return;
        }
    }
}

fn respond<E: ringmq_protocol::EncodeExt>(
    request: &Command,
    code: ResponseCode,
    remark: Option<&str>,
    header: &E,
    body: &[u8],
) -> Vec<u8> {
    let mut head = CommandHead::response_to(request, code);
    head.remark = remark;
    let mut out = BytesMut::new();
    encode_frame(&head, header, body, &mut out);
    out.to_vec()
}

/// A fake broker: answers heartbeats and unregistrations, and sends as `behaviour` says.
struct FakeBroker {
    server: FakeServer,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl FakeBroker {
    fn start(behaviour: Behaviour) -> Self {
        let behaviour = Arc::new(Mutex::new(behaviour));
        let current = Arc::clone(&behaviour);
        let next_offset = AtomicI64::new(0);
        let handler: Arc<Handler> = Arc::new(move |request: &Command| {
            let code = request.request_code();
            if !matches!(
                code,
                RequestCode::SendMessageV2 | RequestCode::SendBatchMessage
            ) {
                return (
                    Some(respond(request, ResponseCode::Success, None, &(), &[])),
                    false,
                );
            }
            if request.is_oneway() {
                return (None, false);
            }
            let behaviour = current.lock().unwrap().clone();
            match behaviour {
                Behaviour::Store => {
                    let header = SendMessageRequestHeader::from_command(request).unwrap();
                    let count = if header.is_batch() {
                        BatchIter::new(&request.body).count()
                    } else {
                        1
                    };
                    let first = next_offset.fetch_add(count as i64, Ordering::Relaxed);
                    let msg_id = (first..first + count as i64)
                        .map(|offset| format!("7F00000100002A9F{offset:016X}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    let answer = SendMessageResponseHeader {
                        msg_id: &msg_id,
                        queue_id: header.queue_id.max(0),
                        queue_offset: first,
                        transaction_id: None,
                        msg_region: Some("DefaultRegion"),
                        trace_on: Some("true"),
                    };
                    (
                        Some(respond(request, ResponseCode::Success, None, &answer, &[])),
                        false,
                    )
                }
                Behaviour::StoreWithoutHeader => (
                    Some(respond(request, ResponseCode::Success, None, &(), &[])),
                    false,
                ),
                Behaviour::Refuse(code, remark) => {
                    (Some(respond(request, code, Some(remark), &(), &[])), false)
                }
                Behaviour::Garbage => (Some(b"\xde\xad\xbe\xefnot a frame at all".to_vec()), false),
                Behaviour::Close => (None, true),
                Behaviour::Silence => (None, false),
            }
        });
        Self {
            server: FakeServer::start(handler),
            behaviour,
        }
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }
}

/// A fake NameServer serving fixed routes; unknown topics get TOPIC_NOT_EXIST.
fn fake_namesrv(routes: BTreeMap<String, TopicRouteData>) -> FakeServer {
    FakeServer::start(Arc::new(move |request: &Command| {
        if request.request_code() != RequestCode::GetRouteinfoByTopic {
            return (
                Some(respond(request, ResponseCode::Success, None, &(), &[])),
                false,
            );
        }
        let header: GetRouteInfoRequestHeader<'_> = request.header().unwrap();
        let answer = match routes.get(header.topic) {
            Some(route) => respond(
                request,
                ResponseCode::Success,
                None,
                &(),
                &body::to_vec(route),
            ),
            None => respond(
                request,
                ResponseCode::TopicNotExist,
                Some("No topic route info in name server"),
                &(),
                &[],
            ),
        };
        (Some(answer), false)
    }))
}

/// A route over the given brokers (name, address), `queues` writable queues each.
fn route(brokers: &[(&str, &FakeBroker)], queues: i32) -> TopicRouteData {
    TopicRouteData {
        broker_datas: brokers
            .iter()
            .map(|(name, broker)| BrokerData {
                broker_addrs: BTreeMap::from([(0, broker.server.addr.clone())]),
                broker_name: (*name).into(),
                cluster: "fake".into(),
                ..BrokerData::default()
            })
            .collect(),
        queue_datas: brokers
            .iter()
            .map(|(name, _)| QueueData {
                broker_name: (*name).into(),
                perm: perm::READ | perm::WRITE,
                read_queue_nums: queues,
                write_queue_nums: queues,
                topic_sys_flag: 0,
            })
            .collect(),
        ..TopicRouteData::default()
    }
}

fn start_producer(namesrv: &FakeServer, send_timeout: Duration, group: &str) -> Producer {
    let config = ClientConfig::new(&namesrv.addr)
        .with_request_timeout(Duration::from_millis(400))
        .with_connect_timeout(Duration::from_millis(400));
    Producer::builder(&namesrv.addr)
        .config(config)
        .group(group)
        .send_timeout(send_timeout)
        .retries(2)
        .build()
        .unwrap()
}

#[test]
fn transport_failures_fail_over_to_the_other_group_which_then_takes_every_send() {
    for failure in [Behaviour::Close, Behaviour::Silence, Behaviour::Garbage] {
        let (a, b) = (
            FakeBroker::start(failure.clone()),
            FakeBroker::start(Behaviour::Store),
        );
        let namesrv = fake_namesrv(BTreeMap::from([(
            "orders".to_owned(),
            route(&[("broker-a", &a), ("broker-b", &b)], 2),
        )]));
        let send_timeout = Duration::from_secs(3);
        let producer = start_producer(&namesrv, send_timeout, "failover");
        // Round-robin over a0 a1 b0 b1 reaches broker-a within four sends.
        for index in 0..8 {
            let started = Instant::now();
            let result = producer
                .send(Message::new("orders", format!("m{index}")))
                .wait()
                .unwrap_or_else(|error| panic!("{failure:?}: send {index}: {error}"));
            assert!(
                started.elapsed() < send_timeout,
                "{failure:?}: within the budget"
            );
            assert_eq!(result.queue.broker_name, "broker-b", "{failure:?}");
            assert_eq!(result.status, SendStatus::SendOk);
            assert_eq!(result.msg_id.len(), 32);
        }
        assert_eq!(
            a.server.sends(),
            1,
            "{failure:?}: broker-a tried once, then avoided"
        );
        assert_eq!(b.server.sends(), 8, "{failure:?}");
        producer.shutdown();
    }
}

#[test]
fn retryable_refusals_fail_over_and_exhaust_retries_with_the_last_code() {
    let a = FakeBroker::start(Behaviour::Refuse(ResponseCode::SystemBusy, "busy"));
    let b = FakeBroker::start(Behaviour::Store);
    let namesrv = fake_namesrv(BTreeMap::from([(
        "orders".to_owned(),
        route(&[("broker-a", &a), ("broker-b", &b)], 2),
    )]));
    let producer = start_producer(&namesrv, Duration::from_secs(3), "busy");
    for index in 0..6 {
        let result = producer
            .send(Message::new("orders", format!("m{index}")))
            .wait()
            .unwrap();
        assert_eq!(result.queue.broker_name, "broker-b");
    }
    assert_eq!(
        a.server.sends(),
        1,
        "a busy broker is avoided after one refusal"
    );

    a.set(Behaviour::Refuse(
        ResponseCode::ServiceNotAvailable,
        "disk full",
    ));
    b.set(Behaviour::Refuse(
        ResponseCode::ServiceNotAvailable,
        "disk full",
    ));
    let sends_before = a.server.sends() + b.server.sends();
    let error = producer
        .send(Message::new("orders", "x"))
        .wait()
        .unwrap_err();
    let ClientError::RetriesExhausted { attempts, last, .. } = &error else {
        panic!("expected RetriesExhausted, got {error}");
    };
    assert_eq!(*attempts, 3, "1 + 2 retries");
    assert!(matches!(**last, ClientError::Broker { .. }), "{last}");
    assert_eq!(
        error.response_code(),
        Some(ResponseCode::ServiceNotAvailable)
    );
    assert_eq!(error.remark(), Some("disk full"));
    assert_eq!(a.server.sends() + b.server.sends(), sends_before + 3);
    producer.shutdown();
}

#[test]
fn a_non_retryable_refusal_comes_back_at_once_with_code_and_remark() {
    let refusal = Behaviour::Refuse(ResponseCode::MessageIllegal, "the message is illegal");
    let (a, b) = (
        FakeBroker::start(refusal.clone()),
        FakeBroker::start(refusal),
    );
    let namesrv = fake_namesrv(BTreeMap::from([(
        "orders".to_owned(),
        route(&[("broker-a", &a), ("broker-b", &b)], 2),
    )]));
    let producer = start_producer(&namesrv, Duration::from_secs(3), "refused");
    let error = producer
        .send(Message::new("orders", "x"))
        .wait()
        .unwrap_err();
    match &error {
        ClientError::Broker {
            request,
            code,
            remark,
            ..
        } => {
            assert_eq!(*request, RequestCode::SendMessageV2);
            assert_eq!(*code, ResponseCode::MessageIllegal);
            assert_eq!(remark, "the message is illegal");
        }
        other => panic!("expected a broker refusal, got {other}"),
    }
    assert_eq!(a.server.sends() + b.server.sends(), 1, "not retried");
    producer.shutdown();
}

#[test]
fn bad_answers_are_typed_errors_within_the_timeout() {
    let send_timeout = Duration::from_millis(1_500);
    for failure in [
        Behaviour::Garbage,
        Behaviour::Close,
        Behaviour::Silence,
        Behaviour::StoreWithoutHeader,
    ] {
        let broker = FakeBroker::start(failure.clone());
        let namesrv = fake_namesrv(BTreeMap::from([(
            "orders".to_owned(),
            route(&[("broker-a", &broker)], 2),
        )]));
        let producer = start_producer(&namesrv, send_timeout, "bad-answers");
        let started = Instant::now();
        let error = producer
            .send(Message::new("orders", "x"))
            .wait()
            .unwrap_err();
        assert!(
            started.elapsed() < send_timeout + Duration::from_millis(500),
            "{failure:?} took {:?}",
            started.elapsed()
        );
        let last = match &error {
            ClientError::RetriesExhausted { last, .. } => &**last,
            other => other,
        };
        let expected = match failure {
            Behaviour::Garbage => matches!(last, ClientError::Protocol { .. }),
            Behaviour::Close => matches!(
                last,
                ClientError::ConnectionLost { .. } | ClientError::Connect { .. }
            ),
            Behaviour::Silence => matches!(last, ClientError::Timeout { .. }),
            // Stored but unreadable: not retried (a retry would duplicate the message).
            _ => matches!(error, ClientError::BadResponse { .. }) && broker.server.sends() == 1,
        };
        assert!(expected, "{failure:?}: unexpected {error}");
        producer.shutdown();
    }

    // A NameServer that answers garbage: a typed error too.
    let garbage = FakeServer::start(Arc::new(|_: &Command| {
        (Some(b"\xff\xff\xff\xffjunk".to_vec()), false)
    }));
    let producer = start_producer(&garbage, send_timeout, "bad-namesrv");
    let error = producer
        .send(Message::new("orders", "x"))
        .wait()
        .unwrap_err();
    assert!(
        matches!(error, ClientError::NameServersUnreachable { .. }),
        "{error}"
    );
    producer.shutdown();
}

#[test]
fn an_unknown_topic_is_sent_on_the_template_brokers_for_auto_creation() {
    let broker = FakeBroker::start(Behaviour::Store);
    let namesrv = fake_namesrv(BTreeMap::from([(
        "TBW102".to_owned(),
        route(&[("broker-a", &broker)], 8),
    )]));
    let producer = start_producer(&namesrv, Duration::from_secs(3), "auto-create");
    for _ in 0..8 {
        let result = producer.send(Message::new("BrandNew", "x")).wait().unwrap();
        assert!(
            result.queue.queue_id < 4,
            "at most defaultTopicQueueNums queues"
        );
        assert_eq!(result.queue.topic, "BrandNew");
    }
    for request in broker.server.received(RequestCode::SendMessageV2) {
        let header = SendMessageRequestHeader::from_command(&request).unwrap();
        assert_eq!(header.topic, "BrandNew");
        assert_eq!(header.default_topic, "TBW102");
        assert_eq!(header.default_topic_queue_nums, 4);
    }
    producer.shutdown();

    // Without the template either, the topic is not found.
    let namesrv = fake_namesrv(BTreeMap::from([(
        "orders".to_owned(),
        route(&[("broker-a", &broker)], 1),
    )]));
    let producer = start_producer(&namesrv, Duration::from_secs(3), "no-template");
    let error = producer
        .send(Message::new("BrandNew", "x"))
        .wait()
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::TopicNotFound { topic } if topic == "BrandNew"),
        "{error}"
    );
    producer.shutdown();
}

#[test]
fn heartbeat_oneway_batch_selector_async_and_shutdown() {
    let broker = FakeBroker::start(Behaviour::Store);
    let namesrv = fake_namesrv(BTreeMap::from([(
        "events".to_owned(),
        route(&[("broker-a", &broker)], 4),
    )]));
    let producer = start_producer(&namesrv, Duration::from_secs(3), "everything");

    // A synchronous send; the first route makes the producer heartbeat the broker.
    let message = Message::new("events", "hello")
        .with_tags("greeting")
        .with_keys(["k1"])
        .with_property("lang", "en");
    let result = producer.send(message).wait().unwrap();
    let sent = &broker.server.received(RequestCode::SendMessageV2)[0];
    let header = SendMessageRequestHeader::from_command(sent).unwrap();
    let properties = Properties::new(header.properties.unwrap());
    assert_eq!(properties.get("UNIQ_KEY"), Some(result.msg_id.as_str()));
    assert_eq!(properties.get("TAGS"), Some("greeting"));
    assert_eq!(properties.get("lang"), Some("en"));
    assert_eq!(header.producer_group, "everything");
    assert_eq!(&sent.body[..], b"hello");
    wait_until(
        "a heartbeat of the producer group",
        Duration::from_secs(5),
        || {
            broker
                .server
                .received(RequestCode::HeartBeat)
                .iter()
                .any(|heartbeat| String::from_utf8_lossy(&heartbeat.body).contains("everything"))
        },
    );

    // Async: the Pending is a future for any runtime.
    let runtime = compio::runtime::Runtime::new().unwrap();
    let result = runtime
        .block_on(producer.send(Message::new("events", "async")))
        .unwrap();
    assert_eq!(result.queue.topic, "events");

    // Oneway: done once queued; the broker gets a oneway frame.
    producer
        .send_oneway(Message::new("events", "fire"))
        .wait()
        .unwrap();
    wait_until("a oneway send", Duration::from_secs(5), || {
        broker
            .server
            .received(RequestCode::SendMessageV2)
            .iter()
            .any(Command::is_oneway)
    });

    // Ordered: the selector's index picks the queue, every time.
    for _ in 0..3 {
        let result = producer
            .send_with_selector(Message::new("events", "ordered"), |queues, _| {
                assert_eq!(queues.len(), 4);
                6 // taken modulo 4
            })
            .wait()
            .unwrap();
        assert_eq!(result.queue.queue_id, 2);
    }

    // A batch: one request, each message with its own id; msg_id lists them in order.
    let batch = (0..3)
        .map(|index| Message::new("events", format!("b{index}")))
        .collect();
    let result = producer.send_batch(batch).wait().unwrap();
    let request = &broker.server.received(RequestCode::SendBatchMessage)[0];
    assert!(
        SendMessageRequestHeader::from_command(request)
            .unwrap()
            .is_batch()
    );
    let ids: Vec<String> = BatchIter::new(&request.body)
        .map(|entry| {
            Properties::new(entry.unwrap().properties)
                .get("UNIQ_KEY")
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(result.msg_id, ids.join(","));
    assert_eq!(result.offset_msg_id.split(',').count(), 3);
    let mixed = vec![Message::new("events", "1"), Message::new("other", "2")];
    assert!(matches!(
        producer.send_batch(mixed).wait(),
        Err(ClientError::InvalidArgument(_))
    ));

    // Shutdown tells the broker; later sends are refused.
    producer.shutdown();
    producer.shutdown();
    let unregistered = broker.server.received(RequestCode::UnregisterClient);
    assert_eq!(unregistered.len(), 1);
    let header: UnregisterClientRequestHeader<'_> = unregistered[0].header().unwrap();
    assert_eq!(header.producer_group, Some("everything"));
    assert!(matches!(
        producer.send(Message::new("events", "late")).wait(),
        Err(ClientError::Shutdown)
    ));
}

/// A listener that never accepts and whose accept queue is full: connects to it get no
/// SYN-ACK (Linux drops the SYN), so they hang until the client's connect timeout — a
/// blackholed server, deterministic on loopback. Keep the returned sockets alive.
fn blackholed_connects() -> (String, socket2::Socket, Vec<TcpStream>) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&any.into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    // Backlog 0 queues one connection; fill it (and the SYN queue overflow) without accepting.
    let mut fillers = Vec::new();
    for _ in 0..4 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(_) => break,
        }
    }
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
        "the accept queue is full: connects hang"
    );
    (addr.to_string(), listener, fillers)
}

/// A server that accepts and never answers.
fn silent_server() -> FakeServer {
    FakeServer::start(Arc::new(|_: &Command| (None, false)))
}

#[test]
fn blackholed_name_servers_cost_no_more_than_the_send_timeout() {
    let silent = silent_server();
    let (hanging, _listener, _fillers) = blackholed_connects();
    // Client timeouts (3 s each) as long as the whole send budget: only the deadline passed
    // down to the route lookup can end it in time.
    for namesrv in [
        format!("{};{}", silent.addr, hanging),
        format!("{hanging};{}", silent.addr),
    ] {
        let producer = Producer::builder(&namesrv)
            .group("blackholed-ns")
            .send_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let started = Instant::now();
        let error = producer
            .send(Message::new("orders", "x"))
            .wait()
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(error, ClientError::NameServersUnreachable { .. }),
            "{namesrv}: {error}"
        );
        assert!(
            took < Duration::from_millis(2_600),
            "{namesrv}: took {took:?}"
        );
        producer.shutdown();
    }
}

#[test]
fn a_blackholed_broker_leaves_time_to_retry_on_another() {
    let (hanging, _listener, _fillers) = blackholed_connects();
    let b = FakeBroker::start(Behaviour::Store);
    let a_silent = FakeBroker::start(Behaviour::Silence);
    for (name, dead_addr) in [
        ("connect", hanging.clone()),
        ("answer", a_silent.server.addr.clone()),
    ] {
        let mut data = route(&[("broker-a", &a_silent), ("broker-b", &b)], 2);
        data.broker_datas[0].broker_addrs.insert(0, dead_addr);
        let namesrv = fake_namesrv(BTreeMap::from([("orders".to_owned(), data)]));
        let send_timeout = Duration::from_secs(3);
        // Default client timeouts: connect 3 s and request 3 s, the whole send budget.
        let producer = Producer::builder(&namesrv.addr)
            .group("blackholed-broker")
            .send_timeout(send_timeout)
            .build()
            .unwrap();
        // Round-robin over a0 a1 b0 b1 reaches broker-a within four sends.
        for index in 0..4 {
            let started = Instant::now();
            let result = producer
                .send(Message::new("orders", format!("m{index}")))
                .wait()
                .unwrap_or_else(|error| panic!("{name}: send {index}: {error}"));
            let took = started.elapsed();
            assert!(took < send_timeout, "{name}: send {index} took {took:?}");
            assert_eq!(result.queue.broker_name, "broker-b", "{name}");
        }
        producer.shutdown();
    }
}

#[test]
fn sends_beyond_max_outstanding_fail_fast_until_one_finishes() {
    let silent = silent_server();
    let producer = Producer::builder(&silent.addr)
        .group("capped")
        .send_timeout(Duration::from_millis(800))
        .max_outstanding_sends(1)
        .build()
        .unwrap();
    // The NameServer never answers: the first send stays in flight for its whole timeout.
    let first = producer.send(Message::new("orders", "1"));
    let refused = producer
        .send_oneway(Message::new("orders", "2"))
        .wait()
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ClientError::TooManyOutstandingSends { limit: 1, .. }
        ),
        "{refused}"
    );
    assert!(first.wait().is_err(), "no route: the first send fails");
    // Its slot is free again: the next send is taken (and fails on the route, not the cap).
    let next = producer
        .send(Message::new("orders", "3"))
        .wait()
        .unwrap_err();
    assert!(
        !matches!(next, ClientError::TooManyOutstandingSends { .. }),
        "{next}"
    );
    producer.shutdown();
}
