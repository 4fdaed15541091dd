//! The connection task: owns the socket, routes replies, pings, reconnects (and reclaims an agent's running
//! tasks first, when asked to).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pm_protocol::pb;
use pm_protocol::{Envelope, ErrorCode, FrameCodec, Kind, PROTOCOL_VERSION};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

use crate::error::{Error, ErrorKind};
use crate::events::AgentEvent;
use crate::options::ConnectOptions;

/// A command to the connection task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send a request and route its reply.
    Request { id: u64, env: Box<Envelope>, reply: oneshot::Sender<Result<Envelope, Error>> },
    /// Grant credits, or set them to `n` (remembered for reconnects).
    Credit { queue: String, n: u32, set: bool },
    /// A one-way message with no reply ([`crate::Client::push`]), dropped while the connection is down and
    /// when it waited longer than [`PUSH_MAX_AGE`] to be written (a reconnect came in between).
    Push(Box<Envelope>, std::time::Instant),
}

pub(crate) type Conn = Framed<crate::tls::Stream, FrameCodec>;

/// Opens a connection and completes the handshake.
pub(crate) async fn connect(addr: &str, opts: &ConnectOptions) -> Result<(Conn, pb::Welcome), Error> {
    let fut = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::new(ErrorKind::Connect, format!("cannot connect to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let stream = match &opts.tls {
            None => crate::tls::Stream::Plain(stream),
            Some(config) => {
                let name = crate::tls::server_name(addr).map_err(|e| Error::new(ErrorKind::Connect, e))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| Error::new(ErrorKind::Connect, format!("TLS handshake with {addr}: {e}")))?;
                crate::tls::Stream::Tls(Box::new(tls))
            }
        };
        handshake(stream, opts, addr).await
    };
    match tokio::time::timeout(opts.connect_timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::new(ErrorKind::Timeout, format!("no handshake with {addr} within the connect timeout"))),
    }
}

/// Completes the handshake on a connected stream (the connect timeout is the caller's).
pub(crate) async fn handshake(
    stream: crate::tls::Stream,
    opts: &ConnectOptions,
    addr: &str,
) -> Result<(Conn, pb::Welcome), Error> {
    let mut framed = Framed::new(stream, FrameCodec::new(opts.max_frame_bytes));
    let hello = pb::Hello {
        version: PROTOCOL_VERSION,
        role: opts.role as i32,
        client_id: opts.client_id.clone(),
        queues: opts.queues.clone(),
        capabilities: opts.capabilities.clone(),
        auth_token: opts.token.clone(),
    };
    framed
        .send(Envelope::from(hello))
        .await
        .map_err(|e| Error::new(ErrorKind::Connect, format!("handshake with {addr}: {e}")))?;
    match framed.next().await {
        Some(Ok(Envelope { kind: Some(Kind::Welcome(w)) })) => Ok((framed, w)),
        Some(Ok(Envelope { kind: Some(Kind::Error(e)) })) => {
            let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Internal);
            Err(Error::with_code(ErrorKind::Handshake, code, e.message))
        }
        Some(Ok(_)) => Err(Error::new(ErrorKind::Protocol, "expected Welcome")),
        Some(Err(e)) => Err(Error::new(ErrorKind::Connect, format!("handshake with {addr}: {e}"))),
        None => Err(Error::new(ErrorKind::Connect, format!("{addr} closed the connection during the handshake"))),
    }
}

type Pending = HashMap<u64, oneshot::Sender<Result<Envelope, Error>>>;

/// What the connection task shares with the client handles.
pub(crate) struct Shared {
    /// Request ids; the connection's own requests (`Reclaim`) take theirs here too.
    pub(crate) next_id: Arc<AtomicU64>,
    /// `Reclaimed` events pushed so far.
    pub(crate) reclaims: Arc<AtomicU64>,
    /// Where `Completed` messages go (a client made with `connect_watching`).
    pub(crate) completed: Option<mpsc::UnboundedSender<pb::TaskStatus>>,
}

/// Runs until every handle is dropped (or the connection breaks and reconnecting is off).
pub(crate) async fn run(
    addr: String,
    mut opts: ConnectOptions,
    mut conn: Conn,
    mut cmds: mpsc::Receiver<Command>,
    leases: Option<mpsc::UnboundedSender<AgentEvent>>,
    shared: Shared,
) {
    // Credits granted and not yet used, per queue: granted again after a reconnect.
    let mut credits: HashMap<String, u64> = HashMap::new();
    loop {
        let mut pending: Pending = HashMap::new();
        let reason =
            session(&mut conn, &mut cmds, &leases, &shared, &mut pending, &mut credits, opts.ping_interval).await;
        for (_, reply) in pending.drain() {
            let _ = reply.send(Err(Error::new(ErrorKind::Disconnected, reason.clone())));
        }
        if reason == CLOSED || !opts.reconnect {
            return;
        }
        // An agent's lease connection warns at once and at each failed retry: while it is down the agent is
        // given nothing. Other clients stay at DEBUG (their calls fail with the reason).
        let loud = leases.is_some();
        if loud {
            tracing::warn!(%addr, "connection to the scheduler lost ({reason}); reconnecting");
        } else {
            tracing::debug!(%addr, "connection lost ({reason}); reconnecting");
        }
        let mut attempt = 0u32;
        let mut backoff = Duration::from_millis(20);
        let down_since = tokio::time::Instant::now();
        let mut round = 0usize;
        conn = loop {
            if cmds.is_closed() {
                return;
            }
            // The primary address first; once it has been down for the failover delay, every other round goes
            // to the next fallback address.
            let target = match &opts.failover {
                Some((fallbacks, after)) if !fallbacks.is_empty() && down_since.elapsed() >= *after => {
                    round += 1;
                    if round % 2 == 1 {
                        fallbacks[(round / 2) % fallbacks.len()].as_str()
                    } else {
                        addr.as_str()
                    }
                }
                _ => addr.as_str(),
            };
            if target != addr {
                tracing::info!(primary = %addr, %target, "primary unreachable: failing over");
            }
            match connect(target, &opts).await {
                Ok((mut c, welcome)) => match reclaim(&mut c, &opts, &welcome, &leases, &shared, &mut credits).await {
                    Ok(()) => {
                        if loud {
                            tracing::info!(%target, attempts = attempt + 1, "reconnected to the scheduler");
                        }
                        break c;
                    }
                    Err(ReclaimFailed { reason, refused }) => {
                        if refused {
                            // This server does not take Reclaim (an older version, or not an agent connection):
                            // go on without it, as a client without a provider would.
                            tracing::warn!(%addr, "reclaim refused ({reason}); reconnecting without reclaiming");
                            opts.reclaim = None;
                        } else {
                            tracing::debug!(%addr, "reclaim failed: {reason}");
                        }
                    }
                },
                Err(e) => {
                    if loud {
                        tracing::warn!(%target, attempt = attempt + 1, "cannot reach the scheduler: {e}; retrying");
                    } else {
                        tracing::debug!(%addr, "reconnect failed: {e}");
                    }
                    // Fail queued requests instead of letting them wait for a server that may be gone.
                    while let Ok(cmd) = cmds.try_recv() {
                        match cmd {
                            Command::Request { reply, .. } => {
                                let _ = reply.send(Err(Error::new(ErrorKind::NotSent, e.message().to_string())));
                            }
                            Command::Credit { queue, n, set } => {
                                let c = credits.entry(queue).or_default();
                                *c = if set { u64::from(n) } else { *c + u64::from(n) };
                            }
                            Command::Push(..) => {}
                        }
                    }
                }
            }
            attempt += 1;
            let jitter = rand::random::<f64>() * 0.5 + 0.75;
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(opts.max_backoff);
        };
        for (queue, n) in &credits {
            if *n > 0 {
                let credit = pb::Credit { queue: queue.clone(), n: (*n).min(u64::from(u32::MAX)) as u32, set: false };
                let _ = conn.feed(Envelope::from(credit)).await;
            }
        }
        let _ = SinkExt::<Envelope>::flush(&mut conn).await;
    }
}

const CLOSED: &str = "client closed";

/// Oldest a pushed message may be when its turn to be written comes: its sender has moved on (a raft
/// message queued across a reconnect would only confuse its group).
pub(crate) const PUSH_MAX_AGE: Duration = Duration::from_millis(500);

/// Why a reconnect's reclaim did not complete.
struct ReclaimFailed {
    reason: String,
    /// The server answered with an error (it does not take Reclaim here), rather than failing to answer.
    refused: bool,
}

impl ReclaimFailed {
    fn broken(reason: impl Into<String>) -> Self {
        ReclaimFailed { reason: reason.into(), refused: false }
    }
}

/// Right after a reconnect's handshake, before anything else is written: asks the provider which tasks the
/// agent still runs, reclaims them (in chunks of the server's batch limit, within one request timeout), and
/// pushes the results as one `Reclaimed` event, then whatever arrived meanwhile. Does nothing without a
/// provider, for a client that is not an agent, or when the provider lists nothing.
async fn reclaim(
    conn: &mut Conn,
    opts: &ConnectOptions,
    welcome: &pb::Welcome,
    leases: &Option<mpsc::UnboundedSender<AgentEvent>>,
    shared: &Shared,
    credits: &mut HashMap<String, u64>,
) -> Result<(), ReclaimFailed> {
    let (Some(provider), Some(tx)) = (&opts.reclaim, leases) else { return Ok(()) };
    let items = (provider.0)();
    if items.is_empty() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + opts.request_timeout;
    let mut results = Vec::with_capacity(items.len());
    // Events that arrive before the reply (a revocation of a lease just reclaimed) follow the `Reclaimed`
    // event, which names that lease.
    let mut held = Vec::new();
    let chunk = (welcome.max_batch as usize).max(1);
    for items in items.chunks(chunk) {
        let request_id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let req = pb::Reclaim { request_id, items: items.to_vec() };
        conn.send(Envelope::from(req)).await.map_err(|e| ReclaimFailed::broken(format!("write failed: {e}")))?;
        loop {
            let frame = tokio::time::timeout_at(deadline, conn.next())
                .await
                .map_err(|_| ReclaimFailed::broken("no reclaim reply within the request timeout"))?;
            let kind = match frame {
                None => return Err(ReclaimFailed::broken("server closed the connection")),
                Some(Err(e)) => return Err(ReclaimFailed::broken(format!("read failed: {e}"))),
                Some(Ok(env)) => env.kind,
            };
            match kind {
                Some(Kind::ReclaimReply(r)) if r.request_id == request_id => {
                    results.extend(r.results);
                    break;
                }
                Some(Kind::Error(e)) if e.request_id == request_id || e.request_id == 0 => {
                    let reason = format!("server error {}: {}", e.code, e.message);
                    let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Internal);
                    let refused = matches!(code, ErrorCode::UnknownMessage | ErrorCode::RoleNotAllowed);
                    return Err(ReclaimFailed { reason, refused });
                }
                Some(Kind::Ping(p)) => {
                    conn.send(Envelope::from(pb::Pong { nonce: p.nonce }))
                        .await
                        .map_err(|e| ReclaimFailed::broken(format!("write failed: {e}")))?;
                }
                Some(Kind::Leased(l)) => {
                    for t in l.tasks {
                        if let Some(c) = credits.get_mut(&t.queue) {
                            *c = c.saturating_sub(1);
                        }
                        held.push(AgentEvent::Leased(t));
                    }
                }
                Some(Kind::Revoke(r)) => held.push(AgentEvent::Revoked(r)),
                _ => {}
            }
        }
    }
    tracing::debug!(tasks = results.len(), "reclaimed after a reconnect");
    shared.reclaims.fetch_add(1, Ordering::SeqCst);
    let _ = tx.send(AgentEvent::Reclaimed(results));
    for ev in held {
        let _ = tx.send(ev);
    }
    Ok(())
}

async fn session(
    conn: &mut Conn,
    cmds: &mut mpsc::Receiver<Command>,
    leases: &Option<mpsc::UnboundedSender<AgentEvent>>,
    shared: &Shared,
    pending: &mut Pending,
    credits: &mut HashMap<String, u64>,
    ping_every: Duration,
) -> String {
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    loop {
        tokio::select! {
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { return CLOSED.into() };
                let mut next = Some(cmd);
                while let Some(cmd) = next.take() {
                    let env = match cmd {
                        Command::Request { id, env, reply } => {
                            pending.insert(id, reply);
                            *env
                        }
                        Command::Credit { queue, n, set } => {
                            let c = credits.entry(queue.clone()).or_default();
                            *c = if set { u64::from(n) } else { *c + u64::from(n) };
                            pb::Credit { queue, n, set }.into()
                        }
                        Command::Push(env, at) => {
                            if at.elapsed() > PUSH_MAX_AGE {
                                next = cmds.try_recv().ok();
                                continue;
                            }
                            *env
                        }
                    };
                    if let Err(e) = conn.feed(env).await {
                        return format!("write failed: {e}");
                    }
                    next = cmds.try_recv().ok();
                }
                if let Err(e) = SinkExt::<Envelope>::flush(conn).await {
                    return format!("write failed: {e}");
                }
            }
            frame = conn.next() => {
                let env = match frame {
                    None => return "server closed the connection".into(),
                    Some(Err(e)) => return format!("read failed: {e}"),
                    Some(Ok(env)) => env,
                };
                let kind = match env.kind {
                    None => continue,
                    Some(Kind::Leased(l)) => {
                        for t in l.tasks {
                            if let Some(c) = credits.get_mut(&t.queue) {
                                *c = c.saturating_sub(1);
                            }
                            if let Some(tx) = leases {
                                let _ = tx.send(AgentEvent::Leased(t));
                            }
                        }
                        continue;
                    }
                    Some(Kind::Revoke(r)) => {
                        if let Some(tx) = leases {
                            let _ = tx.send(AgentEvent::Revoked(r));
                        }
                        continue;
                    }
                    Some(Kind::Completed(c)) => {
                        if let (Some(tx), Some(task)) = (&shared.completed, c.task) {
                            let _ = tx.send(task);
                        }
                        continue;
                    }
                    Some(Kind::Ping(p)) => {
                        if conn.send(Envelope::from(pb::Pong { nonce: p.nonce })).await.is_err() {
                            return "write failed".into();
                        }
                        continue;
                    }
                    Some(k) => k,
                };
                let id = match &kind {
                    Kind::Error(e) if e.request_id == 0 => {
                        return format!("server error {}: {}", e.code, e.message)
                    }
                    // Every reply quotes the request it answers (the table in pm_protocol::kinds).
                    k if k.info().request_id && k.info().direction == pm_protocol::kinds::Direction::ToClient => {
                        k.request_id()
                    }
                    _ => continue,
                };
                if let Some(reply) = pending.remove(&id) {
                    let _ = reply.send(Ok(Envelope { kind: Some(kind) }));
                }
            }
            _ = ping.tick() => {
                if conn.send(Envelope::from(pb::Ping { nonce: 0 })).await.is_err() {
                    return "write failed".into();
                }
            }
        }
    }
}
