//! The answer to a submit over HTTP, template or raw: `202` with the task id (and `Location`) for one task;
//! for several, `202` when all were accepted, `207` with a result per item when some were, or the status of
//! the first refusal when none was.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pm_protocol::pb::SubmitResult;
use pm_protocol::ErrorCode;
use serde_json::{json, Value};

use super::error::{internal, status_of, ApiError};

/// The answer for `results` (one per task submitted, in order); `many`: the request held an array.
pub(super) fn submitted(results: Vec<SubmitResult>, many: bool) -> Result<Response, ApiError> {
    if !many {
        let r = results.into_iter().next().ok_or_else(|| internal("the node sent no result"))?;
        return match ErrorCode::try_from(r.code).unwrap_or(ErrorCode::Internal) {
            ErrorCode::Ok => {
                let location = format!("/api/tasks/{}", r.task_id);
                let body = json!({"taskId": r.task_id, "duplicate": r.duplicate, "status": location});
                let mut resp = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
                if let Ok(v) = HeaderValue::from_str(&location) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                Ok(resp)
            }
            code => Err(ApiError::of_code(code, r.message)),
        };
    }
    let ok = results.iter().filter(|r| r.code == ErrorCode::Ok as i32).count();
    let status = match (ok, results.first()) {
        (n, _) if n == results.len() => StatusCode::ACCEPTED,
        (0, Some(first)) => status_of(ErrorCode::try_from(first.code).unwrap_or(ErrorCode::Internal)),
        _ => StatusCode::MULTI_STATUS,
    };
    let items: Vec<Value> = results.iter().map(result_json).collect();
    Ok((status, axum::Json(json!({"accepted": ok, "results": items}))).into_response())
}

fn result_json(r: &SubmitResult) -> Value {
    match ErrorCode::try_from(r.code).unwrap_or(ErrorCode::Internal) {
        ErrorCode::Ok => json!({"taskId": r.task_id, "duplicate": r.duplicate}),
        code => json!({"error": r.message, "code": code.as_str_name()}),
    }
}
