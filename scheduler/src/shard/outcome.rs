//! What ends or repeats a delivery: the agent's `Ack` and `Nack`, a producer's `Cancel`, and the retry or
//! dead letter that follows a failed attempt.
//!
//! - **Ack** ([`Shard::on_ack`]): the lease ends and the task's `Finish` record joins the round; the reply
//!   waits until that round is durable.
//! - **Nack** ([`Shard::on_nack`]): the lease ends; the task is failed for good (`fail`), or retried after
//!   `retry_after` until its attempts are used up, then dead-lettered ([`Shard::retry_or_bury`]). Answered at
//!   once: a retry that is not written loses nothing.
//! - **Cancel** ([`Shard::on_cancel`]): a queued task leaves its queue, a leased one loses its lease (the agent
//!   gets a `Revoke`); the reply waits for the tombstone to be durable.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use pm_protocol::pb::{self, TaskState};
use pm_protocol::ErrorCode;
use tokio::time::Instant;

use super::round::Waiter;
use super::task::{self, cap_reason, State};
use super::Shard;
use crate::metrics as m;
use crate::outbox::{OutTx, Outbound, Part};
use crate::store::Record;

impl Shard {
    /// `Ack`: each live lease ends and its task is finished by a record in this round; the reply waits for it.
    pub(super) fn on_ack(&mut self, out: OutTx, request_id: u64, items: Vec<(usize, u64, Bytes)>) {
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
        self.rounds.wait(Waiter::Ack { reply: Some((out, request_id, codes)), n, acked });
    }

    /// `Nack`: each live lease ends; its task is retried (after `retry_after`), dead-lettered when its attempts
    /// are used up, or failed for good (`fail`). Answered at once: a retry loses nothing if it is not written.
    pub(super) fn on_nack(&mut self, out: OutTx, request_id: u64, items: Vec<(usize, pb::NackItem)>) {
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
                            self.rounds.record(Record::Attempt { task_id, attempts: t.attempts });
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
            self.rounds.wait(Waiter::Failed { failed });
        }
    }

    /// Cancels the tasks of `items` this shard owns: a ready or delayed task leaves its queue, a leased one
    /// loses its lease (its agent gets a `Revoke`). Each gets an `Ack` tombstone; the reply waits for it to
    /// be durable. Ids this shard does not hold are left out of the answer (the merged reply says
    /// `NOT_FOUND` unless another shard answers); tasks not yet durable, being acked, or dead are
    /// `NOT_FOUND` here.
    pub(super) fn on_cancel(&mut self, out: OutTx, request_id: u64, items: Vec<(usize, u64)>) {
        let mut codes = Vec::new();
        let mut cancelled = Vec::new();
        let mut unqueue: HashMap<u32, HashSet<u64>> = HashMap::new();
        for (idx, task_id) in items {
            self.inflate(task_id);
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
        self.unqueue(unqueue);
        if cancelled.is_empty() {
            let _ = out.send(Outbound::Part { request_id, part: Part::Cancel(codes) });
        } else {
            self.rounds.wait(Waiter::Cancel { out, request_id, items: codes, cancelled });
        }
    }

    /// Removes a live lease, and its mark on its queue; returns its task.
    pub(super) fn end_lease(&mut self, lease_id: u64) -> Option<u64> {
        let lease = self.leases.end(lease_id)?;
        if let Some(t) = self.tasks.get(&lease.task_id) {
            let q = &mut self.queues[t.queue as usize];
            q.leased = q.leased.saturating_sub(1);
            if q.key_ended(&t.key) {
                self.dirty.insert(t.queue);
            }
        }
        Some(lease.task_id)
    }

    /// Ends a lease because its task was cancelled, and tells the agent holding it (if still connected).
    pub(super) fn revoke(&mut self, lease_id: u64, task_id: u64, reason: &str) {
        let conn = self.leases.get(lease_id).map(|l| l.conn);
        self.end_lease(lease_id);
        let Some(out) = conn.and_then(|c| self.leases.out_of(c)) else { return };
        let revoke = pb::Revoke { lease_id, task_id, reason: reason.into() };
        let _ = out.send(Outbound::Frame(revoke.into()));
    }

    /// Takes `ids` out of their queues' ready and delayed heaps (one pass per queue).
    pub(super) fn unqueue(&mut self, ids: HashMap<u32, HashSet<u64>>) {
        for (q, ids) in ids {
            let queue = &mut self.queues[q as usize];
            queue.retain_ready(|id| !ids.contains(&id));
            queue.delayed.retain(|Reverse((_, id))| !ids.contains(id));
        }
    }

    /// A delivery failed: make the task ready again (after `after`) or dead-letter it (keeping `result`, what
    /// the failed attempt reported, and telling its watchers once the record is durable).
    pub(super) fn retry_or_bury(&mut self, task_id: u64, after: Duration, reason: String, result: Bytes) {
        let result = self.bounded_result(result);
        let Some(t) = self.tasks.get(&task_id) else { return };
        if t.attempts >= t.max_attempts {
            let reason = format!("attempt {}/{}: {reason}", t.attempts, t.max_attempts);
            self.bury(task_id, reason, result);
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

    /// Dead-letters the task for `reason` (keeping `result`, and telling its watchers once the record is
    /// durable), with its onFailure follow-ups in one unit with the dead-letter record.
    pub(super) fn bury(&mut self, task_id: u64, reason: String, result: Bytes) {
        let children = self.write_follow_ups(task_id, TaskState::Dead);
        let Some(t) = self.tasks.get_mut(&task_id) else { return };
        let dead = task::Dead {
            reason: reason.clone(),
            result,
            finished_unix_ms: super::now_unix_ms(),
            children: Vec::new(),
            written: false,
        };
        t.state = State::Dead(Box::new(dead));
        self.queues[t.queue as usize].dead.insert(task_id);
        self.rounds.record(Record::DeadLetter { task_id, reason });
        metrics::counter!(m::DEAD_LETTERED).increment(1);
        self.rounds.bury(task_id, children);
    }
}
