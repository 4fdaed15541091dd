//! Shard actors: the single owners of queue and lease state.
//!
//! **Invariant: a shard's queues, tasks and leases are touched only by that shard's task.** Connections
//! send [`ShardMsg`]s over an unbounded channel (bounded in practice by credits and per-connection in-flight
//! limits); the shard handles everything that arrived, then *ends a round*: every WAL record produced by
//! that round goes to the committer as one job, and the replies that must wait for durability (submit acks,
//! ack replies) are released together when the committer reports the job durable. So there is no lock on the
//! hot path, and group commit spans all connections. New tasks do not wait for that sync: they become ready
//! as soon as the committer has written them (`ShardMsg::Appended`), and only their `SubmitAck` waits.
//!
//! Queues are placed on shards by a hash of the queue name, so one queue's order is decided in one place,
//! and a lease id carries its shard (`lease_id % shards`), so acks go straight to the owner.
//!
//! The files, in the order a task meets them:
//! - `msg.rs`: the mailbox ([`ShardMsg`], [`ShardHandle`], [`shard_of_queue`]).
//! - `mod.rs` (this file): the actor loop, `Shard::handle`, and the `on_*` methods that orchestrate the
//!   parts below for each message; `agents.rs`: credits, heartbeats, disconnects and reclaims; `config.rs`.
//! - `task.rs`: a task and its states; `queue.rs`: one queue's ready heaps, credits and limits.
//! - `idempotency.rs`: idempotency keys (`Idempotency`).
//! - `round.rs`: group-commit rounds and the replies waiting for them (`Rounds`).
//! - `durable.rs`: what the end of a round does (`on_appended`, `on_durable`).
//! - `dispatch.rs`: ready tasks matched to credits, and the `Leased` frames.
//! - `outcome.rs`: what ends or repeats a delivery (ack, nack, cancel, retry or dead letter).
//! - `lease.rs`: the lease table and its state machine (`LeaseTable`).
//! - `results.rs`: kept outcomes and the node's budget for them; `status.rs`: what a producer can ask;
//!   `chain.rs`: follow-up tasks; `admin.rs`: stats and dead letters; `recover.rs`: a shard built from what
//!   the store recovered.

mod admin;
mod agents;
mod chain;
mod config;
mod control;
mod dispatch;
mod durable;
mod idempotency;
mod inflate;
mod lease;
mod list_query;
mod listing;
mod msg;
mod ordered_ids;
mod outcome;
mod payload;
mod queue;
mod rates;
mod ready_entry;
mod recover;
mod restoring;
mod results;
mod round;
mod small;
mod status;
mod task;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_operator;

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pm_protocol::pb::{self, StoredTask, SubmitResult, TaskSpec};
use pm_protocol::{ErrorCode, Message as _};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use self::dispatch::{dispatch_queue, release_foreign, Dispatch, Outgoing};
use self::idempotency::Idempotency;
use self::lease::LeaseTable;
use self::results::KeptResults;
use self::round::{Rounds, Waiter};
use self::task::{State, Task};
use crate::idmap::{IdMap, IdSet};
use crate::metrics as m;
use crate::outbox::{OutTx, Outbound, Part};
use crate::store::committer::CommitterHandle;
use crate::store::{IdemKey, Record, RecoveredIdem, RecoveredResult, RecoveredTask};

pub use self::config::ShardConfig;
pub use self::lease::{shard_of_lease, LEASE_NODE_SHIFT};
pub use self::list_query::{ListQuery, DEFAULT_LIMIT, MAX_LIMIT};
pub use self::msg::{shard_of_queue, ShardHandle, ShardMsg};
pub use self::queue::{executor_set, Executors, Queue, QueueLimits};
pub use self::ready_entry::ReadyEntry;
pub use self::results::ResultsBudget;
pub use self::round::store_error_code;
pub use self::task::{format_unix_ms, now_unix_ms, MAX_REASON_BYTES};

/// The shard's latency histograms, looked up once (a lookup per task would cost on the hot path).
struct Histograms {
    submit: metrics::Histogram,
    queue_wait: metrics::Histogram,
    run: metrics::Histogram,
    end_to_end: metrics::Histogram,
}

/// A shard being rebuilt from what the store recovered, before it starts (see [`Shard::builder`]).
pub struct ShardBuilder {
    shard: Shard,
    tx: mpsc::UnboundedSender<ShardMsg>,
    rx: mpsc::UnboundedReceiver<ShardMsg>,
    restoring: restoring::Restoring,
}

impl ShardBuilder {
    /// Takes a batch of the shard's recovered tasks, in id order after the batches before.
    pub fn add_tasks(&mut self, tasks: Vec<RecoveredTask>) {
        self.shard.restore_tasks(tasks, &mut self.restoring);
    }

    /// Takes the keys and kept outcomes, and starts the shard.
    pub fn start(self, idem: Vec<RecoveredIdem>, results: Vec<RecoveredResult>) -> ShardHandle {
        let ShardBuilder { mut shard, tx, rx, restoring } = self;
        shard.finish_restore(restoring, idem, results);
        tokio::spawn(shard.run(rx));
        ShardHandle::new(tx)
    }
}

/// The shard actor.
pub struct Shard {
    hist: Histograms,
    index: usize,
    shards: usize,
    cfg: ShardConfig,
    next_task_id: Arc<AtomicU64>,
    queues: Vec<Queue>,
    queue_ids: HashMap<String, u32>,
    /// Queues that may lease more now: dispatched at the end of the round.
    dirty: IdSet<u32>,
    /// Boxed: a map's buckets hold its values, and its buckets grow by doubling, so 2 M tasks of 184 B sat in
    /// 4 M buckets of 192 B (~400 B a task); boxed, a bucket is 16 B (docs/notes/backlog.md).
    tasks: IdMap<u64, Box<Task>>,
    /// The origin of the small tasks' times (`small.rs`).
    epoch: Instant,
    /// The payloads kept in memory, and the way to the others.
    payloads: payload::Payloads,
    leases: LeaseTable,
    rounds: Rounds,
    idem: Idempotency,
    results: KeptResults,
    /// Connections to send a `Completed` when a task finishes.
    watchers: IdMap<u64, Vec<OutTx>>,
    /// Leased frames and stolen deliveries of the round.
    outgoing: Outgoing,
    draining: bool,
    /// Recovered tasks in [`State::Held`], released to their queues at `hold_until`.
    held: Vec<u64>,
    /// End of the reclaim grace (`None` once released, or when nothing is held).
    hold_until: Option<Instant>,
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
        let mut b = Shard::builder(index, shards, cfg, committer, next_task_id);
        b.add_tasks(tasks);
        b.start(idem, results)
    }

    /// Shard `index` of `shards`, not started: its recovered tasks are added a batch at a time
    /// ([`ShardBuilder::add_tasks`]), then it starts ([`ShardBuilder::start`]).
    pub fn builder(
        index: usize,
        shards: usize,
        cfg: ShardConfig,
        committer: CommitterHandle,
        next_task_id: Arc<AtomicU64>,
    ) -> ShardBuilder {
        let (tx, rx) = mpsc::unbounded_channel();
        let shard = Shard {
            hist: Histograms {
                submit: metrics::histogram!(m::SUBMIT_SECONDS),
                queue_wait: metrics::histogram!(m::QUEUE_WAIT_SECONDS),
                run: metrics::histogram!(m::RUN_SECONDS),
                end_to_end: metrics::histogram!(m::END_TO_END_SECONDS),
            },
            index,
            shards,
            leases: LeaseTable::new(cfg.lease_prefix, shards, index),
            payloads: payload::Payloads::new(cfg.bodies.clone(), cfg.resident_payload_bytes),
            rounds: Rounds::new(committer, tx.clone(), cfg.lease_after_sync),
            cfg,
            next_task_id,
            queues: Vec::new(),
            queue_ids: HashMap::new(),
            dirty: IdSet::default(),
            tasks: IdMap::default(),
            epoch: Instant::now(),
            idem: Idempotency::default(),
            results: KeptResults::default(),
            watchers: IdMap::default(),
            outgoing: Outgoing::default(),
            draining: false,
            held: Vec::new(),
            hold_until: None,
        };
        ShardBuilder { shard, tx, rx, restoring: restoring::Restoring::new() }
    }

    /// The actor loop: handle every message already queued, or the timers that are due, then end the round.
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
                    let now_ms = now_unix_ms();
                    self.idem.expire(now_ms);
                    self.expire_results(now_ms);
                    if let Some(steal) = &self.cfg.steal {
                        release_foreign(&mut self.queues, steal, Instant::now());
                    }
                    self.update_gauges();
                    for q in &mut self.queues {
                        q.rates.tick();
                    }
                }
            }
            self.dispatch_dirty();
            self.end_round();
        }
    }

    /// One message: each kind to its `on_*` method (or answered here when it only reads).
    fn handle(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Submit { out, request_id, items, notify } => self.on_submit(out, request_id, items, notify),
            ShardMsg::Credit { conn, out, queue, n, set, peer, executors, holdings } => {
                self.on_credit(conn, out, &queue, n, set, peer, executors, holdings)
            }
            ShardMsg::Hungry { reply } => {
                let hungry = self
                    .queues
                    .iter()
                    .filter(|q| q.ready_len() == 0 && !q.paused)
                    .map(|q| (q.name.clone(), q.local_credits().saturating_sub(q.foreign.len() as u64)))
                    .filter(|(_, n)| *n > 0)
                    .collect();
                let _ = reply.send(hungry);
            }
            ShardMsg::Foreign { task } => {
                let q = self.queue_id(&task.queue);
                self.queues[q as usize].stolen += 1;
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
                let stats = (0..self.queues.len())
                    .map(|i| pb::QueueStats {
                        oldest_ready_age_ms: self.oldest_ready_age_ms(i),
                        ..self.queues[i].stats()
                    })
                    .collect();
                let _ = out.send(Outbound::Part { request_id, part: Part::Stats(stats) });
            }
            ShardMsg::DeadList { out, request_id, queue, limit, after } => {
                let list = self.dead_list(&queue, limit, after);
                let _ = out.send(Outbound::Part { request_id, part: Part::DeadList(list) });
            }
            ShardMsg::DeadDelete { out, request_id, queue, task_ids, all } => {
                self.delete_dead(out, request_id, &queue, &task_ids, all)
            }
            ShardMsg::QueueControl { out, request_id, queue, action } => {
                self.on_queue_control(out, request_id, &queue, action)
            }
            ShardMsg::TaskList { out, request_id, query } => {
                let page = self.list_tasks(&query);
                let _ = out.send(Outbound::Part { request_id, part: Part::TaskList(page) });
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

    /// `Submit`: each new task gets an id and an `Enqueue` record in this round; the `SubmitAck` waits for the
    /// round to be durable (`durable.rs`). A live idempotency key answers with its first task instead.
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
                spec.queue = pm_task::pipeline::queue_or_default("").to_string();
            }
            let idem_key =
                (!spec.idempotency_key.is_empty()).then(|| Idempotency::key_of(&spec.queue, &spec.idempotency_key));
            if let Some(task_id) = idem_key.as_ref().and_then(|k| self.idem.get(k, now_ms)) {
                results.push((idx, SubmitResult { task_id, duplicate: true, ..Default::default() }));
                if notify {
                    self.watch(task_id, &out);
                }
                continue;
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
            let needed = pm_task::pipeline::required_executors(&spec);
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
            let mut task = self.new_task(q, &spec, idem_key);
            task.submitted_unix_ms = now_ms;
            if spec.delay_ms > 0 {
                task.not_before = Some(Instant::now() + Duration::from_millis(spec.delay_ms));
            }
            let body = StoredTask { spec: Some(spec), submitted_unix_ms: now_ms, not_before_unix_ms }.encode_to_vec();
            self.rounds.record(Record::Enqueue { task_id, body: Bytes::from(body), idempotency: idempotency.clone() });
            if let Some(i) = idempotency {
                self.idem.insert(i.key, task_id, i.expires_unix_ms);
            }
            self.add_task(task_id, task);
            if notify {
                self.watchers.entry(task_id).or_default().push(out.clone());
            }
            new_tasks.push(task_id);
            results.push((idx, SubmitResult { task_id, ..Default::default() }));
        }
        // Even a request of duplicates waits for this round: its originals may still be in flight.
        self.rounds.wait(Waiter::Submit { out, request_id, results, new_tasks, received });
    }

    /// The soonest timer: a lease deadline, a delayed task, the end of the reclaim grace, a rate limit.
    fn next_deadline(&self) -> Option<Instant> {
        let lease = self.leases.next_deadline();
        let delayed = self.queues.iter().filter_map(|q| q.delayed.peek().map(|Reverse((t, _))| *t)).min();
        let throttled = self.queues.iter().filter_map(|q| q.throttled_until).min();
        [lease, delayed, self.hold_until, throttled].into_iter().flatten().min()
    }

    /// Timers that are due: the reclaim grace, expired leases (redelivered), delayed tasks, rate limits.
    fn on_timers(&mut self) {
        let now = Instant::now();
        if self.hold_until.is_some_and(|at| at <= now) {
            self.release_held();
        }
        while let Some(lease_id) = self.leases.next_expired(now) {
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

    /// Leases what the dirty queues can (see `dispatch.rs`).
    fn dispatch_dirty(&mut self) {
        if self.draining {
            self.dirty.clear();
            return;
        }
        let defaults = self.defaults();
        let mut d = Dispatch {
            tasks: &mut self.tasks,
            defaults,
            epoch: self.epoch,
            leases: &mut self.leases,
            rounds: &mut self.rounds,
            outgoing: &mut self.outgoing,
            dispatch_seconds: &self.hist.queue_wait,
            stealing: self.cfg.steal.is_some(),
            budget: self.cfg.max_frame_bytes.saturating_sub(1024),
            payloads: &self.payloads,
            unreadable: Vec::new(),
        };
        for qi in self.dirty.drain() {
            let leased = dispatch_queue(qi, &mut self.queues[qi as usize], &mut d, Instant::now(), now_unix_ms());
            metrics::counter!(m::LEASED).increment(leased);
        }
        // A task whose payload the store could not give back is dead-lettered, with why: kept, not lost.
        for (task_id, why) in std::mem::take(&mut d.unreadable) {
            tracing::error!(task_id, "payload not readable from the store, dead-lettered: {why}");
            self.bury(task_id, format!("its payload could not be read from the store: {why}"), Bytes::new());
        }
    }

    /// Ends a round: publishes the kept-results totals, sends Leased batches, hands the round's records to the
    /// committer.
    fn end_round(&mut self) {
        self.results.publish(&self.cfg.results_budget, self.index);
        self.outgoing.send(self.cfg.steal.as_ref());
        self.rounds.flush();
    }

    /// The id of queue `name`, made on first use (with its `--queue-limit`).
    fn queue_id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.queue_ids.get(name) {
            return *id;
        }
        let id = self.queues.len() as u32;
        let mut queue = Queue::new(name.to_string());
        if let Some(limits) = self.cfg.queue_limits.get(name) {
            queue.set_limits(*limits);
        }
        queue.paused = self.cfg.paused.contains(name);
        self.queues.push(queue);
        self.queue_ids.insert(name.to_string(), id);
        id
    }

    /// A new task of queue `queue` from `spec` (state `Pending`; the caller places it).
    fn new_task(&mut self, queue: u32, spec: &TaskSpec, idem: Option<String>) -> Task {
        let needed = pm_task::pipeline::required_executors(spec);
        let class = if needed.is_empty() { 0 } else { self.queues[queue as usize].class_of(&executor_set(needed)) };
        Task::new(queue, class, spec, idem, self.cfg.default_lease, self.cfg.default_max_attempts)
    }
}

fn err_result(code: ErrorCode, msg: &str) -> SubmitResult {
    SubmitResult { task_id: 0, code: code as i32, message: msg.to_string(), duplicate: false }
}
