//! The `grpc` executor, executor side: `pm-agent exec --grpc-listen ADDR` serves the original executors'
//! gRPC service `exec.ExecService` ([`crate::wire::grpc`]) as the original `command-executor` did
//! (configured by the same `COMMAND_EXECUTOR_*` variables, see [`super::original_env`]), so that images and
//! agents built for the original deployment work unchanged. Each command runs as the
//! [`local`](crate::executor::local) executor runs it.
//!
//! **How the server runs a call**, as the original: every command in order with `sh -c` (`bash -c` when
//! `COMMAND_EXECUTOR_DEBUG` is true), going on after a failure; `output[i]` is the stdout of command i (empty
//! when it failed, as the original drops it), `result` is false when any failed and `errorMessage` is the
//! last failure (`exit status N`). Unlike the original, a call is bounded: when its client cancels it or its
//! deadline passes, the running command's process group is killed and the remaining commands do not run;
//! the stdout one call returns is capped (`--grpc-max-output-bytes`); commands run in `--grpc-work-dir`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::original_env::{self, parse_go_bool};
use crate::command::{CommandSpec, OutputSink, Stream};
use crate::executor::grpc::{host_port, unix_path, GrpcAddr};
use crate::executor::local::run_with_shell;
use crate::output::{Head, Tail};
use crate::wire::grpc::failure_text;
use crate::wire::grpc::pb;
use crate::wire::grpc::pb::exec_service_server::{ExecService, ExecServiceServer};

/// Default of `--grpc-max-output-bytes`: 1 MiB, well under the 4 MiB message limit gRPC clients accept by
/// default.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1 << 20;

/// What can go wrong configuring or starting the service.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
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
    Unix(#[from] super::pod::BindError),
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
pub fn parse_listen(listen: &str) -> Result<GrpcListen, ServeError> {
    let t = listen.trim();
    let bad = || ServeError::BadListen(listen.to_string());
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

/// Largest `ExecCommands` the server takes.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// Bytes of a command's stderr kept for the executor's debug log (the service cannot return stderr).
const STDERR_LOGGED: usize = 1024;

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
    #[arg(long, env = "PM_EXECUTOR_GRPC_MAX_OUTPUT_BYTES", default_value_t = DEFAULT_MAX_OUTPUT_BYTES)]
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
    pub fn build(self, name: &str, env: impl Fn(&str) -> Option<String>) -> Result<Option<ServeConfig>, ServeError> {
        let set = |var: &str| env(var).filter(|v| !v.trim().is_empty());
        let Some(listen) = self.grpc_listen.or_else(|| set(original_env::GRPC_PORT)) else { return Ok(None) };
        let listen = parse_listen(&listen)?;
        let shell = match self.grpc_shell.filter(|s| !s.trim().is_empty()) {
            Some(s) => s,
            None => match set(original_env::DEBUG) {
                Some(v) => match parse_go_bool(&v) {
                    Some(true) => "bash".to_string(),
                    Some(false) => "sh".to_string(),
                    None => return Err(ServeError::BadDebug(v)),
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
            .map_err(|source| ServeError::WorkDir { path: dir, source })?;
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
pub async fn bind(listen: &GrpcListen) -> Result<GrpcListener, ServeError> {
    match listen {
        GrpcListen::Tcp(addr) => tokio::net::TcpListener::bind(addr)
            .await
            .map(GrpcListener::Tcp)
            .map_err(|source| ServeError::Bind { addr: *addr, source }),
        GrpcListen::Unix(path) => Ok(GrpcListener::Unix(super::pod::bind(path).await?, path.clone())),
    }
}

struct Served(Arc<ServeConfig>);

#[tonic::async_trait]
impl ExecService for Served {
    async fn execute_commands(&self, request: Request<pb::ExecCommands>) -> Result<Response<pb::ExecResult>, Status> {
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

/// Keeps a command's stdout from its start up to what the call has left (reading and counting the rest),
/// and a tail of its stderr for the log.
struct Capture {
    stdout: Head,
    stderr: Tail,
}

impl OutputSink for Capture {
    async fn output(&mut self, stream: Stream, data: &[u8]) {
        match stream {
            Stream::Stdout => self.stdout.push(data),
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
        let mut sink = Capture { stdout: Head::new(left), stderr: Tail::new(STDERR_LOGGED) };
        let started = Instant::now();
        let outcome = run_with_shell(&cfg.shell, &spec, None, &never, &mut sink).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let stderr = sink.stderr.into_string();
        match failure_text(&outcome) {
            None => {
                let dropped = sink.stdout.dropped();
                if dropped > 0 {
                    tracing::warn!(
                        executor = %cfg.name, run = %spec.run, dropped,
                        "stdout over --grpc-max-output-bytes ({}) was dropped", cfg.max_output_bytes
                    );
                }
                let out = sink.stdout.into_string();
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::pb::exec_service_client::ExecServiceClient;
    use super::*;
    use crate::command::{Collect, Outcome};
    use crate::executor::grpc::{parse_target, run_grpc, GrpcExecutor};

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
            assert!(matches!(parse_listen(bad), Err(ServeError::BadListen(_))), "{bad}");
        }
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
        assert!(matches!(args(None, None, None).build("w", junk), Err(ServeError::BadDebug(_))));
        // Flags win over the variables.
        let both = env(&[("COMMAND_EXECUTOR_SERVER_GRPC_PORT", ":1"), ("COMMAND_EXECUTOR_DEBUG", "1")]);
        let cfg = args(Some("127.0.0.1:9"), Some("dash"), Some("/tmp")).build("w", both).unwrap().unwrap();
        assert_eq!(cfg.listen, GrpcListen::Tcp("127.0.0.1:9".parse().unwrap()));
        assert_eq!(cfg.shell, "dash");
        assert_eq!(cfg.work_dir, Path::new("/tmp").canonicalize().unwrap());
        let bad = args(Some(":1"), None, Some("/nonexistent/pm-dir")).build("w", env(&[]));
        assert!(matches!(bad, Err(ServeError::WorkDir { .. })), "{bad:?}");
        assert!(matches!(args(Some("nowhere"), None, None).build("w", env(&[])), Err(ServeError::BadListen(_))));
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
}
