//! pipeline-manager scheduler node.
//!
//! A node accepts tasks from producers over the framed protocol of `pm-protocol`, makes each one durable
//! before acknowledging it, leases it to agents that granted credits, and redelivers it until it is acked.
//!
//! # A task's path
//!
//! Every hop between files is a message on a channel, so the path cannot be read off the calls. Here it is,
//! each stop as `file::function` and the message that carries the task to the next one. Besides the
//! connection that reads and writes the frames, it crosses six files: `handlers/submit.rs`, `shard/mod.rs`,
//! `shard/round.rs`, `store/committer.rs`, `shard/durable.rs` and `shard/dispatch.rs`.
//!
//! 1. `Submit` frame → `connection/conn.rs::Conn::poll_serve` decodes it → `handlers::dispatch` checks the
//!    role → `handlers/submit.rs::handle` validates each task and splits the request by shard (the queue's
//!    hash) → [`shard::ShardMsg::Submit`].
//! 2. `shard/mod.rs::Shard::on_submit` gives each task an id and pushes an `Enqueue` record into the round
//!    (`shard/round.rs::Rounds::record`); the `SubmitAck` waits as a `Waiter::Submit`.
//! 3. Once the shard has handled everything queued, `shard/round.rs::Rounds::flush` hands the round's records
//!    to the commit thread as one job (`CommitterHandle::submit_with_appended`).
//! 4. `store/committer.rs::commit` appends every waiting job (`TaskStore::append`: `store/wal/mod.rs`), then
//!    syncs once for all of them (`fdatasync`). Between the two it calls the job's `Appended` →
//!    [`shard::ShardMsg::Appended`]; after the sync, its `Done` → [`shard::ShardMsg::Durable`].
//! 5. `shard/durable.rs::Shard::on_appended` makes the new tasks ready (they may be leased while the sync
//!    runs); `Shard::on_durable` releases the waiter: `Outbound::Part(Submit)` into the producer's outbox,
//!    which the producer's connection merges across shards and writes as `SubmitAck`.
//! 6. Ready → the queue is marked dirty → at the end of the round `shard/dispatch.rs::dispatch_queue` takes an
//!    agent's credit, `shard/lease.rs::LeaseTable::grant` mints the lease, an `Attempt` record joins the round,
//!    and the task goes into the agent's `Leased` frame (`dispatch.rs::Outgoing`).
//! 7. The agent's `Ack` → `handlers/leases.rs::ack` (the lease id names its shard) → [`shard::ShardMsg::Ack`]
//!    → `Shard::on_ack` ends the lease and writes the task's `Finish` record into the round; the commit
//!    thread sends the `LeaseReply` itself the moment that round is durable.
//!
//! # Modules
//!
//! - [`auth`]: tokens per role, checked in `Hello`, reloaded when their files change.
//! - [`catalog`]: applications and their pipeline templates, stored in the data directory.
//! - [`cluster`]: what a node does with its peers: work stealing and copying applications.
//! - [`config`]: flags, `PM_*` environment variables and validation (exit 64 before binding on bad config).
//! - [`context`]: node-wide state as the connections see it ([`context::ServerCtx`]).
//! - [`server`]: the TCP listener (socket2 options, connection limit) and graceful shutdown.
//! - [`connection`]: one connection: handshake, reading frames, and the writer that merges replies.
//! - [`handlers`]: requests, one file per kind; they turn wire messages into shard messages.
//! - [`holdings`]: `--max-leases-per-conn`, the credits and leases one agent connection holds.
//! - [`shard`]: the actors that own queues, tasks and leases (single writer, no locks).
//! - [`outbox`]: what handlers and shards send to a connection (below the shards: they never see sockets).
//! - [`stolen`]: what shards and handlers send the work stealer (below the shards).
//! - [`store`]: the durable `TaskStore` trait, the WAL and sled backends and the group-commit thread.
//! - [`http`]: the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`, and the API of [`gateway`]).
//! - [`gateway`]: the HTTP API: applications, parameterised submits, task status.
//! - [`console`]: the operator console's pages at `/ui/`, compiled in.
//! - [`replica`]: replication's consensus layer: partitions' raft-rs groups, their raft log and its writer.
//! - [`node`]: wiring it all together (open store, recover, start shards and committer).
//! - [`metrics`]: metric names.
//! - [`tls`]: TLS on the listener (rustls), mutual TLS, certificate reload.
//!
//! Arrows between modules point one way: `server` → `connection` → `handlers` → `shard` → `outbox`,
//! `stolen`, `store`; `cluster` sits above `shard` and sends it messages.

pub mod auth;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod console;
pub mod context;
pub mod durable_file;
pub mod gateway;
pub mod handlers;
pub mod holdings;
pub mod http;
pub(crate) mod idmap;
pub(crate) mod idtable;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod paused;
pub mod process;
pub mod reclaim_memory;
pub mod repair;
pub mod replica;
pub mod server;
pub mod shard;
pub mod stolen;
pub mod store;
pub mod tls;
