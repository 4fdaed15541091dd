//! Tokens per role on the scheduler's protocol, through real processes: the right token per role, refusals
//! with a clear code and message (missing, unknown, another role's, expired), tokens reloaded when their file
//! changes, the loopback-only rule without tokens, peer tokens between cluster nodes, and a real agent
//! presenting its token.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use pm_client::{Client, Cluster, ClusterOptions, ConnectOptions, ErrorKind};
use pm_protocol::pb::TaskSpec;
use pm_protocol::ErrorCode;
use pm_task::ring::Ring;
use pm_testkit::{pmctl, Scheduler, SchedulerCluster};
use pm_tests::{next_lease, task};

const PRODUCER: &str = "producer-secret-0001";
const AGENT: &str = "agent-secret-000001";
const ADMIN: &str = "admin-secret-000001";
const PEER: &str = "peer-secret-0000001";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Token files for every role in `dir`, and the flags naming them.
fn token_flags(dir: &Path) -> Vec<String> {
    let expired = format!("{PRODUCER}\nold-producer-secret not-after=2020-01-01T00:00:00Z\n");
    let files = [
        ("--producer-token-file", write(dir, "producer", &expired)),
        ("--agent-token-file", write(dir, "agent", &format!("{AGENT}\n"))),
        ("--admin-token-file", write(dir, "admin", &format!("# rotated monthly\n{ADMIN}\n"))),
        ("--peer-token-file", write(dir, "peer", &format!("{PEER}\n"))),
    ];
    files.iter().flat_map(|(f, p)| [f.to_string(), p.display().to_string()]).collect()
}

async fn refused(addr: &str, opts: ConnectOptions) -> String {
    match Client::connect(addr, opts.reconnect(false)).await {
        Ok(_) => panic!("the handshake was accepted"),
        Err(e) => {
            assert_eq!((e.kind(), e.code()), (ErrorKind::Handshake, Some(ErrorCode::Unauthorized)), "{e}");
            e.message().to_string()
        }
    }
}

#[tokio::test]
async fn each_role_needs_its_own_token() {
    let dir = tempfile::tempdir().unwrap();
    let flags = token_flags(dir.path());
    let s = Scheduler::start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let p = s.client(ConnectOptions::producer().token(PRODUCER)).await;
    let id = p.submit_one(task("sec", b"x")).await.unwrap();
    let (a, mut leases) = Client::connect_agent(&s.addr, ConnectOptions::agent().token(AGENT)).await.unwrap();
    a.credit("sec", 1).await.unwrap();
    assert_eq!(next_lease(&mut leases).await.task_id, id);
    let admin = s.client(ConnectOptions::admin().token(ADMIN)).await;
    assert!(admin.stats().await.unwrap().queues.iter().any(|q| q.queue == "sec"));

    let msg = refused(&s.addr, ConnectOptions::agent().token(PRODUCER)).await;
    assert!(msg.contains("not valid for role agent"), "a producer token cannot lease: {msg}");
    let msg = refused(&s.addr, ConnectOptions::producer().token(AGENT)).await;
    assert!(msg.contains("not valid for role producer"), "an agent token cannot submit: {msg}");
    let msg = refused(&s.addr, ConnectOptions::admin().token(AGENT)).await;
    assert!(msg.contains("not valid for role admin"), "{msg}");
    assert!(refused(&s.addr, ConnectOptions::producer()).await.contains("required"));
    assert!(refused(&s.addr, ConnectOptions::producer().token("guess-guess-guess")).await.contains("not valid"));
    assert!(refused(&s.addr, ConnectOptions::producer().token("old-producer-secret")).await.contains("expired"));
    // The log never shows a token.
    let log = s.log_tail();
    for t in [PRODUCER, AGENT, ADMIN, PEER, "guess-guess-guess"] {
        assert!(!log.contains(t), "token in the log:\n{log}");
    }
}

/// `pmctl --token TOKEN args...`: (exit code, stdout, stderr).
fn pmctl_as(addr: &str, token: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["--token", token];
    all.extend_from_slice(args);
    let out = pmctl(addr, &all, None);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pmctl_presents_the_role_each_command_needs() {
    let dir = tempfile::tempdir().unwrap();
    let flags = token_flags(dir.path());
    let s = Scheduler::start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let file = dir.path().join("task.json");
    std::fs::write(&file, r#"{"queue": "roles", "pipeline": [{"executorName": "sh", "commands": ["true"]}]}"#).unwrap();
    let file = file.display().to_string();
    let app = dir.path().join("app.json");
    let def = r#"{"name": "roles", "pipelines": [{"name": "p", "params": {"v": {}},
        "template": {"pipeline": [{"executorName": "sh", "commands": ["echo {{v}}"]}]}}]}"#;
    std::fs::write(&app, def).unwrap();

    // An admin token does what a producer token does: submit (files and --app), status, stats.
    let (code, _, err) = pmctl_as(&s.addr, ADMIN, &["app", "create", &app.display().to_string()]);
    assert_eq!(code, Some(0), "{err}");
    for token in [ADMIN, PRODUCER] {
        // The second round submits the same tasks: each line is then `ID  duplicate of ID`.
        let first = |out: &str| out.split_whitespace().next().unwrap_or_default().to_string();
        let (code, out, err) = pmctl_as(&s.addr, token, &["submit", &file]);
        assert_eq!(code, Some(0), "submit: {err}");
        let id = first(&out);
        let (code, out, err) =
            pmctl_as(&s.addr, token, &["submit", "--app", "roles", "--pipeline", "p", "--param", "v=1"]);
        assert_eq!(code, Some(0), "submit --app: {err}");
        let id2 = first(&out);
        let (code, out, err) = pmctl_as(&s.addr, token, &["status", &id, &id2]);
        assert_eq!(code, Some(0), "status: {err}");
        assert!(out.to_lowercase().contains("ready"), "{out}");
        let (code, out, err) = pmctl_as(&s.addr, token, &["stats"]);
        assert_eq!(code, Some(0), "stats: {err}");
        assert!(out.contains("roles/p"), "{out}");
        let (code, _, err) = pmctl_as(&s.addr, token, &["dead-letter", "list"]);
        assert_eq!(code, Some(0), "dead-letter list: {err}");
    }
    // A producer token still cannot change what needs admin, and an agent token cannot submit or read.
    let (code, _, err) = pmctl_as(&s.addr, PRODUCER, &["dead-letter", "redrive", "--queue", "roles", "--all"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not valid for role admin"), "{err}");
    let (code, _, err) = pmctl_as(&s.addr, PRODUCER, &["app", "delete", "roles"]);
    assert!(code == Some(1) && err.contains("not valid for role admin"), "{err}");
    for args in [&["submit", file.as_str()][..], &["stats"][..]] {
        let (code, _, err) = pmctl_as(&s.addr, AGENT, args);
        assert!(code == Some(1) && err.contains("not valid for role producer"), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn a_rotated_token_file_is_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let flags = token_flags(dir.path());
    let s = Scheduler::start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let admin_file = dir.path().join("admin");
    std::fs::write(&admin_file, "new-admin-secret-0001\n").unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if Client::connect(&s.addr, ConnectOptions::admin().token("new-admin-secret-0001").reconnect(false))
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the new token was not accepted within 10 s");
    assert!(refused(&s.addr, ConnectOptions::admin().token(ADMIN)).await.contains("not valid"), "the old one is gone");
    // A broken file keeps the tokens in force.
    std::fs::write(&admin_file, "short\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    Client::connect(&s.addr, ConnectOptions::admin().token("new-admin-secret-0001").reconnect(false)).await.unwrap();
}

#[test]
fn without_tokens_only_loopback_unless_insecure() {
    let out = std::process::Command::new(pm_testkit::bin("pm-scheduler"))
        .args(["--listen", "0.0.0.0:0", "--http-listen", "off", "--data"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure") && err.contains("token"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let s = Scheduler::start_at("0.0.0.0:0", &dir.path().join("data"), None, &["--insecure"]);
    assert!(s.addr.starts_with("0.0.0.0:"), "{}", s.addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_nodes_steal_with_their_peer_token_and_a_real_agent_presents_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = token_flags(dir.path());
    flags.extend(["--steal-interval".into(), "20ms".into()]);
    let c = SchedulerCluster::start(2, &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let members = c.members();
    let ring = Ring::new(members.clone()).unwrap();
    // The agent lives on node 0; the tasks belong to node 1: they reach it only if node 0 may steal from node 1.
    let agent_id = (0..).map(|i| format!("agent-{i}")).find(|k| ring.owner(k.as_bytes()) == Some(0)).unwrap();
    let token_file = write(dir.path(), "agent-token", &format!("{AGENT}\n"));
    let agent = pm_testkit::Agent::start(
        &members.join(","),
        &["--client-id", &agent_id, "--token-file", &token_file.display().to_string()],
    );
    let out = tempfile::tempdir().unwrap();
    let keys: Vec<String> =
        (0..).map(|i| format!("k{i}")).filter(|k| ring.owner(k.as_bytes()) == Some(1)).take(5).collect();
    let tasks = keys
        .iter()
        .map(|k| {
            let cmd = format!("echo ok > {}/{k}", out.path().display());
            let doc = serde_json::json!({"key": k, "pipeline": [{"executorName": "sh", "commands": [cmd]}]});
            TaskSpec { payload: Bytes::from(doc.to_string()), key: k.clone(), ..Default::default() }
        })
        .collect();
    let p = Cluster::connect(&members, ConnectOptions::producer().token(PRODUCER), ClusterOptions::default())
        .await
        .unwrap();
    p.submit(tasks).await.unwrap();
    pm_testkit::wait_for(Duration::from_secs(20), "node 1's tasks ran on node 0's agent", || {
        keys.iter().all(|k| out.path().join(k).exists()).then_some(())
    });
    assert!(!agent.log().contains(AGENT), "the agent logged its token");
}
