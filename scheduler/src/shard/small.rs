//! A ready task kept small: a backlog's tasks are mostly this ([`Small`]), 16 bytes with its id.
//!
//! **Why.** A [`Task`] is ~190 bytes in its own allocation, plus its map bucket and its entry in a ready heap:
//! a backlog of millions cost ~280 B of RAM a task even with every payload left in the store
//! (docs/notes/backlog.md). But a task that only waits in its queue needs little of that: its queue, executor
//! class and priority say where it waits, and besides those only its attempts so far and since when it waits.
//! Everything else (key, limits, payload, submit time, whether it may chain) is in its stored record, which is
//! read anyway when it is leased, since its payload is not resident.
//!
//! **Where.** A queue's class keeps its small tasks in runs ([`SmallRuns`]): one table in id order per
//! priority (`crate::idtable`). Ids are allocated in submit order, so a run is the class's ready order for its
//! priority, with no heap entry: the class's best task is the better of its heap's head and its first run's
//! first task.
//!
//! **When.** A task is kept small when it becomes ready with no resident payload (its submit written, beyond the
//! payload budget: `durable.rs`; or recovered so at a restart: `recover.rs`). It becomes a full [`Task`]
//! again, in its class's heap, when it is the head leased next (`dispatch.rs`, which uses the payload the read
//! gave), or when it is reclaimed, cancelled or purged (`inflate.rs`); a status or a listing reads its
//! record without keeping it. A task that is leased, delayed, held, dead or being written is
//! always a full [`Task`], and so is every task whose payload is resident: the hot path never meets a small
//! one.
//!
//! **Invariant:** an id is in at most one of the shard's `tasks` and its queues' runs.

use std::time::Duration;

use bytes::Bytes;
use pm_protocol::pb::{StoredTask, TaskSpec};
use tokio::time::Instant;

use super::ready_entry::ReadyEntry;
use super::task::{Defaults, State, Task};
use crate::idtable::IdTable;

/// What a small task keeps besides its place: its attempts (16 bits) and when it became ready, in ms after
/// the shard's epoch (48 bits, ~8,900 years), in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Small(u64);

impl Small {
    /// `None` when `attempts` does not fit 16 bits (such a task stays a full [`Task`]).
    pub(super) fn new(attempts: u32, ready_ms: u64) -> Option<Small> {
        let attempts = u16::try_from(attempts).ok()?;
        Some(Small((ready_ms.min((1 << 48) - 1) << 16) | u64::from(attempts)))
    }

    pub(super) fn attempts(self) -> u32 {
        (self.0 & 0xFFFF) as u32
    }

    pub(super) fn ready_ms(self) -> u64 {
        self.0 >> 16
    }
}

/// One class's small tasks: a run in id order per priority, the highest priority first. No run is empty.
#[derive(Debug, Default)]
pub(super) struct SmallRuns {
    runs: Vec<(i32, IdTable<Small>)>,
    len: usize,
}

impl SmallRuns {
    /// Small tasks held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Adds a ready task of `priority`.
    pub(super) fn push(&mut self, priority: i32, task_id: u64, small: Small) {
        let at = match self.runs.binary_search_by(|(p, _)| priority.cmp(p)) {
            Ok(at) => at,
            Err(at) => {
                self.runs.insert(at, (priority, IdTable::default()));
                at
            }
        };
        if self.runs[at].1.insert(task_id, small).is_none() {
            self.len += 1;
        }
    }

    /// The best small task: the highest priority's lowest id.
    pub(super) fn head(&self) -> Option<ReadyEntry> {
        let (priority, run) = self.runs.first()?;
        run.first().map(|(task_id, _)| ReadyEntry { priority: *priority, task_id })
    }

    /// Takes the best small task out.
    pub(super) fn pop_head(&mut self) -> Option<(ReadyEntry, Small)> {
        let (priority, run) = self.runs.first_mut()?;
        let priority = *priority;
        let (task_id, small) = run.pop_first()?;
        if run.len() == 0 {
            self.runs.remove(0);
        }
        self.len -= 1;
        Some((ReadyEntry { priority, task_id }, small))
    }

    /// Task `task_id`, if it is here: its priority and what it keeps.
    pub(super) fn get(&self, task_id: u64) -> Option<(i32, Small)> {
        self.runs.iter().find_map(|(p, run)| run.get(task_id).map(|s| (*p, *s)))
    }

    /// Takes task `task_id` out, if it is here.
    pub(super) fn remove(&mut self, task_id: u64) -> Option<(i32, Small)> {
        let at = self.runs.iter().position(|(_, run)| run.contains(task_id))?;
        let (priority, run) = &mut self.runs[at];
        let priority = *priority;
        let small = run.remove(task_id)?;
        if run.len() == 0 {
            self.runs.remove(at);
        }
        self.len -= 1;
        Some((priority, small))
    }

    /// Keeps only the tasks for which `keep` is true.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        for (_, run) in &mut self.runs {
            run.retain(|id, _| keep(id));
        }
        self.runs.retain(|(_, run)| run.len() > 0);
        self.len = self.runs.iter().map(|(_, run)| run.len()).sum();
    }

    /// Since when the longest waiting small task waits, in ms after the shard's epoch (each run's first task
    /// is its oldest, unless a retry or a restart made a younger one ready earlier: close enough for an age).
    pub(super) fn oldest_ready_ms(&self) -> Option<u64> {
        self.runs.iter().filter_map(|(_, run)| run.first().map(|(_, s)| s.ready_ms())).min()
    }
}

/// Where a small task waits, and what it keeps: everything the record does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub(super) queue: u32,
    pub(super) class: u32,
    pub(super) priority: i32,
    pub(super) small: Small,
}

/// The full task of small task `p`, from its stored record `stored`, and its payload (or why it could not be
/// read: the task is then built from what `p` knows and the node's defaults, and the caller decides its fate).
pub(super) fn build(
    p: Place,
    stored: Result<StoredTask, String>,
    defaults: Defaults,
    epoch: Instant,
) -> (Box<Task>, Result<Bytes, String>) {
    let ready_since = epoch + Duration::from_millis(p.small.ready_ms());
    let (spec, submitted, payload) = match stored {
        Ok(s) => {
            let mut spec = s.spec.unwrap_or_default();
            let payload = std::mem::take(&mut spec.payload);
            (spec, s.submitted_unix_ms, Ok(payload))
        }
        Err(why) => (TaskSpec::default(), 0, Err(why)),
    };
    let chain = payload.as_ref().is_ok_and(|p| pm_task::pipeline::may_chain(p));
    let mut task = Box::new(Task::from_spec(p.queue, p.class, &spec, chain, None, defaults, ready_since));
    task.payload = None;
    task.attempts = p.small.attempts();
    task.state = State::Ready;
    task.priority = p.priority;
    task.submitted_unix_ms = submitted;
    (task, payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pm_protocol::pb::TaskSpec;

    #[test]
    fn a_small_task_is_small_and_keeps_its_attempts_and_time() {
        assert_eq!(std::mem::size_of::<(u64, Small)>(), 16);
        let s = Small::new(65_535, 123_456_789).unwrap();
        assert_eq!((s.attempts(), s.ready_ms()), (65_535, 123_456_789));
        assert_eq!(Small::new(65_536, 0), None, "too many attempts to keep small");
        assert_eq!(Small::new(0, u64::MAX).unwrap().ready_ms(), (1 << 48) - 1, "saturates, never wraps");
    }

    #[test]
    fn runs_give_the_highest_priority_first_then_the_lowest_id() {
        let mut r = SmallRuns::default();
        let s = |a| Small::new(a, 0).unwrap();
        for (p, id) in [(0, 10), (5, 12), (0, 11), (5, 14), (-1, 9), (5, 13)] {
            r.push(p, id, s(id as u32));
        }
        assert_eq!((r.len(), r.head()), (6, Some(ReadyEntry { priority: 5, task_id: 12 })));
        assert_eq!(r.get(11), Some((0, s(11))));
        assert_eq!(r.remove(13), Some((5, s(13))));
        r.retain(|id| id != 10);
        let mut order = Vec::new();
        while let Some((e, small)) = r.pop_head() {
            assert_eq!(small.attempts() as u64, e.task_id);
            order.push((e.priority, e.task_id));
        }
        assert_eq!(order, vec![(5, 12), (5, 14), (0, 11), (-1, 9)]);
        assert_eq!((r.len(), r.head(), r.runs.len()), (0, None, 0), "no empty run is left");
    }

    #[test]
    fn a_task_built_from_its_record_has_its_spec_and_what_was_kept() {
        let defaults = Defaults { lease: Duration::from_secs(30), max_attempts: 3 };
        let epoch = Instant::now();
        let p = Place { queue: 2, class: 1, priority: 7, small: Small::new(1, 1500).unwrap() };
        let spec = TaskSpec {
            key: "k".into(),
            payload: Bytes::from_static(b"{\"steps\":[]}"),
            priority: 7,
            max_attempts: 5,
            ..Default::default()
        };
        let stored = StoredTask { spec: Some(spec), submitted_unix_ms: 42, not_before_unix_ms: 0 };
        let (t, payload) = build(p, Ok(stored), defaults, epoch);
        assert_eq!(payload.as_deref(), Ok(&b"{\"steps\":[]}"[..]));
        assert_eq!((t.queue, t.class, t.priority, t.attempts), (2, 1, 7, 1));
        assert_eq!((t.key.as_str(), t.max_attempts, t.lease, t.submitted_unix_ms), ("k", 5, defaults.lease, 42));
        assert_eq!((&t.state, t.payload.is_none()), (&State::Ready, true), "the payload stays in the store");
        assert_eq!(t.ready_since, epoch + Duration::from_millis(1500));

        let (t, payload) = build(p, Err("gone".into()), defaults, epoch);
        assert_eq!(payload, Err("gone".to_string()));
        assert_eq!((t.priority, t.attempts, t.max_attempts, t.key.as_str()), (7, 1, 3, ""));
    }
}
