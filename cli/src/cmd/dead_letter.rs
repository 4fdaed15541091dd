//! `pmctl dead-letter list|redrive`: the tasks the cluster dead-lettered, and making them ready again.
//!
//! Every member holds the dead letters of the tasks it accepted, so `list` asks each member (`--server
//! a,b,c`, or the ring a member tells) and merges their oldest first; it names the members that did not
//! answer and then fails (exit 1). `redrive ID...` sends each id to the member its id names; `redrive --all`
//! asks every member. Listing connects as a producer (a producer or an admin token will do); a redrive as
//! admin.

use futures::future::join_all;
use pm_client::{Cluster, ConnectOptions, Error};
use pm_protocol::pb::DeadLetter;

use crate::shared::{Failure, ServerArgs, EXIT_FAILED};

/// The subcommands of `pmctl dead-letter`.
#[derive(Debug, clap::Subcommand)]
pub enum DeadLetterCmd {
    /// List dead letters of every member, oldest first, and how many each member holds.
    List {
        /// Only this queue.
        #[arg(long, default_value = "")]
        queue: String,
        /// Most entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON (with payloads), one object per line.
        #[arg(long)]
        json: bool,
    },
    /// Make dead letters ready again: the given task ids, or with `--all` every one of the queue (of every
    /// queue without `--queue`) on every member. Needs an admin token.
    Redrive {
        /// Only this queue.
        #[arg(long, default_value = "")]
        queue: String,
        /// Every dead letter of the queue (of every queue without `--queue`), instead of naming ids.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Task ids.
        #[arg(required_unless_present = "all")]
        ids: Vec<u64>,
    },
}

/// `pmctl dead-letter ...`.
pub async fn run(server: &ServerArgs, cmd: &DeadLetterCmd) -> Result<(), Failure> {
    match cmd {
        DeadLetterCmd::List { queue, limit, json } => {
            let cluster = server.connect_cluster(ConnectOptions::producer()).await?;
            list(&cluster, queue, *limit, *json).await
        }
        DeadLetterCmd::Redrive { queue, ids, .. } => {
            let cluster = server.connect_cluster(ConnectOptions::admin()).await?;
            redrive(&cluster, queue, ids).await
        }
    }
}

/// One member's answer to a listing: its oldest dead letters and how many it holds of the queue filter.
type MemberList = Result<(Vec<DeadLetter>, u64), Error>;

async fn list(cluster: &Cluster, queue: &str, limit: u32, json: bool) -> Result<(), Failure> {
    let nodes = cluster.nodes();
    let asks = nodes.iter().map(|node| async move {
        let client = cluster.client(node).await?;
        let page = client.dead_letter_page(queue, limit, 0).await?;
        let held =
            client.stats().await?.queues.iter().filter(|q| queue.is_empty() || q.queue == queue).map(|q| q.dead).sum();
        Ok((page.tasks, held))
    });
    let answers: Vec<(String, MemberList)> = nodes.iter().cloned().zip(join_all(asks).await).collect();
    let mut rows: Vec<(&str, &DeadLetter)> = answers
        .iter()
        .filter_map(|(node, r)| r.as_ref().ok().map(|(list, _)| (node.as_str(), list)))
        .flat_map(|(node, list)| list.iter().map(move |d| (node, d)))
        .collect();
    rows.sort_by_key(|(_, d)| d.task_id);
    rows.truncate(limit as usize);
    let cluster_mode = !cluster.ring().is_empty();
    if json {
        for (node, d) in &rows {
            let mut v = letter_json(d);
            if cluster_mode {
                v["member"] = serde_json::json!(node);
            }
            println!("{v}");
        }
    } else {
        print_dead_letters(&rows, cluster_mode);
        if cluster_mode {
            println!("{}", counts(&answers, rows.len()));
        }
    }
    let down: Vec<String> =
        answers.iter().filter_map(|(node, r)| r.as_ref().err().map(|e| format!("{node} ({e})"))).collect();
    if down.is_empty() {
        Ok(())
    } else {
        Err(Failure(
            EXIT_FAILED,
            format!("{} member(s) did not answer: {}; their dead letters are not listed", down.len(), down.join(", ")),
        ))
    }
}

/// The footer of a cluster's listing: how many dead letters each member holds, and their total.
fn counts(answers: &[(String, MemberList)], listed: usize) -> String {
    let mut total = 0;
    let per: Vec<String> = answers
        .iter()
        .map(|(node, r)| match r {
            Ok((_, n)) => {
                total += n;
                format!("{node} {n}")
            }
            Err(_) => format!("{node} DOWN"),
        })
        .collect();
    format!("dead letters: {}; total {total} (listed {listed})", per.join(", "))
}

/// A dead letter as JSON: its payload as text, or base64 when it is not UTF-8.
fn letter_json(d: &DeadLetter) -> serde_json::Value {
    let payload = String::from_utf8(d.payload.to_vec()).map(serde_json::Value::String).unwrap_or_else(|e| {
        use base64::Engine;
        serde_json::json!({"base64": base64::engine::general_purpose::STANDARD.encode(e.as_bytes())})
    });
    serde_json::json!({"taskId": d.task_id, "queue": d.queue, "attempts": d.attempts, "reason": d.reason,
        "payload": payload})
}

/// Redrives the ids on the members they name, or with no ids (`--all`) everything of `queue` on every member.
/// Prints how many were redriven; fails if a member did not answer.
async fn redrive(cluster: &Cluster, queue: &str, ids: &[u64]) -> Result<(), Failure> {
    let mut groups: Vec<(String, Vec<u64>)> = Vec::new();
    if ids.is_empty() {
        // `--all`: the protocol's empty list is "every dead letter of the queue".
        groups = cluster.nodes().into_iter().map(|n| (n, Vec::new())).collect();
    } else {
        for id in ids {
            let Some(node) = cluster.node_of_task(*id) else { continue };
            match groups.iter_mut().find(|(n, _)| *n == node) {
                Some((_, list)) => list.push(*id),
                None => groups.push((node, vec![*id])),
            }
        }
    }
    let sends =
        groups.iter().map(|(node, ids)| async move { cluster.client(node).await?.redrive(queue, ids.clone()).await });
    let mut n = 0;
    let mut down = Vec::new();
    for ((node, _), r) in groups.iter().zip(join_all(sends).await) {
        match r {
            Ok(k) => n += k,
            Err(e) => down.push(format!("{node} ({e})")),
        }
    }
    println!("{n}");
    if down.is_empty() {
        Ok(())
    } else {
        Err(Failure(EXIT_FAILED, format!("not redriven on {} member(s): {}", down.len(), down.join(", "))))
    }
}

/// Dead letters as a table for people: a header, one line per letter (with its member in a cluster), the
/// reason on one line and cut to the terminal's width (`COLUMNS`, else 120) when the output is a terminal.
fn print_dead_letters(rows: &[(&str, &DeadLetter)], cluster: bool) {
    use std::io::IsTerminal;
    let width = std::io::stdout()
        .is_terminal()
        .then(|| std::env::var("COLUMNS").ok().and_then(|c| c.parse::<usize>().ok()).unwrap_or(120));
    let member = |m: &str| if cluster { format!("{m:<22} ") } else { String::new() };
    println!("{:<20} {}{:<24} {:>8}  REASON", "ID", member("MEMBER"), "QUEUE", "ATTEMPTS");
    for (node, d) in rows {
        let head = format!("{:<20} {}{:<24} {:>8}  ", d.task_id, member(node), d.queue, d.attempts);
        let reason = one_line(&d.reason, width.map(|w| w.saturating_sub(head.chars().count()).max(20)));
        println!("{head}{reason}");
    }
}

/// `text` on one line (line breaks shown as ` / `), cut to `width` characters with `…` when given.
fn one_line(text: &str, width: Option<usize>) -> String {
    let line = text.split(['\r', '\n']).filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" / ");
    match width {
        Some(w) if line.chars().count() > w => {
            let cut: String = line.chars().take(w.saturating_sub(1)).collect();
            format!("{cut}…")
        }
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_one_line_and_cut_to_the_width() {
        assert_eq!(one_line("exit 1:\nno such file\r\n", None), "exit 1: / no such file");
        assert_eq!(one_line("abcdefghij", Some(5)), "abcd…");
        assert_eq!(one_line("abc", Some(5)), "abc");
    }

    #[test]
    fn the_footer_counts_each_member_and_names_the_down_ones() {
        let answers = vec![
            ("a:1".to_string(), Ok((Vec::new(), 3))),
            ("b:1".to_string(), Err(Error::new(pm_client::ErrorKind::Connect, "down"))),
            ("c:1".to_string(), Ok((Vec::new(), 4))),
        ];
        assert_eq!(counts(&answers, 7), "dead letters: a:1 3, b:1 DOWN, c:1 4; total 7 (listed 7)");
    }
}
