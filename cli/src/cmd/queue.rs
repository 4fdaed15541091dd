//! `pmctl queue pause|resume|purge Q`: steer a queue on every member of a cluster (a queue's tasks are spread
//! over all of them). A purge cancels every ready and delayed task, for good: it says how many first and asks
//! for confirmation, unless given `--yes`.

use std::io::{BufRead, IsTerminal, Write};

use pm_client::ConnectOptions;
use pm_protocol::pb::QueueAction;

use crate::shared::{Failure, ServerArgs, EXIT_FAILED, EXIT_USAGE};

/// The subcommands of `pmctl queue`.
#[derive(Debug, clap::Subcommand)]
pub enum QueueCmd {
    /// Lease nothing of the queue until it is resumed (submits are still accepted; running tasks go on).
    /// Kept across restarts.
    Pause {
        /// The queue.
        queue: String,
    },
    /// Lease the queue's tasks again.
    Resume {
        /// The queue.
        queue: String,
    },
    /// Cancel every ready and delayed task of the queue (leased tasks are untouched).
    Purge {
        /// The queue.
        queue: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// `pmctl queue ...`: exits 1 if the queue is unknown or a member did not take the change.
pub async fn run(server: &ServerArgs, cmd: &QueueCmd) -> Result<(), Failure> {
    let (queue, action, yes) = match cmd {
        QueueCmd::Pause { queue } => (queue, QueueAction::Pause, true),
        QueueCmd::Resume { queue } => (queue, QueueAction::Resume, true),
        QueueCmd::Purge { queue, yes } => (queue, QueueAction::Purge, *yes),
    };
    let cluster = server.connect_cluster(ConnectOptions::admin()).await?;
    // Known to some member? (A typo must not pause a queue nobody uses.) And how many tasks a purge takes.
    let mut known = false;
    let mut waiting = 0;
    for (node, stats) in cluster.stats().await {
        let stats = stats.map_err(|e| Failure::failed(format!("member {node}: {e}")))?;
        for q in stats.queues.iter().filter(|q| &q.queue == queue) {
            known = true;
            waiting += q.ready + q.delayed;
        }
    }
    if !known {
        return Err(Failure(EXIT_FAILED, format!("no member knows queue {queue:?} (no task or agent named it)")));
    }
    if !yes {
        let members = cluster.nodes().len();
        confirm(&format!(
            "purge queue {queue:?}: cancel its {waiting} ready and delayed task(s) on {members} member(s)?"
        ))?;
    }
    let mut failed = 0;
    let mut purged = 0;
    for (node, r) in cluster.queue_control_all(queue, action).await {
        match r {
            Ok(r) => purged += r.purged,
            Err(e) => {
                failed += 1;
                eprintln!("pmctl: member {node}: {e}");
            }
        }
    }
    match action {
        QueueAction::Purge => println!("{queue} purged: {purged} task(s) cancelled"),
        QueueAction::Pause => println!("{queue} paused"),
        _ => println!("{queue} resumed"),
    }
    if failed > 0 {
        return Err(Failure(EXIT_FAILED, format!("{failed} member(s) did not take the change: run it again")));
    }
    Ok(())
}

/// Asks `question` on the terminal; anything but `y`/`yes` refuses. Without a terminal, refuses (use --yes).
fn confirm(question: &str) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure(EXIT_USAGE, format!("{question} Not confirmed: stdin is not a terminal (give --yes)")));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(Failure::failed)?;
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err(Failure(EXIT_FAILED, "not confirmed: nothing purged".into())),
    }
}
