//! `pmctl flow`: the flow (tree of chained tasks: `onSuccess` / `onFailure`) a task belongs to, from its
//! root, with each task's state and the branch that submitted it. Exits 0 once every task of the tree has
//! succeeded, 1 otherwise.
//!
//! A task's follow-ups are submitted when it finishes, for how it ended: those of a task that succeeded come
//! from its `onSuccess` branch, those of one that failed (or was dead-lettered) from its `onFailure` branch.
//!
//! The tree is found through the tasks' statuses: up through `parent_id` to the root, then down through
//! `children`, one status request per level. A task's children are known once it has finished.

use std::collections::{HashMap, HashSet};

use pm_client::{Cluster, ConnectOptions, Error};
use pm_protocol::pb::{TaskState, TaskStatus};
use pm_protocol::ErrorCode;

use super::status::{exit_code, state_name, status, to_json};
use crate::shared::{Failure, ServerArgs, EXIT_FAILED};

/// The arguments of `pmctl flow`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Any task of the flow.
    id: u64,
    /// Print one JSON object per task (with its depth).
    #[arg(long)]
    json: bool,
}

/// `pmctl flow`.
pub async fn run(server: &ServerArgs, args: &Args) -> Result<(), Failure> {
    let cluster = server.connect_cluster(ConnectOptions::producer()).await?;
    let tree = flow(&cluster, args.id).await.map_err(Failure::failed)?;
    let mut done = 0;
    if !args.json {
        if let Some((_, _, root)) = tree.first().filter(|(_, _, r)| !r.flow_id.is_empty()) {
            println!("flow {}", root.flow_id);
        }
    }
    for (depth, branch, s) in &tree {
        done += usize::from(exit_code(s) == 0);
        if args.json {
            let mut v = to_json(s);
            v["depth"] = serde_json::json!(depth);
            if let Some(b) = branch {
                v["branch"] = serde_json::json!(b);
            }
            println!("{v}");
        } else {
            println!("{}", flow_line(*depth, *branch, s));
        }
    }
    if done < tree.len() {
        return Err(Failure(
            EXIT_FAILED,
            format!("{} of {} task(s) of the flow have not succeeded", tree.len() - done, tree.len()),
        ));
    }
    Ok(())
}

/// Most tasks `pmctl flow` shows.
const MAX_FLOW_TASKS: usize = 10_000;

/// One task of a flow: its depth, the branch of its parent that submitted it (none for the root), its status.
type FlowTask = (usize, Option<&'static str>, TaskStatus);

/// The flow that `id` belongs to, from its root (found through `parent_id`) down: each task with its depth and
/// branch, children under their parent in the order they were submitted. Children are known once their parent
/// has finished (they are part of its outcome).
async fn flow(cluster: &Cluster, id: u64) -> Result<Vec<FlowTask>, Error> {
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
    let mut stack = vec![(0usize, None, root.task_id)];
    while let Some((depth, branch, id)) = stack.pop() {
        let Some(s) = known.remove(&id) else { continue };
        let children_branch = branch_of_children(&s);
        stack.extend(s.children.iter().rev().map(|c| (depth + 1, children_branch, *c)));
        out.push((depth, branch, s));
    }
    Ok(out)
}

/// The branch a finished task's follow-ups came from: `onSuccess` if it succeeded, `onFailure` if it failed or
/// was dead-lettered (a cancelled task has none).
fn branch_of_children(s: &TaskStatus) -> Option<&'static str> {
    match s.state() {
        TaskState::Succeeded => Some("onSuccess"),
        TaskState::Failed | TaskState::Dead => Some("onFailure"),
        _ => None,
    }
}

/// One line of `pmctl flow`: the task, indented by its depth and marked with the branch that submitted it,
/// with its state, queue, key and reason.
fn flow_line(depth: usize, branch: Option<&str>, s: &TaskStatus) -> String {
    let indent = "   ".repeat(depth);
    let branch = match (depth, branch) {
        (0, _) => String::new(),
        (_, Some(b)) => format!("└─ {b}: "),
        (_, None) => "└─ ".to_string(),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_marked_with_the_branch_their_parent_took() {
        let mut parent = TaskStatus { task_id: 1, state: TaskState::Succeeded as i32, ..Default::default() };
        assert_eq!(branch_of_children(&parent), Some("onSuccess"));
        parent.state = TaskState::Dead as i32;
        assert_eq!(branch_of_children(&parent), Some("onFailure"));
        let child = TaskStatus { task_id: 2, state: TaskState::Ready as i32, queue: "q".into(), ..Default::default() };
        assert_eq!(flow_line(1, Some("onFailure"), &child), "   └─ onFailure: 2 ready  queue q");
        assert_eq!(flow_line(0, None, &parent), "1 dead");
    }
}
