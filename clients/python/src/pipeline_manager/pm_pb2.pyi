from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_PRODUCER: _ClassVar[Role]
    ROLE_AGENT: _ClassVar[Role]
    ROLE_ADMIN: _ClassVar[Role]
    ROLE_PEER: _ClassVar[Role]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OK: _ClassVar[ErrorCode]
    MALFORMED_FRAME: _ClassVar[ErrorCode]
    FRAME_TOO_LARGE: _ClassVar[ErrorCode]
    UNSUPPORTED_VERSION: _ClassVar[ErrorCode]
    HANDSHAKE_REQUIRED: _ClassVar[ErrorCode]
    UNKNOWN_MESSAGE: _ClassVar[ErrorCode]
    UNAUTHORIZED: _ClassVar[ErrorCode]
    ROLE_NOT_ALLOWED: _ClassVar[ErrorCode]
    INVALID_TASK: _ClassVar[ErrorCode]
    STORE_FULL: _ClassVar[ErrorCode]
    STORE_FAILED: _ClassVar[ErrorCode]
    STALE_LEASE: _ClassVar[ErrorCode]
    NOT_FOUND: _ClassVar[ErrorCode]
    SHUTTING_DOWN: _ClassVar[ErrorCode]
    TOO_MANY_CONNECTIONS: _ClassVar[ErrorCode]
    TIMEOUT: _ClassVar[ErrorCode]
    LIMIT_EXCEEDED: _ClassVar[ErrorCode]
    INTERNAL: _ClassVar[ErrorCode]
    ALREADY_EXISTS: _ClassVar[ErrorCode]

class QueueAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUEUE_ACTION_UNSPECIFIED: _ClassVar[QueueAction]
    QUEUE_ACTION_PAUSE: _ClassVar[QueueAction]
    QUEUE_ACTION_RESUME: _ClassVar[QueueAction]
    QUEUE_ACTION_PURGE: _ClassVar[QueueAction]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_READY: _ClassVar[TaskState]
    TASK_STATE_DELAYED: _ClassVar[TaskState]
    TASK_STATE_LEASED: _ClassVar[TaskState]
    TASK_STATE_SUCCEEDED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_DEAD: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]
ROLE_UNSPECIFIED: Role
ROLE_PRODUCER: Role
ROLE_AGENT: Role
ROLE_ADMIN: Role
ROLE_PEER: Role
OK: ErrorCode
MALFORMED_FRAME: ErrorCode
FRAME_TOO_LARGE: ErrorCode
UNSUPPORTED_VERSION: ErrorCode
HANDSHAKE_REQUIRED: ErrorCode
UNKNOWN_MESSAGE: ErrorCode
UNAUTHORIZED: ErrorCode
ROLE_NOT_ALLOWED: ErrorCode
INVALID_TASK: ErrorCode
STORE_FULL: ErrorCode
STORE_FAILED: ErrorCode
STALE_LEASE: ErrorCode
NOT_FOUND: ErrorCode
SHUTTING_DOWN: ErrorCode
TOO_MANY_CONNECTIONS: ErrorCode
TIMEOUT: ErrorCode
LIMIT_EXCEEDED: ErrorCode
INTERNAL: ErrorCode
ALREADY_EXISTS: ErrorCode
QUEUE_ACTION_UNSPECIFIED: QueueAction
QUEUE_ACTION_PAUSE: QueueAction
QUEUE_ACTION_RESUME: QueueAction
QUEUE_ACTION_PURGE: QueueAction
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_READY: TaskState
TASK_STATE_DELAYED: TaskState
TASK_STATE_LEASED: TaskState
TASK_STATE_SUCCEEDED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_DEAD: TaskState
TASK_STATE_CANCELLED: TaskState

class Envelope(_message.Message):
    __slots__ = ("hello", "welcome", "error", "submit", "submit_ack", "credit", "leased", "ack", "nack", "extend", "lease_reply", "stats_request", "stats_reply", "dead_letter_list", "dead_letter_list_reply", "dead_letter_redrive", "dead_letter_redrive_reply", "ping", "pong", "redirect", "cancel", "cancel_reply", "revoke", "reclaim", "reclaim_reply", "status", "status_reply", "watch", "watch_reply", "completed", "app_request", "app_reply", "submit_template", "queue_control", "queue_control_reply", "task_list", "task_list_reply", "dead_letter_delete", "dead_letter_delete_reply", "raft_batch")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_ACK_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    LEASED_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    NACK_FIELD_NUMBER: _ClassVar[int]
    EXTEND_FIELD_NUMBER: _ClassVar[int]
    LEASE_REPLY_FIELD_NUMBER: _ClassVar[int]
    STATS_REQUEST_FIELD_NUMBER: _ClassVar[int]
    STATS_REPLY_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_LIST_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_LIST_REPLY_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_REDRIVE_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_REDRIVE_REPLY_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REPLY_FIELD_NUMBER: _ClassVar[int]
    REVOKE_FIELD_NUMBER: _ClassVar[int]
    RECLAIM_FIELD_NUMBER: _ClassVar[int]
    RECLAIM_REPLY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REPLY_FIELD_NUMBER: _ClassVar[int]
    WATCH_FIELD_NUMBER: _ClassVar[int]
    WATCH_REPLY_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    APP_REQUEST_FIELD_NUMBER: _ClassVar[int]
    APP_REPLY_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_CONTROL_FIELD_NUMBER: _ClassVar[int]
    QUEUE_CONTROL_REPLY_FIELD_NUMBER: _ClassVar[int]
    TASK_LIST_FIELD_NUMBER: _ClassVar[int]
    TASK_LIST_REPLY_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_DELETE_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_DELETE_REPLY_FIELD_NUMBER: _ClassVar[int]
    RAFT_BATCH_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    welcome: Welcome
    error: Error
    submit: Submit
    submit_ack: SubmitAck
    credit: Credit
    leased: Leased
    ack: Ack
    nack: Nack
    extend: Extend
    lease_reply: LeaseReply
    stats_request: StatsRequest
    stats_reply: StatsReply
    dead_letter_list: DeadLetterList
    dead_letter_list_reply: DeadLetterListReply
    dead_letter_redrive: DeadLetterRedrive
    dead_letter_redrive_reply: DeadLetterRedriveReply
    ping: Ping
    pong: Pong
    redirect: Redirect
    cancel: Cancel
    cancel_reply: CancelReply
    revoke: Revoke
    reclaim: Reclaim
    reclaim_reply: ReclaimReply
    status: Status
    status_reply: StatusReply
    watch: Watch
    watch_reply: WatchReply
    completed: Completed
    app_request: AppRequest
    app_reply: AppReply
    submit_template: SubmitTemplate
    queue_control: QueueControl
    queue_control_reply: QueueControlReply
    task_list: TaskList
    task_list_reply: TaskListReply
    dead_letter_delete: DeadLetterDelete
    dead_letter_delete_reply: DeadLetterDeleteReply
    raft_batch: RaftBatch
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., submit: _Optional[_Union[Submit, _Mapping]] = ..., submit_ack: _Optional[_Union[SubmitAck, _Mapping]] = ..., credit: _Optional[_Union[Credit, _Mapping]] = ..., leased: _Optional[_Union[Leased, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., nack: _Optional[_Union[Nack, _Mapping]] = ..., extend: _Optional[_Union[Extend, _Mapping]] = ..., lease_reply: _Optional[_Union[LeaseReply, _Mapping]] = ..., stats_request: _Optional[_Union[StatsRequest, _Mapping]] = ..., stats_reply: _Optional[_Union[StatsReply, _Mapping]] = ..., dead_letter_list: _Optional[_Union[DeadLetterList, _Mapping]] = ..., dead_letter_list_reply: _Optional[_Union[DeadLetterListReply, _Mapping]] = ..., dead_letter_redrive: _Optional[_Union[DeadLetterRedrive, _Mapping]] = ..., dead_letter_redrive_reply: _Optional[_Union[DeadLetterRedriveReply, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., redirect: _Optional[_Union[Redirect, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., cancel_reply: _Optional[_Union[CancelReply, _Mapping]] = ..., revoke: _Optional[_Union[Revoke, _Mapping]] = ..., reclaim: _Optional[_Union[Reclaim, _Mapping]] = ..., reclaim_reply: _Optional[_Union[ReclaimReply, _Mapping]] = ..., status: _Optional[_Union[Status, _Mapping]] = ..., status_reply: _Optional[_Union[StatusReply, _Mapping]] = ..., watch: _Optional[_Union[Watch, _Mapping]] = ..., watch_reply: _Optional[_Union[WatchReply, _Mapping]] = ..., completed: _Optional[_Union[Completed, _Mapping]] = ..., app_request: _Optional[_Union[AppRequest, _Mapping]] = ..., app_reply: _Optional[_Union[AppReply, _Mapping]] = ..., submit_template: _Optional[_Union[SubmitTemplate, _Mapping]] = ..., queue_control: _Optional[_Union[QueueControl, _Mapping]] = ..., queue_control_reply: _Optional[_Union[QueueControlReply, _Mapping]] = ..., task_list: _Optional[_Union[TaskList, _Mapping]] = ..., task_list_reply: _Optional[_Union[TaskListReply, _Mapping]] = ..., dead_letter_delete: _Optional[_Union[DeadLetterDelete, _Mapping]] = ..., dead_letter_delete_reply: _Optional[_Union[DeadLetterDeleteReply, _Mapping]] = ..., raft_batch: _Optional[_Union[RaftBatch, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("version", "role", "client_id", "queues", "capabilities", "auth_token")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    AUTH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    version: int
    role: Role
    client_id: str
    queues: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    auth_token: str
    def __init__(self, version: _Optional[int] = ..., role: _Optional[_Union[Role, str]] = ..., client_id: _Optional[str] = ..., queues: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., auth_token: _Optional[str] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("server_version", "node_id", "ring_epoch", "members", "max_frame_bytes", "max_batch")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RING_EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    server_version: int
    node_id: str
    ring_epoch: int
    members: _containers.RepeatedScalarFieldContainer[str]
    max_frame_bytes: int
    max_batch: int
    def __init__(self, server_version: _Optional[int] = ..., node_id: _Optional[str] = ..., ring_epoch: _Optional[int] = ..., members: _Optional[_Iterable[str]] = ..., max_frame_bytes: _Optional[int] = ..., max_batch: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "request_id")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    request_id: int
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., request_id: _Optional[int] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("payload", "queue", "key", "priority", "delay_ms", "max_attempts", "lease_ms", "idempotency_key", "executors")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    EXECUTORS_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    queue: str
    key: str
    priority: int
    delay_ms: int
    max_attempts: int
    lease_ms: int
    idempotency_key: str
    executors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, payload: _Optional[bytes] = ..., queue: _Optional[str] = ..., key: _Optional[str] = ..., priority: _Optional[int] = ..., delay_ms: _Optional[int] = ..., max_attempts: _Optional[int] = ..., lease_ms: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., executors: _Optional[_Iterable[str]] = ...) -> None: ...

class Submit(_message.Message):
    __slots__ = ("request_id", "tasks", "failover", "notify")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    failover: bool
    notify: bool
    def __init__(self, request_id: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ..., failover: bool = ..., notify: bool = ...) -> None: ...

class SubmitResult(_message.Message):
    __slots__ = ("task_id", "code", "message", "duplicate")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    code: ErrorCode
    message: str
    duplicate: bool
    def __init__(self, task_id: _Optional[int] = ..., code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., duplicate: bool = ...) -> None: ...

class SubmitAck(_message.Message):
    __slots__ = ("request_id", "results")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    results: _containers.RepeatedCompositeFieldContainer[SubmitResult]
    def __init__(self, request_id: _Optional[int] = ..., results: _Optional[_Iterable[_Union[SubmitResult, _Mapping]]] = ...) -> None: ...

class Credit(_message.Message):
    __slots__ = ("queue", "n", "set")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    queue: str
    n: int
    set: bool
    def __init__(self, queue: _Optional[str] = ..., n: _Optional[int] = ..., set: bool = ...) -> None: ...

class LeasedTask(_message.Message):
    __slots__ = ("task_id", "lease_id", "attempt", "deadline_unix_ms", "payload", "queue", "key", "max_attempts")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    lease_id: int
    attempt: int
    deadline_unix_ms: int
    payload: bytes
    queue: str
    key: str
    max_attempts: int
    def __init__(self, task_id: _Optional[int] = ..., lease_id: _Optional[int] = ..., attempt: _Optional[int] = ..., deadline_unix_ms: _Optional[int] = ..., payload: _Optional[bytes] = ..., queue: _Optional[str] = ..., key: _Optional[str] = ..., max_attempts: _Optional[int] = ...) -> None: ...

class Leased(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[LeasedTask]
    def __init__(self, tasks: _Optional[_Iterable[_Union[LeasedTask, _Mapping]]] = ...) -> None: ...

class AckItem(_message.Message):
    __slots__ = ("lease_id", "result")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    result: bytes
    def __init__(self, lease_id: _Optional[int] = ..., result: _Optional[bytes] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("request_id", "items")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    items: _containers.RepeatedCompositeFieldContainer[AckItem]
    def __init__(self, request_id: _Optional[int] = ..., items: _Optional[_Iterable[_Union[AckItem, _Mapping]]] = ...) -> None: ...

class NackItem(_message.Message):
    __slots__ = ("lease_id", "retry_after_ms", "reason", "released", "result", "fail")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FAIL_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    retry_after_ms: int
    reason: str
    released: bool
    result: bytes
    fail: bool
    def __init__(self, lease_id: _Optional[int] = ..., retry_after_ms: _Optional[int] = ..., reason: _Optional[str] = ..., released: bool = ..., result: _Optional[bytes] = ..., fail: bool = ...) -> None: ...

class Nack(_message.Message):
    __slots__ = ("request_id", "items")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    items: _containers.RepeatedCompositeFieldContainer[NackItem]
    def __init__(self, request_id: _Optional[int] = ..., items: _Optional[_Iterable[_Union[NackItem, _Mapping]]] = ...) -> None: ...

class Extend(_message.Message):
    __slots__ = ("request_id", "lease_ids", "extend_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    EXTEND_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    lease_ids: _containers.RepeatedScalarFieldContainer[int]
    extend_ms: int
    def __init__(self, request_id: _Optional[int] = ..., lease_ids: _Optional[_Iterable[int]] = ..., extend_ms: _Optional[int] = ...) -> None: ...

class LeaseReply(_message.Message):
    __slots__ = ("request_id", "codes")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    codes: _containers.RepeatedScalarFieldContainer[ErrorCode]
    def __init__(self, request_id: _Optional[int] = ..., codes: _Optional[_Iterable[_Union[ErrorCode, str]]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    def __init__(self, request_id: _Optional[int] = ...) -> None: ...

class QueueStats(_message.Message):
    __slots__ = ("queue", "ready", "delayed", "leased", "dead", "credits", "agents", "waiting_executor", "paused", "oldest_ready_age_ms", "submitted_per_sec", "completed_per_sec", "lent", "stolen")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    DELAYED_FIELD_NUMBER: _ClassVar[int]
    LEASED_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    WAITING_EXECUTOR_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    OLDEST_READY_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    LENT_FIELD_NUMBER: _ClassVar[int]
    STOLEN_FIELD_NUMBER: _ClassVar[int]
    queue: str
    ready: int
    delayed: int
    leased: int
    dead: int
    credits: int
    agents: int
    waiting_executor: int
    paused: bool
    oldest_ready_age_ms: int
    submitted_per_sec: float
    completed_per_sec: float
    lent: int
    stolen: int
    def __init__(self, queue: _Optional[str] = ..., ready: _Optional[int] = ..., delayed: _Optional[int] = ..., leased: _Optional[int] = ..., dead: _Optional[int] = ..., credits: _Optional[int] = ..., agents: _Optional[int] = ..., waiting_executor: _Optional[int] = ..., paused: bool = ..., oldest_ready_age_ms: _Optional[int] = ..., submitted_per_sec: _Optional[float] = ..., completed_per_sec: _Optional[float] = ..., lent: _Optional[int] = ..., stolen: _Optional[int] = ...) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("request_id", "queues", "connections", "store_disk_bytes", "store_segments", "node_id", "ring_epoch", "members", "advertise", "redirects", "partitions")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    STORE_DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORE_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RING_EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_FIELD_NUMBER: _ClassVar[int]
    REDIRECTS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    queues: _containers.RepeatedCompositeFieldContainer[QueueStats]
    connections: int
    store_disk_bytes: int
    store_segments: int
    node_id: str
    ring_epoch: int
    members: _containers.RepeatedScalarFieldContainer[str]
    advertise: str
    redirects: int
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionState]
    def __init__(self, request_id: _Optional[int] = ..., queues: _Optional[_Iterable[_Union[QueueStats, _Mapping]]] = ..., connections: _Optional[int] = ..., store_disk_bytes: _Optional[int] = ..., store_segments: _Optional[int] = ..., node_id: _Optional[str] = ..., ring_epoch: _Optional[int] = ..., members: _Optional[_Iterable[str]] = ..., advertise: _Optional[str] = ..., redirects: _Optional[int] = ..., partitions: _Optional[_Iterable[_Union[PartitionState, _Mapping]]] = ...) -> None: ...

class PartitionState(_message.Message):
    __slots__ = ("partition", "leader", "term", "commit")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    partition: int
    leader: int
    term: int
    commit: int
    def __init__(self, partition: _Optional[int] = ..., leader: _Optional[int] = ..., term: _Optional[int] = ..., commit: _Optional[int] = ...) -> None: ...

class DeadLetterList(_message.Message):
    __slots__ = ("request_id", "queue", "limit", "after")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    queue: str
    limit: int
    after: int
    def __init__(self, request_id: _Optional[int] = ..., queue: _Optional[str] = ..., limit: _Optional[int] = ..., after: _Optional[int] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("task_id", "queue", "attempts", "reason", "payload")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    queue: str
    attempts: int
    reason: str
    payload: bytes
    def __init__(self, task_id: _Optional[int] = ..., queue: _Optional[str] = ..., attempts: _Optional[int] = ..., reason: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class DeadLetterListReply(_message.Message):
    __slots__ = ("request_id", "tasks", "next_after")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    tasks: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    next_after: int
    def __init__(self, request_id: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ..., next_after: _Optional[int] = ...) -> None: ...

class DeadLetterDelete(_message.Message):
    __slots__ = ("request_id", "queue", "task_ids", "all")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    queue: str
    task_ids: _containers.RepeatedScalarFieldContainer[int]
    all: bool
    def __init__(self, request_id: _Optional[int] = ..., queue: _Optional[str] = ..., task_ids: _Optional[_Iterable[int]] = ..., all: bool = ...) -> None: ...

class DeadLetterDeleteReply(_message.Message):
    __slots__ = ("request_id", "deleted", "code", "message")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    deleted: int
    code: ErrorCode
    message: str
    def __init__(self, request_id: _Optional[int] = ..., deleted: _Optional[int] = ..., code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class QueueControl(_message.Message):
    __slots__ = ("request_id", "queue", "action")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    queue: str
    action: QueueAction
    def __init__(self, request_id: _Optional[int] = ..., queue: _Optional[str] = ..., action: _Optional[_Union[QueueAction, str]] = ...) -> None: ...

class QueueControlReply(_message.Message):
    __slots__ = ("request_id", "code", "message", "paused", "purged")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    PURGED_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    code: ErrorCode
    message: str
    paused: bool
    purged: int
    def __init__(self, request_id: _Optional[int] = ..., code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., paused: bool = ..., purged: _Optional[int] = ...) -> None: ...

class TaskList(_message.Message):
    __slots__ = ("request_id", "queue", "state", "key", "flow_id", "limit", "before")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    queue: str
    state: TaskState
    key: str
    flow_id: str
    limit: int
    before: int
    def __init__(self, request_id: _Optional[int] = ..., queue: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., key: _Optional[str] = ..., flow_id: _Optional[str] = ..., limit: _Optional[int] = ..., before: _Optional[int] = ...) -> None: ...

class TaskListReply(_message.Message):
    __slots__ = ("request_id", "tasks", "next_before")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    tasks: _containers.RepeatedCompositeFieldContainer[TaskStatus]
    next_before: int
    def __init__(self, request_id: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[TaskStatus, _Mapping]]] = ..., next_before: _Optional[int] = ...) -> None: ...

class DeadLetterRedrive(_message.Message):
    __slots__ = ("request_id", "queue", "task_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    queue: str
    task_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, request_id: _Optional[int] = ..., queue: _Optional[str] = ..., task_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class DeadLetterRedriveReply(_message.Message):
    __slots__ = ("request_id", "redriven")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REDRIVEN_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    redriven: int
    def __init__(self, request_id: _Optional[int] = ..., redriven: _Optional[int] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    def __init__(self, nonce: _Optional[int] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    def __init__(self, nonce: _Optional[int] = ...) -> None: ...

class Redirect(_message.Message):
    __slots__ = ("request_id", "node", "ring_epoch", "members")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    RING_EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    node: str
    ring_epoch: int
    members: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[int] = ..., node: _Optional[str] = ..., ring_epoch: _Optional[int] = ..., members: _Optional[_Iterable[str]] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("request_id", "task_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    task_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, request_id: _Optional[int] = ..., task_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class CancelReply(_message.Message):
    __slots__ = ("request_id", "codes")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    codes: _containers.RepeatedScalarFieldContainer[ErrorCode]
    def __init__(self, request_id: _Optional[int] = ..., codes: _Optional[_Iterable[_Union[ErrorCode, str]]] = ...) -> None: ...

class Revoke(_message.Message):
    __slots__ = ("lease_id", "task_id", "reason")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    lease_id: int
    task_id: int
    reason: str
    def __init__(self, lease_id: _Optional[int] = ..., task_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ReclaimItem(_message.Message):
    __slots__ = ("task_id", "attempt", "lease_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    attempt: int
    lease_id: int
    def __init__(self, task_id: _Optional[int] = ..., attempt: _Optional[int] = ..., lease_id: _Optional[int] = ...) -> None: ...

class Reclaim(_message.Message):
    __slots__ = ("request_id", "items")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    items: _containers.RepeatedCompositeFieldContainer[ReclaimItem]
    def __init__(self, request_id: _Optional[int] = ..., items: _Optional[_Iterable[_Union[ReclaimItem, _Mapping]]] = ...) -> None: ...

class ReclaimResult(_message.Message):
    __slots__ = ("task_id", "code", "lease_id", "deadline_unix_ms")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    code: ErrorCode
    lease_id: int
    deadline_unix_ms: int
    def __init__(self, task_id: _Optional[int] = ..., code: _Optional[_Union[ErrorCode, str]] = ..., lease_id: _Optional[int] = ..., deadline_unix_ms: _Optional[int] = ...) -> None: ...

class ReclaimReply(_message.Message):
    __slots__ = ("request_id", "results")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    results: _containers.RepeatedCompositeFieldContainer[ReclaimResult]
    def __init__(self, request_id: _Optional[int] = ..., results: _Optional[_Iterable[_Union[ReclaimResult, _Mapping]]] = ...) -> None: ...

class TaskStatus(_message.Message):
    __slots__ = ("task_id", "code", "state", "queue", "key", "attempts", "max_attempts", "submitted_unix_ms", "started_unix_ms", "finished_unix_ms", "result", "reason", "lease_deadline_unix_ms", "parent_id", "flow_id", "children")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LEASE_DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    code: ErrorCode
    state: TaskState
    queue: str
    key: str
    attempts: int
    max_attempts: int
    submitted_unix_ms: int
    started_unix_ms: int
    finished_unix_ms: int
    result: bytes
    reason: str
    lease_deadline_unix_ms: int
    parent_id: int
    flow_id: str
    children: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, task_id: _Optional[int] = ..., code: _Optional[_Union[ErrorCode, str]] = ..., state: _Optional[_Union[TaskState, str]] = ..., queue: _Optional[str] = ..., key: _Optional[str] = ..., attempts: _Optional[int] = ..., max_attempts: _Optional[int] = ..., submitted_unix_ms: _Optional[int] = ..., started_unix_ms: _Optional[int] = ..., finished_unix_ms: _Optional[int] = ..., result: _Optional[bytes] = ..., reason: _Optional[str] = ..., lease_deadline_unix_ms: _Optional[int] = ..., parent_id: _Optional[int] = ..., flow_id: _Optional[str] = ..., children: _Optional[_Iterable[int]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("request_id", "task_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    task_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, request_id: _Optional[int] = ..., task_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("request_id", "tasks")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    tasks: _containers.RepeatedCompositeFieldContainer[TaskStatus]
    def __init__(self, request_id: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[TaskStatus, _Mapping]]] = ...) -> None: ...

class Watch(_message.Message):
    __slots__ = ("request_id", "task_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    task_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, request_id: _Optional[int] = ..., task_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class WatchReply(_message.Message):
    __slots__ = ("request_id", "codes")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    codes: _containers.RepeatedScalarFieldContainer[ErrorCode]
    def __init__(self, request_id: _Optional[int] = ..., codes: _Optional[_Iterable[_Union[ErrorCode, str]]] = ...) -> None: ...

class Completed(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: TaskStatus
    def __init__(self, task: _Optional[_Union[TaskStatus, _Mapping]] = ...) -> None: ...

class AppRequest(_message.Message):
    __slots__ = ("request_id", "put", "put_pipeline", "get", "list", "delete", "delete_pipeline", "sync", "records")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    PUT_PIPELINE_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    LIST_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    DELETE_PIPELINE_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    put: AppPut
    put_pipeline: PipelinePut
    get: str
    list: AppList
    delete: str
    delete_pipeline: PipelineRef
    sync: AppSync
    records: AppList
    def __init__(self, request_id: _Optional[int] = ..., put: _Optional[_Union[AppPut, _Mapping]] = ..., put_pipeline: _Optional[_Union[PipelinePut, _Mapping]] = ..., get: _Optional[str] = ..., list: _Optional[_Union[AppList, _Mapping]] = ..., delete: _Optional[str] = ..., delete_pipeline: _Optional[_Union[PipelineRef, _Mapping]] = ..., sync: _Optional[_Union[AppSync, _Mapping]] = ..., records: _Optional[_Union[AppList, _Mapping]] = ...) -> None: ...

class AppSync(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AppRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[AppRecord, _Mapping]]] = ...) -> None: ...

class AppRecord(_message.Message):
    __slots__ = ("name", "version", "deleted", "document")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    deleted: bool
    document: bytes
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., deleted: bool = ..., document: _Optional[bytes] = ...) -> None: ...

class AppPut(_message.Message):
    __slots__ = ("document", "replace")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    document: bytes
    replace: bool
    def __init__(self, document: _Optional[bytes] = ..., replace: bool = ...) -> None: ...

class PipelinePut(_message.Message):
    __slots__ = ("app", "definition", "replace")
    APP_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    app: str
    definition: bytes
    replace: bool
    def __init__(self, app: _Optional[str] = ..., definition: _Optional[bytes] = ..., replace: bool = ...) -> None: ...

class PipelineRef(_message.Message):
    __slots__ = ("app", "pipeline")
    APP_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    app: str
    pipeline: str
    def __init__(self, app: _Optional[str] = ..., pipeline: _Optional[str] = ...) -> None: ...

class AppList(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AppReply(_message.Message):
    __slots__ = ("request_id", "code", "message", "apps", "records")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    APPS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    code: ErrorCode
    message: str
    apps: _containers.RepeatedCompositeFieldContainer[AppInfo]
    records: _containers.RepeatedCompositeFieldContainer[AppRecord]
    def __init__(self, request_id: _Optional[int] = ..., code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., apps: _Optional[_Iterable[_Union[AppInfo, _Mapping]]] = ..., records: _Optional[_Iterable[_Union[AppRecord, _Mapping]]] = ...) -> None: ...

class AppInfo(_message.Message):
    __slots__ = ("name", "version", "pipelines", "document")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PIPELINES_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    pipelines: _containers.RepeatedCompositeFieldContainer[PipelineInfo]
    document: bytes
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., pipelines: _Optional[_Iterable[_Union[PipelineInfo, _Mapping]]] = ..., document: _Optional[bytes] = ...) -> None: ...

class PipelineInfo(_message.Message):
    __slots__ = ("name", "queue", "params", "required")
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    name: str
    queue: str
    params: _containers.RepeatedScalarFieldContainer[str]
    required: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., queue: _Optional[str] = ..., params: _Optional[_Iterable[str]] = ..., required: _Optional[_Iterable[str]] = ...) -> None: ...

class SubmitTemplate(_message.Message):
    __slots__ = ("request_id", "app", "pipeline", "tasks", "failover", "notify")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    app: str
    pipeline: str
    tasks: _containers.RepeatedCompositeFieldContainer[TemplateTask]
    failover: bool
    notify: bool
    def __init__(self, request_id: _Optional[int] = ..., app: _Optional[str] = ..., pipeline: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[TemplateTask, _Mapping]]] = ..., failover: bool = ..., notify: bool = ...) -> None: ...

class TemplateTask(_message.Message):
    __slots__ = ("params", "key", "idempotency_key", "priority", "delay_ms")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    params: _containers.ScalarMap[str, str]
    key: str
    idempotency_key: str
    priority: int
    delay_ms: int
    def __init__(self, params: _Optional[_Mapping[str, str]] = ..., key: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., priority: _Optional[int] = ..., delay_ms: _Optional[int] = ...) -> None: ...

class RaftBatch(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RaftItem]
    def __init__(self, items: _Optional[_Iterable[_Union[RaftItem, _Mapping]]] = ...) -> None: ...

class RaftItem(_message.Message):
    __slots__ = ("partition", "message")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    partition: int
    message: RaftMessage
    def __init__(self, partition: _Optional[int] = ..., message: _Optional[_Union[RaftMessage, _Mapping]] = ...) -> None: ...

class RaftMessage(_message.Message):
    __slots__ = ("msg_type", "to", "term", "log_term", "index", "entries", "commit", "snapshot", "reject", "reject_hint", "context", "request_snapshot", "deprecated_priority", "commit_term", "priority")
    MSG_TYPE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    REJECT_HINT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    DEPRECATED_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TERM_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    msg_type: int
    to: int
    term: int
    log_term: int
    index: int
    entries: _containers.RepeatedCompositeFieldContainer[RaftEntry]
    commit: int
    snapshot: RaftSnapshot
    reject: bool
    reject_hint: int
    context: bytes
    request_snapshot: int
    deprecated_priority: int
    commit_term: int
    priority: int
    def __init__(self, msg_type: _Optional[int] = ..., to: _Optional[int] = ..., term: _Optional[int] = ..., log_term: _Optional[int] = ..., index: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[RaftEntry, _Mapping]]] = ..., commit: _Optional[int] = ..., snapshot: _Optional[_Union[RaftSnapshot, _Mapping]] = ..., reject: bool = ..., reject_hint: _Optional[int] = ..., context: _Optional[bytes] = ..., request_snapshot: _Optional[int] = ..., deprecated_priority: _Optional[int] = ..., commit_term: _Optional[int] = ..., priority: _Optional[int] = ..., **kwargs) -> None: ...

class RaftEntry(_message.Message):
    __slots__ = ("entry_type", "term", "index", "data", "sync_log", "context")
    ENTRY_TYPE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SYNC_LOG_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    entry_type: int
    term: int
    index: int
    data: bytes
    sync_log: bool
    context: bytes
    def __init__(self, entry_type: _Optional[int] = ..., term: _Optional[int] = ..., index: _Optional[int] = ..., data: _Optional[bytes] = ..., sync_log: bool = ..., context: _Optional[bytes] = ...) -> None: ...

class RaftSnapshot(_message.Message):
    __slots__ = ("data", "metadata")
    DATA_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    metadata: RaftSnapshotMetadata
    def __init__(self, data: _Optional[bytes] = ..., metadata: _Optional[_Union[RaftSnapshotMetadata, _Mapping]] = ...) -> None: ...

class RaftSnapshotMetadata(_message.Message):
    __slots__ = ("conf_state", "index", "term")
    CONF_STATE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    conf_state: RaftConfState
    index: int
    term: int
    def __init__(self, conf_state: _Optional[_Union[RaftConfState, _Mapping]] = ..., index: _Optional[int] = ..., term: _Optional[int] = ...) -> None: ...

class RaftConfState(_message.Message):
    __slots__ = ("voters", "learners", "voters_outgoing", "learners_next", "auto_leave")
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    VOTERS_OUTGOING_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_NEXT_FIELD_NUMBER: _ClassVar[int]
    AUTO_LEAVE_FIELD_NUMBER: _ClassVar[int]
    voters: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    voters_outgoing: _containers.RepeatedScalarFieldContainer[int]
    learners_next: _containers.RepeatedScalarFieldContainer[int]
    auto_leave: bool
    def __init__(self, voters: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ..., voters_outgoing: _Optional[_Iterable[int]] = ..., learners_next: _Optional[_Iterable[int]] = ..., auto_leave: bool = ...) -> None: ...
