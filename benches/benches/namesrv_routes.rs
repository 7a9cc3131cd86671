//! GET_ROUTEINFO_BY_TOPIC throughput of the NameServer: 10,000 topics registered,
//! many client connections, requests pipelined. The server runs in-process on loopback with its
//! default two worker threads; the load generator shares the same two cores.
//!
//! `cargo bench -p ringmq-benches --bench namesrv_routes`: three runs of 4 s, median printed.
//! `RINGMQ_BENCH_CONNECTIONS` (default 16) and `RINGMQ_BENCH_PIPELINE` (default 64) shape the load.

#![allow(clippy::cast_precision_loss, reason = "a rate for display")]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use ringmq_namesrv::{NameServer, NamesrvConfig};
use ringmq_protocol::{
    CommandHead, RequestCode, ResponseCode, SerializeType,
    blocking::Connection,
    body::{self, DataVersion, RegisterBrokerBody, TopicConfig, TopicConfigSerializeWrapper},
    encode_frame,
    header::{GetRouteInfoRequestHeader, RegisterBrokerRequestHeader},
};

const RUNS: usize = 3;
const CLIENT_THREADS: usize = 2;
/// Limit for connecting and for each exchange; only a broken server takes this long.
const TIMEOUT: Duration = Duration::from_secs(30);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Topics registered (`RINGMQ_BENCH_TOPICS`, default 10,000).
fn topics() -> usize {
    env_or("RINGMQ_BENCH_TOPICS", 10_000)
}

fn topic(i: usize) -> String {
    format!("BenchTopic-{i:05}")
}

/// Registers two brokers (a master/slave pair) hosting every topic.
fn register(addr: SocketAddr) -> Connection {
    let table: BTreeMap<String, TopicConfig> = (0..topics())
        .map(|i| {
            (
                topic(i),
                TopicConfig {
                    topic_name: topic(i),
                    read_queue_nums: 8,
                    write_queue_nums: 8,
                    perm: 6,
                    ..TopicConfig::default()
                },
            )
        })
        .collect();
    let body = body::to_vec(&RegisterBrokerBody {
        filter_server_list: Vec::new(),
        topic_config_serialize_wrapper: TopicConfigSerializeWrapper {
            data_version: DataVersion {
                counter: 1,
                timestamp: 1,
            },
            topic_config_table: table,
        },
    });
    let mut connection = Connection::connect(addr, TIMEOUT).expect("connect");
    for (id, broker_addr) in [(0, "127.0.0.1:10911"), (1, "127.0.0.1:10921")] {
        let header = RegisterBrokerRequestHeader {
            broker_name: "broker-a",
            broker_addr,
            cluster_name: "DefaultCluster",
            ha_server_addr: "127.0.0.1:10912",
            broker_id: id,
            compressed: None,
            body_crc32: None,
        };
        let response = connection
            .request(RequestCode::RegisterBroker, &header, &body, TIMEOUT)
            .expect("register");
        assert_eq!(response.response_code(), ResponseCode::Success);
    }
    connection
}

/// One client thread: `connections` connections, each sending `pipeline` requests and reading
/// their responses, over and over until `until`. Returns the responses received.
fn client(
    addr: SocketAddr,
    connections: usize,
    pipeline: usize,
    seed: usize,
    until: Instant,
) -> u64 {
    let mut streams: Vec<Connection> = (0..connections)
        .map(|_| Connection::connect(addr, TIMEOUT).expect("connect"))
        .collect();
    // A batch of requests for different topics, encoded once (the binary header encoding).
    let mut batch = BytesMut::new();
    for i in 0..pipeline {
        let name = topic((seed * 7919 + i * 104_729) % topics());
        let header = GetRouteInfoRequestHeader {
            topic: &name,
            accept_standard_json_only: None,
        };
        encode_frame(
            &CommandHead::request(
                RequestCode::GetRouteinfoByTopic,
                i as i32,
                SerializeType::RocketMq,
            ),
            &header,
            &[],
            &mut batch,
        );
    }
    verify(addr, &batch, pipeline);
    let mut received = 0u64;
    // Bounded by time, and by count as a safety net.
    for _ in 0..100_000_000u64 {
        if Instant::now() >= until {
            break;
        }
        for stream in &mut streams {
            stream.write_raw(&batch).expect("send");
        }
        // The answers are counted, not decoded: the load generator shares the server's cores.
        for stream in &mut streams {
            stream.skip_frames(pipeline, TIMEOUT).expect("read");
            received += pipeline as u64;
        }
    }
    received
}

/// Sends `batch` once and checks every answer is a route (not TOPIC_NOT_EXIST): the timed loop
/// only counts frames.
fn verify(addr: SocketAddr, batch: &[u8], pipeline: usize) {
    let mut connection = Connection::connect(addr, TIMEOUT).expect("connect");
    connection.write_raw(batch).expect("send");
    for _ in 0..pipeline {
        let response = connection.read_frame(TIMEOUT).expect("a route answer");
        assert_eq!(response.response_code(), ResponseCode::Success);
        assert!(response.body.len() > 100, "a route body");
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let connections = env_or("RINGMQ_BENCH_CONNECTIONS", 16);
    let pipeline = env_or("RINGMQ_BENCH_PIPELINE", 64);
    let server = NameServer::start(NamesrvConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..NamesrvConfig::default()
    })
    .expect("start NameServer");
    let _registration = register(server.local_addr());
    println!(
        "{} topics, {connections} connections x {pipeline} pipelined requests, {CLIENT_THREADS} client threads",
        topics()
    );
    let mut rates = Vec::new();
    for run in 1..=RUNS {
        let start = Instant::now();
        let until = start + Duration::from_secs(4);
        let addr = server.local_addr();
        let threads: Vec<_> = (0..CLIENT_THREADS)
            .map(|t| {
                std::thread::spawn(move || {
                    client(addr, connections / CLIENT_THREADS, pipeline, t, until)
                })
            })
            .collect();
        let total: u64 = threads.into_iter().map(|t| t.join().expect("client")).sum();
        let rate = total as f64 / start.elapsed().as_secs_f64();
        println!("run {run}: {rate:>10.0} route queries/s");
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!("median: {:>10.0} route queries/s", rates[RUNS / 2]);
    server.shutdown();
}
