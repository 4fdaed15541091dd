//! The end of a round, as the shard sees it: the committer reports a round written (`Appended`) and then
//! durable or failed (`Durable`), and the shard releases what waited for it.
//!
//! - **Written** ([`Shard::on_appended`]): the round's new tasks become ready, so an agent can start on them
//!   while the sync runs. Their producers still get their `SubmitAck` only once the round is durable.
//!   Safe for at-least-once: an agent may see a task whose submit is then refused (the sync failed, or the
//!   machine died before it ended); the producer was never told it was stored and submits it again, so the
//!   worst case is one more run, never a lost task. A lease of such a task can only be acked in a later
//!   round, whose sync comes after this one's.
//! - **Durable** ([`Shard::on_durable`]): submit acks go out, finished tasks are forgotten (their outcomes
//!   kept, their watchers told), follow-ups go to their shards.
//! - **Failed**: nothing of the round is on disk, so nothing of it may be believed. New tasks are withdrawn
//!   (out of their queues, their early leases revoked) and their submits refused; tasks whose finish was not
//!   written are live again (ready), as they still are on disk.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use pm_protocol::ErrorCode;
use tokio::time::Instant;

use super::round::{send_lease_reply, Waiter};
use super::small::Small;
use super::task::State;
use super::{err_result, now_unix_ms, Shard};
use crate::metrics as m;
use crate::outbox::{Outbound, Part};

impl Shard {
    /// Round `round` is written and being synced: its new tasks become ready now (see the module doc).
    pub(super) fn on_appended(&mut self, round: u64) {
        let now = Instant::now();
        for task_id in self.rounds.new_tasks_of(round) {
            self.make_ready(task_id, now, false);
        }
    }

    /// The committer finished round `round`: release its waiters with `result`.
    pub(super) fn on_durable(&mut self, round: u64, result: Result<(), (ErrorCode, String)>) {
        if let Err((_, msg)) = &result {
            tracing::warn!(shard = self.index, round, "store write failed: {msg}");
        }
        let Some(waiters) = self.rounds.complete(round) else { return };
        let now = Instant::now();
        for w in waiters {
            self.release(w, &result, now);
        }
        self.rounds.settle();
    }

    /// Releases one waiter of a round that ended with `result`.
    fn release(&mut self, w: Waiter, result: &Result<(), (ErrorCode, String)>, now: Instant) {
        match w {
            Waiter::Submit { out, request_id, mut results, new_tasks, received } => {
                match result {
                    Ok(()) => {
                        for task_id in new_tasks {
                            self.make_ready(task_id, now, true);
                        }
                        for (_, r) in results.iter_mut() {
                            if r.duplicate && self.rounds.is_failed(r.task_id) {
                                let msg = "the first submit with this idempotency key was not stored; submit again";
                                *r = err_result(ErrorCode::StoreFailed, msg);
                            }
                        }
                        metrics::counter!(m::SUBMITTED).increment(results.len() as u64);
                    }
                    Err((code, msg)) => {
                        let failed: HashSet<u64> = new_tasks.iter().copied().collect();
                        self.rounds.mark_failed(&failed);
                        self.withdraw(&new_tasks);
                        for task_id in new_tasks {
                            self.watchers.remove(&task_id);
                            if let Some(t) = self.drop_task(task_id, false) {
                                if let Some(k) = t.idem {
                                    self.idem.forget(&k);
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
                    if let Some(t) = self.drop_task(task_id, result.is_ok()) {
                        if result.is_ok() && t.submitted_unix_ms > 0 {
                            let secs = now_ms.saturating_sub(t.submitted_unix_ms) as f64 / 1000.0;
                            self.hist.end_to_end.record(secs);
                        }
                        if result.is_ok() && t.started_unix_ms > 0 {
                            self.hist.run.record(now_ms.saturating_sub(t.started_unix_ms) as f64 / 1000.0);
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
                            self.drop_task(task_id, true);
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
            Waiter::Purge { out, request_id, paused, cancelled } => {
                let n = cancelled.len() as u64;
                let answer = match result {
                    Ok(()) => {
                        metrics::counter!(m::CANCELLED).increment(n);
                        for (task_id, outcome) in cancelled {
                            self.drop_task(task_id, true);
                            self.finished(task_id, outcome);
                        }
                        Ok((paused, n))
                    }
                    Err(e) => {
                        for (task_id, _) in cancelled {
                            self.unfinish(task_id);
                        }
                        Err(e.clone())
                    }
                };
                let _ = out.send(Outbound::Part { request_id, part: Part::QueueControl(answer) });
            }
            Waiter::DeadDeleted { out, request_id, deleted } => {
                let n = deleted.len() as u64;
                let answer = match result {
                    Ok(()) => {
                        for (task_id, _, outcome) in deleted {
                            self.drop_task(task_id, false);
                            self.finished(task_id, outcome);
                        }
                        Ok(n)
                    }
                    Err(e) => {
                        // Not deleted on disk: dead again here too.
                        for (task_id, dead, _) in deleted {
                            if let Some(t) = self.tasks.get_mut(&task_id) {
                                t.state = State::Dead(dead);
                                self.queues[t.queue as usize].dead.insert(task_id);
                            }
                        }
                        Err(e.clone())
                    }
                };
                let _ = out.send(Outbound::Part { request_id, part: Part::DeadDelete(answer) });
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
                        self.drop_task(task_id, true);
                        self.finished(task_id, outcome);
                    } else {
                        // Not confirmed durable: the task is still live on disk, so it is here too.
                        self.unfinish(task_id);
                    }
                }
            }
        }
    }

    /// A written task becomes ready (or delayed, until its not-before time); `durable`: its record is synced.
    /// A ready one whose payload was left in the store is kept small from now on (`small.rs`). One with an
    /// idempotency key waits until its record is durable: a failed submit forgets the key, which a small task
    /// does not keep.
    pub(super) fn make_ready(&mut self, task_id: u64, now: Instant, durable: bool) {
        let Some(t) = self.tasks.get_mut(&task_id) else { return };
        if t.state != State::Pending || (!durable && t.payload.is_none() && t.idem.is_some()) {
            return;
        }
        let qi = t.queue;
        let q = &mut self.queues[qi as usize];
        match t.not_before {
            Some(at) if at > now => {
                t.state = State::Delayed;
                q.delayed.push(Reverse((at, task_id)));
            }
            _ => {
                t.state = State::Ready;
                t.ready_since = Instant::now();
                t.not_before = None;
                let small = if t.payload.is_none() {
                    Small::new(t.attempts, t.ready_since.saturating_duration_since(self.epoch).as_millis() as u64)
                } else {
                    None
                };
                match small {
                    Some(small) => {
                        q.push_small(t.class, t.priority, task_id, small);
                        self.tasks.remove(&task_id);
                    }
                    None => q.push_ready(t.class, t.entry(task_id)),
                }
                self.dirty.insert(qi);
            }
        }
    }

    /// Takes back tasks whose submit failed to become durable after they were made ready early: out of their
    /// queues (one pass per queue, as a failed round may hold thousands), their leases (if any) revoked. The
    /// caller forgets them.
    fn withdraw(&mut self, task_ids: &[u64]) {
        let mut unqueue: HashMap<u32, HashSet<u64>> = HashMap::new();
        for &task_id in task_ids {
            let Some(t) = self.tasks.get(&task_id) else {
                // Kept small when it became ready: out of its run and its listing here (`drop_task` then
                // finds it nowhere).
                if let Some(p) = self.take_small(task_id) {
                    self.queues[p.queue as usize].ids.remove(task_id);
                }
                continue;
            };
            let q = t.queue;
            match &t.state {
                State::Ready | State::Delayed => {
                    unqueue.entry(q).or_default().insert(task_id);
                }
                State::Leased(lease_id) => {
                    let lease_id = *lease_id;
                    if self.leases.get(lease_id).is_some_and(|l| l.task_id == task_id) {
                        self.revoke(lease_id, task_id, "its submit could not be stored");
                    }
                }
                State::Dead(_) => {
                    self.queues[q as usize].dead.remove(&task_id);
                }
                State::Pending | State::Held | State::Acking => {}
            }
        }
        self.unqueue(unqueue);
    }

    /// The round that dead-lettered `task_id` ended: once durable its follow-ups are shown and its watchers
    /// told; if it failed the task is still live on disk, so it is ready again (its attempts stay counted).
    fn buried_durable(&mut self, task_id: u64, children: Vec<u64>, ok: bool) {
        let Some(t) = self.tasks.get_mut(&task_id) else { return };
        let q = t.queue as usize;
        let State::Dead(d) = &mut t.state else { return };
        if d.written {
            return;
        }
        if ok {
            d.written = true;
            d.children = children;
            self.queues[q].rates.completed += 1;
            self.notify_dead(task_id);
            return;
        }
        t.state = State::Ready;
        t.ready_since = Instant::now();
        self.queues[q].dead.remove(&task_id);
        self.queues[q].push_ready(t.class, t.entry(task_id));
        self.dirty.insert(t.queue);
    }

    /// A finish (ack, final failure, cancellation) that failed to persist: the task is ready again.
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
}
