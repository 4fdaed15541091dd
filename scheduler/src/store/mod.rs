//! Durable task storage.
//!
//! The scheduler's shard actors own the in-memory view of every task; this module owns what is on disk.
//! Storage sits behind the small [`TaskStore`] trait so that every backend passes one conformance suite:
//!
//! - [`wal`]: the default, our own segmented write-ahead log (preallocated segments, CRC32C per record).
//! - [`sled_store`]: the same contract on top of the `sled` embedded database (`--store sled`).
//! - [`committer`]: the group-commit thread. It is the only caller of a store: it drains every batch that
//!   arrived while the previous `sync` ran, appends them all, syncs once, and only then completes them.
//!
//! Records carry opaque task bodies (`Bytes`): the store never interprets a task, it only keeps the newest
//! state of each live one (its body, attempt count and dead-letter mark), the idempotency keys that have not
//! yet expired, and the outcomes of finished tasks until they expire (at most a configured number of them).

mod batches;
pub mod committer;
pub mod sled_store;
pub mod wal;

#[cfg(test)]
mod conformance;

pub use batches::{Recovery, TaskBatches};

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

/// Most kept results a table sizes itself for on first use (the WAL's live set, each shard): growing a map of
/// ~60 k results rehashed it in one go and stalled its thread for milliseconds. A larger `--max-results` grows
/// the tables past this as they fill.
pub(crate) const MAX_RESERVED_RESULTS: usize = 1 << 20;

/// One change to the durable state. A batch of records is applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A new task. `body` is opaque to the store.
    Enqueue {
        /// Unique id, never reused by this store (see [`Recovered::max_task_id`]).
        task_id: u64,
        /// Encoded task, kept byte for byte.
        body: Bytes,
        /// Optional idempotency key, remembered until it expires, even after the task is gone.
        idempotency: Option<IdemKey>,
    },
    /// The task was leased again: its attempt count is now `attempts`.
    Attempt {
        /// Task concerned.
        task_id: u64,
        /// Attempts made so far, including the lease this record announces.
        attempts: u32,
    },
    /// The task is finished (acknowledged, cancelled or purged) and will never be delivered again.
    Ack {
        /// Task concerned.
        task_id: u64,
    },
    /// The task exceeded its attempts and was moved to the dead-letter set (it stays stored).
    DeadLetter {
        /// Task concerned.
        task_id: u64,
        /// Why, for operators.
        reason: String,
    },
    /// The task leaves the dead-letter set and is ready again, attempt count reset to 0.
    Redrive {
        /// Task concerned.
        task_id: u64,
    },
    /// The next `count` records are one unit: after a crash, recovery finds all of them or none (a task's
    /// follow-ups and its Finish). A backend whose appends are transactions may ignore it.
    Group {
        /// Records in the unit, after this one.
        count: u32,
    },
    /// The task is finished (as [`Record::Ack`]) and its outcome `body` is kept until `expires_unix_ms`, or
    /// until the store holds more than its maximum of results (those that expire soonest go first).
    Finish {
        /// Task concerned.
        task_id: u64,
        /// Wall-clock expiry of the result, ms since the Unix epoch.
        expires_unix_ms: u64,
        /// Encoded outcome, opaque to the store.
        body: Bytes,
    },
}

/// An idempotency key and the moment it may be forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemKey {
    /// The producer's key (scoped by the caller, e.g. `queue/key`).
    pub key: String,
    /// Wall-clock expiry, milliseconds since the Unix epoch.
    pub expires_unix_ms: u64,
}

/// A live task found at recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredTask {
    /// Task id.
    pub task_id: u64,
    /// The body given at enqueue.
    pub body: Bytes,
    /// Newest attempt count (0 if never leased).
    pub attempts: u32,
    /// `Some(reason)` if the task is in the dead-letter set.
    pub dead_reason: Option<String>,
}

/// An idempotency key still remembered at recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredIdem {
    /// The key.
    pub key: String,
    /// The task it was first submitted as.
    pub task_id: u64,
    /// Expiry, ms since the Unix epoch.
    pub expires_unix_ms: u64,
}

/// A kept result found at recovery (see [`Record::Finish`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredResult {
    /// The finished task.
    pub task_id: u64,
    /// Expiry, ms since the Unix epoch.
    pub expires_unix_ms: u64,
    /// The outcome given at finish.
    pub body: Bytes,
}

/// Everything a store knows when it opens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Live tasks (not acked), dead letters included, ordered by task id.
    pub tasks: Vec<RecoveredTask>,
    /// Unexpired idempotency keys (expired ones may or may not be returned; callers re-check expiry).
    pub idempotency: Vec<RecoveredIdem>,
    /// At least the largest task id ever appended to this store, even if that task is long gone.
    /// New ids must be allocated above it.
    pub max_task_id: u64,
    /// Unexpired results, at most the store's maximum, ordered by expiry (then task id).
    pub results: Vec<RecoveredResult>,
}

/// Sizes a store reports for metrics and `pmctl stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Bytes the store occupies on disk (allocated, including preallocation).
    pub disk_bytes: u64,
    /// Segment files (WAL) or 1 (sled).
    pub segments: u64,
    /// Live tasks the store holds.
    pub live_tasks: u64,
    /// Results of finished tasks the store keeps.
    pub results: u64,
}

/// When the committer makes appended records durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncMode {
    /// `fdatasync` after every drained group of batches, before completing any of them (default).
    Always,
    /// Wait up to this long to gather more batches, then sync once and complete them all.
    Batch(Duration),
    /// Never sync; complete as soon as the records are written. Unsafe: a machine crash loses acked tasks.
    None,
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk is full: nothing of the failed batch is durable, and the store stays usable.
    #[error("no space left on device while writing {path}")]
    NoSpace {
        /// File being written.
        path: PathBuf,
    },
    /// An I/O error other than a full disk.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A damaged record that is not a torn tail: the store refuses to open.
    #[error("corrupt record in {path} at offset {offset}: {detail}")]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Byte offset of the bad record in that file.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// A record larger than the configured maximum (or than a segment).
    #[error("record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// Encoded size.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The sled backend failed.
    #[error("sled: {0}")]
    Sled(String),
    /// The committer has stopped (shutdown or an earlier fatal error).
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// Builds an [`StoreError::Io`], mapping `ENOSPC`/`EDQUOT` to [`StoreError::NoSpace`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(code) if code == libc::ENOSPC || code == libc::EDQUOT => StoreError::NoSpace { path },
            _ => StoreError::Io { path, source },
        }
    }
}

/// What [`TaskStore::maintain`] left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Upkeep {
    /// Nothing started is left; the next call can wait.
    Done,
    /// Work is under way; call again soon (between commits).
    Pending,
}

/// Reads live tasks' bodies back from a store, from any thread, while the [`committer`] keeps writing.
///
/// This is how a queued task's payload can live on disk and not in memory: a shard keeps a bounded share of
/// payloads resident and reads the others back when it leases them.
pub trait BodyReader: std::fmt::Debug + Send + Sync + 'static {
    /// The body of live task `task_id`, as given at enqueue (or carried forward by compaction), once its record
    /// was appended; `Ok(None)` if the store holds no such live task (not appended yet, or finished).
    fn read_body(&self, task_id: u64) -> Result<Option<Bytes>, StoreError>;
}

/// A durable home for tasks. Called from a single thread (the [`committer`]); never shared, except through
/// its [`BodyReader`].
pub trait TaskStore: Send + 'static {
    /// Writes `records` in order. They survive a process crash once this returns, and a machine crash
    /// only after [`TaskStore::sync`]. On error nothing of this batch may become visible at recovery
    /// beyond what a torn tail would show, and the store stays usable for later batches.
    fn append(&mut self, records: &[Record]) -> Result<(), StoreError>;
    /// Makes everything appended so far durable (`fdatasync` or equivalent).
    fn sync(&mut self) -> Result<(), StoreError>;
    /// Housekeeping when idle: drop dead segments, compact sparse ones forward, forget expired keys and
    /// results. Must keep every live task, unexpired key and unexpired result within the store's maximum.
    /// `now_unix_ms` is wall-clock time. One call does a bounded amount of work, so commits between calls
    /// never wait long; [`Upkeep::Pending`] asks for another call soon (a compaction is half done).
    fn maintain(&mut self, now_unix_ms: u64) -> Result<Upkeep, StoreError>;
    /// Current sizes.
    fn stats(&self) -> StoreStats;
    /// A reader of this store's live bodies, for other threads; it stays valid while the store works.
    fn body_reader(&self) -> std::sync::Arc<dyn BodyReader>;
}
