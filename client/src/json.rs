//! Task statuses and applications as JSON, as `pmctl ... --json` prints them and the scheduler's HTTP API
//! answers (`GET /api/tasks/{id}`, `GET /api/applications/{app}`).

use std::time::{Duration, UNIX_EPOCH};

use pm_protocol::pb::{AppInfo, TaskState, TaskStatus};
use pm_protocol::ErrorCode;
use serde_json::{json, Value};

/// The state's name as printed (`succeeded`, `dead`, ...), or `not-found`.
pub fn state_name(s: &TaskStatus) -> &'static str {
    if s.code != ErrorCode::Ok as i32 {
        return "not-found";
    }
    match s.state() {
        TaskState::Unspecified => "unknown",
        TaskState::Ready => "ready",
        TaskState::Delayed => "delayed",
        TaskState::Leased => "leased",
        TaskState::Succeeded => "succeeded",
        TaskState::Failed => "failed",
        TaskState::Dead => "dead",
        TaskState::Cancelled => "cancelled",
    }
}

/// A time in milliseconds since the epoch as RFC 3339 text (`null` for 0).
pub fn time(ms: u64) -> Value {
    if ms == 0 {
        Value::Null
    } else {
        Value::String(humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string())
    }
}

/// The state a name of [`state_name`] stands for (`""`: none, [`TaskState::Unspecified`]); `None` for a
/// name that is not a state. Used by filters (`pmctl ls --state`, `GET /api/tasks?state=`).
pub fn state_of_name(name: &str) -> Option<TaskState> {
    Some(match name {
        "" => TaskState::Unspecified,
        "ready" => TaskState::Ready,
        "delayed" => TaskState::Delayed,
        "leased" => TaskState::Leased,
        "dead" => TaskState::Dead,
        "succeeded" => TaskState::Succeeded,
        "failed" => TaskState::Failed,
        "cancelled" => TaskState::Cancelled,
        _ => return None,
    })
}

/// The names [`state_of_name`] takes, for error messages.
pub const STATE_NAMES: &str = "ready, delayed, leased, dead, succeeded, failed or cancelled";

/// The status as one JSON object (the result as JSON when it is JSON, else as text or base64).
pub fn status_json(s: &TaskStatus) -> Value {
    status_json_inner(s)
}

/// Opaque bytes (a payload, a result document) as JSON: the document itself when they hold JSON, else the
/// text, else `{"base64": ...}`.
pub fn bytes_json(b: &[u8]) -> Value {
    if let Ok(v) = serde_json::from_slice::<Value>(b) {
        return v;
    }
    match std::str::from_utf8(b) {
        Ok(text) => Value::String(text.to_string()),
        Err(_) => {
            use base64::Engine;
            json!({"base64": base64::engine::general_purpose::STANDARD.encode(b)})
        }
    }
}

fn status_json_inner(s: &TaskStatus) -> Value {
    if s.code != ErrorCode::Ok as i32 {
        return json!({"taskId": s.task_id, "state": "not-found"});
    }
    let result = if s.result.is_empty() { Value::Null } else { bytes_json(&s.result) };
    json!({
        "taskId": s.task_id, "state": state_name(s), "queue": s.queue, "key": s.key,
        "attempts": s.attempts, "maxAttempts": s.max_attempts,
        "submitted": time(s.submitted_unix_ms), "started": time(s.started_unix_ms),
        "finished": time(s.finished_unix_ms), "leaseDeadline": time(s.lease_deadline_unix_ms),
        "reason": s.reason, "result": result,
        "parentId": if s.parent_id == 0 { Value::Null } else { json!(s.parent_id) },
        "flowId": if s.flow_id.is_empty() { Value::Null } else { json!(s.flow_id) },
        "children": s.children,
    })
}

/// An application as JSON: name, version, its pipelines (queue, parameters), and its document when the reply
/// carries one.
pub fn app_json(app: &AppInfo) -> Value {
    let pipelines: Vec<Value> = app
        .pipelines
        .iter()
        .map(|p| json!({"name": p.name, "queue": p.queue, "params": p.params, "required": p.required}))
        .collect();
    let mut v = json!({"name": app.name, "version": app.version, "pipelines": pipelines});
    if !app.document.is_empty() {
        if let Ok(doc) = serde_json::from_slice::<Value>(&app.document) {
            v["document"] = doc;
        }
    }
    v
}
