//! `pm-scheduler` binary: parse and validate config (exit 64 on error), start the node, serve until
//! SIGTERM/SIGINT, then drain within the grace period.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use pm_scheduler::config::{Config, LogFormat};
use pm_scheduler::node::Node;
use pm_scheduler::server;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: the end-to-end benchmark spent ~10% of the node's CPU in malloc/free
/// (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cfg = match Config::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(64);
        }
    };
    if let Err(e) = cfg.validate() {
        eprintln!("pm-scheduler: {e}");
        return ExitCode::from(64);
    }
    init_tracing(cfg.log_format);
    abort_on_panic();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pm-scheduler: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pm-scheduler: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let addr = cfg.listen_addr()?;
    let node = Node::start(&cfg)?;
    let listener = server::bind(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {bound}")?;
        out.flush()?;
    }
    tracing::info!(%bound, node = %node.ctx.node_id, store = ?cfg.store, fsync = ?cfg.fsync, "scheduler ready");
    server::run(listener, node.ctx.clone(), shutdown_signal()).await;
    tracing::info!("shutting down");
    node.shutdown(cfg.shutdown_grace).await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
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
fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        std::process::abort();
    }));
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // `log_internal_errors(false)`: a failed log write (stderr on a full disk) must not panic via eprintln!.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
