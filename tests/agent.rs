//! End to end: real `pm-scheduler`, `pm-agent` and `pmctl` processes, real shell commands.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use pm_client::ConnectOptions;
use pm_testkit::{pmctl, wait_for, Agent, Scheduler};

fn submit(s: &Scheduler, json: &str) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("task.json");
    std::fs::write(&file, json).unwrap();
    let out = pmctl(&s.addr, &["submit", file.to_str().unwrap()], None);
    assert!(out.status.success(), "pmctl: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

async fn dead_letter(s: &Scheduler, agent: &Agent) -> pm_protocol::pb::DeadLetter {
    let admin = s.client(ConnectOptions::admin()).await;
    for _ in 0..1000 {
        if let Some(d) = admin.dead_letters("default", 10).await.unwrap().into_iter().next() {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no dead letter; agent log:\n{}", agent.log());
}

#[tokio::test]
async fn a_pipeline_of_shell_steps_runs_through_scheduler_and_agent() {
    let s = Scheduler::start(&[]);
    let agent = Agent::start(&s.addr, &[]);
    let out = tempfile::tempdir().unwrap();
    let task = format!(
        r#"{{"pipeline":[{{"executorName":"sh","commands":["echo hello from step 1 > shared.txt"]}},
            {{"executorName":"sh","commands":["cat $PIPE_DIR/shared.txt > {0}/out.txt","echo $PM_TASK_ID >> {0}/out.txt"]}}]}}"#,
        out.path().display()
    );
    let id = submit(&s, &task);
    let text = wait_for(Duration::from_secs(20), "the pipeline's output", || {
        read(&out.path().join("out.txt")).filter(|t| t.lines().count() == 2)
    });
    assert_eq!(text, format!("hello from step 1\n{id}\n"), "agent log:\n{}", agent.log());
    // Acked: nothing ready, leased or dead; the task directory of a successful task is removed.
    let admin = s.client(ConnectOptions::admin()).await;
    let mut settled = false;
    for _ in 0..500 {
        let stats = admin.stats().await.unwrap();
        let q = stats.queues.iter().find(|q| q.queue == "default").unwrap();
        if q.ready + q.leased + q.delayed + q.dead == 0 && !agent.work.join(format!("task-{id}")).exists() {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(settled, "the task was not acked and cleaned up; agent log:\n{}", agent.log());
}

#[tokio::test]
async fn a_failing_command_is_retried_then_dead_lettered_with_its_stderr_tail() {
    let s = Scheduler::start(&[]);
    let agent = Agent::start(&s.addr, &["--retry-backoff-ms", "50"]);
    let out = tempfile::tempdir().unwrap();
    let task = format!(
        r#"{{"maxAttempts":3,"pipeline":[{{"executorName":"sh",
            "commands":["echo run >> {}/runs; echo disk on fire >&2; exit 7"]}}]}}"#,
        out.path().display()
    );
    let id = submit(&s, &task);
    let d = dead_letter(&s, &agent).await;
    assert_eq!(d.task_id, id);
    assert_eq!(d.attempts, 3);
    assert!(d.reason.ends_with("exited with 7: disk on fire"), "{}", d.reason);
    assert_eq!(read(&out.path().join("runs")).unwrap().lines().count(), 3);
}

#[tokio::test]
async fn an_unknown_executor_fails_the_task_clearly() {
    let s = Scheduler::start(&[]);
    let agent = Agent::start(&s.addr, &["--executors", "sh,wget"]);
    submit(&s, r#"{"maxAttempts":1,"pipeline":[{"executorName":"tesseract","commands":["true"]}]}"#);
    let d = dead_letter(&s, &agent).await;
    assert!(d.reason.ends_with("step 1: unknown executor `tesseract` (this agent runs: sh, wget)"), "{}", d.reason);
}

#[tokio::test]
async fn a_task_of_a_killed_agent_runs_again_on_another() {
    let s = Scheduler::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let task = format!(
        r#"{{"pipeline":[{{"executorName":"sh","commands":["echo start >> {0}/starts; sleep 1; echo $$ >> {0}/done"]}}]}}"#,
        out.path().display()
    );
    let mut first = Agent::start(&s.addr, &[]);
    submit(&s, &task);
    wait_for(Duration::from_secs(20), "the first agent to start the task", || read(&out.path().join("starts")));
    first.kill();
    let second = Agent::start(&s.addr, &[]);
    let starts = wait_for(Duration::from_secs(20), "the task to start again", || {
        read(&out.path().join("starts")).filter(|t| t.lines().count() >= 2)
    });
    assert_eq!(starts.lines().count(), 2, "agent log:\n{}", second.log());
    wait_for(Duration::from_secs(20), "the second run to finish", || read(&out.path().join("done")));
}

/// `pm dev` (scheduler + agent in one process) runs the README's example, then stops cleanly on SIGTERM.
#[test]
fn pm_dev_runs_the_hello_example_and_stops_on_sigterm() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let (data, work) = (tmp.path().join("data"), tmp.path().join("work"));
    let mut child = std::process::Command::new(pm_testkit::bin("pm"))
        .args(["dev", "--listen", "127.0.0.1:0", "--keep-task-dirs", "--data"])
        .arg(&data)
        .arg("--work-dir")
        .arg(&work)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap().to_string();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/hello.json");
    let out = pmctl(&addr, &["submit", example], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let hello = work.join(format!("task-{id}")).join("hello.txt");
    let text = wait_for(Duration::from_secs(20), "hello.txt", || read(&hello).filter(|t| t.ends_with('\n')));
    assert_eq!(text, "hello from pipeline-manager\n");
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = wait_for(Duration::from_secs(20), "pm dev to exit", || child.try_wait().unwrap());
    assert!(exit.success(), "{exit:?}");
}

/// The original OCR pipeline (wget → tesseract → upload) with the real `tesseract`, through `pm dev`.
#[test]
fn the_ocr_demo_reads_the_generated_page_with_real_tesseract() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ocr/run.sh");
    let out = std::process::Command::new(script)
        .env("PM_BIN_DIR", pm_testkit::bin_dir())
        .env("OCR_TEXT", "QUICK BROWN FOX 42")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "QUICK BROWN FOX 42");
}
