//! Replication: partitions held by a majority of their replicas before anything is acknowledged.
//!
//! A replicated cluster (`--replication-factor` > 1) splits keys into a fixed number of partitions
//! (`pm_task::partition`); each partition is a consensus group of its replicas, run by TiKV's raft-rs
//! (`docs/architecture.md` says why that library). This module is the consensus layer on one node:
//!
//! - [`codec`]: the raft log's frames (entries, hard state, voters, compaction point).
//! - [`log_file`]: the raft log on disk, one for all the node's partitions, read back at start.
//! - [`writer`]: its group-commit thread: one `fdatasync` for every partition's new entries.
//! - [`storage`]: a partition's log as raft reads it (in memory since the last compaction).
//! - [`group`]: one partition's `RawNode` in raft-rs's asynchronous mode.
//! - [`driver`]: the thread that runs every group of the node, with the transport and state machine as
//!   traits.
//! - [`peers`]: the transport over the members' peer connections (`RaftBatch` frames).
//! - [`wire`]: raft messages to and from our prost mirror of them, for the peer connections.
//! - [`idle`]: the state machine until tasks go through the groups (it holds nothing).
//! - [`logger`]: raft-rs's `slog` records into `tracing`.
//!
//! `docs/notes/replication.md` describes the whole design and what of it is built.

pub(crate) mod codec;
pub mod driver;
pub(crate) mod group;
pub mod idle;
pub mod log_file;
pub(crate) mod logger;
pub mod peers;
pub(crate) mod storage;
pub mod wire;
pub mod writer;

#[cfg(test)]
mod tests;

pub use driver::{
    Event, PartitionStatus, ReplicaConfig, ReplicaHandle, Replicas, ReplicateError, Reply, ReplyFn, StartError,
    StateMachine, Transport,
};
pub use group::{ProposeError, Timing};
