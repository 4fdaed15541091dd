//! The running tasks of the agent loop ([`crate::agent`]): each one's lease ([`TaskLease`]: the lease id to
//! quote, replaced by a reconnect's reclaim; the tokens that stop its run), and the registry of them all
//! ([`Running`]), which the event loop, each task's keep-alive and its final ack or nack share. See the module
//! doc of [`crate::agent`] for the race between a reclaim and a request quoting the old lease id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pm_protocol::pb::{LeasedTask, ReclaimItem, ReclaimResult};
use pm_protocol::ErrorCode;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::tally::Tally;

/// Longest wait for the agent to handle the reclaims pushed before a stale-lease reply (it is only ever behind
/// by the events already queued for it).
const RECLAIM_WAIT: Duration = Duration::from_secs(10);
/// One running task's lease, shared by its run, its keep-alive, its final ack or nack, and the event loop.
#[derive(Debug)]
pub(crate) struct TaskLease {
    pub(crate) task_id: u64,
    pub(crate) attempt: u32,
    /// The lease id to quote: replaced when a reconnect reclaims the task.
    pub(crate) lease_id: AtomicU64,
    /// Cancelled when the scheduler revokes the task (it was cancelled).
    pub(crate) revoked: CancellationToken,
    /// Stops the run: cancelled when the task is not this agent's any more (lease lost, reclaim refused), and
    /// when it is revoked (a child of `revoked`), and when a drain hands it back.
    pub(crate) stop: CancellationToken,
    /// Set (before `stop` is cancelled) when a drain's timeout hands the task back.
    pub(crate) handed_back: AtomicBool,
    /// Set once the run is over and its ack or nack is being sent: a drain's timeout leaves it alone.
    pub(crate) reporting: AtomicBool,
}

impl TaskLease {
    pub(crate) fn lease_id(&self) -> u64 {
        self.lease_id.load(Ordering::SeqCst)
    }
}

/// The running tasks by task id, and how many `Reclaimed` events the event loop has handled.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    tasks: Arc<Mutex<HashMap<u64, Arc<TaskLease>>>>,
    reclaims: Arc<watch::Sender<u64>>,
    /// How many tasks are registered (updated with `tasks`): a drain waits for 0.
    count: Arc<watch::Sender<usize>>,
    /// Finished tasks, for the summary logged every minute.
    pub(crate) tally: Arc<Tally>,
}

impl Default for Running {
    fn default() -> Self {
        Running {
            tasks: Arc::default(),
            reclaims: Arc::new(watch::Sender::new(0)),
            count: Arc::new(watch::Sender::new(0)),
            tally: Arc::default(),
        }
    }
}

impl Running {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<TaskLease>>> {
        // The map stays consistent whatever a panicking holder did: every operation is a single insert/remove.
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a task that is about to run.
    pub(crate) fn start(&self, task: &LeasedTask) -> Arc<TaskLease> {
        let revoked = CancellationToken::new();
        let lease = Arc::new(TaskLease {
            task_id: task.task_id,
            attempt: task.attempt,
            lease_id: AtomicU64::new(task.lease_id),
            stop: revoked.child_token(),
            revoked,
            handed_back: AtomicBool::new(false),
            reporting: AtomicBool::new(false),
        });
        let mut map = self.map();
        map.insert(task.task_id, lease.clone());
        self.count.send_replace(map.len());
        lease
    }

    /// How many tasks are running (or reporting).
    pub(crate) fn len(&self) -> usize {
        *self.count.borrow()
    }

    /// Resolves once no task is running or reporting.
    pub(crate) async fn idle(&self) {
        let mut count = self.count.subscribe();
        // The sender lives in `self`: `wait_for` cannot fail while we hold it.
        let _ = count.wait_for(|n| *n == 0).await;
    }

    /// A drain's timeout: stops every task still running (not those already reporting) so that it is handed
    /// back. Returns how many.
    pub(crate) fn hand_back(&self) -> usize {
        let map = self.map();
        let mut n = 0;
        for lease in map.values() {
            if !lease.reporting.load(Ordering::SeqCst) {
                lease.handed_back.store(true, Ordering::SeqCst);
                lease.stop.cancel();
                n += 1;
            }
        }
        n
    }

    /// Cancels the task if it runs under `lease_id`; false if it is not running (any more).
    pub(crate) fn revoke(&self, task_id: u64, lease_id: u64) -> bool {
        match self.map().get(&task_id) {
            Some(lease) if lease.lease_id() == lease_id => {
                lease.revoked.cancel();
                true
            }
            _ => false,
        }
    }

    /// Forgets a task once it ended and its ack or nack is settled.
    pub(crate) fn finish(&self, lease: &Arc<TaskLease>) {
        let mut map = self.map();
        // A newer delivery of the same task may have replaced this entry.
        if map.get(&lease.task_id).is_some_and(|l| Arc::ptr_eq(l, lease)) {
            map.remove(&lease.task_id);
            self.count.send_replace(map.len());
        }
    }

    /// What a reconnect reclaims: every task still ours (running, or finished with its ack or nack pending).
    pub(crate) fn reclaim_items(&self) -> Vec<ReclaimItem> {
        self.map()
            .values()
            .filter(|l| !l.stop.is_cancelled())
            .map(|l| ReclaimItem { task_id: l.task_id, attempt: l.attempt, lease_id: l.lease_id() })
            .collect()
    }

    /// Applies a reclaim's results: OK swaps in the new lease id; anything else stops the task.
    pub(crate) fn reclaimed(&self, results: Vec<ReclaimResult>) {
        {
            let map = self.map();
            for r in results {
                let Some(lease) = map.get(&r.task_id) else { continue };
                let code = ErrorCode::try_from(r.code).unwrap_or(ErrorCode::Internal);
                if code == ErrorCode::Ok {
                    lease.lease_id.store(r.lease_id, Ordering::SeqCst);
                    tracing::info!(
                        task_id = r.task_id,
                        lease_id = r.lease_id,
                        "reclaimed after a reconnect: keeps running"
                    );
                } else {
                    lease.stop.cancel();
                    tracing::warn!(
                        task_id = r.task_id,
                        code = code.as_str_name(),
                        "not reclaimed after a reconnect: stopping it (neither acked nor nacked)"
                    );
                }
            }
        }
        self.reclaims.send_modify(|n| *n += 1);
    }

    /// `stale` was refused as STALE_LEASE, and `pushed` is [`pm_client::Client::reclaims_delivered`] read after that
    /// reply arrived. Waits until that many reclaims are handled (so one that preceded the refused request on
    /// its connection is), then returns the lease id that replaced `stale`, or `None` if none did: the lease
    /// is lost.
    pub(crate) async fn replacement(&self, pushed: u64, lease: &TaskLease, stale: u64) -> Option<u64> {
        let mut handled = self.reclaims.subscribe();
        if tokio::time::timeout(RECLAIM_WAIT, handled.wait_for(|n| *n >= pushed)).await.is_err() {
            tracing::warn!(task_id = lease.task_id, "reclaim results not handled in time; taking the lease as lost");
            return None;
        }
        let current = lease.lease_id();
        (current != stale && !lease.stop.is_cancelled()).then_some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leased(task_id: u64, lease_id: u64) -> LeasedTask {
        LeasedTask { task_id, lease_id, attempt: 2, ..Default::default() }
    }

    fn result(task_id: u64, code: ErrorCode, lease_id: u64) -> ReclaimResult {
        ReclaimResult { task_id, code: code as i32, lease_id, deadline_unix_ms: 0 }
    }

    #[tokio::test]
    async fn a_stale_reply_waits_for_the_reclaim_pushed_before_it() {
        let running = Running::default();
        let (a, b) = (running.start(&leased(1, 10)), running.start(&leased(2, 20)));
        let items = running.reclaim_items();
        assert_eq!(items.len(), 2);
        assert!(items.iter().any(|i| (i.task_id, i.attempt, i.lease_id) == (1, 2, 10)));

        // The client pushed one Reclaimed event (before the refused extend went out); the event loop handles
        // it a little later: task 1 is ours again as lease 11, task 2 is someone else's.
        let late = running.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            late.reclaimed(vec![result(1, ErrorCode::Ok, 11), result(2, ErrorCode::StaleLease, 0)]);
        });
        assert_eq!(running.replacement(1, &a, 10).await, Some(11), "retry with the new id, keep running");
        assert_eq!(a.lease_id(), 11);
        assert!(!a.stop.is_cancelled());
        assert_eq!(running.replacement(1, &b, 20).await, None, "not reclaimed: lost");
        assert!(b.stop.is_cancelled(), "a refused reclaim stops the run");
        assert!(!b.revoked.is_cancelled());
        // A stopped task is not reclaimed again; revocations name the current lease.
        assert_eq!(running.reclaim_items().iter().map(|i| i.task_id).collect::<Vec<_>>(), vec![1]);
        assert!(!running.revoke(1, 10));
        assert!(running.revoke(1, 11));
        assert!(a.stop.is_cancelled());
    }

    #[tokio::test]
    async fn a_stale_reply_with_no_reclaim_pending_means_the_lease_is_lost() {
        let running = Running::default();
        let a = running.start(&leased(1, 10));
        assert_eq!(running.replacement(0, &a, 10).await, None);
        // An id already replaced before the reply was read: retry at once with the new one.
        running.reclaimed(vec![result(1, ErrorCode::Ok, 12)]);
        assert_eq!(running.replacement(1, &a, 10).await, Some(12));
        // A newer delivery of the same task replaces the entry; the old run's finish leaves it alone.
        let newer = running.start(&leased(1, 30));
        running.finish(&a);
        assert_eq!(running.reclaim_items().iter().map(|i| i.lease_id).collect::<Vec<_>>(), vec![30]);
        running.finish(&newer);
        assert!(running.reclaim_items().is_empty());
    }
}
