//! Small tasks (`small.rs`) found, made full again, or read without keeping them: what the shard does with
//! a small task besides leasing it (which `dispatch.rs` does at the head of its class).
//!
//! Finding one by id looks in the runs of every class of every queue that has small tasks: a binary search
//! each, in the few runs a shard has (one per queue, class and priority). A cancel, a reclaim, a status or a
//! listing does it, never the hot path.

use std::ops::Deref;

use tokio::time::Instant;

use super::small::{build, Place};
use super::task::{Defaults, Task};
use super::Shard;

/// A live task to read: the shard's own, or one built from a small task's record for the occasion.
pub(super) enum Viewed<'a> {
    Held(&'a Task),
    Built(Box<Task>),
}

impl Deref for Viewed<'_> {
    type Target = Task;

    fn deref(&self) -> &Task {
        match self {
            Viewed::Held(t) => t,
            Viewed::Built(t) => t,
        }
    }
}

impl Shard {
    /// Milliseconds from the shard's epoch to `at` (0 before it).
    pub(super) fn since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// The defaults a task gets for what its spec leaves out.
    pub(super) fn defaults(&self) -> Defaults {
        Defaults { lease: self.cfg.default_lease, max_attempts: self.cfg.default_max_attempts }
    }

    /// Small tasks held, in every queue.
    pub(super) fn small_tasks(&self) -> usize {
        self.queues.iter().map(|q| q.small_len()).sum()
    }

    /// Small task `task_id`, if it is one: where it waits.
    pub(super) fn find_small(&self, task_id: u64) -> Option<Place> {
        self.queues.iter().enumerate().filter(|(_, q)| q.small_len() > 0).find_map(|(qi, q)| {
            let (class, priority, small) = q.find_small(task_id)?;
            Some(Place { queue: qi as u32, class, priority, small })
        })
    }

    /// Takes small task `task_id` out of its run, if it is one (it stays listed in its queue).
    pub(super) fn take_small(&mut self, task_id: u64) -> Option<Place> {
        let p = self.find_small(task_id)?;
        let q = &mut self.queues[p.queue as usize];
        q.remove_small(p.class, task_id);
        Some(p)
    }

    /// Makes small task `task_id` a full ready task in its class's heap (reading its record); nothing for any
    /// other id. A record that cannot be read is said in the log; the task is then built from what is known,
    /// and ends when it is leased (its payload cannot be read either, see `dispatch.rs`).
    pub(super) fn inflate(&mut self, task_id: u64) {
        let Some(p) = self.take_small(task_id) else { return };
        let (task, payload) = build(p, self.payloads.stored(task_id), self.defaults(), self.epoch);
        if let Err(why) = payload {
            tracing::warn!(task_id, "a small task's record could not be read: {why}");
        }
        self.queues[p.queue as usize].push_ready(p.class, task.entry(task_id));
        self.tasks.insert(task_id, task);
    }

    /// Live task `task_id` to read, full or built from its record.
    pub(super) fn view(&self, task_id: u64) -> Option<Viewed<'_>> {
        if let Some(t) = self.tasks.get(&task_id) {
            return Some(Viewed::Held(t));
        }
        let p = self.find_small(task_id)?;
        let (task, _) = build(p, self.payloads.stored(task_id), self.defaults(), self.epoch);
        Some(Viewed::Built(task))
    }
}
