//! An agent's side of a shard: the credits it gives, its heartbeats, and what happens to its leases when its
//! connection closes and when it comes back.
//!
//! - `Credit`: credits are bounded node-wide per connection (`--max-leases-per-conn`, [`Holdings`]).
//! - `Extend`: a heartbeat moves a lease's deadline; nothing is written (leases live in memory).
//! - A closed connection keeps its leases for `--disconnect-grace`; an agent that reconnects within it
//!   `Reclaim`s them, keeping their ids. After a node restart the tasks that had been delivered are *held*
//!   for `--reclaim-grace-ms`, so their agents can reclaim them before anyone else is given them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pm_protocol::{pb, ErrorCode};
use tokio::time::Instant;

use super::lease::extend_to;
use super::queue::Executors;
use super::task::State;
use super::{now_unix_ms, Shard};
use crate::holdings::Holdings;
use crate::metrics as m;
use crate::outbox::{ConnId, OutTx, Outbound, Part};
use crate::stolen::StealMsg;

impl Shard {
    /// `Credit`: the agent's credits on the queue grow (or are set), bounded by what the connection may hold.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_credit(
        &mut self,
        conn: ConnId,
        out: OutTx,
        queue: &str,
        n: u32,
        set: bool,
        peer: bool,
        executors: Option<Executors>,
        holdings: Option<Arc<Holdings>>,
    ) {
        let q = self.queue_id(queue);
        let agent = self.leases.connect(conn, out, holdings);
        let queue = &mut self.queues[q as usize];
        // The credits this queue gives back (set) are free before the new ones are counted.
        let n = match &agent.holdings {
            Some(h) => {
                if set {
                    h.release(queue.credits_of(conn));
                }
                h.reserve(n)
            }
            None => n,
        };
        if set {
            queue.set_credit(conn, n, peer, executors);
        } else {
            queue.add_credit(conn, n, peer, executors);
        }
        self.dirty.insert(q);
    }

    /// `Extend`: each live lease gets a new deadline (nothing is written: leases live in memory).
    pub(super) fn on_extend(&mut self, out: OutTx, request_id: u64, items: Vec<(usize, u64)>, extend_ms: u32) {
        let now = Instant::now();
        let mut codes = Vec::with_capacity(items.len());
        for (idx, lease_id) in items {
            let tasks = &self.tasks;
            let default = self.cfg.default_lease;
            let lease_of = |task_id| tasks.get(&task_id).map_or(default, |t| t.lease);
            match self.leases.extend(lease_id, |task_id| extend_to(now, extend_ms, lease_of(task_id))) {
                Some(_) => codes.push((idx, ErrorCode::Ok)),
                None => {
                    metrics::counter!(m::STALE_LEASES, "op" => "extend").increment(1);
                    codes.push((idx, ErrorCode::StaleLease));
                }
            }
        }
        let _ = out.send(Outbound::Part { request_id, part: Part::Lease(codes) });
    }

    /// Gives an agent that reconnected the leases of the tasks it still runs (see `pm.proto`, `Reclaim`). An
    /// item is granted when the task is still leased under the lease id the agent quotes (the lease moves to
    /// this connection and keeps its id), or when the task is ready or held and its attempt count is the
    /// attempt the agent runs (a fresh lease id, the task's lease length; not a new attempt, so nothing is
    /// written). Otherwise `STALE_LEASE` (someone else has it, it waits for a retry, or it is another
    /// attempt) or `NOT_FOUND` (finished or being finished). Ids this shard does not hold get no answer
    /// here.
    pub(super) fn on_reclaim(
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
            self.inflate(task_id);
            let Some(t) = self.tasks.get_mut(&task_id) else { continue };
            let (q, lease_len) = (t.queue, t.lease);
            let granted = match t.state {
                State::Leased(lease_id) if item.lease_id != 0 && lease_id == item.lease_id => {
                    // The lease outlived the connection (no restart, within --disconnect-grace): move it here.
                    if self.leases.get(lease_id).is_none() {
                        continue;
                    }
                    self.leases.connect(conn, out.clone(), holdings.clone());
                    self.leases.move_to(lease_id, conn, now + lease_len);
                    Some(lease_id)
                }
                State::Ready | State::Held if t.attempts > 0 && t.attempts == item.attempt => {
                    if t.state == State::Held {
                        self.queues[q as usize].held = self.queues[q as usize].held.saturating_sub(1);
                    } else {
                        unqueue.entry(q).or_default().insert(task_id);
                    }
                    self.leases.connect(conn, out.clone(), holdings.clone());
                    let lease_id = self.leases.grant_reclaimed(task_id, conn, now + lease_len);
                    t.state = State::Leased(lease_id);
                    self.queues[q as usize].leased += 1;
                    self.queues[q as usize].key_started(&t.key);
                    Some(lease_id)
                }
                State::Pending | State::Acking | State::Dead(_) => None,
                State::Ready | State::Held | State::Delayed | State::Leased(_) => {
                    metrics::counter!(m::RECLAIMED, "outcome" => "stale").increment(1);
                    let code = ErrorCode::StaleLease as i32;
                    results.push((idx, pb::ReclaimResult { task_id, code, ..Default::default() }));
                    continue;
                }
            };
            let result = match granted {
                Some(lease_id) => {
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
        self.unqueue(unqueue);
        let _ = out.send(Outbound::Part { request_id, part: Part::Reclaim(results) });
    }

    /// A connection closed: its credits go, and its leases expire after `--disconnect-grace` unless it comes
    /// back and reclaims them.
    pub(super) fn on_disconnect(&mut self, conn: ConnId) {
        for q in &mut self.queues {
            q.remove_agent(conn);
        }
        // After every stolen task this shard gave the agent was reported delivered (same channel, in order):
        // the stealer then hands them back.
        if let Some(steal) = &self.cfg.steal {
            steal.send(StealMsg::Disconnected { conn });
        }
        let deadline = Instant::now() + self.cfg.disconnect_grace;
        if self.leases.disconnect(conn, deadline).is_some() && self.cfg.disconnect_grace.is_zero() {
            self.on_timers();
        }
    }

    /// The reclaim grace is over: held tasks nobody reclaimed are delivered like any ready task.
    pub(super) fn release_held(&mut self) {
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
}
