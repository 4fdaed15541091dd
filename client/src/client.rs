//! [`Client`]: the cheap `Clone` handle to one connection. Every clone sends `Command`s to the connection
//! task (`conn.rs`), which owns the socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use pm_protocol::pb::{self, SubmitResult, TaskSpec};
use pm_protocol::{Envelope, ErrorCode, Kind};
use tokio::sync::{mpsc, oneshot};

use crate::conn::{self, Command};
use crate::error::{Error, ErrorKind};
use crate::events::{AgentEvent, Completions, Leases};
use crate::options::ConnectOptions;
use crate::tls;

/// Handle to a connection. Clone freely; the connection closes when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    next_id: Arc<AtomicU64>,
    request_timeout: std::time::Duration,
    welcome: Arc<pb::Welcome>,
    reclaims: Arc<AtomicU64>,
}

impl Client {
    /// Connects as a producer or admin (for agents use [`Client::connect_agent`]).
    pub async fn connect(addr: &str, opts: ConnectOptions) -> Result<Client, Error> {
        let (client, _leases) = Self::connect_inner(addr, opts, false).await?;
        Ok(client)
    }

    /// Connects as a producer or admin that also hears when tasks finish: returns the handle and the stream of
    /// [`Completions`].
    pub async fn connect_watching(addr: &str, opts: ConnectOptions) -> Result<(Client, Completions), Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (client, _leases) = Self::connect_with(addr, opts, false, Some(tx)).await?;
        Ok((client, Completions { rx }))
    }

    /// Connects as an agent (or a peer node, [`ConnectOptions::peer`]): returns the handle and the stream of
    /// leased tasks and revocations.
    pub async fn connect_agent(addr: &str, opts: ConnectOptions) -> Result<(Client, Leases), Error> {
        let (client, leases) = Self::connect_inner(addr, opts, true).await?;
        let rx = leases.ok_or_else(|| Error::new(ErrorKind::Protocol, "no lease stream"))?;
        Ok((client, Leases { rx }))
    }

    async fn connect_inner(
        addr: &str,
        opts: ConnectOptions,
        agent: bool,
    ) -> Result<(Client, Option<mpsc::UnboundedReceiver<AgentEvent>>), Error> {
        Self::connect_with(addr, opts, agent, None).await
    }

    /// Connects as a producer or admin over an in-process pipe to a connection the same process serves (the
    /// scheduler's HTTP API speaks the protocol to its own node this way). It never reconnects.
    pub async fn connect_stream(stream: tokio::io::DuplexStream, opts: ConnectOptions) -> Result<Client, Error> {
        let opts = opts.reconnect(false);
        let handshake = conn::handshake(tls::Stream::Memory(stream), &opts, "this node");
        let (framed, welcome) = match tokio::time::timeout(opts.connect_timeout, handshake).await {
            Ok(r) => r?,
            Err(_) => return Err(Error::new(ErrorKind::Timeout, "no handshake within the connect timeout")),
        };
        let (client, _) = Self::start(String::new(), opts, framed, welcome, false, None);
        Ok(client)
    }

    async fn connect_with(
        addr: &str,
        opts: ConnectOptions,
        agent: bool,
        completed: Option<mpsc::UnboundedSender<pb::TaskStatus>>,
    ) -> Result<(Client, Option<mpsc::UnboundedReceiver<AgentEvent>>), Error> {
        let (framed, welcome) = conn::connect(addr, &opts).await?;
        Ok(Self::start(addr.to_string(), opts, framed, welcome, agent, completed))
    }

    fn start(
        addr: String,
        opts: ConnectOptions,
        framed: conn::Conn,
        welcome: pb::Welcome,
        agent: bool,
        completed: Option<mpsc::UnboundedSender<pb::TaskStatus>>,
    ) -> (Client, Option<mpsc::UnboundedReceiver<AgentEvent>>) {
        let (tx, rx) = mpsc::channel(1024);
        let (lease_tx, lease_rx) = if agent {
            let (t, r) = mpsc::unbounded_channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let request_timeout = opts.request_timeout;
        let next_id = Arc::new(AtomicU64::new(1));
        let reclaims = Arc::new(AtomicU64::new(0));
        let shared = conn::Shared { next_id: next_id.clone(), reclaims: reclaims.clone(), completed };
        tokio::spawn(conn::run(addr, opts, framed, rx, lease_tx, shared));
        let client = Client { tx, next_id, request_timeout, welcome: Arc::new(welcome), reclaims };
        (client, lease_rx)
    }

    /// True once the connection is closed for good: it broke with reconnecting off (or reconnecting gave up),
    /// and every request now fails with [`ErrorKind::Closed`].
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// The server's Welcome from the first handshake.
    pub fn welcome(&self) -> &pb::Welcome {
        &self.welcome
    }

    /// How many [`AgentEvent::Reclaimed`] events this connection has pushed so far. Each is pushed before any
    /// request queued during its reconnect is written, so once a reply arrives, this count includes the
    /// reclaim that preceded the request on its connection: an agent that has handled this many `Reclaimed`
    /// events has seen every lease id that replaced an old one before the reply was sent.
    pub fn reclaims_delivered(&self) -> u64 {
        self.reclaims.load(Ordering::SeqCst)
    }

    pub(crate) async fn request(&self, build: impl FnOnce(u64) -> Envelope) -> Result<Envelope, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Request { id, env: Box::new(build(id)), reply })
            .await
            .map_err(|_| Error::new(ErrorKind::Closed, "client closed"))?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Err(_) => Err(Error::new(ErrorKind::Timeout, "no reply within the request timeout")),
            Ok(Err(_)) => Err(Error::new(ErrorKind::Closed, "client closed")),
            Ok(Ok(r)) => r,
        }
    }

    /// Submits tasks; returns one result per task, in order, once they are durable.
    pub async fn submit(&self, tasks: Vec<TaskSpec>) -> Result<Vec<SubmitResult>, Error> {
        self.submit_inner(tasks, false, false).await
    }

    /// As [`Client::submit`], and the server reports each accepted task on [`Completions`] when it finishes
    /// (see [`Client::connect_watching`]).
    pub async fn submit_notify(&self, tasks: Vec<TaskSpec>) -> Result<Vec<SubmitResult>, Error> {
        self.submit_inner(tasks, false, true).await
    }

    /// Cluster mode: a Submit the node takes although it may not own the keys (the owner is unreachable).
    pub(crate) async fn submit_inner(
        &self,
        tasks: Vec<TaskSpec>,
        failover: bool,
        notify: bool,
    ) -> Result<Vec<SubmitResult>, Error> {
        let env = self.request(|request_id| pb::Submit { request_id, tasks, failover, notify }.into()).await?;
        match env.kind {
            Some(Kind::SubmitAck(a)) => Ok(a.results),
            other => Err(unexpected(other)),
        }
    }

    /// Submits one task and returns its id (an error if the server refused it).
    pub async fn submit_one(&self, task: TaskSpec) -> Result<u64, Error> {
        let r = self.submit(vec![task]).await?;
        let r = r.into_iter().next().ok_or_else(|| Error::new(ErrorKind::Protocol, "empty SubmitAck"))?;
        match ErrorCode::try_from(r.code).unwrap_or(ErrorCode::Internal) {
            ErrorCode::Ok => Ok(r.task_id),
            code => Err(Error::with_code(ErrorKind::Server, code, r.message)),
        }
    }

    /// Agents: allows the server to push `n` more tasks of `queue`.
    pub async fn credit(&self, queue: &str, n: u32) -> Result<(), Error> {
        self.tx
            .send(Command::Credit { queue: queue.to_string(), n, set: false })
            .await
            .map_err(|_| Error::new(ErrorKind::Closed, "client closed"))
    }

    /// Agents: replaces the outstanding credits on `queue` with `n` (0 withdraws them). Tasks already pushed
    /// before the server sees this still arrive.
    pub async fn set_credit(&self, queue: &str, n: u32) -> Result<(), Error> {
        self.tx
            .send(Command::Credit { queue: queue.to_string(), n, set: true })
            .await
            .map_err(|_| Error::new(ErrorKind::Closed, "client closed"))
    }

    /// Queues a one-way message (no reply; a scheduler node's raft messages to a peer) without waiting.
    /// Returns false, and drops it, when the connection's queue is full or the client is closed. It is also
    /// dropped, silently, when a reconnect fails while it waits, or when its turn to be written comes more
    /// than half a second after this call. For messages whose sender retries by itself.
    pub fn push(&self, env: Envelope) -> bool {
        self.tx.try_send(Command::Push(Box::new(env), std::time::Instant::now())).is_ok()
    }

    /// Agents: acknowledges finished tasks (with optional results). One code per item.
    pub async fn ack(&self, items: Vec<(u64, Bytes)>) -> Result<Vec<ErrorCode>, Error> {
        let items = items.into_iter().map(|(lease_id, result)| pb::AckItem { lease_id, result }).collect();
        self.lease_request(|request_id| pb::Ack { request_id, items }.into()).await
    }

    /// Agents: reports failed deliveries; they are retried after `retry_after_ms` or dead-lettered.
    pub async fn nack(&self, items: Vec<pb::NackItem>) -> Result<Vec<ErrorCode>, Error> {
        self.lease_request(|request_id| pb::Nack { request_id, items }.into()).await
    }

    /// Agents: extends leases by `extend_ms` from now (0 = each task's lease duration).
    pub async fn extend(&self, lease_ids: Vec<u64>, extend_ms: u32) -> Result<Vec<ErrorCode>, Error> {
        self.lease_request(|request_id| pb::Extend { request_id, lease_ids, extend_ms }.into()).await
    }

    async fn lease_request(&self, build: impl FnOnce(u64) -> Envelope) -> Result<Vec<ErrorCode>, Error> {
        let env = self.request(build).await?;
        match env.kind {
            Some(Kind::LeaseReply(r)) => {
                Ok(r.codes.into_iter().map(|c| ErrorCode::try_from(c).unwrap_or(ErrorCode::Internal)).collect())
            }
            other => Err(unexpected(other)),
        }
    }

    /// Producers and admins: cancels tasks. One code per id, in order: `OK` (cancelled, durably; it will never
    /// run again and an agent running it is told to stop), `NOT_FOUND` (unknown, or already acked,
    /// dead-lettered or cancelled), or a store error (not cancelled).
    pub async fn cancel(&self, task_ids: Vec<u64>) -> Result<Vec<ErrorCode>, Error> {
        let env = self.request(|request_id| pb::Cancel { request_id, task_ids }.into()).await?;
        match env.kind {
            Some(Kind::CancelReply(r)) => {
                Ok(r.codes.into_iter().map(|c| ErrorCode::try_from(c).unwrap_or(ErrorCode::Internal)).collect())
            }
            other => Err(unexpected(other)),
        }
    }

    /// Producers and admins: what the server knows of these tasks, one status per id, in order (`code`
    /// `NOT_FOUND`: unknown here, or finished longer ago than the server keeps outcomes).
    pub async fn status(&self, task_ids: Vec<u64>) -> Result<Vec<pb::TaskStatus>, Error> {
        let env = self.request(|request_id| pb::Status { request_id, task_ids }.into()).await?;
        match env.kind {
            Some(Kind::StatusReply(r)) => Ok(r.tasks),
            other => Err(unexpected(other)),
        }
    }

    /// Producers and admins: report these tasks on [`Completions`] when they finish (at once for those that
    /// have). One code per id: `OK`, or `NOT_FOUND` (unknown, or its outcome is no longer kept).
    pub async fn watch(&self, task_ids: Vec<u64>) -> Result<Vec<ErrorCode>, Error> {
        let env = self.request(|request_id| pb::Watch { request_id, task_ids }.into()).await?;
        match env.kind {
            Some(Kind::WatchReply(r)) => {
                Ok(r.codes.into_iter().map(|c| ErrorCode::try_from(c).unwrap_or(ErrorCode::Internal)).collect())
            }
            other => Err(unexpected(other)),
        }
    }
}

pub(crate) fn unexpected(kind: Option<Kind>) -> Error {
    match kind {
        Some(Kind::Redirect(r)) => Error::redirected(r),
        Some(Kind::Error(e)) => {
            let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Internal);
            Error::with_code(ErrorKind::Server, code, e.message)
        }
        Some(k) => Error::new(ErrorKind::Protocol, format!("unexpected reply {}", k.name())),
        None => Error::new(ErrorKind::Protocol, "empty reply"),
    }
}
