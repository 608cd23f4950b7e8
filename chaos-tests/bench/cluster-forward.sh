#!/usr/bin/env bash
# Forwarding between nodes: a 3-node cluster on loopback, fan-in QoS 1 with
# 20 publishers on node 1 and one persistent subscriber on node 3, so every
# message crosses a forward link and is stored on node 3 before its PUBACK.
#
#   MODE=up    as above;
#   MODE=noreplica  as `up`, with `session_replicas = 1`: node 3 stores the
#              subscriber's copies on its own disk only (the cost of session
#              replicas, issue 12, is `up` against this);
#   MODE=down  a second persistent session on node 2 matches too, and node 2
#              is stopped (SIGSTOP) until node 1 counts it down: each copy
#              for it is kept on node 1's disk before the PUBACK (kept
#              copies, docs/ARCHITECTURE.md 5.2), until forward_queue_limit
#              copies wait for node 2 (then publishers are refused).
#
# Usage: chaos-tests/bench/cluster-forward.sh [--reps N] [--duration S]
#                                             [--baseline BIN] [--modes up,down]
#   Builds the release `tern` and `tern-bench`; with --baseline, each rep
#   runs BIN then this build, so the two are compared in the same run.
#   Prints one line per run (acknowledged and delivered rate, latency
#   percentiles, node 1's CPU per message) and writes the JSON lines to
#   $CARGO_TARGET_DIR/bench/cluster-forward-DATE.jsonl. Needs
#   mosquitto_sub (Debian: mosquitto-clients) to wait for the nodes.
#   Build BIN in its own CARGO_TARGET_DIR: cargo hashes the workspace's own
#   crates by their path inside the workspace, so two worktrees sharing one
#   target dir can take each other's `release/tern` as up to date.
set -euo pipefail
cd "$(dirname "$0")/../.."

REPS=3
DURATION=8
BASELINE=""
MODES="up,down"
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) REPS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --baseline) BASELINE="$2"; shift 2 ;;
    --modes) MODES="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tern/target}"
cargo build --release --locked -q -p broker --bin tern -p chaos-tests --bin tern-bench
TERN="$CARGO_TARGET_DIR/release/tern"
BENCH="$CARGO_TARGET_DIR/release/tern-bench"
mkdir -p "$CARGO_TARGET_DIR/bench"
OUT="$CARGO_TARGET_DIR/bench/cluster-forward-$(date +%Y%m%d-%H%M%S).jsonl"

pids=()
root=""
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$root" ] && rm -rf "$root"
  pids=()
  root=""
}
trap cleanup EXIT

# run BIN LABEL MODE
run() {
  local bin=$1 label=$2 mode=$3
  root=$(mktemp -d)
  for id in 1 2 3; do
    cat > "$root/n$id.toml" <<EOF
[cluster]
node_id = $id
listen = "127.0.0.1:1970$id"
seeds = ["1=127.0.0.1:19701", "2=127.0.0.1:19702", "3=127.0.0.1:19703"]
forward_timeout_secs = 5
session_replicas = $([ "$mode" = noreplica ] && echo 1 || echo 2)
EOF
    "$bin" --data-dir "$root/d$id" --bind "127.0.0.1:1880$id" --ws-bind 127.0.0.1:0 \
      --http-bind "" --log-level warn --config "$root/n$id.toml" 2> "$root/n$id.log" &
    pids+=($!)
  done
  # each node takes a client once it has caught up (mosquitto_sub exits 27
  # when -W times out on a connected subscription)
  for id in 1 2 3; do
    local rc=0
    for _ in $(seq 1 100); do
      rc=0
      mosquitto_sub -h 127.0.0.1 -p "1880$id" -i "probe$id" -t probe -q 1 -W 1 >/dev/null 2>&1 || rc=$?
      [ "$rc" -eq 27 ] && break
      sleep 0.3
    done
    [ "$rc" -eq 27 ] || { echo "node $id did not take a client" >&2; cat "$root/n$id.log" >&2; exit 1; }
  done
  if [ "$mode" = down ]; then
    mosquitto_sub -h 127.0.0.1 -p 18802 -i down-sub -c -q 1 -t 'bench/#' -W 1 >/dev/null 2>&1 || true
    sleep 1
    kill -STOP "${pids[1]}"
    sleep 5 # node 1 counts node 2 down after 3 s without contact
  fi
  local out
  out=$("$BENCH" fan-in --addr 127.0.0.1:18801 --sub-addr 127.0.0.1:18803 --qos 1 \
    --persistent --publishers 20 --duration "$DURATION" --settle 0.5 --broker-pid "${pids[0]}" \
    --quiet --label "$label-$mode") || true # non-zero when any copy is missing: `down` refuses publishes past the limit; the line below shows acked-not-delivered
  echo "$out" >> "$OUT"
  echo "$out" | python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
l = d.get("latency_us") or {}
print("%-14s acked %7d  acked/s %6.0f  delivered/s %6.0f  p50 %6s us  p99 %6s us  node-1 CPU %5.2f us/msg  acked-not-delivered %d  dup %d  %s" % (
    d["label"], d["acked"], d["publish_rate"], d["delivered_rate"], l.get("p50"), l.get("p99"),
    d.get("broker_cpu_us_per_message") or 0, max(0, d["acked"] - d["unique"]), d["duplicates"],
    "; ".join(d["errors"][:1])))'
  cleanup
}

for _ in $(seq 1 "$REPS"); do
  for mode in ${MODES//,/ }; do
    [ -n "$BASELINE" ] && run "$BASELINE" baseline "$mode"
    run "$TERN" tern "$mode"
  done
done
echo "runs: $OUT"
