#!/usr/bin/env bash
# Baselines for the storage benchmarks, measured in the same run on the same filesystem:
#   fio sequential buffered write bandwidth (io_uring, 64 KiB blocks, 4 in flight, preallocated)
#   fio fdatasync latency (4 KiB writes, each followed by fdatasync)
# then the store's own append latency/throughput benchmark. Three fio runs each; read medians.
#
#   benches/storage-baseline.sh [dir]      (default: the system temp dir)
set -euo pipefail
dir="${1:-${TMPDIR:-/tmp}}/ringmq-baseline.$$"
mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT
command -v fio >/dev/null || { echo "fio is needed: apt-get install fio" >&2; exit 1; }

for run in 1 2 3; do
  fio --name=seqwrite --directory="$dir" --rw=write --bs=64k --size=2g --ioengine=io_uring \
      --iodepth=4 --fallocate=native --output-format=terse --terse-version=3 \
    | awk -F';' -v run="$run" '{ printf "fio seqwrite 64KiB qd4 #%d   %8.1f MiB/s\n", run, $48/1024 }'
  rm -f "$dir"/seqwrite*
done
for run in 1 2 3; do
  fio --name=fdatasync --directory="$dir" --rw=write --bs=4k --size=64m --ioengine=sync \
      --fdatasync=1 --runtime=4 --time_based=0 --output-format=json \
    | python3 -c '
import json, sys
job = json.load(sys.stdin)["jobs"][0]
sync = job["sync"]["lat_ns"]["percentile"]
print("fio fdatasync 4KiB #%s        p50 %7.1f us   p99 %7.1f us" % (sys.argv[1], sync["50.000000"] / 1000, sync["99.000000"] / 1000))
' "$run"
  rm -f "$dir"/fdatasync*
done
RINGMQ_BENCH_DIR="$dir" cargo bench -q -p ringmq-benches --bench storage_latency
