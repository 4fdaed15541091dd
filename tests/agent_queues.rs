//! End to end: one `pm-agent run` serving several queues (`--queue a,b`, patterns), its concurrency shared
//! fairly between them.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::time::Duration;

use pm_client::{Client, ConnectOptions};
use pm_testkit::{wait_for, Agent, Scheduler};
use pm_tests::task;

/// Submits a one-step pipeline running `command` to `queue`.
async fn submit(p: &Client, queue: &str, command: &str) -> u64 {
    let json = serde_json::json!({"pipeline": [{"executorName": "sh", "commands": [command]}]}).to_string();
    p.submit_one(task(queue, json.as_bytes())).await.unwrap()
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap_or_default().lines().map(String::from).collect()
}

/// Ready and leased tasks of `queue`.
async fn pending(p: &Client, queue: &str) -> u64 {
    let stats = p.stats().await.unwrap();
    stats.queues.iter().filter(|q| q.queue == queue).map(|q| q.ready + q.leased + q.delayed).sum()
}

#[tokio::test]
async fn named_queues_and_patterns_are_served_and_nothing_else() {
    let s = Scheduler::start(&[]);
    let p = s.client(ConnectOptions::producer()).await;
    let out = tempfile::tempdir().unwrap();
    let o = out.path().display();
    let agent = Agent::start(&s.addr, &["--queue", "a,app/*", "--queue-refresh", "200ms", "--concurrency", "2"]);
    // `app/x` is created after the agent started: the pattern picks it up from the queue counters.
    for q in ["a", "app/x", "other", "apple"] {
        submit(&p, q, &format!("echo {q} >> {o}/ran")).await;
    }
    wait_for(Duration::from_secs(20), "a and app/x to run", || {
        (lines(&out.path().join("ran")).len() >= 2).then_some(())
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut ran = lines(&out.path().join("ran"));
    ran.sort();
    assert_eq!(ran, ["a", "app/x"], "log:\n{}", agent.log());
    assert_eq!((pending(&p, "other").await, pending(&p, "apple").await), (1, 1), "not served: left ready");
    // An agent may read the queue counters (that is how it learns a pattern's queues).
    let (a, _leases) = s.agent().await;
    assert!(a.stats().await.unwrap().queues.iter().any(|q| q.queue == "app/x"));
}

/// Two queues, concurrency 2: `a` has a backlog of 6 slow tasks before `b` gets any. `b`'s 2 tasks do not wait
/// for `a`'s backlog to drain (they would start 7th and 8th): each slot freed goes to the queue holding fewer,
/// so they start among the next ones. A credit of `a`'s may already be at the scheduler when `b` is learned,
/// so the first pair freed may be `a`, `b`, and then `a`, `b` again (ties take turns): `b` starts by the 6th.
#[tokio::test]
async fn the_slots_are_shared_fairly_between_busy_queues() {
    let s = Scheduler::start(&[]);
    let p = s.client(ConnectOptions::producer()).await;
    let out = tempfile::tempdir().unwrap();
    let starts = out.path().join("starts");
    let agent = Agent::start(&s.addr, &["--queue", "a,b", "--queue-refresh", "100ms", "--concurrency", "2"]);
    for _ in 0..6 {
        submit(&p, "a", &format!("echo a >> {}; sleep 1", starts.display())).await;
    }
    wait_for(Duration::from_secs(20), "a's first tasks to start", || (lines(&starts).len() >= 2).then_some(()));
    for _ in 0..2 {
        submit(&p, "b", &format!("echo b >> {}; sleep 1", starts.display())).await;
    }
    wait_for(Duration::from_secs(30), "all 8 to start", || (lines(&starts).len() >= 8).then_some(()));
    let order = lines(&starts);
    let b_at: Vec<usize> = order.iter().enumerate().filter(|(_, q)| *q == "b").map(|(i, _)| i).collect();
    assert_eq!(b_at.len(), 2, "{order:?}");
    assert!(b_at[1] <= 5, "b's tasks start as slots free, not after a's backlog: {order:?}\nlog:\n{}", agent.log());
}
