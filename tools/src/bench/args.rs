//! The `ringmq-bench` command line and its validation.
//!
//! [`Args`] is what clap parses; [`Args::validate`] turns it into [`Params`], the checked settings
//! the benchmark runs with (and writes into the JSON summary). Everything that can be refused is
//! refused here, before any connection is opened, with the flag's name in the message.

use std::fmt;
use std::path::PathBuf;

use clap::{ArgGroup, Parser, ValueEnum};
use serde::Serialize;

/// Largest message body: RocketMQ's default `maxMessageSize` (4 MiB). A batch's whole body is held
/// to the same limit, as the Java producer does.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Most requests one connection may keep outstanding: the request table indexes slots with 16 bits
/// (see `pending.rs`).
pub const MAX_INFLIGHT: usize = 1 << 16;

/// Most messages per SEND_BATCH_MESSAGE request.
pub const MAX_BATCH: usize = 1024;

/// Most connections per side.
pub const MAX_CONNECTIONS: usize = 4096;

/// Most client threads.
pub const MAX_THREADS: usize = 256;

/// Most queues: RocketMQ topics rarely exceed a few hundred; the bound keeps the per-connection
/// request templates small.
pub const MAX_QUEUES: u32 = 1024;

/// Longest measured run, one day: everything is bounded.
pub const MAX_DURATION_SECS: u64 = 24 * 3600;

/// Bytes at the start of an e2e message body that carry its send time.
pub const TIMESTAMP_BYTES: usize = 8;

/// Bytes a batch entry adds to its body: its fixed fields and the `TAGS` property.
const BATCH_ENTRY_OVERHEAD_BYTES: usize = 22 + 16;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Send as fast as the window (and `--rate`) allows; latency is the send round trip.
    Produce,
    /// Read what the topic holds; latency is the pull round trip.
    Consume,
    /// Produce and consume at once; latency is from send to receipt.
    E2e,
}

impl Mode {
    /// The name used on the command line and in the summary.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Produce => "produce",
            Self::Consume => "consume",
            Self::E2e => "e2e",
        }
    }

    /// Whether this mode sends messages.
    pub const fn produces(self) -> bool {
        matches!(self, Self::Produce | Self::E2e)
    }

    /// Whether this mode pulls messages.
    pub const fn consumes(self) -> bool {
        matches!(self, Self::Consume | Self::E2e)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the raw sends encode their headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderEncoding {
    /// RocketMQ's binary header (what RingMQ's own client sends): the frame is pre-encoded once
    /// and patched per request.
    #[default]
    Binary,
    /// JSON headers, as the Java client sends them: each request's header is encoded anew, since
    /// its opaque changes width.
    Json,
}

impl HeaderEncoding {
    /// The protocol's serialize type.
    pub const fn serialize_type(self) -> ringmq_protocol::SerializeType {
        match self {
            Self::Binary => ringmq_protocol::SerializeType::RocketMq,
            Self::Json => ringmq_protocol::SerializeType::Json,
        }
    }
}

/// Which client drives the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// Pre-encoded requests on the client library's connection layer: the least client cost per
    /// message, so the broker is what is measured.
    #[default]
    Raw,
    /// The client library's `Producer` and `PushConsumer`, as an application uses them, with
    /// the sending tasks on the client's I/O thread (`ClientInstance::spawn`).
    Client,
    /// As `client`, but every send is made from the benchmark's own threads (one hand-off to
    /// the client's I/O thread and back per send).
    ClientRemote,
}

/// RocketMQ's `flushDiskType`, for the in-process broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum FlushDiskType {
    /// Acknowledge once written to the page cache; fsync in the background.
    #[value(name = "ASYNC_FLUSH")]
    #[serde(rename = "ASYNC_FLUSH")]
    AsyncFlush,
    /// Acknowledge after fsync (group commit).
    #[value(name = "SYNC_FLUSH")]
    #[serde(rename = "SYNC_FLUSH")]
    SyncFlush,
}

impl FlushDiskType {
    /// The `broker.conf` spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AsyncFlush => "ASYNC_FLUSH",
            Self::SyncFlush => "SYNC_FLUSH",
        }
    }
}

/// Load generator for RocketMQ-protocol brokers (RingMQ, Apache RocketMQ 4.x, ...).
///
/// Opens --connections TCP connections, each keeping up to --inflight requests outstanding, and
/// reports msgs/s, MB/s (payload bytes, 1 MB = 10^6 bytes) and latency percentiles. A progress
/// line goes to stderr every second; the summary goes to stdout (and to --json FILE). The first
/// --warmup-secs are not measured. The run gives up with an error 30 s after it should have ended.
///
/// Exit status: 0 when messages were delivered and no connection failed; 1 on any failure; 2 on a
/// command-line error.
#[derive(Debug, Clone, Parser)]
#[command(name = "ringmq-bench", version, about, long_about)]
#[command(group(ArgGroup::new("target").required(true).args(["namesrv", "broker", "local"])))]
pub struct Args {
    /// produce: send only. consume: read the topic's backlog (from each queue's min offset up to
    /// its max offset at start, or --messages messages). e2e: produce and consume at once and
    /// measure send-to-receipt latency; give a --rate below saturation, or the consumers fall
    /// behind and the latency measures the growing backlog.
    #[arg(value_enum)]
    pub mode: Mode,

    /// NameServer to ask for the topic's route; the first broker's master is benchmarked.
    #[arg(short = 'n', long = "namesrv", value_name = "HOST:PORT")]
    pub namesrv: Option<String>,

    /// Broker to benchmark directly (no NameServer).
    #[arg(long, value_name = "HOST:PORT")]
    pub broker: Option<String>,

    /// Start a broker in-process on a temporary directory and benchmark it.
    #[arg(long)]
    pub local: bool,

    /// Topic; created (or updated) with --queues queues before the run.
    #[arg(long, default_value = "BenchTopic")]
    pub topic: String,

    /// raw: pre-encoded requests (connections x inflight outstanding). client: the client
    /// library's Producer (connections x inflight concurrent sends, run on the client's I/O
    /// thread) and PushConsumer (one consumer, handler batches of 32); client-remote: the same
    /// sends made from the benchmark's threads. client modes need -n or --local.
    #[arg(long, value_enum, default_value_t = Api::Raw)]
    pub api: Api,

    /// Header encoding of the raw sends (pulls stay binary): binary, or json as the Java client
    /// sends them.
    #[arg(long, value_enum, default_value_t = HeaderEncoding::Binary)]
    pub headers: HeaderEncoding,

    /// Queues of the topic; producers write them round-robin, consumers split them.
    #[arg(long, default_value_t = 8)]
    pub queues: u32,

    /// Message body size in bytes (e2e needs at least 8 for the send timestamp).
    #[arg(long, default_value_t = 1024)]
    pub size: usize,

    /// TCP connections (per side in e2e). Consumers use at most one connection per queue.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,

    /// Requests each connection keeps outstanding. Consumers keep at most one pull per queue.
    #[arg(long, default_value_t = 32)]
    pub inflight: usize,

    /// Messages per send request; above 1, SEND_BATCH_MESSAGE is used.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,

    /// Measured run time in seconds (after --warmup-secs).
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,

    /// Stop after this many messages (produce/e2e: sent, rounded up to whole batches per
    /// connection; consume: received). Default: no cap.
    #[arg(long, value_name = "N")]
    pub messages: Option<u64>,

    /// Total send rate in messages per second over all producer connections (produce/e2e);
    /// 0 = as fast as possible.
    #[arg(long, value_name = "MSGS_PER_SEC", default_value_t = 0)]
    pub rate: u64,

    /// Flush mode of the in-process broker (only with --local). Default: the broker's (ASYNC_FLUSH).
    #[arg(long, value_enum, value_name = "TYPE")]
    pub flush_disk_type: Option<FlushDiskType>,

    /// Shards of the in-process broker (only with --local). Default: one per core.
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,

    /// Client runtime threads; connections are spread over them.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Also write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Seconds run before measuring starts (excluded from every figure).
    #[arg(long, default_value_t = 1)]
    pub warmup_secs: u64,
}

/// Where the broker under test is found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Ask this NameServer for the topic's route.
    Namesrv(String),
    /// This broker.
    Broker(String),
    /// An in-process broker.
    Local {
        /// Its flush mode, or the broker's default.
        flush_disk_type: Option<FlushDiskType>,
        /// Its shard count, or the broker's default.
        shards: Option<usize>,
    },
}

/// Validated settings of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Params {
    pub mode: Mode,
    pub api: Api,
    pub headers: HeaderEncoding,
    pub target: Target,
    pub topic: String,
    pub queues: u32,
    /// Body bytes per message.
    pub size: usize,
    pub connections: usize,
    pub inflight: usize,
    pub batch: usize,
    pub duration_secs: u64,
    pub messages: Option<u64>,
    /// Total msgs/s; 0 = unlimited.
    pub rate: u64,
    pub threads: usize,
    pub warmup_secs: u64,
    /// Where the JSON summary goes.
    #[serde(skip)]
    pub json: Option<PathBuf>,
}

/// A command-line value that cannot be used; the message names the flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(message: impl Into<String>) -> Result<(), UsageError> {
    Err(UsageError(message.into()))
}

fn check_range<T: PartialOrd + fmt::Display + Copy>(
    flag: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), UsageError> {
    if value < min || value > max {
        return usage(format!(
            "--{flag} {value} is out of range: expected {min} to {max}"
        ));
    }
    Ok(())
}

impl Args {
    /// Checks every value and every combination; the error names the offending flag.
    pub fn validate(self) -> Result<Params, UsageError> {
        let mode = self.mode;
        let target = match (self.namesrv, self.broker, self.local) {
            (Some(addr), None, false) => Target::Namesrv(check_addr("namesrv", addr)?),
            (None, Some(addr), false) => Target::Broker(check_addr("broker", addr)?),
            (None, None, true) => Target::Local {
                flush_disk_type: self.flush_disk_type,
                shards: self.shards,
            },
            _ => {
                return Err(UsageError(
                    "give exactly one of -n/--namesrv, --broker and --local".into(),
                ));
            }
        };
        if self.api != Api::Raw && matches!(target, Target::Broker(_)) {
            usage("--api client finds brokers through a NameServer: use -n/--namesrv or --local")?;
        }
        if mode == Mode::Consume && matches!(target, Target::Local { .. }) {
            usage(
                "consume --local would read the empty topic of a fresh broker: use e2e --local, \
                 or start a broker, fill it with produce and consume with --broker",
            )?;
        }
        if !matches!(target, Target::Local { .. }) {
            if self.flush_disk_type.is_some() {
                usage("--flush-disk-type only applies to --local")?;
            }
            if self.shards.is_some() {
                usage("--shards only applies to --local")?;
            }
        }
        if let Some(shards) = self.shards {
            check_range("shards", shards, 1, 1024)?;
        }
        if !ringmq_protocol::topic::is_valid_topic(&self.topic) {
            usage(format!(
                "--topic {:?} is not a valid topic name: 1 to 127 characters of a-z A-Z 0-9 _ - % |",
                self.topic
            ))?;
        }
        check_range("queues", self.queues, 1, MAX_QUEUES)?;
        check_range("size", self.size, 0, MAX_MESSAGE_BYTES)?;
        check_range("connections", self.connections, 1, MAX_CONNECTIONS)?;
        check_range("inflight", self.inflight, 1, MAX_INFLIGHT)?;
        check_range("batch", self.batch, 1, MAX_BATCH)?;
        check_range("duration-secs", self.duration_secs, 1, MAX_DURATION_SECS)?;
        check_range("warmup-secs", self.warmup_secs, 0, MAX_DURATION_SECS)?;
        check_range("threads", self.threads, 1, MAX_THREADS)?;
        if mode == Mode::E2e && self.size < TIMESTAMP_BYTES {
            usage(format!(
                "--size {} is too small for e2e: the first {TIMESTAMP_BYTES} bytes carry the send time",
                self.size
            ))?;
        }
        if self.batch > 1 {
            if !mode.produces() {
                usage("--batch only applies to produce and e2e")?;
            }
            let batch_bytes = self.batch * (self.size + BATCH_ENTRY_OVERHEAD_BYTES);
            if batch_bytes > MAX_MESSAGE_BYTES {
                usage(format!(
                    "--batch {} x --size {} makes a {batch_bytes}-byte batch body; brokers refuse \
                     more than {MAX_MESSAGE_BYTES}",
                    self.batch, self.size
                ))?;
            }
        }
        if self.rate > 0 && !mode.produces() {
            usage("--rate only applies to produce and e2e")?;
        }
        if self.messages == Some(0) {
            usage("--messages must be at least 1 (leave it out for no cap)")?;
        }
        if self.headers == HeaderEncoding::Json && (self.api != Api::Raw || !mode.produces()) {
            usage("--headers json applies to the raw sends of produce and e2e (--api raw)")?;
        }
        Ok(Params {
            mode,
            api: self.api,
            headers: self.headers,
            target,
            topic: self.topic,
            queues: self.queues,
            size: self.size,
            connections: self.connections,
            inflight: self.inflight,
            batch: self.batch,
            duration_secs: self.duration_secs,
            messages: self.messages,
            rate: self.rate,
            threads: self.threads,
            warmup_secs: self.warmup_secs,
            json: self.json,
        })
    }
}

/// `host:port` with a non-empty host and a numeric port; name resolution happens later.
fn check_addr(flag: &str, addr: String) -> Result<String, UsageError> {
    let valid = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if valid {
        Ok(addr)
    } else {
        Err(UsageError(format!(
            "--{flag} {addr:?} is not HOST:PORT (for example 127.0.0.1:9876)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Params, String> {
        let args = Args::try_parse_from(line.split_whitespace()).map_err(|e| e.to_string())?;
        args.validate().map_err(|e| e.0)
    }

    #[test]
    fn defaults_match_the_documented_command_line() {
        let params = parse("ringmq-bench produce --broker 127.0.0.1:10911").unwrap();
        assert_eq!(params.mode, Mode::Produce);
        assert_eq!(params.target, Target::Broker("127.0.0.1:10911".into()));
        assert_eq!(params.topic, "BenchTopic");
        assert_eq!(
            (
                params.queues,
                params.size,
                params.connections,
                params.inflight
            ),
            (8, 1024, 8, 32)
        );
        assert_eq!(
            (
                params.batch,
                params.duration_secs,
                params.rate,
                params.threads
            ),
            (1, 10, 0, 1)
        );
        assert_eq!((params.messages, params.warmup_secs), (None, 1));
    }

    #[test]
    fn exactly_one_target_is_required() {
        assert!(parse("ringmq-bench produce").is_err());
        assert!(parse("ringmq-bench produce -n a:1 --broker b:2").is_err());
        assert!(parse("ringmq-bench produce --local --broker b:2").is_err());
        let params = parse("ringmq-bench consume -n localhost:9876").unwrap();
        assert_eq!(params.target, Target::Namesrv("localhost:9876".into()));
        let error = parse("ringmq-bench consume --local").unwrap_err();
        assert!(error.contains("empty topic of a fresh broker"), "{error}");
        let params =
            parse("ringmq-bench e2e --local --flush-disk-type SYNC_FLUSH --shards 2").unwrap();
        assert_eq!(
            params.target,
            Target::Local {
                flush_disk_type: Some(FlushDiskType::SyncFlush),
                shards: Some(2)
            }
        );
    }

    #[test]
    fn the_client_api_needs_a_namesrv() {
        assert_eq!(
            parse("ringmq-bench produce --broker h:1").unwrap().api,
            Api::Raw
        );
        let error = parse("ringmq-bench produce --broker h:1 --api client").unwrap_err();
        assert!(error.contains("--api client"), "{error}");
        assert_eq!(
            parse("ringmq-bench e2e -n h:1 --api client").unwrap().api,
            Api::Client
        );
        assert_eq!(
            parse("ringmq-bench produce --local --api client")
                .unwrap()
                .api,
            Api::Client
        );
    }

    #[test]
    fn local_only_flags_are_refused_elsewhere() {
        let error = parse("ringmq-bench produce --broker h:1 --shards 2").unwrap_err();
        assert!(
            error.contains("--shards only applies to --local"),
            "{error}"
        );
        let error = parse("ringmq-bench produce -n h:1 --flush-disk-type ASYNC_FLUSH").unwrap_err();
        assert!(error.contains("--flush-disk-type"), "{error}");
        assert!(parse("ringmq-bench produce --local --flush-disk-type FAST").is_err());
    }

    #[test]
    fn addresses_need_a_host_and_a_port() {
        for bad in ["localhost", ":9876", "host:", "host:0", "host:99999"] {
            let error = parse(&format!("ringmq-bench produce --broker {bad}")).unwrap_err();
            assert!(error.contains("is not HOST:PORT"), "{bad}: {error}");
        }
        assert!(parse("ringmq-bench produce --broker [::1]:10911").is_ok());
    }

    #[test]
    fn ranges_name_the_flag() {
        let cases = [
            ("--queues 0", "--queues 0 is out of range"),
            ("--connections 0", "--connections 0"),
            ("--inflight 0", "--inflight 0"),
            ("--inflight 70000", "--inflight 70000"),
            ("--batch 0", "--batch 0"),
            ("--duration-secs 0", "--duration-secs 0"),
            ("--threads 0", "--threads 0"),
            ("--size 5000000", "--size 5000000"),
            ("--messages 0", "--messages must be at least 1"),
            ("--topic bad.topic", "not a valid topic name"),
        ];
        for (flags, expected) in cases {
            let error = parse(&format!("ringmq-bench produce --broker h:1 {flags}")).unwrap_err();
            assert!(error.contains(expected), "{flags}: {error}");
        }
    }

    #[test]
    fn mode_specific_rules() {
        let error = parse("ringmq-bench e2e --broker h:1 --size 4").unwrap_err();
        assert!(error.contains("too small for e2e"), "{error}");
        assert!(parse("ringmq-bench produce --broker h:1 --size 0").is_ok());
        let error = parse("ringmq-bench consume --broker h:1 --batch 4").unwrap_err();
        assert!(error.contains("--batch only applies"), "{error}");
        let error = parse("ringmq-bench consume --broker h:1 --rate 100").unwrap_err();
        assert!(error.contains("--rate only applies"), "{error}");
        let error =
            parse("ringmq-bench produce --broker h:1 --batch 1024 --size 8192").unwrap_err();
        assert!(error.contains("batch body"), "{error}");
        assert!(parse("ringmq-bench produce --broker h:1 --batch 64 --size 1024").is_ok());
    }

    #[test]
    fn params_serialize_with_flag_names() {
        let params = parse("ringmq-bench e2e --local --rate 1000 --messages 50").unwrap();
        let json = serde_json::to_value(&params).unwrap();
        assert_eq!(json["mode"], "e2e");
        assert_eq!(json["rate"], 1000);
        assert_eq!(json["messages"], 50);
        assert_eq!(
            json["target"]["local"]["flush_disk_type"],
            serde_json::Value::Null
        );
        assert!(json.get("json").is_none());
    }
}
