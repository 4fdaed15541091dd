//! Queues: every member's figures and their sum (`GET /api/queues`), and an operator's pause, resume and
//! purge, sent to every member (a queue's tasks are spread over all of them).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pm_protocol::pb::{QueueAction, QueueStats, StatsReply};
use pm_protocol::{ErrorCode, Role};
use pm_task::pipeline::validate_queue_name;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::members::{ask_all, Members};
use super::state::Gateway;

/// One queue's figures as JSON.
fn figures(q: &QueueStats) -> Value {
    json!({
        "ready": q.ready, "delayed": q.delayed, "leased": q.leased, "dead": q.dead, "paused": q.paused,
        "agents": q.agents, "credits": q.credits, "waitingExecutor": q.waiting_executor,
        "submittedPerSec": q.submitted_per_sec, "completedPerSec": q.completed_per_sec,
        "oldestReadyAgeMs": q.oldest_ready_age_ms,
    })
}

/// The sum of several members' figures of one queue: counts and rates add up, the oldest age is the
/// largest, and the queue is paused when every member that has it is.
fn sum(parts: &[&QueueStats]) -> QueueStats {
    let mut total = QueueStats { paused: !parts.is_empty(), ..Default::default() };
    for q in parts {
        pm_client::add_queue_stats(&mut total, q);
        total.paused &= q.paused;
    }
    total
}

/// Every member's stats, as `GET /api/queues` shows them.
pub(super) async fn queues_view(gw: &Gateway, headers: &HeaderMap) -> Result<Value, ApiError> {
    let members = gw.members(Role::Producer, headers).await?;
    Ok(queues_view_of(gw, &members).await)
}

/// [`queues_view`] over connections already open (the event stream asks every second).
pub(super) async fn queues_view_of(gw: &Gateway, members: &Members) -> Value {
    let answers = ask_all(members, |c| async move { c.stats().await }).await;
    view(gw, &answers)
}

fn view(gw: &Gateway, answers: &[(String, Result<StatsReply, pm_client::Error>)]) -> Value {
    let mut by_queue: BTreeMap<&str, Vec<(&str, &QueueStats)>> = BTreeMap::new();
    let mut members = Vec::new();
    for (node, answer) in answers {
        match answer {
            Ok(s) => {
                for q in &s.queues {
                    by_queue.entry(q.queue.as_str()).or_default().push((node.as_str(), q));
                }
                members.push(json!({"node": node, "nodeId": s.node_id, "up": true, "error": null,
                    "connections": s.connections, "ringEpoch": s.ring_epoch}));
            }
            Err(e) => members.push(json!({"node": node, "up": false, "error": e.to_string()})),
        }
    }
    let queues: Vec<Value> = by_queue
        .into_iter()
        .map(|(name, parts)| {
            let all: Vec<&QueueStats> = parts.iter().map(|(_, q)| *q).collect();
            let mut v = figures(&sum(&all));
            let by_member: Map<String, Value> = parts.iter().map(|(n, q)| (n.to_string(), figures(q))).collect();
            v["queue"] = json!(name);
            v["byMember"] = Value::Object(by_member);
            v
        })
        .collect();
    json!({"node": gw.server.node_id, "ringEpoch": gw.server.ring.epoch(), "members": members, "queues": queues})
}

/// `GET /api/queues`.
pub(super) async fn list(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Result<Response, ApiError> {
    Ok(axum::Json(queues_view(&gw, &headers).await?).into_response())
}

/// `GET /api/queues/{queue}`: `404` when no member knows it.
pub(super) async fn one(
    State(gw): State<Arc<Gateway>>,
    Path(queue): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let view = queues_view(&gw, &headers).await?;
    let found = view["queues"].as_array().and_then(|qs| qs.iter().find(|q| q["queue"] == queue.as_str()).cloned());
    match found {
        Some(mut q) => {
            q["members"] = view["members"].clone();
            Ok(axum::Json(q).into_response())
        }
        None => Err(unknown_queue(&queue)),
    }
}

fn unknown_queue(queue: &str) -> ApiError {
    ApiError::of_code(ErrorCode::NotFound, format!("no member knows queue {queue:?} (no task or agent named it)"))
}

/// `POST /api/queues/{queue}/{pause|resume|purge}` (admin): checked first (token, name, action, that some
/// member knows the queue), then sent to every member; the answer names each member's outcome.
pub(super) async fn act(
    State(gw): State<Arc<Gateway>>,
    Path((queue, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let action = match action.as_str() {
        "pause" => QueueAction::Pause,
        "resume" => QueueAction::Resume,
        "purge" => QueueAction::Purge,
        other => {
            let msg = format!("no action {other:?} on a queue (pause, resume or purge)");
            return Err(ApiError::of_code(ErrorCode::NotFound, msg));
        }
    };
    validate_queue_name(&queue).map_err(|e| ApiError::param("queue", e))?;
    let members = gw.members(Role::Admin, &headers).await?;
    let stats = ask_all(&members, |c| async move { c.stats().await }).await;
    let known = stats.iter().any(|(_, s)| s.as_ref().is_ok_and(|s| s.queues.iter().any(|q| q.queue == queue)));
    if !known {
        return Err(unknown_queue(&queue));
    }
    let answers = ask_all(&members, |c| {
        let queue = queue.clone();
        async move { c.queue_control(&queue, action).await }
    })
    .await;
    let ok = answers.iter().filter(|(_, a)| a.is_ok()).count();
    let purged: u64 = answers.iter().filter_map(|(_, a)| a.as_ref().ok()).map(|r| r.purged).sum();
    let per_member: Vec<Value> = answers
        .iter()
        .map(|(node, a)| match a {
            Ok(r) => json!({"node": node, "ok": true, "paused": r.paused, "purged": r.purged}),
            Err(e) => json!({"node": node, "ok": false, "error": e.to_string()}),
        })
        .collect();
    let mut body = json!({"queue": queue, "members": per_member});
    match action {
        QueueAction::Purge => body["purged"] = json!(purged),
        _ => body["paused"] = json!(action == QueueAction::Pause),
    }
    let status = match ok {
        n if n == answers.len() => StatusCode::OK,
        0 => StatusCode::BAD_GATEWAY,
        _ => StatusCode::MULTI_STATUS,
    };
    Ok((status, axum::Json(body)).into_response())
}
