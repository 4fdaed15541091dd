#!/usr/bin/env python3
"""fdatasync latency and rate on this disk with 1..N threads syncing one file at once.

    python3 bench/fdatasync-threads.py [THREADS...]      (default: 1 2 3; file in $TMPDIR or /tmp)

Each thread writes 2 KiB into its own 4 KiB slot of a zero-filled 64 MiB file and syncs, 1,500 times.
It answers whether a second sync thread in the WAL would shorten a round's wait (docs/notes/p99-at-20k.md).
"""
import os
import sys
import tempfile
import threading
import time


def run(nthreads, n=1500):
    fd, path = tempfile.mkstemp(prefix="fdatasync-threads-")
    try:
        os.write(fd, b"\0" * (64 << 20))
        os.fsync(fd)
        lat, lock, off = [], threading.Lock(), [0]

        def worker():
            buf = b"x" * 2048
            for _ in range(n):
                with lock:
                    o = off[0]
                    off[0] += 4096
                t = time.perf_counter()
                os.pwrite(fd, buf, o)
                os.fdatasync(fd)
                lat.append(time.perf_counter() - t)

        threads = [threading.Thread(target=worker) for _ in range(nthreads)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        lat.sort()
        print(f"threads={nthreads} syncs/s={len(lat) / elapsed:.0f} "
              f"p50={lat[len(lat) // 2] * 1e3:.3f} ms p99={lat[int(len(lat) * 0.99)] * 1e3:.3f} ms")
    finally:
        os.close(fd)
        os.unlink(path)


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["1", "2", "3"]:
        run(int(arg))
