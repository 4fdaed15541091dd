//! The commands of `pmctl`, one module per command or command group (`main.rs` holds the tree and calls
//! each module's entry point with the connection flags and the command's arguments):
//!
//! - [`submit`]: put tasks on queues, from task files or from a stored pipeline and its parameters.
//! - [`cancel`]: cancel tasks.
//! - [`status`]: what became of tasks; also the status lookup `wait`, `why` and `flow` build on.
//! - [`wait`]: wait until tasks finish; the exit code says how they ended.
//! - [`why`]: why a task is not running now.
//! - [`flow`]: the tree of chained tasks a task belongs to.
//! - [`stats`]: queue stats of every member, per member and in total.
//! - [`dead_letter`]: dead letters of every member, and their redrive.
//! - [`ls`]: list tasks by queue, state, key and flow, over every member.
//! - [`queue`]: pause, resume or purge a queue on every member.
//! - [`cluster`]: cluster membership and health.
//! - [`apps`]: `pmctl app`: applications and pipeline templates stored in the scheduler.
//! - [`deploy`]: `pmctl app render|apply`: Kubernetes manifests for an application.
//!
//! Every entry point returns `Result<(), Failure>` (see [`crate::shared`]) and prints its own output.

pub mod apps;
pub mod cancel;
pub mod cluster;
pub mod dead_letter;
pub mod deploy;
pub mod flow;
pub mod ls;
pub mod queue;
pub mod stats;
pub mod status;
pub mod submit;
pub mod wait;
pub mod why;
