//! Tasks without an application: `POST /api/queues/{queue}/tasks` takes task JSON (one task, or an array) in
//! the formats `pmctl submit` takes (docs/task-format.md), checked the same way, and answers once the tasks
//! are durable; `DELETE /api/tasks/{id}` cancels a task. With these, curl and any language submit without a
//! client library.
//!
//! An item that is not a valid task is refused on its own (its result says why) and the others are
//! submitted. A queue name with `/` is written `%2F` in the path.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use pm_protocol::pb::{SubmitResult, TaskSpec};
use pm_protocol::{ErrorCode, Role};
use pm_task::pipeline::{queue_or_default, task_spec_from_json, validate_queue_name};
use serde_json::{json, Value};

use super::answer::submitted;
use super::error::ApiError;
use super::members::task_id_of;
use super::state::{parse_json, Gateway};

/// `POST /api/queues/{queue}/tasks`.
pub(super) async fn submit(
    State(gw): State<Arc<Gateway>>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let client = gw.client(Role::Producer, &headers).await?;
    validate_queue_name(&queue).map_err(|e| ApiError::param("queue", e))?;
    let bytes = gw.body(&headers, body).await?;
    let (docs, many) = match parse_json(&bytes)? {
        Value::Array(items) => (items, true),
        one => (vec![one], false),
    };
    if docs.is_empty() {
        return Err(ApiError::bad("an empty array: no task to submit"));
    }
    let idempotency_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if many && !idempotency_key.is_empty() {
        return Err(ApiError::bad("an Idempotency-Key names one task: submit an array without it"));
    }
    // Each item checked on its own: the valid ones are submitted, the others answered with why.
    let mut results: Vec<Option<SubmitResult>> = Vec::with_capacity(docs.len());
    let mut specs: Vec<TaskSpec> = Vec::new();
    for doc in &docs {
        match spec_of(doc, &queue, idempotency_key) {
            Ok(spec) => {
                results.push(None);
                specs.push(spec);
            }
            Err(why) => results.push(Some(refusal(ErrorCode::InvalidTask, why))),
        }
    }
    let mut accepted = Vec::with_capacity(specs.len());
    for chunk in specs.chunks(gw.server.cfg.max_batch.max(1)) {
        accepted.extend(client.submit(chunk.to_vec()).await?);
    }
    let mut accepted = accepted.into_iter();
    let results = results
        .into_iter()
        .map(|r| r.or_else(|| accepted.next()).unwrap_or_else(|| refusal(ErrorCode::Internal, "no result".into())));
    submitted(results.collect(), many)
}

/// One task document as the spec to submit on `queue` (a document naming another queue is refused).
fn spec_of(doc: &Value, queue: &str, idempotency_key: &str) -> Result<TaskSpec, String> {
    let bytes = serde_json::to_vec(doc).map_err(|e| e.to_string())?;
    let mut spec = task_spec_from_json(&bytes).map_err(|e| e.to_string())?;
    if !spec.queue.is_empty() && queue_or_default(&spec.queue) != queue_or_default(queue) {
        return Err(format!("the task names queue {:?}, the path {queue:?}", spec.queue));
    }
    spec.queue = queue.to_string();
    if !idempotency_key.is_empty() {
        spec.idempotency_key = idempotency_key.to_string();
    }
    Ok(spec)
}

fn refusal(code: ErrorCode, message: String) -> SubmitResult {
    SubmitResult { code: code as i32, message, ..Default::default() }
}

/// `DELETE /api/tasks/{id}`: cancels the task on the member that holds it. `200 {"taskId", "cancelled":
/// true}`, or `404` when it is unknown or already finished.
pub(super) async fn cancel(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = task_id_of(&id)?;
    let client = gw.holder(id, &headers).await?;
    match client.cancel(vec![id]).await?.first() {
        Some(ErrorCode::Ok) => Ok(axum::Json(json!({"taskId": id, "cancelled": true})).into_response()),
        _ => Err(ApiError::of_code(
            ErrorCode::NotFound,
            format!("task {id} is unknown, or already finished, dead-lettered or cancelled"),
        )),
    }
}
