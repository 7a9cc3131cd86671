#!/usr/bin/env bash
# RingMQ against NATS JetStream, the peer with the lowest CPU per message on this kind of
# machine, in one run: the same shape of produce load (1 KiB, 8 connections x 32 in flight)
# against a RingMQ broker in its default configuration (ASYNC_FLUSH and SYNC_FLUSH; JSON headers
# as the Java client sends them, and binary) and against nats-server with a file-backed
# JetStream stream (its default: fsync every two minutes, i.e. lazily), alternating run by run
# on fresh stores. Prints median msgs/s, p50/p99 publish round trip and server CPU per message
# (user + system time of the server process from /proc over the run, divided by the messages
# it acknowledged), and each RingMQ case's ratios to NATS.
#
#   benches/nats.sh [dir]
#   RUNS=3 MSGS=500000 SIZE=1024 benches/nats.sh
#
# Needs nats-server on PATH (Debian: apt-get install nats-server). The load generator is the
# NATS CLI's `nats bench js pub async` (natscli, pinned below): taken from PATH or NATS_CLI, or
# installed with `go install` into target/natscli on first use. NO_BUILD=1 uses target/release
# as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
msgs="${MSGS:-500000}"
size="${SIZE:-1024}"
natscli_version=v0.5.0
dir="$(realpath -m "${1:-${TMPDIR:-/tmp}}")/ringmq-nats.$$"
mkdir -p "$dir"
ticks_per_sec=$(getconf CLK_TCK)
bin=target/release

command -v nats-server >/dev/null || { echo "nats-server is missing (apt-get install nats-server)" >&2; exit 1; }
nats_cli="${NATS_CLI:-$(command -v nats || true)}"
if [[ -z "$nats_cli" ]]; then
  nats_cli="$PWD/target/natscli/nats"
  if [[ ! -x "$nats_cli" ]]; then
    echo "installing natscli $natscli_version into target/natscli" >&2
    GOBIN="$PWD/target/natscli" go install "github.com/nats-io/natscli/nats@$natscli_version"
  fi
fi
[[ "${NO_BUILD:-0}" == 1 ]] || cargo build --release -q -p ringmq-broker -p ringmq-tools

shards=""  # the broker's default
source benches/broker-process.sh
server_pid=""
cleanup() {
  stop_broker_quietly
  if [[ -n "$server_pid" ]]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu_us() { awk -v t="$1" -v hz="$ticks_per_sec" -v m="$2" 'BEGIN {printf "%.2f", t / hz * 1e6 / m}'; }
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

declare -A rates p50s p99s cpus
cases=("NATS JetStream (file, lazy fsync)")
for mode in ASYNC_FLUSH SYNC_FLUSH; do
  for headers in json binary; do
    cases+=("RingMQ $mode $headers")
  done
done

record() { # case rate p50_us p99_us cpu_us
  rates[$1]+="$2 "; p50s[$1]+="$3 "; p99s[$1]+="$4 "; cpus[$1]+="$5 "
  echo "$1: $(printf '%.0f' "$2") msgs/s, p50 $3 us, p99 $4 us, server CPU $5 us/msg"
}

run_nats() {
  local port store="$dir/nats-store" out="$dir/nats.out"
  port=$(free_port)
  rm -rf "$store"
  nats-server -js -sd "$store" -a 127.0.0.1 -p "$port" >"$dir/nats.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do grep -q "Server is ready" "$dir/nats.log" && break; sleep 0.1; done
  "$nats_cli" -s "nats://127.0.0.1:$port" stream add benchstream --subjects bench --storage file \
    --replicas 1 --defaults >/dev/null
  local before after
  before=$(cpu_ticks "$server_pid")
  "$nats_cli" -s "nats://127.0.0.1:$port" bench js pub async bench --clients 8 --batch 32 \
    --size "$size" --msgs "$msgs" --no-progress >"$out" 2>&1
  after=$(cpu_ticks "$server_pid")
  kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
  rm -rf "$store"
  local line rate p50 p99
  line=$(grep "aggregated stats" "$out")
  rate=$(sed -n 's/.*stats: \([0-9,]*\) msgs\/sec.*/\1/p' <<<"$line" | tr -d ,)
  line=$(grep "^ *latencies per operation" "$out")
  p50=$(sed -n 's/.*P50 \([0-9,.]*\)\(us\|ms\).*/\1 \2/p' <<<"$line" | awk '{gsub(",", "", $1); print ($2 == "ms") ? $1 * 1000 : $1}')
  p99=$(sed -n 's/.*P99 \([0-9,.]*\)\(us\|ms\).*/\1 \2/p' <<<"$line" | awk '{gsub(",", "", $1); print ($2 == "ms") ? $1 * 1000 : $1}')
  [[ -n "$rate" && -n "$p50" && -n "$p99" ]] || { echo "could not read nats bench's report:" >&2; cat "$out" >&2; exit 1; }
  record "${cases[0]}" "$rate" "$p50" "$p99" "$(cpu_us "$((after - before))" "$msgs")"
}

run_ringmq() { # mode headers
  local mode="$1" headers="$2" store="$dir/ringmq-store" before after
  rm -rf "$store"
  start_broker "$bin" "$mode" "$store" "$dir/broker"
  before=$(cpu_ticks "$broker_pid")
  "$bin/ringmq-bench" produce --broker "$addr" --size "$size" --headers "$headers" --topic NatsPeer \
    --messages "$msgs" --warmup-secs 0 --json "$dir/run.json" >/dev/null 2>&1
  after=$(cpu_ticks "$broker_pid")
  stop_broker
  rm -rf "$store"
  local done_msgs rate p50 p99
  read -r done_msgs rate p50 p99 < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); l=s["latency_us"]; print(s["messages"], s["msgs_per_sec"], l["p50"], l["p99"])' "$dir/run.json")
  record "RingMQ $mode $headers" "$rate" "$p50" "$p99" "$(cpu_us "$((after - before))" "$done_msgs")"
}

for run in $(seq 1 "$runs"); do
  echo "== run $run"
  run_nats
  for mode in ASYNC_FLUSH SYNC_FLUSH; do
    for headers in json binary; do
      run_ringmq "$mode" "$headers"
    done
  done
done

nats_rate=$(median "${rates[${cases[0]}]}")
nats_cpu=$(median "${cpus[${cases[0]}]}")
echo
echo "$size B, 8 connections x 32 in flight, $msgs messages per run, medians of $runs runs; RingMQ in its default configuration"
echo
echo "| case | msgs/s | vs NATS | p50 / p99 ms | server CPU us/msg | vs NATS |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for case_name in "${cases[@]}"; do
  awk -v c="$case_name" -v r="$(median "${rates[$case_name]}")" -v p="$(median "${p50s[$case_name]}")" \
    -v q="$(median "${p99s[$case_name]}")" -v u="$(median "${cpus[$case_name]}")" -v nr="$nats_rate" -v nu="$nats_cpu" \
    'BEGIN {printf "| %s | %.0f | %.2f | %.2f / %.2f | %.2f | %.2f |\n", c, r, r / nr, p / 1000, q / 1000, u, u / nu}'
done
