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
