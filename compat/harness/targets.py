"""The clusters scenarios run against: RingMQ (its release binaries) or Apache RocketMQ (the jars
Maven resolved). Each is one NameServer and one master broker on loopback, in a fresh directory,
started and stopped by PID only.

Both expose the same surface: `start()`, `namesrv_addr`, `broker_addr`, `restart_broker()`,
`stop()`. The broker listens on a fixed port chosen at start so that a restarted broker comes
back where the clients' routes already point.
"""

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

from . import install, remoting

CLUSTER = "DefaultCluster"
BROKER_NAME = "broker-a"
START_DEADLINE_S = 90.0
STOP_DEADLINE_S = 60.0
UNREGISTER_WAIT_S = 10.0


class TargetError(Exception):
    """A server did not start, register or stop in time; the message says which and where its log is."""


def _port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_broker_port():
    """A port P with P-2 (the "VIP" port), P and P+1 (HA) all free."""
    for _ in range(200):
        port = random.randint(20000, 40000)
        if all(_port_free(p) for p in (port - 2, port - 1, port, port + 1)):
            return port
    raise TargetError("no free broker port found")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(predicate, deadline_s, what, log_path):
    deadline = time.monotonic() + deadline_s
    last_error = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as error:  # noqa: BLE001 - any failure means "not yet"
            last_error = error
        time.sleep(0.2)
    raise TargetError(f"{what} not ready after {deadline_s:.0f} s (last error: {last_error}); log: {log_path}")


class _Server:
    """One child process with its output in a log file."""

    def __init__(self, label, argv, log_path, env=None, cwd=None):
        self.label = label
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"=== {label}: {' '.join(map(str, argv))}\n".encode())
            self.process = subprocess.Popen(
                [str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=cwd,
            )

    def alive(self):
        return self.process.poll() is None

    def check_alive(self):
        if not self.alive():
            raise TargetError(f"{self.label} exited with {self.process.returncode}; log: {self.log_path}")
        return True

    def stop(self, sig=signal.SIGTERM):
        if self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise TargetError(f"{self.label} ignored SIGTERM for {STOP_DEADLINE_S:.0f} s; killed")


class _Target:
    name = "?"

    def __init__(self, work_dir):
        self.work_dir = Path(work_dir)
        self.namesrv = None
        self.broker = None
        self.namesrv_addr = None
        self.broker_port = None

    @property
    def broker_addr(self):
        return f"127.0.0.1:{self.broker_port}"

    def _broker_registered(self):
        self.broker.check_alive()
        brokers = remoting.registered_brokers(self.namesrv_addr)
        return brokers.get(BROKER_NAME, {}).get(0) == self.broker_addr

    def _wait_registered(self):
        _wait_for(self._broker_registered, START_DEADLINE_S, f"{self.name} broker registration", self.broker.log_path)
        # The broker must also answer on its own port (registration may precede the listener).
        _wait_for(lambda: socket.create_connection(("127.0.0.1", self.broker_port), timeout=1).close() or True,
                  START_DEADLINE_S, f"{self.name} broker port", self.broker.log_path)

    def start(self):
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._start_namesrv()
        self.broker_port = free_broker_port()
        self._start_broker()
        self._wait_registered()

    def restart_broker(self):
        """Graceful stop (SIGTERM), then start on the same port and store; returns once registered."""
        self.broker.stop()
        # A stopping broker unregisters; wait for that (bounded: a crashed one cannot), so that
        # the registration seen next is the new broker's, not the old entry at the same address.
        gone_deadline = time.monotonic() + UNREGISTER_WAIT_S
        while time.monotonic() < gone_deadline:
            try:
                if remoting.registered_brokers(self.namesrv_addr).get(BROKER_NAME, {}).get(0) != self.broker_addr:
                    break
            except remoting.RemotingError:
                break
            time.sleep(0.1)
        self._start_broker()
        self._wait_registered()

    def stop(self):
        errors = []
        for server in (self.broker, self.namesrv):
            if server is not None:
                try:
                    server.stop()
                except TargetError as error:
                    errors.append(str(error))
        if errors:
            raise TargetError("; ".join(errors))


class RingmqTarget(_Target):
    """`ringmq-namesrv` and `ringmq-broker` from the cargo target directory (release profile)."""

    name = "ringmq"

    def __init__(self, work_dir, bin_dir, shards=2, flush_disk_type="ASYNC_FLUSH"):
        super().__init__(work_dir)
        self.bin_dir = Path(bin_dir)
        self.shards = shards
        self.flush_disk_type = flush_disk_type

    def _start_namesrv(self):
        port = free_port()
        self.namesrv_addr = f"127.0.0.1:{port}"
        self.namesrv = _Server(
            "ringmq-namesrv", [self.bin_dir / "ringmq-namesrv", "--listen", self.namesrv_addr],
            self.work_dir / "namesrv.log",
        )
        _wait_for(lambda: self.namesrv.check_alive() and remoting.registered_brokers(self.namesrv_addr) is not None,
                  START_DEADLINE_S, "ringmq-namesrv", self.namesrv.log_path)

    def _start_broker(self):
        self.broker = _Server(
            "ringmq-broker",
            [
                self.bin_dir / "ringmq-broker", "-n", self.namesrv_addr, "--listen-port", self.broker_port,
                "--store-dir", self.work_dir / "store", "--shards", self.shards,
                "--cluster", CLUSTER, "--broker-name", BROKER_NAME,
                "--flush-disk-type", self.flush_disk_type,
            ],
            self.work_dir / "broker.log",
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )


# JVM flags Apache RocketMQ 4.9 needs on Java 17 (MappedFile cleanup reflects into the JDK).
JAVA17_OPENS = [
    "--add-opens", "java.base/java.nio=ALL-UNNAMED",
    "--add-exports", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-exports", "java.base/sun.nio.ch=ALL-UNNAMED",
]

# Every delay level is 1 s so that retries (level 3 + attempts) come back in seconds, not minutes.
APACHE_DELAY_LEVELS = " ".join(["1s"] * 18)


class ApacheTarget(_Target):
    """Apache RocketMQ's NameServer and broker from the jars in `lib_dir`, on this machine's Java."""

    name = "apache"

    def __init__(self, work_dir, lib_dir, conf_dir, flush_disk_type="ASYNC_FLUSH", broker_heap_mb=512):
        super().__init__(work_dir)
        self.lib_dir = Path(lib_dir)
        self.conf_dir = Path(conf_dir)
        self.home = self.work_dir / "home"
        self.flush_disk_type = flush_disk_type
        self.broker_heap_mb = broker_heap_mb

    def _java(self, main_class, config_path, heap_mb):
        return [
            "java", f"-Xms{heap_mb}m", f"-Xmx{heap_mb}m", f"-XX:MaxDirectMemorySize={heap_mb}m",
            *JAVA17_OPENS,
            f"-Drocketmq.home.dir={self.home}", f"-Duser.home={self.home}",
            "-Drocketmq.broker.diskSpaceWarningLevelRatio=0.99",
            "-cp", f"{self.lib_dir}/*", main_class, "-c", config_path,
        ]

    def _prepare_home(self):
        conf = self.home / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        for name in ("logback_namesrv.xml", "logback_broker.xml"):
            (conf / name).write_text((self.conf_dir / name).read_text().replace("@LOG_DIR@", str(self.work_dir)))

    def _start_namesrv(self):
        self._prepare_home()
        port = free_port()
        self.namesrv_addr = f"127.0.0.1:{port}"
        config = self.work_dir / "namesrv.properties"
        config.write_text(f"listenPort={port}\n")
        self.namesrv = _Server("apache-namesrv", self._java("org.apache.rocketmq.namesrv.NamesrvStartup", config, 256),
                               self.work_dir / "namesrv.log", cwd=self.work_dir)
        _wait_for(lambda: self.namesrv.check_alive() and remoting.registered_brokers(self.namesrv_addr) is not None,
                  START_DEADLINE_S, "apache-namesrv", self.namesrv.log_path)

    def _start_broker(self):
        store = self.work_dir / "store"
        config = self.work_dir / "broker.conf"
        config.write_text("\n".join([
            f"brokerClusterName={CLUSTER}",
            f"brokerName={BROKER_NAME}",
            "brokerId=0",
            "brokerRole=ASYNC_MASTER",
            f"flushDiskType={self.flush_disk_type}",
            f"namesrvAddr={self.namesrv_addr}",
            "brokerIP1=127.0.0.1",
            f"listenPort={self.broker_port}",
            f"storePathRootDir={store}",
            f"storePathCommitLog={store}/commitlog",
            "mappedFileSizeCommitLog=67108864",
            "mappedFileSizeConsumeQueue=600000",
            "maxHashSlotNum=100000",
            "maxIndexNum=400000",
            "autoCreateTopicEnable=true",
            "diskMaxUsedSpaceRatio=95",
            f"messageDelayLevel={APACHE_DELAY_LEVELS}",
            # SQL92 subscriptions are refused unless property filtering is on.
            "enablePropertyFilter=true",
            # Check back unresolved transactions after seconds, not the default minute.
            "transactionTimeOut=2000",
            "transactionCheckInterval=2000",
            "",
        ]))
        self.broker = _Server("apache-broker", self._java("org.apache.rocketmq.broker.BrokerStartup", config, self.broker_heap_mb),
                              self.work_dir / "broker.log", cwd=self.work_dir)


def make(target_name, cluster_dir, bin_dir, work_root, flush_disk_type="ASYNC_FLUSH", apache_heap_mb=512):
    """The cluster `target_name` names, not started: RingMQ from `bin_dir`, or Apache RocketMQ
    with its jars resolved into `work_root`."""
    if target_name == "ringmq":
        for binary in ("ringmq-broker", "ringmq-namesrv"):
            if not (Path(bin_dir) / binary).exists():
                raise TargetError(f"{Path(bin_dir) / binary} is missing: "
                                  "cargo build --release -p ringmq-broker -p ringmq-namesrv")
        return RingmqTarget(cluster_dir, bin_dir, flush_disk_type=flush_disk_type)
    lib = install.apache_server(work_root)
    return ApacheTarget(cluster_dir, lib, install.COMPAT_DIR / "apache" / "conf",
                        flush_disk_type=flush_disk_type, broker_heap_mb=apache_heap_mb)
