//! Child processes under test, signalled only by PID while they are unreaped children:
//! [`ManagedChild`], a server started with its output in a log file and its startup lines read
//! from stdout; [`RunningProcess`], a run expected to end by itself, its output collected.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::{EXIT_DEADLINE, START_DEADLINE, tail};

/// Lines of a log shown in a panic message.
const LOG_TAIL_LINES: usize = 60;

/// A running (or exited but not yet dropped) child. Dropping it SIGKILLs it if still running and,
/// while a test is panicking, prints the tail of its log.
#[derive(Debug)]
pub(crate) struct ManagedChild {
    child: Child,
    /// What it is, for messages ("ringmq-broker broker-a").
    label: String,
    log_path: PathBuf,
    /// Stdout lines not consumed yet (the reader thread also copies them into the log).
    lines: Receiver<String>,
    exit: Option<ExitStatus>,
}

impl ManagedChild {
    /// Starts `program` with `args`; stdout and stderr are appended to `log_path`.
    pub(crate) fn spawn(label: &str, program: &Path, args: &[String], log_path: &Path) -> Self {
        let mut log = open_log(log_path);
        writeln!(log, "=== {label}: {} {}", program.display(), args.join(" ")).ok();
        let stderr = log.try_clone().expect("clone the log file handle");
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_tx, lines) = mpsc::channel();
        thread::Builder::new()
            .name("testkit-stdout".into())
            .spawn(move || {
                // Reads until the process exits so it never blocks on a full pipe.
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    writeln!(log, "{line}").ok();
                    // Nobody listening only means the startup lines were all read.
                    lines_tx.send(line).ok();
                }
            })
            .expect("start the stdout reader thread");
        Self {
            child,
            label: label.to_owned(),
            log_path: log_path.to_path_buf(),
            lines,
            exit: None,
        }
    }

    /// Reads stdout until a line starting with each of `prefixes` has been seen, and returns
    /// the rest of each such line (trimmed), in the order of `prefixes`. Panics with the log's
    /// tail when the process exits first or [`START_DEADLINE`] passes.
    pub(crate) fn wait_for_lines(&mut self, prefixes: &[&str]) -> Vec<String> {
        let deadline = Instant::now() + START_DEADLINE;
        let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
        let take = |line: &str, found: &mut Vec<Option<String>>| {
            for (prefix, slot) in prefixes.iter().zip(found.iter_mut()) {
                if slot.is_none()
                    && let Some(rest) = line.trim().strip_prefix(prefix)
                {
                    *slot = Some(rest.trim().to_owned());
                }
            }
        };
        while found.iter().any(Option::is_none) {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => take(&line, &mut found),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(EXIT_DEADLINE);
                    self.fail(&format!(
                        "closed stdout ({status:?}) before printing {prefixes:?}"
                    ));
                }
            }
            if let Some(status) = self.try_exit() {
                // Lines printed just before exiting may still be on their way.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    take(&line, &mut found);
                }
                if found.iter().any(Option::is_none) {
                    self.fail(&format!("exited ({status}) before printing {prefixes:?}"));
                }
            }
            if found.iter().any(Option::is_none) && Instant::now() >= deadline {
                self.fail(&format!(
                    "did not print {prefixes:?} within {START_DEADLINE:?}"
                ));
            }
        }
        found.into_iter().flatten().collect()
    }

    /// Panics with `what` and the tail of the log (killing the process first).
    pub(crate) fn fail(&mut self, what: &str) -> ! {
        self.kill();
        panic!(
            "{} (pid {}) {what}\n--- {} (last {LOG_TAIL_LINES} lines) ---\n{}\n--- end ---",
            self.label,
            self.child.id(),
            self.log_path.display(),
            self.log_tail(LOG_TAIL_LINES)
        );
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far.
    pub(crate) fn log(&self) -> String {
        match std::fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(error) => format!("<cannot read {}: {error}>", self.log_path.display()),
        }
    }

    pub(crate) fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// The exit status once the process has exited (reaping it).
    pub(crate) fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Waits up to `timeout` for the process to exit.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL, then reap. Nothing happens when the process already exited.
    pub(crate) fn kill(&mut self) -> ExitStatus {
        if self.is_running() {
            // `Child::kill` is SIGKILL by PID on Unix; the child is unreaped (checked above).
            if let Err(error) = self.child.kill() {
                panic!("SIGKILL {} (pid {}): {error}", self.label, self.child.id());
            }
        }
        match self.wait_exit(EXIT_DEADLINE) {
            Some(status) => status,
            None => panic!(
                "{} (pid {}) still running {EXIT_DEADLINE:?} after SIGKILL",
                self.label,
                self.child.id()
            ),
        }
    }

    /// SIGTERM, then wait up to [`EXIT_DEADLINE`]; a process that does not exit by then is
    /// SIGKILLed and the call panics with its log.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        if self.is_running() {
            sigterm(&self.child);
        }
        match self.wait_exit(EXIT_DEADLINE) {
            Some(status) => status,
            None => self.fail(&format!("did not exit within {EXIT_DEADLINE:?} of SIGTERM")),
        }
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        if self.is_running() {
            let _ignored = self.child.kill();
            let _status = self.wait_exit(EXIT_DEADLINE);
        }
        if thread::panicking() {
            eprintln!(
                "--- {} (pid {}) log {}, last {LOG_TAIL_LINES} lines ---\n{}\n--- end ---",
                self.label,
                self.child.id(),
                self.log_path.display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }
}

/// Waits until nothing accepts connections on `addr` any more. A process that used io_uring
/// can keep its listening socket open for a moment after it was reaped (the kernel tears the
/// ring down asynchronously), so "stopped" is only true once a connect is refused.
pub(crate) fn wait_port_closed(label: &str, addr: SocketAddr) {
    crate::wait_until(
        &format!("{label} to stop listening on {addr}"),
        EXIT_DEADLINE,
        || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .is_err()
                .then_some(())
        },
    );
}

fn open_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|error| panic!("cannot open the log {}: {error}", path.display()))
}

/// Sends SIGTERM to `child`, which the caller has checked is still unreaped.
#[allow(unsafe_code)]
fn sigterm(child: &Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: kill(2) reads no memory of ours. `pid` is our own child and not yet reaped (the
    // caller checked, and only the owner of `child` reaps it), so it names no other process.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, SIGTERM) failed: {}",
        io::Error::last_os_error()
    );
}

// ------------------------------------------------------------------------------------------------
// Runs expected to end

/// How a [`RunningProcess`] ended.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From the start to the exit (as seen by the polling of [`RunningProcess::finish`]).
    pub elapsed: Duration,
}

impl Exited {
    /// The exit code; `None` when a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// A process expected to end by itself (a command-line tool, a start that must be refused),
/// its stdout and stderr collected. Dropping it SIGKILLs it if it is still running.
#[derive(Debug)]
pub struct RunningProcess {
    child: Child,
    /// The command, for messages.
    label: String,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    started: Instant,
}

impl RunningProcess {
    /// Starts `command` with stdin closed and stdout and stderr collected.
    pub fn start(mut command: Command) -> Self {
        let label = format!("{command:?}");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {label}: {error}"));
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            label,
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    /// Whether the process has exited (reaping it).
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `deadline` for the exit and returns the collected output. A process still
    /// running then is SIGKILLed and the call panics with the tails of its output.
    pub fn finish(mut self, deadline: Duration) -> Exited {
        let waited = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().ok().flatten() {
                break status;
            }
            if waited.elapsed() >= deadline {
                // Our unreaped child (checked just above): the PID names no other process.
                let _ignored = self.child.kill();
                let _status = self.child.wait();
                // A child of its own may still hold the pipes: take what came so far.
                let (stdout, stderr) = self.output(Duration::from_secs(1));
                panic!(
                    "{} was still running after {deadline:?} (expected it to exit)\n\
                     --- stdout ---\n{}\n--- stderr ---\n{}",
                    self.label,
                    tail(&stdout, 50),
                    tail(&stderr, 200)
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        let (stdout, stderr) = self.output(EXIT_DEADLINE);
        Exited {
            status,
            stdout,
            stderr,
            elapsed,
        }
    }

    /// The collected output of an exited process, waiting up to `timeout` for each pipe to
    /// close (a child of the process may hold it open).
    fn output(&self, timeout: Duration) -> (String, String) {
        let text = |pipe: &Receiver<String>| pipe.recv_timeout(timeout).unwrap_or_default();
        (text(&self.stdout), text(&self.stderr))
    }
}

impl Drop for RunningProcess {
    fn drop(&mut self) {
        if !self.has_exited() {
            // Our unreaped child (checked just above).
            let _ignored = self.child.kill();
            let _status = self.child.wait();
        }
    }
}

/// Runs `command` (see [`RunningProcess::start`]) and waits up to `deadline` for it to exit by
/// itself.
pub fn run_to_exit(command: Command, deadline: Duration) -> Exited {
    RunningProcess::start(command).finish(deadline)
}

/// Reads `pipe` to its end on a thread of its own; the text arrives on the receiver.
fn collect(mut pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (text_tx, text) = mpsc::channel();
    thread::Builder::new()
        .name("testkit-output".into())
        .spawn(move || {
            let mut bytes = Vec::new();
            // A read error only cuts the text short.
            let _read = pipe.read_to_end(&mut bytes);
            text_tx
                .send(String::from_utf8_lossy(&bytes).into_owned())
                .ok();
        })
        .expect("start an output collector thread");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait_until;

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn a_run_to_exit_collects_code_and_output() {
        let exited = run_to_exit(
            shell("echo out; echo err >&2; exit 3"),
            Duration::from_secs(20),
        );
        assert_eq!(exited.code(), Some(3));
        assert_eq!(exited.stdout, "out\n");
        assert_eq!(exited.stderr, "err\n");
    }

    #[test]
    #[should_panic(expected = "was still running after")]
    fn a_run_that_does_not_end_fails_the_test() {
        run_to_exit(shell("exec sleep 30"), Duration::from_millis(100));
    }

    #[test]
    fn a_running_process_is_seen_to_exit() {
        let mut running = RunningProcess::start(shell("read line; echo \"[$line]\""));
        // stdin is closed: `read` sees end of file at once.
        wait_until("the process to exit", Duration::from_secs(20), || {
            running.has_exited()
        });
        assert_eq!(running.finish(Duration::ZERO).stdout, "[]\n");
    }
}
