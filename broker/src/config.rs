//! Broker configuration: RocketMQ's `broker.conf` keys (docs/operations.md), overridden by command-line
//! flags, validated before anything starts. An invalid value is refused with the key's name.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    str::FromStr,
};

use ringmq_storage::FlushMode;
use thiserror::Error;

use crate::properties;

/// How the broker takes part in replication (RocketMQ `brokerRole`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerRole {
    /// Acknowledges sends without waiting for slaves.
    AsyncMaster,
    /// Acknowledges sends once a slave holds them.
    SyncMaster,
    /// Replicates a master; refuses sends.
    Slave,
}

impl FromStr for BrokerRole {
    type Err = ();
    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "ASYNC_MASTER" => Ok(Self::AsyncMaster),
            "SYNC_MASTER" => Ok(Self::SyncMaster),
            "SLAVE" => Ok(Self::Slave),
            _ => Err(()),
        }
    }
}

impl BrokerRole {
    /// The `broker.conf` spelling, as RocketMQ prints it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AsyncMaster => "ASYNC_MASTER",
            Self::SyncMaster => "SYNC_MASTER",
            Self::Slave => "SLAVE",
        }
    }
}

/// Which compio driver the shards use (docs/architecture.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDriver {
    /// io_uring where available, epoll otherwise.
    Auto,
    /// io_uring or fail.
    IoUring,
    /// epoll (compio's polling driver).
    Poll,
}

impl FromStr for IoDriver {
    type Err = ();
    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "auto" => Ok(Self::Auto),
            "io-uring" => Ok(Self::IoUring),
            "poll" => Ok(Self::Poll),
            _ => Err(()),
        }
    }
}

/// Parses RocketMQ's `flushDiskType` values.
fn parse_flush(text: &str) -> Option<FlushMode> {
    match text {
        "SYNC_FLUSH" => Some(FlushMode::Sync),
        "ASYNC_FLUSH" => Some(FlushMode::Async),
        _ => None,
    }
}

/// Why a configuration was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A key's value does not parse or is out of range.
    #[error("invalid value {value:?} for {key}: expected {expected}")]
    Invalid {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    /// Values that are valid alone but not together.
    #[error("inconsistent configuration: {0}")]
    Inconsistent(String),
    /// `--set` named a key RingMQ does not know (a typo would otherwise go unnoticed).
    #[error("unknown broker.conf key {0:?}")]
    UnknownKey(String),
    /// A RocketMQ feature switched on that RingMQ does not have: refused rather than ignored,
    /// since the broker would run without what the operator asked for.
    #[error("{key}=true is not available: {why}")]
    NotAvailable {
        key: &'static str,
        why: &'static str,
    },
}

/// RocketMQ switches RingMQ refuses when on, with why (they are accepted when off).
const UNAVAILABLE_SWITCHES: [(&str, &str); 3] = [
    (
        "enableControllerMode",
        "brokers cannot follow a controller yet; roles come from brokerRole (docs/operations.md §13)",
    ),
    (
        "enableDLegerCommitLog",
        "RingMQ replicates master to slave, not through a DLedger log (docs/operations.md §7)",
    ),
    (
        "aclEnable",
        "RingMQ has no ACL; keep its ports on a trusted network",
    ),
];

/// Everything the broker is configured with. Field docs name the `broker.conf` key.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    /// `brokerClusterName`.
    pub cluster_name: String,
    /// `brokerName`: the broker group (master and slaves share it).
    pub broker_name: String,
    /// `brokerId`: 0 for the master, > 0 for slaves.
    pub broker_id: i64,
    /// `namesrvAddr`: `host:port` list separated by `;`. Empty: an embedded NameServer.
    pub namesrv_addrs: Vec<String>,
    /// `listenPort` (clients also connect on `listenPort - 2`, HA on `listenPort + 1`).
    pub listen_port: u16,
    /// `brokerIP1`: the address clients are told to use.
    pub broker_ip: IpAddr,
    /// `storePathRootDir`.
    pub store_dir: PathBuf,
    /// `flushDiskType`.
    pub flush_mode: FlushMode,
    /// `brokerRole`.
    pub broker_role: BrokerRole,
    /// `haMasterAddress`: where a slave finds its master (else from the NameServer).
    pub ha_master_address: Option<String>,
    /// `autoCreateTopicEnable`.
    pub auto_create_topic: bool,
    /// `defaultTopicQueueNums`.
    pub default_topic_queue_nums: i32,
    /// `maxMessageSize` in bytes.
    pub max_message_bytes: usize,
    /// `mappedFileSizeCommitLog` in bytes.
    pub segment_bytes: u64,
    /// `flushIntervalCommitLog` in ms.
    pub flush_interval_ms: u64,
    /// `fileReservedTime` in hours.
    pub retention_hours: u64,
    /// `diskMaxUsedSpaceRatio`: usage (percent) above which old segments are deleted early.
    pub high_watermark_percent: u8,
    /// `shards` (RingMQ): shard threads. Unset: the count the store was created with, or for a
    /// new store [`default_shard_count`]. A store keeps the count it was created with.
    pub shards: Option<usize>,
    /// `ioDriver` (RingMQ): `auto`, `io-uring` or `poll`.
    pub io_driver: IoDriver,
    /// `metricsPort` (RingMQ): Prometheus endpoint port (0: any free port); absent: disabled.
    pub metrics_port: Option<u16>,
    /// `embeddedNamesrvPort` (RingMQ): port of the embedded NameServer started when no
    /// `namesrvAddr` is configured (0: any free port).
    pub embedded_namesrv_port: u16,
    /// `registerNameServerPeriod` in ms: how often the broker re-registers (RocketMQ: 30 s).
    pub register_interval_ms: u64,
    /// `channelExpiredTimeout` in ms: producer/consumer connections without a heartbeat for
    /// this long are dropped (RocketMQ: 120 s).
    pub client_expiry_ms: u64,
    /// `maxInflightPerConnection` (RingMQ): requests read from one connection and not yet
    /// answered; past it the broker stops reading that connection (backpressure).
    pub max_inflight_per_connection: usize,
    /// `crossShardQueueCapacity` (RingMQ): messages each shard's inbox holds; a full inbox makes
    /// the forwarding connection wait.
    pub cross_shard_queue_capacity: usize,
    /// `longPollingEnable`: park pulls that find nothing (else answer after
    /// `shortPollingTimeMills`).
    pub long_polling: bool,
    /// `shortPollingTimeMills`: how long a pull is held when long polling is off.
    pub short_polling_ms: u64,
    /// `commitLogWrites` (RingMQ): `ring` hands commit-log writes to io_uring (a kernel worker
    /// copies into the page cache), `inline` writes with `pwrite` on the shard thread.
    pub inline_writes: bool,
    /// `pinShards` (RingMQ): pin shard *i* to core *i* when there are no more shards than
    /// cores. On by default: a pinned shard keeps its core's caches and measured less CPU per
    /// message than a floating one, even with the load generator on the same cores
    /// (docs/benchmarks.md). Off lets the scheduler move shards away from cores that something
    /// else keeps busy.
    pub pin_shards: bool,
    /// `slaveTimeout` in ms (RingMQ reads `syncSlaveTimeout` too): how long a SYNC_MASTER send
    /// waits for a slave's acknowledgement before answering FLUSH_SLAVE_TIMEOUT.
    pub slave_timeout_ms: u64,
    /// `haSlaveFallbehindMax` in bytes: a slave further behind than this does not count for
    /// SYNC_MASTER (the send answers SLAVE_NOT_AVAILABLE at once).
    pub ha_slave_fallbehind_max_bytes: u64,
    /// `haSendHeartbeatInterval` in ms: offset reports (slave) and empty frames (master) when
    /// there is nothing else to send.
    pub ha_heartbeat_interval_ms: u64,
    /// `haHousekeepingInterval` in ms: an HA connection silent this long is closed.
    pub ha_housekeeping_interval_ms: u64,
    /// `haTransferBatchSize` in bytes: most commit-log bytes per replication frame (whole
    /// chunks; a larger chunk goes alone).
    pub ha_transfer_batch_bytes: usize,
    /// `haReconnectInterval` (RingMQ) in ms: a slave's wait between connection attempts.
    pub ha_reconnect_interval_ms: u64,
    /// `slaveReadEnable`: the master suggests consumers that fall behind read from slave 1.
    pub slave_read_enable: bool,
    /// `slaveReadLagBytes` (RingMQ): how far (bytes of commit log) a consumer must be behind
    /// before a master with `slaveReadEnable` suggests the slave (RocketMQ: 40% of memory).
    pub slave_read_lag_bytes: u64,
    /// `metadataSyncInterval` (RingMQ) in ms: how often a slave copies topic configs and
    /// consumer offsets from its master (RocketMQ: 10 s).
    pub metadata_sync_interval_ms: u64,
}

/// The shard count of a new store when `shards` is not set: half the cores this process may
/// run on, at least one.
///
/// Measured (docs/benchmarks.md): a shard's messages cost as much CPU again in the kernel
/// outside the shard thread (io_uring workers writing and syncing the commit log, network
/// softirqs, wake-ups), and a shard on every core competes with that work and with the clients
/// on the same cores. On two cores one shard spent the least CPU per message in every case
/// (JSON and binary headers, SYNC_FLUSH and ASYNC_FLUSH) with the same or higher throughput;
/// two shards spent a third to twice as much per message.
pub fn default_shard_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / 2).max(1)
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            cluster_name: "DefaultCluster".into(),
            broker_name: "broker-a".into(),
            broker_id: 0,
            namesrv_addrs: Vec::new(),
            listen_port: 10911,
            broker_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            store_dir: PathBuf::from("./data"),
            flush_mode: FlushMode::Async,
            broker_role: BrokerRole::AsyncMaster,
            ha_master_address: None,
            auto_create_topic: true,
            default_topic_queue_nums: 8,
            max_message_bytes: 4 << 20,
            segment_bytes: 1 << 30,
            flush_interval_ms: 500,
            retention_hours: 72,
            high_watermark_percent: 85,
            shards: None,
            io_driver: IoDriver::Auto,
            metrics_port: None,
            embedded_namesrv_port: 9876,
            register_interval_ms: 30_000,
            client_expiry_ms: 120_000,
            max_inflight_per_connection: 256,
            cross_shard_queue_capacity: 8192,
            long_polling: true,
            short_polling_ms: 1000,
            inline_writes: false,
            pin_shards: true,
            slave_timeout_ms: 3000,
            ha_slave_fallbehind_max_bytes: 256 << 20,
            ha_heartbeat_interval_ms: 5000,
            ha_housekeeping_interval_ms: 20_000,
            ha_transfer_batch_bytes: 256 << 10,
            ha_reconnect_interval_ms: 5000,
            slave_read_enable: false,
            slave_read_lag_bytes: 1 << 30,
            metadata_sync_interval_ms: 10_000,
        }
    }
}

/// Command-line values that override the file (`None`: not given).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub namesrv_addr: Option<String>,
    pub listen_port: Option<u16>,
    pub store_dir: Option<PathBuf>,
    pub flush_disk_type: Option<String>,
    pub broker_role: Option<String>,
    pub broker_name: Option<String>,
    pub broker_id: Option<i64>,
    pub cluster: Option<String>,
    pub shards: Option<usize>,
    pub io_driver: Option<String>,
    pub metrics_port: Option<u16>,
    pub embedded_namesrv_port: Option<u16>,
    pub register_interval_ms: Option<u64>,
    pub auto_create_topic: Option<bool>,
    pub max_message_bytes: Option<usize>,
    pub client_expiry_ms: Option<u64>,
    /// Any further `broker.conf` keys (`--set key=value`), applied last, in order.
    pub settings: Vec<(String, String)>,
}

fn parse_value<T: FromStr>(
    key: &'static str,
    value: &str,
    expected: &'static str,
) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError::Invalid {
        key,
        value: value.to_owned(),
        expected,
    })
}

fn parse_bool(key: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ConfigError::Invalid {
            key,
            value: value.to_owned(),
            expected: "true or false",
        }),
    }
}

fn split_namesrv(value: &str) -> Vec<String> {
    value
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl BrokerConfig {
    /// Reads `broker.conf` text over the defaults. Returns the configuration and the keys it
    /// does not know (RocketMQ has many; the caller logs them rather than failing).
    pub fn from_properties(text: &str) -> Result<(Self, Vec<String>), ConfigError> {
        let mut config = Self::default();
        let mut unknown = Vec::new();
        for entry in properties::parse(text) {
            if !config.set(&entry.key, &entry.value)? {
                unknown.push(entry.key);
            }
        }
        Ok((config, unknown))
    }

    /// Sets one `broker.conf` key; false when the key is not one of ours.
    #[allow(clippy::too_many_lines)] // one flat table of broker.conf keys
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        if let Some(&(key, why)) = UNAVAILABLE_SWITCHES.iter().find(|(k, _)| *k == key) {
            if parse_bool(key, value)? {
                return Err(ConfigError::NotAvailable { key, why });
            }
            return Ok(true);
        }
        match key {
            "brokerClusterName" => value.trim().clone_into(&mut self.cluster_name),
            "brokerName" => value.trim().clone_into(&mut self.broker_name),
            "brokerId" => self.broker_id = parse_value("brokerId", value, "an integer")?,
            "namesrvAddr" => self.namesrv_addrs = split_namesrv(value),
            "listenPort" => self.listen_port = parse_value("listenPort", value, "a port number")?,
            "brokerIP1" => self.broker_ip = parse_value("brokerIP1", value, "an IP address")?,
            "storePathRootDir" => self.store_dir = PathBuf::from(value.trim()),
            "flushDiskType" => {
                self.flush_mode =
                    parse_flush(value.trim()).ok_or_else(|| ConfigError::Invalid {
                        key: "flushDiskType",
                        value: value.to_owned(),
                        expected: "SYNC_FLUSH or ASYNC_FLUSH",
                    })?;
            }
            "brokerRole" => {
                self.broker_role = value.trim().parse().map_err(|()| ConfigError::Invalid {
                    key: "brokerRole",
                    value: value.to_owned(),
                    expected: "ASYNC_MASTER, SYNC_MASTER or SLAVE",
                })?;
            }
            "haMasterAddress" => {
                let value = value.trim();
                self.ha_master_address = (!value.is_empty()).then(|| value.to_owned());
            }
            "autoCreateTopicEnable" => {
                self.auto_create_topic = parse_bool("autoCreateTopicEnable", value)?;
            }
            "defaultTopicQueueNums" => {
                self.default_topic_queue_nums =
                    parse_value("defaultTopicQueueNums", value, "a positive integer")?;
            }
            "maxMessageSize" => {
                self.max_message_bytes = parse_value("maxMessageSize", value, "a size in bytes")?;
            }
            "mappedFileSizeCommitLog" => {
                self.segment_bytes =
                    parse_value("mappedFileSizeCommitLog", value, "a size in bytes")?;
            }
            "flushIntervalCommitLog" => {
                self.flush_interval_ms =
                    parse_value("flushIntervalCommitLog", value, "milliseconds")?;
            }
            "fileReservedTime" => {
                self.retention_hours = parse_value("fileReservedTime", value, "hours")?;
            }
            "diskMaxUsedSpaceRatio" => {
                self.high_watermark_percent =
                    parse_value("diskMaxUsedSpaceRatio", value, "a percentage")?;
            }
            "shards" => self.shards = Some(parse_value("shards", value, "a positive integer")?),
            "ioDriver" => {
                self.io_driver = value.trim().parse().map_err(|()| ConfigError::Invalid {
                    key: "ioDriver",
                    value: value.to_owned(),
                    expected: "auto, io-uring or poll",
                })?;
            }
            "metricsPort" => {
                self.metrics_port = Some(parse_value("metricsPort", value, "a port number")?);
            }
            "embeddedNamesrvPort" => {
                self.embedded_namesrv_port =
                    parse_value("embeddedNamesrvPort", value, "a port number")?;
            }
            "registerNameServerPeriod" => {
                self.register_interval_ms =
                    parse_value("registerNameServerPeriod", value, "milliseconds")?;
            }
            "channelExpiredTimeout" => {
                self.client_expiry_ms =
                    parse_value("channelExpiredTimeout", value, "milliseconds")?;
            }
            "maxInflightPerConnection" => {
                self.max_inflight_per_connection =
                    parse_value("maxInflightPerConnection", value, "a positive integer")?;
            }
            "crossShardQueueCapacity" => {
                self.cross_shard_queue_capacity =
                    parse_value("crossShardQueueCapacity", value, "a positive integer")?;
            }
            "commitLogWrites" => {
                self.inline_writes = match value.trim() {
                    "ring" => false,
                    "inline" => true,
                    _ => {
                        return Err(ConfigError::Invalid {
                            key: "commitLogWrites",
                            value: value.to_owned(),
                            expected: "ring or inline",
                        });
                    }
                };
            }
            "longPollingEnable" => self.long_polling = parse_bool("longPollingEnable", value)?,
            "shortPollingTimeMills" => {
                self.short_polling_ms =
                    parse_value("shortPollingTimeMills", value, "milliseconds")?;
            }
            "slaveTimeout" | "syncSlaveTimeout" => {
                self.slave_timeout_ms = parse_value("slaveTimeout", value, "milliseconds")?;
            }
            "haSlaveFallbehindMax" => {
                self.ha_slave_fallbehind_max_bytes =
                    parse_value("haSlaveFallbehindMax", value, "a size in bytes")?;
            }
            "haSendHeartbeatInterval" => {
                self.ha_heartbeat_interval_ms =
                    parse_value("haSendHeartbeatInterval", value, "milliseconds")?;
            }
            "haHousekeepingInterval" => {
                self.ha_housekeeping_interval_ms =
                    parse_value("haHousekeepingInterval", value, "milliseconds")?;
            }
            "haTransferBatchSize" => {
                self.ha_transfer_batch_bytes =
                    parse_value("haTransferBatchSize", value, "a size in bytes")?;
            }
            "haReconnectInterval" => {
                self.ha_reconnect_interval_ms =
                    parse_value("haReconnectInterval", value, "milliseconds")?;
            }
            "slaveReadEnable" => self.slave_read_enable = parse_bool("slaveReadEnable", value)?,
            "pinShards" => self.pin_shards = parse_bool("pinShards", value)?,
            "slaveReadLagBytes" => {
                self.slave_read_lag_bytes =
                    parse_value("slaveReadLagBytes", value, "a size in bytes")?;
            }
            "metadataSyncInterval" => {
                self.metadata_sync_interval_ms =
                    parse_value("metadataSyncInterval", value, "milliseconds")?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Applies command-line flags over the file.
    pub fn apply(&mut self, overrides: &Overrides) -> Result<(), ConfigError> {
        let pairs: [(&str, Option<String>); 16] = [
            ("namesrvAddr", overrides.namesrv_addr.clone()),
            ("listenPort", overrides.listen_port.map(|p| p.to_string())),
            (
                "storePathRootDir",
                overrides
                    .store_dir
                    .as_ref()
                    .map(|d| d.display().to_string()),
            ),
            ("flushDiskType", overrides.flush_disk_type.clone()),
            ("brokerRole", overrides.broker_role.clone()),
            ("brokerName", overrides.broker_name.clone()),
            ("brokerId", overrides.broker_id.map(|i| i.to_string())),
            ("brokerClusterName", overrides.cluster.clone()),
            ("shards", overrides.shards.map(|s| s.to_string())),
            ("ioDriver", overrides.io_driver.clone()),
            ("metricsPort", overrides.metrics_port.map(|p| p.to_string())),
            (
                "embeddedNamesrvPort",
                overrides.embedded_namesrv_port.map(|p| p.to_string()),
            ),
            (
                "registerNameServerPeriod",
                overrides.register_interval_ms.map(|p| p.to_string()),
            ),
            (
                "autoCreateTopicEnable",
                overrides.auto_create_topic.map(|p| p.to_string()),
            ),
            (
                "maxMessageSize",
                overrides.max_message_bytes.map(|p| p.to_string()),
            ),
            (
                "channelExpiredTimeout",
                overrides.client_expiry_ms.map(|p| p.to_string()),
            ),
        ];
        for (key, value) in pairs {
            if let Some(value) = value {
                self.set(key, &value)?;
            }
        }
        for (key, value) in &overrides.settings {
            if !self.set(key, value)? {
                return Err(ConfigError::UnknownKey(key.clone()));
            }
        }
        Ok(())
    }

    /// The replication keys' ranges.
    fn validate_replication(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("slaveTimeout", self.slave_timeout_ms),
            ("haSendHeartbeatInterval", self.ha_heartbeat_interval_ms),
            ("haHousekeepingInterval", self.ha_housekeeping_interval_ms),
            ("haReconnectInterval", self.ha_reconnect_interval_ms),
            ("metadataSyncInterval", self.metadata_sync_interval_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    value: "0".into(),
                    expected: "at least 1 ms",
                });
            }
        }
        if self.ha_transfer_batch_bytes < 4096 {
            return Err(ConfigError::Invalid {
                key: "haTransferBatchSize",
                value: self.ha_transfer_batch_bytes.to_string(),
                expected: "at least 4096 bytes",
            });
        }
        Ok(())
    }

    /// Checks values against each other and their ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, value: String, expected: &'static str| {
            Err(ConfigError::Invalid {
                key,
                value,
                expected,
            })
        };
        if self.broker_name.is_empty() {
            return invalid("brokerName", String::new(), "a non-empty name");
        }
        if self.cluster_name.is_empty() {
            return invalid("brokerClusterName", String::new(), "a non-empty name");
        }
        if (self.listen_port != 0 && self.listen_port < 3) || self.listen_port == u16::MAX {
            return invalid(
                "listenPort",
                self.listen_port.to_string(),
                "0 (any free port) or a port with listenPort - 2 and listenPort + 1 also valid",
            );
        }
        if self.register_interval_ms == 0 {
            return invalid("registerNameServerPeriod", "0".into(), "at least 1 ms");
        }
        if self.client_expiry_ms == 0 {
            return invalid("channelExpiredTimeout", "0".into(), "at least 1 ms");
        }
        if self.max_inflight_per_connection == 0 {
            return invalid("maxInflightPerConnection", "0".into(), "a positive integer");
        }
        if self.cross_shard_queue_capacity == 0 {
            return invalid("crossShardQueueCapacity", "0".into(), "a positive integer");
        }
        self.validate_replication()?;
        if self.broker_id < 0 {
            return invalid("brokerId", self.broker_id.to_string(), "0 or more");
        }
        match (self.broker_role, self.broker_id) {
            (BrokerRole::Slave, 0) => {
                return Err(ConfigError::Inconsistent(
                    "brokerRole=SLAVE needs brokerId > 0 (0 is the master)".into(),
                ));
            }
            (BrokerRole::AsyncMaster | BrokerRole::SyncMaster, id) if id != 0 => {
                return Err(ConfigError::Inconsistent(format!(
                    "brokerId={id} is a slave id but brokerRole is a master role"
                )));
            }
            _ => {}
        }
        if let Some(shards) = self.shards
            && (shards == 0 || shards > usize::from(ringmq_storage::MAX_SHARD))
        {
            return invalid("shards", shards.to_string(), "1 to 32767");
        }
        if self.default_topic_queue_nums <= 0 {
            return invalid(
                "defaultTopicQueueNums",
                self.default_topic_queue_nums.to_string(),
                "a positive integer",
            );
        }
        if self.segment_bytes < 64 << 10 || self.segment_bytes > 1 << 40 {
            return invalid(
                "mappedFileSizeCommitLog",
                self.segment_bytes.to_string(),
                "64 KiB to 1 TiB",
            );
        }
        if self.max_message_bytes == 0 || self.max_message_bytes as u64 > self.segment_bytes / 2 {
            return invalid(
                "maxMessageSize",
                self.max_message_bytes.to_string(),
                "positive and at most half a commit-log segment",
            );
        }
        if self.flush_interval_ms == 0 {
            return invalid("flushIntervalCommitLog", "0".into(), "at least 1 ms");
        }
        if !(1..=95).contains(&self.high_watermark_percent) {
            return invalid(
                "diskMaxUsedSpaceRatio",
                self.high_watermark_percent.to_string(),
                "1 to 95",
            );
        }
        for addr in &self.namesrv_addrs {
            if addr
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return invalid(
                    "namesrvAddr",
                    addr.clone(),
                    "host:port entries separated by ';'",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_broker_conf_is_read_and_flags_override_it() {
        let text = "brokerClusterName = ProdCluster\nbrokerName=broker-b\nbrokerId=1\nbrokerRole=SLAVE\n\
                    namesrvAddr=10.0.0.1:9876;10.0.0.2:9876\nlistenPort=20911\nflushDiskType=SYNC_FLUSH\n\
                    deleteWhen=04\nstorePathRootDir=/var/store\nbrokerIP1=10.0.0.5\n";
        let (mut config, unknown) = BrokerConfig::from_properties(text).unwrap();
        assert_eq!(unknown, ["deleteWhen"]);
        assert_eq!(config.cluster_name, "ProdCluster");
        assert_eq!(config.broker_role, BrokerRole::Slave);
        assert_eq!(config.namesrv_addrs, ["10.0.0.1:9876", "10.0.0.2:9876"]);
        assert_eq!(config.flush_mode, FlushMode::Sync);
        assert_eq!(config.broker_ip, "10.0.0.5".parse::<IpAddr>().unwrap());
        config.validate().unwrap();
        config
            .apply(&Overrides {
                listen_port: Some(30911),
                broker_id: Some(0),
                broker_role: Some("SYNC_MASTER".into()),
                ..Overrides::default()
            })
            .unwrap();
        assert_eq!(config.listen_port, 30911);
        assert_eq!(config.broker_role, BrokerRole::SyncMaster);
        config.validate().unwrap();
    }

    #[test]
    fn switches_for_features_ringmq_lacks_are_refused_when_on() {
        for key in ["enableControllerMode", "enableDLegerCommitLog", "aclEnable"] {
            let refused = BrokerConfig::from_properties(&format!("{key}=true\n")).unwrap_err();
            assert!(
                matches!(refused, ConfigError::NotAvailable { key: k, .. } if k == key),
                "{refused}"
            );
            let (_, unknown) = BrokerConfig::from_properties(&format!("{key}=false\n")).unwrap();
            assert!(unknown.is_empty(), "off is fine: {unknown:?}");
        }
    }

    #[test]
    fn invalid_values_name_their_key() {
        for (text, key) in [
            ("brokerId=one", "brokerId"),
            ("listenPort=70000", "listenPort"),
            ("flushDiskType=SOMETIMES", "flushDiskType"),
            ("brokerRole=LEADER", "brokerRole"),
            ("autoCreateTopicEnable=yes", "autoCreateTopicEnable"),
            ("ioDriver=kqueue", "ioDriver"),
            ("brokerIP1=not-an-ip", "brokerIP1"),
        ] {
            let err = BrokerConfig::from_properties(text).unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        let invalid_after_parse = [
            ("namesrvAddr=localhost", "namesrvAddr"),
            ("shards=0", "shards"),
            ("mappedFileSizeCommitLog=1024", "mappedFileSizeCommitLog"),
            ("maxMessageSize=0", "maxMessageSize"),
            ("listenPort=1", "listenPort"),
            ("diskMaxUsedSpaceRatio=99", "diskMaxUsedSpaceRatio"),
        ];
        for (text, key) in invalid_after_parse {
            let (config, _) = BrokerConfig::from_properties(text).unwrap();
            let err = config.validate().unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        let (config, _) = BrokerConfig::from_properties("brokerRole=SLAVE").unwrap();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Inconsistent(_))
        ));
        let (config, _) = BrokerConfig::from_properties("brokerId=2").unwrap();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Inconsistent(_))
        ));
        // A bad flag value is refused the same way.
        let mut config = BrokerConfig::default();
        let err = config
            .apply(&Overrides {
                flush_disk_type: Some("NEVER".into()),
                ..Overrides::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("flushDiskType"));
    }

    #[test]
    fn defaults_are_the_single_node_setup() {
        let config = BrokerConfig::default();
        config.validate().unwrap();
        assert!(
            config.namesrv_addrs.is_empty(),
            "no namesrvAddr: embedded NameServer"
        );
        assert_eq!(config.listen_port, 10911);
        assert_eq!(config.store_dir, PathBuf::from("./data"));
    }
}
