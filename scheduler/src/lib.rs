//! pipeline-manager scheduler node.
//!
//! A node accepts tasks from producers over the framed protocol of `pm-protocol`, makes each one durable
//! before acknowledging it, leases it to agents that granted credits, and redelivers it until it is acked.
//!
//! - [`auth`]: tokens per role, checked in `Hello`, reloaded when their files change.
//! - [`catalog`]: applications and their pipeline templates, stored in the data directory.
//! - [`catalog_sync`]: copying applications between cluster members (last writer wins, push and pull).
//! - [`config`]: flags, `PM_*` environment variables and validation (exit 64 before binding on bad config).
//! - [`server`]: the TCP listener (socket2 options, connection limit) and graceful shutdown.
//! - [`connection`]: one connection: handshake, reading frames, and the writer that merges replies.
//! - [`handlers`]: one file per request kind; they turn wire messages into shard messages.
//! - [`holdings`]: `--max-leases-per-conn`, the credits and leases one agent connection holds.
//! - [`shard`]: the actors that own queues, tasks and leases (single writer, no locks).
//! - [`store`]: the durable `TaskStore` trait, the WAL and sled backends and the group-commit thread.
//! - [`http`]: the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`, and the API of [`gateway`]).
//! - [`gateway`]: the HTTP API: applications, parameterised submits, task status.
//! - [`node`]: wiring it all together (open store, recover, start shards and committer).
//! - [`steal`]: work stealing between cluster nodes (leases taken from peers for idle agents).
//! - [`metrics`]: metric names.
//! - [`tls`]: TLS on the listener (rustls), mutual TLS, certificate reload.

pub mod auth;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod context;
pub mod gateway;
pub mod handlers;
pub mod holdings;
pub mod http;
pub(crate) mod idmap;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod process;
pub mod server;
pub mod shard;
pub mod stolen;
pub mod store;
pub mod tls;
