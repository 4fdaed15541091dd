//! End to end: the agent's direct-run HTTP API (`pm-agent serve`) over a real socket, with real shell commands.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pm_testkit::{bin, wait_for, AgentApi};
use serde_json::Value;

struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends one HTTP/1.1 request and returns the status line, headers, and a reader positioned at the body.
fn send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, BufReader<TcpStream>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let code = status.split_whitespace().nth(1).unwrap_or_else(|| panic!("{status:?}")).parse().unwrap();
    let mut headers = String::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h == "\r\n" || h.is_empty() {
            break;
        }
        headers.push_str(&h.to_ascii_lowercase());
    }
    (code, headers, r)
}

/// Reads one chunk of a chunked body; `None` at the end.
fn chunk(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut size = String::new();
    r.read_line(&mut size).unwrap();
    let n = usize::from_str_radix(size.trim(), 16).unwrap_or_else(|_| panic!("chunk size {size:?}"));
    let mut data = vec![0u8; n + 2];
    r.read_exact(&mut data).unwrap();
    data.truncate(n);
    (n > 0).then_some(data)
}

fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let (status, headers, mut r) = send(addr, method, path, headers, body);
    let mut body = Vec::new();
    if headers.contains("transfer-encoding: chunked") {
        while let Some(c) = chunk(&mut r) {
            body.extend_from_slice(&c);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    Reply { status, headers, body }
}

fn run(addr: &str, task: &str) -> Reply {
    request(addr, "POST", "/v1/run", &[("Content-Type", "application/json")], task.as_bytes())
}

/// NDJSON events of a streaming run, one per call.
struct Events {
    r: BufReader<TcpStream>,
    pending: Vec<u8>,
}

impl Events {
    fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            let c = chunk(&mut self.r)?;
            self.pending.extend_from_slice(&c);
        }
    }

    fn until(&mut self, kind: &str) -> Value {
        loop {
            let e = self.next().unwrap_or_else(|| panic!("the stream ended before a `{kind}` event"));
            if e["event"] == kind {
                return e;
            }
        }
    }
}

fn stream(addr: &str, task: &str) -> Events {
    let (status, headers, r) = send(addr, "POST", "/v1/run?stream=true", &[], task.as_bytes());
    assert_eq!(status, 200);
    assert!(headers.contains("content-type: application/x-ndjson"), "{headers}");
    Events { r, pending: Vec::new() }
}

fn gone(pid_file: &Path) -> bool {
    let pid = wait_for(Duration::from_secs(10), "the pid file", || std::fs::read_to_string(pid_file).ok());
    wait_for(Duration::from_secs(10), "the process to be killed", || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        stat.map_or(true, |s| s.contains(") Z ")).then_some(true)
    })
}

#[test]
fn a_pipeline_runs_directly_and_returns_its_result() {
    let s = AgentApi::start(&[]);
    let r = run(
        &s.addr,
        r#"{"pipeline":[{"executorName":"sh","commands":["echo hi > f"]},{"executorName":"sh","commands":["cat f"]}]}"#,
    );
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("content-type: application/json"), "{}", r.headers);
    let v = r.json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["steps"][1]["commands"][0]["stdoutTail"], "hi\n");

    // The original second dialect on our own route, in our own shape.
    let r = run(&s.addr, r#"{"commands":[{"executorName":"sh","commandLines":["echo dialect"]}]}"#);
    assert_eq!(r.json()["steps"][0]["commands"][0]["stdoutTail"], "dialect\n");

    // A failing pipeline is a result, not an HTTP error: 200 with `ok: false`.
    let r = run(&s.addr, r#"{"pipeline":[{"executorName":"sh","commands":["echo no >&2; exit 3"]}]}"#);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"], "step 1 (sh): `echo no >&2; exit 3` exited with 3: no");
    // And so in the streaming form (its status is sent before the pipeline runs).
    let mut events = stream(&s.addr, r#"{"pipeline":[{"executorName":"sh","commands":["exit 3"]}]}"#);
    assert_eq!(events.until("result")["result"]["ok"], false);

    // Bad input: invalid JSON is a 400 that says why.
    let r = run(&s.addr, r#"{"pipeline":[]}"#);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid task: the pipeline has no steps");

    assert_eq!(request(&s.addr, "GET", "/healthz", &[], b"").status, 200);
    assert_eq!(request(&s.addr, "GET", "/readyz", &[], b"").status, 200);
    assert_eq!(request(&s.addr, "GET", "/nope", &[], b"").status, 404);
    let m = String::from_utf8(request(&s.addr, "GET", "/metrics", &[], b"").body).unwrap();
    assert!(m.contains("pm_agent_tasks_total{outcome=\"ok\"} 2"), "{m}");
    assert!(m.contains("pm_agent_task_duration_seconds_bucket{le=\"0.05\"}"), "{m}");
}

#[test]
fn an_original_client_calls_the_original_route_and_reads_the_original_shape() {
    let s = AgentApi::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let never = tmp.path().join("never");
    // As the original's clients send it: its path with a capital P, its dialect, JSON content.
    let call = |path: &str, body: &str| {
        request(&s.addr, "POST", path, &[("Content-Type", "application/json; charset=utf-8")], body.as_bytes())
    };
    let r = call(
        "/api/v1/Pipeline",
        r#"{"commands":[{"executorName":"sh","commandLines":["echo hi > f","echo one"]},
                        {"executorName":"cat","commandLines":["cat f"]}]}"#,
    );
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("content-type: application/json"), "{}", r.headers);
    assert_eq!(
        r.json(),
        serde_json::json!({"result": true, "message": null, "output": {"1:sh": ["", "one\n"], "2:cat": ["hi\n"]}})
    );
    // Any case of the path (the original's routing ignored it).
    let ok = r#"{"commands":[{"executorName":"sh","commandLines":["echo x"]}]}"#;
    for path in ["/api/v1/pipeline", "/API/V1/PIPELINE", "/api/v1/Pipeline/"] {
        assert_eq!(call(path, ok).json()["result"], true, "{path}");
    }
    // A failed step stops the run: 200, result false, which executor and why, no output.
    let failing = format!(
        r#"{{"commands":[{{"executorName":"sh","commandLines":["exit 3"]}},
                         {{"executorName":"sh","commandLines":["touch {}"]}}]}}"#,
        never.display()
    );
    let r = call("/api/v1/Pipeline", &failing);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!((v["result"].as_bool(), v["output"].is_null()), (Some(false), true), "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.starts_with("Executor sh failed to execute the command: ") && message.contains("exited with 3"),
        "{v}"
    );
    assert!(!never.exists(), "the step after the failed one ran");
    // No commands: the original's 400.
    for body in [r#"{"commands":[]}"#, "{}"] {
        let r = call("/api/v1/Pipeline", body);
        assert_eq!((r.status, String::from_utf8_lossy(&r.body).as_ref()), (400, "Need to pass at least one command"));
    }
    assert_eq!(request(&s.addr, "GET", "/api/v1/Pipeline", &[], b"").status, 405);
    assert_eq!(call("/api/v1/Pipelines", ok).status, 404);
}

#[test]
fn streamed_output_arrives_while_the_command_runs() {
    let s = AgentApi::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let go = tmp.path().join("go");
    let task = format!(
        r#"{{"pipeline":[{{"executorName":"sh","commands":["echo first; while [ ! -e {} ]; do sleep 0.02; done; echo second"]}}]}}"#,
        go.display()
    );
    let mut events = stream(&s.addr, &task);
    assert_eq!(events.until("start")["run"].as_str().unwrap().split(';').next(), Some("echo first"));
    // The command cannot end before `go` exists: this output was streamed while it ran.
    let first = events.until("output");
    assert_eq!((first["stream"].as_str(), first["data"].as_str()), (Some("stdout"), Some("first\n")));
    std::fs::write(&go, "").unwrap();
    assert_eq!(events.until("output")["data"], "second\n");
    assert_eq!(events.until("end")["result"]["exitCode"], 0);
    let result = events.until("result");
    assert_eq!(result["result"]["ok"], true);
    assert!(events.next().is_none());
}

#[test]
fn a_client_that_goes_away_cancels_its_run() {
    let s = AgentApi::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let pid = tmp.path().join("pid");
    let task = format!(
        r#"{{"pipeline":[{{"executorName":"sh","commands":["echo $$ > {}; echo up; sleep 30"]}}]}}"#,
        pid.display()
    );
    let mut events = stream(&s.addr, &task);
    events.until("output");
    drop(events);
    assert!(gone(&pid));
}

/// A streaming client that stays connected but stops reading cannot hold its run (and the run limit) for ever.
#[test]
fn a_streaming_client_that_stops_reading_loses_its_run() {
    let s = AgentApi::start(&["--api-max-runs", "1", "--api-stream-stall-ms", "500"]);
    let tmp = tempfile::tempdir().unwrap();
    let pid = tmp.path().join("pid");
    let task = format!(r#"{{"pipeline":[{{"executorName":"sh","commands":["echo $$ > {}; yes"]}}]}}"#, pid.display());
    let (status, _, _unread) = send(&s.addr, "POST", "/v1/run?stream=true", &[], task.as_bytes());
    assert_eq!(status, 200);
    let trivial = r#"{"pipeline":[{"executorName":"sh","commands":["true"]}]}"#;
    wait_for(Duration::from_secs(30), "the stalled run to give its slot back", || {
        (run(&s.addr, trivial).status == 200).then_some(())
    });
    assert!(gone(&pid));
}

#[test]
fn limits_oversized_bodies_busy_agents_and_slow_headers() {
    let s = AgentApi::start(&["--api-max-body-bytes", "1024", "--api-max-runs", "1", "--api-header-timeout-ms", "300"]);
    let big = format!(r#"{{"pipeline":[{{"executorName":"sh","commands":["echo {}"]}}]}}"#, "x".repeat(2000));
    let r = run(&s.addr, &big);
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].as_str().unwrap().contains("length limit"), "{}", r.json());

    // One run at a time: a second one is refused while the first runs.
    let tmp = tempfile::tempdir().unwrap();
    let go = tmp.path().join("go");
    let task = format!(
        r#"{{"pipeline":[{{"executorName":"sh","commands":["echo up; while [ ! -e {} ]; do sleep 0.02; done"]}}]}}"#,
        go.display()
    );
    let mut first = stream(&s.addr, &task);
    first.until("output");
    let r = run(&s.addr, r#"{"pipeline":[{"executorName":"sh","commands":["true"]}]}"#);
    assert_eq!(r.status, 429);
    assert!(r.json()["error"].as_str().unwrap().starts_with("busy"));
    std::fs::write(&go, "").unwrap();
    assert_eq!(first.until("result")["result"]["ok"], true);
    assert_eq!(run(&s.addr, r#"{"pipeline":[{"executorName":"sh","commands":["true"]}]}"#).status, 200);

    // A client that connects and sends nothing at all is cut off too.
    let mut idle = TcpStream::connect(&s.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let closed = idle.read_to_end(&mut Vec::new());
    assert!(closed.is_ok(), "the server kept a silent connection open: {closed:?}");

    // A client that never finishes its headers is cut off (slowloris).
    let mut slow = TcpStream::connect(&s.addr).unwrap();
    slow.write_all(b"POST /v1/run HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let closed = slow.read_to_end(&mut buf);
    assert!(closed.is_ok(), "the server kept a half-sent request open: {closed:?}");
}

#[test]
fn a_token_guards_run_requests_and_is_required_off_loopback() {
    let out = Command::new(bin("pm-agent")).args(["serve", "--api-listen", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set --api-token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut s = AgentApi::start_on("0.0.0.0:0", &["--api-token", "s3cret"]);
    s.addr = s.addr.replace("0.0.0.0", "127.0.0.1");
    let task = br#"{"pipeline":[{"executorName":"sh","commands":["echo ran"]}]}"#;
    for auth in [None, Some("Bearer wrong"), Some("s3cret")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let r = request(&s.addr, "POST", "/v1/run", &headers, task);
        assert_eq!(r.status, 401, "{auth:?}");
        assert!(r.headers.contains("www-authenticate: bearer"), "{}", r.headers);
    }
    let r = request(&s.addr, "POST", "/v1/run", &[("Authorization", "Bearer s3cret")], task);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["steps"][0]["commands"][0]["stdoutTail"], "ran\n");
    // The original's route too, in any case.
    let original = br#"{"commands":[{"executorName":"sh","commandLines":["echo ran"]}]}"#;
    assert_eq!(request(&s.addr, "POST", "/api/v1/Pipeline", &[], original).status, 401);
    let r = request(&s.addr, "POST", "/api/v1/Pipeline", &[("Authorization", "Bearer s3cret")], original);
    assert_eq!(r.json()["output"]["1:sh"][0], "ran\n");
    // Probes stay open for the kubelet.
    assert_eq!(request(&s.addr, "GET", "/healthz", &[], b"").status, 200);
}

#[test]
fn readyz_reports_missing_executor_sockets() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("ocr.sock");
    let spec = format!("sh,ocr=unix://{}", sock.display());
    let s = AgentApi::start(&["--executors", &spec]);
    let r = request(&s.addr, "GET", "/readyz", &[], b"");
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].as_str().unwrap().contains("ocr"), "{}", r.json());
    let _executor = pm_testkit::Executor::start("ocr", &sock);
    assert_eq!(request(&s.addr, "GET", "/readyz", &[], b"").status, 200);
}

/// The gRPC `Run` on the same port: events streamed as they happen, the token checked, bad input refused.
#[tokio::test]
async fn grpc_run_streams_events_behind_the_token() {
    use pm_agent::api::grpc::pb::agent_client::AgentClient;
    use pm_agent::api::grpc::pb::{run_event::Event, OutputStream, RunRequest};

    let s = AgentApi::start(&["--api-token", "s3cret"]);
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", s.addr)).unwrap().connect().await.unwrap();
    let mut client = AgentClient::new(channel);
    let req = |json: &str, token: Option<&str>| {
        let mut r = tonic::Request::new(RunRequest { task_json: json.to_string() });
        if let Some(t) = token {
            r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    };
    let hello = r#"{"pipeline":[{"executorName":"sh","commands":["echo hello; echo oops >&2"]}]}"#;
    for token in [None, Some("wrong")] {
        let status = client.run(req(hello, token)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{token:?}");
    }
    let status = client.run(req(r#"{"pipeline":[]}"#, Some("s3cret"))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "invalid task: the pipeline has no steps");

    let mut events = client.run(req(hello, Some("s3cret"))).await.unwrap().into_inner();
    let mut seen = Vec::new();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut result = None;
    while let Some(e) = events.message().await.unwrap() {
        match e.event.unwrap() {
            Event::Start(s) => seen.push(format!("start {} {}", s.step, s.executor)),
            Event::Output(o) if o.stream == OutputStream::Stdout as i32 => out.extend(o.data),
            Event::Output(o) => err.extend(o.data),
            Event::End(e) => seen.push(format!("end {:?}", e.exit_code)),
            Event::Result(r) => result = Some(r),
        }
    }
    assert_eq!(seen, ["start 1 sh", "end Some(0)"]);
    assert_eq!((out.as_slice(), err.as_slice()), (&b"hello\n"[..], &b"oops\n"[..]));
    let result = result.unwrap();
    assert!(result.ok, "{result:?}");
    let full: Value = serde_json::from_str(&result.result_json).unwrap();
    assert_eq!(full["steps"][0]["commands"][0]["stdoutTail"], "hello\n");
}

/// `--http-listen` serves the probes and metrics on any address, tokenless, and runs nothing there; the
/// direct-run API stays on loopback (the pod layout of the application chart).
#[test]
fn the_probes_endpoint_answers_on_any_address_and_runs_nothing() {
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("pm-agent"))
        .args(["serve", "--api-listen", "127.0.0.1:0", "--http-listen", "0.0.0.0:0", "--work-dir"])
        .arg(work.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr_of = |prefix: &str| {
        let line = lines.next().unwrap().unwrap();
        line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line:?}")).to_string()
    };
    let probes = addr_of("http listening on ");
    let api = addr_of("api listening on ");
    assert!(probes.starts_with("0.0.0.0:"), "{probes}");
    let probes = probes.replace("0.0.0.0", "127.0.0.1");
    for path in ["/healthz", "/readyz", "/ready"] {
        assert_eq!(request(&probes, "GET", path, &[], b"").status, 200, "{path}");
    }
    let metrics = request(&probes, "GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    let task = r#"{"pipeline":[{"executorName":"sh","commands":["echo hi"]}]}"#;
    assert_eq!(run(&probes, task).status, 404, "the probes endpoint runs nothing");
    assert_eq!(run(&api, task).status, 200, "the API still runs pipelines");
    let _ = child.kill();
    let _ = child.wait();
}
