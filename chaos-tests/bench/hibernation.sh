#!/usr/bin/env bash
# Idle connections: memory per connection and the first message's latency,
# Tern with hibernation (mqtt.hibernate_after_secs = 10, the default), Tern
# without (0) and Mosquitto, side by side in one run (issue 15).
#
# Each run starts a fresh broker, opens N connections (Keep Alive 60), each
# subscribing to a topic of its own at QoS 1, holds them for 20 s (Tern's
# sessions fall asleep after 10 s of silence), reads the broker's RSS
# growth per connection, then publishes one QoS 1 message to 1,000 of the
# connections, one at a time, then a second one to the same connection
# once the first was acknowledged (the session is awake by then), and
# reports both latencies (publish to arrival). The wake cost is read
# per connection, first minus second, on a broker that hibernates; the
# same difference on Tern without hibernation and on Mosquitto shows what
# a first message after a long silence costs anyway.
#
# Usage: chaos-tests/bench/hibernation.sh [--reps N] [--connections LIST]
#                                         [--mqtt LIST] [--out FILE]
#   --reps         runs per broker and case (default 3; medians reported)
#   --connections  comma-separated counts (default 10000,19000)
#   --mqtt         comma-separated protocol versions (default 3.1.1,5)
#   --no-pin       the broker not pinned to CPU 0 (its threads then share
#                  both CPUs with the bench; pinned, a wake also waits for
#                  the broker's other threads on its one CPU)
#
# 100,000 connections on one node (where the open-files limit allows it;
# this machine's is 20,000): the same command with
#   --connections 100000
# after `ulimit -Hn 1048576`; tern-bench spreads them over 127.0.0.x source
# addresses (one per 20,000) so that the client ports do not run out.
set -euo pipefail
cd "$(dirname "$0")/../.."

REPS=3
COUNTS=10000,19000
VERSIONS=3.1.1,5
OUT=""
NO_PIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) REPS=$2; shift 2 ;;
    --connections) COUNTS=$2; shift 2 ;;
    --mqtt) VERSIONS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-pin) NO_PIN=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tern/target}
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
# shellcheck source=chaos-tests/bench/lib.sh
. chaos-tests/bench/lib.sh
install_mosquitto
build_release
prepare_host
[ -n "${NO_PIN:-}" ] && PIN_BROKER=""
make_workdir tern-hibernation
OUT=${OUT:-$CARGO_TARGET_DIR/bench/hibernation-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
PORT=19830

# start_broker NAME: tern (hibernating), tern-awake (hibernation off) or mosquitto.
start_broker() {
  PORT=$((PORT + 1))
  local dir="$WORK/$1-$PORT"
  mkdir -p "$dir"
  case "$1" in
    tern | tern-awake)
      local after=10
      [ "$1" = tern-awake ] && after=0
      cat >"$dir/tern.toml" <<EOF
data_dir = "$dir/data"
log_level = "error"
[[listeners]]
bind = "127.0.0.1:$PORT"
[mqtt]
hibernate_after_secs = $after
EOF
      METRICS="--broker-metrics 127.0.0.1:$((PORT + 1000))"
      TERN_HTTP_BIND="127.0.0.1:$((PORT + 1000))" $PIN_BROKER "$TERN" --config "$dir/tern.toml" 2>"$dir/log" &
      ;;
    mosquitto)
      METRICS=""
      cat >"$dir/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
max_connections -1
set_tcp_nodelay true
log_dest stderr
log_type error
EOF
      $PIN_BROKER "$MOSQUITTO" -c "$dir/mosquitto.conf" 2>"$dir/log" &
      ;;
  esac
  BROKER_PID=$!
  wait_port "$PORT"
}


echo "== machine: $(nproc --all) CPUs, $(uname -r), $(mosquitto -h 2>/dev/null | head -1)"
for n in ${COUNTS//,/ }; do
  for v in ${VERSIONS//,/ }; do
    for rep in $(seq 1 "$REPS"); do
      for broker in tern tern-awake mosquitto; do
        start_broker "$broker"
        # shellcheck disable=SC2086
        line=$(timeout -k 5 300 $PIN_BENCH "$BENCH" connections --addr "127.0.0.1:$PORT" \
          --connections "$n" --mqtt "$v" --subscribe --hold 20 --wake-sample 1000 $METRICS \
          --broker-pid "$BROKER_PID" --label "$broker" --quiet 2>/dev/null || true)
        stop_broker
        [ -z "$line" ] && { echo "-- $broker $n $v rep $rep: no report"; continue; }
        printf '{"broker":"%s","connections":%s,"mqtt":"%s","rep":%s,"report":%s}\n' \
          "$broker" "$n" "$v" "$rep" "$line" >>"$OUT"
        python3 - "$line" "$broker" "$n" "$v" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); c = r.get("connections") or {}; l = r.get("latency_us") or {}
l2 = c.get("second_latency_us") or {}; d = c.get("first_minus_second_us") or {}
print(f"-- {sys.argv[2]:<10} {sys.argv[3]:>6} MQTT {sys.argv[4]:<5} "
      f"{c.get('connected')} open, {c.get('broker_rss_per_connection') or 0:.0f} B/conn, "
      f"first message p50/p99 {l.get('p50')}/{l.get('p99')} us, second {l2.get('p50')}/{l2.get('p99')} us, "
      f"first - second p50/p99 {d.get('p50')}/{d.get('p99')} us, errors {len(r.get('errors', []))}")
w = c.get("broker_wakes")
if w:
    print(f"   wakes in the broker: {w['wakes']}, mean {w['mean_us']:.1f} us, "
          f"p50 <= {w['p50_le_us']} us, p99 <= {w['p99_le_us']} us, "
          f"{100 * w['within_50us']:.2f}% within 50 us")
PY
      done
    done
  done
done

python3 - "$OUT" <<'PY'
import json, sys, statistics
runs = [json.loads(l) for l in open(sys.argv[1])]
def med(b, n, v, path):
    vals = []
    for r in runs:
        if (r["broker"], r["connections"], r["mqtt"]) != (b, n, v):
            continue
        x = r["report"]
        for k in path:
            x = x.get(k) if isinstance(x, dict) else None
        if x is not None:
            vals.append(x)
    return statistics.median(vals) if vals else None
cases = sorted({(r["connections"], r["mqtt"]) for r in runs})
print()
print("| connections | MQTT | Tern B/conn | Tern without hibernation B/conn | Mosquitto B/conn | Tern / Mosquitto | first message p99 asleep / awake / Mosquitto (us) | first - second p50 / p99, Tern (us) | same, Tern without hibernation (us) | same, Mosquitto (us) | wakes in Tern: mean (us), p99 bucket (us), within 50 us |")
print("|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---|")
for n, v in cases:
    t = med("tern", n, v, ["connections", "broker_rss_per_connection"])
    a = med("tern-awake", n, v, ["connections", "broker_rss_per_connection"])
    m = med("mosquitto", n, v, ["connections", "broker_rss_per_connection"])
    tp = med("tern", n, v, ["latency_us", "p99"])
    ap = med("tern-awake", n, v, ["latency_us", "p99"])
    mp = med("mosquitto", n, v, ["latency_us", "p99"])
    f = lambda x: "-" if x is None else f"{x:,.0f}"
    ratio = f"{t / m:.2f}x" if t and m else "-"
    def diff(b):
        p50 = med(b, n, v, ["connections", "first_minus_second_us", "p50"])
        p99 = med(b, n, v, ["connections", "first_minus_second_us", "p99"])
        return "-" if p50 is None or p99 is None else f"{p50:+,.0f} / {p99:+,.0f}"
    wakes = [r["report"]["connections"]["broker_wakes"] for r in runs
             if (r["broker"], r["connections"], r["mqtt"]) == ("tern", n, v)
             and (r["report"].get("connections") or {}).get("broker_wakes")]
    if wakes:
        mean = statistics.median(w["mean_us"] for w in wakes)
        p99 = max(w["p99_le_us"] or float("inf") for w in wakes)
        within = min(w["within_50us"] for w in wakes)
        wake = f"{mean:.1f}, <= {p99:g}, {100 * within:.2f}% (worst of {len(wakes)})"
    else:
        wake = "-"
    print(f"| {n:,} | {v} | {f(t)} | {f(a)} | {f(m)} | {ratio} | {f(tp)} / {f(ap)} / {f(mp)} | {diff('tern')} | {diff('tern-awake')} | {diff('mosquitto')} | {wake} |")
print(f"\nruns: {sys.argv[1]}")
PY
