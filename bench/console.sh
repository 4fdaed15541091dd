#!/usr/bin/env bash
# What the operating API costs and how fast it answers with many live tasks (docs/benchmarks.md):
# fills a fresh scheduler with N tasks that nobody consumes, then prints its resident memory and the time of
# listing requests over HTTP (median of 9 of each, curl's time_total).
#
#   cargo build --release -p pm-scheduler -p pm-loadtest
#   bench/console.sh [--bin PATH] [--tasks N]        (default: target/release/pm-scheduler, 1000000)
#
# Run it with the binary of two versions to compare their memory per live task (same N, same machine).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/release/pm-scheduler"
tasks=1000000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --tasks) tasks="$2"; shift 2 ;;
    *) echo "usage: $0 [--bin PATH] [--tasks N]" >&2; exit 64 ;;
  esac
done
data="$(mktemp -d)"
out="$(mktemp)"
"$bin" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data "$data" --fsync never >"$out" 2>"$out.err" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$data" "$out" "$out.err"' EXIT
for _ in $(seq 200); do grep -q "http listening on" "$out" && break; sleep 0.05; done
addr="$(sed -n 's/^listening on //p' "$out" | head -1)"
http="$(sed -n 's/.*http listening on //p' "$out" | head -1)"
[[ -n "$addr" && -n "$http" ]] || { echo "scheduler did not start:" >&2; cat "$out" "$out.err" >&2; exit 1; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
base_kb="$(rss)"
"$root/target/release/pm-loadtest" --target "pm://$addr" max-rate --consumers 0 --total "$tasks" \
  --duration 120 --warmup 0 --drain 0 --output /dev/null >/dev/null 2>&1 || true
sleep 2
full_kb="$(rss)"
ready="$(curl -s "http://$http/api/queues" | python3 -c 'import json,sys; print(sum(q["ready"] for q in json.load(sys.stdin)["queues"]))')"
echo "live tasks: $ready   rss: ${base_kb} kB empty, ${full_kb} kB full, $(( (full_kb - base_kb) * 1024 / (ready > 0 ? ready : 1) )) bytes/task"
queue="$(curl -s "http://$http/api/queues" | python3 -c 'import json,sys; print(json.load(sys.stdin)["queues"][0]["queue"])')"
time_of() {
  local url="$1" t=()
  for _ in $(seq 9); do t+=("$(curl -s -o /dev/null -w '%{time_total}' "http://$http$url")"); done
  printf '%s\n' "${t[@]}" | sort -n | sed -n 5p
}
cursor="$(curl -s "http://$http/api/tasks?limit=100" | python3 -c 'import json,sys; print(json.load(sys.stdin)["nextCursor"])')"
for url in "/api/tasks?limit=100" "/api/tasks?limit=100&queue=$queue" "/api/tasks?limit=100&state=ready" \
  "/api/tasks?limit=100&cursor=$((cursor / 2))" "/api/tasks?limit=1000" "/api/tasks?limit=100&state=leased" \
  "/api/tasks?limit=100&key=no-such-key" "/api/queues"; do
  echo "$(time_of "$url") s  GET $url"
done
