#!/usr/bin/env bash
# The peer benchmark (docs/benchmarks.md §12): the same ringmq-bench produce load against RingMQ
# and against Apache RocketMQ 4.9.7's broker, in one run on one machine, for each header encoding
# (json, as the Java client sends it, and binary). Both clusters are started the same way, by
# compat/harness/serve.py (targets.py: a separate NameServer and one master broker on 127.0.0.1;
# RingMQ with 2 shards; Apache with the harness's broker.conf and JVM flags), with the same flush
# mode, on a fresh store for every run. Each run: start the cluster, warm it up (WARMUP s of the
# same load, not measured: the JVM compiles its hot paths), then measure SECS s, then stop it.
# RingMQ and Apache alternate run by run (A/B/A/B) so drift of a shared machine hits both; the
# table gives medians of msgs/s, p99 send latency and broker CPU per message (utime + stime of
# the broker process from /proc/PID/stat over the measured run, divided by the messages the broker
# acknowledged in it), and the RingMQ/Apache ratios.
#
#   benches/peers.sh [dir]               (default: the system temp dir)
#   RUNS=3 SECS=10 WARMUP=20 SIZE=1024 FLUSH=ASYNC_FLUSH HEADERS="json binary" benches/peers.sh
#
# Also: CONNECTIONS (8) x INFLIGHT (32) in flight, QUEUES (8; the topic is created with that many
# queues on each broker before the warm-up), APACHE_HEAP_MB (2048; heap and direct memory of
# Apache's broker), MSG_CAP (messages per run at most, default SECS x 400,000), NO_BUILD=1 (use
# target/release as it is), KEEP=1 (keep the logs and JSON summaries). Needs java 17 and mvn
# (Apache's jars are resolved from Maven Central on first use, into target/compat/apache-lib).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
secs="${SECS:-10}"
warmup="${WARMUP:-20}"
size="${SIZE:-1024}"
flush="${FLUSH:-ASYNC_FLUSH}"
headers_list="${HEADERS:-json binary}"
connections="${CONNECTIONS:-8}"
inflight="${INFLIGHT:-32}"
queues="${QUEUES:-8}"
apache_heap_mb="${APACHE_HEAP_MB:-2048}"
msg_cap="${MSG_CAP:-$((secs * 400000))}"
dir="$(realpath -m "${1:-${TMPDIR:-/tmp}}")/ringmq-peers.$$"
mkdir -p "$dir/json"
bin=target/release
root=$PWD
topic=PeerBench
ticks_per_sec=$(getconf CLK_TCK)

serve_pid=""   # compat/harness/serve.py of the cluster now running
broker_pid=""  # its broker (a child of serve.py)

stop_cluster() {
  [[ -n "$serve_pid" ]] || return 0
  kill -TERM "$serve_pid" 2>/dev/null || true
  # serve.py stops the broker, then the NameServer, each bounded (60 s, then SIGKILL).
  for _ in $(seq 1 1500); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$serve_pid" 2>/dev/null; then
    echo "serve.py $serve_pid did not stop in 150 s; killing it and its broker $broker_pid" >&2
    kill -KILL "$serve_pid" 2>/dev/null || true
    [[ -n "$broker_pid" ]] && kill -KILL "$broker_pid" 2>/dev/null || true
  fi
  wait "$serve_pid" 2>/dev/null || true
  serve_pid=""; broker_pid=""
}

cleanup() {
  stop_cluster
  if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_cluster() { # target, work dir; sets serve_pid, broker_pid, broker_addr
  local target="$1" work="$2" line=""
  (cd compat && exec python3 -m harness.serve --target "$target" --work "$work" --flush-disk-type "$flush" \
    --bin-dir "$root/$bin" --apache-heap-mb "$apache_heap_mb") >"$work.out" 2>"$work.err" &
  serve_pid=$!
  for _ in $(seq 1 1800); do # 180 s: Maven's first resolution, then the harness's own 90 s deadlines
    line=$(head -n 1 "$work.out")
    [[ -n "$line" ]] && break
    if ! kill -0 "$serve_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if [[ -z "$line" ]]; then
    echo "$target did not start; serve.py said:" >&2; cat "$work.err" >&2; exit 1
  fi
  broker_addr=$(sed -n 's/.* broker=\([^ ]*\).*/\1/p' <<<"$line")
  broker_pid=$(sed -n 's/.* broker_pid=\([0-9]*\).*/\1/p' <<<"$line")
  [[ -n "$broker_addr" && -n "$broker_pid" ]] || { echo "cannot parse serve.py's line: $line" >&2; exit 1; }
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$broker_pid/stat"; }

bench() { # headers, seconds, json file: one bounded produce run against $broker_addr
  timeout --kill-after=10 "$(($2 + 60))" "$bin/ringmq-bench" produce --broker "$broker_addr" \
    --topic "$topic" --queues "$queues" --size "$size" --headers "$1" \
    --connections "$connections" --inflight "$inflight" \
    --duration-secs "$2" --warmup-secs 0 --messages "$msg_cap" --json "$3"
}

if [[ "${NO_BUILD:-0}" != 1 ]]; then
  cargo build --release -q -p ringmq-broker -p ringmq-namesrv -p ringmq-tools
fi
for b in ringmq-bench ringmq-broker ringmq-namesrv; do
  [[ -x "$bin/$b" ]] || { echo "$bin/$b is missing" >&2; exit 1; }
done

echo "== peers: $flush, $size B, $connections x $inflight in flight, $queues queues, ${warmup} s warm-up + ${secs} s per run, $runs runs; $(date -u +%FT%TZ)"
: >"$dir/results.tsv"
for headers in $headers_list; do
  for run in $(seq 1 "$runs"); do
    for target in ringmq apache; do
      work="$dir/$target-$headers-$run"
      start_cluster "$target" "$work"
      log_from=$(($(wc -l <"$work/broker.log") + 1))
      warm_status=0
      bench "$headers" "$warmup" "$dir/json/$target.$headers.$run.warmup.json" \
        >"$work.warmup.txt" 2>"$work.warmup.err" || warm_status=$?
      before=$(cpu_ticks)
      status=0
      bench "$headers" "$secs" "$dir/json/$target.$headers.$run.json" >"$work.txt" 2>"$work.bench.err" || status=$?
      after=$(cpu_ticks)
      # The broker's own warnings and errors during the load (warm-up and measured run), less
      # Apache's transaction check, which the harness runs every 2 s and which logs each time.
      tail -n "+$log_from" "$work/broker.log" | grep -E '\b(WARN|ERROR)\b' | grep -v RocketmqTransaction >"$work.load-log.txt" || true
      log_errors=$(wc -l <"$work.load-log.txt")
      stop_cluster
      rm -rf "$work/store"
      if [[ $status -ne 0 || ! -s "$dir/json/$target.$headers.$run.json" ]]; then
        echo "$headers $target run $run: ringmq-bench failed ($status): $(grep -m1 'error' "$work.bench.err" || tail -n 1 "$work.bench.err")"
        printf '%s\t%s\t%s\tfailed\t\t\t\t%s\t%s\n' "$headers" "$target" "$run" "$log_errors" "$warm_status" >>"$dir/results.tsv"
        continue
      fi
      python3 - "$dir/json/$target.$headers.$run.json" "$((after - before))" "$ticks_per_sec" \
        "$headers" "$target" "$run" "$log_errors" "$warm_status" "$dir/json/$target.$headers.$run.warmup.json" \
        >>"$dir/results.tsv" <<'EOF'
import json, os, sys
path, ticks, hz, headers, target, run, log_errors, warm_status, warm_path = sys.argv[1:]
s = json.load(open(path))
errors = sum(e["count"] for e in s["errors"])
names = ",".join(f'{e["name"]}:{e["count"]}' for e in s["errors"]) or "-"
warm_errors = 0
if os.path.exists(warm_path):
    warm_errors = sum(e["count"] for e in json.load(open(warm_path))["errors"])
cpu_us = int(ticks) / int(hz) * 1e6 / s["messages"] if s["messages"] else float("nan")
print("\t".join(map(str, [headers, target, run, f'{s["msgs_per_sec"]:.0f}', f'{s["latency_us"]["p99"] / 1000:.2f}',
                          f"{cpu_us:.2f}", f"{errors}", log_errors, f"{warm_status}/{warm_errors}", names])))
EOF
      tail -n 1 "$dir/results.tsv" | awk -F'\t' '{printf "%s %s run %s: %s msgs/s, p99 %s ms, broker CPU %s us/msg, %s error answers (%s), %s broker log WARN/ERROR lines, warm-up status/errors %s\n", $1, $2, $3, $4, $5, $6, $7, $10, $8, $9}'
    done
  done
done

python3 - "$dir/results.tsv" "$flush" "$size" <<'EOF'
import statistics, sys
path, flush, size = sys.argv[1:]
rows = [line.rstrip("\n").split("\t") for line in open(path) if line.strip()]
print()
print("| case | RingMQ msgs/s | Apache msgs/s | RingMQ/Apache | RingMQ p99 ms | Apache p99 ms | RingMQ/Apache "
      "| RingMQ CPU us/msg | Apache CPU us/msg | RingMQ/Apache | error answers (RingMQ / Apache) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for headers in dict.fromkeys(r[0] for r in rows):
    med, errs, failed = {}, {}, {}
    for target in ("ringmq", "apache"):
        ok = [r for r in rows if r[0] == headers and r[1] == target and r[3] != "failed"]
        failed[target] = sum(1 for r in rows if r[0] == headers and r[1] == target and r[3] == "failed")
        med[target] = [statistics.median(float(r[i]) for r in ok) if ok else float("nan") for i in (3, 4, 5)]
        errs[target] = sum(int(r[6]) for r in ok)
    ratio = lambda i: med["ringmq"][i] / med["apache"][i] if med["apache"][i] else float("nan")
    note = "" if not any(failed.values()) else f" (failed runs: RingMQ {failed['ringmq']}, Apache {failed['apache']})"
    print(f"| {flush} {size} B {headers}{note} | {med['ringmq'][0]:,.0f} | {med['apache'][0]:,.0f} | {ratio(0):.2f} "
          f"| {med['ringmq'][1]:.2f} | {med['apache'][1]:.2f} | {ratio(1):.2f} "
          f"| {med['ringmq'][2]:.2f} | {med['apache'][2]:.2f} | {ratio(2):.2f} | {errs['ringmq']} / {errs['apache']} |")
EOF
