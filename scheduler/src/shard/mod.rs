//! Shard actors: the single owners of queue and lease state.
//!
//! **Invariant: a shard's queues, tasks and leases are touched only by that shard's task.** Connections
//! send [`ShardMsg`]s over an unbounded channel (bounded in practice by credits and per-connection in-flight
//! limits); the shard handles everything that arrived, then *flushes a round*: every WAL record produced by
//! that round goes to the committer as one job, and the replies that must wait for durability (submit acks,
//! ack replies) are released together when the committer reports the job durable. So there is no lock on the
//! hot path, and group commit spans all connections. New tasks do not wait for that sync: they become ready
//! as soon as the committer has written them (`ShardMsg::Appended`), and only their `SubmitAck` waits.
//!
//! Queues are placed on shards by a hash of the queue name, so one queue's order is decided in one place,
//! and a lease id carries its shard (`lease_id % shards`), so acks go straight to the owner.

mod chain;
mod queue;
mod status;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pm_protocol::pb::{self, DeadLetter, LeasedTask, QueueStats, StoredTask, SubmitResult, TaskSpec, TaskState};
use pm_protocol::{ErrorCode, Message as _};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::outbox::{ConnId, OutTx, Outbound, Part};
use crate::holdings::Holdings;
use crate::idmap::{IdMap, IdSet};
use crate::metrics as m;
use crate::stolen::{StealHandle, StealMsg};
use crate::store::committer::CommitterHandle;
use crate::store::{IdemKey, Record, RecoveredIdem, RecoveredResult, RecoveredTask, StoreError};
pub use queue::{executor_set, Executors, Queue, QueueLimits, ReadyEntry};

/// Settings a shard needs.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Lease duration when a task names none.
    pub default_lease: Duration,
    /// Deliveries before dead-lettering when a task names none.
    pub default_max_attempts: u32,
    /// How long idempotency keys are remembered.
    pub idempotency_window: Duration,
    /// Largest frame we may send (Leased batches are split below it).
    pub max_frame_bytes: usize,
    /// How long a disconnected agent's leases are kept before they are redelivered.
    pub disconnect_grace: Duration,
    /// After startup, how long recovered tasks that had been delivered before are held for their agents to
    /// reclaim before they are delivered to anyone (zero: not held).
    pub reclaim_grace: Duration,
    /// Cluster mode: the work stealer (tasks taken from peers are reported to it once delivered).
    pub steal: Option<StealHandle>,
    /// The node's ordinal in the top bits of its lease ids (0 for a single node; see [`LEASE_NODE_SHIFT`]).
    pub lease_prefix: u64,
    /// How long the outcome of a finished task is kept (zero: not kept; finishing writes a bare tombstone).
    pub result_retention: Duration,
    /// Lease new tasks only once durable, not as soon as written (see `Shard::on_appended`).
    pub lease_after_sync: bool,
    /// How many outcomes (and bytes of them) the node's shards keep in memory, together.
    pub results_budget: Arc<ResultsBudget>,
    /// Largest result document kept with an outcome; a larger one is left out (the outcome says so).
    pub max_result_bytes: usize,
    /// Limits of named queues (`--queue-limit`); other queues have none.
    pub queue_limits: Arc<HashMap<String, QueueLimits>>,
    /// Every shard of the node, by index (set once they are all started): follow-ups go to their queue's.
    pub siblings: Arc<OnceLock<Vec<ShardHandle>>>,
}

/// The node's budget for kept outcomes, shared by its shards. Each shard counts what it keeps itself and
/// publishes its totals here once a round; it forgets its own oldest while its count plus the others' last
/// published counts are over either bound. (Counting every outcome in shared counters made the shards' ack
/// paths contend for one cache line.)
#[derive(Debug)]
pub struct ResultsBudget {
    /// Most outcomes (`--max-results`).
    pub max_count: usize,
    /// Most bytes of encoded outcomes (`--max-results-bytes`).
    pub max_bytes: usize,
    /// What each shard keeps: (outcomes, bytes), each on its own cache line.
    kept: Box<[KeptSlot]>,
}

/// One shard's published totals.
#[derive(Debug, Default)]
#[repr(align(128))]
struct KeptSlot {
    count: AtomicUsize,
    bytes: AtomicUsize,
}

impl ResultsBudget {
    /// A budget for `shards` shards.
    pub fn new(max_count: usize, max_bytes: usize, shards: usize) -> ResultsBudget {
        ResultsBudget { max_count, max_bytes, kept: (0..shards.max(1)).map(|_| KeptSlot::default()).collect() }
    }

    /// Shard `index` keeps `count` outcomes of `bytes` bytes now.
    fn publish(&self, index: usize, count: usize, bytes: usize) {
        if let Some(slot) = self.kept.get(index) {
            if slot.count.load(Ordering::Relaxed) != count {
                slot.count.store(count, Ordering::Relaxed);
            }
            if slot.bytes.load(Ordering::Relaxed) != bytes {
                slot.bytes.store(bytes, Ordering::Relaxed);
            }
        }
    }

    /// What the shards other than `index` last published: (outcomes, bytes).
    fn others(&self, index: usize) -> (usize, usize) {
        self.kept
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .fold((0, 0), |(c, b), (_, s)| (c + s.count.load(Ordering::Relaxed), b + s.bytes.load(Ordering::Relaxed)))
    }

    /// What all shards last published: (outcomes, bytes).
    pub fn total(&self) -> (usize, usize) {
        self.others(usize::MAX)
    }
}

/// How long a task taken from a peer may wait for an agent here before it is given back.
const FOREIGN_WAIT: Duration = Duration::from_secs(1);

/// Messages to a shard.
#[derive(Debug)]
pub enum ShardMsg {
    /// Enqueue tasks; `items` are (index in the request, spec), already validated.
    Submit {
        /// Where the reply goes.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// Tasks for this shard.
        items: Vec<(usize, TaskSpec)>,
        /// Send `out` a `Completed` for each accepted task when it finishes.
        notify: bool,
    },
    /// An agent (or a peer node) grants credits on a queue.
    Credit {
        /// Agent connection.
        conn: ConnId,
        /// Its outbound channel.
        out: OutTx,
        /// Queue name (validated).
        queue: String,
        /// Credits added.
        n: u32,
        /// `n` replaces the connection's credits instead of adding to them.
        set: bool,
        /// The connection is a peer node (served only when no agent has credit).
        peer: bool,
        /// The executors the agent declared in Hello (`None`: it runs anything).
        executors: Option<Executors>,
        /// What the connection holds node-wide, bounded by `--max-leases-per-conn` (`None`: no bound).
        holdings: Option<Arc<Holdings>>,
    },
    /// Work stealing: which queues have agents with idle credits and no ready work (queue, idle credits minus
    /// stolen tasks already waiting here).
    Hungry {
        /// Where the answer goes.
        reply: tokio::sync::oneshot::Sender<Vec<(String, u64)>>,
    },
    /// Work stealing: a task a peer leased to this node, with this node's lease id, for a local agent.
    Foreign {
        /// The task as the agent will see it.
        task: LeasedTask,
    },
    /// Finished deliveries.
    Ack {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// (index in request, lease id, result).
        items: Vec<(usize, u64, Bytes)>,
    },
    /// Failed deliveries.
    Nack {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// (index, item).
        items: Vec<(usize, pb::NackItem)>,
    },
    /// Heartbeats.
    Extend {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// (index, lease id).
        items: Vec<(usize, u64)>,
        /// New duration from now (0 = the task's lease duration).
        extend_ms: u32,
    },
    /// Cancel tasks: `items` are (index in the request, task id), the whole request (ids of other shards
    /// are left out of this shard's answer).
    Cancel {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// (index, task id).
        items: Vec<(usize, u64)>,
    },
    /// An agent (just reconnected) asks for the leases of the tasks it still runs: `items` are (index in the
    /// request, item), the whole request (ids of other shards are left out of this shard's answer).
    Reclaim {
        /// The agent connection that gets the leases.
        conn: ConnId,
        /// Its outbound channel (reply, and later revocations).
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// (index, item).
        items: Vec<(usize, pb::ReclaimItem)>,
        /// What the connection holds node-wide (`None`: no bound).
        holdings: Option<Arc<Holdings>>,
    },
    /// A connection closed: drop its credits, return its leases (after the grace period).
    Disconnected {
        /// The connection.
        conn: ConnId,
    },
    /// Task status: `items` are (index in the request, task id), the whole request (ids of other shards are
    /// left out of this shard's answer).
    Status {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// (index, task id).
        items: Vec<(usize, u64)>,
    },
    /// Send `out` a `Completed` when each task finishes (at once if it has): as [`ShardMsg::Status`].
    Watch {
        /// Where the answer and the `Completed` messages go.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// (index, task id).
        items: Vec<(usize, u64)>,
    },
    /// Queue counters.
    Stats {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
    },
    /// List dead letters.
    DeadList {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// Queue filter (empty = all).
        queue: String,
        /// Most entries.
        limit: usize,
    },
    /// Redrive dead letters.
    Redrive {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// Queue filter (empty = all).
        queue: String,
        /// Task filter (empty = all).
        task_ids: Vec<u64>,
    },
    /// A round's records are written and their sync is under way: its new tasks may be leased now.
    Appended {
        /// Round number.
        round: u64,
    },
    /// The committer finished a round's job.
    Durable {
        /// Round number.
        round: u64,
        /// Outcome.
        result: Result<(), (ErrorCode, String)>,
    },
    /// A follow-up another shard wrote (durably) for a queue of this one.
    Adopt {
        /// Its id.
        task_id: u64,
        /// The stored task, as written.
        body: Bytes,
    },
    /// Stop leasing; answer nothing new.
    Drain,
}

/// Where a task is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Submitted, not yet written to the WAL (a new task becomes ready once written, while it is synced).
    Pending,
    Ready,
    Delayed,
    /// Recovered after a restart with at least one attempt (probably running on an agent when the node
    /// stopped): not delivered until the reclaim grace ends, but its agent may reclaim it.
    Held,
    Leased(u64),
    /// Ack tombstone written (acked, failed or cancelled), not yet durable.
    Acking,
    Dead(Box<Dead>),
}

/// Why a task is dead, and what its last attempt reported.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dead {
    reason: String,
    /// The result document of the failed last attempt (kept in memory only; empty after a restart).
    result: Bytes,
    /// Its `onFailure` follow-ups (in memory only, like `result`), shown once the record burying it is durable.
    children: Vec<u64>,
    /// Whether the dead-letter record is durable: until then status shows no follow-ups (they are not known
    /// to any shard yet) and watchers are not told.
    written: bool,
}

#[derive(Debug)]
struct Task {
    queue: u32,
    priority: i32,
    key: String,
    payload: Bytes,
    max_attempts: u32,
    lease: Duration,
    attempts: u32,
    state: State,
    /// Not before, for Delayed.
    not_before: Option<Instant>,
    idem: Option<String>,
    /// When it last became ready (for [`m::DISPATCH_SECONDS`]).
    ready_since: Instant,
    /// When it was submitted, wall clock (for [`m::END_TO_END_SECONDS`]; 0 if unknown).
    submitted_unix_ms: u64,
    /// When its newest delivery was leased, wall clock (0: never, or not since the restart).
    started_unix_ms: u64,
    /// Its executor class in its queue (0: needs no particular executor).
    class: u32,
    /// Its payload may name follow-ups or a flow ([`pm_protocol::pipeline::may_chain`]).
    chain: bool,
}

impl Task {
    fn entry(&self, task_id: u64) -> ReadyEntry {
        ReadyEntry { priority: self.priority, task_id }
    }
}

#[derive(Debug)]
struct Lease {
    task_id: u64,
    conn: ConnId,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct Agent {
    out: Option<OutTx>,
    /// Boxed and made only on the first lease: an agent waiting with credits (the common case among many
    /// connected agents) then costs 32 bytes in `agents` instead of 56.
    leases: Option<Box<IdSet<u64>>>,
    /// Its credits and leases across the node (`--max-leases-per-conn`); released when a lease ends.
    holdings: Option<Arc<Holdings>>,
}

impl Agent {
    /// Counts a lease taken without a credit (`Reclaim`): in its holdings too, unless it held it already.
    fn add_lease(&mut self, lease_id: u64) {
        if self.leases.get_or_insert_with(Default::default).insert(lease_id) {
            if let Some(h) = &self.holdings {
                h.add(1);
            }
        }
    }

    /// Forgets a lease that ended or moved to another connection (and gives its place in the holdings back).
    fn remove_lease(&mut self, lease_id: u64) {
        if self.leases.as_mut().is_some_and(|l| l.remove(&lease_id)) {
            if let Some(h) = &self.holdings {
                h.release(1);
            }
        }
    }
}

/// A reply waiting for its round to be durable.
#[derive(Debug)]
enum Waiter {
    Submit {
        out: OutTx,
        request_id: u64,
        results: Vec<(usize, SubmitResult)>,
        new_tasks: Vec<u64>,
        /// When the shard received it (for [`m::SUBMIT_SECONDS`]).
        received: Instant,
    },
    Ack {
        /// The reply (`None` once handed to the committer, which sends it the moment the round is durable).
        reply: Option<LeaseReply>,
        /// Items in the request.
        n: usize,
        acked: Vec<(u64, Outcome)>,
    },
    Cancel {
        out: OutTx,
        request_id: u64,
        items: Vec<(usize, ErrorCode)>,
        cancelled: Vec<(u64, Outcome)>,
    },
    /// Tasks that failed for good (a final nack, answered already): finished once durable.
    Failed {
        failed: Vec<(u64, Outcome)>,
    },
    /// Tasks dead-lettered this round, with their `onFailure` follow-ups: shown and told to watchers once
    /// durable, ready again if the round failed (still live on disk).
    Buried {
        buried: Vec<(u64, Vec<u64>)>,
    },
    /// Follow-ups written this round: handed to their shards once durable.
    Adopt {
        children: Vec<(u64, Bytes)>,
    },
}

/// A `LeaseReply` waiting for its round: where it goes, its request id and its codes.
type LeaseReply = (OutTx, u64, Vec<(usize, ErrorCode)>);

/// Sends `reply` with the round's `result`: a store error replaces every `OK` (nothing of the round is durable).
fn send_lease_reply((out, request_id, mut items): LeaseReply, result: &Result<(), (ErrorCode, String)>) {
    if let Err((code, _)) = result {
        for (_, c) in items.iter_mut() {
            if *c == ErrorCode::Ok {
                *c = *code;
            }
        }
    }
    let _ = out.send(Outbound::Part { request_id, part: Part::Lease(items) });
}

/// The outcome of a finishing task: kept once its round is durable and sent to its watchers.
#[derive(Debug)]
struct Outcome {
    state: TaskState,
    /// The encoded status (as written in the task's Finish record) and when it expires, when results are kept
    /// or the task is watched.
    kept: Option<(Bytes, u64)>,
    /// The status itself, when the task had watchers as it finished (else decoded from `kept` for one that
    /// came since).
    status: Option<Box<pb::TaskStatus>>,
}

/// The shard's latency histograms.
struct Histograms {
    submit: metrics::Histogram,
    dispatch: metrics::Histogram,
    end_to_end: metrics::Histogram,
}

/// A shard's handle: cheap to clone.
#[derive(Debug, Clone)]
pub struct ShardHandle {
    tx: mpsc::UnboundedSender<ShardMsg>,
}

impl ShardHandle {
    /// Sends a message; false if the shard has stopped.
    pub fn send(&self, msg: ShardMsg) -> bool {
        self.tx.send(msg).is_ok()
    }
}

/// Which of `n` shards owns `queue`.
pub fn shard_of_queue(queue: &str, n: usize) -> usize {
    // FNV-1a: stable across builds and platforms (placement must not change between restarts).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in queue.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n as u64) as usize
}

/// Lease ids: bit 63 clear (set: a stolen task's, see [`crate::stolen`]), bits 48–62 the node's ordinal (so a
/// lease id quoted to the wrong node is never live there), bits 0–47 a counter times the shard count plus the
/// shard's index.
pub const LEASE_NODE_SHIFT: u32 = 48;
const LEASE_COUNTER_MASK: u64 = (1 << LEASE_NODE_SHIFT) - 1;

/// Which shard issued `lease_id`.
pub fn shard_of_lease(lease_id: u64, n: usize) -> usize {
    ((lease_id & LEASE_COUNTER_MASK) % n as u64) as usize
}

/// The next lease id of shard `index` of `shards` on the node whose ids start with `prefix`.
fn mint_lease(next: &mut u64, prefix: u64, shards: usize, index: usize) -> u64 {
    if *next >= LEASE_COUNTER_MASK / shards as u64 {
        *next = 0; // after 2^48 / shards leases: start over, long after the first ones ended
    }
    let id = prefix | (*next * shards as u64 + index as u64);
    *next += 1;
    id
}

/// The shard actor.
pub struct Shard {
    /// Latency histograms, looked up once (a lookup per task would cost on the hot path).
    hist: Histograms,
    index: usize,
    shards: usize,
    cfg: ShardConfig,
    committer: CommitterHandle,
    self_tx: mpsc::UnboundedSender<ShardMsg>,
    next_task_id: Arc<AtomicU64>,
    next_lease: u64,
    queues: Vec<Queue>,
    queue_ids: HashMap<String, u32>,
    tasks: IdMap<u64, Task>,
    leases: IdMap<u64, Lease>,
    lease_heap: BinaryHeap<Reverse<(Instant, u64)>>,
    agents: IdMap<ConnId, Agent>,
    idem: HashMap<String, (u64, u64)>,
    idem_expiry: std::collections::VecDeque<(u64, String)>,
    round: u64,
    records: Vec<Record>,
    waiters: Vec<Waiter>,
    pending_rounds: IdMap<u64, Vec<Waiter>>,
    outgoing: IdMap<ConnId, (OutTx, Vec<LeasedTask>, usize)>,
    /// Stolen tasks given to agents this round: reported to the stealer once their Leased frames are queued
    /// (a revocation it sends must follow the lease on the wire).
    delivered_foreign: Vec<(u64, ConnId, OutTx, Option<Arc<Holdings>>)>,
    dirty: IdSet<u32>,
    draining: bool,
    /// Recovered tasks in [`State::Held`], released to their queues at `hold_until`.
    held: Vec<u64>,
    /// End of the reclaim grace (`None` once released, or when nothing is held).
    hold_until: Option<Instant>,
    /// Tasks whose round failed while later rounds were still in flight: a duplicate submit in a later round
    /// must not be told "already enqueued as X" when X never became durable.
    failed_ids: IdSet<u64>,
    /// Outcomes of finished tasks (encoded [`pb::TaskStatus`]), kept for `result_retention`.
    results: IdMap<u64, Bytes>,
    /// `results` by (expiry, task id), oldest first.
    result_order: VecDeque<(u64, u64)>,
    /// Bytes of `results`.
    results_bytes: usize,
    /// What the other shards keep, as last published in [`ResultsBudget`].
    others_kept: (usize, usize),
    /// Connections to send a `Completed` when a task finishes.
    watchers: IdMap<u64, Vec<OutTx>>,
    /// Follow-ups written this round (id, stored task).
    adopting: Vec<(u64, Bytes)>,
    /// Tasks dead-lettered in this round, with their follow-ups (see [`Waiter::Buried`]).
    buried: Vec<(u64, Vec<u64>)>,
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Shard {
    /// Builds shard `index` of `shards` from its share of the recovered state and starts it.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        index: usize,
        shards: usize,
        cfg: ShardConfig,
        committer: CommitterHandle,
        next_task_id: Arc<AtomicU64>,
        tasks: Vec<RecoveredTask>,
        idem: Vec<RecoveredIdem>,
        results: Vec<RecoveredResult>,
    ) -> ShardHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut shard = Shard {
            hist: Histograms {
                submit: metrics::histogram!(m::SUBMIT_SECONDS),
                dispatch: metrics::histogram!(m::DISPATCH_SECONDS),
                end_to_end: metrics::histogram!(m::END_TO_END_SECONDS),
            },
            index,
            shards,
            cfg,
            committer,
            self_tx: tx.clone(),
            next_task_id,
            next_lease: rand::random::<u32>() as u64,
            queues: Vec::new(),
            queue_ids: HashMap::new(),
            tasks: IdMap::default(),
            leases: IdMap::default(),
            lease_heap: BinaryHeap::new(),
            agents: IdMap::default(),
            idem: HashMap::new(),
            idem_expiry: Default::default(),
            round: 0,
            records: Vec::new(),
            waiters: Vec::new(),
            pending_rounds: IdMap::default(),
            outgoing: IdMap::default(),
            delivered_foreign: Vec::new(),
            dirty: IdSet::default(),
            draining: false,
            held: Vec::new(),
            hold_until: None,
            failed_ids: IdSet::default(),
            results: IdMap::default(),
            result_order: VecDeque::new(),
            results_bytes: 0,
            others_kept: (0, 0),
            watchers: IdMap::default(),
            adopting: Vec::new(),
            buried: Vec::new(),
        };
        shard.restore(tasks, idem);
        shard.restore_results(results);
        tokio::spawn(shard.run(rx));
        ShardHandle { tx }
    }

    fn restore(&mut self, tasks: Vec<RecoveredTask>, idem: Vec<RecoveredIdem>) {
        let now_ms = now_unix_ms();
        let now = Instant::now();
        for rt in tasks {
            let stored = match StoredTask::decode(rt.body.clone()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(task_id = rt.task_id, "undecodable stored task skipped: {e}");
                    continue;
                }
            };
            let spec = stored.spec.unwrap_or_default();
            let q = self.queue_id(pm_protocol::pipeline::queue_or_default(&spec.queue));
            let mut task = self.new_task(q, &spec, None);
            task.attempts = rt.attempts;
            task.submitted_unix_ms = stored.submitted_unix_ms;
            if let Some(reason) = rt.dead_reason {
                task.state =
                    State::Dead(Box::new(Dead { reason, result: Bytes::new(), children: Vec::new(), written: true }));
                self.queues[q as usize].dead.insert(rt.task_id);
            } else if stored.not_before_unix_ms > now_ms {
                let at = now + Duration::from_millis(stored.not_before_unix_ms - now_ms);
                task.state = State::Delayed;
                task.not_before = Some(at);
                self.queues[q as usize].delayed.push(Reverse((at, rt.task_id)));
            } else if rt.attempts > 0 && !self.cfg.reclaim_grace.is_zero() {
                // Delivered before the stop, so probably still running on an agent that is about to reconnect
                // and reclaim it: keep it for that agent during the grace.
                task.state = State::Held;
                self.queues[q as usize].held += 1;
                self.held.push(rt.task_id);
            } else {
                task.state = State::Ready;
                task.ready_since = Instant::now();
                self.queues[q as usize].push_ready(task.class, task.entry(rt.task_id));
            }
            self.tasks.insert(rt.task_id, task);
        }
        if !self.held.is_empty() {
            self.hold_until = Some(now + self.cfg.reclaim_grace);
        }
        for i in idem {
            if i.expires_unix_ms > now_ms && shard_of_queue(idem_queue(&i.key), self.shards) == self.index {
                self.idem.insert(i.key.clone(), (i.task_id, i.expires_unix_ms));
                self.idem_expiry.push_back((i.expires_unix_ms, i.key));
            }
        }
        self.idem_expiry.make_contiguous().sort();
        tracing::info!(shard = self.index, tasks = self.tasks.len(), held = self.held.len(), "shard recovered");
        self.update_gauges();
    }

    fn queue_id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.queue_ids.get(name) {
            return *id;
        }
        let id = self.queues.len() as u32;
        let mut queue = Queue::new(name.to_string());
        if let Some(limits) = self.cfg.queue_limits.get(name) {
            queue.set_limits(*limits);
        }
        self.queues.push(queue);
        self.queue_ids.insert(name.to_string(), id);
        id
    }

    fn new_task(&mut self, queue: u32, spec: &TaskSpec, idem: Option<String>) -> Task {
        let needed = pm_protocol::pipeline::required_executors(spec);
        let class = if needed.is_empty() { 0 } else { self.queues[queue as usize].class_of(&executor_set(needed)) };
        let lease =
            if spec.lease_ms == 0 { self.cfg.default_lease } else { Duration::from_millis(spec.lease_ms.into()) };
        let max_attempts = if spec.max_attempts == 0 { self.cfg.default_max_attempts } else { spec.max_attempts };
        Task {
            queue,
            priority: spec.priority,
            key: spec.key.clone(),
            payload: spec.payload.clone(),
            max_attempts,
            lease,
            attempts: 0,
            state: State::Pending,
            not_before: None,
            idem,
            ready_since: Instant::now(),
            submitted_unix_ms: 0,
            started_unix_ms: 0,
            class,
            chain: pm_protocol::pipeline::may_chain(&spec.payload),
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<ShardMsg>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let next = self.next_deadline();
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    self.handle(msg);
                    // Take everything already queued before flushing: one WAL job per round.
                    let mut n = 0;
                    while n < 4096 {
                        match rx.try_recv() {
                            Ok(msg) => self.handle(msg),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                }
                _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    self.on_timers();
                }
                _ = tick.tick() => {
                    self.expire_idempotency();
                    self.expire_results();
                    self.release_foreign();
                    self.update_gauges();
                }
            }
            self.dispatch_dirty();
            self.flush();
        }
    }

    fn handle(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Submit { out, request_id, items, notify } => self.on_submit(out, request_id, items, notify),
            ShardMsg::Credit { conn, out, queue, n, set, peer, executors, holdings } => {
                let q = self.queue_id(&queue);
                let agent = self.agents.entry(conn).or_default();
                agent.out = Some(out);
                let queue = &mut self.queues[q as usize];
                // The credits this queue gives back (set) are free before the new ones are counted.
                let n = match &holdings {
                    Some(h) => {
                        if set {
                            h.release(queue.credits_of(conn));
                        }
                        h.reserve(n)
                    }
                    None => n,
                };
                if agent.holdings.is_none() {
                    agent.holdings = holdings;
                }
                if set {
                    queue.set_credit(conn, n, peer, executors);
                } else {
                    queue.add_credit(conn, n, peer, executors);
                }
                self.dirty.insert(q);
            }
            ShardMsg::Hungry { reply } => {
                let hungry = self
                    .queues
                    .iter()
                    .filter(|q| q.ready_len() == 0)
                    .map(|q| (q.name.clone(), q.local_credits().saturating_sub(q.foreign.len() as u64)))
                    .filter(|(_, n)| *n > 0)
                    .collect();
                let _ = reply.send(hungry);
            }
            ShardMsg::Foreign { task } => {
                let q = self.queue_id(&task.queue);
                self.queues[q as usize].foreign.push_back((Instant::now(), task));
                self.dirty.insert(q);
            }
            ShardMsg::Ack { out, request_id, items } => self.on_ack(out, request_id, items),
            ShardMsg::Nack { out, request_id, items } => self.on_nack(out, request_id, items),
            ShardMsg::Extend { out, request_id, items, extend_ms } => self.on_extend(out, request_id, items, extend_ms),
            ShardMsg::Cancel { out, request_id, items } => self.on_cancel(out, request_id, items),
            ShardMsg::Reclaim { conn, out, request_id, items, holdings } => {
                self.on_reclaim(conn, out, request_id, items, holdings)
            }
            ShardMsg::Disconnected { conn } => self.on_disconnect(conn),
            ShardMsg::Status { out, request_id, items } => {
                let found = items.into_iter().filter_map(|(i, id)| Some((i, self.status_of(id)?))).collect();
                let _ = out.send(Outbound::Part { request_id, part: Part::Status(found) });
            }
            ShardMsg::Watch { out, request_id, items } => self.on_watch(out, request_id, items),
            ShardMsg::Stats { out, request_id } => {
                let stats = self.queues.iter().map(|q| self.queue_stats(q)).collect();
                let _ = out.send(Outbound::Part { request_id, part: Part::Stats(stats) });
            }
            ShardMsg::DeadList { out, request_id, queue, limit } => {
                let list = self.dead_list(&queue, limit);
                let _ = out.send(Outbound::Part { request_id, part: Part::DeadList(list) });
            }
            ShardMsg::Redrive { out, request_id, queue, task_ids } => {
                let n = self.redrive(&queue, &task_ids);
                let _ = out.send(Outbound::Part { request_id, part: Part::Redrive(n) });
            }
            ShardMsg::Appended { round } => self.on_appended(round),
            ShardMsg::Durable { round, result } => self.on_durable(round, result),
            ShardMsg::Adopt { task_id, body } => self.adopt(task_id, body),
            ShardMsg::Drain => self.draining = true,
        }
    }

    fn on_submit(&mut self, out: OutTx, request_id: u64, items: Vec<(usize, TaskSpec)>, notify: bool) {
        let received = Instant::now();
        let now_ms = now_unix_ms();
        let mut results = Vec::with_capacity(items.len());
        let mut new_tasks = Vec::with_capacity(items.len());
        let mut last_queue: Option<(String, u32)> = None;
        for (idx, mut spec) in items {
            if self.draining {
                results.push((idx, err_result(ErrorCode::ShuttingDown, "scheduler is shutting down")));
                continue;
            }
            if spec.queue.is_empty() {
                spec.queue = pm_protocol::pipeline::queue_or_default("").to_string();
            }
            let idem_key =
                (!spec.idempotency_key.is_empty()).then(|| format!("{}\0{}", spec.queue, spec.idempotency_key));
            if let Some(k) = &idem_key {
                if let Some((task_id, exp)) = self.idem.get(k) {
                    if *exp > now_ms {
                        let task_id = *task_id;
                        results.push((idx, SubmitResult { task_id, duplicate: true, ..Default::default() }));
                        if notify {
                            self.watch(task_id, &out);
                        }
                        continue;
                    }
                }
            }
            // A batch nearly always targets one queue: look its id up once, not per task.
            let q = match &last_queue {
                Some((name, id)) if *name == spec.queue => *id,
                _ => {
                    let id = self.queue_id(&spec.queue);
                    last_queue = Some((spec.queue.clone(), id));
                    id
                }
            };
            let needed = pm_protocol::pipeline::required_executors(&spec);
            if !needed.is_empty() && !self.queues[q as usize].has_class_room(&executor_set(needed)) {
                let msg =
                    format!("queue `{}` has {} sets of executors already (the limit)", spec.queue, queue::MAX_CLASSES);
                results.push((idx, err_result(ErrorCode::LimitExceeded, &msg)));
                continue;
            }
            let task_id = self.next_task_id.fetch_add(1, Ordering::Relaxed);
            let not_before_unix_ms = if spec.delay_ms > 0 { now_ms + spec.delay_ms } else { 0 };
            let idempotency = idem_key.as_ref().map(|k| IdemKey {
                key: k.clone(),
                expires_unix_ms: now_ms + self.cfg.idempotency_window.as_millis() as u64,
            });
            let mut task = self.new_task(q, &spec, idem_key.clone());
            task.submitted_unix_ms = now_ms;
            if spec.delay_ms > 0 {
                task.not_before = Some(Instant::now() + Duration::from_millis(spec.delay_ms));
            }
            let body = StoredTask { spec: Some(spec), submitted_unix_ms: now_ms, not_before_unix_ms }.encode_to_vec();
            self.records.push(Record::Enqueue { task_id, body: Bytes::from(body), idempotency: idempotency.clone() });
            if let Some(i) = idempotency {
                self.idem.insert(i.key.clone(), (task_id, i.expires_unix_ms));
                self.idem_expiry.push_back((i.expires_unix_ms, i.key));
            }
            self.tasks.insert(task_id, task);
            if notify {
                self.watchers.entry(task_id).or_default().push(out.clone());
            }
            new_tasks.push(task_id);
            results.push((idx, SubmitResult { task_id, ..Default::default() }));
        }
        // Even a request of duplicates waits for this round: its originals may still be in flight.
        self.waiters.push(Waiter::Submit { out, request_id, results, new_tasks, received });
    }

    fn on_ack(&mut self, out: OutTx, request_id: u64, items: Vec<(usize, u64, Bytes)>) {
        let mut codes = Vec::with_capacity(items.len());
        let mut acked = Vec::new();
        for (idx, lease_id, result) in items {
            match self.end_lease(lease_id) {
                Some(task_id) => {
                    if let Some(t) = self.tasks.get_mut(&task_id) {
                        t.state = State::Acking;
                    }
                    let outcome = self.finish_record(task_id, TaskState::Succeeded, result, String::new());
                    acked.push((task_id, outcome));
                    codes.push((idx, ErrorCode::Ok));
                }
                None => {
                    metrics::counter!(m::STALE_LEASES, "op" => "ack").increment(1);
                    codes.push((idx, ErrorCode::StaleLease));
                }
            }
        }
        let n = codes.len();
        self.waiters.push(Waiter::Ack { reply: Some((out, request_id, codes)), n, acked });
    }

    fn on_nack(&mut self, out: OutTx, request_id: u64, items: Vec<(usize, pb::NackItem)>) {
        let mut codes = Vec::with_capacity(items.len());
        let mut failed = Vec::new();
        for (idx, item) in items {
            match self.end_lease(item.lease_id) {
                Some(task_id) if item.fail => {
                    metrics::counter!(m::NACKED).increment(1);
                    metrics::counter!(m::FAILED).increment(1);
                    if let Some(t) = self.tasks.get_mut(&task_id) {
                        t.state = State::Acking;
                    }
                    let reason = if item.reason.is_empty() {
                        "failed (not retried)".to_string()
                    } else {
                        cap_reason(item.reason)
                    };
                    let outcome = self.finish_record(task_id, TaskState::Failed, item.result, reason);
                    failed.push((task_id, outcome));
                    codes.push((idx, ErrorCode::Ok));
                }
                Some(task_id) => {
                    metrics::counter!(m::NACKED).increment(1);
                    if item.released {
                        // Never started (a peer node found no agent for it): not an attempt.
                        if let Some(t) = self.tasks.get_mut(&task_id) {
                            t.attempts = t.attempts.saturating_sub(1);
                            self.records.push(Record::Attempt { task_id, attempts: t.attempts });
                        }
                    }
                    let reason =
                        if item.reason.is_empty() { "nacked by agent".to_string() } else { cap_reason(item.reason) };
                    self.retry_or_bury(task_id, Duration::from_millis(item.retry_after_ms), reason, item.result);
                    codes.push((idx, ErrorCode::Ok));
                }
                None => {
                    metrics::counter!(m::STALE_LEASES, "op" => "nack").increment(1);
                    codes.push((idx, ErrorCode::StaleLease));
                }
            }
        }
        let _ = out.send(Outbound::Part { request_id, part: Part::Lease(codes) });
        if !failed.is_empty() {
            self.waiters.push(Waiter::Failed { failed });
        }
    }

    fn on_extend(&mut self, out: OutTx, request_id: u64, items: Vec<(usize, u64)>, extend_ms: u32) {
        let now = Instant::now();
        let mut codes = Vec::with_capacity(items.len());
        for (idx, lease_id) in items {
            let Some(lease) = self.leases.get_mut(&lease_id) else {
                metrics::counter!(m::STALE_LEASES, "op" => "extend").increment(1);
                codes.push((idx, ErrorCode::StaleLease));
                continue;
            };
            let dur = match extend_ms {
                0 => self.tasks.get(&lease.task_id).map(|t| t.lease).unwrap_or(self.cfg.default_lease),
                ms => Duration::from_millis(ms.into()),
            };
            lease.deadline = now + dur;
            self.lease_heap.push(Reverse((lease.deadline, lease_id)));
            codes.push((idx, ErrorCode::Ok));
        }
        let _ = out.send(Outbound::Part { request_id, part: Part::Lease(codes) });
    }

    /// Cancels the tasks of `items` this shard owns: a ready or delayed task leaves its queue, a leased one
    /// loses its lease (its agent gets a `Revoke`). Each gets an `Ack` tombstone; the reply waits for it to
    /// be durable. Ids this shard does not hold are left out of the answer (the merged reply says
    /// `NOT_FOUND` unless another shard answers); tasks not yet durable, being acked, or dead are
    /// `NOT_FOUND` here.
    fn on_cancel(&mut self, out: OutTx, request_id: u64, items: Vec<(usize, u64)>) {
        let mut codes = Vec::new();
        let mut cancelled = Vec::new();
        let mut unqueue: HashMap<u32, HashSet<u64>> = HashMap::new();
        for (idx, task_id) in items {
            let Some(t) = self.tasks.get_mut(&task_id) else { continue };
            let q = t.queue;
            let lease_id = match t.state {
                State::Ready | State::Delayed => None,
                State::Held => {
                    self.queues[q as usize].held = self.queues[q as usize].held.saturating_sub(1);
                    None
                }
                State::Leased(lease_id) => Some(lease_id),
                State::Pending | State::Acking | State::Dead(_) => {
                    codes.push((idx, ErrorCode::NotFound));
                    continue;
                }
            };
            t.state = State::Acking;
            t.not_before = None;
            match lease_id {
                None => {
                    unqueue.entry(q).or_default().insert(task_id);
                }
                Some(lease_id) => self.revoke(lease_id, task_id, "cancelled"),
            }
            let outcome = self.finish_record(task_id, TaskState::Cancelled, Bytes::new(), "cancelled".into());
            cancelled.push((task_id, outcome));
            codes.push((idx, ErrorCode::Ok));
        }
        for (q, ids) in unqueue {
            let q = &mut self.queues[q as usize];
            q.retain_ready(|id| !ids.contains(&id));
            q.delayed.retain(|Reverse((_, id))| !ids.contains(id));
        }
        if cancelled.is_empty() {
            let _ = out.send(Outbound::Part { request_id, part: Part::Cancel(codes) });
        } else {
            self.waiters.push(Waiter::Cancel { out, request_id, items: codes, cancelled });
        }
    }

    /// Gives an agent that reconnected the leases of the tasks it still runs (see `pm.proto`, `Reclaim`). An
    /// item is granted when the task is still leased under the lease id the agent quotes (the lease moves to
    /// this connection and keeps its id), or when the task is ready or held and its attempt count is the
    /// attempt the agent runs (a fresh lease id, the task's lease length; not a new attempt, so nothing is
    /// written). Otherwise `STALE_LEASE` (someone else has it, it waits for a retry, or it is another
    /// attempt) or `NOT_FOUND` (finished or being finished). Ids this shard does not hold get no answer
    /// here.
    fn on_reclaim(
        &mut self,
        conn: ConnId,
        out: OutTx,
        request_id: u64,
        items: Vec<(usize, pb::ReclaimItem)>,
        holdings: Option<Arc<Holdings>>,
    ) {
        let now = Instant::now();
        let wall = now_unix_ms();
        let mut results = Vec::new();
        let mut unqueue: HashMap<u32, HashSet<u64>> = HashMap::new();
        for (idx, item) in items {
            let task_id = item.task_id;
            let Some(t) = self.tasks.get_mut(&task_id) else { continue };
            let (q, lease_len) = (t.queue, t.lease);
            let granted = match t.state {
                State::Leased(lease_id) if item.lease_id != 0 && lease_id == item.lease_id => {
                    // The lease outlived the connection (no restart, within --disconnect-grace): move it here.
                    let Some(lease) = self.leases.get_mut(&lease_id) else { continue };
                    if lease.conn != conn {
                        if let Some(old) = self.agents.get_mut(&lease.conn) {
                            old.remove_lease(lease_id);
                        }
                        lease.conn = conn;
                    }
                    lease.deadline = now + lease_len;
                    self.lease_heap.push(Reverse((lease.deadline, lease_id)));
                    Some(lease_id)
                }
                State::Ready | State::Held if t.attempts > 0 && t.attempts == item.attempt => {
                    if t.state == State::Held {
                        self.queues[q as usize].held = self.queues[q as usize].held.saturating_sub(1);
                    } else {
                        unqueue.entry(q).or_default().insert(task_id);
                    }
                    let lease_id = mint_lease(&mut self.next_lease, self.cfg.lease_prefix, self.shards, self.index);
                    t.state = State::Leased(lease_id);
                    let deadline = now + lease_len;
                    self.leases.insert(lease_id, Lease { task_id, conn, deadline });
                    self.lease_heap.push(Reverse((deadline, lease_id)));
                    self.queues[q as usize].leased += 1;
                    self.queues[q as usize].key_started(&t.key);
                    Some(lease_id)
                }
                State::Pending | State::Acking | State::Dead(_) => None,
                State::Ready | State::Held | State::Delayed | State::Leased(_) => {
                    metrics::counter!(m::RECLAIMED, "outcome" => "stale").increment(1);
                    results.push((
                        idx,
                        pb::ReclaimResult { task_id, code: ErrorCode::StaleLease as i32, ..Default::default() },
                    ));
                    continue;
                }
            };
            let result = match granted {
                Some(lease_id) => {
                    let agent = self.agents.entry(conn).or_default();
                    agent.out = Some(out.clone());
                    if agent.holdings.is_none() {
                        agent.holdings = holdings.clone();
                    }
                    agent.add_lease(lease_id);
                    metrics::counter!(m::RECLAIMED, "outcome" => "ok").increment(1);
                    let deadline_unix_ms = wall + lease_len.as_millis() as u64;
                    pb::ReclaimResult { task_id, code: ErrorCode::Ok as i32, lease_id, deadline_unix_ms }
                }
                None => {
                    metrics::counter!(m::RECLAIMED, "outcome" => "not_found").increment(1);
                    pb::ReclaimResult { task_id, code: ErrorCode::NotFound as i32, ..Default::default() }
                }
            };
            results.push((idx, result));
        }
        for (q, ids) in unqueue {
            self.queues[q as usize].retain_ready(|id| !ids.contains(&id));
        }
        let _ = out.send(Outbound::Part { request_id, part: Part::Reclaim(results) });
    }

    /// The reclaim grace is over: held tasks nobody reclaimed are delivered like any ready task.
    fn release_held(&mut self) {
        self.hold_until = None;
        for task_id in std::mem::take(&mut self.held) {
            let Some(t) = self.tasks.get_mut(&task_id) else { continue };
            if t.state != State::Held {
                continue; // reclaimed or cancelled meanwhile
            }
            t.state = State::Ready;
            t.ready_since = Instant::now();
            let q = &mut self.queues[t.queue as usize];
            q.held = q.held.saturating_sub(1);
            q.push_ready(t.class, t.entry(task_id));
            self.dirty.insert(t.queue);
        }
    }

    /// Ends a lease because its task was cancelled, and tells the agent holding it (if still connected).
    fn revoke(&mut self, lease_id: u64, task_id: u64, reason: &str) {
        let conn = self.leases.get(&lease_id).map(|l| l.conn);
        self.end_lease(lease_id);
        let Some(out) = conn.and_then(|c| self.agents.get(&c)).and_then(|a| a.out.as_ref()) else { return };
        let revoke = pb::Revoke { lease_id, task_id, reason: reason.into() };
        let _ = out.send(Outbound::Frame(revoke.into()));
    }

    fn on_disconnect(&mut self, conn: ConnId) {
        for q in &mut self.queues {
            q.remove_agent(conn);
        }
        // After every stolen task this shard gave the agent was reported delivered (same channel, in order):
        // the stealer then hands them back.
        if let Some(steal) = &self.cfg.steal {
            steal.send(StealMsg::Disconnected { conn });
        }
        let Some(agent) = self.agents.remove(&conn) else { return };
        let deadline = Instant::now() + self.cfg.disconnect_grace;
        for lease_id in agent.leases.into_iter().flat_map(|l| *l) {
            if let Some(lease) = self.leases.get_mut(&lease_id) {
                if lease.deadline > deadline {
                    lease.deadline = deadline;
                    self.lease_heap.push(Reverse((deadline, lease_id)));
                }
            }
        }
        if self.cfg.disconnect_grace.is_zero() {
            self.on_timers();
        }
    }

    /// Removes a live lease; returns its task.
    fn end_lease(&mut self, lease_id: u64) -> Option<u64> {
        let lease = self.leases.remove(&lease_id)?;
        if let Some(agent) = self.agents.get_mut(&lease.conn) {
            agent.remove_lease(lease_id);
        }
        if let Some(t) = self.tasks.get(&lease.task_id) {
            let q = &mut self.queues[t.queue as usize];
            q.leased = q.leased.saturating_sub(1);
            if q.key_ended(&t.key) {
                self.dirty.insert(t.queue);
            }
        }
        Some(lease.task_id)
    }

    /// A delivery failed: make the task ready again (after `after`) or dead-letter it (keeping `result`, what
    /// the failed attempt reported, and telling its watchers).
    fn retry_or_bury(&mut self, task_id: u64, after: Duration, reason: String, result: Bytes) {
        let result = self.bounded_result(result);
        let Some(t) = self.tasks.get(&task_id) else { return };
        if t.attempts >= t.max_attempts {
            let reason = format!("attempt {}/{}: {reason}", t.attempts, t.max_attempts);
            // Its onFailure follow-ups, in one unit with the dead-letter record.
            let children = self.write_follow_ups(task_id, TaskState::Dead);
            let Some(t) = self.tasks.get_mut(&task_id) else { return };
            t.state =
                State::Dead(Box::new(Dead { reason: reason.clone(), result, children: Vec::new(), written: false }));
            self.queues[t.queue as usize].dead.insert(task_id);
            self.records.push(Record::DeadLetter { task_id, reason });
            metrics::counter!(m::DEAD_LETTERED).increment(1);
            self.buried.push((task_id, children));
            return;
        }
        let Some(t) = self.tasks.get_mut(&task_id) else { return };
        let q = t.queue;
        if after.is_zero() {
            t.state = State::Ready;
            t.ready_since = Instant::now();
            self.queues[q as usize].push_ready(t.class, t.entry(task_id));
            self.dirty.insert(q);
        } else {
            let at = Instant::now() + after;
            t.state = State::Delayed;
            t.not_before = Some(at);
            self.queues[q as usize].delayed.push(Reverse((at, task_id)));
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let lease = self.lease_heap.peek().map(|Reverse((t, _))| *t);
        let delayed = self.queues.iter().filter_map(|q| q.delayed.peek().map(|Reverse((t, _))| *t)).min();
        let throttled = self.queues.iter().filter_map(|q| q.throttled_until).min();
        [lease, delayed, self.hold_until, throttled].into_iter().flatten().min()
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        if self.hold_until.is_some_and(|at| at <= now) {
            self.release_held();
        }
        while let Some(Reverse((deadline, lease_id))) = self.lease_heap.peek().copied() {
            if deadline > now {
                break;
            }
            self.lease_heap.pop();
            let current = self.leases.get(&lease_id).map(|l| l.deadline);
            if current != Some(deadline) {
                continue; // extended, acked or nacked since: a stale heap entry
            }
            if let Some(task_id) = self.end_lease(lease_id) {
                metrics::counter!(m::REDELIVERED).increment(1);
                self.retry_or_bury(task_id, Duration::ZERO, "lease expired".into(), Bytes::new());
            }
        }
        for qi in 0..self.queues.len() {
            let q = &mut self.queues[qi];
            if q.throttled_until.is_some_and(|at| at <= now) {
                q.throttled_until = None;
                self.dirty.insert(qi as u32);
            }
            while let Some(Reverse((at, task_id))) = q.delayed.peek().copied() {
                if at > now {
                    break;
                }
                q.delayed.pop();
                if let Some(t) = self.tasks.get_mut(&task_id) {
                    if t.state == State::Delayed && t.not_before == Some(at) {
                        t.state = State::Ready;
                        t.ready_since = Instant::now();
                        t.not_before = None;
                        q.push_ready(t.class, t.entry(task_id));
                        self.dirty.insert(qi as u32);
                    }
                }
            }
        }
    }

    fn dispatch_dirty(&mut self) {
        if self.draining {
            self.dirty.clear();
            return;
        }
        let dirty: Vec<u32> = self.dirty.drain().collect();
        for q in dirty {
            self.dispatch(q);
        }
    }

    /// Pushes ready tasks of queue `qi` to agents with credits.
    fn dispatch(&mut self, qi: u32) {
        let now = Instant::now();
        let wall = now_unix_ms();
        let budget = self.cfg.max_frame_bytes.saturating_sub(1024);
        let mut leased_now = 0u64;
        self.dispatch_queue(qi, now, wall, budget, &mut leased_now);
        metrics::counter!(m::LEASED).increment(leased_now);
    }

    fn dispatch_queue(&mut self, qi: u32, now: Instant, wall: u64, budget: usize, leased_now: &mut u64) {
        self.dispatch_foreign(qi, budget);
        loop {
            let q = &mut self.queues[qi as usize];
            if q.ready_len() == 0 || !q.has_credit() {
                return;
            }
            // The best task an agent with credit can run (its executors), and the agents' group.
            let Some((class, group)) = q.best() else { return };
            let Some(entry) = q.peek(class) else { return };
            let Some(task) = self.tasks.get_mut(&entry.task_id) else {
                q.pop(class);
                continue;
            };
            if task.state != State::Ready {
                q.pop(class);
                continue;
            }
            if q.key_at_limit(&task.key) {
                q.pop(class);
                q.park(&task.key, class, entry);
                continue;
            }
            if !q.take_token(now) {
                return; // rate limit: `throttled_until` wakes the queue
            }
            let Some(conn) = q.take_credit_from(group) else { return };
            let Some(agent) = self.agents.get_mut(&conn) else { continue };
            let Some(out) = agent.out.as_ref() else { continue };
            q.pop(class);
            q.key_started(&task.key);
            let lease_id = mint_lease(&mut self.next_lease, self.cfg.lease_prefix, self.shards, self.index);
            task.attempts += 1;
            task.state = State::Leased(lease_id);
            task.started_unix_ms = wall;
            self.hist.dispatch.record(now.saturating_duration_since(task.ready_since).as_secs_f64());
            let deadline = now + task.lease;
            // Not `add_lease`: `out` still borrows `agent.out`.
            agent.leases.get_or_insert_with(Default::default).insert(lease_id);
            self.leases.insert(lease_id, Lease { task_id: entry.task_id, conn, deadline });
            self.lease_heap.push(Reverse((deadline, lease_id)));
            q.leased += 1;
            self.records.push(Record::Attempt { task_id: entry.task_id, attempts: task.attempts });
            let leased = LeasedTask {
                task_id: entry.task_id,
                lease_id,
                attempt: task.attempts,
                deadline_unix_ms: wall + task.lease.as_millis() as u64,
                payload: task.payload.clone(),
                queue: q.name.clone(),
                key: task.key.clone(),
                max_attempts: task.max_attempts,
            };
            let out = out.clone();
            self.push_leased(conn, &out, leased, budget);
            *leased_now += 1;
        }
    }

    /// Gives tasks taken from peers to local agents (never to a peer), before any local ready task: their
    /// leases are already running at their owners.
    fn dispatch_foreign(&mut self, qi: u32, budget: usize) {
        if self.cfg.steal.is_none() {
            return;
        }
        // Each goes to a local agent that has the executors it needs; one no local agent can run now waits (and
        // goes back to its owner after FOREIGN_WAIT).
        let waiting = std::mem::take(&mut self.queues[qi as usize].foreign);
        let mut kept = std::collections::VecDeque::with_capacity(waiting.len());
        for (at, task) in waiting {
            let q = &mut self.queues[qi as usize];
            if !q.has_credit() {
                kept.push_back((at, task));
                continue;
            }
            let probe = TaskSpec { payload: task.payload.clone(), ..Default::default() };
            let needed = pm_protocol::pipeline::required_executors(&probe);
            let class = if needed.is_empty() { 0 } else { q.class_of(&executor_set(needed)) };
            let Some(conn) = q.take_local_credit_for(class) else {
                kept.push_back((at, task));
                continue;
            };
            let Some(out) = self.agents.get(&conn).and_then(|a| a.out.clone()) else {
                kept.push_back((at, task));
                continue;
            };
            let holdings = self.agents.get(&conn).and_then(|a| a.holdings.clone());
            self.delivered_foreign.push((task.lease_id, conn, out.clone(), holdings));
            self.push_leased(conn, &out, task, budget);
        }
        self.queues[qi as usize].foreign = kept;
    }

    /// Queues `leased` for `conn`'s next Leased frame (sending the frame first if it would grow past `budget`).
    fn push_leased(&mut self, conn: ConnId, out: &OutTx, leased: LeasedTask, budget: usize) {
        let size = leased.encoded_len() + 8;
        let slot = self.outgoing.entry(conn).or_insert_with(|| (out.clone(), Vec::new(), 0));
        if slot.2 + size > budget && !slot.1.is_empty() {
            let tasks = std::mem::take(&mut slot.1);
            let _ = slot.0.send(Outbound::Frame(pb::Leased { tasks }.into()));
            slot.2 = 0;
        }
        slot.1.push(leased);
        slot.2 += size;
    }

    /// Gives back to their owners the tasks taken from peers that waited here too long for an agent.
    fn release_foreign(&mut self) {
        let Some(steal) = self.cfg.steal.as_ref() else { return };
        let now = Instant::now();
        let mut lease_ids = Vec::new();
        for q in &mut self.queues {
            while q.foreign.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) >= FOREIGN_WAIT) {
                if let Some((_, t)) = q.foreign.pop_front() {
                    lease_ids.push(t.lease_id);
                }
            }
        }
        if !lease_ids.is_empty() {
            steal.send(StealMsg::Release { lease_ids });
        }
    }

    /// Ends a round: sends Leased batches, hands the round's records to the committer.
    fn flush(&mut self) {
        let budget = &self.cfg.results_budget;
        budget.publish(self.index, self.results.len(), self.results_bytes);
        self.others_kept = budget.others(self.index);
        self.trim_results();
        for (_, (out, tasks, _)) in self.outgoing.drain() {
            if !tasks.is_empty() {
                let _ = out.send(Outbound::Frame(pb::Leased { tasks }.into()));
            }
        }
        if let Some(steal) = &self.cfg.steal {
            for (lease_id, conn, out, holdings) in self.delivered_foreign.drain(..) {
                steal.send(StealMsg::Delivered { lease_id, conn, out, holdings });
            }
        }
        if !self.buried.is_empty() {
            self.waiters.push(Waiter::Buried { buried: std::mem::take(&mut self.buried) });
        }
        if !self.adopting.is_empty() {
            self.waiters.push(Waiter::Adopt { children: std::mem::take(&mut self.adopting) });
        }
        if self.records.is_empty() && self.waiters.is_empty() {
            return;
        }
        self.round += 1;
        let round = self.round;
        let records = std::mem::take(&mut self.records);
        let mut waiters = std::mem::take(&mut self.waiters);
        // Ack replies need nothing more from this shard: the commit thread sends them the moment the round is
        // durable, one hop sooner than through this shard (the shard's own part follows on `Durable`).
        let replies: Vec<LeaseReply> = waiters
            .iter_mut()
            .filter_map(|w| match w {
                Waiter::Ack { reply, .. } => reply.take(),
                _ => None,
            })
            .collect();
        let tx = self.self_tx.clone();
        let done: crate::store::committer::Done = Box::new(move |res: Result<(), StoreError>| {
            let result = res.map_err(|e| (store_error_code(&e), e.to_string()));
            // `Durable` first: anything the agent sends after reading its reply queues behind it at the shard.
            let _ = tx.send(ShardMsg::Durable { round, result: result.clone() });
            for reply in replies {
                send_lease_reply(reply, &result);
            }
        });
        if waiters.is_empty() {
            // Only attempt counts and dead-letter moves: nobody waits, so no sync of their own (see
            // `CommitterHandle::submit_lazy`; a crash can at worst undercount one attempt).
            self.committer.submit_lazy(records, done);
            return;
        }
        let new_tasks = waiters.iter().any(|w| matches!(w, Waiter::Submit { new_tasks, .. } if !new_tasks.is_empty()));
        self.pending_rounds.insert(round, waiters);
        if new_tasks && !self.cfg.lease_after_sync {
            // Lease the new tasks while their sync runs (see `on_appended`).
            let tx = self.self_tx.clone();
            let appended = Box::new(move || {
                let _ = tx.send(ShardMsg::Appended { round });
            });
            self.committer.submit_with_appended(records, appended, done);
        } else {
            self.committer.submit(records, done);
        }
    }

    /// A round's records are written and being synced: its new tasks become ready now, so an agent can start
    /// on them while the sync runs. Their producers still get their `SubmitAck` only once the round is
    /// durable (`on_durable`). Safe for at-least-once: an agent may see a task whose submit is then refused
    /// (the sync failed, or the machine died before it ended); the producer was never told it was stored and
    /// submits it again, so the worst case is one more run, never a lost task. A lease of such a task can
    /// only be acked in a later round, whose sync comes after this one's.
    fn on_appended(&mut self, round: u64) {
        let Some(waiters) = self.pending_rounds.get(&round) else { return };
        let now = Instant::now();
        let ids: Vec<u64> = waiters
            .iter()
            .filter_map(|w| match w {
                Waiter::Submit { new_tasks, .. } => Some(new_tasks.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect();
        for task_id in ids {
            self.make_ready(task_id, now);
        }
    }

    /// Takes back tasks whose submit failed to become durable after they were made ready early (see
    /// `on_appended`): out of their queues (one pass per queue, as a failed round may hold thousands), their
    /// leases (if any) revoked. The caller forgets them.
    fn withdraw(&mut self, task_ids: &[u64]) {
        let mut unqueue: HashMap<u32, HashSet<u64>> = HashMap::new();
        for &task_id in task_ids {
            let Some(t) = self.tasks.get(&task_id) else { continue };
            let q = t.queue;
            match &t.state {
                State::Ready | State::Delayed => {
                    unqueue.entry(q).or_default().insert(task_id);
                }
                State::Leased(lease_id) => {
                    let lease_id = *lease_id;
                    if self.leases.get(&lease_id).is_some_and(|l| l.task_id == task_id) {
                        self.revoke(lease_id, task_id, "its submit could not be stored");
                    }
                }
                State::Dead(_) => {
                    self.queues[q as usize].dead.remove(&task_id);
                }
                State::Pending | State::Held | State::Acking => {}
            }
        }
        for (q, ids) in unqueue {
            let queue = &mut self.queues[q as usize];
            queue.retain_ready(|id| !ids.contains(&id));
            queue.delayed.retain(|Reverse((_, id))| !ids.contains(id));
        }
    }

    fn on_durable(&mut self, round: u64, result: Result<(), (ErrorCode, String)>) {
        if let Err((_, msg)) = &result {
            tracing::warn!(shard = self.index, round, "store write failed: {msg}");
        }
        let Some(waiters) = self.pending_rounds.remove(&round) else { return };
        let now = Instant::now();
        self.complete_round(waiters, &result, now);
        if self.pending_rounds.is_empty() && self.waiters.is_empty() {
            self.failed_ids.clear();
        }
    }

    fn complete_round(&mut self, waiters: Vec<Waiter>, result: &Result<(), (ErrorCode, String)>, now: Instant) {
        for w in waiters {
            match w {
                Waiter::Submit { out, request_id, mut results, new_tasks, received } => {
                    match result {
                        Ok(()) => {
                            for task_id in new_tasks {
                                self.make_ready(task_id, now);
                            }
                            for (_, r) in results.iter_mut() {
                                if r.duplicate && self.failed_ids.contains(&r.task_id) {
                                    let msg = "the first submit with this idempotency key was not stored; submit again";
                                    *r = err_result(ErrorCode::StoreFailed, msg);
                                }
                            }
                            metrics::counter!(m::SUBMITTED).increment(results.len() as u64);
                        }
                        Err((code, msg)) => {
                            let failed: HashSet<u64> = new_tasks.iter().copied().collect();
                            self.failed_ids.extend(failed.iter().copied());
                            self.withdraw(&new_tasks);
                            for task_id in new_tasks {
                                self.watchers.remove(&task_id);
                                if let Some(t) = self.tasks.remove(&task_id) {
                                    if let Some(k) = t.idem {
                                        self.idem.remove(&k);
                                    }
                                }
                            }
                            for (_, r) in results.iter_mut() {
                                if failed.contains(&r.task_id) || r.duplicate {
                                    *r = err_result(*code, msg);
                                }
                            }
                        }
                    }
                    let _ = out.send(Outbound::Part { request_id, part: Part::Submit(results) });
                    self.hist.submit.record(now.saturating_duration_since(received).as_secs_f64());
                }
                Waiter::Ack { reply, n, acked } => {
                    let now_ms = now_unix_ms();
                    for (task_id, outcome) in acked {
                        if let Some(t) = self.tasks.remove(&task_id) {
                            if result.is_ok() && t.submitted_unix_ms > 0 {
                                let secs = now_ms.saturating_sub(t.submitted_unix_ms) as f64 / 1000.0;
                                self.hist.end_to_end.record(secs);
                            }
                        }
                        if result.is_ok() {
                            self.finished(task_id, outcome);
                        } else {
                            // Not finished after all (still live on disk): a watcher asks again later.
                            self.watchers.remove(&task_id);
                        }
                    }
                    if result.is_ok() {
                        metrics::counter!(m::ACKED).increment(n as u64);
                    }
                    if let Some(reply) = reply {
                        send_lease_reply(reply, result);
                    }
                }
                Waiter::Cancel { out, request_id, mut items, cancelled } => {
                    match result {
                        Ok(()) => {
                            metrics::counter!(m::CANCELLED).increment(cancelled.len() as u64);
                            for (task_id, outcome) in cancelled {
                                self.tasks.remove(&task_id);
                                self.finished(task_id, outcome);
                            }
                        }
                        Err((code, _)) => {
                            // The tombstone is not confirmed (with a full disk it was not written at all): the
                            // task is still live on disk, so it stays live here too (ready again; a revoked
                            // lease is not given back).
                            for (task_id, _) in cancelled {
                                self.unfinish(task_id);
                            }
                            for (_, c) in items.iter_mut() {
                                if *c == ErrorCode::Ok {
                                    *c = *code;
                                }
                            }
                        }
                    }
                    let _ = out.send(Outbound::Part { request_id, part: Part::Cancel(items) });
                }
                Waiter::Buried { buried } => {
                    for (task_id, children) in buried {
                        self.buried_durable(task_id, children, result.is_ok());
                    }
                }
                Waiter::Adopt { children } => {
                    if result.is_ok() {
                        self.hand_out(children);
                    }
                }
                Waiter::Failed { failed } => {
                    for (task_id, outcome) in failed {
                        if result.is_ok() {
                            self.tasks.remove(&task_id);
                            self.finished(task_id, outcome);
                        } else {
                            // Not confirmed durable: the task is still live on disk, so it is here too.
                            self.unfinish(task_id);
                        }
                    }
                }
            }
        }
    }

    /// The round that dead-lettered `task_id` ended: once durable its follow-ups are shown and its watchers
    /// told; if it failed the task is still live on disk, so it is ready again (its attempts stay counted).
    fn buried_durable(&mut self, task_id: u64, children: Vec<u64>, ok: bool) {
        let Some(t) = self.tasks.get_mut(&task_id) else { return };
        let State::Dead(d) = &mut t.state else { return };
        if d.written {
            return;
        }
        if ok {
            d.written = true;
            d.children = children;
            self.notify_dead(task_id);
            return;
        }
        let q = t.queue as usize;
        t.state = State::Ready;
        t.ready_since = Instant::now();
        self.queues[q].dead.remove(&task_id);
        self.queues[q].push_ready(t.class, t.entry(task_id));
        self.dirty.insert(t.queue);
    }

    /// A cancellation that failed to persist: the task is ready again.
    fn unfinish(&mut self, task_id: u64) {
        let Some(t) = self.tasks.get_mut(&task_id) else { return };
        if t.state != State::Acking {
            return;
        }
        t.state = State::Ready;
        t.ready_since = Instant::now();
        self.queues[t.queue as usize].push_ready(t.class, t.entry(task_id));
        self.dirty.insert(t.queue);
    }

    fn make_ready(&mut self, task_id: u64, now: Instant) {
        let Some(t) = self.tasks.get_mut(&task_id) else { return };
        if t.state != State::Pending {
            return;
        }
        let q = &mut self.queues[t.queue as usize];
        match t.not_before {
            Some(at) if at > now => {
                t.state = State::Delayed;
                q.delayed.push(Reverse((at, task_id)));
            }
            _ => {
                t.state = State::Ready;
                t.ready_since = Instant::now();
                t.not_before = None;
                q.push_ready(t.class, t.entry(task_id));
                self.dirty.insert(t.queue);
            }
        }
    }

    fn queue_stats(&self, q: &Queue) -> QueueStats {
        QueueStats {
            queue: q.name.clone(),
            ready: q.ready_len() as u64,
            // Held tasks are not deliverable yet, like delayed ones.
            delayed: q.delayed.len() as u64 + q.held,
            leased: q.leased,
            dead: q.dead.len() as u64,
            credits: q.total_credits(),
            agents: q.agents_with_credit(),
            waiting_executor: q.waiting_for_executor(),
        }
    }

    fn dead_list(&self, queue: &str, limit: usize) -> Vec<DeadLetter> {
        let mut out = Vec::new();
        for q in self.queues.iter().filter(|q| queue.is_empty() || q.name == queue) {
            for task_id in q.dead.iter().take(limit.saturating_sub(out.len())) {
                if let Some(t) = self.tasks.get(task_id) {
                    let reason = match &t.state {
                        State::Dead(d) => d.reason.clone(),
                        _ => String::new(),
                    };
                    out.push(DeadLetter {
                        task_id: *task_id,
                        queue: q.name.clone(),
                        attempts: t.attempts,
                        reason,
                        payload: t.payload.clone(),
                    });
                }
            }
        }
        out
    }

    fn redrive(&mut self, queue: &str, task_ids: &[u64]) -> u64 {
        let wanted: HashSet<u64> = task_ids.iter().copied().collect();
        let mut n = 0;
        for qi in 0..self.queues.len() {
            if !queue.is_empty() && self.queues[qi].name != queue {
                continue;
            }
            let ids: Vec<u64> =
                self.queues[qi].dead.iter().copied().filter(|id| wanted.is_empty() || wanted.contains(id)).collect();
            for task_id in ids {
                self.queues[qi].dead.remove(&task_id);
                if let Some(t) = self.tasks.get_mut(&task_id) {
                    t.attempts = 0;
                    t.state = State::Ready;
                    t.ready_since = Instant::now();
                    self.queues[qi].push_ready(t.class, t.entry(task_id));
                    self.records.push(Record::Redrive { task_id });
                    n += 1;
                }
            }
            self.dirty.insert(qi as u32);
        }
        n
    }

    fn expire_idempotency(&mut self) {
        let now_ms = now_unix_ms();
        while let Some((exp, _)) = self.idem_expiry.front() {
            if *exp > now_ms {
                break;
            }
            if let Some((exp, key)) = self.idem_expiry.pop_front() {
                if self.idem.get(&key).is_some_and(|(_, e)| *e == exp) {
                    self.idem.remove(&key);
                }
            }
        }
    }

    fn update_gauges(&self) {
        for q in &self.queues {
            let name = q.name.clone();
            metrics::gauge!(m::QUEUE_DEPTH, "queue" => name.clone()).set(q.ready_len() as f64);
            metrics::gauge!(m::WAITING_EXECUTOR, "queue" => name.clone()).set(q.waiting_for_executor() as f64);
            metrics::gauge!(m::QUEUE_DELAYED, "queue" => name.clone()).set((q.delayed.len() as u64 + q.held) as f64);
            metrics::gauge!(m::LEASES_IN_FLIGHT, "queue" => name.clone()).set(q.leased as f64);
            metrics::gauge!(m::DEAD_LETTERS, "queue" => name).set(q.dead.len() as f64);
        }
    }
}

/// Longest failure reason kept (an agent's reason beyond it is cut): the outcome and dead-letter records stay
/// small and always fit a record.
pub const MAX_REASON_BYTES: usize = 2048;

/// `reason` cut to [`MAX_REASON_BYTES`] on a character boundary.
fn cap_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

/// The queue part of an idempotency key (`queue\0key`).
fn idem_queue(key: &str) -> &str {
    key.split('\0').next().unwrap_or(key)
}

fn err_result(code: ErrorCode, msg: &str) -> SubmitResult {
    SubmitResult { task_id: 0, code: code as i32, message: msg.to_string(), duplicate: false }
}

/// Maps a store failure to the wire code producers see.
pub fn store_error_code(e: &StoreError) -> ErrorCode {
    match e {
        StoreError::NoSpace { .. } => ErrorCode::StoreFull,
        StoreError::RecordTooLarge { .. } => ErrorCode::InvalidTask,
        _ => ErrorCode::StoreFailed,
    }
}
