//! A `ringmq-broker` process on ephemeral loopback ports, restartable on the same store and port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use crate::binary;
use crate::process::{ManagedChild, wait_port_closed};

const LISTENING: &str = "ringmq-broker listening on";
const EMBEDDED_LISTENING: &str = "embedded NameServer listening on";

/// How a broker is started. `BrokerOptions::default()` is a master "broker-a" of
/// "DefaultCluster" with an embedded NameServer, on a temporary store.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// NameServer addresses (`a;b`); `None` starts the broker's embedded NameServer.
    pub namesrv: Option<String>,
    pub broker_name: String,
    pub cluster: String,
    /// Store root; `None`: a temporary directory owned (and removed) by the process handle.
    pub store_dir: Option<PathBuf>,
    /// Shards (threads); `None`: the broker's default (one per core).
    pub shards: Option<u32>,
    /// `ASYNC_FLUSH` or `SYNC_FLUSH`; `None`: the broker's default.
    pub flush_disk_type: Option<String>,
    /// NameServer registration period (`registerNameServerPeriod`), fast for tests.
    pub register_interval_ms: u64,
    /// Further flags, appended last.
    pub extra_args: Vec<String>,
    /// Client port; `None` picks a free pair (port and port - 2).
    pub listen_port: Option<u16>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            namesrv: None,
            broker_name: "broker-a".to_owned(),
            cluster: crate::CLUSTER_NAME.to_owned(),
            store_dir: None,
            shards: None,
            flush_disk_type: None,
            register_interval_ms: 500,
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

    fn args(&self, store_dir: &Path, listen_port: u16, embedded_port: u16) -> Vec<String> {
        let mut args = vec![
            "--store-dir".to_owned(),
            store_dir.display().to_string(),
            "--listen-port".to_owned(),
            listen_port.to_string(),
            "--broker-name".to_owned(),
            self.broker_name.clone(),
            "--cluster".to_owned(),
            self.cluster.clone(),
            "--register-interval-ms".to_owned(),
            self.register_interval_ms.to_string(),
        ];
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
        let (process, addr, embedded_namesrv) = spawn(&options, &store_dir, port, 0, 0);
        Self {
            options,
            process,
            store_dir,
            _owned_store: owned_store,
            addr,
            embedded_namesrv,
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

    /// The embedded NameServer's address, when the broker was started without NameServers.
    pub fn embedded_namesrv_addr(&self) -> Option<String> {
        self.embedded_namesrv.map(|addr| addr.to_string())
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
        let (process, addr, embedded) = spawn(
            &self.options,
            &self.store_dir,
            self.addr.port(),
            embedded_port,
            self.starts,
        );
        self.process = process;
        self.starts += 1;
        assert_eq!(addr, self.addr, "the restarted broker moved");
        self.embedded_namesrv = embedded;
    }

    /// Its log (stdout and stderr of every start) so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }
}

fn spawn(
    options: &BrokerOptions,
    store_dir: &Path,
    listen_port: u16,
    embedded_port: u16,
    start: usize,
) -> (ManagedChild, SocketAddr, Option<SocketAddr>) {
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
    let prefixes: &[&str] = if embedded {
        &[LISTENING, EMBEDDED_LISTENING]
    } else {
        &[LISTENING]
    };
    let lines = process.wait_for_lines(prefixes);
    let mut parse = |text: &str| -> SocketAddr {
        text.parse().unwrap_or_else(|error| {
            process.fail(&format!("printed an unparsable address {text:?}: {error}"))
        })
    };
    let addr = parse(&lines[0]);
    let embedded_addr = embedded.then(|| parse(&lines[1]));
    (process, addr, embedded_addr)
}
