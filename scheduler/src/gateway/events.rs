//! `GET /api/events`: a server-sent event stream for live views.
//!
//! - `queues`, every second: the body of `GET /api/queues` (every member's figures and their sum).
//! - `queue` (with `?queue=Q`): that queue's figures, whenever they change (and once at the start).
//! - `task` (with `?task=ID`): that task's status, whenever its state, attempts or reason change (and once
//!   at the start); the stream ends after a final state.
//!
//! The stream opens its connections to the members once, with the caller's token, and asks them once a
//! second: a viewer costs the nodes one stats request a second, whatever happens to the tasks, so the event
//! stream adds nothing to the task path. Browsers cannot set headers on `EventSource`: the console reads the
//! stream with `fetch()`, which can send the token.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use pm_client::json::status_json;
use pm_protocol::pb::TaskState;
use pm_protocol::Role;
use pm_task::ring::Ring;
use serde_json::Value;

use super::error::ApiError;
use super::members::Members;
use super::query::{params, queue_of};
use super::queues::queues_view_of;
use super::state::Gateway;

/// Time between two rounds of the stream.
const PERIOD: Duration = Duration::from_secs(1);

struct Watch {
    gw: Arc<Gateway>,
    members: Members,
    queue: String,
    task: Option<u64>,
    last_queue: Value,
    last_task: Value,
    task_done: bool,
    tick: tokio::time::Interval,
    pending: VecDeque<Event>,
}

impl Watch {
    /// One round: the queues, and what changed of the queue and task watched.
    async fn round(&mut self) {
        let view = queues_view_of(&self.gw, &self.members).await;
        if !self.queue.is_empty() {
            let q = view["queues"]
                .as_array()
                .and_then(|qs| qs.iter().find(|q| q["queue"] == self.queue.as_str()).cloned())
                .unwrap_or(Value::Null);
            if q != self.last_queue {
                self.pending.push_back(event("queue", &q));
                self.last_queue = q;
            }
        }
        self.pending.push_back(event("queues", &view));
        if let (Some(id), false) = (self.task, self.task_done) {
            let owner = if self.gw.server.ordinal.is_some() { Ring::ordinal_of_task(id) } else { 0 };
            let status = match self.members.get(owner) {
                Some((_, Ok(c))) => c.status(vec![id]).await.ok().and_then(|mut v| v.pop()),
                _ => None,
            };
            if let Some(s) = status {
                let v = status_json(&s);
                let seen = (&v["state"], &v["attempts"], &v["reason"]);
                if seen != (&self.last_task["state"], &self.last_task["attempts"], &self.last_task["reason"]) {
                    self.pending.push_back(event("task", &v));
                    self.task_done = matches!(
                        TaskState::try_from(s.state),
                        Ok(TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled)
                    );
                    self.last_task = v;
                }
            }
        }
    }
}

fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// `GET /api/events?queue=&task=`.
pub(super) async fn events(
    State(gw): State<Arc<Gateway>>,
    raw: RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let p = params(raw.0.as_deref(), &["queue", "task"])?;
    let queue = queue_of(&p)?;
    let task = match p.get("task") {
        None => None,
        Some(t) => Some(t.parse::<u64>().map_err(|_| ApiError::param("task", format!("{t:?} is not a task id")))?),
    };
    let members = gw.members(Role::Producer, &headers).await?;
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watch = Watch {
        gw,
        members,
        queue,
        task,
        last_queue: Value::Bool(false),
        last_task: Value::Null,
        task_done: false,
        tick,
        pending: VecDeque::new(),
    };
    let stream = futures::stream::unfold(watch, |mut w| async move {
        loop {
            if let Some(ev) = w.pending.pop_front() {
                return Some((Ok::<_, Infallible>(ev), w));
            }
            tokio::select! {
                _ = w.tick.tick() => {}
                _ = w.gw.server.shutdown.cancelled() => return None,
            }
            w.round().await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}
