#!/usr/bin/env python3
"""Producer speed, Python against Python: `pipeline_manager.Client.submit` of 64-task batches to a real
`pm-scheduler` (`--fsync always`: each batch is acknowledged once fdatasync'ed), against redis-py sending 64
`XADD`s per pipeline to a real `redis-server` with `appendonly yes`, `appendfsync always`. Both run in this
one process, one after the other, on the same machine, with the same payloads; each side sends one batch at
a time and waits for its reply (a closed loop), then the same with several producers at once.

    python3 clients/python/bench/producer_vs_redis.py [--seconds 10] [--payload 128] [--producers 1,8]
        [--scheduler target/release/pm-scheduler]

Prints one line per run and a JSON summary. Needs `redis-server` and the `redis` package
(requirements-dev.txt). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
ROOT = HERE.parents[2]

from pipeline_manager import Client  # noqa: E402

BATCH = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_scheduler(binary: str, data: Path) -> "tuple[subprocess.Popen, str]":
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--http-listen", "off", "--data", str(data), "--fsync", "always"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("listening on "):
        raise SystemExit(f"pm-scheduler did not start: {line!r}")
    return proc, line.split()[-1]


def start_redis(data: Path) -> "tuple[subprocess.Popen, int]":
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
         "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)


def closed_loop(producers: int, seconds: float, one_batch) -> "tuple[int, float]":
    """Runs `producers` threads, each calling `one_batch(state)` until the time is up; returns (tasks, s)."""
    counts = [0] * producers
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        state = {}
        while time.monotonic() < stop:
            one_batch(state)
            counts[i] += BATCH

    threads = [threading.Thread(target=run, args=(i,)) for i in range(producers)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--payload", type=int, default=128, help="bytes per task")
    ap.add_argument("--producers", default="1,8", help="comma-separated producer counts (threads)")
    ap.add_argument("--scheduler", default=str(ROOT / "target" / "release" / "pm-scheduler"))
    args = ap.parse_args()
    import redis  # the comparison's client; not a dependency of the package

    payload = (b'{"pipeline":[{"executorName":"sh","commands":["true"]}],"pad":"' + b"x" * args.payload)[: args.payload]
    batch = [payload] * BATCH
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        pm_dir, redis_dir = Path(tmp) / "pm", Path(tmp) / "redis"
        redis_dir.mkdir()
        sched, addr = start_scheduler(args.scheduler, pm_dir)
        rds, port = start_redis(redis_dir)
        try:
            for n in [int(x) for x in args.producers.split(",")]:

                def pm_batch(state: dict) -> None:
                    c = state.get("c") or state.setdefault("c", Client(addr))
                    ids = c.submit(batch, queue="bench")
                    assert len(ids) == BATCH

                def redis_batch(state: dict) -> None:
                    r = state.get("r") or state.setdefault("r", redis.Redis(port=port))
                    p = r.pipeline(transaction=False)
                    for _ in range(BATCH):
                        p.xadd("bench", {"payload": payload})
                    assert len(p.execute()) == BATCH

                for name, fn in (("pipeline-manager", pm_batch), ("redis XADD", redis_batch)):
                    tasks, secs = closed_loop(n, args.seconds, fn)
                    rate = tasks / secs
                    results.append({"target": name, "producers": n, "tasks": tasks, "seconds": round(secs, 2),
                                    "tasks_per_s": round(rate)})  # fmt: skip
                    print(f"{name:17} producers={n:<3} batch={BATCH} payload={args.payload} B: {rate:10.0f} tasks/s",
                          flush=True)  # fmt: skip
        finally:
            for p in (sched, rds):
                p.kill()
                p.wait()
    print(json.dumps({"batch": BATCH, "payload_bytes": args.payload, "cpus": os.cpu_count(), "runs": results}))


if __name__ == "__main__":
    main()
