"""The values the API takes and returns: tasks to submit, task states and statuses, leased tasks."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Union

from . import pm_pb2 as pb
from .errors import ErrorCode

#: A task's payload as the API takes it: bytes as they are, text as UTF-8, anything else as JSON.
Payload = Union[bytes, str, dict, list]


def encode_payload(payload: Any) -> bytes:
    """The bytes sent for `payload`: bytes unchanged, `str` as UTF-8, other values as compact JSON."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, separators=(",", ":")).encode()


class TaskState(enum.IntEnum):
    """Where a task is in its life (pm.proto `TaskState`). READY, DELAYED and LEASED are live."""

    UNSPECIFIED = 0
    READY = 1
    DELAYED = 2
    LEASED = 3
    SUCCEEDED = 4
    FAILED = 5
    DEAD = 6
    CANCELLED = 7

    @property
    def finished(self) -> bool:
        """True for the final states (DEAD is final unless the task is redriven)."""
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.DEAD, TaskState.CANCELLED)


@dataclass
class Task:
    """One task to submit, with its own options. Options left unset take the values given to
    :meth:`Client.submit`.

    Attributes:
        payload: the task document (a pipeline JSON for `pm-agent`; anything for your own workers).
        queue: the queue (empty: `default`).
        key: ordering and routing key: in a cluster, the node owning the key takes the task.
        priority: higher first; equal priorities in submit order.
        delay: seconds before the task may be leased.
        idempotency_key: a repeat submit with the same key (per queue, within the server's window) returns
            the first task's id and enqueues nothing.
        executors: executors an agent must have to be leased the task.
        max_attempts: deliveries before the task is dead-lettered (0: the server's default).
        lease: lease length in seconds (None: the server's default).
    """

    payload: Payload
    queue: Optional[str] = None
    key: Optional[str] = None
    priority: Optional[int] = None
    delay: Optional[float] = None
    idempotency_key: Optional[str] = None
    executors: Optional[Sequence[str]] = None
    max_attempts: Optional[int] = None
    lease: Optional[float] = None


@dataclass
class TaskStatus:
    """What the scheduler knows of one task (pm.proto `TaskStatus`).

    `code` is OK, or NOT_FOUND (unknown to the node, or finished longer ago than it keeps outcomes). `result`
    is the document the worker acked (or failed) with; `reason` says why a task failed, or why a live task is
    not running now.
    """

    task_id: int
    code: ErrorCode
    state: TaskState
    queue: str = ""
    key: str = ""
    attempts: int = 0
    max_attempts: int = 0
    submitted_unix_ms: int = 0
    started_unix_ms: int = 0
    finished_unix_ms: int = 0
    result: bytes = b""
    reason: str = ""
    lease_deadline_unix_ms: int = 0
    parent_id: int = 0
    flow_id: str = ""
    children: List[int] = field(default_factory=list)

    @classmethod
    def from_pb(cls, s: pb.TaskStatus) -> "TaskStatus":
        """Converts the wire message."""
        return cls(
            task_id=s.task_id,
            code=ErrorCode.of(s.code),
            state=TaskState(s.state) if s.state in TaskState._value2member_map_ else TaskState.UNSPECIFIED,
            queue=s.queue,
            key=s.key,
            attempts=s.attempts,
            max_attempts=s.max_attempts,
            submitted_unix_ms=s.submitted_unix_ms,
            started_unix_ms=s.started_unix_ms,
            finished_unix_ms=s.finished_unix_ms,
            result=bytes(s.result),
            reason=s.reason,
            lease_deadline_unix_ms=s.lease_deadline_unix_ms,
            parent_id=s.parent_id,
            flow_id=s.flow_id,
            children=list(s.children),
        )

    @property
    def finished(self) -> bool:
        """True once the task is in a final state."""
        return self.state.finished

    def result_json(self) -> Any:
        """The result document parsed as JSON (None when empty)."""
        return json.loads(self.result) if self.result else None


@dataclass
class LeasedTask:
    """A task delivered to a worker.

    Attributes:
        task_id: the task's id.
        lease_id: this delivery's lease (the worker quotes it to ack, nack and extend; it changes when the
            worker reclaims the task after a reconnect).
        attempt: 1 for the first delivery.
        payload: the task document as submitted.
        queue, key, max_attempts: as submitted (max_attempts resolved to the server's default).
    """

    task_id: int
    lease_id: int
    attempt: int
    payload: bytes
    queue: str
    key: str
    max_attempts: int
    deadline_unix_ms: int

    @classmethod
    def from_pb(cls, t: pb.LeasedTask) -> "LeasedTask":
        """Converts the wire message."""
        return cls(t.task_id, t.lease_id, t.attempt, bytes(t.payload), t.queue, t.key, t.max_attempts,
                   t.deadline_unix_ms)  # fmt: skip

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)

    def text(self) -> str:
        """The payload as UTF-8 text."""
        return self.payload.decode()
