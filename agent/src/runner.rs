//! Runs one task's pipeline: steps in order, each command with `sh -c` in the task's directory.
//!
//! Each command is the leader of its own process group. When it ends (or times out, or the run is cancelled
//! because the lease was lost) the whole group is killed, so no background child outlives its command.
//! Output is kept as bounded tails; large outputs belong in files on the shared directory.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use pm_protocol::pipeline::{Step, Task};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

/// Which executor names this agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executors {
    /// Every name runs as a local process (the embedded default).
    All,
    /// Only these names; any other fails the task.
    Only(BTreeSet<String>),
}

impl Executors {
    /// Parses `all` or a comma-separated list of names.
    pub fn parse(s: &str) -> Result<Executors, String> {
        if s.trim() == "all" {
            return Ok(Executors::All);
        }
        let names: BTreeSet<String> = s.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect();
        if names.is_empty() {
            return Err("give `all` or a comma-separated list of executor names".into());
        }
        Ok(Executors::Only(names))
    }

    fn knows(&self, name: &str) -> bool {
        match self {
            Executors::All => true,
            Executors::Only(names) => names.contains(name),
        }
    }
}

/// What one command did.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommandResult {
    /// The shell line.
    pub run: String,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Killed by a timeout.
    pub timed_out: bool,
    /// Wall time.
    pub duration_ms: u64,
    /// Last bytes of standard output (lossy UTF-8).
    pub stdout_tail: String,
    /// Last bytes of standard error (lossy UTF-8).
    pub stderr_tail: String,
}

impl CommandResult {
    fn ok(&self) -> bool {
        self.exit_code == Some(0)
    }

    fn describe(&self) -> String {
        let how = match (self.timed_out, self.exit_code, self.signal) {
            (true, _, _) => "timed out".to_string(),
            (_, Some(code), _) => format!("exited with {code}"),
            (_, _, Some(sig)) => format!("was killed by signal {sig}"),
            _ => "ended without a status".to_string(),
        };
        let tail = self.stderr_tail.trim_end();
        if tail.is_empty() {
            format!("`{}` {how}", self.run)
        } else {
            format!("`{}` {how}: {tail}", self.run)
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepResult {
    /// The step's executor.
    pub executor: String,
    /// Its commands, in order, as far as they ran.
    pub commands: Vec<CommandResult>,
}

/// What the whole task did: the agent acks with this (as JSON) or nacks with `error`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    /// Every step ran and no command failed (except under `continueOnError`).
    pub ok: bool,
    /// Why not, in one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The steps, as far as they ran.
    pub steps: Vec<StepResult>,
}

/// Runs pipelines as local processes.
#[derive(Debug, Clone)]
pub struct Runner {
    /// Executors this agent runs.
    pub executors: Executors,
    /// Bytes kept of each command's stdout and stderr.
    pub tail_bytes: usize,
}

enum Ended {
    Exited(std::process::ExitStatus),
    TimedOut,
    Cancelled,
}

impl Runner {
    /// Runs `task` in `dir` (created if missing). Stops early, killing the running command, when `cancel`
    /// fires; the result then says so.
    pub async fn run(&self, task: &Task, dir: &Path, task_id: u64, cancel: &CancellationToken) -> TaskResult {
        let mut result = TaskResult { ok: true, error: None, steps: Vec::new() };
        if let Some((n, step)) = task.steps.iter().enumerate().find(|(_, s)| !self.executors.knows(&s.executor_name)) {
            let known = match &self.executors {
                Executors::All => String::new(),
                Executors::Only(names) => names.iter().cloned().collect::<Vec<_>>().join(", "),
            };
            return fail(
                result,
                format!("step {}: unknown executor `{}` (this agent runs: {known})", n + 1, step.executor_name),
            );
        }
        if let Err(e) = tokio::fs::create_dir_all(dir).await {
            return fail(result, format!("cannot create the task directory {}: {e}", dir.display()));
        }
        let task_deadline = task.timeout_seconds.map(|s| Instant::now() + Duration::from_secs_f64(s));
        for (n, step) in task.steps.iter().enumerate() {
            let step_deadline =
                earliest(task_deadline, step.timeout_seconds.map(|s| Instant::now() + Duration::from_secs_f64(s)));
            let mut done = StepResult { executor: step.executor_name.clone(), commands: Vec::new() };
            let mut failure = None;
            for command in &step.commands {
                let timeout = match command {
                    pm_protocol::pipeline::Command::Detailed { timeout_seconds: Some(s), .. } => {
                        Some(Instant::now() + Duration::from_secs_f64(*s))
                    }
                    _ => None,
                };
                let (r, cancelled) = self
                    .run_command(step, command.line(), dir, task_id, earliest(step_deadline, timeout), cancel)
                    .await;
                let ok = r.ok();
                if !ok && failure.is_none() {
                    failure = Some(format!("step {} ({}): {}", n + 1, step.executor_name, r.describe()));
                }
                done.commands.push(r);
                if cancelled {
                    result.steps.push(done);
                    return fail(result, "cancelled: the lease was lost".into());
                }
                if !ok && !step.continue_on_error {
                    break;
                }
            }
            result.steps.push(done);
            if let (Some(why), false) = (failure, step.continue_on_error) {
                return fail(result, why);
            }
        }
        result
    }

    async fn run_command(
        &self,
        step: &Step,
        line: &str,
        dir: &Path,
        task_id: u64,
        deadline: Option<Instant>,
        cancel: &CancellationToken,
    ) -> (CommandResult, bool) {
        let started = Instant::now();
        let mut result = CommandResult {
            run: line.to_string(),
            exit_code: None,
            signal: None,
            timed_out: false,
            duration_ms: 0,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        };
        let work_dir = match &step.work_dir {
            Some(w) => dir.join(w),
            None => dir.to_path_buf(),
        };
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(line)
            .current_dir(&work_dir)
            .envs(&step.env)
            .env("PIPE_DIR", dir)
            .env("PM_TASK_ID", task_id.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                result.stderr_tail = format!("cannot start `sh` in {}: {e}", work_dir.display());
                return (result, false);
            }
        };
        let pid = child.id();
        let out = tokio::spawn(tail(child.stdout.take(), self.tail_bytes));
        let err = tokio::spawn(tail(child.stderr.take(), self.tail_bytes));
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            status = child.wait() => match status {
                Ok(s) => Ended::Exited(s),
                Err(_) => Ended::Cancelled,
            },
            _ = sleep => Ended::TimedOut,
            _ = cancel.cancelled() => Ended::Cancelled,
        };
        // The command is over: nothing it started may outlive it.
        kill_group(pid);
        let status = match ended {
            Ended::Exited(s) => Some(s),
            Ended::TimedOut | Ended::Cancelled => child.wait().await.ok(),
        };
        result.timed_out = matches!(ended, Ended::TimedOut);
        if let (Some(s), false) = (status, result.timed_out) {
            result.exit_code = s.code();
            result.signal = s.signal();
        }
        result.stdout_tail = out.await.unwrap_or_default();
        result.stderr_tail = err.await.unwrap_or_default();
        result.duration_ms = started.elapsed().as_millis() as u64;
        (result, matches!(ended, Ended::Cancelled))
    }
}

fn fail(mut result: TaskResult, why: String) -> TaskResult {
    result.ok = false;
    result.error = Some(why);
    result
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// SIGKILLs the process group led by `pid` (a command started with `process_group(0)`).
fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) else { return };
    // ESRCH (already gone) is the common case and fine.
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

/// Reads `r` to its end, keeping the last `keep` bytes.
async fn tail<R: AsyncRead + Unpin>(r: Option<R>, keep: usize) -> String {
    let Some(mut r) = r else { return String::new() };
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > keep.saturating_mul(2).max(8192) {
                    kept.drain(..kept.len() - keep);
                }
            }
        }
    }
    if kept.len() > keep {
        kept.drain(..kept.len() - keep);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// The directory a task runs in: `root/task-<id>`.
pub fn task_dir(root: &Path, task_id: u64) -> PathBuf {
    root.join(format!("task-{task_id}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn runner() -> Runner {
        Runner { executors: Executors::All, tail_bytes: 64 }
    }

    async fn run(json: &str) -> (TaskResult, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let task = pm_protocol::pipeline::parse_task(json.as_bytes()).unwrap();
        let r = runner().run(&task, dir.path(), 1, &CancellationToken::new()).await;
        (r, dir)
    }

    #[tokio::test]
    async fn steps_share_the_task_directory_and_report_each_command() {
        let (r, _d) = run(r#"{"pipeline":[{"executorName":"a","commands":["echo hi > f.txt"]},
            {"executorName":"b","commands":["cat f.txt", "echo oops >&2"]}]}"#)
        .await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.steps[1].commands[0].stdout_tail, "hi\n");
        assert_eq!(r.steps[1].commands[1].stderr_tail, "oops\n");
        assert_eq!(r.steps[1].commands[1].exit_code, Some(0));
    }

    #[tokio::test]
    async fn a_failing_command_stops_the_task_with_its_stderr_tail() {
        let (r, _d) = run(r#"{"pipeline":[{"executorName":"a","commands":["echo bad input >&2; exit 3","echo never"]},
            {"executorName":"b","commands":["echo never"]}]}"#)
        .await;
        assert!(!r.ok);
        assert_eq!(r.steps.len(), 1);
        assert_eq!(r.steps[0].commands.len(), 1);
        assert_eq!(r.error.as_deref(), Some("step 1 (a): `echo bad input >&2; exit 3` exited with 3: bad input"));
    }

    #[tokio::test]
    async fn continue_on_error_runs_the_rest() {
        let (r, _d) = run(r#"{"pipeline":[{"executorName":"a","continueOnError":true,"commands":["false","true"]},
            {"executorName":"b","commands":["true"]}]}"#)
        .await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.steps[0].commands.len(), 2);
        assert_eq!(r.steps[0].commands[0].exit_code, Some(1));
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let (r, d) = run(r#"{"pipeline":[{"executorName":"a","timeoutSeconds":0.5,
            "commands":["sleep 30 & echo $! > child.pid; sleep 30"]}]}"#)
        .await;
        assert!(!r.ok);
        assert!(r.steps[0].commands[0].timed_out);
        assert!(r.error.unwrap().contains("timed out"));
        let pid = std::fs::read_to_string(d.path().join("child.pid")).unwrap();
        let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
        // Killed processes are reaped by init shortly after.
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::read_to_string(proc.join("stat")).map_or(true, |s| s.contains(") Z "))
        });
        assert!(gone, "the background child {} survived the timeout", pid.trim());
    }

    #[tokio::test]
    async fn unknown_executor_fails_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let task = pm_protocol::pipeline::parse_task(
            br#"{"pipeline":[{"executorName":"sh","commands":["touch ran"]},{"executorName":"ocr","commands":["true"]}]}"#,
        )
        .unwrap();
        let r = Runner { executors: Executors::parse("sh, wget").unwrap(), tail_bytes: 64 };
        let out = r.run(&task, dir.path(), 1, &CancellationToken::new()).await;
        assert!(!out.ok);
        assert_eq!(out.error.as_deref(), Some("step 2: unknown executor `ocr` (this agent runs: sh, wget)"));
        assert!(!dir.path().join("ran").exists());
    }

    #[tokio::test]
    async fn output_is_kept_as_a_bounded_tail() {
        let (r, _d) = run(r#"{"pipeline":[{"executorName":"a","commands":["seq 1 100000"]}]}"#).await;
        let out = &r.steps[0].commands[0].stdout_tail;
        assert_eq!(out.len(), 64);
        assert!(out.ends_with("99999\n100000\n"), "{out}");
    }

    #[tokio::test]
    async fn cancel_stops_the_running_command() {
        let dir = tempfile::tempdir().unwrap();
        let task = pm_protocol::pipeline::parse_task(br#"{"pipeline":[{"executorName":"a","commands":["sleep 30"]}]}"#)
            .unwrap();
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c2.cancel();
        });
        let started = Instant::now();
        let r = runner().run(&task, dir.path(), 1, &cancel).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(r.error.as_deref(), Some("cancelled: the lease was lost"));
    }
}
