//! The `pod` executor, agent side: runs a command on the `pm-agent exec` serving a unix socket in a utility
//! container of the pod ([`crate::exec_server::pod`] is the other end, [`crate::wire::pod`] the frames),
//! streaming its output back as it comes.
//!
//! The executor enforces the command's timeout and kills its process group; the agent sends `Kill` when the
//! run is cancelled and only steps in itself (gives up on the connection) when the executor does not answer
//! within a grace period. A missing socket or an executor that goes away mid-command fails the command with
//! a reason that names the executor.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::command::{earliest, CommandSpec, Outcome, OutputSink, Stream};
use crate::wire::pod::{
    codec, frame, RunRequest, EXEC_PROTOCOL_VERSION, TAG_EXIT, TAG_KILL, TAG_RUN, TAG_STDERR, TAG_STDOUT,
};

/// How long connecting to an executor may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the agent waits for `Exit` after sending `Kill` (or after the command's deadline).
const KILL_GRACE: Duration = Duration::from_secs(2);

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
        let give_up = earliest(backstop, killed_at.map(|t| t + KILL_GRACE));
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

    use tokio::net::UnixListener;

    use super::*;

    struct Discard;

    impl OutputSink for Discard {
        async fn output(&mut self, _: Stream, _: &[u8]) {}
    }

    fn spec(dir: &Path, run: &str) -> CommandSpec {
        CommandSpec { run: run.into(), work_dir: dir.to_path_buf(), env: BTreeMap::new(), timeout_ms: 0 }
    }

    #[tokio::test]
    async fn a_missing_socket_or_a_dead_executor_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sock");
        let o =
            run_remote("ocr", &missing, &spec(dir.path(), "true"), None, &CancellationToken::new(), &mut Discard).await;
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
        let o =
            run_remote("ocr", &path, &spec(dir.path(), "true"), None, &CancellationToken::new(), &mut Discard).await;
        assert!(o.error.unwrap().contains("closed the connection before the command ended"));
    }
}
