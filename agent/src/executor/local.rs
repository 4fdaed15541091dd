//! The `local` executor: runs one shell command as a process of this one (`sh -c LINE`, or another shell),
//! leader of its own process group, its output handed to an `OutputSink` chunk by chunk as it comes.
//!
//! Agent side: the agent runs a `local` step's commands here itself. It is also what `pm-agent exec` runs
//! behind its sockets ([`crate::exec_server`]): a pod or gRPC executor is this module in another container.
//! Invariant: when the command ends, times out or is cancelled, or this future is dropped, its whole process
//! group is killed, so nothing it started in the background outlives it.
//!
//! That holds when this process is killed with `SIGKILL` too, with no `unsafe` (no `pre_exec` for
//! `PR_SET_PDEATHSIG`): each group is registered with the agent's [`watcher`](super::watcher), which kills the
//! groups left when the agent dies, and the command waits at a [`GATE`] until its group is registered.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::watcher::{self, kill_group, GATE, GO};
use crate::command::{earliest, CommandSpec, Outcome, OutputSink, Stream};

/// How long output still left in the pipes is read after the process group was killed. A process that left
/// the group (`setsid`) may hold a pipe open for ever; its output is then cut off.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(1);

enum Ended {
    Exited(std::process::ExitStatus),
    TimedOut,
    Cancelled,
}

/// Runs `spec` here and waits for it to end, killing its process group at `deadline` or when `cancel` fires.
pub(crate) async fn run_local<S: OutputSink>(
    spec: &CommandSpec,
    deadline: Option<Instant>,
    cancel: &CancellationToken,
    sink: &mut S,
) -> Outcome {
    run_with_shell("sh", spec, deadline, cancel, sink).await
}

/// [`run_local`] with another shell than `sh` (run as `SHELL -c LINE`). Dropping the future kills the
/// command's process group too.
pub(crate) async fn run_with_shell<S: OutputSink>(
    shell: &str,
    spec: &CommandSpec,
    deadline: Option<Instant>,
    cancel: &CancellationToken,
    sink: &mut S,
) -> Outcome {
    let mut cmd = tokio::process::Command::new(shell);
    cmd.arg("-c")
        .arg(format!("{GATE}{}", spec.run))
        .current_dir(&spec.work_dir)
        .envs(&spec.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && spec.work_dir.is_dir() => {
            return Outcome::error(format!(
                "cannot start `{shell}` (is there a `{shell}` on this container's PATH?): {e}"
            ));
        }
        Err(e) => return Outcome::error(format!("cannot start `{shell}` in {}: {e}", spec.work_dir.display())),
    };
    let pid = child.id();
    // Registered with the watcher before the command may run (the gate), so that a `kill -9` of this process
    // kills it too. If this future is dropped mid-run (the runtime shuts down), the whole group dies as well.
    let _group = pid.map(|p| watcher::global().watch(p));
    if let Some(mut gate) = child.stdin.take() {
        // An error means the shell is gone already (a syntax error): its exit status says why.
        let _ = gate.write_all(GO).await;
    }
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let (mut obuf, mut ebuf) = (vec![0u8; 8192], vec![0u8; 8192]);
    let own_deadline = (spec.timeout_ms > 0).then(|| Instant::now().checked_add(ms(spec.timeout_ms))).flatten();
    let deadline = earliest(deadline, own_deadline);
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep);
    let ended = loop {
        tokio::select! {
            n = read_some(&mut out, &mut obuf) => if let Some(n) = n {
                // A sink that blocks (a client that stopped reading) must not hold off the timeout or a cancel.
                tokio::select! {
                    () = sink.output(Stream::Stdout, &obuf[..n]) => {}
                    () = &mut sleep => break Ended::TimedOut,
                    () = cancel.cancelled() => break Ended::Cancelled,
                }
            },
            n = read_some(&mut err, &mut ebuf) => if let Some(n) = n {
                tokio::select! {
                    () = sink.output(Stream::Stderr, &ebuf[..n]) => {}
                    () = &mut sleep => break Ended::TimedOut,
                    () = cancel.cancelled() => break Ended::Cancelled,
                }
            },
            status = child.wait() => match status {
                Ok(s) => break Ended::Exited(s),
                Err(e) => {
                    if let Some(p) = pid {
                        kill_group(p);
                    }
                    return Outcome::error(format!("lost track of the command: {e}"));
                }
            },
            () = &mut sleep => break Ended::TimedOut,
            () = cancel.cancelled() => break Ended::Cancelled,
        }
    };
    // The command is over: nothing it started may outlive it.
    if let Some(p) = pid {
        kill_group(p);
    }
    let status = match ended {
        Ended::Exited(s) => Some(s),
        Ended::TimedOut | Ended::Cancelled => child.wait().await.ok(),
    };
    let _ = tokio::time::timeout(DRAIN_LIMIT, drain(&mut out, &mut err, &mut obuf, &mut ebuf, sink)).await;
    let mut outcome = Outcome {
        timed_out: matches!(ended, Ended::TimedOut),
        cancelled: matches!(ended, Ended::Cancelled),
        ..Outcome::default()
    };
    if let (Ended::Exited(_), Some(s)) = (&ended, status) {
        outcome.exit_code = s.code();
        outcome.signal = s.signal();
    }
    outcome
}

/// Reads the next chunk; `None` at the end (or on a read error, which ends the stream too). Never resolves
/// once the stream is gone, so it can sit in a `select!` loop.
async fn read_some<R: AsyncRead + Unpin>(r: &mut Option<R>, buf: &mut [u8]) -> Option<usize> {
    let Some(reader) = r.as_mut() else { return std::future::pending().await };
    match reader.read(buf).await {
        Ok(0) | Err(_) => {
            *r = None;
            None
        }
        Ok(n) => Some(n),
    }
}

/// Reads what is left in both streams after the command ended. Both at once: a process that left the group
/// and holds one of them open must not cost the other stream's last output (often the reason for a failure).
/// A stream already at its end is skipped at once, unlike in the main loop, where it waits for ever.
async fn drain<O, E, S>(out: &mut Option<O>, err: &mut Option<E>, obuf: &mut [u8], ebuf: &mut [u8], sink: &mut S)
where
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
    S: OutputSink,
{
    while out.is_some() || err.is_some() {
        tokio::select! {
            Some(n) = read_open(out, obuf) => sink.output(Stream::Stdout, &obuf[..n]).await,
            Some(n) = read_open(err, ebuf) => sink.output(Stream::Stderr, &ebuf[..n]).await,
            else => {}
        }
    }
}

/// Like [`read_some`], but `None` at once for a stream already at its end.
async fn read_open<R: AsyncRead + Unpin>(r: &mut Option<R>, buf: &mut [u8]) -> Option<usize> {
    if r.is_none() {
        return None;
    }
    read_some(r, buf).await
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;

    #[derive(Default)]
    struct Collect(Vec<(Stream, Vec<u8>)>);

    impl OutputSink for Collect {
        async fn output(&mut self, stream: Stream, data: &[u8]) {
            self.0.push((stream, data.to_vec()));
        }
    }

    fn spec(run: &str) -> CommandSpec {
        CommandSpec {
            run: run.into(),
            work_dir: std::env::temp_dir(),
            env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
            timeout_ms: 0,
        }
    }

    #[tokio::test]
    async fn output_arrives_in_order_per_stream_with_the_exit_code() {
        let mut sink = Collect::default();
        let o =
            run_local(&spec("echo $GREETING; echo err >&2; exit 4"), None, &CancellationToken::new(), &mut sink).await;
        assert_eq!(o.exit_code, Some(4));
        assert!(!o.timed_out && !o.cancelled && o.error.is_none());
        let out: Vec<u8> = sink.0.iter().filter(|(s, _)| *s == Stream::Stdout).flat_map(|(_, d)| d.clone()).collect();
        let err: Vec<u8> = sink.0.iter().filter(|(s, _)| *s == Stream::Stderr).flat_map(|(_, d)| d.clone()).collect();
        assert_eq!(out, b"hi\n");
        assert_eq!(err, b"err\n");
    }

    /// The drain after the exit must not wait for a stream already at its end (seen closed in the main loop):
    /// with one stream gone and the other at EOF it finishes on its first poll.
    #[test]
    fn the_drain_skips_streams_already_at_their_end() {
        use futures::FutureExt;
        let (mut obuf, mut ebuf) = (vec![0u8; 16], vec![0u8; 16]);
        let mut sink = Collect::default();
        let mut gone: Option<tokio::io::Empty> = None;
        let mut at_end = Some(tokio::io::empty());
        let done = drain(&mut gone, &mut at_end, &mut obuf, &mut ebuf, &mut sink).now_or_never();
        assert!(done.is_some(), "the drain waited on a stream that had already ended");
        let mut with_data: Option<&[u8]> = Some(b"last words");
        let mut at_end = Some(tokio::io::empty());
        let done = drain(&mut at_end, &mut with_data, &mut obuf, &mut ebuf, &mut sink).now_or_never();
        assert!(done.is_some());
        assert_eq!(sink.0, vec![(Stream::Stderr, b"last words".to_vec())]);
    }

    #[tokio::test]
    async fn the_spec_timeout_kills_the_command() {
        let mut s = spec("sleep 30");
        s.timeout_ms = 200;
        let started = Instant::now();
        let o = run_local(&s, None, &CancellationToken::new(), &mut Collect::default()).await;
        assert!(o.timed_out);
        assert_eq!(o.exit_code, None);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_missing_work_dir_is_a_clear_error() {
        let mut s = spec("true");
        s.work_dir = PathBuf::from("/nonexistent/pm-test");
        let o = run_local(&s, None, &CancellationToken::new(), &mut Collect::default()).await;
        assert!(o.error.as_deref().unwrap().contains("/nonexistent/pm-test"), "{o:?}");
    }

    /// The command reads `/dev/null` (not the watcher's pipe) and its exit status is its own.
    #[tokio::test]
    async fn the_watched_command_has_no_stdin_and_keeps_its_exit_code() {
        let mut sink = Collect::default();
        let o = run_local(&spec("read x; echo \"[$x]\"; exit 9"), None, &CancellationToken::new(), &mut sink).await;
        assert_eq!(o.exit_code, Some(9));
        assert_eq!(sink.0, vec![(Stream::Stdout, b"[]\n".to_vec())]);
    }
}
