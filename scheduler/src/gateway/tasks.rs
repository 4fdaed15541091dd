//! Tasks: one task's status (asked of the member that holds it), listings by filter (every member's,
//! merged newest first), how many tasks a filter names, and cancelling exactly those.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pm_client::json::{state_of_name, status_json, STATE_NAMES};
use pm_client::{merge_task_pages, Client, TaskFilter, TaskPage};
use pm_protocol::{ErrorCode, Role};
use pm_task::ring::Ring;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{internal, ApiError};
use super::members::{ask_all, task_id_of, Members};
use super::query::{cursor_of, limit_of, params, queue_of, MAX_PAGE};
use super::state::Gateway;

/// How long one listing request keeps asking for more when the members' pages come back short.
const FILL_TIME: Duration = Duration::from_millis(500);

/// Most tasks `count` and `cancel` walk through in one request.
const MAX_WALK: u64 = 100_000;

/// The filter of a query string or a body.
fn filter_of(p: &HashMap<String, String>) -> Result<TaskFilter, ApiError> {
    let state_name = p.get("state").map(String::as_str).unwrap_or_default();
    let state = state_of_name(state_name)
        .ok_or_else(|| ApiError::param("state", format!("no state {state_name:?} ({STATE_NAMES})")))?;
    Ok(TaskFilter {
        queue: queue_of(p)?,
        state,
        key: p.get("key").cloned().unwrap_or_default(),
        flow_id: p.get("flow").cloned().unwrap_or_default(),
    })
}

/// A listed task as JSON: its status without a result document.
fn listed_json(s: &pm_protocol::pb::TaskStatus) -> Value {
    let mut v = status_json(s);
    if let Some(o) = v.as_object_mut() {
        o.remove("result");
    }
    v
}

/// One page of `filter` below `before` from every member: asked again below the members' cursor while the
/// page is short and they have more (each member bounds its work per request), for at most [`FILL_TIME`].
async fn page_of(members: &Members, filter: &TaskFilter, limit: usize, before: u64) -> Result<TaskPage, ApiError> {
    let started = Instant::now();
    let mut page = TaskPage::default();
    let mut cursor = before;
    loop {
        let want = limit - page.tasks.len();
        let answers = ask_all(members, |c: Client| {
            let f = filter.clone();
            async move { c.list_tasks(&f, want as u32, cursor).await }
        })
        .await;
        let mut parts = Vec::new();
        for (node, a) in answers {
            // A listing that leaves a member out would look complete: it fails instead.
            parts.push(a.map_err(|e| {
                ApiError::new(StatusCode::BAD_GATEWAY, "MEMBER_UNREACHABLE", format!("member {node}: {e}"))
            })?);
        }
        let part = merge_task_pages(parts, want);
        page.tasks.extend(part.tasks);
        page.next = part.next;
        match page.next {
            Some(next) if page.tasks.len() < limit && started.elapsed() < FILL_TIME => cursor = next,
            _ => break,
        }
    }
    if page.tasks.len() >= limit {
        page.next = page.tasks.last().map(|t| t.task_id);
    }
    Ok(page)
}

/// `GET /api/tasks?queue=&state=&key=&flow=&limit=&cursor=`.
pub(super) async fn list(
    State(gw): State<Arc<Gateway>>,
    raw: RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let p = params(raw.0.as_deref(), &["queue", "state", "key", "flow", "limit", "cursor"])?;
    let (filter, limit, before) = (filter_of(&p)?, limit_of(&p)?, cursor_of(&p)?);
    let members = gw.members(Role::Producer, &headers).await?;
    let page = page_of(&members, &filter, limit, before).await?;
    let tasks: Vec<Value> = page.tasks.iter().map(listed_json).collect();
    let next = page.next.map(|n| Value::String(n.to_string())).unwrap_or(Value::Null);
    Ok(axum::Json(json!({"tasks": tasks, "nextCursor": next})).into_response())
}

/// The ids of every task of `filter`, a page at a time, up to [`MAX_WALK`]; and whether that was all of them.
async fn walk(members: &Members, filter: &TaskFilter) -> Result<(Vec<u64>, bool), ApiError> {
    let mut ids = Vec::new();
    let mut before = 0;
    loop {
        let page = page_of(members, filter, MAX_PAGE, before).await?;
        ids.extend(page.tasks.iter().map(|t| t.task_id));
        match page.next {
            Some(next) if (ids.len() as u64) < MAX_WALK => before = next,
            Some(_) => return Ok((ids, false)),
            None => return Ok((ids, true)),
        }
    }
}

/// `GET /api/tasks/count?queue=&state=&key=&flow=`: how many tasks a bulk action on the filter would reach.
pub(super) async fn count(
    State(gw): State<Arc<Gateway>>,
    raw: RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let p = params(raw.0.as_deref(), &["queue", "state", "key", "flow"])?;
    let filter = filter_of(&p)?;
    let members = gw.members(Role::Producer, &headers).await?;
    let (ids, exact) = walk(&members, &filter).await?;
    Ok(axum::Json(json!({"count": ids.len(), "exact": exact})).into_response())
}

/// `POST /api/tasks/cancel` body: the tasks named, or those of a filter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    ids: Vec<u64>,
    queue: Option<String>,
    state: Option<String>,
    key: Option<String>,
    flow: Option<String>,
    #[serde(default)]
    all: bool,
}

/// Cancels `ids` on the members that hold them (in batches the node takes): how many were cancelled, and the
/// members that could not be asked (with why), so an answer never hides tasks it did not reach.
async fn cancel_ids(gw: &Gateway, members: &Members, ids: Vec<u64>) -> (u64, Vec<Value>) {
    let mut by_member: HashMap<usize, Vec<u64>> = HashMap::new();
    for id in ids {
        let owner = if gw.server.ordinal.is_some() { Ring::ordinal_of_task(id) } else { 0 };
        by_member.entry(owner).or_default().push(id);
    }
    let (mut n, mut failed) = (0, Vec::new());
    let batch = gw.server.cfg.max_batch.max(1);
    for (owner, ids) in by_member {
        let (node, client) = match members.get(owner) {
            Some((node, Ok(c))) => (node, c),
            Some((node, Err(e))) => {
                failed.push(json!({"node": node, "error": e.to_string(), "tasks": ids.len()}));
                continue;
            }
            None => {
                failed.push(json!({"node": null, "error": "no member holds these ids", "tasks": ids.len()}));
                continue;
            }
        };
        for chunk in ids.chunks(batch) {
            match client.cancel(chunk.to_vec()).await {
                Ok(codes) => n += codes.iter().filter(|c| **c == ErrorCode::Ok).count() as u64,
                Err(e) => failed.push(json!({"node": node, "error": e.to_string(), "tasks": chunk.len()})),
            }
        }
    }
    (n, failed)
}

/// The answer of a bulk cancel: `200`, or `207` when some members failed (named in `"failed"`).
fn cancelled(n: u64, failed: Vec<Value>, complete: Option<bool>) -> Response {
    let status = if failed.is_empty() { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    let mut body = json!({"cancelled": n, "failed": failed});
    if let Some(c) = complete {
        body["complete"] = json!(c);
    }
    (status, axum::Json(body)).into_response()
}

/// `POST /api/tasks/cancel` (admin): `{"ids": [...]}`, or a filter (`queue`, `state`, `key`, `flow`: at least
/// one, or `"all": true`). Finished tasks in a filter are not counted.
pub(super) async fn cancel(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let members = gw.members(Role::Admin, &headers).await?;
    let bytes = gw.body(&headers, body).await?;
    let b: CancelBody = serde_json::from_slice(if bytes.is_empty() { b"{}" } else { &bytes })
        .map_err(|e| ApiError::bad(format!("the body: {e}")))?;
    let fields = [("queue", &b.queue), ("state", &b.state), ("key", &b.key), ("flow", &b.flow)];
    let p: HashMap<String, String> =
        fields.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.clone()))).collect();
    if !b.ids.is_empty() {
        if !p.is_empty() || b.all {
            return Err(ApiError::param("ids", "give ids, or a filter, not both"));
        }
        let (n, failed) = cancel_ids(&gw, &members, b.ids).await;
        return Ok(cancelled(n, failed, None));
    }
    if p.is_empty() && !b.all {
        return Err(ApiError::param("all", "name tasks (\"ids\"), a filter, or set \"all\": true"));
    }
    let filter = filter_of(&p)?;
    let (ids, complete) = walk(&members, &filter).await?;
    let (n, failed) = cancel_ids(&gw, &members, ids).await;
    Ok(cancelled(n, failed, Some(complete)))
}

/// `GET /api/tasks/{id}`: the task's status and result, as `pmctl status --json` prints it, from the member
/// that holds it.
pub(super) async fn task_status(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = task_id_of(&id)?;
    let client = gw.holder(id, &headers).await?;
    let status =
        client.status(vec![id]).await?.into_iter().next().ok_or_else(|| internal("the node sent no status"))?;
    let v = status_json(&status);
    if status.code != ErrorCode::Ok as i32 {
        let mut err = ApiError::of_code(
            ErrorCode::NotFound,
            format!("task {id} is unknown here, or its outcome is no longer kept"),
        );
        err.extra = Some(v);
        return Err(err);
    }
    Ok(axum::Json(v).into_response())
}
