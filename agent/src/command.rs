//! One command, as every side speaks of it: what to run ([`CommandSpec`]), how its output arrives
//! (`OutputSink`, chunk by chunk, per [`Stream`]) and how it ended ([`Outcome`]).
//!
//! The bottom of "run a command somewhere": the executors of the agent ([`crate::executor`]), the servers of
//! `pm-agent exec` ([`crate::exec_server`]) and the wires between them ([`crate::wire`]) all speak these
//! types, and this module uses none of them. `CommandSpec` and `Outcome` travel as JSON on the pod socket:
//! their field names are part of that wire.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// One command to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandSpec {
    /// The shell line, run with `sh -c`.
    pub run: String,
    /// Working directory (absolute).
    pub work_dir: PathBuf,
    /// Extra environment variables (the step's `env`, plus `PIPE_DIR` and `PM_TASK_ID`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Kill the command after this many milliseconds (0: no limit).
    #[serde(default)]
    pub timeout_ms: u64,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives a command's output as it comes. Awaiting in `output` slows the command down (its pipe fills):
/// that is the back-pressure of a slow streaming client.
pub(crate) trait OutputSink {
    /// One chunk of output.
    async fn output(&mut self, stream: Stream, data: &[u8]);
}

/// How a command ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Signal that ended it, if one did (other than our own kill after a timeout or cancel).
    pub signal: Option<i32>,
    /// Killed by its timeout.
    #[serde(default)]
    pub timed_out: bool,
    /// Stopped because the run was cancelled.
    #[serde(default)]
    pub cancelled: bool,
    /// It could not run at all, or its executor failed: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    /// An outcome that only carries an error.
    pub fn error(why: impl Into<String>) -> Outcome {
        Outcome { error: Some(why.into()), ..Outcome::default() }
    }
}

/// The earlier of two optional instants (deadlines: the task's, the step's, the command's own).
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// An output sink that keeps everything a command wrote (stdout, stderr): for tests of both ends of a socket.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Collect(pub(crate) Vec<u8>, pub(crate) Vec<u8>);

#[cfg(test)]
impl OutputSink for Collect {
    async fn output(&mut self, stream: Stream, data: &[u8]) {
        match stream {
            Stream::Stdout => self.0.extend_from_slice(data),
            Stream::Stderr => self.1.extend_from_slice(data),
        }
    }
}
