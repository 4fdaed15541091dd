//! `pm-agent` binary. `pm-agent run --server ADDR` leases tasks and runs their pipelines; `pm-agent serve`
//! only serves the direct-run API; `pm-agent exec --name NAME --listen unix:///mnt/pipe/.pm/NAME.sock` is
//! the executor in a utility container (`--grpc-listen ADDR`: also, or only, the original executors' gRPC
//! service).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pm_agent::agent::{self, AgentConfig};
use pm_agent::args::{AgentArgs, LeaseArgs};
use pm_agent::exec_server;
use pm_agent::runner::Runner;
use pm_agent::wire::pod::socket_path;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "api")]
use pm_agent::api::ApiArgs;

/// Built without the `api` feature: no direct-run API flags.
#[cfg(not(feature = "api"))]
#[derive(clap::Args, Debug, Clone)]
struct ApiArgs {}

/// The probes endpoint (not in `pm dev`, whose scheduler endpoint serves the probes and metrics).
#[derive(clap::Args, Debug, Clone)]
struct ProbeArgs {
    /// Address of a second HTTP endpoint with only `/healthz`, `/readyz` (also `/ready`) and `/metrics`, or
    /// `off`. It runs nothing, so any address is allowed: in a pod, probes and Prometheus reach it while the
    /// direct-run API stays on loopback.
    #[arg(long, env = "PM_HTTP_LISTEN", default_value = "off")]
    http_listen: String,
}

/// pipeline-manager agent.
#[derive(Parser, Debug)]
#[command(name = "pm-agent", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    log: pm_logging::LogArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Lease tasks from a scheduler and run their pipelines.
    Run {
        /// Scheduler address. For a cluster, one or more member addresses, comma-separated: the agent's home
        /// is the member its `--client-id` hashes to (it keeps that home across restarts).
        #[arg(long, env = "PM_SERVER", default_value = "127.0.0.1:7070")]
        server: String,
        #[command(flatten)]
        lease: Box<LeaseArgs>,
        #[command(flatten)]
        agent: AgentArgs,
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        probes: ProbeArgs,
        #[command(flatten)]
        tls: pm_client::tls::TlsArgs,
    },
    /// Serve only the direct-run HTTP API (no scheduler): `POST /v1/run` runs a pipeline here. Without a
    /// scheduler there is no queue, token or lease to configure: the API flags say who may run what.
    #[cfg(feature = "api")]
    Serve {
        #[command(flatten)]
        agent: AgentArgs,
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        probes: ProbeArgs,
    },
    /// Serve one executor: run the commands the agent sends over a unix socket (in a utility container),
    /// and/or serve the original executors' gRPC service (`--grpc-listen`).
    Exec {
        /// Executor name (the `executorName` of the steps it runs). Default: $COMMAND_EXECUTOR_NAME.
        #[arg(long, env = "PM_EXECUTOR_NAME")]
        name: Option<String>,
        /// Socket to serve, `unix:///absolute/path.sock` (default: unix:///mnt/pipe/.pm/NAME.sock, unless
        /// only --grpc-listen is given).
        #[arg(long, env = "PM_EXECUTOR_LISTEN")]
        listen: Option<String>,
        #[command(flatten)]
        grpc: grpc_exec::Args,
    },
    /// Copy this binary to DIR/pm-agent (an init container puts it into the pod's shared volume, so the
    /// utility containers can run `pm-agent exec` without having it in their images).
    Install {
        /// Target directory (created if missing), e.g. /mnt/pipe/.pm/bin.
        dir: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let cli: Cli = match pm_client::cli::parse_or_exit() {
        Ok(c) => c,
        Err(code) => return code,
    };
    pm_logging::init(cli.log.log_format, "info");
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pm-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.cmd {
        Cmd::Run { server, lease, agent, api, probes, tls } => run(&rt, server, *lease, agent, &api, &probes, &tls),
        #[cfg(feature = "api")]
        Cmd::Serve { agent, api, probes } => serve(&rt, agent, &api, &probes),
        Cmd::Exec { name, listen, grpc } => exec(&rt, name, listen, grpc),
        Cmd::Install { dir } => match install(&dir) {
            Ok(path) => {
                println!("installed {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pm-agent install: {e}");
                ExitCode::from(1)
            }
        },
    }
}

/// `pm-agent run`: leases tasks from the scheduler (and serves the API, if asked) until stopped.
fn run(
    rt: &tokio::runtime::Runtime,
    server: String,
    lease: LeaseArgs,
    args: AgentArgs,
    api: &ApiArgs,
    probes: &ProbeArgs,
    tls: &pm_client::tls::TlsArgs,
) -> ExitCode {
    let Some((mut cfg, runner)) = build(args, lease, server) else {
        return ExitCode::from(pm_client::cli::EXIT_USAGE);
    };
    match tls.config() {
        Ok(tls) => cfg.tls = tls,
        Err(e) => {
            eprintln!("pm-agent: {e}");
            return ExitCode::from(pm_client::cli::EXIT_USAGE);
        }
    }
    rt.block_on(async move {
        if let Err(code) = start_api(api, probes, &cfg, &runner, CancellationToken::new()).await {
            return code;
        }
        // SIGTERM drains: no new tasks, the running ones finish (or are handed back at the drain
        // timeout). A second SIGTERM or SIGINT exits at once: the runtime is dropped with every
        // running task, each command's process group is killed on the way out, and the scheduler
        // redelivers the tasks when their leases end.
        let drain = CancellationToken::new();
        let first = drain.clone();
        tokio::select! {
            ended = agent::run_until(cfg, runner, first.cancelled_owned()) => match ended {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pm-agent: {e}");
                    ExitCode::from(1)
                }
            },
            () = async {
                wait_for_signal().await;
                drain.cancel();
                wait_for_signal().await;
                tracing::warn!("second signal: stopping now");
            } => ExitCode::from(1),
        }
    })
}

/// `pm-agent serve`: only the direct-run API, until SIGTERM or SIGINT.
#[cfg(feature = "api")]
fn serve(rt: &tokio::runtime::Runtime, args: AgentArgs, api: &ApiArgs, probes: &ProbeArgs) -> ExitCode {
    let Some((cfg, runner)) = build(args, LeaseArgs::none(), String::new()) else {
        return ExitCode::from(pm_client::cli::EXIT_USAGE);
    };
    if api.api_listen.trim() == "off" {
        eprintln!("pm-agent serve: --api-listen off leaves nothing to serve");
        return ExitCode::from(pm_client::cli::EXIT_USAGE);
    }
    rt.block_on(async move {
        let stop = CancellationToken::new();
        if let Err(code) = start_api(api, probes, &cfg, &runner, stop.clone()).await {
            return code;
        }
        wait_for_signal().await;
        stop.cancel();
        ExitCode::SUCCESS
    })
}

/// `pm-agent exec`: validates where to serve (the original executor's variables as defaults), then serves.
fn exec(rt: &tokio::runtime::Runtime, name: Option<String>, listen: Option<String>, grpc: grpc_exec::Args) -> ExitCode {
    let usage = |e: &dyn std::fmt::Display| {
        eprintln!("pm-agent exec: {e}");
        ExitCode::from(pm_client::cli::EXIT_USAGE)
    };
    // The original executor's variable, so that its containers' environment works unchanged.
    let name = name
        .or_else(|| std::env::var(exec_server::original_env::NAME).ok())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    let grpc = match grpc_exec::config(grpc, name.as_deref().unwrap_or("exec")) {
        Ok(g) => g,
        Err(e) => return usage(&e),
    };
    // Only the gRPC service when it alone is asked for; the unix socket otherwise, or as well.
    let listen = match (listen, &name, grpc.is_some()) {
        (Some(l), _, _) => Some(l),
        (None, Some(n), false) => Some(format!("unix:///mnt/pipe/.pm/{n}.sock")),
        (None, None, false) => return usage(&"--name (or COMMAND_EXECUTOR_NAME) is required"),
        (None, _, true) => None,
    };
    let socket = match listen.map(|l| socket_path(&l)).transpose() {
        Ok(p) => p,
        Err(e) => return usage(&e),
    };
    if socket.is_some() && name.is_none() {
        return usage(&"--name (or COMMAND_EXECUTOR_NAME) is required to serve --listen");
    }
    rt.block_on(serve_executor(name.as_deref().unwrap_or("exec"), socket, grpc))
}

/// Copies the running executable to `dir/pm-agent` (through a temporary file and a rename, so an executor
/// never starts a half-written binary), mode 0755.
fn install(dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let me = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let target = dir.join("pm-agent");
    let tmp = dir.join(".pm-agent.tmp");
    std::fs::copy(&me, &tmp).map_err(|e| format!("copy {} to {}: {e}", me.display(), tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &target).map_err(|e| format!("{}: {e}", target.display()))?;
    Ok(target)
}

/// Serves the executor (its unix socket, its gRPC service, or both) until SIGTERM or SIGINT, then removes
/// its sockets. A bind failure exits 1 before anything is served.
async fn serve_executor(
    name: &str,
    socket: Option<std::path::PathBuf>,
    grpc: Option<grpc_exec::ServeConfig>,
) -> ExitCode {
    let unix = match socket {
        Some(path) => match exec_server::pod::bind(&path).await {
            Ok(l) => Some((l, path)),
            Err(e) => {
                eprintln!("pm-agent exec: {e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let grpc = match grpc {
        Some(cfg) => match grpc_exec::bind(cfg).await {
            Ok(bound) => Some(bound),
            Err(e) => {
                eprintln!("pm-agent exec: {e}");
                if let Some((_, path)) = &unix {
                    let _ = std::fs::remove_file(path);
                }
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    if let Some((_, path)) = &unix {
        tracing::info!(executor = name, socket = %path.display(), "executor ready");
    }
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            wait_for_signal().await;
            stop.cancel();
        }
    });
    let unix_served = async {
        if let Some((listener, path)) = unix {
            exec_server::pod::serve(name, listener, stop.clone()).await;
            let _ = std::fs::remove_file(path);
        }
    };
    let grpc_served = async {
        match grpc {
            Some(bound) => {
                let ok = grpc_exec::serve(bound, stop.clone()).await;
                // A service that failed stops the other too: the container restarts whole.
                stop.cancel();
                ok
            }
            None => true,
        }
    };
    match tokio::join!(unix_served, grpc_served) {
        ((), true) => ExitCode::SUCCESS,
        ((), false) => ExitCode::from(1),
    }
}

/// The original executors' gRPC service of `pm-agent exec` (feature `exec-grpc`).
#[cfg(feature = "exec-grpc")]
mod grpc_exec {
    use pm_agent::exec_server::grpc::{self, GrpcListener, ServeError};
    use tokio_util::sync::CancellationToken;

    pub use grpc::{ExecGrpcArgs as Args, ServeConfig};

    /// A bound service, ready to serve.
    pub struct Bound(GrpcListener, ServeConfig);

    /// The validated settings (the original executor's variables as defaults); `None` when not asked for.
    pub fn config(args: Args, name: &str) -> Result<Option<ServeConfig>, ServeError> {
        args.build(name, |var| std::env::var(var).ok())
    }

    /// Binds and prints `grpc listening on ADDR`.
    pub async fn bind(cfg: ServeConfig) -> Result<Bound, ServeError> {
        let listener = grpc::bind(&cfg.listen).await?;
        let addr = listener.local_addr();
        println!("grpc listening on {addr}");
        if !grpc::is_loopback(&cfg.listen) {
            tracing::warn!(
                "the gRPC service on {addr} runs any command sent to it, without a token (as the original \
                 executor): keep it unreachable from outside the pod"
            );
        }
        tracing::info!(executor = %cfg.name, %addr, shell = %cfg.shell, work_dir = %cfg.work_dir.display(), "gRPC executor ready");
        Ok(Bound(listener, cfg))
    }

    /// Serves until `stop` fires; false if the service failed.
    pub async fn serve(Bound(listener, cfg): Bound, stop: CancellationToken) -> bool {
        let socket = match &listener {
            GrpcListener::Unix(_, path) => Some(path.clone()),
            GrpcListener::Tcp(_) => None,
        };
        let served = grpc::serve(listener, cfg, stop).await;
        if let Some(path) = socket {
            let _ = std::fs::remove_file(path);
        }
        match served {
            Ok(()) => true,
            Err(e) => {
                eprintln!("pm-agent exec: the gRPC service failed: {e}");
                false
            }
        }
    }
}

/// Built without the `exec-grpc` feature: no gRPC service.
#[cfg(not(feature = "exec-grpc"))]
mod grpc_exec {
    use tokio_util::sync::CancellationToken;

    /// No flags.
    #[derive(clap::Args, Debug, Clone)]
    pub struct Args {}

    /// Never configured.
    pub enum ServeConfig {}

    /// Never bound.
    pub enum Bound {}

    pub fn config(_: Args, _: &str) -> Result<Option<ServeConfig>, std::convert::Infallible> {
        Ok(None)
    }

    pub async fn bind(cfg: ServeConfig) -> Result<Bound, std::convert::Infallible> {
        match cfg {}
    }

    pub async fn serve(bound: Bound, _: CancellationToken) -> bool {
        match bound {}
    }
}

/// Resolves at SIGTERM or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Validates the agent options; `None` (after saying why) on a usage error.
fn build(args: AgentArgs, lease: LeaseArgs, server: String) -> Option<(AgentConfig, Runner)> {
    args.build(lease, server, pm_protocol::limits::DEFAULT_QUEUE).map_err(|e| eprintln!("pm-agent: {e}")).ok()
}

/// Validates the API options, binds, and serves the direct-run API in the background (prints
/// `api listening on ADDR` once bound), and the probes endpoint if `--http-listen` is set (prints
/// `http listening on ADDR`). Usage errors exit 64, a taken port 1.
#[cfg(feature = "api")]
async fn start_api(
    args: &ApiArgs,
    probes: &ProbeArgs,
    cfg: &AgentConfig,
    runner: &Runner,
    stop: CancellationToken,
) -> Result<(), ExitCode> {
    use pm_agent::api;
    let usage = |e: api::ApiError| {
        eprintln!("pm-agent: {e}");
        ExitCode::from(pm_client::cli::EXIT_USAGE)
    };
    let probes = api::probes_listen(&probes.http_listen).map_err(usage)?;
    let api = args.build().map_err(usage)?;
    let ctx = || api::ApiContext {
        runner: std::sync::Arc::new(runner.clone()),
        work_root: cfg.work_root.clone(),
        remove_dirs: cfg.remove_task_dirs,
        metrics: api::install_metrics(),
    };
    let bind = |addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            eprintln!("pm-agent: --http-listen {addr}: {e}");
            ExitCode::from(1)
        })
    };
    if let Some(addr) = probes {
        let listener = bind(addr).await?;
        if let Ok(addr) = listener.local_addr() {
            println!("http listening on {addr}");
        }
        let timeout = std::time::Duration::from_millis(args.api_header_timeout_ms.max(1));
        tokio::spawn(api::serve_probes(listener, ctx(), timeout, stop.clone()));
    }
    let Some(api) = api else { return Ok(()) };
    let listener = api::bind(&api).await.map_err(|e| {
        eprintln!("pm-agent: {e}");
        ExitCode::from(1)
    })?;
    if let Ok(addr) = listener.local_addr() {
        println!("api listening on {addr}");
        tracing::info!(%addr, token = api.token.is_some(), tls = api.tls.is_some(), "direct-run API ready");
    }
    tokio::spawn(api::serve(listener, api, ctx(), stop));
    Ok(())
}

/// Built without the `api` feature: nothing to serve.
#[cfg(not(feature = "api"))]
async fn start_api(
    _: &ApiArgs,
    _: &ProbeArgs,
    _: &AgentConfig,
    _: &Runner,
    _: CancellationToken,
) -> Result<(), ExitCode> {
    Ok(())
}
