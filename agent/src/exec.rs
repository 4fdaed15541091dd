//! The `pod` executor: `pm-agent exec --name NAME --listen unix:///mnt/pipe/.pm/NAME.sock` runs in each
//! utility container and runs the commands the agent sends it over that unix socket, streaming back output
//! and the exit status.
//!
//! One connection carries one command. Frames are a 4-byte big-endian length and a body of one tag byte and
//! a payload:
//!
//! | tag    | direction          | payload                                   |
//! |--------|--------------------|-------------------------------------------|
//! | `0x01` | agent → executor   | `Run`: JSON `{"version":1,"spec":{...}}`  |
//! | `0x02` | agent → executor   | `Kill`: empty; kill the process group     |
//! | `0x11` | executor → agent   | stdout bytes                              |
//! | `0x12` | executor → agent   | stderr bytes                              |
//! | `0x13` | executor → agent   | `Exit`: JSON outcome; the last frame      |
//!
//! The executor kills the command's process group when the agent sends `Kill`, when the agent's side of
//! the connection closes (the agent died), and at the command's timeout. The agent fails the command with a
//! clear reason when the socket is missing or the executor goes away mid-command.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::command::{run_local, CommandSpec, Outcome, OutputSink, Stream};

/// Version of the executor socket protocol.
pub const EXEC_PROTOCOL_VERSION: u32 = 1;
/// Largest frame either side accepts. Output chunks are at most 8 KiB; a `Run` carries one shell line.
pub const MAX_EXEC_FRAME: usize = 1 << 20;
/// How long a new connection may take to send its `Run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to an executor may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the agent waits for `Exit` after sending `Kill` (or after the command's deadline).
const KILL_GRACE: Duration = Duration::from_secs(2);

const TAG_RUN: u8 = 0x01;
const TAG_KILL: u8 = 0x02;
const TAG_STDOUT: u8 = 0x11;
const TAG_STDERR: u8 = 0x12;
const TAG_EXIT: u8 = 0x13;

/// What can go wrong starting an executor.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// `--listen` is not `unix:///absolute/path`.
    #[error("--listen must look like unix:///mnt/pipe/.pm/NAME.sock, got `{0}`")]
    BadListen(String),
    /// Another executor already serves this socket.
    #[error("{0} is already served by a running executor")]
    InUse(PathBuf),
    /// Creating or binding the socket failed.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct RunRequest {
    version: u32,
    spec: CommandSpec,
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_EXEC_FRAME).new_codec()
}

fn frame(tag: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + payload.len());
    b.put_u8(tag);
    b.put_slice(payload);
    b.freeze()
}

/// Parses `unix:///path` into the path.
pub fn socket_path(listen: &str) -> Result<PathBuf, ExecError> {
    match listen.strip_prefix("unix://") {
        Some(p) if p.starts_with('/') => Ok(PathBuf::from(p)),
        _ => Err(ExecError::BadListen(listen.to_string())),
    }
}

/// Binds the executor's socket, creating its directory and replacing a stale socket file left by a
/// container that died (but refusing to take over one that still answers).
pub async fn bind(path: &Path) -> Result<UnixListener, ExecError> {
    let bind_err = |source| ExecError::Bind { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(bind_err)?;
    }
    if tokio::fs::symlink_metadata(path).await.is_ok() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ExecError::InUse(path.to_path_buf()));
        }
        tokio::fs::remove_file(path).await.map_err(bind_err)?;
    }
    UnixListener::bind(path).map_err(bind_err)
}

/// Serves commands on `listener` until `stop` fires. Each connection runs one command on its own task, so
/// an executor serves as many concurrent tasks as its agent runs.
pub async fn serve(name: &str, listener: UnixListener, stop: CancellationToken) {
    let name: Arc<str> = Arc::from(name);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(session(stream, name.clone(), stop.child_token()));
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = stop.cancelled() => return,
        }
    }
}

/// Sends output chunks as frames; a failed write means the agent is gone, which cancels the command.
struct SocketSink {
    writer: FramedWrite<tokio::net::unix::OwnedWriteHalf, LengthDelimitedCodec>,
    cancel: CancellationToken,
}

impl OutputSink for SocketSink {
    async fn output(&mut self, stream: Stream, data: &[u8]) {
        let tag = match stream {
            Stream::Stdout => TAG_STDOUT,
            Stream::Stderr => TAG_STDERR,
        };
        if self.writer.send(frame(tag, data)).await.is_err() {
            self.cancel.cancel();
        }
    }
}

async fn session(stream: UnixStream, name: Arc<str>, cancel: CancellationToken) {
    let (r, w) = stream.into_split();
    let mut reader = FramedRead::new(r, codec());
    let mut sink = SocketSink { writer: FramedWrite::new(w, codec()), cancel: cancel.clone() };
    let outcome = match tokio::time::timeout(RUN_TIMEOUT, reader.next()).await {
        Ok(Some(Ok(f))) if f.first() == Some(&TAG_RUN) => match serde_json::from_slice::<RunRequest>(&f[1..]) {
            Ok(req) if req.version == EXEC_PROTOCOL_VERSION => {
                // Kill on request, or when the agent's side closes.
                let watcher = tokio::spawn({
                    let cancel = cancel.clone();
                    async move {
                        while let Some(Ok(f)) = reader.next().await {
                            if f.first() == Some(&TAG_KILL) {
                                break;
                            }
                        }
                        cancel.cancel();
                    }
                });
                tracing::debug!(executor = %name, run = %req.spec.run, "running");
                let outcome = run_local(&req.spec, None, &cancel, &mut sink).await;
                watcher.abort();
                outcome
            }
            Ok(req) => Outcome::error(format!(
                "executor `{name}` speaks executor protocol {EXEC_PROTOCOL_VERSION}, the agent sent {}",
                req.version
            )),
            Err(e) => Outcome::error(format!("executor `{name}`: invalid Run request: {e}")),
        },
        Ok(Some(Ok(_))) => Outcome::error(format!("executor `{name}`: expected a Run frame first")),
        Ok(Some(Err(e))) => Outcome::error(format!("executor `{name}`: bad frame: {e}")),
        Ok(None) | Err(_) => return,
    };
    let body = serde_json::to_vec(&outcome).unwrap_or_default();
    let _ = sink.writer.send(frame(TAG_EXIT, &body)).await;
}

/// Runs `spec` on the executor serving `socket`, handing its output to `sink` as it streams in.
pub(crate) async fn run_remote<S: OutputSink>(
    name: &str,
    socket: &Path,
    spec: &CommandSpec,
    deadline: Option<Instant>,
    cancel: &CancellationToken,
    sink: &mut S,
) -> Outcome {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(socket)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Outcome::error(format!(
            "executor `{name}`: cannot connect to {}: {e} (is its container running `pm-agent exec --name {name}`?)",
            socket.display()
        ))
        }
        Err(_) => return Outcome::error(format!("executor `{name}`: connecting to {} timed out", socket.display())),
    };
    let mut spec = spec.clone();
    // The executor enforces the deadline itself; the agent only steps in if it does not answer.
    if let Some(d) = deadline {
        let left = d.saturating_duration_since(Instant::now()).as_millis().max(1) as u64;
        spec.timeout_ms = if spec.timeout_ms == 0 { left } else { spec.timeout_ms.min(left) };
    }
    let backstop = (spec.timeout_ms > 0)
        .then(|| Instant::now().checked_add(Duration::from_millis(spec.timeout_ms))?.checked_add(KILL_GRACE))
        .flatten();
    let mut framed = tokio_util::codec::Framed::new(stream, codec());
    let run = serde_json::to_vec(&RunRequest { version: EXEC_PROTOCOL_VERSION, spec }).unwrap_or_default();
    if let Err(e) = framed.send(frame(TAG_RUN, &run)).await {
        return Outcome::error(format!("executor `{name}`: cannot send the command: {e}"));
    }
    let mut killed_at: Option<Instant> = None;
    loop {
        let give_up = crate::command::earliest(backstop, killed_at.map(|t| t + KILL_GRACE));
        let sleep = async {
            match give_up {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            f = framed.next() => match f {
                Some(Ok(f)) => match f.first() {
                    Some(&tag @ (TAG_STDOUT | TAG_STDERR)) => {
                        let stream = if tag == TAG_STDOUT { Stream::Stdout } else { Stream::Stderr };
                        // A blocked sink must not hold off a cancel: the executor is told to kill meanwhile.
                        tokio::select! {
                            () = sink.output(stream, &f[1..]) => {}
                            () = cancel.cancelled(), if killed_at.is_none() => {
                                killed_at = Some(Instant::now());
                                let _ = framed.send(frame(TAG_KILL, &[])).await;
                            }
                        }
                    }
                    Some(&TAG_EXIT) => {
                        let mut outcome = serde_json::from_slice::<Outcome>(&f[1..]).unwrap_or_else(|e| {
                            Outcome::error(format!("executor `{name}` sent an invalid exit status: {e}"))
                        });
                        outcome.cancelled |= killed_at.is_some() && !outcome.timed_out;
                        return outcome;
                    }
                    _ => return Outcome::error(format!("executor `{name}` sent an unknown frame")),
                },
                Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Outcome::error(format!("executor `{name}`: bad frame: {e}"))
                }
                Some(Err(e)) => return Outcome::error(format!(
                    "executor `{name}` closed the connection before the command ended ({e}; did its container stop?)"
                )),
                None => {
                    return Outcome::error(format!(
                        "executor `{name}` closed the connection before the command ended (did its container stop?)"
                    ))
                }
            },
            () = cancel.cancelled(), if killed_at.is_none() => {
                killed_at = Some(Instant::now());
                let _ = framed.send(frame(TAG_KILL, &[])).await;
            }
            () = sleep => {
                return match killed_at {
                    Some(_) => Outcome { cancelled: true, ..Outcome::default() },
                    None => Outcome { timed_out: true, ..Outcome::error(format!("executor `{name}` did not stop the command at its timeout")) },
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;

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

    fn spec(dir: &Path, run: &str) -> CommandSpec {
        CommandSpec { run: run.into(), work_dir: dir.to_path_buf(), env: BTreeMap::new(), timeout_ms: 0 }
    }

    async fn executor(dir: &Path) -> (PathBuf, CancellationToken) {
        let path = dir.join(".pm/x.sock");
        let listener = bind(&path).await.unwrap();
        let stop = CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move { serve("x", listener, stop).await }
        });
        (path, stop)
    }

    #[test]
    fn listen_addresses_must_be_absolute_unix_paths() {
        assert_eq!(socket_path("unix:///mnt/pipe/.pm/a.sock").unwrap(), PathBuf::from("/mnt/pipe/.pm/a.sock"));
        assert!(socket_path("unix://rel.sock").is_err());
        assert!(socket_path("/mnt/pipe/a.sock").is_err());
    }

    #[tokio::test]
    async fn commands_run_on_the_executor_and_stream_back() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, _stop) = executor(dir.path()).await;
        let mut sink = Collect::default();
        let s = spec(dir.path(), "echo $$ > pid; echo out; echo err >&2; exit 5");
        let o = run_remote("x", &sock, &s, None, &CancellationToken::new(), &mut sink).await;
        assert_eq!(o.exit_code, Some(5), "{o:?}");
        assert_eq!(sink.0, b"out\n");
        assert_eq!(sink.1, b"err\n");
        assert!(dir.path().join("pid").exists());
    }

    #[tokio::test]
    async fn cancel_kills_the_remote_command_and_a_deadline_times_it_out() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, _stop) = executor(dir.path()).await;
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.cancel();
        });
        let started = Instant::now();
        let o = run_remote("x", &sock, &spec(dir.path(), "sleep 30"), None, &cancel, &mut Collect::default()).await;
        assert!(o.cancelled, "{o:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let deadline = Some(Instant::now() + Duration::from_millis(200));
        let o = run_remote(
            "x",
            &sock,
            &spec(dir.path(), "sleep 30"),
            deadline,
            &CancellationToken::new(),
            &mut Collect::default(),
        )
        .await;
        assert!(o.timed_out && !o.cancelled, "{o:?}");
    }

    #[tokio::test]
    async fn a_missing_socket_or_a_dead_executor_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sock");
        let o = run_remote(
            "ocr",
            &missing,
            &spec(dir.path(), "true"),
            None,
            &CancellationToken::new(),
            &mut Collect::default(),
        )
        .await;
        let why = o.error.unwrap();
        assert!(why.contains("executor `ocr`: cannot connect to") && why.contains("pm-agent exec --name ocr"), "{why}");

        // An executor that accepts and then dies mid-command.
        let path = dir.path().join("dying.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(s);
        });
        let o = run_remote(
            "ocr",
            &path,
            &spec(dir.path(), "true"),
            None,
            &CancellationToken::new(),
            &mut Collect::default(),
        )
        .await;
        assert!(o.error.unwrap().contains("closed the connection before the command ended"));
    }

    #[tokio::test]
    async fn a_stale_socket_file_is_replaced_but_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let live = bind(&path).await.unwrap();
        assert!(matches!(bind(&path).await, Err(ExecError::InUse(_))));
        drop(live);
    }
}
