//! A `ringmq-broker` process on ephemeral loopback ports, restartable on the same store and port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use ringmq_protocol::SerializeType;

use crate::process::{Exited, ManagedChild, run_to_exit, wait_port_closed};
use crate::{RemotingClient, binary};

const LISTENING: &str = "ringmq-broker listening on";
const EMBEDDED_LISTENING: &str = "embedded NameServer listening on";
const METRICS_LISTENING: &str = "metrics listening on";

/// The broker name of [`BrokerOptions::default`] (and the broker's own default).
pub const DEFAULT_BROKER_NAME: &str = "broker-a";

/// How a broker is started. `BrokerOptions::default()` is a master "broker-a" of
/// "DefaultCluster" with an embedded NameServer, on a temporary store.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// NameServer addresses (`a;b`); `None` starts the broker's embedded NameServer.
    pub namesrv: Option<String>,
    pub broker_name: String,
    /// `--cluster`; `None` passes none, leaving the cluster to a `-c` file or the broker's
    /// default.
    pub cluster: Option<String>,
    /// Store root; `None`: a temporary directory owned (and removed) by the process handle.
    pub store_dir: Option<PathBuf>,
    /// Shards (threads); `None`: the broker's default (one per core).
    pub shards: Option<u32>,
    /// `ASYNC_FLUSH` or `SYNC_FLUSH`; `None`: the broker's default.
    pub flush_disk_type: Option<String>,
    /// NameServer registration period (`registerNameServerPeriod`), fast for tests.
    pub register_interval_ms: u64,
    /// Prometheus metrics port (0: a free one, see [`BrokerProcess::metrics_addr`]); `None`:
    /// no metrics endpoint.
    pub metrics_port: Option<u16>,
    /// Further flags, appended last.
    pub extra_args: Vec<String>,
    /// Client port; `None` picks a free pair (port and port - 2).
    pub listen_port: Option<u16>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            namesrv: None,
            broker_name: DEFAULT_BROKER_NAME.to_owned(),
            cluster: Some(crate::CLUSTER_NAME.to_owned()),
            store_dir: None,
            shards: None,
            flush_disk_type: None,
            register_interval_ms: 500,
            metrics_port: None,
            extra_args: Vec::new(),
            listen_port: None,
        }
    }
}

impl BrokerOptions {
    /// A master named `broker_name` registering with `namesrv` (`a;b`).
    pub fn master(broker_name: &str, namesrv: &str) -> Self {
        Self {
            namesrv: Some(namesrv.to_owned()),
            broker_name: broker_name.to_owned(),
            ..Self::default()
        }
    }

    /// Appends `args` to [`BrokerOptions::extra_args`].
    #[must_use]
    pub fn with_args(mut self, args: &[&str]) -> Self {
        self.extra_args
            .extend(args.iter().map(|arg| (*arg).to_owned()));
        self
    }

    /// Runs a broker with these options (on a temporary store unless [`BrokerOptions::store_dir`]
    /// names one) and waits up to `deadline` for it to exit by itself: for a start that must be
    /// refused. Panics, after a SIGKILL, if it is still running then.
    pub fn run_to_exit(&self, deadline: Duration) -> Exited {
        let temporary;
        let store_dir = if let Some(dir) = &self.store_dir {
            dir.clone()
        } else {
            temporary = tempfile::Builder::new()
                .prefix(&format!("ringmq-{}-", self.broker_name))
                .tempdir()
                .expect("create a temporary store directory");
            temporary.path().to_path_buf()
        };
        let mut command = Command::new(binary("ringmq-broker"));
        command.args(self.args(&store_dir, self.listen_port.unwrap_or(0), 0));
        run_to_exit(command, deadline)
    }

    fn args(&self, store_dir: &Path, listen_port: u16, embedded_port: u16) -> Vec<String> {
        let mut args = vec![
            "--store-dir".to_owned(),
            store_dir.display().to_string(),
            "--listen-port".to_owned(),
            listen_port.to_string(),
            "--broker-name".to_owned(),
            self.broker_name.clone(),
            "--register-interval-ms".to_owned(),
            self.register_interval_ms.to_string(),
        ];
        if let Some(cluster) = &self.cluster {
            args.extend(["--cluster".to_owned(), cluster.clone()]);
        }
        match &self.namesrv {
            Some(namesrv) => args.extend(["-n".to_owned(), namesrv.clone()]),
            None => args.extend([
                "--embedded-namesrv-port".to_owned(),
                embedded_port.to_string(),
            ]),
        }
        if let Some(shards) = self.shards {
            args.extend(["--shards".to_owned(), shards.to_string()]);
        }
        if let Some(flush) = &self.flush_disk_type {
            args.extend(["--flush-disk-type".to_owned(), flush.clone()]);
        }
        if let Some(port) = self.metrics_port {
            args.extend(["--metrics-port".to_owned(), port.to_string()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// A running broker. Dropping it SIGKILLs it (and removes its store when the handle owns it).
#[derive(Debug)]
pub struct BrokerProcess {
    options: BrokerOptions,
    process: ManagedChild,
    store_dir: PathBuf,
    /// The temporary store directory, when the options named none.
    _owned_store: Option<tempfile::TempDir>,
    addr: SocketAddr,
    embedded_namesrv: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    starts: usize,
}

impl BrokerProcess {
    /// Starts a broker and waits until it prints its addresses. Its stdout and stderr go to
    /// `broker.log` in the store directory.
    pub fn start(options: BrokerOptions) -> Self {
        let (owned_store, store_dir) = if let Some(dir) = &options.store_dir {
            std::fs::create_dir_all(dir).unwrap_or_else(|error| {
                panic!("cannot create the store dir {}: {error}", dir.display())
            });
            (None, dir.clone())
        } else {
            let dir = tempfile::Builder::new()
                .prefix(&format!("ringmq-{}-", options.broker_name))
                .tempdir()
                .expect("create a temporary store directory");
            let path = dir.path().to_path_buf();
            (Some(dir), path)
        };
        let port = options.listen_port.unwrap_or(0);
        let started = spawn(&options, &store_dir, port, 0, 0);
        Self {
            options,
            process: started.process,
            store_dir,
            _owned_store: owned_store,
            addr: started.addr,
            embedded_namesrv: started.embedded_namesrv,
            metrics: started.metrics,
            starts: 1,
        }
    }

    /// `127.0.0.1:port`, the address clients use and the broker registers.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub const fn socket_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The fast ("VIP") listener, port `P - 2` of the client port `P`.
    pub fn fast_addr(&self) -> SocketAddr {
        let port =
            self.addr.port().checked_sub(2).unwrap_or_else(|| {
                panic!("the client port {} leaves no port - 2", self.addr.port())
            });
        SocketAddr::new(self.addr.ip(), port)
    }

    /// The embedded NameServer's address, when the broker was started without NameServers.
    pub fn embedded_namesrv_addr(&self) -> Option<String> {
        self.embedded_namesrv.map(|addr| addr.to_string())
    }

    /// The metrics endpoint, when started with [`BrokerOptions::metrics_port`].
    pub const fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// A client of the client port, sending JSON headers.
    pub fn client(&self) -> RemotingClient {
        RemotingClient::connect(self.addr)
    }

    /// A client of the client port, sending binary (ROCKETMQ) headers.
    pub fn binary_client(&self) -> RemotingClient {
        self.client().with_serialize_type(SerializeType::RocketMq)
    }

    /// A client of the fast port `P - 2`; it still expects `P` as the store host.
    pub fn fast_client(&self) -> RemotingClient {
        RemotingClient::connect(self.fast_addr()).with_store_host(self.addr)
    }

    /// A client of the embedded NameServer; panics when the broker was started with
    /// NameServers.
    pub fn namesrv_client(&self) -> RemotingClient {
        let namesrv = self
            .embedded_namesrv
            .expect("this broker was started without an embedded NameServer");
        RemotingClient::connect(namesrv)
    }

    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    pub fn name(&self) -> &str {
        &self.options.broker_name
    }

    pub const fn options(&self) -> &BrokerOptions {
        &self.options
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// SIGKILL by PID (`kill -9`: no unregistration, no flush), then reap, then wait until
    /// its port refuses connections.
    pub fn kill(&mut self) -> ExitStatus {
        let status = self.process.kill();
        self.wait_ports_closed();
        status
    }

    /// SIGTERM by PID (a graceful stop), then wait for the exit and until its port refuses
    /// connections.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = self.process.terminate();
        self.wait_ports_closed();
        status
    }

    /// The client port and the embedded NameServer's port, once the process has exited.
    fn wait_ports_closed(&self) {
        wait_port_closed(self.process.label(), self.addr);
        if let Some(namesrv) = self.embedded_namesrv {
            wait_port_closed(self.process.label(), namesrv);
        }
    }

    /// Stops the broker gracefully if it still runs, then starts it again on the same store
    /// directory and the same ports, and waits until it prints its addresses.
    pub fn restart(&mut self) {
        self.terminate();
        let embedded_port = self.embedded_namesrv.map_or(0, |addr| addr.port());
        let started = spawn(
            &self.options,
            &self.store_dir,
            self.addr.port(),
            embedded_port,
            self.starts,
        );
        self.process = started.process;
        self.starts += 1;
        assert_eq!(started.addr, self.addr, "the restarted broker moved");
        self.embedded_namesrv = started.embedded_namesrv;
        self.metrics = started.metrics;
    }

    /// Its log (stdout and stderr of every start) so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }
}

/// A started broker process and the addresses it printed.
struct Started {
    process: ManagedChild,
    addr: SocketAddr,
    embedded_namesrv: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
}

fn spawn(
    options: &BrokerOptions,
    store_dir: &Path,
    listen_port: u16,
    embedded_port: u16,
    start: usize,
) -> Started {
    let args = options.args(store_dir, listen_port, embedded_port);
    let label = format!(
        "ringmq-broker {} (start {})",
        options.broker_name,
        start + 1
    );
    let mut process = ManagedChild::spawn(
        &label,
        &binary("ringmq-broker"),
        &args,
        &store_dir.join("broker.log"),
    );
    let embedded = options.namesrv.is_none();
    let metrics = options.metrics_port.is_some();
    let mut prefixes = vec![LISTENING];
    if embedded {
        prefixes.push(EMBEDDED_LISTENING);
    }
    if metrics {
        prefixes.push(METRICS_LISTENING);
    }
    let lines = process.wait_for_lines(&prefixes);
    let mut parse = |text: &str| -> SocketAddr {
        text.parse().unwrap_or_else(|error| {
            process.fail(&format!("printed an unparsable address {text:?}: {error}"))
        })
    };
    let addr = parse(&lines[0]);
    let mut rest = lines[1..].iter();
    let embedded_namesrv = embedded.then(|| parse(rest.next().expect("the NameServer line")));
    let metrics = metrics.then(|| parse(rest.next().expect("the metrics line")));
    Started {
        process,
        addr,
        embedded_namesrv,
        metrics,
    }
}
