//! A shard built from what the store recovered after a restart: its share of the live tasks (placed by
//! queue), of the idempotency keys and of the kept outcomes.
//!
//! A recovered task is ready again, with its attempt count kept (leases live in memory only), except:
//! - a dead letter stays dead;
//! - a task whose not-before time has not come is delayed;
//! - a task that had been delivered before the stop is **held** for `--reclaim-grace-ms`: it is probably
//!   still running on an agent that is about to reconnect and reclaim it, and delivering it to another
//!   agent at once would run it twice.

use std::cmp::Reverse;
use std::time::Duration;

use bytes::Bytes;
use pm_protocol::pb::{self, StoredTask, TaskState};
use pm_protocol::Message as _;
use tokio::time::Instant;

use super::idempotency::Idempotency;
use super::results::Kept;
use super::task::{Dead, State};
use super::{now_unix_ms, shard_of_queue, Shard};
use crate::store::{RecoveredIdem, RecoveredResult, RecoveredTask};

impl Shard {
    /// Takes this shard's share of the recovered state.
    pub(super) fn restore(
        &mut self,
        tasks: Vec<RecoveredTask>,
        idem: Vec<RecoveredIdem>,
        results: Vec<RecoveredResult>,
    ) {
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
            let q = self.queue_id(pm_task::pipeline::queue_or_default(&spec.queue));
            let mut task = self.new_task(q, &spec, None);
            task.attempts = rt.attempts;
            task.submitted_unix_ms = stored.submitted_unix_ms;
            if let Some(reason) = rt.dead_reason {
                task.state = State::Dead(Box::new(Dead {
                    reason,
                    result: Bytes::new(),
                    finished_unix_ms: 0,
                    children: Vec::new(),
                    written: true,
                }));
                self.queues[q as usize].dead.insert(rt.task_id);
            } else if stored.not_before_unix_ms > now_ms {
                let at = now + Duration::from_millis(stored.not_before_unix_ms - now_ms);
                task.state = State::Delayed;
                task.not_before = Some(at);
                self.queues[q as usize].delayed.push(Reverse((at, rt.task_id)));
            } else if rt.attempts > 0 && !self.cfg.reclaim_grace.is_zero() {
                task.state = State::Held;
                self.queues[q as usize].held += 1;
                self.held.push(rt.task_id);
            } else {
                task.state = State::Ready;
                task.ready_since = Instant::now();
                self.queues[q as usize].push_ready(task.class, task.entry(rt.task_id));
            }
            self.add_task(rt.task_id, task);
        }
        if !self.held.is_empty() {
            self.hold_until = Some(now + self.cfg.reclaim_grace);
        }
        let (index, shards) = (self.index, self.shards);
        let mine = idem.into_iter().filter(|i| shard_of_queue(Idempotency::queue_of(&i.key), shards) == index);
        self.idem.restore(mine.map(|i| (i.key, i.task_id, i.expires_unix_ms)), now_ms);
        // Ordered by expiry, as the store returns them.
        if !self.cfg.result_retention.is_zero() {
            for r in results {
                if r.expires_unix_ms > now_ms {
                    // What listings filter on, read once here (a finish keeps it from the live task).
                    let status = pb::TaskStatus::decode(r.body.clone()).unwrap_or_default();
                    let queue = self.queue_id(pm_task::pipeline::queue_or_default(&status.queue));
                    let state = TaskState::try_from(status.state).unwrap_or(TaskState::Unspecified);
                    let kept = Kept { body: r.body, queue, state };
                    self.results.keep(r.task_id, kept, r.expires_unix_ms, &self.cfg.results_budget);
                }
            }
        }
        tracing::info!(shard = self.index, tasks = self.tasks.len(), held = self.held.len(), "shard recovered");
        self.update_gauges();
    }
}
