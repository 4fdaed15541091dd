//! Applications, their pipelines, and tasks submitted by their parameters (docs/apps.md).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pm_client::json::app_json;
use pm_client::AppChange;
use pm_protocol::pb::TemplateTask;
use pm_protocol::{ErrorCode, Role};
use pm_task::template::params_of;
use serde::Deserialize;
use serde_json::{json, Value};

use super::answer::submitted;
use super::error::ApiError;
use super::state::{parse_json, to_vec, Gateway};

/// `?replace=true`.
#[derive(Debug, Deserialize, Default)]
pub(super) struct ReplaceQuery {
    #[serde(default)]
    replace: bool,
}

pub(super) async fn list_apps(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let apps = gw.client(Role::Producer, &headers).await?.list_apps().await?;
    Ok(axum::Json(json!({"applications": apps.iter().map(app_json).collect::<Vec<_>>()})).into_response())
}

pub(super) async fn create_app(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<ReplaceQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let client = gw.client(Role::Admin, &headers).await?;
    let doc = parse_json(&gw.body(&headers, body).await?)?;
    let change = client.put_app(to_vec(&doc), q.replace).await?;
    let location = format!("/api/applications/{}", change.app.name);
    Ok(created(q.replace, warned(app_json(&change.app), &change), &location))
}

pub(super) async fn get_app(
    State(gw): State<Arc<Gateway>>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app = gw.client(Role::Producer, &headers).await?.get_app(&app).await?;
    Ok(axum::Json(app_json(&app)).into_response())
}

/// A document's `name`, filled from the path when absent; a different one is refused.
fn named(mut doc: Value, name: &str, what: &str) -> Result<Value, ApiError> {
    let Some(obj) = doc.as_object_mut() else { return Err(ApiError::bad(format!("the {what} must be an object"))) };
    match obj.get("name") {
        None => {
            obj.insert("name".into(), Value::String(name.to_string()));
        }
        Some(Value::String(n)) if n == name => {}
        Some(other) => return Err(ApiError::bad(format!("the body names {what} {other}, the path {name:?}"))),
    }
    Ok(doc)
}

pub(super) async fn replace_app(
    State(gw): State<Arc<Gateway>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let client = gw.client(Role::Admin, &headers).await?;
    let doc = named(parse_json(&gw.body(&headers, body).await?)?, &app, "application")?;
    let change = client.put_app(to_vec(&doc), true).await?;
    Ok(axum::Json(warned(app_json(&change.app), &change)).into_response())
}

pub(super) async fn delete_app(
    State(gw): State<Arc<Gateway>>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let change = gw.client(Role::Admin, &headers).await?.delete_app(&app).await?;
    Ok(axum::Json(warned(json!({"deleted": change.app.name}), &change)).into_response())
}

pub(super) async fn list_pipelines(
    State(gw): State<Arc<Gateway>>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app = gw.client(Role::Producer, &headers).await?.get_app(&app).await?;
    Ok(axum::Json(json!({"pipelines": app_json(&app)["pipelines"]})).into_response())
}

pub(super) async fn create_pipeline(
    State(gw): State<Arc<Gateway>>,
    Path(app): Path<String>,
    Query(q): Query<ReplaceQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let client = gw.client(Role::Admin, &headers).await?;
    let doc = parse_json(&gw.body(&headers, body).await?)?;
    let name = doc.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let change = client.put_pipeline(&app, to_vec(&doc), q.replace).await?;
    let location = format!("/api/applications/{app}/pipelines/{name}");
    Ok(created(q.replace, warned(pipeline_json(&app_json(&change.app), &name), &change), &location))
}

pub(super) async fn get_pipeline(
    State(gw): State<Arc<Gateway>>,
    Path((app, pipeline)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let stored = gw.client(Role::Producer, &headers).await?.get_app(&app).await?;
    let v = pipeline_json(&app_json(&stored), &pipeline);
    if v.is_null() {
        let msg = format!("application {app:?} has no pipeline {pipeline:?}");
        return Err(ApiError::of_code(ErrorCode::NotFound, msg));
    }
    Ok(axum::Json(v).into_response())
}

/// One pipeline of an application's JSON: its definition plus queue and parameters (`null` if absent).
fn pipeline_json(app: &Value, name: &str) -> Value {
    let find = |list: &Value| list.as_array().and_then(|l| l.iter().find(|p| p["name"] == name).cloned());
    let (Some(info), Some(def)) = (find(&app["pipelines"]), find(&app["document"]["pipelines"])) else {
        return Value::Null;
    };
    json!({"application": app["name"], "name": name, "queue": info["queue"], "params": info["params"],
           "required": info["required"], "definition": def})
}

pub(super) async fn replace_pipeline(
    State(gw): State<Arc<Gateway>>,
    Path((app, pipeline)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let client = gw.client(Role::Admin, &headers).await?;
    let doc = named(parse_json(&gw.body(&headers, body).await?)?, &pipeline, "pipeline")?;
    let change = client.put_pipeline(&app, to_vec(&doc), true).await?;
    Ok(axum::Json(warned(pipeline_json(&app_json(&change.app), &pipeline), &change)).into_response())
}

pub(super) async fn delete_pipeline(
    State(gw): State<Arc<Gateway>>,
    Path((app, pipeline)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let change = gw.client(Role::Admin, &headers).await?.delete_pipeline(&app, &pipeline).await?;
    Ok(axum::Json(warned(json!({"deleted": format!("{app}/{pipeline}")}), &change)).into_response())
}

/// `body` with `"warning"` when the change has not reached every member yet (see [`AppChange`]).
fn warned(mut body: Value, change: &AppChange) -> Value {
    if let (Some(w), Some(obj)) = (&change.warning, body.as_object_mut()) {
        obj.insert("warning".into(), Value::String(w.clone()));
    }
    body
}

fn created(replace: bool, body: Value, location: &str) -> Response {
    let status = if replace { StatusCode::OK } else { StatusCode::CREATED };
    let mut resp = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Options of a parameterised submit, in the query string.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SubmitQuery {
    #[serde(default)]
    key: String,
    #[serde(default)]
    idempotency_key: String,
    priority: Option<i32>,
    delay_seconds: Option<f64>,
}

/// `POST /api/applications/{app}/pipelines/{pipeline}`: the body is the parameters (an object: one task), or
/// an array of them (one task each). `202` once durable, with the task id(s).
pub(super) async fn submit(
    State(gw): State<Arc<Gateway>>,
    Path((app, pipeline)): Path<(String, String)>,
    query: Result<Query<SubmitQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad(format!("query string: {}", e.body_text())))?;
    let client = gw.client(Role::Producer, &headers).await?;
    let doc = parse_json(&gw.body(&headers, body).await?)?;
    let (sets, many): (Vec<HashMap<String, String>>, bool) = match &doc {
        Value::Array(items) => {
            let sets =
                items.iter().enumerate().map(|(i, v)| params_of(v).map_err(|e| ApiError::bad(format!("[{i}]: {e}"))));
            (sets.collect::<Result<_, _>>()?, true)
        }
        other => (vec![params_of(other).map_err(ApiError::bad)?], false),
    };
    let header_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let idempotency_key = if q.idempotency_key.is_empty() { header_key.to_string() } else { q.idempotency_key };
    if many && !idempotency_key.is_empty() {
        return Err(ApiError::bad("an idempotency key names one task: submit an array of parameter sets without it"));
    }
    let delay_ms = match q.delay_seconds {
        Some(s) if !s.is_finite() || !(0.0..=365.0 * 86400.0).contains(&s) => {
            return Err(ApiError::bad("delaySeconds must be between 0 and one year"));
        }
        s => s.map(|s| (s * 1000.0).round() as u64),
    };
    let tasks: Vec<TemplateTask> = sets
        .into_iter()
        .map(|params| TemplateTask {
            params,
            key: q.key.clone(),
            idempotency_key: idempotency_key.clone(),
            priority: q.priority,
            delay_ms,
        })
        .collect();
    let results = client.submit_template(&app, &pipeline, tasks).await?;
    submitted(results, many)
}
