//! Running a node as (part of) a process: shared by the `pm-scheduler` binary and the embedded `pm dev`.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogFormat};
use crate::http;
use crate::node::Node;
use crate::server;

/// Everything before a node can start, for the binary called `who`: validates `cfg` (exit 64 with a one-line
/// message), sets up logging and abort-on-panic, and builds the multi-threaded runtime (exit 1 if it cannot).
pub fn prepare(cfg: &Config, who: &str) -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    if let Err(e) = cfg.validate() {
        eprintln!("{who}: {e}");
        return Err(std::process::ExitCode::from(pm_client::cli::EXIT_USAGE));
    }
    init_tracing(cfg.log_format);
    abort_on_panic();
    if !cfg.huge_pages {
        no_huge_pages();
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("{who}: cannot start runtime: {e}");
        std::process::ExitCode::FAILURE
    })
}

/// Turns transparent huge pages off for this process (see `Config::huge_pages`). Where the kernel has no such
/// switch, the process runs as it is.
fn no_huge_pages() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!("cannot turn transparent huge pages off: {e}");
    }
}

/// Starts the node of `cfg`, prints `listening on ADDR` to stdout, calls `on_ready` with the bound address,
/// then (unless `--http-listen off`) prints `http listening on ADDR` and serves the HTTP endpoint, then (with
/// `--probe-listen`) prints `probe listening on ADDR` and serves the probes; serves until
/// `stop` resolves, then drains within `cfg.shutdown_grace` (`/readyz` answers 503 meanwhile).
pub async fn run_node(
    cfg: Config,
    stop: impl std::future::Future<Output = ()>,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    // `--members dns:NAME`: the list is read before anything else, and from then on the node runs as with a
    // list of addresses.
    let dns = match cfg.members_dns_name() {
        Some(name) => Some(name?.to_string()),
        None => None,
    };
    let mut cfg = cfg;
    if let Some(name) = &dns {
        cfg.members = crate::cluster::members::resolve_at_start(&cfg, name).await?;
    }
    let addr = cfg.listen_addr()?;
    let http_addr = cfg.http_addr()?;
    // Installed before the node starts: shards look their histograms up once, at start.
    let metrics = http_addr.is_some().then(http::install_metrics);
    let node = Node::start(&cfg)?;
    if let Some(name) = &dns {
        crate::cluster::members::save(&cfg.data, &cfg.members)?;
        let lookup = crate::cluster::members::DnsMembers::new(name, cfg.members_dns_server)?;
        let watch = crate::cluster::members::watch(
            lookup,
            cfg.members.clone(),
            cfg.members_dns_interval,
            node.ctx.shutdown.clone(),
        );
        tokio::spawn(watch);
    }
    // Before any listener is bound: a request must never find an application missing that a peer holds.
    node.catch_up(cfg.catalog_start_timeout).await;
    let listener = server::bind(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let http_listener = match http_addr {
        Some(a) => Some(tokio::net::TcpListener::bind(a).await.map_err(|e| {
            anyhow::anyhow!(
                "--http-listen {a}: {e} (another scheduler on this machine? give each its own port, or `off`)"
            )
        })?),
        None => None,
    };
    let probe_listener = match cfg.probe_addr()? {
        Some(a) => {
            Some(tokio::net::TcpListener::bind(a).await.map_err(|e| anyhow::anyhow!("--probe-listen {a}: {e}"))?)
        }
        None => None,
    };
    let bound = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {bound}")?;
        out.flush()?;
    }
    tracing::info!(%bound, node = %node.ctx.node_id, store = ?cfg.store, fsync = ?cfg.fsync, "scheduler ready");
    on_ready(bound);
    let ready = Arc::new(AtomicBool::new(true));
    let http_stop = CancellationToken::new();
    if let Some(l) = http_listener {
        let http_bound = l.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "http listening on {http_bound}")?;
            out.flush()?;
        }
        let (cfg, ready, stop) = (cfg.clone(), ready.clone(), http_stop.clone());
        let metrics = metrics.unwrap_or_else(http::install_metrics);
        let api = Some(Arc::new(crate::gateway::Gateway::new(node.ctx.clone(), &cfg)));
        tokio::spawn(async move { http::serve(l, &cfg, metrics, ready, api, stop).await });
    }
    if let Some(l) = probe_listener {
        let probe_bound = l.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "probe listening on {probe_bound}")?;
            out.flush()?;
        }
        let (cfg, ready, stop) = (cfg.clone(), ready.clone(), http_stop.clone());
        tokio::spawn(async move { http::serve_probes(l, &cfg, ready, stop).await });
    }
    server::run(listener, node.ctx.clone(), stop).await;
    tracing::info!("shutting down");
    ready.store(false, Ordering::Relaxed);
    node.shutdown(cfg.shutdown_grace).await;
    http_stop.cancel();
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// A panic in any task (a shard actor, the committer) would leave a node that accepts connections but never
/// answers some of them. Crash instead: the WAL makes a restart lose nothing, and a supervisor restarts it.
pub fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        std::process::abort();
    }));
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`): see `pm-logging`.
pub fn init_tracing(format: LogFormat) {
    pm_logging::init(format, "info");
}
