//! `pm-agent` binary. `pm-agent run --server ADDR` leases tasks and runs them as local processes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pm_agent::agent::{self, AgentConfig};
use pm_agent::runner::{Executors, Runner};
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
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Scheduler address.
    #[arg(long, env = "PM_SERVER", default_value = "127.0.0.1:7070")]
    server: String,
    /// Queue to take tasks from.
    #[arg(long, env = "PM_QUEUE", default_value = "default")]
    queue: String,
    /// Tasks run at once (default: the number of cores).
    #[arg(long, env = "PM_CONCURRENCY")]
    concurrency: Option<u32>,
    /// Each task runs in DIR/task-<id>.
    #[arg(long, env = "PM_WORK_DIR", default_value = "./pm-work")]
    work_dir: PathBuf,
    /// Keep a task's directory after it succeeded (failed ones are always kept).
    #[arg(long, env = "PM_KEEP_TASK_DIRS")]
    keep_task_dirs: bool,
    /// Executors this agent runs: `all`, or a comma-separated list; any other name fails the task.
    #[arg(long, env = "PM_EXECUTORS", default_value = "all")]
    executors: String,
    /// First retry delay after a failed task, ms (doubles per attempt, at most 300 s).
    #[arg(long, env = "PM_RETRY_BACKOFF_MS", default_value_t = 1000)]
    retry_backoff_ms: u64,
    /// Bytes kept of each command's stdout and stderr in the result.
    #[arg(long, env = "PM_TAIL_BYTES", default_value_t = 4096)]
    tail_bytes: usize,
    /// Name of this agent in the scheduler's logs (default: pm-agent-<pid>).
    #[arg(long, env = "PM_CLIENT_ID")]
    client_id: Option<String>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let Cmd::Run(args) = cli.cmd;
    let executors = match Executors::parse(&args.executors) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("pm-agent: --executors: {e}");
            return ExitCode::from(64);
        }
    };
    let concurrency = args
        .concurrency
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1))
        .max(1);
    // Commands run inside the task directory and get it as $PIPE_DIR: it must be absolute.
    let work_root = match std::fs::create_dir_all(&args.work_dir).and_then(|()| args.work_dir.canonicalize()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pm-agent: --work-dir {}: {e}", args.work_dir.display());
            return ExitCode::from(64);
        }
    };
    let cfg = AgentConfig {
        server: args.server,
        queue: args.queue,
        concurrency,
        work_root,
        remove_task_dirs: !args.keep_task_dirs,
        retry_backoff: Duration::from_millis(args.retry_backoff_ms),
        client_id: args.client_id.unwrap_or_else(|| format!("pm-agent-{}", std::process::id())),
    };
    let runner = Runner { executors, tail_bytes: args.tail_bytes };
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
