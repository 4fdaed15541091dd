//! Chaining: when a task with `onSuccess` / `onFailure` finishes, its follow-ups are submitted by the
//! scheduler itself, in the same round and the same WAL unit as the record that finishes the task:
//!
//! ```text
//! Group{count: n + 1} | Enqueue(child 1) ... Enqueue(child n) | Finish(parent) (or DeadLetter)
//! ```
//!
//! Recovery applies a unit whole or not at all, so after a crash either the parent is finished and every
//! follow-up exists, or the parent is still live (and will finish again, producing its follow-ups then) and
//! none exists: no follow-up is lost or submitted twice by the scheduler. A follow-up may belong to a queue
//! of another shard: the record is written here (the store is shared) and the task is handed to its shard
//! once durable ([`ShardMsg::Adopt`]); after a restart, recovery places it by its queue like any task.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use pm_protocol::pb::{StoredTask, TaskState};
use pm_protocol::Message as _;
use pm_task::pipeline::{follow_ups, parse_task, Parent};
use tokio::time::Instant;

use super::task::{State, Task};
use super::{now_unix_ms, shard_of_queue, Shard, ShardMsg};
use crate::store::Record;

impl Shard {
    /// Writes the follow-ups of `task_id` for how it ends (`state`: succeeded, or failed/dead) and opens
    /// their unit: the caller must push exactly one record next, the one that finishes the task. Returns the
    /// follow-ups' ids (none if the task names none).
    pub(super) fn write_follow_ups(&mut self, task_id: u64, state: TaskState) -> Vec<u64> {
        let Some(t) = self.tasks.get(&task_id).filter(|t| t.chain) else { return Vec::new() };
        let parent = Parent {
            task_id,
            key: t.key.clone(),
            queue: self.queues[t.queue as usize].name.clone(),
            state: if state == TaskState::Succeeded { "succeeded" } else { "failed" }.into(),
        };
        let payload = match self.payloads.get(task_id, t.payload.as_ref()) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(task_id, "follow-ups not submitted: its payload could not be read: {e}");
                return Vec::new();
            }
        };
        let specs = match follow_ups(&payload, &parent) {
            Ok((_, specs)) => specs,
            Err(e) => {
                // Checked at submit; a document that no longer parses gets no follow-ups.
                tracing::warn!(task_id, "follow-ups not submitted: {e}");
                return Vec::new();
            }
        };
        if specs.is_empty() {
            return Vec::new();
        }
        self.rounds.record(Record::Group { count: specs.len() as u32 + 1 });
        let now_ms = now_unix_ms();
        let mut ids = Vec::with_capacity(specs.len());
        for mut spec in specs {
            let id = self.next_task_id.fetch_add(1, Ordering::Relaxed);
            if spec.queue.is_empty() {
                spec.queue = pm_task::pipeline::queue_or_default("").to_string();
            }
            let not_before_unix_ms = if spec.delay_ms > 0 { now_ms + spec.delay_ms } else { 0 };
            let body = Bytes::from(
                StoredTask { spec: Some(spec), submitted_unix_ms: now_ms, not_before_unix_ms }.encode_to_vec(),
            );
            self.rounds.record(Record::Enqueue { task_id: id, body: body.clone(), idempotency: None });
            self.rounds.adopt_later(id, body);
            ids.push(id);
        }
        metrics::counter!(crate::metrics::FOLLOW_UPS).increment(ids.len() as u64);
        ids
    }

    /// The round holding these follow-ups is durable: each goes to the shard of its queue.
    pub(super) fn hand_out(&mut self, children: Vec<(u64, Bytes)>) {
        for (task_id, body) in children {
            let queue = StoredTask::decode(body.clone())
                .ok()
                .and_then(|s| s.spec)
                .map(|s| pm_task::pipeline::queue_or_default(&s.queue).to_string())
                .unwrap_or_default();
            let shard = shard_of_queue(&queue, self.shards);
            if shard == self.index {
                self.adopt(task_id, body);
            } else if let Some(handle) = self.cfg.siblings.get().and_then(|s| s.get(shard)) {
                handle.send(ShardMsg::Adopt { task_id, body });
            }
        }
    }

    /// Takes a durable follow-up written by a shard (maybe this one) into its queue.
    pub(super) fn adopt(&mut self, task_id: u64, body: Bytes) {
        let stored = match StoredTask::decode(body) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(task_id, "undecodable follow-up skipped: {e}");
                return;
            }
        };
        let spec = stored.spec.unwrap_or_default();
        let q = self.queue_id(pm_task::pipeline::queue_or_default(&spec.queue));
        let mut task = self.new_task(q, &spec, None);
        task.submitted_unix_ms = stored.submitted_unix_ms;
        let now_ms = now_unix_ms();
        if stored.not_before_unix_ms > now_ms {
            task.not_before = Some(Instant::now() + Duration::from_millis(stored.not_before_unix_ms - now_ms));
        }
        task.state = State::Pending;
        self.add_task(task_id, task);
        self.make_ready(task_id, Instant::now(), true);
    }

    /// The task's place in a flow: (parent id, flow id), read from its payload (from the store, if it is
    /// not kept in memory; none if it cannot be read).
    pub(super) fn flow_of(&self, task_id: u64, task: &Task) -> (u64, String) {
        let Ok(payload) = self.payloads.get(task_id, task.payload.as_ref()) else { return (0, String::new()) };
        match parse_task(&payload) {
            Ok(t) => {
                let parent = t.parent.map_or(0, |p| p.task_id);
                let root = !t.on_success.is_empty() || !t.on_failure.is_empty();
                let flow = t.flow_id.unwrap_or_else(|| if root { task_id.to_string() } else { String::new() });
                (parent, flow)
            }
            Err(_) => (0, String::new()),
        }
    }
}
