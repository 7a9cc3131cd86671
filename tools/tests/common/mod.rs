//! A real `ringmq-broker` process for the tools' tests, and a runner for the tools' binaries
//! with a deadline.
//!
//! The broker binary is the one next to the test executable (`target/<profile>/ringmq-broker`),
//! built (once per test process) with the same profile and target directory. Only processes
//! started here are ever killed, through their `Child` handles.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// How long a broker may take to print its addresses.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long one run of a tool may take before the test fails.
pub const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// `target/<profile>`, from the test executable's path (`target/<profile>/deps/<test>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable under target/<profile>/deps")
        .to_path_buf()
}

/// The broker binary of this workspace, next to the test executable.
///
/// `cargo build` runs every time, not only when the binary is absent: after an edit to the
/// broker, `cargo test -p ringmq-tools` alone would otherwise test the old binary. When the
/// binary is fresh the build is a no-op of about a second.
pub fn broker_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build_broker).clone()
}

fn build_broker() -> PathBuf {
    let dir = profile_dir();
    let target_dir = dir.parent().expect("target directory");
    let mut build = Command::new(env!("CARGO"));
    build
        .args([
            "build",
            "--quiet",
            "-p",
            "ringmq-broker",
            "--bin",
            "ringmq-broker",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.file_name().is_some_and(|name| name == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "building ringmq-broker failed: {status}");
    let bin = dir.join(format!("ringmq-broker{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

/// A broker with its embedded NameServer, on ephemeral ports and a temporary store; killed
/// (SIGKILL, then reaped) when dropped.
pub struct Broker {
    child: Child,
    /// `host:port` clients use.
    pub addr: String,
    /// The embedded NameServer's `host:port`.
    pub namesrv: String,
    _store: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Self {
        let store = tempfile::tempdir().expect("temporary store directory");
        let mut child = Command::new(broker_bin())
            .args([
                "--listen-port",
                "0",
                "--embedded-namesrv-port",
                "0",
                "--store-dir",
            ])
            .arg(store.path().join("store"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ringmq-broker");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, received) = mpsc::channel();
        thread::spawn(move || {
            // Reads until the broker exits, so it never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.send(line).ok();
            }
        });
        let deadline = Instant::now() + START_DEADLINE;
        let (mut addr, mut namesrv) = (None, None);
        while addr.is_none() || namesrv.is_none() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = received.recv_timeout(remaining).unwrap_or_else(|_| {
                panic!("ringmq-broker printed no addresses in {START_DEADLINE:?}")
            });
            if let Some(rest) = line.strip_prefix("ringmq-broker listening on ") {
                addr = Some(rest.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("embedded NameServer listening on ") {
                namesrv = Some(rest.trim().to_owned());
            }
        }
        Self {
            child,
            addr: addr.expect("broker address"),
            namesrv: namesrv.expect("NameServer address"),
            _store: store,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Still our unreaped child, so the PID cannot have been reused.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a tool run ended.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// A started tool process whose output is being collected.
pub struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn collect(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        tx.send(text).ok();
    });
    rx
}

/// Starts `bin` with `args`.
pub fn spawn(bin: &str, args: &[&str]) -> Running {
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("NAMESRV_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {bin}: {error}"));
    let stdout = collect(child.stdout.take().expect("piped stdout"));
    let stderr = collect(child.stderr.take().expect("piped stderr"));
    Running {
        child,
        stdout,
        stderr,
    }
}

impl Running {
    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_some()
    }

    /// Waits for the exit, killing the process and failing the test after [`RUN_DEADLINE`].
    pub fn finish(mut self) -> Output {
        let deadline = Instant::now() + RUN_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("tool still running after {RUN_DEADLINE:?}");
            }
            thread::sleep(Duration::from_millis(10));
        };
        Output {
            code: status.code(),
            stdout: self.stdout.recv_timeout(RUN_DEADLINE).unwrap_or_default(),
            stderr: self.stderr.recv_timeout(RUN_DEADLINE).unwrap_or_default(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `probe` until it returns a value; panics naming `what` after `deadline`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}
