//! `pm`: pipeline-manager in one process.
//!
//! `pm dev` runs a scheduler node (data in `./pm-data`) and an agent running every executor as a local process
//! (tasks in `./pm-work`), so `pm dev` then `pmctl submit examples/hello.json` runs a pipeline on one machine.
//! Every `pm-scheduler` flag and every `pm-agent run` flag applies.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pm_agent::args::AgentArgs;
use pm_scheduler::config::Config;
use pm_scheduler::process;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// pipeline-manager.
#[derive(Parser, Debug)]
#[command(name = "pm", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a scheduler node and an agent with local executors in this one process.
    Dev {
        #[command(flatten)]
        scheduler: Config,
        #[command(flatten)]
        agent: AgentArgs,
    },
}

fn main() -> ExitCode {
    let cli: Cli = match pm_protocol::cli::parse_or_exit() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Cmd::Dev { scheduler: cfg, agent } = cli.cmd;
    let rt = match process::prepare(&cfg, "pm dev") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    // Checked before the node starts, so a bad agent option never leaves a half-started node.
    let (mut agent_cfg, runner) = match agent.build(String::new()) {
        Ok(built) => built,
        Err(e) => {
            eprintln!("pm dev: {e}");
            return ExitCode::from(pm_protocol::cli::EXIT_USAGE);
        }
    };
    let run = process::run_node(cfg, process::shutdown_signal(), move |bound| {
        agent_cfg.server = bound.to_string();
        tokio::spawn(async move {
            if let Err(e) = pm_agent::agent::run(agent_cfg, runner).await {
                tracing::warn!("embedded agent stopped: {e}");
            }
        });
    });
    match rt.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pm dev: {e:#}");
            ExitCode::FAILURE
        }
    }
}
