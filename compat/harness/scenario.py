"""Runs one scenario program and reads its verdict.

A scenario is a process (a Java class or a Go program) that talks to the cluster given in its
environment (COMPAT_NAMESRV, COMPAT_BROKER, COMPAT_SCENARIO, COMPAT_TARGET, COMPAT_WORK, and
COMPAT_TIMEOUT_S, its time limit, so that its own waits end first) and to the harness
through lines on stdout:

  OBSERVE {"key": value, ...}   facts a user could see (delivered messages, codes, admin output),
                                compared key by key between targets in a differential run
  RESTART_BROKER                asks the harness to restart the broker; the harness answers
                                "RESTARTED" (or "FAILED <why>") on the scenario's stdin
  PASS                          the scenario's checks held
  FAIL <reason>                 a check failed; the reason is what a user would notice

Anything else on stdout or stderr goes to the scenario's log. A process that exits without PASS,
or outlives its time limit, has failed.
"""

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Spec:
    """One entry of scenarios.toml."""

    name: str
    runner: str  # "java" or "go"
    timeout_s: float
    summary: str
    # Expected failure on a target: target name -> reason. Absent: expected to pass.
    xfail: dict = field(default_factory=dict)
    # Extra JVM flags of a Java scenario (system properties the client reads).
    jvm_args: list = field(default_factory=list)
    # Expected failure on a target: target name -> text its failure reason must contain, so that
    # an expected failure for another cause is not mistaken for the known one.
    xfail_saw: dict = field(default_factory=dict)
    # Why the scenario, passing on both targets, observes something different on each.
    differs: str = ""


@dataclass
class Result:
    name: str
    passed: bool
    reason: str
    seconds: float
    observations: dict
    log_path: str

    def outcome(self, spec, target):
        """PASS, XFAIL (expected failure), FAIL (unexpected failure, or an expected one for
        another reason than the known one) or XPASS (unexpected pass)."""
        expected_failure = spec.xfail.get(target)
        if self.passed:
            return "XPASS" if expected_failure else "PASS"
        if not expected_failure:
            return "FAIL"
        return "XFAIL" if spec.xfail_saw.get(target, "") in self.reason else "FAIL"


def run(spec, argv, env, log_path, restart_broker):
    """Runs `argv` as scenario `spec`; `restart_broker()` is called when the scenario asks for it."""
    started = time.monotonic()
    observations = {}
    verdict = None
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"=== {spec.name}: {' '.join(argv)}\n")
        log.flush()
        process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            env={**os.environ, **env, "COMPAT_TIMEOUT_S": str(spec.timeout_s)},
            text=True, encoding="utf-8", errors="replace", bufsize=1, start_new_session=True,
        )
        timed_out = threading.Event()

        def kill_on_timeout():
            timed_out.set()
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(spec.timeout_s, kill_on_timeout)
        timer.start()
        try:
            for line in process.stdout:
                line = line.rstrip("\n")
                log.write(line + "\n")
                log.flush()
                if line.startswith("OBSERVE "):
                    try:
                        observations.update(json.loads(line[len("OBSERVE "):]))
                    except json.JSONDecodeError as error:
                        verdict = (False, f"bad OBSERVE line: {error}")
                elif line == "RESTART_BROKER":
                    try:
                        restart_broker()
                        answer = "RESTARTED"
                    except Exception as error:  # noqa: BLE001 - reported to the scenario and the log
                        answer = f"FAILED {error}"
                    log.write(f"=== harness: {answer}\n")
                    try:
                        process.stdin.write(answer + "\n")
                        process.stdin.flush()
                    except OSError:
                        pass  # the scenario gave up (or was killed) while the broker restarted
                elif line == "PASS" and verdict is None:
                    verdict = (True, "")
                elif (line == "FAIL" or line.startswith("FAIL ")) and (verdict is None or verdict[0]):
                    verdict = (False, line[4:].strip() or "failed")
            process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            # A scenario's helpers (client threads, child JVMs) die with its session.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    seconds = time.monotonic() - started
    if timed_out.is_set():
        verdict = (False, f"timed out after {spec.timeout_s:.0f} s")
    elif verdict is None:
        verdict = (False, f"exited with {process.returncode} without a verdict")
    elif verdict[0] and process.returncode != 0:
        verdict = (False, f"said PASS but exited with {process.returncode}")
    return Result(spec.name, verdict[0], verdict[1], seconds, observations, str(log_path))
