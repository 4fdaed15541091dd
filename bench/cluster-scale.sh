#!/usr/bin/env bash
# Cluster measurements on this one machine (docs/benchmarks.md, "Cluster"; docs/scaling.md):
#   throughput  aggregate max-rate of 1, 2 and 4 scheduler nodes (pm-loadtest spreads its 4 producers and
#               4 consumers over the members; --fsync always)
#   idle        --nodes nodes (8) holding --per idle agent connections each (18,750: every process may hold
#               only 20,000 fds) while node 0 serves a fixed-rate load, against the same with 1,000
#               connections in all. `--nodes 54 --per 18750 idle` is the million.
# Repetitions are interleaved; the summary prints medians. The idle runs also record the kernel's memory
# (Slab and TCP buffer pages, /proc/meminfo and /proc/net/sockstat) before and after opening.
#
# Usage: bench/cluster-scale.sh [--reps N] [--out DIR] [--rate R] [--nodes N] [--per P] [throughput|idle|all]
# Needs release builds: cargo build --release -p pm-scheduler -p pm-loadtest -p pmctl
# As root on a host with connection tracking, a loopback connection takes an entry of nf_conntrack_max:
# the idle run raises it for its duration when the connections would not fit, and restores it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
REPS=3
OUT=target/cluster-scale
RATE=5000
# Extra flags for every node of the idle runs, e.g. NODE_FLAGS="--segment-bytes 16777216" (54 nodes
# preallocating two 64 MiB segments each write 7 GB of zeros first).
NODE_FLAGS=${NODE_FLAGS:-}
NODES=8
PER=18750
WHAT=all
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) REPS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    --per) PER=$2; shift 2 ;;
    throughput|idle|all) WHAT=$1; shift ;;
    *) echo "usage: $0 [--reps N] [--out DIR] [--rate R] [--nodes N] [--per P] [throughput|idle|all]" >&2; exit 64 ;;
  esac
done
for b in pm-scheduler pm-loadtest pmctl; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: cargo build --release -p pm-scheduler -p pm-loadtest -p pmctl" >&2; exit 1; }
done
ulimit -n 20000
HTTP0=127.0.0.1:7399
mkdir -p "$OUT"
TMP=$(mktemp -d)
PIDS=()
ADDRS=()
CONNTRACK=/proc/sys/net/netfilter/nf_conntrack_max
CONNTRACK_WAS=
cleanup() {
  stop_cluster
  rm -rf "$TMP"
  if [ -n "$CONNTRACK_WAS" ]; then echo "$CONNTRACK_WAS" > "$CONNTRACK"; fi
}
trap cleanup EXIT

# start_cluster N [flags...]: nodes on 127.0.0.10.. port 7300, each with its own data directory.
start_cluster() {
  local n=$1; shift
  ADDRS=(); PIDS=()
  for i in $(seq 0 $((n - 1))); do ADDRS+=("127.0.0.$((10 + i)):7300"); done
  local members; members=$(IFS=,; echo "${ADDRS[*]}")
  for i in $(seq 0 $((n - 1))); do
    http=off; [ "$i" -eq 0 ] && http=$HTTP0 # node 0 serves /metrics: its dispatch histogram is read around the load
    "$BIN/pm-scheduler" --listen "${ADDRS[$i]}" --members "$members" --data "$TMP/node-$i" \
      --http-listen "$http" --max-connections 20000 "$@" > "$TMP/node-$i.out" 2> "$TMP/node-$i.log" &
    PIDS+=($!)
  done
  for a in "${ADDRS[@]}"; do
    timeout 20 bash -c "until '$BIN/pmctl' --server $a stats >/dev/null 2>&1; do sleep 0.05; done" \
      || { echo "node $a did not start" >&2; cat "$TMP"/node-*.log >&2; exit 1; }
  done
}

stop_cluster() {
  [ ${#PIDS[@]} -eq 0 ] && return
  kill "${PIDS[@]}" 2>/dev/null || true
  wait "${PIDS[@]}" 2>/dev/null || true
  PIDS=()
  rm -rf "$TMP"/node-*
}

connections() {
  { "$BIN/pmctl" --server "${ADDRS[0]}" cluster status --json 2>/dev/null || true; } \
    | python3 -c 'import json,sys
try: print(sum(n.get("connections", 0) for n in json.load(sys.stdin)["nodes"]))
except Exception: print(0)'
}

if [ "$WHAT" = throughput ] || [ "$WHAT" = all ]; then
  for r in $(seq 1 "$REPS"); do
    for n in 1 2 4; do
      echo "== throughput: $n node(s), repetition $r" >&2
      start_cluster "$n" --fsync always
      target=$(IFS=,; echo "pm://${ADDRS[*]}")
      "$BIN/pm-loadtest" --target "$target" --quiet max-rate --duration 10 --warmup 2 --producers 4 --consumers 4 \
        --out "$OUT/throughput-n$n-r$r.json"
      stop_cluster
    done
  done
fi

# kernel_memory FILE: the kernel's memory that grows with sockets: Slab (socket, inode, file, epoll and
# TCP objects) and TCP buffer pages.
kernel_memory() {
  { grep -E '^(Slab|SUnreclaim|MemAvailable):' /proc/meminfo; grep '^TCP:' /proc/net/sockstat; } > "$1"
}

if [ "$WHAT" = idle ] || [ "$WHAT" = all ]; then
  if [ -w "$CONNTRACK" ]; then
    need=$((NODES * (PER + 512) * 2 + 65536))
    if [ "$(cat "$CONNTRACK")" -lt "$need" ]; then
      CONNTRACK_WAS=$(cat "$CONNTRACK")
      echo "nf_conntrack_max $CONNTRACK_WAS -> $need for this run" >&2
      echo "$need" > "$CONNTRACK"
    fi
  fi
  for r in $(seq 1 "$REPS"); do
    for mode in base full; do
      per=$([ "$mode" = full ] && echo "$PER" || echo $(( (1000 + NODES - 1) / NODES )))
      echo "== idle: $NODES nodes x $per connections, fixed $RATE/s on node 0, repetition $r" >&2
      # shellcheck disable=SC2086 # NODE_FLAGS is a list of flags
      start_cluster "$NODES" --fsync always $NODE_FLAGS
      kernel_memory "$OUT/kernel-$mode-r$r.before"
      idle=()
      for i in $(seq 0 $((NODES - 1))); do
        "$BIN/pm-loadtest" --target "pm://${ADDRS[$i]}" --queue idle --quiet idle-connections --count "$per" \
          --warmup 512 --server-pid "${PIDS[$i]}" --linger 45 --hold 400 --open-timeout 300 \
          --first-source $((30 + 3 * (i % 75))) --out "$OUT/idle-$mode-r$r-node$i.json" &
        idle+=($!)
      done
      # Wait until every connection is open, or the count has not grown for 10 s (a few may fail).
      want=$((NODES * (per + 512))); last=0; still=0
      while [ "$still" -lt 40 ]; do
        now=$(connections)
        [ "$now" -ge "$want" ] && break
        if [ "$now" -gt "$last" ]; then last=$now; still=0; else still=$((still + 1)); fi
        sleep 0.25
      done
      echo "   $(connections) connections open" >&2
      sleep 4 # the idle runs read the servers' memory 2 s after opening: let them, before the load starts
      kernel_memory "$OUT/kernel-$mode-r$r.after"
      ps -o rss= -p "$(IFS=,; echo "${PIDS[*]}")" | awk '{s += $1} END {print s * 1024}' > "$OUT/servers-rss-$mode-r$r"
      curl -s "http://$HTTP0/metrics" > "$OUT/dispatch-$mode-r$r.before"
      "$BIN/pm-loadtest" --target "pm://${ADDRS[0]}" --queue load --quiet fixed-rate --rate "$RATE" \
        --duration 10 --warmup 2 --producers 2 --consumers 2 --out "$OUT/load-$mode-r$r.json"
      curl -s "http://$HTTP0/metrics" > "$OUT/dispatch-$mode-r$r.after"
      wait "${idle[@]}"
      stop_cluster
    done
  done
fi

python3 - "$OUT" "$WHAT" "$NODES" <<'EOF'
import glob, json, statistics, sys
out, what, nodes = sys.argv[1], sys.argv[2], sys.argv[3]
def load(p):
    with open(p) as f:
        return json.load(f)
if what in ("throughput", "all"):
    print("| nodes | acked tasks/s, median [min-max] | p99 latency, ms (median) |")
    print("|---|---|---|")
    for n in (1, 2, 4):
        runs = [load(p) for p in sorted(glob.glob(f"{out}/throughput-n{n}-r*.json"))]
        if not runs:
            continue
        rates = [r["acked_per_s"] for r in runs]
        p99 = statistics.median(r["latency_ms"]["p99"] for r in runs)
        print(f"| {n} | {statistics.median(rates)/1000:.0f} k [{min(rates)/1000:.0f}-{max(rates)/1000:.0f} k] | {p99:.1f} |")
if what in ("idle", "all"):
    print()
    import re
    def buckets(path):
        d = {}
        for line in open(path):
            m = re.match(r'pm_queue_wait_seconds_bucket\{.*le="([^"]+)"\} (\S+)', line)
            if m:
                d[m.group(1)] = d.get(m.group(1), 0.0) + float(m.group(2))
        return d
    def dispatch_p(mode, q):
        # Upper bound of node 0's dispatch quantile q during the load (ready -> leased, server side), per run.
        out_ = []
        for b in sorted(glob.glob(f"{out}/dispatch-{mode}-r*.before")):
            before, after = buckets(b), buckets(b[:-len("before")] + "after")
            les = sorted(after, key=lambda k: float("inf") if k == "+Inf" else float(k))
            total = after.get("+Inf", 0) - before.get("+Inf", 0)
            if total <= 0:
                continue
            for le in les:
                if (after[le] - before.get(le, 0)) / total >= q:
                    out_.append(le)
                    break
        return "/".join(f"<={le}" for le in out_) or "-"
    def kernel(path):
        d = {}
        for line in open(path):
            parts = line.split()
            if parts[0] == "TCP:":
                d["tcp_mem"] = int(parts[parts.index("mem") + 1]) * 4096
                d["tcp_alloc"] = int(parts[parts.index("alloc") + 1])
            else:
                d[parts[0].rstrip(":")] = int(parts[1]) * 1024
        return d
    def kernel_per_conn(mode):
        # Kernel bytes per connection, both of its sockets (client and server live on this one machine).
        vals = []
        for b in sorted(glob.glob(f"{out}/kernel-{mode}-r*.before")):
            before, after = kernel(b), kernel(b[:-len("before")] + "after")
            socks = after["tcp_alloc"] - before["tcp_alloc"]
            if socks < 10000:
                continue
            grown = (after["Slab"] - before["Slab"]) + (after["tcp_mem"] - before["tcp_mem"])
            vals.append(grown / (socks / 2))
        return f"{statistics.median(vals):.0f}" if vals else "-"
    print(f"| idle agent connections ({nodes} nodes) | opened | server bytes per connection (median of nodes) | kernel bytes per connection (both sockets) | load p50, ms | load p99, ms | load p99.9, ms | node 0 dispatch p99 / p99.9, s (runs) |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("base", "full"):
        loads = [load(p) for p in sorted(glob.glob(f"{out}/load-{mode}-r*.json"))]
        idles = [load(p)["report"] for p in sorted(glob.glob(f"{out}/idle-{mode}-r*-node*.json"))]
        if not loads:
            continue
        reps = len(loads)
        opened = sum(i["opened"] for i in idles) // max(reps, 1)
        # Memory per connection only means something with many connections per node.
        per = [i["server_bytes_per_connection"] for i in idles
               if i.get("server_bytes_per_connection") is not None and i["opened"] >= 5000]
        med = lambda k: statistics.median(l["latency_ms"][k] for l in loads)
        per_s = f"{statistics.median(per):.0f}" if per else "-"
        print(f"| {mode} | {opened} | {per_s} | {kernel_per_conn(mode)} | {med('p50'):.2f} | {med('p99'):.2f} | {med('p999'):.2f} | {dispatch_p(mode, 0.99)} / {dispatch_p(mode, 0.999)} |")
EOF
