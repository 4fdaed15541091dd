"""The producer API against a real scheduler: submit, status, wait, cancel, idempotency, refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_manager import Client, ErrorCode, SubmitError, Task, TaskState, pm_pb2


def test_submit_returns_ids_and_status_sees_the_tasks(scheduler):
    with Client(scheduler.addr) as c:
        one = c.submit({"hello": "world"}, queue="q", key="k1", priority=3)
        many = c.submit(["a", b"b", Task("c", queue="other")], queue="q")
        assert isinstance(one, int) and len(many) == 3 and len({one, *many}) == 4
        st = c.status(one)
        assert (st.code, st.state, st.queue, st.key) == (ErrorCode.OK, TaskState.READY, "q", "k1")
        queues = [s.queue for s in c.status(many)]
        assert queues == ["q", "q", "other"]
        assert c.status(999_999).code == ErrorCode.NOT_FOUND


def test_a_delayed_task_is_delayed(scheduler):
    with Client(scheduler.addr) as c:
        tid = c.submit("later", delay=60)
        assert c.status(tid).state == TaskState.DELAYED


def test_a_list_longer_than_the_batch_limit_goes_as_several_requests(start):
    s = start("--max-batch", "10")
    with Client(s.addr) as c:
        ids = c.submit([f"t{i}" for i in range(35)], queue="many")
        assert len(set(ids)) == 35
        assert all(st.code == ErrorCode.OK for st in c.status(ids))


def test_idempotent_submits_return_the_first_id(scheduler):
    with Client(scheduler.addr) as c:
        first = c.submit("pay once", queue="pay", idempotency_key="invoice-7")
        again = c.submit("pay once", queue="pay", idempotency_key="invoice-7")
        assert again == first
        results = c.submit_specs([pm_pb2.TaskSpec(payload=b"x", queue="pay", idempotency_key="invoice-7")])
        assert results[0].duplicate and results[0].task_id == first
        other = c.submit("pay once", queue="pay", idempotency_key="invoice-8")
        assert other != first


def test_an_oversized_payload_raises_with_the_servers_code(start):
    s = start("--max-payload-bytes", "1000")
    with Client(s.addr) as c:
        with pytest.raises(SubmitError) as e:
            c.submit(b"x" * 1001)
        assert e.value.code == ErrorCode.INVALID_TASK
        assert "exceeds the limit of 1000 bytes" in e.value.message


def test_a_bad_queue_name_raises_with_the_servers_code_and_the_others_are_enqueued(scheduler):
    with Client(scheduler.addr) as c:
        with pytest.raises(SubmitError) as e:
            c.submit(["fine", Task("bad", queue="no spaces")], queue="ok")
        err = e.value
        assert err.code == ErrorCode.INVALID_TASK and err.index == 1
        assert "no spaces" in str(err)
        ok_id = err.task_ids[0]
        assert ok_id is not None and err.task_ids[1] is None
        assert c.status(ok_id).state == TaskState.READY


def test_cancel_cancels_once(scheduler):
    with Client(scheduler.addr) as c:
        tid = c.submit("never runs")
        assert c.cancel(tid) is True
        assert c.cancel([tid, 123_456]) == [False, False]
        assert c.wait(tid, timeout=5).state == TaskState.CANCELLED


def test_the_client_reconnects_after_a_restart(scheduler):
    with Client(scheduler.addr) as c:
        tid = c.submit("durable")
        scheduler.restart()
        assert c.status(tid).state == TaskState.READY


def test_the_generated_code_matches_the_proto():
    script = Path(__file__).resolve().parents[1] / "scripts" / "gen_proto.py"
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
