#!/usr/bin/env bash
# Starts a pm-scheduler on a fresh data folder, runs pm-loadtest against it, stops it.
#
#   bench/run-e2e.sh [--bin PATH] [--sched "SCHEDULER ARGS"] -- PM-LOADTEST SCENARIO ARGS...
#
# Example (the figures in docs/benchmarks.md):
#   cargo build --release -p pm-scheduler -p pm-loadtest
#   bench/run-e2e.sh --sched "--fsync always" -- max-rate --duration 8 --warmup 2
#   bench/run-e2e.sh --sched "--fsync always" -- fixed-rate --rate 20000 --duration 10 --warmup 2
# Prints pm-loadtest's JSON report. DATA_DIR=... keeps the data folder somewhere else (default: mktemp).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/release/pm-scheduler"
sched=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --sched) sched="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [--bin PATH] [--sched ARGS] -- E2E ARGS..." >&2; exit 64 ;;
  esac
done
data="${DATA_DIR:-$(mktemp -d)}"
out="$(mktemp)"
# shellcheck disable=SC2086 # word splitting of the scheduler arguments is intended
PM_HTTP_LISTEN="${PM_HTTP_LISTEN:-127.0.0.1:0}" "$bin" --listen 127.0.0.1:0 --data "$data" $sched >"$out" 2>"$out.err" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$out" "$out.err"; [[ -n "${DATA_DIR:-}" ]] || rm -rf "$data"' EXIT
for _ in $(seq 200); do grep -q "listening on" "$out" && break; sleep 0.05; done
addr="$(sed -n 's/.*listening on //p' "$out" | head -1)"
[[ -n "$addr" ]] || { echo "scheduler did not start:" >&2; cat "$out.err" >&2; exit 1; }
"$root/target/release/pm-loadtest" --target "pm://$addr" "$@"
