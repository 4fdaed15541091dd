//! [`Cluster`]: one producer/admin handle over every node of a scheduler cluster.
//!
//! It connects to the first seed that answers and learns the ring (epoch and members) from its `Welcome`. Each
//! task goes to the member owning its key; a batch is split per owner and the parts are sent at once, each on
//! that member's own [`Client`] (opened on first use, reconnecting by itself). A member that answers
//! `Redirect` has a newer ring: the handle adopts it, splits the redirected tasks again and resends them.
//! Nothing of a redirected Submit was enqueued, so no task is lost or enqueued twice by this.
//!
//! Tasks without a key have no order to keep: they are spread over the members by their idempotency key when
//! they have one (so a repeat reaches the node that remembers it), else at random.
//!
//! With [`ClusterOptions::failover`], tasks whose owner cannot be reached go to the next member in the key's
//! preference order instead of failing (availability over per-key order; see `docs/cluster.md`).
//!
//! When the seed is a single node (no members in its `Welcome`), every request goes to it.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::join_all;
use parking_lot::Mutex;
use pm_protocol::pb::{StatsReply, SubmitResult, TaskSpec};
use pm_protocol::ErrorCode;
use pm_task::ring::Ring;
use tokio::sync::OnceCell;

use crate::client::Client;
use crate::error::{Error, ErrorKind};
use crate::options::ConnectOptions;

/// How a [`Cluster`] routes.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Send tasks whose owner is unreachable to the next member of the key's preference order (default off:
    /// such tasks fail with [`ErrorKind::Connect`] or [`ErrorKind::NotSent`]).
    pub failover: bool,
    /// Redirects followed for one call before its remaining tasks fail with [`ErrorKind::Redirect`] (default 8).
    pub max_redirects: u32,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions { failover: false, max_redirects: 8 }
    }
}

/// A cluster handle. Clone freely.
#[derive(Debug, Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    opts: ConnectOptions,
    copts: ClusterOptions,
    /// The seed that answered: the only node when the ring is empty.
    seed: String,
    /// The seed's Welcome.
    welcome: pm_protocol::pb::Welcome,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    ring: Arc<Ring>,
    nodes: HashMap<String, Arc<OnceCell<Client>>>,
}

impl Cluster {
    /// Connects to the first of `seeds` that answers (each a node address) and learns the ring from it.
    pub async fn connect(seeds: &[String], opts: ConnectOptions, copts: ClusterOptions) -> Result<Cluster, Error> {
        let mut last = Error::new(ErrorKind::Connect, "no seed address given");
        for seed in seeds {
            match Client::connect(seed, opts.clone()).await {
                Ok(client) => {
                    let ring = Ring::new(client.welcome().members.iter().cloned())
                        .map_err(|e| Error::new(ErrorKind::Protocol, format!("{seed} sent a bad ring: {e}")))?;
                    let welcome = client.welcome().clone();
                    let mut nodes = HashMap::new();
                    if ring.is_empty() || ring.ordinal(seed).is_some() {
                        nodes.insert(seed.clone(), Arc::new(OnceCell::new_with(Some(client))));
                    }
                    let state = Mutex::new(State { ring: Arc::new(ring), nodes });
                    let inner = Inner { opts, copts, seed: seed.clone(), welcome, state };
                    return Ok(Cluster { inner: Arc::new(inner) });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The Welcome of the seed that answered (limits such as `max_batch` hold for every member).
    pub fn welcome(&self) -> &pm_protocol::pb::Welcome {
        &self.inner.welcome
    }

    /// The ring in use (empty for a single node).
    pub fn ring(&self) -> Arc<Ring> {
        self.inner.state.lock().ring.clone()
    }

    /// The members' addresses; the seed alone for a single node.
    pub fn nodes(&self) -> Vec<String> {
        let ring = self.ring();
        if ring.is_empty() {
            vec![self.inner.seed.clone()]
        } else {
            ring.members().to_vec()
        }
    }

    /// The member that holds task `task_id` (its id names the node that accepted it).
    pub fn node_of_task(&self, task_id: u64) -> Option<String> {
        let ring = self.ring();
        let ordinal = if ring.is_empty() { 0 } else { Ring::ordinal_of_task(task_id) };
        self.nodes().get(ordinal).cloned()
    }

    /// The connection to `node` (opened on first use, and again when it was closed: with reconnecting off, a
    /// connection that broke is closed for good).
    pub async fn client(&self, node: &str) -> Result<Client, Error> {
        let cell = {
            let mut st = self.inner.state.lock();
            let cell = st.nodes.entry(node.to_string()).or_default();
            if cell.get().is_some_and(Client::is_closed) {
                *cell = Arc::new(OnceCell::new());
            }
            cell.clone()
        };
        cell.get_or_try_init(|| Client::connect(node, self.inner.opts.clone())).await.cloned()
    }

    /// Submits tasks, each to the node owning its key; one result per task, in order, however many failed.
    /// The tasks of each member go in requests of at most the server's `max_batch`. A task's `Err` is the
    /// failure of the request that carried it: [`ErrorKind::Connect`] and [`ErrorKind::NotSent`] (its member
    /// is down) mean it was not enqueued; after [`ErrorKind::Disconnected`] and [`ErrorKind::Timeout`] it may
    /// have been. The other tasks' results stand, so a member that is down (or dies mid-batch) fails only the
    /// tasks it owns. Give tasks idempotency keys to resend the failed ones safely.
    pub async fn submit_each(&self, tasks: Vec<TaskSpec>) -> Vec<Result<SubmitResult, Error>> {
        let n = tasks.len();
        let mut out: Vec<Option<Result<SubmitResult, Error>>> = (0..n).map(|_| None).collect();
        let route: Vec<Vec<u8>> = tasks.iter().map(routing_key).collect();
        // How far down its key's preference order each task has gone (failover).
        let mut depth = vec![0usize; n];
        let mut pending: Vec<usize> = (0..n).collect();
        let mut redirects = 0;
        while !pending.is_empty() {
            let ring = self.ring();
            let mut groups: HashMap<(String, bool), Vec<usize>> = HashMap::new();
            for i in pending.drain(..) {
                let node = if ring.is_empty() {
                    Some(self.inner.seed.clone())
                } else {
                    ring.preference(&route[i]).get(depth[i]).map(|&o| ring.members()[o].clone())
                };
                match node {
                    Some(node) => groups.entry((node, depth[i] > 0)).or_default().push(i),
                    None => out[i] = Some(Err(Error::new(ErrorKind::NotSent, "no member of the cluster is reachable"))),
                }
            }
            // Each member's part goes in requests of at most `max_batch` tasks, sent at once.
            let max_batch = (self.inner.welcome.max_batch as usize).max(1);
            let parts: Vec<(String, bool, Vec<usize>)> = groups
                .into_iter()
                .flat_map(|((node, failover), idx)| {
                    idx.chunks(max_batch).map(|c| (node.clone(), failover, c.to_vec())).collect::<Vec<_>>()
                })
                .collect();
            let sends = parts.into_iter().map(|(node, failover, idx)| {
                let specs: Vec<TaskSpec> = idx.iter().map(|&i| tasks[i].clone()).collect();
                async move {
                    let r = match self.client(&node).await {
                        Ok(c) => c.submit_inner(specs, failover, false).await,
                        Err(e) => Err(e),
                    };
                    (idx, r)
                }
            });
            let mut redirected = None;
            for (idx, r) in join_all(sends).await {
                match r {
                    Ok(results) if results.len() == idx.len() => {
                        for (i, r) in idx.into_iter().zip(results) {
                            out[i] = Some(Ok(r));
                        }
                    }
                    Ok(results) => {
                        let e = Error::new(
                            ErrorKind::Protocol,
                            format!("{} results for {} tasks", results.len(), idx.len()),
                        );
                        idx.into_iter().for_each(|i| out[i] = Some(Err(e.clone())));
                    }
                    Err(e) if e.kind() == ErrorKind::Redirect => {
                        if let Some(r) = e.redirect() {
                            self.adopt(r.ring_epoch, &r.members);
                        }
                        pending.extend(&idx);
                        redirected = Some(e);
                    }
                    Err(e)
                        if self.inner.copts.failover
                            && !ring.is_empty()
                            && matches!(e.kind(), ErrorKind::Connect | ErrorKind::NotSent) =>
                    {
                        for i in idx {
                            depth[i] += 1;
                            pending.push(i);
                        }
                    }
                    Err(e) => idx.into_iter().for_each(|i| out[i] = Some(Err(e.clone()))),
                }
            }
            if let Some(e) = redirected {
                redirects += 1;
                if redirects > self.inner.copts.max_redirects {
                    pending.drain(..).for_each(|i| out[i] = Some(Err(e.clone())));
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::new(ErrorKind::Protocol, "task left unrouted"))))
            .collect()
    }

    /// Submits tasks, each to the node owning its key; `Err` if any part failed (then other parts may have
    /// been enqueued: use [`Cluster::submit_each`] to know which, or idempotency keys to resend safely).
    pub async fn submit(&self, tasks: Vec<TaskSpec>) -> Result<Vec<SubmitResult>, Error> {
        self.submit_each(tasks).await.into_iter().collect()
    }

    /// Cancels tasks on the nodes their ids name: one result per id, in order (see [`Client::cancel`]); an id
    /// naming no member is `NOT_FOUND`. A node that cannot be reached fails only its own ids.
    pub async fn cancel_each(&self, task_ids: Vec<u64>) -> Vec<Result<ErrorCode, Error>> {
        let nodes = self.nodes();
        let ring = self.ring();
        let mut out: Vec<Result<ErrorCode, Error>> = vec![Ok(ErrorCode::NotFound); task_ids.len()];
        let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, id) in task_ids.iter().enumerate() {
            let ordinal = if ring.is_empty() { 0 } else { Ring::ordinal_of_task(*id) };
            if let Some(node) = nodes.get(ordinal) {
                groups.entry(node.as_str()).or_default().push(i);
            }
        }
        let sends = groups.into_iter().map(|(node, idx)| {
            let ids = idx.iter().map(|&i| task_ids[i]).collect();
            async move {
                let got = match self.client(node).await {
                    Ok(client) => client.cancel(ids).await,
                    Err(e) => Err(e),
                };
                (idx, got)
            }
        });
        for (idx, got) in join_all(sends).await {
            match got {
                Ok(codes) if codes.len() == idx.len() => {
                    idx.into_iter().zip(codes).for_each(|(i, c)| out[i] = Ok(c));
                }
                Ok(codes) => {
                    let e = Error::new(ErrorKind::Protocol, format!("{} codes for {} ids", codes.len(), idx.len()));
                    idx.into_iter().for_each(|i| out[i] = Err(e.clone()));
                }
                Err(e) => idx.into_iter().for_each(|i| out[i] = Err(e.clone())),
            }
        }
        out
    }

    /// Cancels tasks on the nodes their ids name; `Err` if any node failed (then the others' cancels stand:
    /// use [`Cluster::cancel_each`] to know which).
    pub async fn cancel(&self, task_ids: Vec<u64>) -> Result<Vec<ErrorCode>, Error> {
        self.cancel_each(task_ids).await.into_iter().collect()
    }

    /// Admin: every node's stats, in member order (an unreachable node's entry is its error).
    pub async fn stats(&self) -> Vec<(String, Result<StatsReply, Error>)> {
        let nodes = self.nodes();
        let asks = nodes.iter().map(|node| async move {
            match self.client(node).await {
                Ok(c) => c.stats().await,
                Err(e) => Err(e),
            }
        });
        nodes.iter().cloned().zip(join_all(asks).await).collect()
    }

    /// Takes a newer ring from a redirect (ignored if it is the ring in use or malformed).
    fn adopt(&self, epoch: u64, members: &[String]) {
        let mut st = self.inner.state.lock();
        if st.ring.epoch() == epoch {
            return;
        }
        match Ring::new(members.iter().cloned()) {
            Ok(ring) => {
                tracing::debug!(epoch, members = ring.len(), "adopted a newer ring from a redirect");
                st.ring = Arc::new(ring);
            }
            Err(e) => tracing::warn!("ignored a redirect with a bad ring: {e}"),
        }
    }
}

/// The nodes of an agent in order of preference: asks the first of `seeds` that answers for the ring and ranks
/// the members by rendezvous hashing of `agent_id`. The first is its home (agents spread evenly over the
/// members, and an agent keeps its home across restarts, where its reclaims must go); the others are where it
/// fails over to, in order. A single node is the only entry.
pub async fn agent_nodes(seeds: &[String], opts: ConnectOptions, agent_id: &str) -> Result<Vec<String>, Error> {
    let mut last = Error::new(ErrorKind::Connect, "no scheduler address given");
    for seed in seeds {
        match Client::connect(seed, opts.clone().reconnect(false)).await {
            Ok(client) => {
                let ring = Ring::new(client.welcome().members.iter().cloned())
                    .map_err(|e| Error::new(ErrorKind::Protocol, format!("{seed} sent a bad ring: {e}")))?;
                if ring.is_empty() {
                    return Ok(vec![seed.clone()]);
                }
                return Ok(ring
                    .preference(agent_id.as_bytes())
                    .into_iter()
                    .map(|o| ring.members()[o].clone())
                    .collect());
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The bytes a task is placed by: its key; else its idempotency key; else random bytes.
fn routing_key(t: &TaskSpec) -> Vec<u8> {
    if !t.key.is_empty() {
        t.key.as_bytes().to_vec()
    } else if !t.idempotency_key.is_empty() {
        t.idempotency_key.as_bytes().to_vec()
    } else {
        rand::random::<u64>().to_le_bytes().to_vec()
    }
}
