//! The `--help` of the real binaries says what the code does (and what docs/config.md says): the routes of
//! the scheduler's HTTP endpoint, who writes the WAL back, what `pmctl app` holds, and that `pm-agent serve`
//! (no scheduler) offers no scheduler flags.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::{Command, Output};

use pm_testkit::bin;

fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(bin(binary)).args(args).output().unwrap()
}

fn help(binary: &str, args: &[&str]) -> String {
    let out = run(binary, args);
    assert!(out.status.success(), "{binary} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    // One line per flag's text: clap wraps long help, so join the lines before searching.
    String::from_utf8(out.stdout).unwrap().split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn scheduler_help_names_the_api_routes_and_the_writeback_thread() {
    let h = help("pm-scheduler", &["--help"]);
    assert!(h.contains("HTTP API under `/api/`"), "--http-listen: {h}");
    assert!(h.contains("`pm-wal-flush`") && h.contains("`fdatasync`"), "--wal-writeback-bytes: {h}");
    assert!(!h.contains("the kernel is asked"), "{h}");
}

#[test]
fn pmctl_app_help_names_the_stored_applications_and_the_deployer() {
    let top = help("pmctl", &["--help"]);
    assert!(top.contains("pipeline templates stored in the scheduler"), "{top}");
    let h = help("pmctl", &["app", "--help"]);
    for sub in ["create", "put-pipeline", "list", "show", "delete", "render", "apply"] {
        assert!(h.contains(&format!(" {sub} ")), "pmctl app {sub}: {h}");
    }
    assert!(h.contains("submit --app"), "{h}");
}

#[test]
fn agent_serve_offers_no_scheduler_flags() {
    let serve = help("pm-agent", &["serve", "--help"]);
    let run_help = help("pm-agent", &["run", "--help"]);
    for flag in
        ["--queue", "--capabilities", "--client-id", "--token ", "--token-file", "--drain-timeout", "--failover-after"]
    {
        assert!(!serve.contains(flag), "serve offers {flag}: {serve}");
        assert!(run_help.contains(flag), "run lacks {flag}: {run_help}");
    }
    assert!(serve.contains("--api-listen") && serve.contains("--executors"), "{serve}");
    let out = run("pm-agent", &["serve", "--queue", "q"]);
    assert_eq!(out.status.code(), Some(64), "a scheduler flag is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--queue"), "{}", String::from_utf8_lossy(&out.stderr));
}
