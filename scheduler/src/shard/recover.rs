//! A shard built from what the store recovered after a restart: its share of the live tasks (placed by
//! queue), of the idempotency keys and of the kept outcomes.
//!
//! A recovered task is ready again, with its attempt count kept (leases live in memory only), except:
//! - a dead letter stays dead;
//! - a task whose not-before time has not come is delayed;
//! - a task that had been delivered before the stop is **held** for `--reclaim-grace-ms`: it is probably
//!   still running on an agent that is about to reconnect and reclaim it, and delivering it to another
//!   agent at once would run it twice.

use std::cmp::Reverse;
use std::time::Duration;

use bytes::Bytes;
use pm_protocol::pb::{self, StoredTask, TaskState};
use pm_protocol::Message as _;
use tokio::time::Instant;

use super::idempotency::Idempotency;
use super::queue::{executor_set, Executors};
use super::restoring::Restoring;
use super::results::Kept;
use super::small::Small;
use super::task::{Dead, Defaults, State, Task};
use super::{shard_of_queue, Shard};
use crate::store::{RecoveredIdem, RecoveredResult, RecoveredTask};

/// Tasks decoded together, while the shard places the previous batch: large enough to spread over every core,
/// small enough that a batch's decoded specs are a few MiB.
const BATCH: usize = 1 << 14;

/// One recovered task decoded: all of a restore's work that needs nothing of the shard (decoding the stored
/// task, the executors its steps name, whether it may chain, building and boxing its [`Task`]), done for a
/// whole batch on every core at once. The shard then gives it its queue and class and places it.
struct Decoded {
    task_id: u64,
    task: Built,
    queue: String,
    executors: Executors,
    not_before_unix_ms: u64,
    dead_reason: Option<String>,
}

/// A recovered task as the shard will keep it.
enum Built {
    Full(Box<Task>),
    /// Ready, its payload left in the store: kept small (`small.rs`), so no [`Task`] is built.
    Small {
        priority: i32,
        small: Small,
    },
}

/// What every decoder of a batch is given.
#[derive(Clone, Copy)]
struct Decoding {
    defaults: Defaults,
    now: Instant,
    /// Whether a payload may still become resident: when the shard's budget is used up, a payload is dropped
    /// right where it was decoded.
    keep_payloads: bool,
    /// Now, in ms since the Unix epoch (a task not before a later time is delayed).
    now_ms: u64,
    /// Whether a task recovered with an attempt is held (a reclaim grace is set).
    hold: bool,
    /// Now, in ms after the shard's epoch (since when a small task waits).
    ready_ms: u64,
}

fn decode(rt: &RecoveredTask, with: Decoding) -> Option<Decoded> {
    // Decoded from a plain slice, the payload is copied out of the segment's buffer: it does not pin the buffer
    // when it stays resident, and no thread touches the buffer's shared reference count.
    let stored = match StoredTask::decode(&rt.body[..]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(task_id = rt.task_id, "undecodable stored task skipped: {e}");
            return None;
        }
    };
    let mut spec = stored.spec.unwrap_or_default();
    let needed = pm_task::pipeline::required_executors(&spec);
    let executors = if needed.is_empty() { Executors::default() } else { executor_set(needed) };
    let ready = rt.dead_reason.is_none() && stored.not_before_unix_ms <= with.now_ms && !(rt.attempts > 0 && with.hold);
    let small = Small::new(rt.attempts, with.ready_ms).filter(|_| ready && !with.keep_payloads);
    if let Some(small) = small {
        return Some(Decoded {
            task_id: rt.task_id,
            task: Built::Small { priority: spec.priority, small },
            queue: spec.queue,
            executors,
            not_before_unix_ms: stored.not_before_unix_ms,
            dead_reason: None,
        });
    }
    let chain = pm_task::pipeline::may_chain(&spec.payload);
    let payload = std::mem::take(&mut spec.payload);
    let key = std::mem::take(&mut spec.key);
    let mut task = Box::new(Task::from_spec(0, 0, &spec, chain, None, with.defaults, with.now));
    task.key = key;
    task.payload = with.keep_payloads.then_some(payload);
    task.attempts = rt.attempts;
    task.submitted_unix_ms = stored.submitted_unix_ms;
    Some(Decoded {
        task_id: rt.task_id,
        task: Built::Full(task),
        queue: spec.queue,
        executors,
        not_before_unix_ms: stored.not_before_unix_ms,
        dead_reason: rt.dead_reason.clone(),
    })
}

/// Runs `f`, adding the time it took to `total`.
fn timed<T>(total: &mut std::time::Duration, f: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let out = f();
    *total += started.elapsed();
    out
}

fn decode_batch(batch: &[RecoveredTask], with: Decoding) -> Vec<Decoded> {
    use rayon::prelude::*;
    batch.par_iter().filter_map(|rt| decode(rt, with)).collect()
}

impl Shard {
    /// Takes a batch of this shard's recovered tasks (in id order, after the batches before).
    ///
    /// The tasks are decoded a batch at a time on every core while this thread places the batch before, so
    /// a restart with one large queue (all of it one shard's) is not bound to one core.
    pub(super) fn restore_tasks(&mut self, tasks: Vec<RecoveredTask>, r: &mut Restoring) {
        let (now, now_ms) = (r.now, r.now_ms);
        let mut batches = tasks.chunks(BATCH);
        let defaults = self.defaults();
        let hold = !self.cfg.reclaim_grace.is_zero();
        let ready_ms = self.since_epoch(now);
        let with =
            |shard: &Shard| Decoding { defaults, now, keep_payloads: shard.payloads.fits(1), now_ms, hold, ready_ms };
        let mut decoded = batches.next().map(|b| decode_batch(b, with(self))).unwrap_or_default();
        let mut counted = std::mem::take(&mut r.counted);
        loop {
            let next = batches.next();
            let batch = std::mem::take(&mut decoded);
            let next_with = with(self);
            let (next, ()) = rayon::join(
                || timed(&mut r.decoding, || next.map(|b| decode_batch(b, next_with))),
                || timed(&mut r.placing, || self.place(batch, &mut counted, now, now_ms)),
            );
            match next {
                Some(next) => decoded = next,
                None => break,
            }
        }
        r.counted = counted;
    }

    /// Ends the rebuild: the full tasks go into the map, the held ones wait for their grace, and the keys and
    /// kept outcomes of this shard's queues are taken.
    pub(super) fn finish_restore(&mut self, r: Restoring, idem: Vec<RecoveredIdem>, results: Vec<RecoveredResult>) {
        let Restoring { now, now_ms, counted, decoding, mut placing } = r;
        timed(&mut placing, || self.insert_in_bucket_order(counted));
        if !self.held.is_empty() {
            self.hold_until = Some(now + self.cfg.reclaim_grace);
        }
        let (index, shards) = (self.index, self.shards);
        let mine = idem.into_iter().filter(|i| shard_of_queue(Idempotency::queue_of(&i.key), shards) == index);
        self.idem.restore(mine.map(|i| (i.key, i.task_id, i.expires_unix_ms)), now_ms);
        // Ordered by expiry, as the store returns them.
        if !self.cfg.result_retention.is_zero() {
            for r in results {
                if r.expires_unix_ms > now_ms {
                    // What listings filter on, read once here (a finish keeps it from the live task).
                    let status = pb::TaskStatus::decode(r.body.clone()).unwrap_or_default();
                    let queue = self.queue_id(pm_task::pipeline::queue_or_default(&status.queue));
                    let state = TaskState::try_from(status.state).unwrap_or(TaskState::Unspecified);
                    let kept = Kept { body: r.body, queue, state };
                    self.results.keep(r.task_id, kept, r.expires_unix_ms, &self.cfg.results_budget);
                }
            }
        }
        let small = self.small_tasks();
        tracing::info!(
            shard = self.index,
            tasks = self.tasks.len() + small,
            small,
            held = self.held.len(),
            decode_ms = decoding.as_millis() as u64,
            place_ms = placing.as_millis() as u64,
            elapsed_ms = now.elapsed().as_millis() as u64,
            "shard recovered"
        );
        self.update_gauges();
    }

    /// Places decoded tasks in their queues: ready, delayed, held or dead (see the module's doc).
    fn place(&mut self, batch: Vec<Decoded>, counted: &mut Vec<(u64, Box<Task>)>, now: Instant, now_ms: u64) {
        let mut last_queue: Option<(String, u32)> = None;
        for d in batch {
            let name = pm_task::pipeline::queue_or_default(&d.queue);
            let q = match &last_queue {
                Some((last, q)) if last == name => *q,
                _ => {
                    let q = self.queue_id(name);
                    last_queue = Some((name.to_string(), q));
                    q
                }
            };
            let class = self.queues[q as usize].class_of(&d.executors);
            let task_id = d.task_id;
            let mut task = match d.task {
                Built::Full(task) => task,
                Built::Small { priority, small } => {
                    let queue = &mut self.queues[q as usize];
                    queue.push_small(class, priority, task_id, small);
                    queue.ids.insert(task_id);
                    queue.rates.submitted += 1;
                    continue;
                }
            };
            task.queue = q;
            task.class = class;
            if let Some(reason) = d.dead_reason {
                task.state = State::Dead(Box::new(Dead {
                    reason,
                    result: Bytes::new(),
                    finished_unix_ms: 0,
                    children: Vec::new(),
                    written: true,
                }));
                self.queues[q as usize].dead.insert(task_id);
            } else if d.not_before_unix_ms > now_ms {
                let at = now + Duration::from_millis(d.not_before_unix_ms - now_ms);
                task.state = State::Delayed;
                task.not_before = Some(at);
                self.queues[q as usize].delayed.push(Reverse((at, task_id)));
            } else if task.attempts > 0 && !self.cfg.reclaim_grace.is_zero() {
                task.state = State::Held;
                self.queues[q as usize].held += 1;
                self.held.push(task_id);
            } else {
                task.state = State::Ready;
                self.queues[q as usize].push_ready(task.class, task.entry(task_id));
            }
            self.count_task(task_id, &mut task);
            counted.push((task_id, task));
        }
    }

    /// Puts the restored tasks in the task map in the order of their buckets
    /// ([`crate::idmap::sort_for_insert`]): in the order of their ids, each insert was a cache and TLB miss,
    /// most of the time a large restart spent placing.
    fn insert_in_bucket_order(&mut self, mut counted: Vec<(u64, Box<Task>)>) {
        crate::idmap::sort_for_insert(&mut self.tasks, &mut counted);
        for (task_id, task) in counted {
            self.tasks.insert(task_id, task);
        }
    }
}
