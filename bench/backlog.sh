#!/usr/bin/env bash
# A large queued backlog on one pm-scheduler node (docs/notes/backlog.md), in three timed phases:
#   fill     producers only (pm-loadtest --consumers 0 --max-tasks N) queue exactly N tasks into one queue;
#            the fill rate, the data directory's size on disk (du, and the store's own count), the node's RSS
#            (VmRSS, VmHWM) and RSS per task
#   restart  kill -9, sync, drop the page cache, start again on the same data and ports; seconds until the
#            port accepts a connection and until /readyz says ready, the CPU time the node used until it
#            listened, the RSS then and 2 s later, where the time went (from the node's `store recovered` and
#            `shard recovered` log lines), and the queue's depth (must be N)
#   drain    drop the page cache again, then consumers only (pm-loadtest --producers 0 --max-tasks N) take
#            and ack the whole backlog: the rate over the whole drain and over its first 10 s; at the end
#            nothing may be ready or leased and N tasks must have been acked
# Prints one JSON line on stdout and a readable summary on stderr; exits non-zero when a check fails.
#
#   bench/backlog.sh [--tasks N] [--payload BYTES] [--producers P] [--consumers C] [--data DIR] [--keep]
#                    [--fsync MODE] [--scheduler PATH] [--skip-drain] [--no-drop-caches] [--limit SECONDS]
#
# Defaults: 10,000,000 tasks of 256 B, 4 producers, 4 consumers, --fsync always, a fresh data directory under
# /var/tmp removed at the end (kept, with the node's logs, by --keep; a --data DIR must be empty or missing and
# is kept), every phase bounded by --limit 600 s.
# --scheduler picks the node's binary (default $BIN/pm-scheduler), so two builds compare side by side;
# pm-loadtest and pmctl come from $BIN (default target/release). NODE_FLAGS="..." adds flags to the node.
# Dropping the page cache needs root; --no-drop-caches (or not being root) skips it, and the JSON says so.
# Build first: cargo build --release -p pm-scheduler -p pm-loadtest -p pmctl
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
BIN=${BIN:-$root/target/release}
NODE_FLAGS=${NODE_FLAGS:-}
tasks=10000000 payload=256 producers=4 consumers=4 data="" keep=0 fsync=always scheduler="" skip_drain=0
drop=1 limit=600
usage="usage: $0 [--tasks N] [--payload BYTES] [--producers P] [--consumers C] [--data DIR] [--keep]
  [--fsync MODE] [--scheduler PATH] [--skip-drain] [--no-drop-caches] [--limit SECONDS]"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tasks) tasks="$2"; shift 2 ;;
    --payload) payload="$2"; shift 2 ;;
    --producers) producers="$2"; shift 2 ;;
    --consumers) consumers="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --fsync) fsync="$2"; shift 2 ;;
    --scheduler) scheduler="$2"; shift 2 ;;
    --skip-drain) skip_drain=1; shift ;;
    --no-drop-caches) drop=0; shift ;;
    --limit) limit="$2"; shift 2 ;;
    *) echo "$usage" >&2; exit 64 ;;
  esac
done
scheduler="${scheduler:-$BIN/pm-scheduler}"
for b in "$scheduler" "$BIN/pm-loadtest" "$BIN/pmctl"; do
  [[ -x "$b" ]] || { echo "missing $b: cargo build --release -p pm-scheduler -p pm-loadtest -p pmctl" >&2; exit 1; }
done
if [[ $drop == 1 && ( $(id -u) != 0 || ! -w /proc/sys/vm/drop_caches ) ]]; then
  echo "backlog: not root, the page cache is not dropped" >&2
  drop=0
fi
queue=backlog
tmp="$(mktemp -d)"
fresh=0
if [[ -z "$data" ]]; then
  data="$(mktemp -d /var/tmp/pm-backlog.XXXXXX)"
  fresh=1
elif [[ -n "$(ls -A "$data" 2>/dev/null)" ]]; then
  echo "backlog: --data $data is not empty" >&2
  exit 64
fi
node_pid="" load_pid="" failed=1
cleanup() {
  for p in $load_pid $node_pid; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ $failed == 1 ]]; then
    echo "backlog: failed; the node's last log lines:" >&2
    tail -n 20 "$tmp"/node-*.err >&2 2>/dev/null || true
  fi
  if [[ $keep == 1 ]]; then
    cp "$tmp"/node-*.err "$data"/ 2>/dev/null || true
    echo "backlog: kept $data (with the node's logs)" >&2
  elif [[ $fresh == 1 ]]; then
    rm -rf "$data"
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "backlog: $*" >&2; exit 1; }
now() { date +%s.%N; }
# The node's status field ($2: VmRSS, VmHWM) in bytes.
mem() { echo $(($(awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status") * 1024)); }
# cpu PID: the process's CPU time so far (user + system), s.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"; }
drop_caches() { if [[ $drop == 1 ]]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi; }

# start_node N LISTEN HTTP: starts the node (log node-N.err), sets node_pid.
start_node() {
  : >"$tmp/node-$1.out"
  # shellcheck disable=SC2086 # NODE_FLAGS is a list of flags
  PM_LOG_FORMAT=json "$scheduler" --listen "$2" --http-listen "$3" --probe-listen off --data "$data" \
    --fsync "$fsync" $NODE_FLAGS >"$tmp/node-$1.out" 2>"$tmp/node-$1.err" &
  node_pid=$!
}
# wait_line N PATTERN: the first stdout line of node N starting with PATTERN, without it.
wait_line() {
  local end=$((SECONDS + limit))
  while ((SECONDS < end)); do
    kill -0 "$node_pid" 2>/dev/null || die "the node exited"
    local l
    l="$(sed -n "s/^$2 //p" "$tmp/node-$1.out" | head -1)"
    [[ -n "$l" ]] && { echo "$l"; return; }
    sleep 0.01
  done
  die "no '$2' line within ${limit}s"
}
# stats: the backlog queue's figures as `ready delayed leased`, then the store's bytes on disk (a queue with
# nothing left is not listed).
stats() {
  "$BIN/pmctl" --server "$addr" stats --json | python3 -c "
import json, sys
s = json.load(sys.stdin)
q = [q for q in s['queues'] if q['queue'] == sys.argv[1]]
print(*(q[0].get(k, 0) if q else 0 for k in ('ready', 'delayed', 'leased')), s.get('storeDiskBytes', 0))" "$queue"
}
# loadtest OUT ARGS...: pm-loadtest max-rate against the node, report in OUT (in the background, so that the
# trap can stop it).
loadtest() {
  local out="$1"; shift
  "$BIN/pm-loadtest" --target "pm://$addr" --queue "$queue" --quiet max-rate --payload "$payload" --warmup 0 \
    --duration "$limit" --drain 0 --out "$out" "$@" 2>"$tmp/loadtest.err" &
  load_pid=$!
  wait "$load_pid" || { cat "$tmp/loadtest.err" >&2; die "pm-loadtest failed"; }
  load_pid=""
}
# field FILE EXPR: a Python expression over the JSON document `r` of FILE.
field() { python3 -c "import json, sys; r = json.load(open(sys.argv[1])); print($2)" "$1"; }

# 1. Fill.
echo "backlog: filling $tasks tasks of $payload B with $producers producers (--fsync $fsync) into $data" >&2
start_node 1 127.0.0.1:0 127.0.0.1:0
addr="$(wait_line 1 "listening on")"
http="$(wait_line 1 "http listening on")"
loadtest "$tmp/fill.json" --producers "$producers" --consumers 0 --max-tasks "$tasks"
submitted="$(field "$tmp/fill.json" "r['totals']['submitted']")"
bad="$(field "$tmp/fill.json" "r['totals']['submit_errors'] + r['totals']['rejected']")"
[[ "$submitted" == "$tasks" && "$bad" == 0 ]] ||
  die "the fill queued $submitted of $tasks tasks ($bad errors or rejections; --limit ${limit}s too short?)"
fill_s="$(field "$tmp/fill.json" "r['elapsed_s']")"
fill_rss="$(mem "$node_pid" VmRSS)" fill_hwm="$(mem "$node_pid" VmHWM)"
read -r ready delayed leased store_bytes < <(stats)
[[ "$ready" == "$tasks" ]] ||
  die "after the fill the queue holds $ready ready, $delayed delayed, $leased leased; $tasks expected"
disk_bytes="$(du -sB1 "$data" | cut -f1)"

# 2. kill -9 and cold restart on the same ports.
t="$(now)"
{ kill -9 "$node_pid" && wait "$node_pid"; } 2>/dev/null || true
exit_s="$(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 3))" "$t" "$(now)")"
drop_caches
port="${addr##*:}" http_port="${http##*:}"
t0="$(now)"
start_node 2 "$addr" "$http"
end=$((SECONDS + limit))
while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
  kill -0 "$node_pid" 2>/dev/null || die "the node exited while restarting"
  ((SECONDS < end)) || die "the restarted node did not listen within ${limit}s"
  sleep 0.01
done
t_listen="$(now)"
restart_cpu="$(cpu "$node_pid")"
until curl -sf -o /dev/null "http://127.0.0.1:$http_port/readyz"; do
  kill -0 "$node_pid" 2>/dev/null || die "the node exited while restarting"
  ((SECONDS < end)) || die "the restarted node was not ready within ${limit}s"
  sleep 0.01
done
t_ready="$(now)"
restart_rss="$(mem "$node_pid" VmRSS)" restart_hwm="$(mem "$node_pid" VmHWM)"
read -r ready delayed leased _ < <(stats)
[[ "$ready" == "$tasks" && "$delayed" == 0 && "$leased" == 0 ]] ||
  die "after the restart the queue holds $ready ready, $delayed delayed, $leased leased; $tasks expected"
depth="$ready"
# Recovery's buffers go back to the system 1.5 s after it (scheduler/src/reclaim_memory.rs).
sleep 2
settled_rss="$(mem "$node_pid" VmRSS)"
# Where the restart went: the node's log lines, in s since it was started.
phases="$(python3 - "$tmp/node-2.err" "$t0" <<'EOF'
import json, sys
from datetime import datetime
start, store, shards = float(sys.argv[2]), None, None
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
        t = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp() - start
        msg = e.get("fields", {}).get("message", "")
    except (ValueError, KeyError, TypeError, AttributeError):
        continue
    if msg == "store recovered":
        store = t
    elif msg == "shard recovered":
        shards = t
print(json.dumps({"store_recovered_s": store and round(store, 3), "shards_recovered_s": shards and round(shards, 3)}))
EOF
)"

# 3. Cold drain.
drain="{}"
if [[ $skip_drain == 0 ]]; then
  drop_caches
  echo "backlog: draining with $consumers consumers" >&2
  loadtest "$tmp/drain.json" --producers 0 --consumers "$consumers" --max-tasks "$tasks" --interval 1
  read -r ready delayed leased _ < <(stats)
  acked="$(field "$tmp/drain.json" "r['totals']['acked']")"
  [[ "$ready" == 0 && "$delayed" == 0 && "$leased" == 0 && "$acked" -ge "$tasks" ]] ||
    die "after the drain: $acked acked, $ready ready, $delayed delayed, $leased leased"
  drain="$(python3 - "$tmp/drain.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
acked, secs = r["totals"]["acked"], r["elapsed_s"]
# The first 10 s: the series' intervals (1 s) that end by then.
done, last = 0.0, 0.0
for p in r["series"]:
    if p["t"] > 10.05:
        break
    done += p["acked_per_s"] * (p["t"] - last)
    last = p["t"]
print(json.dumps({"drain_s": round(secs, 3), "drain_tasks_per_s": round(acked / secs), "delivered": acked,
                  "drain_first_10s_tasks_per_s": round(done / last) if last > 0 else None,
                  "redelivered": r["totals"]["redelivered"], "ack_errors": r["totals"]["ack_errors"]}))
EOF
)"
fi
failed=0

python3 - "$phases" "$drain" tasks="$tasks" payload="$payload" producers="$producers" consumers="$consumers" \
  fsync="$fsync" node_flags="$NODE_FLAGS" scheduler="$scheduler" drop="$drop" fill_s="$fill_s" rss="$fill_rss" \
  hwm="$fill_hwm" disk="$disk_bytes" store="$store_bytes" exit_s="$exit_s" t0="$t0" t_listen="$t_listen" \
  t_ready="$t_ready" restart_rss="$restart_rss" restart_hwm="$restart_hwm" settled_rss="$settled_rss" \
  depth="$depth" restart_cpu="$restart_cpu" <<'EOF'
import json, sys
v = dict(a.split("=", 1) for a in sys.argv[3:])
n, fill_s, rss, t0 = int(v["tasks"]), float(v["fill_s"]), int(v["rss"]), float(v["t0"])
r = {"tasks": n, "payload": int(v["payload"]), "producers": int(v["producers"]), "consumers": int(v["consumers"]),
     "fsync": v["fsync"], "node_flags": v["node_flags"], "scheduler": v["scheduler"],
     "caches_dropped": v["drop"] == "1",
     "fill_s": round(fill_s, 3), "fill_tasks_per_s": round(n / fill_s),
     "disk_bytes": int(v["disk"]), "store_disk_bytes": int(v["store"]),
     "rss_bytes": rss, "hwm_bytes": int(v["hwm"]), "rss_bytes_per_task": round(rss / n, 1),
     "kill_exit_s": float(v["exit_s"]),
     "restart_listen_s": round(float(v["t_listen"]) - t0, 3), "restart_ready_s": round(float(v["t_ready"]) - t0, 3),
     "restart_rss_bytes": int(v["restart_rss"]), "restart_hwm_bytes": int(v["restart_hwm"]),
     "restart_rss_2s_bytes": int(v["settled_rss"]), "restart_cpu_s": float(v["restart_cpu"]),
     "depth": int(v["depth"])}
r.update(json.loads(sys.argv[1]))
r.update(json.loads(sys.argv[2]))
print(json.dumps(r))
g = lambda b: f"{b / 2**30:.2f} GiB"
s = [f"fill     {n:,} tasks in {fill_s:.1f} s = {n / fill_s:,.0f}/s; disk {g(r['disk_bytes'])} (store "
     f"{g(r['store_disk_bytes'])}); RSS {g(rss)} (peak {g(r['hwm_bytes'])}) = {r['rss_bytes_per_task']} B/task",
     f"restart  kill -9 exit {r['kill_exit_s']} s; listening after {r['restart_listen_s']} s (CPU "
     f"{r['restart_cpu_s']} s), ready after {r['restart_ready_s']} s (store recovered at {r['store_recovered_s']} s, "
     f"last shard at {r['shards_recovered_s']} s); RSS {g(r['restart_rss_bytes'])}, "
     f"2 s later {g(r['restart_rss_2s_bytes'])}; depth {r['depth']:,}"
     + ("" if r["caches_dropped"] else " (page cache kept)")]
if "drain_s" in r:
    s.append(f"drain    {r['delivered']:,} acked in {r['drain_s']} s = {r['drain_tasks_per_s']:,}/s "
             f"(first 10 s: {r['drain_first_10s_tasks_per_s']:,}/s)")
print("\n".join(s), file=sys.stderr)
EOF
