//! Enqueued tasks held back from the live set's map while a segment is replayed, then put in it in the order
//! of their buckets.
//!
//! Why: a restart replays every record of the log, and a backlog is millions of Enqueue records in a row.
//! Put in the map one by one, in the order of their ids, each lands in a bucket far from the one before (the
//! id hash spreads neighbours apart on purpose): a cache and TLB miss per task, most of a large restart. Held
//! here for one segment and then put in bucket order, they sweep the table front to back instead.
//!
//! The final state is the one of applying every record in order: a record that touches a held task (its ack,
//! attempt, dead letter, snapshot or finish) first puts that task in the map, and records of different tasks
//! only add to sums ([`super::live::Usage`], the largest id) that do not depend on their order.

use crate::idmap::IdMap;

/// Tasks enqueued in the segment being replayed, not yet in the live set's map (`T`: the live set's entry).
#[derive(Debug)]
pub(crate) struct Staged<T> {
    /// Whether Enqueue records are held here (during a replay only).
    pub(crate) on: bool,
    /// In log order; `None` once taken back out.
    tasks: Vec<(u64, Option<T>)>,
    /// Where each held task is in `tasks`.
    at: IdMap<u64, usize>,
}

impl<T> Default for Staged<T> {
    fn default() -> Self {
        Self { on: false, tasks: Vec::new(), at: IdMap::default() }
    }
}

impl<T> Staged<T> {
    /// Holds task `task_id`'s place. The caller has taken out any task of that id held before.
    pub(crate) fn hold(&mut self, task_id: u64, task: T) {
        self.at.insert(task_id, self.tasks.len());
        self.tasks.push((task_id, Some(task)));
    }

    /// Takes task `task_id` back out, if it is held.
    pub(crate) fn take(&mut self, task_id: u64) -> Option<T> {
        if self.at.is_empty() {
            return None;
        }
        let i = self.at.remove(&task_id)?;
        self.tasks.get_mut(i).and_then(|(_, t)| t.take())
    }

    /// Every held task, in the order of the buckets they go to in `map`, which is grown here first to hold
    /// them all ([`crate::idmap::sort_for_insert`]).
    pub(crate) fn drain_for(&mut self, map: &mut IdMap<u64, T>) -> Vec<(u64, T)>
    where
        T: Send,
    {
        self.at.clear();
        let mut tasks: Vec<(u64, T)> =
            std::mem::take(&mut self.tasks).into_iter().filter_map(|(id, t)| Some((id, t?))).collect();
        crate::idmap::sort_for_insert(map, &mut tasks);
        tasks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the live set's entry: its offset.
    fn task(off: u64) -> u64 {
        off
    }

    #[test]
    fn held_tasks_come_out_once_each() {
        let mut staged = Staged::default();
        for id in 0..1000u64 {
            staged.hold(id, task(id));
        }
        assert_eq!(staged.take(7), Some(7));
        assert!(staged.take(7).is_none(), "taken twice");
        assert!(staged.take(5000).is_none(), "never held");
        let mut map: IdMap<u64, u64> = IdMap::default();
        let drained = staged.drain_for(&mut map);
        assert_eq!(drained.len(), 999);
        assert!(drained.iter().all(|(id, t)| *id != 7 && t == id));
        assert!(map.capacity() >= 999, "the map was not grown for them");
        assert!(staged.drain_for(&mut map).is_empty(), "drained twice");
    }
}
