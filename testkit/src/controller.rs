//! `ringmq-controller` processes on loopback: a group of 1 or 3 that know each other.
//!
//! Peers must know each other's addresses before they start, so the ports are picked first
//! (bound to port 0 and released); another process could take one in between, which the
//! start then reports.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::binary;
use crate::process::{ManagedChild, wait_port_closed};

static SEQUENCE: AtomicUsize = AtomicUsize::new(0);

/// Timers of a test group: fast, so elections among controllers and of masters take well
/// under a second.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub heartbeat_timeout_ms: u64,
    pub scan_interval_ms: u64,
    pub raft_heartbeat_ms: u64,
    pub elect_unclean: bool,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            heartbeat_timeout_ms: 1_000,
            scan_interval_ms: 50,
            raft_heartbeat_ms: 50,
            elect_unclean: false,
        }
    }
}

/// One controller of a [`ControllerGroup`].
#[derive(Debug)]
pub struct ControllerMember {
    pub id: u64,
    pub addr: SocketAddr,
    process: Option<ManagedChild>,
    dir: PathBuf,
}

impl ControllerMember {
    /// Its store directory (Raft log and snapshots).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

/// Controllers started together, each with its own store directory. Dropping it SIGKILLs
/// them.
#[derive(Debug)]
pub struct ControllerGroup {
    members: Vec<ControllerMember>,
    options: ControllerOptions,
    _root: tempfile::TempDir,
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address")
}

impl ControllerGroup {
    /// Starts `count` controllers and waits until each listens.
    pub fn start(count: usize, options: ControllerOptions) -> Self {
        let root = tempfile::Builder::new()
            .prefix("ringmq-controllers-")
            .tempdir()
            .expect("create a temporary directory");
        let members = (1..=count as u64)
            .map(|id| ControllerMember {
                id,
                addr: free_port(),
                process: None,
                dir: root.path().join(format!("controller-{id}")),
            })
            .collect();
        let mut group = Self {
            members,
            options,
            _root: root,
        };
        for index in 0..count {
            group.spawn(index);
        }
        group
    }

    fn spawn(&mut self, index: usize) {
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let member = &self.members[index];
        let mut args = vec![
            "--id".to_owned(),
            member.id.to_string(),
            "--dir".to_owned(),
            member.dir.display().to_string(),
            "--heartbeat-timeout-ms".to_owned(),
            self.options.heartbeat_timeout_ms.to_string(),
            "--scan-interval-ms".to_owned(),
            self.options.scan_interval_ms.to_string(),
            "--raft-heartbeat-ms".to_owned(),
            self.options.raft_heartbeat_ms.to_string(),
        ];
        if self.options.elect_unclean {
            args.push("--elect-unclean".to_owned());
        }
        for peer in &self.members {
            args.extend(["--peer".to_owned(), format!("{}={}", peer.id, peer.addr)]);
        }
        std::fs::create_dir_all(&member.dir).expect("create the controller's directory");
        let mut process = ManagedChild::spawn(
            &format!("ringmq-controller {} #{sequence}", member.id),
            &binary("ringmq-controller"),
            &args,
            &member.dir.join("controller.log"),
        );
        process.wait_for_lines(&["ringmq-controller listening on"]);
        self.members[index].process = Some(process);
    }

    pub fn members(&self) -> &[ControllerMember] {
        &self.members
    }

    /// `host:port;host:port;...`, as brokers take `controllerAddr`.
    pub fn addrs(&self) -> String {
        self.members
            .iter()
            .map(|m| m.addr.to_string())
            .collect::<Vec<_>>()
            .join(";")
    }

    /// The member with controller id `id`.
    pub fn member(&self, id: u64) -> &ControllerMember {
        self.members
            .iter()
            .find(|m| m.id == id)
            .expect("a controller of the group")
    }

    fn index(&self, id: u64) -> usize {
        self.members
            .iter()
            .position(|m| m.id == id)
            .expect("a controller of the group")
    }

    /// SIGKILLs controller `id` and waits until its port is closed.
    pub fn kill(&mut self, id: u64) -> Option<ExitStatus> {
        let index = self.index(id);
        let member = &mut self.members[index];
        let mut process = member.process.take()?;
        let status = process.kill();
        wait_port_closed(process.label(), member.addr);
        Some(status)
    }

    /// Starts controller `id` again on its store and port.
    pub fn restart(&mut self, id: u64) {
        let index = self.index(id);
        self.kill(id);
        self.spawn(index);
    }
}
