#!/usr/bin/env bash
# Tern against Mosquitto, side by side on loopback.
#
# Builds the release `tern` and `tern-bench`, then for every scenario runs
# each broker in turn (tern, mosquitto, tern, mosquitto, ...) REPS times,
# each run on a freshly started broker with an empty store. The broker is
# pinned to CPU 0 and the load generator to CPU 1 (when there are two).
# Prints the medians, the Tern/Mosquitto ratio and the target of each
# scenario as a markdown table, and writes every run and the table as JSON.
#
# Usage: chaos-tests/bench/compare.sh [--quick] [--reps N] [--only a,b]
#                                     [--duration S] [--out FILE] [--baseline BIN]
#   --quick      1 rep, 2 s runs, smaller counts (about 3 minutes)
#   default      3 reps of 3 s runs, 9 for latency-qos1 and connections
#                (about 11 minutes on 2 cores)
#   --only       comma-separated scenario names (see SCENARIOS below)
#   --out        results JSON (default: $CARGO_TARGET_DIR/bench/compare-DATE.json)
#   --baseline BIN  compare with another `tern` binary instead of Mosquitto
#                (e.g. one built from the commit before a hot-path change):
#                the table then shows this build / BIN, without targets
#
# Equivalent settings: both brokers listen on 127.0.0.1 only, allow
# anonymous clients, send at most 256 unacknowledged QoS 1/2 messages per
# client, queue at most 200,000 per client, set TCP_NODELAY, and log only
# errors. Mosquitto persists (persistence true, autosave_interval 1800: its
# in-memory database is written every 30 min and at exit, never per
# message) in the persistent and retained scenarios; Tern always fsyncs
# what its persistent sessions must not lose before acknowledging it.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

REPS=3
DURATION=3
QUICK=0
ONLY=""
OUT=""
BASELINE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; REPS=1; DURATION=2 ;;
    --reps) REPS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --out) OUT=$2; shift ;;
    --baseline) BASELINE=$(realpath "$2"); shift ;;
    -h|--help) sed -n 2,28p "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tern/target}"
MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}
# shellcheck source=chaos-tests/bench/lib.sh
. chaos-tests/bench/lib.sh
# The broker each run of Tern is compared with.
OTHER=mosquitto
if [ -n "$BASELINE" ]; then
  [ -x "$BASELINE" ] || { echo "--baseline $BASELINE: not an executable" >&2; exit 2; }
  OTHER=baseline
else
  install_mosquitto
fi
build_release
prepare_host
make_workdir tern-compare
RUNS="$WORK/runs.jsonl"
: >"$RUNS"
PORT=18830

# start_broker NAME PERSIST: starts a fresh broker on a new port.
start_broker() {
  local name=$1 persist=$2
  PORT=$((PORT + 1))
  local dir="$WORK/$name-$PORT"
  mkdir -p "$dir"
  case "$name" in
    tern|baseline)
      cat >"$dir/tern.toml" <<EOF
data_dir = "$dir/data"
log_level = "error"
[[listeners]]
bind = "127.0.0.1:$PORT"
[mqtt]
max_inflight = 256
max_queued_messages = 200000
EOF
      local bin=$TERN
      [ "$name" = baseline ] && bin=$BASELINE
      # no HTTP endpoint (TERN_HTTP_BIND, which a baseline without one ignores)
      TERN_HTTP_BIND= $PIN_BROKER "$bin" --config "$dir/tern.toml" 2>"$dir/log" &
      ;;
    mosquitto)
      cat >"$dir/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
max_connections -1
max_inflight_messages 256
max_queued_messages 200000
set_tcp_nodelay true
persistence $persist
persistence_location $dir/
autosave_interval 1800
log_dest stderr
log_type error
EOF
      $PIN_BROKER "$MOSQUITTO" -c "$dir/mosquitto.conf" 2>"$dir/log" &
      ;;
  esac
  BROKER_PID=$!
  wait_port "$PORT"
}


if [ "$QUICK" = 1 ]; then
  PAIRS=200; FANIN_PUBS=50; COUNT=20000; CONNS=5000
else
  PAIRS=1000; FANIN_PUBS=100; COUNT=100000; CONNS=19000
fi
D=$DURATION
# No single tern-bench run may take longer than this (seconds).
BENCH_TIMEOUT=180
# After publishing, wait at most this long for the last copies: a broker
# that queued a backlog is measured on what it delivered by then.
DR="--drain-timeout 3"

# name | mosquitto persistence | tern-bench arguments
SCENARIOS="
fanin-qos0|false|fan-in --qos 0 --publishers $FANIN_PUBS --duration $D $DR
pairs-qos0|false|pairs --qos 0 --pairs $PAIRS --duration $D $DR
fanin-qos1|false|fan-in --qos 1 --publishers $FANIN_PUBS --duration $D $DR
pairs-qos1|false|pairs --qos 1 --pairs $PAIRS --duration $D $DR
pairs-qos1-mqtt5|false|pairs --qos 1 --mqtt 5 --pairs $PAIRS --duration $D $DR
pairs-qos2|false|pairs --qos 2 --pairs $PAIRS --duration $D $DR
fanout-100|false|fan-out --qos 0 --subscribers 100 --duration $D $DR
fanout-1000|false|fan-out --qos 0 --subscribers 1000 --duration $D $DR
pairs100-qos1|false|pairs --qos 1 --pairs 100 --duration $D $DR
latency-qos1|false|pairs --qos 1 --pairs 100 --duration $D $DR --rate @HALF_MOSQUITTO_pairs100-qos1
persistent-qos1|true|pairs --qos 1 --persistent --pairs 100 --duration $D $DR
persistent-queue|true|persistent-queue --count $COUNT --duration 60 --drain-timeout 30
retained|true|retained --count $COUNT --duration 60 --drain-timeout 30
connections|false|connections --connections $CONNS --subscribe --hold 20
"
# 100,000 connections need a descriptor limit above that in both processes.
if [ "$QUICK" = 0 ] && [ "$(ulimit -Hn)" -ge 110000 ]; then
  SCENARIOS="$SCENARIOS
connections-100k|false|connections --connections 100000 --connect-concurrency 512
"
fi

# name | metric | better | target (ratio Tern/Mosquitto)
TABLE="
fanin-qos0|delivered_rate|higher|1.5
pairs-qos0|delivered_rate|higher|1.5
fanin-qos1|delivered_rate|higher|1.5
pairs-qos1|delivered_rate|higher|1.5
pairs-qos1-mqtt5|delivered_rate|higher|1.5
pairs-qos2|delivered_rate|higher|
fanout-100|delivered_rate|higher|
fanout-1000|delivered_rate|higher|
pairs100-qos1|delivered_rate|higher|
latency-qos1|latency_us.p50|lower|
latency-qos1|latency_us.p99|lower|1.0
latency-qos1|latency_us.p999|lower|
pairs-qos1|broker_cpu_us_per_message|lower|
persistent-qos1|delivered_rate|higher|0.7
persistent-queue|fill_rate|higher|0.7
persistent-queue|drain_rate|higher|
retained|fill_rate|higher|
retained|drain_rate|higher|
connections|connections.broker_rss_per_connection|lower|1.0
connections|connections.connect_rate|higher|
connections-100k|connections.connected|higher|
"

# median_of SCENARIO BROKER METRIC: median of the metric over the runs so far.
median_of() {
  python3 - "$RUNS" "$1" "$2" "$3" <<'PY'
import json, sys, statistics
runs, scen, broker, metric = sys.argv[1:]
vals = []
for line in open(runs):
    r = json.loads(line)
    if r["name"] == scen and r["broker"] == broker:
        v = r["report"]
        for k in metric.split("."):
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            vals.append(v)
print(statistics.median(vals) if vals else "")
PY
}

echo "== machine: $(nproc --all) CPUs, $(uname -r), load: $(cut -d' ' -f1-3 /proc/loadavg)"
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
SCEN_START=$SECONDS
START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
while IFS='|' read -r name persist args; do
  [ -z "$name" ] && continue
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then continue; fi
  if [[ "$args" == *@HALF_MOSQUITTO_* ]]; then
    ref=${args##*@HALF_MOSQUITTO_}
    max=$(median_of "$ref" "$OTHER" delivered_rate)
    if [ -z "$max" ]; then echo "-- $name: needs $ref first, skipped"; continue; fi
    rate=$(python3 -c "print(round($max / 2))")
    args="${args%@HALF_MOSQUITTO_*}$rate"
  fi
  # The latency percentiles and the RSS per connection move the most from
  # run to run (single-run p99s of 2-5 ms for both brokers; RSS in steps of
  # mimalloc's 2 MiB commits, ~110 B per connection at 19,000): three times
  # the reps, so that their medians compare the brokers, not the noise.
  reps=$REPS
  case "$name" in latency-qos1 | connections) reps=$((REPS * 3)) ;; esac
  for rep in $(seq 1 "$reps"); do
    for broker in tern $OTHER; do
      start_broker "$broker" "$persist"
      # shellcheck disable=SC2086
      # tern-bench bounds every phase itself; `timeout` is the backstop.
      json=$(timeout -k 5 "$BENCH_TIMEOUT" $PIN_BENCH "$BENCH" $args --addr "127.0.0.1:$PORT" \
        --broker-pid "$BROKER_PID" --label "$broker" --quiet || true)
      stop_broker
      if [ -z "$json" ]; then json='{"errors":["tern-bench printed nothing"]}'; fi
      printf '{"name":"%s","broker":"%s","rep":%s,"args":"%s","report":%s}\n' \
        "$name" "$broker" "$rep" "$args" "$json" >>"$RUNS"
      python3 - "$json" "$name" "$broker" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); name, broker = sys.argv[2:]
c = r.get("connections") or {}
if c:
    what = "rss/conn %s B, %s connects/s" % (round(c.get("broker_rss_per_connection") or 0), round(c.get("connect_rate") or 0))
else:
    lat = r.get("latency_us") or {}
    what = "delivered %s msg/s, p99 %s us, lost %s, dup %s" % (round(r.get("delivered_rate") or 0), lat.get("p99"), r.get("lost"), r.get("duplicates"))
    if r.get("fill_rate") is not None:
        what += ", fill %s/s, drain %s/s" % (round(r["fill_rate"]), round(r.get("drain_rate") or 0))
extra = "" if r.get("ok", False) else "  NOT OK %s" % r.get("errors", [])[:2]
print("   %-18s %-9s %s%s" % (name, broker, what, extra), flush=True)
PY
    done
  done
done <<<"$SCENARIOS"
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== scenarios took $((SECONDS - SCEN_START)) s"

if [ -z "$OUT" ]; then
  mkdir -p "$CARGO_TARGET_DIR/bench"
  OUT="$CARGO_TARGET_DIR/bench/compare-$(date -u +%Y%m%dT%H%M%SZ).json"
fi
SCEN_FILE="$WORK/table.txt"
printf '%s\n' "$TABLE" >"$SCEN_FILE"
python3 - "$RUNS" "$SCEN_FILE" "$OUT" "$START" "$START_LOAD" "$END_LOAD" "$REPS" "$DURATION" "$OTHER" <<'PY'
import json, sys, statistics, platform, subprocess
runs_file, scen_file, out, start, load0, load1, reps, duration, other = sys.argv[1:]
# Targets are ratios to Mosquitto: none against another build of Tern.
with_targets = other == "mosquitto"
runs = [json.loads(l) for l in open(runs_file)]
def metric(r, m):
    v = r["report"]
    for k in m.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    return v
rows = []
for line in open(scen_file):
    line = line.strip()
    if not line:
        continue
    name, m, better, target = line.split("|", 3)
    med = {}
    for b in ("tern", other):
        vals = [metric(r, m) for r in runs if r["name"] == name and r["broker"] == b]
        vals = [v for v in vals if v is not None]
        med[b] = statistics.median(vals) if vals else None
    if med["tern"] is None and med[other] is None:
        continue
    ratio = None
    if med["tern"] is not None and med[other]:
        ratio = med["tern"] / med[other]
    if not with_targets:
        target = ""
    met = None
    if target and ratio is not None:
        met = ratio >= float(target) if better == "higher" else ratio <= float(target)
    bad = sum(1 for r in runs if r["name"] == name and not r["report"].get("ok", False))
    rows.append(dict(name=name, metric=m, better=better, tern=med["tern"], other=med[other],
                     ratio=ratio, target=(("%s%s" % (">=" if better == "higher" else "<=", target)) if target else ""),
                     met=met, runs_not_ok=bad))
def fmt(v):
    if v is None: return "-"
    if isinstance(v, float) and v >= 100: return "%.0f" % v
    if isinstance(v, float): return "%.2f" % v
    return str(v)
UNITS = {"delivered_rate": "msg/s", "fill_rate": "msg/s", "drain_rate": "msg/s",
         "latency_us.p50": "us", "latency_us.p99": "us", "latency_us.p999": "us",
         "broker_cpu_us_per_message": "broker CPU us/msg",
         "connections.broker_rss_per_connection": "B RSS/conn",
         "connections.connect_rate": "conn/s", "connections.connected": "conns"}
print()
label = "Mosquitto" if with_targets else "baseline"
print("| scenario | metric | Tern | %s | Tern/%s | target | met |" % (label, label))
print("|---|---|---:|---:|---:|---|---|")
for r in rows:
    label = r["metric"].split(".")[-1] + " (" + UNITS.get(r["metric"], "") + ")"
    note = " (%d runs not ok)" % r["runs_not_ok"] if r["runs_not_ok"] else ""
    print("| %s | %s | %s | %s | %s | %s | %s%s |" % (r["name"], label, fmt(r["tern"]), fmt(r["other"]),
          fmt(r["ratio"]), r["target"], {True: "yes", False: "NO", None: ""}[r["met"]], note))
try:
    cpu = [l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name")][0]
except Exception:
    cpu = platform.processor()
doc = dict(compared_with=other, started=start, load_start=load0, load_end=load1, reps=int(reps), duration_s=float(duration),
           kernel=platform.release(), cpu=cpu, rows=rows, runs=runs)
json.dump(doc, open(out, "w"), indent=1)
print("\nload average at start %s, at end %s; results: %s" % (load0, load1, out))
PY
