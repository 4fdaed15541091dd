//! `pmctl wait`: wait until tasks finish and print each outcome; the exit code says how they ended (0 all
//! succeeded, else that of the first task, in argument order, that did not: 2 failed or dead-lettered,
//! 3 cancelled, 4 not finished within `--timeout`, 1 not found).
//!
//! The command watches the tasks (the node holding each pushes `Completed` when it finishes) and watches
//! again every [`REWATCH`], over connections that reconnect, so it survives a restart of the scheduler while
//! it waits. With `--progress` it also asks for the tasks' statuses every `--progress-every` and prints each
//! change of state (or attempt) on stderr as it sees it, so stdout keeps only the outcomes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use pm_client::{Client, Cluster, ConnectOptions, Error};
use pm_protocol::pb::TaskStatus;
use pm_protocol::ErrorCode;
use tokio::sync::mpsc;

use super::status::{exit_code, human, is_final, not_found, state_name, status, to_json, TIMED_OUT};
use crate::shared::{Failure, ServerArgs};

/// How often `wait` registers its watches again (they end with a connection).
const REWATCH: Duration = Duration::from_secs(2);

/// The arguments of `pmctl wait`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Task ids.
    #[arg(required = true)]
    ids: Vec<u64>,
    /// Give up after this long (e.g. `30s`, `5m`; default: wait for ever).
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Print one JSON object per task.
    #[arg(long)]
    json: bool,
    /// Print each change of a task's state on stderr as it happens (`TIME ID ready -> leased (attempt 1/3)`).
    #[arg(long)]
    progress: bool,
    /// How often `--progress` asks for the tasks' states.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms", requires = "progress")]
    progress_every: Duration,
}

/// `pmctl wait`.
pub async fn run(server: &ServerArgs, args: &Args) -> Result<(), Failure> {
    let ids = &args.ids;
    let cluster = server.connect_cluster(ConnectOptions::producer()).await?;
    // Watches survive a scheduler restart: reconnect and watch again.
    let opts = server.options(ConnectOptions::producer())?.reconnect(true);
    let progress = args.progress.then_some(args.progress_every.max(Duration::from_millis(10)));
    let got = wait(&cluster, opts, ids, args.timeout, progress).await.map_err(Failure::failed)?;
    let (mut code, mut unsuccessful) = (0, 0);
    for (id, s) in ids.iter().zip(got) {
        let this = match &s {
            Some(s) if args.json => {
                println!("{}", to_json(s));
                exit_code(s)
            }
            Some(s) => {
                print!("{}", human(s));
                exit_code(s)
            }
            None => {
                println!("{id} not finished within the timeout");
                TIMED_OUT
            }
        };
        if code == 0 {
            code = this;
        }
        unsuccessful += usize::from(this != 0);
    }
    if code != 0 {
        return Err(Failure(code, format!("{unsuccessful} of {} task(s) did not succeed", ids.len())));
    }
    Ok(())
}

/// Waits until every task is final or `timeout` passes (`None`: no limit). Returns the final status of each
/// id that got one, in order; `None` for those still running at the timeout.
async fn wait(
    cluster: &Cluster,
    opts: ConnectOptions,
    ids: &[u64],
    timeout: Option<Duration>,
    progress: Option<Duration>,
) -> Result<Vec<Option<TaskStatus>>, Error> {
    let mut seen = Progress::default();
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
    let mut poll = tokio::time::interval(progress.unwrap_or(Duration::from_secs(3600)));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    if progress.is_some() {
                        seen.show(&s);
                    }
                    done.insert(s.task_id, s);
                }
            }
            _ = poll.tick(), if progress.is_some() => {
                let ask: Vec<u64> = ids.iter().copied().filter(|id| waiting.contains(id)).collect();
                // A failed lookup (a node restarting) shows nothing new; the next tick asks again.
                for s in status(cluster, &ask).await.into_iter().flatten() {
                    seen.show(&s);
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

/// What `--progress` last printed of each task: its state and attempt.
#[derive(Debug, Default)]
struct Progress {
    last: HashMap<u64, (&'static str, u32)>,
}

impl Progress {
    /// Prints `s` on stderr if its state or attempt changed since it was last seen.
    fn show(&mut self, s: &TaskStatus) {
        if let Some(line) = self.change(s) {
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            eprintln!("{now} {line}");
        }
    }

    /// The line for a change of `s` (`ID ready -> leased (attempt 1/3)`), or `None` if nothing changed.
    fn change(&mut self, s: &TaskStatus) -> Option<String> {
        let now = (state_name(s), s.attempts);
        let before = self.last.insert(s.task_id, now);
        if before == Some(now) {
            return None;
        }
        let from = before.map(|(state, _)| format!("{state} -> ")).unwrap_or_default();
        let attempt =
            if s.max_attempts > 0 { format!(" (attempt {}/{})", s.attempts, s.max_attempts) } else { String::new() };
        Some(format!("{} {from}{}{attempt}", s.task_id, now.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pm_protocol::pb::TaskState;

    #[test]
    fn progress_prints_a_line_per_change_only() {
        let mut p = Progress::default();
        let mut s = TaskStatus { task_id: 5, state: TaskState::Ready as i32, max_attempts: 3, ..Default::default() };
        assert_eq!(p.change(&s).as_deref(), Some("5 ready (attempt 0/3)"));
        assert_eq!(p.change(&s), None);
        s.state = TaskState::Leased as i32;
        s.attempts = 1;
        assert_eq!(p.change(&s).as_deref(), Some("5 ready -> leased (attempt 1/3)"));
        s.attempts = 2;
        assert_eq!(p.change(&s).as_deref(), Some("5 leased -> leased (attempt 2/3)"));
    }
}
