//! Cluster mode with real scheduler processes on 127.0.0.x: tasks land on the owners of their keys, a client
//! holding an old ring is redirected without losing or duplicating an ack, a membership change leaves queued
//! tasks on their old owner, and a node killed under load delivers every acknowledged task after its restart.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pm_client::{AgentEvent, Client, Cluster, ClusterOptions, ConnectOptions};
use pm_protocol::pb::{LeasedTask, TaskSpec};
use pm_protocol::ErrorCode;
use pm_task::ring::Ring;
use pm_testkit::SchedulerCluster;

fn keyed(queue: &str, key: &str) -> TaskSpec {
    TaskSpec { payload: Bytes::from(key.to_string()), queue: queue.into(), key: key.into(), ..Default::default() }
}

/// Drains `node`'s `queue` with one agent until nothing arrives for `quiet`; acks everything; returns the tasks.
async fn drain(node: &str, queue: &str, quiet: Duration) -> Vec<LeasedTask> {
    let (a, mut leases) = Client::connect_agent(node, ConnectOptions::agent().reconnect(false)).await.unwrap();
    a.credit(queue, 100_000).await.unwrap();
    let mut got = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(quiet, leases.next()).await {
        if let AgentEvent::Leased(t) = ev {
            assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::Ok]);
            got.push(t);
        }
    }
    got
}

async fn cluster_client(seed: &str) -> Cluster {
    Cluster::connect(&[seed.to_string()], ConnectOptions::producer(), ClusterOptions::default()).await.unwrap()
}

#[tokio::test]
async fn keyed_tasks_land_on_their_owners_and_task_ids_name_them() {
    // No stealing: each node's agent sees exactly what the node holds.
    let c = SchedulerCluster::start(3, &["--steal-interval", "0"]);
    let members = c.members();
    let ring = Ring::new(members.clone()).unwrap();
    let p = cluster_client(&members[1]).await;
    assert_eq!(p.ring().members(), &members[..], "the ring comes from the seed's Welcome");
    let keys: Vec<String> = (0..600).map(|i| format!("customer-{i}")).collect();
    for chunk in keys.chunks(64) {
        let results = p.submit(chunk.iter().map(|k| keyed("own", k)).collect()).await.unwrap();
        assert!(results.iter().all(|r| r.code == ErrorCode::Ok as i32), "{results:?}");
    }
    // A node that does not own a key refuses it with a Redirect naming the owner and the ring.
    let foreign = keys.iter().find(|k| ring.owner(k.as_bytes()) != Some(0)).unwrap();
    let direct = Client::connect(&members[0], ConnectOptions::producer()).await.unwrap();
    assert_eq!(direct.welcome().ring_epoch, ring.epoch());
    let e = direct.submit(vec![keyed("own", foreign)]).await.unwrap_err();
    let r = e.redirect().expect("a Redirect");
    assert_eq!((r.ring_epoch, &r.members), (ring.epoch(), &members));
    assert_eq!(Some(r.node.as_str()), ring.owner(foreign.as_bytes()).map(|o| members[o].as_str()));

    let mut seen = HashSet::new();
    let mut per_node = Vec::new();
    for (ordinal, node) in members.iter().enumerate() {
        let got = drain(node, "own", Duration::from_millis(500)).await;
        for t in &got {
            assert_eq!(ring.owner(t.key.as_bytes()), Some(ordinal), "{} landed on {node}", t.key);
            assert_eq!(Ring::ordinal_of_task(t.task_id), ordinal, "task id {:#x} names its node", t.task_id);
            assert!(seen.insert(t.key.clone()), "{} delivered twice", t.key);
        }
        per_node.push(got.len());
    }
    assert_eq!(seen.len(), keys.len(), "every task delivered once; per node {per_node:?}");
    assert!(per_node.iter().all(|&n| n > 120), "keys spread over the nodes: {per_node:?}");

    // Cancels go to the node a task id names.
    let ids: Vec<u64> = p
        .submit((0..30).map(|i| keyed("cancel", &format!("c{i}"))).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.task_id)
        .collect();
    assert_eq!(p.cancel(ids.clone()).await.unwrap(), vec![ErrorCode::Ok; ids.len()]);
    assert_eq!(p.cancel(ids.clone()).await.unwrap(), vec![ErrorCode::NotFound; ids.len()]);
    for node in &members {
        assert!(drain(node, "cancel", Duration::from_millis(200)).await.is_empty(), "a cancelled task ran");
    }
}

// Multi-threaded, so the client's connection tasks notice the restarts while the test thread blocks on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_ring_is_redirected_and_queued_tasks_stay_with_their_old_owner() {
    let mut c = SchedulerCluster::start(2, &["--steal-interval", "0"]);
    let old_members = c.members();
    let p = cluster_client(&old_members[0]).await;
    let old_epoch = p.ring().epoch();
    // Queued under the old ring and not consumed yet: they must finish on the node that took them.
    let before: Vec<String> = (0..300).map(|i| format!("early-{i}")).collect();
    let early_ids: HashMap<u64, String> = p
        .submit(before.iter().map(|k| keyed("mv", k)).collect())
        .await
        .unwrap()
        .into_iter()
        .zip(&before)
        .map(|(r, k)| (r.task_id, k.clone()))
        .collect();
    assert_eq!(early_ids.len(), before.len());

    // A third node joins and the first two restart with the new member list; the client still holds the old ring.
    tokio::task::block_in_place(|| {
        c.add_node(&["--steal-interval", "0"]);
        c.restart_all(&["--steal-interval", "0"]);
    });
    let members = c.members();
    let (old_ring, new_ring) = (Ring::new(old_members.clone()).unwrap(), Ring::new(members.clone()).unwrap());
    assert_eq!(p.ring().epoch(), old_epoch);

    let after: Vec<String> = (0..300).map(|i| format!("late-{i}")).collect();
    let mut late_ids = HashMap::new();
    for chunk in after.chunks(50) {
        let results = match p.submit(chunk.iter().map(|k| keyed("mv", k)).collect()).await {
            Ok(r) => r,
            Err(e) => panic!("{e}: {}", c.nodes.iter().map(|n| n.log_tail()).collect::<Vec<_>>().join("\n---\n")),
        };
        for (r, k) in results.iter().zip(chunk) {
            assert_eq!(r.code, ErrorCode::Ok as i32, "{k}: {r:?}");
            assert!(late_ids.insert(r.task_id, k.clone()).is_none(), "task id {} reused", r.task_id);
        }
    }
    assert_eq!(p.ring().epoch(), new_ring.epoch(), "the client adopted the ring a redirect carried");
    let moved = before.iter().filter(|k| old_ring.owner(k.as_bytes()) != new_ring.owner(k.as_bytes())).count();
    assert!(moved > 50 && moved < 150, "about a third of the keys move to the new node: {moved}");

    let mut delivered: HashMap<u64, usize> = HashMap::new();
    for (ordinal, node) in members.iter().enumerate() {
        for t in drain(node, "mv", Duration::from_millis(500)).await {
            *delivered.entry(t.task_id).or_default() += 1;
            if let Some(k) = early_ids.get(&t.task_id) {
                assert_eq!(old_ring.owner(k.as_bytes()), Some(ordinal), "queued task {k} moved off its old owner");
            } else {
                let k = &late_ids[&t.task_id];
                assert_eq!(new_ring.owner(k.as_bytes()), Some(ordinal), "{k} is not on its new owner");
            }
        }
    }
    assert_eq!(delivered.len(), early_ids.len() + late_ids.len(), "every acknowledged task delivered");
    assert!(delivered.values().all(|&n| n == 1), "no task was enqueued twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_delivers_every_acknowledged_task_after_its_restart() {
    let mut c = SchedulerCluster::start(3, &["--reclaim-grace-ms", "0"]);
    let members = c.members();
    let p = Cluster::connect(
        &members,
        ConnectOptions::producer().request_timeout(Duration::from_secs(5)).max_backoff(Duration::from_millis(100)),
        ClusterOptions::default(),
    )
    .await
    .unwrap();
    let delivered = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut agents = Vec::new();
    for node in &members {
        let opts = ConnectOptions::agent().max_backoff(Duration::from_millis(100));
        let (a, mut leases) = Client::connect_agent(node, opts).await.unwrap();
        a.credit("kill", 10_000).await.unwrap();
        let (delivered, stop) = (delivered.clone(), stop.clone());
        agents.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(200), leases.next()).await else {
                    continue;
                };
                if let AgentEvent::Leased(t) = ev {
                    delivered.lock().unwrap().insert(t.task_id);
                    let _ = a.ack(vec![(t.lease_id, Bytes::new())]).await;
                    let _ = a.credit("kill", 1).await;
                }
            }
        }));
    }
    let producer = {
        let (p, stop) = (p.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut acked, mut failed, mut i) = (HashSet::new(), 0usize, 0usize);
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<TaskSpec> = (0..32).map(|j| keyed("kill", &format!("k{}", i * 32 + j))).collect();
                i += 1;
                for r in p.submit_each(batch).await {
                    match r {
                        Ok(r) if r.code == ErrorCode::Ok as i32 => assert!(acked.insert(r.task_id)),
                        _ => failed += 1,
                    }
                }
            }
            (acked, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    tokio::task::block_in_place(|| c.nodes[1].kill());
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| c.nodes[1].restart());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = producer.await.unwrap();
    for a in agents {
        a.await.unwrap();
    }
    assert!(failed > 0, "submits to the killed node failed while it was down (no failover configured)");
    assert!(acked.len() > 1000, "the load went on: {} acknowledged", acked.len());
    // Whatever was acknowledged and not yet delivered is still queued on its node: drain the rest.
    let mut seen = delivered.lock().unwrap().clone();
    for node in &members {
        seen.extend(drain(node, "kill", Duration::from_millis(700)).await.into_iter().map(|t| t.task_id));
    }
    let lost: Vec<_> = acked.difference(&seen).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged tasks never delivered, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[test]
fn pmctl_cluster_status_lists_every_member_and_fails_when_one_is_down() {
    let mut c = SchedulerCluster::start(3, &[]);
    let members = c.members();
    // Keyed tasks through pmctl land on their owners; the status shows them per node.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.json");
    let tasks: Vec<_> = (0..60)
        .map(|i| serde_json::json!({"queue": "st", "key": format!("k{i}"), "pipeline": [{"executorName": "sh", "commands": ["true"]}]}))
        .collect();
    std::fs::write(&file, serde_json::Value::Array(tasks).to_string()).unwrap();
    let out = pm_testkit::pmctl(&members[2], &["submit", &file.display().to_string()], None);
    assert!(out.status.success(), "pmctl submit: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 60);

    let status = |seeds: &str| {
        let out = pm_testkit::pmctl(seeds, &["cluster", "status", "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {} / {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        });
        (out.status.success(), v)
    };
    let (ok, v) = status(&members[0]);
    assert!(ok, "{v}");
    let ring = Ring::new(members.clone()).unwrap();
    assert_eq!(v["ringEpoch"], format!("{:#x}", ring.epoch()));
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    let ready: u64 = nodes.iter().map(|n| n["ready"].as_u64().unwrap()).sum();
    assert_eq!(ready, 60, "{v}");
    assert!(nodes.iter().all(|n| n["up"] == true && n["sameRing"] == true && n["ready"].as_u64().unwrap() > 0), "{v}");

    c.nodes[1].kill();
    // The first seed is down: the next one answers.
    let (ok, v) = status(&format!("{},{}", members[1], members[0]));
    assert!(!ok, "a member is down: exit 1");
    assert_eq!(v["nodes"][1]["up"], false, "{v}");
    assert_eq!(v["nodes"][0]["up"], true, "{v}");
}

/// Keys that `ring` places on member `ordinal`.
fn keys_of(ring: &Ring, ordinal: usize, n: usize, prefix: &str) -> Vec<String> {
    (0..).map(|i| format!("{prefix}-{i}")).filter(|k| ring.owner(k.as_bytes()) == Some(ordinal)).take(n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_agents_steal_work_from_a_peer_and_their_acks_reach_the_owner() {
    let c = SchedulerCluster::start(2, &["--default-lease", "2s", "--steal-interval", "20ms"]);
    let members = c.members();
    let ring = Ring::new(members.clone()).unwrap();
    // Every agent is on node 0; every task belongs to node 1.
    let (a, mut leases) = Client::connect_agent(&members[0], ConnectOptions::agent()).await.unwrap();
    a.credit("steal", 64).await.unwrap();
    let p = cluster_client(&members[0]).await;
    let keys = keys_of(&ring, 1, 200, "b");
    let ids: HashSet<u64> = p
        .submit(keys.iter().map(|k| keyed("steal", k)).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.task_id)
        .collect();
    assert!(ids.iter().all(|id| Ring::ordinal_of_task(*id) == 1), "the tasks are node 1's");

    let mut got = HashSet::new();
    let mut held_back = None;
    while got.len() < ids.len() {
        let t = match tokio::time::timeout(Duration::from_secs(10), leases.next()).await {
            Ok(Some(AgentEvent::Leased(t))) => t,
            other => panic!("work stopped flowing after {} tasks: {other:?}", got.len()),
        };
        assert!(ids.contains(&t.task_id), "unknown task {}", t.task_id);
        assert!(t.lease_id & (1 << 63) != 0, "a stolen task carries a lease id of the stealing node");
        if held_back.is_none() && t.attempt == 1 {
            // One task is nacked once: the nack is forwarded, node 1 makes it ready again, and it comes back.
            let nack = pm_protocol::pb::NackItem {
                lease_id: t.lease_id,
                retry_after_ms: 0,
                reason: "again".into(),
                released: false,
                ..Default::default()
            };
            assert_eq!(a.extend(vec![t.lease_id], 0).await.unwrap(), vec![ErrorCode::Ok], "extends are forwarded");
            assert_eq!(a.nack(vec![nack]).await.unwrap(), vec![ErrorCode::Ok]);
            held_back = Some(t.task_id);
        } else {
            assert!(got.insert(t.task_id), "task {} delivered twice", t.task_id);
            if Some(t.task_id) == held_back {
                assert_eq!(t.attempt, 2, "the nacked task came back as its second attempt");
            }
            assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::Ok]);
            assert_eq!(a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::StaleLease]);
        }
        a.credit("steal", 1).await.unwrap();
    }
    // The acks reached node 1 and are durable there: nothing is left and nothing comes back after the lease.
    let admin = Client::connect(&members[1], ConnectOptions::admin()).await.unwrap();
    let q = admin.stats().await.unwrap().queues.into_iter().find(|q| q.queue == "steal").unwrap();
    assert_eq!((q.ready, q.leased, q.delayed), (0, 0, 0), "{q:?}");
    if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(2500), leases.next()).await {
        panic!("something came back after every task was acked: {ev:?}");
    }

    // An agent that leaves with stolen tasks: they go back to node 1 at once and flow again (it may have started
    // them: the delivery counts, as when an agent of node 1 itself leaves).
    drop((a, leases));
    let (quitter, mut q_leases) =
        Client::connect_agent(&members[0], ConnectOptions::agent().reconnect(false)).await.unwrap();
    quitter.credit("late", 5).await.unwrap();
    let late = keys_of(&ring, 1, 5, "late");
    p.submit(late.iter().map(|k| keyed("late", k)).collect()).await.unwrap();
    for _ in 0..5 {
        let t = pm_tests::next_lease(&mut q_leases).await;
        assert_eq!(t.attempt, 1);
    }
    drop((quitter, q_leases));
    let (b, mut b_leases) = Client::connect_agent(&members[0], ConnectOptions::agent()).await.unwrap();
    b.credit("late", 5).await.unwrap();
    for _ in 0..5 {
        let t = pm_tests::next_lease(&mut b_leases).await;
        assert_eq!(t.attempt, 2, "returned at once, the first delivery counted");
        assert_eq!(b.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::Ok]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_longer_than_a_lease_redelivers_and_the_late_ack_is_refused() {
    // Node 1 is reached through a proxy that can cut the link between the nodes (and node 1's clients that
    // use its member address); a test agent reaches node 1 directly.
    let tmp = tempfile::tempdir().unwrap();
    let (addr0, addr1) = (pm_testkit::free_addr("127.0.0.10"), pm_testkit::free_addr("127.0.0.11"));
    let proxy = pm_tests::PausableProxy::start("127.0.0.21:0", &addr1).await;
    let members = format!("{addr0},{}", proxy.addr);
    let common = ["--members", members.as_str(), "--default-lease", "1s", "--steal-interval", "20ms"];
    let _n0 = pm_testkit::Scheduler::start_at(&addr0, &tmp.path().join("n0"), None, &common);
    let mut args1 = common.to_vec();
    args1.extend(["--advertise", proxy.addr.as_str()]);
    let _n1 = pm_testkit::Scheduler::start_at(&addr1, &tmp.path().join("n1"), None, &args1);
    let ring = Ring::new([addr0.clone(), proxy.addr.clone()]).unwrap();

    let (x, mut x_leases) = Client::connect_agent(&addr0, ConnectOptions::agent()).await.unwrap();
    x.credit("part", 1).await.unwrap();
    let p = cluster_client(&addr0).await;
    let key = keys_of(&ring, 1, 1, "p").remove(0);
    let id = p.submit_each(vec![keyed("part", &key)]).await.remove(0).unwrap().task_id;
    let stolen = pm_tests::next_lease(&mut x_leases).await;
    assert_eq!((stolen.task_id, stolen.attempt), (id, 1), "node 0's agent took node 1's task");

    proxy.pause(true);
    // Node 1's lease runs out during the partition; an agent on node 1 itself gets the task again.
    let (y, mut y_leases) = Client::connect_agent(&addr1, ConnectOptions::agent()).await.unwrap();
    y.credit("part", 1).await.unwrap();
    let again = pm_tests::next_lease(&mut y_leases).await;
    assert_eq!((again.task_id, again.attempt), (id, 2), "redelivered after the lease expired");
    assert_eq!(y.ack(vec![(again.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::Ok]);

    proxy.pause(false);
    // The partitioned agent finishes late: its ack reaches node 1 through node 0 and is refused.
    assert_eq!(x.ack(vec![(stolen.lease_id, Bytes::new())]).await.unwrap(), vec![ErrorCode::StaleLease]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agents_find_their_home_node_and_run_pipelines_of_every_node() {
    let c = SchedulerCluster::start(3, &["--steal-interval", "20ms"]);
    let members = c.members();
    let ring = Ring::new(members.clone()).unwrap();
    // Two agents whose ids hash to nodes 0 and 2; node 1 has no agent of its own.
    let id_for = |ordinal: usize| keys_of(&ring, ordinal, 1, "agent").remove(0);
    let (id0, id2) = (id_for(0), id_for(2));
    let seeds = members.join(",");
    let agents: Vec<_> = [&id0, &id2]
        .iter()
        .map(|id| pm_testkit::Agent::start(&seeds, &["--client-id", id.as_str(), "--concurrency", "4"]))
        .collect();
    let out = tempfile::tempdir().unwrap();
    let keys: Vec<String> = (0..30).map(|i| format!("doc-{i}")).collect();
    let tasks: Vec<_> = keys
        .iter()
        .map(|k| {
            let cmd = format!("echo done > {}/{k}", out.path().display());
            serde_json::json!({"key": k, "pipeline": [{"executorName": "sh", "commands": [cmd]}]})
        })
        .collect();
    let file = out.path().join("tasks.json");
    std::fs::write(&file, serde_json::Value::Array(tasks).to_string()).unwrap();
    let submitted = pm_testkit::pmctl(&seeds, &["submit", &file.display().to_string()], None);
    assert!(submitted.status.success(), "{}", String::from_utf8_lossy(&submitted.stderr));
    let ids: Vec<u64> = String::from_utf8_lossy(&submitted.stdout).lines().map(|l| l.trim().parse().unwrap()).collect();
    assert!(ids.iter().any(|id| Ring::ordinal_of_task(*id) == 1), "some tasks belong to the node without agents");
    pm_testkit::wait_for(Duration::from_secs(30), "every pipeline ran", || {
        keys.iter().all(|k| out.path().join(k).exists()).then_some(())
    });
    for (agent, (id, home)) in agents.iter().zip([(&id0, &members[0]), (&id2, &members[2])]) {
        let log = agent.log();
        assert!(log.contains(&format!("server={home}")), "agent {id} should live on {home}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_configured_to_fail_over_keeps_working_while_its_home_node_is_down() {
    let mut c = SchedulerCluster::start(2, &[]);
    let members = c.members();
    let ring = Ring::new(members.clone()).unwrap();
    let id = keys_of(&ring, 0, 1, "agent").remove(0);
    let seeds = members.join(",");
    let agent = pm_testkit::Agent::start(&seeds, &["--client-id", &id, "--failover-after", "500ms"]);
    let out = tempfile::tempdir().unwrap();
    let run = |key: &str| {
        let cmd = format!("echo done > {}/{key}", out.path().display());
        let task = serde_json::json!({"key": key, "pipeline": [{"executorName": "sh", "commands": [cmd]}]});
        TaskSpec { payload: Bytes::from(task.to_string()), key: key.into(), ..Default::default() }
    };
    // At home first.
    let home_key = keys_of(&ring, 0, 1, "home").remove(0);
    let p =
        Cluster::connect(&[members[1].clone()], ConnectOptions::producer(), ClusterOptions::default()).await.unwrap();
    p.submit(vec![run(&home_key)]).await.unwrap();
    pm_testkit::wait_for(Duration::from_secs(20), "the task at home ran", || {
        out.path().join(&home_key).exists().then_some(())
    });

    tokio::task::block_in_place(|| c.nodes[0].kill());
    let away: Vec<String> = keys_of(&ring, 1, 5, "away");
    let results = p.submit(away.iter().map(|k| run(k)).collect()).await.unwrap();
    assert!(results.iter().all(|r| r.code == ErrorCode::Ok as i32), "{results:?}");
    pm_testkit::wait_for(Duration::from_secs(20), "node 1's tasks ran on the agent that failed over", || {
        away.iter().all(|k| out.path().join(k).exists()).then_some(())
    });
    assert!(agent.log().contains("failing over"), "{}", agent.log());
}
