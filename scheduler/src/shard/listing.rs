//! What an operator lists: a shard's tasks by queue, state, key and flow, newest first, one page at a time.
//!
//! **The index.** Each queue keeps its live task ids in id order ([`OrderedIds`]): every task enters the shard
//! through [`Shard::add_task`] and leaves through [`Shard::drop_task`], which keep the index in step with
//! `tasks`. Task ids grow with every submit, so "newest first, below a cursor" is a walk down an index, and a
//! page does not shift while tasks arrive. Kept outcomes have no such index (they finish out of id order,
//! and keeping them sorted cost throughput): a listing that wants them scans them, bounded by
//! `--max-results`, filtering on queue and state without decoding.
//!
//! **Where a listing looks.** The state filter picks the smallest source that holds the answer: a queue's
//! dead-letter set, its delayed heap, the shard's lease table, the kept outcomes (final states), or the live
//! index (ready tasks, or any state). Filters on key and flow are checked on each candidate.
//!
//! **Bounded work.** A request looks at no more than [`SCAN_BUDGET`] candidates, so a listing never holds the
//! shard for long whatever its filter. A part that stops early says down to where it looked (its `next`
//! cursor); [`pm_client::merge_task_pages`] merges the parts without skipping anything, and a caller wanting
//! a full page asks again from that cursor.

use std::cmp::Reverse;

use pm_client::TaskPage;
use pm_protocol::pb::{self, TaskState};
use pm_protocol::Message as _;

use super::list_query::ListQuery;
use super::task::{State, Task};
use super::Shard;

/// Most candidates one listing request looks at in one shard.
pub const SCAN_BUDGET: usize = 20_000;

/// How many of a queue's oldest live ids are looked at for the age of its oldest ready task.
const OLDEST_READY_SCAN: usize = 256;

/// A walk down one or more sources, newest first: what matched, and how many candidates it looked at.
struct Walk {
    found: Vec<pb::TaskStatus>,
    looked: usize,
    limit: usize,
}

impl Walk {
    /// Looks at `ids` (newest first) until the page is full or the budget is spent: then returns the id it
    /// stopped at, the lowest this part vouches for (`None`: the source was walked to its end).
    fn run(&mut self, ids: impl Iterator<Item = u64>, check: impl Fn(u64) -> Option<pb::TaskStatus>) -> Option<u64> {
        for id in ids {
            self.looked += 1;
            if let Some(s) = check(id) {
                self.found.push(s);
            }
            if self.found.len() >= self.limit || self.looked >= SCAN_BUDGET {
                return Some(id);
            }
        }
        None
    }
}

/// A live task's state as listings and statuses name it.
fn listed_state(state: &State) -> TaskState {
    match state {
        State::Pending | State::Ready | State::Held => TaskState::Ready,
        State::Delayed => TaskState::Delayed,
        State::Leased(_) | State::Acking => TaskState::Leased,
        State::Dead(_) => TaskState::Dead,
    }
}

impl Shard {
    /// Adds a live task. Every task enters the shard here, so the listing index stays in step.
    pub(super) fn add_task(&mut self, task_id: u64, task: Task) {
        self.add_boxed_task(task_id, Box::new(task));
    }

    /// [`Shard::add_task`] of a task already boxed (a restart boxes its tasks on every core).
    pub(super) fn add_boxed_task(&mut self, task_id: u64, mut task: Box<Task>) {
        self.count_task(task_id, &mut task);
        self.tasks.insert(task_id, task);
    }

    /// All of adding a task but putting it in the task map: its payload admitted or not, its id listed in its
    /// queue. A restart puts its tasks in the map afterwards, all at once (`recover.rs`).
    pub(super) fn count_task(&mut self, task_id: u64, task: &mut Task) {
        task.payload = task.payload.take().and_then(|p| self.payloads.admit(p));
        let queue = &mut self.queues[task.queue as usize];
        queue.ids.insert(task_id);
        queue.rates.submitted += 1;
    }

    /// Removes a task: `finished` (acked, failed or cancelled, durably), or withdrawn (its write failed).
    /// A small task (`small.rs`) is dropped too, but not returned.
    pub(super) fn drop_task(&mut self, task_id: u64, finished: bool) -> Option<Box<Task>> {
        let (queue, task) = match self.tasks.remove(&task_id) {
            Some(t) => {
                self.payloads.release(t.payload.as_ref());
                (t.queue, Some(t))
            }
            None => (self.take_small(task_id)?.queue, None),
        };
        let queue = &mut self.queues[queue as usize];
        queue.ids.remove(task_id);
        if finished {
            queue.rates.completed += 1;
        }
        task
    }

    /// How long the oldest ready task of queue `q` has waited (0: none), judged from its oldest live tasks.
    pub(super) fn oldest_ready_age_ms(&self, q: usize) -> u64 {
        let queue = &self.queues[q];
        if queue.ready_len() == 0 {
            return 0;
        }
        let now = tokio::time::Instant::now();
        let oldest = queue
            .ids
            .oldest()
            .take(OLDEST_READY_SCAN)
            .filter_map(|id| self.tasks.get(&id))
            .filter(|t| t.state == State::Ready)
            .map(|t| t.ready_since)
            .chain(queue.oldest_small_ready_ms().map(|ms| self.epoch + std::time::Duration::from_millis(ms)))
            .min();
        oldest.map_or(0, |at| now.saturating_duration_since(at).as_millis() as u64)
    }

    /// One page of this shard's tasks matching `q` (see the module doc).
    pub(super) fn list_tasks(&self, q: &ListQuery) -> TaskPage {
        let queues: Vec<usize> = if q.queue.is_empty() {
            (0..self.queues.len()).collect()
        } else {
            self.queue_ids.get(&q.queue).map(|&i| vec![i as usize]).unwrap_or_default()
        };
        if queues.is_empty() {
            return TaskPage::default();
        }
        let limit = q.limit.max(1);
        let live = |id: u64| self.live_listed(id, q, &queues);
        let kept = |id: u64| self.kept_listed(id, q, &queues);
        let below = |id: &u64| q.before == 0 || *id < q.before;
        // Sources that are not in id order are few (leases, delayed and dead tasks): sorted here.
        let sorted = |mut ids: Vec<u64>| {
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids.into_iter()
        };
        let mut walk = Walk { found: Vec::new(), looked: 0, limit };
        let stopped = match q.state {
            TaskState::Dead => {
                let ids = queues.iter().flat_map(|&i| self.queues[i].dead.iter().copied()).filter(below).collect();
                walk.run(sorted(ids), live)
            }
            TaskState::Delayed => {
                let ids = queues
                    .iter()
                    .flat_map(|&i| self.queues[i].delayed.iter().map(|Reverse((_, id))| *id))
                    .filter(below)
                    .collect();
                walk.run(sorted(ids), live)
            }
            TaskState::Leased => walk.run(sorted(self.leases.leased_tasks().filter(below).collect()), live),
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled => {
                walk.run(self.kept_ids(&queues, q).into_iter(), kept)
            }
            TaskState::Ready => walk.run(self.live_ids(&queues, q.before), live),
            TaskState::Unspecified => {
                // Two sources, live tasks and kept outcomes: two parts, merged.
                let stopped = walk.run(self.live_ids(&queues, q.before), live);
                let first = TaskPage { tasks: std::mem::take(&mut walk.found), next: stopped };
                let stopped = walk.run(self.kept_ids(&queues, q).into_iter(), kept);
                let second = TaskPage { tasks: walk.found, next: stopped };
                return pm_client::merge_task_pages([first, second], limit);
            }
        };
        TaskPage { tasks: walk.found, next: stopped }
    }

    /// The live task `id` as a listing shows it, if it matches `q`. The cheap tests come first: the status
    /// (with its reason) is built only for a match.
    fn live_listed(&self, id: u64, q: &ListQuery, queues: &[usize]) -> Option<pb::TaskStatus> {
        let t = self.view(id)?;
        if !queues.contains(&(t.queue as usize)) || (!q.key.is_empty() && t.key != q.key) {
            return None;
        }
        if q.state != TaskState::Unspecified && listed_state(&t.state) != q.state {
            return None;
        }
        if !q.flow_id.is_empty() && (!t.chain || self.flow_of(id, &t).1 != q.flow_id) {
            return None;
        }
        let mut s = self.live_status(id, &t);
        s.result = Default::default();
        Some(s)
    }

    /// The live ids of `queues` below `before`, newest first (several queues: merged).
    fn live_ids<'a>(&'a self, queues: &[usize], before: u64) -> Box<dyn Iterator<Item = u64> + 'a> {
        match queues {
            [one] => Box::new(self.queues[*one].ids.before(before)),
            many => {
                let walks: Vec<_> = many.iter().map(|&i| self.queues[i].ids.before(before).peekable()).collect();
                Box::new(MergeDesc { walks })
            }
        }
    }

    /// The kept outcomes of `queues` below the cursor, in the state asked (any final one if none), newest
    /// first.
    fn kept_ids(&self, queues: &[usize], q: &ListQuery) -> Vec<u64> {
        let state_ok = |s: TaskState| q.state == TaskState::Unspecified || s == q.state;
        self.results.ids_below(q.before, |k| state_ok(k.state) && queues.contains(&(k.queue as usize)))
    }

    /// The kept outcome of `id` as a listing shows it, if it matches `q`.
    fn kept_listed(&self, id: u64, q: &ListQuery, queues: &[usize]) -> Option<pb::TaskStatus> {
        let kept = self.results.get_kept(id)?;
        if !queues.contains(&(kept.queue as usize)) {
            return None;
        }
        if q.state != TaskState::Unspecified && kept.state != q.state {
            return None;
        }
        let mut s = pb::TaskStatus::decode(kept.body.clone()).ok()?;
        if (!q.key.is_empty() && s.key != q.key) || (!q.flow_id.is_empty() && s.flow_id != q.flow_id) {
            return None;
        }
        s.result = Default::default();
        Some(s)
    }
}

/// Several descending id walks merged into one, still descending.
struct MergeDesc<I: Iterator<Item = u64>> {
    walks: Vec<std::iter::Peekable<I>>,
}

impl<I: Iterator<Item = u64>> Iterator for MergeDesc<I> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let best = self.walks.iter_mut().enumerate().filter_map(|(i, w)| w.peek().map(|&id| (id, i))).max()?;
        self.walks[best.1].next()
    }
}
