//! The TCP listener: socket options, the connection limit, and the accept loop.
//!
//! A connection past `--max-connections` or `--max-connections-per-ip` is refused with an `Error` frame
//! `TOO_MANY_CONNECTIONS` and closed. On a TLS listener the frame goes over TLS, so the refusal completes the
//! TLS handshake first (bounded by `--handshake-timeout`); at most [`MAX_TLS_REFUSALS`] such handshakes run
//! at once, and a connection refused past them is closed without a word (no TLS session, no buffer), so a
//! flood costs at most that many TLS sessions.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pm_protocol::codec::encode_frame;
use pm_protocol::{pb, ErrorCode};
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::connection;
use crate::context::ServerCtx;
use crate::metrics as m;

/// Binds a listener with a large backlog and address reuse.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    TcpListener::from_std(sock.into())
}

/// Idle timeouts beyond this count as "never" (see `Config::idle_timeout`).
const NO_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 86400);

/// No Nagle. TCP keepalive only when there is no idle timeout: the idle timeout (clients ping) already finds
/// dead peers, and the kernel fires the keepalive timers of connections opened together in one burst (its
/// timer wheel is coarse at a minute), which at 150,000 connections stalled a core for tens of milliseconds
/// every minute (docs/notes/cluster.md).
fn configure(stream: &TcpStream, idle_timeout: Duration) {
    let _ = stream.set_nodelay(true);
    if idle_timeout >= NO_IDLE_TIMEOUT {
        let ka = TcpKeepalive::new().with_time(Duration::from_secs(60)).with_interval(Duration::from_secs(10));
        let _ = SockRef::from(stream).set_tcp_keepalive(&ka);
    }
}

/// Accepts connections until `stop` completes.
pub async fn run(listener: TcpListener, ctx: Arc<ServerCtx>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        configure(&stream, ctx.cfg.idle_timeout);
        // The count is the limit (a counter rather than a semaphore permit in every connection's future);
        // `connection::serve` takes the connection off it when it ends.
        if ctx.connections.fetch_add(1, Ordering::Relaxed) >= ctx.cfg.max_connections as u64 {
            ctx.connections.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!(m::REFUSED, "reason" => "too_many_connections").increment(1);
            tracing::debug!(%peer, "connection refused: limit reached");
            spawn_refusal(stream, &ctx, "connection limit reached");
            continue;
        }
        match ctx.per_ip.clone() {
            // The count is the limit (a counter rather than a semaphore permit in every connection's future);
            // `connection::serve` takes the connection off it when it ends.
            None => spawn_connection(stream, ctx.clone()),
            Some(per_ip) => match per_ip.slot(peer.ip()) {
                Some(slot) => {
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        // Released however the connection's task ends (a panic included).
                        let _slot = slot;
                        serve_any(stream, ctx).await;
                    });
                }
                None => {
                    ctx.connections.fetch_sub(1, Ordering::Relaxed);
                    metrics::counter!(m::REFUSED, "reason" => "too_many_connections_per_ip").increment(1);
                    tracing::debug!(%peer, "connection refused: limit per source address reached");
                    spawn_refusal(stream, &ctx, "connection limit per source address reached");
                }
            },
        }
    }
}

/// Spawns the connection's task: plain, or TLS first.
fn spawn_connection(stream: TcpStream, ctx: Arc<ServerCtx>) {
    match &ctx.tls {
        None => {
            tokio::spawn(connection::serve(stream, ctx));
        }
        Some(tls) => {
            tokio::spawn(serve_tls(tls.acceptor.clone(), stream, ctx));
        }
    }
}

/// Serves the connection, plain or TLS, to its end.
async fn serve_any(stream: TcpStream, ctx: Arc<ServerCtx>) {
    match ctx.tls.clone() {
        None => connection::serve(stream, ctx).await,
        Some(tls) => serve_tls(tls.acceptor, stream, ctx).await,
    }
}

async fn serve_tls(acceptor: tokio_rustls::TlsAcceptor, stream: TcpStream, ctx: Arc<ServerCtx>) {
    match tokio::time::timeout(ctx.cfg.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => connection::serve(Box::new(tls), ctx).await,
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "no TLS handshake within the handshake timeout".into(),
            };
            tracing::debug!("TLS handshake failed: {why}");
            metrics::counter!(m::REFUSED, "reason" => "tls_handshake").increment(1);
            ctx.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// TLS handshakes of refused connections running at once; past it a refused connection is closed at once.
pub const MAX_TLS_REFUSALS: usize = 64;

/// A refusal's place among [`MAX_TLS_REFUSALS`], given back when dropped.
struct Refusing(Arc<ServerCtx>);

impl Drop for Refusing {
    fn drop(&mut self) {
        self.0.refusing.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Refuses a connection past a limit with `TOO_MANY_CONNECTIONS`: in plaintext, or over TLS after the
/// handshake (bounded by the handshake timeout and by [`MAX_TLS_REFUSALS`] at once).
fn spawn_refusal(stream: TcpStream, ctx: &Arc<ServerCtx>, why: &'static str) {
    let max_frame = ctx.cfg.max_frame_bytes;
    let Some(tls) = &ctx.tls else {
        tokio::spawn(refuse(stream, max_frame, why));
        return;
    };
    if ctx.refusing.fetch_add(1, Ordering::Relaxed) >= MAX_TLS_REFUSALS {
        ctx.refusing.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!("refused connection closed without TLS: {MAX_TLS_REFUSALS} refusals in their handshake");
        return;
    }
    let slot = Refusing(ctx.clone());
    let (acceptor, timeout) = (tls.acceptor.clone(), ctx.cfg.handshake_timeout);
    tokio::spawn(async move {
        let _slot = slot;
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => refuse(tls, max_frame, why).await,
            Ok(Err(e)) => tracing::debug!("TLS handshake of a refused connection failed: {e}"),
            Err(_) => tracing::debug!("no TLS handshake of a refused connection within the handshake timeout"),
        }
    });
}

async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, max_frame: usize, why: &'static str) {
    let mut buf = BytesMut::new();
    let env = pb::Error::new(ErrorCode::TooManyConnections, 0, why).into();
    if encode_frame(&env, max_frame, &mut buf).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&buf)).await;
    }
    let _ = stream.shutdown().await;
    // Drain the peer's Hello before closing, so the close is a FIN and not a reset that eats the error.
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
