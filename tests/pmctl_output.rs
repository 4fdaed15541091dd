//! `pmctl` output for people, with a real `pm-agent` running the commands: `status` shows each command's
//! output tails and the task's place in its flow, a timeout reads `timed out after N s`, a dead-lettered task
//! has its finish time, `flow` marks the branch each follow-up came from and names the flow, a repeated
//! idempotency key says `duplicate of ID`, and `wait --progress` prints the state changes as they happen.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use pm_testkit::{pmctl, wait_for, Agent, Scheduler};
use pm_tests::submit_json;

fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `pmctl wait` for `id` (20 s at most); returns its output.
fn wait(s: &Scheduler, id: u64) -> std::process::Output {
    pmctl(&s.addr, &["wait", "--timeout", "20s", &id.to_string()], None)
}

#[test]
fn status_shows_output_tails_timeouts_and_the_finish_of_a_dead_letter() {
    let s = Scheduler::start(&[]);
    let _agent = Agent::start(&s.addr, &["--retry-backoff-ms", "10"]);
    let hello = submit_json(&s, r#"{"pipeline":[{"executorName":"sh","commands":["echo hello; echo careful >&2"]}]}"#);
    assert_eq!(wait(&s, hello).status.code(), Some(0));
    let text = out(&pmctl(&s.addr, &["status", &hello.to_string()], None));
    assert!(text.contains("step 1 sh: exit 0 in "), "{text}");
    assert!(text.contains("\n    stdout: hello\n    stderr: careful\n"), "{text}");

    let slow = submit_json(
        &s,
        r#"{"maxAttempts":1,"pipeline":[{"executorName":"sh","timeoutSeconds":1,"commands":["echo started; sleep 30"]}]}"#,
    );
    assert_eq!(wait(&s, slow).status.code(), Some(2), "dead-lettered");
    let text = out(&pmctl(&s.addr, &["status", &slow.to_string()], None));
    assert!(text.contains(&format!("{slow} dead")), "{text}");
    assert!(text.contains("timed out after 1 s: echo started; sleep 30\n    stdout: started\n"), "{text}");
    assert!(!text.contains("no status"), "{text}");
    assert!(text.contains("  finished "), "a dead letter has its finish time: {text}");
    let v: serde_json::Value =
        serde_json::from_slice(&pmctl(&s.addr, &["status", "--json", &slow.to_string()], None).stdout).unwrap();
    assert!(v["finished"].is_string(), "{v}");
}

#[test]
fn flow_marks_branches_and_status_shows_parent_and_children() {
    let s = Scheduler::start(&[]);
    let _agent = Agent::start(&s.addr, &["--retry-backoff-ms", "10"]);
    let root = submit_json(
        &s,
        r#"{"flowId":"order-9","pipeline":[{"executorName":"sh","commands":["true"]}],
            "onSuccess":[{"maxAttempts":1,"pipeline":[{"executorName":"sh","commands":["exit 4"]}],
                          "onFailure":[{"pipeline":[{"executorName":"sh","commands":["echo cleanup"]}]}]}],
            "onFailure":[{"pipeline":[{"executorName":"sh","commands":["echo never"]}]}]}"#,
    );
    let text = wait_for(Duration::from_secs(30), "the flow to finish", || {
        // Not every task succeeded, so the command exits 1 even once the flow is done.
        let t = String::from_utf8_lossy(&pmctl(&s.addr, &["flow", &root.to_string()], None).stdout).to_string();
        (t.lines().count() == 4 && t.matches(" succeeded").count() == 2 && t.contains(" dead")).then_some(t)
    });
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "flow order-9", "{text}");
    assert!(lines[1].starts_with(&format!("{root} succeeded")), "{text}");
    assert!(lines[2].starts_with("   └─ onSuccess: ") && lines[2].contains(" dead"), "{text}");
    assert!(lines[3].starts_with("      └─ onFailure: ") && lines[3].contains(" succeeded"), "{text}");
    let child: u64 = lines[2]["   └─ onSuccess: ".len()..].split(' ').next().unwrap().parse().unwrap();
    let grandchild: u64 = lines[3]["      └─ onFailure: ".len()..].split(' ').next().unwrap().parse().unwrap();
    let text = out(&pmctl(&s.addr, &["status", &child.to_string()], None));
    assert!(text.contains(&format!("\n  flow order-9  parent {root}  children {grandchild}\n")), "{text}");
    let json =
        String::from_utf8_lossy(&pmctl(&s.addr, &["flow", "--json", &root.to_string()], None).stdout).to_string();
    let v: serde_json::Value = serde_json::from_str(json.lines().nth(1).unwrap()).unwrap();
    assert_eq!((v["branch"].as_str(), v["flowId"].as_str()), (Some("onSuccess"), Some("order-9")), "{v}");
}

#[test]
fn a_repeated_idempotency_key_says_duplicate_and_wait_shows_progress() {
    let s = Scheduler::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.json");
    std::fs::write(&file, r#"{"pipeline":[{"executorName":"sh","commands":["sleep 0.3"]}]}"#).unwrap();
    let file = file.display().to_string();
    let first = pmctl(&s.addr, &["submit", "--idempotency-key", "order-1", &file], None);
    assert!(first.status.success(), "{}", out(&first));
    let id: u64 = String::from_utf8_lossy(&first.stdout).trim().parse().unwrap();
    let again = pmctl(&s.addr, &["submit", "--idempotency-key", "order-1", &file], None);
    assert!(again.status.success(), "{}", out(&again));
    assert_eq!(String::from_utf8_lossy(&again.stdout), format!("{id}  duplicate of {id}\n"));

    // The task waits for an agent, runs, succeeds: each change is a line on stderr as it happens.
    let waiter = std::thread::spawn({
        let addr = s.addr.clone();
        move || {
            pmctl(&addr, &["wait", "--timeout", "20s", "--progress", "--progress-every", "50ms", &id.to_string()], None)
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let _agent = Agent::start(&s.addr, &[]);
    let w = waiter.join().unwrap();
    assert_eq!(w.status.code(), Some(0), "{}", out(&w));
    let progress = String::from_utf8_lossy(&w.stderr).to_string();
    let lines: Vec<&str> = progress.lines().collect();
    assert!(lines[0].contains(&format!(" {id} ready")), "{progress}");
    assert!(progress.contains(&format!("{id} ready -> leased (attempt 1/")), "{progress}");
    assert!(lines.last().unwrap().contains(&format!("{id} leased -> succeeded")), "{progress}");
    assert!(String::from_utf8_lossy(&w.stdout).starts_with(&format!("{id} succeeded")), "{}", out(&w));
}
