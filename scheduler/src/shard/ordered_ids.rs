//! Task ids in id order, kept for listing newest first ([`OrderedIds`]).
//!
//! Listing by queue with a cursor needs the ids in order, but a sorted tree costs a node walk and an
//! allocation per task on the hot path. Ids are allocated in increasing order, so tasks mostly arrive in id
//! order and mostly leave oldest first: a sorted deque appended at the back and forgotten *lazily* costs one
//! push per task. A departed id stays in the deque as garbage until it reaches the front (popped in O(1) by the
//! next inserts) or until garbage outgrows the live ids (one compaction, amortised over as many removals).
//!
//! **Invariant:** the deque is sorted and holds every live id of its owner, plus garbage the caller's
//! `is_live` test rejects; readers skip garbage. An id that arrives out of order (a follow-up written by
//! another shard, a recovered task) is inserted at its place, near the back in practice.
//!
//! Cost: 8 bytes per live id, up to twice that while garbage waits for a compaction.

use std::collections::VecDeque;

/// Garbage tolerated beside the live ids before a compaction (so small sets never compact).
const SLACK: usize = 1024;

/// Most garbage ids dropped from the front per insert: keeps an insert O(1) while the front catches up.
const PRUNE_PER_INSERT: usize = 4;

/// A sorted set of ids with lazy removal. See the module doc.
#[derive(Debug, Default)]
pub struct OrderedIds {
    ids: VecDeque<u64>,
    /// Ids added minus ids removed: how many of `ids` are live.
    live: usize,
}

impl OrderedIds {
    /// Adds `id` (not already live). `is_live` tells garbage from live ids, to prune the front.
    pub fn insert(&mut self, id: u64, is_live: impl Fn(u64) -> bool) {
        match self.ids.back() {
            None => self.ids.push_back(id),
            Some(&last) if last < id => self.ids.push_back(id),
            Some(_) => {
                let at = self.ids.partition_point(|&x| x < id);
                if self.ids.get(at) != Some(&id) {
                    self.ids.insert(at, id);
                }
            }
        }
        self.live += 1;
        for _ in 0..PRUNE_PER_INSERT {
            match self.ids.front() {
                Some(&front) if front != id && !is_live(front) => {
                    self.ids.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Notes that a live id left (it stays as garbage). Compacts once garbage outgrows the live ids.
    pub fn removed(&mut self, is_live: impl Fn(u64) -> bool) {
        self.live = self.live.saturating_sub(1);
        if self.ids.len() > 2 * self.live + SLACK {
            self.ids.retain(|&id| is_live(id));
            self.live = self.ids.len();
        }
    }

    /// The ids below `before` (0: all), newest first, garbage included (the caller skips it).
    pub fn before(&self, before: u64) -> impl Iterator<Item = u64> + '_ {
        let end = if before == 0 { self.ids.len() } else { self.ids.partition_point(|&x| x < before) };
        self.ids.range(..end).rev().copied()
    }

    /// The ids, oldest first, garbage included.
    pub fn oldest(&self) -> impl Iterator<Item = u64> + '_ {
        self.ids.iter().copied()
    }

    /// Ids held, garbage included (memory accounting).
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
        fn insert(&mut self, id: u64) {
            self.live.insert(id);
            let live = self.live.clone();
            self.ids.insert(id, |x| live.contains(&x));
        }
        fn remove(&mut self, id: u64) {
            assert!(self.live.remove(&id));
            let live = self.live.clone();
            self.ids.removed(|x| live.contains(&x));
        }
        fn listed(&self, before: u64) -> Vec<u64> {
            self.ids.before(before).filter(|x| self.live.contains(x)).collect()
        }
        fn check(&self) {
            let want: Vec<u64> = self.live.iter().rev().copied().collect();
            assert_eq!(self.listed(0), want);
            assert!(self.ids.ids.iter().zip(self.ids.ids.iter().skip(1)).all(|(a, b)| a < b), "sorted");
        }
    }

    #[test]
    fn lists_live_ids_newest_first_below_a_cursor() {
        let mut m = Model { live: BTreeSet::new(), ids: OrderedIds::default() };
        for id in 1..=10 {
            m.insert(id);
        }
        m.remove(3);
        m.remove(7);
        m.check();
        assert_eq!(m.listed(6), vec![5, 4, 2, 1]);
        assert_eq!(m.listed(1), Vec::<u64>::new());
        // Out of order (a follow-up from another shard): at its place.
        m.insert(3);
        m.check();
        assert_eq!(m.listed(5), vec![4, 3, 2, 1]);
    }

    #[test]
    fn oldest_first_departures_leave_no_garbage_behind_and_the_rest_is_compacted() {
        let mut m = Model { live: BTreeSet::new(), ids: OrderedIds::default() };
        // A FIFO queue: the front is pruned by the inserts.
        for id in 1..=100_000u64 {
            m.insert(id);
            if id > 10 {
                m.remove(id - 10);
            }
        }
        m.check();
        assert!(m.ids.held() <= 10 + PRUNE_PER_INSERT + 1, "held {}", m.ids.held());
        // Departures in the middle: compacted once garbage outgrows the live ids.
        for id in 100_001..=110_000u64 {
            m.insert(id);
        }
        for id in (100_001..=110_000u64).filter(|id| id % 10 != 0) {
            m.remove(id);
        }
        m.check();
        assert!(m.ids.held() <= 2 * m.live.len() + SLACK + 1, "held {} for {} live", m.ids.held(), m.live.len());
    }
}
