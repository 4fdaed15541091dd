//! The scheduler's HTTP endpoint over a real socket: `/metrics` (Prometheus text with histogram buckets,
//! checked by `promtool`, every metric described and present from the start), `/healthz`, `/readyz`, unknown
//! paths, the header timeout, and a real Prometheus scraping it and answering `histogram_quantile` over the
//! end-to-end latency.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pm_client::ConnectOptions;
use pm_protocol::ErrorCode;
use pm_testkit::Scheduler;
use pm_tests::{next_lease, task};

/// `GET path` over HTTP/1.0 (the body ends at the close); returns the status and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    request(addr, "GET", path, "")
}

fn request(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all((head + body).as_bytes()).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let status = reply.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{reply:?}"));
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn http_addr(s: &Scheduler) -> String {
    s.http_addr.clone().expect("the testkit starts the scheduler with --http-listen 127.0.0.1:0")
}

#[tokio::test]
async fn metrics_are_prometheus_histograms_with_buckets() {
    let s = Scheduler::start(&[]);
    let http = http_addr(&s);
    let p = s.client(ConnectOptions::producer()).await;
    for i in 0..3u8 {
        p.submit_one(task("m", &[i])).await.unwrap();
    }
    let (a, mut leases) = s.agent().await;
    a.credit("m", 3).await.unwrap();
    for _ in 0..3 {
        let t = next_lease(&mut leases).await;
        assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::Ok]);
    }
    // The ack replies go out from the commit thread the moment their round is durable; the shard counts the
    // acks when it handles that round a moment later, so the counters may trail the replies briefly.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, text) = loop {
        let (status, text) = get(&http, "/metrics");
        let counted = text.contains("pm_tasks_acked_total 3") && text.contains("pm_end_to_end_seconds_count 3");
        if status != 200 || counted || Instant::now() > deadline {
            break (status, text);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 200, "{text}");
    for name in [
        "pm_end_to_end_seconds",
        "pm_submit_seconds",
        "pm_queue_wait_seconds",
        "pm_run_seconds",
        "pm_wal_fsync_seconds",
    ] {
        let line = format!("{name}_bucket{{le=\"0.05\"}}");
        assert!(text.contains(&line), "no {line} in:\n{text}");
        assert!(text.contains(&format!("# TYPE {name} histogram")), "{name} is not a histogram:\n{text}");
    }
    assert!(text.contains("pm_end_to_end_seconds_count 3"), "{text}");
    assert!(text.contains("pm_run_seconds_count 3"), "{text}");
    assert!(text.contains("pm_queue_wait_seconds_count 3"), "{text}");
    assert!(text.contains("pm_wal_batch_records_bucket{le=\"4096\"}"), "{text}");
    assert!(text.contains("pm_tasks_acked_total 3"), "{text}");
    assert!(!text.contains("quantile="), "summaries instead of histograms:\n{text}");
    promtool_check(&text);

    // The log's upkeep runs when the commit thread idles (every 100 ms) and is timed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (_, text) = get(&http, "/metrics");
        if text.contains("# TYPE pm_wal_maintain_seconds histogram") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(text.contains("pm_wal_maintain_seconds_bucket{le=\"0.05\"}"), "no maintenance histogram:\n{text}");
}

/// Pipes `text` through `promtool check metrics`: exit 0 and no findings.
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool is needed to check the metrics ({e}): install the Debian package `prometheus` \
             (apt-get install prometheus)"
        ),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let findings = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && findings.trim().is_empty(), "promtool: {:?}\n{findings}", out.status);
}

#[tokio::test]
async fn health_ready_and_unknown_paths() {
    let s = Scheduler::start(&[]);
    let http = http_addr(&s);
    assert_eq!(get(&http, "/healthz").0, 200);
    assert_eq!(get(&http, "/readyz").0, 200);
    assert_eq!(get(&http, "/nope").0, 404);
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_dropped_after_the_header_timeout() {
    let s = Scheduler::start(&["--http-header-timeout-ms", "300"]);
    let mut idle = TcpStream::connect(http_addr(&s)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server must close, not answer");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
}

#[tokio::test]
async fn http_off_prints_no_http_line() {
    let s = Scheduler::start(&["--http-listen", "off"]);
    assert!(s.http_addr.is_none());
    let p = s.client(ConnectOptions::producer()).await;
    p.submit_one(task("q", b"x")).await.unwrap();
}

/// A real Prometheus scrapes a real scheduler under a small load; its query API then answers the p99 of the
/// end-to-end latency with a number (the histogram is usable by `histogram_quantile`, as dashboards and alerts
/// use it).
#[tokio::test]
async fn a_real_prometheus_computes_the_p99_end_to_end_latency() {
    let Some(prometheus) =
        ["/usr/bin/prometheus", "/usr/local/bin/prometheus"].into_iter().find(|p| std::path::Path::new(p).exists())
    else {
        panic!("the `prometheus` server is missing: install the Debian package `prometheus` (.ci/run does)");
    };
    let s = Scheduler::start(&[]);
    let target = http_addr(&s);
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: pm\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .unwrap();
    // A free port for Prometheus (it prints no bound address for port 0).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let web = format!("127.0.0.1:{port}");
    let mut server = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tmp.path().join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // A small load: submit, lease and ack tasks until Prometheus has seen it.
    let p = s.client(ConnectOptions::producer()).await;
    let (a, mut leases) = s.agent().await;
    let query = "/api/v1/query?query=histogram_quantile(0.99,sum(rate(pm_end_to_end_seconds_bucket%5B30s%5D))by(le))";
    let started = Instant::now();
    let mut p99 = None;
    while p99.is_none() && started.elapsed() < Duration::from_secs(90) {
        for i in 0..20u8 {
            p.submit_one(task("load", &[i])).await.unwrap();
        }
        a.credit("load", 20).await.unwrap();
        for _ in 0..20 {
            let t = next_lease(&mut leases).await;
            a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(mut conn) = TcpStream::connect(&web) else { continue };
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        conn.write_all(format!("GET {query} HTTP/1.0\r\nHost: {web}\r\n\r\n").as_bytes()).unwrap();
        let mut reply = String::new();
        let _ = conn.read_to_string(&mut reply);
        let Some((_, body)) = reply.split_once("\r\n\r\n") else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else { continue };
        // {"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[ts,"0.0049"]}]}}
        p99 = v["data"]["result"][0]["value"][1].as_str().and_then(|x| x.parse::<f64>().ok()).filter(|x| x.is_finite());
    }
    let _ = server.kill();
    let _ = server.wait();
    let p99 = p99.expect("Prometheus never answered a finite p99 of pm_end_to_end_seconds");
    assert!(p99 > 0.0 && p99 < 10.0, "p99 {p99} s");
}

/// Every `pm_*` name in a text (with `_bucket`, `_sum`, `_count` taken off).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("pm_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        names.insert(base.to_string());
        rest = &tail[end..];
    }
    names
}

/// A fresh node, before any task: every metric it has is described (`# HELP`, `# TYPE`) and passes `promtool`;
/// counters are at 0, with one series per known label value (an alert on a counter that never moved reads 0,
/// not "no data").
#[tokio::test]
async fn a_fresh_node_exports_every_metric_described_and_at_zero() {
    let s = Scheduler::start(&[]);
    let (status, text) = get(&http_addr(&s), "/metrics");
    assert_eq!(status, 200, "{text}");
    promtool_check(&text);
    for name in metric_names(&text) {
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP:\n{text}");
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} has no TYPE:\n{text}");
    }
    for line in [
        "pm_tasks_redelivered_total 0",
        "pm_tasks_stolen_total 0",
        "pm_redirects_total 0",
        "pm_refused_total{reason=\"too_many_connections\"} 0",
        "pm_refused_total{reason=\"token_unknown\"} 0",
        "pm_stale_lease_total{op=\"ack\"} 0",
        "pm_tasks_reclaimed_total{outcome=\"not_found\"} 0",
        "pm_connections{role=\"ROLE_AGENT\"} 0",
        "pm_dead_letters{queue=\"default\"} 0",
        "pm_queue_wait_seconds_count 0",
        "pm_run_seconds_count 0",
        "pm_wal_fsync_seconds_bucket{le=\"0.05\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` on a fresh node:\n{text}");
    }
}

/// The alert rules pass `promtool check rules`, the dashboard is valid JSON, and every `pm_*` metric either
/// names is exported by a fresh scheduler, before any event (the original chart autoscaled on a metric nothing
/// exported); every `pm_agent_*` one by a real agent once it ran a pipeline that succeeded and one that failed.
#[tokio::test]
async fn alert_rules_and_the_dashboard_name_only_exported_metrics() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/observability");
    let rules = format!("{dir}/alerts.yml");
    let out = Command::new("promtool").args(["check", "rules", &rules]).output().unwrap();
    assert!(out.status.success(), "promtool check rules: {}", String::from_utf8_lossy(&out.stderr));
    let dashboard = std::fs::read_to_string(format!("{dir}/dashboard.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let named: std::collections::BTreeSet<String> =
        metric_names(&std::fs::read_to_string(&rules).unwrap()).into_iter().chain(metric_names(&dashboard)).collect();
    let (agent_named, node_named): (Vec<String>, Vec<String>) =
        named.iter().cloned().partition(|n| n.starts_with("pm_agent_"));

    // The scheduler's: on a fresh node, at once.
    let s = Scheduler::start(&[]);
    let exported = metric_names(&get(&http_addr(&s), "/metrics").1);
    let missing: Vec<&String> = node_named.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(missing.is_empty(), "named in docs/observability but not exported by a fresh node: {missing:?}");

    // The agent's panels: a real agent's API runs one pipeline that succeeds and one that fails.
    let agent = pm_testkit::AgentApi::start(&[]);
    for command in ["true", "exit 3"] {
        let body = format!(r#"{{"pipeline":[{{"executorName":"sh","commands":["{command}"]}}]}}"#);
        let (status, reply) = request(&agent.addr, "POST", "/v1/run", &body);
        assert_eq!(status, 200, "{reply}");
    }
    let mut missing = agent_named.clone();
    for _ in 0..100 {
        let exported = metric_names(&get(&agent.addr, "/metrics").1);
        missing = agent_named.iter().filter(|n| !exported.contains(*n)).cloned().collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(missing.is_empty(), "named in docs/observability but not exported by {}: {missing:?}", agent.addr);
    assert!(named.contains("pm_queue_wait_seconds") && named.contains("pm_tasks_redelivered_total"));
    assert!(named.contains("pm_redirects_total") && named.contains("pm_tasks_stolen_total"));
    assert!(agent_named.iter().any(|n| n == "pm_agent_task_duration_seconds"), "{agent_named:?}");
}

/// `n` keys that member `owner` of `ring` owns.
fn keys_owned_by(ring: &pm_task::ring::Ring, owner: usize, n: usize) -> Vec<String> {
    (0..).map(|i| format!("key-{i}")).filter(|k| ring.owner(k.as_bytes()) == Some(owner)).take(n).collect()
}

/// On a cluster, after node 0 stole tasks from node 1 for its idle agent and redirected a submit, both members'
/// `/metrics` pass `promtool check metrics`, and the stealing and the redirect are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_members_pass_promtool_after_stealing_and_a_redirect() {
    let c = pm_testkit::SchedulerCluster::start(2, &["--steal-interval", "20ms"]);
    let members = c.members();
    let ring = pm_task::ring::Ring::new(members.clone()).unwrap();
    // The only agent is on node 0; every task belongs to node 1.
    let (a, mut leases) = pm_client::Client::connect_agent(&members[0], ConnectOptions::agent()).await.unwrap();
    a.credit("steal", 16).await.unwrap();
    let keys = keys_owned_by(&ring, 1, 10);
    let owner = pm_client::Client::connect(&members[1], ConnectOptions::producer()).await.unwrap();
    let tasks = keys.iter().map(|k| pm_protocol::pb::TaskSpec { key: k.clone(), ..task("steal", k.as_bytes()) });
    owner.submit(tasks.collect()).await.unwrap();
    for _ in 0..keys.len() {
        let t = next_lease(&mut leases).await;
        assert!(t.lease_id & (1 << 63) != 0, "a stolen task carries a lease id of the stealing node");
        assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::Ok]);
    }
    // Node 0 redirects a submit of node 1's key.
    let direct = pm_client::Client::connect(&members[0], ConnectOptions::producer()).await.unwrap();
    let foreign = pm_protocol::pb::TaskSpec { key: keys[0].clone(), ..task("steal", b"x") };
    assert!(direct.submit(vec![foreign]).await.unwrap_err().redirect().is_some());

    let metrics_of = |node: &pm_testkit::Scheduler| get(&http_addr(node), "/metrics").1;
    let thief = metrics_of(&c.nodes[0]);
    let stolen = thief.lines().find_map(|l| l.strip_prefix("pm_tasks_stolen_total ")).unwrap_or("0");
    assert!(stolen.parse::<f64>().unwrap() >= keys.len() as f64, "{thief}");
    assert!(thief.lines().any(|l| l == "pm_redirects_total 1"), "{thief}");
    promtool_check(&thief);
    // The owner counts the acks once they are durable there (a moment after their replies).
    let deadline = Instant::now() + Duration::from_secs(10);
    let lender = loop {
        let text = metrics_of(&c.nodes[1]);
        if text.contains(&format!("pm_tasks_acked_total {}", keys.len())) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(lender.contains(&format!("pm_tasks_acked_total {}", keys.len())), "{lender}");
    promtool_check(&lender);
}
