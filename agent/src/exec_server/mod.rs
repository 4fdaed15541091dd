//! What `pm-agent exec` serves, executor side: it runs in a utility container and runs the commands an
//! agent sends it, as the [`local`](crate::executor::local) executor would, over a unix socket of the pod
//! ([`pod`]) and/or as the original executors' gRPC service (`grpc`, feature `exec-grpc`), configured by
//! its flags or by the original executor's variables ([`original_env`]).
//!
//! Invariant: a command served here dies with its connection or call: when the agent goes away, cancels, or
//! its deadline passes, the command's process group is killed.

#[cfg(feature = "exec-grpc")]
pub mod grpc;
pub mod original_env;
pub mod pod;
