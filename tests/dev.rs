//! End to end: `pm dev` (a scheduler node and an agent in one process) as a new user runs it: every queue is
//! served, SIGTERM drains, and `kill -9` leaves no command running.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pm_testkit::{pmctl, wait_for};
use pm_tests::http;
use serde_json::json;

/// A running `pm dev` on loopback ports, in a temporary directory; killed when dropped.
struct Dev {
    child: Child,
    /// The protocol address (`listening on`).
    addr: String,
    /// The scheduler's HTTP API.
    http: String,
    work: PathBuf,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Dev {
    fn start(extra: &[&str]) -> Dev {
        let tmp = tempfile::tempdir().unwrap();
        let (data, work, log) = (tmp.path().join("data"), tmp.path().join("work"), tmp.path().join("log"));
        let mut child = Command::new(pm_testkit::bin("pm"))
            .args(["dev", "--listen", "127.0.0.1:0", "--api-listen", "off", "--http-listen", "127.0.0.1:0"])
            .arg("--data")
            .arg(&data)
            .arg("--work-dir")
            .arg(&work)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (mut addr, mut http) = (None, None);
        let mut line = String::new();
        while addr.is_none() || http.is_none() {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "pm dev stopped: {}",
                std::fs::read_to_string(&log).unwrap()
            );
            if let Some(a) = line.trim().strip_prefix("listening on ") {
                addr = Some(a.to_string());
            } else if let Some(a) = line.trim().strip_prefix("http listening on ") {
                http = Some(a.to_string());
            }
        }
        // Keep reading stdout so that pm dev never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Dev { child, addr: addr.unwrap(), http: http.unwrap(), work, log, _tmp: tmp }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill {sig}");
    }

    /// Waits for the process to exit and returns its status.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        wait_for(within, "pm dev to exit", || self.child.try_wait().unwrap())
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// A POST with a JSON body to the scheduler's HTTP API (no tokens: `pm dev` on loopback).
fn post(dev: &Dev, path: &str, body: &serde_json::Value) -> pm_tests::HttpReply {
    let body = serde_json::to_vec(body).unwrap();
    http(&dev.http, "POST", path, &[("Content-Type", "application/json")], &body)
}

/// A new user's path: `pm dev` with no `--queue`, an application created and a task submitted over the HTTP
/// API to its pipeline's queue (`demo/hi`), and a task through `pmctl` to `default`: both run.
#[test]
fn plain_pm_dev_runs_a_task_submitted_to_an_applications_queue() {
    let dev = Dev::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let def = json!({"name": "hi", "params": {"who": {}}, "template": {"pipeline": [{
        "executorName": "sh",
        "commands": [format!("printf 'hi %s' {{{{who}}}} > {}/hi", out.path().display())],
    }]}});
    let r = post(&dev, "/api/applications/demo/pipelines", &def);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = post(&dev, "/api/applications/demo/pipelines/hi", &json!({"who": "there"}));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let text = wait_for(Duration::from_secs(20), "the application's task to run", || read(&out.path().join("hi")));
    assert_eq!(text, "hi there", "log:\n{}", dev.log());
    assert!(dev.log().contains("serving queues") && dev.log().contains("demo/hi"), "log:\n{}", dev.log());

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/hello.json");
    let o = pmctl(&dev.addr, &["submit", example], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let o = pmctl(&dev.addr, &["wait", &id], None);
    assert!(o.status.success(), "the hello task on `default` succeeds: {}", dev.log());
    assert!(dev.work.exists());
}

/// Submits a one-step pipeline through `pmctl` and returns its id.
fn submit(dev: &Dev, command: &str) -> String {
    let doc = json!({"pipeline": [{"executorName": "sh", "commands": [command]}]}).to_string();
    let o = pmctl(&dev.addr, &["submit", "-"], Some(doc.as_bytes()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// True once the process is gone (or a zombie: dead, not yet reaped).
fn dead(pid: &str) -> bool {
    read(Path::new(&format!("/proc/{}/stat", pid.trim()))).is_none_or(|s| s.contains(") Z "))
}

/// SIGTERM drains as `pm-agent run` does: the running task finishes (it is not killed to run again later),
/// then `pm dev` exits 0.
#[test]
fn sigterm_lets_the_running_task_finish_then_pm_dev_exits() {
    let mut dev = Dev::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let o = out.path().display();
    submit(&dev, &format!("echo start >> {o}/starts; sleep 2; echo done >> {o}/done"));
    wait_for(Duration::from_secs(20), "the task to start", || read(&out.path().join("starts")));
    dev.signal("-TERM");
    let status = dev.wait_exit(Duration::from_secs(20));
    let log = dev.log();
    assert!(status.success(), "{status:?}; log:\n{log}");
    assert_eq!(read(&out.path().join("done")).as_deref(), Some("done\n"), "log:\n{log}");
    assert!(log.contains("draining: taking no new tasks") && log.contains("drained"), "log:\n{log}");
    // It ran once, to its end.
    assert_eq!(read(&out.path().join("starts")).unwrap().lines().count(), 1);
}

/// `kill -9` of `pm dev` leaves none of its commands running.
#[test]
fn kill_9_of_pm_dev_leaves_no_command_running() {
    let mut dev = Dev::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let o = out.path().display();
    submit(&dev, &format!("sleep 300 & echo $! > {o}/bg; echo $$ > {o}/sh; wait"));
    let pids: Vec<String> = ["bg", "sh"]
        .iter()
        .map(|f| wait_for(Duration::from_secs(20), f, || read(&out.path().join(f)).filter(|t| t.ends_with('\n'))))
        .collect();
    assert!(pids.iter().all(|p| !dead(p)), "running before the kill");
    dev.signal("-KILL");
    dev.wait_exit(Duration::from_secs(10));
    wait_for(Duration::from_secs(10), "the commands to die with pm dev", || pids.iter().all(|p| dead(p)).then_some(()));
}

/// `pm dev --nodes 3` on loopback: its stdout lines, stderr in a file, and the members.
struct DevCluster {
    child: Child,
    members: Vec<String>,
    lines: Vec<String>,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl DevCluster {
    fn start() -> DevCluster {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log");
        // An address of its own on loopback: free ports there even while 127.0.0.1 is crowded.
        let mut child = Command::new(pm_testkit::bin("pm"))
            .args(["dev", "--nodes", "3", "--listen", "127.0.0.30:0", "--http-listen", "127.0.0.30:0"])
            .args(["--api-listen", "off", "--data"])
            .arg(tmp.path().join("data"))
            .arg("--work-dir")
            .arg(tmp.path().join("work"))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        let members = loop {
            let mut line = String::new();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "stopped: {}", std::fs::read_to_string(&log).unwrap());
            if let Some(m) = line.trim().strip_prefix("members ") {
                break m.split(',').map(String::from).collect::<Vec<_>>();
            }
            lines.push(line.trim().to_string());
        };
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        DevCluster { child, members, lines, log, _tmp: tmp }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether no member accepts connections any more.
    fn all_stopped(&self) -> bool {
        self.members.iter().all(|m| std::net::TcpStream::connect(m).is_err())
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pm dev --nodes 3` prints the members' addresses, runs an agent homed at each member, and runs tasks submitted
/// to the whole cluster; SIGTERM stops every member.
#[test]
fn pm_dev_nodes_3_is_a_cluster_with_an_agent_on_each_member() {
    let mut c = DevCluster::start();
    assert_eq!(c.members.len(), 3, "{:?}", c.lines);
    for (i, m) in c.members.iter().enumerate() {
        assert!(c.lines.contains(&format!("node {i}: listening on {m}")), "{:?}", c.lines);
        assert!(c.lines.iter().any(|l| l.starts_with(&format!("node {i}: http listening on "))), "{:?}", c.lines);
    }
    // One agent homed at each member.
    wait_for(Duration::from_secs(20), "an agent on each member", || {
        let log = c.log();
        c.members.iter().all(|m| log.contains(&format!("agent ready server={m}"))).then_some(())
    });
    let out = tempfile::tempdir().unwrap();
    let doc = json!({"pipeline": [{"executorName": "sh", "commands": [format!("echo ran >> {}/ran", out.path().display())]}]});
    let server = c.members.join(",");
    for _ in 0..6 {
        let o = pmctl(&server, &["submit", "--no-idempotency-key", "-"], Some(doc.to_string().as_bytes()));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    wait_for(Duration::from_secs(30), "6 tasks to run", || {
        (read(&out.path().join("ran")).unwrap_or_default().lines().count() == 6).then_some(())
    });
    let status = Command::new("kill").args(["-TERM", &c.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = wait_for(Duration::from_secs(30), "pm dev --nodes to exit", || c.child.try_wait().unwrap());
    assert!(exit.success(), "{exit:?}; log:\n{}", c.log());
    assert!(c.all_stopped());
}

/// `kill -9` of the launcher stops every member too.
#[test]
fn kill_9_of_pm_dev_nodes_stops_every_member() {
    let mut c = DevCluster::start();
    assert!(c.members.iter().all(|m| std::net::TcpStream::connect(m).is_ok()));
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    wait_for(Duration::from_secs(10), "the members to stop", || c.all_stopped().then_some(()));
}
