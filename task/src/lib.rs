//! What a task is, above the wire: the task JSON that travels as a task's payload, the pipeline templates
//! producers fill with parameters, and the ring that places task keys on the nodes of a cluster.
//!
//! The wire itself (messages, frames, limits, error codes) is `pm-protocol`; this crate reads and writes the
//! documents those messages carry.
//!
//! - [`pipeline`]: the task JSON (both dialects of the original project) parsed into a `TaskSpec`, follow-up
//!   tasks, and the executors a task needs.
//! - [`retry`]: a task's retry policy (`retry`: attempts, backoff, exit codes not worth retrying).
//! - [`template`]: applications and pipeline templates, filled in safely with a producer's parameters.
//! - [`ring`]: rendezvous hashing of task keys onto the scheduler nodes of a cluster.
//! - [`partition`]: a fixed number of partitions, each key in one, each partition on a few members (its replicas).

pub mod partition;
pub mod pipeline;
pub mod retry;
pub mod ring;
pub mod template;
