//! Helpers shared by the end-to-end tests.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use pm_client::{AgentEvent, Leases};
use pm_protocol::pb::{LeasedTask, TaskSpec};

/// A task on `queue` with `payload`.
pub fn task(queue: &str, payload: &[u8]) -> TaskSpec {
    TaskSpec { payload: bytes::Bytes::copy_from_slice(payload), queue: queue.into(), ..Default::default() }
}

/// The next event pushed to an agent, or a panic after 10 s.
pub async fn next_event(leases: &mut Leases) -> AgentEvent {
    tokio::time::timeout(Duration::from_secs(10), leases.next())
        .await
        .expect("nothing pushed to the agent within 10 s")
        .expect("lease stream ended")
}

/// The next leased task, or a panic after 10 s (or on a revocation).
pub async fn next_lease(leases: &mut Leases) -> LeasedTask {
    match next_event(leases).await {
        AgentEvent::Leased(t) => t,
        AgentEvent::Revoked(r) => panic!("unexpected revocation of lease {} (task {})", r.lease_id, r.task_id),
        AgentEvent::Reclaimed(r) => panic!("unexpected reclaim results {r:?}"),
    }
}

/// Asserts that nothing is pushed to the agent within `d`.
pub async fn assert_no_lease(leases: &mut Leases, d: Duration) {
    if let Ok(Some(ev)) = tokio::time::timeout(d, leases.next()).await {
        panic!("unexpected {ev:?}");
    }
}

/// Submits one task document through `pmctl submit` (a real process) and returns its id.
pub fn submit_json(s: &pm_testkit::Scheduler, json: &str) -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("task.json");
    std::fs::write(&file, json).expect("write the task file");
    let out = pm_testkit::pmctl(&s.addr, &["submit", &file.display().to_string()], None);
    assert!(out.status.success(), "pmctl: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("pmctl prints the task id")
}
