"""Errors the client raises. Every error the server reported carries its stable numeric code
(:class:`ErrorCode`, the `ErrorCode` enum of pm.proto) and message."""

from __future__ import annotations

import enum
from typing import List, Optional, Sequence


class ErrorCode(enum.IntEnum):
    """The wire's stable error codes (pm.proto `ErrorCode`). Numbers never change meaning."""

    OK = 0
    MALFORMED_FRAME = 1
    FRAME_TOO_LARGE = 2
    UNSUPPORTED_VERSION = 3
    HANDSHAKE_REQUIRED = 4
    UNKNOWN_MESSAGE = 5
    UNAUTHORIZED = 6
    ROLE_NOT_ALLOWED = 7
    INVALID_TASK = 8
    STORE_FULL = 9
    STORE_FAILED = 10
    STALE_LEASE = 11
    NOT_FOUND = 12
    SHUTTING_DOWN = 13
    TOO_MANY_CONNECTIONS = 14
    TIMEOUT = 15
    LIMIT_EXCEEDED = 16
    INTERNAL = 17
    ALREADY_EXISTS = 18

    @classmethod
    def of(cls, value: int) -> "ErrorCode":
        """The code for `value`; a code newer than this client reads as INTERNAL."""
        try:
            return cls(value)
        except ValueError:
            return cls.INTERNAL


class PmError(Exception):
    """Base class of every error this package raises."""


class ConnectError(PmError):
    """No server could be reached, or the TLS handshake failed."""


class Disconnected(PmError):
    """The connection broke (or the server closed it) before the reply came. For a submit, the tasks may or may
    not be enqueued: resubmit with an idempotency key to make the retry safe."""


class ProtocolError(PmError):
    """The server sent something this client cannot make sense of."""


class ServerError(PmError):
    """The server answered with an error code.

    Attributes:
        code: the server's :class:`ErrorCode`.
        message: the server's explanation.
    """

    def __init__(self, code: int, message: str) -> None:
        self.code = ErrorCode.of(code)
        self.message = message
        super().__init__(f"{self.code.name}: {message}")


class HandshakeError(ServerError):
    """The server refused the Hello (a bad or missing token: UNAUTHORIZED, a protocol version it does not speak:
    UNSUPPORTED_VERSION, its connection limit: TOO_MANY_CONNECTIONS) and closed the connection."""


class SubmitResult:
    """The outcome of one task of a submit.

    Attributes:
        task_id: the task's id (0 when refused).
        code: OK, or why the task was refused (INVALID_TASK, STORE_FULL, ...).
        message: the server's explanation when refused.
        duplicate: the idempotency key matched an earlier task: `task_id` is that task's id.
    """

    __slots__ = ("task_id", "code", "message", "duplicate")

    def __init__(self, task_id: int, code: int, message: str = "", duplicate: bool = False) -> None:
        self.task_id = task_id
        self.code = ErrorCode.of(code)
        self.message = message
        self.duplicate = duplicate

    @property
    def ok(self) -> bool:
        """True when the task is durable and enqueued (or was already, for a duplicate)."""
        return self.code == ErrorCode.OK

    def __repr__(self) -> str:
        if self.ok:
            return f"SubmitResult(task_id={self.task_id}{', duplicate' if self.duplicate else ''})"
        return f"SubmitResult({self.code.name}: {self.message})"


class SubmitError(ServerError):
    """Some tasks of a submit were refused. The others are durable and enqueued.

    Attributes:
        code, message: those of the first refused task.
        results: one :class:`SubmitResult` per task, in order (accepted ones carry their ids).
        index: the position of the first refused task.
    """

    def __init__(self, results: Sequence[SubmitResult]) -> None:
        self.results: List[SubmitResult] = list(results)
        self.index = next(i for i, r in enumerate(self.results) if not r.ok)
        first = self.results[self.index]
        refused = sum(1 for r in self.results if not r.ok)
        super().__init__(first.code, f"task {self.index} refused ({refused} of {len(self.results)}): {first.message}")

    @property
    def task_ids(self) -> List[Optional[int]]:
        """The id of each task, in order; None for a refused one."""
        return [r.task_id if r.ok else None for r in self.results]


class Timeout(PmError, TimeoutError):
    """No reply within the client's timeout (the connection is then closed: its state is unknown), or, for
    `wait`, not every task finished in time."""
