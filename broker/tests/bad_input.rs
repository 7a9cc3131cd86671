//! Hostile and mistaken input: malformed frames, bad requests and invalid configuration.
//!
//! Every bad case runs on its own connection while a well-behaved client keeps sending and
//! pulling on another; that client must see no error at all, must keep making progress, and the
//! broker must accept new connections after every case.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use bytes::BytesMut;
use ringmq_protocol::{
    CommandHead, RequestCode, ResponseCode, SerializeType, encode_frame,
    header::{QueueRequestHeader, SendMessageResponseHeader},
    message::RecordIter,
};
use ringmq_testkit::{
    BrokerOptions, BrokerProcess, DEADLINE, EXIT_DEADLINE, Exited, Message, PERM_RW, Pull,
    RemotingClient, SendCode, XorShift, binary, expect_code, mentions, run_to_exit, wait_until,
};

/// The topic the well-behaved client uses.
const GOOD_TOPIC: &str = "WellBehaved";

/// A client that sends and pulls in a loop on its own thread, recording every error.
struct Background {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

/// One send then a pull of exactly that message; `Err` describes what went wrong.
fn good_round(client: &mut RemotingClient, queue: i32, body: &str) -> Result<(), String> {
    let outgoing = Message::new(GOOD_TOPIC, queue, body).outgoing(SendCode::V2);
    let response = client
        .try_request(outgoing.code, &outgoing.header, &outgoing.body)
        .map_err(|error| format!("send: {error}"))?;
    if response.response_code() != ResponseCode::Success {
        return Err(format!(
            "send: {} {:?}",
            response.response_code(),
            response.remark
        ));
    }
    let header: SendMessageResponseHeader<'_> = response
        .header()
        .map_err(|error| format!("send response: {error}"))?;
    let pull = Pull::new(GOOD_TOPIC, queue, header.queue_offset).max_msgs(1);
    let response = client
        .try_request(RequestCode::PullMessage, pull.header(), &[])
        .map_err(|error| format!("pull: {error}"))?;
    if response.response_code() != ResponseCode::Success {
        return Err(format!(
            "pull: {} {:?}",
            response.response_code(),
            response.remark
        ));
    }
    match RecordIter::new(&response.body).next() {
        Some(Ok(record)) if record.body == body.as_bytes() => Ok(()),
        other => Err(format!("pull returned {other:?} instead of {body:?}")),
    }
}

impl Background {
    fn start(broker: &BrokerProcess) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut client = broker.client();
        let thread = {
            let (stop, rounds, errors) = (stop.clone(), rounds.clone(), errors.clone());
            thread::spawn(move || {
                let start = Instant::now();
                let mut round = 0u64;
                // Bounded: the test stops it long before the time cap.
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                    let body = format!("well-behaved round {round}");
                    match good_round(&mut client, (round % 2) as i32, &body) {
                        Ok(()) => {
                            rounds.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("round {round}: {error}"));
                            return;
                        }
                    }
                    round += 1;
                }
            })
        };
        Self {
            stop,
            rounds,
            errors,
            thread: Some(thread),
        }
    }

    /// Waits until the good client completes a few more rounds, failing on any error.
    fn assert_progress(&self, during: &str) {
        let from = self.rounds.load(Ordering::Relaxed);
        wait_until(
            &format!("the well-behaved client to make progress ({during})"),
            DEADLINE,
            || {
                let errors = self.errors.lock().unwrap();
                assert!(
                    errors.is_empty(),
                    "well-behaved client failed ({during}): {errors:?}"
                );
                self.rounds.load(Ordering::Relaxed) >= from + 3
            },
        );
    }

    /// Stops the loop and checks it never failed.
    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the well-behaved client panicked");
        let errors = self.errors.lock().unwrap();
        assert!(errors.is_empty(), "well-behaved client errors: {errors:?}");
        println!(
            "well-behaved client completed {} rounds",
            self.rounds.load(Ordering::Relaxed)
        );
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _joined = thread.join();
        }
    }
}

/// After a bad case: the good client still progresses and a new connection is served.
fn after_case(broker: &BrokerProcess, background: &Background, case: &str) {
    background.assert_progress(&format!("after {case}"));
    let mut fresh = broker.client();
    assert!(
        fresh.max_offset(GOOD_TOPIC, 0) >= 0,
        "a new connection after {case}"
    );
}

/// The broker the request-level cases run against, with the well-behaved client running.
fn start(options: BrokerOptions) -> (BrokerProcess, Background) {
    let broker = BrokerProcess::start(options);
    broker.client().create_topic(GOOD_TOPIC, 2);
    let background = Background::start(&broker);
    background.assert_progress("before any bad input");
    (broker, background)
}

fn frame_prefix(total_length: u32, marker: u32) -> Vec<u8> {
    let mut bytes = total_length.to_be_bytes().to_vec();
    bytes.extend_from_slice(&marker.to_be_bytes());
    bytes
}

// ------------------------------------------------------------------------------------------------
// Frames

/// Inputs after which the stream cannot be delimited any more: the broker must close it.
fn undelimitable_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let seed = ringmq_common::now_ms() as u64;
    println!("garbage seed {seed}");
    let mut random = XorShift::new(seed);
    let mut garbage = random.bytes(64);
    // Forced high so the length prefix is negative whatever the seed: a random prefix below
    // 16 MiB would be a legal frame the broker must wait for.
    garbage[0] |= 0x80;
    let mut bad_type = frame_prefix(60, 0x7F00_0010);
    bad_type.extend(random.bytes(60));
    let mut header_too_long = frame_prefix(20, 100);
    header_too_long.extend(random.bytes(16));
    vec![
        ("64 random bytes", garbage),
        (
            "an HTTP request",
            b"GET /metrics HTTP/1.1\r\nHost: ringmq\r\n\r\n".to_vec(),
        ),
        (
            "a frame length of 2 GiB - 1",
            frame_prefix(i32::MAX as u32, 0),
        ),
        (
            "a frame length of 2 GiB (negative as i32)",
            frame_prefix(1 << 31, 0),
        ),
        ("a frame length smaller than the marker", frame_prefix(2, 0)),
        ("an unknown serialize type", bad_type),
        ("a header length beyond the frame", header_too_long),
    ]
}

#[test]
fn malformed_frames_close_only_their_own_connection() {
    let (broker, background) = start(BrokerOptions {
        shards: Some(2),
        ..BrokerOptions::default()
    });
    for (case, bytes) in undelimitable_inputs() {
        let mut bad = broker.client();
        bad.write_raw(&bytes).unwrap();
        assert!(
            bad.wait_closed(DEADLINE),
            "{case}: the broker kept the connection open"
        );
        after_case(&broker, &background, case);
    }

    // A truncated frame, then close: nothing is stored and nothing breaks, also while the half
    // frame is pending.
    let victim = "Truncated";
    broker.client().create_topic(victim, 1);
    let outgoing = Message::new(victim, 0, vec![b'x'; 4096]).outgoing(SendCode::V2);
    let mut frame = BytesMut::new();
    let head = CommandHead::request(outgoing.code, 1, SerializeType::Json);
    encode_frame(&head, &outgoing.header, &outgoing.body, &mut frame);
    let mut bad = broker.client();
    bad.write_raw(&frame[..frame.len() / 2]).unwrap();
    background.assert_progress("while a frame is half sent");
    bad.shutdown_write();
    drop(bad);
    after_case(&broker, &background, "a truncated frame");
    assert_eq!(
        broker.client().max_offset(victim, 0),
        0,
        "the truncated send stored nothing"
    );

    // A well-delimited frame whose JSON header does not parse: the broker may answer or close,
    // but must not take anyone else down.
    let mut bad = broker.client();
    let mut frame = frame_prefix(4 + 12, 12);
    frame.extend_from_slice(b"{\"code\":oops");
    bad.write_raw(&frame).unwrap();
    match bad.try_request(
        RequestCode::GetMaxOffset,
        QueueRequestHeader {
            topic: GOOD_TOPIC,
            queue_id: 0,
        },
        &[],
    ) {
        Ok(response) => expect_code(&response, ResponseCode::Success, "after a bad header"),
        Err(error) => println!("the broker dropped the connection after a bad header: {error}"),
    }
    after_case(&broker, &background, "an unparsable JSON header");
    background.finish();
}

// ------------------------------------------------------------------------------------------------
// Requests

/// The connection still answers.
fn assert_usable(client: &mut RemotingClient, case: &str) {
    let response = client.request(
        RequestCode::GetMaxOffset,
        QueueRequestHeader {
            topic: GOOD_TOPIC,
            queue_id: 0,
        },
        &[],
    );
    expect_code(
        &response,
        ResponseCode::Success,
        &format!("the same connection after {case}"),
    );
}

fn unknown_request_code(broker: &BrokerProcess, background: &Background) {
    for serialize_type in [SerializeType::Json, SerializeType::RocketMq] {
        let case = format!("request code 9999 ({serialize_type:?})");
        let mut client = broker.client().with_serialize_type(serialize_type);
        let response = client.request(RequestCode::from_i32(9999), (), b"whatever");
        expect_code(&response, ResponseCode::RequestCodeNotSupported, &case);
        let remark = response.remark.clone().unwrap_or_default();
        assert!(
            remark.contains("9999"),
            "{case}: remark {remark:?} names the code"
        );
        assert_usable(&mut client, &case);
        after_case(broker, background, &case);
    }
}

fn missing_and_malformed_fields(broker: &BrokerProcess, background: &Background) {
    let message = Message::new(GOOD_TOPIC, 0, "incomplete");
    // (code, wire field, bad value or None to leave it out, its long name, also accepted in the
    // remark)
    let cases: [(SendCode, &str, Option<&str>, &str); 3] = [
        (SendCode::V2, "b", None, "topic"),
        (SendCode::Long, "topic", None, "topic"),
        (SendCode::V2, "e", Some("abc"), "queueId"),
    ];
    let before = broker.client().max_offset(GOOD_TOPIC, 0);
    for (code, field, value, long_name) in cases {
        let case = format!("{code:?} send with {field}={value:?}");
        let mut outgoing = message.outgoing(code);
        outgoing.header.remove(field);
        if let Some(value) = value {
            outgoing.header.insert(field, value);
        }
        let mut client = broker.client();
        let response = client.request(outgoing.code, &outgoing.header, &outgoing.body);
        expect_code(&response, ResponseCode::SystemError, &case);
        let remark = response.remark.clone().unwrap_or_default();
        assert!(
            mentions(&remark, field) || mentions(&remark, long_name),
            "{case}: remark {remark:?} names neither {field} nor {long_name}"
        );
        assert_usable(&mut client, &case);
        after_case(broker, background, &case);
    }
    // The good client sends too, so only check that no bad send landed on queue 0 by reading it.
    let mut reader = broker.client();
    let stored = reader.pull_all_with(&Pull::new(GOOD_TOPIC, 0, before));
    assert!(
        stored.iter().all(|record| record.body != b"incomplete"),
        "a bad send was stored"
    );
}

fn unknown_topic_without_auto_create(broker: &BrokerProcess, background: &Background) {
    let case = "an unknown topic with auto-creation off";
    let mut client = broker.client();
    let response = client.send_raw(SendCode::V2, &Message::new("NoSuchTopic", 0, "lost"));
    expect_code(&response, ResponseCode::TopicNotExist, case);
    let pull = client.pull(&Pull::new("NoSuchTopic", 0, 0));
    assert_eq!(pull.code, ResponseCode::TopicNotExist, "{case}: pull");
    assert_usable(&mut client, case);
    after_case(broker, background, case);
}

fn oversized_body(broker: &BrokerProcess, background: &Background) {
    let case = "a 100 KiB body over a 64 KiB limit";
    let topic = "SizeLimited";
    let mut client = broker.client();
    client.create_topic(topic, 1);
    let before = client.max_offset(topic, 0);
    let response = client.send_raw(SendCode::V2, &Message::new(topic, 0, vec![b'o'; 100 << 10]));
    expect_code(&response, ResponseCode::MessageIllegal, case);
    assert_eq!(
        client.max_offset(topic, 0),
        before,
        "{case}: nothing stored"
    );
    let fits = client.send(&Message::new(topic, 0, vec![b'f'; 60 << 10]));
    assert_eq!(
        fits.queue_offset, before,
        "{case}: a 60 KiB body still fits"
    );
    after_case(broker, background, case);
}

fn queue_out_of_range(broker: &BrokerProcess, background: &Background) {
    let case = "queue id 5 of a 2-queue topic";
    let mut client = broker.client();
    let pull = client.pull(&Pull::new(GOOD_TOPIC, 5, 0));
    assert_eq!(
        pull.code,
        ResponseCode::SystemError,
        "{case}: pull ({:?})",
        pull.remark
    );
    let send = client.send_raw(SendCode::V2, &Message::new(GOOD_TOPIC, 5, "nowhere"));
    expect_code(&send, ResponseCode::SystemError, &format!("{case}: send"));
    assert_usable(&mut client, case);
    after_case(broker, background, case);
}

fn invalid_topic_name(broker: &BrokerProcess, background: &Background) {
    let case = "topic name \"bad topic!\"";
    let mut client = broker.client();
    let send = client.send_raw(SendCode::V2, &Message::new("bad topic!", 0, "x"));
    expect_code(&send, ResponseCode::SystemError, &format!("{case}: send"));
    let create = client.create_topic_raw("bad topic!", 1, PERM_RW);
    expect_code(
        &create,
        ResponseCode::SystemError,
        &format!("{case}: create"),
    );
    assert_usable(&mut client, case);
    after_case(broker, background, case);
}

#[test]
fn bad_requests_get_error_responses_and_keep_their_connection() {
    let (broker, background) = start(BrokerOptions::default().with_args(&[
        "--auto-create-topic",
        "false",
        "--max-message-size",
        "65536",
    ]));
    unknown_request_code(&broker, &background);
    missing_and_malformed_fields(&broker, &background);
    unknown_topic_without_auto_create(&broker, &background);
    oversized_body(&broker, &background);
    queue_out_of_range(&broker, &background);
    invalid_topic_name(&broker, &background);
    background.finish();
}

// ------------------------------------------------------------------------------------------------
// Configuration

/// A refused start: non-zero exit within the deadline, the key named on stderr, never listening.
fn assert_refused(exited: &Exited, names: &[&str], case: &str) {
    assert!(
        !exited.status.success(),
        "{case}: exited with {} (stderr: {})",
        exited.status,
        exited.stderr
    );
    assert!(
        names.iter().any(|name| exited.stderr.contains(name)),
        "{case}: stderr does not name {names:?}:\n{}",
        exited.stderr
    );
    assert!(
        !exited.stdout.contains("listening on"),
        "{case}: it started listening first:\n{}",
        exited.stdout
    );
    println!(
        "{case}: refused in {:?}: {}",
        exited.elapsed,
        exited.stderr.trim()
    );
}

#[test]
fn invalid_configuration_is_refused_at_start() {
    let root = tempfile::tempdir().unwrap();
    let exited = BrokerOptions {
        store_dir: Some(root.path().join("store")),
        flush_disk_type: Some("BOGUS".to_owned()),
        ..BrokerOptions::default()
    }
    .run_to_exit(EXIT_DEADLINE);
    assert_refused(
        &exited,
        &["flushDiskType", "flush-disk-type"],
        "--flush-disk-type BOGUS",
    );

    // No --listen-port flag here: the file's value must be the one read (flags override files).
    let conf = root.path().join("broker.conf");
    std::fs::write(&conf, "brokerName=conf-broker\nlistenPort=abc\n").unwrap();
    let args = [
        "-c".to_owned(),
        conf.display().to_string(),
        "--store-dir".to_owned(),
        root.path().join("store").display().to_string(),
        "--embedded-namesrv-port".to_owned(),
        "0".to_owned(),
    ];
    let mut broker = Command::new(binary("ringmq-broker"));
    broker.args(args);
    let exited = run_to_exit(broker, EXIT_DEADLINE);
    assert_refused(&exited, &["listenPort"], "broker.conf listenPort=abc");
}
