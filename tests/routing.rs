//! Capability routing and queue limits against real processes: agents declare their executors and get only
//! the tasks they can run; a task for an executor nobody has waits, is reported (`pmctl why`, `pmctl stats`)
//! and runs once a capable agent connects; with `max-per-key=1` the tasks of a key never overlap while other
//! keys go on; a rate limit spaces the leases out.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::time::{Duration, Instant};

use pm_client::ConnectOptions;
use pm_protocol::pb::TaskSpec;
use pm_testkit::{pmctl, Agent, Scheduler};
use pm_tests::{next_lease, submit_json, task};

fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A task whose one step on `executor` records which agent ran it (its task directory) in `dir/<name>`.
fn recording(executor: &str, dir: &Path, name: &str) -> String {
    format!(r#"{{"pipeline":[{{"executorName":"{executor}","commands":["pwd > {}/{name}"]}}]}}"#, dir.display())
}

fn wait_all(s: &Scheduler, ids: &[u64]) {
    let mut args = vec!["wait".to_string(), "--timeout".into(), "60s".into()];
    args.extend(ids.iter().map(u64::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let w = pmctl(&s.addr, &args, None);
    assert_eq!(w.status.code(), Some(0), "{}", out(&w));
}

#[tokio::test]
async fn each_task_goes_only_to_an_agent_with_its_executors() {
    let s = Scheduler::start(&[]);
    let alpha = Agent::start(&s.addr, &["--executors", "alpha", "--client-id", "alpha"]);
    let beta = Agent::start(&s.addr, &["--executors", "beta,common", "--client-id", "beta"]);
    let rec = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(submit_json(&s, &recording("alpha", rec.path(), &format!("a{i}"))));
        ids.push(submit_json(&s, &recording("beta", rec.path(), &format!("b{i}"))));
    }
    // Needs both of beta's executors: only beta runs it.
    let both = format!(
        r#"{{"pipeline":[{{"executorName":"beta","commands":["true"]}},{{"executorName":"common","commands":["pwd > {}/both"]}}]}}"#,
        rec.path().display()
    );
    ids.push(submit_json(&s, &both));
    let gamma = submit_json(&s, &recording("gamma", rec.path(), "g"));
    wait_all(&s, &ids);
    let ran_in = |name: &str| std::fs::read_to_string(rec.path().join(name)).unwrap();
    for i in 0..8 {
        assert!(ran_in(&format!("a{i}")).starts_with(&alpha.work.display().to_string()), "alpha's task ran elsewhere");
        assert!(ran_in(&format!("b{i}")).starts_with(&beta.work.display().to_string()), "beta's task ran elsewhere");
    }
    assert!(ran_in("both").starts_with(&beta.work.display().to_string()));
    assert!(!alpha.log().contains("unknown executor") && !beta.log().contains("unknown executor"));

    // Nobody has gamma: the task waits, and the scheduler says why.
    let why = pmctl(&s.addr, &["why", &gamma.to_string()], None);
    let text = out(&why);
    assert!(text.contains("no connected agent of queue `default` has the executors `gamma`"), "{text}");
    assert!(text.contains("[alpha]") && text.contains("[beta, common]"), "{text}");
    let stats = pmctl(&s.addr, &["stats", "--json"], None);
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(v["queues"][0]["waitingExecutor"], 1, "{v}");
    assert_eq!(v["queues"][0]["ready"], 1, "{v}");
    let st = s.client(ConnectOptions::producer()).await.status(vec![gamma]).await.unwrap().remove(0);
    assert_eq!(st.attempts, 0, "never leased to an agent that would fail it");

    // A capable agent connects: it runs at once.
    let g = Agent::start(&s.addr, &["--executors", "gamma", "--client-id", "gamma"]);
    wait_all(&s, &[gamma]);
    assert!(ran_in("g").starts_with(&g.work.display().to_string()));
    let stats = pmctl(&s.addr, &["stats", "--json"], None);
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(v["queues"][0]["waitingExecutor"], 0, "{v}");
}

/// `(start, end)` in ns from a file of `start end` lines.
fn spans(file: &Path) -> Vec<(u128, u128)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|n| n.parse::<u128>().ok());
            Some((it.next()??, it.next()??))
        })
        .collect()
}

fn overlap(a: (u128, u128), b: (u128, u128)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

#[tokio::test]
async fn with_one_per_key_the_tasks_of_a_key_never_overlap_and_other_keys_go_on() {
    let s = Scheduler::start(&["--queue-limit", "default:max-per-key=1"]);
    let rec = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for key in ["a", "b", "c"] {
        for _ in 0..4 {
            let file = rec.path().join(key);
            let t = format!(
                r#"{{"pipeline":[{{"executorName":"sh","commands":["s=$(date +%s%N); sleep 0.3; echo $s $(date +%s%N) >> {}"]}}],"key":"{key}"}}"#,
                file.display()
            );
            ids.push(submit_json(&s, &t));
        }
    }
    // Before any agent: nothing runs. Then one agent running 6 at once: at most one per key.
    let _agent = Agent::start(&s.addr, &["--concurrency", "6"]);
    let p = s.client(ConnectOptions::producer()).await;
    let mut parked = None;
    for _ in 0..500 {
        parked = p.status(ids.clone()).await.unwrap().into_iter().find(|st| st.reason.contains("max-per-key 1"));
        if parked.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let parked = parked.expect("a task parked under its key");
    assert!(parked.reason.contains("has 1 running task(s)"), "{parked:?}");
    wait_all(&s, &ids);
    let by_key: Vec<Vec<(u128, u128)>> = ["a", "b", "c"].iter().map(|k| spans(&rec.path().join(k))).collect();
    for (k, sp) in by_key.iter().enumerate() {
        assert_eq!(sp.len(), 4, "key {k}: {sp:?}");
        for i in 0..sp.len() {
            for j in i + 1..sp.len() {
                assert!(!overlap(sp[i], sp[j]), "two tasks of one key overlapped: {sp:?}");
            }
        }
    }
    let across = by_key[0].iter().any(|a| by_key[1].iter().chain(&by_key[2]).any(|b| overlap(*a, *b)));
    assert!(across, "other keys went on meanwhile: {by_key:?}");
}

#[tokio::test]
async fn a_rate_limit_spaces_the_leases_out() {
    let s = Scheduler::start(&["--queue-limit", "slow:rate=5,burst=1"]);
    let p = s.client(ConnectOptions::producer()).await;
    let specs: Vec<TaskSpec> = (0..6).map(|i| task("slow", format!("t{i}").as_bytes())).collect();
    p.submit(specs).await.unwrap();
    let fast: Vec<TaskSpec> = (0..20).map(|i| task("fast", format!("f{i}").as_bytes())).collect();
    p.submit(fast).await.unwrap();
    let (a, mut leases) = s.agent().await;
    let started = Instant::now();
    a.credit("fast", 20).await.unwrap();
    for _ in 0..20 {
        next_lease(&mut leases).await;
    }
    let fast_took = started.elapsed();
    let started = Instant::now();
    a.credit("slow", 6).await.unwrap();
    next_lease(&mut leases).await;
    let st = p.status(vec![2]).await.unwrap().remove(0);
    assert!(st.reason.contains("rate limit (5/s)") || st.state() != pm_protocol::pb::TaskState::Ready, "{st:?}");
    for _ in 1..6 {
        next_lease(&mut leases).await;
    }
    // Five more leases at 5 per second: at least a second, whatever the machine's speed.
    assert!(started.elapsed() >= Duration::from_millis(950), "6 leases in {:?}", started.elapsed());
    assert!(fast_took < Duration::from_secs(3), "the other queue is not limited: 20 leases in {fast_took:?}");
}
