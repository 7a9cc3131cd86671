#!/usr/bin/env bash
# A/B of two ringmq-broker builds on this machine, in one run: the same ringmq-bench load against
# each broker in turn, alternating A and B so drift on a shared machine hits both alike.
# Reports per case the median msgs/s and the median broker CPU per message (user + system time of
# the broker process from /proc, divided by the messages of the run), which noise moves far less
# than msgs/s. HEADERS=binary (default) or json (as the Java client sends them).
#
#   benches/ab-broker.sh A_BIN_DIR B_BIN_DIR [dir]
#   RUNS=3 SECS=5 SHARDS=2 SIZE=1024 HEADERS=json benches/ab-broker.sh old/target/release target/release
#
# Each BIN_DIR holds a ringmq-broker; ringmq-bench is taken from B_BIN_DIR. Build a baseline with
#   git worktree add /tmp/base REV && cargo build --release -p ringmq-broker --manifest-path /tmp/base/Cargo.toml
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 2 ]] || { sed -n '2,13p' "$0"; exit 2; }
a_bin="$1"; b_bin="$2"
runs="${RUNS:-3}"
secs="${SECS:-5}"
shards="${SHARDS:-2}"
size="${SIZE:-1024}"
headers="${HEADERS:-binary}"
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

declare -A rates cpus
for mode in ASYNC_FLUSH SYNC_FLUSH; do
  for run in $(seq 1 "$runs"); do
    for side in A B; do
      bin="$a_bin"; [[ $side == B ]] && bin="$b_bin"
      store="$dir/store-$side-$mode-$run"
      start_broker "$bin" "$mode" "$store" "$dir/broker"
      before=$(cpu_ticks)
      "$b_bin/ringmq-bench" produce --broker "$addr" --size "$size" --headers "$headers" --topic "AB$mode" \
        --duration-secs "$secs" --warmup-secs 0 --json "$dir/run.json" >/dev/null 2>&1
      after=$(cpu_ticks)
      stop_broker
      rm -rf "$store"
      read -r msgs rate < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["messages"], s["msgs_per_sec"])' "$dir/run.json")
      cpu_us=$(awk -v t="$((after - before))" -v hz="$ticks_per_sec" -v m="$msgs" 'BEGIN {printf "%.2f", t / hz * 1e6 / m}')
      echo "$mode $side run $run: $(printf '%.0f' "$rate") msgs/s, broker CPU $cpu_us us/msg"
      rates[$mode$side]+="$rate "
      cpus[$mode$side]+="$cpu_us "
    done
  done
done

echo
echo "| case | A msgs/s | B msgs/s | B/A | A CPU us/msg | B CPU us/msg | B/A |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for mode in ASYNC_FLUSH SYNC_FLUSH; do
  ra=$(tr ' ' '\n' <<<"${rates[${mode}A]}" | grep . | median)
  rb=$(tr ' ' '\n' <<<"${rates[${mode}B]}" | grep . | median)
  ca=$(tr ' ' '\n' <<<"${cpus[${mode}A]}" | grep . | median)
  cb=$(tr ' ' '\n' <<<"${cpus[${mode}B]}" | grep . | median)
  awk -v m="$mode $size B $headers" -v ra="$ra" -v rb="$rb" -v ca="$ca" -v cb="$cb" \
    'BEGIN {printf "| %s | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f |\n", m, ra, rb, rb / ra, ca, cb, cb / ca}'
done
