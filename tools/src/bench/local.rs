//! `--local`: a RingMQ broker started in this process on a temporary store directory, with its
//! embedded NameServer, benchmarked like `--broker` (so the load takes the same TCP path a remote
//! client would). The directory is deleted when the broker has stopped.
//!
//! Behind the `local` cargo feature (on by default), so the rest of the tool builds and is tested
//! without the broker crate.

use std::net::SocketAddr;

use anyhow::Result;

use super::args::FlushDiskType;

#[cfg(feature = "local")]
mod imp {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    use anyhow::{Context, Result, anyhow};
    use ringmq_broker::Broker;
    use ringmq_broker::config::BrokerConfig;
    use tempfile::TempDir;

    use super::FlushDiskType;

    /// A running in-process broker and its store directory.
    #[derive(Debug)]
    pub struct LocalBroker {
        // Declared first: dropped (stopped) before the directory is removed.
        broker: Option<Broker>,
        addr: SocketAddr,
        dir: TempDir,
    }

    impl LocalBroker {
        /// Starts a broker on a fresh temporary directory, listening on a free port.
        pub fn start(flush: Option<FlushDiskType>, shards: Option<usize>) -> Result<Self> {
            let dir = tempfile::Builder::new()
                .prefix("ringmq-bench-")
                .tempdir()
                .context("creating a temporary store directory")?;
            // Port 0: the broker picks a free pair (P, P-2); the embedded NameServer an ephemeral
            // port, so a run never collides with a broker already on this machine.
            let mut config = BrokerConfig {
                store_dir: dir.path().to_path_buf(),
                listen_port: 0,
                embedded_namesrv_port: 0,
                ..BrokerConfig::default()
            };
            if let Some(flush) = flush {
                config
                    .set("flushDiskType", flush.as_str())
                    .map_err(|error| anyhow!("configuring the in-process broker: {error}"))?;
            }
            if let Some(shards) = shards {
                config.shards = Some(shards);
            }
            let broker = Broker::start(config)
                .map_err(|error| anyhow!("starting the in-process broker: {error}"))?;
            let mut addr = broker.listen_addr();
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                });
            }
            eprintln!(
                "started an in-process broker on {addr}, store {}",
                dir.path().display()
            );
            Ok(Self {
                broker: Some(broker),
                addr,
                dir,
            })
        }

        /// Where clients connect.
        pub const fn addr(&self) -> SocketAddr {
            self.addr
        }

        /// The broker's embedded NameServer (`--api client` finds the broker through it).
        pub fn namesrv_addr(&self) -> Option<SocketAddr> {
            let mut addr = self.broker.as_ref()?.namesrv_addr()?;
            addr.set_ip(self.addr.ip());
            Some(addr)
        }

        /// Stops the broker gracefully and deletes its directory.
        pub fn shutdown(mut self) {
            if let Some(broker) = self.broker.take() {
                broker.shutdown();
            }
            let path = self.dir.path().to_path_buf();
            if let Err(error) = self.dir.close() {
                eprintln!("note: could not delete {}: {error}", path.display());
            }
        }
    }
}

#[cfg(not(feature = "local"))]
mod imp {
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use anyhow::{Result, bail};

    use super::FlushDiskType;

    /// Stands in for the in-process broker in builds without the `local` feature; never exists.
    #[derive(Debug)]
    pub struct LocalBroker {
        never: Infallible,
    }

    impl LocalBroker {
        /// Always fails: this build has no broker.
        pub fn start(_flush: Option<FlushDiskType>, _shards: Option<usize>) -> Result<Self> {
            bail!(
                "--local is unavailable: this ringmq-bench was built without the `local` feature \
                 (use --broker or -n, or rebuild with default features)"
            )
        }

        /// Unreachable.
        pub const fn addr(&self) -> SocketAddr {
            match self.never {}
        }

        /// Unreachable.
        pub const fn namesrv_addr(&self) -> Option<SocketAddr> {
            match self.never {}
        }

        /// Unreachable.
        pub fn shutdown(self) {
            match self.never {}
        }
    }
}

pub use imp::LocalBroker;

/// Starts the in-process broker and returns it with its client address.
pub fn start(
    flush: Option<FlushDiskType>,
    shards: Option<usize>,
) -> Result<(LocalBroker, SocketAddr)> {
    let broker = LocalBroker::start(flush, shards)?;
    let addr = broker.addr();
    Ok((broker, addr))
}
