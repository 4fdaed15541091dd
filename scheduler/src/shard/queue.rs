//! One named queue inside a shard: ready tasks by (priority, submit order), delayed tasks by time, the
//! agents waiting with credits, and the dead-letter set.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};

use tokio::time::Instant;

use crate::connection::ConnId;

/// A ready task in the heap: higher priority first, then lower id (= earlier submit) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyEntry {
    /// Task priority.
    pub priority: i32,
    /// Task id (monotonic, so it is also the submit order).
    pub task_id: u64,
}

impl Ord for ReadyEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.cmp(&other.priority).then_with(|| other.task_id.cmp(&self.task_id))
    }
}

impl PartialOrd for ReadyEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// State of one queue. Owned by its shard; never shared.
#[derive(Debug)]
pub struct Queue {
    /// The queue's name.
    pub name: String,
    /// Ready tasks.
    pub ready: BinaryHeap<ReadyEntry>,
    /// Tasks waiting for their not-before time.
    pub delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Agents with credits for this queue, served round-robin.
    pub waiting: VecDeque<ConnId>,
    /// Outstanding credits per agent connection.
    pub credits: HashMap<ConnId, u32>,
    /// Dead-lettered task ids, oldest first.
    pub dead: BTreeSet<u64>,
    /// Tasks of this queue currently leased.
    pub leased: u64,
    /// Recovered tasks held for their agents to reclaim (the reclaim grace after startup).
    pub held: u64,
}

impl Queue {
    /// An empty queue.
    pub fn new(name: String) -> Self {
        Queue {
            name,
            ready: BinaryHeap::new(),
            delayed: BinaryHeap::new(),
            waiting: VecDeque::new(),
            credits: HashMap::new(),
            dead: BTreeSet::new(),
            leased: 0,
            held: 0,
        }
    }

    /// Adds `n` credits for `conn`, queuing the agent if it had none.
    pub fn add_credit(&mut self, conn: ConnId, n: u32) {
        if n == 0 {
            return;
        }
        let c = self.credits.entry(conn).or_insert(0);
        if *c == 0 {
            self.waiting.push_back(conn);
        }
        *c = c.saturating_add(n);
    }

    /// Takes one credit from the next agent in round-robin order.
    pub fn take_credit(&mut self) -> Option<ConnId> {
        while let Some(conn) = self.waiting.pop_front() {
            let Some(c) = self.credits.get_mut(&conn) else { continue };
            if *c == 0 {
                self.credits.remove(&conn);
                continue;
            }
            *c -= 1;
            if *c > 0 {
                self.waiting.push_back(conn);
            } else {
                self.credits.remove(&conn);
            }
            return Some(conn);
        }
        None
    }

    /// Forgets an agent's credits (it disconnected).
    pub fn remove_agent(&mut self, conn: ConnId) {
        if self.credits.remove(&conn).is_some() {
            self.waiting.retain(|c| *c != conn);
        }
    }

    /// Sum of outstanding credits.
    pub fn total_credits(&self) -> u64 {
        self.credits.values().map(|c| u64::from(*c)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_order_is_priority_then_fifo() {
        let mut q = Queue::new("q".into());
        for (p, id) in [(0, 1), (5, 2), (0, 3), (5, 4), (-1, 5)] {
            q.ready.push(ReadyEntry { priority: p, task_id: id });
        }
        let order: Vec<u64> = std::iter::from_fn(|| q.ready.pop().map(|e| e.task_id)).collect();
        assert_eq!(order, vec![2, 4, 1, 3, 5]);
    }

    #[test]
    fn credits_are_served_round_robin() {
        let mut q = Queue::new("q".into());
        q.add_credit(1, 2);
        q.add_credit(2, 1);
        q.add_credit(1, 1);
        let got: Vec<ConnId> = std::iter::from_fn(|| q.take_credit()).collect();
        assert_eq!(got, vec![1, 2, 1, 1]);
        assert_eq!(q.total_credits(), 0);
        q.add_credit(3, 2);
        q.remove_agent(3);
        assert_eq!(q.take_credit(), None);
    }
}
