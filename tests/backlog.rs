//! Backlogs bound by disk, not memory, through the real scheduler: with a small `--resident-payload-bytes`,
//! the payloads of queued tasks beyond it are read back from the log when leased, whole and in order, across
//! segment rolls, compaction and a `kill -9`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeMap;

use bytes::Bytes;
use pm_client::ConnectOptions;
use pm_protocol::ErrorCode;
use pm_testkit::Scheduler;
use pm_tests::{http, next_lease, task};

/// A payload that names its task and is long enough to fill small segments quickly.
fn payload(i: u32) -> Vec<u8> {
    format!("task-{i:05}-").repeat(20).into_bytes()
}

/// A counter or gauge summed over its series on the node's `/metrics`.
fn metric(s: &Scheduler, name: &str) -> f64 {
    let addr = s.http_addr.clone().expect("the node serves /metrics");
    let text = String::from_utf8(http(&addr, "GET", "/metrics", &[], b"").body).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An agent of its own leases `n` tasks and acks each; their payloads go into `delivered` (each task once).
async fn take_and_ack(s: &Scheduler, n: u32, delivered: &mut BTreeMap<u64, Vec<u8>>) {
    let (a, mut leases) = s.agent().await;
    a.credit("backlog", n).await.unwrap();
    for _ in 0..n {
        let t = next_lease(&mut leases).await;
        assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::Ok]);
        assert!(delivered.insert(t.task_id, t.payload.to_vec()).is_none(), "task {} twice", t.task_id);
    }
}

#[tokio::test]
async fn payloads_beyond_the_resident_budget_are_read_back_from_the_log_across_a_kill_9() {
    // 2 KiB of payloads in memory for ~3,000 tasks of 240 B; 256 KiB segments roll every ~1,000 tasks.
    let mut s = Scheduler::start(&[
        "--resident-payload-bytes",
        "2048",
        "--segment-bytes",
        "262144",
        "--max-frame-bytes",
        "65536",
        "--max-payload-bytes",
        "16384",
    ]);
    let p = s.client(ConnectOptions::producer()).await;
    let mut sent = BTreeMap::new();
    for chunk in (0..3000u32).collect::<Vec<_>>().chunks(200) {
        let specs = chunk.iter().map(|&i| task("backlog", &payload(i))).collect();
        for (r, &i) in p.submit(specs).await.unwrap().iter().zip(chunk) {
            assert_eq!(r.code, ErrorCode::Ok as i32, "{}", r.message);
            sent.insert(r.task_id, payload(i));
        }
    }
    assert!(metric(&s, "pm_payload_resident_bytes") <= 2048.0, "the budget holds");
    // The first 1,000 delivered and acked: they were written first, so the oldest segment drains.
    let mut delivered = BTreeMap::new();
    take_and_ack(&s, 1000, &mut delivered).await;
    assert!(metric(&s, "pm_payload_reads_total") >= 900.0, "most of them came from the log");
    // Killed with 2,000 queued: after the restart, they are read back from the recovered log.
    s.restart();
    take_and_ack(&s, 2000, &mut delivered).await;
    assert!(delivered == sent, "every task delivered once, each with its own payload");
    assert!(metric(&s, "pm_payload_reads_total") >= 1900.0, "read back after the restart");
    let admin = s.client(ConnectOptions::admin()).await;
    let q = admin.stats().await.unwrap().queues.into_iter().find(|q| q.queue == "backlog");
    let left = q.map(|q| (q.ready, q.leased, q.dead));
    assert!(left.is_none_or(|l| l == (0, 0, 0)), "{left:?}");
}

/// The `pm_tasks_kept_small` gauge summed over the node's shards, once it shows at least `n` (gauges are
/// published once a second).
fn kept_small_at_least(s: &Scheduler, n: f64) -> f64 {
    pm_testkit::wait_for(std::time::Duration::from_secs(10), "tasks kept small", || {
        let v = metric(s, "pm_tasks_kept_small");
        (v >= n).then_some(v)
    })
}

#[tokio::test]
async fn tasks_kept_small_keep_everything_their_spec_said_across_a_kill_9() {
    use pm_client::TaskFilter;
    use pm_protocol::pb::{NackItem, QueueAction, TaskState};
    // No payload resident: every task is kept small once durable, and its record read back when needed.
    let mut s = Scheduler::start(&["--resident-payload-bytes", "0", "--reclaim-grace-ms", "0"]);
    let p = s.client(ConnectOptions::producer()).await;
    let spec = |i: u32, priority: i32, key: &str| pm_protocol::pb::TaskSpec {
        priority,
        key: key.into(),
        max_attempts: 2,
        // Kept small once durable, like tasks without a key.
        idempotency_key: format!("idem-{i}"),
        ..task("small", &payload(i))
    };
    let specs = vec![spec(0, 0, "a"), spec(1, 9, "b"), spec(2, 0, "c"), spec(3, 0, "d"), spec(4, 5, "e")];
    let ids: Vec<u64> = p.submit(specs).await.unwrap().iter().map(|r| r.task_id).collect();
    kept_small_at_least(&s, 5.0);

    // Status, watch and listing read what the record says.
    let st = p.status(vec![ids[1]]).await.unwrap();
    assert_eq!((st[0].key.as_str(), st[0].max_attempts, st[0].attempts), ("b", 2, 0));
    assert_eq!(st[0].state, TaskState::Ready as i32);
    assert!(st[0].submitted_unix_ms > 0);
    assert_eq!(p.watch(vec![ids[0]]).await.unwrap(), vec![ErrorCode::Ok], "a task kept small is known");
    let admin = s.client(ConnectOptions::admin()).await;
    let filter = TaskFilter { queue: "small".into(), key: "c".into(), ..Default::default() };
    let page = admin.list_tasks(&filter, 10, 0).await.unwrap();
    assert_eq!(page.tasks.iter().map(|t| t.task_id).collect::<Vec<_>>(), vec![ids[2]], "listed by its key");

    // Cancelled while kept small.
    assert_eq!(p.cancel(vec![ids[3]]).await.unwrap(), vec![ErrorCode::Ok]);

    // Leased by priority, with the payload and key of the record; a nack counts the attempt.
    let (a, mut leases) = s.agent().await;
    a.credit("small", 1).await.unwrap();
    let t = next_lease(&mut leases).await;
    assert_eq!((t.task_id, t.key.as_str(), t.max_attempts, t.attempt), (ids[1], "b", 2, 1));
    assert_eq!(t.payload.to_vec(), payload(1));
    let nack = NackItem { lease_id: t.lease_id, ..Default::default() };
    assert_eq!(a.nack(vec![nack]).await.unwrap(), vec![ErrorCode::Ok]);
    // The attempt's record is durable once a later submit is acknowledged (the log keeps the order).
    assert_eq!(p.submit(vec![task("other", b"{}")]).await.unwrap()[0].code, ErrorCode::Ok as i32);
    // Killed: the others (one of them with an attempt) come back kept small, and keep their attempts.
    drop((a, leases, p, admin));
    s.restart();
    kept_small_at_least(&s, 3.0);
    let (a, mut leases) = s.agent().await;
    a.credit("small", 2).await.unwrap();
    let t = next_lease(&mut leases).await;
    assert_eq!((t.task_id, t.attempt, t.key.as_str()), (ids[1], 2, "b"), "its first attempt was kept");
    assert_eq!(t.payload.to_vec(), payload(1));
    let nack = NackItem { lease_id: t.lease_id, ..Default::default() };
    assert_eq!(a.nack(vec![nack]).await.unwrap(), vec![ErrorCode::Ok]);
    let t = next_lease(&mut leases).await;
    assert_eq!((t.task_id, t.attempt, t.payload.to_vec()), (ids[4], 1, payload(4)), "priority 5 next");
    assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::Ok]);
    let p = s.client(ConnectOptions::producer()).await;
    let st = p.status(vec![ids[1], ids[3]]).await.unwrap();
    assert_eq!(st[0].state, TaskState::Dead as i32, "two attempts of two: dead-lettered");
    assert_eq!(st[1].state, TaskState::Cancelled as i32);
    // Purged while kept small: the two left (ids 0 and 2) are cancelled, with their keys in their outcomes.
    let admin = s.client(ConnectOptions::admin()).await;
    assert_eq!(admin.queue_control("small", QueueAction::Purge).await.unwrap().purged, 2);
    let st = p.status(vec![ids[0], ids[2]]).await.unwrap();
    assert!(st.iter().all(|t| t.state == TaskState::Cancelled as i32), "{st:?}");
    assert_eq!((st[0].key.as_str(), st[1].key.as_str()), ("a", "c"));
}
