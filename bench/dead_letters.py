#!/usr/bin/env python3
"""Paging through many dead letters (docs/benchmarks.md): fills a running scheduler with N dead letters (tasks of
one attempt, each nacked by a worker of the Python client), then prints the median time of 9 requests for pages
at the start, the middle and the end.

    target/release/pm-scheduler --listen 127.0.0.1:17370 --http-listen 127.0.0.1:17372 --data $(mktemp -d) --fsync none &
    python3 bench/dead_letters.py 100000            # [PROTOCOL_ADDR] [HTTP_ADDR]
"""
import asyncio
import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "python" / "src"))
from pipeline_manager import Client, Retry, Task, Worker  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
ADDR = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:17370"
HTTP = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1:17372"


def dead_count() -> int:
    queues = json.load(urllib.request.urlopen(f"http://{HTTP}/api/queues"))["queues"]
    return sum(q["dead"] for q in queues if q["queue"] == "dl")


async def bury() -> None:
    worker = Worker(ADDR, concurrency=512)

    @worker.task("dl")
    async def fail(task):  # noqa: ARG001 - every attempt fails: one attempt, so dead at once
        raise Retry("boom", delay=0)

    run = asyncio.create_task(worker.run())
    while dead_count() < N:
        await asyncio.sleep(1)
    worker.stop()
    await run


def timed(path: str) -> float:
    times = []
    for _ in range(9):
        t = time.perf_counter()
        urllib.request.urlopen(f"http://{HTTP}{path}").read()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


with Client(ADDR) as c:
    for done in range(0, N, 4096):
        c.submit([Task(b"x" * 64) for _ in range(min(4096, N - done))], queue="dl", max_attempts=1)
asyncio.run(bury())
first = json.load(urllib.request.urlopen(f"http://{HTTP}/api/dead?queue=dl&limit=1"))["deadLetters"][0]["taskId"]
print(f"{dead_count()} dead letters")
for path in [
    "/api/dead?queue=dl&limit=100",
    f"/api/dead?queue=dl&limit=100&cursor={first + N // 2}",
    f"/api/dead?queue=dl&limit=100&cursor={first + N - 200}",
    "/api/dead?limit=1000",
    "/api/tasks?state=dead&limit=100",
]:
    print(f"{timed(path) * 1000:.1f} ms  GET {path}")
