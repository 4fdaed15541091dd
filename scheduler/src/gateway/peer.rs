//! Where a request comes from, for `--max-connections-per-ip`.
//!
//! Each API request is served over protocol connections to the node (`state.rs`), and those count against
//! the node's limits as a TCP client's would: `--max-connections`, and `--max-connections-per-ip` under the
//! address the HTTP request came from. The middleware here keeps that address for the request's handler
//! (a task-local: the handlers open their connections deep inside, and need not pass it along).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    /// The source address of the HTTP request being handled.
    static PEER: IpAddr;
}

/// The middleware: runs the request with its source address at hand (see the module doc).
pub(super) async fn scope(req: Request, next: Next) -> Response {
    match req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()) {
        Some(ip) => PEER.scope(ip, next.run(req)).await,
        None => next.run(req).await,
    }
}

/// The source address of the request being handled (`None` outside one, or when the server did not say).
pub(super) fn current() -> Option<IpAddr> {
    PEER.try_with(|ip| *ip).ok()
}
