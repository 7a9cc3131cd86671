"""Starts one cluster (a NameServer and a master broker) through `targets.py` and keeps it up until
SIGTERM or SIGINT, for tools outside the scenario runner (benches/peers.sh):

  cd compat && python3 -m harness.serve --target apache|ringmq --work DIR \
      [--flush-disk-type ASYNC_FLUSH|SYNC_FLUSH] [--bin-dir DIR] [--apache-heap-mb MB]

Once the broker has registered and answers on its port, one line goes to stdout:

  namesrv=127.0.0.1:PORT broker=127.0.0.1:PORT broker_pid=PID

Everything else (Maven's progress, errors) goes to stderr; the servers' logs are in DIR. On SIGTERM
or SIGINT the broker, then the NameServer, are stopped by PID (SIGTERM, as `targets.py` does) and
the exit status is 0. If the broker dies on its own, the NameServer is stopped and the exit status
is 1. Apache's jars come from `install.apache_server` into the same place the scenario runner
uses (the cargo target dir's compat/apache-lib); RingMQ's binaries from the cargo target dir's
release/ unless --bin-dir says otherwise.
"""

import argparse
import contextlib
import signal
import sys
import time
from pathlib import Path

from . import install, targets

POLL_S = 0.5


class _Stop(Exception):
    """SIGTERM or SIGINT arrived."""


def _on_signal(signum, _frame):
    raise _Stop(signal.Signals(signum).name)


def make_target(args):
    bin_dir = (args.bin_dir or install.cargo_target_dir() / "release").resolve()
    # install prints its progress on stdout; stdout carries only the address line.
    with contextlib.redirect_stdout(sys.stderr):
        return targets.make(args.target, args.work.resolve(), bin_dir, install.cargo_target_dir() / "compat",
                            flush_disk_type=args.flush_disk_type, apache_heap_mb=args.apache_heap_mb)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("ringmq", "apache"), required=True)
    parser.add_argument("--work", type=Path, required=True, help="directory for the store and the logs")
    parser.add_argument("--flush-disk-type", choices=("ASYNC_FLUSH", "SYNC_FLUSH"), default="ASYNC_FLUSH")
    parser.add_argument("--bin-dir", type=Path, help="RingMQ binaries [default: the cargo target dir's release/]")
    parser.add_argument("--apache-heap-mb", type=int, default=512, help="Apache broker heap (and direct memory)")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    cluster = None
    status = 0
    try:
        cluster = make_target(args)
        cluster.start()
        print(f"namesrv={cluster.namesrv_addr} broker={cluster.broker_addr} "
              f"broker_pid={cluster.broker.process.pid}", flush=True)
        while cluster.broker.alive():
            time.sleep(POLL_S)
        print(f"serve: {cluster.broker.label} exited with {cluster.broker.process.returncode}; "
              f"log: {cluster.broker.log_path}", file=sys.stderr)
        status = 1
    except _Stop:
        pass
    except (install.InstallError, targets.TargetError) as error:
        print(f"serve: {error}", file=sys.stderr)
        status = 2
    finally:
        # A second signal must not interrupt the shutdown half-way.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if cluster is not None:
            try:
                cluster.stop()
            except targets.TargetError as error:
                print(f"serve: {error}", file=sys.stderr)
                status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
