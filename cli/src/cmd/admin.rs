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
    /// Make dead letters ready again (all of the queue, or the given task ids). Needs an admin token.
    Redrive {
        /// Only this queue.
        #[arg(long, default_value = "")]
        queue: String,
        /// Task ids (none = all).
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
                    println!("{}\t{}\t{}\t{}", d.task_id, d.queue, d.attempts, d.reason);
                }
            }
        }
        DeadLetterCmd::Redrive { queue, ids } => {
            let n = client.redrive(queue, ids.clone()).await.map_err(Failure::failed)?;
            println!("{n}");
        }
    }
    Ok(())
}
