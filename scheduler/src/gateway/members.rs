//! Asking every member of a cluster on behalf of the caller.
//!
//! A queue's tasks are spread over every member (they are placed by key), so an operator's view or action
//! about a queue concerns them all. The node the request reached opens a connection to each member with the
//! caller's token and role: its own over the in-process pipe (a bad token fails the request right there), the
//! others over TCP (with the node's peer TLS settings). A member that cannot be reached stays in the answer
//! with its error: a view names a member that is down, it never hides it.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use futures::future::join_all;
use pm_client::{Client, ConnectOptions};
use pm_protocol::{ErrorCode, Role};
use pm_task::ring::Ring;

use super::error::ApiError;
use super::state::{bearer, Gateway};

/// Time a member has to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Every member (this node alone outside a cluster), in member order: its address, and a connection or why
/// there is none.
pub(super) type Members = Vec<(String, Result<Client, pm_client::Error>)>;

impl Gateway {
    /// Connections as the caller to every member (see the module doc).
    pub(super) async fn members(&self, role: Role, headers: &HeaderMap) -> Result<Members, ApiError> {
        let own = self.client(role, headers).await?;
        let server = &self.server;
        let Some(me) = server.ordinal else { return Ok(vec![(server.node_id.clone(), Ok(own))]) };
        let token = bearer(headers)?;
        let mut opts = ConnectOptions::new(self.effective_role(role, &token))
            .client_id("http-api")
            .token(token)
            .reconnect(false)
            .connect_timeout(CONNECT_TIMEOUT)
            .request_timeout(self.request_timeout);
        if let Some(tls) = server.tls.as_ref().and_then(|t| t.peer.clone()) {
            opts = opts.tls(tls);
        }
        let members = server.ring.members().to_vec();
        let connects = members.iter().enumerate().map(|(i, addr)| {
            let (own, opts) = (own.clone(), opts.clone());
            async move {
                if i == me {
                    Ok(own)
                } else {
                    Client::connect(addr, opts).await
                }
            }
        });
        Ok(members.iter().cloned().zip(join_all(connects).await).collect())
    }
}

impl Gateway {
    /// A connection as the caller (producer) to the member that holds task `id` (its id names the member
    /// that accepted it): this node's own, or the member's over TCP.
    pub(super) async fn holder(&self, id: u64, headers: &HeaderMap) -> Result<Client, ApiError> {
        match self.server.ordinal {
            Some(me) if Ring::ordinal_of_task(id) != me => {
                let owner = Ring::ordinal_of_task(id);
                match self.members(Role::Producer, headers).await?.into_iter().nth(owner) {
                    Some((_, Ok(c))) => Ok(c),
                    Some((node, Err(e))) => {
                        let msg = format!("task {id} is held by member {node}, which did not answer: {e}");
                        Err(ApiError::new(StatusCode::BAD_GATEWAY, "MEMBER_UNREACHABLE", msg))
                    }
                    None => Err(ApiError::of_code(ErrorCode::NotFound, format!("no member holds task {id}"))),
                }
            }
            _ => self.client(Role::Producer, headers).await,
        }
    }
}

/// A task id of a path.
pub(super) fn task_id_of(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| ApiError::param("id", format!("{id:?} is not a task id")))
}

/// Runs `ask` on every member at once: (member, answer) in member order; an unreachable member's answer is
/// its connection error.
pub(super) async fn ask_all<T, F, Fut>(members: &Members, ask: F) -> Vec<(String, Result<T, pm_client::Error>)>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, pm_client::Error>>,
{
    let asks = members.iter().map(|(_, c)| {
        let c = c.clone();
        let ask = &ask;
        async move {
            match c {
                Ok(c) => ask(c).await,
                Err(e) => Err(e),
            }
        }
    });
    let answers = join_all(asks).await;
    members.iter().map(|(node, _)| node.clone()).zip(answers).collect()
}
