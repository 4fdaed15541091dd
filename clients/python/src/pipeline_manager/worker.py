"""The worker API (the agent role): register a handler per queue, then run.

    worker = Worker("127.0.0.1:7070", concurrency=4)

    @worker.task("emails")
    async def send(task: LeasedTask):
        ...                      # return a result (bytes, str or a JSON value) to ack with it
        raise Retry(delay=30)    # or: fail this attempt, deliver again in 30 s
        raise Fail("bad input")  # or: retrying cannot help, the task ends as FAILED

    asyncio.run(worker.run())    # or worker.run_sync(), which also stops on SIGTERM/SIGINT

What the worker does for you, as the protocol asks of an agent (docs/protocol.md):

- **Credits.** It grants `concurrency` credits per queue. Each leased task uses one; an ack does not give it
  back, so the worker grants one more each time a task finishes.
- **Extends.** While a handler runs, its lease is extended every third of `extend` seconds (the first time
  sooner if the lease is shorter). The extends ask for an explicit length, so the worker never compares the
  server's `deadline_unix_ms` with its own clock beyond that first estimate.
- **Ack, nack.** A return acks with the result; :class:`Retry` nacks with its delay; :class:`Fail` nacks with
  `fail`; any other exception nacks with an exponential backoff (`retry_delay` doubled per attempt, at most
  `max_retry_delay`). A revoked (cancelled) task, or one whose lease was lost, is cancelled and neither acked
  nor nacked.
- **Reconnect and reclaim.** When the connection breaks, running handlers go on; the worker reconnects with
  backoff, first reclaims the tasks it still runs (their new lease ids are used for their acks), stops those
  the server says are no longer its own, then grants its credits again.
- **Graceful stop.** :meth:`Worker.stop` withdraws the credits, lets running handlers finish for up to
  `drain_timeout` seconds, then cancels the rest and nacks them for immediate redelivery.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import signal
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import pm_pb2 as pb
from .aio import AsyncConnection
from .errors import ConnectError, Disconnected, ErrorCode, HandshakeError, PmError
from .options import TlsArg, server_list, ssl_context
from .types import LeasedTask, encode_payload

log = logging.getLogger("pipeline_manager.worker")

#: A handler: takes the leased task, returns the result to ack with (None, bytes, str or a JSON value). May
#: be a coroutine function, or a plain function (run in a thread).
Handler = Callable[[LeasedTask], Union[Any, Awaitable[Any]]]

_STOPPED_REASON = "the worker stopped before the task finished"
#: Seconds between the Pings of a worker's connection.
_PING_EVERY = 30.0


class Retry(Exception):
    """Raised by a handler: this attempt failed; deliver the task again after `delay` seconds (None: the
    worker's backoff). Past the task's `max_attempts` the task is dead-lettered instead."""

    def __init__(self, reason: str = "", *, delay: Optional[float] = None, result: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.result = result


class Fail(Exception):
    """Raised by a handler: retrying cannot help (the input is bad): the task ends at once as FAILED, with
    `reason` and `result` kept in its status."""

    def __init__(self, reason: str = "", *, result: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result


@dataclass
class _Running:
    """A task the worker runs: its current lease and the handler's asyncio task."""

    task: LeasedTask
    lease_id: int
    job: "Optional[asyncio.Task[None]]" = None
    next_extend: float = 0.0
    lost: bool = False


@dataclass
class WorkerStats:
    """Counts since the worker started."""

    leased: int = 0
    acked: int = 0
    nacked: int = 0
    lost: int = 0
    reconnects: int = 0
    reclaimed: int = 0


class Worker:
    """Runs handlers for leased tasks (see the module documentation for what it takes care of).

    Args:
        servers: the scheduler node's address (`host:port`); with several, the next is tried after a failure.
        token: the agent token, when the server requires one.
        tls: None, True, a CA file path or an `ssl.SSLContext` (as for :class:`Client`).
        client_id: a name for the server's logs.
        capabilities: executors this worker has (capability routing); empty: it takes any task.
        concurrency: handlers running at once per queue (credits granted per queue).
        extend: lease length, in seconds, that each extend asks for; extends go out every third of it.
        retry_delay, max_retry_delay: backoff of tasks whose handler raised an unexpected exception.
        drain_timeout: how long :meth:`stop` lets running handlers finish.
        timeout: connect and handshake timeout, in seconds.
        reconnect_delay, max_reconnect_delay: reconnect backoff, in seconds.
    """

    def __init__(self, servers: Union[str, Sequence[str]] = "127.0.0.1:7070", *, token: Optional[str] = None,
                 tls: TlsArg = None, client_id: str = "pipeline-manager-python-worker",
                 capabilities: Sequence[str] = (), concurrency: int = 1, extend: float = 30.0,
                 retry_delay: float = 1.0, max_retry_delay: float = 60.0, drain_timeout: float = 30.0,
                 timeout: float = 10.0, reconnect_delay: float = 0.1,
                 max_reconnect_delay: float = 5.0) -> None:  # fmt: skip
        if concurrency < 1 or extend <= 0:
            raise ValueError("concurrency must be at least 1 and extend more than 0")
        self._servers = server_list(servers)
        self._token = token
        self._ssl = ssl_context(tls)
        self._client_id = client_id
        self._capabilities = list(capabilities)
        self._concurrency = concurrency
        self._extend = extend
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._drain_timeout = drain_timeout
        self._timeout = timeout
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._handlers: Dict[str, Tuple[Handler, int]] = {}
        self._running: Dict[int, _Running] = {}
        self._conn: Optional[AsyncConnection] = None
        self._connected: Optional[asyncio.Event] = None
        self._wake: Optional[asyncio.Event] = None
        self._stopping = False
        self._drain_deadline: Optional[float] = None
        self.stats = WorkerStats()

    # -- registration --------------------------------------------------------------------------------------

    def task(self, queue: str = "default", *, concurrency: Optional[int] = None) -> Callable[[Handler], Handler]:
        """Decorator: `fn` handles the tasks of `queue` (at most `concurrency` at once; default: the
        worker's)."""

        def register(fn: Handler) -> Handler:
            self.handle(queue, fn, concurrency=concurrency)
            return fn

        return register

    def handle(self, queue: str, fn: Handler, *, concurrency: Optional[int] = None) -> None:
        """Makes `fn` the handler of `queue`."""
        self._handlers[queue or "default"] = (fn, concurrency or self._concurrency)

    @property
    def running(self) -> int:
        """Handlers running now."""
        return len(self._running)

    # -- running -------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops gracefully: no new tasks; running ones get `drain_timeout` seconds to finish. Safe to call from
        a signal handler or another thread's `loop.call_soon_threadsafe`."""
        if self._stopping:
            return
        self._stopping = True
        self._drain_deadline = time.monotonic() + self._drain_timeout
        if self._wake is not None:
            self._wake.set()

    def run_sync(self, handle_signals: bool = True) -> None:
        """Runs the worker in a new event loop until it stops (on SIGTERM or SIGINT too, unless
        `handle_signals` is False). Plain-function handlers make this a fully synchronous worker."""

        async def main() -> None:
            if handle_signals:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, self.stop)
            await self.run()

        asyncio.run(main())

    async def run(self) -> None:
        """Connects, takes tasks and runs them until :meth:`stop` (then drains). Reconnects by itself. Raises
        :class:`HandshakeError` when the server refuses the worker (a bad token: retrying cannot help)."""
        if not self._handlers:
            raise ValueError("no handler registered: use @worker.task(queue) or worker.handle(queue, fn)")
        self._connected, self._wake = asyncio.Event(), asyncio.Event()
        if self._stopping:
            self._wake.set()
        heartbeat = asyncio.ensure_future(self._heartbeat())
        try:
            await self._serve()
        finally:
            heartbeat.cancel()
            for r in list(self._running.values()):
                r.lost = True
                if r.job:
                    r.job.cancel()
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

    async def _serve(self) -> None:
        backoff, attempt = self._reconnect_delay, 0
        assert self._connected is not None and self._wake is not None
        while True:
            if self._stopping and (not self._running or self._drained()):
                return
            addr = self._servers[attempt % len(self._servers)]
            try:
                conn = await AsyncConnection.open(
                    addr, role="agent", token=self._token, ssl_ctx=self._ssl, client_id=self._client_id,
                    timeout=self._timeout, on_push=self._on_push, capabilities=self._capabilities,
                    queues=list(self._handlers),
                )  # fmt: skip
            except HandshakeError as e:
                if e.code in (ErrorCode.UNAUTHORIZED, ErrorCode.UNSUPPORTED_VERSION, ErrorCode.LIMIT_EXCEEDED):
                    raise
                log.warning("%s refused the worker: %s", addr, e)
                conn = None
            except (ConnectError, PmError) as e:
                log.warning("cannot connect: %s", e)
                conn = None
            if conn is None:
                attempt += 1
                await self._sleep_or_wake(backoff)
                backoff = min(backoff * 2, self._max_reconnect_delay)
                continue
            backoff = self._reconnect_delay
            try:
                await self._session(conn)
            except Disconnected as e:
                log.info("connection lost: %s", e)
            finally:
                self._conn = None
                self._connected.clear()
                await conn.close()
            if not self._stopping or self._running:
                self.stats.reconnects += 1

    async def _session(self, conn: AsyncConnection) -> None:
        """One connection's life: reclaim first, then credits, then wait for the end or for the drain."""
        assert self._connected is not None and self._wake is not None
        await self._reclaim(conn)
        withdrawn = False
        if not self._stopping:
            for queue, (_, limit) in self._handlers.items():
                busy = sum(1 for r in self._running.values() if r.task.queue == queue)
                conn.send(pb.Envelope(credit=pb.Credit(queue=queue, n=max(0, limit - busy), set=True)))
        self._conn = conn
        self._connected.set()
        while conn.is_open:
            waker = asyncio.ensure_future(self._wake.wait())
            left = None if self._drain_deadline is None else max(0.0, self._drain_deadline - time.monotonic())
            await asyncio.wait([conn.closed, waker], timeout=left, return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
            self._wake.clear()
            if not self._stopping:
                continue
            if not withdrawn and conn.is_open:
                for queue in self._handlers:
                    conn.send(pb.Envelope(credit=pb.Credit(queue=queue, n=0, set=True)))
                withdrawn = True
            if not self._running:
                return
            if self._drained():
                await self._cancel_running()
                return

    def _drained(self) -> bool:
        return self._drain_deadline is not None and time.monotonic() >= self._drain_deadline

    async def _cancel_running(self) -> None:
        """Past the drain timeout: cancels the handlers still running; each nacks for immediate redelivery."""
        jobs = [r.job for r in self._running.values() if r.job]
        for j in jobs:
            j.cancel()
        await asyncio.wait(jobs, timeout=5.0)

    async def _sleep_or_wake(self, seconds: float) -> None:
        assert self._wake is not None
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _reclaim(self, conn: AsyncConnection) -> None:
        """Takes back the leases of the tasks still running, before any other request on `conn`."""
        live = [r for r in self._running.values() if not r.lost]
        for at in range(0, len(live), conn.welcome.max_batch or 4096):
            chunk = live[at : at + (conn.welcome.max_batch or 4096)]
            items = [pb.ReclaimItem(task_id=r.task.task_id, attempt=r.task.attempt, lease_id=r.lease_id) for r in chunk]
            env = await conn.request(lambda rid: pb.Envelope(reclaim=pb.Reclaim(request_id=rid, items=items)))
            for r, res in zip(chunk, env.reclaim_reply.results):
                if res.code == ErrorCode.OK:
                    r.lease_id = res.lease_id
                    r.next_extend = time.monotonic() + self._first_extend(res.deadline_unix_ms)
                    self.stats.reclaimed += 1
                else:
                    log.warning("task %d is no longer this worker's (%s): stopping it", r.task.task_id,
                                ErrorCode.of(res.code).name)  # fmt: skip
                    self._lose(r)

    def _lose(self, r: _Running) -> None:
        r.lost = True
        self.stats.lost += 1
        if r.job:
            r.job.cancel()

    def _first_extend(self, deadline_unix_ms: int) -> float:
        """Seconds until the first extend of a new lease: a third of what is left of it by this machine's clock,
        at most a third of `extend` (a clock ahead of the server's makes it sooner, never later than that)."""
        left = deadline_unix_ms / 1000.0 - time.time()
        return max(0.0, min(self._extend / 3.0, left / 3.0))

    # -- pushed frames ---------------------------------------------------------------------------------------

    def _on_push(self, env: pb.Envelope) -> None:
        kind = env.WhichOneof("kind")
        if kind == "leased":
            for t in env.leased.tasks:
                self._start(LeasedTask.from_pb(t))
        elif kind == "revoke":
            for r in self._running.values():
                if r.lease_id == env.revoke.lease_id:
                    log.info("task %d revoked (%s)", r.task.task_id, env.revoke.reason)
                    self._lose(r)

    def _start(self, task: LeasedTask) -> None:
        self.stats.leased += 1
        r = _Running(task, task.lease_id, next_extend=time.monotonic() + self._first_extend(task.deadline_unix_ms))
        self._running[task.task_id] = r
        r.job = asyncio.ensure_future(self._run_job(r))

    # -- one task ----------------------------------------------------------------------------------------------

    async def _run_job(self, r: _Running) -> None:
        task = r.task
        try:
            if self._stopping:
                raise asyncio.CancelledError()
            handler, _ = self._handlers.get(task.queue) or self._handlers.get("default") or (None, 0)
            if handler is None:
                raise Fail(f"this worker has no handler for queue {task.queue!r}")
            if inspect.iscoroutinefunction(handler):
                value = await handler(task)
            else:
                loop = asyncio.get_running_loop()
                value = await loop.run_in_executor(None, functools.partial(handler, task))
                if inspect.isawaitable(value):
                    value = await value
            item: pb.Envelope = _ack(r, value)
        except Retry as e:
            delay = e.delay if e.delay is not None else self._backoff(task.attempt)
            item = _nack(r, e.reason or "retry", delay, e.result, fail=False)
        except Fail as e:
            item = _nack(r, e.reason or "failed", 0.0, e.result, fail=True)
        except asyncio.CancelledError:
            if r.lost:
                self._done(r)
                return
            item = _nack(r, _STOPPED_REASON, 0.0, None, fail=False)
        except Exception as e:  # the handler's own failure: retry with backoff
            log.warning("task %d failed: %r", task.task_id, e)
            item = _nack(r, f"{type(e).__name__}: {e}", self._backoff(task.attempt), None, fail=False)
        try:
            await self._settle(r, item)
        finally:
            self._done(r)

    def _backoff(self, attempt: int) -> float:
        return min(self._max_retry_delay, self._retry_delay * (2 ** max(0, attempt - 1)))

    async def _settle(self, r: _Running, item: pb.Envelope) -> None:
        """Sends the ack or nack, quoting the lease id in force (a reclaim may change it), until the server
        answered or the lease is lost."""
        assert self._connected is not None
        kind = item.WhichOneof("kind")
        while not r.lost:
            await self._connected.wait()
            conn = self._conn
            if conn is None or r.lost:
                continue
            for it in getattr(item, kind).items:
                it.lease_id = r.lease_id

            def make(rid: int) -> pb.Envelope:
                getattr(item, kind).request_id = rid
                return item

            try:
                env = await conn.request(make)
            except Disconnected:
                await asyncio.sleep(0.01)
                continue
            code = ErrorCode.of(env.lease_reply.codes[0]) if env.lease_reply.codes else ErrorCode.INTERNAL
            if code == ErrorCode.OK:
                if kind == "ack":
                    self.stats.acked += 1
                else:
                    self.stats.nacked += 1
            else:
                log.warning("%s of task %d answered %s", kind, r.task.task_id, code.name)
            return

    def _done(self, r: _Running) -> None:
        if self._running.get(r.task.task_id) is r:
            del self._running[r.task.task_id]
        conn = self._conn
        if not self._stopping and conn is not None and conn.is_open:
            conn.send(pb.Envelope(credit=pb.Credit(queue=r.task.queue, n=1)))
        if self._stopping and self._wake is not None:
            self._wake.set()

    async def _heartbeat(self) -> None:
        """Extends the leases that are due, in one Extend per tick."""
        tick = max(0.02, min(1.0, self._extend / 6.0))
        last_ping = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            conn = self._conn
            if conn is None or not conn.is_open:
                continue
            now = time.monotonic()
            if now - last_ping >= _PING_EVERY:
                # Keeps an idle connection within the server's idle timeout (the server never pings).
                conn.send(pb.Envelope(ping=pb.Ping(nonce=int(now))))
                last_ping = now
            due = [r for r in self._running.values() if not r.lost and r.next_extend <= now]
            if not due:
                continue
            for r in due:
                r.next_extend = now + self._extend / 3.0
            sent = [(r, r.lease_id) for r in due]
            ms = int(self._extend * 1000)
            try:
                env = await conn.request(
                    lambda rid: pb.Envelope(extend=pb.Extend(request_id=rid, lease_ids=[i for _, i in sent], extend_ms=ms))
                )
            except Disconnected:
                continue
            except PmError as e:
                log.warning("extend refused: %s", e)
                continue
            for (r, lease_id), code in zip(sent, env.lease_reply.codes):
                if code == ErrorCode.STALE_LEASE and r.lease_id == lease_id and self._running.get(r.task.task_id) is r:
                    log.warning("lease of task %d lost: stopping it", r.task.task_id)
                    self._lose(r)


def _ack(r: _Running, value: Any) -> pb.Envelope:
    result = b"" if value is None else encode_payload(value)
    return pb.Envelope(ack=pb.Ack(items=[pb.AckItem(lease_id=r.lease_id, result=result)]))


def _nack(r: _Running, reason: str, delay: float, result: Any, *, fail: bool) -> pb.Envelope:
    item = pb.NackItem(
        lease_id=r.lease_id,
        retry_after_ms=int(max(0.0, delay) * 1000),
        reason=reason[:1024],
        result=b"" if result is None else encode_payload(result),
        fail=fail,
    )
    return pb.Envelope(nack=pb.Nack(items=[item]))


__all__ = ["Worker", "Retry", "Fail", "Handler", "WorkerStats"]
