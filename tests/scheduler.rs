//! Delivery semantics through the real scheduler: submit → lease → ack, nack with delay, lease expiry,
//! agent disconnect, fencing, dead letters and redrive, idempotency and recovery across restarts, an agent
//! reclaiming its leases after a restart, and `--fsync none` with early writeback across segment rolls.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pm_client::{AgentEvent, Client, ConnectOptions, ErrorKind};
use pm_protocol::pb::{NackItem, ReclaimItem, TaskSpec};
use pm_protocol::ErrorCode;
use pm_testkit::Scheduler;
use pm_tests::{assert_no_lease, next_lease, task};

#[tokio::test]
async fn submit_lease_ack() {
    submit_lease_ack_with(&[]).await;
}

#[tokio::test]
async fn submit_lease_ack_when_leasing_waits_for_the_sync() {
    submit_lease_ack_with(&["--lease-after-sync"]).await;
}

async fn submit_lease_ack_with(args: &[&str]) {
    let s = Scheduler::start(args);
    let p = s.client(ConnectOptions::producer()).await;
    let id = p.submit_one(task("q1", b"hello")).await.unwrap();
    let (a, mut leases) = s.agent().await;
    a.credit("q1", 1).await.unwrap();
    let t = next_lease(&mut leases).await;
    assert_eq!((t.task_id, t.attempt, &t.payload[..], t.queue.as_str()), (id, 1, &b"hello"[..], "q1"));
    assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::Ok]);
    // A second ack of the same lease is refused: the lease is gone.
    assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::StaleLease]);
    let admin = s.client(ConnectOptions::admin()).await;
    let q = admin.stats().await.unwrap().queues.into_iter().find(|q| q.queue == "q1").unwrap();
    assert_eq!((q.ready, q.leased, q.dead), (0, 0, 0));
}

#[tokio::test]
async fn priority_then_fifo_and_batches() {
    let s = Scheduler::start(&[]);
    let p = s.client(ConnectOptions::producer()).await;
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let mut t = task("q", &i.to_be_bytes());
        t.priority = if i % 10 == 0 { 5 } else { 0 };
        tasks.push(t);
    }
    let results = p.submit(tasks).await.unwrap();
    assert!(results.iter().all(|r| r.code == 0));
    let (a, mut leases) = s.agent().await;
    a.credit("q", 50).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..50 {
        let t = next_lease(&mut leases).await;
        order.push(u32::from_be_bytes(t.payload[..4].try_into().unwrap()));
    }
    let mut expected: Vec<u32> = (0..50).filter(|i| i % 10 == 0).collect();
    expected.extend((0..50).filter(|i| i % 10 != 0));
    assert_eq!(order, expected);
}

#[tokio::test]
async fn nack_with_delay_redelivers_later() {
    let s = Scheduler::start(&[]);
    let p = s.client(ConnectOptions::producer()).await;
    let id = p.submit_one(task("q", b"x")).await.unwrap();
    let (a, mut leases) = s.agent().await;
    a.credit("q", 2).await.unwrap();
    let t = next_lease(&mut leases).await;
    let codes = a
        .nack(vec![NackItem {
            lease_id: t.lease_id,
            retry_after_ms: 1500,
            reason: "try later".into(),
            released: false,
            ..Default::default()
        }])
        .await
        .unwrap();
    assert_eq!(codes, vec![ErrorCode::Ok]);
    assert_no_lease(&mut leases, Duration::from_millis(300)).await;
    let again = next_lease(&mut leases).await;
    assert_eq!((again.task_id, again.attempt), (id, 2));
    assert_ne!(again.lease_id, t.lease_id);
}

#[tokio::test]
async fn delayed_task_is_not_leased_early() {
    let s = Scheduler::start(&[]);
    let p = s.client(ConnectOptions::producer()).await;
    let mut spec = task("q", b"later");
    spec.delay_ms = 1500;
    let id = p.submit_one(spec).await.unwrap();
    let (a, mut leases) = s.agent().await;
    a.credit("q", 1).await.unwrap();
    assert_no_lease(&mut leases, Duration::from_millis(300)).await;
    assert_eq!(next_lease(&mut leases).await.task_id, id);
}

#[tokio::test]
async fn lease_expiry_redelivers_and_fences_the_old_lease() {
    let s = Scheduler::start(&[]);
    let p = s.client(ConnectOptions::producer()).await;
    let mut spec = task("q", b"slow");
    spec.lease_ms = 300;
    let id = p.submit_one(spec).await.unwrap();
    let (a, mut leases) = s.agent().await;
    a.credit("q", 2).await.unwrap();
    let first = next_lease(&mut leases).await;
    // Not acked: the lease expires and the task comes back with attempt + 1 and a fresh lease id.
    let second = next_lease(&mut leases).await;
    assert_eq!((second.task_id, second.attempt), (id, 2));
    assert_ne!(second.lease_id, first.lease_id);
    // The late ack and extend of the first lease are refused (fencing); the current lease works.
    assert_eq!(a.ack(vec![(first.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::StaleLease]);
    assert_eq!(
        a.extend(vec![first.lease_id, second.lease_id], 5000).await.unwrap(),
        vec![ErrorCode::StaleLease, ErrorCode::Ok]
    );
    assert_eq!(a.ack(vec![(second.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::Ok]);
}

#[tokio::test]
async fn extend_keeps_a_lease_alive() {
    let s = Scheduler::start(&[]);
    let p = s.client(ConnectOptions::producer()).await;
    let mut spec = task("q", b"long");
    spec.lease_ms = 400;
    p.submit_one(spec).await.unwrap();
    let (a, mut leases) = s.agent().await;
    a.credit("q", 2).await.unwrap();
    let t = next_lease(&mut leases).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(a.extend(vec![t.lease_id], 400).await.unwrap(), vec![ErrorCode::Ok]);
    }
    assert_eq!(leases.try_next(), None, "an extended lease must not be redelivered");
    assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::Ok]);
}

#[tokio::test]
async fn agent_disconnect_redelivers_to_another_agent() {
    let s = Scheduler::start(&[]);
    let p = s.client(ConnectOptions::producer()).await;
    let id = p.submit_one(task("q", b"x")).await.unwrap();
    let (a1, mut l1) = s.agent().await;
    a1.credit("q", 1).await.unwrap();
    let t1 = next_lease(&mut l1).await;
    drop(a1);
    drop(l1);
    let (a2, mut l2) = s.agent().await;
    a2.credit("q", 1).await.unwrap();
    let t2 = next_lease(&mut l2).await;
    assert_eq!((t2.task_id, t2.attempt), (id, 2));
    assert_ne!(t2.lease_id, t1.lease_id);
}

#[tokio::test]
async fn max_attempts_dead_letter_then_redrive() {
    let s = Scheduler::start(&[]);
    let p = s.client(ConnectOptions::producer()).await;
    let mut spec = task("q", b"poison");
    spec.max_attempts = 2;
    let id = p.submit_one(spec).await.unwrap();
    let (a, mut leases) = s.agent().await;
    a.credit("q", 10).await.unwrap();
    for attempt in 1..=2 {
        let t = next_lease(&mut leases).await;
        assert_eq!(t.attempt, attempt);
        let nack = NackItem {
            lease_id: t.lease_id,
            retry_after_ms: 0,
            reason: format!("boom {attempt}"),
            released: false,
            ..Default::default()
        };
        assert_eq!(a.nack(vec![nack]).await.unwrap(), vec![ErrorCode::Ok]);
    }
    assert_no_lease(&mut leases, Duration::from_millis(200)).await;
    let admin = s.client(ConnectOptions::admin()).await;
    let dead = admin.dead_letters("q", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].task_id, dead[0].attempts), (id, 2));
    assert!(dead[0].reason.contains("boom 2"), "{}", dead[0].reason);
    assert_eq!(admin.redrive("q", vec![]).await.unwrap(), 1);
    let t = next_lease(&mut leases).await;
    assert_eq!((t.task_id, t.attempt), (id, 1));
    assert!(admin.dead_letters("q", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn dead_letters_survive_restart() {
    let mut s = Scheduler::start(&[]);
    let id = {
        let p = s.client(ConnectOptions::producer()).await;
        let mut spec = task("q", b"poison");
        spec.max_attempts = 1;
        let id = p.submit_one(spec).await.unwrap();
        let (a, mut leases) = s.agent().await;
        a.credit("q", 1).await.unwrap();
        let t = next_lease(&mut leases).await;
        a.nack(vec![NackItem {
            lease_id: t.lease_id,
            retry_after_ms: 0,
            reason: "bad".into(),
            released: false,
            ..Default::default()
        }])
        .await
        .unwrap();
        // An idle round trip after the nack lets its dead-letter record reach the log.
        s.client(ConnectOptions::admin()).await.stats().await.unwrap();
        id
    };
    s.terminate(Duration::from_secs(10));
    s.restart();
    let admin = s.client(ConnectOptions::admin()).await;
    let dead = admin.dead_letters("", 10).await.unwrap();
    assert_eq!(dead.iter().map(|d| d.task_id).collect::<Vec<_>>(), vec![id]);
}

#[tokio::test]
async fn idempotency_key_holds_across_restart() {
    let mut s = Scheduler::start(&[]);
    let spec = TaskSpec { idempotency_key: "order-42".into(), ..task("q", b"once") };
    let first = {
        let p = s.client(ConnectOptions::producer()).await;
        let r1 = p.submit(vec![spec.clone()]).await.unwrap();
        let r2 = p.submit(vec![spec.clone()]).await.unwrap();
        assert!(!r1[0].duplicate);
        assert!(r2[0].duplicate);
        assert_eq!(r1[0].task_id, r2[0].task_id);
        r1[0].task_id
    };
    s.kill();
    s.restart();
    let p = s.client(ConnectOptions::producer()).await;
    let r3 = p.submit(vec![spec.clone()]).await.unwrap();
    assert!(r3[0].duplicate, "a repeat after restart must be recognised");
    assert_eq!(r3[0].task_id, first);
    // Same key on another queue is a different task.
    let other = p.submit(vec![TaskSpec { queue: "other".into(), ..spec }]).await.unwrap();
    assert!(!other[0].duplicate);
    let admin = s.client(ConnectOptions::admin()).await;
    let ready: u64 = admin.stats().await.unwrap().queues.iter().map(|q| q.ready).sum();
    assert_eq!(ready, 2);
}

#[tokio::test]
async fn restart_recovers_every_unacked_task() {
    let mut s = Scheduler::start(&[]);
    let mut all = BTreeSet::new();
    let mut acked = BTreeSet::new();
    {
        let p = s.client(ConnectOptions::producer()).await;
        for chunk in 0..4 {
            let tasks: Vec<_> = (0..25).map(|i| task("r", format!("{chunk}-{i}").as_bytes())).collect();
            for r in p.submit(tasks).await.unwrap() {
                assert_eq!(r.code, 0);
                all.insert(r.task_id);
            }
        }
        let (a, mut leases) = s.agent().await;
        a.credit("r", 40).await.unwrap();
        let mut items = Vec::new();
        for i in 0..40 {
            let t = next_lease(&mut leases).await;
            if i % 4 != 0 {
                acked.insert(t.task_id);
                items.push((t.lease_id, Bytes::new()));
            }
        }
        let codes = a.ack(items).await.unwrap();
        assert!(codes.iter().all(|c| *c == ErrorCode::Ok));
    }
    s.kill();
    s.restart();
    let expected: BTreeSet<u64> = all.difference(&acked).copied().collect();
    leases_exactly(&s, "r", &expected).await;
    // New ids never reuse old ones.
    let p = s.client(ConnectOptions::producer()).await;
    let fresh = p.submit_one(task("r", b"new")).await.unwrap();
    assert!(fresh > *all.iter().max().unwrap());
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_keeps_tasks() {
    let mut s = Scheduler::start(&[]);
    let id = s.client(ConnectOptions::producer()).await.submit_one(task("q", b"x")).await.unwrap();
    let status = s.terminate(Duration::from_secs(15)).expect("exited");
    assert!(status.success(), "exit status {status:?}; log: {}", s.log_tail());
    s.restart();
    let (a, mut leases) = s.agent().await;
    a.credit("q", 1).await.unwrap();
    assert_eq!(next_lease(&mut leases).await.task_id, id);
}

#[tokio::test]
async fn sled_backend_delivers_and_recovers() {
    let mut s = Scheduler::start(&["--store", "sled"]);
    let p = s.client(ConnectOptions::producer()).await;
    let ids: BTreeSet<u64> =
        p.submit((0..10).map(|i| task("s", &[i])).collect()).await.unwrap().into_iter().map(|r| r.task_id).collect();
    drop(p);
    s.kill();
    s.restart();
    let (a, mut leases) = s.agent().await;
    a.credit("s", 10).await.unwrap();
    let mut got = BTreeSet::new();
    for _ in 0..10 {
        let t = next_lease(&mut leases).await;
        got.insert(t.task_id);
        assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::Ok]);
    }
    assert_eq!(got, ids);
}

#[tokio::test]
async fn invalid_tasks_are_refused_individually() {
    let s = Scheduler::start(&["--max-payload-bytes", "1000"]);
    let p = s.client(ConnectOptions::producer()).await;
    let results = p
        .submit(vec![task("ok", b"fine"), task("ok", b""), task("bad queue", b"x"), task("ok", &[0u8; 2000])])
        .await
        .unwrap();
    let codes: Vec<i32> = results.iter().map(|r| r.code).collect();
    let invalid = ErrorCode::InvalidTask as i32;
    assert_eq!(codes, vec![0, invalid, invalid, invalid]);
    assert!(results[3].message.contains("exceeds"), "{}", results[3].message);
}

#[tokio::test]
async fn roles_are_enforced() {
    let s = Scheduler::start(&[]);
    let p = s.client(ConnectOptions::producer()).await;
    // Producers read what operators see, but only admins act.
    p.stats().await.unwrap();
    let err = p.queue_control("q", pm_protocol::pb::QueueAction::Pause).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RoleNotAllowed));
    let err = p.redrive("q", vec![]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RoleNotAllowed));
    let (a, _l) = s.agent().await;
    let err = a.submit(vec![task("q", b"x")]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RoleNotAllowed));
    // The producer connection is still usable after the refusal.
    p.submit_one(task("q", b"x")).await.unwrap();
}

/// After a restart the client reclaims what its provider lists right after the handshake, before a request
/// queued meanwhile goes out: when the reply to an Extend quoting the old lease id arrives, the Reclaimed
/// event is already there with the new id. A task not reclaimed is held for the grace, then delivered again.
#[tokio::test]
async fn an_agent_reclaims_its_leases_first_after_a_restart() {
    let mut s = Scheduler::start(&["--reclaim-grace-ms", "1000"]);
    let p = s.client(ConnectOptions::producer()).await;
    p.submit(vec![task("rc", b"kept"), task("rc", b"forgotten")]).await.unwrap();
    let listed: Arc<Mutex<Vec<ReclaimItem>>> = Arc::default();
    let provider = {
        let listed = listed.clone();
        Arc::new(move || listed.lock().unwrap().clone())
    };
    let opts = ConnectOptions::agent().max_backoff(Duration::from_millis(100)).reclaim(provider);
    let (a, mut leases) = Client::connect_agent(&s.addr, opts).await.unwrap();
    a.credit("rc", 2).await.unwrap();
    let (kept, forgotten) = (next_lease(&mut leases).await, next_lease(&mut leases).await);
    *listed.lock().unwrap() =
        vec![ReclaimItem { task_id: kept.task_id, attempt: kept.attempt, lease_id: kept.lease_id }];
    s.client(ConnectOptions::admin()).await.stats().await.unwrap();
    s.restart();

    let codes = loop {
        match a.extend(vec![kept.lease_id], 0).await {
            Err(e) if matches!(e.kind(), ErrorKind::Disconnected | ErrorKind::NotSent) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(codes, vec![ErrorCode::StaleLease], "the old lease id died with the process");
    assert_eq!(a.reclaims_delivered(), 1);
    let results = match leases.try_next() {
        Some(AgentEvent::Reclaimed(r)) => r,
        other => panic!("the Reclaimed event must precede the reply: {other:?}"),
    };
    assert_eq!(results.len(), 1);
    let r = &results[0];
    assert_eq!((r.task_id, r.code), (kept.task_id, ErrorCode::Ok as i32));
    assert_eq!(a.extend(vec![r.lease_id], 0).await.unwrap(), vec![ErrorCode::Ok]);

    // The forgotten task was held (reported as delayed) for the grace, then goes to the next credit, as its
    // second attempt; the reclaimed one was not counted as an attempt.
    let admin = s.client(ConnectOptions::admin()).await;
    let q = admin.stats().await.unwrap().queues.into_iter().find(|q| q.queue == "rc").unwrap();
    assert_eq!((q.ready, q.delayed, q.leased), (0, 1, 1), "{q:?}");
    a.credit("rc", 1).await.unwrap();
    let again = next_lease(&mut leases).await;
    assert_eq!((again.task_id, again.attempt), (forgotten.task_id, 2));
    let acks = a.ack(vec![(r.lease_id, Bytes::new()), (again.lease_id, Bytes::new())]).await.unwrap();
    assert_eq!(acks, vec![ErrorCode::Ok, ErrorCode::Ok]);
}

#[tokio::test]
async fn only_a_peer_node_may_release_a_delivery_without_it_counting() {
    let s = Scheduler::start(&[]);
    let p = s.client(ConnectOptions::producer()).await;
    p.submit_one(task("rel", b"x")).await.unwrap();
    for role in [ConnectOptions::agent(), ConnectOptions::peer()] {
        let peer = role.clone().reconnect(false);
        let (a, mut leases) = Client::connect_agent(&s.addr, peer).await.unwrap();
        a.credit("rel", 1).await.unwrap();
        let t = next_lease(&mut leases).await;
        let item = NackItem {
            lease_id: t.lease_id,
            retry_after_ms: 0,
            reason: "not started".into(),
            released: true,
            ..Default::default()
        };
        assert_eq!(a.nack(vec![item]).await.unwrap(), vec![ErrorCode::Ok]);
    }
    // The agent's claim was ignored (attempt 1 counted), the peer's honoured (attempt 2 not counted).
    let (a, mut leases) = s.agent().await;
    a.credit("rel", 1).await.unwrap();
    assert_eq!(next_lease(&mut leases).await.attempt, 2);
}

#[tokio::test]
async fn with_fsync_none_and_early_writeback_a_killed_node_keeps_every_task_across_segment_rolls() {
    // Small segments and frames, so 1 MiB of tasks rolls the log a few times; writeback every 16 KiB.
    let args = [
        "--fsync",
        "none",
        "--max-frame-bytes",
        "65536",
        "--max-payload-bytes",
        "16384",
        "--max-result-bytes",
        "16384",
        "--segment-bytes",
        "262144",
        "--wal-writeback-bytes",
        "16384",
    ];
    let mut s = Scheduler::start(&args);
    let pid = s.pid().unwrap();
    let mut all = BTreeSet::new();
    {
        let p = s.client(ConnectOptions::producer()).await;
        for chunk in 0..20 {
            let tasks: Vec<_> =
                (0..50).map(|i| task("wb", format!("{chunk}-{i}-{}", "x".repeat(1000)).as_bytes())).collect();
            for r in p.submit(tasks).await.unwrap() {
                assert_eq!(r.code, 0);
                all.insert(r.task_id);
            }
        }
    }
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    assert!(threads.iter().any(|t| t == "pm-wal-flush"), "no writeback thread among {threads:?}");
    // A process crash: with --fsync none the page cache still holds everything written.
    s.kill();
    s.restart();
    leases_exactly(&s, "wb", &all).await;
}

/// A new agent with credits to spare on `queue` is leased exactly the tasks `expected`, and nothing more.
async fn leases_exactly(s: &Scheduler, queue: &str, expected: &BTreeSet<u64>) {
    let (a, mut leases) = s.agent().await;
    a.credit(queue, expected.len() as u32 + 5).await.unwrap();
    let mut got = BTreeSet::new();
    for _ in 0..expected.len() {
        got.insert(next_lease(&mut leases).await.task_id);
    }
    assert_eq!(&got, expected);
    assert_no_lease(&mut leases, Duration::from_millis(200)).await;
}
