#!/usr/bin/env bash
# A/B of two ringmq-broker builds on this machine, in one run: the same ringmq-bench produce load
# against each broker in turn, for every combination of header encoding, flush mode and shard
# count, alternating A and B run by run (on fresh stores) so drift on a shared machine hits both
# alike. Reports per case the median msgs/s, p50 and p99 send round trip, and the median broker
# CPU per message (user + system time of the broker process from /proc, divided by the messages
# acknowledged in the run), which noise moves far less than msgs/s.
#
#   benches/ab-broker.sh A_BIN_DIR B_BIN_DIR [dir]
#   RUNS=3 SECS=5 SHARDS="1 2 4" HEADERS="json binary" MODES="ASYNC_FLUSH SYNC_FLUSH" \
#     SIZE=1024 benches/ab-broker.sh old/target/release target/release
#
# Defaults: RUNS=3, SECS=5, SHARDS="1 2 4" (4 oversubscribes a 2-core machine on purpose),
# HEADERS="json binary" (json as the Java client sends it), both modes, 1 KiB, 8 connections x 32
# in flight. BROKER_ARGS adds flags to both brokers (e.g. "--set pinShards=true").
# Each BIN_DIR holds a ringmq-broker; ringmq-bench is taken from B_BIN_DIR. Build a baseline with
#   git worktree add /tmp/base REV && CARGO_TARGET_DIR=/tmp/base-target \
#     cargo build --release -p ringmq-broker --manifest-path /tmp/base/Cargo.toml
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 2 ]] || { sed -n '2,19p' "$0"; exit 2; }
a_bin="$1"; b_bin="$2"
runs="${RUNS:-3}"
secs="${SECS:-5}"
shards_list="${SHARDS:-1 2 4}"
headers_list="${HEADERS:-json binary}"
modes="${MODES:-ASYNC_FLUSH SYNC_FLUSH}"
size="${SIZE:-1024}"
read -r -a broker_args <<<"${BROKER_ARGS:-}"
dir="${3:-${TMPDIR:-/tmp}}/ringmq-ab.$$"
mkdir -p "$dir"
source benches/broker-process.sh
cleanup() {
  stop_broker_quietly
  rm -rf "$dir"
}
trap cleanup EXIT
ticks_per_sec=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$broker_pid/stat"; }

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

# Samples per case and side, space-separated: rates, p50 and p99 (us), CPU per message (us).
declare -A rates p50s p99s cpus
cases=()
for headers in $headers_list; do
  for mode in $modes; do
    for shards in $shards_list; do
      case_name="$mode $shards $headers"
      cases+=("$case_name")
      for run in $(seq 1 "$runs"); do
        for side in A B; do
          bin="$a_bin"; [[ $side == B ]] && bin="$b_bin"
          store="$dir/store-$side-$run"
          start_broker "$bin" "$mode" "$store" "$dir/broker" "${broker_args[@]}"
          before=$(cpu_ticks)
          "$b_bin/ringmq-bench" produce --broker "$addr" --size "$size" --headers "$headers" \
            --topic "AB$mode" --duration-secs "$secs" --warmup-secs 0 --json "$dir/run.json" \
            >/dev/null 2>&1
          after=$(cpu_ticks)
          stop_broker
          rm -rf "$store"
          read -r msgs rate p50 p99 < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); l=s["latency_us"]; print(s["messages"], s["msgs_per_sec"], l["p50"], l["p99"])' "$dir/run.json")
          cpu_us=$(awk -v t="$((after - before))" -v hz="$ticks_per_sec" -v m="$msgs" 'BEGIN {printf "%.2f", t / hz * 1e6 / m}')
          echo "$case_name $side run $run: $(printf '%.0f' "$rate") msgs/s, p50 $p50 us, p99 $p99 us, broker CPU $cpu_us us/msg"
          key="$case_name/$side"
          rates[$key]+="$rate "; p50s[$key]+="$p50 "; p99s[$key]+="$p99 "; cpus[$key]+="$cpu_us "
        done
      done
    done
  done
done

med() { tr ' ' '\n' <<<"$1" | grep . | median; }
echo
echo "size $size B, 8 connections x 32 in flight, medians of $runs runs of $secs s; A = $a_bin, B = $b_bin"
echo
echo "| headers | flush | shards | A msgs/s | B msgs/s | B/A | A p50/p99 ms | B p50/p99 ms | A CPU us/msg | B CPU us/msg | B/A |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for case_name in "${cases[@]}"; do
  read -r mode shards headers <<<"$case_name"
  a="$case_name/A"; b="$case_name/B"
  awk -v h="$headers" -v m="$mode" -v s="$shards" \
    -v ra="$(med "${rates[$a]}")" -v rb="$(med "${rates[$b]}")" \
    -v pa="$(med "${p50s[$a]}")" -v qa="$(med "${p99s[$a]}")" \
    -v pb="$(med "${p50s[$b]}")" -v qb="$(med "${p99s[$b]}")" \
    -v ca="$(med "${cpus[$a]}")" -v cb="$(med "${cpus[$b]}")" \
    'BEGIN {printf "| %s | %s | %s | %.0f | %.0f | %.2f | %.2f / %.2f | %.2f / %.2f | %.2f | %.2f | %.2f |\n",
      h, m, s, ra, rb, rb / ra, pa / 1000, qa / 1000, pb / 1000, qb / 1000, ca, cb, cb / ca}'
done
