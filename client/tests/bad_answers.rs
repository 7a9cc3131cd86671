//! The client against servers that misbehave: garbage, impossible frame lengths, undecodable
//! headers, silence, resets, early closes, late and out-of-order answers.
//!
//! Every fake server is a `std::net::TcpListener` thread on 127.0.0.1 driven by the test; the
//! client side runs on a compio runtime in the test thread. What is checked every time: the
//! caller gets a typed [`ClientError`] (never a panic), within its timeout (never a hang: every
//! client call is itself bounded by [`HANG_LIMIT`]), and other requests keep working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{FakeServer, HANG_LIMIT, block_on, bounded, dead_addr, route_data};

use std::net::Shutdown;
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_client::remoting::{Backoff, Connection, ConnectionOptions, ConnectionPool};
use ringmq_client::route::RouteTable;
use ringmq_client::{ClientConfig, ClientError, ClientInstance};
use ringmq_protocol::body;
use ringmq_protocol::{
    Command, CommandHead, DecodeError, FrameError, RequestCode, ResponseCode, SerializeType,
    encode_frame,
};

/// Request timeout of the cases that must fail for another reason than a timeout.
const LONG_TIMEOUT: Duration = Duration::from_secs(10);
/// Request timeout of the cases that are expected to time out.
const SHORT_TIMEOUT: Duration = Duration::from_millis(300);
/// A failure that is not a timeout must arrive well before [`LONG_TIMEOUT`].
const FAST_FAILURE: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------------------------------------
// The client side

fn options() -> ConnectionOptions {
    ConnectionOptions {
        connect_timeout: Duration::from_secs(3),
        ..ConnectionOptions::default()
    }
}

async fn connect(addr: &str) -> Rc<Connection> {
    bounded("connect", Connection::connect(addr, &options()))
        .await
        .unwrap_or_else(|error| panic!("connect to {addr}: {error}"))
}

/// One request with a body; returns the result and how long it took.
async fn timed_request(
    connection: &Connection,
    request_body: &[u8],
    timeout: Duration,
) -> (Result<Command, ClientError>, Duration) {
    let start = Instant::now();
    let result = bounded(
        "a request",
        connection.request(
            RequestCode::GetBrokerRuntimeInfo,
            &(),
            request_body,
            timeout,
        ),
    )
    .await;
    (result, start.elapsed())
}

/// The decode error inside a [`ClientError::Protocol`]; panics on any other outcome.
fn protocol_source(result: Result<Command, ClientError>) -> DecodeError {
    match result {
        Err(ClientError::Protocol { source, .. }) => (*source).clone(),
        other => panic!("expected ClientError::Protocol, got {other:?}"),
    }
}

fn assert_lost(result: &Result<Command, ClientError>) {
    assert!(
        matches!(result, Err(ClientError::ConnectionLost { .. })),
        "expected ClientError::ConnectionLost, got {result:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// Garbage and impossible frames

#[test]
fn garbage_is_a_protocol_error_and_the_pool_reconnects() {
    let server = FakeServer::start(|index, mut peer| {
        let request = peer.request();
        if index == 0 {
            peer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            peer.drain();
        } else {
            peer.echo(&request);
            peer.drain();
        }
    });
    block_on(async {
        let pool = ConnectionPool::new(options(), Backoff::default());
        let connection = bounded("pool get", pool.get(&server.addr)).await.unwrap();
        let (result, elapsed) = timed_request(&connection, b"first", LONG_TIMEOUT).await;
        // "HTTP" as a length prefix is over a gigabyte: refused at the prefix.
        let source = protocol_source(result);
        assert!(
            matches!(source, DecodeError::Frame(FrameError::FrameTooLarge { .. })),
            "{source:?}"
        );
        assert!(elapsed < FAST_FAILURE, "garbage took {elapsed:?} to fail");
        assert!(
            connection.is_closed(),
            "a connection that sent garbage stays open"
        );
        assert_eq!(connection.pending(), 0);

        // The broken connection refuses further requests at once, with the same reason.
        let (again, elapsed) = timed_request(&connection, b"again", LONG_TIMEOUT).await;
        assert!(
            matches!(again, Err(ClientError::Protocol { .. })),
            "{again:?}"
        );
        assert!(elapsed < FAST_FAILURE);

        // The pool replaces it with a fresh connection.
        let answer = bounded(
            "pool request",
            pool.request(
                &server.addr,
                RequestCode::GetBrokerRuntimeInfo,
                &(),
                b"second",
                LONG_TIMEOUT,
            ),
        )
        .await
        .unwrap();
        assert_eq!(&answer.body[..], b"second");
        assert_eq!(server.accepted(), 2);
    });
}

#[test]
fn random_garbage_never_panics_or_hangs() {
    // Deterministic pseudo-random garbage (xorshift), several lengths.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut garbage = Vec::new();
    for length in [1usize, 3, 4, 7, 8, 9, 64, 1000] {
        let bytes: Vec<u8> = (0..length)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 56) as u8
            })
            .collect();
        garbage.push(bytes);
    }
    let garbage = Arc::new(garbage);
    let served = Arc::clone(&garbage);
    let server = FakeServer::start(move |index, mut peer| {
        let _request = peer.request();
        peer.write(&served[index % served.len()]);
        // Close the writing side so a short prefix ends in EOF rather than silence.
        let _ignored = peer.stream().shutdown(Shutdown::Write);
        peer.drain();
    });
    block_on(async {
        for (index, bytes) in garbage.iter().enumerate() {
            let connection = connect(&server.addr).await;
            let (result, elapsed) = timed_request(&connection, b"x", LONG_TIMEOUT).await;
            let error = result.expect_err("garbage is never a valid answer");
            assert!(
                matches!(
                    error,
                    ClientError::Protocol { .. } | ClientError::ConnectionLost { .. }
                ),
                "garbage #{index} ({} bytes {bytes:02x?}): {error:?}",
                bytes.len()
            );
            assert!(elapsed < FAST_FAILURE, "garbage #{index} took {elapsed:?}");
            assert!(connection.is_closed());
        }
    });
}

#[test]
fn negative_length_is_a_protocol_error() {
    let server = FakeServer::start(|_, mut peer| {
        let _request = peer.request();
        peer.write(&(-2i32).to_be_bytes());
        peer.drain();
    });
    block_on(async {
        let connection = connect(&server.addr).await;
        let (result, elapsed) = timed_request(&connection, b"x", LONG_TIMEOUT).await;
        let source = protocol_source(result);
        assert!(
            matches!(
                source,
                DecodeError::Frame(FrameError::NegativeLength { length: -2 })
            ),
            "{source:?}"
        );
        assert!(elapsed < FAST_FAILURE);
        assert!(connection.is_closed());
    });
}

#[test]
fn oversized_length_fails_at_the_prefix_not_at_the_timeout() {
    let server = FakeServer::start(|_, mut peer| {
        let _request = peer.request();
        // Claims a 1 GiB frame and then sends nothing more, keeping the connection open.
        peer.write(&(1i32 << 30).to_be_bytes());
        peer.write(&[0, 0, 0, 0]);
        peer.drain();
    });
    block_on(async {
        let options = ConnectionOptions {
            max_frame_bytes: 64 << 10,
            ..options()
        };
        let connection = bounded("connect", Connection::connect(&server.addr, &options))
            .await
            .unwrap();
        let (result, elapsed) = timed_request(&connection, b"x", LONG_TIMEOUT).await;
        let source = protocol_source(result);
        assert!(
            matches!(
                source,
                DecodeError::Frame(FrameError::FrameTooLarge {
                    max_frame_bytes: 65_536,
                    ..
                })
            ),
            "{source:?}"
        );
        assert!(elapsed < FAST_FAILURE, "oversized frame took {elapsed:?}");
    });
}

#[test]
fn unknown_serialize_type_is_a_protocol_error() {
    let server = FakeServer::start(|_, mut peer| {
        let _request = peer.request();
        let mut frame = 4i32.to_be_bytes().to_vec();
        frame.extend_from_slice(&0x0700_0000u32.to_be_bytes());
        peer.write(&frame);
        peer.drain();
    });
    block_on(async {
        let connection = connect(&server.addr).await;
        let (result, _) = timed_request(&connection, b"x", LONG_TIMEOUT).await;
        let source = protocol_source(result);
        assert!(
            matches!(
                source,
                DecodeError::Frame(FrameError::UnknownSerializeType { type_byte: 7 })
            ),
            "{source:?}"
        );
    });
}

/// A whole, well-delimited frame whose header cannot be decoded.
fn frame_with_header(serialize_type: u8, header: &[u8]) -> Vec<u8> {
    let length = i32::try_from(4 + header.len()).unwrap();
    let marker = (u32::from(serialize_type) << 24) | u32::try_from(header.len()).unwrap();
    let mut frame = length.to_be_bytes().to_vec();
    frame.extend_from_slice(&marker.to_be_bytes());
    frame.extend_from_slice(header);
    frame
}

#[test]
fn undecodable_headers_are_protocol_errors_not_timeouts() {
    let headers: Vec<(u8, Vec<u8>)> = vec![
        // JSON marker, not JSON.
        (0, b"{not json at all".to_vec()),
        // JSON marker, valid JSON of the wrong shape.
        (0, b"[1,2,3]".to_vec()),
        // Binary marker, truncated after the code.
        (1, vec![0, 0]),
        // Binary marker, a negative remark length.
        (1, {
            // code 0, language 0, version 0, opaque 1, flag 1 (response), remark length -5.
            let mut header = vec![0, 0, 0, 0, 0];
            header.extend_from_slice(&1i32.to_be_bytes());
            header.extend_from_slice(&1i32.to_be_bytes());
            header.extend_from_slice(&(-5i32).to_be_bytes());
            header.extend_from_slice(&0i32.to_be_bytes());
            header
        }),
    ];
    let served = Arc::new(headers.clone());
    let server = FakeServer::start(move |index, mut peer| {
        let _request = peer.request();
        let (serialize_type, header) = &served[index];
        peer.write(&frame_with_header(*serialize_type, header));
        peer.drain();
    });
    block_on(async {
        for (index, (serialize_type, header)) in headers.iter().enumerate() {
            let connection = connect(&server.addr).await;
            let (result, elapsed) = timed_request(&connection, b"x", LONG_TIMEOUT).await;
            let source = protocol_source(result);
            assert!(
                matches!(source, DecodeError::Header(_)),
                "header #{index} (type {serialize_type}, {header:02x?}): {source:?}"
            );
            assert!(
                elapsed < FAST_FAILURE,
                "header #{index} took {elapsed:?}: the caller waited for its timeout"
            );
            // Whose answer it was cannot be known, so the connection is closed.
            assert!(connection.is_closed());
            assert_eq!(connection.pending(), 0);
        }
    });
}

// ------------------------------------------------------------------------------------------------
// Silence, late answers, resets, closes

#[test]
fn silent_server_times_out_and_the_connection_stays_usable() {
    let server = FakeServer::start(|_, mut peer| {
        // Ignores the first request; echoes the rest.
        let _ignored = peer.request();
        while let Some(request) = peer.read() {
            peer.echo(&request);
        }
    });
    block_on(async {
        let connection = connect(&server.addr).await;
        let (result, elapsed) = timed_request(&connection, b"ignored", SHORT_TIMEOUT).await;
        match result {
            Err(ClientError::Timeout {
                addr,
                code,
                timeout,
            }) => {
                assert_eq!(addr, server.addr);
                assert_eq!(code, RequestCode::GetBrokerRuntimeInfo);
                assert_eq!(timeout, SHORT_TIMEOUT);
            }
            other => panic!("expected ClientError::Timeout, got {other:?}"),
        }
        assert!(elapsed >= SHORT_TIMEOUT, "timed out early: {elapsed:?}");
        assert!(elapsed < FAST_FAILURE, "timed out late: {elapsed:?}");
        assert!(
            !connection.is_closed(),
            "a timeout must not close the connection"
        );
        assert_eq!(
            connection.pending(),
            0,
            "the timed-out request's slot leaked"
        );
        let (answer, _) = timed_request(&connection, b"answered", LONG_TIMEOUT).await;
        assert_eq!(&answer.unwrap().body[..], b"answered");
    });
}

#[test]
fn late_answers_after_a_timeout_are_dropped() {
    let server = FakeServer::start(|_, mut peer| {
        let first = peer.request();
        let second = peer.request();
        // The first answer arrives after its caller gave up, right before the second one.
        peer.answer(&first, ResponseCode::Success, Some("late"), b"first");
        peer.answer(&second, ResponseCode::Success, Some("on time"), b"second");
        peer.drain();
    });
    block_on(async {
        let connection = connect(&server.addr).await;
        let (first, _) = timed_request(&connection, b"first", SHORT_TIMEOUT).await;
        assert!(
            matches!(first, Err(ClientError::Timeout { .. })),
            "{first:?}"
        );
        let (second, _) = timed_request(&connection, b"second", LONG_TIMEOUT).await;
        let second = second.unwrap();
        assert_eq!(&second.body[..], b"second", "got the late answer instead");
        assert_eq!(second.remark.as_deref(), Some("on time"));
        assert!(!connection.is_closed());
        assert_eq!(connection.pending(), 0);
        // Nothing else is delivered later either.
        let (third, _) = timed_request(&connection, b"third", SHORT_TIMEOUT).await;
        assert!(
            matches!(third, Err(ClientError::Timeout { .. })),
            "{third:?}"
        );
    });
}

#[test]
fn reset_mid_request_is_connection_lost() {
    let server = FakeServer::start(|_, mut peer| {
        let _request = peer.request();
        peer.reset();
    });
    block_on(async {
        let connection = connect(&server.addr).await;
        let (result, elapsed) = timed_request(&connection, b"x", LONG_TIMEOUT).await;
        assert_lost(&result);
        assert!(elapsed < FAST_FAILURE, "a reset took {elapsed:?} to notice");
        assert!(connection.is_closed());
    });
}

#[test]
fn reset_in_the_middle_of_an_answer_is_connection_lost() {
    let server = FakeServer::start(|_, mut peer| {
        let request = peer.request();
        let mut head = CommandHead::response_to(&request, ResponseCode::Success);
        head.remark = Some("cut short");
        let mut out = BytesMut::new();
        encode_frame(&head, &(), &[7u8; 4096], &mut out);
        let half = out.len() / 2;
        peer.write(&out[..half]);
        peer.reset();
    });
    block_on(async {
        let connection = connect(&server.addr).await;
        let (result, elapsed) = timed_request(&connection, b"x", LONG_TIMEOUT).await;
        assert_lost(&result);
        assert!(elapsed < FAST_FAILURE);
    });
}

#[test]
fn close_after_reading_fails_every_pending_request() {
    const REQUESTS: usize = 8;
    let server = FakeServer::start(|_, mut peer| {
        for _ in 0..REQUESTS {
            let _request = peer.request();
        }
        let _ignored = peer.stream().shutdown(Shutdown::Both);
    });
    block_on(async {
        let connection = connect(&server.addr).await;
        let start = Instant::now();
        let tasks: Vec<_> = (0..REQUESTS)
            .map(|index| {
                let connection = Rc::clone(&connection);
                compio::runtime::spawn(async move {
                    let body = format!("request {index}");
                    timed_request(&connection, body.as_bytes(), LONG_TIMEOUT).await
                })
            })
            .collect();
        for task in tasks {
            let (result, _) = bounded("a pending request", task).await.unwrap();
            assert_lost(&result);
        }
        assert!(start.elapsed() < FAST_FAILURE);
        assert!(connection.is_closed());
        assert_eq!(connection.pending(), 0);
    });
}

#[test]
fn refused_connect_is_a_connect_error_then_backs_off() {
    let addr = dead_addr();
    block_on(async {
        let pool = ConnectionPool::new(
            options(),
            Backoff {
                initial: Duration::from_secs(30),
                max: Duration::from_secs(30),
            },
        );
        let start = Instant::now();
        let first = bounded("connect", pool.get(&addr)).await;
        assert!(
            matches!(&first, Err(ClientError::Connect { addr: failed, .. }) if *failed == addr),
            "{first:?}"
        );
        // In backoff: refused at once, without another connect, and saying why.
        let second = bounded("connect in backoff", pool.get(&addr)).await;
        match second {
            Err(ClientError::Connect { reason, .. }) => {
                assert!(reason.contains("backoff"), "{reason}");
            }
            other => panic!("expected ClientError::Connect, got {other:?}"),
        }
        assert!(start.elapsed() < FAST_FAILURE);
        assert!(first.unwrap_err().is_transport());
    });
}

#[test]
fn a_bad_server_does_not_stall_requests_to_others() {
    let silent = FakeServer::start(|_, peer| peer.drain());
    let resetting = FakeServer::start(|_, mut peer| {
        let _request = peer.request();
        peer.reset();
    });
    let healthy = FakeServer::echo();
    let silence = Duration::from_secs(2);
    block_on(async {
        let pool = Rc::new(ConnectionPool::new(options(), Backoff::default()));
        let silent_task = {
            let pool = Rc::clone(&pool);
            let addr = silent.addr.clone();
            compio::runtime::spawn(async move {
                let result = pool
                    .request(&addr, RequestCode::GetBrokerRuntimeInfo, &(), b"", silence)
                    .await;
                (result, Instant::now())
            })
        };
        let reset = bounded(
            "request to a resetting server",
            pool.request(
                &resetting.addr,
                RequestCode::GetBrokerRuntimeInfo,
                &(),
                b"",
                LONG_TIMEOUT,
            ),
        )
        .await;
        assert_lost(&reset);
        for index in 0..50 {
            let body = format!("healthy {index}");
            let answer = bounded(
                "request to a healthy server",
                pool.request(
                    &healthy.addr,
                    RequestCode::GetBrokerRuntimeInfo,
                    &(),
                    body.as_bytes(),
                    LONG_TIMEOUT,
                ),
            )
            .await
            .unwrap();
            assert_eq!(&answer.body[..], body.as_bytes());
        }
        let healthy_done = Instant::now();
        let (silent_result, silent_done) =
            bounded("the silent request", silent_task).await.unwrap();
        assert!(
            matches!(silent_result, Err(ClientError::Timeout { .. })),
            "{silent_result:?}"
        );
        assert!(
            healthy_done < silent_done,
            "the healthy requests waited for the silent server"
        );
    });
}

// ------------------------------------------------------------------------------------------------
// Multiplexing

#[test]
fn concurrent_requests_are_matched_by_opaque_when_answered_out_of_order() {
    const REQUESTS: usize = 64;
    let server = FakeServer::start(|_, mut peer| {
        let mut requests: Vec<Command> = (0..REQUESTS).map(|_| peer.request()).collect();
        // Reverse order, with the middle interleaved, in one write.
        requests.reverse();
        let (front, back) = requests.split_at(REQUESTS / 2);
        let mut out = BytesMut::new();
        for (a, b) in front.iter().zip(back) {
            for request in [b, a] {
                encode_frame(
                    &CommandHead::response_to(request, ResponseCode::Success),
                    &(),
                    &request.body,
                    &mut out,
                );
            }
        }
        peer.write(&out);
        peer.drain();
    });
    block_on(async {
        let connection = connect(&server.addr).await;
        let tasks: Vec<_> = (0..REQUESTS)
            .map(|index| {
                let connection = Rc::clone(&connection);
                compio::runtime::spawn(async move {
                    let body = format!("request {index}");
                    let (answer, _) =
                        timed_request(&connection, body.as_bytes(), LONG_TIMEOUT).await;
                    (body, answer)
                })
            })
            .collect();
        for task in tasks {
            let (body, answer) = bounded("a multiplexed request", task).await.unwrap();
            let answer = answer.unwrap_or_else(|error| panic!("{body}: {error}"));
            assert_eq!(
                String::from_utf8_lossy(&answer.body),
                body,
                "an answer went to the wrong caller"
            );
        }
        assert_eq!(connection.pending(), 0);
        assert!(!connection.is_closed());
    });
}

#[test]
fn unsolicited_answers_are_ignored() {
    let server = FakeServer::start(|_, mut peer| {
        let request = peer.request();
        let mut stray = BytesMut::new();
        let mut head = CommandHead::response_to(&request, ResponseCode::Success);
        head.opaque = request.opaque.wrapping_add(1_000_000);
        encode_frame(&head, &(), b"stray", &mut stray);
        peer.write(&stray);
        peer.echo(&request);
        peer.drain();
    });
    block_on(async {
        let connection = connect(&server.addr).await;
        let (answer, _) = timed_request(&connection, b"mine", LONG_TIMEOUT).await;
        assert_eq!(&answer.unwrap().body[..], b"mine");
        assert!(!connection.is_closed());
    });
}

#[test]
fn server_requests_to_a_plain_connection_are_refused_not_fatal() {
    let (seen_tx, seen_rx) = mpsc::channel();
    let server = FakeServer::start(move |_, mut peer| {
        let request = peer.request();
        // A request of the server's own, before answering.
        let mut out = BytesMut::new();
        encode_frame(
            &CommandHead::request(
                RequestCode::NotifyConsumerIdsChanged,
                4242,
                SerializeType::Json,
            ),
            &(),
            &[],
            &mut out,
        );
        peer.write(&out);
        let reply = peer.read().expect("the client's reply");
        seen_tx.send(reply).unwrap();
        peer.echo(&request);
        peer.drain();
    });
    block_on(async {
        let connection = connect(&server.addr).await;
        let (answer, _) = timed_request(&connection, b"after", LONG_TIMEOUT).await;
        assert_eq!(&answer.unwrap().body[..], b"after");
    });
    let reply = seen_rx.recv_timeout(HANG_LIMIT).unwrap();
    assert!(reply.is_response());
    assert_eq!(reply.opaque, 4242);
    assert_eq!(reply.response_code(), ResponseCode::RequestCodeNotSupported);
}

// ------------------------------------------------------------------------------------------------
// Header encodings

/// A server that answers SUCCESS only to requests with `expected` headers, SYSTEM_ERROR naming
/// the type it saw otherwise.
fn header_checking_server(expected: SerializeType) -> FakeServer {
    FakeServer::start(move |_, mut peer| {
        while let Some(request) = peer.read() {
            if request.serialize_type == expected {
                peer.echo(&request);
            } else {
                let remark = format!(
                    "expected {expected:?} headers, got {:?}",
                    request.serialize_type
                );
                peer.answer(&request, ResponseCode::SystemError, Some(&remark), &[]);
            }
        }
    })
}

#[test]
fn binary_headers_by_default_json_on_request() {
    let binary = header_checking_server(SerializeType::RocketMq);
    let json = header_checking_server(SerializeType::Json);
    let config = ClientConfig::new("127.0.0.1:1").with_json_headers();
    assert_eq!(config.serialize_type, SerializeType::Json);
    assert_eq!(
        ClientConfig::new("127.0.0.1:1").serialize_type,
        SerializeType::RocketMq
    );
    block_on(async {
        let connection = connect(&binary.addr).await;
        assert_eq!(connection.serialize_type(), SerializeType::RocketMq);
        let (answer, _) = timed_request(&connection, b"binary", LONG_TIMEOUT).await;
        let answer = answer.unwrap();
        assert_eq!(
            answer.response_code(),
            ResponseCode::Success,
            "{:?}",
            answer.remark
        );

        let options = ConnectionOptions {
            serialize_type: config.serialize_type,
            ..options()
        };
        let connection = bounded("connect", Connection::connect(&json.addr, &options))
            .await
            .unwrap();
        assert_eq!(connection.serialize_type(), SerializeType::Json);
        let (answer, _) = timed_request(&connection, b"json", LONG_TIMEOUT).await;
        let answer = answer.unwrap();
        assert_eq!(
            answer.response_code(),
            ResponseCode::Success,
            "{:?}",
            answer.remark
        );
        assert_eq!(&answer.body[..], b"json");
    });
}

// ------------------------------------------------------------------------------------------------
// Route lookups against fake NameServers

/// A fake NameServer answering every route request with `answer(topic)`: (code, body).
fn fake_namesrv(
    answer: impl Fn(&str) -> (ResponseCode, Vec<u8>) + Send + Sync + 'static,
) -> FakeServer {
    let answer = Arc::new(answer);
    FakeServer::start(move |_, mut peer| {
        while let Some(request) = peer.read() {
            assert_eq!(request.request_code(), RequestCode::GetRouteinfoByTopic);
            let topic = request.ext.get("topic").unwrap_or_default().to_owned();
            let (code, answer_body) = answer(&topic);
            peer.answer(&request, code, Some("fake"), &answer_body);
        }
    })
}

fn route_pool() -> ConnectionPool {
    ConnectionPool::new(
        options(),
        Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
        },
    )
}

#[test]
fn route_lookup_moves_past_bad_namesrvs() {
    let garbage = FakeServer::start(|_, mut peer| {
        let _request = peer.request();
        peer.write(b"\xff\xff\xff\xffgarbage");
        peer.drain();
    });
    let resetting = FakeServer::start(|_, mut peer| {
        let _request = peer.request();
        peer.reset();
    });
    let good = fake_namesrv(|_| {
        (
            ResponseCode::Success,
            body::to_vec(&route_data("127.0.0.1:10911")),
        )
    });
    block_on(async {
        let pool = route_pool();
        let table = RouteTable::new(vec![
            dead_addr(),
            garbage.addr.clone(),
            resetting.addr.clone(),
            good.addr.clone(),
        ]);
        let route = bounded("route lookup", table.route(&pool, "T", LONG_TIMEOUT))
            .await
            .unwrap();
        assert_eq!(route.writable_queues().len(), 4);
        assert_eq!(route.master_addr("broker-a"), Some("127.0.0.1:10911"));
        assert_eq!(
            table.master_addr("broker-a").as_deref(),
            Some("127.0.0.1:10911")
        );
    });
}

#[test]
fn unreachable_namesrvs_are_a_typed_error_and_cached_routes_survive() {
    let dead = [dead_addr(), dead_addr()];
    block_on(async {
        let pool = route_pool();
        let table = RouteTable::new(dead.to_vec());
        let result = bounded("route lookup", table.route(&pool, "T", LONG_TIMEOUT)).await;
        match result {
            Err(ClientError::NameServersUnreachable { tried, last_error }) => {
                assert_eq!(tried, dead.join(";"));
                assert!(last_error.is_transport(), "{last_error:?}");
            }
            other => panic!("expected NameServersUnreachable, got {other:?}"),
        }
        // A route learned earlier is kept while every NameServer is down.
        table.store("T", route_data("127.0.0.1:10911"));
        let route = bounded("refresh", table.refresh(&pool, "T", LONG_TIMEOUT))
            .await
            .unwrap();
        assert_eq!(route.writable_queues().len(), 4);
        bounded("refresh all", table.refresh_all(&pool, LONG_TIMEOUT)).await;
        assert!(table.cached("T").is_some());
    });
}

#[test]
fn bad_route_answers_are_typed_errors() {
    let namesrv = fake_namesrv(|topic| match topic {
        "Undecodable" => (ResponseCode::Success, b"{\"brokerDatas\": 17".to_vec()),
        "Missing" => (ResponseCode::TopicNotExist, Vec::new()),
        _ => (ResponseCode::SystemError, Vec::new()),
    });
    block_on(async {
        let pool = route_pool();
        let table = RouteTable::new(vec![namesrv.addr.clone()]);
        let undecodable = bounded("route", table.route(&pool, "Undecodable", LONG_TIMEOUT)).await;
        assert!(
            matches!(
                &undecodable,
                Err(ClientError::BadResponse {
                    request: RequestCode::GetRouteinfoByTopic,
                    ..
                })
            ),
            "{undecodable:?}"
        );
        let missing = bounded("route", table.route(&pool, "Missing", LONG_TIMEOUT)).await;
        assert!(
            matches!(&missing, Err(ClientError::TopicNotFound { topic }) if topic == "Missing"),
            "{missing:?}"
        );
        let refused = bounded("route", table.route(&pool, "Other", LONG_TIMEOUT)).await;
        match refused {
            Err(error @ ClientError::Broker { .. }) => {
                assert_eq!(error.response_code(), Some(ResponseCode::SystemError));
                assert_eq!(error.remark(), Some("fake"));
            }
            other => panic!("expected ClientError::Broker, got {other:?}"),
        }
    });
}

#[test]
fn client_instance_over_a_garbage_namesrv_shuts_down_promptly() {
    let namesrv = FakeServer::start(|_, mut peer| {
        while peer.read().is_some() {
            peer.write(b"garbage garbage garbage");
        }
    });
    let config = ClientConfig::new(&namesrv.addr)
        .with_route_refresh_interval(Duration::from_millis(50))
        .with_heartbeat_interval(Duration::from_millis(50))
        .with_request_timeout(Duration::from_millis(500));
    let instance = ClientInstance::new(config).unwrap();
    assert!(!instance.client_id().is_empty());
    let start = Instant::now();
    instance.shutdown();
    instance.shutdown();
    assert!(
        start.elapsed() < FAST_FAILURE,
        "shutdown took {:?}",
        start.elapsed()
    );
    assert!(
        ClientInstance::new(ClientConfig::new("not an address")).is_err(),
        "an invalid config is refused up front"
    );
}
