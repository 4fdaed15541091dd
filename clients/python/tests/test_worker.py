"""The worker API against a real scheduler: lease and ack, nack with a delay, fail, extends, redelivery after
a worker dies, reconnect and reclaim after the scheduler restarts, revoke on cancel, graceful stop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from conftest import kill_tree

from pipeline_manager import Client, Fail, LeasedTask, Retry, Task, TaskState, Worker


def run_worker(worker: Worker, until, timeout: float = 15.0) -> None:
    """Runs `worker` until `until()` is true, then stops it gracefully and waits for it."""

    async def main() -> None:
        job = asyncio.ensure_future(worker.run())
        deadline = time.monotonic() + timeout
        while not until():
            assert not job.done(), f"the worker ended early: {job.exception()!r}"
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.02)
        worker.stop()
        await asyncio.wait_for(job, 10)

    asyncio.run(main())


def test_submit_lease_ack_with_a_result(scheduler):
    c = Client(scheduler.addr)
    ids = c.submit([{"n": i} for i in range(20)], queue="sq")
    w = Worker(scheduler.addr, concurrency=4)

    @w.task("sq")
    async def square(task: LeasedTask):
        return {"square": task.json()["n"] ** 2}

    run_worker(w, lambda: w.stats.acked == 20)
    done = c.wait(ids, timeout=5)
    assert [s.state for s in done] == [TaskState.SUCCEEDED] * 20
    assert [s.result_json()["square"] for s in done] == [i * i for i in range(20)]
    assert all(s.attempts == 1 for s in done)


def test_plain_function_handlers_run_in_threads(scheduler):
    c = Client(scheduler.addr)
    tid = c.submit("sync")
    w = Worker(scheduler.addr)

    @w.task()
    def handle(task: LeasedTask) -> str:
        time.sleep(0.05)
        return task.text().upper()

    run_worker(w, lambda: w.stats.acked == 1)
    assert c.wait(tid, timeout=5).result == b"SYNC"


def test_retry_nacks_with_its_delay_and_fail_ends_the_task(scheduler):
    c = Client(scheduler.addr)
    retry_id, fail_id = c.submit(["retry", "fail"], queue="r")
    seen = {}
    w = Worker(scheduler.addr, concurrency=2)

    @w.task("r")
    async def handle(task: LeasedTask):
        seen.setdefault(task.task_id, []).append(time.monotonic())
        if task.text() == "fail":
            raise Fail("bad input", result={"why": "bad"})
        if task.attempt == 1:
            raise Retry("try later", delay=0.6)
        return "ok"

    run_worker(w, lambda: w.stats.acked == 1 and w.stats.nacked == 2)
    ok, failed = c.wait([retry_id, fail_id], timeout=5)
    assert (ok.state, ok.attempts) == (TaskState.SUCCEEDED, 2)
    gap = seen[retry_id][1] - seen[retry_id][0]
    assert gap >= 0.6, f"redelivered after {gap:.3f} s, before the retry delay"
    assert (failed.state, failed.attempts, failed.reason) == (TaskState.FAILED, 1, "bad input")
    assert failed.result_json() == {"why": "bad"}


def test_an_unexpected_exception_is_retried_until_max_attempts(scheduler):
    c = Client(scheduler.addr)
    tid = c.submit(Task("boom", max_attempts=2))
    w = Worker(scheduler.addr, retry_delay=0.05)

    @w.task()
    async def handle(task: LeasedTask):
        raise ValueError("boom")

    run_worker(w, lambda: w.stats.nacked == 2)
    st = c.wait(tid, timeout=5)
    assert (st.state, st.attempts) == (TaskState.DEAD, 2)
    assert "ValueError: boom" in st.reason


def test_leases_are_extended_while_the_handler_runs(scheduler):
    c = Client(scheduler.addr)
    tid = c.submit(Task("long", lease=0.6))
    w = Worker(scheduler.addr, extend=0.6)

    @w.task()
    async def handle(task: LeasedTask):
        await asyncio.sleep(2.5)  # four lease lengths
        return "done"

    run_worker(w, lambda: w.stats.acked == 1)
    st = c.wait(tid, timeout=5)
    assert (st.state, st.attempts) == (TaskState.SUCCEEDED, 1), "the lease expired and the task was redelivered"
    assert w.stats.leased == 1


def test_a_task_is_redelivered_after_its_worker_dies(scheduler):
    c = Client(scheduler.addr)
    tid = c.submit("slow one", queue="slow")
    script = Path(__file__).with_name("worker_main.py")
    proc = subprocess.Popen([sys.executable, str(script), scheduler.addr], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["RUNNING", str(tid), "1"]
    finally:
        kill_tree(proc)  # SIGKILL: no ack, no nack, the connection just ends
    w = Worker(scheduler.addr)
    attempts = []

    @w.task("slow")
    async def handle(task: LeasedTask):
        attempts.append(task.attempt)
        return "second time lucky"

    run_worker(w, lambda: w.stats.acked == 1)
    assert attempts == [2]
    assert c.wait(tid, timeout=5).state == TaskState.SUCCEEDED


def test_the_worker_reconnects_and_reclaims_its_running_task_after_a_restart(scheduler):
    c = Client(scheduler.addr)
    tid = c.submit("survives a restart")
    w = Worker(scheduler.addr, reconnect_delay=0.05)
    started = []

    @w.task()
    async def handle(task: LeasedTask):
        started.append(task.attempt)
        while not w.stats.reclaimed:
            await asyncio.sleep(0.02)
        return "finished after the reclaim"

    async def main() -> None:
        job = asyncio.ensure_future(w.run())
        while not started:
            await asyncio.sleep(0.02)
        await asyncio.get_running_loop().run_in_executor(None, scheduler.restart)
        deadline = time.monotonic() + 15
        while w.stats.acked < 1:
            assert time.monotonic() < deadline, f"no ack after the restart: {w.stats}"
            await asyncio.sleep(0.02)
        w.stop()
        await asyncio.wait_for(job, 10)

    asyncio.run(main())
    assert started == [1], "the handler ran once: the reclaim kept the task running"
    assert w.stats.reconnects >= 1 and w.stats.reclaimed == 1
    st = c.wait(tid, timeout=5)
    assert (st.state, st.attempts, st.result) == (TaskState.SUCCEEDED, 1, b"finished after the reclaim")


def test_a_cancelled_task_is_revoked_and_its_handler_stopped(scheduler):
    c = Client(scheduler.addr)
    tid = c.submit("cancel me")
    w = Worker(scheduler.addr)
    cancelled = []

    @w.task()
    async def handle(task: LeasedTask):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(task.task_id)
            raise

    async def main() -> None:
        job = asyncio.ensure_future(w.run())
        while w.running == 0:
            await asyncio.sleep(0.02)
        assert await asyncio.get_running_loop().run_in_executor(None, c.cancel, tid) is True
        while not cancelled:
            await asyncio.sleep(0.02)
        w.stop()
        await asyncio.wait_for(job, 10)

    asyncio.run(main())
    assert cancelled == [tid] and w.stats.acked == 0 and w.stats.nacked == 0
    assert c.status(tid).state == TaskState.CANCELLED


def test_stop_lets_running_tasks_finish_and_takes_no_new_ones(scheduler):
    c = Client(scheduler.addr)
    first = c.submit("running at stop")
    w = Worker(scheduler.addr, drain_timeout=10)
    finished = []

    @w.task()
    async def handle(task: LeasedTask):
        await asyncio.sleep(0.5)
        finished.append(task.task_id)
        return "drained"

    async def main() -> None:
        job = asyncio.ensure_future(w.run())
        while w.running == 0:
            await asyncio.sleep(0.02)
        w.stop()
        await asyncio.wait_for(job, 10)

    asyncio.run(main())
    later = c.submit("after the stop")
    time.sleep(0.3)
    assert finished == [first]
    assert c.wait(first, timeout=5).state == TaskState.SUCCEEDED
    assert c.status(later).state == TaskState.READY, "a stopped worker takes nothing"


def test_past_the_drain_timeout_running_tasks_are_handed_back(scheduler):
    c = Client(scheduler.addr)
    tid = c.submit("too slow to drain")
    w = Worker(scheduler.addr, drain_timeout=0.3)

    @w.task()
    async def handle(task: LeasedTask):
        await asyncio.sleep(3600)

    async def main() -> None:
        job = asyncio.ensure_future(w.run())
        while w.running == 0:
            await asyncio.sleep(0.02)
        w.stop()
        await asyncio.wait_for(job, 10)

    asyncio.run(main())
    st = c.status(tid)
    assert w.stats.nacked == 1
    assert st.state == TaskState.READY and st.attempts == 1, st
