//! One client connection.
//!
//! One task per connection does both directions: it decodes frames, checks the handshake and the role, and
//! hands requests to [`crate::handlers`]; and it takes what handlers and shards queue in its outbox
//! ([`OutTx`]), merges replies that come back from several shards in parts, encodes everything queued and
//! writes it with one write. Handlers never see bytes; shards never see sockets.
//!
//! An idle connection holds almost nothing (see "Decisions and why" in docs/architecture.md): no read or write
//! buffer (they are taken when bytes arrive or replies are queued and given back once empty), no timer (the
//! [`Registry`] sweeps for idle connections), no second task, no channel block; what a request needs while it
//! is handled lives in the handler's own stack frame, not in the connection's future.

mod outbox;
mod reply;
mod transport;

use std::future::poll_fn;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use pm_protocol::codec::{decode_frame, encode_frame};
use pm_protocol::pb;
use pm_protocol::{Envelope, ErrorCode, Kind, Role, WireError, PROTOCOL_VERSION};
use tokio::io::AsyncWriteExt as _;
use tokio::time::timeout;

pub use outbox::{channel, OutRx, OutTx, Registry};
pub use reply::{Merge, Outbound, Part, Reply};
pub use transport::{TlsStream, Transport};

use crate::handlers;
use crate::idmap::IdMap;
use crate::metrics as m;
use crate::server::ServerCtx;
use crate::shard::ShardMsg;

/// Connection id, unique within a node's lifetime.
pub type ConnId = u64;

/// Room reserved for a read: the kernel hands over at most this much per call.
const READ_CHUNK: usize = 8 * 1024;
/// Largest frame before the handshake is done (a Hello is a few hundred bytes).
const HELLO_MAX_BYTES: usize = 64 * 1024;
/// Frames handled in one poll before the task yields to the others.
const FRAME_BUDGET: usize = 256;

/// State of one connection, as seen by the handlers.
pub struct ConnCtx {
    /// This connection.
    pub id: ConnId,
    /// Fixed by Hello.
    pub role: Role,
    /// Agents: the executors declared in Hello (`None`: declared none, runs anything).
    pub executors: Option<crate::shard::Executors>,
    /// Agents: the credits and leases held across the node, bounded by `--max-leases-per-conn` (`None`: no
    /// bound, or not an agent).
    pub holdings: Option<Arc<crate::holdings::Holdings>>,
    /// The connection's outbox.
    pub out: OutTx,
    /// Node-wide state.
    pub server: Arc<ServerCtx>,
    /// Submits in flight on this connection: a handler taking a slot sets [`Merge::holds_slot`], and the slot is
    /// given back when the reply is written. At `--max-inflight-per-conn` the connection stops reading.
    pub inflight: usize,
}

impl ConnCtx {
    /// Sends an error answering `request_id` (0 = connection-level).
    pub fn error(&self, code: ErrorCode, request_id: u64, msg: impl Into<String>) {
        let _ = self.out.send(Outbound::Frame(pb::Error::new(code, request_id, msg).into()));
    }
}

/// Why the serving loop ended.
enum Exit {
    /// The peer closed (or reset) its side.
    Eof,
    /// A frame could not be decoded.
    Wire(WireError),
    /// A handler asked to close (it has sent its error already).
    Handler,
    /// No frame for the idle timeout.
    Idle,
    /// The node is shutting down.
    Shutdown,
    /// The outbox was closed (a `Close` was queued) and everything before it is written.
    Closed,
    /// Writing failed: the socket is broken, nothing more can be said.
    WriteFailed,
}

/// What the connection task owns while it waits: the socket, its outbox, and nothing else.
struct Conn<S> {
    stream: S,
    rx: OutRx,
    /// Everything a connection needs only while it has work: `None` when idle.
    busy: Option<Box<Busy>>,
    max_frame: usize,
    /// A `Close` was taken from the outbox: nothing after it is written.
    closed: bool,
}

/// A connection's buffers and replies in progress, boxed so that an idle connection's future does not carry
/// them. Each buffer holds memory only while there are bytes in it.
#[derive(Default)]
struct Busy {
    /// Bytes read and not yet decoded.
    rbuf: BytesMut,
    /// Encoded frames not yet written.
    wbuf: BytesMut,
    /// Messages taken from the outbox, being encoded (kept between batches while busy).
    batch: Vec<Outbound>,
    /// The outbox has been given `batch`'s capacity since the last release.
    lent: bool,
    /// Replies waiting for more parts, by request id.
    merges: IdMap<u64, Merge>,
    /// Since when more than the write bound has waited with the socket taking nothing.
    stalled_since: Option<tokio::time::Instant>,
}

/// `--max-write-buffer-bytes` and `--write-stall-timeout`: a connection with more than `bytes` unwritten that
/// takes nothing for `stall` is closed (`bytes` 0: never).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteBound {
    pub(crate) bytes: usize,
    pub(crate) stall: Duration,
}

impl WriteBound {
    const NONE: WriteBound = WriteBound { bytes: 0, stall: Duration::ZERO };
}

impl Busy {
    /// Turns one outbox message into the frame to write now, if any; `Err(())` for `Close`.
    fn assemble(&mut self, msg: Outbound, inflight: &mut usize) -> Result<Option<Envelope>, ()> {
        let finish = |merge: Merge, request_id: u64, inflight: &mut usize| {
            if merge.holds_slot {
                *inflight = inflight.saturating_sub(1);
            }
            merge.finish(request_id)
        };
        Ok(match msg {
            Outbound::Frame(env) => Some(env),
            Outbound::Begin { request_id, merge } => {
                if merge.parts == 0 {
                    Some(finish(merge, request_id, inflight))
                } else {
                    self.merges.insert(request_id, merge);
                    None
                }
            }
            Outbound::Part { request_id, part } => match self.merges.get_mut(&request_id) {
                Some(merge) => {
                    merge.add(part);
                    if merge.parts > 0 {
                        None
                    } else {
                        self.merges.remove(&request_id).map(|m| finish(m, request_id, inflight))
                    }
                }
                None => None,
            },
            Outbound::Close => return Err(()),
        })
    }
}

impl<S: Transport> Conn<S> {
    /// Takes everything queued in the outbox, encodes it (merging reply parts), and writes what the socket
    /// takes. `Err` when writing failed.
    /// More than `bound.bytes` left unwritten while the socket takes nothing for `bound.stall` is an error: the
    /// peer stopped reading. (A burst over the bound that the peer keeps reading is fine.)
    fn pump_out(&mut self, cx: &mut Context<'_>, inflight: &mut usize, bound: WriteBound) -> io::Result<()> {
        if !self.closed {
            self.rx.register(cx.waker());
            let max_frame = self.max_frame;
            if self.rx.has_queued() {
                let busy = self.busy.get_or_insert_with(Default::default);
                busy.lent |= busy.batch.capacity() > 0;
                self.rx.take(&mut busy.batch);
                let mut batch = std::mem::take(&mut busy.batch);
                for msg in batch.drain(..) {
                    match busy.assemble(msg, inflight) {
                        Ok(None) => {}
                        Ok(Some(env)) => {
                            if let Err(e) = encode_frame(&env, max_frame, &mut busy.wbuf) {
                                // A reply the peer would refuse anyway; the connection cannot go on without it.
                                tracing::warn!("cannot encode a frame: {e}");
                                return Err(io::Error::other(e.to_string()));
                            }
                        }
                        Err(()) => {
                            self.closed = true;
                            self.rx.close();
                            break;
                        }
                    }
                }
                busy.batch = batch;
            }
        }
        let Some(busy) = self.busy.as_mut() else {
            // Nothing of ours is unwritten, but a TLS session may still hold records the socket did not take.
            return match self.stream.poll_push(cx) {
                Poll::Ready(Err(e)) => Err(e),
                _ => Ok(()),
            };
        };
        while !busy.wbuf.is_empty() {
            match self.stream.poll_send(cx, &busy.wbuf) {
                Poll::Pending => {
                    if bound.bytes > 0 && busy.wbuf.len() > bound.bytes {
                        let now = tokio::time::Instant::now();
                        let since = *busy.stalled_since.get_or_insert(now);
                        if now.duration_since(since) >= bound.stall {
                            metrics::counter!(m::REFUSED, "reason" => "slow_consumer").increment(1);
                            let unwritten = busy.wbuf.len();
                            tracing::warn!(
                                unwritten,
                                "closing a connection that stopped reading (--max-write-buffer-bytes)"
                            );
                            return Err(io::Error::other("slow consumer"));
                        }
                    }
                    return Ok(());
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    busy.wbuf.advance(n);
                    busy.stalled_since = None;
                }
            }
        }
        match self.stream.poll_push(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Reads what the socket has into the read buffer (allocated only now that bytes are there).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        std::task::ready!(self.stream.poll_readable(cx))?;
        let rbuf = &mut self.busy.get_or_insert_with(Default::default).rbuf;
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 2 {
            rbuf.reserve(READ_CHUNK);
        }
        self.stream.poll_fill(cx, rbuf)
    }

    /// The next whole frame already read, if any.
    fn decode(&mut self) -> Result<Option<Envelope>, WireError> {
        match self.busy.as_mut() {
            Some(busy) => decode_frame(&mut busy.rbuf, self.max_frame),
            None => Ok(None),
        }
    }

    /// Gives memory back once it holds nothing: the connection is about to wait. Buffers emptied by `advance`
    /// or `split_to` can report no capacity while still holding their allocation, so they are replaced
    /// whenever they are empty.
    fn release(&mut self) {
        let Some(busy) = self.busy.as_mut() else { return };
        if busy.lent {
            self.rx.shrink();
            busy.lent = false;
        }
        if busy.rbuf.is_empty() && busy.wbuf.is_empty() && busy.merges.is_empty() {
            self.busy = None;
            return;
        }
        if busy.rbuf.is_empty() {
            busy.rbuf = BytesMut::new();
        }
        if busy.wbuf.is_empty() {
            busy.wbuf = BytesMut::new();
        }
        busy.batch = Vec::new();
    }

    /// The next frame (for the handshake: nothing is written yet). `None` at end of stream.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Envelope, WireError>>> {
        loop {
            match self.decode() {
                Ok(Some(env)) => return Poll::Ready(Some(Ok(env))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(WireError::Io(e)))),
                Poll::Pending => {
                    self.release();
                    return Poll::Pending;
                }
            }
        }
    }

    /// Serves requests until the connection must close: replies first (they free in-flight slots and are what
    /// the peer waits for), then every whole frame already read, then more bytes from the socket.
    fn poll_serve(&mut self, cx: &mut Context<'_>, ctx: &mut ConnCtx) -> Poll<Exit> {
        let limit = ctx.server.cfg.max_inflight_per_conn;
        let mut frames = 0;
        loop {
            let bound =
                WriteBound { bytes: ctx.server.cfg.max_write_buffer_bytes, stall: ctx.server.cfg.write_stall_timeout };
            if self.pump_out(cx, &mut ctx.inflight, bound).is_err() {
                return Poll::Ready(Exit::WriteFailed);
            }
            if self.closed {
                return Poll::Ready(Exit::Closed);
            }
            if self.rx.shutting_down() {
                return Poll::Ready(Exit::Shutdown);
            }
            if frames >= FRAME_BUDGET {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut handled = false;
            while ctx.inflight < limit {
                match self.decode() {
                    Ok(Some(env)) => {
                        if !handlers::dispatch(ctx, env) {
                            return Poll::Ready(Exit::Handler);
                        }
                        handled = true;
                        frames += 1;
                    }
                    Ok(None) => break,
                    Err(e) => return Poll::Ready(Exit::Wire(e)),
                }
            }
            if handled {
                // Write their replies before reading on.
                continue;
            }
            if ctx.inflight >= limit {
                // Not reading: waiting for replies (the outbox wakes us), and the silence is ours, not the peer's.
                self.rx.touch(&ctx.server.conns);
                return Poll::Pending;
            }
            if self.rx.idle_expired(&ctx.server.conns) {
                return Poll::Ready(Exit::Idle);
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Exit::Eof),
                Poll::Ready(Ok(_)) => self.rx.touch(&ctx.server.conns),
                Poll::Ready(Err(e)) => return Poll::Ready(Exit::Wire(WireError::Io(e))),
                Poll::Pending => {
                    self.release();
                    return Poll::Pending;
                }
            }
        }
    }

    /// Writes everything queued up to the `Close`, then half-closes the socket.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inflight = 0;
        self.pump_out(cx, &mut inflight, WriteBound::NONE)?;
        if self.closed && self.busy.as_ref().is_none_or(|b| b.wbuf.is_empty()) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

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

/// Reads and checks Hello within the handshake timeout and queues Welcome. `None` when the connection was
/// refused (and closed) or went away.
async fn handshake<S: Transport>(conn: &mut Conn<S>, ctx: &ConnCtx) -> Option<(Role, Option<crate::shard::Executors>)> {
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
    // --tls-client-role: a certificate that names a role decides it; a token, if sent, must agree.
    let cert_roles = match (&server.tls, conn.stream.peer_certificate()) {
        (Some(tls), Some(der)) => tls.client_roles.of(der),
        _ => crate::tls::RoleSet::default(),
    };
    if !cert_roles.is_empty() && !cert_roles.contains(role) {
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

/// Most executor names an agent may declare in `Hello.capabilities`.
pub const MAX_CAPABILITIES: usize = 256;
/// Longest executor name (in `Hello.capabilities` and `TaskSpec.executors`).
pub const MAX_EXECUTOR_NAME_BYTES: usize = 128;

/// Writes everything queued up to the `Close` (which the caller has queued) and half-closes the socket, then
/// drains what the peer still sends for a moment: closing a socket with unread input sends a reset, which can
/// destroy the error frame in flight.
async fn close_lingering<S: Transport>(conn: &mut Conn<S>) {
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

fn refuse(out: &OutTx, code: ErrorCode, msg: &str, reason: &'static str) {
    metrics::counter!(m::REFUSED, "reason" => reason).increment(1);
    let _ = out.send(Outbound::Frame(pb::Error::new(code, 0, msg).into()));
    let _ = out.send(Outbound::Close);
}

fn refuse_wire(out: &OutTx, e: &WireError) {
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
