//! Runs one task's pipeline: steps in order, each command with `sh -c` in the task's directory, on the
//! step's executor ([`crate::executor`]: here, in a utility container over its socket, or on a server of the
//! original executors' gRPC service). This module owns the steps, not the commands: which executor, which
//! deadline, which environment, when to stop, what the result says.
//!
//! Each command is the leader of its own process group. When it ends (or times out, or the run is cancelled
//! because the lease was lost or the task was cancelled) the whole group is killed, so no background child
//! outlives its command. Output is kept as bounded tails ([`crate::output`], and streamed as
//! [`RunEvent`]s when asked); large outputs belong in files on the shared directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use pm_task::pipeline::{Command, Step, Task};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::command::{earliest, CommandSpec, Outcome, OutputSink, Stream};
use crate::executor::{Executor, Executors};
use crate::output::Tail;
use crate::task_dirs::results_dir;

/// A run's own directory, named as the layout names it (re-exported for the direct-run API and benches).
pub use crate::task_dirs::{task_dir, task_dir_named};

/// Names of the agent's metrics.
pub mod metric {
    /// Counter: pipelines run, by `outcome` (`ok`, `failed`, `cancelled`).
    pub const TASKS: &str = "pm_agent_tasks_total";
    /// Histogram: wall time of a pipeline, seconds.
    pub const TASK_DURATION: &str = "pm_agent_task_duration_seconds";
    /// Gauge: pipelines running now.
    pub const TASKS_RUNNING: &str = "pm_agent_tasks_running";

    /// Gives every metric its help text and unit (Prometheus `# HELP`). Call after the recorder is installed.
    pub fn describe() {
        use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
        describe_counter!(TASKS, Unit::Count, "Pipelines run, by outcome.");
        describe_histogram!(TASK_DURATION, Unit::Seconds, "Wall time of a pipeline.");
        describe_gauge!(TASKS_RUNNING, Unit::Count, "Pipelines running now.");
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
    /// It could not run, or its executor failed: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CommandResult {
    fn ok(&self) -> bool {
        self.exit_code == Some(0)
    }

    fn describe(&self) -> String {
        if let Some(e) = &self.error {
            return format!("`{}` did not run: {e}", self.run);
        }
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
    /// Steps skipped because an earlier attempt completed them (`resume: true`).
    #[serde(skip_serializing_if = "is_zero")]
    pub resumed_steps: usize,
    /// The steps that ran, as far as they ran.
    pub steps: Vec<StepResult>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl TaskResult {
    /// A result that failed before anything ran.
    pub fn failed(why: impl Into<String>) -> TaskResult {
        TaskResult { ok: false, error: Some(why.into()), resumed_steps: 0, steps: Vec::new() }
    }

    /// The exit code of the command that failed the task: the last one that ran, if it exited non-zero (not
    /// when it was killed by a signal or a timeout, or could not start).
    pub fn failed_exit_code(&self) -> Option<i32> {
        if self.ok {
            return None;
        }
        let last = self.steps.last()?.commands.last()?;
        last.exit_code.filter(|&c| c != 0 && !last.timed_out && last.error.is_none())
    }
}

/// What a streaming run reports as it goes.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum RunEvent {
    /// A command starts.
    Start {
        /// Step number, from 1.
        step: usize,
        /// The step's executor.
        executor: String,
        /// The shell line.
        run: String,
    },
    /// A chunk of a command's output (lossy UTF-8).
    Output {
        /// Which stream.
        stream: Stream,
        /// The bytes.
        data: String,
    },
    /// A command ended.
    End {
        /// Step number, from 1.
        step: usize,
        /// What it did.
        result: CommandResult,
    },
    /// The whole run ended (the last event; sent by the direct-run API, not by [`Runner::run`]).
    Result {
        /// What the task did.
        result: TaskResult,
    },
}

/// Runs pipelines.
#[derive(Debug, Clone)]
pub struct Runner {
    /// Executors this agent runs.
    pub executors: Executors,
    /// Bytes kept of each command's stdout and stderr.
    pub tail_bytes: usize,
    /// How long a streaming client may leave output unread before its run is cancelled.
    pub stream_stall: Duration,
}

/// Where a run's files go.
#[derive(Debug, Clone, Copy)]
pub struct RunDirs<'a> {
    /// Its working directory (`$PIPE_DIR`), created if missing.
    pub dir: &'a Path,
    /// The agent's work directory, which holds the results directories of chained tasks ([`results_dir`]).
    pub work_root: &'a Path,
}

/// The file in a task directory recording how many steps completed, for `resume: true`.
pub const PROGRESS_FILE: &str = ".pm-progress";

/// Default of [`Runner::stream_stall`].
pub const STREAM_STALL_LIMIT: Duration = Duration::from_secs(30);

/// Sends a run's events to a streaming client, if there is one. A client that went away stops the run
/// through its cancel token; one that stays connected but reads nothing for `stall` is cut off here (its run is
/// cancelled), so it cannot hold the run and its slot for ever. Once the run is cancelled nothing waits.
#[derive(Clone, Copy)]
struct EventOut<'a> {
    tx: Option<&'a mpsc::Sender<RunEvent>>,
    stall: Duration,
    cancel: &'a CancellationToken,
}

impl EventOut<'_> {
    async fn send(&self, event: RunEvent) {
        let Some(tx) = self.tx else { return };
        if self.cancel.is_cancelled() {
            let _ = tx.try_send(event);
        } else if tokio::time::timeout(self.stall, tx.send(event)).await.is_err() {
            tracing::warn!("a streaming client read nothing for {:?}: cancelling its run", self.stall);
            self.cancel.cancel();
        }
    }
}

/// Keeps tails and forwards chunks to a streaming client.
struct TailSink<'a> {
    out: Tail,
    err: Tail,
    events: EventOut<'a>,
}

impl OutputSink for TailSink<'_> {
    async fn output(&mut self, stream: Stream, data: &[u8]) {
        match stream {
            Stream::Stdout => self.out.push(data),
            Stream::Stderr => self.err.push(data),
        }
        if self.events.tx.is_some() {
            let data = String::from_utf8_lossy(data).into_owned();
            self.events.send(RunEvent::Output { stream, data }).await;
        }
    }
}

impl Runner {
    /// A runner keeping `tail_bytes` of each command's output.
    pub fn new(executors: Executors, tail_bytes: usize) -> Runner {
        Runner { executors, tail_bytes, stream_stall: STREAM_STALL_LIMIT }
    }

    /// Runs `task` in `dir`, a directory of its own inside the work directory (its parent): see
    /// [`Runner::run_in`].
    pub async fn run(
        &self,
        task: &Task,
        dir: &Path,
        task_id: u64,
        cancel: &CancellationToken,
        events: Option<&mpsc::Sender<RunEvent>>,
    ) -> TaskResult {
        let dirs = RunDirs { dir, work_root: dir.parent().unwrap_or(dir) };
        self.run_in(task, dirs, task_id, cancel, events).await
    }

    /// Runs `task` in `dirs.dir` (created if missing). Stops early, killing the running command, when `cancel`
    /// fires; the result then says so. With `events`, reports each command's start, output and end as it
    /// goes.
    pub async fn run_in(
        &self,
        task: &Task,
        dirs: RunDirs<'_>,
        task_id: u64,
        cancel: &CancellationToken,
        events: Option<&mpsc::Sender<RunEvent>>,
    ) -> TaskResult {
        let started = Instant::now();
        let running = metrics::gauge!(metric::TASKS_RUNNING);
        running.increment(1.0);
        let result = self.run_steps(task, dirs, task_id, cancel, events).await;
        running.decrement(1.0);
        let outcome = match (&result.ok, cancel.is_cancelled()) {
            (true, _) => "ok",
            (false, true) => "cancelled",
            (false, false) => "failed",
        };
        metrics::counter!(metric::TASKS, "outcome" => outcome).increment(1);
        metrics::histogram!(metric::TASK_DURATION).record(started.elapsed().as_secs_f64());
        result
    }

    async fn run_steps(
        &self,
        task: &Task,
        RunDirs { dir, work_root }: RunDirs<'_>,
        task_id: u64,
        cancel: &CancellationToken,
        events: Option<&mpsc::Sender<RunEvent>>,
    ) -> TaskResult {
        let mut executors = Vec::with_capacity(task.steps.len());
        for (n, step) in task.steps.iter().enumerate() {
            match self.executors.resolve(&step.executor_name) {
                Ok(Executor::Pod(sock)) if !sock.exists() => {
                    return TaskResult::failed(format!(
                    "step {}: executor `{}` has no socket at {} (is its container running `pm-agent exec --name {}`?)",
                    n + 1,
                    step.executor_name,
                    sock.display(),
                    step.executor_name
                ))
                }
                Ok(e) => executors.push(e),
                Err(why) => return TaskResult::failed(format!("step {}: {why}", n + 1)),
            }
        }
        if let Err(e) = tokio::fs::create_dir_all(dir).await {
            return TaskResult::failed(format!("cannot create the task directory {}: {e}", dir.display()));
        }
        let flow_env = flow_env(task, work_root, task_id);
        if let Some(results) = flow_env.get("PM_RESULTS_DIR") {
            if let Err(e) = tokio::fs::create_dir_all(results).await {
                return TaskResult::failed(format!("cannot create the results directory {results}: {e}"));
            }
        }
        let mut result = TaskResult { ok: true, error: None, resumed_steps: 0, steps: Vec::new() };
        if task.resume {
            result.resumed_steps = read_progress(dir).await.min(task.steps.len());
        }
        let task_deadline = task.timeout_seconds.map(|s| Instant::now() + Duration::from_secs_f64(s));
        let out = EventOut { tx: events, stall: self.stream_stall, cancel };
        for (n, (step, executor)) in task.steps.iter().zip(&executors).enumerate().skip(result.resumed_steps) {
            let step_deadline =
                earliest(task_deadline, step.timeout_seconds.map(|s| Instant::now() + Duration::from_secs_f64(s)));
            let mut done = StepResult { executor: step.executor_name.clone(), commands: Vec::new() };
            let mut failure = None;
            for command in &step.commands {
                let timeout = match command {
                    Command::Detailed { timeout_seconds: Some(s), .. } => {
                        Some(Instant::now() + Duration::from_secs_f64(*s))
                    }
                    _ => None,
                };
                if cancel.is_cancelled() {
                    result.steps.push(done);
                    return fail(result, "cancelled before it finished".into());
                }
                if out.tx.is_some() {
                    let run = command.line().into();
                    out.send(RunEvent::Start { step: n + 1, executor: step.executor_name.clone(), run }).await;
                }
                let spec = command_spec(step, command.line(), dir, task_id, &flow_env);
                let (r, cancelled) =
                    self.run_command(step, executor, &spec, earliest(step_deadline, timeout), cancel, out).await;
                if out.tx.is_some() {
                    out.send(RunEvent::End { step: n + 1, result: r.clone() }).await;
                }
                let ok = r.ok();
                if !ok && failure.is_none() {
                    failure = Some(format!("step {} ({}): {}", n + 1, step.executor_name, r.describe()));
                }
                done.commands.push(r);
                if cancelled {
                    result.steps.push(done);
                    return fail(result, "cancelled before it finished".into());
                }
                if !ok && !step.continue_on_error {
                    break;
                }
            }
            result.steps.push(done);
            if let (Some(why), false) = (failure, step.continue_on_error) {
                return fail(result, why);
            }
            if task.resume {
                write_progress(dir, n + 1).await;
            }
        }
        result
    }

    async fn run_command(
        &self,
        step: &Step,
        executor: &Executor,
        spec: &CommandSpec,
        deadline: Option<Instant>,
        cancel: &CancellationToken,
        events: EventOut<'_>,
    ) -> (CommandResult, bool) {
        let started = Instant::now();
        let mut sink = TailSink { out: Tail::new(self.tail_bytes), err: Tail::new(self.tail_bytes), events };
        let outcome: Outcome = executor.run(&step.executor_name, spec, deadline, cancel, &mut sink).await;
        let result = CommandResult {
            run: spec.run.clone(),
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            timed_out: outcome.timed_out,
            duration_ms: started.elapsed().as_millis() as u64,
            stdout_tail: sink.out.into_string(),
            stderr_tail: sink.err.into_string(),
            error: outcome.error,
        };
        (result, outcome.cancelled)
    }
}

/// The command as an executor runs it: in the task directory (or the step's `workDir` inside it), with the
/// step's environment plus `PIPE_DIR`, `PM_TASK_ID` and the flow's variables ([`flow_env`]).
fn command_spec(step: &Step, line: &str, dir: &Path, task_id: u64, flow: &BTreeMap<String, String>) -> CommandSpec {
    let work_dir = match &step.work_dir {
        Some(w) => dir.join(w),
        None => dir.to_path_buf(),
    };
    let mut env = step.env.clone();
    env.extend(flow.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.insert("PIPE_DIR".into(), dir.display().to_string());
    env.insert("PM_TASK_ID".into(), task_id.to_string());
    CommandSpec { run: line.to_string(), work_dir, env, timeout_ms: 0 }
}

/// The variables of a chained task: `PM_RESULTS_DIR` (for a task with follow-ups, or one in a flow),
/// `PM_FLOW_ID`, and for a follow-up `PM_PARENT_TASK_ID`, `PM_PARENT_KEY`, `PM_PARENT_STATE` and
/// `PM_PARENT_RESULTS_DIR` (the parent's results directory, where its follow-ups find its files when they run
/// on the same volume). Passed as variables, never spliced into the command line.
fn flow_env(task: &Task, work_root: &Path, task_id: u64) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let chained = !task.on_success.is_empty() || !task.on_failure.is_empty();
    if !chained && task.flow_id.is_none() && task.parent.is_none() {
        return env;
    }
    env.insert("PM_RESULTS_DIR".into(), results_dir(work_root, task_id).display().to_string());
    let flow = task.flow_id.clone().unwrap_or_else(|| task_id.to_string());
    env.insert("PM_FLOW_ID".into(), flow);
    if let Some(p) = &task.parent {
        env.insert("PM_PARENT_TASK_ID".into(), p.task_id.to_string());
        env.insert("PM_PARENT_KEY".into(), p.key.clone());
        env.insert("PM_PARENT_STATE".into(), p.state.clone());
        env.insert("PM_PARENT_RESULTS_DIR".into(), results_dir(work_root, p.task_id).display().to_string());
    }
    env
}

async fn read_progress(dir: &Path) -> usize {
    match tokio::fs::read_to_string(dir.join(PROGRESS_FILE)).await {
        Ok(s) => s.trim().parse().unwrap_or(0),
        Err(_) => 0,
    }
}

async fn write_progress(dir: &Path, completed: usize) {
    // Written then renamed, so a crash never leaves a torn count.
    let tmp = dir.join(format!("{PROGRESS_FILE}.tmp"));
    let done = async {
        tokio::fs::write(&tmp, completed.to_string()).await?;
        tokio::fs::rename(&tmp, dir.join(PROGRESS_FILE)).await
    };
    if let Err(e) = done.await {
        tracing::warn!("cannot record the progress of {}: {e}", dir.display());
    }
}

fn fail(mut result: TaskResult, why: String) -> TaskResult {
    result.ok = false;
    result.error = Some(why);
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::PathBuf;

    fn runner() -> Runner {
        Runner::new(Executors::all_local(), 64)
    }

    async fn run(json: &str) -> (TaskResult, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let task = pm_task::pipeline::parse_task(json.as_bytes()).unwrap();
        let r = runner().run(&task, dir.path(), 1, &CancellationToken::new(), None).await;
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
        let task = pm_task::pipeline::parse_task(
            br#"{"pipeline":[{"executorName":"sh","commands":["touch ran"]},{"executorName":"ocr","commands":["true"]}]}"#,
        )
        .unwrap();
        let r = Runner::new(Executors::parse(Some("sh, wget"), None).unwrap(), 64);
        let out = r.run(&task, dir.path(), 1, &CancellationToken::new(), None).await;
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
        let task =
            pm_task::pipeline::parse_task(br#"{"pipeline":[{"executorName":"a","commands":["sleep 30"]}]}"#).unwrap();
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c2.cancel();
        });
        let started = Instant::now();
        let r = runner().run(&task, dir.path(), 1, &cancel, None).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(r.error.as_deref(), Some("cancelled before it finished"));
    }

    #[tokio::test]
    async fn a_missing_pod_socket_fails_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let task = pm_task::pipeline::parse_task(
            br#"{"pipeline":[{"executorName":"sh","commands":["touch ran"]},{"executorName":"ocr","commands":["true"]}]}"#,
        )
        .unwrap();
        let pods = dir.path().join(".pm");
        let r = Runner::new(Executors::parse(Some("sh"), Some(pods.clone())).unwrap(), 64);
        let out = r.run(&task, dir.path(), 1, &CancellationToken::new(), None).await;
        let why = out.error.unwrap();
        assert!(why.starts_with("step 2: executor `ocr` has no socket at"), "{why}");
        assert!(why.contains(&pods.join("ocr.sock").display().to_string()), "{why}");
        assert!(!dir.path().join("ran").exists());
    }

    #[tokio::test]
    async fn resume_skips_the_steps_an_earlier_attempt_completed() {
        let dir = tempfile::tempdir().unwrap();
        let json = br#"{"resume":true,"pipeline":[{"executorName":"a","commands":["echo x >> one"]},
            {"executorName":"b","commands":["echo x >> two; test -e go"]}]}"#;
        let task = pm_task::pipeline::parse_task(json).unwrap();
        let first = runner().run(&task, dir.path(), 1, &CancellationToken::new(), None).await;
        assert!(!first.ok);
        std::fs::write(dir.path().join("go"), "").unwrap();
        let second = runner().run(&task, dir.path(), 1, &CancellationToken::new(), None).await;
        assert!(second.ok, "{second:?}");
        assert_eq!(second.resumed_steps, 1);
        assert_eq!(second.steps.len(), 1);
        assert_eq!(std::fs::read_to_string(dir.path().join("one")).unwrap(), "x\n");
        assert_eq!(std::fs::read_to_string(dir.path().join("two")).unwrap(), "x\nx\n");

        // Without `resume`, a retry starts over.
        let without = String::from_utf8_lossy(json).replace(r#""resume":true,"#, "");
        let task = pm_task::pipeline::parse_task(without.as_bytes()).unwrap();
        assert!(!task.resume);
        let third = runner().run(&task, dir.path(), 1, &CancellationToken::new(), None).await;
        assert!(third.ok && third.resumed_steps == 0);
        assert_eq!(std::fs::read_to_string(dir.path().join("one")).unwrap(), "x\nx\n");
    }

    #[tokio::test]
    async fn results_directories_are_under_the_work_directory_whatever_the_layout() {
        let root = tempfile::tempdir().unwrap();
        let task = pm_task::pipeline::parse_task(
            br#"{"flowId":"f","pipeline":[{"executorName":"a","commands":["echo \"$PWD $PM_RESULTS_DIR\""]}]}"#,
        )
        .unwrap();
        let (cancel, runner) = (CancellationToken::new(), Runner::new(Executors::all_local(), 4096));
        // The shared layout: the work directory itself is the task's directory.
        let shared = RunDirs { dir: root.path(), work_root: root.path() };
        let r = runner.run_in(&task, shared, 4, &cancel, None).await;
        let want = format!("{0} {0}/results/4\n", root.path().display());
        assert_eq!(r.steps[0].commands[0].stdout_tail, want, "{r:?}");
        // A directory of its own: still the work directory's results.
        let r = runner.run(&task, &root.path().join("task-4"), 4, &cancel, None).await;
        let want = format!("{0}/task-4 {0}/results/4\n", root.path().display());
        assert_eq!(r.steps[0].commands[0].stdout_tail, want, "{r:?}");
    }

    #[tokio::test]
    async fn events_report_each_command_as_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let task =
            pm_task::pipeline::parse_task(br#"{"pipeline":[{"executorName":"a","commands":["echo hi"]}]}"#).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let r = runner().run(&task, dir.path(), 1, &CancellationToken::new(), Some(&tx)).await;
        drop(tx);
        assert!(r.ok);
        let mut seen = Vec::new();
        while let Some(e) = rx.recv().await {
            seen.push(serde_json::to_value(&e).unwrap()["event"].as_str().unwrap().to_string());
            if let RunEvent::Output { stream, data } = e {
                assert_eq!((stream, data.as_str()), (Stream::Stdout, "hi\n"));
            }
        }
        assert_eq!(seen, ["start", "output", "end"]);
    }
}
