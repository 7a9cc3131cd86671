//! `ringmq-namesrv`: the NameServer binary.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use ringmq_controller::{
    node::{ControllerConfig, parse_peer, peer_table},
    service::EmbeddedController,
};
use ringmq_namesrv::{NameServer, NamesrvConfig};

/// RocketMQ-compatible NameServer: brokers register their topics here, clients ask for routes.
#[derive(Debug, Parser)]
#[command(name = "ringmq-namesrv", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:9876")]
    listen: SocketAddr,
    /// How often brokers that stopped registering are looked for, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    scan_interval_ms: u64,
    /// How long a broker may go without registering before it is dropped, in milliseconds.
    #[arg(long, default_value_t = 120_000)]
    broker_expiry_ms: u64,
    /// Threads serving connections.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Also run a controller in this process (RocketMQ's `enableControllerInNamesrv`); see
    /// `ringmq-controller --help` for what the controller flags mean.
    #[arg(long)]
    enable_controller: bool,
    /// The embedded controller's id among `--controller-peer`.
    #[arg(long, requires = "enable_controller")]
    controller_id: Option<u64>,
    /// Every controller of the group as `id=host:port` (repeat); the embedded one listens on
    /// its own.
    #[arg(long = "controller-peer", value_parser = parse_peer, requires = "enable_controller")]
    controller_peers: Vec<(u64, String)>,
    /// Directory of the embedded controller's Raft log and snapshots.
    #[arg(long, default_value = "./controller-data")]
    controller_dir: PathBuf,
    /// How long a broker may go without a heartbeat when it does not say, in milliseconds.
    #[arg(long, default_value_t = 1_500)]
    controller_heartbeat_timeout_ms: u64,
}

/// The embedded controller the flags ask for, started; `None` without `--enable-controller`.
fn start_controller(args: &Args) -> anyhow::Result<Option<EmbeddedController>> {
    if !args.enable_controller {
        return Ok(None);
    }
    let id = args
        .controller_id
        .context("--enable-controller needs --controller-id")?;
    anyhow::ensure!(
        args.controller_heartbeat_timeout_ms > 0,
        "--controller-heartbeat-timeout-ms must be positive"
    );
    let peers = peer_table(id, &args.controller_peers).map_err(anyhow::Error::msg)?;
    let config = ControllerConfig {
        heartbeat_timeout: Duration::from_millis(args.controller_heartbeat_timeout_ms),
        ..ControllerConfig::new(id, peers, args.controller_dir.clone())
    };
    let controller = EmbeddedController::start(config).context("cannot start the controller")?;
    Ok(Some(controller))
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
    anyhow::ensure!(
        args.scan_interval_ms > 0,
        "--scan-interval-ms must be positive"
    );
    anyhow::ensure!(
        args.broker_expiry_ms > 0,
        "--broker-expiry-ms must be positive"
    );
    anyhow::ensure!(args.workers > 0, "--workers must be positive");
    let config = NamesrvConfig {
        listen: args.listen,
        scan_interval: Duration::from_millis(args.scan_interval_ms),
        broker_expiry: Duration::from_millis(args.broker_expiry_ms),
        workers: args.workers,
        ..NamesrvConfig::default()
    };
    let server =
        NameServer::start(config).with_context(|| format!("cannot listen on {}", args.listen))?;
    let controller = start_controller(&args)?;
    // Scripts and tests read the bound address (the real port when started on port 0).
    println!("ringmq-namesrv listening on {}", server.local_addr());
    if let Some(controller) = &controller {
        println!("ringmq-controller listening on {}", controller.local_addr());
    }
    loop {
        std::thread::park();
    }
}
