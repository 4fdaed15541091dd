//! `pmctl status`, `pmctl wait` and `pmctl why`: what became of submitted tasks.
//!
//! A task id names the node that accepted it, so every request goes to that node. `wait` watches the tasks
//! (the node pushes `Completed` when each finishes) and watches again every [`REWATCH`], so it survives a
//! restart of the scheduler while it waits.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use pm_client::{Client, Cluster, ConnectOptions, Error};
use pm_protocol::pb::{TaskState, TaskStatus};
use pm_protocol::ErrorCode;
use serde_json::Value;
use tokio::sync::mpsc;

/// How often `wait` registers its watches again (they end with a connection).
const REWATCH: Duration = Duration::from_secs(2);

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

fn not_found(task_id: u64) -> TaskStatus {
    TaskStatus { task_id, code: ErrorCode::NotFound as i32, ..Default::default() }
}

/// Waits until every task is final or `timeout` passes (`None`: no limit). Returns the final status of each
/// id that got one, in order; `None` for those still running at the timeout.
pub async fn wait(
    cluster: &Cluster,
    opts: ConnectOptions,
    ids: &[u64],
    timeout: Option<Duration>,
) -> Result<Vec<Option<TaskStatus>>, Error> {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut by_node: HashMap<String, Vec<u64>> = HashMap::new();
    for id in ids {
        if let Some(node) = cluster.node_of_task(*id) {
            by_node.entry(node).or_default().push(*id);
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for (node, node_ids) in by_node {
        let (client, mut completions) = Client::connect_watching(&node, opts.clone()).await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(s) = completions.next().await {
                if tx.send(s).is_err() {
                    return;
                }
            }
        });
        clients.push((client, node_ids));
    }
    let mut done: HashMap<u64, TaskStatus> = HashMap::new();
    let mut waiting: HashSet<u64> = ids.iter().copied().collect();
    let mut rewatch = tokio::time::interval(REWATCH);
    while !waiting.is_empty() {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(s) = rx.recv() => {
                if is_final(&s) && waiting.remove(&s.task_id) {
                    done.insert(s.task_id, s);
                }
            }
            _ = rewatch.tick() => {
                for (client, node_ids) in &clients {
                    let ask: Vec<u64> = node_ids.iter().copied().filter(|id| waiting.contains(id)).collect();
                    if ask.is_empty() {
                        continue;
                    }
                    // A failure (the node restarting) is retried at the next tick.
                    if let Ok(codes) = client.watch(ask.clone()).await {
                        for (id, code) in ask.into_iter().zip(codes) {
                            if code == ErrorCode::NotFound && waiting.remove(&id) {
                                done.insert(id, not_found(id));
                            }
                        }
                    }
                }
            }
            _ = until_deadline => break,
        }
    }
    Ok(ids.iter().map(|id| done.remove(id)).collect())
}

/// Most tasks `pmctl flow` shows.
const MAX_FLOW_TASKS: usize = 10_000;

/// The flow that `id` belongs to, from its root (found through `parent_id`) down: each task with its depth,
/// children under their parent in the order they were submitted. Children are known once their parent has
/// finished (they are part of its outcome).
pub async fn flow(cluster: &Cluster, id: u64) -> Result<Vec<(usize, TaskStatus)>, Error> {
    let one = |id: u64| async move { status(cluster, &[id]).await.remove(0) };
    let mut root = one(id).await?;
    let mut seen = HashSet::from([root.task_id]);
    while root.parent_id != 0 && seen.insert(root.parent_id) {
        let up = one(root.parent_id).await?;
        if up.code != ErrorCode::Ok as i32 {
            break; // the root's outcome is no longer kept: show what is left
        }
        root = up;
    }
    // Level by level (one request per level), then depth first for printing.
    let mut known: HashMap<u64, TaskStatus> = HashMap::new();
    let mut level: Vec<u64> = root.children.clone();
    known.insert(root.task_id, root.clone());
    while !level.is_empty() && known.len() < MAX_FLOW_TASKS {
        let got = status(cluster, &level).await;
        let mut next = Vec::new();
        for r in got {
            let s = r?;
            if known.contains_key(&s.task_id) {
                continue;
            }
            next.extend(s.children.iter().copied());
            known.insert(s.task_id, s);
        }
        level = next;
    }
    let mut out = Vec::new();
    let mut stack = vec![(0usize, root.task_id)];
    while let Some((depth, id)) = stack.pop() {
        let Some(s) = known.remove(&id) else { continue };
        stack.extend(s.children.iter().rev().map(|c| (depth + 1, *c)));
        out.push((depth, s));
    }
    Ok(out)
}

/// One line of `pmctl flow`.
pub fn flow_line(depth: usize, s: &TaskStatus) -> String {
    let indent = "   ".repeat(depth);
    let branch = if depth == 0 { "" } else { "└─ " };
    let note = match s.state() {
        _ if s.code != ErrorCode::Ok as i32 => String::new(),
        TaskState::Succeeded => String::new(),
        _ if s.reason.is_empty() => String::new(),
        _ => format!("  ({})", s.reason),
    };
    let key = if s.key.is_empty() { String::new() } else { format!(" key {}", s.key) };
    let queue = if s.queue.is_empty() { String::new() } else { format!("  queue {}", s.queue) };
    format!("{indent}{branch}{} {}{queue}{key}{note}", s.task_id, state_name(s))
}

use pm_client::json::time;
pub use pm_client::json::{state_name, status_json as to_json};

/// The status for people: a headline, the times, why it waits or failed, and what each command did (for
/// results in pm-agent's format).
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
    if !s.reason.is_empty() {
        out.push_str(&format!("  {}\n", s.reason));
    }
    if let Ok(v) = serde_json::from_slice::<Value>(&s.result) {
        for (n, step) in v["steps"].as_array().into_iter().flatten().enumerate() {
            let executor = step["executor"].as_str().unwrap_or("?");
            for c in step["commands"].as_array().into_iter().flatten() {
                let how = match (&c["exitCode"], &c["signal"], &c["error"]) {
                    (_, _, Value::String(e)) => format!("did not run: {e}"),
                    (Value::Number(code), _, _) => format!("exit {code}"),
                    (_, Value::Number(sig), _) => format!("signal {sig}"),
                    _ => "no status".into(),
                };
                let ms = c["durationMs"].as_u64().unwrap_or(0);
                let run = c["run"].as_str().unwrap_or_default();
                out.push_str(&format!("  step {} {executor}: {how} in {ms} ms: {run}\n", n + 1));
            }
        }
    }
    out
}

/// `pmctl why`: one line on why the task is not running now (or how it ended).
pub fn why(s: &TaskStatus) -> String {
    if s.code != ErrorCode::Ok as i32 {
        return format!("{}: not found (unknown here, or its outcome is no longer kept)", s.task_id);
    }
    match s.state() {
        TaskState::Ready | TaskState::Delayed | TaskState::Leased => {
            format!("{} {}: {}", s.task_id, state_name(s), s.reason)
        }
        _ if s.reason.is_empty() => format!("{}: finished, {}", s.task_id, state_name(s)),
        _ => format!("{}: finished, {}: {}", s.task_id, state_name(s), s.reason),
    }
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
        assert_eq!(why(&s), "7: finished, failed: `false` exited with 1");
    }
}
