//! Task ids in id order, kept for listing newest first ([`OrderedIds`]).
//!
//! Listing by queue with a cursor needs the ids in order, but a sorted tree costs a node walk and an
//! allocation per task on the hot path, and testing ids against the task map costs a hash lookup each. Ids
//! are allocated in increasing order, so tasks mostly arrive in id order and mostly leave oldest first: a
//! sorted deque appended at the back costs one push per new task, and a departure marks its id dead in place
//! (found by binary search over the deque, no hash lookup), popping dead ids off the front. Dead ids in the
//! middle (tasks that finished out of order) are dropped by one compaction once they outnumber the live ones,
//! amortised over as many removals.
//!
//! **Invariant:** the deque is sorted by id and holds every live id exactly once, unmarked; every other entry
//! is marked dead ([`DEAD`]); the front is never dead. An id that arrives out of order (a follow-up written by
//! another shard, a recovered task) is inserted at its place, near the back in practice.
//!
//! Cost: 8 bytes per live id, up to twice that (plus [`SLACK`]) while dead ids wait for a compaction.

use std::collections::VecDeque;

/// The mark of a departed id (task ids stay far below 2^63).
const DEAD: u64 = 1 << 63;

/// Dead ids tolerated beside the live ones before a compaction (so small sets never compact).
const SLACK: usize = 1024;

/// A sorted set of ids with removal in place. See the module doc.
#[derive(Debug, Default)]
pub struct OrderedIds {
    ids: VecDeque<u64>,
    /// Entries marked dead.
    dead: usize,
}

impl OrderedIds {
    /// Adds `id` (not already live).
    pub fn insert(&mut self, id: u64) {
        match self.ids.back() {
            Some(&last) if last & !DEAD >= id => {
                let at = self.position_from_back(id);
                match self.ids.get_mut(at) {
                    // A departed entry of the same id comes back to life (not expected, but harmless).
                    Some(x) if *x & !DEAD == id => {
                        if *x & DEAD != 0 {
                            *x = id;
                            self.dead -= 1;
                        }
                    }
                    _ => self.ids.insert(at, id),
                }
            }
            _ => self.ids.push_back(id),
        }
    }

    /// The index of the first entry in `lo..hi` not below `id` (`hi` if none), by binary search.
    fn first_not_below(&self, id: u64, mut lo: usize, mut hi: usize) -> usize {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.ids[mid] & !DEAD < id {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The index of the first entry not below `id`, galloping from the front: departures are mostly near
    /// the front (the oldest tasks finish first), so the search stays in a few hot cache lines.
    fn position_from_front(&self, id: u64) -> usize {
        let n = self.ids.len();
        let below = |i: usize| self.ids[i] & !DEAD < id;
        if n == 0 || !below(0) {
            return 0;
        }
        // Invariant: below(prev).
        let (mut prev, mut step) = (0, 1);
        loop {
            let j = prev + step;
            if j >= n {
                return self.first_not_below(id, prev + 1, n);
            }
            if !below(j) {
                return self.first_not_below(id, prev + 1, j + 1);
            }
            prev = j;
            step *= 2;
        }
    }

    /// The same, galloping from the back (the caller knows the last entry is not below `id`): ids that arrive
    /// out of order are mostly a little older than the newest.
    fn position_from_back(&self, id: u64) -> usize {
        let n = self.ids.len();
        let below = |i: usize| self.ids[i] & !DEAD < id;
        // Invariant: !below(n - 1 - step / 2).
        let mut step = 1;
        while step < n && !below(n - 1 - step) {
            step *= 2;
        }
        let lo = n.saturating_sub(step);
        self.first_not_below(id, lo, n - step / 2)
    }

    /// `id` left: marked dead in place, then dead ids are popped off the front, and all of them are dropped
    /// once they outnumber the live ones. An id not held is ignored.
    pub fn remove(&mut self, id: u64) {
        if self.ids.front() == Some(&id) {
            self.ids.pop_front();
        } else {
            let at = self.position_from_front(id);
            match self.ids.get_mut(at) {
                Some(x) if *x == id => *x |= DEAD,
                _ => return,
            }
            self.dead += 1;
        }
        while self.ids.front().is_some_and(|&x| x & DEAD != 0) {
            self.ids.pop_front();
            self.dead -= 1;
        }
        if self.dead > self.ids.len() - self.dead + SLACK {
            self.ids.retain(|&x| x & DEAD == 0);
            self.dead = 0;
        }
    }

    /// The live ids below `before` (0: all), newest first.
    pub fn before(&self, before: u64) -> impl Iterator<Item = u64> + '_ {
        let end = if before == 0 { self.ids.len() } else { self.ids.partition_point(|&x| x & !DEAD < before) };
        self.ids.range(..end).rev().copied().filter(|&x| x & DEAD == 0)
    }

    /// The live ids, oldest first.
    pub fn oldest(&self) -> impl Iterator<Item = u64> + '_ {
        self.ids.iter().copied().filter(|&x| x & DEAD == 0)
    }

    /// Entries held, dead ones included (memory accounting).
    pub fn held(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A model: the live set, and the deque checked against it after every step.
    struct Model {
        live: BTreeSet<u64>,
        ids: OrderedIds,
    }

    impl Model {
        fn new() -> Model {
            Model { live: BTreeSet::new(), ids: OrderedIds::default() }
        }
        fn insert(&mut self, id: u64) {
            self.live.insert(id);
            self.ids.insert(id);
        }
        fn remove(&mut self, id: u64) {
            assert!(self.live.remove(&id));
            self.ids.remove(id);
        }
        fn check(&self) {
            let want: Vec<u64> = self.live.iter().rev().copied().collect();
            assert_eq!(self.ids.before(0).collect::<Vec<_>>(), want);
            let raw = &self.ids.ids;
            assert!(raw.iter().zip(raw.iter().skip(1)).all(|(a, b)| a & !DEAD < b & !DEAD), "sorted");
            assert!(raw.front().is_none_or(|&x| x & DEAD == 0), "the front is live");
            assert_eq!(raw.iter().filter(|&&x| x & DEAD != 0).count(), self.ids.dead);
        }
    }

    #[test]
    fn lists_live_ids_newest_first_below_a_cursor() {
        let mut m = Model::new();
        for id in 1..=10 {
            m.insert(id);
        }
        m.remove(3);
        m.remove(7);
        m.check();
        assert_eq!(m.ids.before(6).collect::<Vec<_>>(), vec![5, 4, 2, 1]);
        assert_eq!(m.ids.before(1).count(), 0);
        // Out of order (a follow-up from another shard): at its place.
        m.insert(3);
        m.check();
        assert_eq!(m.ids.before(5).collect::<Vec<_>>(), vec![4, 3, 2, 1]);
        m.ids.remove(99);
        m.check();
    }

    #[test]
    fn oldest_first_departures_leave_nothing_behind_and_the_rest_is_compacted() {
        let mut m = Model::new();
        // A FIFO queue: departures pop the front.
        for id in 1..=100_000u64 {
            m.insert(id);
            if id > 10 {
                m.remove(id - 10);
            }
        }
        m.check();
        assert_eq!(m.ids.held(), 10);
        // Departures in the middle, behind a live front: compacted once they outnumber the live ids.
        for id in 100_001..=110_000u64 {
            m.insert(id);
        }
        for id in (100_001..=110_000u64).filter(|id| id % 10 != 0) {
            m.remove(id);
        }
        m.check();
        assert!(m.ids.held() <= 2 * m.live.len() + SLACK + 1, "held {} for {} live", m.ids.held(), m.live.len());
    }

    #[test]
    fn random_arrivals_and_departures_keep_the_order_and_lose_nothing() {
        let mut m = Model::new();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut top = 0;
        for step in 0..50_000 {
            match next() % 4 {
                // A new task, sometimes a little older than the newest (a follow-up from another shard).
                0 | 1 => {
                    top += 1 + next() % 3;
                    let id = top.saturating_sub(next() % 40);
                    if id > 0 && !m.live.contains(&id) {
                        m.insert(id);
                    }
                }
                // A departure, mostly among the oldest.
                _ => {
                    let n = m.live.len();
                    if n > 0 {
                        let k = (next() as usize % n).min(next() as usize % 64);
                        let id = *m.live.iter().nth(k).unwrap();
                        m.remove(id);
                    }
                }
            }
            if step % 997 == 0 {
                m.check();
            }
        }
        m.check();
    }
}
