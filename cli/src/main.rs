//! `pmctl`: the pipeline-manager command line.
//!
//! Exit codes: 0 success, 1 the server or the connection failed (or a task was not submitted or not
//! cancelled, or is unknown, or `kubectl` failed), 64 bad usage, 65 a task file or application spec is invalid
//! (then nothing was submitted or applied). `pmctl wait` also exits 2 (a task failed or was dead-lettered),
//! 3 (cancelled) or 4 (not finished within `--timeout`). Errors are one line on stderr.
//!
//! This file holds the command tree and hands each command to its module under [`cmd`]; what the commands
//! share (connecting, failures and their exit codes, reading input files) is in [`shared`].

mod cmd;
mod shared;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use shared::{Failure, ServerArgs};

/// pipeline-manager command line.
#[derive(Debug, Parser)]
#[command(name = "pmctl", version, about)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

/// The commands. Each one's arguments live beside its code, in `cmd/`; the help of each is the doc comment
/// of its variant here, so this list reads as the table of contents of `pmctl`.
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Submit task files (JSON: one task, or an array of tasks; `-` reads stdin), or tasks of a stored pipeline
    /// by their parameters (`--app A --pipeline P --param NAME=VALUE...`). Prints one line per task, in order:
    /// its id (`ID  duplicate of ID` when it was submitted before), or `error: ...`; exits 1 if any task is
    /// not queued.
    ///
    /// Every file is validated first: if any is invalid, nothing is submitted. Every task carries an
    /// idempotency key (by default derived from its content), so running the same command again queues only
    /// what is missing (see docs/cli.md).
    Submit(cmd::submit::Args),
    /// Queue depth, leases in flight, dead letters, and tasks waiting for a missing executor, per queue; in a
    /// cluster per member and in total, with work stealing (lent, stolen) and redirects. Exits 1 if a member
    /// did not answer (it is named, and the totals leave it out).
    Stats(cmd::stats::StatsArgs),
    /// Inspect and redrive dead-lettered tasks (of every member in a cluster).
    #[command(name = "dead-letter", subcommand)]
    DeadLetter(cmd::dead_letter::DeadLetterCmd),
    /// Cancel tasks: they never run (again), and a running one is stopped on its agent. Prints `ID cancelled`
    /// or `ID not found` per id (not found: unknown, or already done, dead-lettered or cancelled); exits 1 if
    /// any id was not cancelled.
    Cancel(cmd::cancel::Args),
    /// What became of tasks: state, attempts, times, flow (parent, children), and the result the agent reported
    /// (per command its exit status and the tails of its stdout and stderr). Exits 1 if an id is not found.
    Status(cmd::status::Args),
    /// Wait until tasks finish; print each outcome (and with `--progress` each change of state on stderr as it
    /// happens). Exit code: 0 all succeeded, else that of the first task (in argument order) that did not: 2
    /// failed or dead-lettered, 3 cancelled, 4 not finished in time, 1 not found.
    Wait(cmd::wait::Args),
    /// Why a task is not running now: no agent with credit or with its executors, delayed, held after a
    /// restart, ... (or how it ended).
    Why(cmd::why::Args),
    /// The flow (tree of chained tasks: `onSuccess` / `onFailure`) a task belongs to: its flow id, then the tree
    /// from its root, each task with its state and the branch of its parent that submitted it. Exits 0 once
    /// every task of the tree has succeeded, 1 otherwise.
    Flow(cmd::flow::Args),
    /// List tasks, newest first, by queue, state, key and flow (live tasks and kept outcomes, every member).
    Ls(cmd::ls::Args),
    /// Pause, resume or purge a queue on every member.
    #[command(subcommand)]
    Queue(cmd::queue::QueueCmd),
    /// Cluster membership and health.
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCmd),
    /// Applications: pipeline templates stored in the scheduler (create, put-pipeline, list, show, delete;
    /// tasks are then submitted by their parameters with `submit --app`), and the app deployer (render,
    /// apply: Kubernetes manifests for a pipeline application from an application spec, the values format of
    /// charts/pipeline-app).
    #[command(subcommand)]
    App(cmd::apps::AppCmd),
}

fn main() -> ExitCode {
    let cli: Cli = match pm_client::cli::parse_or_exit() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pmctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            eprintln!("pmctl: {msg}");
            ExitCode::from(code)
        }
    }
}

/// Runs one command.
async fn run(cli: Cli) -> Result<(), Failure> {
    let server = &cli.server;
    match &cli.cmd {
        Cmd::Submit(args) => cmd::submit::run(server, args).await,
        Cmd::Stats(args) => cmd::stats::stats(server, args).await,
        Cmd::DeadLetter(c) => cmd::dead_letter::run(server, c).await,
        Cmd::Cancel(args) => cmd::cancel::run(server, args).await,
        Cmd::Status(args) => cmd::status::run(server, args).await,
        Cmd::Wait(args) => cmd::wait::run(server, args).await,
        Cmd::Why(args) => cmd::why::run(server, args).await,
        Cmd::Flow(args) => cmd::flow::run(server, args).await,
        Cmd::Ls(args) => cmd::ls::run(server, args).await,
        Cmd::Queue(c) => cmd::queue::run(server, c).await,
        Cmd::Cluster(c) => cmd::cluster::run(server, c).await,
        Cmd::App(c) => cmd::apps::run(server, c).await,
    }
}
