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
    /// Run a scheduler node and an agent with local executors in this one process (with --nodes: a cluster of
    /// such processes on this machine).
    // A flag given twice: the last one holds (a cluster's members get their own addresses appended).
    #[command(args_override_self = true)]
    Dev {
        /// Start a cluster of this many members on this machine, each a scheduler node with its agent: member i
        /// listens on the --listen, --api-listen and --http-listen ports plus 10 × i, keeps its data in
        /// DATA/node-i and runs tasks in WORK_DIR/node-i. Prints each member's addresses, then `members A,B,C`
        /// (for `pmctl --server`).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
        nodes: u16,
        /// Stop at once when stdin reaches its end (a member of `--nodes`, whose launcher holds the pipe).
        #[arg(long, hide = true)]
        exit_with_stdin: bool,
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

mod cluster;

/// A member of `pm dev --nodes`: its launcher holds our stdin and never writes; end-of-file means the launcher
/// is gone (even by `kill -9`), and the member stops at once. Its commands die with it.
fn exit_when_stdin_ends() {
    let spawned = std::thread::Builder::new().name("pm-lifeline".into()).spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        eprintln!("pm dev: the launcher of --nodes is gone; stopping");
        std::process::exit(1);
    });
    if let Err(e) = spawned {
        eprintln!("pm dev: cannot watch the launcher: {e}");
    }
}

fn main() -> ExitCode {
    let cli: Cli = match pm_client::cli::parse_or_exit() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Cmd::Dev { nodes, exit_with_stdin, scheduler: cfg, lease, agent, api } = cli.cmd;
    if nodes > 1 {
        if !cfg.members.is_empty() {
            eprintln!("pm dev: --nodes makes its own --members; give one or the other");
            return ExitCode::from(pm_client::cli::EXIT_USAGE);
        }
        pm_scheduler::process::init_tracing(cfg.log_format);
        let plan = cluster::Plan {
            nodes,
            listen: cfg.listen.clone(),
            api_listen: api.api_listen.clone(),
            http_listen: cfg.http_listen.clone(),
            data: cfg.data.clone(),
            work_dir: agent.work_dir.clone(),
        };
        let args = std::env::args_os().skip_while(|a| a != "dev").skip(1).collect();
        return cluster::launch(plan, args);
    }
    if exit_with_stdin {
        exit_when_stdin_ends();
    }
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
