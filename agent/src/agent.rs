//! The agent loop: grant credits (= concurrency), run each leased task, keep its lease alive while it runs,
//! then ack with the result JSON or nack with the reason and a backoff.
//!
//! Running tasks outlive a reconnect (e.g. a scheduler restart): the client reclaims them right after the
//! handshake, listing each running task with its attempt and lease id, and each task goes on under the lease
//! id the scheduler gives back; one the scheduler refuses (another agent has it now, or it finished) is
//! stopped at once and neither acked nor nacked. A task whose lease is lost otherwise (an extend is refused as
//! stale, and no reclaim replaced that lease id) is stopped the same way. A task cancelled through the
//! scheduler (`pmctl cancel`) arrives as a revocation of its lease: it is stopped the same way too (its
//! running command's process group is killed).
//!
//! The race between a reclaim and an extend, ack or nack quoting the old lease id: the client pushes the
//! `Reclaimed` event before it writes any request queued during the reconnect, and counts those events
//! ([`Client::reclaims_delivered`]); the agent counts the ones it has handled. So when a request quoting
//! lease `L` is refused as stale, the task waits until the agent has handled every `Reclaimed` event pushed
//! so far, then reads its lease id again: a different id means the reclaim replaced `L` (retry with it, the
//! task keeps running); still `L` means the lease is really lost.
//!
//! Draining (SIGTERM, e.g. a Kubernetes scale-down): the agent withdraws its credits (`Credit{set: 0}`), so
//! the scheduler pushes it nothing new, and lets the running tasks finish and report as usual (a task pushed
//! before the scheduler saw the withdrawal runs too). Tasks still running when the drain timeout ends are
//! stopped (their process groups killed) and handed back with a nack that asks for no delay, so another
//! agent runs them at once instead of after their lease expires. Then the agent returns.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pm_client::{AgentEvent, Client, ConnectOptions, Error as ClientError, ErrorKind};
use pm_protocol::pb::{LeasedTask, NackItem};
use pm_protocol::ErrorCode;
use pm_task::pipeline::queue_or_default;
use pm_task::retry::{DefaultBackoff, RetryPolicy};

use crate::credits::{self, Event, Fair};
use crate::queues::QueueSpec;
use crate::runner::{RunDirs, Runner, TaskResult};
use crate::running::{Running, TaskLease};
use crate::tally::SUMMARY_EVERY;
use crate::task_dirs::TaskDirs;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Scheduler address.
    pub server: String,
    /// Queues to take tasks from: names and patterns ([`crate::queues`]).
    pub queues: QueueSpec,
    /// How often the queue counters are polled (patterns, or several queues; [`crate::credits::poll`]).
    pub queue_refresh: Duration,
    /// Tasks run at once (= credits granted).
    pub concurrency: u32,
    /// The work directory (absolute): the task directories, `results/`, the direct-run API's runs.
    pub work_root: PathBuf,
    /// Where each task runs in it ([`crate::task_dirs`]).
    pub task_dirs: TaskDirs,
    /// Remove a task's directory after it succeeded (shared layout: empty the work directory).
    pub remove_task_dirs: bool,
    /// First retry delay after a failure; doubles per attempt, capped at [`MAX_BACKOFF`] (a task's `retry.backoff`
    /// overrides each of the three).
    pub retry_backoff: Duration,
    /// Names this agent in the scheduler's logs.
    pub client_id: String,
    /// Token presented to the scheduler (empty: none).
    pub token: String,
    /// Cluster: fail over to the other members once the home node has been unreachable this long.
    pub failover_after: Option<Duration>,
    /// Draining: how long running tasks may go on finishing before they are stopped and handed back.
    pub drain_timeout: Duration,
    /// TLS to the scheduler (`None`: plain TCP).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Executors declared to the scheduler (capability routing; empty: leased any task of the queue).
    pub capabilities: Vec<String>,
    /// Results directories of chained tasks older than this are removed (zero: kept).
    pub results_retention: Duration,
}

/// Default of [`AgentConfig::drain_timeout`]: under Kubernetes' default grace period of 30 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// Longest wait for the nacks of the tasks handed back at the end of a drain.
const HAND_BACK_PATIENCE: Duration = Duration::from_secs(5);
/// A draining agent with nothing running leaves once nothing has arrived for this long.
const DRAIN_SETTLE: Duration = Duration::from_millis(250);
/// The reason a task handed back by a draining agent carries.
pub const HANDED_BACK: &str = "handed back: the agent was shutting down";

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

/// How long an ack or nack is retried while the scheduler is unreachable (a reconnect reclaims the task
/// first, so the retry quotes the new lease id). Past it the task is left to be redelivered.
const REPORT_PATIENCE: Duration = Duration::from_secs(60);

/// Logged when a finished task's ack or nack is given up because a reconnect's reclaim was refused.
const NOT_OURS: &str =
    "not reported: after a reconnect the scheduler no longer has this task for us (already acked, or given to another agent)";

/// Runs until the lease stream ends.
pub async fn run(cfg: AgentConfig, runner: Runner) -> Result<(), AgentError> {
    run_until(cfg, runner, std::future::pending()).await
}

/// Runs until the lease stream ends, or until `drain` resolves: then drains (see the module doc) and
/// returns `Ok` once every running task has finished and reported, or has been handed back.
pub async fn run_until(cfg: AgentConfig, runner: Runner, drain: impl Future<Output = ()>) -> Result<(), AgentError> {
    let running = Running::default();
    let sweeper = (!cfg.results_retention.is_zero())
        .then(|| tokio::spawn(sweep_results(cfg.work_root.join("results"), cfg.results_retention)));
    let _sweeper = AbortOnDrop(sweeper);
    // One INFO line a minute about finished tasks; each task's own line is at DEBUG.
    let tally = running.tally.clone();
    let _summary = AbortOnDrop(Some(tokio::spawn(async move { tally.log_every(SUMMARY_EVERY).await })));
    let provider = {
        let running = running.clone();
        Arc::new(move || running.reclaim_items())
    };
    let mut opts = ConnectOptions::agent()
        .client_id(cfg.client_id.clone())
        .token(cfg.token.clone())
        .queues(cfg.queues.to_string().split(',').map(String::from).collect())
        .capabilities(cfg.capabilities.clone())
        .reclaim(provider);
    if let Some(tls) = &cfg.tls {
        opts = opts.tls(tls.clone());
    }
    // A cluster: the agent's home is the member its id hashes to (stable across restarts, for reclaims).
    let seeds: Vec<String> = cfg.server.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    let mut nodes = pm_client::agent_nodes(&seeds, opts.clone(), &cfg.client_id).await?;
    let members = nodes.clone();
    let home = nodes.remove(0);
    let (client, mut leases) = match cfg.failover_after {
        None => Client::connect_agent(&home, opts).await?,
        Some(after) => {
            // Home down at startup: the first other member that answers (the reconnect loop tries home first
            // again whenever this connection breaks).
            let candidates: Vec<String> = std::iter::once(home.clone()).chain(nodes).collect();
            let mut last = None;
            let mut connected = None;
            for addr in &candidates {
                let others = candidates.iter().filter(|a| *a != addr).cloned().collect();
                match Client::connect_agent(addr, opts.clone().failover(others, after)).await {
                    Ok(c) => {
                        connected = Some(c);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            match (connected, last) {
                (Some(c), _) => c,
                (None, Some(e)) => return Err(e.into()),
                (None, None) => return Err(AgentError::StreamEnded),
            }
        }
    };
    // The credits' single owner; its first grants are sent here, so a refusal fails the start.
    let mut fair = Fair::new(cfg.concurrency, cfg.queues.names());
    credits::send(&client, fair.rebalance()).await?;
    let (credit_events, events) = tokio::sync::mpsc::unbounded_channel();
    let _credits = AbortOnDrop(Some(tokio::spawn(credits::drive(client.clone(), fair, events))));
    let _poller = AbortOnDrop((cfg.queues.has_patterns() || cfg.queues.names().len() > 1).then(|| {
        let mut opts = ConnectOptions::agent().client_id(format!("{}-queues", cfg.client_id)).token(cfg.token.clone());
        if let Some(tls) = &cfg.tls {
            opts = opts.tls(tls.clone());
        }
        let (spec, every, tx) = (cfg.queues.clone(), cfg.queue_refresh, credit_events.clone());
        tokio::spawn(credits::poll(members, opts, spec, every, tx))
    }));
    tracing::info!(server = %home, queues = %cfg.queues, concurrency = cfg.concurrency, "agent ready");
    let (cfg, runner) = (Arc::new(cfg), Arc::new(runner));
    let mut drain = std::pin::pin!(drain);
    // Draining: when the drain timeout ends (then: when the hand-back's nacks are given up on).
    let mut deadline = None;
    let mut handed_back = false;
    // Draining with nothing running: leave once no task has arrived for DRAIN_SETTLE (a task pushed before the
    // scheduler saw the withdrawal may still be on its way).
    let mut settled_at = None;
    loop {
        let event = tokio::select! {
            // Events first: a task that arrived is registered before the agent decides it is idle.
            biased;
            event = leases.next() => event,
            () = &mut drain, if deadline.is_none() => {
                deadline = Some(tokio::time::Instant::now() + cfg.drain_timeout);
                let n = running.len();
                tracing::info!(running = n, timeout = ?cfg.drain_timeout, "draining: taking no new tasks");
                let _ = credit_events.send(Event::Drain);
                continue;
            }
            () = running.idle(), if deadline.is_some() && settled_at.is_none() => {
                settled_at = Some(tokio::time::Instant::now() + DRAIN_SETTLE);
                continue;
            }
            () = sleep_until(settled_at), if settled_at.is_some() => {
                if running.len() == 0 {
                    tracing::info!("drained: every running task finished");
                    return Ok(());
                }
                settled_at = None;
                continue;
            }
            () = sleep_until(deadline), if deadline.is_some() => {
                if handed_back {
                    tracing::warn!(tasks = running.len(), "hand-back not confirmed in time; the scheduler redelivers them");
                    return Ok(());
                }
                let stopped = running.hand_back();
                tracing::warn!(tasks = stopped, "drain timeout: stopping the running tasks and handing them back");
                handed_back = true;
                deadline = Some(tokio::time::Instant::now() + HAND_BACK_PATIENCE);
                continue;
            }
        };
        let Some(event) = event else { break };
        match event {
            AgentEvent::Leased(task) => {
                // Registered before the task starts: a revocation always arrives after its lease.
                let lease = running.start(&task);
                let _ = credit_events.send(Event::Leased(queue_or_default(&task.queue).to_string()));
                let credit_events = credit_events.clone();
                tokio::spawn(handle(
                    client.clone(),
                    cfg.clone(),
                    runner.clone(),
                    task,
                    lease,
                    running.clone(),
                    credit_events,
                ));
            }
            AgentEvent::Revoked(r) => {
                if running.revoke(r.task_id, r.lease_id) {
                    tracing::info!(task_id = r.task_id, lease_id = r.lease_id, reason = %r.reason, "revoked: stopping the task");
                } else {
                    tracing::debug!(
                        task_id = r.task_id,
                        lease_id = r.lease_id,
                        "revocation of a task no longer running"
                    );
                }
            }
            AgentEvent::Reclaimed(results) => running.reclaimed(results),
        }
    }
    Err(AgentError::StreamEnded)
}

/// Sleeps until `deadline`; never resolves without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// Removes the results directories under `root` last modified longer than `keep` ago, now and every 10 minutes.
async fn sweep_results(root: std::path::PathBuf, keep: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        sweep_once(&root, keep).await;
    }
}

/// One sweep of [`sweep_results`]; returns how many directories it removed.
async fn sweep_once(root: &std::path::Path, keep: Duration) -> usize {
    let mut removed = 0;
    let Ok(mut dirs) = tokio::fs::read_dir(root).await else { return 0 };
    while let Ok(Some(d)) = dirs.next_entry().await {
        let age = d.metadata().await.ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
        if age.is_some_and(|age| age > keep) {
            match tokio::fs::remove_dir_all(d.path()).await {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(dir = %d.path().display(), "cannot remove an old results directory: {e}"),
            }
        }
    }
    removed
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

async fn handle(
    client: Client,
    cfg: Arc<AgentConfig>,
    runner: Arc<Runner>,
    leased: LeasedTask,
    lease: Arc<TaskLease>,
    running: Running,
    credit_events: tokio::sync::mpsc::UnboundedSender<Event>,
) {
    let (task_id, attempt) = (leased.task_id, leased.attempt);
    let duration = Duration::from_millis(leased.deadline_unix_ms.saturating_sub(now_ms()).max(300));
    let keeper = tokio::spawn(keep_alive(client.clone(), running.clone(), lease.clone(), duration));
    // A task that is not a valid pipeline fails the same way on every agent: it is not retried.
    let mut policy = RetryPolicy::default();
    let (result, mut permanent, mut dir) = match pm_task::pipeline::parse_task(&leased.payload) {
        // Held until the task has reported: in the shared layout the next task waits for it.
        Ok(task) => {
            policy = task.retry.clone();
            match cfg.task_dirs.enter(task_id, task.resume).await {
                Ok(dir) => {
                    let dirs = RunDirs { dir: dir.path(), work_root: cfg.task_dirs.root() };
                    (runner.run_in(&task, dirs, task_id, &lease.stop, None).await, false, Some(dir))
                }
                Err(e) => (TaskResult::failed(format!("cannot prepare the task directory: {e}")), false, None),
            }
        }
        Err(e) => (TaskResult::failed(format!("invalid task: {e}")), true, None),
    };
    lease.reporting.store(true, Ordering::SeqCst);
    keeper.abort();
    if lease.revoked.is_cancelled() {
        tracing::warn!(
            task_id,
            lease_id = lease.lease_id(),
            "task cancelled by the scheduler: stopped, neither acked nor nacked"
        );
    } else if lease.handed_back.load(Ordering::SeqCst) && !result.ok {
        hand_back(&client, &lease).await;
    } else if lease.stop.is_cancelled() && !lease.handed_back.load(Ordering::SeqCst) {
        tracing::warn!(task_id, lease_id = lease.lease_id(), "lease lost: task stopped, another agent owns it now");
    } else if result.ok {
        let body = Bytes::from(serde_json::to_vec(&result).unwrap_or_default());
        let ack = |lease_id| client.ack(vec![(lease_id, body.clone())]);
        match report(&client, &running, &lease, ack).await {
            Ok(ErrorCode::Ok) => {
                tracing::debug!(task_id, attempt, "task done");
                running.tally.done();
                if let Some(dir) = dir.take().filter(|_| cfg.remove_task_dirs) {
                    dir.remove().await;
                }
            }
            _ if lease.stop.is_cancelled() => tracing::warn!(task_id, "{NOT_OURS}"),
            Ok(code) => tracing::warn!(task_id, "ack refused: {}", code.as_str_name()),
            Err(e) => tracing::warn!(task_id, "ack failed (the task will be redelivered): {e}"),
        }
    } else {
        let mut reason = result.error.clone().unwrap_or_else(|| "failed".into());
        if let Some(code) = result.failed_exit_code().filter(|&c| policy.gives_up_on(c)) {
            permanent = true;
            reason = format!("exit code {code} is not retried (retry.nonRetryableExitCodes): {reason}");
        }
        let defaults = DefaultBackoff { initial: cfg.retry_backoff, max: MAX_BACKOFF, multiplier: 2.0 };
        let backoff = policy.delay(attempt, defaults);
        tracing::debug!(task_id, attempt, "task failed: {reason}");
        let body = Bytes::from(serde_json::to_vec(&result).unwrap_or_default());
        let nack = |lease_id| {
            let item = NackItem {
                lease_id,
                retry_after_ms: backoff.as_millis() as u64,
                reason: reason.clone(),
                released: false,
                result: body.clone(),
                fail: permanent,
            };
            client.nack(vec![item])
        };
        match report(&client, &running, &lease, nack).await {
            Ok(ErrorCode::Ok) => running.tally.failed(task_id, &reason),
            _ if lease.stop.is_cancelled() => tracing::warn!(task_id, "{NOT_OURS}"),
            Ok(code) => tracing::warn!(task_id, "nack refused: {}", code.as_str_name()),
            Err(e) => tracing::warn!(task_id, "nack failed (the task will be redelivered when its lease ends): {e}"),
        }
    }
    // Kept (a failure, or --keep-task-dirs): the shared directory's turn passes to the next task.
    drop(dir);
    running.finish(&lease);
    // Its slot is free again: the credits' owner grants it to the queue whose turn it is (none while draining).
    let _ = credit_events.send(Event::Finished(queue_or_default(&leased.queue).to_string()));
}

/// Nacks a task stopped by a drain's timeout, asking for no delay: another agent takes it at once. (It counts
/// as an attempt, as a disconnect does: only scheduler nodes may release a delivery for free.)
async fn hand_back(client: &Client, lease: &TaskLease) {
    let item = NackItem {
        lease_id: lease.lease_id(),
        retry_after_ms: 0,
        reason: HANDED_BACK.into(),
        released: false,
        ..Default::default()
    };
    match client.nack(vec![item]).await {
        Ok(codes) if codes.first() == Some(&ErrorCode::Ok) => {
            tracing::info!(task_id = lease.task_id, "handed back to the scheduler");
        }
        Ok(codes) => tracing::warn!(task_id = lease.task_id, "hand-back refused: {codes:?}"),
        Err(e) => tracing::warn!(task_id = lease.task_id, "hand-back failed (redelivered when the lease ends): {e}"),
    }
}

/// Sends an ack or nack (`op`) quoting the task's current lease id. Refused as stale under an id a reclaim
/// has replaced meanwhile: sent again with the new id. The connection broke: sent again once it is back (its
/// reconnect reclaims the task first), for up to [`REPORT_PATIENCE`], unless the task is lost meanwhile.
async fn report<F, Fut>(client: &Client, running: &Running, lease: &TaskLease, op: F) -> Result<ErrorCode, ClientError>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<Vec<ErrorCode>, ClientError>>,
{
    let give_up = tokio::time::Instant::now() + REPORT_PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        let lease_id = lease.lease_id();
        match op(lease_id).await {
            Ok(codes) => {
                let code = codes.first().copied().unwrap_or(ErrorCode::Internal);
                if code == ErrorCode::StaleLease
                    && tokio::time::Instant::now() < give_up
                    && running.replacement(client.reclaims_delivered(), lease, lease_id).await.is_some()
                {
                    continue;
                }
                return Ok(code);
            }
            Err(e)
                if matches!(e.kind(), ErrorKind::Disconnected | ErrorKind::NotSent | ErrorKind::Timeout)
                    && tokio::time::Instant::now() < give_up
                    && !lease.stop.is_cancelled() =>
            {
                tracing::debug!(task_id = lease.task_id, "scheduler unreachable ({e}); trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Extends the lease every third of its length while the task runs; stops the run if the lease is lost.
async fn keep_alive(client: Client, running: Running, lease: Arc<TaskLease>, duration: Duration) {
    let period = (duration / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let lease_id = lease.lease_id();
        match client.extend(vec![lease_id], 0).await {
            Ok(codes) if codes.first() == Some(&ErrorCode::StaleLease) => {
                // Quoted an id a reconnect's reclaim has replaced meanwhile? Then the new lease is fresh; go on.
                if running.replacement(client.reclaims_delivered(), &lease, lease_id).await.is_none() {
                    lease.stop.cancel();
                    return;
                }
            }
            Ok(_) => {}
            // Disconnected: keep trying; the reconnect reclaims the task, or the next extend says it is lost.
            Err(e) => tracing::debug!(lease_id, "extend failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn old_results_directories_are_swept() {
        let root = tempfile::tempdir().unwrap();
        for id in ["1", "2"] {
            std::fs::create_dir_all(root.path().join(id)).unwrap();
            std::fs::write(root.path().join(id).join("f"), "x").unwrap();
        }
        let old = std::time::SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::open(root.path().join("1")).unwrap().set_modified(old).unwrap();
        assert_eq!(sweep_once(root.path(), Duration::from_secs(3600)).await, 1);
        assert!(!root.path().join("1").exists() && root.path().join("2/f").exists());
        assert_eq!(sweep_once(&root.path().join("missing"), Duration::ZERO).await, 0);
    }
}
