//! The TCP listener: socket options, the connection limit, and the accept loop.
//!
//! A connection past `--max-connections` or `--max-connections-per-ip` is refused with an `Error` frame
//! `TOO_MANY_CONNECTIONS` and closed. On a TLS listener the frame goes over TLS, so the refusal completes the
//! TLS handshake first (bounded by `--handshake-timeout`); at most [`MAX_TLS_REFUSALS`] such handshakes run
//! at once, and a connection refused past them is closed without a word (no TLS session, no buffer), so a
//! flood costs at most that many TLS sessions.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pm_protocol::codec::encode_frame;
use pm_protocol::ring::Ring;
use pm_protocol::{pb, ErrorCode};
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::connection;
use crate::metrics as m;
use crate::shard::ShardHandle;
use crate::steal::StealHandle;

/// Limits the connection code needs (copied out of [`crate::config::Config`]).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame in either direction.
    pub max_frame_bytes: usize,
    /// Most tasks per Submit.
    pub max_batch: usize,
    /// Largest payload.
    pub max_payload_bytes: usize,
    /// Largest template parameter value.
    pub max_param_bytes: usize,
    /// Most open connections.
    pub max_connections: usize,
    /// Submits in flight per connection.
    pub max_inflight_per_conn: usize,
    /// Credits plus unacked leases one agent connection may hold across its queues (0 = no limit).
    pub max_leases_per_conn: u32,
    /// Time allowed for Hello.
    pub handshake_timeout: Duration,
    /// Silence allowed after Hello.
    pub idle_timeout: Duration,
    /// Unwritten output allowed per connection, bytes (0 = no limit)...
    pub max_write_buffer_bytes: usize,
    /// ...for this long with the socket taking nothing.
    pub write_stall_timeout: Duration,
}

/// Open connections per source address, for `--max-connections-per-ip`.
#[derive(Debug)]
pub struct PerIp {
    max: u32,
    open: parking_lot::Mutex<std::collections::HashMap<IpAddr, u32>>,
}

impl PerIp {
    /// A limit of `max` connections per address.
    pub fn new(max: usize) -> PerIp {
        PerIp { max: u32::try_from(max).unwrap_or(u32::MAX), open: Default::default() }
    }

    /// Counts a connection from `ip`; false (nothing counted) when `ip` is at the limit.
    fn acquire(&self, ip: IpAddr) -> bool {
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }
}

/// Node-wide state shared by all connections.
pub struct ServerCtx {
    /// Limits in force.
    pub cfg: Limits,
    /// The shard actors.
    pub shards: Vec<ShardHandle>,
    /// Next connection id.
    pub next_conn: AtomicU64,
    /// Open connections.
    pub connections: AtomicU64,
    /// Node name.
    pub node_id: String,
    /// Cluster mode: the ring of all members (empty for a single node).
    pub ring: Ring,
    /// This node's ordinal in `ring` (`None` for a single node).
    pub ordinal: Option<usize>,
    /// Cluster mode: the work stealer, which forwards acks of stolen tasks to their owners.
    pub steal: Option<StealHandle>,
    /// Tokens per role.
    pub auth: Arc<crate::auth::Auth>,
    /// TLS on the listener (`None`: plain TCP).
    pub tls: Option<crate::tls::Tls>,
    /// Refusals of the connection limits in their TLS handshake now (at most [`MAX_TLS_REFUSALS`]).
    pub refusing: AtomicUsize,
    /// `--max-connections-per-ip` (`None`: no limit).
    pub per_ip: Option<Arc<PerIp>>,
    /// Data directory (for stats).
    pub data_dir: PathBuf,
    /// Applications and their pipeline templates.
    pub catalog: Arc<crate::catalog::Catalog>,
    /// Cluster mode: the other members, to copy applications to.
    pub catalog_peers: Option<Arc<crate::catalog_sync::CatalogPeers>>,
    /// Cancelled when connections must close (end of shutdown).
    pub shutdown: CancellationToken,
    /// Open connections, for the idle sweep and shutdown.
    pub conns: Arc<connection::Registry>,
}

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
/// every minute (docs/benchmarks.md, "Cluster").
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
            Some(per_ip) if per_ip.acquire(peer.ip()) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    // Released however the connection's task ends (a panic included).
                    let _slot = Slot(per_ip, peer.ip());
                    serve_any(stream, ctx).await;
                });
            }
            Some(_) => {
                ctx.connections.fetch_sub(1, Ordering::Relaxed);
                metrics::counter!(m::REFUSED, "reason" => "too_many_connections_per_ip").increment(1);
                tracing::debug!(%peer, "connection refused: limit per source address reached");
                spawn_refusal(stream, &ctx, "connection limit per source address reached");
            }
        }
    }
}

/// A connection's place in [`PerIp`], given back when dropped.
struct Slot(Arc<PerIp>, IpAddr);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release(self.1);
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
