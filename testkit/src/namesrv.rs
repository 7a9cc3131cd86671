//! A `ringmq-namesrv` process on an ephemeral loopback port.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::process::{ManagedChild, wait_port_closed};
use crate::{RemotingClient, binary};

static SEQUENCE: AtomicUsize = AtomicUsize::new(0);

/// NameServer settings; the defaults are fast so tests see expiry in seconds.
#[derive(Debug, Clone)]
pub struct NamesrvOptions {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// How often expired brokers are looked for.
    pub scan_interval_ms: u64,
    /// How long a broker may go without registering (brokers started by the testkit register
    /// every 500 ms).
    pub broker_expiry_ms: u64,
    /// Threads serving connections (one by default, to spare the cores); `None`: the
    /// NameServer's default.
    pub workers: Option<usize>,
    /// Also run a one-member controller in the NameServer's process, on a free port
    /// (`--enable-controller`).
    pub embedded_controller: bool,
}

impl Default for NamesrvOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            scan_interval_ms: 200,
            broker_expiry_ms: 5_000,
            workers: Some(1),
            embedded_controller: false,
        }
    }
}

/// A running NameServer. Dropping it SIGKILLs it.
#[derive(Debug)]
pub struct NamesrvProcess {
    process: ManagedChild,
    addr: SocketAddr,
    /// The embedded controller's address, when it runs one.
    controller: Option<SocketAddr>,
    options: NamesrvOptions,
    /// Holds the log file.
    dir: tempfile::TempDir,
}

impl NamesrvProcess {
    /// Starts a NameServer with [`NamesrvOptions::default`] and waits until it listens.
    pub fn start() -> Self {
        Self::start_with(NamesrvOptions::default())
    }

    /// Starts a NameServer with `options` and waits until it listens.
    pub fn start_with(options: NamesrvOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ringmq-namesrv-")
            .tempdir()
            .expect("create a temporary directory");
        let (process, addr, controller) = spawn(&options, dir.path());
        Self {
            process,
            addr,
            controller,
            options,
            dir,
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The listening address.
    pub const fn socket_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The embedded controller's address, when [`NamesrvOptions::embedded_controller`] asked
    /// for one.
    pub const fn controller_addr(&self) -> Option<SocketAddr> {
        self.controller
    }

    /// A client of this NameServer.
    pub fn client(&self) -> RemotingClient {
        RemotingClient::connect(self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// SIGKILL by PID, then reap, then wait until the port refuses connections.
    pub fn kill(&mut self) -> ExitStatus {
        let status = self.process.kill();
        wait_port_closed(self.process.label(), self.addr);
        status
    }

    /// SIGTERM by PID, then wait for the exit and until the port refuses connections.
    pub fn stop(&mut self) -> ExitStatus {
        let status = self.process.terminate();
        wait_port_closed(self.process.label(), self.addr);
        status
    }

    /// Stops the process if running and starts a new one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let options = NamesrvOptions {
            listen: self.addr,
            ..self.options.clone()
        };
        let (process, addr, controller) = spawn(&options, self.dir.path());
        assert_eq!(addr, self.addr, "the restarted NameServer moved");
        self.process = process;
        self.controller = controller;
    }

    /// Its log (stdout and stderr) so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

fn spawn(options: &NamesrvOptions, dir: &Path) -> (ManagedChild, SocketAddr, Option<SocketAddr>) {
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let mut args = vec![
        "--listen".to_owned(),
        options.listen.to_string(),
        "--scan-interval-ms".to_owned(),
        options.scan_interval_ms.to_string(),
        "--broker-expiry-ms".to_owned(),
        options.broker_expiry_ms.to_string(),
    ];
    if let Some(workers) = options.workers {
        args.extend(["--workers".to_owned(), workers.to_string()]);
    }
    let mut expected = vec!["ringmq-namesrv listening on"];
    if options.embedded_controller {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port for the controller");
        args.extend([
            "--enable-controller".to_owned(),
            "--controller-id".to_owned(),
            "1".to_owned(),
            "--controller-peer".to_owned(),
            format!("1={port}"),
            "--controller-dir".to_owned(),
            dir.join("controller").display().to_string(),
            "--controller-heartbeat-timeout-ms".to_owned(),
            "1000".to_owned(),
        ]);
        expected.push("ringmq-controller listening on");
    }
    let mut process = ManagedChild::spawn(
        &format!("ringmq-namesrv #{sequence}"),
        &binary("ringmq-namesrv"),
        &args,
        &dir.join("namesrv.log"),
    );
    let lines = process.wait_for_lines(&expected);
    let mut parse = |line: &str| -> SocketAddr {
        line.parse().unwrap_or_else(|error| {
            process.fail(&format!("printed an unparsable address {line:?}: {error}"))
        })
    };
    let addr = parse(&lines[0]);
    let controller = lines.get(1).map(|line| parse(line));
    (process, addr, controller)
}
