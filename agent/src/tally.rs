//! [`Tally`]: how many tasks the agent finished, for one INFO line per minute instead of one per task.
//!
//! At thousands of tasks per second a line per task is most of an agent's log, so each task's outcome is
//! logged at DEBUG (`RUST_LOG=debug` shows them) and [`Tally::log_every`] writes a summary at INFO:
//! `tasks in the last 60s: 1234 done, 5 failed (last failure: task 42: ...)`. A minute with no task writes
//! nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How often [`Tally::log_every`] writes its line.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Counts of finished tasks since the last summary.
#[derive(Debug, Default)]
pub struct Tally {
    done: AtomicU64,
    failed: AtomicU64,
    /// The last failure: its task id and reason.
    last_failure: Mutex<Option<(u64, String)>>,
}

impl Tally {
    /// A task succeeded (and was acked).
    pub fn done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// A task failed with `reason` (and was nacked).
    pub fn failed(&self, task_id: u64, reason: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.last_failure.lock().unwrap_or_else(PoisonError::into_inner) = Some((task_id, reason.to_string()));
    }

    /// The summary of what was counted since the last call (`None` if nothing), and a fresh start.
    pub fn take(&self, period: Duration) -> Option<String> {
        let done = self.done.swap(0, Ordering::Relaxed);
        let failed = self.failed.swap(0, Ordering::Relaxed);
        let last = self.last_failure.lock().unwrap_or_else(PoisonError::into_inner).take();
        if done == 0 && failed == 0 {
            return None;
        }
        let mut line = format!("tasks in the last {}s: {done} done, {failed} failed", period.as_secs());
        if let (true, Some((id, why))) = (failed > 0, last) {
            line.push_str(&format!(" (last failure: task {id}: {why})"));
        }
        Some(line)
    }

    /// Writes the summary at INFO every `period`, for as long as the returned future runs.
    pub async fn log_every(&self, period: Duration) {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            if let Some(line) = self.take(period) {
                tracing::info!("{line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_counts_since_the_last_one_and_names_the_last_failure() {
        let t = Tally::default();
        assert_eq!(t.take(SUMMARY_EVERY), None, "nothing happened: no line");
        for _ in 0..3 {
            t.done();
        }
        assert_eq!(t.take(SUMMARY_EVERY).as_deref(), Some("tasks in the last 60s: 3 done, 0 failed"));
        assert_eq!(t.take(SUMMARY_EVERY), None, "counted once");
        t.failed(7, "step 1 (sh): `false` exited with 1");
        t.failed(9, "step 2 (sh): `exit 3` exited with 3");
        t.done();
        assert_eq!(
            t.take(SUMMARY_EVERY).as_deref(),
            Some("tasks in the last 60s: 1 done, 2 failed (last failure: task 9: step 2 (sh): `exit 3` exited with 3)")
        );
    }
}
