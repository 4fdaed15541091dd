//! One named queue inside a shard: ready tasks by (priority, submit order), delayed tasks by time, the
//! agents waiting with credits, and the dead-letter set.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};

use pm_protocol::pb::LeasedTask;

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
    /// Peer nodes with credits for this queue (work stealing), served only when no agent has credit.
    pub peer_waiting: VecDeque<ConnId>,
    /// Outstanding credits per agent or peer connection.
    pub credits: HashMap<ConnId, u32>,
    /// The connections in `credits` that are peer nodes.
    peers: HashSet<ConnId>,
    /// Sum of the agents' credits (peers excluded).
    local_credits: u64,
    /// Sum of the peers' credits.
    peer_credits: u64,
    /// Tasks leased by a peer node that this node took for its agents, in arrival order (see `crate::steal`).
    pub foreign: VecDeque<(Instant, LeasedTask)>,
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
            peer_waiting: VecDeque::new(),
            credits: HashMap::new(),
            peers: HashSet::new(),
            local_credits: 0,
            peer_credits: 0,
            foreign: VecDeque::new(),
            dead: BTreeSet::new(),
            leased: 0,
            held: 0,
        }
    }

    /// Adds `n` credits for `conn` (a peer node if `peer`), queuing it if it had none.
    pub fn add_credit(&mut self, conn: ConnId, n: u32, peer: bool) {
        if n == 0 {
            return;
        }
        let c = self.credits.entry(conn).or_insert(0);
        let before = *c;
        if *c == 0 {
            if peer {
                self.peers.insert(conn);
                self.peer_waiting.push_back(conn);
            } else {
                self.waiting.push_back(conn);
            }
        }
        *c = c.saturating_add(n);
        let added = u64::from(*c - before);
        if peer {
            self.peer_credits += added;
        } else {
            self.local_credits += added;
        }
    }

    /// Replaces `conn`'s credits with `n` (0 withdraws them).
    pub fn set_credit(&mut self, conn: ConnId, n: u32, peer: bool) {
        self.remove_agent(conn);
        self.add_credit(conn, n, peer);
    }

    /// Takes one credit: from the next agent in round-robin order, else from the next peer node.
    pub fn take_credit(&mut self) -> Option<ConnId> {
        if let Some(conn) = self.take_local_credit() {
            return Some(conn);
        }
        let conn = take_from(&mut self.peer_waiting, &mut self.credits)?;
        self.peer_credits = self.peer_credits.saturating_sub(1);
        if !self.credits.contains_key(&conn) {
            self.peers.remove(&conn);
        }
        Some(conn)
    }

    /// Takes one credit from the next agent (never a peer node).
    pub fn take_local_credit(&mut self) -> Option<ConnId> {
        let conn = take_from(&mut self.waiting, &mut self.credits)?;
        self.local_credits = self.local_credits.saturating_sub(1);
        Some(conn)
    }

    /// True when an agent or a peer node has credit.
    pub fn has_credit(&self) -> bool {
        !self.waiting.is_empty() || !self.peer_waiting.is_empty()
    }

    /// Forgets a connection's credits (it disconnected, or sets new ones).
    pub fn remove_agent(&mut self, conn: ConnId) {
        if let Some(n) = self.credits.remove(&conn) {
            if self.peers.remove(&conn) {
                self.peer_waiting.retain(|c| *c != conn);
                self.peer_credits = self.peer_credits.saturating_sub(u64::from(n));
            } else {
                self.waiting.retain(|c| *c != conn);
                self.local_credits = self.local_credits.saturating_sub(u64::from(n));
            }
        }
    }

    /// Credits of the agents, peers excluded (what this node could take from peers for them).
    pub fn local_credits(&self) -> u64 {
        self.local_credits
    }

    /// Sum of outstanding credits (agents and peers).
    pub fn total_credits(&self) -> u64 {
        self.local_credits + self.peer_credits
    }
}

/// Takes one credit from the next connection of `waiting` in round-robin order.
fn take_from(waiting: &mut VecDeque<ConnId>, credits: &mut HashMap<ConnId, u32>) -> Option<ConnId> {
    while let Some(conn) = waiting.pop_front() {
        let Some(c) = credits.get_mut(&conn) else { continue };
        if *c == 0 {
            credits.remove(&conn);
            continue;
        }
        *c -= 1;
        if *c > 0 {
            waiting.push_back(conn);
        } else {
            credits.remove(&conn);
        }
        return Some(conn);
    }
    None
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
        q.add_credit(1, 2, false);
        q.add_credit(2, 1, false);
        q.add_credit(1, 1, false);
        let got: Vec<ConnId> = std::iter::from_fn(|| q.take_credit()).collect();
        assert_eq!(got, vec![1, 2, 1, 1]);
        assert_eq!(q.total_credits(), 0);
        q.add_credit(3, 2, false);
        q.remove_agent(3);
        assert_eq!(q.take_credit(), None);
    }

    #[test]
    fn agents_are_served_before_peer_nodes_and_credits_can_be_set() {
        let mut q = Queue::new("q".into());
        q.add_credit(9, 2, true);
        q.add_credit(1, 1, false);
        assert_eq!(q.local_credits(), 1);
        assert_eq!(q.take_local_credit(), Some(1));
        assert_eq!(q.take_local_credit(), None, "a peer's credit is never local");
        q.add_credit(2, 1, false);
        let got: Vec<ConnId> = std::iter::from_fn(|| q.take_credit()).collect();
        assert_eq!(got, vec![2, 9, 9], "the agent first, then the peer");
        q.add_credit(9, 5, true);
        q.set_credit(9, 1, true);
        q.add_credit(3, 4, false);
        q.set_credit(3, 0, false);
        assert_eq!((q.total_credits(), q.local_credits()), (1, 0));
        assert_eq!(std::iter::from_fn(|| q.take_credit()).collect::<Vec<_>>(), vec![9]);
        assert!(!q.has_credit());
    }
}
