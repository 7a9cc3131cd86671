//! `ringmq-broker`: the broker binary. Reads an optional RocketMQ-style `broker.conf`, applies
//! the flags over it, starts the broker and runs until SIGTERM or SIGINT, then stops gracefully.

use std::{io::Write as _, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use ringmq_broker::{
    Broker,
    config::{BrokerConfig, Overrides},
};
use signal_hook::{
    consts::{SIGINT, SIGTERM},
    iterator::Signals,
};

/// RocketMQ-compatible broker: thread-per-core, io_uring, one commit log per shard.
///
/// Every flag overrides the same setting of the configuration file. Without a NameServer
/// address (-n or namesrvAddr) an embedded NameServer is started: the single-node default.
#[derive(Debug, Parser)]
#[command(name = "ringmq-broker", version)]
struct Args {
    /// RocketMQ broker.conf (Java properties: brokerClusterName, brokerName, brokerId,
    /// namesrvAddr, listenPort, storePathRootDir, flushDiskType, brokerRole, ...).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// NameServer addresses, "host:port;host:port" [namesrvAddr; default: embedded NameServer].
    #[arg(short = 'n', long = "namesrv-addr")]
    namesrv_addr: Option<String>,
    /// Client port; clients may also use port-2 [listenPort; default 10911; 0: any free port].
    #[arg(long)]
    listen_port: Option<u16>,
    /// Store root directory [storePathRootDir; default ./data].
    #[arg(long)]
    store_dir: Option<PathBuf>,
    /// ASYNC_FLUSH or SYNC_FLUSH (fsync before every acknowledgement) [flushDiskType; default ASYNC_FLUSH].
    #[arg(long)]
    flush_disk_type: Option<String>,
    /// ASYNC_MASTER, SYNC_MASTER or SLAVE [brokerRole; default ASYNC_MASTER].
    #[arg(long)]
    broker_role: Option<String>,
    /// Broker group name [brokerName; default broker-a].
    #[arg(long)]
    broker_name: Option<String>,
    /// 0 for a master, > 0 for a slave [brokerId; default 0].
    #[arg(long)]
    broker_id: Option<i64>,
    /// Cluster name [brokerClusterName; default DefaultCluster].
    #[arg(long)]
    cluster: Option<String>,
    /// Shard threads [shards; default: the store's count, or half the cores for a new store].
    /// Fixed for a store.
    #[arg(long)]
    shards: Option<usize>,
    /// auto, io-uring or poll (epoll) [ioDriver; default auto: io_uring where available].
    #[arg(long)]
    io_driver: Option<String>,
    /// Prometheus metrics port (0: any free port) [metricsPort; default: disabled].
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Port of the embedded NameServer (0: any free port) [embeddedNamesrvPort; default 9876].
    #[arg(long)]
    embedded_namesrv_port: Option<u16>,
    /// NameServer re-registration period, ms [registerNameServerPeriod; default 30000].
    #[arg(long)]
    register_interval_ms: Option<u64>,
    /// Create unknown topics on first send from TBW102 [autoCreateTopicEnable; default true].
    #[arg(long)]
    auto_create_topic: Option<bool>,
    /// Largest message body, bytes [maxMessageSize; default 4194304].
    #[arg(long)]
    max_message_size: Option<usize>,
    /// Drop clients silent this long, ms [channelExpiredTimeout; default 120000].
    #[arg(long)]
    client_expiry_ms: Option<u64>,
    /// Where a slave replicates from, master `host:haPort` [haMasterAddress; default: the
    /// address the NameServer answers the slave's registration with].
    #[arg(long)]
    ha_master_address: Option<String>,
    /// Any broker.conf key, `key=value`; repeatable, applied last (e.g. `--set slaveTimeout=3000`).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

/// A `--set` argument without `=`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not key=value")]
struct NotASetting(String);

fn parse_setting(text: &str) -> Result<(String, String), NotASetting> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| NotASetting(text.to_owned()))?;
    Ok((key.trim().to_owned(), value.to_owned()))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let (config, unknown) = BrokerConfig::from_properties(&text)
                .with_context(|| format!("invalid configuration in {}", path.display()))?;
            for key in unknown {
                tracing::info!(%key, "broker.conf key not used by RingMQ; ignored");
            }
            config
        }
        None => BrokerConfig::default(),
    };
    config
        .apply(&Overrides {
            namesrv_addr: args.namesrv_addr,
            listen_port: args.listen_port,
            store_dir: args.store_dir,
            flush_disk_type: args.flush_disk_type,
            broker_role: args.broker_role,
            broker_name: args.broker_name,
            broker_id: args.broker_id,
            cluster: args.cluster,
            shards: args.shards,
            io_driver: args.io_driver,
            metrics_port: args.metrics_port,
            embedded_namesrv_port: args.embedded_namesrv_port,
            register_interval_ms: args.register_interval_ms,
            auto_create_topic: args.auto_create_topic,
            max_message_bytes: args.max_message_size,
            client_expiry_ms: args.client_expiry_ms,
            settings: args
                .ha_master_address
                .map(|addr| ("haMasterAddress".to_owned(), addr))
                .into_iter()
                .chain(args.settings)
                .collect(),
        })
        .context("invalid command-line value")?;
    config.validate().context("invalid configuration")?;
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("cannot install signal handlers")?;
    let broker = Broker::start(config).context("cannot start the broker")?;

    // Scripts and tests read these lines to learn the (possibly ephemeral) ports.
    let mut out = std::io::stdout().lock();
    writeln!(out, "ringmq-broker listening on {}", broker.listen_addr())?;
    if let Some(addr) = broker.namesrv_addr() {
        writeln!(out, "embedded NameServer listening on {addr}")?;
    }
    if let Some(addr) = broker.metrics_addr() {
        writeln!(out, "metrics listening on {addr}")?;
    }
    out.flush()?;
    drop(out);

    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "stopping");
    }
    broker.shutdown();
    Ok(())
}
