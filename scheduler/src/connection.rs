//! One client connection.
//!
//! Two tasks per connection: the *reader* (this module's [`serve`]) decodes frames, checks the handshake and
//! the role, and hands requests to [`crate::handlers`]; the *writer* ([`write_loop`]) owns the socket's write
//! half, drains the connection's outbound channel, merges replies that come back from several shards in
//! parts, and writes everything queued before flushing once. Handlers never see bytes; shards never see
//! sockets.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use pm_protocol::pb::{self, DeadLetter, QueueStats, SubmitResult};
use pm_protocol::{Envelope, ErrorCode, FrameCodec, Kind, Role, WireError, PROTOCOL_VERSION};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::handlers;
use crate::metrics as m;
use crate::server::ServerCtx;
use crate::shard::ShardMsg;

/// Connection id, unique within a node's lifetime.
pub type ConnId = u64;

/// Sender side of a connection's outbound channel.
pub type OutTx = mpsc::UnboundedSender<Outbound>;

/// What the writer is asked to do.
#[derive(Debug)]
pub enum Outbound {
    /// Write this frame.
    Frame(Envelope),
    /// A request whose reply arrives in `merge.parts` parts (registered before any part is sent).
    Begin {
        /// Request id.
        request_id: u64,
        /// How to assemble the reply.
        merge: Merge,
    },
    /// One part of a reply.
    Part {
        /// Request id.
        request_id: u64,
        /// The part.
        part: Part,
    },
    /// Flush and close the connection.
    Close,
}

/// A piece of a reply produced by one shard.
#[derive(Debug)]
pub enum Part {
    /// Submit results by index in the request.
    Submit(Vec<(usize, SubmitResult)>),
    /// Ack/nack/extend codes by index.
    Lease(Vec<(usize, ErrorCode)>),
    /// Queue counters.
    Stats(Vec<QueueStats>),
    /// Dead letters.
    DeadList(Vec<DeadLetter>),
    /// Redriven count.
    Redrive(u64),
    /// Cancel codes by index in the request (only for the task ids this shard owns).
    Cancel(Vec<(usize, ErrorCode)>),
    /// Reclaim results by index in the request (only for the task ids this shard owns).
    Reclaim(Vec<(usize, pb::ReclaimResult)>),
}

/// A reply being assembled.
#[derive(Debug)]
pub struct Merge {
    /// Parts still expected.
    pub parts: usize,
    /// The reply so far.
    pub reply: Reply,
    /// Held until the reply is written (per-connection in-flight limit).
    pub permit: Option<OwnedSemaphorePermit>,
}

/// Reply under construction.
#[derive(Debug)]
pub enum Reply {
    /// SubmitAck.
    Submit(Vec<SubmitResult>),
    /// LeaseReply.
    Lease(Vec<i32>),
    /// StatsReply.
    Stats(pb::StatsReply),
    /// DeadLetterListReply (with its limit).
    DeadList(Vec<DeadLetter>, usize),
    /// DeadLetterRedriveReply.
    Redrive(u64),
    /// CancelReply: one code per task id, `NOT_FOUND` until the owning shard says otherwise.
    Cancel(Vec<i32>),
    /// ReclaimReply: one result per item, `NOT_FOUND` until the owning shard says otherwise.
    Reclaim(Vec<pb::ReclaimResult>),
}

impl Merge {
    fn add(&mut self, part: Part) {
        self.parts = self.parts.saturating_sub(1);
        match (&mut self.reply, part) {
            (Reply::Submit(all), Part::Submit(items)) => {
                for (i, r) in items {
                    if let Some(slot) = all.get_mut(i) {
                        *slot = r;
                    }
                }
            }
            (Reply::Lease(all), Part::Lease(items)) => {
                for (i, c) in items {
                    if let Some(slot) = all.get_mut(i) {
                        *slot = c as i32;
                    }
                }
            }
            (Reply::Stats(s), Part::Stats(q)) => s.queues.extend(q),
            (Reply::DeadList(all, limit), Part::DeadList(items)) => {
                all.extend(items);
                all.sort_by_key(|d| d.task_id);
                all.truncate(*limit);
            }
            (Reply::Redrive(n), Part::Redrive(k)) => *n += k,
            (Reply::Cancel(all), Part::Cancel(items)) => {
                for (i, c) in items {
                    if let Some(slot) = all.get_mut(i) {
                        *slot = c as i32;
                    }
                }
            }
            (Reply::Reclaim(all), Part::Reclaim(items)) => {
                for (i, r) in items {
                    if let Some(slot) = all.get_mut(i) {
                        *slot = r;
                    }
                }
            }
            (_, part) => tracing::error!(?part, "reply part of the wrong kind dropped"),
        }
    }

    fn finish(self, request_id: u64) -> Envelope {
        match self.reply {
            Reply::Submit(results) => pb::SubmitAck { request_id, results }.into(),
            Reply::Lease(codes) => pb::LeaseReply { request_id, codes }.into(),
            Reply::Stats(mut s) => {
                s.request_id = request_id;
                s.queues.sort_by(|a, b| a.queue.cmp(&b.queue));
                s.into()
            }
            Reply::DeadList(tasks, _) => pb::DeadLetterListReply { request_id, tasks }.into(),
            Reply::Redrive(redriven) => pb::DeadLetterRedriveReply { request_id, redriven }.into(),
            Reply::Cancel(codes) => pb::CancelReply { request_id, codes }.into(),
            Reply::Reclaim(results) => pb::ReclaimReply { request_id, results }.into(),
        }
    }
}

/// State of one connection, as seen by the handlers.
pub struct ConnCtx {
    /// This connection.
    pub id: ConnId,
    /// Fixed by Hello.
    pub role: Role,
    /// The writer's channel.
    pub out: OutTx,
    /// Node-wide state.
    pub server: Arc<ServerCtx>,
    /// Submits in flight on this connection.
    pub inflight: Arc<Semaphore>,
}

impl ConnCtx {
    /// Sends an error answering `request_id` (0 = connection-level).
    pub fn error(&self, code: ErrorCode, request_id: u64, msg: impl Into<String>) {
        let _ = self.out.send(Outbound::Frame(pb::Error::new(code, request_id, msg).into()));
    }
}

/// Serves one accepted connection until it closes or the node shuts down.
pub async fn serve(stream: TcpStream, server: Arc<ServerCtx>) {
    let id = server.next_conn.fetch_add(1, Ordering::Relaxed);
    let limits = &server.cfg;
    let (rd, wr) = stream.into_split();
    let mut reader = FramedRead::with_capacity(rd, FrameCodec::new(limits.max_frame_bytes), 4096);
    let (out, out_rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(wr, out_rx, limits.max_frame_bytes));

    let hello = match timeout(limits.handshake_timeout, reader.next()).await {
        Err(_) => {
            refuse(&out, ErrorCode::Timeout, "no Hello within the handshake timeout", "handshake_timeout");
            close_lingering(writer, reader).await;
            return;
        }
        Ok(None) => return,
        Ok(Some(Err(e))) => {
            refuse_wire(&out, &e);
            close_lingering(writer, reader).await;
            return;
        }
        Ok(Some(Ok(Envelope { kind: Some(Kind::Hello(h)) }))) => h,
        Ok(Some(Ok(_))) => {
            refuse(&out, ErrorCode::HandshakeRequired, "the first frame must be Hello", "no_hello");
            close_lingering(writer, reader).await;
            return;
        }
    };
    if hello.version != PROTOCOL_VERSION {
        let msg = format!("protocol version {} is not supported (server speaks {PROTOCOL_VERSION})", hello.version);
        refuse(&out, ErrorCode::UnsupportedVersion, &msg, "version");
        close_lingering(writer, reader).await;
        return;
    }
    let role = Role::try_from(hello.role).unwrap_or(Role::Unspecified);
    if role == Role::Unspecified {
        refuse(&out, ErrorCode::Unauthorized, "Hello must name a role (producer, agent or admin)", "role");
        close_lingering(writer, reader).await;
        return;
    }
    let role_name = role.as_str_name();
    let _ = out.send(Outbound::Frame(
        pb::Welcome {
            server_version: PROTOCOL_VERSION,
            node_id: server.node_id.clone(),
            ring_epoch: 0,
            members: vec![server.node_id.clone()],
            max_frame_bytes: limits.max_frame_bytes as u32,
            max_batch: limits.max_batch as u32,
        }
        .into(),
    ));
    metrics::gauge!(m::CONNECTIONS, "role" => role_name).increment(1.0);
    tracing::debug!(conn = id, client = %truncate(&hello.client_id, 128), role = role_name, "connected");

    let mut ctx = ConnCtx {
        id,
        role,
        out: out.clone(),
        server: server.clone(),
        inflight: Arc::new(Semaphore::new(limits.max_inflight_per_conn)),
    };
    let shutdown = server.shutdown.clone();
    loop {
        let next = tokio::select! {
            r = timeout(limits.idle_timeout, reader.next()) => r,
            _ = shutdown.cancelled() => {
                ctx.error(ErrorCode::ShuttingDown, 0, "scheduler is shutting down");
                break;
            }
        };
        match next {
            Err(_) => {
                refuse(&out, ErrorCode::Timeout, "idle timeout", "idle_timeout");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                refuse_wire(&out, &e);
                break;
            }
            Ok(Some(Ok(env))) => {
                if !handlers::dispatch(&mut ctx, env).await {
                    break;
                }
            }
        }
    }
    let _ = out.send(Outbound::Close);
    if role == Role::Agent {
        for s in &server.shards {
            s.send(ShardMsg::Disconnected { conn: id });
        }
    }
    metrics::gauge!(m::CONNECTIONS, "role" => role_name).decrement(1.0);
    drop(ctx);
    drop(out);
    close_lingering(writer, reader).await;
}

/// Waits for the writer to flush (it half-closes the socket), then drains what the peer still sends for a
/// moment: closing a socket with unread input sends a reset, which can destroy the error frame in flight.
async fn close_lingering(
    writer: tokio::task::JoinHandle<()>,
    mut reader: FramedRead<tokio::net::tcp::OwnedReadHalf, FrameCodec>,
) {
    let _ = writer.await;
    let mut rd = reader.get_mut();
    let mut sink = [0u8; 4096];
    let _ = timeout(std::time::Duration::from_millis(500), async {
        loop {
            match tokio::io::AsyncReadExt::read(&mut rd, &mut sink).await {
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

/// Owns the write half: writes every queued frame, then flushes once.
pub async fn write_loop(wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Outbound>, max_frame: usize) {
    let mut w = FramedWrite::new(wr, FrameCodec::new(max_frame));
    let mut merges: HashMap<u64, Merge> = HashMap::new();
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            let env = match msg {
                Outbound::Frame(env) => Some(env),
                Outbound::Begin { request_id, merge } => {
                    if merge.parts == 0 {
                        Some(merge.finish(request_id))
                    } else {
                        merges.insert(request_id, merge);
                        None
                    }
                }
                Outbound::Part { request_id, part } => match merges.get_mut(&request_id) {
                    Some(merge) => {
                        merge.add(part);
                        if merge.parts == 0 {
                            merges.remove(&request_id).map(|m| m.finish(request_id))
                        } else {
                            None
                        }
                    }
                    None => None,
                },
                Outbound::Close => break 'outer,
            };
            if let Some(env) = env {
                if let Err(e) = w.feed(env).await {
                    tracing::debug!("write failed: {e}");
                    return;
                }
            }
            next = rx.try_recv().ok();
        }
        if SinkExt::<Envelope>::flush(&mut w).await.is_err() {
            return;
        }
    }
    let _ = SinkExt::<Envelope>::flush(&mut w).await;
    let _ = w.get_mut().shutdown().await;
}

use tokio::io::AsyncWriteExt as _;
