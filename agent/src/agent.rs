//! The agent loop: grant credits (= concurrency), run each leased task, keep its lease alive while it runs,
//! then ack with the result JSON or nack with the reason and a backoff.
//!
//! A task whose lease is lost (an extend is refused as stale: it expired, or the scheduler restarted) is
//! stopped at once and neither acked nor nacked: another agent owns it now. A task cancelled through the
//! scheduler (`pmctl cancel`) arrives as a revocation of its lease: it is stopped the same way (its running
//! command's process group is killed) and neither acked nor nacked.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pm_client::{AgentEvent, Client, ConnectOptions, Error as ClientError};
use pm_protocol::pb::{LeasedTask, NackItem};
use pm_protocol::ErrorCode;
use tokio_util::sync::CancellationToken;

use crate::runner::{task_dir, Runner, TaskResult};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Scheduler address.
    pub server: String,
    /// Queue to take tasks from.
    pub queue: String,
    /// Tasks run at once (= credits granted).
    pub concurrency: u32,
    /// Each task runs in `work_root/task-<id>`.
    pub work_root: PathBuf,
    /// Remove a task's directory after it succeeded.
    pub remove_task_dirs: bool,
    /// First retry delay after a failure; doubles per attempt, capped at [`MAX_BACKOFF`].
    pub retry_backoff: Duration,
    /// Names this agent in the scheduler's logs.
    pub client_id: String,
}

/// Longest retry delay asked for.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Could not connect or talk to the scheduler.
    #[error("scheduler {0}")]
    Client(#[from] ClientError),
    /// The scheduler closed the lease stream for good.
    #[error("the scheduler closed the lease stream")]
    StreamEnded,
}

/// Runs until the lease stream ends.
pub async fn run(cfg: AgentConfig, runner: Runner) -> Result<(), AgentError> {
    let opts = ConnectOptions::agent().client_id(cfg.client_id.clone()).queues(vec![cfg.queue.clone()]);
    let (client, mut leases) = Client::connect_agent(&cfg.server, opts).await?;
    client.credit(&cfg.queue, cfg.concurrency).await?;
    tracing::info!(server = %cfg.server, queue = %cfg.queue, concurrency = cfg.concurrency, "agent ready");
    let (cfg, runner) = (Arc::new(cfg), Arc::new(runner));
    let running = Running::default();
    while let Some(event) = leases.next().await {
        match event {
            AgentEvent::Leased(task) => {
                // Registered before the task starts: a revocation always arrives after its lease.
                let revoked = running.start(task.lease_id);
                tokio::spawn(handle(client.clone(), cfg.clone(), runner.clone(), task, revoked, running.clone()));
            }
            AgentEvent::Revoked(r) => {
                if running.revoke(r.lease_id) {
                    tracing::info!(task_id = r.task_id, lease_id = r.lease_id, reason = %r.reason, "revoked: stopping the task");
                } else {
                    tracing::debug!(
                        task_id = r.task_id,
                        lease_id = r.lease_id,
                        "revocation of a task no longer running"
                    );
                }
            }
        }
    }
    Err(AgentError::StreamEnded)
}

/// The running tasks' revocation tokens, by lease id.
#[derive(Debug, Clone, Default)]
struct Running(Arc<Mutex<HashMap<u64, CancellationToken>>>);

impl Running {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CancellationToken>> {
        // The map stays consistent whatever a panicking holder did: every operation is a single insert/remove.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a task that is about to run; returns the token its revocation cancels.
    fn start(&self, lease_id: u64) -> CancellationToken {
        let token = CancellationToken::new();
        self.map().insert(lease_id, token.clone());
        token
    }

    /// Cancels the task leased as `lease_id`; false if it is not running (any more).
    fn revoke(&self, lease_id: u64) -> bool {
        match self.map().remove(&lease_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Forgets a task that ended.
    fn finish(&self, lease_id: u64) {
        self.map().remove(&lease_id);
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

async fn handle(
    client: Client,
    cfg: Arc<AgentConfig>,
    runner: Arc<Runner>,
    leased: LeasedTask,
    revoked: CancellationToken,
    running: Running,
) {
    let (task_id, lease_id, attempt) = (leased.task_id, leased.lease_id, leased.attempt);
    let lease = Duration::from_millis(leased.deadline_unix_ms.saturating_sub(now_ms()).max(300));
    // Cancelled when the lease is lost (by the keeper) or revoked (through `revoked`, its parent).
    let cancel = revoked.child_token();
    let keeper = tokio::spawn(keep_alive(client.clone(), lease_id, lease, cancel.clone()));
    let dir = task_dir(&cfg.work_root, task_id);
    let result = match pm_protocol::pipeline::parse_task(&leased.payload) {
        Ok(task) => runner.run(&task, &dir, task_id, &cancel, None).await,
        Err(e) => TaskResult::failed(format!("invalid task: {e}")),
    };
    keeper.abort();
    running.finish(lease_id);
    if revoked.is_cancelled() {
        tracing::warn!(task_id, lease_id, "task cancelled by the scheduler: stopped, neither acked nor nacked");
    } else if cancel.is_cancelled() {
        tracing::warn!(task_id, lease_id, "lease lost: task stopped, another agent owns it now");
    } else if result.ok {
        let body = serde_json::to_vec(&result).unwrap_or_default();
        match client.ack(vec![(lease_id, Bytes::from(body))]).await {
            Ok(codes) if codes.first() == Some(&ErrorCode::Ok) => {
                tracing::info!(task_id, attempt, "task done");
                if cfg.remove_task_dirs {
                    let _ = tokio::fs::remove_dir_all(&dir).await;
                }
            }
            Ok(codes) => tracing::warn!(task_id, "ack refused: {codes:?}"),
            Err(e) => tracing::warn!(task_id, "ack failed (the task will be redelivered): {e}"),
        }
    } else {
        let reason = result.error.clone().unwrap_or_else(|| "failed".into());
        let backoff = cfg.retry_backoff.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(MAX_BACKOFF);
        tracing::info!(task_id, attempt, "task failed: {reason}");
        let item = NackItem { lease_id, retry_after_ms: backoff.as_millis() as u64, reason };
        if let Err(e) = client.nack(vec![item]).await {
            tracing::warn!(task_id, "nack failed (the task will be redelivered when its lease ends): {e}");
        }
    }
    if let Err(e) = client.credit(&cfg.queue, 1).await {
        tracing::warn!("could not grant a credit back: {e}");
    }
}

/// Extends the lease every third of its length while the task runs; cancels the run if the lease is lost.
async fn keep_alive(client: Client, lease_id: u64, lease: Duration, cancel: CancellationToken) {
    let period = (lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        match client.extend(vec![lease_id], 0).await {
            Ok(codes) if codes.first() == Some(&ErrorCode::StaleLease) => {
                cancel.cancel();
                return;
            }
            Ok(_) => {}
            // Disconnected: keep trying; if the lease ends meanwhile the next extend says so.
            Err(e) => tracing::debug!(lease_id, "extend failed: {e}"),
        }
    }
}
