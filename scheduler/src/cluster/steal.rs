//! Work stealing between the nodes of a cluster: a node whose agents are idle takes leases from peers that
//! have a backlog, for those agents.
//!
//! The thief never owns what it steals. It connects to each peer as `ROLE_PEER` (an agent whose credits the
//! peer serves only when none of its own agents has credit) and grants credits there for its idle agents. A
//! task the peer pushes stays the peer's: its WAL record and its lease live there. The thief gives it a lease
//! id of its own ([`FOREIGN_LEASE_BIT`] set, so the connection handlers know to send acks here instead of to
//! a shard), hands it to the queue's shard, which gives it to a local agent with credit before any local
//! ready task, and forwards that agent's `Ack`, `Nack` and `Extend` to the owner under the owner's lease id.
//! The owner fences them exactly as on one node: an ack of a lease that expired meanwhile is `STALE_LEASE`.
//!
//! Two tasks do the work:
//! - the **planner** (`steal_plan.rs`) ticks every `--steal-interval`. It asks each shard which queues have
//!   agents with idle credits (and no ready work), asks some peers for their stats when some do, and sets its
//!   credits at each peer (`Credit{set}`) in proportion to the peer's ready backlog, withdrawing them where
//!   there is none.
//! - the **actor** ([`Stealer`]) owns the map from local to remote lease ids: it receives the tasks peers
//!   push, forwards acks, nacks and extends, passes revocations on, and gives a peer its tasks back
//!   (`Nack{released}`, which does not count as an attempt) when the agent holding them disconnects or no
//!   agent took them in time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pm_client::{AgentEvent, Client, ConnectOptions, ErrorKind};
use pm_protocol::pb::{self, LeasedTask, NackItem};
use pm_protocol::ErrorCode;
use pm_task::ring::Ring;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::holdings::Holdings;
use crate::metrics as m;
use crate::outbox::{ConnId, OutTx, Outbound, Part};
use crate::shard::{shard_of_queue, ShardHandle, ShardMsg};
use crate::stolen::{StealHandle, StealMsg, FOREIGN_LEASE_BIT};

use super::steal_plan::{plan, Peers};

/// The counter bits of a stolen task's local lease id.
const FOREIGN_COUNTER_MASK: u64 = (1 << crate::shard::LEASE_NODE_SHIFT) - 1;

/// Settings of the stealer.
#[derive(Debug, Clone)]
pub struct StealConfig {
    /// The cluster.
    pub ring: Ring,
    /// This node's ordinal.
    pub me: usize,
    /// Planner tick.
    pub interval: Duration,
    /// Where the token presented to peers comes from.
    pub auth: Arc<crate::auth::Auth>,
    /// TLS to the peers (when the nodes serve TLS).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// The agent a stolen task was delivered to.
#[derive(Debug)]
struct Holder {
    conn: ConnId,
    /// Its outbox (for revocations).
    out: OutTx,
    /// Its place in `--max-leases-per-conn`, given back when the stolen task is forgotten.
    holdings: Option<Arc<Holdings>>,
}

/// One stolen task.
#[derive(Debug)]
struct Stolen {
    peer: usize,
    remote_lease: u64,
    task_id: u64,
    /// The agent holding it, once a shard delivered it.
    holder: Option<Holder>,
    /// The owner cancelled it before it reached an agent.
    revoked: bool,
}

/// The stealer actor.
pub struct Stealer {
    rx: mpsc::UnboundedReceiver<StealMsg>,
    shards: Vec<ShardHandle>,
    peers: Peers,
    /// This node's ordinal in the top bits of the lease ids it gives stolen tasks.
    lease_prefix: u64,
    next_lease: u64,
    leases: HashMap<u64, Stolen>,
    by_remote: HashMap<(usize, u64), u64>,
    /// Stolen tasks each agent holds.
    by_conn: HashMap<ConnId, Vec<u64>>,
}

impl Stealer {
    /// Starts the actor, the planner and a connection to each peer. Must run inside a tokio runtime.
    pub fn start(
        cfg: StealConfig,
        handle: StealHandle,
        rx: mpsc::UnboundedReceiver<StealMsg>,
        shards: Vec<ShardHandle>,
        shutdown: CancellationToken,
    ) {
        let peers: Peers = Arc::new(Mutex::new(vec![None; cfg.ring.len()]));
        for (ordinal, addr) in cfg.ring.members().iter().enumerate() {
            if ordinal != cfg.me {
                let me = cfg.ring.members()[cfg.me].clone();
                let mut opts = ConnectOptions::peer()
                    .client_id(format!("peer:{me}"))
                    .max_backoff(Duration::from_secs(2))
                    .token(cfg.auth.peer_token().unwrap_or_default());
                if let Some(tls) = &cfg.tls {
                    opts = opts.tls(tls.clone());
                }
                tokio::spawn(connect_peer(
                    ordinal,
                    addr.clone(),
                    opts,
                    peers.clone(),
                    handle.clone(),
                    shutdown.clone(),
                ));
            }
        }
        tokio::spawn(plan(cfg.interval, shards.clone(), peers.clone(), shutdown.clone()));
        let actor = Stealer {
            rx,
            shards,
            peers,
            lease_prefix: (cfg.me as u64) << crate::shard::LEASE_NODE_SHIFT,
            next_lease: u64::from(rand::random::<u32>()),
            leases: HashMap::new(),
            by_remote: HashMap::new(),
            by_conn: HashMap::new(),
        };
        tokio::spawn(actor.run());
    }

    /// Runs as long as anyone can send to it (through a shutdown too: acks of stolen tasks still in flight
    /// are answered while the connections drain).
    async fn run(mut self) {
        while let Some(msg) = self.rx.recv().await {
            self.handle(msg);
        }
    }

    fn peer(&self, ordinal: usize) -> Option<Client> {
        self.peers.lock().get(ordinal).cloned().flatten()
    }

    fn handle(&mut self, msg: StealMsg) {
        match msg {
            StealMsg::Peer { peer, event } => self.on_peer_event(peer, event),
            StealMsg::Delivered { lease_id, conn, out, holdings } => {
                let Some(s) = self.leases.get_mut(&lease_id) else {
                    // Forgotten meanwhile: the agent's ack will be stale, and the lease holds no place.
                    if let Some(h) = holdings {
                        h.release(1);
                    }
                    return;
                };
                if s.revoked {
                    // Sent after the Leased frame (the shard reports deliveries once their frames are queued).
                    let revoke = pb::Revoke { lease_id, task_id: s.task_id, reason: "cancelled".into() };
                    let _ = out.send(Outbound::Frame(revoke.into()));
                    if let Some(h) = holdings {
                        h.release(1);
                    }
                    self.forget(lease_id);
                } else {
                    s.holder = Some(Holder { conn, out, holdings });
                    self.by_conn.entry(conn).or_default().push(lease_id);
                }
            }
            // Never handed to an agent: not an attempt.
            StealMsg::Release { lease_ids } => self.release(lease_ids, "no agent of the stealing node took it", true),
            StealMsg::Disconnected { conn } => {
                let held = self.by_conn.remove(&conn).unwrap_or_default();
                // The agent may have started them: an attempt, as when an agent of the owner disconnects.
                self.release(held, "the agent holding it disconnected", false);
            }
            StealMsg::Ack { out, request_id, items } => {
                let mut stale = Vec::new();
                let mut groups: HashMap<usize, Vec<(usize, pb::AckItem)>> = HashMap::new();
                for (idx, lease_id, result) in items {
                    match self.forget(lease_id) {
                        Some(s) => groups
                            .entry(s.peer)
                            .or_default()
                            .push((idx, pb::AckItem { lease_id: s.remote_lease, result })),
                        None => stale.push((idx, ErrorCode::StaleLease)),
                    }
                }
                self.forward(out, request_id, stale, groups, |c, items| {
                    Box::pin(async move { c.ack(items.into_iter().map(|i| (i.lease_id, i.result)).collect()).await })
                });
            }
            StealMsg::Nack { out, request_id, items } => {
                let mut stale = Vec::new();
                let mut groups: HashMap<usize, Vec<(usize, NackItem)>> = HashMap::new();
                for (idx, mut item) in items {
                    match self.forget(item.lease_id) {
                        Some(s) => {
                            item.lease_id = s.remote_lease;
                            groups.entry(s.peer).or_default().push((idx, item));
                        }
                        None => stale.push((idx, ErrorCode::StaleLease)),
                    }
                }
                self.forward(out, request_id, stale, groups, |c, items| Box::pin(async move { c.nack(items).await }));
            }
            StealMsg::Extend { out, request_id, items, extend_ms } => {
                let mut stale = Vec::new();
                let mut groups: HashMap<usize, Vec<(usize, u64)>> = HashMap::new();
                for (idx, lease_id) in items {
                    match self.leases.get(&lease_id) {
                        Some(s) => groups.entry(s.peer).or_default().push((idx, s.remote_lease)),
                        None => stale.push((idx, ErrorCode::StaleLease)),
                    }
                }
                self.forward(out, request_id, stale, groups, move |c, ids| {
                    Box::pin(async move { c.extend(ids, extend_ms).await })
                });
            }
        }
    }

    fn on_peer_event(&mut self, peer: usize, event: AgentEvent) {
        match event {
            AgentEvent::Leased(mut task) => {
                metrics::counter!(m::STOLEN).increment(1);
                let lease_id = FOREIGN_LEASE_BIT | self.lease_prefix | (self.next_lease & FOREIGN_COUNTER_MASK);
                self.next_lease = self.next_lease.wrapping_add(1);
                // A restarted owner may issue a lease id again: the old entry's lease is gone with it.
                if let Some(old) = self.by_remote.get(&(peer, task.lease_id)).copied() {
                    self.forget(old);
                }
                let stolen =
                    Stolen { peer, remote_lease: task.lease_id, task_id: task.task_id, holder: None, revoked: false };
                self.by_remote.insert((peer, task.lease_id), lease_id);
                self.leases.insert(lease_id, stolen);
                task.lease_id = lease_id;
                self.to_shard(task);
            }
            AgentEvent::Revoked(r) => {
                let Some(lease_id) = self.by_remote.get(&(peer, r.lease_id)).copied() else { return };
                let Some(s) = self.leases.get_mut(&lease_id) else { return };
                match &s.holder {
                    Some(Holder { out, .. }) => {
                        let revoke = pb::Revoke { lease_id, task_id: r.task_id, reason: r.reason };
                        let _ = out.send(Outbound::Frame(revoke.into()));
                        self.forget(lease_id);
                    }
                    None => s.revoked = true,
                }
            }
            AgentEvent::Reclaimed(_) => {}
        }
    }

    fn to_shard(&self, task: LeasedTask) {
        let shard = shard_of_queue(&task.queue, self.shards.len());
        self.shards[shard].send(ShardMsg::Foreign { task });
    }

    fn forget(&mut self, lease_id: u64) -> Option<Stolen> {
        let s = self.leases.remove(&lease_id)?;
        if self.by_remote.get(&(s.peer, s.remote_lease)) == Some(&lease_id) {
            self.by_remote.remove(&(s.peer, s.remote_lease));
        }
        if let Some(Holder { conn, holdings, .. }) = &s.holder {
            if let Some(h) = holdings {
                h.release(1);
            }
            if let Some(held) = self.by_conn.get_mut(conn) {
                held.retain(|l| *l != lease_id);
                if held.is_empty() {
                    self.by_conn.remove(conn);
                }
            }
        }
        Some(s)
    }

    /// Gives stolen tasks back to their owners at once (`released`: never started, not an attempt).
    fn release(&mut self, lease_ids: Vec<u64>, reason: &str, released: bool) {
        let mut groups: HashMap<usize, Vec<NackItem>> = HashMap::new();
        for lease_id in lease_ids {
            if let Some(s) = self.forget(lease_id) {
                let item = NackItem { lease_id: s.remote_lease, reason: reason.into(), released, ..Default::default() };
                groups.entry(s.peer).or_default().push(item);
            }
        }
        for (peer, items) in groups {
            metrics::counter!(m::STEAL_RELEASED).increment(items.len() as u64);
            let Some(client) = self.peer(peer) else { continue };
            tokio::spawn(async move {
                if let Err(e) = client.nack(items).await {
                    tracing::debug!("giving stolen tasks back failed ({e}); their leases expire instead");
                }
            });
        }
    }

    /// Sends each peer its items, then answers the request's part: `stale` codes at once, the peers' codes
    /// when they come. A peer that cannot be reached has dropped those leases with the connection, so its
    /// items are `STALE_LEASE`.
    fn forward<T: Send + 'static>(
        &self,
        out: OutTx,
        request_id: u64,
        stale: Vec<(usize, ErrorCode)>,
        groups: HashMap<usize, Vec<(usize, T)>>,
        op: impl Fn(Client, Vec<T>) -> ForwardFut + Send + Sync + 'static,
    ) {
        let calls: Vec<_> = groups.into_iter().map(|(peer, items)| (self.peer(peer), items)).collect();
        tokio::spawn(async move {
            let mut codes = stale;
            let op = &op;
            let sends = calls.into_iter().map(|(client, items)| async move {
                let (idx, items): (Vec<usize>, Vec<T>) = items.into_iter().unzip();
                let got = match client {
                    Some(c) => op(c, items).await,
                    None => Err(pm_client::Error::new(ErrorKind::NotSent, "peer not connected")),
                };
                (idx, got)
            });
            for (idx, got) in futures::future::join_all(sends).await {
                match got {
                    Ok(cs) if cs.len() == idx.len() => codes.extend(idx.into_iter().zip(cs)),
                    Ok(_) => codes.extend(idx.into_iter().map(|i| (i, ErrorCode::Internal))),
                    Err(e) => {
                        let code = match e.kind() {
                            ErrorKind::Disconnected | ErrorKind::NotSent | ErrorKind::Connect => ErrorCode::StaleLease,
                            _ => ErrorCode::Internal,
                        };
                        codes.extend(idx.into_iter().map(|i| (i, code)));
                    }
                }
            }
            let _ = out.send(Outbound::Part { request_id, part: Part::Lease(codes) });
        });
    }
}

type ForwardFut = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<ErrorCode>, pm_client::Error>> + Send>>;

/// Keeps a peer connection (reconnecting by itself) and passes what the peer pushes to the actor.
async fn connect_peer(
    ordinal: usize,
    addr: String,
    opts: ConnectOptions,
    peers: Peers,
    handle: StealHandle,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let (client, mut events) = loop {
        tokio::select! {
            r = Client::connect_agent(&addr, opts.clone()) => match r {
                Ok(c) => break c,
                Err(e) => tracing::debug!(peer = %addr, "peer not reachable yet: {e}"),
            },
            () = shutdown.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    };
    tracing::info!(peer = %addr, "connected to peer for work stealing");
    if let Some(slot) = peers.lock().get_mut(ordinal) {
        *slot = Some(client);
    }
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            () = shutdown.cancelled() => None,
        };
        let Some(event) = ev else { return };
        handle.send(StealMsg::Peer { peer: ordinal, event });
    }
}
