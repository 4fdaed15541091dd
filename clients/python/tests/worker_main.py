"""A worker process for the tests that kill one: takes tasks of queue `slow` and sleeps in each until killed.
Prints `RUNNING <task_id> <attempt>` when a handler starts.

    python3 worker_main.py ADDR
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline_manager import Worker  # noqa: E402

worker = Worker(sys.argv[1], extend=3.0)


@worker.task("slow")
def run(task):
    print(f"RUNNING {task.task_id} {task.attempt}", flush=True)
    time.sleep(3600)


worker.run_sync()
