//! `pmctl ls`: list tasks by queue, state, key and flow, newest first, from every member of a cluster: live
//! tasks and the finished ones whose outcome is still kept. A page at a time (`--limit`); the command prints
//! how to ask for the next one.

use pm_client::json::{state_name, state_of_name, status_json, STATE_NAMES};
use pm_client::{ConnectOptions, TaskFilter};
use pm_protocol::pb::TaskState;
use serde_json::{json, Value};

use crate::shared::{Failure, ServerArgs, EXIT_USAGE};

/// The arguments of `pmctl ls`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this queue.
    #[arg(long, default_value = "")]
    queue: String,
    /// Only this state: ready, delayed, leased, dead, succeeded, failed or cancelled.
    #[arg(long, default_value = "")]
    state: String,
    /// Only tasks with this key.
    #[arg(long, default_value = "")]
    key: String,
    /// Only tasks of this flow (its flowId).
    #[arg(long, default_value = "")]
    flow: String,
    /// Tasks per page (1 to 1000).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Only tasks older than this task id (the `next` cursor of the previous page).
    #[arg(long, default_value_t = 0)]
    before: u64,
    /// Print one JSON document: `{"tasks": [...], "nextCursor": ...}`, as `GET /api/tasks` answers.
    #[arg(long)]
    json: bool,
}

/// A state name of `--state`.
fn state_of(name: &str) -> Result<TaskState, Failure> {
    state_of_name(name).ok_or_else(|| Failure(EXIT_USAGE, format!("--state {name:?}: not a state ({STATE_NAMES})")))
}

/// `pmctl ls`.
pub async fn run(server: &ServerArgs, args: &Args) -> Result<(), Failure> {
    if !(1..=1000).contains(&args.limit) {
        return Err(Failure(EXIT_USAGE, "--limit: 1 to 1000 tasks a page".into()));
    }
    let filter = TaskFilter {
        queue: args.queue.clone(),
        state: state_of(&args.state)?,
        key: args.key.clone(),
        flow_id: args.flow.clone(),
    };
    let cluster = server.connect_cluster(ConnectOptions::producer()).await?;
    // Members bound the work of one request: ask again below their cursor until the page is full.
    let mut tasks = Vec::new();
    let mut before = args.before;
    let next = loop {
        let want = args.limit - tasks.len() as u32;
        let page = cluster.list_tasks(&filter, want, before).await.map_err(Failure::failed)?;
        tasks.extend(page.tasks);
        match page.next {
            Some(n) if tasks.len() < args.limit as usize => before = n,
            other => break other,
        }
    };
    if args.json {
        let list: Vec<Value> = tasks
            .iter()
            .map(|t| {
                let mut v = status_json(t);
                if let Some(o) = v.as_object_mut() {
                    o.remove("result");
                }
                v
            })
            .collect();
        println!("{}", json!({"tasks": list, "nextCursor": next.map(|n| n.to_string())}));
        return Ok(());
    }
    println!("{:<20} {:<10} {:<24} {:<16} {:>8}  REASON", "ID", "STATE", "QUEUE", "KEY", "ATTEMPTS");
    for t in &tasks {
        let attempts = format!("{}/{}", t.attempts, t.max_attempts);
        println!(
            "{:<20} {:<10} {:<24} {:<16} {:>8}  {}",
            t.task_id,
            state_name(t),
            t.queue,
            t.key,
            attempts,
            t.reason.lines().next().unwrap_or_default()
        );
    }
    if let Some(n) = next {
        println!("(more: pmctl ls ... --before {n})");
    }
    Ok(())
}
