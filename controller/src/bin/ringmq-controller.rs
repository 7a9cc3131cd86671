//! `ringmq-controller`: elects each broker group's master from its in-sync replicas; one
//! process of a group of 1 or 3 (or 5) that agree through Raft.

use std::{path::PathBuf, time::Duration};

use anyhow::bail;
use clap::Parser;
use ringmq_controller::{
    node::{ControllerConfig, parse_peer, peer_table},
    service::bind_and_start,
};

/// RingMQ controller (RocketMQ 5's controller mode): keeps each broker group's master, epoch and
/// in-sync replicas, and elects a new master when one stops heartbeating.
#[derive(Debug, Parser)]
#[command(name = "ringmq-controller", version)]
struct Args {
    /// This controller's id (one of the `--peer` ids).
    #[arg(long)]
    id: u64,
    /// Every controller of the group, this one included, as `id=host:port` (repeat the flag).
    /// This controller listens on its own address.
    #[arg(long = "peer", value_parser = parse_peer, required = true)]
    peers: Vec<(u64, String)>,
    /// Directory of the Raft log and snapshots.
    #[arg(long, default_value = "./controller-data")]
    dir: PathBuf,
    /// How long a broker may go without a heartbeat when it does not say
    /// (`controllerHeartBeatTimeoutMills`), in milliseconds.
    #[arg(long, default_value_t = 1_500)]
    heartbeat_timeout_ms: u64,
    /// How often the leader looks for groups without a live master, in milliseconds.
    #[arg(long, default_value_t = 100)]
    scan_interval_ms: u64,
    /// Raft's heartbeat between controllers, in milliseconds (a leader is replaced after 3 to 6
    /// of these without one).
    #[arg(long, default_value_t = 100)]
    raft_heartbeat_ms: u64,
    /// Elect a replica outside the in-sync set when no member is alive: acknowledged messages
    /// may be lost (`enableElectUncleanMaster`).
    #[arg(long)]
    elect_unclean: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    for (name, value) in [
        ("--heartbeat-timeout-ms", args.heartbeat_timeout_ms),
        ("--scan-interval-ms", args.scan_interval_ms),
        ("--raft-heartbeat-ms", args.raft_heartbeat_ms),
    ] {
        anyhow::ensure!(value > 0, "{name} must be positive");
    }
    let peers = peer_table(args.id, &args.peers).map_err(anyhow::Error::msg)?;
    let config = ControllerConfig {
        heartbeat_timeout: Duration::from_millis(args.heartbeat_timeout_ms),
        scan_interval: Duration::from_millis(args.scan_interval_ms),
        raft_heartbeat: Duration::from_millis(args.raft_heartbeat_ms),
        elect_unclean: args.elect_unclean,
        ..ControllerConfig::new(args.id, peers, args.dir)
    };
    let (controller, local) = bind_and_start(config).await?;
    // Scripts and tests read the bound address.
    println!("ringmq-controller listening on {local}");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        () = controller.stopped() => {
            bail!("Raft stopped by itself (its storage failed?); see the log above");
        }
    }
    tracing::info!("stopping");
    controller.shutdown().await;
    Ok(())
}
