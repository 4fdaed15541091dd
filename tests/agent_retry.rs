//! End to end: a task's retry policy (`retry`: attempts, backoff, exit codes not worth retrying), per task and
//! per pipeline template, with real `pm-scheduler` and `pm-agent` processes.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::time::Duration;

use pm_client::{Client, ConnectOptions};
use pm_protocol::pb::{TaskState, TaskStatus};
use pm_testkit::{wait_for, Agent, Scheduler};
use pm_tests::submit_json;

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs")).unwrap_or_default().lines().count()
}

async fn status(p: &Client, id: u64) -> TaskStatus {
    p.status(vec![id]).await.unwrap().remove(0)
}

/// Waits until the task is in a final state and returns its status.
async fn finished(p: &Client, id: u64, agent: &Agent) -> TaskStatus {
    for _ in 0..2000 {
        let st = status(p, id).await;
        if matches!(st.state(), TaskState::Succeeded | TaskState::Failed | TaskState::Dead | TaskState::Cancelled) {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("task {id} did not finish; agent log:\n{}", agent.log());
}

/// A task's own backoff overrides the agent's: with the agent's first delay at 60 s, a task asking for 50 ms
/// (constant) uses its `retry.maxAttempts` of 3 in moments and is dead-lettered.
#[tokio::test]
async fn a_tasks_backoff_and_max_attempts_override_the_agents() {
    let s = Scheduler::start(&[]);
    let agent = Agent::start(&s.addr, &["--retry-backoff-ms", "60000"]);
    let p = s.client(ConnectOptions::producer()).await;
    let out = tempfile::tempdir().unwrap();
    let task = format!(
        r#"{{"retry":{{"maxAttempts":3,"backoff":{{"initialMs":50,"multiplier":1}}}},
            "pipeline":[{{"executorName":"sh","commands":["echo run >> {}/runs; exit 1"]}}]}}"#,
        out.path().display()
    );
    let id = submit_json(&s, &task);
    let st = finished(&p, id, &agent).await;
    assert_eq!((st.state(), st.attempts, st.max_attempts), (TaskState::Dead, 3, 3), "{}", st.reason);
    assert_eq!(runs(out.path()), 3);
}

/// Without `retry`, the agent's backoff holds; with a long `initialMs`, the task waits delayed after its first
/// failure (the default of 1 s would have run it again long before).
#[tokio::test]
async fn a_long_initial_delay_holds_the_retry_back() {
    let s = Scheduler::start(&[]);
    let agent = Agent::start(&s.addr, &["--retry-backoff-ms", "50"]);
    let p = s.client(ConnectOptions::producer()).await;
    let out = tempfile::tempdir().unwrap();
    let slow = format!(
        r#"{{"retry":{{"backoff":{{"initialMs":600000}}}},"maxAttempts":5,
            "pipeline":[{{"executorName":"sh","commands":["echo run >> {}/runs; exit 1"]}}]}}"#,
        out.path().display()
    );
    let fast_dir = tempfile::tempdir().unwrap();
    let fast = format!(
        r#"{{"maxAttempts":3,"pipeline":[{{"executorName":"sh","commands":["echo run >> {}/runs; exit 1"]}}]}}"#,
        fast_dir.path().display()
    );
    let slow_id = submit_json(&s, &slow);
    let fast_id = submit_json(&s, &fast);
    // The task without a policy uses the agent's 50 ms backoff: 3 runs, dead.
    assert_eq!(finished(&p, fast_id, &agent).await.state(), TaskState::Dead);
    let st = status(&p, slow_id).await;
    assert_eq!((st.state(), st.attempts), (TaskState::Delayed, 1), "log:\n{}", agent.log());
    assert_eq!(runs(out.path()), 1);
}

/// An exit code listed in `retry.nonRetryableExitCodes` fails the task at once, with its reason; another exit
/// code is retried as usual.
#[tokio::test]
async fn a_non_retryable_exit_code_fails_the_task_at_once() {
    let s = Scheduler::start(&[]);
    let agent = Agent::start(&s.addr, &["--retry-backoff-ms", "50"]);
    let p = s.client(ConnectOptions::producer()).await;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let doc = |dir: &Path, code: u8| {
        format!(
            r#"{{"maxAttempts":5,"retry":{{"nonRetryableExitCodes":[2,127]}},
                "pipeline":[{{"executorName":"sh","commands":["echo run >> {}/runs; echo no such host >&2; exit {code}"]}}]}}"#,
            dir.display()
        )
    };
    let fails = submit_json(&s, &doc(a.path(), 2));
    let retried = submit_json(&s, &doc(b.path(), 3));
    let st = finished(&p, fails, &agent).await;
    assert_eq!((st.state(), st.attempts), (TaskState::Failed, 1), "{}", st.reason);
    assert!(st.reason.contains("exit code 2 is not retried") && st.reason.contains("no such host"), "{}", st.reason);
    assert_eq!(runs(a.path()), 1);
    let st = finished(&p, retried, &agent).await;
    assert_eq!((st.state(), st.attempts), (TaskState::Dead, 5), "{}", st.reason);
    assert_eq!(runs(b.path()), 5);
}

/// A pipeline template's `retry` applies to every task submitted to it (here over the HTTP API).
#[tokio::test]
async fn a_templates_retry_policy_applies_to_its_tasks() {
    let s = Scheduler::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let def = serde_json::json!({"name": "get", "params": {"code": {}}, "template": {
        "retry": {"maxAttempts": 4, "nonRetryableExitCodes": [6]},
        "pipeline": [{"executorName": "sh",
                      "commands": [format!("echo run >> {}/runs; exit {{{{code}}}}", out.path().display())]}]}});
    let http = s.http_addr.clone().unwrap();
    let post = |path: &str, body: &serde_json::Value| {
        pm_tests::http(&http, "POST", path, &[("Content-Type", "application/json")], &serde_json::to_vec(body).unwrap())
    };
    let r = post("/api/applications/web/pipelines", &def);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let agent = Agent::start(&s.addr, &["--queue", "web/*", "--queue-refresh", "200ms"]);
    let r = post("/api/applications/web/pipelines/get", &serde_json::json!({"code": "6"}));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["taskId"].as_u64().unwrap();
    let p = s.client(ConnectOptions::producer()).await;
    let st = finished(&p, id, &agent).await;
    assert_eq!((st.state(), st.attempts, st.max_attempts), (TaskState::Failed, 1, 4), "{}", st.reason);
    assert!(st.reason.contains("exit code 6 is not retried"), "{}", st.reason);
    wait_for(Duration::from_secs(5), "the run", || (runs(out.path()) == 1).then_some(()));
}
