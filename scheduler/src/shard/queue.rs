//! One named queue inside a shard: ready tasks by (priority, submit order), delayed tasks by time, the
//! agents waiting with credits, the dead-letter set, and the queue's limits.
//!
//! **Capability routing.** Ready tasks are kept in one heap per *executor class*: the set of executors a task
//! needs (class 0 needs none). Agents are grouped by the executors they declared in `Hello` (a group that
//! declared none runs anything). A task is leased only to an agent whose group has every executor of its
//! class; [`Queue::best`] picks the best head among the classes some waiting group can serve, so a task
//! nobody can run never blocks the others. Classes and groups are few (one per kind of pipeline or pod), so
//! a pick costs O(classes × groups) with the compatibility precomputed. A peer node (work stealing) may take
//! any task once no local agent can: the node that took it gives it only to one of its agents that has the
//! task's executors.
//!
//! **Per-key limits.** With `max_per_key`, a task whose key already has that many leases is *parked* under
//! its key instead of leased; the best parked task of a key goes back to its class heap when a lease of that
//! key ends. A **rate limit** is a token bucket: while it is empty the queue leases nothing, until
//! [`Queue::throttled_until`].

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use pm_protocol::pb::{LeasedTask, QueueStats};

use tokio::time::Instant;

use super::ordered_ids::OrderedIds;
use super::rates::Rates;
use super::ready_entry::ReadyEntry;
use super::small::{Small, SmallRuns};
use crate::outbox::ConnId;

/// A set of executor names, sorted and without repeats.
pub type Executors = Arc<[String]>;

/// Sorts and dedups `names` into an [`Executors`] set.
pub fn executor_set(mut names: Vec<String>) -> Executors {
    names.sort_unstable();
    names.dedup();
    names.into()
}

/// True when `have` holds every name of `need` (both sorted).
fn covers(have: &[String], need: &[String]) -> bool {
    let mut it = have.iter();
    need.iter().all(|n| it.by_ref().any(|h| h == n))
}

/// Most executor classes (distinct sets of executors tasks need) per queue: every lease looks at each class,
/// so a producer naming endless new sets could slow dispatch down; beyond it, such tasks are refused.
pub const MAX_CLASSES: usize = 256;

/// The limits of one queue (`--queue-limit`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueLimits {
    /// Most leases at once per task key (0: no limit). Tasks without a key are not limited.
    pub max_per_key: u32,
    /// Most leases started per second (0: no limit).
    pub rate_per_sec: f64,
    /// Leases that may start at once after an idle spell (at least 1).
    pub burst: f64,
}

/// Ready tasks that need one set of executors.
#[derive(Debug)]
struct Class {
    executors: Executors,
    ready: BinaryHeap<ReadyEntry>,
    /// Ready tasks kept small (`small.rs`), in their own order: no heap entry each.
    small: SmallRuns,
}

impl Class {
    fn new(executors: Executors) -> Self {
        Class { executors, ready: BinaryHeap::new(), small: SmallRuns::default() }
    }

    /// The best ready task: the better of the heap's head and the small tasks' head.
    fn head(&self) -> Option<ReadyEntry> {
        match (self.ready.peek(), self.small.head()) {
            (Some(&a), Some(b)) => Some(a.max(b)),
            (a, b) => a.copied().or(b),
        }
    }

    /// True when the best ready task is a small one.
    fn small_first(&self) -> bool {
        match (self.ready.peek(), self.small.head()) {
            (Some(a), Some(b)) => b > *a,
            (None, b) => b.is_some(),
            (Some(_), None) => false,
        }
    }

    /// Ready tasks, small ones included.
    fn len(&self) -> usize {
        self.ready.len() + self.small.len()
    }
}

/// Agents that declared the same executors.
#[derive(Debug)]
struct Group {
    /// `None`: declared none, runs anything.
    executors: Option<Executors>,
    /// Members with credits, in round-robin order (each at most once).
    waiting: VecDeque<ConnId>,
    /// Connected members (with or without credits).
    members: usize,
    /// `serves[c]`: this group can run class `c`.
    serves: Vec<bool>,
}

impl Group {
    fn can_run(&self, class: &Class) -> bool {
        self.executors.as_ref().is_none_or(|have| covers(have, &class.executors))
    }
}

/// One agent's (or peer node's) standing on this queue.
#[derive(Debug, Clone, Copy)]
struct Slot {
    credits: u32,
    /// Index in `groups`, or [`PEER`].
    group: u32,
}

/// `Slot::group` of a peer node.
pub(super) const PEER: u32 = u32::MAX;

/// State of one queue. Owned by its shard; never shared.
#[derive(Debug)]
pub struct Queue {
    /// The queue's name.
    pub name: String,
    classes: Vec<Class>,
    class_ids: HashMap<Executors, u32>,
    groups: Vec<Group>,
    group_ids: HashMap<Option<Executors>, u32>,
    /// The group served first at the next tie, for round-robin between groups.
    next_group: usize,
    /// Peer nodes with credits (work stealing), served only when no agent here can take the task.
    peer_waiting: VecDeque<ConnId>,
    slots: HashMap<ConnId, Slot>,
    /// Sum of the agents' credits (peers excluded).
    local_credits: u64,
    /// Sum of the peers' credits.
    peer_credits: u64,
    /// Ready tasks in class heaps.
    ready_len: usize,
    /// Ready tasks kept small, in the classes' runs.
    small_len: usize,
    /// Tasks waiting for their not-before time.
    pub delayed: DelayedHeap,
    /// Tasks leased by a peer node that this node took for its agents, in arrival order (see `crate::cluster::steal`).
    pub foreign: VecDeque<(Instant, LeasedTask)>,
    /// Dead-lettered task ids, oldest first.
    pub dead: BTreeSet<u64>,
    /// Tasks of this queue currently leased.
    pub leased: u64,
    /// Recovered tasks held for their agents to reclaim (the reclaim grace after startup).
    pub held: u64,
    /// Limits (none by default).
    pub limits: QueueLimits,
    /// Leases per key (only with `max_per_key`).
    running: HashMap<String, u32>,
    /// Ready tasks whose key is at its limit, by key, with their class.
    parked: HashMap<String, BinaryHeap<(ReadyEntry, u32)>>,
    parked_len: usize,
    /// Token bucket of the rate limit.
    tokens: f64,
    refilled: Instant,
    /// While the rate limit's bucket is empty: when the next token comes.
    pub throttled_until: Option<Instant>,
    /// Paused by an operator: nothing is leased (credits wait).
    pub paused: bool,
    /// Every live task id of the queue, in id order, for listings.
    pub ids: OrderedIds,
    /// Submitted and finished per second, for operators.
    pub rates: Rates,
    /// Work stealing, since the node started: tasks of this queue leased to peer nodes.
    pub lent: u64,
    /// Work stealing, since the node started: tasks of this queue leased from peers for the agents here.
    pub stolen: u64,
}

impl Queue {
    /// An empty queue without limits.
    pub fn new(name: String) -> Self {
        let none: Executors = Vec::new().into();
        Queue {
            name,
            classes: vec![Class::new(none.clone())],
            class_ids: HashMap::from([(none, 0)]),
            groups: Vec::new(),
            group_ids: HashMap::new(),
            next_group: 0,
            peer_waiting: VecDeque::new(),
            slots: HashMap::new(),
            local_credits: 0,
            peer_credits: 0,
            ready_len: 0,
            small_len: 0,
            delayed: BinaryHeap::new(),
            foreign: VecDeque::new(),
            dead: BTreeSet::new(),
            leased: 0,
            held: 0,
            limits: QueueLimits::default(),
            running: HashMap::new(),
            parked: HashMap::new(),
            parked_len: 0,
            tokens: 0.0,
            refilled: Instant::now(),
            throttled_until: None,
            paused: false,
            ids: OrderedIds::default(),
            rates: Rates::default(),
            lent: 0,
            stolen: 0,
        }
    }

    /// Sets the queue's limits (a new bucket starts full).
    pub fn set_limits(&mut self, limits: QueueLimits) {
        self.limits = limits;
        self.tokens = limits.burst.max(1.0);
        self.refilled = Instant::now();
    }

    /// True when tasks needing `executors` can be taken: their class exists, or there is room for it
    /// ([`MAX_CLASSES`] per queue).
    pub fn has_class_room(&self, executors: &Executors) -> bool {
        executors.is_empty() || self.class_ids.contains_key(executors) || self.classes.len() < MAX_CLASSES
    }

    /// The class of tasks needing `executors` (interned; 0 for none).
    pub fn class_of(&mut self, executors: &Executors) -> u32 {
        if executors.is_empty() {
            return 0;
        }
        if let Some(c) = self.class_ids.get(executors) {
            return *c;
        }
        let id = self.classes.len() as u32;
        let class = Class::new(executors.clone());
        for g in &mut self.groups {
            g.serves.push(g.can_run(&class));
        }
        self.classes.push(class);
        self.class_ids.insert(executors.clone(), id);
        id
    }

    /// The executors class `class` needs.
    pub fn class_executors(&self, class: u32) -> &[String] {
        self.classes.get(class as usize).map_or(&[], |c| &c.executors[..])
    }

    fn group_of(&mut self, executors: Option<Executors>) -> u32 {
        if let Some(g) = self.group_ids.get(&executors) {
            return *g;
        }
        let id = self.groups.len() as u32;
        let mut group =
            Group { executors: executors.clone(), waiting: VecDeque::new(), members: 0, serves: Vec::new() };
        group.serves = self.classes.iter().map(|c| group.can_run(c)).collect();
        self.groups.push(group);
        self.group_ids.insert(executors, id);
        id
    }

    /// Makes a task ready in its class.
    pub fn push_ready(&mut self, class: u32, entry: ReadyEntry) {
        let c = class.min(self.classes.len() as u32 - 1) as usize;
        self.classes[c].ready.push(entry);
        self.ready_len += 1;
    }

    /// Keeps a ready task small in its class (see `small.rs`).
    pub(super) fn push_small(&mut self, class: u32, priority: i32, task_id: u64, small: Small) {
        let c = class.min(self.classes.len() as u32 - 1) as usize;
        let before = self.classes[c].small.len();
        self.classes[c].small.push(priority, task_id, small);
        self.small_len += self.classes[c].small.len() - before;
    }

    /// Takes the best ready task of class `class` out of the small ones if it is one: the caller makes it a
    /// full task and pushes it in the class's heap, where it is then the head.
    pub(super) fn take_small_head(&mut self, class: u32) -> Option<(ReadyEntry, Small)> {
        let c = self.classes.get_mut(class as usize)?;
        if !c.small_first() {
            return None;
        }
        let head = c.small.pop_head()?;
        self.small_len -= 1;
        Some(head)
    }

    /// Small task `task_id` of this queue: its class, priority and what it keeps.
    pub(super) fn find_small(&self, task_id: u64) -> Option<(u32, i32, Small)> {
        self.classes.iter().enumerate().filter(|(_, c)| c.small.len() > 0).find_map(|(ci, c)| {
            let (priority, small) = c.small.get(task_id)?;
            Some((ci as u32, priority, small))
        })
    }

    /// Takes small task `task_id` of class `class` out of its run (it stays listed: it is still live).
    pub(super) fn remove_small(&mut self, class: u32, task_id: u64) {
        if let Some(c) = self.classes.get_mut(class as usize) {
            if c.small.remove(task_id).is_some() {
                self.small_len -= 1;
            }
        }
    }

    /// Ready tasks kept small.
    pub(super) fn small_len(&self) -> usize {
        self.small_len
    }

    /// Since when the longest waiting small task waits (ms after the shard's epoch), if any.
    pub(super) fn oldest_small_ready_ms(&self) -> Option<u64> {
        self.classes.iter().filter_map(|c| c.small.oldest_ready_ms()).min()
    }

    /// Ready tasks (parked and small ones included).
    pub fn ready_len(&self) -> usize {
        self.ready_len + self.parked_len + self.small_len
    }

    /// Removes the ready (and parked) tasks for which `keep` is false. A removed task may have been the one
    /// a key's ended lease made ready again: every key below its limit gets its best parked task back (one
    /// too many is harmless: dispatch parks it again).
    pub fn retain_ready(&mut self, mut keep: impl FnMut(u64) -> bool) {
        for c in &mut self.classes {
            c.ready.retain(|e| keep(e.task_id));
            c.small.retain(&mut keep);
        }
        for heap in self.parked.values_mut() {
            heap.retain(|(e, _)| keep(e.task_id));
        }
        self.parked.retain(|_, h| !h.is_empty());
        let free: Vec<String> = self.parked.keys().filter(|k| !self.key_at_limit(k)).cloned().collect();
        for key in free {
            if let Some((entry, class)) = self.parked.get_mut(&key).and_then(BinaryHeap::pop) {
                let c = (class as usize).min(self.classes.len() - 1);
                self.classes[c].ready.push(entry);
            }
        }
        self.parked.retain(|_, h| !h.is_empty());
        self.ready_len = self.classes.iter().map(|c| c.ready.len()).sum();
        self.small_len = self.classes.iter().map(|c| c.small.len()).sum();
        self.parked_len = self.parked.values().map(BinaryHeap::len).sum();
    }

    /// The best ready task some waiting agent can run (or, when none can run any, the best one for a peer
    /// node), and the group to take the credit from ([`PEER`] for a peer): `(class, group)`.
    pub fn best(&self) -> Option<(u32, u32)> {
        let mut best: Option<(ReadyEntry, u32)> = None;
        for (ci, class) in self.classes.iter().enumerate() {
            let Some(head) = class.head() else { continue };
            if best.is_some_and(|(b, _)| b >= head) {
                continue;
            }
            if self.groups.iter().any(|g| !g.waiting.is_empty() && g.serves[ci]) {
                best = Some((head, ci as u32));
            }
        }
        let n = self.groups.len();
        if let Some((_, ci)) = best {
            // Round-robin between the groups that can run it.
            let g = (0..n)
                .map(|i| (self.next_group + i) % n)
                .find(|&g| !self.groups[g].waiting.is_empty() && self.groups[g].serves[ci as usize])?;
            return Some((ci, g as u32));
        }
        if self.peer_waiting.is_empty() {
            return None;
        }
        let best = self.classes.iter().enumerate().filter_map(|(ci, c)| c.head().map(|h| (h, ci))).max();
        best.map(|(_, ci)| (ci as u32, PEER))
    }

    /// The head of class `class` (a small task's, see `Queue::take_small_head`).
    pub fn peek(&self, class: u32) -> Option<ReadyEntry> {
        self.classes.get(class as usize)?.head()
    }

    /// Takes the head of class `class`'s heap (a small task at the head is taken out by
    /// `Queue::take_small_head` first).
    pub fn pop(&mut self, class: u32) -> Option<ReadyEntry> {
        let e = self.classes.get_mut(class as usize)?.ready.pop()?;
        self.ready_len -= 1;
        Some(e)
    }

    /// Takes one credit from the next member of `group` (or the next peer for [`PEER`]).
    pub fn take_credit_from(&mut self, group: u32) -> Option<ConnId> {
        if group == PEER {
            let conn = take_from(&mut self.peer_waiting, &mut self.slots)?;
            self.peer_credits = self.peer_credits.saturating_sub(1);
            return Some(conn);
        }
        let g = self.groups.get_mut(group as usize)?;
        let conn = take_from(&mut g.waiting, &mut self.slots)?;
        self.local_credits = self.local_credits.saturating_sub(1);
        if !self.groups.is_empty() {
            self.next_group = (group as usize + 1) % self.groups.len();
        }
        Some(conn)
    }

    /// Takes one credit from the next agent (never a peer node) that can run class `class`.
    pub fn take_local_credit_for(&mut self, class: u32) -> Option<ConnId> {
        let n = self.groups.len();
        let c = class as usize;
        let g = (0..n).map(|i| (self.next_group + i) % n).find(|&g| {
            let group = &self.groups[g];
            !group.waiting.is_empty() && group.serves.get(c).copied().unwrap_or(false)
        })?;
        self.take_credit_from(g as u32)
    }

    /// Adds `n` credits for `conn` (a peer node if `peer`; an agent that declared `executors`, `None` for
    /// none), queuing it if it had none.
    pub fn add_credit(&mut self, conn: ConnId, n: u32, peer: bool, executors: Option<Executors>) {
        let slot = match self.slots.get(&conn) {
            Some(s) => *s,
            None => {
                let group = if peer { PEER } else { self.group_of(executors) };
                if let Some(g) = self.groups.get_mut(group as usize) {
                    g.members += 1;
                }
                let s = Slot { credits: 0, group };
                self.slots.insert(conn, s);
                s
            }
        };
        if n == 0 {
            return;
        }
        if slot.credits == 0 {
            match self.groups.get_mut(slot.group as usize) {
                Some(g) => g.waiting.push_back(conn),
                None => self.peer_waiting.push_back(conn),
            }
        }
        let credits = slot.credits.saturating_add(n);
        let added = u64::from(credits - slot.credits);
        if slot.group == PEER {
            self.peer_credits += added;
        } else {
            self.local_credits += added;
        }
        self.slots.insert(conn, Slot { credits, ..slot });
    }

    /// Replaces `conn`'s credits with `n` (0 withdraws them).
    pub fn set_credit(&mut self, conn: ConnId, n: u32, peer: bool, executors: Option<Executors>) {
        self.withdraw(conn);
        self.add_credit(conn, n, peer, executors);
    }

    /// Takes back `conn`'s credits; it stays a member of its group.
    fn withdraw(&mut self, conn: ConnId) {
        let Some(slot) = self.slots.get_mut(&conn) else { return };
        let n = std::mem::take(&mut slot.credits);
        if n == 0 {
            return;
        }
        match self.groups.get_mut(slot.group as usize) {
            Some(g) => {
                g.waiting.retain(|c| *c != conn);
                self.local_credits = self.local_credits.saturating_sub(u64::from(n));
            }
            None => {
                self.peer_waiting.retain(|c| *c != conn);
                self.peer_credits = self.peer_credits.saturating_sub(u64::from(n));
            }
        }
    }

    /// True when an agent or a peer node has credit.
    pub fn has_credit(&self) -> bool {
        self.local_credits + self.peer_credits > 0
    }

    /// Forgets a connection (it disconnected).
    pub fn remove_agent(&mut self, conn: ConnId) {
        self.withdraw(conn);
        if let Some(slot) = self.slots.remove(&conn) {
            if let Some(g) = self.groups.get_mut(slot.group as usize) {
                g.members = g.members.saturating_sub(1);
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

    /// The credits `conn` holds on this queue now.
    pub fn credits_of(&self, conn: ConnId) -> u32 {
        self.slots.get(&conn).map_or(0, |s| s.credits)
    }

    /// Agents and peers with credits.
    pub fn agents_with_credit(&self) -> u64 {
        self.slots.values().filter(|s| s.credits > 0).count() as u64
    }

    /// Whether a connected agent of this queue (busy or not) has every executor of class `class`; and
    /// whether one of them has credit now.
    pub fn capable(&self, class: u32) -> (bool, bool) {
        let c = class as usize;
        let serving = self.groups.iter().filter(|g| g.serves.get(c).copied().unwrap_or(false));
        serving.fold((false, false), |(any, free), g| (any || g.members > 0, free || !g.waiting.is_empty()))
    }

    /// The queue's counters, as `Stats` reports them.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            queue: self.name.clone(),
            ready: self.ready_len() as u64,
            // Held tasks are not deliverable yet, like delayed ones.
            delayed: self.delayed.len() as u64 + self.held,
            leased: self.leased,
            dead: self.dead.len() as u64,
            credits: self.total_credits(),
            agents: self.agents_with_credit(),
            waiting_executor: self.waiting_for_executor(),
            paused: self.paused,
            oldest_ready_age_ms: 0,
            submitted_per_sec: self.rates.per_sec().0,
            completed_per_sec: self.rates.per_sec().1,
            lent: self.lent,
            stolen: self.stolen,
        }
    }

    /// Ready tasks that no connected agent of this queue can run (their executors are missing).
    pub fn waiting_for_executor(&self) -> u64 {
        self.classes
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(c, _)| !self.capable(*c as u32).0)
            .map(|(_, cl)| cl.len() as u64)
            .sum()
    }

    /// The executors the connected agents of this queue declared (`None` in the list: one that runs anything).
    pub fn agent_executors(&self) -> Vec<Option<&[String]>> {
        self.groups.iter().filter(|g| g.members > 0).map(|g| g.executors.as_deref()).collect()
    }

    // --- per-key limits ---

    /// True when `key` is at the queue's per-key limit.
    pub fn key_at_limit(&self, key: &str) -> bool {
        self.limits.max_per_key > 0
            && !key.is_empty()
            && self.running.get(key).copied().unwrap_or(0) >= self.limits.max_per_key
    }

    /// Leases of `key` now.
    pub fn running_of(&self, key: &str) -> u32 {
        self.running.get(key).copied().unwrap_or(0)
    }

    /// Sets a ready task aside until a lease of its key ends.
    pub fn park(&mut self, key: &str, class: u32, entry: ReadyEntry) {
        self.parked.entry(key.to_string()).or_default().push((entry, class));
        self.parked_len += 1;
    }

    /// A lease of `key` starts (counted only under a per-key limit).
    pub fn key_started(&mut self, key: &str) {
        if self.limits.max_per_key > 0 && !key.is_empty() {
            *self.running.entry(key.to_string()).or_default() += 1;
        }
    }

    /// A lease of `key` ended: the best task parked under it is ready again. True if one was.
    pub fn key_ended(&mut self, key: &str) -> bool {
        if self.limits.max_per_key == 0 || key.is_empty() {
            return false;
        }
        if let Some(n) = self.running.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.running.remove(key);
            }
        }
        let Some(heap) = self.parked.get_mut(key) else { return false };
        let Some((entry, class)) = heap.pop() else { return false };
        if heap.is_empty() {
            self.parked.remove(key);
        }
        self.parked_len -= 1;
        self.push_ready(class, entry);
        true
    }

    // --- rate limit ---

    /// Takes a token for one lease; false (and [`Queue::throttled_until`] set) when the bucket is empty.
    pub fn take_token(&mut self, now: Instant) -> bool {
        let rate = self.limits.rate_per_sec;
        if rate <= 0.0 {
            return true;
        }
        let burst = self.limits.burst.max(1.0);
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.throttled_until = None;
            return true;
        }
        self.throttled_until = Some(now + Duration::from_secs_f64((1.0 - self.tokens) / rate));
        false
    }
}

/// Takes one credit from the next connection of `waiting` in round-robin order.
fn take_from(waiting: &mut VecDeque<ConnId>, slots: &mut HashMap<ConnId, Slot>) -> Option<ConnId> {
    while let Some(conn) = waiting.pop_front() {
        let Some(s) = slots.get_mut(&conn) else { continue };
        if s.credits == 0 {
            continue;
        }
        s.credits -= 1;
        if s.credits > 0 {
            waiting.push_back(conn);
        }
        return Some(conn);
    }
    None
}

/// Delayed tasks by time.
pub type DelayedHeap = BinaryHeap<Reverse<(Instant, u64)>>;

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
