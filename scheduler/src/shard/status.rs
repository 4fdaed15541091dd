//! Task status, kept outcomes and watchers: what a producer learns about its tasks after `SubmitAck`.
//!
//! A live task's status is read off its [`Task`]. When a task finishes (acked, failed for good, cancelled) its
//! outcome, an encoded [`pb::TaskStatus`], goes into the same round as its tombstone: a `Finish` record that
//! ends the task and keeps the outcome until `result_retention` has passed (at most `max_results` of them per
//! shard, oldest first out), so a status query after a restart still finds it. Watchers (`Watch`, or
//! `Submit.notify`) get a `Completed` once the round is durable; for a dead-lettered task at once.

use bytes::Bytes;
use pm_protocol::pb::{self, TaskState};
use pm_protocol::{ErrorCode, Message as _};
use tokio::time::Instant;

use super::results::{Kept, Outcome};
use super::task::{format_unix_ms, State, Task};
use super::{now_unix_ms, Shard};
use crate::metrics as m;
use crate::outbox::{OutTx, Outbound, Part};
use crate::store::Record;

impl Shard {
    /// Writes the record that finishes `task_id` (still in `tasks`, state `Acking`): a Finish keeping its
    /// outcome when results are kept, else a bare Ack tombstone. Returns the outcome to install (and send to
    /// watchers) once the round is durable; without kept results and watchers only its state.
    pub(super) fn finish_record(&mut self, task_id: u64, state: TaskState, result: Bytes, reason: String) -> Outcome {
        // Follow-ups first: they and the record below form one unit in the log.
        let children = if state == TaskState::Cancelled { Vec::new() } else { self.write_follow_ups(task_id, state) };
        let keep = !self.cfg.result_retention.is_zero();
        // Without a kept outcome the queue is not needed (nothing is listed).
        let bare = Outcome { state, queue: 0, kept: None, status: None };
        let watched = self.watchers.contains_key(&task_id);
        if !keep && !watched {
            self.rounds.record(Record::Ack { task_id });
            return bare;
        }
        let Some(t) = self.tasks.get(&task_id) else {
            self.rounds.record(Record::Ack { task_id });
            return bare;
        };
        let queue = t.queue;
        let mut status = self.base_status(task_id, t);
        let now_ms = now_unix_ms();
        status.state = state as i32;
        status.finished_unix_ms = now_ms;
        status.reason = reason;
        status.children = children;
        if result.len() > self.cfg.max_result_bytes {
            let note = format!("result of {} bytes not kept (over --max-result-bytes)", result.len());
            status.reason = if status.reason.is_empty() { note } else { format!("{}; {note}", status.reason) };
        } else {
            status.result = result;
        }
        let body = Bytes::from(status.encode_to_vec());
        let expires_unix_ms = now_ms + self.cfg.result_retention.as_millis() as u64;
        if keep {
            self.rounds.record(Record::Finish { task_id, expires_unix_ms, body: body.clone() });
        } else {
            self.rounds.record(Record::Ack { task_id });
        }
        Outcome { state, queue, kept: Some((body, expires_unix_ms)), status: watched.then(|| Box::new(status)) }
    }

    /// A result document as kept with a dead letter: dropped if it is over the limit.
    pub(super) fn bounded_result(&self, result: Bytes) -> Bytes {
        if result.len() > self.cfg.max_result_bytes {
            Bytes::new()
        } else {
            result
        }
    }

    /// A finish is durable: keep the outcome (if results are kept) and tell the task's watchers.
    pub(super) fn finished(&mut self, task_id: u64, outcome: Outcome) {
        let watchers = self.watchers.remove(&task_id);
        let keep = !self.cfg.result_retention.is_zero();
        let (queue, state) = (outcome.queue, outcome.state);
        let body = match (outcome.kept, &watchers) {
            (Some((body, expires)), None) => {
                if keep {
                    self.results.keep(task_id, Kept { body, queue, state }, expires, &self.cfg.results_budget);
                }
                return;
            }
            (Some((body, expires)), Some(_)) => {
                if keep {
                    let kept = Kept { body: body.clone(), queue, state };
                    self.results.keep(task_id, kept, expires, &self.cfg.results_budget);
                }
                Some(body)
            }
            (None, _) => None,
        };
        let Some(watchers) = watchers else { return };
        let status = match (outcome.status, body) {
            (Some(status), _) => *status,
            // A watcher that came after the task finished.
            (None, Some(body)) => pb::TaskStatus::decode(body).unwrap_or_else(|e| {
                tracing::error!(task_id, "undecodable outcome: {e}");
                Self::bare_status(task_id, outcome.state)
            }),
            // Results are not kept and nobody watched when it finished: the state alone.
            (None, None) => Self::bare_status(task_id, outcome.state),
        };
        for out in watchers {
            let _ = out.send(Outbound::Frame(pb::Completed { task: Some(status.clone()) }.into()));
        }
    }

    /// A status that says only the final state.
    fn bare_status(task_id: u64, state: TaskState) -> pb::TaskStatus {
        pb::TaskStatus { task_id, code: ErrorCode::Ok as i32, state: state as i32, ..Default::default() }
    }

    /// A task was dead-lettered: its watchers hear of it now (it stays stored; a redrive may revive it).
    pub(super) fn notify_dead(&mut self, task_id: u64) {
        let Some(watchers) = self.watchers.remove(&task_id) else { return };
        let Some(status) = self.status_of(task_id) else { return };
        for out in watchers {
            let _ = out.send(Outbound::Frame(pb::Completed { task: Some(status.clone()) }.into()));
        }
    }

    /// Registers `out` to hear when `task_id` finishes, or tells it at once if it has. `NOT_FOUND` when this
    /// shard does not know the task.
    pub(super) fn watch(&mut self, task_id: u64, out: &OutTx) -> ErrorCode {
        let now_final = match self.tasks.get(&task_id).map(|t| &t.state) {
            Some(State::Dead(d)) => d.written,
            Some(_) => false,
            None if self.find_small(task_id).is_some() => false,
            None if self.results.get(task_id).is_some() => true,
            None => return ErrorCode::NotFound,
        };
        if now_final {
            if let Some(status) = self.status_of(task_id) {
                let _ = out.send(Outbound::Frame(pb::Completed { task: Some(status) }.into()));
            }
        } else {
            // Once per connection (`pmctl wait` watches again every few seconds), and closed ones go.
            let list = self.watchers.entry(task_id).or_default();
            list.retain(|o| !o.is_closed());
            if !list.iter().any(|o| o.same_channel(out)) {
                list.push(out.clone());
            }
        }
        ErrorCode::Ok
    }

    /// `Watch`: registers the ids this shard knows; the others are left out of its answer.
    pub(super) fn on_watch(&mut self, out: OutTx, request_id: u64, items: Vec<(usize, u64)>) {
        let codes = items
            .into_iter()
            .filter_map(|(i, id)| match self.watch(id, &out) {
                ErrorCode::NotFound => None,
                code => Some((i, code)),
            })
            .collect();
        let _ = out.send(Outbound::Part { request_id, part: Part::Cancel(codes) });
    }

    /// The status of a task this shard holds or kept the outcome of.
    pub(super) fn status_of(&self, task_id: u64) -> Option<pb::TaskStatus> {
        if let Some(t) = self.view(task_id) {
            return Some(self.live_status(task_id, &t));
        }
        let body = self.results.get(task_id)?;
        match pb::TaskStatus::decode(body.clone()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(task_id, "undecodable kept outcome: {e}");
                None
            }
        }
    }

    /// What every status of `t` says, whatever its state.
    fn base_status(&self, task_id: u64, t: &Task) -> pb::TaskStatus {
        let mut s = pb::TaskStatus {
            task_id,
            code: ErrorCode::Ok as i32,
            queue: self.queues[t.queue as usize].name.clone(),
            key: t.key.clone(),
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            submitted_unix_ms: t.submitted_unix_ms,
            started_unix_ms: t.started_unix_ms,
            ..Default::default()
        };
        if t.chain {
            (s.parent_id, s.flow_id) = self.flow_of(task_id, t);
        }
        s
    }

    /// The status of a task still held, with why it is not running when it is not.
    pub(super) fn live_status(&self, task_id: u64, t: &Task) -> pb::TaskStatus {
        let mut s = self.base_status(task_id, t);
        let now = Instant::now();
        let wall = now_unix_ms();
        let at_wall = |at: Instant| wall + at.saturating_duration_since(now).as_millis() as u64;
        let (state, reason) = match &t.state {
            State::Pending => (TaskState::Ready, "being written to the store".to_string()),
            State::Ready => (TaskState::Ready, self.ready_reason(t)),
            State::Held => (
                TaskState::Ready,
                "held after the restart for the agent that ran it to reclaim it (--reclaim-grace-ms)".into(),
            ),
            State::Delayed => {
                let until = t.not_before.map_or(0, at_wall);
                let why = if t.attempts > 0 { "retry backoff" } else { "submit delay" };
                (TaskState::Delayed, format!("delayed until {} ({why})", format_unix_ms(until)))
            }
            State::Leased(lease_id) => {
                if let Some(l) = self.leases.get(*lease_id) {
                    s.lease_deadline_unix_ms = at_wall(l.deadline);
                }
                (TaskState::Leased, format!("running: attempt {} of {}", t.attempts, t.max_attempts))
            }
            State::Acking => (TaskState::Leased, "finishing (its outcome is being written)".into()),
            State::Dead(d) => {
                s.finished_unix_ms = d.finished_unix_ms;
                s.result = d.result.clone();
                s.children = d.children.clone();
                (TaskState::Dead, d.reason.clone())
            }
        };
        s.state = state as i32;
        s.reason = reason;
        s
    }

    /// Why a ready task is not leased now.
    fn ready_reason(&self, t: &Task) -> String {
        let q = &self.queues[t.queue as usize];
        if self.draining {
            return "the scheduler is shutting down".into();
        }
        if t.class != 0 {
            let need = q.class_executors(t.class).iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ");
            match q.capable(t.class) {
                (false, _) => {
                    let have: Vec<String> = q
                        .agent_executors()
                        .into_iter()
                        .map(|e| e.map_or("anything".to_string(), |e| e.join(", ")))
                        .map(|e| format!("[{e}]"))
                        .collect();
                    let have = if have.is_empty() {
                        "none is connected".to_string()
                    } else {
                        format!("connected agents have {}", have.join(" "))
                    };
                    return format!("no connected agent of queue `{}` has the executors {need} ({have})", q.name);
                }
                (true, false) => return format!("every agent with the executors {need} is busy (no credit)"),
                (true, true) => {}
            }
        }
        if q.key_at_limit(&t.key) {
            return format!(
                "key `{}` has {} running task(s): the queue's limit (max-per-key {})",
                t.key,
                q.running_of(&t.key),
                q.limits.max_per_key
            );
        }
        if q.throttled_until.is_some() {
            return format!("queue `{}` is at its rate limit ({}/s)", q.name, q.limits.rate_per_sec);
        }
        if !q.has_credit() {
            return format!("no agent has credit on queue `{}` (all busy, or none connected)", q.name);
        }
        format!("waiting in queue `{}` ({} ready)", q.name, q.ready_len())
    }

    /// Drops the outcomes that expired at or before `now_ms`.
    pub(super) fn expire_results(&mut self, now_ms: u64) {
        self.results.expire(now_ms);
        metrics::gauge!(m::RESULTS_KEPT, "shard" => self.index.to_string()).set(self.results.len() as f64);
        metrics::gauge!(m::PAYLOAD_RESIDENT, "shard" => self.index.to_string())
            .set(self.payloads.resident_bytes() as f64);
        metrics::gauge!(m::TASKS_KEPT_SMALL, "shard" => self.index.to_string()).set(self.small_tasks() as f64);
    }
}
