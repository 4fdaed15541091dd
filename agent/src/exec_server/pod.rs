//! The `pod` executor, executor side: `pm-agent exec --name NAME --listen unix:///mnt/pipe/.pm/NAME.sock`
//! runs in each utility container and runs the commands the agent sends it over that unix socket
//! ([`crate::wire::pod`] is the protocol, [`crate::executor::pod`] the agent's end), streaming back output and
//! the exit status. Each command runs as the [`local`](crate::executor::local) executor runs it.
//!
//! One connection carries one command. The executor kills the command's process group when the agent sends
//! `Kill`, when the agent's side of the connection closes (the agent died), and at the command's timeout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::command::{Outcome, OutputSink, Stream};
use crate::executor::local::run_local;
use crate::wire::pod::{
    codec, frame, RunRequest, EXEC_PROTOCOL_VERSION, TAG_EXIT, TAG_KILL, TAG_RUN, TAG_STDERR, TAG_STDOUT,
};

/// How long a new connection may take to send its `Run`.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an executor's socket cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
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

/// Binds the executor's socket, creating its directory and replacing a stale socket file left by a
/// container that died (but refusing to take over one that still answers).
pub async fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let bind_err = |source| BindError::Bind { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(bind_err)?;
    }
    if tokio::fs::symlink_metadata(path).await.is_ok() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(BindError::InUse(path.to_path_buf()));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    //! The pod executor's two ends together: the agent's client against this server.
    use std::collections::BTreeMap;
    use std::time::Instant;

    use super::*;
    use crate::command::{Collect, CommandSpec};
    use crate::executor::pod::run_remote;

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
    async fn a_stale_socket_file_is_replaced_but_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let live = bind(&path).await.unwrap();
        assert!(matches!(bind(&path).await, Err(BindError::InUse(_))));
        drop(live);
    }
}
