#!/usr/bin/env bash
# Trivial pipelines (`true`) through a real pm-scheduler and pm-agent: submits N tasks in one `pmctl submit`
# of a JSON array (it returns once they are durable), and times until nothing is ready, delayed or leased
# (a queue with nothing left drops out of the stats). Prints one JSON line.
#
#   bench/agent-throughput.sh [--tasks N] [--concurrency C] [--agent PATH] [--pod]
#
# --pod runs the step on a `pm-agent exec` executor over a unix socket instead of locally.
# Build first: cargo build --release -p pm-scheduler -p pm-agent -p pmctl
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rel="$root/target/release"
agent="$rel/pm-agent"
tasks=2000 conc=1 pod=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tasks) tasks="$2"; shift 2 ;;
    --concurrency) conc="$2"; shift 2 ;;
    --agent) agent="$2"; shift 2 ;;
    --pod) pod=1; shift ;;
    *) echo "usage: $0 [--tasks N] [--concurrency C] [--agent PATH] [--pod]" >&2; exit 64 ;;
  esac
done
tmp="$(mktemp -d)"
pids=()
trap 'cat "$tmp"/*.err >&2 2>/dev/null; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
PM_HTTP_LISTEN="${PM_HTTP_LISTEN:-127.0.0.1:0}" "$rel/pm-scheduler" --listen 127.0.0.1:0 --data "$tmp/data" >"$tmp/s.out" 2>"$tmp/s.err" &
pids+=($!)
for _ in $(seq 200); do grep -q "listening on" "$tmp/s.out" && break; sleep 0.05; done
addr="$(sed -n 's/.*listening on //p' "$tmp/s.out" | head -1)"
extra=()
if [[ $pod == 1 ]]; then
  "$agent" exec --name sh --listen "unix://$tmp/pods/sh.sock" 2>"$tmp/exec.err" &
  pids+=($!)
  for _ in $(seq 200); do [[ -S "$tmp/pods/sh.sock" ]] && break; sleep 0.05; done
  extra=(--pod-dir "$tmp/pods")
fi
PM_API_LISTEN=off "$agent" run --server "$addr" --work-dir "$tmp/work" --concurrency "$conc" "${extra[@]}" 2>"$tmp/a.err" &
pids+=($!)
python3 -c "
import json,sys
json.dump([{'pipeline':[{'executorName':'sh','commands':['true']}]}]*int(sys.argv[1]), open(sys.argv[2],'w'))
" "$tasks" "$tmp/tasks.json"
sleep 0.5
start=$(date +%s.%N)
"$rel/pmctl" --server "$addr" submit "$tmp/tasks.json" >/dev/null
while :; do
  left=$("$rel/pmctl" --server "$addr" stats --json 2>"$tmp/stats.err" | python3 -c "
import json,sys
q=[q for q in json.load(sys.stdin)['queues'] if q['queue']=='default']
print(sum(q[0].get(k, 0) for k in ('ready','leased','delayed')) if q else 0)")
  [[ "$left" == 0 ]] && break
  sleep 0.02
done
end=$(date +%s.%N)
python3 -c "
import sys; t=float(sys.argv[2])-float(sys.argv[1]); n=int(sys.argv[3])
print('{\"tasks\":%d,\"concurrency\":%s,\"pod\":%s,\"seconds\":%.3f,\"tasks_per_s\":%.0f,\"ms_per_task\":%.3f}' % (n, sys.argv[4], sys.argv[5]=='1' and 'true' or 'false', t, n/t, t*1000/n))
" "$start" "$end" "$tasks" "$conc" "$pod"
