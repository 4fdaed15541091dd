//! The direct-run HTTP API: run a pipeline on this agent without a scheduler.
//!
//! - `POST /v1/run` (also at the original agent's path `POST /api/v1/pipeline`): the task JSON in, the
//!   result JSON out. `?stream=true` answers at once with `application/x-ndjson`: one [`RunEvent`] per line
//!   as the pipeline runs (`start`, `output`, `end`), then a `result` line. A client that goes away
//!   cancels its run.
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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use pm_client::tls::{server_config, ReloadingCert, TlsError};

use crate::runner::{task_dir_named, Executor, RunEvent, Runner, TaskResult};

/// Command-line options of the direct-run API, shared by `pm-agent run`, `pm-agent serve` and `pm dev`.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// Address of the direct-run HTTP API, or `off`. Only a loopback address unless --api-token is set.
    #[arg(long, env = "PM_API_LISTEN", default_value = "127.0.0.1:7071")]
    pub api_listen: String,
    /// Bearer token required on run requests (needed to listen on a non-loopback address).
    #[arg(long, env = "PM_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Read the bearer token from this file (e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "PM_API_TOKEN_FILE", conflicts_with = "api_token")]
    pub api_token_file: Option<PathBuf>,
    /// Largest request body (task JSON), bytes.
    #[arg(long, env = "PM_API_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub api_max_body_bytes: usize,
    /// Time a client has to send the request headers, ms (slowloris bound).
    #[arg(long, env = "PM_API_HEADER_TIMEOUT_MS", default_value_t = 5000)]
    pub api_header_timeout_ms: u64,
    /// Pipelines run at once through the API; more get 429.
    #[arg(long, env = "PM_API_MAX_RUNS", default_value_t = 4)]
    pub api_max_runs: usize,
    /// Cancel a streamed run whose client has read nothing for this long, ms.
    #[arg(long, env = "PM_API_STREAM_STALL_MS", default_value_t = 30_000)]
    pub api_stream_stall_ms: u64,
    /// Open API connections at once; more wait to be accepted.
    #[arg(long, env = "PM_API_MAX_CONNECTIONS", default_value_t = 256)]
    pub api_max_connections: usize,
    /// Serve the API over TLS only (HTTPS, gRPC over TLS) with this certificate chain (PEM, leaf first);
    /// re-read within a second when it or the key changes.
    #[arg(long, env = "PM_API_TLS_CERT_FILE", requires = "api_tls_key_file")]
    pub api_tls_cert_file: Option<PathBuf>,
    /// The private key of --api-tls-cert-file (PEM).
    #[arg(long, env = "PM_API_TLS_KEY_FILE", requires = "api_tls_cert_file")]
    pub api_tls_key_file: Option<PathBuf>,
    /// Mutual TLS: every API client must present a certificate signed by a CA of this PEM file.
    #[arg(long, env = "PM_API_TLS_CLIENT_CA_FILE", requires = "api_tls_cert_file")]
    pub api_tls_client_ca_file: Option<PathBuf>,
}

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `--api-listen` is not `host:port` or `off`.
    #[error("--api-listen: expected IP:PORT or `off`, got `{0}`")]
    BadListen(String),
    /// A non-loopback address without a token.
    #[error(
        "--api-listen {0}: the direct-run API runs shell commands; set --api-token (or --api-token-file) to listen \
         on a non-loopback address"
    )]
    Unprotected(SocketAddr),
    /// The token file cannot be read, or the token is empty.
    #[error("--api-token-file {path}: {why}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A TLS file of the API cannot be used (the message names it).
    #[error("--api-tls-*: {0}")]
    Tls(#[from] TlsError),
    /// Binding failed.
    #[error("--api-listen {addr}: {source} (another agent on this machine? give each its own port, or `off`)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The validated API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Required bearer token, if any.
    pub token: Option<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time allowed for the request headers.
    pub header_timeout: Duration,
    /// Concurrent runs.
    pub max_runs: usize,
    /// Concurrent connections.
    pub max_connections: usize,
    /// A streaming client that reads nothing for this long has its run cancelled.
    pub stream_stall: Duration,
    /// TLS, when configured: HTTPS and gRPC over TLS only.
    pub tls: Option<ApiTls>,
}

/// The API's TLS: its server config and the certificate it presents (watched for renewals while serving).
#[derive(Debug, Clone)]
pub struct ApiTls {
    /// Offers ALPN `h2` and `http/1.1`; requires client certificates under mutual TLS.
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate in force.
    pub cert: Arc<ReloadingCert>,
}

impl ApiTls {
    /// Reads the certificate, its key and the client CAs (an error names the file that cannot be used).
    pub fn load(
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: Option<&std::path::Path>,
    ) -> Result<ApiTls, TlsError> {
        let cert = ReloadingCert::load(cert, key)?;
        let mut config = server_config(cert.clone(), client_ca)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ApiTls { config: Arc::new(config), cert })
    }
}

/// Parses the probes endpoint's address (`pm-agent --http-listen`); `None` when it is `off`.
pub fn probes_listen(listen: &str) -> Result<Option<SocketAddr>, ApiError> {
    match listen.trim() {
        "off" => Ok(None),
        addr => addr.parse().map(Some).map_err(|_| ApiError::BadListen(listen.to_string())),
    }
}

impl ApiArgs {
    /// Validates the options; `None` when the API is off.
    pub fn build(&self) -> Result<Option<ApiConfig>, ApiError> {
        if self.api_listen.trim() == "off" {
            return Ok(None);
        }
        let listen: SocketAddr =
            self.api_listen.trim().parse().map_err(|_| ApiError::BadListen(self.api_listen.clone()))?;
        let token = match (&self.api_token, &self.api_token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(path)) => {
                let t = std::fs::read_to_string(path)
                    .map_err(|e| ApiError::TokenFile { path: path.clone(), why: e.to_string() })?;
                Some(t.trim().to_string())
            }
            (None, None) => None,
        };
        if token.as_deref() == Some("") {
            let path = self.api_token_file.clone().unwrap_or_default();
            return Err(ApiError::TokenFile { path, why: "the token is empty".into() });
        }
        // TLS does not stand in for the token: off loopback, both are wanted, and the token is required.
        if token.is_none() && !listen.ip().is_loopback() {
            return Err(ApiError::Unprotected(listen));
        }
        let tls = match (&self.api_tls_cert_file, &self.api_tls_key_file) {
            (Some(cert), Some(key)) => Some(ApiTls::load(cert, key, self.api_tls_client_ca_file.as_deref())?),
            _ => None,
        };
        if tls.is_none() && !listen.ip().is_loopback() {
            tracing::warn!(
                %listen,
                "the direct-run API listens off loopback without TLS: its token crosses the network in clear \
                 (set --api-tls-cert-file and --api-tls-key-file)"
            );
        }
        Ok(Some(ApiConfig {
            listen,
            token,
            max_body_bytes: self.api_max_body_bytes,
            header_timeout: Duration::from_millis(self.api_header_timeout_ms.max(1)),
            max_runs: self.api_max_runs.max(1),
            max_connections: self.api_max_connections.max(1),
            stream_stall: Duration::from_millis(self.api_stream_stall_ms.max(1)),
            tls,
        }))
    }
}

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

/// Binds the API's listener (done before anything else starts, so a taken port fails fast).
pub async fn bind(cfg: &ApiConfig) -> Result<TcpListener, ApiError> {
    TcpListener::bind(cfg.listen).await.map_err(|source| ApiError::Bind { addr: cfg.listen, source })
}

pub(crate) struct AppState {
    runner: Arc<Runner>,
    work_root: PathBuf,
    remove_dirs: bool,
    pub(crate) token: Option<String>,
    runs: Arc<Semaphore>,
    max_runs: usize,
    next: AtomicU64,
    metrics: Option<PrometheusHandle>,
}

/// What the API needs from the agent.
pub struct ApiContext {
    /// Runs the pipelines.
    pub runner: Arc<Runner>,
    /// Direct runs use `work_root/run-<id>`.
    pub work_root: PathBuf,
    /// Remove a run's directory after it succeeded.
    pub remove_dirs: bool,
    /// Renders `/metrics`; `None` answers 404 there.
    pub metrics: Option<PrometheusHandle>,
}

/// Serves the API on `listener` until `stop` fires, then lets open requests finish for a moment. With TLS it
/// serves TLS only, and checks the certificate files every second until `stop`.
pub async fn serve(listener: TcpListener, cfg: ApiConfig, ctx: ApiContext, stop: CancellationToken) {
    let mut runner = Runner::clone(&ctx.runner);
    runner.stream_stall = cfg.stream_stall;
    let state = Arc::new(AppState {
        runner: Arc::new(runner),
        work_root: ctx.work_root,
        remove_dirs: ctx.remove_dirs,
        token: cfg.token.clone(),
        runs: Arc::new(Semaphore::new(cfg.max_runs)),
        max_runs: cfg.max_runs,
        next: AtomicU64::new(0),
        metrics: ctx.metrics,
    });
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
    let state = Arc::new(AppState {
        runner: ctx.runner,
        work_root: ctx.work_root,
        remove_dirs: ctx.remove_dirs,
        token: None,
        runs: Arc::new(Semaphore::new(1)),
        max_runs: 1,
        next: AtomicU64::new(0),
        metrics: ctx.metrics,
    });
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
        .route("/api/v1/pipeline", post(run))
        .layer(axum::middleware::from_fn_with_state(state.clone(), authorize))
        .layer(DefaultBodyLimit::max(max_body));
    Router::new()
        .merge(runs)
        .merge(probes())
        .with_state(state.clone())
        .merge(crate::grpc::routes(state, max_body))
        .fallback(not_found)
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such path")
}

fn error(status: StatusCode, why: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": why.into() }))).into_response()
}

async fn authorize(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

/// Compares without stopping at the first differing byte, so timing does not leak the token.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    let missing: Vec<String> = s
        .runner
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
    match &s.metrics {
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
    let task = match pm_protocol::pipeline::parse_task(&body) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let run = match s.start_run(task, q.stream) {
        Ok(run) => run,
        Err(busy) => return error(StatusCode::TOO_MANY_REQUESTS, busy),
    };
    if !q.stream {
        let result = run.handle.await.unwrap_or_else(|e| TaskResult::failed(format!("the run failed: {e}")));
        drop(run.guard);
        return Json(result).into_response();
    }
    let lines = futures::stream::unfold((run.events, run.guard), |(mut rx, guard)| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(line)), (rx, guard)))
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response()
}

/// A run started by [`AppState::start_run`].
pub(crate) struct StartedRun {
    /// Resolves to the result.
    pub(crate) handle: tokio::task::JoinHandle<TaskResult>,
    /// Its events, ending with [`RunEvent::Result`] (empty unless streaming).
    pub(crate) events: mpsc::Receiver<RunEvent>,
    /// Dropping it (the client went away) cancels the run.
    pub(crate) guard: tokio_util::sync::DropGuard,
}

impl AppState {
    /// Starts `task` on its own tokio task, or says why not (too many runs). The run goes on its own task so
    /// that a client that disconnects drops the guard, which cancels the run, and the runner still kills the
    /// command's process group on the way out.
    pub(crate) fn start_run(&self, task: pm_protocol::pipeline::Task, streaming: bool) -> Result<StartedRun, String> {
        let Ok(permit) = self.runs.clone().try_acquire_owned() else {
            return Err(format!("busy: {} runs in progress (--api-max-runs)", self.max_runs));
        };
        // Unique across restarts: milliseconds since the epoch, then a counter.
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let id = now_ms.saturating_mul(1000) + self.next.fetch_add(1, Ordering::Relaxed) % 1000;
        let dir = task_dir_named(&self.work_root, &format!("run-{id}"));
        let cancel = CancellationToken::new();
        let guard = cancel.clone().drop_guard();
        let (tx, events) = mpsc::channel::<RunEvent>(64);
        let (runner, remove) = (self.runner.clone(), self.remove_dirs);
        let handle = tokio::spawn(async move {
            let result = runner.run(&task, &dir, id, &cancel, streaming.then_some(&tx)).await;
            if result.ok && remove {
                let _ = tokio::fs::remove_dir_all(&dir).await;
            }
            drop(permit);
            if streaming {
                let stall = runner.stream_stall;
                let _ = tokio::time::timeout(stall, tx.send(RunEvent::Result { result: result.clone() })).await;
            }
            result
        });
        Ok(StartedRun { handle, events, guard })
    }
}

impl crate::runner::Executors {
    /// The pod executors named explicitly, with their sockets.
    fn pods(&self) -> impl Iterator<Item = (&str, &std::path::Path)> {
        self.named().filter_map(|(n, e)| match e {
            Executor::Pod(p) => Some((n, p.as_path())),
            Executor::Local | Executor::Grpc(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(listen: &str) -> ApiArgs {
        ApiArgs {
            api_listen: listen.into(),
            api_token: None,
            api_token_file: None,
            api_max_body_bytes: 1024,
            api_header_timeout_ms: 1000,
            api_max_runs: 1,
            api_max_connections: 8,
            api_stream_stall_ms: 1000,
            api_tls_cert_file: None,
            api_tls_key_file: None,
            api_tls_client_ca_file: None,
        }
    }

    #[test]
    fn non_loopback_needs_a_token() {
        assert!(args("off").build().unwrap().is_none());
        assert!(args("127.0.0.1:0").build().unwrap().is_some());
        assert!(args("[::1]:0").build().unwrap().is_some());
        assert!(matches!(args("0.0.0.0:7071").build(), Err(ApiError::Unprotected(_))));
        let mut a = args("0.0.0.0:7071");
        a.api_token = Some("s3cret".into());
        assert_eq!(a.build().unwrap().unwrap().token.as_deref(), Some("s3cret"));
        assert!(matches!(args("localhost").build(), Err(ApiError::BadListen(_))));
        let mut a = args("0.0.0.0:7071");
        a.api_token = Some("  ".into());
        assert!(a.build().is_err());
    }

    #[test]
    fn tls_files_are_checked_at_start_and_do_not_replace_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let pair = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let (cert, key, bad) = (dir.path().join("tls.crt"), dir.path().join("tls.key"), dir.path().join("bad.pem"));
        std::fs::write(&cert, pair.cert.pem()).unwrap();
        std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
        std::fs::write(&bad, "garbage\n").unwrap();
        let with_tls = |listen: &str, cert: &std::path::Path| {
            let mut a = args(listen);
            a.api_tls_cert_file = Some(cert.to_path_buf());
            a.api_tls_key_file = Some(key.clone());
            a
        };
        let cfg = with_tls("127.0.0.1:0", &cert).build().unwrap().unwrap();
        let tls = cfg.tls.unwrap();
        assert_eq!(tls.config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(matches!(with_tls("0.0.0.0:7071", &cert).build(), Err(ApiError::Unprotected(_))));
        let mut a = with_tls("0.0.0.0:7071", &cert);
        a.api_token = Some("s3cret".into());
        assert!(a.build().unwrap().unwrap().tls.is_some());
        let e = with_tls("127.0.0.1:0", &bad).build().unwrap_err().to_string();
        assert!(e.contains("bad.pem"), "{e}");
        let mut a = with_tls("127.0.0.1:0", &cert);
        a.api_tls_client_ca_file = Some(bad.clone());
        assert!(a.build().unwrap_err().to_string().contains("bad.pem"));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
