//! The HTTP API (docs/http-api.md), for producers that cannot speak the binary protocol: applications and
//! their pipelines, tasks submitted by their parameters, and task status. Served on `--http-listen` beside
//! `/metrics`.
//!
//! Every request is one protocol connection to this node over an in-process pipe, opened with the caller's
//! bearer token and the role the route needs (producer to submit and read, admin to change applications). The
//! node checks the token in `Hello` exactly as for a TCP client, and a submit is answered `202` only once the
//! protocol's `SubmitAck` says the task is durable: the HTTP API adds no second path to the shards to keep in
//! step with the protocol's.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pm_client::json::{app_json, status_json};
use pm_client::{Client, ConnectOptions, ErrorKind};
use pm_protocol::pb::{SubmitResult, TemplateTask};
use pm_protocol::{ErrorCode, Role};
use pm_task::ring::Ring;
use pm_task::template::params_of;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::Config;
use crate::context::ServerCtx;

/// What the API's handlers share.
pub struct Gateway {
    server: Arc<ServerCtx>,
    /// Why the API refuses every request (`None`: it serves).
    closed: Option<String>,
    max_body: usize,
    request_timeout: Duration,
}

impl Gateway {
    /// The API of the node `server`. Without token files it serves only on a loopback `--http-listen` (or with
    /// `--insecure`), as the protocol listener does.
    pub fn new(server: Arc<ServerCtx>, cfg: &Config) -> Gateway {
        let loopback = cfg.http_addr().ok().flatten().is_some_and(|a| a.ip().is_loopback());
        let closed = (!cfg.token_files().enabled() && !loopback && !cfg.insecure).then(|| {
            "the HTTP API is off: --http-listen is not a loopback address and no token file is set (give token \
             files, or --insecure)"
                .to_string()
        });
        if let Some(why) = &closed {
            tracing::warn!("{why}");
        }
        Gateway { server, closed, max_body: cfg.http_max_body_bytes, request_timeout: cfg.http_request_timeout }
    }

    /// A protocol connection to this node with the caller's token, as `role`.
    async fn client(&self, role: Role, headers: &HeaderMap) -> Result<Client, ApiError> {
        if let Some(why) = &self.closed {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "HTTP_API_OFF", why.clone()));
        }
        let token = bearer(headers)?;
        let server = &self.server;
        // An admin may do everything a producer may.
        let role = if role == Role::Producer && !token.is_empty() && server.auth.check(Role::Admin, &token).is_ok() {
            Role::Admin
        } else {
            role
        };
        if server.connections.fetch_add(1, Ordering::Relaxed) >= server.cfg.max_connections as u64 {
            server.connections.fetch_sub(1, Ordering::Relaxed);
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "TOO_MANY_CONNECTIONS", "connection limit"));
        }
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(crate::connection::serve(theirs, server.clone()));
        let opts = ConnectOptions::new(role)
            .client_id("http-api")
            .token(token.clone())
            .max_frame_bytes(server.cfg.max_frame_bytes)
            .request_timeout(self.request_timeout);
        match Client::connect_stream(ours, opts).await {
            Ok(c) => Ok(c),
            // A valid token of a role that may not do this: forbidden rather than unauthenticated.
            Err(e) if e.code() == Some(ErrorCode::Unauthorized) && !token.is_empty() => {
                let other = [Role::Producer, Role::Admin, Role::Agent, Role::Peer]
                    .into_iter()
                    .find(|r| *r != role && server.auth.check(*r, &token).is_ok());
                match other {
                    Some(r) => Err(ApiError::of_code(
                        ErrorCode::RoleNotAllowed,
                        format!("this is a token of role {}; this needs {}", r.as_str_name(), role.as_str_name()),
                    )),
                    None => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The request body, bounded by `--http-max-body-bytes` and `--http-request-timeout`.
    async fn body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            return Err(self.too_large());
        }
        use http_body_util::BodyExt;
        let limited = http_body_util::Limited::new(body, self.max_body);
        match tokio::time::timeout(self.request_timeout, limited.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(self.too_large()),
            Ok(Err(e)) => Err(ApiError::new(StatusCode::BAD_REQUEST, "BAD_BODY", format!("reading the body: {e}"))),
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "TIMEOUT",
                format!("the body did not arrive within {:?} (--http-request-timeout)", self.request_timeout),
            )),
        }
    }

    fn too_large(&self) -> ApiError {
        let msg = format!("the body is larger than {} bytes (--http-max-body-bytes)", self.max_body);
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "FRAME_TOO_LARGE", msg)
    }
}

/// The API's routes.
pub fn routes(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/api/applications", get(list_apps).post(create_app))
        .route("/api/applications/{app}", get(get_app).put(replace_app).delete(delete_app))
        .route("/api/applications/{app}/pipelines", get(list_pipelines).post(create_pipeline))
        .route(
            "/api/applications/{app}/pipelines/{pipeline}",
            get(get_pipeline).put(replace_pipeline).delete(delete_pipeline).post(submit),
        )
        .route("/api/tasks/{id}", get(task_status))
        .with_state(gw)
}

/// An error answer: `{"error": message, "code": CODE}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    extra: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError { status, code: code.to_string(), message: message.into(), extra: None }
    }

    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    fn of_code(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(status_of(code), code.as_str_name(), message)
    }
}

impl From<pm_client::Error> for ApiError {
    fn from(e: pm_client::Error) -> ApiError {
        if let Some(r) = e.redirect() {
            let mut err = ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "REDIRECT",
                format!("node {} owns this key: send the request to its HTTP API", r.node),
            );
            err.extra = Some(json!({"node": r.node}));
            return err;
        }
        match (e.code(), e.kind()) {
            (Some(code), _) => ApiError::of_code(code, e.message()),
            (None, ErrorKind::Timeout) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "TIMEOUT", e.to_string()),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message, "code": self.code});
        if let (Some(Value::Object(extra)), Some(obj)) = (self.extra, body.as_object_mut()) {
            obj.extend(extra);
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The HTTP status of a protocol error code.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Ok => StatusCode::OK,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::RoleNotAllowed => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists => StatusCode::CONFLICT,
        ErrorCode::InvalidTask | ErrorCode::MalformedFrame => StatusCode::BAD_REQUEST,
        ErrorCode::LimitExceeded | ErrorCode::FrameTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::StoreFull | ErrorCode::StoreFailed | ErrorCode::ShuttingDown | ErrorCode::TooManyConnections => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The bearer token of `Authorization` (empty when there is none: the node decides whether that will do).
fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else { return Ok(String::new()) };
    let v = v.to_str().map_err(|_| ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "bad Authorization"))?;
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim().to_string()),
        _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "Authorization must be `Bearer TOKEN`")),
    }
}

fn internal(msg: &str) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", msg)
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("the body is not JSON: {e}")))
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// `?replace=true`.
#[derive(Debug, Deserialize, Default)]
struct ReplaceQuery {
    #[serde(default)]
    replace: bool,
}

async fn list_apps(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let apps = gw.client(Role::Producer, &headers).await?.list_apps().await?;
    Ok(axum::Json(json!({"applications": apps.iter().map(app_json).collect::<Vec<_>>()})).into_response())
}

async fn create_app(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<ReplaceQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let client = gw.client(Role::Admin, &headers).await?;
    let doc = parse_json(&gw.body(&headers, body).await?)?;
    let app = client.put_app(to_vec(&doc), q.replace).await?;
    Ok(created(q.replace, app_json(&app), &format!("/api/applications/{}", app.name)))
}

async fn get_app(
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

async fn replace_app(
    State(gw): State<Arc<Gateway>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let client = gw.client(Role::Admin, &headers).await?;
    let doc = named(parse_json(&gw.body(&headers, body).await?)?, &app, "application")?;
    let app = client.put_app(to_vec(&doc), true).await?;
    Ok(axum::Json(app_json(&app)).into_response())
}

async fn delete_app(
    State(gw): State<Arc<Gateway>>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app = gw.client(Role::Admin, &headers).await?.delete_app(&app).await?;
    Ok(axum::Json(json!({"deleted": app.name})).into_response())
}

async fn list_pipelines(
    State(gw): State<Arc<Gateway>>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app = gw.client(Role::Producer, &headers).await?.get_app(&app).await?;
    Ok(axum::Json(json!({"pipelines": app_json(&app)["pipelines"]})).into_response())
}

async fn create_pipeline(
    State(gw): State<Arc<Gateway>>,
    Path(app): Path<String>,
    Query(q): Query<ReplaceQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let client = gw.client(Role::Admin, &headers).await?;
    let doc = parse_json(&gw.body(&headers, body).await?)?;
    let name = doc.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let stored = client.put_pipeline(&app, to_vec(&doc), q.replace).await?;
    let location = format!("/api/applications/{app}/pipelines/{name}");
    Ok(created(q.replace, pipeline_json(&app_json(&stored), &name), &location))
}

async fn get_pipeline(
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

async fn replace_pipeline(
    State(gw): State<Arc<Gateway>>,
    Path((app, pipeline)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let client = gw.client(Role::Admin, &headers).await?;
    let doc = named(parse_json(&gw.body(&headers, body).await?)?, &pipeline, "pipeline")?;
    let stored = client.put_pipeline(&app, to_vec(&doc), true).await?;
    Ok(axum::Json(pipeline_json(&app_json(&stored), &pipeline)).into_response())
}

async fn delete_pipeline(
    State(gw): State<Arc<Gateway>>,
    Path((app, pipeline)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    gw.client(Role::Admin, &headers).await?.delete_pipeline(&app, &pipeline).await?;
    Ok(axum::Json(json!({"deleted": format!("{app}/{pipeline}")})).into_response())
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
struct SubmitQuery {
    #[serde(default)]
    key: String,
    #[serde(default)]
    idempotency_key: String,
    priority: Option<i32>,
    delay_seconds: Option<f64>,
}

/// `POST /api/applications/{app}/pipelines/{pipeline}`: the body is the parameters (an object: one task), or
/// an array of them (one task each). `202` once durable, with the task id(s).
async fn submit(
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

/// `GET /api/tasks/{id}`: the task's status and result, as `pmctl status --json` prints it.
async fn task_status(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id: u64 = id.parse().map_err(|_| ApiError::bad(format!("{id:?} is not a task id")))?;
    let ring = &gw.server.ring;
    if let Some(me) = gw.server.ordinal {
        let owner = Ring::ordinal_of_task(id);
        if owner != me {
            let node = ring.members().get(owner).cloned().unwrap_or_default();
            let mut err = ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "REDIRECT",
                format!("task {id} is held by node {node}: ask its HTTP API"),
            );
            err.extra = Some(json!({"node": node}));
            return Err(err);
        }
    }
    let client = gw.client(Role::Producer, &headers).await?;
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
