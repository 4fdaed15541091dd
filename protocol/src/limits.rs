//! Protocol version and the default limits. Servers may configure other values; they announce the ones in
//! force in `Welcome`.

/// The protocol version this crate speaks. A server refuses a `Hello` with any other version.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default largest frame body (the bytes after the 4-byte length prefix).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Smallest maximum frame size a server may be configured with (room for a Welcome and an Error).
pub const MIN_MAX_FRAME_BYTES: usize = 1024;

/// Default most tasks in one `Submit`.
pub const DEFAULT_MAX_BATCH: usize = 4096;

/// Default name of the queue a task goes to when it names none.
pub const DEFAULT_QUEUE: &str = "default";

/// Longest queue name, in bytes.
pub const MAX_QUEUE_NAME_BYTES: usize = 128;

/// Longest task key or idempotency key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// Longest client id in `Hello`, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;

/// Most executor names an agent may declare in `Hello.capabilities`.
pub const MAX_CAPABILITIES: usize = 256;

/// Longest executor name (in `Hello.capabilities` and `TaskSpec.executors`), in bytes.
pub const MAX_EXECUTOR_NAME_BYTES: usize = 128;
