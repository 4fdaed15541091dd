//! The direct-run API: run a pipeline on this agent without a scheduler, over HTTP ([`http`]) or gRPC
//! ([`grpc`]) on one port, with the options of [`config`] and the token check of [`auth`].
//!
//! - `POST /v1/run`: the task JSON in, the result JSON out (`200` also when the pipeline failed: `"ok":
//!   false`). `?stream=true` answers at once with `application/x-ndjson`: one
//!   [`RunEvent`](crate::runner::RunEvent) per line as the pipeline runs (`start`, `output`, `end`), then a
//!   `result` line. A client that goes away cancels its run.
//! - `POST /api/v1/Pipeline` (any case): the original agent's route, in its request and answer shapes
//!   ([`original`]).
//! - `GET /healthz` (the process answers), `GET /readyz` (every configured pod executor socket is there),
//!   `GET /metrics` (Prometheus text).
//!
//! It runs shell commands, so it is remote code execution by design: it binds to loopback by default and
//! refuses any other address unless a bearer token is configured; with a token, run requests without
//! `Authorization: Bearer TOKEN` get 401. Request bodies, the time to send the request headers
//! (slowloris), open connections and concurrent runs are all bounded.
//!
//! With `--api-tls-cert-file` + `--api-tls-key-file` it serves HTTPS and gRPC over TLS only (rustls with
//! ring; the certificate is re-read within a second when either file changes, as the scheduler's), and
//! with `--api-tls-client-ca-file` every client must present a certificate of those CAs (mutual TLS). TLS
//! does not replace the token: a non-loopback address still needs one, and the certificate only proves that
//! the client belongs to the deployment.
//!
//! The files, each used only by those after it: [`auth`], [`config`] and [`original`] (leaves), [`state`]
//! (what both protocols share: the runner, the run limit, the token, starting a run), [`grpc`], then
//! [`http`] (which serves both). This module re-exports the entry points and installs the metrics recorder; it uses none of
//! its children's code.

use metrics_exporter_prometheus::PrometheusHandle;

pub mod auth;
pub mod config;
pub mod grpc;
pub mod http;
pub mod original;
pub mod state;

pub use config::{bind, probes_listen, ApiArgs, ApiConfig, ApiError, ApiTls};
pub use http::{serve, serve_probes};
pub use state::ApiContext;

pub use pm_http::LATENCY_BUCKETS;

/// Buckets of a whole pipeline's wall time, seconds: 10 ms to an hour.
pub const TASK_BUCKETS: [f64; 14] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// The agent's histograms whose buckets are not [`LATENCY_BUCKETS`] (for [`pm_http::install_metrics`]).
pub const METRIC_BUCKETS: &[(&str, &[f64])] = &[(crate::runner::metric::TASK_DURATION, &TASK_BUCKETS)];

/// Installs the process-wide Prometheus recorder (histograms with real buckets, not summaries) and returns
/// the handle `/metrics` renders. Idempotent: a process has one recorder, and a second call (or a call after
/// another component of the process installed it) returns the same handle. `None` if it cannot be installed.
pub fn install_metrics() -> Option<PrometheusHandle> {
    let handle = pm_http::install_metrics(METRIC_BUCKETS)?;
    crate::runner::metric::describe();
    Some(handle)
}
