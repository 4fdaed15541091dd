//! End to end: real `pm-scheduler`, `pm-agent` and `pmctl` processes, real shell commands.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use pm_client::ConnectOptions;
use pm_testkit::{pmctl, wait_for, Agent, Executor, Scheduler};
use pm_tests::submit_json;

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

async fn dead_letter(s: &Scheduler, agent: &Agent) -> pm_protocol::pb::DeadLetter {
    dead_letter_of(s, agent, None).await
}

async fn dead_letter_of(s: &Scheduler, agent: &Agent, id: Option<u64>) -> pm_protocol::pb::DeadLetter {
    let admin = s.client(ConnectOptions::admin()).await;
    for _ in 0..1000 {
        let found =
            admin.dead_letters("default", 100).await.unwrap().into_iter().find(|d| id.is_none_or(|id| d.task_id == id));
        if let Some(d) = found {
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
    let id = submit_json(&s, &task);
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

/// At its default level the agent writes no line per task (a task's outcome is a DEBUG line); its INFO
/// summary of finished tasks comes once a minute.
#[test]
fn the_agent_logs_no_line_per_task_at_info() {
    let s = Scheduler::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let mut child = std::process::Command::new(pm_testkit::bin("pm-agent"))
        .args(["run", "--server", &s.addr, "--work-dir"])
        .arg(dir.path().join("work"))
        .env("PM_API_LISTEN", "off")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ids: Vec<String> = (0..3)
        .map(|_| submit_json(&s, r#"{"pipeline":[{"executorName":"sh","commands":["true"]}]}"#).to_string())
        .collect();
    let mut args = vec!["wait", "--timeout", "30s"];
    args.extend(ids.iter().map(String::as_str));
    let out = pmctl(&s.addr, &args, None);
    let _ = child.kill();
    let _ = child.wait();
    let text = read(&log).unwrap_or_default();
    assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("agent ready"), "INFO lines are written:\n{text}");
    assert!(!text.contains("task done"), "a line per task at INFO:\n{text}");
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
    let id = submit_json(&s, &task);
    let d = dead_letter(&s, &agent).await;
    assert_eq!(d.task_id, id);
    assert_eq!(d.attempts, 3);
    assert!(d.reason.ends_with("exited with 7: disk on fire"), "{}", d.reason);
    assert_eq!(read(&out.path().join("runs")).unwrap().lines().count(), 3);
}

#[tokio::test]
async fn an_unknown_executor_fails_the_task_clearly() {
    let s = Scheduler::start(&[]);
    // An agent that declares no executors (`--capabilities ''`) is leased anything, and fails what it cannot run.
    let agent = Agent::start(&s.addr, &["--executors", "sh,wget", "--capabilities", ""]);
    submit_json(&s, r#"{"maxAttempts":1,"pipeline":[{"executorName":"tesseract","commands":["true"]}]}"#);
    let d = dead_letter(&s, &agent).await;
    assert!(d.reason.ends_with("step 1: unknown executor `tesseract` (this agent runs: sh, wget)"), "{}", d.reason);
}

#[tokio::test]
async fn an_agent_that_declares_its_executors_is_not_leased_a_task_it_cannot_run() {
    let s = Scheduler::start(&[]);
    let agent = Agent::start(&s.addr, &["--executors", "sh,wget"]);
    let id = submit_json(&s, r#"{"maxAttempts":1,"pipeline":[{"executorName":"tesseract","commands":["true"]}]}"#);
    let why = wait_for(Duration::from_secs(10), "the agent to connect", || {
        let o = pmctl(&s.addr, &["why", &id.to_string()], None);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.contains("[sh, wget]").then_some(text)
    });
    assert!(why.contains("has the executors `tesseract`"), "{why}");
    let p = s.client(ConnectOptions::producer()).await;
    assert_eq!(p.status(vec![id]).await.unwrap()[0].attempts, 0, "agent log:\n{}", agent.log());
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
    submit_json(&s, &task);
    wait_for(Duration::from_secs(20), "the first agent to start the task", || {
        read(&out.path().join("starts")).filter(|t| t.ends_with('\n'))
    });
    first.kill();
    let second = Agent::start(&s.addr, &[]);
    let starts = wait_for(Duration::from_secs(20), "the task to start again", || {
        read(&out.path().join("starts")).filter(|t| t.lines().count() >= 2)
    });
    assert_eq!(starts.lines().count(), 2, "agent log:\n{}", second.log());
    wait_for(Duration::from_secs(20), "the second run to finish", || {
        read(&out.path().join("done")).filter(|t| t.ends_with('\n'))
    });
}

/// `kill -9` of `pm-agent run` leaves none of its commands running: the shell and what it started in the
/// background die with the agent (they would otherwise run on while the task runs again elsewhere).
#[tokio::test]
async fn kill_9_of_the_agent_leaves_no_command_running() {
    let s = Scheduler::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let task = format!(
        r#"{{"pipeline":[{{"executorName":"sh","commands":["sleep 300 & echo $! > {0}/bg; echo $$ > {0}/sh; wait"]}}]}}"#,
        out.path().display()
    );
    let mut agent = Agent::start(&s.addr, &[]);
    submit_json(&s, &task);
    let pids: Vec<String> = ["bg", "sh"]
        .iter()
        .map(|f| wait_for(Duration::from_secs(20), f, || read(&out.path().join(f)).filter(|t| t.ends_with('\n'))))
        .collect();
    assert!(pids.iter().all(|p| !dead(p)), "running before the kill");
    agent.kill();
    wait_for(Duration::from_secs(10), "the commands to die with the agent", || {
        pids.iter().all(|p| dead(p)).then_some(())
    });
}

/// The agent outlives a scheduler crash: it reconnects to the restarted node and takes new tasks.
#[tokio::test]
async fn the_agent_reconnects_after_a_scheduler_restart() {
    let mut s = Scheduler::start(&[]);
    let agent = Agent::start(&s.addr, &[]);
    let out = tempfile::tempdir().unwrap();
    let task = |name: &str| {
        format!(
            r#"{{"pipeline":[{{"executorName":"sh","commands":["echo {name} > {}/{name}"]}}]}}"#,
            out.path().display()
        )
    };
    submit_json(&s, &task("before"));
    // `echo x > f` creates the file before it writes: wait for the whole line.
    let done = |name: &str| read(&out.path().join(name)).filter(|t| t.ends_with('\n'));
    wait_for(Duration::from_secs(20), "the first task", || done("before"));
    s.restart();
    submit_json(&s, &task("after"));
    let text = wait_for(Duration::from_secs(30), "a task after the restart", || done("after"));
    assert_eq!(text, "after\n", "agent log:\n{}", agent.log());
}

/// (ready, delayed, leased, dead) summed over every queue.
async fn counts(s: &Scheduler) -> (u64, u64, u64, u64) {
    let admin = s.client(ConnectOptions::admin()).await;
    let q = admin.stats().await.unwrap().queues;
    (
        q.iter().map(|q| q.ready).sum(),
        q.iter().map(|q| q.delayed).sum(),
        q.iter().map(|q| q.leased).sum(),
        q.iter().map(|q| q.dead).sum(),
    )
}

/// Polls until nothing is ready, delayed, leased or dead: every task was acked.
async fn settled(s: &Scheduler, agent: &Agent) {
    for _ in 0..500 {
        if counts(s).await == (0, 0, 0, 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("tasks left: {:?}; agent log:\n{}", counts(s).await, agent.log());
}

/// True once the process is gone (or a zombie: dead, not yet reaped).
fn dead(pid: &str) -> bool {
    read(Path::new(&format!("/proc/{}/stat", pid.trim()))).is_none_or(|s| s.contains(") Z "))
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// SIGTERM drains (a Kubernetes scale-down): the running task finishes and is acked, the agent takes no new
/// task and exits 0, and the task queued behind it stays ready for another agent.
#[tokio::test]
async fn sigterm_drains_the_running_task_and_takes_no_new_one() {
    let s = Scheduler::start(&[]);
    let mut agent = Agent::start(&s.addr, &["--concurrency", "1"]);
    let out = tempfile::tempdir().unwrap();
    let slow = format!(
        r#"{{"pipeline":[{{"executorName":"sh","commands":["echo start > {0}/slow-start; sleep 3; echo done > {0}/slow-done"]}}]}}"#,
        out.path().display()
    );
    submit_json(&s, &slow);
    wait_for(Duration::from_secs(20), "the slow task to start", || {
        read(&out.path().join("slow-start")).filter(|t| t.ends_with('\n'))
    });
    // The agent has no credit left while the slow task runs: this one waits in the queue.
    let next =
        format!(r#"{{"pipeline":[{{"executorName":"sh","commands":["echo ran > {}/next"]}}]}}"#, out.path().display());
    submit_json(&s, &next);
    let status = agent.terminate(Duration::from_secs(20));
    let log = agent.log();
    assert!(status.is_some_and(|s| s.success()), "the agent exits 0 after draining: {status:?}; log:\n{log}");
    assert_eq!(
        read(&out.path().join("slow-done")).as_deref(),
        Some("done\n"),
        "the running task finished; log:\n{log}"
    );
    assert!(!out.path().join("next").exists(), "a draining agent takes no new task; log:\n{log}");
    assert!(log.contains("draining: taking no new tasks") && log.contains("drained"), "log:\n{log}");
    // The slow task was acked before the agent left; the next one is ready for another agent.
    assert_eq!(counts(&s).await, (1, 0, 0, 0));
    let second = Agent::start(&s.addr, &[]);
    wait_for(Duration::from_secs(20), "another agent to run the queued task", || read(&out.path().join("next")));
    settled(&s, &second).await;
}

/// A task still running when the drain timeout ends is stopped (its process group killed) and handed back
/// with no delay: another agent runs it at once, long before its 300 s lease would have expired.
#[tokio::test]
async fn the_drain_timeout_hands_a_running_task_back_at_once() {
    let s = Scheduler::start(&[]);
    let mut first = Agent::start(&s.addr, &["--drain-timeout", "500ms"]);
    let out = tempfile::tempdir().unwrap();
    // The first run sleeps 60 s; a later one finishes at once.
    let task = format!(
        r#"{{"leaseSeconds":300,"pipeline":[{{"executorName":"sh",
            "commands":["echo start >> {0}/starts; if [ $(wc -l < {0}/starts) -eq 1 ]; then sleep 60; fi; echo done >> {0}/done"]}}]}}"#,
        out.path().display()
    );
    submit_json(&s, &task);
    wait_for(Duration::from_secs(20), "the task to start", || {
        read(&out.path().join("starts")).filter(|t| t.ends_with('\n'))
    });
    let status = first.terminate(Duration::from_secs(20));
    let log = first.log();
    assert!(status.is_some_and(|s| s.success()), "exit after the drain timeout: {status:?}; log:\n{log}");
    assert!(log.contains("drain timeout") && log.contains("handed back to the scheduler"), "log:\n{log}");
    // Handed back, not leased: ready again at once (the nack asked for no delay).
    assert_eq!(counts(&s).await, (1, 0, 0, 0), "log:\n{log}");
    let second = Agent::start(&s.addr, &[]);
    let done = wait_for(Duration::from_secs(20), "the second run", || read(&out.path().join("done")));
    settled(&s, &second).await;
    assert_eq!(done, "done\n", "the first run was killed before it wrote anything; log:\n{log}");
    assert_eq!(read(&out.path().join("starts")).unwrap().lines().count(), 2);
}

/// The scheduler is SIGKILLed and restarted while a task runs: the agent reconnects, reclaims the task and
/// keeps running it (its lease of 1.2 s is extended every 0.4 s, so extends quoting the old lease id race the
/// reclaim); the task runs once and is acked.
#[tokio::test]
async fn a_running_task_survives_a_scheduler_restart() {
    let mut s = Scheduler::start(&[]);
    let agent = Agent::start(&s.addr, &[]);
    let out = tempfile::tempdir().unwrap();
    let task = format!(
        r#"{{"leaseSeconds":1.2,"pipeline":[{{"executorName":"sh",
            "commands":["echo start >> {0}/starts; sleep 3; echo done >> {0}/done"]}}]}}"#,
        out.path().display()
    );
    submit_json(&s, &task);
    wait_for(Duration::from_secs(20), "the task to start", || {
        read(&out.path().join("starts")).filter(|t| t.ends_with('\n'))
    });
    s.restart();
    let done = wait_for(Duration::from_secs(20), "the task to finish", || {
        read(&out.path().join("done")).filter(|t| t.ends_with('\n'))
    });
    assert_eq!(done, "done\n");
    settled(&s, &agent).await;
    let log = agent.log();
    assert_eq!(read(&out.path().join("starts")).unwrap(), "start\n", "it ran once; agent log:\n{log}");
    assert!(log.contains("reclaimed after a reconnect: keeps running"), "agent log:\n{log}");
    assert!(!log.contains("lease lost"), "agent log:\n{log}");
}

/// A task reclaimed too late is stopped: its agent (frozen with SIGSTOP) misses the restart, another agent
/// takes the task (no reclaim grace), and when the first agent wakes up its reclaim is refused, so it kills
/// its run (a 60 s sleep; the second run sleeps 1 s) and neither acks nor nacks. The second agent's run is
/// the one that finishes.
#[tokio::test]
async fn a_task_given_to_another_agent_meanwhile_is_stopped_on_reclaim() {
    let mut s = Scheduler::start(&["--reclaim-grace-ms", "0"]);
    let out = tempfile::tempdir().unwrap();
    let task = format!(
        r#"{{"pipeline":[{{"executorName":"sh",
            "commands":["if [ -e {0}/pids ]; then t=1; else t=60; fi; echo $$ >> {0}/pids; sleep $t; echo $PIPE_DIR >> {0}/done"]}}]}}"#,
        out.path().display()
    );
    let first = Agent::start(&s.addr, &[]);
    let id = submit_json(&s, &task);
    let pid = wait_for(Duration::from_secs(20), "the first run", || {
        read(&out.path().join("pids")).filter(|t| t.ends_with('\n'))
    });
    signal(first.pid(), "-STOP");
    s.restart();
    let second = Agent::start(&s.addr, &[]);
    wait_for(Duration::from_secs(20), "the second run", || {
        read(&out.path().join("pids")).filter(|t| t.lines().count() == 2)
    });
    signal(first.pid(), "-CONT");
    wait_for(Duration::from_secs(10), "the first run to be killed", || dead(&pid).then_some(()));
    let done = wait_for(Duration::from_secs(20), "the second run to finish", || {
        read(&out.path().join("done")).filter(|t| t.ends_with('\n'))
    });
    assert_eq!(done.trim(), second.work.join(format!("task-{id}")).display().to_string());
    settled(&s, &second).await;
    assert_eq!(read(&out.path().join("done")).unwrap().lines().count(), 1);
    let log = first.log();
    assert!(log.contains("not reclaimed after a reconnect"), "first agent's log:\n{log}");
    assert!(!log.contains("task done") && !log.contains("task failed"), "first agent's log:\n{log}");
}

/// Two `pm-agent exec` processes stand in for two utility containers of a pod; the agent sends each step to
/// its executor over a unix socket in the shared directory.
#[tokio::test]
async fn pod_executors_run_their_steps_over_unix_sockets() {
    let s = Scheduler::start(&[]);
    let vol = tempfile::tempdir().unwrap();
    let pods = vol.path().join(".pm");
    let fetch = Executor::start("fetch", &pods.join("fetch.sock"));
    let mut ocr = Executor::start("ocr", &pods.join("ocr.sock"));
    // Per-task directories whatever the machine's core count (one core would make `auto` pick the shared
    // layout): the test reads each task's own directory.
    let agent =
        Agent::start(&s.addr, &["--keep-task-dirs", "--task-dirs", "per-task", "--pod-dir", pods.to_str().unwrap()]);

    let id = submit_json(
        &s,
        r#"{"pipeline":[{"executorName":"fetch","commands":["echo $PPID > fetch.ppid","echo hello pods > a.txt"]},
            {"executorName":"ocr","commands":["echo $PPID > ocr.ppid","tr a-z A-Z < a.txt > b.txt"]}]}"#,
    );
    let dir = agent.work.join(format!("task-{id}"));
    let text = wait_for(Duration::from_secs(20), "the pod pipeline's output", || {
        read(&dir.join("b.txt")).filter(|t| t.ends_with('\n'))
    });
    assert_eq!(text, "HELLO PODS\n", "agent log:\n{}", agent.log());
    // Each step's shell is a child of its own executor process.
    assert_eq!(read(&dir.join("fetch.ppid")).unwrap().trim(), fetch.pid().to_string());
    assert_eq!(read(&dir.join("ocr.ppid")).unwrap().trim(), ocr.pid().to_string());

    // A step timeout on a pod executor kills the command's whole process group there.
    let id = submit_json(
        &s,
        r#"{"maxAttempts":1,"pipeline":[{"executorName":"fetch","timeoutSeconds":0.5,
            "commands":["sleep 30 & echo $! > child.pid; sleep 30"]}]}"#,
    );
    let d = dead_letter_of(&s, &agent, Some(id)).await;
    assert!(d.reason.contains("`sleep 30 & echo $! > child.pid; sleep 30` timed out"), "{}", d.reason);
    let pid = read(&agent.work.join(format!("task-{id}/child.pid"))).unwrap();
    let gone = wait_for(Duration::from_secs(5), "the background child to die", || {
        let stat = read(Path::new(&format!("/proc/{}/stat", pid.trim())));
        stat.is_none_or(|s| s.contains(") Z ")).then_some(true)
    });
    assert!(gone);

    // A dead executor (its socket file left behind) fails the task with a clear reason.
    ocr.kill();
    let id = submit_json(&s, r#"{"maxAttempts":1,"pipeline":[{"executorName":"ocr","commands":["true"]}]}"#);
    let d = dead_letter_of(&s, &agent, Some(id)).await;
    assert!(d.reason.contains("executor `ocr`: cannot connect to"), "{}", d.reason);
    assert!(d.reason.contains("pm-agent exec --name ocr"), "{}", d.reason);

    // A name with no socket at all fails before anything runs.
    let id = submit_json(&s, r#"{"maxAttempts":1,"pipeline":[{"executorName":"s3","commands":["true"]}]}"#);
    let d = dead_letter_of(&s, &agent, Some(id)).await;
    assert!(d.reason.contains("step 1: executor `s3` has no socket at"), "{}", d.reason);
}

/// `pm dev` (scheduler + agent in one process) runs the README's example, then stops cleanly on SIGTERM.
#[test]
fn pm_dev_runs_the_hello_example_and_stops_on_sigterm() {
    use std::io::{BufRead, Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let (data, work) = (tmp.path().join("data"), tmp.path().join("work"));
    let mut child = std::process::Command::new(pm_testkit::bin("pm"))
        .args(["dev", "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--keep-task-dirs", "--data"])
        .arg(&data)
        .arg("--work-dir")
        .arg(&work)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap().to_string();
    // The embedded agent's direct-run API answers too.
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let api = line.trim().strip_prefix("api listening on ").unwrap().to_string();
    let mut probe = std::net::TcpStream::connect(&api).unwrap();
    probe.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    probe.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.0 200 OK"), "{reply}");
    // Then the scheduler's HTTP endpoint.
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let http = line.trim().strip_prefix("http listening on ").unwrap().to_string();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/hello.json");
    let out = pmctl(&addr, &["submit", example], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let hello = work.join(format!("task-{id}")).join("hello.txt");
    let text = wait_for(Duration::from_secs(20), "hello.txt", || read(&hello).filter(|t| t.ends_with('\n')));
    assert_eq!(text, "hello from pipeline-manager\n");
    // One recorder for the process: the scheduler's `/metrics` shows the agent's histograms too.
    let get_metrics = || {
        let mut probe = std::net::TcpStream::connect(&http).unwrap();
        probe.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut reply = String::new();
        probe.read_to_string(&mut reply).unwrap();
        reply
    };
    wait_for(Duration::from_secs(20), "agent and scheduler metrics", || {
        let m = get_metrics();
        let both = m.contains("pm_agent_task_duration_seconds_bucket{le=\"3600\"}")
            && m.contains("pm_end_to_end_seconds_bucket{le=\"0.05\"}");
        both.then_some(())
    });
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
