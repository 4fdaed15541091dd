//! `pmctl cluster status`: cluster membership and health. Asks every member of the ring for its stats and
//! shows, per member, whether it answers, which ring (epoch) it holds, its connections and queue totals, and
//! its share of work stealing (tasks lent to peers, stolen from peers) and the Submits it redirected.
//!
//! Healthy means every member answers and holds the ring pmctl learnt when it connected; otherwise the
//! command fails (exit 1), e.g. while a membership change is still rolling out.

use pm_client::ConnectOptions;

use crate::shared::{Failure, ServerArgs, EXIT_FAILED};

/// The subcommands of `pmctl cluster`.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCmd {
    /// Every member's ring epoch, connections, queue totals, work stealing (tasks lent to peers, stolen from
    /// peers) and redirected Submits. Exits 1 if a member is unreachable or the members disagree on the ring (a
    /// membership change still rolling out).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `pmctl cluster ...`.
pub async fn run(server: &ServerArgs, cmd: &ClusterCmd) -> Result<(), Failure> {
    match cmd {
        ClusterCmd::Status { json } => status(server, *json).await,
    }
}

/// `pmctl cluster status`.
async fn status(server: &ServerArgs, json: bool) -> Result<(), Failure> {
    // Stats are a producer's read: a producer or an admin token will do.
    let cluster = server.connect_cluster(ConnectOptions::producer()).await?;
    let ring = cluster.ring();
    let mut healthy = true;
    let mut rows = Vec::new();
    for (ordinal, (node, stats)) in cluster.stats().await.into_iter().enumerate() {
        let row = match stats {
            Ok(s) => {
                let sum = |f: fn(&pm_protocol::pb::QueueStats) -> u64| s.queues.iter().map(f).sum::<u64>();
                let same_ring = s.ring_epoch == ring.epoch();
                healthy &= same_ring;
                serde_json::json!({"ordinal": ordinal, "member": node, "up": true, "node": s.node_id,
                    "ringEpoch": format!("{:#x}", s.ring_epoch), "sameRing": same_ring,
                    "connections": s.connections, "ready": sum(|q| q.ready), "delayed": sum(|q| q.delayed),
                    "leased": sum(|q| q.leased), "dead": sum(|q| q.dead), "agents": sum(|q| q.agents),
                    "storeDiskBytes": s.store_disk_bytes, "lent": sum(|q| q.lent), "stolen": sum(|q| q.stolen),
                    "redirects": s.redirects})
            }
            Err(e) => {
                healthy = false;
                serde_json::json!({"ordinal": ordinal, "member": node, "up": false, "error": e.to_string()})
            }
        };
        rows.push(row);
    }
    if json {
        let v = serde_json::json!({"ringEpoch": format!("{:#x}", ring.epoch()), "members": ring.members(),
            "healthy": healthy, "nodes": rows});
        println!("{v}");
    } else {
        println!("ring epoch {:#x}  members {}", ring.epoch(), ring.len().max(1));
        println!(
            "{:>3} {:<28} {:<5} {:>18} {:>6} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9}",
            "#", "MEMBER", "UP", "EPOCH", "CONNS", "READY", "LEASED", "DEAD", "AGENTS", "LENT", "STOLEN", "REDIRECTS"
        );
        for r in &rows {
            let s = |k: &str| r.get(k).map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default();
            let up = if r["up"] == true { "up" } else { "DOWN" };
            let epoch = if r["sameRing"] == false { format!("{} !", s("ringEpoch")) } else { s("ringEpoch") };
            println!(
                "{:>3} {:<28} {:<5} {:>18} {:>6} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9}",
                s("ordinal"),
                s("member"),
                up,
                epoch,
                s("connections"),
                s("ready"),
                s("leased"),
                s("dead"),
                s("agents"),
                s("lent"),
                s("stolen"),
                s("redirects")
            );
            if let Some(e) = r.get("error") {
                println!("    {}", e.as_str().unwrap_or_default());
            }
        }
    }
    if healthy {
        Ok(())
    } else {
        Err(Failure(EXIT_FAILED, "the cluster is not healthy: a member is down or holds another ring".into()))
    }
}
