//! HTTP plumbing shared by `pm-scheduler` and `pm-agent`:
//!
//! - [`serve`]: the accept loop for an axum [`Router`] over hyper-util (HTTP/1 and HTTP/2), bounded by
//!   [`ServeLimits`] (time to send the request headers, open connections) with graceful shutdown;
//!   [`serve_tls`]: the same over TLS (the handshake bounded by the header timeout);
//! - [`install_metrics`]: the process-wide Prometheus recorder (histograms with explicit buckets, never
//!   summaries), installed once per process however many callers ask;
//! - [`metrics_response`]: the `GET /metrics` answer.
//!
//! Every request carries its connection's remote address as axum's `ConnectInfo<SocketAddr>` (`peer.rs`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

mod peer;

/// Histogram buckets, seconds: 100 µs to 10 s, with 0.05 s (the p99 objective) as a boundary.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Bounds on the connections [`serve`] accepts.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Time a client has to send the protocol preface and the request headers (slowloris bound).
    pub header_timeout: Duration,
    /// Open connections at once; more wait to be accepted.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `stop` fires, then lets open requests finish for up to 5 s.
pub async fn serve(listener: TcpListener, app: Router, limits: ServeLimits, stop: CancellationToken) {
    accept_loop(listener, app, limits, None, stop).await;
}

/// [`serve`] over TLS only: each connection's TLS handshake must end within the header timeout (a client
/// that fails it is closed, and logged at debug level). `config` should offer ALPN `h2` (gRPC clients
/// require it) and `http/1.1`; its certificate resolver is asked at each handshake, so a reloading one
/// serves a renewed certificate to new connections.
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    config: Arc<tokio_rustls::rustls::ServerConfig>,
    stop: CancellationToken,
) {
    accept_loop(listener, app, limits, Some(TlsAcceptor::from(config)), stop).await;
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    use hyper_util::server::conn::auto::Builder;

    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    // Dead HTTP/2 peers are found by pings and their connection closed.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("http accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = peer::WithPeer { app: app.clone(), peer };
        let (header_timeout, builder, watcher, tls) =
            (limits.header_timeout, builder.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            // hyper reads the protocol preface before its header timer starts: a client that connects and
            // sends nothing is dropped here instead of holding a connection permit.
            let mut first = [0u8; 1];
            if !matches!(tokio::time::timeout(header_timeout, stream.peek(&mut first)).await, Ok(Ok(1))) {
                return;
            }
            match tls {
                None => serve_connection(&builder, stream, app, watcher).await,
                Some(acceptor) => match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(&builder, stream, app, watcher).await,
                    Ok(Err(e)) => tracing::debug!("https: TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!("https: no TLS handshake within the header timeout"),
                },
            }
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// Serves one connection, plain or TLS, to its end (or until the graceful shutdown ends it).
async fn serve_connection<S>(
    builder: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
    stream: S,
    app: peer::WithPeer,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app));
    let _ = watcher.watch(conn.into_owned()).await;
}

/// Installs the process-wide Prometheus recorder and returns the handle `/metrics` renders.
///
/// Histograms get [`LATENCY_BUCKETS`] unless `overrides` names them (`(full metric name, buckets)`). There is
/// one recorder per process: the first call installs it (with its `overrides`) and starts the upkeep thread;
/// every later call returns the same handle and ignores its `overrides`, so a process that embeds several
/// components (`pm dev`) calls this first with the union of their overrides. `None` if the recorder cannot be
/// built or another recorder was installed without this function.
pub fn install_metrics(overrides: &[(&str, &[f64])]) -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE.get_or_init(|| build_and_install(overrides)).clone()
}

fn build_and_install(overrides: &[(&str, &[f64])]) -> Option<PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let mut builder = PrometheusBuilder::new().set_buckets(&LATENCY_BUCKETS).ok()?;
    for (name, buckets) in overrides {
        builder = builder.set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets).ok()?;
    }
    let handle = builder.install_recorder().ok()?;
    // Without the exporter's own runtime, histograms are compacted by this upkeep.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("pm-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        })
        .ok()?;
    Some(handle)
}

/// The answer to `GET /metrics`: the Prometheus text exposition of `handle`.
pub fn metrics_response(handle: &PrometheusHandle) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_recorder_per_process_with_explicit_buckets() {
        let a = install_metrics(&[("pm_test_batch", &[1.0, 2.0, 4.0])]).unwrap();
        let b = install_metrics(&[]).unwrap();
        metrics::histogram!("pm_test_seconds").record(0.01);
        metrics::histogram!("pm_test_batch").record(3.0);
        let text = b.render();
        assert_eq!(text, a.render(), "both handles render the same recorder");
        assert!(text.contains("pm_test_seconds_bucket{le=\"0.05\"} 1"), "{text}");
        assert!(text.contains("pm_test_batch_bucket{le=\"4\"} 1"), "{text}");
        assert!(!text.contains("quantile="), "{text}");
    }
}
