//! Task status and outcomes against real processes: states from delayed to succeeded, failed, dead and
//! cancelled; `pmctl status`, `why` and `wait` (whose exit code mirrors the outcome); `Completed` pushes for
//! watchers and `Submit.notify`; outcomes that survive a restart and go when their retention ends; a real
//! pm-agent reporting per-command results.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use bytes::Bytes;
use pm_client::{Client, ConnectOptions};
use pm_protocol::pb::{NackItem, TaskSpec, TaskState, TaskStatus};
use pm_protocol::ErrorCode;
use pm_testkit::{pmctl, wait_for, Agent, Scheduler};
use pm_tests::{next_lease, submit_json, task};

async fn status(c: &Client, id: u64) -> TaskStatus {
    c.status(vec![id]).await.unwrap().remove(0)
}

/// Polls the status of `id` until `pred` holds (10 s at most).
async fn status_until(c: &Client, id: u64, what: &str, pred: impl Fn(&TaskStatus) -> bool) -> TaskStatus {
    for _ in 0..1000 {
        let s = status(c, id).await;
        if pred(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("task {id} never got {what}: {:?}", status(c, id).await);
}

fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test]
async fn status_moves_through_its_states_and_wait_mirrors_the_outcome() {
    let s = Scheduler::start(&[]);
    let p = s.client(ConnectOptions::producer()).await;
    let delayed = TaskSpec { delay_ms: 800, key: "k1".into(), ..task("default", b"d") };
    let id = p.submit_one(delayed).await.unwrap();
    let st = status(&p, id).await;
    assert_eq!((st.code, st.state(), st.queue.as_str(), st.key.as_str()), (0, TaskState::Delayed, "default", "k1"));
    assert!(st.reason.contains("submit delay"), "{st:?}");
    assert!(st.submitted_unix_ms > 0 && st.started_unix_ms == 0);
    let why = pmctl(&s.addr, &["why", &id.to_string()], None);
    assert!(out(&why).contains("delayed until"), "{}", out(&why));

    // Ready, with nobody to run it: `why` says so.
    let st = status_until(&p, id, "ready", |s| s.state() == TaskState::Ready).await;
    assert!(st.reason.contains("no agent has credit"), "{st:?}");
    let why = pmctl(&s.addr, &["why", &id.to_string()], None);
    assert!(why.status.success() && out(&why).contains("no agent has credit on queue `default`"), "{}", out(&why));

    // Leased, then acked with a result document: succeeded, and the result is kept.
    let (a, mut leases) = s.agent().await;
    a.credit("default", 10).await.unwrap();
    let t = next_lease(&mut leases).await;
    let st = status(&p, id).await;
    assert_eq!((st.state(), st.attempts), (TaskState::Leased, 1));
    assert!(st.started_unix_ms >= st.submitted_unix_ms && st.lease_deadline_unix_ms > st.started_unix_ms);
    let wait = {
        let addr = s.addr.clone();
        std::thread::spawn(move || pmctl(&addr, &["wait", &id.to_string()], None))
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!wait.is_finished(), "wait returned before the task finished");
    let doc = Bytes::from_static(
        br#"{"ok":true,"steps":[{"executor":"sh","commands":[{"run":"true","exitCode":0,"durationMs":4}]}]}"#,
    );
    assert_eq!(a.ack(vec![(t.lease_id, doc.clone())]).await.unwrap(), vec![ErrorCode::Ok]);
    let w = wait.join().unwrap();
    assert_eq!(w.status.code(), Some(0), "{}", out(&w));
    assert!(
        out(&w).contains(&format!("{id} succeeded")) && out(&w).contains("step 1 sh: exit 0 in 4 ms: true"),
        "{}",
        out(&w)
    );
    let st = status(&p, id).await;
    assert_eq!((st.state(), &st.result), (TaskState::Succeeded, &doc));
    assert!(st.finished_unix_ms >= st.started_unix_ms);
    let json = pmctl(&s.addr, &["status", "--json", &id.to_string()], None);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!((v["state"].as_str(), v["result"]["ok"].as_bool()), (Some("succeeded"), Some(true)));

    // A final nack: failed, not retried, with its result; wait exits 2.
    let id2 = p.submit_one(task("default", b"f")).await.unwrap();
    let t = next_lease(&mut leases).await;
    let nack = NackItem {
        lease_id: t.lease_id,
        reason: "invalid task".into(),
        fail: true,
        result: "r".into(),
        ..Default::default()
    };
    assert_eq!(a.nack(vec![nack]).await.unwrap(), vec![ErrorCode::Ok]);
    let st = status_until(&p, id2, "failed", |s| s.state() == TaskState::Failed).await;
    assert_eq!((st.reason.as_str(), st.result.as_ref(), st.attempts), ("invalid task", &b"r"[..], 1));
    let w = pmctl(&s.addr, &["wait", &id2.to_string()], None);
    assert_eq!(w.status.code(), Some(2), "{}", out(&w));

    // Attempts used up: dead (wait exits 2 too), with the last attempt's result.
    let id3 = p.submit_one(TaskSpec { max_attempts: 1, ..task("default", b"x") }).await.unwrap();
    let t = next_lease(&mut leases).await;
    let nack = NackItem { lease_id: t.lease_id, reason: "exit 3".into(), result: "last".into(), ..Default::default() };
    a.nack(vec![nack]).await.unwrap();
    let st = status_until(&p, id3, "dead", |s| s.state() == TaskState::Dead).await;
    assert!(st.reason.contains("exit 3") && st.result.as_ref() == b"last", "{st:?}");
    assert_eq!(pmctl(&s.addr, &["wait", &id3.to_string()], None).status.code(), Some(2));

    // Cancelled: 3. Still running at the timeout: 4. Unknown: 1. Several: the first that did not succeed.
    a.set_credit("default", 0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id4 = p.submit_one(task("default", b"c")).await.unwrap();
    let id5 = p.submit_one(task("default", b"r")).await.unwrap();
    assert_eq!(p.cancel(vec![id4]).await.unwrap(), vec![ErrorCode::Ok]);
    assert_eq!(status(&p, id4).await.state(), TaskState::Cancelled);
    let w = pmctl(&s.addr, &["wait", &id.to_string(), &id4.to_string()], None);
    assert_eq!(w.status.code(), Some(3), "{}", out(&w));
    let w = pmctl(&s.addr, &["wait", "--timeout", "500ms", &id5.to_string()], None);
    assert_eq!(w.status.code(), Some(4), "{}", out(&w));
    assert!(out(&w).contains("not finished within the timeout"));
    let w = pmctl(&s.addr, &["wait", "999999"], None);
    assert_eq!(w.status.code(), Some(1), "{}", out(&w));
    let st = pmctl(&s.addr, &["status", "999999"], None);
    assert!(st.status.code() == Some(1) && out(&st).contains("999999 not found"), "{}", out(&st));
}

#[tokio::test]
async fn watchers_and_notifying_submits_get_completed_messages() {
    let s = Scheduler::start(&[]);
    let (p, mut done) = Client::connect_watching(&s.addr, ConnectOptions::producer()).await.unwrap();
    let (a, mut leases) = s.agent().await;
    // Two tasks submitted with notify, one watched later, one cancelled while watched.
    let notified = p.submit_notify(vec![task("q", b"1"), task("q", b"2")]).await.unwrap();
    let ids: Vec<u64> = notified.iter().map(|r| r.task_id).collect();
    let watched = p.submit_one(task("q", b"3")).await.unwrap();
    let cancelled = p.submit_one(task("other", b"4")).await.unwrap();
    assert_eq!(
        p.watch(vec![watched, cancelled, 424242]).await.unwrap(),
        vec![ErrorCode::Ok, ErrorCode::Ok, ErrorCode::NotFound]
    );
    a.credit("q", 3).await.unwrap();
    for _ in 0..3 {
        let t = next_lease(&mut leases).await;
        a.ack(vec![(t.lease_id, Bytes::from(format!("done {}", t.task_id)))]).await.unwrap();
    }
    p.cancel(vec![cancelled]).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let c = tokio::time::timeout(Duration::from_secs(10), done.next()).await.unwrap().unwrap();
        got.push((c.task_id, c.state(), c.result.clone()));
    }
    got.sort_by_key(|g| g.0);
    let mut want: Vec<_> = [ids[0], ids[1], watched]
        .into_iter()
        .map(|id| (id, TaskState::Succeeded, Bytes::from(format!("done {id}"))))
        .chain([(cancelled, TaskState::Cancelled, Bytes::new())])
        .collect();
    want.sort_by_key(|g| g.0);
    assert_eq!(got, want);
    // Watching a task that already finished reports it at once.
    assert_eq!(p.watch(vec![watched]).await.unwrap(), vec![ErrorCode::Ok]);
    let c = tokio::time::timeout(Duration::from_secs(5), done.next()).await.unwrap().unwrap();
    assert_eq!((c.task_id, c.state()), (watched, TaskState::Succeeded));
}

#[tokio::test]
async fn outcomes_survive_restarts_until_their_retention_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scheduler::start_in(dir.path(), &["--result-retention", "4s"]);
    let p = s.client(ConnectOptions::producer()).await;
    let (a, mut leases) = s.agent().await;
    let id = p.submit_one(task("default", b"a")).await.unwrap();
    let waiting = p.submit_one(task("default", b"b")).await.unwrap();
    a.credit("default", 1).await.unwrap();
    let t = next_lease(&mut leases).await;
    assert_eq!(t.task_id, id);
    a.ack(vec![(t.lease_id, Bytes::from_static(b"kept"))]).await.unwrap();
    let finished = std::time::Instant::now();
    drop((p, a, leases));

    // `pmctl wait` on the other task keeps waiting across a restart.
    let wait = {
        let addr = s.addr.clone();
        std::thread::spawn(move || pmctl(&addr, &["wait", "--timeout", "30s", &waiting.to_string()], None))
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.restart();
    let p = s.client(ConnectOptions::producer()).await;
    let st = status(&p, id).await;
    assert_eq!((st.state(), st.result.as_ref()), (TaskState::Succeeded, &b"kept"[..]), "{st:?}");
    let (a, mut leases) = s.agent().await;
    a.credit("default", 1).await.unwrap();
    let t = next_lease(&mut leases).await;
    assert_eq!(t.task_id, waiting);
    a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap();
    let w = wait.join().unwrap();
    assert_eq!(w.status.code(), Some(0), "{}", out(&w));

    // After the retention (and the shard's 1 s sweep) the first outcome is gone, also after a restart.
    wait_for(Duration::from_secs(10), "the retention to end", || {
        (finished.elapsed() > Duration::from_secs(5)).then_some(())
    });
    assert_eq!(status(&p, id).await.code, ErrorCode::NotFound as i32);
    drop((p, a, leases));
    s.restart();
    let p = s.client(ConnectOptions::producer()).await;
    assert_eq!(status(&p, id).await.code, ErrorCode::NotFound as i32);
}

#[tokio::test]
async fn a_real_agent_reports_per_command_results() {
    let s = Scheduler::start(&[]);
    let _agent = Agent::start(&s.addr, &["--retry-backoff-ms", "10"]);
    let ok = submit_json(&s, r#"{"pipeline":[{"executorName":"sh","commands":["echo out; echo err >&2","true"]}]}"#);
    let bad = submit_json(
        &s,
        r#"{"pipeline":[{"executorName":"sh","commands":["echo before","exit 7","echo never"]}],"maxAttempts":2}"#,
    );
    let w = pmctl(&s.addr, &["wait", "--timeout", "20s", "--json", &ok.to_string()], None);
    assert_eq!(w.status.code(), Some(0), "{}", out(&w));
    let v: serde_json::Value = serde_json::from_slice(&w.stdout).unwrap();
    let cmds = &v["result"]["steps"][0]["commands"];
    assert_eq!((cmds[0]["exitCode"].as_i64(), cmds[0]["stdoutTail"].as_str()), (Some(0), Some("out\n")), "{v}");
    assert_eq!(cmds[0]["stderrTail"].as_str(), Some("err\n"));
    assert_eq!(cmds[1]["exitCode"].as_i64(), Some(0));

    let w = pmctl(&s.addr, &["wait", "--timeout", "20s", &bad.to_string()], None);
    assert_eq!(w.status.code(), Some(2), "{}", out(&w));
    let text = out(&w);
    assert!(text.contains(&format!("{bad} dead")) && text.contains("attempt 2/2"), "{text}");
    assert!(text.contains("step 1 sh: exit 0") && text.contains("step 1 sh: exit 7 in"), "{text}");
    assert!(!text.contains("echo never"), "the step stopped at the failing command: {text}");

    // Not a pipeline: failed at the first attempt, not retried.
    let p = s.client(ConnectOptions::producer()).await;
    let junk = p.submit_one(TaskSpec { max_attempts: 5, ..task("default", b"not json") }).await.unwrap();
    let st = status_until(&p, junk, "failed", |s| s.state() == TaskState::Failed).await;
    assert_eq!(st.attempts, 1);
    assert!(st.reason.contains("invalid task"), "{st:?}");
}
