//! `pm-agent`: leases tasks from a scheduler and runs their pipelines of shell commands.
//!
//! [`runner`] runs one task's steps on their executors; [`command`] runs one shell command as a local
//! process group; [`exec`] is the `pod` executor: the socket protocol between the agent and the
//! `pm-agent exec` process in each utility container; [`execservice`] is the original executors' gRPC
//! service, driven by the agent and served by `pm-agent exec --grpc-listen`. [`agent`] is the loop around the
//! runner: credits, lease extension while a task runs, ack with the result or nack with the reason.

pub mod agent;
#[cfg(feature = "api")]
pub mod api;
pub mod args;
pub mod command;
pub mod exec;
pub mod execservice;
#[cfg(feature = "api")]
pub mod grpc;
pub mod runner;
