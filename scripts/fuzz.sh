#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time: TERN_FUZZ_SECONDS
# each (default 60), starting from the checked-in seeds (fuzz/seeds for
# `decode`, fuzz/seeds-TARGET for the others) and the corpus kept in
# fuzz/corpus/TARGET from earlier runs (not committed). Exits non-zero on the
# first crash, leak, hang (an input running over 10 s) or panic; libFuzzer
# prints the input and cargo-fuzz where it saved it (fuzz/artifacts/TARGET).
#
# Uses a nightly toolchain when one is installed, else the stable one with
# RUSTC_BOOTSTRAP=1; installs cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${TERN_FUZZ_SECONDS:-60}"
# Sanitizer builds must not share a target directory with normal builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tern/target}-fuzz"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

targets=$("${fuzz[@]}" list)
for target in $targets; do
  seeds="fuzz/seeds-$target"
  [ "$target" = decode ] && seeds="fuzz/seeds"
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  dirs=("$corpus")
  [ -d "$seeds" ] && dirs+=("$seeds")
  echo "== fuzz $target for ${seconds}s"
  "${fuzz[@]}" run "$target" "${dirs[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
echo "== fuzzing found nothing"
