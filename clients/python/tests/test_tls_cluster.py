"""TLS with tokens, and a cluster of three nodes: routing by key and a redirect followed."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from conftest import free_addr

from pipeline_manager import Client, ConnectError, ErrorCode, HandshakeError, LeasedTask, Ring, Task, TaskState, Worker

PRODUCER_TOKEN = "producer-token-0123456789"
AGENT_TOKEN = "agent-token-0123456789abc"


@pytest.fixture
def tls_node(start, certs, tmp_path):
    (tmp_path / "producers").write_text(PRODUCER_TOKEN + "\n")
    (tmp_path / "agents").write_text(AGENT_TOKEN + "\n")
    return start("--tls-cert-file", certs["cert"], "--tls-key-file", certs["key"],
                 "--producer-token-file", str(tmp_path / "producers"),
                 "--agent-token-file", str(tmp_path / "agents"))  # fmt: skip


def test_tls_with_tokens_submit_lease_ack(tls_node, certs):
    with Client(tls_node.addr, tls=certs["ca"], token=PRODUCER_TOKEN) as c:
        tid = c.submit("over TLS")
        w = Worker(tls_node.addr, tls=certs["ca"], token=AGENT_TOKEN)

        @w.task()
        async def handle(task: LeasedTask):
            return task.text() + ", acked"

        async def main() -> None:
            job = asyncio.ensure_future(w.run())
            while w.stats.acked < 1:
                assert not job.done(), job
                await asyncio.sleep(0.02)
            w.stop()
            await asyncio.wait_for(job, 10)

        asyncio.run(main())
        assert c.wait(tid, timeout=5).result == b"over TLS, acked"


def test_a_wrong_token_or_role_is_refused_with_unauthorized(tls_node, certs):
    for token in ("wrong-token-0123456789", AGENT_TOKEN, None):
        with pytest.raises(HandshakeError) as e:
            Client(tls_node.addr, tls=certs["ca"], token=token).submit("x")
        assert e.value.code == ErrorCode.UNAUTHORIZED, e.value
    w = Worker(tls_node.addr, tls=certs["ca"], token=PRODUCER_TOKEN)
    w.handle("default", lambda t: None)
    with pytest.raises(HandshakeError) as e:
        asyncio.run(w.run())
    assert e.value.code == ErrorCode.UNAUTHORIZED


def test_tls_verifies_the_server(tls_node, certs):
    # Plain TCP to a TLS port, and TLS with the system's CAs (which never signed this server), both fail.
    with pytest.raises(ConnectError):
        Client(tls_node.addr, tls=True, token=PRODUCER_TOKEN, timeout=3).submit("x")
    ctx = ssl.create_default_context(cafile=certs["ca"])
    with Client(tls_node.addr, tls=ctx, token=PRODUCER_TOKEN) as c:
        assert c.submit("verified") > 0


def test_keyed_tasks_go_to_their_owner_and_a_redirect_is_followed(start):
    addrs = [free_addr(f"127.0.0.{10 + i}") for i in range(2)]
    nodes = [start("--members", ",".join(addrs), addr=a, name=f"member-{i}") for i, a in enumerate(addrs)]
    c = Client(nodes[0].addr)
    assert c.submit("before", key="customer-0") > 0
    assert c.members == addrs and c.redirects == 0
    # The cluster grows to three nodes: every member restarts with the new list. The client still holds the
    # two-node ring: tasks whose keys moved to the new node are redirected, and the client follows.
    addrs.append(free_addr("127.0.0.12"))
    for n in nodes:
        n.restart(["--members", ",".join(addrs)])
    start("--members", ",".join(addrs), addr=addrs[2], name="member-2")
    keys = [f"customer-{i}" for i in range(40)]
    ids = c.submit([Task(f"task {k}", key=k) for k in keys])
    assert c.redirects >= 1, "no task was redirected"
    assert c.members == addrs
    ring = Ring(addrs)
    for k, tid in zip(keys, ids):
        assert ring.node_of_task(tid) == ring.owner(k), f"task of {k} was taken by a node that does not own it"
    assert {ring.owner(k) for k in keys} == set(addrs), "the keys spread over all three nodes"
    assert all(s.state == TaskState.READY for s in c.status(ids)), "status asks the node each id names"
