//! What a node does with its peers in a cluster, above the shards.
//!
//! - [`steal`]: work stealing: leases taken from peers with a backlog for this node's idle agents;
//!   [`steal_plan`]: when and where to set credits for them.
//! - [`catalog_sync`]: copying applications between members (last writer wins, push and pull).
//! - [`members`]: the member list from DNS (`--members dns:NAME`), in ordinal order and append-only.
//!
//! Placement itself (which node owns a key) is the ring of `pm_task::ring`; redirects are answered by the
//! handlers. What the shards and handlers send to the stealer lives below them, in [`crate::stolen`].

pub mod catalog_sync;
pub mod members;
pub mod steal;
pub mod steal_plan;
