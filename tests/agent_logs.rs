//! End to end: what the binaries log. `--log-format text|json` on each, no colour codes in a file, and the
//! agent's warnings when it loses its scheduler.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::{Command, Stdio};
use std::time::Duration;

use pm_testkit::{bin, wait_for, Agent, Scheduler};

/// Every binary that logs offers `--log-format` (text or json).
#[test]
fn every_binary_that_logs_takes_log_format() {
    for (name, args) in [
        ("pm-scheduler", vec!["--help"]),
        ("pm-agent", vec!["run", "--help"]),
        ("pm-agent", vec!["exec", "--help"]),
        ("pm", vec!["dev", "--help"]),
        ("pm-loadtest", vec!["max-rate", "--help"]),
    ] {
        let out = Command::new(bin(name)).args(&args).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && help.contains("--log-format"), "{name} {args:?}: {help}");
        assert!(help.contains("json"), "{name}: {help}");
    }
}

/// Logs redirected to a file hold no ANSI colour codes; `--log-format json` writes one JSON object per line.
#[test]
fn a_log_in_a_file_is_plain_text_or_json_lines() {
    let s = Scheduler::start(&[]);
    let text = Agent::start(&s.addr, &[]);
    let json = Agent::start(&s.addr, &["--log-format", "json"]);
    for agent in [&text, &json] {
        wait_for(Duration::from_secs(20), "the agent to be ready", || {
            agent.log().contains("agent ready").then_some(())
        });
    }
    let log = text.log();
    assert!(!log.contains('\x1b'), "colour codes in a file: {log:?}");
    assert!(log.lines().any(|l| l.contains(" INFO ") && l.contains("agent ready")), "{log}");
    let log = json.log();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().any(|v| v["fields"]["message"] == "agent ready" && v["level"] == "INFO"), "{log}");

    // The scheduler too (its own process here, to choose RUST_LOG).
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("pm-scheduler"))
        .args(["--listen", "127.0.0.1:0", "--http-listen", "off", "--log-format", "json", "--data"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.is_empty() && !err.contains('\x1b'), "{err:?}");
    for line in err.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
}

/// The agent warns as soon as its scheduler is gone, and at each failed attempt to reconnect; then it says it
/// is back.
#[test]
fn the_agent_warns_when_the_scheduler_is_lost_and_at_each_retry() {
    let mut s = Scheduler::start(&[]);
    let agent = Agent::start(&s.addr, &[]);
    wait_for(Duration::from_secs(20), "the agent to be ready", || agent.log().contains("agent ready").then_some(()));
    s.kill();
    wait_for(Duration::from_secs(10), "the warning", || {
        agent.log().lines().any(|l| l.contains("WARN") && l.contains("connection to the scheduler lost")).then_some(())
    });
    wait_for(Duration::from_secs(20), "a warning per retry", || {
        let retries =
            agent.log().lines().filter(|l| l.contains("WARN") && l.contains("cannot reach the scheduler")).count();
        (retries >= 3).then_some(())
    });
    s.restart();
    wait_for(Duration::from_secs(20), "the reconnect", || {
        agent.log().contains("reconnected to the scheduler").then_some(())
    });
}
