//! The handshake: the first frame must be a `Hello` with a supported version, a role, and credentials for
//! that role (a token, or a client certificate mapped to the role); anything else is refused with an error
//! frame, and the connection closed without a reset that would destroy that frame.

use std::future::poll_fn;
use std::time::Duration;

use pm_protocol::limits::{MAX_CAPABILITIES, MAX_EXECUTOR_NAME_BYTES};
use pm_protocol::pb;
use pm_protocol::{Envelope, ErrorCode, Kind, Role, WireError, PROTOCOL_VERSION};
use tokio::io::AsyncWriteExt as _;
use tokio::time::timeout;

use super::conn::Conn;
use super::transport::Transport;
use crate::handlers::ConnCtx;
use crate::metrics as m;
use crate::outbox::{OutTx, Outbound};
use crate::shard::Executors;

/// Reads and checks Hello within the handshake timeout and queues Welcome. `None` when the connection was
/// refused (and closed) or went away.
pub(super) async fn handshake<S: Transport>(conn: &mut Conn<S>, ctx: &ConnCtx) -> Option<(Role, Option<Executors>)> {
    let (out, server) = (&ctx.out, &ctx.server);
    let limits = &server.cfg;
    let hello = match timeout(limits.handshake_timeout, poll_fn(|cx| conn.poll_frame(cx))).await {
        Err(_) => {
            refuse(out, ErrorCode::Timeout, "no Hello within the handshake timeout", "handshake_timeout");
            close_lingering(conn).await;
            return None;
        }
        Ok(None) => return None,
        Ok(Some(Err(e))) => {
            refuse_wire(out, &e);
            close_lingering(conn).await;
            return None;
        }
        Ok(Some(Ok(Envelope { kind: Some(Kind::Hello(h)) }))) => h,
        Ok(Some(Ok(_))) => {
            refuse(out, ErrorCode::HandshakeRequired, "the first frame must be Hello", "no_hello");
            close_lingering(conn).await;
            return None;
        }
    };
    if hello.version != PROTOCOL_VERSION {
        let msg = format!("protocol version {} is not supported (server speaks {PROTOCOL_VERSION})", hello.version);
        refuse(out, ErrorCode::UnsupportedVersion, &msg, "version");
        close_lingering(conn).await;
        return None;
    }
    let role = Role::try_from(hello.role).unwrap_or(Role::Unspecified);
    if role == Role::Unspecified {
        refuse(out, ErrorCode::Unauthorized, "Hello must name a role (producer, agent, admin or peer)", "role");
        close_lingering(conn).await;
        return None;
    }
    // --tls-client-role: a certificate that names a role decides it (an admin one may also ask for producer);
    // a token, if sent, must agree.
    let cert_roles = match (&server.tls, conn.stream.peer_certificate()) {
        (Some(tls), Some(der)) => tls.client_roles.of(der),
        _ => crate::tls::RoleSet::default(),
    };
    if !cert_roles.is_empty() && !cert_roles.grants(role) {
        let msg =
            format!("the client certificate is for role {}, not {}", cert_roles.names(), crate::auth::role_name(role));
        refuse(out, ErrorCode::Unauthorized, &msg, "cert_role");
        close_lingering(conn).await;
        return None;
    }
    // A certificate with the role needs no token; a token sent anyway must be valid for that role.
    let checked = if cert_roles.is_empty() || !hello.auth_token.is_empty() {
        server.auth.check(role, &hello.auth_token)
    } else {
        Ok(())
    };
    if let Err(r) = checked {
        refuse(out, ErrorCode::Unauthorized, &r.message(role), r.reason());
        close_lingering(conn).await;
        return None;
    }
    let caps = &hello.capabilities;
    if caps.len() > MAX_CAPABILITIES || caps.iter().any(|c| c.is_empty() || c.len() > MAX_EXECUTOR_NAME_BYTES) {
        let msg = format!(
            "Hello.capabilities: at most {MAX_CAPABILITIES} executor names of 1 to {MAX_EXECUTOR_NAME_BYTES} bytes"
        );
        refuse(out, ErrorCode::LimitExceeded, &msg, "capabilities");
        close_lingering(conn).await;
        return None;
    }
    let executors = (!caps.is_empty()).then(|| crate::shard::executor_set(hello.capabilities.clone()));
    let _ = out.send(Outbound::Frame(
        pb::Welcome {
            server_version: PROTOCOL_VERSION,
            node_id: server.node_id.clone(),
            ring_epoch: server.ring.epoch(),
            members: server.ring.members().to_vec(),
            max_frame_bytes: limits.max_frame_bytes as u32,
            max_batch: limits.max_batch as u32,
        }
        .into(),
    ));
    tracing::debug!(conn = ctx.id, client = %truncate(&hello.client_id, 128), role = role.as_str_name(), "connected");
    Some((role, executors))
}

/// Writes everything queued up to the `Close` (which the caller has queued) and half-closes the socket, then
/// drains what the peer still sends for a moment: closing a socket with unread input sends a reset, which can
/// destroy the error frame in flight.
pub(super) async fn close_lingering<S: Transport>(conn: &mut Conn<S>) {
    if poll_fn(|cx| conn.poll_flush(cx)).await.is_err() {
        return;
    }
    let _ = conn.stream.shutdown().await;
    let _ = timeout(Duration::from_millis(500), async {
        loop {
            if let Some(busy) = conn.busy.as_mut() {
                busy.rbuf.clear();
            }
            match poll_fn(|cx| conn.poll_fill(cx)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

pub(super) fn refuse(out: &OutTx, code: ErrorCode, msg: &str, reason: &'static str) {
    metrics::counter!(m::REFUSED, "reason" => reason).increment(1);
    let _ = out.send(Outbound::Frame(pb::Error::new(code, 0, msg).into()));
    let _ = out.send(Outbound::Close);
}

pub(super) fn refuse_wire(out: &OutTx, e: &WireError) {
    let reason = match e {
        WireError::FrameTooLarge { .. } => "frame_too_large",
        WireError::Malformed(_) => "malformed",
        WireError::UnknownMessage => "unknown_message",
        WireError::Io(_) => "io",
    };
    if matches!(e, WireError::Io(_)) {
        let _ = out.send(Outbound::Close);
        return;
    }
    refuse(out, e.code(), &e.to_string(), reason);
}

fn truncate(s: &str, n: usize) -> &str {
    let mut end = s.len().min(n);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
