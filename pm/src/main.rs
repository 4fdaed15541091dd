//! `pm`: pipeline-manager in one process.
//!
//! `pm dev` runs a scheduler node (data in `./pm-data`) and an agent running every executor as a local process
//! (tasks in `./pm-work`), so `pm dev` then `pmctl submit examples/hello.json` runs a pipeline on one machine.
//! Every `pm-scheduler` flag and every `pm-agent run` flag applies; the agent's direct-run API listens on
//! 127.0.0.1:7071 unless `--api-listen` says otherwise, and the scheduler's HTTP endpoint (`/metrics`, `/healthz`,
//! `/readyz`) on 127.0.0.1:7072 unless `--http-listen` does. Both `/metrics` render the same (one) recorder.
//!
//! The embedded agent serves every queue unless `--queue` says otherwise. SIGTERM drains it as it drains
//! `pm-agent run`, then stops the node; its commands die with the process, even after `kill -9`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use pm_agent::api::{ApiArgs, ApiContext};
use pm_agent::args::{AgentArgs, LeaseArgs};
use pm_scheduler::config::Config;
use pm_scheduler::process;
use tokio_util::sync::CancellationToken;

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
        lease: LeaseArgs,
        #[command(flatten)]
        agent: AgentArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
}

fn main() -> ExitCode {
    let cli: Cli = match pm_client::cli::parse_or_exit() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Cmd::Dev { scheduler: cfg, lease, agent, api } = cli.cmd;
    if cfg.tls_cert_file.is_some() {
        // The embedded agent talks to its own node over loopback; TLS is for pm-scheduler on a network.
        eprintln!("pm dev: the --tls-* flags are for pm-scheduler; pm dev serves plain TCP on its own machine");
        return ExitCode::from(pm_client::cli::EXIT_USAGE);
    }
    let rt = match process::prepare(&cfg, "pm dev") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    // Checked before the node starts, so a bad agent option never leaves a half-started node.
    let built =
        agent.build(lease, String::new(), "*").and_then(|a| api.build().map(|api| (a, api)).map_err(|e| e.to_string()));
    let ((mut agent_cfg, runner), api) = match built {
        Ok(built) => built,
        Err(e) => {
            eprintln!("pm dev: {e}");
            return ExitCode::from(pm_client::cli::EXIT_USAGE);
        }
    };
    // The API port is taken before the node starts, so a clash fails at once.
    let api = match api.map(|c| rt.block_on(pm_agent::api::bind(&c)).map(|l| (c, l))).transpose() {
        Ok(api) => api,
        Err(e) => {
            eprintln!("pm dev: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One Prometheus recorder for the process, installed first with the buckets of both components: the
    // agent's API and the scheduler's HTTP endpoint then get the same handle (either `/metrics` shows both).
    let buckets = [pm_agent::api::METRIC_BUCKETS, pm_scheduler::metrics::METRIC_BUCKETS].concat();
    let _ = pm_http::install_metrics(&buckets);
    // SIGTERM or SIGINT drains the embedded agent as `pm-agent run` drains (no new tasks; the running ones
    // finish, or are handed back at --drain-timeout), then stops the node. A second signal stops at once.
    let (drain, drained) = (CancellationToken::new(), CancellationToken::new());
    let stop = {
        let (drain, drained) = (drain.clone(), drained.clone());
        async move {
            process::shutdown_signal().await;
            drain.cancel();
            tokio::select! {
                () = drained.cancelled() => {}
                () = process::shutdown_signal() => tracing::warn!("second signal: stopping now"),
            }
        }
    };
    let run = process::run_node(cfg, stop, move |bound| {
        agent_cfg.server = bound.to_string();
        if let Some((api_cfg, listener)) = api {
            if let Ok(addr) = listener.local_addr() {
                println!("api listening on {addr}");
            }
            let ctx = ApiContext {
                runner: Arc::new(runner.clone()),
                work_root: agent_cfg.work_root.clone(),
                remove_dirs: agent_cfg.remove_task_dirs,
                metrics: pm_agent::api::install_metrics(),
            };
            tokio::spawn(pm_agent::api::serve(listener, api_cfg, ctx, CancellationToken::new()));
        }
        tokio::spawn(async move {
            if let Err(e) = pm_agent::agent::run_until(agent_cfg, runner, drain.cancelled_owned()).await {
                tracing::warn!("embedded agent stopped: {e}");
            }
            drained.cancel();
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
