//! What crosses the socket between the agent and an executor in another container: the frames of the pod
//! socket ([`pod`]) and the messages of the original executors' gRPC service (`grpc`, feature `exec-grpc`).
//!
//! Both ends speak through this module only: the agent's side ([`crate::executor`]) and `pm-agent exec`'s
//! ([`crate::exec_server`]) use it and never each other's wire code, so a change to a protocol is made here,
//! once, for both.

#[cfg(feature = "exec-grpc")]
pub mod grpc;
pub mod pod;
