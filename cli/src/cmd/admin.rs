//! `pmctl stats` and `pmctl dead-letter list|redrive`: an operator's view of one node (the `--server`
//! address): its queues' depth, leases and agents, and the tasks it dead-lettered, which a redrive makes
//! ready again. Reading (stats, the dead-letter list) connects as a producer, so a producer or an admin token
//! will do; a redrive connects as admin. These do not route through a cluster.

use pm_client::ConnectOptions;

use crate::shared::{Failure, ServerArgs};

/// The arguments of `pmctl stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The subcommands of `pmctl dead-letter`.
#[derive(Debug, clap::Subcommand)]
pub enum DeadLetterCmd {
    /// List dead letters, oldest first.
    List {
        /// Only this queue.
        #[arg(long, default_value = "")]
        queue: String,
        /// Most entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON (with payloads).
        #[arg(long)]
        json: bool,
    },
    /// Make dead letters ready again: the given task ids, or with `--all` every one of the queue (of every
    /// queue without `--queue`). Needs an admin token.
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

/// `pmctl stats`: a table (or JSON) of the node's queues.
pub async fn stats(server: &ServerArgs, args: &StatsArgs) -> Result<(), Failure> {
    let client = server.connect(ConnectOptions::producer()).await?;
    let s = client.stats().await.map_err(Failure::failed)?;
    if args.json {
        let queues: Vec<_> = s
            .queues
            .iter()
            .map(|q| {
                serde_json::json!({"queue": q.queue, "ready": q.ready, "delayed": q.delayed,
                    "leased": q.leased, "dead": q.dead, "credits": q.credits, "agents": q.agents,
                    "waitingExecutor": q.waiting_executor})
            })
            .collect();
        let v = serde_json::json!({"node": s.node_id, "connections": s.connections,
            "storeDiskBytes": s.store_disk_bytes, "storeFiles": s.store_segments, "queues": queues});
        println!("{v}");
    } else {
        println!("node {}  connections {}  store {} bytes", s.node_id, s.connections, s.store_disk_bytes);
        println!(
            "{:<32} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}",
            "QUEUE", "READY", "DELAYED", "LEASED", "DEAD", "AGENTS", "NO-EXEC"
        );
        for q in &s.queues {
            println!(
                "{:<32} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}",
                q.queue, q.ready, q.delayed, q.leased, q.dead, q.agents, q.waiting_executor
            );
        }
        if s.queues.iter().any(|q| q.waiting_executor > 0) {
            println!("NO-EXEC: ready tasks no connected agent can run (an executor is missing): `pmctl why ID`");
        }
    }
    Ok(())
}

/// `pmctl dead-letter ...`.
pub async fn dead_letter(server: &ServerArgs, cmd: &DeadLetterCmd) -> Result<(), Failure> {
    let role = match cmd {
        DeadLetterCmd::List { .. } => ConnectOptions::producer(),
        DeadLetterCmd::Redrive { .. } => ConnectOptions::admin(),
    };
    let client = server.connect(role).await?;
    match cmd {
        DeadLetterCmd::List { queue, limit, json } => {
            let list = client.dead_letters(queue, *limit).await.map_err(Failure::failed)?;
            let mut rows = Vec::new();
            for d in list {
                if *json {
                    let payload = String::from_utf8(d.payload.to_vec()).map(serde_json::Value::String).unwrap_or_else(
                        |e| {
                            use base64::Engine;
                            serde_json::json!({"base64": base64::engine::general_purpose::STANDARD.encode(e.as_bytes())})
                        },
                    );
                    let v = serde_json::json!({"taskId": d.task_id, "queue": d.queue, "attempts": d.attempts,
                        "reason": d.reason, "payload": payload});
                    println!("{v}");
                } else {
                    rows.push(d);
                }
            }
            if !*json {
                print_dead_letters(&rows);
            }
        }
        DeadLetterCmd::Redrive { queue, ids, .. } => {
            // With `--all`, `ids` is empty: the protocol's "every dead letter of the queue".
            let n = client.redrive(queue, ids.clone()).await.map_err(Failure::failed)?;
            println!("{n}");
        }
    }
    Ok(())
}

/// Dead letters as a table for people: a header, one line per letter, the reason on one line and cut to the
/// terminal's width (`COLUMNS`, else 120) when the output is a terminal.
fn print_dead_letters(rows: &[pm_protocol::pb::DeadLetter]) {
    use std::io::IsTerminal;
    let width = std::io::stdout()
        .is_terminal()
        .then(|| std::env::var("COLUMNS").ok().and_then(|c| c.parse::<usize>().ok()).unwrap_or(120));
    println!("{:<20} {:<24} {:>8}  REASON", "ID", "QUEUE", "ATTEMPTS");
    for d in rows {
        let head = format!("{:<20} {:<24} {:>8}  ", d.task_id, d.queue, d.attempts);
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
    use super::one_line;

    #[test]
    fn a_reason_is_one_line_and_cut_to_the_width() {
        assert_eq!(one_line("exit 1:\nno such file\r\n", None), "exit 1: / no such file");
        assert_eq!(one_line("abcdefghij", Some(5)), "abcd…");
        assert_eq!(one_line("abc", Some(5)), "abc");
    }
}
