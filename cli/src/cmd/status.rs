//! `pmctl status`: what became of submitted tasks. Also the status lookup that `wait`, `why` and `flow`
//! build on, and the way a status is shown (for people, or as JSON).
//!
//! A task id names the node that accepted it, so every request goes to that node: [`status`] groups the ids
//! by node and asks each node once. An id no node knows comes back as a `NOT_FOUND` status, not an error.

use std::collections::HashMap;

use pm_client::json::time;
pub use pm_client::json::{state_name, status_json as to_json};
use pm_client::{Cluster, ConnectOptions, Error};
use pm_protocol::pb::{TaskState, TaskStatus};
use pm_protocol::ErrorCode;
use serde_json::Value;

use crate::shared::{Failure, ServerArgs, EXIT_FAILED};

/// The arguments of `pmctl status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Task ids.
    #[arg(required = true)]
    ids: Vec<u64>,
    /// Print one JSON object per task.
    #[arg(long)]
    json: bool,
}

/// `pmctl status`: prints each task's status; fails (1) if an id is not found.
pub async fn run(server: &ServerArgs, args: &Args) -> Result<(), Failure> {
    let cluster = server.connect_cluster(ConnectOptions::producer()).await?;
    let mut missing = 0;
    for r in status(&cluster, &args.ids).await {
        let s = r.map_err(Failure::failed)?;
        missing += usize::from(exit_code(&s) == EXIT_FAILED);
        if args.json {
            println!("{}", to_json(&s));
        } else {
            print!("{}", human(&s));
        }
    }
    if missing > 0 {
        return Err(Failure(EXIT_FAILED, format!("{missing} task(s) not found")));
    }
    Ok(())
}

/// Exit code of `pmctl wait` for a task that ended this way (0 succeeded, 2 failed or dead-lettered,
/// 3 cancelled); 1 for an unknown task.
pub fn exit_code(s: &TaskStatus) -> u8 {
    if s.code != ErrorCode::Ok as i32 {
        return 1;
    }
    match s.state() {
        TaskState::Succeeded => 0,
        TaskState::Failed | TaskState::Dead => 2,
        TaskState::Cancelled => 3,
        _ => 4,
    }
}

/// Exit code of `pmctl wait` when a task did not finish within `--timeout`.
pub const TIMED_OUT: u8 = 4;

/// True once the task will not change by itself (DEAD counts: only a redrive revives it).
pub fn is_final(s: &TaskStatus) -> bool {
    s.code != ErrorCode::Ok as i32
        || matches!(s.state(), TaskState::Succeeded | TaskState::Failed | TaskState::Dead | TaskState::Cancelled)
}

/// The status of each id, in order, each asked of the node that holds it.
pub async fn status(cluster: &Cluster, ids: &[u64]) -> Vec<Result<TaskStatus, Error>> {
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    let mut out: Vec<Result<TaskStatus, Error>> = ids.iter().map(|&id| Ok(not_found(id))).collect();
    for (i, id) in ids.iter().enumerate() {
        if let Some(node) = cluster.node_of_task(*id) {
            groups.entry(node).or_default().push(i);
        }
    }
    for (node, idx) in groups {
        let got = match cluster.client(&node).await {
            Ok(c) => c.status(idx.iter().map(|&i| ids[i]).collect()).await,
            Err(e) => Err(e),
        };
        match got {
            Ok(list) => idx.into_iter().zip(list).for_each(|(i, s)| out[i] = Ok(s)),
            Err(e) => idx.into_iter().for_each(|i| out[i] = Err(e.clone())),
        }
    }
    out
}

/// The status of a task no node knows.
pub fn not_found(task_id: u64) -> TaskStatus {
    TaskStatus { task_id, code: ErrorCode::NotFound as i32, ..Default::default() }
}

/// The status for people: a headline, the times, its flow (parent, children), why it waits or failed, and
/// what each command did with the tails of its output (for results in pm-agent's format).
pub fn human(s: &TaskStatus) -> String {
    if s.code != ErrorCode::Ok as i32 {
        return format!(
            "{} not found (unknown here, or finished longer ago than the node keeps outcomes)\n",
            s.task_id
        );
    }
    let key = if s.key.is_empty() { String::new() } else { format!("  key {}", s.key) };
    let mut out =
        format!("{} {}  queue {}{key}  attempt {}/{}\n", s.task_id, state_name(s), s.queue, s.attempts, s.max_attempts);
    let at = |ms: u64| time(ms).as_str().map(str::to_string).unwrap_or_else(|| "-".into());
    out.push_str(&format!("  submitted {}", at(s.submitted_unix_ms)));
    if s.started_unix_ms > 0 {
        out.push_str(&format!("  started {}", at(s.started_unix_ms)));
    }
    if s.finished_unix_ms > 0 {
        out.push_str(&format!("  finished {}", at(s.finished_unix_ms)));
    }
    out.push('\n');
    out.push_str(&flow_line(s));
    if !s.reason.is_empty() {
        out.push_str(&format!("  {}\n", s.reason));
    }
    if let Ok(v) = serde_json::from_slice::<Value>(&s.result) {
        for (n, step) in v["steps"].as_array().into_iter().flatten().enumerate() {
            let executor = step["executor"].as_str().unwrap_or("?");
            for c in step["commands"].as_array().into_iter().flatten() {
                let ms = c["durationMs"].as_u64().unwrap_or(0);
                let how = match (&c["exitCode"], &c["signal"], &c["error"], &c["timedOut"]) {
                    (_, _, Value::String(e), _) => format!("did not run: {e}"),
                    (_, _, _, Value::Bool(true)) => format!("timed out after {}", seconds(ms)),
                    (Value::Number(code), _, _, _) => format!("exit {code} in {ms} ms"),
                    (_, Value::Number(sig), _, _) => format!("signal {sig} in {ms} ms"),
                    _ => format!("no exit status in {ms} ms"),
                };
                let run = c["run"].as_str().unwrap_or_default();
                out.push_str(&format!("  step {} {executor}: {how}: {run}\n", n + 1));
                for stream in ["stdout", "stderr"] {
                    out.push_str(&tail(stream, c[format!("{stream}Tail")].as_str().unwrap_or_default()));
                }
            }
        }
    }
    out
}

/// The task's place in its flow, one line (empty when it is in none): its flow id, parent and children.
fn flow_line(s: &TaskStatus) -> String {
    let mut parts = Vec::new();
    if !s.flow_id.is_empty() {
        parts.push(format!("flow {}", s.flow_id));
    }
    if s.parent_id != 0 {
        parts.push(format!("parent {}", s.parent_id));
    }
    if !s.children.is_empty() {
        let ids: Vec<String> = s.children.iter().map(u64::to_string).collect();
        parts.push(format!("children {}", ids.join(" ")));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("  {}\n", parts.join("  "))
    }
}

/// Most lines of an output tail `pmctl status` prints (`--json` has the whole tail the agent kept).
const TAIL_LINES: usize = 10;

/// An output tail, indented under its command: `stdout: LINE` for one line, else the last [`TAIL_LINES`]
/// lines under `stdout:`; nothing when empty.
fn tail(stream: &str, text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    match lines.as_slice() {
        [] => String::new(),
        [one] => format!("    {stream}: {one}\n"),
        many => {
            let skip = many.len().saturating_sub(TAIL_LINES);
            let mut out = format!("    {stream}:");
            if skip > 0 {
                out.push_str(&format!(" (last {TAIL_LINES} lines; --json has all {})", many.len()));
            }
            out.push('\n');
            for l in &many[skip..] {
                out.push_str(&format!("      {l}\n"));
            }
            out
        }
    }
}

/// A duration for people: `2 s`, `1.5 s`, `250 ms`.
fn seconds(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let s = format!("{:.1}", ms as f64 / 1000.0);
    format!("{} s", s.strip_suffix(".0").unwrap_or(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(state: TaskState) -> TaskStatus {
        TaskStatus {
            task_id: 7,
            state: state as i32,
            queue: "q".into(),
            attempts: 1,
            max_attempts: 3,
            ..Default::default()
        }
    }

    #[test]
    fn exit_codes_mirror_the_outcome() {
        assert_eq!(exit_code(&st(TaskState::Succeeded)), 0);
        assert_eq!(exit_code(&st(TaskState::Failed)), 2);
        assert_eq!(exit_code(&st(TaskState::Dead)), 2);
        assert_eq!(exit_code(&st(TaskState::Cancelled)), 3);
        assert_eq!(exit_code(&not_found(7)), 1);
        assert!(is_final(&st(TaskState::Dead)) && !is_final(&st(TaskState::Leased)));
    }

    #[test]
    fn agent_results_are_summarised_per_command() {
        let mut s = st(TaskState::Failed);
        s.reason = "`false` exited with 1".into();
        s.result =
            br#"{"ok":false,"steps":[{"executor":"sh","commands":[{"run":"false","exitCode":1,"durationMs":3}]}]}"#
                .to_vec()
                .into();
        let text = human(&s);
        assert!(text.starts_with("7 failed  queue q  attempt 1/3\n"), "{text}");
        assert!(text.contains("step 1 sh: exit 1 in 3 ms: false"), "{text}");
        assert_eq!(to_json(&s)["result"]["steps"][0]["commands"][0]["exitCode"], 1);
    }

    #[test]
    fn output_tails_flow_and_timeouts_are_shown() {
        let mut s = st(TaskState::Failed);
        s.flow_id = "42".into();
        s.parent_id = 42;
        s.children = vec![8, 9];
        s.result = serde_json::to_vec(&serde_json::json!({"ok": false, "steps": [
            {"executor": "sh", "commands": [
                {"run": "echo hello", "exitCode": 0, "durationMs": 2, "stdoutTail": "hello\n", "stderrTail": ""},
                {"run": "sleep 5", "timedOut": true, "exitCode": null, "signal": 9, "durationMs": 2001,
                 "stdoutTail": "", "stderrTail": (1..=12).map(|i| format!("line {i}\n")).collect::<String>()}]}]}))
        .unwrap()
        .into();
        let text = human(&s);
        assert!(text.contains("\n  flow 42  parent 42  children 8 9\n"), "{text}");
        assert!(text.contains("step 1 sh: exit 0 in 2 ms: echo hello\n    stdout: hello\n"), "{text}");
        assert!(text.contains("step 1 sh: timed out after 2 s: sleep 5\n    stderr: (last 10 lines; --json has all 12)\n      line 3\n"), "{text}");
        assert!(text.ends_with("      line 12\n") && !text.contains("line 2\n"), "{text}");
        assert_eq!((seconds(250), seconds(1500), seconds(2001)), ("250 ms".into(), "1.5 s".into(), "2 s".into()));
    }
}
