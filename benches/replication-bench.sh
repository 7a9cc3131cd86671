#!/usr/bin/env bash
# The replication benchmark (docs/benchmarks.md): ringmq-bench produce, 1 KiB messages, 8 connections
# x 32 in flight, against a master with one slave attached (both real ringmq-broker processes
# on loopback, 2 shards each, ASYNC_FLUSH), once with brokerRole=ASYNC_MASTER (the baseline:
# acknowledged after the local write) and once with SYNC_MASTER (acknowledged once the slave
# holds the bytes). The two roles alternate run by run, so drift on a shared machine hits both;
# the table shows medians of RUNS runs (default 3) and the SYNC/ASYNC ratio.
#
#   benches/replication-bench.sh [dir]        (default: the system temp dir)
#   RUNS=3 SECS=5 SHARDS=2 SIZE=1024 benches/replication-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
secs="${SECS:-5}"
shards="${SHARDS:-2}"
size="${SIZE:-1024}"
dir="${1:-${TMPDIR:-/tmp}}/ringmq-replication-bench.$$"
mkdir -p "$dir/json"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  if [[ -z "${KEEP:-}" ]]; then rm -rf "$dir"; else echo "kept $dir" >&2; fi
}
trap cleanup EXIT

cargo build --release -q -p ringmq-broker -p ringmq-tools
bin=target/release

wait_addr() { # stdout file -> prints host:port
  for _ in $(seq 1 200); do
    local addr
    addr=$(sed -n 's/^ringmq-broker listening on //p' "$1")
    if [[ -n "$addr" ]]; then echo "$addr"; return 0; fi
    sleep 0.1
  done
  echo "broker did not start: $(cat "$1")" >&2; exit 1
}

start_pair() { # role run
  local name="$1-$2"
  "$bin/ringmq-broker" --store-dir "$dir/$name-master" --listen-port 0 --embedded-namesrv-port 0 \
    --shards "$shards" --broker-role "$1" >"$dir/$name-master.out" 2>"$dir/$name-master.log" &
  pids+=($!)
  master=$(wait_addr "$dir/$name-master.out")
  local port="${master##*:}"
  "$bin/ringmq-broker" --store-dir "$dir/$name-slave" --listen-port 0 --embedded-namesrv-port 0 \
    --shards "$shards" --broker-role SLAVE --broker-id 1 \
    --ha-master-address "127.0.0.1:$((port + 1))" >"$dir/$name-slave.out" 2>"$dir/$name-slave.log" &
  pids+=($!)
  wait_addr "$dir/$name-slave.out" >/dev/null
  # Every shard's slave connection up before measuring.
  for _ in $(seq 1 100); do
    if [[ $(grep -c "slave connected" "$dir/$name-master.log" || true) -ge "$shards" ]]; then return 0; fi
    sleep 0.1
  done
  echo "the slave did not connect; master log:" >&2; cat "$dir/$name-master.log" >&2; exit 1
}

stop_pair() { # role run
  for pid in "${pids[@]}"; do kill -TERM "$pid"; wait "$pid" || true; done
  pids=()
  # Each broker preallocates 1 GiB segments per shard: free them before the next pair.
  rm -rf "$dir/$1-$2-master" "$dir/$1-$2-slave"
}

for run in $(seq 1 "$runs"); do
  for role in ASYNC_MASTER SYNC_MASTER; do
    start_pair "$role" "$run"
    "$bin/ringmq-bench" produce --broker "$master" --size "$size" --connections 8 --inflight 32 \
      --duration-secs "$secs" --json "$dir/json/$role.$run.json" 2>/dev/null \
      | sed -n 's/^throughput/'"$role #$run"'/p'
    stop_pair "$role" "$run"
  done
done

python3 - "$dir/json" <<'EOF'
import glob, json, os, statistics, sys
rows = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    name = os.path.basename(path).rsplit(".", 2)[0]
    rows.setdefault(name, []).append(json.load(open(path)))
print("\n| Role | msgs/s (median) | runs | p50 ms | p99 ms | errors |")
print("| --- | ---: | --- | ---: | ---: | ---: |")
medians = {}
for name in ["ASYNC_MASTER", "SYNC_MASTER"]:
    runs = rows.get(name, [])
    if not runs:
        continue
    med = lambda f: statistics.median(f(r) for r in runs)
    medians[name] = med(lambda r: r["msgs_per_sec"])
    each = " / ".join(f"{r['msgs_per_sec'] / 1000:.0f}k" for r in runs)
    errors = sum(e["count"] for r in runs for e in r.get("errors", []))
    print(f"| {name} | {medians[name]:,.0f} | {each} | {med(lambda r: r['latency_us']['p50'] / 1000):.2f} "
          f"| {med(lambda r: r['latency_us']['p99'] / 1000):.2f} | {errors} |")
if len(medians) == 2:
    print(f"\nSYNC_MASTER / ASYNC_MASTER = {medians['SYNC_MASTER'] / medians['ASYNC_MASTER']:.0%}")
EOF
