//! `pm-agent` binary. `pm-agent run --server ADDR` leases tasks and runs them as local processes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pm_agent::agent;
use pm_agent::args::AgentArgs;
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
    let Cmd::Run { server, agent: args } = cli.cmd;
    let (cfg, runner) = match args.build(server) {
        Ok(built) => built,
        Err(e) => {
            eprintln!("pm-agent: {e}");
            return ExitCode::from(pm_protocol::cli::EXIT_USAGE);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pm-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
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
