#!/usr/bin/env bash
# The broker benchmark (docs/benchmarks.md), in one run on one machine:
#   1. the storage engine's own append rate (storage_latency bench, 256 appenders: the same
#      number of messages in flight as 8 connections x 32), the baseline of the table;
#   2. ringmq-bench against a real ringmq-broker process (2 shards, data in a temp dir), for
#      ASYNC_FLUSH and SYNC_FLUSH, 1 KiB and 128 B messages, 8 connections x 32 in flight:
#      single sends; batches of 32 (ASYNC); consume; produce-to-consume at half the max rate.
# Every broker case runs RUNS times (default 3); the table shows medians (p99 too).
#
#   benches/broker-bench.sh [dir]        (default: the system temp dir)
#   RUNS=3 SECS=5 SHARDS=2 benches/broker-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
secs="${SECS:-5}"
shards="${SHARDS:-2}"
dir="${1:-${TMPDIR:-/tmp}}/ringmq-broker-bench.$$"
mkdir -p "$dir/json"
source benches/broker-process.sh
cleanup() {
  stop_broker_quietly
  rm -rf "$dir"
}
trap cleanup EXIT

cargo build --release -q -p ringmq-broker -p ringmq-tools
bin=target/release

echo "== storage engine append rate (256 appenders, io_uring writes)"
RINGMQ_BENCH_DIR="$dir" RINGMQ_BENCH_APPENDERS=256 RINGMQ_BENCH_SECONDS="$secs" RINGMQ_BENCH_CASE=ring \
  cargo bench -q -p ringmq-benches --bench storage_latency | tee "$dir/storage.txt"

bench() { # name, ringmq-bench arguments...
  local name="$1"; shift
  for run in $(seq 1 "$runs"); do
    "$bin/ringmq-bench" "$@" --broker "$addr" --duration-secs "$secs" \
      --json "$dir/json/$name.$run.json" 2>/dev/null | sed -n 's/^throughput/'"$name #$run"'/p'
  done
}

for mode in ASYNC_FLUSH SYNC_FLUSH; do
  echo "== broker, $mode, $shards shards"
  start_broker "$bin" "$mode" "$dir/store-$mode" "$dir/broker-$mode"
  bench "produce-1KiB-$mode" produce --size 1024 --topic "T1k$mode"
  bench "produce-128B-$mode" produce --size 128 --topic "T128$mode"
  if [[ "$mode" == ASYNC_FLUSH ]]; then
    bench "produce-batch32-1KiB-$mode" produce --size 1024 --batch 32 --topic "Tb$mode"
    bench "consume-1KiB-$mode" consume --topic "T1k$mode" --warmup-secs 0
    half=$(python3 -c 'import json,statistics,sys; print(int(statistics.median(json.load(open(f))["msgs_per_sec"] for f in sys.argv[1:]) / 2))' \
      "$dir"/json/produce-1KiB-$mode.*.json)
    bench "e2e-1KiB-half-rate-$mode" e2e --size 1024 --rate "$half" --topic "Te$mode"
  fi
  stop_broker
done

python3 - "$dir/json" <<'EOF'
import glob, json, os, statistics, sys
rows = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    name = os.path.basename(path).rsplit(".", 2)[0]
    rows.setdefault(name, []).append(json.load(open(path)))
print("\n| Case | msgs/s | MB/s | p50 ms | p99 ms | errors |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for name, runs in rows.items():
    med = lambda f: statistics.median(f(r) for r in runs)
    errors = sum(sum(e.get("count", 0) for e in r.get("errors", [])) for r in runs)
    print(f"| {name} | {med(lambda r: r['msgs_per_sec']):,.0f} | {med(lambda r: r['mb_per_sec']):.1f} | "
          f"{med(lambda r: r['latency_us']['p50']) / 1000:.2f} | {med(lambda r: r['latency_us']['p99']) / 1000:.2f} | {errors} |")
EOF
