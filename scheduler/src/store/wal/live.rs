//! The live set: which tasks and keys are still needed, and which segment holds each one's full record.
//!
//! Recovery and the writer apply records through the same [`LiveSet::apply`], so the space accounting
//! after a restart is exactly the accounting before it. A segment may be deleted once nothing live points
//! into it; its live *bytes* (what compaction would have to copy) decide when it is worth compacting.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::format::Entry;
use crate::idtable::IdTable;
use crate::store::MAX_RESERVED_RESULTS;

/// Where a live task's current full record (Enqueue or Snapshot) is, and the state recorded after it.
///
/// 16 bytes, because a backlog holds millions (a dead task's reason is kept beside, in
/// [`LiveSet::dead`]). A segment is at most 4 GiB ([`MAX_SEGMENT_BYTES`](super::segment::MAX_SEGMENT_BYTES)) and its
/// index below 2^32 (the log refuses to start a segment beyond), so each place fits 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LiveTask {
    seg: u32,
    off: u32,
    size: u32,
    /// Newest attempt count.
    pub attempts: u32,
}

impl LiveTask {
    /// A task whose full record is at `seg`/`off`, `size` bytes long.
    pub(crate) fn at(seg: u64, off: u64, size: u64, attempts: u32) -> Self {
        // Unreachable saturation (see the type's doc), rather than a panic on a path driven by the log.
        let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        LiveTask { seg: narrow(seg), off: narrow(off), size: narrow(size), attempts }
    }

    /// Segment index holding the full record.
    pub(crate) fn seg(&self) -> u64 {
        self.seg.into()
    }

    /// Offset of that record in the segment.
    pub(crate) fn off(&self) -> u64 {
        self.off.into()
    }

    /// Encoded size of that record (what the task costs its segment).
    pub(crate) fn size(&self) -> u64 {
        self.size.into()
    }
}

/// Where an unexpired idempotency key is recorded.
#[derive(Debug, Clone)]
pub(crate) struct LiveKey {
    /// Task the key was submitted as.
    pub task_id: u64,
    /// Expiry, ms since the Unix epoch.
    pub expires_unix_ms: u64,
    /// Segment index of the record carrying the key.
    pub seg: u64,
    /// Offset of that record.
    pub off: u64,
}

/// Where a kept result (a Finish record) is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LiveResult {
    /// Segment index of the Finish record.
    pub seg: u64,
    /// Offset of that record.
    pub off: u64,
    /// Its encoded size.
    pub size: u64,
    /// Expiry, ms since the Unix epoch.
    pub expires_unix_ms: u64,
}

/// Live items per segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Tasks and keys whose record is in this segment.
    pub items: u64,
    /// Bytes compaction would have to copy to carry them forward.
    pub bytes: u64,
    /// Of `items`, the kept results (Finish records).
    pub results: u64,
    /// The largest (expiry, task id) of any result ever put in this segment (not lowered when results go).
    pub newest_result: (u64, u64),
}

/// Bytes a key costs when carried alone (a KeyCarry record).
fn key_cost(key: &str) -> u64 {
    key.len() as u64 + 40
}

/// A map keyed by task id (see [`crate::idmap`]).
pub(crate) type IdMap<V> = crate::idmap::IdMap<u64, V>;

/// Everything still needed, with its location.
#[derive(Debug, Default)]
pub(crate) struct LiveSet {
    /// Live tasks by id, in id order (a table, not a hash map: ~24 B a task, see `crate::idtable`).
    pub tasks: IdTable<LiveTask>,
    /// The reasons of the live tasks that are dead-lettered (few: kept apart from `tasks`).
    pub dead: IdMap<Box<str>>,
    /// Unexpired keys.
    pub keys: HashMap<String, LiveKey>,
    /// Live items per segment index (every existing segment has an entry).
    pub usage: BTreeMap<u64, Usage>,
    /// Largest task id seen in any record or segment header.
    pub max_task_id: u64,
    /// Earliest expiry among `keys` (a lower bound), so most `expire` calls do nothing.
    next_expiry: u64,
    /// Kept results by task id.
    pub results: IdMap<LiveResult>,
    /// `results` by (expiry, task id): the first ones go when the results expire or exceed `max_results`.
    result_order: ExpiryOrder,
    /// Most results kept (0: none; a Finish then only ends its task).
    pub max_results: usize,
}

/// (expiry, task id) pairs, smallest first. Results are almost always added in expiry order (a finish time
/// plus one retention), so they go to the back of a deque; the rare one that is not (a compacted copy of an
/// older result, a recovered log, a clock stepped back) goes to a sorted set beside it. Entries may be
/// duplicated or stale: the live set checks each one it takes against `results`.
#[derive(Debug, Default)]
struct ExpiryOrder {
    in_order: VecDeque<(u64, u64)>,
    late: BTreeSet<(u64, u64)>,
}

impl ExpiryOrder {
    fn push(&mut self, expires_unix_ms: u64, task_id: u64) {
        let item = (expires_unix_ms, task_id);
        match self.in_order.back() {
            Some(&last) if last > item => {
                self.late.insert(item);
            }
            _ => self.in_order.push_back(item),
        }
    }

    fn first(&self) -> Option<(u64, u64)> {
        match (self.in_order.front(), self.late.first()) {
            (Some(&a), Some(&b)) => Some(a.min(b)),
            (a, b) => a.or(b).copied(),
        }
    }

    fn pop_first(&mut self) -> Option<(u64, u64)> {
        let first = self.first()?;
        if self.late.first() == Some(&first) {
            self.late.pop_first()
        } else {
            self.in_order.pop_front()
        }
    }
}

impl LiveSet {
    /// Registers a new, empty segment.
    pub(crate) fn add_segment(&mut self, seg: u64) {
        self.usage.entry(seg).or_default();
    }

    /// Live items of `seg`.
    pub(crate) fn usage(&self, seg: u64) -> Usage {
        self.usage.get(&seg).copied().unwrap_or_default()
    }

    fn charge(&mut self, seg: u64, bytes: u64) {
        let u = self.usage.entry(seg).or_default();
        u.items += 1;
        u.bytes += bytes;
    }

    fn release(&mut self, seg: u64, bytes: u64) {
        if let Some(u) = self.usage.get_mut(&seg) {
            u.items = u.items.saturating_sub(1);
            u.bytes = u.bytes.saturating_sub(bytes);
        }
    }

    /// Applies one record written at `seg`/`off` with encoded `size`.
    pub(crate) fn apply(&mut self, entry: &Entry<'_>, seg: u64, off: u64, size: u64) {
        match *entry {
            Entry::Enqueue { task_id, idem, .. } => {
                self.put_task(task_id, LiveTask::at(seg, off, size, 0));
                if let Some(k) = idem {
                    self.put_key(k.key, LiveKey { task_id, expires_unix_ms: k.expires_unix_ms, seg, off });
                }
            }
            Entry::Snapshot { task_id, attempts, dead, idem, .. } => {
                self.put_task(task_id, LiveTask::at(seg, off, size, attempts));
                match dead {
                    Some(reason) => self.dead.insert(task_id, reason.into()),
                    None => self.dead.remove(&task_id),
                };
                if let Some(k) = idem {
                    self.put_key(k.key, LiveKey { task_id, expires_unix_ms: k.expires_unix_ms, seg, off });
                }
            }
            Entry::KeyCarry { task_id, idem } => {
                self.max_task_id = self.max_task_id.max(task_id);
                self.put_key(idem.key, LiveKey { task_id, expires_unix_ms: idem.expires_unix_ms, seg, off });
            }
            Entry::Attempt { task_id, attempts } => {
                if let Some(t) = self.tasks.get_mut(task_id) {
                    t.attempts = attempts;
                }
            }
            Entry::DeadLetter { task_id, reason } => {
                if self.tasks.contains(task_id) {
                    self.dead.insert(task_id, reason.into());
                }
            }
            Entry::Redrive { task_id } => {
                if let Some(t) = self.tasks.get_mut(task_id) {
                    t.attempts = 0;
                    self.dead.remove(&task_id);
                }
            }
            Entry::Ack { task_id } => self.drop_task(task_id),
            Entry::Finish { task_id, expires_unix_ms, .. } => {
                self.drop_task(task_id);
                self.max_task_id = self.max_task_id.max(task_id);
                if self.max_results > 0 {
                    self.put_result(task_id, LiveResult { seg, off, size, expires_unix_ms });
                }
            }
            Entry::Checkpoint | Entry::Group { .. } => {}
        }
    }

    fn drop_task(&mut self, task_id: u64) {
        if let Some(old) = self.tasks.remove(task_id) {
            self.release(old.seg(), old.size());
            if !self.dead.is_empty() {
                self.dead.remove(&task_id);
            }
        }
    }

    fn put_result(&mut self, task_id: u64, r: LiveResult) {
        if self.results.is_empty() {
            // Sized once for the most it may hold: growing a map of ~60 k results rehashed it in one go and held
            // the commit thread for milliseconds. Only the control bytes are touched now.
            let most = self.max_results.min(MAX_RESERVED_RESULTS);
            self.results.reserve(most);
            self.result_order.in_order.reserve(most);
        }
        self.charge(r.seg, r.size);
        if let Some(u) = self.usage.get_mut(&r.seg) {
            u.results += 1;
            u.newest_result = u.newest_result.max((r.expires_unix_ms, task_id));
        }
        self.result_order.push(r.expires_unix_ms, task_id);
        if let Some(old) = self.results.insert(task_id, r) {
            // The older entry of `result_order` is stale now unless the expiry is the same (a compacted copy);
            // `trim` and `expire` skip stale entries.
            self.release_result(old);
        }
    }

    fn release_result(&mut self, old: LiveResult) {
        self.release(old.seg, old.size);
        if let Some(u) = self.usage.get_mut(&old.seg) {
            u.results = u.results.saturating_sub(1);
        }
    }

    /// Forgets the oldest results while more than `max_results` are kept. Called after each batch of
    /// [`LiveSet::apply`] rather than per record: the forgotten entries are cold in memory, and one loop over
    /// a batch lets their cache misses overlap.
    /// Gives back the room the maps grew to while a log was replayed: they were sized for the busiest
    /// moment of the log, not for what is live at its end (see `crate::reclaim_memory`).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.tasks.shrink_to_fit();
        self.dead.shrink_to_fit();
        self.keys.shrink_to_fit();
        self.results.shrink_to_fit();
        self.result_order.in_order.shrink_to_fit();
    }

    pub(crate) fn trim(&mut self) {
        while self.results.len() > self.max_results {
            let Some((exp, id)) = self.result_order.pop_first() else { break };
            self.forget_result(id, exp);
        }
    }

    /// A bound on the `n` kept results that go first (by expiry: the ones the next `n` finishes push out when
    /// `max_results` are kept): every result whose (expiry, task id) is at most the bound is among them.
    /// `None` for `n == 0`.
    ///
    /// It counts the order's entries without looking each one up, so stale and duplicate entries (a result
    /// replaced or carried forward by compaction) make the bound earlier than the exact n-th result, never
    /// later: a result it names as going is always among the first `n`. Cheap: no lookups, and one index
    /// into the deque when no entry came out of order (walking every kept result here held the log's
    /// commits for ~30 ms once per segment).
    pub(crate) fn going_bound(&self, n: usize) -> Option<(u64, u64)> {
        let order = &self.result_order;
        if n == 0 {
            return None;
        }
        if order.late.is_empty() {
            return order.in_order.get(n - 1).or(order.in_order.back()).copied();
        }
        let mut a = order.in_order.iter().peekable();
        let mut b = order.late.iter().peekable();
        let mut last = None;
        for _ in 0..n {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x <= y => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, _) => b.next(),
            };
            match next {
                Some(&item) => last = Some(item),
                None => break,
            }
        }
        last
    }

    /// Forgets `task_id`'s result now (its order entry becomes stale).
    pub(crate) fn forget_result_now(&mut self, task_id: u64) {
        if let Some(old) = self.results.remove(&task_id) {
            self.release_result(old);
        }
    }

    /// Forgets `task_id`'s result if its expiry is still `exp` (else the order entry was stale).
    fn forget_result(&mut self, task_id: u64, exp: u64) {
        // One lookup: the entry is rarely stale, and a stale one's result goes back.
        if let Some(old) = self.results.remove(&task_id) {
            if old.expires_unix_ms == exp {
                self.release_result(old);
            } else {
                self.results.insert(task_id, old);
            }
        }
    }

    fn put_task(&mut self, task_id: u64, task: LiveTask) {
        self.max_task_id = self.max_task_id.max(task_id);
        self.charge(task.seg(), task.size());
        if let Some(old) = self.tasks.insert(task_id, task) {
            self.release(old.seg(), old.size());
        }
    }

    fn put_key(&mut self, key: &str, live: LiveKey) {
        let cost = key_cost(key);
        self.charge(live.seg, cost);
        self.next_expiry = self.next_expiry.min(live.expires_unix_ms);
        if self.keys.is_empty() {
            self.next_expiry = live.expires_unix_ms;
        }
        if let Some(old) = self.keys.insert(key.to_owned(), live) {
            self.release(old.seg, cost);
        }
    }

    /// Forgets keys and results that expired at or before `now_unix_ms`, releasing their segments.
    pub(crate) fn expire(&mut self, now_unix_ms: u64) {
        while let Some((exp, id)) = self.result_order.first() {
            if exp > now_unix_ms {
                break;
            }
            self.result_order.pop_first();
            self.forget_result(id, exp);
        }
        if self.keys.is_empty() || self.next_expiry > now_unix_ms {
            return;
        }
        let mut next = u64::MAX;
        let mut freed = Vec::new();
        self.keys.retain(|key, k| {
            if k.expires_unix_ms <= now_unix_ms {
                freed.push((k.seg, key_cost(key)));
                false
            } else {
                next = next.min(k.expires_unix_ms);
                true
            }
        });
        for (seg, cost) in freed {
            self.release(seg, cost);
        }
        self.next_expiry = next;
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::IdemRef;
    use super::*;

    /// (items, bytes) of segment `seg`.
    fn counts(live: &LiveSet, seg: u64) -> (u64, u64) {
        let u = live.usage(seg);
        (u.items, u.bytes)
    }

    #[test]
    fn a_replayed_busy_moment_leaves_no_oversized_map_behind() {
        let mut live = LiveSet::default();
        for id in 1..=100_000 {
            live.apply(&Entry::Enqueue { task_id: id, idem: None, body: b"x" }, 0, 48, 30);
        }
        for id in 1..100_000 {
            live.apply(&Entry::Ack { task_id: id }, 0, 48, 20);
        }
        live.shrink_to_fit();
        assert!(live.tasks.heap_bytes() < 16 << 10, "{} B held for one task", live.tasks.heap_bytes());
        assert_eq!(live.tasks.iter().map(|(id, _)| id).collect::<Vec<_>>(), vec![100_000], "what is live stays");
    }

    #[test]
    fn accounting_follows_records() {
        let mut live = LiveSet::default();
        let idem = Some(IdemRef { key: "k", expires_unix_ms: 100 });
        live.apply(&Entry::Enqueue { task_id: 1, idem, body: b"x" }, 0, 48, 30);
        live.apply(&Entry::Enqueue { task_id: 2, idem: None, body: b"y" }, 0, 78, 30);
        assert_eq!(counts(&live, 0), (3, 60 + key_cost("k")));
        live.apply(&Entry::Ack { task_id: 1 }, 1, 48, 20);
        assert_eq!(counts(&live, 0), (2, 30 + key_cost("k")));
        // The snapshot moves task 2 to segment 1.
        let snap = Entry::Snapshot { task_id: 2, attempts: 4, dead: None, idem: None, body: b"y" };
        live.apply(&snap, 1, 68, 33);
        assert_eq!(counts(&live, 0), (1, key_cost("k")));
        assert_eq!(live.tasks.get(2).map(|t| t.attempts), Some(4));
        live.expire(99);
        assert_eq!(live.usage(0).items, 1);
        live.expire(100);
        assert_eq!(live.usage(0), Usage::default());
        assert!(live.keys.is_empty());
        assert_eq!(live.max_task_id, 2);
    }

    #[test]
    fn results_are_kept_until_they_expire_or_exceed_the_maximum() {
        let mut live = LiveSet { max_results: 2, ..Default::default() };
        live.apply(&Entry::Enqueue { task_id: 1, idem: None, body: b"x" }, 0, 48, 30);
        live.apply(&Entry::Finish { task_id: 1, expires_unix_ms: 300, body: b"r" }, 0, 78, 25);
        assert_eq!(live.tasks.len(), 0);
        assert_eq!(counts(&live, 0), (1, 25));
        live.apply(&Entry::Finish { task_id: 2, expires_unix_ms: 100, body: b"r" }, 1, 48, 25);
        live.apply(&Entry::Finish { task_id: 3, expires_unix_ms: 200, body: b"r" }, 1, 73, 25);
        live.trim();
        // Three results, room for two: the one expiring soonest (task 2) goes.
        assert_eq!(live.results.len(), 2);
        assert!(!live.results.contains_key(&2));
        assert_eq!(counts(&live, 1), (1, 25));
        // Compaction writes task 1's result again, in segment 2.
        live.apply(&Entry::Finish { task_id: 1, expires_unix_ms: 300, body: b"r" }, 2, 48, 25);
        live.trim();
        assert_eq!((counts(&live, 0), live.results[&1].seg), ((0, 0), 2));
        live.expire(200);
        assert_eq!(live.results.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(counts(&live, 1), (0, 0));
        live.expire(300);
        assert!(live.results.is_empty() && counts(&live, 2) == (0, 0));
        assert_eq!(live.max_task_id, 3);
        let mut none = LiveSet::default();
        none.apply(&Entry::Finish { task_id: 4, expires_unix_ms: 300, body: b"r" }, 0, 48, 25);
        assert!(none.results.is_empty() && counts(&none, 0) == (0, 0), "max_results 0 keeps nothing");
    }

    /// Applies a kept result of `id` (expiring at `exp`) written in segment `seg`, then trims.
    fn finish(live: &mut LiveSet, id: u64, exp: u64, seg: u64) {
        live.apply(&Entry::Finish { task_id: id, expires_unix_ms: exp, body: b"r" }, seg, 48, 25);
        live.trim();
    }

    #[test]
    fn segments_count_their_results_and_the_going_bound_never_overshoots() {
        let mut live = LiveSet { max_results: 4, ..Default::default() };
        for (id, exp) in [(1, 100), (2, 200), (3, 300)] {
            finish(&mut live, id, exp, 0);
        }
        finish(&mut live, 4, 400, 1);
        let u = live.usage(0);
        assert_eq!((u.items, u.results, u.newest_result), (3, 3, (300, 3)));
        assert_eq!(live.usage(1).results, 1);
        assert_eq!(live.going_bound(0), None);
        assert_eq!(live.going_bound(2), Some((200, 2)), "the 2nd result by expiry");
        assert_eq!(live.going_bound(9), Some((400, 4)), "past the end: the last one");
        // Compaction carries task 1's result to segment 1: an older expiry arrives late, and the old entry
        // stays in the order as a duplicate. The bound may come earlier than the exact one, never later.
        finish(&mut live, 1, 100, 1);
        assert_eq!((live.usage(0).results, live.usage(1).results), (2, 2));
        let bound = live.going_bound(2).unwrap();
        assert!(bound <= (200, 2), "{bound:?}");
        // A fifth result pushes out the first (task 1): each segment's count follows.
        finish(&mut live, 5, 500, 1);
        assert_eq!(live.results.len(), 4);
        assert_eq!((live.usage(0).results, live.usage(1).results), (2, 2));
        live.expire(300);
        assert_eq!((live.usage(0).results, live.usage(0).items), (0, 0));
        assert_eq!(live.usage(0).newest_result, (300, 3), "the newest is kept as a bound");
    }

    #[test]
    fn results_out_of_expiry_order_expire_on_time() {
        let mut live = LiveSet { max_results: 3, ..Default::default() };
        finish(&mut live, 1, 100, 0);
        finish(&mut live, 2, 300, 0);
        finish(&mut live, 3, 200, 0); // out of order
        finish(&mut live, 1, 100, 1); // a compacted copy: same expiry, another segment
        assert_eq!(live.results.len(), 3);
        assert_eq!((live.usage(0).items, live.usage(1).items), (2, 1));
        live.expire(150);
        assert_eq!(live.results.keys().copied().collect::<Vec<_>>().len(), 2);
        assert!(!live.results.contains_key(&1) && counts(&live, 1) == (0, 0));
        live.expire(250);
        assert_eq!(live.results.keys().copied().collect::<Vec<_>>(), vec![2]);
        // Over the maximum, the one expiring first goes, whatever the order it came in.
        finish(&mut live, 5, 900, 2);
        finish(&mut live, 4, 400, 2);
        finish(&mut live, 6, 950, 2);
        assert_eq!(live.results.len(), 3);
        assert!(!live.results.contains_key(&2), "task 2 (300) goes first");
        finish(&mut live, 7, 990, 2);
        assert!(!live.results.contains_key(&4), "then task 4 (400), though it came after task 5");
        live.expire(10_000);
        assert!(live.results.is_empty());
        assert!(live.result_order.first().is_none(), "the stale copy of task 1 is gone too");
    }

    #[test]
    fn state_records_ignore_unknown_tasks() {
        let mut live = LiveSet::default();
        live.apply(&Entry::Attempt { task_id: 9, attempts: 1 }, 0, 48, 20);
        live.apply(&Entry::DeadLetter { task_id: 9, reason: "r" }, 0, 68, 20);
        live.apply(&Entry::Ack { task_id: 9 }, 0, 88, 20);
        assert_eq!(live.tasks.len(), 0);
        assert_eq!(live.usage(0), Usage::default());
    }
}
