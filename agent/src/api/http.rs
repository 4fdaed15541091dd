//! The direct-run API over HTTP: `POST /v1/run`, the original agent's `POST /api/v1/Pipeline` in its own
//! shape ([`super::original`]), the probes (`/healthz`, `/readyz`, `/ready`) and `/metrics`, with the gRPC
//! service ([`super::grpc`]) merged onto the same port. Owns the listener loop of both the API and the probes
//! endpoint, and the HTTP answers: JSON errors, 401 with `WWW-Authenticate`, 429 when busy, NDJSON when
//! streaming.
//!
//! A pipeline that ran and failed is answered `200` with `"ok": false` (or the original's `"result":
//! false`): the request worked, and the result says how the pipeline ended. A streamed run cannot do
//! otherwise, since its status goes out before the pipeline runs; the plain form answers the same way so that
//! a client reads one field in both. A `4xx`/`5xx` always means the pipeline did not run.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::auth::bearer_matches;
use super::config::ApiConfig;
use super::original;
use super::state::{ApiContext, AppState};
use crate::runner::{Runner, TaskResult};

/// Serves the API on `listener` until `stop` fires, then lets open requests finish for a moment. With TLS it
/// serves TLS only, and checks the certificate files every second until `stop`.
pub async fn serve(listener: TcpListener, cfg: ApiConfig, ctx: ApiContext, stop: CancellationToken) {
    let mut runner = Runner::clone(&ctx.runner);
    runner.stream_stall = cfg.stream_stall;
    let ctx = ApiContext { runner: Arc::new(runner), ..ctx };
    let state = Arc::new(AppState::new(ctx, cfg.token.clone(), cfg.max_runs));
    let app = router(state, cfg.max_body_bytes);
    let limits = pm_http::ServeLimits { header_timeout: cfg.header_timeout, max_connections: cfg.max_connections };
    match cfg.tls {
        None => pm_http::serve(listener, app, limits, stop).await,
        Some(tls) => {
            tokio::spawn(tls.cert.watch(stop.clone()));
            pm_http::serve_tls(listener, app, limits, tls.config, stop).await;
        }
    }
}

/// Serves only `/healthz`, `/readyz` (and the original agent's `/ready`) and `/metrics` on `listener` (the
/// `--http-listen` endpoint) until `stop` fires.
pub async fn serve_probes(listener: TcpListener, ctx: ApiContext, header_timeout: Duration, stop: CancellationToken) {
    let state = Arc::new(AppState::new(ctx, None, 1));
    let limits = pm_http::ServeLimits { header_timeout, max_connections: 64 };
    pm_http::serve(listener, probes().fallback(not_found).with_state(state), limits, stop).await;
}

/// The routes that run nothing.
fn probes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

fn router(state: Arc<AppState>, max_body: usize) -> Router {
    let runs = Router::new()
        .route("/v1/run", post(run))
        .layer(axum::middleware::from_fn_with_state(state.clone(), authorize))
        .layer(DefaultBodyLimit::max(max_body));
    // The original's path matches in any case, which routes cannot say: the fallback looks for it.
    let fallback_state = state.clone();
    let fallback = move |method: Method, uri: Uri, headers: HeaderMap, body: Result<Bytes, BytesRejection>| {
        original_or_not_found(fallback_state.clone(), method, uri, headers, body)
    };
    Router::new()
        .merge(runs)
        .merge(probes())
        .with_state(state.clone())
        .merge(super::grpc::routes(state, max_body))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(max_body))
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such path")
}

/// The original agent's `POST /api/v1/Pipeline` (any case; see [`original`]), else `404`.
async fn original_or_not_found(
    s: Arc<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !original::is_original_path(uri.path()) {
        return not_found().await;
    }
    if method != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only POST runs a pipeline");
    }
    if let Some(refused) = refuse_token(&s, &headers) {
        return refused;
    }
    let body = match body {
        Ok(b) => b,
        Err(r) => return error(r.status(), r.body_text()),
    };
    if !original::has_steps(&body) {
        return (StatusCode::BAD_REQUEST, original::NO_COMMANDS).into_response();
    }
    let task = match pm_task::pipeline::parse_task(&body) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match run_to_end(&s, task).await {
        Ok(result) => Json(original::Answer::of(&result)).into_response(),
        Err(busy) => busy,
    }
}

fn error(status: StatusCode, why: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": why.into() }))).into_response()
}

async fn authorize(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match refuse_token(&s, req.headers()) {
        Some(refused) => refused,
        None => next.run(req).await,
    }
}

/// The `401` of a run request without the token, when one is required.
fn refuse_token(s: &AppState, headers: &HeaderMap) -> Option<Response> {
    let token = s.token.as_ref()?;
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if bearer_matches(token, given) {
        return None;
    }
    let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(r)
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    let missing: Vec<String> = s
        .runner()
        .executors
        .pods()
        .filter(|(_, sock)| !sock.exists())
        .map(|(name, sock)| format!("{name} ({})", sock.display()))
        .collect();
    if missing.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, format!("executor sockets missing: {}", missing.join(", ")))
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    match s.metrics() {
        Some(h) => pm_http::metrics_response(h),
        None => error(StatusCode::NOT_FOUND, "metrics are not enabled in this process"),
    }
}

#[derive(Deserialize)]
struct RunQuery {
    #[serde(default)]
    stream: bool,
}

async fn run(
    State(s): State<Arc<AppState>>,
    Query(q): Query<RunQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(r) => return error(r.status(), r.body_text()),
    };
    let task = match pm_task::pipeline::parse_task(&body) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if !q.stream {
        return match run_to_end(&s, task).await {
            Ok(result) => Json(result).into_response(),
            Err(busy) => busy,
        };
    }
    let run = match s.start_run(task, true) {
        Ok(run) => run,
        Err(busy) => return error(StatusCode::TOO_MANY_REQUESTS, busy),
    };
    let lines = futures::stream::unfold((run.events, run.guard), |(mut rx, guard)| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(line)), (rx, guard)))
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response()
}

/// Runs `task` to its end (a client that goes away cancels it), or the `429` of a busy agent.
async fn run_to_end(s: &AppState, task: pm_task::pipeline::Task) -> Result<TaskResult, Response> {
    let run = s.start_run(task, false).map_err(|busy| error(StatusCode::TOO_MANY_REQUESTS, busy))?;
    let result = run.handle.await.unwrap_or_else(|e| TaskResult::failed(format!("the run failed: {e}")));
    drop(run.guard);
    Ok(result)
}
