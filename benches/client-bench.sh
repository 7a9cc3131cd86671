#!/usr/bin/env bash
# The client-library benchmark (docs/benchmarks.md): the same load through ringmq-bench's raw requests
# (pre-encoded frames on the client library's connection layer) and through the client library's
# public API (`--api client`: Producer::send awaited by tasks on the client's I/O thread, and
# PushConsumer; `--api client-remote`: the same sends from the benchmark's own threads, one
# hand-off to the I/O thread and back per send), alternating run by run against one
# ringmq-broker process (2 shards, ASYNC_FLUSH, data in a temp dir). 1 KiB messages, 8 x 32 in
# flight. The table shows medians of RUNS runs and the client/raw ratio.
#
# OLD_BENCH=path/to/ringmq-bench adds a third column: a ringmq-bench built from an earlier commit
# (for example the last one with its own connection code), run the same way.
#
#   benches/client-bench.sh [dir]            (default: the system temp dir)
#   RUNS=3 SECS=5 benches/client-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
secs="${SECS:-5}"
dir="${1:-${TMPDIR:-/tmp}}/ringmq-client-bench.$$"
mkdir -p "$dir/json"
broker_pid=""
cleanup() {
  if [[ -n "$broker_pid" ]]; then kill -TERM "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

cargo build --release -q -p ringmq-broker -p ringmq-tools
bin=target/release

"$bin/ringmq-broker" --store-dir "$dir/store" --listen-port 0 --embedded-namesrv-port 0 \
  --shards 2 >"$dir/broker.out" 2>"$dir/broker.log" &
broker_pid=$!
for _ in $(seq 1 200); do
  addr=$(sed -n 's/^ringmq-broker listening on //p' "$dir/broker.out")
  namesrv=$(sed -n 's/^embedded NameServer listening on //p' "$dir/broker.out")
  [[ -n "$addr" && -n "$namesrv" ]] && break
  sleep 0.1
done
[[ -n "$addr" && -n "$namesrv" ]] || { echo "broker did not start:" >&2; cat "$dir/broker.log" >&2; exit 1; }
echo "broker $addr, NameServer $namesrv"

run() { # name, binary, mode, target args...
  local name="$1" binary="$2" mode="$3"; shift 3
  local args=(--size 1024 --topic ClientBench)
  [[ "$mode" == consume ]] && args=(--topic ClientBench --warmup-secs 0)
  "$binary" "$mode" "${args[@]}" "$@" --duration-secs "$secs" --json "$dir/json/$name.$run.json" \
    2>/dev/null | sed -n 's/^throughput/'"$name #$run"'/p'
}

for mode in produce consume; do
  for run in $(seq 1 "$runs"); do
    run "$mode-raw" "$bin/ringmq-bench" "$mode" --broker "$addr"
    run "$mode-client" "$bin/ringmq-bench" "$mode" -n "$namesrv" --api client
    [[ "$mode" == produce ]] && run "$mode-remote" "$bin/ringmq-bench" "$mode" -n "$namesrv" --api client-remote
    if [[ -n "${OLD_BENCH:-}" ]]; then
      run "$mode-previous" "$OLD_BENCH" "$mode" --broker "$addr"
    fi
  done
done

python3 - "$dir/json" <<'EOF'
import glob, json, os, statistics, sys
rows = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    name = os.path.basename(path).rsplit(".", 2)[0]
    rows.setdefault(name, []).append(json.load(open(path))["msgs_per_sec"])
med = {name: statistics.median(values) for name, values in rows.items()}
print("\n| Case | raw msgs/s | client API msgs/s | client / raw | client API from other threads | / raw | previous raw msgs/s |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for mode in ("produce", "consume"):
    raw, client = med.get(f"{mode}-raw"), med.get(f"{mode}-client")
    remote, previous = med.get(f"{mode}-remote"), med.get(f"{mode}-previous")
    print(f"| {mode} 1 KiB | {raw:,.0f} | {client:,.0f} | {client / raw:.0%} | "
          + (f"{remote:,.0f} | {remote / raw:.0%} | " if remote else "- | - | ")
          + (f"{previous:,.0f} |" if previous else "- |"))
print("\nall runs:", {name: [round(v) for v in values] for name, values in rows.items()})
EOF
