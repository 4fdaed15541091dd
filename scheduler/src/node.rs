//! A whole node: lock the data directory, open the store, recover, start the committer and the shards.

use std::fs::File;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pm_protocol::pb::TaskStatus;
use pm_protocol::Message as _;
use pm_task::pipeline::queue_or_default;
use pm_task::ring::{Ring, TASK_ID_NODE_SHIFT};
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogLimits};
use crate::cluster::catalog_sync::CatalogPeers;
use crate::cluster::steal::{StealConfig, Stealer};
use crate::config::{Config, ConfigError, StoreKind};
use crate::context::{Limits, PerIp, ServerCtx};
use crate::outbox::Registry;
use crate::shard::{shard_of_queue, ResultsBudget, Shard, ShardConfig, ShardHandle, ShardMsg, LEASE_NODE_SHIFT};
use crate::stolen::StealHandle;
use crate::store::committer::Committer;
use crate::store::sled_store::SledStore;
use crate::store::wal::{Wal, WalOptions};
use crate::store::{RecoveredResult, RecoveredTask, Recovery, StoreError, TaskStore};

/// Room in a WAL record beyond the payload: queue name, key, idempotency key, options, record header.
const RECORD_OVERHEAD: usize = 4096;

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory could not be created or locked.
    #[error("data directory {path}: {msg}")]
    DataDir {
        /// The directory.
        path: String,
        /// What failed.
        msg: String,
    },
    /// The store refused to open (e.g. corruption).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The configuration is inconsistent (e.g. `--advertise` is not a member).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A token file cannot be read or parsed.
    #[error(transparent)]
    Tokens(#[from] crate::auth::TokenError),
    /// A TLS file cannot be read or used.
    #[error(transparent)]
    Tls(#[from] pm_client::tls::TlsError),
    /// The stored applications cannot be read.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    /// The partitions' consensus groups did not start (their raft log, or raft itself refused).
    #[error("replication: {0}")]
    Replicas(#[from] crate::replica::StartError),
    /// The paused queues cannot be read.
    #[error(transparent)]
    Paused(#[from] crate::paused::PausedError),
}

/// A running node (everything but the listener).
pub struct Node {
    /// Shared with every connection.
    pub ctx: Arc<ServerCtx>,
    committer: Option<Committer>,
    /// Replicated cluster: the partition groups' driver (stopped at the end of [`Node::shutdown`]).
    replicas: Option<crate::replica::Replicas>,
    _lock: File,
}

impl Node {
    /// Opens the data directory and starts the node's actors. Must run inside a tokio runtime.
    ///
    /// The steps, in order: check the configuration (cluster, tokens, TLS) → lock the data directory → open
    /// the catalog and the store (recovery) → start the commit thread → split what was recovered by shard →
    /// spawn the shards → spawn the background tasks → the context every connection shares.
    pub fn start(cfg: &Config) -> Result<Node, NodeError> {
        let (ring, ordinal) = cfg.cluster()?;
        let auth = crate::auth::Auth::load(cfg.token_files())?;
        let tls = cfg.tls_files().map(|f| crate::tls::Tls::load(&f)).transpose()?;
        let lock = lock_dir(&cfg.data)?;
        let catalog = open_catalog(cfg)?;
        let paused = Arc::new(crate::paused::PausedQueues::open(&cfg.data)?);
        let (store, recovery) = open_store(cfg)?;
        let bodies = store.body_reader();
        let committer = Committer::start(store, cfg.fsync);
        let next_task_id = next_task_id(recovery.max_task_id, ordinal);
        let stealing = ordinal.is_some() && ring.len() > 1 && !cfg.steal_interval.is_zero();
        let (steal, steal_rx) = crate::stolen::channel();
        let steal = stealing.then_some(steal);
        let spawn = SpawnShards {
            ordinal,
            steal: steal.clone(),
            committer: &committer,
            next_task_id,
            paused: paused.clone(),
            bodies,
        };
        let shards = spawn_shards(cfg, spawn, recovery)?;
        crate::reclaim_memory::after_recovery();
        let conns = Arc::new(Registry::new(cfg.idle_timeout()));
        let shutdown = CancellationToken::new();
        let catalog_peers = match ordinal {
            Some(me) if ring.len() > 1 => Some(Arc::new(CatalogPeers::new(
                &ring,
                me,
                auth.peer_token().unwrap_or_default(),
                tls.as_ref().and_then(|t| t.peer.clone()),
            ))),
            _ => None,
        };
        // The background tasks, each stopped by `shutdown`.
        let mut background: Vec<(&str, Background)> = vec![
            ("token-reload", Box::pin(auth.clone().reload(shutdown.clone()))),
            ("idle-sweep", Box::pin(conns.clone().sweep(shutdown.clone()))),
        ];
        if let Some(tls) = &tls {
            background.push(("certificate-reload", Box::pin(tls.cert.clone().watch(shutdown.clone()))));
        }
        if let Some(peers) = &catalog_peers {
            let sync = peers.clone().run(catalog.clone(), cfg.catalog_sync_interval, shutdown.clone());
            background.push(("catalog-sync", Box::pin(sync)));
        }
        for (name, task) in background {
            tracing::debug!(task = name, "background task started");
            tokio::spawn(task);
        }
        let replicas = start_replicas(cfg, &ring, ordinal, &auth, tls.as_ref(), &shutdown)?;
        if let (Some(handle), Some(me)) = (steal.clone(), ordinal) {
            let steal_cfg = StealConfig {
                ring: ring.clone(),
                me,
                interval: cfg.steal_interval,
                auth: auth.clone(),
                tls: tls.as_ref().and_then(|t| t.peer.clone()),
            };
            // Two tasks of its own: the planner and the actor (see `cluster::steal`).
            Stealer::start(steal_cfg, handle, steal_rx, shards.clone(), shutdown.clone());
        }
        let ctx = Arc::new(ServerCtx {
            cfg: limits(cfg),
            shards,
            next_conn: AtomicU64::new(1),
            connections: AtomicU64::new(0),
            redirects: AtomicU64::new(0),
            node_id: cfg.node_id(),
            ring,
            ordinal,
            steal,
            replicas: replicas.as_ref().map(crate::replica::Replicas::handle),
            auth,
            tls,
            refusing: AtomicUsize::new(0),
            per_ip: (cfg.max_connections_per_ip > 0).then(|| Arc::new(PerIp::new(cfg.max_connections_per_ip))),
            data_dir: cfg.data.clone(),
            catalog,
            catalog_peers,
            paused,
            shutdown,
            conns,
        });
        Ok(Node { ctx, committer: Some(committer), replicas, _lock: lock })
    }

    /// Copies the applications of the other members before the node serves anything (cluster mode): a
    /// restarted member would otherwise answer "no application" for those created while it was down, until its
    /// next periodic pull. Every peer is asked at once; the wait is bounded by `bound` (a peer that is down
    /// refuses at once; one that cannot be reached costs up to the 5 s peer timeout), and what is not pulled
    /// by then comes with the next periodic pull.
    pub async fn catch_up(&self, bound: Duration) {
        let Some(peers) = &self.ctx.catalog_peers else { return };
        let started = std::time::Instant::now();
        match tokio::time::timeout(bound, peers.pull_all(&self.ctx.catalog)).await {
            Ok(reached) => tracing::info!(
                reached,
                peers = peers.len(),
                ms = started.elapsed().as_millis() as u64,
                "applications pulled from the other members before serving"
            ),
            Err(_) => tracing::warn!(
                bound_ms = bound.as_millis() as u64,
                "applications not pulled from every member within --catalog-start-timeout; serving anyway"
            ),
        }
    }

    /// Graceful stop (the listener must already be closed): refuse new work, let in-flight writes become
    /// durable and their replies go out (bounded by `grace`), close connections, flush the store.
    pub async fn shutdown(mut self, grace: Duration) {
        for s in &self.ctx.shards {
            s.send(ShardMsg::Drain);
        }
        // In-flight rounds complete within one fsync; give replies a moment to reach the sockets.
        let settle = grace.min(Duration::from_millis(300));
        tokio::time::sleep(settle).await;
        self.ctx.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + grace.saturating_sub(settle);
        while self.ctx.connections.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(c) = self.committer.take() {
            let _ = tokio::task::spawn_blocking(move || c.shutdown()).await;
        }
        // Its threads are joined, and its writer may be in an fdatasync: not on a runtime worker.
        if let Some(r) = self.replicas.take() {
            let _ = tokio::task::spawn_blocking(move || drop(r)).await;
        }
    }
}

/// With `--replication-factor` above 1: the driver of the partition groups this member is a replica of, its
/// raft log in `DATA/raft`, and its connections to the other members.
fn start_replicas(
    cfg: &Config,
    ring: &Ring,
    ordinal: Option<usize>,
    auth: &Arc<crate::auth::Auth>,
    tls: Option<&crate::tls::Tls>,
    shutdown: &CancellationToken,
) -> Result<Option<crate::replica::Replicas>, NodeError> {
    use crate::replica::{idle::NoTasksYet, peers, ReplicaConfig, Replicas, Timing};
    let factor = cfg.replication_factor as usize;
    if factor <= 1 {
        return Ok(None);
    }
    if ring.len() < factor {
        let msg =
            format!("--replication-factor {factor} needs at least {factor} members; --members lists {}", ring.len());
        return Err(ConfigError(msg).into());
    }
    // A ring of members always names this node (`Config::cluster`).
    let Some(me) = ordinal else { return Ok(None) };
    let partitions = (0..cfg.partitions)
        .filter_map(|p| {
            let replicas = pm_task::partition::replicas(ring, p, factor);
            replicas.contains(&me).then(|| (p, replicas.into_iter().map(peers::raft_id).collect()))
        })
        .collect::<Vec<_>>();
    tracing::warn!(
        factor,
        partitions = partitions.len(),
        "replication: the partitions' consensus groups run, but tasks do not go through them yet (each task still \
         lives on one node's disk)"
    );
    let config = ReplicaConfig {
        id: peers::raft_id(me),
        partitions,
        dir: cfg.data.join("raft"),
        segment_bytes: crate::replica::log_file::DEFAULT_SEGMENT_BYTES,
        tick: cfg.raft_tick,
        timing: Timing::default(),
        identity: format!("ring_epoch={:#x} replication_factor={factor} partitions={}", ring.epoch(), cfg.partitions),
    };
    if auth.peer_token().is_none() && tls.is_none() {
        tracing::warn!(
            "replication trusts its peers' raft messages, and the peer role has no token (and no TLS): any client \
             may speak it; give it one (--peer-token-file) on a network others reach"
        );
    }
    let mut opts = pm_client::ConnectOptions::peer().token(auth.peer_token().unwrap_or_default());
    if let Some(tls) = tls.and_then(|t| t.peer.clone()) {
        opts = opts.tls(tls);
    }
    let transport = peers::PeerTransport::start(ring, me, opts, shutdown);
    Replicas::start(config, transport, NoTasksYet).map(Some).map_err(|e| {
        shutdown.cancel();
        e.into()
    })
}

/// Creates and locks the data directory (`DATA/LOCK`, flock): one process at a time, node or repair.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, NodeError> {
    let fail = |msg: String| NodeError::DataDir { path: dir.display().to_string(), msg };
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let file = File::create(dir.join("LOCK")).map_err(|e| fail(e.to_string()))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| fail("locked by another running process".into()))?;
    Ok(file)
}

/// A background task of the node.
type Background = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The stored applications and their pipeline templates.
fn open_catalog(cfg: &Config) -> Result<Arc<Catalog>, NodeError> {
    let limits = CatalogLimits {
        max_apps: cfg.max_apps,
        max_pipelines: cfg.max_pipelines_per_app,
        max_app_bytes: cfg.app_bytes(),
    };
    Ok(Arc::new(Catalog::open(&cfg.data.join("apps"), limits)?))
}

/// Opens the store `--store` names, recovering what it holds.
fn open_store(cfg: &Config) -> Result<(Box<dyn TaskStore>, Recovery), NodeError> {
    let (store, recovered): (Box<dyn TaskStore>, Recovery) = match cfg.store {
        StoreKind::Wal => {
            // A record holds the payload plus the task's options (queue, keys): bounded by the payload limit.
            let opts = WalOptions {
                segment_bytes: cfg.segment_bytes,
                max_record_bytes: cfg.max_payload_bytes.max(cfg.max_result_bytes) + RECORD_OVERHEAD,
                max_results: cfg.kept_results(),
                writeback_bytes: cfg.wal_writeback_bytes,
                ..WalOptions::default()
            };
            let (wal, rec) = Wal::open_batches(&cfg.data.join("wal"), opts)?;
            (Box::new(wal), rec)
        }
        StoreKind::Sled => {
            let (s, rec) = SledStore::open(&cfg.data.join("sled"), cfg.kept_results())?;
            (Box::new(s), rec.into())
        }
    };
    tracing::info!(
        tasks = recovered.tasks.total(),
        idempotency_keys = recovered.idempotency.len(),
        results = recovered.results.len(),
        max_task_id = recovered.max_task_id,
        "store recovered"
    );
    Ok((store, recovered))
}

/// The next task id: after the largest recovered. In a cluster, a node's task ids carry its ordinal in their
/// top bits, so an id names its owner.
fn next_task_id(max_task_id: u64, ordinal: Option<usize>) -> Arc<AtomicU64> {
    let first_id = ((ordinal.unwrap_or(0) as u64) << TASK_ID_NODE_SHIFT) + 1;
    if max_task_id > 0 && Ring::ordinal_of_task(max_task_id) != ordinal.unwrap_or(0) {
        tracing::warn!(max_task_id, "the data directory holds task ids of another ordinal: was --members reordered?");
    }
    Arc::new(AtomicU64::new((max_task_id + 1).max(first_id)))
}

/// Splits a batch of recovered tasks by the shard of each task's queue, keeping their order. Each task's queue
/// is read from its stored body on every core at once ([`QueueOf`]), since a large backlog has millions of them.
fn split_tasks(tasks: Vec<RecoveredTask>, n: usize) -> Vec<Vec<RecoveredTask>> {
    use rayon::prelude::*;
    let mut shares: Vec<Vec<RecoveredTask>> = (0..n).map(|_| Vec::new()).collect();
    if n == 1 {
        shares[0] = tasks;
        return shares;
    }
    let shard_of: Vec<usize> = tasks
        .par_iter()
        .map(|t| {
            let queue = QueueOf::decode(&t.body[..]).ok().and_then(|s| s.spec).map(|s| s.queue).unwrap_or_default();
            shard_of_queue(queue_or_default(&queue), n)
        })
        .collect();
    // Sized first: the shares of a backlog of millions are not grown by doubling. A batch in one queue (or in
    // queues of one shard) is handed over whole.
    let mut counts = vec![0usize; n];
    for &shard in &shard_of {
        counts[shard] += 1;
    }
    if let Some(only) = counts.iter().position(|&c| c == shard_of.len()) {
        shares[only] = tasks;
    } else {
        for (share, count) in shares.iter_mut().zip(counts) {
            share.reserve_exact(count);
        }
        for (t, shard) in tasks.into_iter().zip(shard_of) {
            shares[shard].push(t);
        }
    }
    shares
}

/// Splits the kept results by the shard of each one's queue.
fn split_results(results: Vec<RecoveredResult>, n: usize) -> Vec<Vec<RecoveredResult>> {
    let mut shares: Vec<Vec<RecoveredResult>> = (0..n).map(|_| Vec::new()).collect();
    for r in results {
        let queue = TaskStatus::decode(r.body.clone()).map(|s| s.queue).unwrap_or_default();
        shares[shard_of_queue(queue_or_default(&queue), n).min(n - 1)].push(r);
    }
    shares
}

/// The queue of a stored task ([`StoredTask`]`.spec.queue`), decoded without the rest: protobuf skips the
/// fields a message does not name, so the payload and the other strings are never copied.
#[derive(Clone, PartialEq, prost::Message)]
struct QueueOf {
    #[prost(message, optional, tag = "1")]
    spec: Option<SpecQueue>,
}

/// [`pm_protocol::pb::TaskSpec`]'s queue alone.
#[derive(Clone, PartialEq, prost::Message)]
struct SpecQueue {
    #[prost(string, tag = "2")]
    queue: String,
}

/// What every shard is started with, besides the configuration and its share.
struct SpawnShards<'a> {
    ordinal: Option<usize>,
    steal: Option<StealHandle>,
    committer: &'a Committer,
    next_task_id: Arc<AtomicU64>,
    paused: Arc<crate::paused::PausedQueues>,
    bodies: Arc<dyn crate::store::BodyReader>,
}

/// Builds the shards from what the store recovered, its tasks a batch at a time (a backlog larger than the
/// memory is never held at once, see `store/batches.rs`), starts them, and tells each its siblings
/// (follow-ups go to their queue's shard).
fn spawn_shards(cfg: &Config, with: SpawnShards<'_>, recovery: Recovery) -> Result<Vec<ShardHandle>, NodeError> {
    let SpawnShards { ordinal, steal, committer, next_task_id, paused, bodies } = with;
    let n = cfg.shard_count();
    let shard_cfg = ShardConfig {
        steal,
        lease_prefix: (ordinal.unwrap_or(0) as u64) << LEASE_NODE_SHIFT,
        default_lease: cfg.default_lease,
        default_max_attempts: cfg.default_max_attempts,
        idempotency_window: cfg.idempotency_window,
        max_frame_bytes: cfg.max_frame_bytes,
        disconnect_grace: cfg.disconnect_grace,
        reclaim_grace: Duration::from_millis(cfg.reclaim_grace_ms),
        result_retention: cfg.result_retention,
        lease_after_sync: cfg.lease_after_sync,
        results_budget: Arc::new(ResultsBudget::new(cfg.kept_results(), cfg.max_results_bytes, n)),
        max_result_bytes: cfg.max_result_bytes,
        queue_limits: Arc::new(cfg.queue_limits.iter().cloned().collect()),
        siblings: Arc::default(),
        paused,
        bodies,
        resident_payload_bytes: cfg.resident_payload_bytes / n.max(1),
    };
    let mut builders: Vec<_> =
        (0..n).map(|i| Shard::builder(i, n, shard_cfg.clone(), committer.handle(), next_task_id.clone())).collect();
    let Recovery { tasks, idempotency, results, .. } = recovery;
    // Between `store recovered` and each `shard recovered`: reading the tasks again and splitting them, apart
    // from the rebuilds.
    let (mut waiting, mut splitting) = (Duration::ZERO, Duration::ZERO);
    // The next batches are read while this one is decoded into its shards.
    let mut batches = tasks.read_ahead(2);
    loop {
        let started = std::time::Instant::now();
        let Some(batch) = batches.next() else { break };
        let batch = batch?;
        waiting += started.elapsed();
        let started = std::time::Instant::now();
        let shares = split_tasks(batch, n);
        splitting += started.elapsed();
        for (b, share) in builders.iter_mut().zip(shares) {
            if !share.is_empty() {
                b.add_tasks(share);
            }
        }
    }
    tracing::info!(
        shards = n,
        wait_ms = waiting.as_millis() as u64,
        split_ms = splitting.as_millis() as u64,
        "recovered tasks split among shards"
    );
    let shards: Vec<ShardHandle> = builders
        .into_iter()
        .zip(split_results(results, n))
        .map(|(b, results)| b.start(idempotency.clone(), results))
        .collect();
    let _ = shard_cfg.siblings.set(shards.clone());
    Ok(shards)
}

/// The limits the connection code needs.
fn limits(cfg: &Config) -> Limits {
    Limits {
        max_frame_bytes: cfg.max_frame_bytes,
        max_batch: cfg.max_batch,
        max_payload_bytes: cfg.max_payload_bytes,
        max_param_bytes: cfg.max_param_bytes,
        max_connections: cfg.max_connections,
        max_inflight_per_conn: cfg.max_inflight_per_conn,
        max_leases_per_conn: cfg.max_leases_per_conn,
        handshake_timeout: cfg.handshake_timeout,
        idle_timeout: cfg.idle_timeout(),
        max_write_buffer_bytes: cfg.max_write_buffer_bytes,
        write_stall_timeout: cfg.write_stall_timeout,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use pm_protocol::pb::{StoredTask, TaskSpec};
    use pm_protocol::Message as _;

    use super::{split_tasks, QueueOf};
    use crate::shard::shard_of_queue;
    use crate::store::RecoveredTask;

    fn stored(queue: &str) -> Bytes {
        let spec =
            TaskSpec { queue: queue.into(), key: "k".into(), payload: Bytes::from_static(b"{}"), ..Default::default() };
        StoredTask { spec: Some(spec), submitted_unix_ms: 7, not_before_unix_ms: 0 }.encode_to_vec().into()
    }

    #[test]
    fn the_queue_alone_is_decoded_from_a_stored_task() {
        let q = QueueOf::decode(stored("ocr")).expect("decodes");
        assert_eq!(q.spec.map(|s| s.queue).as_deref(), Some("ocr"));
    }

    #[test]
    fn recovered_tasks_go_to_their_queues_shards() {
        let queues = ["a", "b", "c", "d", "", "ocr"];
        let tasks = (0..600u64)
            .map(|i| RecoveredTask { task_id: i, body: stored(queues[i as usize % 6]), attempts: 0, dead_reason: None })
            .collect();
        let shares = split_tasks(tasks, 3);
        assert_eq!(shares.iter().map(|s| s.len()).sum::<usize>(), 600);
        for (index, share) in shares.iter().enumerate() {
            assert!(share.windows(2).all(|w| w[0].task_id < w[1].task_id), "in id order");
            for t in share {
                let queue = pm_task::pipeline::queue_or_default(queues[t.task_id as usize % 6]);
                assert_eq!(shard_of_queue(queue, 3), index, "task {}", t.task_id);
            }
        }
        // One queue: its shard gets every task, the others none.
        let tasks =
            (0..50u64).map(|i| RecoveredTask { task_id: i, body: stored("ocr"), attempts: 0, dead_reason: None });
        let shares = split_tasks(tasks.collect(), 3);
        let sizes: Vec<usize> = shares.iter().map(|s| s.len()).collect();
        let mut expected = vec![0; 3];
        expected[shard_of_queue("ocr", 3)] = 50;
        assert_eq!(sizes, expected);
    }
}
