//! Command-line options of the agent: [`AgentArgs`], how tasks run (shared by `pm-agent run`, `pm-agent serve`
//! and the embedded agent of `pm dev`), and [`LeaseArgs`], how the agent takes them from a scheduler (only
//! `run` and `pm dev`: `serve` has no scheduler, so its `--help` does not offer them).

use std::path::PathBuf;
use std::time::Duration;

use crate::agent::AgentConfig;
use crate::executor::Executors;
use crate::queues::QueueSpec;
use crate::runner::Runner;
use crate::task_dirs::{TaskDirs, TaskDirsMode};

/// How the agent runs tasks: where, how many at once, on which executors.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// Tasks run at once (default: the number of cores).
    #[arg(long, env = "PM_CONCURRENCY")]
    pub concurrency: Option<u32>,
    /// Where tasks run: in DIR/task-<id> (per-task), or in DIR itself (shared; see --task-dirs).
    #[arg(long, env = "PM_WORK_DIR", default_value = "./pm-work")]
    pub work_dir: PathBuf,
    /// Where each task runs (its working directory and $PIPE_DIR). `per-task`: WORK_DIR/task-<id>, tasks side
    /// by side. `shared`: WORK_DIR itself, one task at a time, emptied before each task and after a successful
    /// one (the original pod layout, where steps write to /mnt/pipe/... and read relative names); refused with
    /// --concurrency above 1, or on a directory holding other files that no agent has taken. `auto`: shared
    /// when the steps go to pod executors (--pod-dir, or NAME=unix://...) one task at a time, else per-task.
    #[arg(long, env = "PM_TASK_DIRS", value_enum, default_value_t = TaskDirsMode::Auto)]
    pub task_dirs: TaskDirsMode,
    /// Keep a task's directory after it succeeded (failed ones are always kept; in the shared layout, only
    /// until the next task starts).
    #[arg(long, env = "PM_KEEP_TASK_DIRS")]
    pub keep_task_dirs: bool,
    /// Executors this agent runs: `all` (as local processes), or a comma-separated list of `NAME` (local),
    /// `NAME=unix:///path.sock` (a `pm-agent exec` in another container) and `NAME=grpc://HOST:PORT` or
    /// `NAME=grpc+unix:///path.sock` (a server of the original executors' gRPC service); any other name fails
    /// the task. Default: the original agent's PIPELINE_AGENT__EXECUTORS__<i>__NAME/__TARGET variables when
    /// set, else `all` unless --pod-dir is given.
    #[arg(long, env = "PM_EXECUTORS")]
    pub executors: Option<String>,
    /// Results directories of chained tasks (`<work dir>/results/<id>`) older than this are removed (swept at
    /// start and every 10 minutes; `0` keeps them).
    #[arg(long, env = "PM_RESULTS_RETENTION", value_parser = parse_secs_any, default_value = "24h")]
    pub results_retention: Duration,
    /// Any executor name not in --executors runs on the `pm-agent exec` serving DIR/NAME.sock (in a pod:
    /// /mnt/pipe/.pm).
    #[arg(long, env = "PM_POD_DIR")]
    pub pod_dir: Option<PathBuf>,
    /// Bytes kept of each command's stdout and stderr in the result.
    #[arg(long, env = "PM_TAIL_BYTES", default_value_t = 4096)]
    pub tail_bytes: usize,
}

/// How the agent takes tasks from a scheduler (`pm-agent run`, `pm dev`).
#[derive(clap::Args, Debug, Clone)]
pub struct LeaseArgs {
    /// Queues to take tasks from, comma-separated: names, and patterns where `*` stands for any characters
    /// (`myapp/*`: every pipeline of the application myapp; `*`: every queue). A pattern's queues are learned
    /// from the scheduler every --queue-refresh, so new ones are served too. The concurrency is shared fairly
    /// between the queues: those with ready tasks first, each in turn. Default: `default` for `pm-agent run`,
    /// `*` for `pm dev`.
    #[arg(long, env = "PM_QUEUE")]
    pub queue: Option<String>,
    /// How often the agent asks the scheduler for its queues and their ready tasks, when it serves patterns
    /// or several queues (e.g. `500ms`, `2s`).
    #[arg(long, env = "PM_QUEUE_REFRESH", value_parser = parse_secs, default_value = "1s")]
    pub queue_refresh: Duration,
    /// Executors this agent declares to the scheduler, comma-separated: it is leased only tasks whose
    /// executors are all among them (capability routing). Default: the names of --executors when it lists
    /// them; otherwise none declared, and the agent is leased any task of its queue.
    #[arg(long, env = "PM_CAPABILITIES", value_delimiter = ',')]
    pub capabilities: Option<Vec<String>>,
    /// First retry delay after a failed task, ms (doubles per attempt, at most 300 s).
    #[arg(long, env = "PM_RETRY_BACKOFF_MS", default_value_t = 1000)]
    pub retry_backoff_ms: u64,
    /// Name of this agent in the scheduler's logs (default: pm-agent-<pid>). In a cluster it also picks the
    /// agent's home node: give each agent a stable one (e.g. the pod name).
    #[arg(long, env = "PM_CLIENT_ID")]
    pub client_id: Option<String>,
    /// Token presented to the scheduler (its agent token), if it requires one.
    #[arg(long, env = "PM_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Read the scheduler token from this file (first line; e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "PM_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Cluster: once the home node has been unreachable this long, connect to the other members in turn
    /// (e.g. `30s`), going back home when it answers again; `off` waits for the home node. Tasks that were
    /// running for the lost node are stopped (they run again when it returns).
    #[arg(long, env = "PM_FAILOVER_AFTER", value_parser = parse_failover, default_value = "5s")]
    pub failover_after: Duration,
    /// On SIGTERM the agent takes no new tasks and lets the running ones finish for this long (e.g. `25s`);
    /// then it stops them and hands them back to the scheduler, which gives them to another agent at once.
    /// Keep it under the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "PM_DRAIN_TIMEOUT", value_parser = parse_secs, default_value = "25s")]
    pub drain_timeout: Duration,
}

impl LeaseArgs {
    /// The values of an agent that leases nothing (`pm-agent serve`): no queue, no token, no capabilities.
    pub fn none() -> LeaseArgs {
        LeaseArgs {
            queue: None,
            queue_refresh: crate::credits::DEFAULT_REFRESH,
            capabilities: Some(Vec::new()),
            retry_backoff_ms: 1000,
            client_id: None,
            token: None,
            token_file: None,
            failover_after: Duration::ZERO,
            drain_timeout: Duration::ZERO,
        }
    }
}

/// Parses a duration of any length (`24h`, `7d` too).
fn parse_secs_any(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .or_else(|_| s.trim().parse::<u64>().map(Duration::from_secs))
        .map_err(|_| format!("{s:?} is not a duration like 30m, 24h or 7d"))
}

/// [`parse_secs`], or `off` (zero: no failover).
fn parse_failover(s: &str) -> Result<Duration, String> {
    if s.trim() == "off" {
        return Ok(Duration::ZERO);
    }
    parse_secs(s)
}

/// Parses `500ms`, `30s`, `5m` or a bare number of seconds.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mul) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(m) = s.strip_suffix('m') {
        (m, 60.0)
    } else {
        (s.strip_suffix('s').unwrap_or(s), 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a duration like 500ms, 30s or 5m"))?;
    if !(v * mul).is_finite() || v < 0.0 || v * mul > 86_400.0 {
        return Err(format!("{s:?} is out of range (0 to 24h)"));
    }
    Ok(Duration::from_secs_f64(v * mul))
}

impl AgentArgs {
    /// Validates the options, creates the work directory, and returns what [`crate::agent::run`] takes.
    /// `default_queue` is served when --queue is not given.
    pub fn build(self, lease: LeaseArgs, server: String, default_queue: &str) -> Result<(AgentConfig, Runner), String> {
        let queues = QueueSpec::parse(lease.queue.as_deref().unwrap_or(default_queue))?;
        if lease.queue_refresh.is_zero() {
            return Err("--queue-refresh must be above 0".into());
        }
        let executors = Executors::from_args_or_env(self.executors.as_deref(), self.pod_dir, std::env::vars_os())?;
        let capabilities = match lease.capabilities {
            Some(list) => list.into_iter().map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect(),
            None => executors.declared(),
        };
        let concurrency = self
            .concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1))
            .max(1);
        // Commands run inside the task directory and get it as $PIPE_DIR: it must be absolute.
        let work_root = std::fs::create_dir_all(&self.work_dir)
            .and_then(|()| self.work_dir.canonicalize())
            .map_err(|e| format!("--work-dir {}: {e}", self.work_dir.display()))?;
        let task_dirs = TaskDirs::open(self.task_dirs, work_root.clone(), &executors.pod_paths(), concurrency)
            .map_err(|e| e.to_string())?;
        if task_dirs.is_shared() {
            tracing::info!(dir = %work_root.display(), "tasks run one at a time in the work directory itself (shared)");
            if self.keep_task_dirs {
                tracing::warn!(
                    "--keep-task-dirs with shared task directories: a task's files (a failed task's too) are kept \
                     only until the next task starts, which empties the work directory"
                );
            }
        }
        let token = match (lease.token, &lease.token_file) {
            (Some(t), _) => t,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("--token-file {}: {e}", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
            (None, None) => String::new(),
        };
        let cfg = AgentConfig {
            token,
            server,
            queues,
            queue_refresh: lease.queue_refresh,
            concurrency,
            work_root,
            task_dirs,
            remove_task_dirs: !self.keep_task_dirs,
            retry_backoff: Duration::from_millis(lease.retry_backoff_ms),
            client_id: lease.client_id.unwrap_or_else(|| format!("pm-agent-{}", std::process::id())),
            failover_after: (!lease.failover_after.is_zero()).then_some(lease.failover_after),
            drain_timeout: lease.drain_timeout,
            tls: None,
            capabilities,
            results_retention: self.results_retention,
        };
        Ok((cfg, Runner::new(executors, self.tail_bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        lease: LeaseArgs,
    }

    fn lease(args: &[&str]) -> LeaseArgs {
        Cli::try_parse_from(std::iter::once("pm-agent").chain(args.iter().copied())).unwrap().lease
    }

    #[test]
    fn failing_over_is_on_by_default_and_can_be_turned_off() {
        assert_eq!(lease(&[]).failover_after, Duration::from_secs(5));
        assert_eq!(lease(&["--failover-after", "30s"]).failover_after, Duration::from_secs(30));
        assert_eq!(lease(&["--failover-after", "off"]).failover_after, Duration::ZERO);
        assert!(Cli::try_parse_from(["pm-agent", "--failover-after", "soon"]).is_err());
    }

    #[test]
    fn the_queue_list_and_its_refresh() {
        let l = lease(&["--queue", "a,app/*", "--queue-refresh", "250ms"]);
        assert_eq!((l.queue.as_deref(), l.queue_refresh), (Some("a,app/*"), Duration::from_millis(250)));
        assert_eq!(lease(&[]).queue, None, "each binary has its own default");
    }
}
