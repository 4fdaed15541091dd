//! Dead letters over HTTP: pages of them (every member's, merged oldest first), and redrive or delete of the
//! ones named, or of all of a queue's with an explicit `"all": true`. A body naming nothing is refused: it is
//! never taken to mean "everything".

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pm_client::DeadPage;
use pm_protocol::pb::DeadLetter;
use pm_protocol::Role;
use pm_task::pipeline::validate_queue_name;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::members::ask_all;
use super::query::{cursor_of, limit_of, params, queue_of};
use super::state::Gateway;

/// A redrive or delete: the dead letters named, or all of the queue filter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Selection {
    #[serde(default)]
    queue: String,
    #[serde(default)]
    ids: Vec<u64>,
    #[serde(default)]
    all: bool,
}

/// A dead letter as JSON (the payload as JSON when it is, else as text, else base64).
fn dead_json(d: &DeadLetter) -> Value {
    let payload = pm_client::json::bytes_json(&d.payload);
    json!({"taskId": d.task_id, "queue": d.queue, "attempts": d.attempts, "reason": d.reason, "payload": payload})
}

/// Merges members' pages, lowest id first: each member has shown everything up to its own cursor, so the
/// page stops at the lowest of those cursors.
fn merge(pages: Vec<DeadPage>, limit: usize) -> DeadPage {
    let ceiling = pages.iter().filter_map(|p| p.next).min();
    let mut tasks: Vec<DeadLetter> = pages.into_iter().flat_map(|p| p.tasks).collect();
    tasks.retain(|d| ceiling.is_none_or(|c| d.task_id <= c));
    tasks.sort_by_key(|d| d.task_id);
    let next = if tasks.len() >= limit {
        tasks.truncate(limit);
        tasks.last().map(|d| d.task_id)
    } else {
        ceiling
    };
    DeadPage { tasks, next }
}

/// `GET /api/dead?queue=&limit=&cursor=`.
pub(super) async fn list(
    State(gw): State<Arc<Gateway>>,
    raw: axum::extract::RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let p = params(raw.0.as_deref(), &["queue", "limit", "cursor"])?;
    let queue = queue_of(&p)?;
    let limit = limit_of(&p)?;
    let after = cursor_of(&p)?;
    let members = gw.members(Role::Producer, &headers).await?;
    let answers = ask_all(&members, |c| {
        let queue = queue.clone();
        async move { c.dead_letter_page(&queue, limit as u32, after).await }
    })
    .await;
    let mut pages = Vec::new();
    let mut down = Vec::new();
    for (node, a) in answers {
        match a {
            Ok(p) => pages.push(p),
            Err(e) => down.push(json!({"node": node, "error": e.to_string()})),
        }
    }
    let page = merge(pages, limit);
    let items: Vec<Value> = page.tasks.iter().map(dead_json).collect();
    let next = page.next.map(|n| Value::String(n.to_string())).unwrap_or(Value::Null);
    Ok(axum::Json(json!({"deadLetters": items, "nextCursor": next, "unreachable": down})).into_response())
}

async fn selection(gw: &Gateway, headers: &HeaderMap, body: Body) -> Result<Selection, ApiError> {
    let bytes = gw.body(headers, body).await?;
    let s: Selection = if bytes.is_empty() {
        Selection::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("the body: {e}")))?
    };
    if !s.queue.is_empty() {
        validate_queue_name(&s.queue).map_err(|e| ApiError::param("queue", e))?;
    }
    match (s.ids.is_empty(), s.all) {
        (true, false) => Err(ApiError::param("ids", "name the dead letters (\"ids\"), or set \"all\": true")),
        (false, true) => Err(ApiError::param("all", "give \"ids\" or \"all\", not both")),
        _ => Ok(s),
    }
}

/// Sums what each member did, and names the members that failed.
fn outcome(what: &str, answers: Vec<(String, Result<u64, pm_client::Error>)>) -> Response {
    let total: u64 = answers.iter().filter_map(|(_, a)| a.as_ref().ok()).sum();
    let ok = answers.iter().filter(|(_, a)| a.is_ok()).count();
    let failed: Vec<Value> = answers
        .iter()
        .filter_map(|(node, a)| a.as_ref().err().map(|e| json!({"node": node, "error": e.to_string()})))
        .collect();
    let status = match ok {
        n if n == answers.len() => StatusCode::OK,
        0 => StatusCode::BAD_GATEWAY,
        _ => StatusCode::MULTI_STATUS,
    };
    (status, axum::Json(json!({what: total, "failed": failed}))).into_response()
}

/// `POST /api/dead/redrive` (admin): ready again, attempts reset.
pub(super) async fn redrive(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    act(&gw, &headers, body, "redriven").await
}

/// `POST /api/dead/delete` (admin): finished as cancelled, for good.
pub(super) async fn delete(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    act(&gw, &headers, body, "deleted").await
}

/// Redrives (`what` = `redriven`) or deletes the selection on every member. The token is checked before the
/// body is read, so a refused request changes nothing.
async fn act(gw: &Gateway, headers: &HeaderMap, body: Body, what: &'static str) -> Result<Response, ApiError> {
    let members = gw.members(Role::Admin, headers).await?;
    let s = selection(gw, headers, body).await?;
    let answers = ask_all(&members, |c| {
        let (queue, ids, all) = (s.queue.clone(), s.ids.clone(), s.all);
        async move {
            if what == "redriven" {
                // The protocol's redrive takes "no ids" as "all of the queue": only `all` gets there.
                c.redrive(&queue, ids).await
            } else {
                c.delete_dead_letters(&queue, ids, all).await
            }
        }
    })
    .await;
    Ok(outcome(what, answers))
}
#[cfg(test)]
mod tests {
    use super::*;

    fn page(ids: &[u64], next: Option<u64>) -> DeadPage {
        DeadPage { tasks: ids.iter().map(|&task_id| DeadLetter { task_id, ..Default::default() }).collect(), next }
    }

    #[test]
    fn pages_merge_lowest_first_and_stop_where_a_member_stopped() {
        let m = merge(vec![page(&[1, 4, 9], None), page(&[2, 3], Some(3))], 10);
        let ids: Vec<u64> = m.tasks.iter().map(|d| d.task_id).collect();
        assert_eq!((ids, m.next), (vec![1, 2, 3], Some(3)));
        let m = merge(vec![page(&[1, 4, 9], None), page(&[2], None)], 3);
        let ids: Vec<u64> = m.tasks.iter().map(|d| d.task_id).collect();
        assert_eq!((ids, m.next), (vec![1, 2, 4], Some(4)));
    }
}
