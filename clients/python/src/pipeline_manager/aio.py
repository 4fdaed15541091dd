"""One asyncio connection to a scheduler node: the handshake, a reader task that routes replies to the
requests waiting for them, and callbacks for what the server pushes (`Leased`, `Revoke`). Used by the
:class:`~pipeline_manager.Worker`.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Callable, Dict, List, Optional, Sequence

from . import pm_pb2 as pb
from .connection import check_welcome, hello, request_id_of
from .errors import ConnectError, Disconnected, ProtocolError, ServerError
from .frame import FrameDecoder, encode
from .options import split_addr

OnPush = Callable[[pb.Envelope], None]


class AsyncConnection:
    """An open, handshaken connection. `request` sends a frame and awaits the reply that echoes its id; `send`
    writes frames that have no reply (`Credit`); `closed` resolves with the reason once the connection ends."""

    def __init__(self, addr: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 welcome: pb.Welcome, on_push: OnPush, decoder: FrameDecoder) -> None:  # fmt: skip
        self.addr = addr
        self.welcome = welcome
        self._reader = reader
        self._writer = writer
        self._on_push = on_push
        self._decoder = decoder
        self._pending: Dict[int, "asyncio.Future[pb.Envelope]"] = {}
        self._next_id = 0
        self.closed: "asyncio.Future[str]" = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._read_loop())

    @classmethod
    async def open(cls, addr: str, *, role: str, token: Optional[str], ssl_ctx: Optional[ssl.SSLContext],
                   client_id: str, timeout: float, on_push: OnPush, capabilities: Sequence[str] = (),
                   queues: Sequence[str] = ()) -> "AsyncConnection":  # fmt: skip
        """Connects and completes the handshake within `timeout` seconds."""
        host, port = split_addr(addr)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ssl_ctx, server_hostname=host if ssl_ctx else None),
                timeout,
            )
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
            raise ConnectError(f"cannot connect to {addr}: {e!r}") from e
        decoder = FrameDecoder()
        try:
            writer.write(encode(hello(role, token, client_id, capabilities, queues)))
            frames: List[pb.Envelope] = []
            while not frames:
                data = await asyncio.wait_for(reader.read(65536), timeout)
                if not data:
                    raise ConnectError(f"{addr} closed the connection during the handshake")
                frames = decoder.feed(data)
            welcome = check_welcome(addr, frames[0])
        except BaseException as e:
            writer.close()
            if isinstance(e, (OSError, asyncio.TimeoutError)):
                raise ConnectError(f"handshake with {addr}: {e!r}") from e
            raise
        conn = cls(addr, reader, writer, welcome, on_push, decoder)
        for env in frames[1:]:
            conn._dispatch(env)
        return conn

    @property
    def is_open(self) -> bool:
        """True until the connection ended."""
        return not self.closed.done()

    def next_id(self) -> int:
        """A fresh request id (never 0)."""
        self._next_id += 1
        return self._next_id

    def send(self, *envs: pb.Envelope) -> None:
        """Queues frames for writing (no reply expected)."""
        if not self.is_open:
            raise Disconnected(f"connection to {self.addr} is closed")
        self._writer.write(b"".join(encode(e) for e in envs))

    async def request(self, make: Callable[[int], pb.Envelope]) -> pb.Envelope:
        """Sends `make(request_id)` and returns the reply. Raises :class:`Disconnected` if the connection ends
        first, and :class:`ServerError` for an `Error` answering the request."""
        rid = self.next_id()
        fut: "asyncio.Future[pb.Envelope]" = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self.send(make(rid))
            await self._writer.drain()
            env = await fut
        finally:
            self._pending.pop(rid, None)
        if env.WhichOneof("kind") == "error":
            raise ServerError(env.error.code, env.error.message)
        return env

    async def close(self) -> None:
        """Closes the connection and waits for the reader to stop."""
        self._finish("closed by the client")
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass

    def _finish(self, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(Disconnected(f"{self.addr}: {reason}"))
        self._pending.clear()
        self._writer.close()

    async def _read_loop(self) -> None:
        reason = "the server closed the connection"
        try:
            while True:
                data = await self._reader.read(256 * 1024)
                if not data:
                    break
                for env in self._decoder.feed(data):
                    self._dispatch(env)
        except ServerError as e:
            reason = str(e)
        except ProtocolError as e:
            reason = str(e)
        except (OSError, asyncio.IncompleteReadError) as e:
            reason = f"read failed: {e!r}"
        finally:
            self._finish(reason)

    def _dispatch(self, env: pb.Envelope) -> None:
        kind = env.WhichOneof("kind")
        if kind == "ping":
            self.send(pb.Envelope(pong=pb.Pong(nonce=env.ping.nonce)))
        elif kind in ("leased", "revoke", "completed"):
            self._on_push(env)
        elif kind == "error" and env.error.request_id == 0:
            raise ServerError(env.error.code, f"{self.addr} closed the connection: {env.error.message}")
        else:
            fut = self._pending.get(request_id_of(env))
            if fut is not None and not fut.done():
                fut.set_result(env)
