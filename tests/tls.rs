//! TLS on the scheduler's listener, through real processes and throwaway CAs (rcgen): a handshake with the
//! right CA carries the whole protocol; a client trusting another CA, and a plaintext client, are refused
//! while the node keeps serving; mutual TLS refuses clients without a certificate of its CA; a renewed
//! certificate is served to new connections without a restart; `pmctl` and `pm-agent` speak TLS; two
//! cluster nodes steal work from each other over mutual TLS; a running `pm-agent` presents its renewed
//! client certificate when it reconnects, and a node's peer connections present its renewed certificate. The agent's direct-run API over TLS: a pipeline run over HTTPS, a
//! client of another CA refused, gRPC over mutual TLS, and a renewed certificate served without a restart.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use pm_client::{Client, ConnectOptions, ErrorKind};
use pm_testkit::tls::{CertFiles, TestCa};
use pm_testkit::{wait_for, Agent, AgentApi, Scheduler, SchedulerCluster};
use pm_tests::{next_lease, task};

/// `PREFIX-cert-file CERT PREFIX-key-file KEY`, then the extra flags with their files.
fn cert_flags(prefix: &str, server: &CertFiles, extra: &[(&str, &Path)]) -> Vec<String> {
    let mut flags = vec![
        format!("{prefix}-cert-file"),
        server.cert.display().to_string(),
        format!("{prefix}-key-file"),
        server.key.display().to_string(),
    ];
    for (flag, path) in extra {
        flags.push(flag.to_string());
        flags.push(path.display().to_string());
    }
    flags
}

/// The scheduler's TLS flags for `server`, plus extra ones.
fn tls_flags(server: &CertFiles, extra: &[(&str, &Path)]) -> Vec<String> {
    cert_flags("--tls", server, extra)
}

fn start(flags: &[String]) -> Scheduler {
    Scheduler::start(&flags.iter().map(String::as_str).collect::<Vec<_>>())
}

fn trusting(ca: &TestCa, identity: Option<&CertFiles>) -> std::sync::Arc<rustls::ClientConfig> {
    pm_client::tls::client_config(&ca.ca_file, identity.map(|c| (c.cert.as_path(), c.key.as_path()))).unwrap()
}

async fn connect_err(addr: &str, opts: ConnectOptions) -> pm_client::Error {
    match Client::connect(addr, opts.reconnect(false)).await {
        Ok(_) => panic!("the connection to {addr} must be refused"),
        Err(e) => e,
    }
}

/// `pm_refused_total{reason="tls_handshake"}` on the node's /metrics.
fn tls_refusals(s: &Scheduler) -> u64 {
    use std::io::{Read, Write};
    let addr = s.http_addr.clone().unwrap();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(c, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    text.lines()
        .find(|l| l.starts_with("pm_refused_total{") && l.contains("reason=\"tls_handshake\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

#[tokio::test]
async fn tls_with_the_right_ca_carries_the_protocol_and_everything_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (TestCa::new(dir.path(), "ours"), TestCa::new(dir.path(), "other"));
    let server = ca.issue("node", &["127.0.0.1"]);
    let s = start(&tls_flags(&server, &[]));

    // The whole protocol over TLS: submit, lease, ack.
    let p = s.client(ConnectOptions::producer().tls(trusting(&ca, None))).await;
    let (a, mut leases) =
        Client::connect_agent(&s.addr, ConnectOptions::agent().tls(trusting(&ca, None))).await.unwrap();
    let id = p.submit_one(task("tls", b"over tls")).await.unwrap();
    a.credit("tls", 1).await.unwrap();
    let t = next_lease(&mut leases).await;
    assert_eq!((t.task_id, &t.payload[..]), (id, &b"over tls"[..]));
    assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![pm_protocol::ErrorCode::Ok]);

    // A client that trusts another CA refuses the server's certificate.
    let e = connect_err(&s.addr, ConnectOptions::producer().tls(trusting(&other, None))).await;
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    assert!(e.to_string().contains("TLS handshake") && e.to_string().contains("certificate"), "{e}");
    // A certificate for another name is refused too (the client checks the name it dialled: the certificate
    // names 127.0.0.1 only).
    let e = connect_err(&s.addr.replace("127.0.0.1", "localhost"), ConnectOptions::producer().tls(trusting(&ca, None)))
        .await;
    assert!(e.to_string().contains("certificate"), "{e}");

    // A plaintext client gets no Welcome; the node counts it and keeps serving TLS clients.
    let before = tls_refusals(&s);
    let e = connect_err(&s.addr, ConnectOptions::producer()).await;
    assert!(matches!(e.kind(), ErrorKind::Connect | ErrorKind::Timeout), "{e}");
    wait_for(Duration::from_secs(10), "the refusal to be counted", || (tls_refusals(&s) > before).then_some(()));
    p.submit_one(task("tls", b"still serving")).await.unwrap();
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (TestCa::new(dir.path(), "ours"), TestCa::new(dir.path(), "other"));
    let server = ca.issue("node", &["127.0.0.1"]);
    let s = start(&tls_flags(&server, &[("--tls-client-ca-file", &ca.ca_file)]));
    let (good, foreign) = (ca.issue("producer", &["producer"]), other.issue("producer", &["producer"]));

    let p = s.client(ConnectOptions::producer().tls(trusting(&ca, Some(&good)))).await;
    p.submit_one(task("mtls", b"x")).await.unwrap();
    for (what, identity) in [("no certificate", None), ("a certificate of another CA", Some(&foreign))] {
        let e = connect_err(&s.addr, ConnectOptions::producer().tls(trusting(&ca, identity))).await;
        assert!(matches!(e.kind(), ErrorKind::Connect | ErrorKind::Timeout), "{what}: {e}");
    }
    p.submit_one(task("mtls", b"y")).await.unwrap();
}

/// The certificate files are replaced (a renewed Secret): new connections get the new certificate within
/// seconds, with no restart, and an open connection goes on.
#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (TestCa::new(dir.path(), "old"), TestCa::new(dir.path(), "new"));
    let served = CertFiles { cert: dir.path().join("tls.crt"), key: dir.path().join("tls.key") };
    let install = |c: &CertFiles| {
        std::fs::copy(&c.key, &served.key).unwrap();
        std::fs::copy(&c.cert, &served.cert).unwrap();
    };
    install(&old_ca.issue("node", &["127.0.0.1"]));
    let s = start(&tls_flags(&served, &[]));
    let open = s.client(ConnectOptions::producer().tls(trusting(&old_ca, None))).await;
    // Not yet: the new CA's clients refuse the old certificate.
    assert!(Client::connect(&s.addr, ConnectOptions::producer().tls(trusting(&new_ca, None)).reconnect(false))
        .await
        .is_err());

    // Different sizes or mtimes make the change visible even within one second.
    std::thread::sleep(Duration::from_millis(1100));
    install(&new_ca.issue("node-renewed", &["127.0.0.1"]));
    let mut renewed = None;
    for _ in 0..100 {
        let opts = ConnectOptions::producer().tls(trusting(&new_ca, None)).reconnect(false);
        if let Ok(c) = Client::connect(&s.addr, opts).await {
            renewed = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let renewed = renewed.unwrap_or_else(|| panic!("the renewed certificate was not served; log:\n{}", s.log_tail()));
    renewed.submit_one(task("renew", b"new")).await.unwrap();
    open.submit_one(task("renew", b"old connection")).await.unwrap();
}

/// `pmctl --tls-ca-file` submits and `pm-agent run --tls-ca-file` runs the pipeline; a scheduler refuses to
/// start on a certificate file it cannot use, naming it.
#[tokio::test]
async fn pmctl_and_pm_agent_speak_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ours");
    let server = ca.issue("node", &["127.0.0.1"]);
    let s = start(&tls_flags(&server, &[]));
    let ca_file = ca.ca_file.to_str().unwrap();
    let agent = Agent::start(&s.addr, &["--tls-ca-file", ca_file]);
    let out = dir.path().join("out.txt");
    let task_file = dir.path().join("task.json");
    std::fs::write(
        &task_file,
        format!(r#"{{"pipeline":[{{"executorName":"sh","commands":["echo tls > {}"]}}]}}"#, out.display()),
    )
    .unwrap();
    let submitted =
        pm_testkit::pmctl(&s.addr, &["--tls-ca-file", ca_file, "submit", task_file.to_str().unwrap()], None);
    assert!(submitted.status.success(), "{}", String::from_utf8_lossy(&submitted.stderr));
    let text = wait_for(Duration::from_secs(20), "the pipeline over TLS", || {
        std::fs::read_to_string(&out).ok().filter(|t| t.ends_with('\n'))
    });
    assert_eq!(text, "tls\n", "agent log:\n{}", agent.log());
    // Without the CA, pmctl fails with a one-line error and exit 1.
    let plain = pm_testkit::pmctl(&s.addr, &["stats"], None);
    assert_eq!(plain.status.code(), Some(1), "{}", String::from_utf8_lossy(&plain.stderr));

    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "garbage\n").unwrap();
    let out = std::process::Command::new(pm_testkit::bin("pm-scheduler"))
        .args(["--listen", "127.0.0.1:0", "--http-listen", "off", "--data"])
        .arg(dir.path().join("data"))
        .args(["--tls-cert-file", bad.to_str().unwrap(), "--tls-key-file", server.key.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.pem"), "{err}");
}

/// Two nodes with mutual TLS and tokens: node 0's agent takes node 1's tasks (work stealing over a TLS peer
/// connection that presents the node's own certificate).
#[tokio::test]
async fn cluster_nodes_steal_work_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "cluster");
    let server = ca.issue("node", &["127.0.0.10", "127.0.0.11"]);
    let ca_path = ca.ca_file.as_path();
    let flags = tls_flags(&server, &[("--tls-client-ca-file", ca_path), ("--tls-ca-file", ca_path)]);
    let c = SchedulerCluster::start(2, &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let tls = trusting(&ca, Some(&ca.issue("client", &["client"])));
    let (a, mut leases) =
        Client::connect_agent(&c.nodes[0].addr, ConnectOptions::agent().tls(tls.clone())).await.unwrap();
    a.credit("steal", 1).await.unwrap();
    let p = Client::connect(&c.nodes[1].addr, ConnectOptions::producer().tls(tls)).await.unwrap();
    // Keyless tasks stay on the node they are sent to: node 1, which has no agent.
    let id = p.submit_one(task("steal", b"stolen over tls")).await.unwrap();
    let t = next_lease(&mut leases).await;
    assert_eq!(t.task_id, id, "node 0's agent got node 1's task");
    assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![pm_protocol::ErrorCode::Ok]);
}

const PRODUCER_TOKEN: &str = "producer-secret-0001";
const AGENT_TOKEN: &str = "agent-secret-000001";

/// The handshake is refused with UNAUTHORIZED; returns the message.
async fn unauthorized(addr: &str, opts: ConnectOptions) -> String {
    let e = connect_err(addr, opts).await;
    assert_eq!((e.kind(), e.code()), (ErrorKind::Handshake, Some(pm_protocol::ErrorCode::Unauthorized)), "{e}");
    e.message().to_string()
}

/// `--tls-client-role`: a certificate whose Common Name, DNS name or URI a rule names has that role without a
/// token (and no other); a token it sends must be valid for that role; a certificate no rule names needs a
/// token as before.
#[tokio::test]
async fn mutual_tls_maps_client_certificates_to_roles() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ours");
    let server = ca.issue("node", &["127.0.0.1"]);
    let producer_tokens = dir.path().join("producer-tokens");
    let agent_tokens = dir.path().join("agent-tokens");
    std::fs::write(&producer_tokens, format!("{PRODUCER_TOKEN}\n")).unwrap();
    std::fs::write(&agent_tokens, format!("{AGENT_TOKEN}\n")).unwrap();
    let mut flags = tls_flags(
        &server,
        &[
            ("--tls-client-ca-file", &ca.ca_file),
            ("--producer-token-file", &producer_tokens),
            ("--agent-token-file", &agent_tokens),
        ],
    );
    for rule in ["producer=ingest", "agent=runner.example.com", "agent=spiffe://pm.test/agent"] {
        flags.extend(["--tls-client-role".to_string(), rule.to_string()]);
    }
    let s = start(&flags);
    // Matched by Common Name, by DNS name, by URI; and one no rule names.
    let producer_cert = ca.issue("ingest", &["ingest.example.com"]);
    let agent_cert = ca.issue("runner", &["runner.example.com"]);
    let spiffe_cert = ca.issue_with_uris("workload", &[], &["spiffe://pm.test/agent"]);
    let other_cert = ca.issue("other", &["other.example.com"]);
    let with = |c: &CertFiles| trusting(&ca, Some(c));

    // A producer certificate submits without a token, and cannot lease.
    let p = s.client(ConnectOptions::producer().tls(with(&producer_cert))).await;
    let id = p.submit_one(task("mapped", b"by certificate")).await.unwrap();
    let msg = unauthorized(&s.addr, ConnectOptions::agent().tls(with(&producer_cert))).await;
    assert!(msg.contains("certificate is for role producer, not agent"), "{msg}");

    // An agent certificate (DNS name) leases without a token, and cannot submit.
    let (a, mut leases) =
        Client::connect_agent(&s.addr, ConnectOptions::agent().tls(with(&agent_cert)).reconnect(false)).await.unwrap();
    a.credit("mapped", 1).await.unwrap();
    let t = next_lease(&mut leases).await;
    assert_eq!(t.task_id, id);
    assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![pm_protocol::ErrorCode::Ok]);
    let e = a.submit(vec![task("mapped", b"no")]).await.unwrap_err();
    assert_eq!(e.code(), Some(pm_protocol::ErrorCode::RoleNotAllowed), "{e}");
    let msg = unauthorized(&s.addr, ConnectOptions::producer().tls(with(&agent_cert))).await;
    assert!(msg.contains("for role agent, not producer"), "{msg}");
    // So does one named by a URI, with a token of its role too.
    let (a2, _l) = Client::connect_agent(
        &s.addr,
        ConnectOptions::agent().token(AGENT_TOKEN).tls(with(&spiffe_cert)).reconnect(false),
    )
    .await
    .unwrap();
    a2.credit("mapped", 1).await.unwrap();

    // A certificate no rule names still needs a token of its role.
    let msg = unauthorized(&s.addr, ConnectOptions::producer().tls(with(&other_cert))).await;
    assert!(msg.contains("a token is required"), "{msg}");
    let msg = unauthorized(&s.addr, ConnectOptions::agent().token(PRODUCER_TOKEN).tls(with(&other_cert))).await;
    assert!(msg.contains("not valid for role agent"), "{msg}");
    let o = s.client(ConnectOptions::producer().token(PRODUCER_TOKEN).tls(with(&other_cert))).await;
    o.submit_one(task("mapped", b"by token")).await.unwrap();

    // A producer certificate with an agent token is refused, whichever role it asks for.
    let msg = unauthorized(&s.addr, ConnectOptions::producer().token(AGENT_TOKEN).tls(with(&producer_cert))).await;
    assert!(msg.contains("not valid for role producer"), "{msg}");
    let msg = unauthorized(&s.addr, ConnectOptions::agent().token(AGENT_TOKEN).tls(with(&producer_cert))).await;
    assert!(msg.contains("certificate is for role producer"), "{msg}");

    // The rules need mutual TLS and a known role: anything else exits 64 before binding.
    for bad in [
        vec!["--tls-client-role", "producer=ingest"],
        vec!["--tls-client-ca-file", ca.ca_file.to_str().unwrap(), "--tls-client-role", "root=ingest"],
        vec!["--tls-client-ca-file", ca.ca_file.to_str().unwrap(), "--tls-client-role", "producer="],
    ] {
        let out = std::process::Command::new(pm_testkit::bin("pm-scheduler"))
            .args(["--listen", "127.0.0.1:0", "--http-listen", "off", "--data"])
            .arg(dir.path().join("data-bad"))
            .args(["--tls-cert-file", server.cert.to_str().unwrap(), "--tls-key-file", server.key.to_str().unwrap()])
            .args(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{bad:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout.is_empty(), "{bad:?}: nothing may be bound");
    }
}

/// The connection limits on a TLS listener: the refusal completes the TLS handshake and sends
/// TOO_MANY_CONNECTIONS, which the client reports as that code; at most 64 refusals are in their handshake at
/// once (past them a refused socket is closed without TLS), and once those time out, refusals speak TLS again.
#[tokio::test]
async fn connection_limits_refuse_tls_clients_with_a_clear_code() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ours");
    let server = ca.issue("node", &["127.0.0.1"]);
    let opts = || ConnectOptions::producer().tls(trusting(&ca, None));

    let mut flags = tls_flags(&server, &[]);
    flags.extend(["--max-connections", "1", "--handshake-timeout", "2s"].map(String::from));
    let s = start(&flags);
    let held = s.client(opts()).await;
    let e = connect_err(&s.addr, opts()).await;
    assert_eq!(e.code(), Some(pm_protocol::ErrorCode::TooManyConnections), "{e}");
    assert!(e.to_string().contains("connection limit reached"), "{e}");
    assert!(pm_tests::refused_total(&s, "too_many_connections") >= 1);
    assert_eq!(pm_tests::refused_total(&s, "tls_handshake"), 0, "a refusal is not a failed handshake");

    // 70 sockets past the limit that never start their TLS handshake: 64 hold a refusal's handshake, the
    // others are closed at once, and so is a TLS client while they wait.
    let mut silent = Vec::new();
    for _ in 0..70 {
        silent.push(tokio::net::TcpStream::connect(&s.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut closed = 0;
    for sock in &silent {
        let mut b = [0u8; 1];
        match sock.try_read(&mut b) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("unexpected read on a refused socket: {other:?}"),
        }
    }
    assert_eq!(closed, 6, "the sockets past 64 refusals in their handshake are closed at once");
    let e = connect_err(&s.addr, opts()).await;
    assert_ne!(e.code(), Some(pm_protocol::ErrorCode::TooManyConnections), "{e}");
    // The handshake timeout frees the 64; refusals speak TLS again, and the held connection still works.
    let mut again = false;
    for _ in 0..100 {
        if connect_err(&s.addr, opts()).await.code() == Some(pm_protocol::ErrorCode::TooManyConnections) {
            again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again, "refusals never spoke TLS again");
    held.submit_one(task("limits", b"still served")).await.unwrap();
    drop(silent);

    // The limit per source address, the same way.
    let mut flags = tls_flags(&server, &[]);
    flags.extend(["--max-connections-per-ip", "1"].map(String::from));
    let s = start(&flags);
    let _held = s.client(opts()).await;
    let e = connect_err(&s.addr, opts()).await;
    assert_eq!(e.code(), Some(pm_protocol::ErrorCode::TooManyConnections), "{e}");
    assert!(e.to_string().contains("per source address"), "{e}");
    assert!(pm_tests::refused_total(&s, "too_many_connections_per_ip") >= 1);
}

/// Copies `from` over `to` (key first, then certificate: a renewal as a Secret update lands it).
fn install(from: &CertFiles, to: &CertFiles) {
    std::fs::copy(&from.key, &to.key).unwrap();
    std::fs::copy(&from.cert, &to.cert).unwrap();
}

/// A renewal: the client certificate files of a running `pm-agent` are replaced by ones of a new CA, and the
/// scheduler restarts trusting that CA instead of the old one. The agent reconnects presenting the new
/// certificate and runs the next task; a client still presenting the old one is refused.
#[tokio::test]
async fn a_running_agent_presents_its_renewed_client_certificate_when_it_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, old_clients, new_clients) =
        (TestCa::new(dir.path(), "ours"), TestCa::new(dir.path(), "old"), TestCa::new(dir.path(), "new"));
    let server = ca.issue("node", &["127.0.0.1"]);
    // The scheduler's client CAs: the agents' (old, then new) and the producers' (`ca`).
    let client_cas = dir.path().join("client-cas.pem");
    let trust = |agents: &TestCa| {
        let pem = |p: &Path| std::fs::read_to_string(p).unwrap();
        std::fs::write(&client_cas, pem(&agents.ca_file) + &pem(&ca.ca_file)).unwrap();
    };
    trust(&old_clients);
    let presented = CertFiles { cert: dir.path().join("client.crt"), key: dir.path().join("client.key") };
    let old = old_clients.issue("agent", &["agent"]);
    install(&old, &presented);
    let mut s = start(&tls_flags(&server, &[("--tls-client-ca-file", &client_cas)]));
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let agent = Agent::start(
        &s.addr,
        &[
            "--tls-ca-file",
            &path(&ca.ca_file),
            "--tls-client-cert-file",
            &path(&presented.cert),
            "--tls-client-key-file",
            &path(&presented.key),
        ],
    );
    let producer_tls = trusting(&ca, Some(&ca.issue("producer", &["producer"])));
    let run_one = |addr: String, name: &'static str| {
        let (tls, out) = (producer_tls.clone(), dir.path().join(name));
        async move {
            let p = Client::connect(&addr, ConnectOptions::producer().tls(tls).reconnect(false)).await.unwrap();
            let json =
                format!(r#"{{"pipeline":[{{"executorName":"sh","commands":["echo {name} > {}"]}}]}}"#, out.display());
            p.submit_one(task("default", json.as_bytes())).await.unwrap();
            out
        }
    };
    let read = |out: &Path| std::fs::read_to_string(out).ok().filter(|t| t.ends_with('\n'));

    let out = run_one(s.addr.clone(), "before").await;
    let text = wait_for(Duration::from_secs(30), "the task before the renewal", || read(&out));
    assert_eq!(text, "before\n", "agent log:\n{}", agent.log());

    // The renewal: the agent's files now hold a certificate of the new CA, and the scheduler trusts only that.
    std::thread::sleep(Duration::from_millis(1100));
    install(&new_clients.issue("agent-renewed", &["agent"]), &presented);
    trust(&new_clients);
    s.restart();
    // The old certificate is refused now: an agent that kept it could not reconnect.
    let e = connect_err(&s.addr, ConnectOptions::agent().tls(trusting(&ca, Some(&old)))).await;
    assert!(matches!(e.kind(), ErrorKind::Connect | ErrorKind::Timeout), "{e}");
    let out = run_one(s.addr.clone(), "after").await;
    let text = wait_for(Duration::from_secs(30), "the task after the renewal", || read(&out));
    assert_eq!(text, "after\n", "agent log:\n{}\nscheduler log:\n{}", agent.log(), s.log_tail());
}

/// The agent's API TLS flags for `server`, plus extra ones.
fn api_tls_flags(server: &CertFiles, extra: &[(&str, &Path)]) -> Vec<String> {
    cert_flags("--api-tls", server, extra)
}

fn start_api(flags: &[String]) -> AgentApi {
    AgentApi::start(&flags.iter().map(String::as_str).collect::<Vec<_>>())
}

/// One HTTPS/1.1 request: the status and the body, or why the TLS connection failed.
fn https(
    addr: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let name = pm_client::tls::server_name(addr)?;
    let conn = rustls::ClientConnection::new(tls, name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).and_then(|()| s.write_all(body)).map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            // A peer that closes without close_notify, after its whole answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !reply.is_empty() => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("{head:?}"))?;
    Ok((status, body.to_string()))
}

/// `POST /v1/run` over HTTPS runs the pipeline; a client trusting another CA, and a plaintext client, get
/// nothing; a non-loopback API with TLS but no token does not start.
#[test]
fn the_direct_run_api_runs_a_pipeline_over_https_and_refuses_other_cas() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (TestCa::new(dir.path(), "ours"), TestCa::new(dir.path(), "other"));
    let server = ca.issue("agent", &["127.0.0.1"]);
    let api = start_api(&api_tls_flags(&server, &[]));
    let hello = br#"{"pipeline":[{"executorName":"sh","commands":["echo over https"]}]}"#;
    let (status, body) = https(&api.addr, trusting(&ca, None), "POST", "/v1/run", hello).unwrap();
    assert_eq!(status, 200, "{body}");
    let result: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["steps"][0]["commands"][0]["stdoutTail"], "over https\n", "{result}");

    let e = https(&api.addr, trusting(&other, None), "GET", "/healthz", b"").unwrap_err();
    assert!(e.contains("certificate") || e.contains("UnknownIssuer"), "{e}");
    // Plain HTTP gets no HTTP answer from a TLS-only API.
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&api.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut reply = Vec::new();
        let _ = c.read_to_end(&mut reply);
        assert!(!reply.starts_with(b"HTTP/"), "{}", String::from_utf8_lossy(&reply));
    }
    assert_eq!(https(&api.addr, trusting(&ca, None), "GET", "/healthz", b"").unwrap().0, 200, "still serving");

    // TLS does not stand in for the token off loopback.
    let out = std::process::Command::new(pm_testkit::bin("pm-agent"))
        .args(["serve", "--api-listen", "0.0.0.0:0", "--work-dir"])
        .arg(dir.path().join("work"))
        .args(api_tls_flags(&server, &[]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("--api-token"), "{err}");
}

/// gRPC `Run` over mutual TLS: a client presenting a certificate of the API's client CA streams the run; one
/// without a certificate is refused.
#[tokio::test]
async fn grpc_runs_over_mutual_tls() {
    use pm_agent::api::grpc::pb::agent_client::AgentClient;
    use pm_agent::api::grpc::pb::{run_event::Event, RunRequest};
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ours");
    let server = ca.issue("agent", &["127.0.0.1"]);
    let client = ca.issue("caller", &["caller"]);
    let api = start_api(&api_tls_flags(&server, &[("--api-tls-client-ca-file", &ca.ca_file)]));
    let pem = |p: &Path| std::fs::read_to_string(p).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem(&ca.ca_file)))
        .identity(Identity::from_pem(pem(&client.cert), pem(&client.key)));
    let channel = Channel::from_shared(format!("https://{}", api.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let json = r#"{"pipeline":[{"executorName":"sh","commands":["echo over grpc+tls"]}]}"#;
    let mut events = AgentClient::new(channel).run(RunRequest { task_json: json.into() }).await.unwrap().into_inner();
    let (mut out, mut result) = (Vec::new(), None);
    while let Some(e) = events.message().await.unwrap() {
        match e.event.unwrap() {
            Event::Output(o) => out.extend(o.data),
            Event::Result(r) => result = Some(r),
            _ => {}
        }
    }
    assert_eq!(out, b"over grpc+tls\n");
    assert!(result.unwrap().ok);

    // Without a client certificate the handshake fails (HTTPS shows it best).
    let e = https(&api.addr, trusting(&ca, None), "GET", "/healthz", b"").unwrap_err();
    assert!(!e.is_empty());
    let ok = https(&api.addr, trusting(&ca, Some(&client)), "GET", "/healthz", b"").unwrap();
    assert_eq!(ok.0, 200);
}

/// The API's certificate files are replaced: new connections get the new certificate without a restart.
#[test]
fn the_direct_run_api_serves_a_renewed_certificate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (TestCa::new(dir.path(), "old"), TestCa::new(dir.path(), "new"));
    let served = CertFiles { cert: dir.path().join("api.crt"), key: dir.path().join("api.key") };
    install(&old_ca.issue("agent", &["127.0.0.1"]), &served);
    let api = start_api(&api_tls_flags(&served, &[]));
    assert_eq!(https(&api.addr, trusting(&old_ca, None), "GET", "/healthz", b"").unwrap().0, 200);
    assert!(https(&api.addr, trusting(&new_ca, None), "GET", "/healthz", b"").is_err(), "not renewed yet");

    std::thread::sleep(Duration::from_millis(1100));
    install(&new_ca.issue("agent-renewed", &["127.0.0.1"]), &served);
    let renewed = wait_for(Duration::from_secs(10), "the renewed certificate", || {
        https(&api.addr, trusting(&new_ca, None), "GET", "/healthz", b"").ok()
    });
    assert_eq!(renewed.0, 200);
    assert!(https(&api.addr, trusting(&old_ca, None), "GET", "/healthz", b"").is_err(), "the old one is gone");
}

/// A node's certificate is renewed to a new CA while it runs: its peer connections present the new one. Node 1
/// restarts trusting only the new CA for clients; node 0, not restarted, still takes node 1's tasks for its
/// agent (work stealing over a peer connection made after the renewal), and a client presenting a
/// certificate of the old CA is refused by node 1.
#[tokio::test]
async fn peer_connections_present_the_renewed_node_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca, clients) =
        (TestCa::new(dir.path(), "old"), TestCa::new(dir.path(), "new"), TestCa::new(dir.path(), "clients"));
    let pem = |p: &Path| std::fs::read_to_string(p).unwrap();
    // Servers' certificates are checked against both CAs throughout (peers and clients alike).
    let servers_ca = dir.path().join("servers-ca.pem");
    std::fs::write(&servers_ca, pem(&old_ca.ca_file) + &pem(&new_ca.ca_file)).unwrap();
    // Client certificates: the nodes' (old, then new) and the test clients'.
    let client_cas = dir.path().join("client-cas.pem");
    let trust = |nodes: &TestCa| std::fs::write(&client_cas, pem(&nodes.ca_file) + &pem(&clients.ca_file)).unwrap();
    trust(&old_ca);
    let served = CertFiles { cert: dir.path().join("node.crt"), key: dir.path().join("node.key") };
    let names = ["127.0.0.10", "127.0.0.11"];
    install(&old_ca.issue("node", &names), &served);
    let flags = tls_flags(&served, &[("--tls-client-ca-file", &client_cas), ("--tls-ca-file", &servers_ca)]);
    let mut c = SchedulerCluster::start(2, &flags.iter().map(String::as_str).collect::<Vec<_>>());

    std::thread::sleep(Duration::from_millis(1100));
    install(&new_ca.issue("node-renewed", &names), &served);
    trust(&new_ca);
    c.nodes[1].restart();
    let old_node = old_ca.issue("old-node", &names);
    let refused = pm_client::tls::client_config(&servers_ca, Some((&old_node.cert, &old_node.key))).unwrap();
    let e = connect_err(&c.nodes[1].addr, ConnectOptions::producer().tls(refused)).await;
    assert!(matches!(e.kind(), ErrorKind::Connect | ErrorKind::Timeout), "{e}");

    let client = clients.issue("client", &["client"]);
    let tls = pm_client::tls::client_config(&servers_ca, Some((&client.cert, &client.key))).unwrap();
    let (a, mut leases) =
        Client::connect_agent(&c.nodes[0].addr, ConnectOptions::agent().tls(tls.clone())).await.unwrap();
    a.credit("steal", 1).await.unwrap();
    let p = Client::connect(&c.nodes[1].addr, ConnectOptions::producer().tls(tls)).await.unwrap();
    let id = p.submit_one(task("steal", b"stolen after the renewal")).await.unwrap();
    let t = match tokio::time::timeout(Duration::from_secs(30), leases.next()).await {
        Ok(Some(pm_client::AgentEvent::Leased(t))) => t,
        other => panic!("no lease from node 1 ({other:?}); node 0 log:\n{}", c.nodes[0].log_tail()),
    };
    assert_eq!(t.task_id, id, "node 0's agent got node 1's task");
    assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![pm_protocol::ErrorCode::Ok]);
}
