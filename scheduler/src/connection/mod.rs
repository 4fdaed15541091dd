//! One client connection.
//!
//! One task per connection does both directions: it decodes frames, checks the handshake and the role, and
//! hands requests to [`crate::handlers`]; and it takes what handlers and shards queue in its outbox
//! ([`crate::outbox::OutTx`]), merges replies that come back from several shards in parts, encodes everything queued and
//! writes it with one write. Handlers never see bytes; shards never see sockets.
//!
//! An idle connection holds almost nothing (see "Decisions and why" in docs/architecture.md): no read or write
//! buffer (they are taken when bytes arrive or replies are queued and given back once empty), no timer (the
//! [`crate::outbox::Registry`] sweeps for idle connections), no second task, no channel block; what a request needs while it
//! is handled lives in the handler's own stack frame, not in the connection's future.
//!
//! - `conn.rs`: the socket side: buffers, reading frames, writing the outbox, the serving loop.
//! - `handshake.rs`: `Hello` → `Welcome`, or a refusal and a lingering close.
//! - `transport.rs`: plain TCP or TLS behind one trait.

mod conn;
mod handshake;
mod transport;

use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pm_protocol::{ErrorCode, Role};

pub use transport::{TlsStream, Transport};

use self::conn::{Conn, Exit};
use self::handshake::{close_lingering, handshake, refuse, refuse_wire};
use crate::context::ServerCtx;
use crate::handlers::ConnCtx;
use crate::metrics as m;
use crate::outbox::{channel, Outbound};
use crate::shard::ShardMsg;

/// Largest frame before the handshake is done (a Hello is a few hundred bytes).
const HELLO_MAX_BYTES: usize = 64 * 1024;

/// Serves one accepted connection until it closes or the node shuts down. The accept loop has counted it in
/// [`ServerCtx::connections`]; this takes it off the count when it ends.
///
/// An `async move` block rather than an `async fn`: an async fn moves its arguments into locals, so its future
/// holds the connection's state twice; a block's captures are used in place.
pub fn serve<S: Transport>(stream: S, server: Arc<ServerCtx>) -> impl std::future::Future<Output = ()> + Send {
    let id = server.next_conn.fetch_add(1, Ordering::Relaxed);
    let (out, rx) = channel();
    // Until Hello is accepted, frames are bounded by HELLO_MAX_BYTES: an unauthenticated peer cannot make the
    // node reserve a whole --max-frame-bytes buffer by sending a length prefix and stalling.
    let max_frame = server.cfg.max_frame_bytes.min(HELLO_MAX_BYTES);
    let mut conn = Conn { stream, rx, busy: None, max_frame, closed: false };
    let mut ctx = ConnCtx { id, role: Role::Unspecified, executors: None, holdings: None, out, server, inflight: 0 };
    async move {
        // Boxed: the handshake's timer and state are gone once it is over, instead of sizing every
        // connection's future for the rest of its life.
        match Box::pin(handshake(&mut conn, &ctx)).await {
            Some((role, executors)) => {
                ctx.role = role;
                ctx.executors = executors;
                let cap = ctx.server.cfg.max_leases_per_conn;
                if role == Role::Agent && cap > 0 {
                    ctx.holdings = Some(crate::holdings::Holdings::new(cap));
                }
                conn.max_frame = ctx.server.cfg.max_frame_bytes;
            }
            None => {
                ctx.server.connections.fetch_sub(1, Ordering::Relaxed);
                return;
            }
        }
        metrics::gauge!(m::CONNECTIONS, "role" => ctx.role.as_str_name()).increment(1.0);
        ctx.server.conns.add(ctx.id, &conn.rx, &ctx.server.shutdown);
        let exit = poll_fn(|cx| conn.poll_serve(cx, &mut ctx)).await;
        if wind_up(&ctx, exit) {
            Box::pin(close_lingering(&mut conn)).await;
        }
        ctx.server.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// After the serving loop: says why the connection closes (if there is anything to say), queues the `Close`,
/// and tells the shards an agent is gone. False when the socket is broken and there is nothing to linger for.
fn wind_up(ctx: &ConnCtx, exit: Exit) -> bool {
    match exit {
        Exit::Eof | Exit::Handler | Exit::Closed | Exit::WriteFailed => {}
        Exit::Wire(ref e) => refuse_wire(&ctx.out, e),
        Exit::Idle => refuse(&ctx.out, ErrorCode::Timeout, "idle timeout", "idle_timeout"),
        Exit::Shutdown => ctx.error(ErrorCode::ShuttingDown, 0, "scheduler is shutting down"),
    }
    let _ = ctx.out.send(Outbound::Close);
    ctx.server.conns.remove(ctx.id);
    if matches!(ctx.role, Role::Agent | Role::Peer) {
        for s in &ctx.server.shards {
            s.send(ShardMsg::Disconnected { conn: ctx.id });
        }
    }
    metrics::gauge!(m::CONNECTIONS, "role" => ctx.role.as_str_name()).decrement(1.0);
    !matches!(exit, Exit::WriteFailed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// Every idle connection is one tokio task whose allocation is this future plus ~96 bytes, rounded up to
    /// 128: a few more fields held across the serving loop's await can double it (see docs/architecture.md).
    #[test]
    fn an_idle_connection_future_stays_small() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let tmp = tempfile::tempdir().unwrap();
            let data = tmp.path().to_str().unwrap();
            let cfg: crate::config::Config = clap::Parser::parse_from(["x", "--data", data, "--http-listen", "off"]);
            let node = crate::node::Node::start(&cfg).unwrap();
            let fut = super::serve(stream, node.ctx.clone());
            let size = std::mem::size_of_val(&fut);
            assert!(size <= 160, "the connection future grew to {size} bytes");
        });
    }
}
