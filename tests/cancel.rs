//! `pmctl cancel` end to end: real `pm-scheduler`, `pm-agent` and `pmctl` processes. A cancelled task stops on
//! its agent within a second and never runs again, also after a scheduler restart.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pm_client::{AgentEvent, ConnectOptions};
use pm_protocol::pb::NackItem;
use pm_protocol::ErrorCode;
use pm_testkit::{pmctl, wait_for, Agent, Scheduler};
use pm_tests::{assert_no_lease, next_event, next_lease, submit_json, task};

fn cancel(s: &Scheduler, ids: &[u64]) -> Output {
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    let mut args = vec!["cancel"];
    args.extend(ids.iter().map(String::as_str));
    pmctl(&s.addr, &args, None)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// Lines of a marker file (0 if it does not exist).
fn lines(p: &Path) -> usize {
    read(p).map_or(0, |t| t.lines().count())
}

/// (ready, delayed, leased, dead) summed over every queue, from `pmctl stats --json`.
fn counts(s: &Scheduler) -> (u64, u64, u64, u64) {
    let out = pmctl(&s.addr, &["stats", "--json"], None);
    assert!(out.status.success(), "pmctl stats: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sum = |k: &str| v["queues"].as_array().unwrap().iter().map(|q| q[k].as_u64().unwrap()).sum::<u64>();
    (sum("ready"), sum("delayed"), sum("leased"), sum("dead"))
}

/// True once the process is gone (or a zombie: dead, not yet reaped).
fn dead(pid: &str) -> bool {
    read(Path::new(&format!("/proc/{pid}/stat"))).is_none_or(|s| s.contains(") Z "))
}

/// A task that appends to `dir/runs`, writes its shell's pid to `dir/pid`, then becomes `sleep 30`.
fn sleeper(dir: &Path, extra: &str) -> String {
    format!(
        r#"{{"maxAttempts":1,{extra}"pipeline":[{{"executorName":"sh",
            "commands":["echo run >> {0}/runs; echo $$ > {0}/pid.tmp; mv {0}/pid.tmp {0}/pid; exec sleep 30"]}}]}}"#,
        dir.display()
    )
}

/// Submits a task that touches `dir/sentinel` and waits until it ran: the agent is up and has taken
/// everything ready before it (queues are FIFO).
fn run_sentinel(s: &Scheduler, agent: &Agent, dir: &Path) {
    let task = format!(r#"{{"pipeline":[{{"executorName":"sh","commands":["touch {}/sentinel"]}}]}}"#, dir.display());
    submit_json(s, &task);
    let sentinel = dir.join("sentinel");
    wait_for(Duration::from_secs(20), "the sentinel task", || sentinel.exists().then_some(()));
    // Let the agent's ack land so the stats settle.
    wait_for(Duration::from_secs(10), &format!("an idle queue; agent log:\n{}", agent.log()), || {
        (counts(s) == (0, 0, 0, 0)).then_some(())
    });
}

#[test]
fn cancelling_a_running_task_kills_it_within_a_second_and_it_never_runs_again() {
    let s = Scheduler::start(&["--default-lease", "2s"]);
    let agent = Agent::start(&s.addr, &[]);
    let out = tempfile::tempdir().unwrap();
    let id = submit_json(&s, &sleeper(out.path(), ""));
    let pid = wait_for(Duration::from_secs(20), "the task to start", || {
        read(&out.path().join("pid")).filter(|t| t.ends_with('\n'))
    });
    let pid = pid.trim().to_string();
    assert!(!dead(&pid), "the sleep is running");

    let started = Instant::now();
    let o = cancel(&s, &[id]);
    assert!(o.status.success(), "pmctl cancel: {}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o), format!("{id} cancelled\n"));
    wait_for(Duration::from_secs(1), &format!("the sleep to be killed; agent log:\n{}", agent.log()), || {
        dead(&pid).then_some(())
    });
    eprintln!("killed {:?} after the cancel started", started.elapsed());
    wait_for(Duration::from_secs(5), "the agent to log the cancellation", || {
        agent.log().contains("task cancelled by the scheduler").then_some(())
    });

    // Never again: not redelivered (the agent got its credit back, and a lease would have expired by now),
    // nothing ready, leased or dead (a nack would have dead-lettered it: maxAttempts 1).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(lines(&out.path().join("runs")), 1, "agent log:\n{}", agent.log());
    assert_eq!(counts(&s), (0, 0, 0, 0));
    // A second cancel finds nothing to cancel.
    let o = cancel(&s, &[id]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), format!("{id} not found\n"));
    // The agent still works.
    run_sentinel(&s, &agent, out.path());
    assert_eq!(lines(&out.path().join("runs")), 1);
}

#[test]
fn a_cancelled_ready_task_never_runs_when_an_agent_arrives() {
    let s = Scheduler::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let id = submit_json(&s, &sleeper(out.path(), ""));
    let delayed = submit_json(&s, &sleeper(out.path(), r#""delaySeconds":1,"#));
    assert_eq!(counts(&s), (1, 1, 0, 0));
    let o = cancel(&s, &[id, delayed]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o), format!("{id} cancelled\n{delayed} cancelled\n"));
    assert_eq!(counts(&s), (0, 0, 0, 0));

    let agent = Agent::start(&s.addr, &[]);
    std::thread::sleep(Duration::from_millis(1200)); // past the delayed task's time
    run_sentinel(&s, &agent, out.path());
    assert_eq!(lines(&out.path().join("runs")), 0, "a cancelled task ran; agent log:\n{}", agent.log());
}

#[test]
fn cancelling_an_unknown_id_fails_with_not_found() {
    let s = Scheduler::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let o = cancel(&s, &[424_242]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "424242 not found\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1 task(s) were not cancelled"), "{err}");

    // Mixed: the known one is cancelled, the unknown one reported, the exit code says not everything was.
    let id = submit_json(&s, &sleeper(out.path(), ""));
    let o = cancel(&s, &[424_242, id]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), format!("424242 not found\n{id} cancelled\n"));
    assert_eq!(counts(&s), (0, 0, 0, 0));

    // Usage: at least one id, and ids are numbers.
    assert_eq!(pmctl(&s.addr, &["cancel"], None).status.code(), Some(64));
    assert_eq!(pmctl(&s.addr, &["cancel", "abc"], None).status.code(), Some(64));
}

#[test]
fn a_cancelled_task_does_not_come_back_after_a_scheduler_restart() {
    cancelled_task_stays_cancelled_across_restarts(&[]);
}

#[test]
fn a_cancelled_task_does_not_come_back_after_a_restart_with_the_sled_store() {
    cancelled_task_stays_cancelled_across_restarts(&["--store", "sled"]);
}

fn cancelled_task_stays_cancelled_across_restarts(flags: &[&str]) {
    let mut s = Scheduler::start(flags);
    let out = tempfile::tempdir().unwrap();
    let cancelled = submit_json(&s, &sleeper(out.path(), ""));
    let kept = submit_json(&s, &sleeper(out.path(), ""));
    let o = cancel(&s, &[cancelled]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    s.restart(); // SIGKILL: only what was durable survives
    assert_eq!(counts(&s), (1, 0, 0, 0), "only the kept task is back");

    let agent = Agent::start(&s.addr, &[]);
    let pid = wait_for(Duration::from_secs(20), "the kept task to start", || {
        read(&out.path().join("pid")).filter(|t| t.ends_with('\n'))
    });
    // The kept task runs, and it is the only one that ever ran.
    assert_eq!(lines(&out.path().join("runs")), 1, "agent log:\n{}", agent.log());
    let o = cancel(&s, &[kept]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pid = pid.trim().to_string();
    wait_for(Duration::from_secs(1), "the kept task to be killed", || dead(&pid).then_some(()));
    run_sentinel(&s, &agent, out.path());
    assert_eq!(lines(&out.path().join("runs")), 1, "agent log:\n{}", agent.log());
    // And after another restart neither comes back.
    s.restart();
    assert_eq!(counts(&s), (0, 0, 0, 0));
}

/// The wire level through the client: ids spread over several shards, the Revoke an agent connection gets,
/// fencing of the revoked lease, and who may cancel.
#[tokio::test]
async fn cancel_through_the_client_revokes_the_lease_and_answers_per_id() {
    let s = Scheduler::start(&["--shards", "4"]);
    let p = s.client(ConnectOptions::producer()).await;
    // Queues land on different shards; every shard answers for its own ids.
    let mut ids = Vec::new();
    for q in ["q0", "q1", "q2", "q3", "q4", "q5"] {
        ids.push(p.submit_one(task(q, b"x")).await.unwrap());
    }
    let (a, mut leases) = s.agent().await;
    a.credit("q0", 1).await.unwrap();
    let t = next_lease(&mut leases).await;
    assert_eq!(t.task_id, ids[0]);

    let mut wanted = ids.clone();
    wanted.push(987_654);
    let mut expected = vec![ErrorCode::Ok; ids.len()];
    expected.push(ErrorCode::NotFound);
    assert_eq!(p.cancel(wanted).await.unwrap(), expected);
    match next_event(&mut leases).await {
        AgentEvent::Revoked(r) => assert_eq!((r.lease_id, r.task_id), (t.lease_id, t.task_id)),
        other => panic!("expected a revocation, got {other:?}"),
    }
    assert_eq!(a.extend(vec![t.lease_id], 0).await.unwrap(), vec![ErrorCode::StaleLease]);
    assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::StaleLease]);
    let nack = NackItem {
        lease_id: t.lease_id,
        retry_after_ms: 0,
        reason: String::new(),
        released: false,
        ..Default::default()
    };
    assert_eq!(a.nack(vec![nack]).await.unwrap(), vec![ErrorCode::StaleLease]);
    for q in ["q0", "q1", "q2", "q3", "q4", "q5"] {
        a.credit(q, 1).await.unwrap();
    }
    assert_no_lease(&mut leases, Duration::from_millis(300)).await;
    assert_eq!(p.cancel(vec![]).await.unwrap(), vec![], "an empty cancel is answered at once");

    // Admins may cancel; agents may not (and their connection stays usable).
    let id = p.submit_one(task("q9", b"y")).await.unwrap();
    let err = a.cancel(vec![id]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RoleNotAllowed));
    assert_eq!(a.extend(vec![], 0).await.unwrap(), vec![], "the agent connection is still open");
    let admin = s.client(ConnectOptions::admin()).await;
    assert_eq!(admin.cancel(vec![id, id]).await.unwrap(), vec![ErrorCode::Ok, ErrorCode::NotFound]);
    let q = admin.stats().await.unwrap().queues;
    assert!(q.iter().all(|q| q.ready + q.leased + q.delayed == 0), "{q:?}");
}
