//! `ringmq-namesrv`: the NameServer binary.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use clap::Parser;
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
    // Scripts and tests read the bound address (the real port when started on port 0).
    println!("ringmq-namesrv listening on {}", server.local_addr());
    loop {
        std::thread::park();
    }
}
