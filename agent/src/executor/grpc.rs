//! The `grpc` executor, agent side: a step whose executor is given as `NAME=grpc://HOST:PORT` or
//! `NAME=grpc+unix:///path.sock` (in `--executors`, or in the original agent's variables, see
//! [`super::original_env`]) sends its commands to a server of the original executors' gRPC service
//! `exec.ExecService`, plaintext like the original, so that utility images built for the original deployment
//! work unchanged. `crate::wire::grpc` holds the messages; `pm-agent exec --grpc-listen`
//! (`crate::exec_server::grpc`) is one such server.
//!
//! **How the client maps the service onto our results.** The service runs a list of commands in one call and
//! goes on after a failure; a step of ours stops at its first failing command (unless `continueOnError`).
//! So each command goes in its own `ExecuteCommands` call: the step stops at the first failure, each command
//! is timed on its own, its timeout (command, step or task) is the call's deadline, and `output[0]` is its
//! stdout. `result: false` is a failed command: exit code N when `errorMessage` says `exit status N`, the
//! signal when it says `signal: NAME` (Go's wording), exit code 1 otherwise; `errorMessage` is its stderr
//! tail. A deadline that passes or a cancelled task (or a draining agent) drops the call. An executor that
//! cannot be reached fails the command with a reason naming it and its address; the task is retried like any
//! failure. The service carries command lines only: the working directory and the variables local and pod
//! executors give a command (`PIPE_DIR`, `PM_TASK_ID`, the step's `env`, `PM_RESULTS_DIR`, ...) cannot
//! reach it, and they are not spliced into the line.
//!
//! Without the `exec-grpc` feature the addresses still parse, so that a step naming such an executor fails
//! with [`GrpcExecutorError::NotBuilt`].

use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;

/// What can go wrong naming a gRPC executor.
#[derive(Debug, thiserror::Error)]
pub enum GrpcExecutorError {
    /// An executor address that is not `grpc://HOST:PORT` or `grpc+unix:///absolute/path.sock`.
    #[error("`{0}`: expected grpc://HOST:PORT or grpc+unix:///absolute/path.sock")]
    BadTarget(String),
    /// An `https://` target: the original executors speak plaintext gRPC only.
    #[error("`{0}`: TLS is not supported for executors (the original ones speak plaintext gRPC); give HOST:PORT")]
    Tls(String),
    /// A `PIPELINE_AGENT__EXECUTORS__*` variable that cannot be used.
    #[error("{var}: {why}")]
    BadEnv {
        /// The variable.
        var: String,
        /// Why.
        why: String,
    },
    /// The agent was built without the `exec-grpc` feature.
    #[error(
        "`{0}` needs the original executors' gRPC service: this pm-agent was built without its `exec-grpc` feature"
    )]
    NotBuilt(String),
}

/// Where a gRPC executor listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GrpcAddr {
    /// Plaintext HTTP/2 over TCP (`grpc://HOST:PORT`).
    Tcp {
        /// Host name or IP address (an IPv6 address in brackets).
        host: String,
        /// Port.
        port: u16,
    },
    /// Plaintext HTTP/2 over a unix socket (`grpc+unix:///path.sock`).
    Unix(PathBuf),
}

impl fmt::Display for GrpcAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrpcAddr::Tcp { host, port } => write!(f, "grpc://{host}:{port}"),
            GrpcAddr::Unix(path) => write!(f, "grpc+unix://{}", path.display()),
        }
    }
}

/// Parses an executor address of `--executors`: `grpc://HOST:PORT` or `grpc+unix:///absolute/path.sock`.
pub fn parse_target(target: &str) -> Result<GrpcAddr, GrpcExecutorError> {
    let t = target.trim();
    let bad = || GrpcExecutorError::BadTarget(t.to_string());
    if let Some(path) = t.strip_prefix("grpc+unix://") {
        return unix_path(path).ok_or_else(bad);
    }
    t.strip_prefix("grpc://").and_then(host_port).ok_or_else(bad)
}

/// `/absolute/path` as a unix socket address.
pub(crate) fn unix_path(path: &str) -> Option<GrpcAddr> {
    (path.starts_with('/') && path.len() > 1).then(|| GrpcAddr::Unix(PathBuf::from(path)))
}

/// `HOST:PORT` (an optional trailing `/`), with a plain host name, an IPv4 address or `[IPv6]`.
pub(crate) fn host_port(s: &str) -> Option<GrpcAddr> {
    let s = s.strip_suffix('/').unwrap_or(s);
    let (host, port) = s.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        }
    };
    valid.then(|| GrpcAddr::Tcp { host: host.to_string(), port })
}

/// A gRPC executor of the agent: its address and, once connected, its channel (one HTTP/2 connection, shared
/// by every command sent there, reconnected when it breaks).
#[derive(Clone)]
pub struct GrpcExecutor {
    addr: GrpcAddr,
    #[cfg(feature = "exec-grpc")]
    channel: std::sync::Arc<tokio::sync::OnceCell<tonic::transport::Channel>>,
}

impl GrpcExecutor {
    /// An executor at `addr` (nothing is connected until its first command).
    pub fn new(addr: GrpcAddr) -> GrpcExecutor {
        GrpcExecutor {
            addr,
            #[cfg(feature = "exec-grpc")]
            channel: std::sync::Arc::default(),
        }
    }

    /// Its address.
    pub fn addr(&self) -> &GrpcAddr {
        &self.addr
    }
}

impl PartialEq for GrpcExecutor {
    fn eq(&self, other: &GrpcExecutor) -> bool {
        self.addr == other.addr
    }
}

impl Eq for GrpcExecutor {}

impl fmt::Debug for GrpcExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("GrpcExecutor").field(&self.addr).finish()
    }
}

#[cfg(feature = "exec-grpc")]
pub(crate) use call::run_grpc;
#[cfg(feature = "exec-grpc")]
pub use call::MAX_RESULT_BYTES;

/// The call itself (feature `exec-grpc`).
#[cfg(feature = "exec-grpc")]
mod call {
    use std::time::{Duration, Instant};

    use tokio_util::sync::CancellationToken;
    use tonic::transport::{Channel, Endpoint};
    use tonic::{Code, Request, Response, Status};

    use super::{GrpcAddr, GrpcExecutor};
    use crate::command::{earliest, CommandSpec, Outcome, OutputSink, Stream};
    use crate::wire::grpc::failure_outcome;
    use crate::wire::grpc::pb;
    use crate::wire::grpc::pb::exec_service_client::ExecServiceClient;

    /// How long connecting to a gRPC executor may take.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Largest `ExecResult` the agent takes from an executor (the original returns a command's whole stdout).
    pub const MAX_RESULT_BYTES: usize = 16 << 20;

    impl GrpcExecutor {
        /// The channel, connecting it on first use (a failed attempt is tried again by the next command).
        async fn channel(&self) -> Result<Channel, String> {
            self.channel
                .get_or_try_init(|| async {
                    let uri = match &self.addr {
                        GrpcAddr::Tcp { host, port } => format!("http://{host}:{port}"),
                        GrpcAddr::Unix(path) => format!("unix://{}", path.display()),
                    };
                    let endpoint = Endpoint::from_shared(uri).map_err(|e| error_chain(&e))?;
                    endpoint.connect_timeout(CONNECT_TIMEOUT).connect().await.map_err(|e| error_chain(&e))
                })
                .await
                .cloned()
        }
    }

    /// An error with its sources, each said once: `transport error: tcp connect error: Connection refused`.
    fn error_chain(e: &dyn std::error::Error) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut next = Some(e);
        while let Some(err) = next {
            let text = err.to_string();
            if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
                parts.push(text);
            }
            next = err.source();
        }
        parts.join(": ")
    }

    /// Runs `spec` on the gRPC executor `executor` in one `ExecuteCommands` call of that one command, handing
    /// its stdout to `sink`. Only the command line travels (the service has no working directory nor
    /// environment). `deadline` (and the spec's own timeout) is the call's deadline; `cancel` drops the call.
    pub(crate) async fn run_grpc<S: OutputSink>(
        name: &str,
        executor: &GrpcExecutor,
        spec: &CommandSpec,
        deadline: Option<Instant>,
        cancel: &CancellationToken,
        sink: &mut S,
    ) -> Outcome {
        let own = (spec.timeout_ms > 0).then(|| Instant::now().checked_add(Duration::from_millis(spec.timeout_ms)));
        let deadline = earliest(deadline, own.flatten());
        let addr = &executor.addr;
        let call = async {
            let channel = executor
                .channel()
                .await
                .map_err(|e| Outcome::error(format!("executor `{name}` at {addr} is unreachable: {e}")))?;
            let mut client = ExecServiceClient::new(channel).max_decoding_message_size(MAX_RESULT_BYTES);
            let mut request = Request::new(pb::ExecCommands { commands: vec![spec.run.clone()] });
            if let Some(d) = deadline {
                request.set_timeout(d.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
            }
            client.execute_commands(request).await.map(Response::into_inner).map_err(|s| {
                // The client ends a call at its deadline itself (`Cancelled`), the server may too.
                let late = deadline.is_some_and(|d| Instant::now() + Duration::from_millis(10) >= d);
                match s.code() {
                    Code::DeadlineExceeded | Code::Cancelled if late => {
                        Outcome { timed_out: true, ..Outcome::default() }
                    }
                    _ => status_outcome(name, addr, &s),
                }
            })
        };
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let reply = tokio::select! {
            r = call => r,
            () = sleep => return Outcome { timed_out: true, ..Outcome::default() },
            () = cancel.cancelled() => return Outcome { cancelled: true, ..Outcome::default() },
        };
        let reply = match reply {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        for out in reply.output.iter().filter(|o| !o.is_empty()) {
            sink.output(Stream::Stdout, out.as_bytes()).await;
        }
        if reply.result {
            return Outcome { exit_code: Some(0), ..Outcome::default() };
        }
        let message = reply.error_message.trim();
        if !message.is_empty() {
            sink.output(Stream::Stderr, message.as_bytes()).await;
        }
        failure_outcome(message)
    }

    /// A call that did not return a result.
    fn status_outcome(name: &str, addr: &GrpcAddr, status: &Status) -> Outcome {
        let detail = match (status.message(), std::error::Error::source(status)) {
            ("", Some(src)) => error_chain(src),
            (m, Some(src)) => format!("{m}: {}", error_chain(src)),
            (m, None) => m.to_string(),
        };
        match status.code() {
            Code::DeadlineExceeded => Outcome { timed_out: true, ..Outcome::default() },
            Code::Unavailable => Outcome::error(format!("executor `{name}` at {addr} is unreachable: {detail}")),
            Code::Unimplemented => Outcome::error(format!(
                "executor `{name}` at {addr} does not serve exec.ExecService/ExecuteCommands: {detail}"
            )),
            code => Outcome::error(format!("executor `{name}` at {addr} failed the call ({code}): {detail}")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tcp(host: &str, port: u16) -> GrpcAddr {
        GrpcAddr::Tcp { host: host.into(), port }
    }

    #[test]
    fn executor_addresses_are_grpc_tcp_or_unix() {
        assert_eq!(parse_target("grpc://127.0.0.1:50051").unwrap(), tcp("127.0.0.1", 50051));
        assert_eq!(parse_target(" grpc://wget-executor:50051/ ").unwrap(), tcp("wget-executor", 50051));
        assert_eq!(parse_target("grpc://[::1]:7").unwrap(), tcp("[::1]", 7));
        assert_eq!(
            parse_target("grpc+unix:///mnt/pipe/.pm/w.sock").unwrap(),
            GrpcAddr::Unix("/mnt/pipe/.pm/w.sock".into())
        );
        for bad in [
            "grpc://host",
            "grpc://host:0",
            "grpc://host:65536",
            "grpc://host:+5",
            "grpc://:50051",
            "grpc://a b:1",
            "grpc://host:1/path",
            "grpc://[zz]:1",
            "grpc+unix://rel.sock",
            "grpc+unix://",
            "http://host:1",
            "127.0.0.1:50051",
        ] {
            assert!(matches!(parse_target(bad), Err(GrpcExecutorError::BadTarget(_))), "{bad}");
        }
        assert_eq!(tcp("[::1]", 7).to_string(), "grpc://[::1]:7");
        assert_eq!(GrpcAddr::Unix("/s.sock".into()).to_string(), "grpc+unix:///s.sock");
    }
}

#[cfg(all(test, feature = "exec-grpc"))]
mod call_tests {
    #![allow(clippy::unwrap_used)]
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::command::{CommandSpec, OutputSink, Stream};

    struct Discard;

    impl OutputSink for Discard {
        async fn output(&mut self, _: Stream, _: &[u8]) {}
    }

    fn spec(run: &str, timeout_ms: u64) -> CommandSpec {
        CommandSpec { run: run.into(), work_dir: "/nonexistent".into(), env: Default::default(), timeout_ms }
    }

    #[tokio::test]
    async fn an_unreachable_executor_is_named_with_its_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let ex = GrpcExecutor::new(GrpcAddr::Tcp { host: "127.0.0.1".into(), port });
        let never = CancellationToken::new();
        let o = run_grpc("wget", &ex, &spec("true", 0), None, &never, &mut Discard).await;
        let why = o.error.unwrap();
        assert!(why.starts_with(&format!("executor `wget` at grpc://127.0.0.1:{port} is unreachable: ")), "{why}");
        assert!(why.to_lowercase().contains("connection refused"), "{why}");

        let dir = tempfile::tempdir().unwrap();
        let ex = GrpcExecutor::new(GrpcAddr::Unix(dir.path().join("none.sock")));
        let o = run_grpc("ocr", &ex, &spec("true", 0), None, &never, &mut Discard).await;
        let why = o.error.unwrap();
        assert!(why.contains("executor `ocr` at grpc+unix://") && why.contains("none.sock is unreachable"), "{why}");
    }
}
