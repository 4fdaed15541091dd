//! The original executors' gRPC service, `exec.ExecService` (`proto/exec/exec.proto`), in both directions, so
//! that utility images built for the original deployment work unchanged:
//!
//! - **Client**: a step whose executor is given as `NAME=grpc://HOST:PORT` or `NAME=grpc+unix:///path.sock`
//!   (in `--executors`, or in the original agent's `PIPELINE_AGENT__EXECUTORS__<i>__NAME` / `__TARGET`
//!   variables, see [`original_executors`]) sends its commands to that server, plaintext like the original.
//! - **Server**: `pm-agent exec --grpc-listen ADDR` serves the service as the original `command-executor` did
//!   (configured by the same `COMMAND_EXECUTOR_*` variables).
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
//! **How the server runs a call**, as the original: every command in order with `sh -c` (`bash -c` when
//! `COMMAND_EXECUTOR_DEBUG` is true), going on after a failure; `output[i]` is the stdout of command i (empty
//! when it failed, as the original drops it), `result` is false when any failed and `errorMessage` is the
//! last failure (`exit status N`). Unlike the original, a call is bounded: when its client cancels it or its
//! deadline passes, the running command's process group is killed and the remaining commands do not run;
//! the stdout one call returns is capped (`--grpc-max-output-bytes`); commands run in `--grpc-work-dir`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// Prefix of the original agent's executor variables: `PIPELINE_AGENT__EXECUTORS__<i>__NAME` and
/// `PIPELINE_AGENT__EXECUTORS__<i>__TARGET`.
pub const ORIGINAL_ENV_PREFIX: &str = "PIPELINE_AGENT__EXECUTORS__";

/// The original executor's variables `pm-agent exec` honours.
pub mod original_env {
    /// The executor's name (`--name`).
    pub const NAME: &str = "COMMAND_EXECUTOR_NAME";
    /// The gRPC address, e.g. `:50051` (`--grpc-listen`).
    pub const GRPC_PORT: &str = "COMMAND_EXECUTOR_SERVER_GRPC_PORT";
    /// A boolean: run commands with `bash` instead of `sh` (`--grpc-shell`).
    pub const DEBUG: &str = "COMMAND_EXECUTOR_DEBUG";
}

/// Default of `--grpc-max-output-bytes`: 1 MiB, well under the 4 MiB message limit gRPC clients accept by
/// default.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1 << 20;

/// What can go wrong configuring either side of the service.
#[derive(Debug, thiserror::Error)]
pub enum ExecServiceError {
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
    /// `--grpc-listen` (or `COMMAND_EXECUTOR_SERVER_GRPC_PORT`) is not an address to listen on.
    #[error("--grpc-listen: expected IP:PORT, :PORT (all interfaces) or unix:///absolute/path.sock, got `{0}`")]
    BadListen(String),
    /// `COMMAND_EXECUTOR_DEBUG` is not a boolean.
    #[error("COMMAND_EXECUTOR_DEBUG: `{0}` is not a boolean (true, false, 1, 0, t, f)")]
    BadDebug(String),
    /// `--grpc-work-dir` is not a directory.
    #[error("--grpc-work-dir {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Binding the TCP address failed.
    #[error("--grpc-listen {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Binding the unix socket failed.
    #[error("--grpc-listen: {0}")]
    Unix(#[from] crate::exec::ExecError),
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
pub fn parse_target(target: &str) -> Result<GrpcAddr, ExecServiceError> {
    let t = target.trim();
    let bad = || ExecServiceError::BadTarget(t.to_string());
    if let Some(path) = t.strip_prefix("grpc+unix://") {
        return unix_path(path).ok_or_else(bad);
    }
    t.strip_prefix("grpc://").and_then(host_port).ok_or_else(bad)
}

/// Parses a `PIPELINE_AGENT__EXECUTORS__<i>__TARGET` as the original agent took it: `HOST:PORT` or
/// `http://HOST:PORT` (also `grpc://`, `dns:///HOST:PORT`, and a unix socket as `unix:///path.sock` or
/// `grpc+unix:///path.sock`).
pub fn parse_original_target(target: &str) -> Result<GrpcAddr, ExecServiceError> {
    let t = target.trim();
    if t.starts_with("https://") {
        return Err(ExecServiceError::Tls(t.to_string()));
    }
    let bad = || ExecServiceError::BadTarget(t.to_string());
    if let Some(path) = t.strip_prefix("grpc+unix://").or_else(|| t.strip_prefix("unix://")) {
        return unix_path(path).ok_or_else(bad);
    }
    let rest = ["http://", "grpc://", "dns:///"].iter().find_map(|p| t.strip_prefix(p)).unwrap_or(t);
    host_port(rest).ok_or_else(bad)
}

fn unix_path(path: &str) -> Option<GrpcAddr> {
    (path.starts_with('/') && path.len() > 1).then(|| GrpcAddr::Unix(PathBuf::from(path)))
}

/// `HOST:PORT` (an optional trailing `/`), with a plain host name, an IPv4 address or `[IPv6]`.
fn host_port(s: &str) -> Option<GrpcAddr> {
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

/// The executors the original agent's variables name, in index order: every
/// `PIPELINE_AGENT__EXECUTORS__<i>__NAME` with its `PIPELINE_AGENT__EXECUTORS__<i>__TARGET` (see
/// [`parse_original_target`]). Keys are matched without regard to case, as the original agent's configuration
/// did; other keys are ignored. Empty when there are none.
pub fn original_executors(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<(String, GrpcAddr)>, ExecServiceError> {
    let mut slots: BTreeMap<u32, (Option<String>, Option<String>)> = BTreeMap::new();
    for (key, value) in vars {
        let Some(key) = key.to_str() else { continue };
        let upper = key.to_ascii_uppercase();
        let Some(rest) = upper.strip_prefix(ORIGINAL_ENV_PREFIX) else { continue };
        let Some((index, field)) = rest.split_once("__") else { continue };
        let bad = |why: &str| ExecServiceError::BadEnv { var: key.to_string(), why: why.to_string() };
        if field != "NAME" && field != "TARGET" {
            continue;
        }
        let index: u32 = index.parse().map_err(|_| bad("the index after EXECUTORS__ must be a number"))?;
        let value = value.into_string().map_err(|_| bad("not valid UTF-8"))?;
        let slot = slots.entry(index).or_default();
        if field == "NAME" {
            slot.0 = Some(value);
        } else {
            slot.1 = Some(value);
        }
    }
    let mut out: Vec<(String, GrpcAddr)> = Vec::with_capacity(slots.len());
    for (index, (name, target)) in slots {
        let var = |field: &str| format!("{ORIGINAL_ENV_PREFIX}{index}__{field}");
        let missing = |field: &str, other: &str| ExecServiceError::BadEnv {
            var: var(field),
            why: format!("missing or empty, but {} is set", var(other)),
        };
        let name =
            name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).ok_or_else(|| missing("NAME", "TARGET"))?;
        let target = target.filter(|t| !t.trim().is_empty()).ok_or_else(|| missing("TARGET", "NAME"))?;
        if name.contains([',', '=']) || name.chars().any(char::is_whitespace) {
            return Err(ExecServiceError::BadEnv {
                var: var("NAME"),
                why: format!("`{name}` is not an executor name (no spaces, `,` or `=`)"),
            });
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(ExecServiceError::BadEnv {
                var: var("NAME"),
                why: format!("executor `{name}` is named twice"),
            });
        }
        let addr = parse_original_target(&target)
            .map_err(|e| ExecServiceError::BadEnv { var: var("TARGET"), why: e.to_string() })?;
        out.push((name, addr));
    }
    Ok(out)
}

/// Where `pm-agent exec --grpc-listen` serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcListen {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix socket.
    Unix(PathBuf),
}

/// Parses `--grpc-listen`: `IP:PORT`, `HOST:PORT`, `:PORT` or a bare port (all IPv4 interfaces, as the
/// original's `:50051`), or `unix:///absolute/path.sock`.
pub fn parse_listen(listen: &str) -> Result<GrpcListen, ExecServiceError> {
    let t = listen.trim();
    let bad = || ExecServiceError::BadListen(listen.to_string());
    if let Some(path) = t.strip_prefix("unix://") {
        return match unix_path(path) {
            Some(GrpcAddr::Unix(p)) => Ok(GrpcListen::Unix(p)),
            _ => Err(bad()),
        };
    }
    let port_only = t.strip_prefix(':').unwrap_or(t);
    if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = port_only.parse().map_err(|_| bad())?;
        return Ok(GrpcListen::Tcp(SocketAddr::from(([0, 0, 0, 0], port))));
    }
    if let Ok(addr) = t.parse::<SocketAddr>() {
        return Ok(GrpcListen::Tcp(addr));
    }
    // A host name (`localhost:50051`), resolved once at start.
    host_port(t).ok_or_else(bad)?;
    t.to_socket_addrs().ok().and_then(|mut a| a.next()).map(GrpcListen::Tcp).ok_or_else(bad)
}

/// Parses a boolean as the original executor's configuration did (Go's `strconv.ParseBool`; empty is false).
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        _ => None,
    }
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
pub use grpc::*;

#[cfg(feature = "exec-grpc")]
mod grpc {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio_util::sync::CancellationToken;
    use tonic::transport::{Channel, Endpoint};
    use tonic::{Code, Request, Response, Status};

    use super::{original_env, parse_go_bool, parse_listen, ExecServiceError, GrpcAddr, GrpcExecutor, GrpcListen};
    use crate::command::{earliest, run_with_shell, CommandSpec, Outcome, OutputSink, Stream, Tail};

    /// Generated types, client and server of package `exec` (the client is generic over any transport).
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod pb {
        tonic::include_proto!("exec");
    }

    use pb::exec_service_client::ExecServiceClient;
    use pb::exec_service_server::{ExecService, ExecServiceServer};

    /// How long connecting to a gRPC executor may take.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Largest `ExecResult` the agent takes from an executor (the original returns a command's whole stdout).
    pub const MAX_RESULT_BYTES: usize = 16 << 20;
    /// Largest `ExecCommands` the server takes.
    pub const MAX_REQUEST_BYTES: usize = 4 << 20;
    /// Bytes of a command's stderr kept for the executor's debug log (the service cannot return stderr).
    const STDERR_LOGGED: usize = 1024;

    /// Go's names of the signals, as its `exit status` / `signal: NAME` errors spell them.
    const GO_SIGNALS: [(i32, &str); 15] = [
        (1, "hangup"),
        (2, "interrupt"),
        (3, "quit"),
        (4, "illegal instruction"),
        (5, "trace/breakpoint trap"),
        (6, "aborted"),
        (7, "bus error"),
        (8, "floating point exception"),
        (9, "killed"),
        (10, "user defined signal 1"),
        (11, "segmentation fault"),
        (12, "user defined signal 2"),
        (13, "broken pipe"),
        (14, "alarm clock"),
        (15, "terminated"),
    ];

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

    /// The outcome of a command the executor reported failed with `message`: `exit status N` is exit code N,
    /// `signal: NAME` that signal, anything else exit code 1. Never success.
    pub(crate) fn failure_outcome(message: &str) -> Outcome {
        if let Some(code) = exit_status(message).filter(|c| *c != 0) {
            return Outcome { exit_code: Some(code), ..Outcome::default() };
        }
        if let Some(signal) = signal_of(message) {
            return Outcome { signal: Some(signal), ..Outcome::default() };
        }
        Outcome { exit_code: Some(1), ..Outcome::default() }
    }

    fn exit_status(message: &str) -> Option<i32> {
        let (_, rest) = message.rsplit_once("exit status ")?;
        let end = rest
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
            .map_or(rest.len(), |(i, _)| i);
        rest[..end].parse().ok()
    }

    fn signal_of(message: &str) -> Option<i32> {
        let (_, rest) = message.rsplit_once("signal: ")?;
        let name = rest.trim().trim_end_matches(" (core dumped)");
        if let Some(n) = name.strip_prefix("signal ") {
            return n.parse().ok();
        }
        GO_SIGNALS.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
    }

    /// How the server reports a failed command: Go's wording, as the original's `err.Error()` (`exit status
    /// N`, `signal: killed`); `None` when it succeeded.
    pub(crate) fn failure_text(outcome: &Outcome) -> Option<String> {
        if let Some(e) = &outcome.error {
            return Some(e.clone());
        }
        if outcome.timed_out || outcome.cancelled {
            return Some("signal: killed".into());
        }
        match (outcome.exit_code, outcome.signal) {
            (Some(0), _) => None,
            (Some(code), _) => Some(format!("exit status {code}")),
            (None, Some(sig)) => Some(match GO_SIGNALS.iter().find(|(s, _)| *s == sig) {
                Some((_, name)) => format!("signal: {name}"),
                None => format!("signal: signal {sig}"),
            }),
            (None, None) => Some("exit status -1".into()),
        }
    }

    /// Options of `pm-agent exec` for serving the gRPC service.
    #[derive(clap::Args, Debug, Clone)]
    pub struct ExecGrpcArgs {
        /// Serve the original executors' gRPC service (`exec.ExecService`, plaintext, no token) on `IP:PORT`,
        /// `:PORT` (all interfaces) or `unix:///path.sock`. Default: $COMMAND_EXECUTOR_SERVER_GRPC_PORT. Given
        /// alone, no `--listen` socket is served; with `--listen`, both are.
        #[arg(long, env = "PM_EXECUTOR_GRPC_LISTEN")]
        pub grpc_listen: Option<String>,
        /// Working directory of the commands the gRPC service runs (default: the executor's own, as the
        /// original).
        #[arg(long, env = "PM_EXECUTOR_GRPC_WORK_DIR")]
        pub grpc_work_dir: Option<PathBuf>,
        /// Shell the gRPC service runs each command with, as `SHELL -c LINE` (default: `sh`, or `bash` when
        /// $COMMAND_EXECUTOR_DEBUG is true).
        #[arg(long, env = "PM_EXECUTOR_GRPC_SHELL")]
        pub grpc_shell: Option<String>,
        /// Bytes of stdout one ExecuteCommands call returns, over all its commands: each command's output is
        /// kept from its start up to what is left, the rest is read and dropped (with a warning in the log).
        #[arg(long, env = "PM_EXECUTOR_GRPC_MAX_OUTPUT_BYTES", default_value_t = super::DEFAULT_MAX_OUTPUT_BYTES)]
        pub grpc_max_output_bytes: usize,
    }

    /// The validated settings of the gRPC service.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ServeConfig {
        /// The executor's name (for the log).
        pub name: String,
        /// Where to listen.
        pub listen: GrpcListen,
        /// The shell commands run with.
        pub shell: String,
        /// Their working directory (absolute).
        pub work_dir: PathBuf,
        /// Stdout bytes one call returns at most.
        pub max_output_bytes: usize,
    }

    impl ExecGrpcArgs {
        /// Validates the options, with the original executor's variables (read through `env`) as defaults of
        /// the ones not given. `None` when no gRPC address is given either way.
        pub fn build(
            self,
            name: &str,
            env: impl Fn(&str) -> Option<String>,
        ) -> Result<Option<ServeConfig>, ExecServiceError> {
            let set = |var: &str| env(var).filter(|v| !v.trim().is_empty());
            let Some(listen) = self.grpc_listen.or_else(|| set(original_env::GRPC_PORT)) else { return Ok(None) };
            let listen = parse_listen(&listen)?;
            let shell = match self.grpc_shell.filter(|s| !s.trim().is_empty()) {
                Some(s) => s,
                None => match set(original_env::DEBUG) {
                    Some(v) => match parse_go_bool(&v) {
                        Some(true) => "bash".to_string(),
                        Some(false) => "sh".to_string(),
                        None => return Err(ExecServiceError::BadDebug(v)),
                    },
                    None => "sh".to_string(),
                },
            };
            let dir = self.grpc_work_dir.unwrap_or_else(|| PathBuf::from("."));
            let work_dir = dir
                .canonicalize()
                .and_then(|d| match d.is_dir() {
                    true => Ok(d),
                    false => Err(std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory")),
                })
                .map_err(|source| ExecServiceError::WorkDir { path: dir, source })?;
            Ok(Some(ServeConfig {
                name: name.to_string(),
                listen,
                shell,
                work_dir,
                max_output_bytes: self.grpc_max_output_bytes,
            }))
        }
    }

    /// A bound gRPC listener.
    #[derive(Debug)]
    pub enum GrpcListener {
        /// On TCP.
        Tcp(tokio::net::TcpListener),
        /// On a unix socket (its path, removed by the caller at the end).
        Unix(tokio::net::UnixListener, PathBuf),
    }

    impl GrpcListener {
        /// Where it listens, as printed at start (`127.0.0.1:50051`, `unix:///path.sock`).
        pub fn local_addr(&self) -> String {
            match self {
                GrpcListener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                GrpcListener::Unix(_, path) => format!("unix://{}", path.display()),
            }
        }
    }

    /// Binds the service's address. A unix socket file left by a dead executor is replaced; one that still
    /// answers is refused.
    pub async fn bind(listen: &GrpcListen) -> Result<GrpcListener, ExecServiceError> {
        match listen {
            GrpcListen::Tcp(addr) => tokio::net::TcpListener::bind(addr)
                .await
                .map(GrpcListener::Tcp)
                .map_err(|source| ExecServiceError::Bind { addr: *addr, source }),
            GrpcListen::Unix(path) => Ok(GrpcListener::Unix(crate::exec::bind(path).await?, path.clone())),
        }
    }

    struct Served(Arc<ServeConfig>);

    #[tonic::async_trait]
    impl ExecService for Served {
        async fn execute_commands(
            &self,
            request: Request<pb::ExecCommands>,
        ) -> Result<Response<pb::ExecResult>, Status> {
            Ok(Response::new(execute(&self.0, request.into_inner().commands).await))
        }
    }

    /// Serves `exec.ExecService` on `listener` until `stop` fires. Calls run concurrently, each on its own
    /// task; dropping a call (the client cancelled, its deadline passed, or the executor stops) kills its
    /// running command's process group.
    pub async fn serve(
        listener: GrpcListener,
        cfg: ServeConfig,
        stop: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        use tonic::codegen::tokio_stream::wrappers::UnixListenerStream;
        let svc = ExecServiceServer::new(Served(Arc::new(cfg))).max_decoding_message_size(MAX_REQUEST_BYTES);
        let router = tonic::transport::Server::builder().add_service(svc);
        match listener {
            GrpcListener::Tcp(l) => {
                let incoming = tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
                tokio::select! {
                    r = router.serve_with_incoming(incoming) => r,
                    () = stop.cancelled() => Ok(()),
                }
            }
            GrpcListener::Unix(l, _) => {
                tokio::select! {
                    r = router.serve_with_incoming(UnixListenerStream::new(l)) => r,
                    () = stop.cancelled() => Ok(()),
                }
            }
        }
    }

    /// Keeps a command's stdout from its start up to `keep` bytes (reading and counting the rest), and a
    /// tail of its stderr for the log.
    struct Capture {
        keep: usize,
        stdout: Vec<u8>,
        dropped: u64,
        stderr: Tail,
    }

    impl OutputSink for Capture {
        async fn output(&mut self, stream: Stream, data: &[u8]) {
            match stream {
                Stream::Stdout => {
                    let take = data.len().min(self.keep.saturating_sub(self.stdout.len()));
                    self.stdout.extend_from_slice(&data[..take]);
                    self.dropped += (data.len() - take) as u64;
                }
                Stream::Stderr => self.stderr.push(data),
            }
        }
    }

    /// Runs one call's commands as the original executor did: in order, each with `SHELL -c`, going on after
    /// a failure; `output[i]` is command i's stdout (empty when it failed), `errorMessage` the last failure.
    pub(crate) async fn execute(cfg: &ServeConfig, commands: Vec<String>) -> pb::ExecResult {
        // The call itself is the cancellation: when it is dropped, so is the running command (its group killed).
        let never = CancellationToken::new();
        let mut left = cfg.max_output_bytes;
        let mut reply =
            pb::ExecResult { result: true, error_message: String::new(), output: Vec::with_capacity(commands.len()) };
        for run in commands {
            let spec = CommandSpec { run, work_dir: cfg.work_dir.clone(), env: BTreeMap::new(), timeout_ms: 0 };
            let mut sink = Capture { keep: left, stdout: Vec::new(), dropped: 0, stderr: Tail::new(STDERR_LOGGED) };
            let started = Instant::now();
            let outcome = run_with_shell(&cfg.shell, &spec, None, &never, &mut sink).await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let stderr = sink.stderr.into_string();
            match failure_text(&outcome) {
                None => {
                    if sink.dropped > 0 {
                        tracing::warn!(
                            executor = %cfg.name, run = %spec.run, dropped = sink.dropped,
                            "stdout over --grpc-max-output-bytes ({}) was dropped", cfg.max_output_bytes
                        );
                    }
                    let out = String::from_utf8_lossy(&sink.stdout).into_owned();
                    left = left.saturating_sub(out.len());
                    tracing::debug!(executor = %cfg.name, run = %spec.run, elapsed_ms, "command executed");
                    reply.output.push(out);
                }
                Some(why) => {
                    tracing::debug!(executor = %cfg.name, run = %spec.run, elapsed_ms, %why, stderr = %stderr.trim_end(), "command failed");
                    reply.result = false;
                    reply.error_message = why;
                    reply.output.push(String::new());
                }
            }
        }
        reply
    }

    /// Whether `listen` is reachable only from this machine (loopback or a unix socket).
    pub fn is_loopback(listen: &GrpcListen) -> bool {
        match listen {
            GrpcListen::Tcp(a) => a.ip().is_loopback(),
            GrpcListen::Unix(_) => true,
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

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect()
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
            assert!(matches!(parse_target(bad), Err(ExecServiceError::BadTarget(_))), "{bad}");
        }
        assert_eq!(tcp("[::1]", 7).to_string(), "grpc://[::1]:7");
        assert_eq!(GrpcAddr::Unix("/s.sock".into()).to_string(), "grpc+unix:///s.sock");
    }

    #[test]
    fn original_targets_take_the_forms_the_original_agent_took() {
        assert_eq!(parse_original_target("127.0.0.1:50051").unwrap(), tcp("127.0.0.1", 50051));
        assert_eq!(parse_original_target("http://127.0.0.1:50052").unwrap(), tcp("127.0.0.1", 50052));
        assert_eq!(parse_original_target("dns:///localhost:50053").unwrap(), tcp("localhost", 50053));
        assert_eq!(parse_original_target("grpc://h:1").unwrap(), tcp("h", 1));
        assert_eq!(parse_original_target("unix:///x/y.sock").unwrap(), GrpcAddr::Unix("/x/y.sock".into()));
        assert!(matches!(parse_original_target("https://h:1"), Err(ExecServiceError::Tls(_))));
        assert!(matches!(parse_original_target("h"), Err(ExecServiceError::BadTarget(_))));
    }

    #[test]
    fn the_original_agents_variables_name_grpc_executors_in_index_order() {
        let vars = env(&[
            ("PATH", "/bin"),
            ("PIPELINE_AGENT__NAME", "OcrAgent"),
            ("PIPELINE_AGENT__EXECUTORS__10__TARGET", "127.0.0.1:50053"),
            ("PIPELINE_AGENT__EXECUTORS__10__NAME", "mc"),
            ("PIPELINE_AGENT__EXECUTORS__0__NAME", "wget"),
            ("PIPELINE_AGENT__EXECUTORS__0__TARGET", "127.0.0.1:50051"),
            ("pipeline_agent__executors__2__name", "tesseract"),
            ("Pipeline_Agent__Executors__2__Target", "http://127.0.0.1:50052"),
            ("PIPELINE_AGENT__EXECUTORS__2__TIMEOUT", "ignored"),
        ]);
        let got = original_executors(vars).unwrap();
        assert_eq!(
            got,
            vec![
                ("wget".to_string(), tcp("127.0.0.1", 50051)),
                ("tesseract".to_string(), tcp("127.0.0.1", 50052)),
                ("mc".to_string(), tcp("127.0.0.1", 50053)),
            ]
        );
        assert!(original_executors(env(&[("HOME", "/root")])).unwrap().is_empty());
    }

    #[test]
    fn bad_original_variables_are_refused_with_the_variable_named() {
        let why = |pairs: &[(&str, &str)]| original_executors(env(pairs)).unwrap_err().to_string();
        let w = why(&[("PIPELINE_AGENT__EXECUTORS__0__NAME", "wget")]);
        assert!(w.starts_with("PIPELINE_AGENT__EXECUTORS__0__TARGET: missing"), "{w}");
        let w = why(&[("PIPELINE_AGENT__EXECUTORS__3__TARGET", "127.0.0.1:1")]);
        assert!(w.starts_with("PIPELINE_AGENT__EXECUTORS__3__NAME: missing"), "{w}");
        let w = why(&[("PIPELINE_AGENT__EXECUTORS__x__NAME", "wget")]);
        assert!(w.contains("must be a number"), "{w}");
        let w =
            why(&[("PIPELINE_AGENT__EXECUTORS__0__NAME", "wget"), ("PIPELINE_AGENT__EXECUTORS__0__TARGET", "nowhere")]);
        assert!(w.starts_with("PIPELINE_AGENT__EXECUTORS__0__TARGET: `nowhere`"), "{w}");
        let w = why(&[
            ("PIPELINE_AGENT__EXECUTORS__0__NAME", "wget"),
            ("PIPELINE_AGENT__EXECUTORS__0__TARGET", "h:1"),
            ("PIPELINE_AGENT__EXECUTORS__1__NAME", "wget"),
            ("PIPELINE_AGENT__EXECUTORS__1__TARGET", "h:2"),
        ]);
        assert!(w.contains("named twice"), "{w}");
        let w = why(&[("PIPELINE_AGENT__EXECUTORS__0__NAME", "a,b"), ("PIPELINE_AGENT__EXECUTORS__0__TARGET", "h:1")]);
        assert!(w.contains("not an executor name"), "{w}");
    }

    #[test]
    fn listen_addresses_accept_the_originals_port_form() {
        assert_eq!(parse_listen(":50051").unwrap(), GrpcListen::Tcp("0.0.0.0:50051".parse().unwrap()));
        assert_eq!(parse_listen("50052").unwrap(), GrpcListen::Tcp("0.0.0.0:50052".parse().unwrap()));
        assert_eq!(parse_listen("127.0.0.1:0").unwrap(), GrpcListen::Tcp("127.0.0.1:0".parse().unwrap()));
        assert_eq!(parse_listen("[::1]:9").unwrap(), GrpcListen::Tcp("[::1]:9".parse().unwrap()));
        assert_eq!(
            parse_listen("unix:///mnt/pipe/.pm/w.sock").unwrap(),
            GrpcListen::Unix("/mnt/pipe/.pm/w.sock".into())
        );
        assert!(matches!(parse_listen("localhost:7"), Ok(GrpcListen::Tcp(a)) if a.port() == 7 && a.ip().is_loopback()));
        for bad in ["", ":", ":99999", "unix://rel", "host", "a b:1"] {
            assert!(matches!(parse_listen(bad), Err(ExecServiceError::BadListen(_))), "{bad}");
        }
    }

    #[test]
    fn booleans_parse_as_go_does() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_go_bool(t), Some(true), "{t}");
        }
        for f in ["", "0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_go_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_go_bool("yes"), None);
    }
}

#[cfg(all(test, feature = "exec-grpc"))]
mod grpc_tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;
    use std::time::{Duration, Instant};

    use prost::Message;
    use tokio_util::sync::CancellationToken;

    use super::pb::exec_service_client::ExecServiceClient;
    use super::*;
    use crate::command::{CommandSpec, Outcome, OutputSink, Stream};

    #[derive(Default)]
    struct Collect(Vec<u8>, Vec<u8>);

    impl OutputSink for Collect {
        async fn output(&mut self, stream: Stream, data: &[u8]) {
            match stream {
                Stream::Stdout => self.0.extend_from_slice(data),
                Stream::Stderr => self.1.extend_from_slice(data),
            }
        }
    }

    fn config(listen: GrpcListen, dir: &Path, max_output_bytes: usize) -> ServeConfig {
        ServeConfig { name: "t".into(), listen, shell: "sh".into(), work_dir: dir.to_path_buf(), max_output_bytes }
    }

    /// Serves the service from `dir`; returns where it listens.
    async fn served(listen: GrpcListen, dir: &Path, max_output_bytes: usize) -> (String, CancellationToken) {
        let listener = bind(&listen).await.unwrap();
        let addr = listener.local_addr();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, config(listen, dir, max_output_bytes), stop.clone()));
        (addr, stop)
    }

    async fn client(addr: &str) -> ExecServiceClient<tonic::transport::Channel> {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        ExecServiceClient::new(channel)
    }

    fn spec(run: &str, timeout_ms: u64) -> CommandSpec {
        CommandSpec { run: run.into(), work_dir: "/nonexistent".into(), env: Default::default(), timeout_ms }
    }

    /// True once `pid` is gone (or a zombie), within 5 s (the server runs on this test's runtime: no blocking).
    async fn dies(pid: &str) -> bool {
        let stat = format!("/proc/{}/stat", pid.trim());
        for _ in 0..250 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if std::fs::read_to_string(&stat).map_or(true, |s| s.contains(") Z ")) {
                return true;
            }
        }
        false
    }

    async fn read_when_written(path: &Path) -> String {
        for _ in 0..500 {
            if let Ok(s) = std::fs::read_to_string(path) {
                if s.ends_with('\n') {
                    return s;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} was never written", path.display());
    }

    #[test]
    fn the_messages_keep_the_original_field_numbers() {
        let r = pb::ExecResult { result: true, error_message: "e".into(), output: vec!["a".into(), String::new()] };
        assert_eq!(r.encode_to_vec(), [0x10, 1, 0x1a, 1, b'e', 0x22, 1, b'a', 0x22, 0]);
        assert_eq!(pb::ExecCommands { commands: vec!["x".into()] }.encode_to_vec(), [0x0a, 1, b'x']);
    }

    #[test]
    fn failures_map_to_exit_codes_and_signals_and_back() {
        let exit = |m: &str| failure_outcome(m).exit_code;
        let signal = |m: &str| failure_outcome(m).signal;
        assert_eq!(exit("exit status 3"), Some(3));
        assert_eq!(exit("step: exit status 127"), Some(127));
        // A failure never reads as success.
        assert_eq!(exit("exit status 0"), Some(1));
        assert_eq!(exit(r#"exec: "sh": executable file not found in $PATH"#), Some(1));
        assert_eq!(exit(""), Some(1));
        assert_eq!((exit("signal: killed"), signal("signal: killed")), (None, Some(9)));
        assert_eq!(signal("signal: segmentation fault (core dumped)"), Some(11));
        assert_eq!(signal("signal: signal 16"), Some(16));
        for code in [1, 2, 42, 255] {
            let text = failure_text(&Outcome { exit_code: Some(code), ..Outcome::default() }).unwrap();
            assert_eq!(text, format!("exit status {code}"));
            assert_eq!(exit(&text), Some(code));
        }
        for sig in [9, 15, 11, 16] {
            let text = failure_text(&Outcome { signal: Some(sig), ..Outcome::default() }).unwrap();
            assert_eq!(signal(&text), Some(sig), "{text}");
        }
        assert_eq!(failure_text(&Outcome { exit_code: Some(0), ..Outcome::default() }), None);
        assert_eq!(failure_text(&Outcome::error("cannot start `sh`")).as_deref(), Some("cannot start `sh`"));
    }

    #[test]
    fn serving_takes_the_original_executors_variables_as_defaults() {
        let args = |listen: Option<&str>, shell: Option<&str>, dir: Option<&str>| ExecGrpcArgs {
            grpc_listen: listen.map(Into::into),
            grpc_work_dir: dir.map(Into::into),
            grpc_shell: shell.map(Into::into),
            grpc_max_output_bytes: 7,
        };
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |var: &str| pairs.iter().find(|(k, _)| *k == var).map(|(_, v)| v.to_string())
        };
        assert_eq!(args(None, None, None).build("w", env(&[])).unwrap(), None);
        let cfg = args(None, None, None)
            .build("w", env(&[("COMMAND_EXECUTOR_SERVER_GRPC_PORT", ":50051")]))
            .unwrap()
            .unwrap();
        assert_eq!(cfg.listen, GrpcListen::Tcp("0.0.0.0:50051".parse().unwrap()));
        assert_eq!((cfg.shell.as_str(), cfg.max_output_bytes, cfg.name.as_str()), ("sh", 7, "w"));
        assert_eq!(cfg.work_dir, std::env::current_dir().unwrap().canonicalize().unwrap());
        let debug = env(&[("COMMAND_EXECUTOR_SERVER_GRPC_PORT", ":1"), ("COMMAND_EXECUTOR_DEBUG", "true")]);
        assert_eq!(args(None, None, None).build("w", debug).unwrap().unwrap().shell, "bash");
        let junk = env(&[("COMMAND_EXECUTOR_SERVER_GRPC_PORT", ":1"), ("COMMAND_EXECUTOR_DEBUG", "yes")]);
        assert!(matches!(args(None, None, None).build("w", junk), Err(ExecServiceError::BadDebug(_))));
        // Flags win over the variables.
        let both = env(&[("COMMAND_EXECUTOR_SERVER_GRPC_PORT", ":1"), ("COMMAND_EXECUTOR_DEBUG", "1")]);
        let cfg = args(Some("127.0.0.1:9"), Some("dash"), Some("/tmp")).build("w", both).unwrap().unwrap();
        assert_eq!(cfg.listen, GrpcListen::Tcp("127.0.0.1:9".parse().unwrap()));
        assert_eq!(cfg.shell, "dash");
        assert_eq!(cfg.work_dir, Path::new("/tmp").canonicalize().unwrap());
        let bad = args(Some(":1"), None, Some("/nonexistent/pm-dir")).build("w", env(&[]));
        assert!(matches!(bad, Err(ExecServiceError::WorkDir { .. })), "{bad:?}");
        assert!(matches!(args(Some("nowhere"), None, None).build("w", env(&[])), Err(ExecServiceError::BadListen(_))));
    }

    #[tokio::test]
    async fn the_service_runs_every_command_in_order_and_keeps_going_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, _stop) = served(parse_listen("127.0.0.1:0").unwrap(), dir.path(), 1 << 20).await;
        let mut c = client(&addr).await;
        let commands = ["echo a", "echo lost; exit 3", "false", "echo b; touch ran", "pwd"];
        let r = c
            .execute_commands(pb::ExecCommands { commands: commands.iter().map(|s| s.to_string()).collect() })
            .await
            .unwrap()
            .into_inner();
        assert!(!r.result);
        assert_eq!(r.error_message, "exit status 1", "only the last failure");
        let cwd = format!("{}\n", dir.path().canonicalize().unwrap().display());
        assert_eq!(r.output, ["a\n", "", "", "b\n", cwd.as_str()]);
        assert!(dir.path().join("ran").exists());
        let ok = c.execute_commands(pb::ExecCommands { commands: vec!["true".into()] }).await.unwrap().into_inner();
        assert_eq!((ok.result, ok.error_message.as_str(), ok.output.len()), (true, "", 1));
    }

    #[tokio::test]
    async fn the_stdout_of_one_call_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, _stop) = served(parse_listen("127.0.0.1:0").unwrap(), dir.path(), 10).await;
        let commands = vec!["printf 0123456; seq 1 100000".to_string(), "echo more".into(), "false".into()];
        let r = client(&addr).await.execute_commands(pb::ExecCommands { commands }).await.unwrap().into_inner();
        assert_eq!(r.output, ["01234561\n2", "", ""]);
        assert_eq!(r.error_message, "exit status 1");
    }

    #[tokio::test]
    async fn a_passed_deadline_or_a_dropped_call_kills_the_running_command_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, _stop) = served(parse_listen("127.0.0.1:0").unwrap(), dir.path(), 1 << 20).await;
        let mut c = client(&addr).await;
        let commands = vec!["echo $$ > pid; sleep 30".to_string(), "touch after".into()];
        let mut request = tonic::Request::new(pb::ExecCommands { commands: commands.clone() });
        request.set_timeout(Duration::from_millis(300));
        let started = Instant::now();
        let status = c.execute_commands(request).await.unwrap_err();
        // Whichever side sees the deadline first: the client resets the call or the server ends it.
        assert!(matches!(status.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled), "{status:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid = read_when_written(&dir.path().join("pid")).await;
        assert!(dies(&pid).await, "the command {pid} outlived its deadline");
        std::fs::remove_file(dir.path().join("pid")).unwrap();

        // A client that goes away (no deadline).
        let call = tokio::spawn(async move { c.execute_commands(pb::ExecCommands { commands }).await });
        let pid = read_when_written(&dir.path().join("pid")).await;
        call.abort();
        assert!(dies(&pid).await, "the command {pid} outlived its cancelled call");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!dir.path().join("after").exists(), "a command after the cancelled one ran");
    }

    #[tokio::test]
    async fn commands_sent_one_per_call_map_onto_exit_codes_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("g.sock");
        let (_, _stop) = served(GrpcListen::Unix(sock.clone()), dir.path(), 1 << 20).await;
        let ex = GrpcExecutor::new(parse_target(&format!("grpc+unix://{}", sock.display())).unwrap());
        let never = CancellationToken::new();

        let mut sink = Collect::default();
        let o = run_grpc("g", &ex, &spec("echo hi; echo err >&2", 0), None, &never, &mut sink).await;
        assert_eq!(o, Outcome { exit_code: Some(0), ..Outcome::default() });
        assert_eq!((sink.0.as_slice(), sink.1.as_slice()), (&b"hi\n"[..], &b""[..]), "stderr cannot travel");

        let mut sink = Collect::default();
        let o = run_grpc("g", &ex, &spec("echo partial; exit 4", 0), None, &never, &mut sink).await;
        assert_eq!((o.exit_code, o.error), (Some(4), None));
        assert_eq!((sink.0.as_slice(), sink.1.as_slice()), (&b""[..], &b"exit status 4"[..]));

        let mut sink = Collect::default();
        let o = run_grpc("g", &ex, &spec("kill -9 $$", 0), None, &never, &mut sink).await;
        assert_eq!((o.exit_code, o.signal), (None, Some(9)), "{o:?}");

        // The command's own timeout, then the step's deadline, are the call's deadline.
        let started = Instant::now();
        let o = run_grpc("g", &ex, &spec("sleep 30", 200), None, &never, &mut Collect::default()).await;
        assert!(o.timed_out && !o.cancelled, "{o:?}");
        let deadline = Some(Instant::now() + Duration::from_millis(200));
        let o = run_grpc("g", &ex, &spec("sleep 30", 0), deadline, &never, &mut Collect::default()).await;
        assert!(o.timed_out, "{o:?}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.cancel();
        });
        let o = run_grpc("g", &ex, &spec("sleep 30", 0), None, &cancel, &mut Collect::default()).await;
        assert!(o.cancelled && !o.timed_out, "{o:?}");
    }

    #[tokio::test]
    async fn an_unreachable_executor_is_named_with_its_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let ex = GrpcExecutor::new(GrpcAddr::Tcp { host: "127.0.0.1".into(), port });
        let never = CancellationToken::new();
        let o = run_grpc("wget", &ex, &spec("true", 0), None, &never, &mut Collect::default()).await;
        let why = o.error.unwrap();
        assert!(why.starts_with(&format!("executor `wget` at grpc://127.0.0.1:{port} is unreachable: ")), "{why}");
        assert!(why.to_lowercase().contains("connection refused"), "{why}");

        let dir = tempfile::tempdir().unwrap();
        let ex = GrpcExecutor::new(GrpcAddr::Unix(dir.path().join("none.sock")));
        let o = run_grpc("ocr", &ex, &spec("true", 0), None, &never, &mut Collect::default()).await;
        let why = o.error.unwrap();
        assert!(why.contains("executor `ocr` at grpc+unix://") && why.contains("none.sock is unreachable"), "{why}");
    }
}
