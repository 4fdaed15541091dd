//! `pmctl` and the Rust client on a 3-node cluster of real scheduler processes: a submit while a member is
//! down reports every task (id or error, in order) and running it again duplicates none; the client's batch
//! API answers per task when a member dies.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use pm_client::{Client, Cluster, ClusterOptions, ConnectOptions, ErrorKind};
use pm_protocol::pb::TaskSpec;
use pm_protocol::ErrorCode;
use pm_task::ring::Ring;
use pm_testkit::{pmctl, SchedulerCluster};
use serde_json::{json, Value};

/// Keys that `ring` places on member `ordinal`.
fn keys_of(ring: &Ring, ordinal: usize, n: usize, prefix: &str) -> Vec<String> {
    (0..).map(|i| format!("{prefix}-{i}")).filter(|k| ring.owner(k.as_bytes()) == Some(ordinal)).take(n).collect()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn json_of(o: &std::process::Output) -> Value {
    serde_json::from_str(stdout(o).trim()).unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(o), stderr(o)))
}

/// Ready tasks of `queue` over every member, from each member's `pmctl stats --json`.
fn ready(members: &[String], queue: &str) -> u64 {
    members
        .iter()
        .map(|m| {
            let stats = json_of(&pmctl(m, &["stats", "--json"], None));
            stats["queues"]
                .as_array()
                .unwrap()
                .iter()
                .find(|q| q["queue"] == queue)
                .map_or(0, |q| q["ready"].as_u64().unwrap())
        })
        .sum()
}

#[test]
fn a_submit_with_a_member_down_reports_every_task_and_running_it_again_duplicates_none() {
    let mut c = SchedulerCluster::start(3, &[]);
    let members = c.members();
    let ring = Ring::new(members.clone()).unwrap();
    // Four keyed tasks per member, interleaved, and two without a key (placed by their idempotency key).
    let mut keys: Vec<String> = Vec::new();
    let per: Vec<Vec<String>> = (0..3).map(|o| keys_of(&ring, o, 4, "sub")).collect();
    for i in 0..4 {
        keys.extend(per.iter().map(|k| k[i].clone()));
    }
    keys.extend(["".to_string(), "".to_string()]);
    let tasks: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| json!({"queue": "sub", "key": k, "pipeline": [{"executorName": "sh", "commands": [format!("echo {i}")]}]}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.json");
    std::fs::write(&file, Value::Array(tasks).to_string()).unwrap();
    let file = file.display().to_string();

    c.nodes[1].kill();
    let out = pmctl(&members[0], &["submit", &file], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), keys.len(), "one line per task: {lines:?}");
    let mut first_ids: HashMap<usize, u64> = HashMap::new();
    for (i, (key, line)) in keys.iter().zip(&lines).enumerate() {
        if !key.is_empty() && ring.owner(key.as_bytes()) == Some(1) {
            assert!(line.starts_with("error: not submitted: "), "task {i} of the down member: {line}");
        } else if let Ok(id) = line.parse::<u64>() {
            if !key.is_empty() {
                assert_eq!(Some(Ring::ordinal_of_task(id)), ring.owner(key.as_bytes()), "task {i} on its owner");
            }
            first_ids.insert(i, id);
        } else {
            // A task without a key whose idempotency key places it on the down member.
            assert!(key.is_empty() && line.starts_with("error: not submitted: "), "task {i}: {line}");
        }
    }
    assert!(first_ids.len() >= 8, "{lines:?}");
    let failed = keys.len() - first_ids.len();
    assert!(
        stderr(&out).contains(&format!("{failed} of {} task(s) were not submitted", keys.len())),
        "{}",
        stderr(&out)
    );

    // The member is back: the same command sends the missing tasks; the others are duplicates of themselves.
    c.nodes[1].restart();
    let out = pmctl(&members[2], &["submit", "--json", &file], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json_of(&out);
    let results = v.as_array().unwrap();
    assert_eq!(results.len(), keys.len());
    for (i, r) in results.iter().enumerate() {
        assert_eq!((r["index"].as_u64(), r["file"].as_str()), (Some(i as u64), Some(file.as_str())), "{r}");
        assert!(r["idempotencyKey"].as_str().unwrap().starts_with("pmctl-"), "{r}");
        match first_ids.get(&i) {
            Some(id) => assert_eq!((r["taskId"].as_u64(), r["duplicate"].as_bool()), (Some(*id), Some(true)), "{r}"),
            None => assert_eq!(r["duplicate"], false, "{r}"),
        }
    }
    // Once more, for people: every line says it is a duplicate.
    let out = pmctl(&members[0], &["submit", &file], None);
    assert!(out.status.success(), "{}", stderr(&out));
    for line in stdout(&out).lines() {
        let (id, rest) = line.split_once("  ").unwrap();
        assert_eq!(rest, format!("duplicate of {id}"), "{line}");
    }
    // Each task is queued exactly once, over the whole cluster.
    assert_eq!(ready(&members, "sub"), keys.len() as u64);
    // Opting out of the keys enqueues them again.
    let out = pmctl(&members.join(","), &["submit", "--no-idempotency-key", &file], None);
    assert!(out.status.success() && !stdout(&out).contains("duplicate"), "{}", stdout(&out));
    assert_eq!(ready(&members, "sub"), 2 * keys.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_batch_answers_per_task_when_a_member_dies_mid_batch() {
    // A small max batch: each member's part goes in several requests.
    let mut c = SchedulerCluster::start(3, &["--max-batch", "3"]);
    let members = c.members();
    let ring = Ring::new(members.clone()).unwrap();
    let cluster =
        Cluster::connect(&[members[0].clone()], ConnectOptions::producer().reconnect(false), ClusterOptions::default())
            .await
            .unwrap();
    let spec = |k: &str| TaskSpec {
        queue: "batch".into(),
        key: k.into(),
        payload: Bytes::from(k.to_string()),
        ..Default::default()
    };
    // Every member's connection is open...
    let warm: Vec<TaskSpec> = (0..3).flat_map(|o| keys_of(&ring, o, 1, "warm")).map(|k| spec(&k)).collect();
    assert!(cluster.submit_each(warm).await.iter().all(Result::is_ok));
    // ...when member 2 dies.
    c.nodes[2].kill();
    let keys: Vec<String> = (0..3).flat_map(|o| keys_of(&ring, o, 7, "b")).collect();
    let results = cluster.submit_each(keys.iter().map(|k| spec(k)).collect()).await;
    assert_eq!(results.len(), keys.len());
    for (k, r) in keys.iter().zip(&results) {
        let owner = ring.owner(k.as_bytes()).unwrap();
        match r {
            Ok(r) if owner != 2 => {
                assert_eq!(r.code, ErrorCode::Ok as i32, "{r:?}");
                assert_eq!(Ring::ordinal_of_task(r.task_id), owner);
            }
            Err(e) if owner == 2 => {
                assert!(
                    matches!(
                        e.kind(),
                        ErrorKind::NotSent | ErrorKind::Disconnected | ErrorKind::Connect | ErrorKind::Closed
                    ),
                    "{e}"
                )
            }
            other => panic!("key {k} of member {owner}: {other:?}"),
        }
    }
    // More than a batch each: the surviving members queued all of theirs.
    let p = Client::connect(&members[1], ConnectOptions::producer()).await.unwrap();
    let q = p.stats().await.unwrap().queues.into_iter().find(|q| q.queue == "batch").unwrap();
    assert_eq!(q.ready, 8, "7 tasks and the warm-up one");
}
