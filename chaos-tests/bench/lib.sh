# Shared by the bench scripts (compare.sh, hibernation.sh): sourced, not run.

# install_mosquitto: Debian's mosquitto, unless $MOSQUITTO runs already.
install_mosquitto() {
  [ -x "$MOSQUITTO" ] && return 0
  echo "== installing mosquitto"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto >/dev/null
}

# build_release: the release `tern` and `tern-bench`, as $TERN and $BENCH.
build_release() {
  echo "== cargo build --release (tern, tern-bench)"
  cargo build --release --locked -p broker -p chaos-tests --bins -q
  TERN="$CARGO_TARGET_DIR/release/tern"
  BENCH="$CARGO_TARGET_DIR/release/tern-bench"
}

# prepare_host: many descriptors (many connections, in the brokers as in the
# bench); the broker on CPU 0 and the load generator on CPU 1 when there are
# two ($PIN_BROKER, $PIN_BENCH).
prepare_host() {
  ulimit -Hn 1048576 2>/dev/null || true
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  PIN_BROKER=""; PIN_BENCH=""
  if [ "$(nproc --all)" -ge 2 ]; then PIN_BROKER="taskset -c 0"; PIN_BENCH="taskset -c 1"; fi
}

# make_workdir NAME: $WORK, removed at exit with the broker still running
# ($BROKER_PID) stopped.
make_workdir() {
  WORK=$(mktemp -d "/tmp/$1.XXXXXX")
  BROKER_PID=""
  trap 'if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT
}

# wait_port PORT: until something listens on 127.0.0.1:PORT (10 s at most).
wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "broker did not listen on port $1" >&2
  return 1
}

# stop_broker: SIGTERM, then SIGKILL if it has not exited within 20 s.
stop_broker() {
  kill -TERM "$BROKER_PID" 2>/dev/null || true
  for _ in $(seq 1 200); do
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$BROKER_PID" 2>/dev/null || true
  wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=""
}
