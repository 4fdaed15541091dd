//! Dispatch: matching a queue's ready tasks to the credits its agents gave, and the `Leased` frames that
//! carry them.
//!
//! Matching is push-based: whenever something may let a queue lease more (a task became ready, an agent gave
//! credit, a lease of a limited key ended, a rate limit refilled), the shard marks the queue dirty, and at the
//! end of the round it calls [`dispatch_queue`] on each dirty queue. That leases the best task some agent
//! with credit can run (its executors), one credit per task, until the queue has no ready task or no credit.
//! Each lease writes an `Attempt` record into the round and goes into the agent's next `Leased` frame
//! ([`Outgoing`]); the frames are sent when the round ends, so one round sends each agent at most a few
//! frames however many tasks it got.
//!
//! Tasks stolen from peers (cluster mode) go first, and only to local agents: their leases already run at
//! their owners.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use pm_protocol::pb::{self, LeasedTask, TaskSpec};
use pm_protocol::Message as _;
use tokio::time::Instant;

use super::lease::LeaseTable;
use super::payload::Payloads;
use super::queue::{executor_set, Queue, PEER};
use super::round::Rounds;
use super::small::{self, Place};
use super::task::{Defaults, State, Task};
use crate::holdings::Holdings;
use crate::idmap::IdMap;
use crate::outbox::{ConnId, OutTx, Outbound};
use crate::stolen::{StealHandle, StealMsg};
use crate::store::Record;

/// How long a task taken from a peer may wait for an agent here before it is given back.
pub(super) const FOREIGN_WAIT: Duration = Duration::from_secs(1);

/// What a round hands out: per connection, the `Leased` batch being filled, and the stolen tasks given to
/// agents (reported to the stealer after their frames are queued: a revocation it sends must follow the lease
/// on the wire).
#[derive(Debug, Default)]
pub(super) struct Outgoing {
    /// Per connection: its outbox, the batch, and the batch's encoded size.
    batches: IdMap<ConnId, (OutTx, Vec<LeasedTask>, usize)>,
    delivered_foreign: Vec<(u64, ConnId, OutTx, Option<Arc<Holdings>>)>,
}

impl Outgoing {
    /// Queues `leased` for `conn`'s next Leased frame (sending the frame first if it would grow past `budget`).
    fn push(&mut self, conn: ConnId, out: &OutTx, leased: LeasedTask, budget: usize) {
        let size = leased.encoded_len() + 8;
        let slot = self.batches.entry(conn).or_insert_with(|| (out.clone(), Vec::new(), 0));
        if slot.2 + size > budget && !slot.1.is_empty() {
            let tasks = std::mem::take(&mut slot.1);
            let _ = slot.0.send(Outbound::Frame(pb::Leased { tasks }.into()));
            slot.2 = 0;
        }
        slot.1.push(leased);
        slot.2 += size;
    }

    /// Sends the round's Leased frames, then reports the stolen tasks delivered to the stealer.
    pub(super) fn send(&mut self, steal: Option<&StealHandle>) {
        for (_, (out, tasks, _)) in self.batches.drain() {
            if !tasks.is_empty() {
                let _ = out.send(Outbound::Frame(pb::Leased { tasks }.into()));
            }
        }
        if let Some(steal) = steal {
            for (lease_id, conn, out, holdings) in self.delivered_foreign.drain(..) {
                steal.send(StealMsg::Delivered { lease_id, conn, out, holdings });
            }
        }
    }
}

/// What a dispatch pass touches besides the queue: the shard's tasks, leases, round and outgoing frames.
pub(super) struct Dispatch<'a> {
    pub(super) tasks: &'a mut IdMap<u64, Box<Task>>,
    /// What a small task made full gets for what its spec leaves out, and the shard's epoch (`small.rs`).
    pub(super) defaults: Defaults,
    pub(super) epoch: Instant,
    pub(super) leases: &'a mut LeaseTable,
    pub(super) rounds: &'a mut Rounds,
    pub(super) outgoing: &'a mut Outgoing,
    /// Ready → leased latency.
    pub(super) dispatch_seconds: &'a metrics::Histogram,
    /// Cluster mode: stolen tasks may wait in the queue.
    pub(super) stealing: bool,
    /// Most bytes of one Leased frame.
    pub(super) budget: usize,
    /// Where the payloads not kept in memory are read from.
    pub(super) payloads: &'a Payloads,
    /// Ready tasks taken out of their queue because their payload could not be read back, with why: the
    /// shard dead-letters them after the dispatch.
    pub(super) unreadable: Vec<(u64, String)>,
}

/// Pushes ready tasks of `q` (queue `qi`) to agents with credits; returns how many were leased.
pub(super) fn dispatch_queue(qi: u32, q: &mut Queue, d: &mut Dispatch<'_>, now: Instant, wall: u64) -> u64 {
    if d.stealing {
        dispatch_foreign(q, d);
    }
    if q.paused {
        return 0;
    }
    let mut leased_now = 0;
    loop {
        if q.ready_len() == 0 || !q.has_credit() {
            return leased_now;
        }
        // The best task an agent with credit can run (its executors), and the agents' group.
        let Some((class, group)) = q.best() else { return leased_now };
        // A small task at the head becomes a full one in the class's heap, with the payload its record gave
        // (read once, used below).
        let mut read = None;
        if let Some((entry, small)) = q.take_small_head(class) {
            let place = Place { queue: qi, class, priority: entry.priority, small };
            let (task, payload) = small::build(place, d.payloads.stored(entry.task_id), d.defaults, d.epoch);
            d.tasks.insert(entry.task_id, task);
            q.push_ready(class, entry);
            read = Some(payload);
        }
        let Some(entry) = q.peek(class) else { return leased_now };
        let Some(task) = d.tasks.get_mut(&entry.task_id) else {
            q.pop(class);
            continue;
        };
        if task.state != State::Ready {
            q.pop(class);
            continue;
        }
        if q.key_at_limit(&task.key) {
            q.pop(class);
            q.park(&task.key, class, entry);
            continue;
        }
        if !q.take_token(now) {
            return leased_now; // rate limit: `throttled_until` wakes the queue
        }
        // Before any credit is spent: a payload the store cannot give back ends the task (see `unreadable`).
        let payload = match read.unwrap_or_else(|| d.payloads.get(entry.task_id, task.payload.as_ref())) {
            Ok(p) => p,
            Err(why) => {
                q.pop(class);
                d.unreadable.push((entry.task_id, why));
                continue;
            }
        };
        let Some(conn) = q.take_credit_from(group) else { return leased_now };
        let Some(out) = d.leases.out_of(conn).cloned() else { continue };
        q.pop(class);
        q.key_started(&task.key);
        let deadline = now + task.lease;
        let lease_id = d.leases.grant(entry.task_id, conn, deadline);
        task.attempts += 1;
        task.state = State::Leased(lease_id);
        task.started_unix_ms = wall;
        d.dispatch_seconds.record(now.saturating_duration_since(task.ready_since).as_secs_f64());
        q.leased += 1;
        q.lent += u64::from(group == PEER);
        d.rounds.record(Record::Attempt { task_id: entry.task_id, attempts: task.attempts });
        let leased = LeasedTask {
            task_id: entry.task_id,
            lease_id,
            attempt: task.attempts,
            deadline_unix_ms: wall + task.lease.as_millis() as u64,
            payload,
            queue: q.name.clone(),
            key: task.key.clone(),
            max_attempts: task.max_attempts,
        };
        d.outgoing.push(conn, &out, leased, d.budget);
        leased_now += 1;
    }
}

/// Gives tasks taken from peers to local agents (never to a peer), before any local ready task. Each goes to
/// a local agent that has the executors it needs; one no local agent can run now waits (and goes back to its
/// owner after [`FOREIGN_WAIT`], see [`release_foreign`]).
fn dispatch_foreign(q: &mut Queue, d: &mut Dispatch<'_>) {
    let waiting = std::mem::take(&mut q.foreign);
    let mut kept = VecDeque::with_capacity(waiting.len());
    for (at, task) in waiting {
        if !q.has_credit() {
            kept.push_back((at, task));
            continue;
        }
        let probe = TaskSpec { payload: task.payload.clone(), ..Default::default() };
        let needed = pm_task::pipeline::required_executors(&probe);
        let class = if needed.is_empty() { 0 } else { q.class_of(&executor_set(needed)) };
        let Some(conn) = q.take_local_credit_for(class) else {
            kept.push_back((at, task));
            continue;
        };
        let Some(agent) = d.leases.agent(conn) else {
            kept.push_back((at, task));
            continue;
        };
        let Some(out) = agent.out.clone() else {
            kept.push_back((at, task));
            continue;
        };
        let holdings = agent.holdings.clone();
        d.outgoing.delivered_foreign.push((task.lease_id, conn, out.clone(), holdings));
        d.outgoing.push(conn, &out, task, d.budget);
    }
    q.foreign = kept;
}

/// Gives back to their owners the tasks taken from peers that waited in `queues` too long for an agent.
pub(super) fn release_foreign(queues: &mut [Queue], steal: &StealHandle, now: Instant) {
    let mut lease_ids = Vec::new();
    for q in queues {
        while q.foreign.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) >= FOREIGN_WAIT) {
            if let Some((_, t)) = q.foreign.pop_front() {
                lease_ids.push(t.lease_id);
            }
        }
    }
    if !lease_ids.is_empty() {
        steal.send(StealMsg::Release { lease_ids });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::round::tests::rounds_on_a_wal;
    use super::*;
    use crate::shard::ShardMsg;
    use bytes::Bytes;
    use pm_protocol::Kind;

    #[test]
    fn ready_tasks_go_to_credits_best_first_in_one_frame_with_an_attempt_each() {
        let (_dir, committer, mut rounds, mut shard_rx) = rounds_on_a_wal(false);
        let mut leases = LeaseTable::new(0, 1, 0);
        let (out, rx) = crate::outbox::channel();
        leases.connect(7, out, None);
        let mut q = Queue::new("q".into());
        let mut tasks = IdMap::default();
        let spec = TaskSpec { payload: Bytes::from_static(b"{}"), ..Default::default() };
        for (id, priority) in [(1, 0), (2, 5), (3, 0)] {
            let mut t = Task::new(0, 0, &TaskSpec { priority, ..spec.clone() }, None, Duration::from_secs(30), 3);
            t.state = State::Ready;
            q.push_ready(0, t.entry(id));
            tasks.insert(id, Box::new(t));
        }
        q.add_credit(7, 2, false, None);
        let hist = metrics::histogram!("test_dispatch_seconds");
        let mut outgoing = Outgoing::default();
        let payloads = Payloads::new(Arc::new(crate::shard::payload::tests::NoStore), usize::MAX);
        let mut d = Dispatch {
            tasks: &mut tasks,
            defaults: Defaults { lease: Duration::from_secs(30), max_attempts: 3 },
            epoch: Instant::now(),
            leases: &mut leases,
            rounds: &mut rounds,
            outgoing: &mut outgoing,
            dispatch_seconds: &hist,
            stealing: false,
            budget: 1 << 20,
            payloads: &payloads,
            unreadable: Vec::new(),
        };
        assert_eq!(dispatch_queue(0, &mut q, &mut d, Instant::now(), 1_000), 2, "two credits, two leases");
        assert_eq!((q.ready_len(), q.leased), (1, 2));
        assert_eq!(tasks.get(&3).map(|t| &t.state), Some(&State::Ready), "the later of the equal tasks waits");
        outgoing.send(None);
        let mut sent = Vec::new();
        rx.take(&mut sent);
        let [Outbound::Frame(env)] = &sent[..] else { panic!("one frame, got {}", sent.len()) };
        let Some(Kind::Leased(l)) = &env.kind else { panic!("a Leased frame") };
        assert_eq!(l.tasks.iter().map(|t| (t.task_id, t.attempt)).collect::<Vec<_>>(), vec![(2, 1), (1, 1)]);
        for t in &l.tasks {
            assert_eq!(leases.get(t.lease_id).map(|l| (l.task_id, l.conn)), Some((t.task_id, 7)));
        }
        rounds.flush();
        let msg = shard_rx.blocking_recv().unwrap();
        assert!(matches!(msg, ShardMsg::Durable { result: Ok(()), .. }), "the attempts were written");
        committer.shutdown();
    }
}
