//! `pmctl stats`: the queues of every member (`--server a,b,c`, or the ring a member tells): depth, leases,
//! agents, dead letters, work stealing (lent, stolen) and redirects, per member and in total.
//!
//! Members that do not answer are named: the table shows them `DOWN`, the totals leave them out, and the
//! command fails (exit 1) after printing. A single node prints its own table, as before clusters existed.
//! Stats are a producer's read: a producer or an admin token will do.

use std::collections::BTreeMap;

use pm_client::{ConnectOptions, Error};
use pm_protocol::pb::{QueueStats, StatsReply};
use serde_json::{json, Value};

use crate::shared::{Failure, ServerArgs, EXIT_FAILED};

/// The arguments of `pmctl stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Print JSON instead of a table: the totals (`connections`, `queues`, `redirects`, ...), and per member
    /// under `members`; the members that did not answer under `down`.
    #[arg(long)]
    json: bool,
}

/// `pmctl stats`.
pub async fn stats(server: &ServerArgs, args: &StatsArgs) -> Result<(), Failure> {
    let cluster = server.connect_cluster(ConnectOptions::producer()).await?;
    let answers = cluster.stats().await;
    let single = cluster.ring().is_empty();
    let down: Vec<&str> = answers.iter().filter(|(_, r)| r.is_err()).map(|(m, _)| m.as_str()).collect();
    let up: Vec<&StatsReply> = answers.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
    let totals = Totals::of(&up);
    if args.json {
        println!("{}", to_json(&answers, &totals, &down));
    } else if single {
        if let Some(s) = up.first() {
            print_node(s);
        }
    } else {
        print_cluster(&answers, &totals);
    }
    match (down.len(), single) {
        (0, _) => Ok(()),
        (_, true) => match answers.into_iter().next() {
            Some((_, Err(e))) => Err(Failure::failed(e)),
            _ => Ok(()),
        },
        (n, false) => Err(Failure(
            EXIT_FAILED,
            format!(
                "{n} of {} member(s) did not answer: {} (the totals leave them out)",
                answers.len(),
                down.join(", ")
            ),
        )),
    }
}

/// The sums over the members that answered.
#[derive(Debug, Default)]
struct Totals {
    /// The first member's node id (a single node's own).
    node: String,
    connections: u64,
    disk: u64,
    files: u64,
    redirects: u64,
    /// Per queue name, the members' stats added up.
    queues: BTreeMap<String, QueueStats>,
}

impl Totals {
    fn of(up: &[&StatsReply]) -> Totals {
        let mut t = Totals { node: up.first().map(|s| s.node_id.clone()).unwrap_or_default(), ..Default::default() };
        for s in up {
            t.connections += s.connections;
            t.disk += s.store_disk_bytes;
            t.files += s.store_segments;
            t.redirects += s.redirects;
            for q in &s.queues {
                let sum = t
                    .queues
                    .entry(q.queue.clone())
                    .or_insert_with(|| QueueStats { queue: q.queue.clone(), ..Default::default() });
                add(sum, q);
            }
        }
        t
    }
}

/// Adds `q`'s figures to `sum` (a queue is paused if it is paused anywhere: the view warns).
fn add(sum: &mut QueueStats, q: &QueueStats) {
    pm_client::add_queue_stats(sum, q);
    sum.paused |= q.paused;
}

/// One queue as JSON (the fields of the single-node output first, unchanged).
fn queue_json(q: &QueueStats) -> Value {
    json!({"queue": q.queue, "ready": q.ready, "delayed": q.delayed, "leased": q.leased, "dead": q.dead,
        "credits": q.credits, "agents": q.agents, "waitingExecutor": q.waiting_executor,
        "lent": q.lent, "stolen": q.stolen})
}

fn to_json(answers: &[(String, Result<StatsReply, Error>)], t: &Totals, down: &[&str]) -> Value {
    let members: Vec<Value> = answers
        .iter()
        .map(|(member, r)| match r {
            Ok(s) => json!({"member": member, "up": true, "node": s.node_id, "connections": s.connections,
                "storeDiskBytes": s.store_disk_bytes, "storeFiles": s.store_segments, "redirects": s.redirects,
                "queues": s.queues.iter().map(queue_json).collect::<Vec<_>>()}),
            Err(e) => json!({"member": member, "up": false, "error": e.to_string()}),
        })
        .collect();
    json!({"node": t.node, "connections": t.connections, "storeDiskBytes": t.disk, "storeFiles": t.files,
        "redirects": t.redirects, "queues": t.queues.values().map(queue_json).collect::<Vec<_>>(),
        "members": members, "down": down})
}

/// A single node: its line and its queues.
fn print_node(s: &StatsReply) {
    println!("node {}  connections {}  store {} bytes", s.node_id, s.connections, s.store_disk_bytes);
    print_queues(s.queues.iter(), false);
}

/// The queue table (with the stealing columns in a cluster).
fn print_queues<'a>(queues: impl Iterator<Item = &'a QueueStats>, cluster: bool) {
    let queues: Vec<&QueueStats> = queues.collect();
    let steal = |a: &str, b: &str| if cluster { format!(" {a:>8} {b:>8}") } else { String::new() };
    println!(
        "{:<32} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}{}",
        "QUEUE",
        "READY",
        "DELAYED",
        "LEASED",
        "DEAD",
        "AGENTS",
        "NO-EXEC",
        steal("LENT", "STOLEN")
    );
    for q in &queues {
        println!(
            "{:<32} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}{}",
            q.queue,
            q.ready,
            q.delayed,
            q.leased,
            q.dead,
            q.agents,
            q.waiting_executor,
            steal(&q.lent.to_string(), &q.stolen.to_string())
        );
    }
    if queues.iter().any(|q| q.waiting_executor > 0) {
        println!("NO-EXEC: ready tasks no connected agent can run (an executor is missing): `pmctl why ID`");
    }
}

/// A cluster: one line per member and their total, then the queues summed over the members.
fn print_cluster(answers: &[(String, Result<StatsReply, Error>)], t: &Totals) {
    let head = |member: &str, node: &str, cols: [String; 8]| {
        format!(
            "{member:<24} {node:<16} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9}",
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7]
        )
    };
    let cols = |conns: u64, qs: &mut dyn Iterator<Item = &QueueStats>, redirects: u64| {
        let mut sum = QueueStats::default();
        qs.for_each(|q| add(&mut sum, q));
        [conns, sum.ready, sum.delayed, sum.leased, sum.dead, sum.lent, sum.stolen, redirects].map(|n| n.to_string())
    };
    let names = ["CONNS", "READY", "DELAYED", "LEASED", "DEAD", "LENT", "STOLEN", "REDIRECTS"].map(str::to_string);
    println!("{}", head("MEMBER", "NODE", names));
    for (member, r) in answers {
        match r {
            Ok(s) => println!("{}", head(member, &s.node_id, cols(s.connections, &mut s.queues.iter(), s.redirects))),
            Err(e) => println!("{member:<24} DOWN  {e}"),
        }
    }
    let up = answers.iter().filter(|(_, r)| r.is_ok()).count();
    let label = format!("total ({up} of {} up)", answers.len());
    println!("{}", head(&label, "", cols(t.connections, &mut t.queues.values(), t.redirects)));
    println!();
    print_queues(t.queues.values(), true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str, ready: u64, lent: u64, stolen: u64) -> QueueStats {
        QueueStats { queue: name.into(), ready, lent, stolen, ..Default::default() }
    }

    #[test]
    fn totals_add_up_per_queue_over_the_members_that_answered() {
        let a = StatsReply {
            node_id: "a".into(),
            connections: 2,
            redirects: 1,
            queues: vec![q("x", 3, 5, 0)],
            ..Default::default()
        };
        let b = StatsReply {
            node_id: "b".into(),
            connections: 1,
            queues: vec![q("x", 4, 0, 5), q("y", 1, 0, 0)],
            ..Default::default()
        };
        let t = Totals::of(&[&a, &b]);
        assert_eq!((t.node.as_str(), t.connections, t.redirects), ("a", 3, 1));
        let x = &t.queues["x"];
        assert_eq!((x.ready, x.lent, x.stolen), (7, 5, 5));
        assert_eq!(t.queues["y"].ready, 1);
        let answers = vec![
            ("a:1".to_string(), Ok(a.clone())),
            ("b:1".to_string(), Err(Error::new(pm_client::ErrorKind::Connect, "down"))),
        ];
        let v = to_json(&answers, &Totals::of(&[&a]), &["b:1"]);
        assert_eq!(v["down"], json!(["b:1"]));
        assert_eq!((v["members"][0]["up"].clone(), v["members"][1]["up"].clone()), (json!(true), json!(false)));
        assert_eq!(v["queues"][0]["lent"], 5);
    }
}
