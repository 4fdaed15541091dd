//! The node's HTTP endpoint (`--http-listen`): `GET /metrics` (Prometheus text, histograms with buckets),
//! `GET /healthz` (the process answers), `GET /readyz` (200 while the node accepts work, 503 once it is
//! shutting down), the API under `/api/` ([`crate::gateway`]) and the console's pages under `/ui/`
//! ([`crate::console`], served whether or not the API is on). Served by [`pm_http::serve`] with the header
//! timeout and connection limit of the config.
//!
//! The probes (`--probe-listen`) have a listener of their own with only `/healthz` and `/readyz`: the main
//! endpoint accepts `--http-max-connections` at a time, and clients that hold all of them (slow or unfinished
//! requests, until the header timeout) would otherwise make a probe wait in the accept queue, long past the
//! kubelet's 1 s probe timeout. A separate port keeps the probes out of that queue whatever the main
//! endpoint's clients do; it serves no API and no metrics, so only the kubelet needs to reach it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::gateway::Gateway;

/// What the endpoint reads.
#[derive(Clone)]
struct HttpState {
    metrics: Option<PrometheusHandle>,
    ready: Arc<AtomicBool>,
}

/// Installs (or reuses: one recorder per process) the Prometheus recorder with the scheduler's buckets,
/// describes the scheduler's metrics and creates those known in advance (so a fresh node exports them at 0).
pub fn install_metrics() -> Option<PrometheusHandle> {
    let handle = pm_http::install_metrics(crate::metrics::METRIC_BUCKETS)?;
    crate::metrics::describe();
    crate::metrics::register();
    Some(handle)
}

/// The endpoint's routes. `ready` is what `/readyz` reports; `api` adds the HTTP API.
pub fn router(metrics: Option<PrometheusHandle>, ready: Arc<AtomicBool>, api: Option<Arc<Gateway>>) -> Router {
    let base = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such path\n") })
        .with_state(HttpState { metrics, ready })
        .merge(crate::console::routes());
    match api {
        Some(gw) => base.merge(crate::gateway::routes(gw)),
        None => base,
    }
}

/// The probe endpoint's routes: `/healthz` and `/readyz` as on the main endpoint, nothing else.
pub fn probe_router(ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { (StatusCode::NOT_FOUND, "only /healthz and /readyz here\n") })
        .with_state(HttpState { metrics: None, ready })
}

/// Serves the probe endpoint on `listener` until `stop` fires, with its own connection limit.
pub async fn serve_probes(listener: TcpListener, cfg: &Config, ready: Arc<AtomicBool>, stop: CancellationToken) {
    let limits = pm_http::ServeLimits {
        header_timeout: Duration::from_millis(cfg.http_header_timeout_ms.max(1)),
        max_connections: cfg.probe_max_connections.max(1),
    };
    pm_http::serve(listener, probe_router(ready), limits, stop).await;
}

/// Serves the endpoint on `listener` until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    cfg: &Config,
    metrics: Option<PrometheusHandle>,
    ready: Arc<AtomicBool>,
    api: Option<Arc<Gateway>>,
    stop: CancellationToken,
) {
    let limits = pm_http::ServeLimits {
        header_timeout: Duration::from_millis(cfg.http_header_timeout_ms.max(1)),
        max_connections: cfg.http_max_connections.max(1),
    };
    pm_http::serve(listener, router(metrics, ready, api), limits, stop).await;
}

async fn readyz(State(s): State<HttpState>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn metrics_page(State(s): State<HttpState>) -> Response {
    match &s.metrics {
        Some(h) => pm_http::metrics_response(h),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled in this process\n").into_response(),
    }
}
