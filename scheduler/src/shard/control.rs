//! An operator steering a queue: pause, resume, purge; and deleting dead letters for good.
//!
//! - **Pause** sets the queue's flag: [`dispatch_queue`](super::dispatch::dispatch_queue) leases nothing of a
//!   paused queue, credits wait, submits are still accepted, leases already given run to their end. The flag
//!   is kept across restarts by the node's [`PausedQueues`](crate::paused::PausedQueues) file, written before
//!   the shard is told (see `handlers::admin`); a queue created later (first submit or credit) starts paused
//!   when the file names it.
//! - **Purge** cancels every ready and delayed task of the queue as a cancel does (each finished by a record
//!   in this round, the reply once the round is durable). Leased and held tasks are untouched.
//! - **Deleting dead letters** finishes them as cancelled, durably; if the round fails they are dead again.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use pm_protocol::pb::{QueueAction, TaskState};
use pm_protocol::ErrorCode;

use super::round::Waiter;
use super::task::State;
use super::Shard;
use crate::outbox::{OutTx, Outbound, Part};

impl Shard {
    /// `QueueControl` for a queue of this shard (created if this node has not seen it yet).
    pub(super) fn on_queue_control(&mut self, out: OutTx, request_id: u64, queue: &str, action: QueueAction) {
        let qi = self.queue_id(queue);
        match action {
            QueueAction::Pause | QueueAction::Resume => {
                let paused = action == QueueAction::Pause;
                self.queues[qi as usize].paused = paused;
                if !paused {
                    self.dirty.insert(qi);
                }
                let _ = out.send(Outbound::Part { request_id, part: Part::QueueControl(Ok((paused, 0))) });
            }
            QueueAction::Purge => self.purge(out, request_id, qi),
            QueueAction::Unspecified => {
                let err = (ErrorCode::InvalidTask, "no action given (pause, resume or purge)".to_string());
                let _ = out.send(Outbound::Part { request_id, part: Part::QueueControl(Err(err)) });
            }
        }
    }

    /// Cancels every ready and delayed task of queue `qi`; the reply (how many) waits for the round.
    fn purge(&mut self, out: OutTx, request_id: u64, qi: u32) {
        let queue = &mut self.queues[qi as usize];
        let mut ids = HashSet::new();
        queue.retain_ready(|id| {
            ids.insert(id);
            true
        });
        ids.extend(queue.delayed.iter().map(|std::cmp::Reverse((_, id))| *id));
        let mut cancelled = Vec::with_capacity(ids.len());
        for &task_id in &ids {
            // A queued task's record is read back: its outcome names what it was.
            self.inflate(task_id);
            let Some(t) = self.tasks.get_mut(&task_id) else { continue };
            if !matches!(t.state, State::Ready | State::Delayed) {
                continue;
            }
            t.state = State::Acking;
            t.not_before = None;
            let outcome = self.finish_record(task_id, TaskState::Cancelled, Bytes::new(), "purged".into());
            cancelled.push((task_id, outcome));
        }
        self.unqueue(HashMap::from([(qi, ids)]));
        let paused = self.queues[qi as usize].paused;
        if cancelled.is_empty() {
            let _ = out.send(Outbound::Part { request_id, part: Part::QueueControl(Ok((paused, 0))) });
        } else {
            self.rounds.wait(Waiter::Purge { out, request_id, paused, cancelled });
        }
    }

    /// `DeadLetterDelete`: the dead letters of `queue` (empty: any) named in `task_ids`, or all of them with
    /// `all`, are finished as cancelled. The reply (how many) waits for the round.
    pub(super) fn delete_dead(&mut self, out: OutTx, request_id: u64, queue: &str, task_ids: &[u64], all: bool) {
        let wanted: HashSet<u64> = task_ids.iter().copied().collect();
        let mut deleted = Vec::new();
        for qi in 0..self.queues.len() {
            if !queue.is_empty() && self.queues[qi].name != queue {
                continue;
            }
            let ids: Vec<u64> = if all {
                self.queues[qi].dead.iter().copied().collect()
            } else {
                wanted.iter().copied().filter(|id| self.queues[qi].dead.contains(id)).collect()
            };
            for task_id in ids {
                let Some(t) = self.tasks.get_mut(&task_id) else { continue };
                let State::Dead(dead) = std::mem::replace(&mut t.state, State::Acking) else { continue };
                self.queues[qi].dead.remove(&task_id);
                let reason = "deleted from the dead letters".to_string();
                let outcome = self.finish_record(task_id, TaskState::Cancelled, Bytes::new(), reason);
                deleted.push((task_id, dead, outcome));
            }
        }
        if deleted.is_empty() {
            let _ = out.send(Outbound::Part { request_id, part: Part::DeadDelete(Ok(0)) });
        } else {
            self.rounds.wait(Waiter::DeadDeleted { out, request_id, deleted });
        }
    }
}
