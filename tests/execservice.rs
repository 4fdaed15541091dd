//! The original executors' gRPC service `exec.ExecService` against real processes over real sockets: a real
//! `pm-agent run` (leasing from a real `pm-scheduler`) driving a stand-in server written here, `pm-agent exec
//! --grpc-listen` serving a plain tonic client, the two together end to end, and an executor nobody serves.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use pm_agent::wire::grpc::pb::exec_service_client::ExecServiceClient;
use pm_agent::wire::grpc::pb::exec_service_server::{ExecService, ExecServiceServer};
use pm_agent::wire::grpc::pb::{ExecCommands, ExecResult};
use pm_testkit::{bin, free_addr, pmctl, Agent, Scheduler};
use pm_tests::submit_json;
use tonic::{Request, Response, Status};

/// The service exactly as the original executors define it.
const ORIGINAL_PROTO: &str = r#"syntax = "proto3";
package exec;
option go_package = "pipeline-manager/server/";
service ExecService { rpc ExecuteCommands (ExecCommands) returns (ExecResult) {} }
message ExecCommands { repeated string commands = 1; }
message ExecResult { bool result = 2; string errorMessage = 3; repeated string output = 4; }"#;

/// A stand-in for an original executor, independent of pm-agent's: it records every call's commands and
/// answers from a script: `fail N` fails with the original's `exit status N` (and no output), anything else
/// succeeds with `ran: LINE` as its stdout.
#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<Vec<String>>>>,
}

#[tonic::async_trait]
impl ExecService for Recorder {
    async fn execute_commands(&self, request: Request<ExecCommands>) -> Result<Response<ExecResult>, Status> {
        let commands = request.into_inner().commands;
        self.calls.lock().unwrap().push(commands.clone());
        let mut reply = ExecResult { result: true, error_message: String::new(), output: Vec::new() };
        for c in commands {
            match c.strip_prefix("fail ") {
                Some(code) => {
                    reply.result = false;
                    reply.error_message = format!("exit status {code}");
                    reply.output.push(String::new());
                }
                None => reply.output.push(format!("ran: {c}\n")),
            }
        }
        Ok(Response::new(reply))
    }
}

impl Recorder {
    /// Serves on a free loopback port, on a thread of its own (the tests block on processes meanwhile).
    fn start() -> (Recorder, String) {
        let rec = Recorder::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let svc = ExecServiceServer::new(rec.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                tonic::transport::Server::builder().add_service(svc).serve_with_incoming(incoming).await.unwrap();
            });
        });
        (rec, addr)
    }

    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }
}

/// A running `pm-agent exec`, killed when dropped.
struct Exec {
    child: Child,
    /// `host:port` (or `unix://...`) from its `grpc listening on ADDR` line.
    grpc: String,
}

impl Exec {
    /// Starts `pm-agent exec ARGS` with extra environment variables and waits for its gRPC address.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Exec {
        let mut child = Command::new(bin("pm-agent"))
            .arg("exec")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let grpc = line.trim().strip_prefix("grpc listening on ").unwrap_or_else(|| panic!("{line:?}")).to_string();
        Exec { child, grpc }
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client(addr: &str) -> ExecServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    ExecServiceClient::new(channel)
}

async fn execute(addr: &str, commands: &[&str]) -> ExecResult {
    let commands = commands.iter().map(|c| c.to_string()).collect();
    client(addr).await.execute_commands(ExecCommands { commands }).await.unwrap().into_inner()
}

fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `pmctl wait --json ID`: its exit code and the status document.
fn wait_json(s: &Scheduler, id: u64) -> (Option<i32>, serde_json::Value) {
    let w = pmctl(&s.addr, &["wait", "--timeout", "30s", "--json", &id.to_string()], None);
    let v = serde_json::from_slice(&w.stdout).unwrap_or_else(|e| panic!("{e}: {}", out(&w)));
    (w.status.code(), v)
}

#[test]
fn the_agent_speaks_the_original_definition() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/proto/exec/exec.proto");
    let text = std::fs::read_to_string(&file).unwrap();
    let definition: Vec<&str> =
        text.lines().filter(|l| !l.trim_start().starts_with("//") && !l.trim().is_empty()).collect();
    assert_eq!(definition.join("\n"), ORIGINAL_PROTO, "{} is not the original service", file.display());
}

#[tokio::test]
async fn a_step_on_a_grpc_executor_sends_each_command_to_the_service_and_fails_with_its_error() {
    let (server, addr) = Recorder::start();
    let s = Scheduler::start(&[]);
    let agent = Agent::start(&s.addr, &["--executors", &format!("wget=grpc://{addr}"), "--retry-backoff-ms", "50"]);
    let ok = submit_json(
        &s,
        r#"{"pipeline":[{"executorName":"wget","commands":["wget -O /mnt/pipe/a.png http://pages/a.png","ls /mnt/pipe"]}]}"#,
    );
    let (code, v) = wait_json(&s, ok);
    assert_eq!(code, Some(0), "{v}\nagent log:\n{}", agent.log());
    let cmds = &v["result"]["steps"][0]["commands"];
    assert_eq!(cmds[0]["exitCode"].as_i64(), Some(0), "{v}");
    assert_eq!(cmds[0]["stdoutTail"].as_str(), Some("ran: wget -O /mnt/pipe/a.png http://pages/a.png\n"), "{v}");
    assert_eq!(cmds[1]["stdoutTail"].as_str(), Some("ran: ls /mnt/pipe\n"), "{v}");
    // One command per call: exactly the step's lines, in order, nothing spliced in.
    assert_eq!(server.calls(), [vec!["wget -O /mnt/pipe/a.png http://pages/a.png"], vec!["ls /mnt/pipe"]]);

    let bad = submit_json(
        &s,
        r#"{"maxAttempts":1,"pipeline":[{"executorName":"wget","commands":["echo first","fail 3","echo never"]}]}"#,
    );
    let (code, v) = wait_json(&s, bad);
    assert_eq!(code, Some(2), "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.ends_with("step 1 (wget): `fail 3` exited with 3: exit status 3"), "{reason}");
    let cmds = &v["result"]["steps"][0]["commands"];
    assert_eq!((cmds[1]["exitCode"].as_i64(), cmds[1]["stderrTail"].as_str()), (Some(3), Some("exit status 3")), "{v}");
    assert_eq!(cmds.as_array().unwrap().len(), 2, "the step stops at its first failing command: {v}");
    let calls = server.calls();
    assert_eq!(calls[2..], [vec!["echo first"], vec!["fail 3"]], "`echo never` must not be sent");
}

#[tokio::test]
async fn pm_agent_exec_serves_the_service_as_the_original_executor() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().canonicalize().unwrap();
    let e = Exec::start(
        &["--name", "sh", "--grpc-listen", "127.0.0.1:0", "--grpc-work-dir", &work.display().to_string()],
        &[],
    );
    let r = execute(&e.grpc, &["echo a", "false", "echo b"]).await;
    assert!(!r.result);
    assert_eq!(r.output, ["a\n", "", "b\n"]);
    assert_eq!(r.error_message, "exit status 1");
    // Only the last failure is reported; the working directory is the one given.
    let r = execute(&e.grpc, &["exit 4", "pwd", "sh -c 'exit 5'"]).await;
    assert_eq!((r.result, r.error_message.as_str()), (false, "exit status 5"));
    assert_eq!(r.output[1], format!("{}\n", work.display()));
    let r = execute(&e.grpc, &["true", "printf x"]).await;
    assert_eq!((r.result, r.error_message.as_str(), r.output), (true, "", vec![String::new(), "x".to_string()]));
}

#[tokio::test]
async fn pm_agent_exec_takes_the_original_executors_environment() {
    let port = free_addr("127.0.0.1").rsplit_once(':').unwrap().1.to_string();
    let listen = format!(":{port}");
    let env = [
        ("COMMAND_EXECUTOR_NAME", "echo1"),
        ("COMMAND_EXECUTOR_SERVER_GRPC_PORT", listen.as_str()),
        ("COMMAND_EXECUTOR_DEBUG", "true"),
    ];
    let e = Exec::start(&[], &env);
    // `:PORT` is every interface, as in the original.
    assert_eq!(e.grpc, format!("0.0.0.0:{port}"));
    let r = execute(&format!("127.0.0.1:{port}"), &[r#"test -n "$BASH_VERSION" && echo bash"#]).await;
    assert_eq!((r.result, r.output), (true, vec!["bash\n".to_string()]), "COMMAND_EXECUTOR_DEBUG runs bash");
}

#[tokio::test]
async fn a_two_command_step_runs_through_the_scheduler_on_pm_agent_exec_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sh.sock");
    // The same executor serves the unix socket protocol and the gRPC service at once.
    let e = Exec::start(
        &["--name", "sh", "--listen", &format!("unix://{}", sock.display()), "--grpc-listen", "127.0.0.1:0"],
        &[],
    );
    let s = Scheduler::start(&[]);
    let executors = format!("sh=grpc://{},pod=unix://{}", e.grpc, sock.display());
    let agent = Agent::start(&s.addr, &["--executors", &executors]);
    let file = dir.path().join("f.txt");
    let task = format!(
        r#"{{"pipeline":[{{"executorName":"sh","commands":["echo one > {0}","echo two >> {0}; echo appended"]}},
            {{"executorName":"pod","commands":["cat {0}"]}}]}}"#,
        file.display()
    );
    let id = submit_json(&s, &task);
    let (code, v) = wait_json(&s, id);
    assert_eq!(code, Some(0), "{v}\nagent log:\n{}", agent.log());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "one\ntwo\n");
    let steps = &v["result"]["steps"];
    assert_eq!(steps[0]["commands"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(steps[0]["commands"][1]["stdoutTail"].as_str(), Some("appended\n"), "{v}");
    assert_eq!(steps[1]["commands"][0]["stdoutTail"].as_str(), Some("one\ntwo\n"), "{v}");
}

#[tokio::test]
async fn an_unreachable_grpc_executor_fails_the_task_clearly_and_it_is_retried() {
    let addr = free_addr("127.0.0.1");
    let s = Scheduler::start(&[]);
    let agent = Agent::start(&s.addr, &["--executors", &format!("wget=grpc://{addr}"), "--retry-backoff-ms", "50"]);
    let id = submit_json(&s, r#"{"maxAttempts":2,"pipeline":[{"executorName":"wget","commands":["wget x"]}]}"#);
    let (code, v) = wait_json(&s, id);
    assert_eq!(code, Some(2), "{v}\nagent log:\n{}", agent.log());
    assert_eq!(v["attempts"].as_u64(), Some(2), "retried as any failure: {v}");
    let why = pmctl(&s.addr, &["why", &id.to_string()], None);
    let text = out(&why);
    let expected = format!("`wget x` did not run: executor `wget` at grpc://{addr} is unreachable: ");
    assert!(text.contains(&expected), "{text}");
    assert!(text.to_lowercase().contains("connection refused"), "{text}");
}
