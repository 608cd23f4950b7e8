#!/usr/bin/env bash
# Runs the chaos suite: builds `tern` and `tern-chaos` (debug profile, the
# one `cargo test` builds), then runs tern-chaos as root in a private
# network and mount namespace (`unshare --net --mount`): nodes on
# 127.0.0.11.., iptables rules on that namespace's loopback, one tmpfs per
# node's data, all gone when the run ends.
#
#   chaos-tests/run.sh --quick                 every fault once, for CI
#   chaos-tests/run.sh --nemesis partition,kill --nodes 3 --time 300 --seed 7
#
# Other arguments go to tern-chaos (`--help` lists them). Without --seed
# the seed is the current time, printed first so the run can be repeated.
# History and report: chaos-tests/out/<seed>/ (history.json, report.html),
# or --out DIR. Needs root, iptables and libfaketime (Debian: iptables,
# faketime); exits non-zero on any violation.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "chaos-tests/run.sh needs root (network namespace, iptables, tmpfs mounts)" >&2
  exit 2
fi
for tool in unshare iptables ip; do
  command -v "$tool" >/dev/null || { echo "missing $tool (Debian: util-linux, iptables, iproute2)" >&2; exit 2; }
done
[ -f /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] ||
  { echo "missing libfaketime (Debian: faketime)" >&2; exit 2; }

args=("$@")
seed=""
out=""
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --seed) seed="${args[$((i + 1))]}" ;;
    --seed=*) seed="${args[$i]#--seed=}" ;;
    --out|--out=*) out=set ;;
  esac
done
if [ -z "$seed" ]; then
  seed="$(date +%s)"
  args+=(--seed "$seed")
fi
[ -n "$out" ] || args+=(--out "chaos-tests/out/$seed")

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tern/target}"
cargo build --locked -q -p broker --bin tern -p chaos-tests --bin tern-chaos
bin="$CARGO_TARGET_DIR/debug"

exec unshare --net --mount --propagation private -- bash -c '
  set -e
  ip link set lo up
  exec "$0" --tern "$1" "${@:2}"
' "$bin/tern-chaos" "$bin/tern" "${args[@]}"
