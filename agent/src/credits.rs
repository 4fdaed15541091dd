//! Sharing the agent's credits (its concurrency) between the queues it serves.
//!
//! [`Fair`] is the bookkeeping, with no I/O: per queue, the tasks running and the credits outstanding, and the
//! backlog (ready tasks) last reported by the scheduler. Its invariant: running plus outstanding credits, over
//! every queue, stays at most the concurrency (see [`Fair::rebalance`] for the one transient exception).
//! [`drive`] is its single owner: one task that applies the events (a task leased, a task finished, the queue
//! counters polled) in order and sends the `Credit` frames each rebalance asks for.
//!
//! How free slots are shared ([`Fair::rebalance`]): first among the queues with a backlog larger than their
//! credits, each slot to the one with the fewest tasks (running plus credited), ties in turn, never more
//! credits than its backlog; then, what is left over among every queue the same way, so a task submitted to an
//! idle queue starts at once. When every slot is taken and a queue with a backlog holds less than its fair share
//! (concurrency / queues with a backlog or running tasks), the credits parked on queues with no backlog are
//! withdrawn and given to it. Credits are never taken from a queue that has a backlog: a busy queue's share
//! shrinks as its tasks finish. With one queue (or backlogs not known), the agent grants its concurrency at the
//! start and one credit per finished task, as a single-queue agent always did.

use std::collections::HashMap;
use std::time::Duration;

use pm_client::{Client, Cluster, ClusterOptions, ConnectOptions};
use tokio::sync::mpsc;

use crate::queues::QueueSpec;

/// Default of `--queue-refresh`: how often the queue counters are polled.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(1);

/// One queue's share.
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    running: u32,
    credits: u32,
    /// Ready tasks at the last poll; `None`: not known (never polled), taken as always wanting more.
    backlog: Option<u64>,
}

impl Slot {
    fn held(&self) -> u32 {
        self.running + self.credits
    }

    fn hungry(&self) -> bool {
        self.backlog.is_none_or(|b| b > u64::from(self.credits))
    }
}

/// A `Credit` frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `Credit{queue, n}`: n more.
    Grant(String, u32),
    /// `Credit{queue, n: 0, set: true}`: none outstanding.
    Withdraw(String),
}

/// Per-queue running tasks, credits and backlogs; see the module doc.
#[derive(Debug, Clone)]
pub struct Fair {
    concurrency: u32,
    slots: Vec<Slot>,
    index: HashMap<String, usize>,
    /// Where the next tie is broken from (round robin over the queues).
    turn: usize,
}

impl Fair {
    /// No credit granted yet; `names` are served from the start.
    pub fn new(concurrency: u32, names: &[String]) -> Fair {
        let mut fair = Fair { concurrency: concurrency.max(1), slots: Vec::new(), index: HashMap::new(), turn: 0 };
        for n in names {
            fair.slot(n);
        }
        fair
    }

    fn slot(&mut self, queue: &str) -> &mut Slot {
        let i = match self.index.get(queue) {
            Some(&i) => i,
            None => {
                self.slots.push(Slot { name: queue.to_string(), running: 0, credits: 0, backlog: None });
                self.index.insert(queue.to_string(), self.slots.len() - 1);
                self.slots.len() - 1
            }
        };
        &mut self.slots[i]
    }

    /// The queues served so far, in the order they were learned.
    pub fn queues(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// A task of `queue` was leased: it used one credit.
    pub fn leased(&mut self, queue: &str) {
        let s = self.slot(queue);
        s.credits = s.credits.saturating_sub(1);
        s.running += 1;
    }

    /// A task of `queue` finished (reported).
    pub fn finished(&mut self, queue: &str) {
        let s = self.slot(queue);
        s.running = s.running.saturating_sub(1);
    }

    /// The ready tasks of each queue served (learned queues are added; a served queue missing from the list
    /// has no backlog).
    pub fn backlogs(&mut self, ready: &[(String, u64)]) {
        for s in &mut self.slots {
            s.backlog = Some(0);
        }
        for (queue, n) in ready {
            self.slot(queue).backlog = Some(*n);
        }
    }

    /// The credits to grant or withdraw now (see the module doc). A withdrawal can cross a task the scheduler
    /// already pushed: it then runs too, and the agent holds one task more than its concurrency until a task
    /// finishes (the next rebalances grant nothing until the total is back under it).
    pub fn rebalance(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let used: u32 = self.slots.iter().map(Slot::held).sum();
        let mut free = self.concurrency.saturating_sub(used);
        if free == 0 {
            let contenders = self.slots.iter().filter(|s| s.hungry() || s.running > 0).count().max(1) as u32;
            let share = (self.concurrency / contenders).max(1);
            if self.slots.iter().any(|s| s.hungry() && s.held() < share) {
                for s in self.slots.iter_mut().filter(|s| s.credits > 0 && s.backlog == Some(0)) {
                    free += s.credits;
                    s.credits = 0;
                    actions.push(Action::Withdraw(s.name.clone()));
                }
            }
        }
        let mut grants = vec![0u32; self.slots.len()];
        for only_hungry in [true, false] {
            while free > 0 {
                let Some(i) = self.least_held(only_hungry) else { break };
                self.slots[i].credits += 1;
                grants[i] += 1;
                free -= 1;
                self.turn = i + 1;
            }
        }
        for (s, n) in self.slots.iter().zip(grants) {
            if n > 0 {
                actions.push(Action::Grant(s.name.clone(), n));
            }
        }
        actions
    }

    /// The queue holding the fewest tasks (among the hungry ones, if asked), the first from `turn` on a tie.
    fn least_held(&self, only_hungry: bool) -> Option<usize> {
        let n = self.slots.len();
        let mut best: Option<usize> = None;
        for i in (0..n).map(|k| (self.turn + k) % n) {
            let s = &self.slots[i];
            if (!only_hungry || s.hungry()) && best.is_none_or(|b| s.held() < self.slots[b].held()) {
                best = Some(i);
            }
        }
        best
    }

    /// Draining: every queue's credits withdrawn.
    pub fn withdraw_all(&mut self) -> Vec<Action> {
        self.slots
            .iter_mut()
            .map(|s| {
                s.credits = 0;
                Action::Withdraw(s.name.clone())
            })
            .collect()
    }
}

/// What [`drive`] is told.
#[derive(Debug)]
pub enum Event {
    /// A task of this queue was leased.
    Leased(String),
    /// A task of this queue finished.
    Finished(String),
    /// The ready tasks of every served queue, from a poll.
    Backlogs(Vec<(String, u64)>),
    /// Draining: withdraw every credit and grant no more.
    Drain,
}

/// Sends one rebalance's frames. A failure is logged: the client re-sends its credits after a reconnect.
pub async fn send(client: &Client, actions: Vec<Action>) -> Result<(), pm_client::Error> {
    for a in actions {
        match a {
            Action::Grant(queue, n) => client.credit(&queue, n).await?,
            Action::Withdraw(queue) => client.set_credit(&queue, 0).await?,
        }
    }
    Ok(())
}

/// The single owner of `fair`: applies the events in order and sends what each rebalance asks for, until the
/// channel closes. After [`Event::Drain`] it grants nothing.
pub async fn drive(client: Client, mut fair: Fair, mut events: mpsc::UnboundedReceiver<Event>) {
    let mut draining = false;
    while let Some(event) = events.recv().await {
        let actions = match event {
            Event::Leased(q) => {
                fair.leased(&q);
                continue;
            }
            Event::Finished(q) => {
                fair.finished(&q);
                fair.rebalance()
            }
            Event::Backlogs(ready) => {
                let before = fair.slots.len();
                fair.backlogs(&ready);
                if fair.slots.len() > before {
                    let added: Vec<&str> = fair.queues().skip(before).collect();
                    tracing::info!(queues = %added.join(","), "serving queues");
                }
                fair.rebalance()
            }
            Event::Drain => {
                draining = true;
                fair.withdraw_all()
            }
        };
        if draining && actions.iter().any(|a| matches!(a, Action::Grant(..))) {
            continue;
        }
        if let Err(e) = send(&client, actions).await {
            tracing::warn!("could not send credits: {e}");
        }
    }
}

/// Polls every member's queue counters each `every` and sends the ready tasks of the queues `spec` matches.
/// Runs until `events` closes. A scheduler that refuses the agent its counters (older than this agent) is
/// warned about once: then the named queues are served, and patterns match nothing.
pub async fn poll(
    seeds: Vec<String>,
    opts: ConnectOptions,
    spec: QueueSpec,
    every: Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut cluster: Option<Cluster> = None;
    let mut warned = false;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !events.is_closed() {
        tick.tick().await;
        if cluster.is_none() {
            match Cluster::connect(&seeds, opts.clone(), ClusterOptions::default()).await {
                Ok(c) => cluster = Some(c),
                Err(e) => {
                    tracing::debug!("queue counters: cannot connect: {e}");
                    continue;
                }
            }
        }
        let Some(c) = &cluster else { continue };
        let mut ready: HashMap<String, u64> = HashMap::new();
        let mut answered = false;
        for (member, reply) in c.stats().await {
            match reply {
                Ok(stats) => {
                    answered = true;
                    for q in stats.queues.into_iter().filter(|q| spec.matches(&q.queue)) {
                        *ready.entry(q.queue).or_default() += q.ready;
                    }
                }
                Err(e) if e.code() == Some(pm_protocol::ErrorCode::RoleNotAllowed) => {
                    if !warned {
                        tracing::warn!(%member, "the scheduler does not give agents its queue names: {e}");
                        warned = true;
                    }
                }
                Err(e) => tracing::debug!(%member, "queue counters: {e}"),
            }
        }
        if answered {
            let mut ready: Vec<(String, u64)> = ready.into_iter().collect();
            ready.sort();
            let _ = events.send(Event::Backlogs(ready));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn granted(actions: &[Action]) -> HashMap<String, u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Grant(q, n) => Some((q.clone(), *n)),
                Action::Withdraw(_) => None,
            })
            .collect()
    }

    #[test]
    fn one_queue_gets_everything_then_one_per_finished_task() {
        let mut f = Fair::new(4, &names(&["default"]));
        assert_eq!(f.rebalance(), vec![Action::Grant("default".into(), 4)]);
        f.leased("default");
        f.leased("default");
        assert!(f.rebalance().is_empty(), "nothing is free while credits are outstanding");
        f.finished("default");
        assert_eq!(f.rebalance(), vec![Action::Grant("default".into(), 1)]);
    }

    #[test]
    fn idle_queues_share_the_slots_evenly() {
        let mut f = Fair::new(4, &names(&["a", "b", "c"]));
        f.backlogs(&[]);
        let g = granted(&f.rebalance());
        assert_eq!(g.values().sum::<u32>(), 4);
        assert!(g.values().all(|&n| n <= 2) && g.len() == 3, "{g:?}");
    }

    #[test]
    fn backlogged_queues_come_first_and_never_beyond_their_backlog() {
        let mut f = Fair::new(8, &names(&["a", "b", "c"]));
        f.backlogs(&[("a".into(), 100), ("b".into(), 2)]);
        let g = granted(&f.rebalance());
        // b is capped at its 2 ready tasks; a takes the rest of the hungry round; c (idle) what is left: none.
        assert_eq!((g.get("a").copied(), g.get("b").copied(), g.get("c").copied()), (Some(6), Some(2), None));
    }

    #[test]
    fn credits_parked_on_idle_queues_move_to_a_starved_one() {
        let mut f = Fair::new(4, &names(&["a", "b"]));
        f.backlogs(&[]);
        f.rebalance(); // 2 and 2
        for _ in 0..2 {
            f.leased("a");
        }
        // a is busy with 2 and has 50 more ready; b's 2 credits sit idle.
        f.backlogs(&[("a".into(), 50)]);
        let actions = f.rebalance();
        assert_eq!(actions, vec![Action::Withdraw("b".into()), Action::Grant("a".into(), 2)]);
        // Now b gets a backlog too: it gets the next slots freed, until both hold their share.
        f.backlogs(&[("a".into(), 50), ("b".into(), 50)]);
        for _ in 0..2 {
            f.leased("a");
        }
        assert!(f.rebalance().is_empty(), "credits are never taken from a queue with a backlog");
        f.finished("a");
        assert_eq!(f.rebalance(), vec![Action::Grant("b".into(), 1)]);
        f.leased("b");
        f.finished("a");
        assert_eq!(f.rebalance(), vec![Action::Grant("b".into(), 1)]);
        f.leased("b");
        f.finished("a");
        // 1 running for a, 2 for b: the freed slot goes to a (fewest held).
        assert_eq!(f.rebalance(), vec![Action::Grant("a".into(), 1)]);
    }

    #[test]
    fn ties_go_round_robin() {
        let mut f = Fair::new(1, &names(&["a", "b", "c"]));
        f.backlogs(&[("a".into(), 9), ("b".into(), 9), ("c".into(), 9)]);
        let mut order = Vec::new();
        for _ in 0..6 {
            let g = f.rebalance();
            let Some(Action::Grant(q, 1)) = g.first().cloned() else { panic!("{g:?}") };
            f.leased(&q);
            f.finished(&q);
            order.push(q);
        }
        assert_eq!(order, names(&["a", "b", "c", "a", "b", "c"]));
    }

    #[test]
    fn learned_queues_are_added_and_drain_withdraws_all() {
        let mut f = Fair::new(2, &[]);
        assert!(f.rebalance().is_empty(), "no queue yet");
        f.backlogs(&[("app/x".into(), 1)]);
        assert_eq!(f.queues().collect::<Vec<_>>(), ["app/x"]);
        assert_eq!(granted(&f.rebalance()).get("app/x"), Some(&2));
        assert_eq!(f.withdraw_all(), vec![Action::Withdraw("app/x".into())]);
    }
}
