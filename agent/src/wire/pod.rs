//! The pod socket's wire: how the agent ([`crate::executor::pod`]) and `pm-agent exec`
//! ([`crate::exec_server::pod`]) speak over a unix socket in the pod's shared volume. Both sides use this
//! module and nothing else of each other.
//!
//! One connection carries one command. Frames are a 4-byte big-endian length and a body of one tag byte and
//! a payload:
//!
//! | tag    | direction          | payload                                   |
//! |--------|--------------------|-------------------------------------------|
//! | `0x01` | agent → executor   | `Run`: JSON `{"version":1,"spec":{...}}`  |
//! | `0x02` | agent → executor   | `Kill`: empty; kill the process group     |
//! | `0x11` | executor → agent   | stdout bytes                              |
//! | `0x12` | executor → agent   | stderr bytes                              |
//! | `0x13` | executor → agent   | `Exit`: JSON outcome; the last frame      |
//!
//! The spec is a [`CommandSpec`] and the outcome an [`Outcome`](crate::command::Outcome), as JSON: their field names are part of the
//! wire.

use std::path::PathBuf;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

use crate::command::CommandSpec;

/// Version of the executor socket protocol.
pub const EXEC_PROTOCOL_VERSION: u32 = 1;
/// Largest frame either side accepts. Output chunks are at most 8 KiB; a `Run` carries one shell line.
pub const MAX_EXEC_FRAME: usize = 1 << 20;

/// `Run`: the command (agent → executor, the first frame).
pub(crate) const TAG_RUN: u8 = 0x01;
/// `Kill`: kill the command's process group (agent → executor).
pub(crate) const TAG_KILL: u8 = 0x02;
/// A chunk of stdout (executor → agent).
pub(crate) const TAG_STDOUT: u8 = 0x11;
/// A chunk of stderr (executor → agent).
pub(crate) const TAG_STDERR: u8 = 0x12;
/// `Exit`: the outcome (executor → agent, the last frame).
pub(crate) const TAG_EXIT: u8 = 0x13;

/// A pod socket address that is not `unix:///absolute/path`.
#[derive(Debug, thiserror::Error)]
#[error("--listen must look like unix:///mnt/pipe/.pm/NAME.sock, got `{0}`")]
pub struct BadSocketAddr(pub String);

/// The payload of a `Run` frame.
#[derive(Serialize, Deserialize)]
pub(crate) struct RunRequest {
    /// [`EXEC_PROTOCOL_VERSION`] of the sender.
    pub(crate) version: u32,
    /// The command.
    pub(crate) spec: CommandSpec,
}

/// The length-delimited framing, bounded by [`MAX_EXEC_FRAME`].
pub(crate) fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_EXEC_FRAME).new_codec()
}

/// One frame's body: the tag, then the payload.
pub(crate) fn frame(tag: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + payload.len());
    b.put_u8(tag);
    b.put_slice(payload);
    b.freeze()
}

/// Parses a pod socket address, `unix:///path`, into the path (`--executors NAME=unix:///path.sock` on the
/// agent, `--listen` of `pm-agent exec`).
pub fn socket_path(listen: &str) -> Result<PathBuf, BadSocketAddr> {
    match listen.strip_prefix("unix://") {
        Some(p) if p.starts_with('/') => Ok(PathBuf::from(p)),
        _ => Err(BadSocketAddr(listen.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn listen_addresses_must_be_absolute_unix_paths() {
        assert_eq!(socket_path("unix:///mnt/pipe/.pm/a.sock").unwrap(), PathBuf::from("/mnt/pipe/.pm/a.sock"));
        assert!(socket_path("unix://rel.sock").is_err());
        assert!(socket_path("/mnt/pipe/a.sock").is_err());
    }
}
