//! `pm-agent` binary. `pm-agent run --server ADDR` leases tasks and runs their pipelines; `pm-agent exec
//! --name NAME --listen unix:///mnt/pipe/.pm/NAME.sock` is the executor in a utility container.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pm_agent::args::AgentArgs;
use pm_agent::{agent, exec};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// pipeline-manager agent.
#[derive(Parser, Debug)]
#[command(name = "pm-agent", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Lease tasks from a scheduler and run their pipelines.
    Run {
        /// Scheduler address.
        #[arg(long, env = "PM_SERVER", default_value = "127.0.0.1:7070")]
        server: String,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Serve one executor: run the commands the agent sends over a unix socket (in a utility container).
    Exec {
        /// Executor name (the `executorName` of the steps it runs).
        #[arg(long, env = "PM_EXECUTOR_NAME")]
        name: String,
        /// Socket to serve, `unix:///absolute/path.sock` (default: unix:///mnt/pipe/.pm/NAME.sock).
        #[arg(long, env = "PM_EXECUTOR_LISTEN")]
        listen: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli: Cli = match pm_protocol::cli::parse_or_exit() {
        Ok(c) => c,
        Err(code) => return code,
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pm-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.cmd {
        Cmd::Run { server, agent: args } => {
            let (cfg, runner) = match args.build(server) {
                Ok(built) => built,
                Err(e) => {
                    eprintln!("pm-agent: {e}");
                    return ExitCode::from(pm_protocol::cli::EXIT_USAGE);
                }
            };
            match rt.block_on(agent::run(cfg, runner)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pm-agent: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Exec { name, listen } => {
            let listen = listen.unwrap_or_else(|| format!("unix:///mnt/pipe/.pm/{name}.sock"));
            let path = match exec::socket_path(&listen) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("pm-agent exec: {e}");
                    return ExitCode::from(pm_protocol::cli::EXIT_USAGE);
                }
            };
            rt.block_on(serve_executor(&name, &path))
        }
    }
}

/// Serves the executor until SIGTERM or SIGINT, then removes its socket.
async fn serve_executor(name: &str, path: &std::path::Path) -> ExitCode {
    let listener = match exec::bind(path).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pm-agent exec: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(executor = name, socket = %path.display(), "executor ready");
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            stop.cancel();
        }
    });
    exec::serve(name, listener, stop).await;
    let _ = std::fs::remove_file(path);
    ExitCode::SUCCESS
}
