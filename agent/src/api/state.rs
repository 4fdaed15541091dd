//! What both protocols of the direct-run API share: `AppState` (the runner, the run limit, the token) and
//! `AppState::start_run`, which starts a run on its own task. Invariant: at most `max_runs` runs at once,
//! and a run whose client goes away (its `StartedRun::guard` dropped) is cancelled, its command's process
//! group killed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::runner::{RunDirs, RunEvent, Runner, TaskResult};
use crate::task_dirs::task_dir_named;

/// What both protocols of the API share: how to run, how many at once, and the token.
pub(crate) struct AppState {
    runner: Arc<Runner>,
    work_root: PathBuf,
    remove_dirs: bool,
    /// The bearer token run requests must carry, if any.
    pub(crate) token: Option<String>,
    runs: Arc<Semaphore>,
    max_runs: usize,
    next: AtomicU64,
    metrics: Option<PrometheusHandle>,
}

/// What the API needs from the agent.
pub struct ApiContext {
    /// Runs the pipelines.
    pub runner: Arc<Runner>,
    /// Direct runs use `work_root/run-<id>`.
    pub work_root: PathBuf,
    /// Remove a run's directory after it succeeded.
    pub remove_dirs: bool,
    /// Renders `/metrics`; `None` answers 404 there.
    pub metrics: Option<PrometheusHandle>,
}

/// A run started by `AppState::start_run`.
pub(crate) struct StartedRun {
    /// Resolves to the result.
    pub(crate) handle: tokio::task::JoinHandle<TaskResult>,
    /// Its events, ending with [`RunEvent::Result`] (empty unless streaming).
    pub(crate) events: mpsc::Receiver<RunEvent>,
    /// Dropping it (the client went away) cancels the run.
    pub(crate) guard: tokio_util::sync::DropGuard,
}

impl AppState {
    /// The state of one endpoint: `max_runs` runs at once, each behind `token` when there is one.
    pub(crate) fn new(ctx: ApiContext, token: Option<String>, max_runs: usize) -> AppState {
        AppState {
            runner: ctx.runner,
            work_root: ctx.work_root,
            remove_dirs: ctx.remove_dirs,
            token,
            runs: Arc::new(Semaphore::new(max_runs)),
            max_runs,
            next: AtomicU64::new(0),
            metrics: ctx.metrics,
        }
    }

    /// The runner (its executors answer `/readyz`).
    pub(crate) fn runner(&self) -> &Runner {
        &self.runner
    }

    /// Renders `/metrics`, when metrics are enabled.
    pub(crate) fn metrics(&self) -> Option<&PrometheusHandle> {
        self.metrics.as_ref()
    }

    /// Starts `task` on its own tokio task, or says why not (too many runs). The run goes on its own task so
    /// that a client that disconnects drops the guard, which cancels the run, and the runner still kills the
    /// command's process group on the way out.
    pub(crate) fn start_run(&self, task: pm_task::pipeline::Task, streaming: bool) -> Result<StartedRun, String> {
        let Ok(permit) = self.runs.clone().try_acquire_owned() else {
            return Err(format!("busy: {} runs in progress (--api-max-runs)", self.max_runs));
        };
        // Unique across restarts: milliseconds since the epoch, then a counter.
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let id = now_ms.saturating_mul(1000) + self.next.fetch_add(1, Ordering::Relaxed) % 1000;
        let dir = task_dir_named(&self.work_root, &format!("run-{id}"));
        let cancel = CancellationToken::new();
        let guard = cancel.clone().drop_guard();
        let (tx, events) = mpsc::channel::<RunEvent>(64);
        let (runner, remove, work_root) = (self.runner.clone(), self.remove_dirs, self.work_root.clone());
        let handle = tokio::spawn(async move {
            let dirs = RunDirs { dir: &dir, work_root: &work_root };
            let result = runner.run_in(&task, dirs, id, &cancel, streaming.then_some(&tx)).await;
            if result.ok && remove {
                let _ = tokio::fs::remove_dir_all(&dir).await;
            }
            drop(permit);
            if streaming {
                let stall = runner.stream_stall;
                let _ = tokio::time::timeout(stall, tx.send(RunEvent::Result { result: result.clone() })).await;
            }
            result
        });
        Ok(StartedRun { handle, events, guard })
    }
}
