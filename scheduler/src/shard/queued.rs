//! A ready task kept small: a backlog's tasks are mostly this ([`Queued`]), in 32 bytes with its id.
//!
//! **Why.** A [`Task`] is ~190 bytes in its own allocation, plus its map bucket: a backlog of millions cost
//! ~280 B of RAM a task even with every payload left in the store (docs/notes/backlog.md). But a task that
//! only waits in its queue needs little of that: its queue, its executor class and priority (its place in a
//! ready heap), its attempts so far, and since when it waits. Everything else (key, limits, payload, submit
//! time, whether it may chain) is in its stored record, which is read anyway when it is leased, since its
//! payload is not resident.
//!
//! **When.** A task becomes `Queued` only while it is ready and its payload is not resident: at a restart
//! beyond the payload budget (`recover.rs`), and once the submit of a task the budget refused is durable
//! (`durable.rs`). It becomes a full [`Task`] again ([`Shard::inflate`]) when it is leased (`dispatch.rs`,
//! which uses the payload it read), reclaimed, cancelled or purged; a status or a listing reads its record
//! without keeping it ([`Shard::view`]). A task that is leased, delayed, held, dead or being written is
//! always a full [`Task`], and so is every task of a node whose payloads all fit its budget: the hot path
//! never meets a `Queued` task.
//!
//! **Invariant:** an id is in at most one of the shard's `tasks` and `queued`.

use std::ops::Deref;
use std::time::Duration;

use bytes::Bytes;
use pm_protocol::pb::{StoredTask, TaskSpec};
use tokio::time::Instant;

use super::task::{Defaults, State, Task};
use super::Shard;

/// A ready task whose payload is in the store only. See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Queued {
    pub(super) queue: u32,
    pub(super) class: u32,
    pub(super) priority: i32,
    pub(super) attempts: u32,
    /// When it last became ready, in ms after the shard's epoch ([`Shard::since_epoch`]).
    pub(super) ready_ms: u64,
}

/// A live task to read: the shard's own, or one built from a queued task's record for the occasion.
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

/// The full task of `q`, from its stored record `stored`, and its payload (or why it could not be read: the
/// task is then built from what `q` knows and the node's defaults, and the caller decides its fate).
pub(super) fn build(
    q: Queued,
    stored: Result<StoredTask, String>,
    defaults: Defaults,
    epoch: Instant,
) -> (Box<Task>, Result<Bytes, String>) {
    let ready_since = epoch + Duration::from_millis(q.ready_ms);
    let (spec, submitted, payload) = match stored {
        Ok(s) => {
            let mut spec = s.spec.unwrap_or_default();
            let payload = std::mem::take(&mut spec.payload);
            (spec, s.submitted_unix_ms, Ok(payload))
        }
        Err(why) => (TaskSpec { priority: q.priority, ..Default::default() }, 0, Err(why)),
    };
    let chain = payload.as_ref().is_ok_and(|p| pm_task::pipeline::may_chain(p));
    let mut task = Box::new(Task::from_spec(q.queue, q.class, &spec, chain, None, defaults, ready_since));
    task.payload = None;
    task.attempts = q.attempts;
    task.state = State::Ready;
    task.priority = q.priority;
    task.submitted_unix_ms = submitted;
    (task, payload)
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

    /// Keeps task `task_id` as a [`Queued`] if it is ready and its payload is not resident.
    pub(super) fn compact(&mut self, task_id: u64) {
        let Some(t) = self.tasks.get(&task_id) else { return };
        if t.state != State::Ready || t.payload.is_some() {
            return;
        }
        let q = Queued {
            queue: t.queue,
            class: t.class,
            priority: t.priority,
            attempts: t.attempts,
            ready_ms: self.since_epoch(t.ready_since),
        };
        self.tasks.remove(&task_id);
        self.queued.insert(task_id, q);
    }

    /// Makes queued task `task_id` a full task again (reading its record); nothing for any other id. A
    /// record that cannot be read is said in the log; the task is then built from what is known, and ends
    /// when it is leased (its payload cannot be read either, see `dispatch.rs`).
    pub(super) fn inflate(&mut self, task_id: u64) {
        if let Some(q) = self.queued.remove(task_id) {
            let (task, payload) = build(q, self.payloads.stored(task_id), self.defaults(), self.epoch);
            if let Err(why) = payload {
                tracing::warn!(task_id, "a queued task's record could not be read: {why}");
            }
            self.tasks.insert(task_id, task);
        }
    }

    /// Live task `task_id` to read, full or built from its record.
    pub(super) fn view(&self, task_id: u64) -> Option<Viewed<'_>> {
        if let Some(t) = self.tasks.get(&task_id) {
            return Some(Viewed::Held(t));
        }
        let q = *self.queued.get(task_id)?;
        let (task, _) = build(q, self.payloads.stored(task_id), self.defaults(), self.epoch);
        Some(Viewed::Built(task))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pm_protocol::pb::TaskSpec;

    #[test]
    fn a_queued_task_is_small() {
        assert!(std::mem::size_of::<(u64, Queued)>() <= 32, "{}", std::mem::size_of::<(u64, Queued)>());
    }

    #[test]
    fn a_task_built_from_its_record_has_its_spec_and_what_was_queued() {
        let defaults = Defaults { lease: Duration::from_secs(30), max_attempts: 3 };
        let epoch = Instant::now();
        let q = Queued { queue: 2, class: 1, priority: 7, attempts: 1, ready_ms: 1500 };
        let spec = TaskSpec {
            key: "k".into(),
            payload: Bytes::from_static(b"{\"steps\":[]}"),
            priority: 7,
            max_attempts: 5,
            ..Default::default()
        };
        let stored = StoredTask { spec: Some(spec), submitted_unix_ms: 42, not_before_unix_ms: 0 };
        let (t, payload) = build(q, Ok(stored), defaults, epoch);
        assert_eq!(payload.as_deref(), Ok(&b"{\"steps\":[]}"[..]));
        assert_eq!((t.queue, t.class, t.priority, t.attempts), (2, 1, 7, 1));
        assert_eq!((t.key.as_str(), t.max_attempts, t.lease, t.submitted_unix_ms), ("k", 5, defaults.lease, 42));
        assert_eq!((&t.state, t.payload.is_none()), (&State::Ready, true), "the payload stays in the store");
        assert_eq!(t.ready_since, epoch + Duration::from_millis(1500));

        let (t, payload) = build(q, Err("gone".into()), defaults, epoch);
        assert_eq!(payload, Err("gone".to_string()));
        assert_eq!((t.priority, t.attempts, t.max_attempts, t.key.as_str()), (7, 1, 3, ""));
    }
}
