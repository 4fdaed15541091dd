//! Async client for pipeline-manager.
//!
//! [`Client`] is a cheap `Clone` handle. Every clone sends commands over a channel to one background task
//! that owns the TCP connection, matches replies to requests by `request_id` (so any number of requests may
//! be in flight), pings, and reconnects with exponential backoff. Agents get their leased tasks from the
//! [`Leases`] stream returned by [`Client::connect_agent`]; outstanding credits are granted again after a
//! reconnect (the server has already returned the old connection's leases to their queues). The same stream
//! carries [`AgentEvent::Revoked`] when a task an agent holds is cancelled. An agent that keeps running its
//! tasks across a reconnect (e.g. a scheduler restart) sets [`ConnectOptions::reclaim`]: the connection then
//! reclaims them first, and the stream carries [`AgentEvent::Reclaimed`] with their new lease ids.
//!
//! [`Cluster`] is the producer/admin handle for a cluster of scheduler nodes: it learns the ring from the
//! first node it reaches, sends each task to the node owning its key, follows redirects and routes cancels by
//! the node encoded in a task id.
//!
//! - [`options`]: the [`ConnectOptions`] builder.
//! - [`error`]: the [`Error`] type with a matchable [`ErrorKind`].
//! - `client.rs`: [`Client`]; `apps.rs`: its application requests; `admin.rs`: an operator's requests; `events.rs`: [`Leases`] and [`Completions`].
//! - `conn`: the connection task.

mod admin;
mod apps;
#[cfg(feature = "cli")]
pub mod cli;
mod client;
mod cluster;
mod conn;
pub mod error;
mod events;
pub mod json;
pub mod options;
pub mod tls;

pub use admin::{add_queue_stats, merge_task_pages, DeadPage, QueueControlled, TaskFilter, TaskPage};
pub use apps::AppChange;
pub use client::Client;
pub use cluster::{agent_nodes, Cluster, ClusterOptions};
pub use error::{Error, ErrorKind};
pub use events::{AgentEvent, Completions, Leases};
pub use options::{ConnectOptions, ReclaimProvider};
pub use pm_protocol;
