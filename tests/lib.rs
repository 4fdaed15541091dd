//! Helpers shared by the end-to-end tests.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use pm_client::Leases;
use pm_protocol::pb::{LeasedTask, TaskSpec};

/// A task on `queue` with `payload`.
pub fn task(queue: &str, payload: &[u8]) -> TaskSpec {
    TaskSpec { payload: bytes::Bytes::copy_from_slice(payload), queue: queue.into(), ..Default::default() }
}

/// The next leased task, or a panic after 10 s.
pub async fn next_lease(leases: &mut Leases) -> LeasedTask {
    tokio::time::timeout(Duration::from_secs(10), leases.next())
        .await
        .expect("no task leased within 10 s")
        .expect("lease stream ended")
}

/// Asserts that no task is leased within `d`.
pub async fn assert_no_lease(leases: &mut Leases, d: Duration) {
    if let Ok(Some(t)) = tokio::time::timeout(d, leases.next()).await {
        panic!("unexpected lease of task {} (attempt {})", t.task_id, t.attempt);
    }
}
