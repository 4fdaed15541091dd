//! `pm-loadtest` end to end: the real binary against a real scheduler, Redis and beanstalkd on loopback.
//! Short runs: these check that the scenarios work and report honestly, not how fast anything is.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use pm_testkit::{bin, wait_for, Scheduler};
use serde_json::Value;

fn loadtest(args: &[&str]) -> Output {
    Command::new(bin("pm-loadtest")).args(args).output().expect("run pm-loadtest")
}

/// Runs a scenario with `--out FILE` and returns the parsed report.
fn report(target: &str, args: &[&str], dir: &Path) -> Value {
    let out = dir.join("report.json");
    let mut all = vec!["--target", target];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", out.to_str().unwrap(), "--quiet"]);
    let o = loadtest(&all);
    assert!(o.status.success(), "pm-loadtest {all:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(&out).unwrap()).expect("the report is JSON")
}

fn num(v: &Value, path: &str) -> f64 {
    path.split('.').fold(v, |v, k| &v[k]).as_f64().unwrap_or_else(|| panic!("{path} missing in {v}"))
}

/// Checks what every workload report must say: no errors, nothing left unacked, latencies measured.
fn assert_clean(r: &Value) {
    assert_eq!(num(r, "totals.submit_errors"), 0.0, "{r}");
    assert_eq!(num(r, "totals.ack_errors"), 0.0, "{r}");
    assert_eq!(num(r, "unacked_at_end"), 0.0, "{r}");
    assert!(num(r, "totals.submitted") > 0.0, "{r}");
    assert_eq!(num(r, "totals.acked"), num(r, "totals.submitted"), "{r}");
    assert!(num(r, "latency_ms.samples") > 0.0 && num(r, "latency_ms.p50") > 0.0, "{r}");
    assert!(
        num(r, "latency_ms.p50") <= num(r, "latency_ms.p99") && num(r, "latency_ms.p99") <= num(r, "latency_ms.max")
    );
    assert!(!r["series"].as_array().unwrap().is_empty(), "{r}");
}

#[test]
fn max_rate_against_a_scheduler_acks_every_task_and_draws_a_plot() {
    let s = Scheduler::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("run.svg");
    let target = format!("pm://{}", s.addr);
    let plot_arg = plot.to_str().unwrap();
    let r = report(&target, &["max-rate", "--warmup", "0", "--duration", "1", "--plot", plot_arg], dir.path());
    assert_clean(&r);
    assert_eq!(r["system"], "pm");
    assert!(num(&r, "acked_per_s") > 0.0, "{r}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{svg}");
}

#[test]
fn fixed_rate_offers_the_rate_it_was_given() {
    let s = Scheduler::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let target = format!("pm://{}", s.addr);
    let r = report(&target, &["fixed-rate", "--rate", "2000", "--warmup", "1", "--duration", "2"], dir.path());
    assert_clean(&r);
    // 2,000 tasks/s in batches of 64 for 2 s: ~4,000 tasks inside the window.
    let win = num(&r, "totals.submitted_win");
    assert!((3200.0..=4800.0).contains(&win), "{win} tasks submitted inside the window: {r}");
    assert!(num(&r, "send_late_ms.samples") > 0.0, "the pacer reports its lateness: {r}");
}

#[test]
fn a_soak_samples_the_server_memory_every_interval() {
    let s = Scheduler::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let target = format!("pm://{}", s.addr);
    let pid = s.pid().unwrap().to_string();
    let args = ["soak", "--rate", "1000", "--warmup", "0", "--duration", "3", "--interval", "1", "--server-pid", &pid];
    let r = report(&target, &args, dir.path());
    assert_clean(&r);
    assert_eq!(r["scenario"], "soak");
    let series = r["series"].as_array().unwrap();
    assert!(series.len() >= 3, "one point per second: {r}");
    assert!(series.iter().all(|p| p["server_rss"].as_u64().is_some_and(|b| b > 1 << 20)), "{r}");
}

#[test]
fn max_tasks_stops_a_run_by_itself() {
    let s = Scheduler::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let target = format!("pm://{}", s.addr);
    let started = std::time::Instant::now();
    let r = report(&target, &["max-rate", "--max-tasks", "640", "--warmup", "0", "--duration", "60"], dir.path());
    assert!(started.elapsed() < Duration::from_secs(30), "a 60 s run bounded by 640 tasks must stop early");
    assert_eq!(r["stopped_by_max_tasks"], true, "{r}");
    assert_eq!(num(&r, "totals.submitted"), 640.0, "{r}");
    assert_eq!(num(&r, "totals.acked"), 640.0, "{r}");
}

/// The depth of `queue` at the scheduler (`pmctl stats --json`; a queue with nothing left is not listed).
fn ready(addr: &str, queue: &str) -> f64 {
    let o = pm_testkit::pmctl(addr, &["stats", "--json"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stats: Value = serde_json::from_slice(&o.stdout).unwrap();
    let q = stats["queues"].as_array().unwrap().iter().find(|q| q["queue"] == queue);
    q.map_or(0.0, |q| num(q, "ready"))
}

#[test]
fn producers_alone_queue_exactly_max_tasks_and_consumers_alone_drain_them() {
    let s = Scheduler::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let target = format!("pm://{}", s.addr);
    // 1000 is not a multiple of the batch (64): the last Submit is cut to fit.
    let fill = ["max-rate", "--consumers", "0", "--max-tasks", "1000", "--warmup", "0", "--duration", "60"];
    let r = report(&target, &fill, dir.path());
    assert_eq!(num(&r, "totals.submitted"), 1000.0, "{r}");
    assert_eq!(num(&r, "totals.acked"), 0.0, "{r}");
    assert!(num(&r, "elapsed_s") < 30.0, "a producers-only run ends when the producers stop: {r}");
    assert_eq!(ready(&s.addr, "loadtest"), 1000.0);
    let drain = ["max-rate", "--producers", "0", "--max-tasks", "1000", "--warmup", "0", "--duration", "60"];
    let r = report(&target, &drain, dir.path());
    assert_eq!(num(&r, "totals.acked"), 1000.0, "{r}");
    assert_eq!(num(&r, "totals.ack_errors"), 0.0, "{r}");
    assert_eq!(r["stopped_by_max_tasks"], true, "{r}");
    assert!(num(&r, "elapsed_s") < 30.0, "a consumers-only run ends once they acked --max-tasks: {r}");
    assert_eq!(ready(&s.addr, "loadtest"), 0.0);
}

/// bench/backlog.sh at a small size, without its drain and without dropping the page cache: exactly the
/// tasks asked for are queued, survive the kill -9 and are counted again after the restart.
#[test]
fn the_backlog_benchmark_fills_kills_and_restarts_a_node() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/backlog.sh");
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(script)
        .env("BIN", pm_testkit::bin_dir())
        .args(["--tasks", "20000", "--skip-drain", "--no-drop-caches", "--limit", "60", "--data"])
        .arg(data.path().join("data"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(num(&r, "depth"), 20000.0, "{r}");
    assert_eq!(r["caches_dropped"], false, "{r}");
    assert!(num(&r, "rss_bytes") > 0.0 && num(&r, "disk_bytes") > 20000.0 * 256.0, "{r}");
    assert!(num(&r, "restart_listen_s") > 0.0 && num(&r, "restart_ready_s") >= num(&r, "restart_listen_s"), "{r}");
    assert!(r.get("drain_s").is_none(), "--skip-drain: {r}");
}

#[test]
fn idle_connections_spread_over_processes_and_report_server_memory() {
    let s = Scheduler::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let target = format!("pm://{}", s.addr);
    let pid = s.pid().unwrap().to_string();
    let args = [
        "idle-connections",
        "--count",
        "300",
        "--per-process",
        "100",
        "--warmup",
        "20",
        "--server-pid",
        &pid,
        "--settle",
        "1",
    ];
    let r = report(&target, &args, dir.path());
    let rep = &r["report"];
    assert_eq!(num(rep, "opened"), 300.0, "{r}");
    assert_eq!(num(rep, "failed"), 0.0, "{r}");
    assert_eq!(num(rep, "processes"), 3.0, "{r}");
    assert_eq!(num(rep, "warmup"), 20.0, "warm-up connections are reported apart: {r}");
    assert!(num(rep, "server_rss_after") > 0.0, "{r}");
    assert!(rep["server_bytes_per_connection"].is_number(), "{r}");
}

/// `THP_enabled` of a process, from `/proc/PID/status`.
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("THP_enabled:")).map(|v| v.trim().to_string()).unwrap_or_default()
}

#[test]
fn the_scheduler_keeps_transparent_huge_pages_off_unless_asked() {
    // Huge pages filled in by khugepaged made each idle connection cost more resident memory, by a varying
    // amount (docs/benchmarks.md#idle-connections).
    let own = thp_enabled(std::process::id());
    if own.is_empty() {
        eprintln!("this kernel reports no THP_enabled: nothing to check");
        return;
    }
    let s = Scheduler::start(&[]);
    assert_eq!(thp_enabled(s.pid().unwrap()), "0");
    let asked = Scheduler::start(&["--huge-pages"]);
    assert_eq!(thp_enabled(asked.pid().unwrap()), own, "--huge-pages leaves the kernel's setting as it was");
}

#[test]
fn bad_targets_get_a_clear_error() {
    let o = loadtest(&["--target", "kafka://127.0.0.1:1", "max-rate"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown system"), "{o:?}");
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let o = loadtest(&["--target", &format!("pm://127.0.0.1:{port}"), "max-rate", "--duration", "1", "--quiet"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("connect to"), "{o:?}");
}

/// A peer server on a free loopback port, killed on drop.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `program args` and waits until `port` accepts; `None` (with a notice) when it is not installed.
fn peer(program: &str, args: &[&str], port: u16, dir: &Path) -> Option<Peer> {
    let child = match Command::new(program).args(args).current_dir(dir).stdout(Stdio::null()).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipped: {program} not available ({e}); .ci/run installs it");
            return None;
        }
    };
    let p = Peer(child);
    wait_for(Duration::from_secs(10), "the peer to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
    Some(p)
}

/// A short max-rate run and 50 idle connections against a peer on `url`: clean, and named `system`.
fn workload_and_idle_against(url: &str, system: &str, dir: &Path) {
    let r = report(url, &["max-rate", "--warmup", "0", "--duration", "1"], dir);
    assert_clean(&r);
    assert_eq!(r["system"], system);
    let r = report(url, &["idle-connections", "--count", "50", "--warmup", "5", "--settle", "0"], dir);
    assert_eq!(num(&r["report"], "opened"), 50.0, "{r}");
}

#[test]
fn the_same_workload_runs_against_redis_streams() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let p = port.to_string();
    // Protected mode refuses sources other than 127.0.0.1, and idle-connections uses 127.0.0.2 onwards.
    let args = ["--port", &p, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"];
    let Some(_redis) = peer("redis-server", &args, port, dir.path()) else { return };
    workload_and_idle_against(&format!("redis://127.0.0.1:{port}"), "redis", dir.path());
}

#[test]
fn the_same_workload_runs_against_beanstalkd() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let p = port.to_string();
    let Some(_b) = peer("beanstalkd", &["-l", "127.0.0.1", "-p", &p], port, dir.path()) else { return };
    workload_and_idle_against(&format!("beanstalk://127.0.0.1:{port}"), "beanstalkd", dir.path());
}

#[test]
fn a_token_opens_a_secured_scheduler_to_the_workload_and_the_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let token = "loadtest-secret-00001";
    let file = dir.path().join("tokens");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let f = file.to_str().unwrap();
    let s = Scheduler::start(&["--producer-token-file", f, "--agent-token-file", f]);
    let target = format!("pm://{}", s.addr);
    let r = report(&target, &["--token", token, "max-rate", "--warmup", "0", "--duration", "1"], dir.path());
    assert_clean(&r);
    let idle = ["--token", token, "idle-connections", "--count", "50", "--warmup", "0", "--settle", "0"];
    let r = report(&target, &idle, dir.path());
    assert_eq!((num(&r["report"], "opened"), num(&r["report"], "failed")), (50.0, 0.0), "{r}");
    // Without it the handshake is refused and the run fails with that error.
    let o = loadtest(&["--target", &target, "--quiet", "max-rate", "--warmup", "0", "--duration", "1"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("token"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `slowloris`: connections that never send a whole Hello are all closed by the handshake timeout, while
/// the workload keeps running without errors (a baseline run first, then one under the slow connections).
#[test]
fn slowloris_connections_are_closed_by_the_handshake_timeout_while_the_workload_runs() {
    let s = Scheduler::start(&["--handshake-timeout", "1s"]);
    let dir = tempfile::tempdir().unwrap();
    let target = format!("pm://{}", s.addr);
    let pid = s.pid().unwrap().to_string();
    for mode in ["silent", "partial"] {
        let args =
            ["slowloris", "--count", "300", "--mode", mode, "--rate", "2000", "--warmup", "0", "--duration", "2"];
        let r = report(&target, &[&args[..], &["--server-pid", &pid, "--hold", "20"]].concat(), dir.path());
        let rep = &r["report"];
        assert_eq!(num(rep, "opened"), 300.0, "{r}");
        assert_eq!(num(rep, "closed_by_server"), 300.0, "every slow connection is closed: {r}");
        assert_eq!(num(rep, "still_open"), 0.0, "{r}");
        // Closed by the 1 s handshake timeout, not at once and not never.
        assert!(num(rep, "closed_after_ms.p50") >= 900.0 && num(rep, "closed_after_ms.max") < 20_000.0, "{r}");
        for run in ["baseline", "under_attack"] {
            assert_eq!(num(rep, &format!("{run}.errors")), 0.0, "{run}: {r}");
            assert!(num(rep, &format!("{run}.acked_per_s")) > 1000.0, "{run}: {r}");
        }
        assert!(num(rep, "server_rss_peak") > 0.0, "{r}");
    }
}

/// `flood`: past `--max-connections` the handshakes are refused with TOO_MANY_CONNECTIONS, none fails any
/// other way, and a producer connected before the flood still gets its Submit through.
#[test]
fn a_connection_flood_past_the_limit_is_refused_and_the_node_still_serves() {
    let s = Scheduler::start(&["--max-connections", "201"]);
    let dir = tempfile::tempdir().unwrap();
    let target = format!("pm://{}", s.addr);
    let pid = s.pid().unwrap().to_string();
    let r = report(&target, &["flood", "--count", "1000", "--server-pid", &pid], dir.path());
    let rep = &r["report"];
    // The flood's own producer holds one of the 201 slots.
    assert_eq!(num(rep, "accepted"), 200.0, "{r}");
    assert_eq!(num(rep, "refused"), 800.0, "{r}");
    assert_eq!(num(rep, "failed"), 0.0, "{r}");
    assert_eq!(rep["submit_after_flood_ok"], true, "{r}");
    assert!(num(rep, "server_rss_after") > 0.0, "{r}");
}
