# Sourced by the benchmark scripts: one ringmq-broker process at a time, started on ephemeral
# ports with an embedded NameServer and stopped by its PID (also when the script exits).
#
#   start_broker BIN_DIR FLUSH_MODE STORE_DIR LOG_PREFIX [extra broker flags...]
#     sets $broker_pid and $addr (the client address), or prints the log and exits 1
#   stop_broker
#   stop_broker_quietly        (for an EXIT trap: never fails)
# Uses $shards (empty: the broker's default).

broker_pid=""

start_broker() {
  local bin_dir="$1" mode="$2" store="$3" log_prefix="$4"
  shift 4
  : >"$log_prefix.out"
  "$bin_dir/ringmq-broker" --store-dir "$store" --listen-port 0 --embedded-namesrv-port 0 \
    ${shards:+--shards "$shards"} --flush-disk-type "$mode" "$@" >"$log_prefix.out" 2>"$log_prefix.log" &
  broker_pid=$!
  for _ in $(seq 1 200); do
    addr=$(sed -n 's/^ringmq-broker listening on //p' "$log_prefix.out")
    [[ -n "$addr" ]] && return 0
    sleep 0.1
  done
  echo "broker did not start; log:" >&2; cat "$log_prefix.log" >&2; exit 1
}

stop_broker() {
  kill -TERM "$broker_pid"; wait "$broker_pid" || true; broker_pid=""
}

stop_broker_quietly() {
  if [[ -n "$broker_pid" ]]; then kill -TERM "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; fi
  broker_pid=""
}
