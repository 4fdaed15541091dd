//! Kept outcomes: what a finished task reported, kept for `--result-retention` so a producer can still ask,
//! within a node-wide budget of `--max-results` outcomes and `--max-results-bytes` bytes.
//!
//! **Invariants.** A shard keeps an outcome only once the record holding it (`Finish`) is durable. Outcomes
//! leave oldest first: at expiry, or earlier while the node is over its budget. The budget is shared by the
//! node's shards without contention: each shard counts what it keeps itself and publishes its totals in its
//! own cache line of [`ResultsBudget`] once per round, and trims while its own count plus the others' last
//! published counts are over either bound. (Counting every outcome in shared counters made the shards' ack
//! paths contend for one cache line.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use pm_protocol::pb::{self, TaskState};

use crate::idmap::IdMap;
use crate::store::MAX_RESERVED_RESULTS;

/// The node's budget for kept outcomes, shared by its shards (see the module doc).
#[derive(Debug)]
pub struct ResultsBudget {
    /// Most outcomes (`--max-results`).
    pub max_count: usize,
    /// Most bytes of encoded outcomes (`--max-results-bytes`).
    pub max_bytes: usize,
    /// What each shard keeps: (outcomes, bytes), each on its own cache line.
    kept: Box<[KeptSlot]>,
}

/// One shard's published totals.
#[derive(Debug, Default)]
#[repr(align(128))]
struct KeptSlot {
    count: AtomicUsize,
    bytes: AtomicUsize,
}

impl ResultsBudget {
    /// A budget for `shards` shards.
    pub fn new(max_count: usize, max_bytes: usize, shards: usize) -> ResultsBudget {
        ResultsBudget { max_count, max_bytes, kept: (0..shards.max(1)).map(|_| KeptSlot::default()).collect() }
    }

    /// Shard `index` keeps `count` outcomes of `bytes` bytes now.
    fn publish(&self, index: usize, count: usize, bytes: usize) {
        if let Some(slot) = self.kept.get(index) {
            if slot.count.load(Ordering::Relaxed) != count {
                slot.count.store(count, Ordering::Relaxed);
            }
            if slot.bytes.load(Ordering::Relaxed) != bytes {
                slot.bytes.store(bytes, Ordering::Relaxed);
            }
        }
    }

    /// What the shards other than `index` last published: (outcomes, bytes).
    fn others(&self, index: usize) -> (usize, usize) {
        self.kept
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .fold((0, 0), |(c, b), (_, s)| (c + s.count.load(Ordering::Relaxed), b + s.bytes.load(Ordering::Relaxed)))
    }

    /// What all shards last published: (outcomes, bytes).
    pub fn total(&self) -> (usize, usize) {
        self.others(usize::MAX)
    }
}

/// The outcome of a finishing task: kept once its round is durable and sent to its watchers.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) state: TaskState,
    /// The task's queue (its id in the shard).
    pub(super) queue: u32,
    /// The encoded status (as written in the task's Finish record) and when it expires, when results are kept
    /// or the task is watched.
    pub(super) kept: Option<(Bytes, u64)>,
    /// The status itself, when the task had watchers as it finished (else decoded from `kept` for one that
    /// came since).
    pub(super) status: Option<Box<pb::TaskStatus>>,
}

/// A kept outcome: the encoded [`pb::TaskStatus`], and what listings filter on without decoding it.
#[derive(Debug)]
pub(super) struct Kept {
    pub(super) body: Bytes,
    /// The task's queue (its id in the shard).
    pub(super) queue: u32,
    pub(super) state: TaskState,
}

/// One shard's kept outcomes (encoded [`pb::TaskStatus`]), by task and in expiry order.
///
/// There is no index in id order for listings: kept outcomes finish out of id order, and keeping one sorted
/// cost ~4 % of the node's peak throughput (docs/notes/listings.md). A listing scans them instead, bounded
/// by `--max-results`, with the cheap filters (queue, state) read off [`Kept`].
#[derive(Debug, Default)]
pub(super) struct KeptResults {
    results: IdMap<u64, Kept>,
    /// (expiry, task id), oldest first.
    order: VecDeque<(u64, u64)>,
    /// Bytes of `results`.
    bytes: usize,
    /// What the other shards keep, as last published in the budget.
    others: (usize, usize),
}

impl KeptResults {
    /// Keeps `body` (of a task of `queue` that ended in `state`) as `task_id`'s outcome until `expires`, then
    /// trims to the budget.
    pub(super) fn keep(&mut self, task_id: u64, kept: Kept, expires: u64, budget: &ResultsBudget) {
        if self.results.is_empty() {
            // Sized once for the most it may hold: growing a map of ~60 k outcomes rehashed it in one go and
            // held this shard for milliseconds (docs/notes/lease-while-syncing.md). Only the control bytes are
            // touched now.
            let most = budget.max_count.min(MAX_RESERVED_RESULTS);
            self.results.reserve(most);
            self.order.reserve(most);
        }
        self.bytes += kept.body.len();
        if let Some(old) = self.results.insert(task_id, kept) {
            self.bytes -= old.body.len();
        }
        self.order.push_back((expires, task_id));
        self.trim(budget);
    }

    fn forget(&mut self, task_id: u64) {
        if let Some(old) = self.results.remove(&task_id) {
            self.bytes -= old.body.len();
        }
    }

    /// The kept outcome of `task_id`.
    pub(super) fn get(&self, task_id: u64) -> Option<&Bytes> {
        self.results.get(&task_id).map(|k| &k.body)
    }

    /// The kept outcome of `task_id`, with what listings filter on.
    pub(super) fn get_kept(&self, task_id: u64) -> Option<&Kept> {
        self.results.get(&task_id)
    }

    /// The ids of the kept outcomes below `before` (0: all) that `keep` accepts, newest first: a scan of
    /// every kept outcome (see the type's doc).
    pub(super) fn ids_below(&self, before: u64, keep: impl Fn(&Kept) -> bool) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .results
            .iter()
            .filter(|(id, k)| (before == 0 || **id < before) && keep(k))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    }

    /// How many are kept.
    pub(super) fn len(&self) -> usize {
        self.results.len()
    }

    /// Drops the outcomes that expired at or before `now_ms`.
    pub(super) fn expire(&mut self, now_ms: u64) {
        while let Some(&(exp, id)) = self.order.front() {
            if exp > now_ms {
                break;
            }
            self.order.pop_front();
            self.forget(id);
        }
    }

    /// Publishes this shard's totals (shard `index`), reads the others', and trims to the budget: once a round.
    pub(super) fn publish(&mut self, budget: &ResultsBudget, index: usize) {
        budget.publish(index, self.results.len(), self.bytes);
        self.others = budget.others(index);
        self.trim(budget);
    }

    /// Forgets the oldest outcomes while the node is over its budget.
    fn trim(&mut self, budget: &ResultsBudget) {
        let (other_count, other_bytes) = self.others;
        while self.results.len() + other_count > budget.max_count || self.bytes + other_bytes > budget.max_bytes {
            let Some((_, id)) = self.order.pop_front() else { break };
            self.forget(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: usize) -> Kept {
        Kept { body: Bytes::from(vec![0u8; n]), queue: 0, state: TaskState::Succeeded }
    }

    #[test]
    fn outcomes_expire_oldest_first() {
        let budget = ResultsBudget::new(100, 1 << 20, 1);
        let mut kept = KeptResults::default();
        kept.keep(1, body(10), 1_000, &budget);
        kept.keep(2, body(10), 2_000, &budget);
        kept.expire(1_500);
        assert!(kept.get(1).is_none());
        assert!(kept.get(2).is_some());
        kept.expire(2_000);
        assert_eq!(kept.len(), 0);
    }

    #[test]
    fn the_oldest_go_first_when_over_the_count_or_the_bytes() {
        let budget = ResultsBudget::new(2, 25, 1);
        let mut kept = KeptResults::default();
        kept.keep(1, body(10), 1_000, &budget);
        kept.keep(2, body(10), 1_001, &budget);
        kept.keep(3, body(10), 1_002, &budget);
        assert_eq!((kept.get(1), kept.len()), (None, 2), "over the count: the oldest went");
        kept.keep(4, body(20), 1_003, &budget);
        assert_eq!(kept.len(), 1, "over the bytes: all but the newest went");
        assert!(kept.get(4).is_some());
    }

    #[test]
    fn what_other_shards_published_counts_against_the_budget() {
        let budget = ResultsBudget::new(3, 1 << 20, 2);
        let (mut a, mut b) = (KeptResults::default(), KeptResults::default());
        for id in 0..3 {
            a.keep(id, body(1), 1_000 + id, &budget);
        }
        a.publish(&budget, 0);
        assert_eq!(budget.total(), (3, 3));
        b.keep(10, body(1), 5_000, &budget);
        b.publish(&budget, 1);
        assert_eq!(b.len(), 0, "the node is full with shard 0's outcomes");
    }
}
