//! Helpers shared by the end-to-end tests.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

pub mod podman;
pub mod tokens;

use pm_client::{AgentEvent, Leases};
use pm_protocol::pb::{LeasedTask, TaskSpec};

/// A task on `queue` with `payload`.
pub fn task(queue: &str, payload: &[u8]) -> TaskSpec {
    TaskSpec { payload: bytes::Bytes::copy_from_slice(payload), queue: queue.into(), ..Default::default() }
}

/// The next event pushed to an agent, or a panic after 10 s.
pub async fn next_event(leases: &mut Leases) -> AgentEvent {
    tokio::time::timeout(Duration::from_secs(10), leases.next())
        .await
        .expect("nothing pushed to the agent within 10 s")
        .expect("lease stream ended")
}

/// The next leased task, or a panic after 10 s (or on a revocation).
pub async fn next_lease(leases: &mut Leases) -> LeasedTask {
    match next_event(leases).await {
        AgentEvent::Leased(t) => t,
        AgentEvent::Revoked(r) => panic!("unexpected revocation of lease {} (task {})", r.lease_id, r.task_id),
        AgentEvent::Reclaimed(r) => panic!("unexpected reclaim results {r:?}"),
    }
}

/// Asserts that nothing is pushed to the agent within `d`.
pub async fn assert_no_lease(leases: &mut Leases, d: Duration) {
    if let Ok(Some(ev)) = tokio::time::timeout(d, leases.next()).await {
        panic!("unexpected {ev:?}");
    }
}

/// Submits one task document through `pmctl submit` (a real process) and returns its id: a new task at every
/// call, even for the same document (`--no-idempotency-key`).
pub fn submit_json(s: &pm_testkit::Scheduler, json: &str) -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("task.json");
    std::fs::write(&file, json).expect("write the task file");
    let out = pm_testkit::pmctl(&s.addr, &["submit", "--no-idempotency-key", &file.display().to_string()], None);
    assert!(out.status.success(), "pmctl: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("pmctl prints the task id")
}

/// A TCP proxy on loopback that can be paused: while paused it moves no bytes either way (a network partition
/// that TCP survives: what was sent arrives once it heals, as after retransmission).
pub struct PausableProxy {
    /// Address to connect to instead of the target.
    pub addr: String,
    paused: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl PausableProxy {
    /// Listens on `listen` (port 0 picks one) and forwards every connection to `target`.
    pub async fn start(listen: &str, target: &str) -> PausableProxy {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let paused = std::sync::Arc::new(tokio::sync::watch::channel(false).0);
        let (target, gate) = (target.to_string(), paused.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else { continue };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, gate.subscribe()));
                tokio::spawn(pump(sr, cw, gate.subscribe()));
            }
        });
        PausableProxy { addr, paused }
    }

    /// Stops (`true`) or resumes (`false`) all traffic.
    pub fn pause(&self, on: bool) {
        self.paused.send_replace(on);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just as the pause began are held until it ends.
        if paused.wait_for(|p| !*p).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// An HTTP answer: status, headers (lowercase names), body.
#[derive(Debug)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// `name: value` lines, names lowercased.
    pub headers: String,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.0 request (the body ends when the server closes), with extra headers.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("{raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{head:?}"));
    let headers = head.lines().skip(1).map(|l| l.to_ascii_lowercase() + "\n").collect();
    HttpReply { status, headers, body: raw[split + 4..].to_vec() }
}

/// `pm_refused_total{reason="REASON"}` on the node's `/metrics` (0 while nothing was refused for it).
pub fn refused_total(s: &pm_testkit::Scheduler, reason: &str) -> u64 {
    let addr = s.http_addr.clone().expect("the node serves /metrics");
    let text = String::from_utf8(http(&addr, "GET", "/metrics", &[], b"").body).unwrap();
    let label = format!("reason=\"{reason}\"");
    text.lines()
        .find(|l| l.starts_with("pm_refused_total{") && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
