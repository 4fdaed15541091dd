//! `pmctl` against a real scheduler: the original task JSON is accepted unchanged, bad files are refused
//! with nothing enqueued, stats and dead-letter commands work.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::PathBuf;
use std::time::Duration;

use pm_client::ConnectOptions;
use pm_protocol::pb::NackItem;
use pm_testkit::{pmctl, Scheduler};
use pm_tests::{next_lease, task};

fn example(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    p.to_string_lossy().into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn ready(s: &Scheduler) -> u64 {
    let admin = s.client(ConnectOptions::admin()).await;
    admin.stats().await.unwrap().queues.iter().map(|q| q.ready).sum()
}

#[tokio::test]
async fn submit_original_task_json_unchanged() {
    let s = Scheduler::start(&[]);
    let file = example("ocr-original.json");
    let out = pmctl(&s.addr, &["submit", &file], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id: u64 = stdout(&out).trim().parse().expect("one task id");
    let (a, mut leases) = s.agent().await;
    a.credit("default", 1).await.unwrap();
    let t = next_lease(&mut leases).await;
    assert_eq!(t.task_id, id);
    assert_eq!(t.payload, std::fs::read(&file).unwrap(), "the payload is the file, byte for byte");
}

#[tokio::test]
async fn submit_several_files_and_stdin() {
    let s = Scheduler::start(&[]);
    let out = pmctl(&s.addr, &["submit", &example("hello.json"), &example("commands-dialect.json")], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out).lines().count(), 2);
    let doc = br#"[{"pipeline":[{"executorName":"a","commands":["true"]}],"queue":"q2"},
                  {"commands":[{"executorName":"b","commandLines":["true"]}],"queue":"q2"}]"#;
    let out = pmctl(&s.addr, &["submit", "-"], Some(doc));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out).lines().count(), 2);
    assert_eq!(ready(&s).await, 4);
}

#[tokio::test]
async fn invalid_files_are_refused_and_nothing_is_enqueued() {
    let s = Scheduler::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, "{not json").unwrap();
    let no_pipeline = dir.path().join("nopipe.json");
    std::fs::write(&no_pipeline, r#"{"steps": []}"#).unwrap();
    for bad in [&bad_json, &no_pipeline] {
        let out = pmctl(&s.addr, &["submit", &example("hello.json"), bad.to_str().unwrap()], None);
        assert_eq!(out.status.code(), Some(65));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(bad.file_name().unwrap().to_str().unwrap()), "{err}");
        assert!(err.contains("nothing was submitted"), "{err}");
        assert_eq!(err.lines().count(), 1, "one-line error: {err}");
    }
    assert_eq!(ready(&s).await, 0);
    let out = pmctl(&s.addr, &["submit", "/does/not/exist.json"], None);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn unreachable_server_fails_with_one_line() {
    let out = pmctl("127.0.0.1:1", &["stats"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

#[tokio::test]
async fn stats_and_dead_letters() {
    let s = Scheduler::start(&[]);
    let p = s.client(ConnectOptions::producer()).await;
    let mut spec = task("jobs", br#"{"pipeline":[{"executorName":"x","commands":["false"]}]}"#);
    spec.max_attempts = 1;
    let id = p.submit_one(spec).await.unwrap();
    p.submit_one(task("jobs", b"other")).await.unwrap();
    let (a, mut leases) = s.agent().await;
    a.credit("jobs", 1).await.unwrap();
    let t = next_lease(&mut leases).await;
    assert_eq!(t.task_id, id);
    a.nack(vec![NackItem {
        lease_id: t.lease_id,
        retry_after_ms: 0,
        reason: "exit 1".into(),
        released: false,
        ..Default::default()
    }])
    .await
    .unwrap();

    let out = pmctl(&s.addr, &["stats", "--json"], None);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let q = v["queues"].as_array().unwrap().iter().find(|q| q["queue"] == "jobs").unwrap().clone();
    assert_eq!((q["ready"].as_u64(), q["dead"].as_u64()), (Some(1), Some(1)));

    let out = pmctl(&s.addr, &["dead-letter", "list", "--json"], None);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    assert_eq!(v["taskId"].as_u64(), Some(id));
    assert!(v["reason"].as_str().unwrap().contains("exit 1"));
    assert!(v["payload"].as_str().unwrap().contains("pipeline"));

    // For people: a header and one line per letter.
    let out = pmctl(&s.addr, &["dead-letter", "list"], None);
    let text = stdout(&out);
    assert!(text.starts_with("ID ") && text.contains("REASON"), "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().nth(1).unwrap().starts_with(&id.to_string()), "{text}");
    // A redrive names its ids, or says --all: nothing is redriven by leaving them out.
    let out = pmctl(&s.addr, &["dead-letter", "redrive", "--queue", "jobs"], None);
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_str(stdout(&pmctl(&s.addr, &["stats", "--json"], None)).trim()).unwrap();
    let q = v["queues"].as_array().unwrap().iter().find(|q| q["queue"] == "jobs").unwrap().clone();
    assert_eq!(q["dead"].as_u64(), Some(1), "still dead");

    let out = pmctl(&s.addr, &["dead-letter", "redrive", "--queue", "jobs", &id.to_string()], None);
    assert_eq!(stdout(&out).trim(), "1");
    a.credit("jobs", 2).await.unwrap();
    let mut got = [next_lease(&mut leases).await.task_id, next_lease(&mut leases).await.task_id];
    got.sort();
    assert!(got.contains(&id));
    tokio::time::sleep(Duration::from_millis(50)).await;
}
