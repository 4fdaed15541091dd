//! `pm-agent`: leases tasks from a scheduler and runs their pipelines of shell commands.
//!
//! [`runner`] runs one task's steps as local processes; [`agent`] is the loop around it: credits, lease
//! extension while a task runs, ack with the result or nack with the reason.

pub mod agent;
pub mod args;
pub mod runner;
