//! Client errors: one [`Error`] type with a small matchable [`ErrorKind`].

use pm_protocol::{pb, ErrorCode};

/// What kind of failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Could not open a TCP connection.
    Connect,
    /// The server refused the handshake (see [`Error::code`]).
    Handshake,
    /// The connection broke while the request was in flight: it may or may not have been applied.
    Disconnected,
    /// The connection was down and reconnecting failed: the request was never sent (safe to send elsewhere).
    NotSent,
    /// Cluster mode: the node does not own a key of the request; nothing was applied. [`Error::redirect`] holds
    /// the node's current ring. [`Cluster`](crate::Cluster) follows redirects by itself.
    Redirect,
    /// The server answered the request with an error (see [`Error::code`]).
    Server,
    /// No answer in time.
    Timeout,
    /// The client was closed.
    Closed,
    /// The server sent something this client did not expect.
    Protocol,
}

/// A client error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct Error {
    kind: ErrorKind,
    code: Option<ErrorCode>,
    message: String,
    redirect: Option<Box<pb::Redirect>>,
}

impl Error {
    /// Builds an error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, code: None, message: message.into(), redirect: None }
    }

    /// Builds an error carrying a server error code.
    pub fn with_code(kind: ErrorKind, code: ErrorCode, message: impl Into<String>) -> Self {
        Error { kind, code: Some(code), message: message.into(), redirect: None }
    }

    /// A [`ErrorKind::Redirect`] error carrying the server's `Redirect`.
    pub fn redirected(r: pb::Redirect) -> Self {
        let message = format!("a key belongs to {} (ring epoch {:#x})", r.node, r.ring_epoch);
        Error { kind: ErrorKind::Redirect, code: None, message, redirect: Some(Box::new(r)) }
    }

    /// The server's `Redirect`, for [`ErrorKind::Redirect`].
    pub fn redirect(&self) -> Option<&pb::Redirect> {
        self.redirect.as_deref()
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The server's error code, when the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}
