//! A NameServer process and a minimal blocking remoting client for the tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command as Process, Stdio},
    time::{Duration, Instant},
};

use bytes::BytesMut;
use ringmq_protocol::{
    Command, CommandHead, FrameCodec, RequestCode, SerializeType,
    body::{self, DataVersion, RegisterBrokerBody, TopicConfig, TopicConfigSerializeWrapper},
    encode_frame,
    header::{GetRouteInfoRequestHeader, RegisterBrokerRequestHeader},
};

/// A `ringmq-namesrv` process, killed when dropped.
pub struct NamesrvProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl NamesrvProcess {
    pub fn start(scan_interval_ms: u64, broker_expiry_ms: u64) -> Self {
        let mut child = Process::new(env!("CARGO_BIN_EXE_ringmq-namesrv"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--scan-interval-ms",
                &scan_interval_ms.to_string(),
                "--broker-expiry-ms",
                &broker_expiry_ms.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ringmq-namesrv");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Self { child, addr }
    }
}

impl Drop for NamesrvProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking client connection.
pub struct Client {
    pub stream: TcpStream,
    codec: FrameCodec,
    input: BytesMut,
    opaque: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            stream,
            codec: FrameCodec::default(),
            input: BytesMut::new(),
            opaque: 0,
        }
    }

    /// Sends a request with `ext` header fields and `body`, returns the response.
    pub fn call<E: ringmq_protocol::EncodeExt>(
        &mut self,
        code: RequestCode,
        ext: &E,
        body: &[u8],
    ) -> Command {
        self.call_versioned(code, ext, body, SerializeType::Json)
    }

    pub fn call_versioned<E: ringmq_protocol::EncodeExt>(
        &mut self,
        code: RequestCode,
        ext: &E,
        body: &[u8],
        serialize_type: SerializeType,
    ) -> Command {
        self.opaque += 1;
        let head = CommandHead::request(code, self.opaque, serialize_type);
        let mut out = BytesMut::new();
        encode_frame(&head, ext, body, &mut out);
        self.stream.write_all(&out).unwrap();
        let response = self.read_response().expect("connection closed");
        assert_eq!(response.opaque, self.opaque);
        response
    }

    /// The next frame, or None when the server closed the connection.
    pub fn read_response(&mut self) -> Option<Command> {
        loop {
            if let Some(command) = self.codec.decode(&mut self.input).unwrap() {
                return Some(command);
            }
            let mut chunk = [0u8; 16 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub fn route(&mut self, topic: &str) -> Command {
        self.call(
            RequestCode::GetRouteinfoByTopic,
            &GetRouteInfoRequestHeader {
                topic,
                accept_standard_json_only: None,
            },
            &[],
        )
    }
}

/// A fake broker: registers its topics over its own connection.
pub struct FakeBroker {
    pub cluster: String,
    pub name: String,
    pub addr: String,
    pub id: i64,
    pub topics: Vec<String>,
    pub version: DataVersion,
}

impl FakeBroker {
    pub fn new(name: &str, addr: &str, id: i64, topics: &[&str]) -> Self {
        Self {
            cluster: "DefaultCluster".into(),
            name: name.into(),
            addr: addr.into(),
            id,
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            version: DataVersion {
                counter: 1,
                timestamp: 1_700_000_000_000,
            },
        }
    }

    pub fn body(&self) -> Vec<u8> {
        let table: BTreeMap<String, TopicConfig> = self
            .topics
            .iter()
            .map(|topic| {
                (
                    topic.clone(),
                    TopicConfig {
                        topic_name: topic.clone(),
                        read_queue_nums: 4,
                        write_queue_nums: 4,
                        perm: 6,
                        ..TopicConfig::default()
                    },
                )
            })
            .collect();
        body::to_vec(&RegisterBrokerBody {
            filter_server_list: Vec::new(),
            topic_config_serialize_wrapper: TopicConfigSerializeWrapper {
                data_version: self.version,
                topic_config_table: table,
            },
        })
    }

    pub fn register(&self, client: &mut Client) -> Command {
        let body = self.body();
        let header = RegisterBrokerRequestHeader {
            broker_name: &self.name,
            broker_addr: &self.addr,
            cluster_name: &self.cluster,
            ha_server_addr: "127.0.0.1:10912",
            broker_id: self.id,
            compressed: None,
            body_crc32: Some(ringmq_protocol::message::body_crc(&body)),
        };
        client.call(RequestCode::RegisterBroker, &header, &body)
    }
}

/// Polls `condition` until it holds or `deadline` passes.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
