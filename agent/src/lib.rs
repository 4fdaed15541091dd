//! `pm-agent`: leases tasks from a scheduler and runs their pipelines of shell commands.
//!
//! # Modules, top down
//!
//! - [`agent`]: the loop around the runner: credits, lease extension while a task runs, ack with the result
//!   or nack with the reason. [`args`]: its command-line options. [`queues`]: which queues it serves
//!   (names and patterns); [`credits`]: how its concurrency is shared between them. `running`: the running
//!   tasks and their leases, which a reconnect's reclaim renews.
//! - `api` (feature `api`): the direct-run API (HTTP and gRPC on one port) and the probes endpoint.
//! - [`runner`]: runs one task's steps, each command on its step's executor, and says what they did.
//! - [`task_dirs`]: where a task runs (`<work dir>/task-<id>`, or the work directory itself, shared by one
//!   task at a time as in the original pod), and what is emptied or removed around it.
//! - [`executor`]: where a command runs, agent side: [`executor::local`], [`executor::pod`] (a client of a
//!   pod socket), [`executor::grpc`] (a client of the original executors' gRPC service).
//! - [`exec_server`]: what `pm-agent exec` serves, executor side: [`exec_server::pod`] (the pod socket) and
//!   `exec_server::grpc` (the gRPC service), both running commands as [`executor::local`] does.
//! - [`wire`]: what crosses a socket between the two sides: the pod frames and the gRPC messages.
//! - [`command`] (what a command is and how it ended) and [`output`] (bounded output): the bottom, used by
//!   all of the above.
//!
//! Dependencies only point down this list. `exec_server` uses `executor` one way (its local runner and the
//! gRPC address parsing); nothing in `executor` uses `exec_server`, and the two speak to each other only
//! through [`wire`].

pub mod agent;
#[cfg(feature = "api")]
pub mod api;
pub mod args;
pub mod command;
pub mod credits;
pub mod exec_server;
pub mod executor;
pub mod output;
pub mod queues;
pub mod runner;
mod running;
pub mod tally;
pub mod task_dirs;
pub mod wire;
