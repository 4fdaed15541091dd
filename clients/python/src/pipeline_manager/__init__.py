"""pipeline-manager's Python client.

- :class:`Client`: the producer API (synchronous): `submit`, `status`, `wait`, `cancel`; follows cluster
  redirects; TLS and tokens.
- :class:`Worker`: the worker API (asyncio; plain-function handlers run in threads): `@worker.task(queue)`,
  credits, lease extends, ack/nack with retry delays, reconnect and reclaim, graceful stop.
- :mod:`pipeline_manager.pm_pb2`: the wire messages, generated from `pm.proto`.

The protocol itself is described in docs/protocol.md of the repository.
"""

from .client import Client, TaskLike
from .errors import (
    ConnectError,
    Disconnected,
    ErrorCode,
    HandshakeError,
    PmError,
    ProtocolError,
    ServerError,
    SubmitError,
    SubmitResult,
    Timeout,
)
from .ring import Ring
from .types import LeasedTask, Task, TaskState, TaskStatus
from .worker import Fail, Retry, Worker, WorkerStats

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ConnectError",
    "Disconnected",
    "ErrorCode",
    "Fail",
    "HandshakeError",
    "LeasedTask",
    "PmError",
    "ProtocolError",
    "Retry",
    "Ring",
    "ServerError",
    "SubmitError",
    "SubmitResult",
    "Task",
    "TaskLike",
    "TaskState",
    "TaskStatus",
    "Timeout",
    "Worker",
    "WorkerStats",
]
