"""One blocking connection to a scheduler node: the handshake, then requests and the replies that echo their
`request_id`. Used by the synchronous :class:`~pipeline_manager.Client`; not thread-safe on its own.

What it does with frames nobody asked for: a `Ping` is answered with `Pong`; a `Completed` is kept for `wait`;
an `Error` with request id 0 is about the connection, which the server closes: it is raised.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from typing import Dict, Iterable, List, Optional, Sequence

from . import pm_pb2 as pb
from .errors import ConnectError, Disconnected, HandshakeError, PmError, ProtocolError, ServerError, Timeout
from .frame import FrameDecoder, encode
from .options import PROTOCOL_VERSION, split_addr

_ROLES = {"producer": pb.ROLE_PRODUCER, "agent": pb.ROLE_AGENT, "admin": pb.ROLE_ADMIN}


def role_value(role: str) -> int:
    """The wire value of a role name (`producer`, `agent` or `admin`)."""
    try:
        return _ROLES[role]
    except KeyError:
        raise ValueError(f"role {role!r}: expected one of {', '.join(_ROLES)}") from None


def hello(role: str, token: Optional[str], client_id: str, capabilities: Sequence[str] = (),
          queues: Sequence[str] = ()) -> pb.Envelope:  # fmt: skip
    """The `Hello` frame a client opens with."""
    return pb.Envelope(
        hello=pb.Hello(
            version=PROTOCOL_VERSION,
            role=role_value(role),  # type: ignore[arg-type]
            client_id=client_id,
            auth_token=token or "",
            capabilities=list(capabilities),
            queues=list(queues),
        )
    )


def check_welcome(addr: str, env: pb.Envelope) -> pb.Welcome:
    """The Welcome in `env`, or the refusal raised as :class:`HandshakeError`."""
    kind = env.WhichOneof("kind")
    if kind == "error":
        raise HandshakeError(env.error.code, env.error.message)
    if kind != "welcome":
        raise ProtocolError(f"{addr} answered Hello with {kind}")
    if env.welcome.server_version != PROTOCOL_VERSION:
        # A server accepts only the version it was asked for; anything else is not this protocol.
        raise ProtocolError(f"{addr} speaks protocol version {env.welcome.server_version}, not {PROTOCOL_VERSION}")
    return env.welcome


def request_id_of(env: pb.Envelope) -> int:
    """The request id a reply echoes (0 for kinds that carry none)."""
    kind = env.WhichOneof("kind")
    if kind is None:
        return 0
    return int(getattr(getattr(env, kind), "request_id", 0))


class Connection:
    """A blocking connection. `open()` connects and completes the handshake; `send` writes frames; `wait_for`
    reads until the replies to the given request ids are in."""

    def __init__(self, addr: str, *, role: str, token: Optional[str], ssl_ctx: Optional[ssl.SSLContext],
                 client_id: str, timeout: float) -> None:  # fmt: skip
        self.addr = addr
        self.role = role
        self.token = token
        self.ssl_ctx = ssl_ctx
        self.client_id = client_id
        self.timeout = timeout
        self.welcome: Optional[pb.Welcome] = None
        #: Finished tasks reported by `Completed`, by id, until `wait` takes them.
        self.completed: Dict[int, pb.TaskStatus] = {}
        self._sock: Optional[socket.socket] = None
        self._decoder = FrameDecoder()
        self._replies: Dict[int, pb.Envelope] = {}
        self._next_id = 0

    @property
    def is_open(self) -> bool:
        """True while the connection is usable. An idle connection that the server closed meanwhile (it
        restarted, or timed the connection out) is noticed here, before a request is written into it: what the
        socket already holds is read without blocking."""
        sock = self._sock
        if sock is None:
            return False
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        if not pending and not select.select([sock], [], [], 0)[0]:
            return True
        try:
            sock.setblocking(False)
            try:
                data = sock.recv(256 * 1024)
            finally:
                if self._sock is not None:
                    sock.setblocking(True)
        except (BlockingIOError, ssl.SSLWantReadError):
            return True
        except OSError:
            self.close()
            return False
        if not data:
            self.close()
            return False
        try:
            for env in self._decoder.feed(data):
                self._dispatch(env)
        except PmError:
            self.close()
        return self._sock is not None

    @property
    def max_batch(self) -> int:
        """Most tasks (or ids) the server takes in one request."""
        return self.welcome.max_batch if self.welcome and self.welcome.max_batch else 4096

    def open(self) -> pb.Welcome:
        """Connects and sends Hello; returns the Welcome. Raises :class:`ConnectError` or
        :class:`HandshakeError`."""
        host, port = split_addr(self.addr)
        try:
            sock = socket.create_connection((host, port), timeout=self.timeout)
        except OSError as e:
            raise ConnectError(f"cannot connect to {self.addr}: {e}") from e
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_ctx is not None:
            try:
                sock = self.ssl_ctx.wrap_socket(sock, server_hostname=host)
            except (ssl.SSLError, OSError) as e:
                sock.close()
                raise ConnectError(f"TLS handshake with {self.addr}: {e}") from e
        self._sock = sock
        self._decoder = FrameDecoder()
        self._replies.clear()
        try:
            self.send([hello(self.role, self.token, self.client_id)])
            deadline = time.monotonic() + self.timeout
            frames: List[pb.Envelope] = []
            while not frames:
                frames = self._read(deadline)
            self.welcome = check_welcome(self.addr, frames[0])
        except Exception:
            self.close()
            raise
        for env in frames[1:]:
            self._dispatch(env)
        return self.welcome

    def next_id(self) -> int:
        """A fresh request id (never 0)."""
        self._next_id += 1
        return self._next_id

    def send(self, envs: Iterable[pb.Envelope]) -> None:
        """Writes the frames in one go."""
        if self._sock is None:
            raise Disconnected(f"connection to {self.addr} is closed")
        try:
            self._sock.sendall(b"".join(encode(e) for e in envs))
        except OSError as e:
            self.close()
            raise Disconnected(f"write to {self.addr} failed: {e}") from e

    def wait_for(self, rids: Iterable[int], timeout: Optional[float] = None) -> Dict[int, pb.Envelope]:
        """Reads until a reply to each of `rids` is in; returns them by id."""
        want = set(rids)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not want.issubset(self._replies):
            for env in self._read(deadline):
                self._dispatch(env)
        return {rid: self._replies.pop(rid) for rid in want}

    def wait_completed(self, ids: Iterable[int], deadline: float) -> Dict[int, pb.TaskStatus]:
        """Reads until a `Completed` for each of `ids` is in (or `deadline`, a `time.monotonic()` value)."""
        want = set(ids)
        while not want.issubset(self.completed):
            for env in self._read(deadline, wait_timeout=True):
                self._dispatch(env)
        return {i: self.completed.pop(i) for i in want}

    def close(self) -> None:
        """Closes the socket (idempotent)."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _read(self, deadline: float, wait_timeout: bool = False) -> List[pb.Envelope]:
        if self._sock is None:
            raise Disconnected(f"connection to {self.addr} is closed")
        left = deadline - time.monotonic()
        if left <= 0:
            if not wait_timeout:
                self.close()
            raise Timeout(f"no reply from {self.addr} in time")
        self._sock.settimeout(left)
        try:
            data = self._sock.recv(256 * 1024)
        except (socket.timeout, TimeoutError) as e:
            if not wait_timeout:
                self.close()
            raise Timeout(f"no reply from {self.addr} in time") from e
        except OSError as e:
            self.close()
            raise Disconnected(f"read from {self.addr} failed: {e}") from e
        if not data:
            self.close()
            raise Disconnected(f"{self.addr} closed the connection")
        try:
            return self._decoder.feed(data)
        except ProtocolError:
            self.close()
            raise

    def _dispatch(self, env: pb.Envelope) -> None:
        kind = env.WhichOneof("kind")
        if kind == "ping":
            self.send([pb.Envelope(pong=pb.Pong(nonce=env.ping.nonce))])
        elif kind == "completed":
            self.completed[env.completed.task.task_id] = env.completed.task
        elif kind == "error" and env.error.request_id == 0:
            # About the connection: the server closes it after this frame.
            self.close()
            raise ServerError(env.error.code, f"{self.addr} closed the connection: {env.error.message}")
        else:
            rid = request_id_of(env)
            if rid:
                self._replies[rid] = env
