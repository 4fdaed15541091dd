#!/usr/bin/env bash
# Runs every cargo-fuzz target of the wire protocol for a bounded time (default 60 s each) and prints the
# executions of each. Exits non-zero on the first crash; its input is left in artifacts/TARGET/ (turn it into
# a regression test in protocol/src/codec.rs or task/src/pipeline.rs, then fix). Needs cargo-fuzz
# (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP lets the stable toolchain take the sanitizer flags.
#   protocol/fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build
total=0
for target in frames envelope task_json template; do
  mkdir -p "corpus/$target"
  seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  log="$(mktemp)"
  if ! cargo fuzz run "$target" "corpus/$target" "${seeds[@]}" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target CRASHED (input in protocol/fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)"
  total=$((total + runs))
  echo "fuzz: $target: $runs executions in ${secs} s, no crash"
  rm -f "$log"
done
echo "fuzz: $total executions in all"
