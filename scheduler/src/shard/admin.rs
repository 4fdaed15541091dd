//! What an operator sees and steers on a shard: dead letters (listed, redriven) and the gauges Prometheus
//! scrapes. Queue counters are [`Queue::stats`](super::Queue::stats).

use std::collections::HashSet;

use pm_protocol::pb::DeadLetter;
use tokio::time::Instant;

use super::task::State;
use super::Shard;
use crate::metrics as m;
use crate::store::Record;

impl Shard {
    /// Up to `limit` dead letters of `queue` (empty: every queue) with an id above `after`, lowest first.
    pub(super) fn dead_list(&self, queue: &str, limit: usize, after: u64) -> Vec<DeadLetter> {
        let mut out = Vec::new();
        for q in self.queues.iter().filter(|q| queue.is_empty() || q.name == queue) {
            // Each queue's lowest `limit`: the merge (here and across shards) keeps the lowest of them all.
            for task_id in q.dead.range(after.saturating_add(1)..).take(limit) {
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
                        // Empty if the store cannot give it back.
                        payload: self.payloads.get(*task_id, t.payload.as_ref()).unwrap_or_default(),
                    });
                }
            }
        }
        out.sort_by_key(|d| d.task_id);
        out.truncate(limit);
        out
    }

    /// Makes the dead letters of `queue` (empty: every queue) named in `task_ids` (empty: all) ready again,
    /// with their attempts reset, each with a `Redrive` record. Returns how many.
    pub(super) fn redrive(&mut self, queue: &str, task_ids: &[u64]) -> u64 {
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
                    self.rounds.record(Record::Redrive { task_id });
                    n += 1;
                }
            }
            self.dirty.insert(qi as u32);
        }
        n
    }

    /// Sets the per-queue gauges (once a second).
    pub(super) fn update_gauges(&self) {
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
