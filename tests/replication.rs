//! Replication with real processes: three `pm-scheduler` nodes with `--replication-factor 3` run every
//! partition's consensus group over their peer connections, each with its raft log on its own disk.
//!
//! What this shows so far (tasks do not go through the groups yet, docs/notes/replication.md): every
//! partition elects one leader that all replicas agree on; after a `kill -9` of the member leading the most
//! partitions, the survivors agree on new leaders within 2 s; the killed member, started again on its data,
//! rejoins every group it belongs to and catches up with the others' commit index; and every partition ends
//! up led by its preferred replica (the first in its rendezvous order), wherever elections put the lead.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pm_client::{Client, ConnectOptions};
use pm_protocol::pb::PartitionState;
use pm_task::partition::replicas;
use pm_task::ring::Ring;
use pm_testkit::SchedulerCluster;

const PARTITIONS: u32 = 8;

/// The partitions a node reports, or `None` while it does not answer.
async fn partitions(addr: &str) -> Option<Vec<PartitionState>> {
    let opts = ConnectOptions::admin().reconnect(false).connect_timeout(Duration::from_millis(500));
    let client = Client::connect(addr, opts).await.ok()?;
    let reply = tokio::time::timeout(Duration::from_secs(1), client.stats()).await.ok()?.ok()?;
    Some(reply.partitions)
}

/// Each partition's leader (raft id = ordinal + 1), if the nodes `alive` all report every partition with the
/// same leader, one of them.
async fn agreed(members: &[String], alive: &[usize]) -> Option<BTreeMap<u32, PartitionState>> {
    let mut seen: Option<BTreeMap<u32, PartitionState>> = None;
    for &i in alive {
        let states = partitions(&members[i]).await?;
        if states.len() != PARTITIONS as usize {
            return None;
        }
        let mine: BTreeMap<u32, PartitionState> = states.into_iter().map(|s| (s.partition, s)).collect();
        for s in mine.values() {
            if s.leader == 0 || !alive.contains(&((s.leader - 1) as usize)) {
                return None;
            }
        }
        match &seen {
            None => seen = Some(mine),
            Some(first) => {
                if first.iter().any(|(p, s)| mine[p].leader != s.leader || mine[p].term != s.term) {
                    return None;
                }
            }
        }
    }
    seen
}

async fn wait_agreed(
    members: &[String],
    alive: &[usize],
    limit: Duration,
) -> (BTreeMap<u32, PartitionState>, Duration) {
    let start = Instant::now();
    loop {
        if let Some(states) = agreed(members, alive).await {
            return (states, start.elapsed());
        }
        assert!(start.elapsed() < limit, "members {alive:?} did not agree on a leader per partition within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_partition_elects_a_leader_fails_over_within_two_seconds_of_a_kill_9_and_takes_its_member_back() {
    let mut c = SchedulerCluster::start(3, &["--replication-factor", "3", "--partitions", "8"]);
    let members = c.members();
    let (before, _) = wait_agreed(&members, &[0, 1, 2], Duration::from_secs(20)).await;
    let mut led = [0usize; 3];
    for s in before.values() {
        led[(s.leader - 1) as usize] += 1;
    }
    let victim = (0..3).max_by_key(|i| led[*i]).unwrap();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    assert!(c.nodes[victim].data.join("raft").is_dir(), "each node keeps its raft log in DATA/raft");

    c.nodes[victim].kill();
    let (after, took) = wait_agreed(&members, &survivors, Duration::from_secs(10)).await;
    println!(
        "kill -9 of member {victim} (leading {} of {PARTITIONS} partitions): new leaders agreed after {took:?}",
        led[victim]
    );
    assert!(took <= Duration::from_secs(2), "failover took {took:?}");
    for (p, s) in &after {
        if before[p].leader == victim as u64 + 1 {
            assert!(s.term > before[p].term, "partition {p} changed leader without a new term");
        }
    }

    // Back on its own data: it rejoins every group without an election of its own (pre-vote keeps it from
    // disrupting the leaders) and catches up with the commit index; then balancing may move leads to it.
    c.nodes[victim].spawn().unwrap();
    let start = Instant::now();
    loop {
        let (now, _) = wait_agreed(&members, &[0, 1, 2], Duration::from_secs(20)).await;
        let back = partitions(&members[victim]).await.unwrap_or_default();
        let caught_up = back.len() == PARTITIONS as usize
            && back.iter().all(|s| s.commit >= after[&s.partition].commit && s.commit == now[&s.partition].commit);
        if caught_up {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "member {victim} did not catch up: {back:?} vs {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Leaders spread by preference: each partition's first replica in rendezvous order leads it.
    let ring = Ring::new(members.clone()).unwrap();
    let preferred: BTreeMap<u32, u64> = (0..PARTITIONS).map(|p| (p, replicas(&ring, p, 3)[0] as u64 + 1)).collect();
    let start = Instant::now();
    loop {
        let (now, _) = wait_agreed(&members, &[0, 1, 2], Duration::from_secs(20)).await;
        let leaders: BTreeMap<u32, u64> = now.iter().map(|(p, s)| (*p, s.leader)).collect();
        if leaders == preferred {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "leaders {leaders:?}, preferred {preferred:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_replication_factor_above_the_member_count_is_refused_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(pm_testkit::bin("pm-scheduler"))
        .args(["--listen", "127.0.0.1:0", "--members", "127.0.0.1:0", "--replication-factor", "3"])
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with 1 member and --replication-factor 3");
    assert!(stderr.contains("--replication-factor 3 needs at least 3 members"), "{stderr}");
    // A single node (no --members) has nobody to replicate to either.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(pm_testkit::bin("pm-scheduler"))
        .args(["--listen", "127.0.0.1:0", "--replication-factor", "2"])
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--members lists 0"), "{stderr}");
}
