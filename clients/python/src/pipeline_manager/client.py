"""The synchronous producer API: :class:`Client` submits tasks, asks their status, waits for them and
cancels them, over one connection per scheduler node.

In a cluster (the node's `Welcome` lists members), a task with a `key` goes to the member that owns the key,
computed with the same ring as the server's; a `Redirect` (the ring changed) is followed: the client adopts
the new ring, splits the tasks again and resends them. A task id names the node that assigned it, so status,
wait and cancel go to that node.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, overload

from . import pm_pb2 as pb
from .connection import Connection
from .errors import ConnectError, ErrorCode, PmError, ProtocolError, ServerError, SubmitError, SubmitResult
from .options import TlsArg, server_list, ssl_context
from .ring import Ring
from .types import Payload, Task, TaskStatus, encode_payload

#: A task as `submit` takes it: a :class:`Task`, or a bare payload (bytes, text, or a JSON value).
TaskLike = Union[Task, Payload]

_MAX_REDIRECTS = 8


class Client:
    """A producer's connection(s) to the scheduler. Thread-safe (one request at a time); cheap to keep open.

    Args:
        servers: one address (`host:port`), a comma-separated list, or a list: the first that answers is used,
            and in a cluster every member it announces.
        token: the producer token, when the server requires one.
        tls: None (plain TCP), True (TLS with the system's CAs), the path of a CA file, or an `ssl.SSLContext`.
        client_id: a name for the server's logs.
        timeout: seconds to wait for a connection or a reply.
        failover: in a cluster, when a key's owner cannot be reached, send its tasks to another member, which
            takes them anyway (per-key order is then not kept). Off by default.
        role: `producer` (default) or `admin` (an admin may also submit).

    Example::

        with Client("127.0.0.1:7070") as c:
            task_id = c.submit({"pipeline": [...]}, queue="ocr")
            status = c.wait(task_id, timeout=60)
    """

    def __init__(self, servers: Union[str, Sequence[str]] = "127.0.0.1:7070", *, token: Optional[str] = None,
                 tls: TlsArg = None, client_id: str = "pipeline-manager-python", timeout: float = 30.0,
                 failover: bool = False, role: str = "producer") -> None:  # fmt: skip
        self._seeds = server_list(servers)
        self._ssl = ssl_context(tls)
        self._token = token
        self._client_id = client_id
        self._timeout = timeout
        self._failover = failover
        self._role = role
        self._conns: Dict[str, Connection] = {}
        self._ring: Optional[Ring] = None
        self._primary: Optional[str] = None
        self._lock = threading.RLock()
        #: Submit requests answered with a `Redirect` (the ring changed) and sent again, since the start.
        self.redirects = 0

    # -- connections ---------------------------------------------------------------------------------------

    def _open(self, addr: str) -> Connection:
        conn = self._conns.get(addr)
        if conn is not None and conn.is_open:
            return conn
        conn = Connection(addr, role=self._role, token=self._token, ssl_ctx=self._ssl,
                          client_id=self._client_id, timeout=self._timeout)  # fmt: skip
        welcome = conn.open()
        self._conns[addr] = conn
        if welcome.members and (self._ring is None or self._ring.epoch != welcome.ring_epoch):
            self._ring = Ring(list(welcome.members))
        return conn

    def _any(self) -> Tuple[str, Connection]:
        """The connection to the first node that answers (the last one used, if still open)."""
        candidates = ([self._primary] if self._primary else []) + self._seeds
        if self._ring:
            candidates += self._ring.members
        errors = []
        for addr in dict.fromkeys(candidates):
            try:
                conn = self._open(addr)
            except ConnectError as e:
                errors.append(str(e))
                continue
            self._primary = addr
            return addr, conn
        raise ConnectError("; ".join(errors) or "no server to connect to")

    def _node_of_task(self, task_id: int) -> Tuple[str, Connection]:
        node = self._ring.node_of_task(task_id) if self._ring else None
        if node is None:
            return self._any()
        return node, self._open(node)

    @property
    def members(self) -> List[str]:
        """The cluster's members as last announced (empty for a single node)."""
        return list(self._ring.members) if self._ring else []

    def close(self) -> None:
        """Closes every connection."""
        with self._lock:
            for c in self._conns.values():
                c.close()
            self._conns.clear()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- submit --------------------------------------------------------------------------------------------

    @overload
    def submit(self, tasks: List[TaskLike], **options: Any) -> List[int]: ...
    @overload
    def submit(self, tasks: TaskLike, **options: Any) -> int: ...

    def submit(self, tasks: Union[TaskLike, List[TaskLike]], *, queue: Optional[str] = None,
               key: Optional[str] = None, priority: Optional[int] = None, delay: Optional[float] = None,
               idempotency_key: Optional[str] = None, executors: Optional[Sequence[str]] = None,
               max_attempts: Optional[int] = None, lease: Optional[float] = None) -> Union[int, List[int]]:  # fmt: skip
        """Submits one task (returns its id) or a list of tasks (returns their ids, in order), once they are
        durable on the scheduler.

        A task is a :class:`Task`, or a bare payload: `bytes` as they are, `str` as UTF-8, a dict as JSON. (A
        list always means several tasks: wrap a list payload in `Task`.) The keyword options apply to every
        task that does not set its own: `queue`, `key`, `priority`, `delay` (seconds), `idempotency_key` (one
        task only), `executors`, `max_attempts`, `lease` (seconds). Lists longer than the server's batch
        limit are sent as several requests, all in flight at once.

        Raises:
            SubmitError: some tasks were refused (INVALID_TASK for an empty or oversized payload or a bad queue
                name, STORE_FULL, ...); it carries the server's code and every task's result; the others are
                enqueued.
            Disconnected: the connection broke before the reply: the tasks may or may not be enqueued;
                resubmit with idempotency keys to make that safe.
        """
        single = not isinstance(tasks, list)
        items: List[TaskLike] = [tasks] if single else list(tasks)  # type: ignore[list-item]
        if idempotency_key is not None and len(items) != 1:
            raise ValueError("idempotency_key= applies to a single task; set Task.idempotency_key per task")
        defaults = Task(b"", queue, key, priority, delay, idempotency_key, executors, max_attempts, lease)
        specs = [_spec(t, defaults) for t in items]
        results = self.submit_specs(specs)
        if any(not r.ok for r in results):
            raise SubmitError(results)
        ids = [r.task_id for r in results]
        return ids[0] if single else ids

    def submit_specs(self, specs: Sequence[pb.TaskSpec]) -> List[SubmitResult]:
        """Submits wire `TaskSpec`s; returns one result per task, in order, without raising for refused tasks.
        Routes keyed tasks to their owners and follows redirects."""
        with self._lock:
            if self._ring is None and any(s.key for s in specs):
                self._any()  # learn the ring (if any) before routing keys
            results: List[Optional[SubmitResult]] = [None] * len(specs)
            pending = list(range(len(specs)))
            for _ in range(_MAX_REDIRECTS):
                pending = self._submit_round(specs, pending, results)
                if not pending:
                    return [r for r in results if r is not None]
            raise ProtocolError(f"tasks still redirected after {_MAX_REDIRECTS} rounds")

    def _submit_round(self, specs: Sequence[pb.TaskSpec], pending: List[int],
                      results: List[Optional[SubmitResult]]) -> List[int]:  # fmt: skip
        """Sends `pending` tasks to their owners (all requests in flight at once); fills `results`; returns the
        indices that were redirected."""
        groups: Dict[str, List[int]] = {}
        for i in pending:
            owner = self._ring.owner(specs[i].key) if self._ring and specs[i].key else None
            groups.setdefault(owner or "", []).append(i)
        sent: List[Tuple[Connection, int, List[int]]] = []
        for owner, idxs in groups.items():
            addr, conn, failover = self._owner_conn(owner)
            frames = []
            for at in range(0, len(idxs), conn.max_batch):
                chunk = idxs[at : at + conn.max_batch]
                rid = conn.next_id()
                submit = pb.Submit(request_id=rid, tasks=[specs[i] for i in chunk], failover=failover)
                frames.append(pb.Envelope(submit=submit))
                sent.append((conn, rid, chunk))
            conn.send(frames)
        redirected: List[int] = []
        for conn, rid, chunk in sent:
            env = conn.wait_for([rid])[rid]
            kind = env.WhichOneof("kind")
            if kind == "submit_ack":
                for i, r in zip(chunk, env.submit_ack.results):
                    results[i] = SubmitResult(r.task_id, r.code, r.message, r.duplicate)
            elif kind == "redirect":
                self._ring = Ring(list(env.redirect.members))
                self.redirects += 1
                redirected.extend(chunk)
            elif kind == "error":
                raise ServerError(env.error.code, env.error.message)
            else:
                raise ProtocolError(f"unexpected reply {kind} to Submit")
        return redirected

    def _owner_conn(self, owner: str) -> Tuple[str, Connection, bool]:
        """The connection to `owner` (any node for ""), or with failover another member's."""
        if not owner:
            addr, conn = self._any()
            return addr, conn, False
        try:
            return owner, self._open(owner), False
        except ConnectError:
            if not self._failover:
                raise
        addr, conn = self._any()
        return addr, conn, True

    # -- status, wait, cancel ------------------------------------------------------------------------------

    def _by_node(self, ids: Sequence[int]) -> Dict[str, Tuple[Connection, List[int]]]:
        out: Dict[str, Tuple[Connection, List[int]]] = {}
        for i in ids:
            addr, conn = self._node_of_task(i)
            out.setdefault(addr, (conn, []))[1].append(i)
        return out

    def _per_node(self, ids: Sequence[int], build: Any) -> Dict[int, pb.Envelope]:
        """Sends one request per node (and per batch) built by `build(rid, ids)`; returns replies by task id."""
        sent = []
        for conn, node_ids in self._by_node(ids).values():
            frames = []
            for at in range(0, len(node_ids), conn.max_batch):
                chunk = node_ids[at : at + conn.max_batch]
                rid = conn.next_id()
                frames.append(build(rid, chunk))
                sent.append((conn, rid, chunk))
            conn.send(frames)
        out: Dict[int, pb.Envelope] = {}
        for conn, rid, chunk in sent:
            env = conn.wait_for([rid])[rid]
            if env.WhichOneof("kind") == "error":
                raise ServerError(env.error.code, env.error.message)
            for pos, i in enumerate(chunk):
                out[i] = (env, pos)  # type: ignore[assignment]
        return out

    @overload
    def status(self, ids: int) -> TaskStatus: ...
    @overload
    def status(self, ids: Sequence[int]) -> List[TaskStatus]: ...

    def status(self, ids: Union[int, Sequence[int]]) -> Union[TaskStatus, List[TaskStatus]]:
        """The status of one task or of several (in order). A task unknown to its node has
        `code == ErrorCode.NOT_FOUND`."""
        single = isinstance(ids, int)
        id_list = [ids] if single else list(ids)  # type: ignore[list-item]
        with self._lock:
            replies = self._per_node(id_list, lambda rid, c: pb.Envelope(status=pb.Status(request_id=rid, task_ids=c)))
        out = []
        for i in id_list:
            env, pos = replies[i]  # type: ignore[misc]
            out.append(TaskStatus.from_pb(env.status_reply.tasks[pos]))
        return out[0] if single else out

    @overload
    def wait(self, ids: int, timeout: Optional[float] = None) -> TaskStatus: ...
    @overload
    def wait(self, ids: Sequence[int], timeout: Optional[float] = None) -> List[TaskStatus]: ...

    def wait(self, ids: Union[int, Sequence[int]], timeout: Optional[float] = None) -> Union[TaskStatus, List[TaskStatus]]:  # fmt: skip
        """Waits until each task finished (SUCCEEDED, FAILED, DEAD or CANCELLED) and returns its status.

        Raises :class:`Timeout` after `timeout` seconds (None: wait as long as it takes), and
        :class:`ServerError` with NOT_FOUND for an id its node does not know.
        """
        single = isinstance(ids, int)
        id_list = [ids] if single else list(ids)  # type: ignore[list-item]
        deadline = time.monotonic() + (timeout if timeout is not None else 10.0 * 365 * 86400)
        with self._lock:
            replies = self._per_node(id_list, lambda rid, c: pb.Envelope(watch=pb.Watch(request_id=rid, task_ids=c)))
            for i in id_list:
                env, pos = replies[i]  # type: ignore[misc]
                if env.watch_reply.codes[pos] != ErrorCode.OK:
                    raise ServerError(env.watch_reply.codes[pos], f"task {i} is not known to its node")
            done: Dict[int, pb.TaskStatus] = {}
            for conn, node_ids in self._by_node(id_list).values():
                done.update(conn.wait_completed(node_ids, deadline))
        out = [TaskStatus.from_pb(done[i]) for i in id_list]
        return out[0] if single else out

    @overload
    def cancel(self, ids: int) -> bool: ...
    @overload
    def cancel(self, ids: Sequence[int]) -> List[bool]: ...

    def cancel(self, ids: Union[int, Sequence[int]]) -> Union[bool, List[bool]]:
        """Cancels tasks for good, durably: True for each one cancelled, False for one unknown or already
        finished. Raises :class:`ServerError` (STORE_FULL, STORE_FAILED) when a cancellation could not be made
        durable: that task stays live."""
        single = isinstance(ids, int)
        id_list = [ids] if single else list(ids)  # type: ignore[list-item]
        with self._lock:
            replies = self._per_node(id_list, lambda rid, c: pb.Envelope(cancel=pb.Cancel(request_id=rid, task_ids=c)))
        out = []
        for i in id_list:
            env, pos = replies[i]  # type: ignore[misc]
            code = ErrorCode.of(env.cancel_reply.codes[pos])
            if code not in (ErrorCode.OK, ErrorCode.NOT_FOUND):
                raise ServerError(code, f"cancelling task {i} was not made durable")
            out.append(code == ErrorCode.OK)
        return out[0] if single else out


def _spec(t: TaskLike, d: Task) -> pb.TaskSpec:
    """The wire spec of `t`, with `d`'s values where `t` sets none."""
    task = t if isinstance(t, Task) else Task(t)

    def pick(name: str) -> Any:
        v = getattr(task, name)
        return getattr(d, name) if v is None else v

    delay, lease = pick("delay"), pick("lease")
    if delay is not None and delay < 0 or lease is not None and lease < 0:
        raise ValueError("delay and lease must not be negative")
    return pb.TaskSpec(
        payload=encode_payload(task.payload),
        queue=pick("queue") or "",
        key=pick("key") or "",
        priority=pick("priority") or 0,
        delay_ms=int(round(delay * 1000)) if delay else 0,
        max_attempts=pick("max_attempts") or 0,
        lease_ms=int(round(lease * 1000)) if lease else 0,
        idempotency_key=pick("idempotency_key") or "",
        executors=list(pick("executors") or ()),
    )


__all__ = ["Client", "TaskLike", "PmError"]
