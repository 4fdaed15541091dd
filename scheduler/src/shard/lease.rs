//! The lease table: every delivery a shard has handed out and not yet seen end, and the agents holding them.
//!
//! A lease is one delivery of one task to one connection, until a deadline. Its life:
//!
//! ```text
//! grant (dispatch, credit taken) ─┐
//! grant_reclaimed (Reclaim)  ─────┼─► live ──extend──► live (new deadline)
//!                                 │     │ ──move_to──► live on another connection (Reclaim after a reconnect)
//!                                 │     │ ──disconnect──► live, deadline cut to the grace period
//!                                 │     └─► end (ack, nack, cancel) / next_expired (deadline passed) ─► gone
//! ```
//!
//! **Invariants.** A lease id is in `leases` exactly while the lease is live, and then it is in the lease set
//! of the agent that holds it (if that agent is still known), and counted once in the agent's holdings
//! (`--max-leases-per-conn`). Every live lease has a heap entry at its current deadline; older heap entries
//! (from before an extend) are stale and skipped, so the heap never has to be searched. Lease ids name their
//! node and their shard ([`shard_of_lease`]), so an ack goes straight to the owner, and a lease id quoted to
//! the wrong node is never live there.
//!
//! What a lease means for its task and its queue (the task's state, the queue's leased count and per-key
//! limits) is the shard's business; this table only knows task ids.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::holdings::Holdings;
use crate::idmap::{IdMap, IdSet};
use crate::outbox::{ConnId, OutTx};

/// Lease ids: bit 63 clear (set: a stolen task's, see [`crate::stolen`]), bits 48–62 the node's ordinal (so a
/// lease id quoted to the wrong node is never live there), bits 0–47 a counter times the shard count plus the
/// shard's index.
pub const LEASE_NODE_SHIFT: u32 = 48;
pub(super) const LEASE_COUNTER_MASK: u64 = (1 << LEASE_NODE_SHIFT) - 1;

/// Which shard issued `lease_id`.
pub fn shard_of_lease(lease_id: u64, n: usize) -> usize {
    ((lease_id & LEASE_COUNTER_MASK) % n as u64) as usize
}

/// The next lease id of shard `index` of `shards` on the node whose ids start with `prefix`.
pub(super) fn mint_lease(next: &mut u64, prefix: u64, shards: usize, index: usize) -> u64 {
    if *next >= LEASE_COUNTER_MASK / shards as u64 {
        *next = 0; // after 2^48 / shards leases: start over, long after the first ones ended
    }
    let id = prefix | (*next * shards as u64 + index as u64);
    *next += 1;
    id
}

/// One live delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lease {
    /// The task delivered.
    pub(super) task_id: u64,
    /// The connection holding it.
    pub(super) conn: ConnId,
    /// When it expires unless extended.
    pub(super) deadline: Instant,
}

/// An agent (or peer node) connection as the shard knows it.
#[derive(Debug, Default)]
pub(super) struct Agent {
    /// Where its leases and revocations go.
    pub(super) out: Option<OutTx>,
    /// Boxed and made only on the first lease: an agent waiting with credits (the common case among many
    /// connected agents) then costs 32 bytes in `agents` instead of 56.
    leases: Option<Box<IdSet<u64>>>,
    /// Its credits and leases across the node (`--max-leases-per-conn`); released when a lease ends.
    pub(super) holdings: Option<Arc<Holdings>>,
}

impl Agent {
    /// Counts a lease taken without a credit (`Reclaim`): in its holdings too, unless it held it already.
    fn add_lease(&mut self, lease_id: u64) {
        if self.leases.get_or_insert_with(Default::default).insert(lease_id) {
            if let Some(h) = &self.holdings {
                h.add(1);
            }
        }
    }

    /// Forgets a lease that ended or moved to another connection (and gives its place in the holdings back).
    fn remove_lease(&mut self, lease_id: u64) {
        if self.leases.as_mut().is_some_and(|l| l.remove(&lease_id)) {
            if let Some(h) = &self.holdings {
                h.release(1);
            }
        }
    }
}

/// The live leases of one shard, by id and by deadline, and the agents that hold them.
#[derive(Debug)]
pub(super) struct LeaseTable {
    leases: IdMap<u64, Lease>,
    /// (deadline, lease id), soonest first; may hold stale entries (see the module doc).
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    agents: IdMap<ConnId, Agent>,
    /// The lease counter (see [`mint_lease`]).
    next: u64,
    /// The node's ordinal in the top bits.
    prefix: u64,
    shards: usize,
    index: usize,
}

impl LeaseTable {
    /// The table of shard `index` of `shards`, on the node whose lease ids start with `prefix`. The counter
    /// starts at a random point, so a restarted node does not hand out the ids of its previous life at once.
    pub(super) fn new(prefix: u64, shards: usize, index: usize) -> LeaseTable {
        LeaseTable {
            leases: IdMap::default(),
            heap: BinaryHeap::new(),
            agents: IdMap::default(),
            next: u64::from(rand::random::<u32>()),
            prefix,
            shards,
            index,
        }
    }

    /// The live lease `lease_id`.
    pub(super) fn get(&self, lease_id: u64) -> Option<&Lease> {
        self.leases.get(&lease_id)
    }

    /// The tasks under a live lease (for listings: as many as there are leases, not tasks).
    pub(super) fn leased_tasks(&self) -> impl Iterator<Item = u64> + '_ {
        self.leases.values().map(|l| l.task_id)
    }

    /// The agent `conn` (known from now on), with its outbox and, unless it has them already, its holdings.
    pub(super) fn connect(&mut self, conn: ConnId, out: OutTx, holdings: Option<Arc<Holdings>>) -> &mut Agent {
        let agent = self.agents.entry(conn).or_default();
        agent.out = Some(out);
        if agent.holdings.is_none() {
            agent.holdings = holdings;
        }
        agent
    }

    /// The agent `conn`, if known.
    pub(super) fn agent(&self, conn: ConnId) -> Option<&Agent> {
        self.agents.get(&conn)
    }

    /// The outbox of the agent `conn`, if known and connected.
    pub(super) fn out_of(&self, conn: ConnId) -> Option<&OutTx> {
        self.agents.get(&conn).and_then(|a| a.out.as_ref())
    }

    /// A new lease of `task_id` for `conn` until `deadline`, for a credit `conn` gave (its holdings counted the
    /// credit already, so the lease takes its place there). Returns its id.
    pub(super) fn grant(&mut self, task_id: u64, conn: ConnId, deadline: Instant) -> u64 {
        let lease_id = self.mint(task_id, conn, deadline);
        self.agents.entry(conn).or_default().leases.get_or_insert_with(Default::default).insert(lease_id);
        lease_id
    }

    /// A new lease of `task_id` for `conn` until `deadline`, taken without a credit (`Reclaim` of a ready or
    /// held task): counted in the agent's holdings now.
    pub(super) fn grant_reclaimed(&mut self, task_id: u64, conn: ConnId, deadline: Instant) -> u64 {
        let lease_id = self.mint(task_id, conn, deadline);
        self.agents.entry(conn).or_default().add_lease(lease_id);
        lease_id
    }

    fn mint(&mut self, task_id: u64, conn: ConnId, deadline: Instant) -> u64 {
        let lease_id = mint_lease(&mut self.next, self.prefix, self.shards, self.index);
        self.leases.insert(lease_id, Lease { task_id, conn, deadline });
        self.heap.push(Reverse((deadline, lease_id)));
        lease_id
    }

    /// Moves the live lease `lease_id` to `conn` (an agent that reconnected and reclaimed it), keeping its id,
    /// with a new `deadline`. False if it is not live.
    pub(super) fn move_to(&mut self, lease_id: u64, conn: ConnId, deadline: Instant) -> bool {
        let Some(lease) = self.leases.get_mut(&lease_id) else { return false };
        if lease.conn != conn {
            if let Some(old) = self.agents.get_mut(&lease.conn) {
                old.remove_lease(lease_id);
            }
            lease.conn = conn;
        }
        lease.deadline = deadline;
        self.heap.push(Reverse((deadline, lease_id)));
        self.agents.entry(conn).or_default().add_lease(lease_id);
        true
    }

    /// Gives the live lease `lease_id` a new `deadline` (a heartbeat). Returns its task, `None` if not live.
    pub(super) fn extend(&mut self, lease_id: u64, deadline: impl FnOnce(u64) -> Instant) -> Option<u64> {
        let lease = self.leases.get_mut(&lease_id)?;
        lease.deadline = deadline(lease.task_id);
        self.heap.push(Reverse((lease.deadline, lease_id)));
        Some(lease.task_id)
    }

    /// Ends the live lease `lease_id` (acked, nacked, cancelled, expired): it leaves the table and its agent.
    pub(super) fn end(&mut self, lease_id: u64) -> Option<Lease> {
        let lease = self.leases.remove(&lease_id)?;
        if let Some(agent) = self.agents.get_mut(&lease.conn) {
            agent.remove_lease(lease_id);
        }
        Some(lease)
    }

    /// Forgets the agent `conn` (its connection closed): its leases stay live, but expire by `deadline` at the
    /// latest (`--disconnect-grace`), unless it reconnects and reclaims them first. Returns the agent.
    pub(super) fn disconnect(&mut self, conn: ConnId, deadline: Instant) -> Option<Agent> {
        let agent = self.agents.remove(&conn)?;
        for lease_id in agent.leases.iter().flat_map(|l| l.iter()) {
            if let Some(lease) = self.leases.get_mut(lease_id) {
                if lease.deadline > deadline {
                    lease.deadline = deadline;
                    self.heap.push(Reverse((deadline, *lease_id)));
                }
            }
        }
        Some(agent)
    }

    /// The next live lease whose deadline is at or before `now`, if any (stale heap entries are dropped on the
    /// way). The caller ends it.
    pub(super) fn next_expired(&mut self, now: Instant) -> Option<u64> {
        while let Some(Reverse((deadline, lease_id))) = self.heap.peek().copied() {
            if deadline > now {
                return None;
            }
            self.heap.pop();
            if self.leases.get(&lease_id).is_some_and(|l| l.deadline == deadline) {
                return Some(lease_id);
            }
            // Extended, acked or nacked since: a stale entry.
        }
        None
    }

    /// The soonest deadline in the heap (maybe a stale one: waking for it early costs one look).
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }
}

/// A lease's length when an `Extend` names none: the task's own.
pub(super) fn extend_to(now: Instant, extend_ms: u32, task_lease: Duration) -> Instant {
    match extend_ms {
        0 => now + task_lease,
        ms => now + Duration::from_millis(ms.into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn table() -> LeaseTable {
        LeaseTable::new(3 << LEASE_NODE_SHIFT, 2, 1)
    }

    #[test]
    fn a_granted_lease_names_its_node_and_shard_and_is_held_by_its_agent() {
        let mut t = table();
        let (out, _rx) = crate::outbox::channel();
        t.connect(7, out, None);
        let now = Instant::now();
        let id = t.grant(42, 7, now + Duration::from_secs(5));
        assert_eq!((id >> LEASE_NODE_SHIFT, shard_of_lease(id, 2)), (3, 1));
        assert_eq!(t.get(id).map(|l| (l.task_id, l.conn)), Some((42, 7)));
        assert!(t.agent(7).unwrap().leases.as_ref().unwrap().contains(&id));
        assert_eq!(t.end(id).map(|l| l.task_id), Some(42));
        assert!(t.get(id).is_none());
        assert!(t.agent(7).unwrap().leases.as_ref().unwrap().is_empty());
        assert!(t.end(id).is_none(), "a lease ends once");
    }

    #[test]
    fn an_extended_lease_does_not_expire_at_its_old_deadline() {
        let mut t = table();
        let now = Instant::now();
        let id = t.grant(1, 7, now + Duration::from_secs(1));
        assert_eq!(t.extend(id, |_| now + Duration::from_secs(10)), Some(1));
        assert_eq!(t.next_expired(now + Duration::from_secs(2)), None, "the old entry is stale");
        assert_eq!(t.next_expired(now + Duration::from_secs(10)), Some(id));
        t.end(id);
        assert_eq!(t.next_expired(now + Duration::from_secs(60)), None);
    }

    #[test]
    fn a_disconnected_agents_leases_expire_within_the_grace() {
        let mut t = table();
        let now = Instant::now();
        let a = t.grant(1, 7, now + Duration::from_secs(60));
        let b = t.grant(2, 8, now + Duration::from_secs(60));
        assert!(t.disconnect(7, now + Duration::from_secs(1)).is_some());
        assert_eq!(t.next_expired(now + Duration::from_secs(1)), Some(a));
        t.end(a);
        assert_eq!(t.next_expired(now + Duration::from_secs(1)), None, "the other agent's lease runs on");
        assert!(t.get(b).is_some());
    }

    #[test]
    fn a_moved_lease_keeps_its_id_and_counts_in_its_new_holders_holdings() {
        let mut t = table();
        let now = Instant::now();
        let (out, _rx) = crate::outbox::channel();
        let old = Holdings::new(10);
        let new = Holdings::new(10);
        t.connect(7, out.clone(), Some(old.clone()));
        assert_eq!(old.reserve(1), 1, "a credit, turned into the lease below");
        let id = t.grant(1, 7, now + Duration::from_secs(5));
        t.connect(8, out, Some(new.clone()));
        assert!(t.move_to(id, 8, now + Duration::from_secs(9)));
        assert_eq!(t.get(id).map(|l| (l.conn, l.deadline)), Some((8, now + Duration::from_secs(9))));
        assert_eq!((old.held(), new.held()), (0, 1));
        t.end(id);
        assert_eq!(new.held(), 0);
        assert!(!t.move_to(id, 8, now), "an ended lease cannot move");
    }

    #[test]
    fn lease_ids_carry_the_node_and_route_to_their_shard() {
        let mut next = 5;
        for index in 0..3 {
            let id = mint_lease(&mut next, 7 << LEASE_NODE_SHIFT, 3, index);
            assert_eq!((shard_of_lease(id, 3), id >> LEASE_NODE_SHIFT), (index, 7));
        }
        // At the end of the counter's range it starts over, still routing to the right shard.
        let mut next = LEASE_COUNTER_MASK / 3;
        let id = mint_lease(&mut next, 1 << LEASE_NODE_SHIFT, 3, 2);
        assert_eq!((shard_of_lease(id, 3), id >> LEASE_NODE_SHIFT, next), (2, 1, 1));
    }
}
