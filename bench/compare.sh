#!/usr/bin/env bash
# Side-by-side comparison: pm-scheduler, Redis streams and beanstalkd driven by the same pm-loadtest workload
# (4 producers, 4 consumers, 256-byte tasks, batches of 64, --warmup s + --duration s) on loopback.
#
#   cargo build --release -p pm-scheduler -p pm-loadtest
#   bench/compare.sh [--reps 3] [--warmup 2] [--duration 10] [--rate 20000] [--idle 19000] [--out DIR]
#
# Systems (each started fresh on a temporary data folder for every run, runs interleaved across systems):
#   pm             pm-scheduler --fsync always          fsync before SubmitAck and before the ack reply
#   redis-always   redis-server appendfsync always      AOF fsync before the reply
#   redis-everysec redis-server appendfsync everysec    no fsync before the reply (up to ~1 s lost)
#   bean-f0        beanstalkd -b DIR -f 0               fsync of the binlog before the reply
#   bean-default   beanstalkd -b DIR (fsync <= 50 ms)   no fsync before the reply (up to ~50 ms lost)
# Scenarios per run: max-rate (closed loop) and fixed-rate at --rate (latency). Then, once per system,
# idle-connections --idle N (0 skips it) with the server's memory per connection. --reps 0 runs only that.
# Writes every JSON report into --out (default: a fresh temporary folder) and prints a Markdown table of
# medians with ratios to pm (bench/compare-table.py). Needs redis-server and beanstalkd (Debian packages).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
reps=3 warmup=2 duration=10 rate=20000 idle=19000 out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --reps) reps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --idle) idle="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--reps N] [--warmup S] [--duration S] [--rate N] [--idle N] [--out DIR]" >&2; exit 64 ;;
  esac
done
out="${out:-$(mktemp -d)}"
mkdir -p "$out"
sched="$root/target/release/pm-scheduler"
lt="$root/target/release/pm-loadtest"
for b in "$sched" "$lt"; do
  [[ -x "$b" ]] || { echo "missing $b: cargo build --release -p pm-scheduler -p pm-loadtest" >&2; exit 1; }
done
for p in redis-server beanstalkd; do
  command -v "$p" >/dev/null || { echo "missing $p (apt-get install redis-server beanstalkd)" >&2; exit 1; }
done

pid="" data=""
stop_server() {
  if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  [[ -n "$data" ]] && rm -rf "$data" "$data.log"
  pid="" data=""
}
trap stop_server EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || break
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "server on port $1 did not start" >&2; return 1
}

# launch SYSTEM PORT: starts it on $data; sets pid and target.
launch() {
  local port="$2"
  case "$1" in
    pm)
      "$sched" --listen "127.0.0.1:$port" --http-listen off --data "$data" --fsync always >"$data.log" 2>&1 &
      target="pm://127.0.0.1:$port" ;;
    redis-always|redis-everysec)
      # Loopback only; protected mode would refuse the 127.0.0.2+ sources idle-connections uses.
      redis-server --port "$port" --bind 127.0.0.1 --dir "$data" --save "" --appendonly yes \
        --appendfsync "${1#redis-}" --maxclients 19900 --protected-mode no >"$data.log" 2>&1 &
      target="redis://127.0.0.1:$port" ;;
    bean-f0)
      beanstalkd -l 127.0.0.1 -p "$port" -b "$data" -f 0 >"$data.log" 2>&1 &
      target="beanstalk://127.0.0.1:$port" ;;
    bean-default)
      beanstalkd -l 127.0.0.1 -p "$port" -b "$data" >"$data.log" 2>&1 &
      target="beanstalk://127.0.0.1:$port" ;;
  esac
  pid=$!
}

# start SYSTEM: starts it on a fresh data folder (a new port on each of 3 tries); sets pid, data and target.
start() {
  data="$(mktemp -d)"
  for _ in 1 2 3; do
    local port; port="$(free_port)"
    launch "$1" "$port"
    wait_port "$port" && return 0
    cat "$data.log" >&2 || true
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  done
  return 1
}

systems=(pm redis-always redis-everysec bean-f0 bean-default)
common=(--warmup "$warmup" --duration "$duration" --producers 4 --consumers 4 --batch 64 --payload 256 --quiet)
for rep in $(seq "$reps"); do
  for sys in "${systems[@]}"; do
    for scenario in max-rate fixed-rate; do
      start "$sys"
      extra=()
      [[ "$scenario" == fixed-rate ]] && extra=(--rate "$rate")
      echo "rep $rep: $sys $scenario" >&2
      "$lt" --target "$target" "$scenario" "${common[@]}" "${extra[@]}" --out "$out/$sys.$scenario.$rep.json" ||
        echo "  failed (see $out)" >&2
      stop_server
    done
  done
done
if [[ "$idle" -gt 0 ]]; then
  for sys in "${systems[@]}"; do
    start "$sys"
    echo "$sys idle-connections $idle" >&2
    # 10 s to settle: Redis shrinks an idle client's 16 KiB query buffer only after it has been idle ~2 s,
    # a few clients per cron tick.
    "$lt" --target "$target" idle-connections --count "$idle" --server-pid "$pid" --settle 10 --out "$out/$sys.idle.json" ||
      echo "  failed (see $out)" >&2
    stop_server
  done
fi
python3 "$root/bench/compare-table.py" "$out"
echo "reports in $out" >&2
