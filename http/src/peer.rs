//! [`WithPeer`]: each request of a connection carries the connection's remote address, as axum's
//! [`ConnectInfo`], so that a handler or a middleware can count or log by source address.
//!
//! The accept loop wraps the router once per connection; the router itself is shared (a clone of an `Arc`),
//! so this costs one small struct per connection and one extension per request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;

/// A router whose requests carry `ConnectInfo(peer)`.
#[derive(Clone)]
pub(crate) struct WithPeer {
    pub(crate) app: Router,
    pub(crate) peer: SocketAddr,
}

impl<B> tower_service::Service<Request<B>> for WithPeer
where
    Router: tower_service::Service<Request<B>, Error = Infallible>,
{
    type Response = <Router as tower_service::Service<Request<B>>>::Response;
    type Error = Infallible;
    type Future = <Router as tower_service::Service<Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower_service::Service::<Request<B>>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        tower_service::Service::call(&mut self.app, req)
    }
}
