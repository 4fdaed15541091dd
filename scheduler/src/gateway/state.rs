//! What the API's handlers share ([`Gateway`]): the node, and a protocol connection to it with the caller's
//! token; the request body, bounded.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use pm_client::{Client, ConnectOptions};
use pm_protocol::{ErrorCode, Role};
use serde_json::Value;

use super::error::ApiError;
use crate::auth::role_name;
use crate::config::Config;
use crate::context::ServerCtx;
use crate::metrics as m;

/// What the API's handlers share.
pub struct Gateway {
    pub(super) server: Arc<ServerCtx>,
    /// Why the API refuses every request (`None`: it serves).
    closed: Option<String>,
    max_body: usize,
    pub(super) request_timeout: Duration,
}

impl Gateway {
    /// The API of the node `server`. Without token files it serves only on a loopback `--http-listen` (or with
    /// `--insecure`), as the protocol listener does.
    pub fn new(server: Arc<ServerCtx>, cfg: &Config) -> Gateway {
        let loopback = cfg.http_addr().ok().flatten().is_some_and(|a| a.ip().is_loopback());
        let closed = (!cfg.token_files().enabled() && !loopback && !cfg.insecure).then(|| {
            "the HTTP API is off: --http-listen is not a loopback address and no token file is set (give token \
             files, or --insecure)"
                .to_string()
        });
        if let Some(why) = &closed {
            tracing::warn!("{why}");
        }
        Gateway { server, closed, max_body: cfg.http_max_body_bytes, request_timeout: cfg.http_request_timeout }
    }

    /// A protocol connection to this node with the caller's token, as `role`.
    pub(super) async fn client(&self, role: Role, headers: &HeaderMap) -> Result<Client, ApiError> {
        if let Some(why) = &self.closed {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "HTTP_API_OFF", why.clone()));
        }
        let token = bearer(headers)?;
        let server = &self.server;
        let role = self.effective_role(role, &token);
        if server.connections.fetch_add(1, Ordering::Relaxed) >= server.cfg.max_connections as u64 {
            server.connections.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!(m::REFUSED, "reason" => "too_many_connections").increment(1);
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "TOO_MANY_CONNECTIONS", "connection limit"));
        }
        // The connection counts under the request's source address as a TCP client's would, for as long as
        // it is open (an event stream's included).
        let slot = match (&server.per_ip, super::peer::current()) {
            (Some(per_ip), Some(ip)) => match per_ip.slot(ip) {
                Some(slot) => Some(slot),
                None => {
                    server.connections.fetch_sub(1, Ordering::Relaxed);
                    metrics::counter!(m::REFUSED, "reason" => "too_many_connections_per_ip").increment(1);
                    let msg = "connection limit per source address reached (--max-connections-per-ip)";
                    return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "TOO_MANY_CONNECTIONS", msg));
                }
            },
            _ => None,
        };
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let conn_server = server.clone();
        tokio::spawn(async move {
            let _slot = slot;
            crate::connection::serve(theirs, conn_server).await;
        });
        let opts = ConnectOptions::new(role)
            .client_id("http-api")
            .token(token.clone())
            .max_frame_bytes(server.cfg.max_frame_bytes)
            .request_timeout(self.request_timeout);
        match Client::connect_stream(ours, opts).await {
            Ok(c) => Ok(c),
            // A valid token of a role that may not do this (a producer token on an admin route, an agent or
            // peer token anywhere): `403`, the caller is known but not allowed. A missing, unknown or expired
            // token stays `401`.
            Err(e) if e.code() == Some(ErrorCode::Unauthorized) && !token.is_empty() => {
                let other = [Role::Producer, Role::Admin, Role::Agent, Role::Peer]
                    .into_iter()
                    .find(|r| *r != role && server.auth.check(*r, &token).is_ok());
                let needs = if role == Role::Producer { "producer (or admin)" } else { role_name(role) };
                match other {
                    Some(r) => Err(ApiError::of_code(
                        ErrorCode::RoleNotAllowed,
                        format!("this is a token of role {}; this needs role {needs}", role_name(r)),
                    )),
                    None => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The role a request for `role` connects as: an admin token may do everything a producer token may.
    pub(super) fn effective_role(&self, role: Role, token: &str) -> Role {
        if role == Role::Producer && !token.is_empty() && self.server.auth.check(Role::Admin, token).is_ok() {
            Role::Admin
        } else {
            role
        }
    }

    /// The request body, bounded by `--http-max-body-bytes` and `--http-request-timeout`.
    pub(super) async fn body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            return Err(self.too_large());
        }
        use http_body_util::BodyExt;
        let limited = http_body_util::Limited::new(body, self.max_body);
        match tokio::time::timeout(self.request_timeout, limited.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(self.too_large()),
            Ok(Err(e)) => Err(ApiError::new(StatusCode::BAD_REQUEST, "BAD_BODY", format!("reading the body: {e}"))),
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "TIMEOUT",
                format!("the body did not arrive within {:?} (--http-request-timeout)", self.request_timeout),
            )),
        }
    }

    fn too_large(&self) -> ApiError {
        let msg = format!("the body is larger than {} bytes (--http-max-body-bytes)", self.max_body);
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "FRAME_TOO_LARGE", msg)
    }
}

/// The bearer token of `Authorization` (empty when there is none: the node decides whether that will do).
pub(super) fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else { return Ok(String::new()) };
    let v = v.to_str().map_err(|_| ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "bad Authorization"))?;
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim().to_string()),
        _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "Authorization must be `Bearer TOKEN`")),
    }
}

pub(super) fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("the body is not JSON: {e}")))
}

pub(super) fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
